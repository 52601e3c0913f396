"""The detector learns what the shards encode: benchmarks/learn.py in small. The real model,
trained from scratch through the real readers (flips on) on a few real WIDER val images built by
the real Beam job, then evaluated on those same images, reaches AP50 near the grid's recall
ceiling; and on the same images mirrored at the source (Pillow and the annotation file, built by
the real Beam job: learn.make_mirrored_build), near that build's ceiling too. Targets, loss and
decoding at odds keep the first far below (BENCHMARKS.md, "Learning": swapped offsets in the
decoding take this test's 1.0000 to 0.0816, the mirrored 1.0000 to 0.0000). A flip that forgets
the targets is memorized away on the images as they are (1.0000 either way) but caught on the
mirrored ones: trained on mirrored image -> unmoved targets, the model puts the faces on the
wrong side (mirrored AP50 0.0000 against 1.0000). test_dataset.py and test_targets.py hold the
flip cell by cell. Its val being WIDER val images, training also reports WIDER's Easy / Medium /
Hard over them."""

from benchmarks import learn

# The benchmark's first 4 images (7 faces) at 96 px (a 3 x 3 grid), batch 4: every step sees every
# image; a higher learning rate than the benchmark's. Measured (seed 0): AP50 0.9821, 1.0000,
# 1.0000 after epochs 1-3, and the best model (epoch 2) 1.0000 on the images mirrored at the
# source. 210 steps of 4 coins at 1/2 show each image about 105 times either way round; with 40
# steps an epoch (seed 0: 0.0612, 0.9683, 1.0000; mirrored 1.0000) seed 1 missed the images as
# they are (0.7347) and seed 2 the mirrored ones (0.7347); at 70, seed 1 passes both. Seed 2 still
# misses the mirrored ones (0.7551): after 210 steps its model has not told apart the two
# orientations of a face whose mirror stays in the middle column of the 3 x 3 grid.
SETTINGS = dict(images=4, input_size=96, epochs=3, steps_per_epoch=70, batch_size=4, alpha=0.35, learning_rate=1e-2)
NEAR = 0.9  # of the recall ceiling, as the benchmark defines it (BENCHMARKS.md, "Learning")


def test_the_detector_fits_the_images_it_sees(tmp_path):
    metrics = learn.learn(str(tmp_path), **SETTINGS, progress="lines")
    assert metrics["loss"][-1] < metrics["loss"][0] / 2
    assert metrics["val_ap50"] >= NEAR * metrics["recall_ceiling"], learn.summary(metrics)
    # The same images mirrored at the source (Pillow and the annotation file, not the readers).
    assert metrics["mirrored"]["images"] == 4 and metrics["mirrored"]["positives"] == metrics["val"]["positives"]
    assert metrics["mirrored_ap50"] >= NEAR * metrics["mirrored_recall_ceiling"], learn.summary(metrics)
    # WIDER's own figures over the same images, present and near their ceilings too.
    assert metrics["wider_absent"] is None and metrics["val"]["wider"]["images"] == 4
    for subset in ("easy", "medium", "hard"):
        assert metrics[f"wider_{subset}"] >= NEAR * metrics["wider_recall_ceiling"][subset], learn.summary(metrics)
