"""The readers that stream a build into training: tf.data, NumPy random access (no TensorFlow), Keras:

dataset      `make_dataset`: a split as a tf.data.Dataset of batches
parse        its batch step: serialized records -> images, targets (, meta)
damage       how make_dataset names, or skips, shards and records that disagree with the manifest
records      `ShardRecords`: a split's records with random access, as NumPy (PyTorch, Grain)
sequence     `ShardSequence`: ShardRecords in batches, as a Keras PyDataset
shard_index  where every record lies: ShardRecords' record index and its cache
augment      the horizontal flip that keeps targets true to the image (NumPy and TensorFlow)
targets_tf   the TensorFlow port of reader.core.targets.encode_faces, for the flip in tf.data
"""
