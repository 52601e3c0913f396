"""README.md's "Reading a build": every example runs as written, the local ones against a copy
of a small build in `shards/` (the tiny_build fixture's: train and val), the remote ones with
`my-bucket` on moto's S3 server and on the GCS emulator (tests/support/cloud_fixtures.py)."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

from tests.reader.data.test_shard_records import _gcs_env, _s3_env
from tests.support import cloud_fixtures

ROOT = pathlib.Path(__file__).parent.parent
SECTION = (ROOT / "README.md").read_text().split("## Reading a build", 1)[1].split("\n## ", 1)[0]
EXAMPLES = re.findall(r"```python\n(.*?)```", SECTION, flags=re.DOTALL)
LOCAL = [code for code in EXAMPLES if "://" not in code]
# Each block in a fresh namespace of one process: the start-up of torch, grain and TensorFlow paid once.
RUNNER = """
import sys
for number, code in enumerate(sys.argv[1:]):
    exec(compile(code, f"README example {number}", "exec"), {"__name__": "__main__"})
print("ran", len(sys.argv) - 1)
"""


def run_examples(examples: list[str], cwd: pathlib.Path, env: dict | None = None) -> None:
    done = subprocess.run([sys.executable, "-c", RUNNER, *examples], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.splitlines()[-1] == f"ran {len(examples)}", done.stdout


def test_the_section_has_an_example_for_each_reader():
    assert len(LOCAL) == 4 and len(EXAMPLES) == 6
    for reader_name, code in zip(("DataLoader", "grain.MapDataset", "ShardSequence", "make_dataset"), LOCAL):
        assert reader_name in code, code


def test_the_local_examples_run(tiny_build, tmp_path):
    shutil.copytree(tiny_build, tmp_path / "shards")
    run_examples(LOCAL, tmp_path)


def _remote(scheme: str) -> str:
    [code] = [code for code in EXAMPLES if f"{scheme}://my-bucket/shards" in code]
    return code


def test_the_s3_example_runs(tiny_build, tmp_path):
    with cloud_fixtures.s3_server() as s3:
        s3.client.create_bucket(Bucket="my-bucket")
        s3.upload_tree("my-bucket", "shards", pathlib.Path(tiny_build))
        run_examples([_remote("s3")], tmp_path, _s3_env(s3))


def test_the_gs_example_runs(tiny_build, tmp_path):
    with cloud_fixtures.gcs_emulator("my-bucket") as gcs:
        gcs.upload_tree("my-bucket", "shards", pathlib.Path(tiny_build))
        run_examples([_remote("gs")], tmp_path, _gcs_env(gcs, tmp_path))
