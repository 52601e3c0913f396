"""facegrid's reader: the record schema, grid targets, the tf.data and Keras readers, the checker.

Importing `reader` (or its schema, targets, boxes and tfrecord modules) never imports TensorFlow
or Beam: the Beam workers use those modules too. The readers load TensorFlow and Keras on first use.
"""

_LAZY = {"make_dataset": "reader.data.dataset", "ShardSequence": "reader.data.sequence"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reader' has no attribute {name!r}")


__all__ = sorted(_LAZY)
