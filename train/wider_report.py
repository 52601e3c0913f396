"""WIDER AP of a build's val split, as training reports it (metrics.json, the run summary).

Scores a build's detections against WIDER val when every image of the split is one of its
images, with the recall ceiling the grid leaves each subset; otherwise says in one line why not.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from train import wider_ap
from train.wider_ap import SUBSETS, EvalError, GroundTruth, ap_text, evaluate, image_key, load_ground_truth


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One image of a build as the evaluation takes it: its filename as annotated, its source
    size in pixels, and its detections float64 [K, 5] `x y w h score` in source pixels, the
    numbers its prediction file holds (`train.wider.as_written`)."""

    filename: str
    width: int
    height: int
    detections: np.ndarray


def grid_ceilings(truth: GroundTruth, images: list[SourceImage], build) -> dict:
    """Per subset, the share of its faces (over `images`) that own a grid cell at the build's
    sizes: faces clipped to the image and placed on the canvas as the build places them
    (`build`: a reader.core.config.BuildConfig), encoded by the build's rule
    (`reader.core.targets.encode_faces`: invalid, degenerate and too-small faces are no
    targets, the larger face takes a shared cell). No detection from the grid can recall the
    others, so a model's recall, and its AP, on the subset stay at or under this. 1.0 for a
    subset without faces there (as `train.metrics.recall_ceiling`)."""
    from reader.core import boxes as box_formats
    from reader.core import targets
    from train.metrics import recall_ceiling

    index = truth.index
    owned_counted = dict.fromkeys(SUBSETS, 0)
    counted_all = dict.fromkeys(SUBSETS, 0)
    for image in images:
        i = index[image_key(image.filename)]
        xyxy = box_formats.xywh_to_clipped_xyxy(truth.boxes[i], image.width, image.height)
        stored = np.flatnonzero(~box_formats.is_degenerate(xyxy))
        placement = box_formats.Placement.fit(image.width, image.height, build.input_size, build.resize)
        grid = targets.encode_faces(
            placement.to_rel_xyxy(xyxy[stored]), truth.invalid[i][stored], placement, build.grid_size, build.min_face_px
        )
        owns = np.zeros(len(xyxy), bool)
        owns[stored[grid.owners[grid.owners >= 0]]] = True
        for subset in SUBSETS:
            counted = truth.counted[subset][i]
            owned_counted[subset] += int((owns & counted).sum())
            counted_all[subset] += int(counted.sum())
    # recall_ceiling's terms: faces that own a cell, and the rest, which cannot be found.
    return {s: recall_ceiling({"targets": owned_counted[s], "dropped": counted_all[s] - owned_counted[s]}) for s in SUBSETS}


def report(images: list[SourceImage], build, ground_truth: str | os.PathLike | None) -> dict:
    """WIDER Easy / Medium / Hard AP of a build's val split, for training's metrics.json.

    Present when every image of the split is an image of WIDER val (matched by event and name):
    {"easy", "medium", "hard": AP (None for a subset without faces there), "recall_ceiling":
    {subset: `grid_ceilings`}, "faces": {subset: faces counted}, "images", "ground_truth_images",
    "complete": whether every image of the ground truth was scored (only then are the figures
    WIDER's published ones: a build of part of val, or one that lost images to its errors file,
    is scored over the images it holds), "ground_truth": the folder}.
    Otherwise {"absent": one line saying why}: no ground truth, or an image WIDER val lacks.
    """
    if ground_truth is None or not os.path.isdir(ground_truth):
        return {"absent": f"no WIDER ground truth at {ground_truth} (facegrid installed without its repository)"}
    try:
        truth = load_ground_truth(ground_truth)
    except EvalError as e:
        return {"absent": str(e)}
    known = truth.index
    if not images:
        return {"absent": "val holds no image"}
    stranger = next((image.filename for image in images if image_key(image.filename) not in known), None)
    if stranger is not None:
        return {"absent": f"val is not WIDER's val: its image {stranger} is none of WIDER val's {len(known):,} images"}
    keys = [image_key(image.filename) for image in images]
    result = evaluate(truth, {key: image.detections for key, image in zip(keys, images)}, keys)
    return {
        **result.ap,
        "recall_ceiling": grid_ceilings(truth, images, build),
        "faces": result.faces,
        "images": result.images,
        "ground_truth_images": result.ground_truth_images,
        "complete": result.images == result.ground_truth_images,
        "ground_truth": os.fspath(ground_truth),
    }


def metrics_fields(wider: dict) -> dict:
    """metrics.json's top-level WIDER fields from a `report`: wider_easy, wider_medium,
    wider_hard (None when absent), wider_recall_ceiling, wider_absent (None when present)."""
    present = "absent" not in wider
    return {
        **{f"wider_{s}": wider[s] if present else None for s in SUBSETS},
        "wider_recall_ceiling": wider["recall_ceiling"] if present else None,
        "wider_absent": None if present else wider["absent"],
    }


def summary_line(metrics: dict) -> str:
    """The run summary's line for the fields of `metrics_fields`."""
    if metrics.get("wider_absent") is not None or "wider_easy" not in metrics:
        return f"WIDER Easy/Medium/Hard AP: absent: {metrics.get('wider_absent', 'not computed')}"
    ceiling = metrics["wider_recall_ceiling"]
    wider = metrics.get("val", {}).get("wider", {})
    scope = (
        ""
        if wider.get("complete", True)
        else (
            f" (over {wider['images']:,} of WIDER val's {wider['ground_truth_images']:,} images: not comparable with published figures)"
        )
    )
    return (
        "WIDER val AP of the best model: "
        + " ".join(f"{s} {ap_text(metrics[f'wider_{s}'])}" for s in SUBSETS)
        + "; recall ceiling of the grid: "
        + " ".join(f"{s} {ceiling[s]:.4f}" for s in SUBSETS)
        + scope
    )


def default_ground_truth_or_none() -> str | None:
    return str(wider_ap.DEFAULT_GROUND_TRUTH) if wider_ap.DEFAULT_GROUND_TRUTH.is_dir() else None
