"""The format core: what a build writes and every reader reads, with neither TensorFlow nor Beam.

    config         the build config (input size, grid, image format, ...) and its JSON form
    layout         the file names of a build in its output directory
    schema         the record schema: every feature key, `Record` serialize and parse
    protowire      `tf.train.Example` on the wire, without TensorFlow
    tfrecord       TFRecord framing and its checksums
    manifest       a split's manifest and the file access for local, gs:// and s3:// directories
    boxes          the box formats and the placement of a source image on the stored canvas
    targets        the S x S x 5 grid targets: encode and decode, pure NumPy
    tfds_metadata  the files TensorFlow Datasets and the Object Detection API read beside the shards
    progress       progress of long work, shown one way everywhere

The Beam workers import only this package of reader/ (the worker image ships nothing else).
"""
