"""The readers that stream a build into training: `make_dataset` (tf.data) and `ShardSequence`
(a Keras `PyDataset`), with the flip augmentation they share. They import TensorFlow and Keras.
"""
