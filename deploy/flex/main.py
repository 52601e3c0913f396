"""The Flex Template's entry point (FLEX_TEMPLATE_PYTHON_PY_FILE in deploy/flex/Dockerfile).

Dataflow's launcher runs this file with the template's parameters (metadata.json: the build's
flags) and the job's Dataflow options as `--name=value` flags. It launches the very build of
`python -m pipeline`; only the runner defaults to Dataflow here, so a launch without `--runner`
can never run the whole build on the launcher VM.
"""

import sys

from pipeline import cli


def main(argv: list[str]) -> int:
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in argv):
        argv = ["--runner=DataflowRunner", *argv]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
