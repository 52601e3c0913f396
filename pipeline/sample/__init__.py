"""Sample data: synthetic WIDER FACE data sets, the one generator that the demo (`make demo`,
`python -m pipeline.sample`), the tests and the benchmarks share.

    synthetic   where faces go and what an image looks like: photos, patterns, noise, cartoon faces
    datasets    WIDER-layout data sets of them (`write_sample`, `render_images`) and the command

Installed with the job (a new user's demo runs it from the README), never shipped to the
workers' image (deploy/Dockerfile.dockerignore): no build needs it. `make demo` adds scikit-image,
whose photographs `synthetic.photo` paints from (the `sample` extra).
"""

from pipeline.sample.datasets import MIN_SAMPLE_IMAGES, Sample, main, render_images, write_sample

__all__ = ["MIN_SAMPLE_IMAGES", "Sample", "main", "render_images", "write_sample"]
