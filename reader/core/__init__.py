"""The format core: what a build writes and every reader reads, with neither TensorFlow nor Beam.

    config         the build config (input size, grid, image format, ...) and its JSON form
    layout         the file names of a build in its output directory
    schema         the record schema: every feature key, `Record`, the one record parser
    images         the one decoder of a record's stored image (Pillow)
    protowire      `tf.train.Example` on the wire, without TensorFlow
    tfrecord       TFRecord framing and its checksums
    manifest       a split's manifest: its config, counts, shard entries, errors-file lines
    storage        every file of a build on local disk, gs:// and s3://, for every tool (a package)
    boxes          the box formats and the placement of a source image on the stored canvas
    targets        the S x S x NUM_CHANNELS (5) grid targets: encode and decode, pure NumPy
    tfds_metadata  the files TensorFlow Datasets and the Object Detection API read beside the shards
    progress       progress of long work, shown one way everywhere

The Beam workers import only this package of reader/ (the worker image ships nothing else).
"""
