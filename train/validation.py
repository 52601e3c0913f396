"""Evaluation of the detector on a split, the one place where it runs: `evaluate_split` gives the
loss, AP50 by the WIDER protocol, COCO's AP50 and AP50:95 (overall and by face size; the
metrics themselves are `train.metrics`) and WIDER-layout predictions (`train.wider`). Training
calls it for each epoch's validation (`ValidationCallback`) and for the final evaluation.

Reads the split with `reader.make_dataset(..., training=False, with_ignore=True, with_boxes=True)`,
so every record is scored exactly once, against its stored boxes.
"""

from __future__ import annotations

import os

import keras
import numpy as np

import reader
from reader.core import boxes as box_formats
from reader.core import manifest as manifests
from train import detect, metrics, wider, wider_report
from train.detect import DetectSettings
from train.loss import GridLoss


def evaluate_split(
    model: keras.Model,
    data_dir: str,
    split: str,
    batch_size: int,
    settings: DetectSettings = DetectSettings(),
    loss: keras.losses.Loss | None = None,
    predictions_dir: str | None = None,
    *,
    coco: bool = True,
    wider_ground_truth: str | None = None,
) -> dict:
    """Scores `model` on every record of `split`.

    Returns {"loss": the batches' losses averaged with their sizes as weights (as Keras averages
    the training loss), "ap50" (the WIDER protocol's), "recall" (with every kept detection),
    "positives" (valid stored faces), "detections", "true_positives", "discarded" (detections of
    invalid faces), "images", "recall_ceiling" (faces that own a cell / target faces, from the
    manifest), and with `coco` "coco": {"ap50", "ap50_95", "ap50_by_size" {"small", "medium",
    "large"}, "faces_by_size", "size_px", ...} (`train.metrics.coco_average_precision`, invalid
    faces as crowd; an AP is None where no valid face counts)}.
    predictions_dir: when given, writes each image's detections there in the WIDER layout,
    in source pixels (see `train.wider`).
    coco: also COCO's metrics (pycocotools; some seconds on the 3,226 images of WIDER val).
    wider_ground_truth: a folder of WIDER val's evaluation ground truth: the result then holds
    "wider", `train.wider_report.report` of the detections (Easy / Medium / Hard AP and the grid's
    recall ceilings, or why they are absent), from the numbers the prediction files hold.
    """
    loss = loss or GridLoss()
    manifest = manifests.load(data_dir, split)
    config = manifest.config
    resize, input_size = config.resize, config.input_size
    evaluator = metrics.Evaluator(input_size=input_size)
    source_images = []  # for WIDER's evaluation
    loss_sum = images_seen = 0.0
    dataset = reader.make_dataset(data_dir, split, batch_size, training=False, with_ignore=True, with_boxes=True)
    for images, targets, meta in dataset:
        grids = np.asarray(model.predict_on_batch(images))
        loss_sum += float(loss(targets, grids)) * len(grids)
        images_seen += len(grids)
        for grid, boxes, invalid, filename, (height, width) in zip(
            grids,
            meta["boxes"].numpy(),
            meta["invalid"].numpy(),
            meta["filename"].numpy(),
            meta["original_size"].numpy(),
        ):
            det_boxes, det_scores = detect.detect(grid, settings.score_threshold, settings.iou_threshold, settings.max_detections)
            evaluator.add(det_boxes, det_scores, boxes, invalid)
            placement = box_formats.Placement.fit(int(width), int(height), input_size, resize)
            if predictions_dir is not None:
                wider.write_detections(predictions_dir, filename.decode("utf-8"), det_boxes, det_scores, placement)
            if wider_ground_truth is not None:
                written = wider.as_written(wider.source_xywh(det_boxes, placement), det_scores)
                source_images.append(wider_report.SourceImage(filename.decode("utf-8"), int(width), int(height), written))
    result = evaluator.result()
    return {
        "loss": loss_sum / images_seen if images_seen else float("nan"),
        "ap50": result.pop("ap"),
        **result,
        "recall_ceiling": metrics.recall_ceiling(manifest.counts),
        **({"coco": evaluator.coco_result()} if coco else {}),
        **({"wider": wider_report.report(source_images, config, wider_ground_truth)} if wider_ground_truth is not None else {}),
    }


class ValidationCallback(keras.callbacks.Callback):
    """At each epoch end, scores the model on a split and adds `val_loss` and `val_ap50` to the
    epoch's logs. Put it first among the callbacks: Keras hands the same logs to the ones after
    it (CSV, TensorBoard, checkpoint), which then see these values. COCO's metrics are left to
    the final evaluation (`evaluate_split`), where they cost their seconds once."""

    def __init__(self, data_dir: str, split: str, batch_size: int, settings: DetectSettings, loss: keras.losses.Loss):
        super().__init__()
        self._args = (data_dir, split, batch_size, settings, loss)

    def on_epoch_end(self, epoch, logs=None):
        result = evaluate_split(self.model, *self._args, coco=False)
        if logs is not None:
            logs["val_loss"], logs["val_ap50"] = result["loss"], result["ap50"]


def default_predictions_dir(output_dir: str, split: str) -> str:
    return os.path.join(output_dir, "predictions", split)
