"""The seeded fuzzers of facegrid's input handling: annotation files (annotation_fuzz, its cases in
annotation_cases), source images (image_fuzz) and manifests (manifest_fuzz).

`make fuzz` runs the big runs behind BENCHMARKS.md's "Hostile input" figures; the tests run a
few thousand cases of each. Tools, not product: this folder is outside the installed packages
(pyproject.toml's packages.find) and the workers' image, and reads data/ and tests/fixtures/
from the source tree.
"""
