"""Is the input the bottleneck? Training steps per second fed by `reader.make_dataset` against
the same model fed from batches already in memory, in the same run.

    python -m benchmarks.feed --data_dir=SHARDS [--split=train] [--batch_size=64] [--steps=100]
        [--warmup=10] [--rounds=2] [--alpha=0.75] [--mixed_precision] [--xla]

Prints one line: both rates and their ratio (make_dataset / memory; near 1: the model is the
bottleneck, well under 1: the input is), and with `reader.ShardRecords` (the TensorFlow-free
loader) installed, its rate too. The same compiled model (GridLoss, Adam, as `python -m train`)
trains on each feed in turn, `rounds` times, through `model.fit`; each fit's first `warmup`
steps (tracing, compiling, filling the shuffle buffer) are left out, and the best round of each
feed is kept (the machine may be shared). make_dataset is read as training reads it: shuffled,
flipped, with the ignore channel. The memory feed cycles through `memory_batches` batches taken
from the same dataset beforehand. Runs unchanged on a GPU (`--mixed_precision`: float16
compute with a float32 output; `--xla`: the step XLA-compiled); the defaults finish in a few
minutes there. `python -m benchmarks --parts=feed` runs it with a setting small enough for a CPU.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from absl import flags


@dataclasses.dataclass(frozen=True)
class FeedSettings:
    """batch_size images per step; `steps` timed per round after `warmup` untimed ones."""

    batch_size: int = 64
    steps: int = 100
    warmup: int = 10
    rounds: int = 2
    alpha: float = 0.75
    memory_batches: int = 8
    mixed_precision: bool = False
    xla: bool = False
    split: str = "train"

    def __post_init__(self):
        if min(self.batch_size, self.steps, self.rounds, self.memory_batches) < 1 or self.warmup < 1:
            raise ValueError(f"batch_size, steps, rounds, memory_batches and warmup must be >= 1, got {self}")


# What `python -m benchmarks` runs on this 2-core CPU, where one step of the default model takes
# over a second: the conclusion (the model is the bottleneck) shows within a minute.
CPU_SETTINGS = FeedSettings(batch_size=8, steps=12, warmup=3, rounds=2, alpha=0.35, memory_batches=4, split="val")


def _model(input_size: int, settings: FeedSettings):
    import keras

    from train import model as models
    from train.loss import GridLoss

    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.build_model(models.ModelConfig(alpha=settings.alpha, input_size=input_size))
        if settings.mixed_precision:  # the loss in float32, as Keras' mixed-precision guide does it
            model = keras.Model(model.inputs, keras.layers.Activation("linear", dtype="float32")(model.outputs[0]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(keras.optimizers.Adam(1e-3), GridLoss(), jit_compile=settings.xla)
    return model


def _step_clock():
    """A callback noting the wall-clock time at the end of each step; reading the loss makes
    the step finish first (on an accelerator the step otherwise runs on while Python goes on)."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            float((logs or {}).get("loss", 0.0))
            self.ends.append(time.perf_counter())

    return StepClock()


def _rate(model, data, settings: FeedSettings) -> float:
    """Steps per second of one fit of warmup + steps steps, the warmup left out."""
    clock = _step_clock()
    model.fit(data, epochs=1, steps_per_epoch=settings.warmup + settings.steps, callbacks=[clock], verbose=0, shuffle=False)
    timed = clock.ends[settings.warmup - 1 :]
    return (len(timed) - 1) / (timed[-1] - timed[0])


def _shard_records_feed(data_dir: str, settings: FeedSettings):
    """Batches from the TensorFlow-free loader as a tf.data pipeline, or None where it is absent."""
    import reader

    loader = getattr(reader, "ShardRecords", None)
    if loader is None:
        return None
    import numpy as np
    import tensorflow as tf

    records = loader(data_dir, settings.split, with_ignore=True, augment=True, seed=0)
    size = len(records)

    def batches():
        rng = np.random.default_rng(0)
        while True:
            for start in range(0, size - settings.batch_size + 1, settings.batch_size):
                items = [records[int(i)] for i in rng.permutation(size)[start : start + settings.batch_size]]
                yield np.stack([image for image, _ in items]), np.stack([target for _, target in items])

    first_image, first_target = records[0]
    signature = (
        tf.TensorSpec((settings.batch_size, *np.shape(first_image)), tf.float32),
        tf.TensorSpec((settings.batch_size, *np.shape(first_target)), tf.float32),
    )
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(tf.data.AUTOTUNE)


def run(data_dir: str, settings: FeedSettings) -> dict:
    """Measures every feed; returns {"make_dataset", "memory", ("shard_records"): steps/s,
    "ratio": make_dataset / memory, "device", "settings", "line"}."""
    import tensorflow as tf

    import reader
    from reader.core import manifest as manifests

    input_size = manifests.load(data_dir, settings.split).config.input_size
    model = _model(input_size, settings)
    dataset = reader.make_dataset(
        data_dir, settings.split, settings.batch_size, training=True, seed=0, augment=True, with_ignore=True, drop_remainder=True
    ).repeat()
    held = list(dataset.take(settings.memory_batches))
    memory = tf.data.Dataset.from_tensor_slices(
        (tf.stack([x for x, _ in held]), tf.stack([y for _, y in held]))
    ).repeat()  # each element one whole batch, already decoded
    feeds = {"make_dataset": dataset, "memory": memory}
    shard_records = _shard_records_feed(data_dir, settings)
    if shard_records is not None:
        feeds["shard_records"] = shard_records
    rates = {name: [] for name in feeds}
    for _ in range(settings.rounds):  # in turn, so that a passing load hits every feed alike
        for name, data in feeds.items():
            rates[name].append(_rate(model, data, settings))
    best = {name: max(values) for name, values in rates.items()}
    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    ratio = best["make_dataset"] / best["memory"]
    extra = f", ShardRecords {best['shard_records']:.2f} steps/s" if "shard_records" in best else ""
    line = (
        f"feed: make_dataset {best['make_dataset']:.2f} steps/s, in memory {best['memory']:.2f} steps/s, ratio {ratio:.2f}{extra} "
        f"({device}, batch {settings.batch_size}, {input_size} px, alpha {settings.alpha:g}, "
        f"mixed precision {'on' if settings.mixed_precision else 'off'}, XLA {'on' if settings.xla else 'off'}, "
        f"best of {settings.rounds} rounds of {settings.steps} steps)"
    )
    return {**best, "ratio": ratio, "rounds": rates, "device": device, "settings": dataclasses.asdict(settings), "line": line}


def _define(fv: flags.FlagValues) -> None:
    default = FeedSettings()
    flags.DEFINE_string("data_dir", None, "A build's directory (python -m pipeline).", flag_values=fv)
    flags.DEFINE_string("split", default.split, "Split to read.", flag_values=fv)
    flags.DEFINE_integer("batch_size", default.batch_size, "Images per step.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("steps", default.steps, "Timed steps per round and feed.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("warmup", default.warmup, "Untimed steps before them.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("rounds", default.rounds, "Rounds; each feed's best is kept.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("memory_batches", default.memory_batches, "Batches held in memory.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("alpha", default.alpha, "MobileNetV2 width multiplier.", lower_bound=0.05, flag_values=fv)
    flags.DEFINE_boolean("mixed_precision", False, "float16 compute (mixed_float16), float32 output and loss.", flag_values=fv)
    flags.DEFINE_boolean("xla", False, "XLA-compile the train step (jit_compile).", flag_values=fv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    fv = flags.FlagValues()
    _define(fv)
    try:
        fv(argv)
        if fv.data_dir is None:
            raise flags.Error("missing required flag --data_dir")
        settings = FeedSettings(
            fv.batch_size, fv.steps, fv.warmup, fv.rounds, fv.alpha, fv.memory_batches, fv.mixed_precision, fv.xla, fv.split
        )
    except (flags.Error, ValueError) as e:
        print(f"benchmarks.feed: {e}", file=sys.stderr)
        return 2
    print(run(fv.data_dir, settings)["line"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
