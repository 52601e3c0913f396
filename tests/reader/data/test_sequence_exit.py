"""A ShardSequence kept in a module global until the interpreter exits leaves quietly: its open
shard files are closed by a finalizer that needs no module global (they are None by then)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.paths import ROOT


def test_a_global_sequence_exits_without_a_word(good_build):
    """Under every backend alike (the finalizer is Python's, not Keras'): TensorFlow's here."""
    script = (
        "import reader\n"
        f"SEQUENCE = reader.ShardSequence({str(good_build)!r}, 'val', batch_size=2)\n"
        "images, targets = SEQUENCE[0]\n"
        "print('read', images.shape)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout == "read (2, 224, 224, 3)\n", done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
