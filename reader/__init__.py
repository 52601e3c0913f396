"""facegrid's reader: everything that reads a build, in three packages.

    reader.core   the format core: build config, file names, record schema, manifest, TFRecord
                  and tf.train.Example bytes, boxes, grid targets. Neither TensorFlow nor Beam:
                  the Beam workers write with it, and their image ships nothing else of reader/.
    reader.data   the readers: `make_dataset` (tf.data), `ShardRecords` (random access, NumPy, no
                  TensorFlow: PyTorch, Grain) and `ShardSequence` (a Keras PyDataset over it).
    reader.check  the checker, `python -m reader.check`.

`reader.make_dataset`, `reader.ShardRecords` and `reader.ShardSequence` are loaded on first use,
so importing `reader` (or reader.core) never imports TensorFlow.
"""

_LAZY = {"make_dataset": "reader.data.dataset", "ShardRecords": "reader.data.records", "ShardSequence": "reader.data.sequence"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reader' has no attribute {name!r}")


__all__ = sorted(_LAZY)
