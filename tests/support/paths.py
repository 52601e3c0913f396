"""Where things are: the repository, the checked-in fixture set, the real WIDER annotation files."""

import os
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
FIXTURE = TESTS / "fixtures" / "wider"
FIXTURE_ANNOTATIONS = FIXTURE / "wider_face_fixture_bbx_gt.txt"
FIXTURE_IMAGES = FIXTURE / "images"
# The real annotation files, checked in under data/ (a copy of the project's shared/data/).
WIDER_DATA = pathlib.Path(os.environ.get("FACEGRID_WIDER_DATA", ROOT / "data"))
