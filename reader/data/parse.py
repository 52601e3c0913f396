"""`make_dataset`'s batch step: a batch of serialized records -> (images, targets (, meta)).

Input: (index [B], (shard [B], record [B]) (, flip [B])), int64 record index in its shard,
int64 shard number in manifest order, the serialized Example, and (augmenting) a bool per record.
Output: images float32 [B, size, size, 3] in [-1, 1]; targets float32 [B, S, S, 5], or
[B, S, S, 6] with the ignore mask as channel 5; with boxes, a dict of the faces (rel_xyxy),
their invalid flags, file names and (height, width) source sizes. The checks of
`reader.data.damage.BatchGuard` run first, so a bad record fails naming itself.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from reader.core import manifest as manifests
from reader.core import schema
from reader.core.config import BuildConfig
from reader.core.targets import NUM_CHANNELS
from reader.data import augment as augmentation
from reader.data import damage


@dataclasses.dataclass(frozen=True)
class Element:
    """What the parse step needs: the build's config, and what the element holds."""

    config: BuildConfig
    with_ignore: bool
    with_boxes: bool
    flip: bool
    dct_method: str

    @property
    def needs_faces(self) -> bool:
        return self.with_boxes or self.flip


def batch_fn(manifest: manifests.Manifest, element: Element, gated: bool):
    """The batch step for `Dataset.map`: (index [B], (shard [B], record [B]) (, flip [B])) ->
    (images, targets (, meta)) of a batch.

    Before anything that would fail with a bare TensorFlow error, cheap vectorized checks look
    for what a bad record would break; only a batch they flag goes to Python, which names the
    shard, the record and what is wrong, or finds it fine (`reader.data.damage.BatchGuard`)."""
    keys = _keys(element)
    full_spec = schema.tf_feature_spec(element.config.grid_size)
    spec = {key: _lenient(full_spec[key]) for key in keys}
    names = tf.constant([f"{path}: record " for path in manifest.shard_paths()])
    guard = damage.BatchGuard(manifest, gated)

    def parse_batch(index, located, flip=None):
        shard, records = located
        records = guard.framed(index, shard, records)
        # Named for the errors parsing still raises itself (a value of another kind).
        example_names = tf.strings.join([tf.gather(names, shard), tf.strings.as_string(index)])
        f = tf.io.parse_example(records, spec, example_names=example_names)
        one = {key: f[key][:, 0] for key in keys if isinstance(spec[key], tf.io.FixedLenFeature)}
        records = guard.require(_fits(f, one, element), index, shard, records)
        with tf.control_dependencies([records]):  # nothing below runs on a batch that failed the checks
            grid, ignore = _targets(f, element.config.grid_size)
            images = _decode_images(one, tf.zeros_like(shard, tf.bool) if flip is None else flip, element)
            boxes, invalid = _faces(f) if element.needs_faces else (None, None)
        if flip is not None:
            boxes, grid, ignore = _flip(boxes, invalid, grid, ignore, one, flip, element.config)
        targets = tf.concat([grid, ignore[..., None]], axis=-1) if element.with_ignore else grid
        images = _to_unit_range(images)
        if not element.with_boxes:
            return images, targets
        return images, targets, _meta(boxes, invalid, one)

    return parse_batch


def _keys(element: Element) -> list[str]:
    """The record keys the batch step parses: what its outputs need, nothing more."""
    keys = [schema.ENCODED, schema.FORMAT, schema.HEIGHT, schema.WIDTH, schema.GRID]
    if element.with_ignore or element.flip:
        keys.append(schema.IGNORE)
    if element.needs_faces:
        keys += [*schema.BOX_KEYS, schema.INVALID, schema.ORIGINAL_HEIGHT, schema.ORIGINAL_WIDTH]
    if element.with_boxes:
        keys.append(schema.FILENAME)
    return keys


def _fits(f: dict, one: dict, element: Element):
    """bool [checks]: whether every record of the batch fits the manifest's config (image size and
    bytes, grid and ignore lengths, one face count in every per-face list, finite numbers).
    As few ops as will do: each costs about as much per batch as reading one record."""
    s, size = element.config.grid_size, element.config.input_size
    encoded = tf.strings.length(one[schema.ENCODED])
    fits = [
        tf.stack([one[schema.HEIGHT], one[schema.WIDTH]], 1) == size,
        ((one[schema.FORMAT] == b"jpeg") & (encoded > 0)) | (encoded == size * size * 3),
        f[schema.GRID].row_lengths() == s * s * NUM_CHANNELS,
    ]
    if schema.IGNORE in f:
        fits.append(f[schema.IGNORE].row_lengths() == s * s)
    if element.needs_faces:  # one face count in every per-face list
        splits = [f[key].row_splits for key in (*schema.BOX_KEYS, schema.INVALID)]
        fits.append(tf.stack(splits[1:]) == splits[0])
    # Targets and boxes that training takes: finite numbers only (NaN would train as NaN).
    fits += [tf.math.is_finite(f[key].flat_values) for key in schema.FINITE_KEYS if key in f]
    return tf.stack([tf.reduce_all(fit) for fit in fits])


def _targets(f: dict, s: int):
    """The grid float32 [B, s, s, 5] and the ignore mask [B, s, s] (None when not parsed)."""
    grid = tf.reshape(f[schema.GRID].flat_values, [-1, s, s, NUM_CHANNELS])
    ignore = tf.reshape(f[schema.IGNORE].flat_values, [-1, s, s]) if schema.IGNORE in f else None
    return grid, ignore


def _decode_images(one: dict, flip, element: Element):
    """uint8 [B, size, size, 3]: each record's image decoded, flipped where `flip` says."""
    size = element.config.input_size

    def decode(features):
        encoded, image_format, height, width, flip = features
        image = _decode_image(encoded, image_format, height, width, size, element.dct_method)
        if element.flip:
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        return image

    return tf.map_fn(
        decode,
        (one[schema.ENCODED], one[schema.FORMAT], one[schema.HEIGHT], one[schema.WIDTH], flip),
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
    )


def _faces(f: dict):
    """The faces' boxes (rel_xyxy, ragged [B, None, 4]) and their invalid flags (ragged [B, None])."""
    return tf.stack([f[key] for key in schema.BOX_KEYS], axis=-1), f[schema.INVALID]


def _flip(boxes, invalid, grid, ignore, one: dict, flip, config: BuildConfig):
    """Boxes, grid and ignore mask of the records `flip` marks, flipped (targets made again from
    the flipped boxes, as the build makes them); the others as they are."""
    boxes, flipped_grid, flipped_ignore = augmentation.flip_targets_batch_tf(
        boxes, invalid, one[schema.ORIGINAL_HEIGHT], one[schema.ORIGINAL_WIDTH], flip,
        grid_size=config.grid_size, input_size=config.input_size, resize=config.resize, min_face_px=config.min_face_px,
    )  # fmt: skip
    grid = tf.where(flip[:, None, None, None], flipped_grid, grid)
    ignore = tf.where(flip[:, None, None], flipped_ignore, ignore)
    return boxes, grid, ignore


def _to_unit_range(images):
    """uint8 images -> float32 in [-1, 1]. Dequantize (MIN_COMBINED over [-1, 1]: -1 + x * 2 / 255)
    gives the same floats as a cast, multiply and subtract, in one pass over memory instead of
    three: float images are four times the size of the decoded ones, and three passes cost a
    third of the decode."""
    return tf.quantization.dequantize(tf.bitcast(images, tf.quint8), -1.0, 1.0, mode="MIN_COMBINED")


def _meta(boxes, invalid, one: dict) -> dict:
    """What `with_boxes` adds: the faces, their invalid flags, file names, source (height, width)."""
    return {
        "boxes": boxes,
        "invalid": invalid,
        "filename": one[schema.FILENAME],
        "original_size": tf.stack([one[schema.ORIGINAL_HEIGHT], one[schema.ORIGINAL_WIDTH]], 1),
    }


def _lenient(feature):
    """The parse spec of one key, made not to fail on a record that lacks the key or holds another
    count of values (the checks of `batch_fn` catch those, naming the record): one-value keys
    get a default no record of a build holds, the grid and ignore lists become ragged."""
    if isinstance(feature, tf.io.FixedLenFeature) and feature.shape == [1] and feature.dtype in (tf.string, tf.int64):
        return tf.io.FixedLenFeature([1], feature.dtype, default_value=b"" if feature.dtype == tf.string else -1)
    if isinstance(feature, tf.io.FixedLenFeature):
        return tf.io.RaggedFeature(feature.dtype)
    return feature


def _decode_image(encoded, image_format, height, width, size: int, dct_method: str):
    """uint8 [size, size, 3] from image/encoded, as image/format says (jpeg or raw)."""

    def raw():
        return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), tf.stack([height, width, 3]))

    def jpeg():
        return tf.io.decode_jpeg(encoded, channels=3, dct_method=dct_method)

    image = tf.cond(tf.equal(image_format, "raw"), raw, jpeg)
    return tf.ensure_shape(image, [size, size, 3])
