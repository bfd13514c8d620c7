"""People given to ``metahmr process`` instead of found: ``--boxes-json`` boxes and ``--keypoints-json`` keypoints.

:class:`ImportedPeople` looks up the entry of one input (an image, or a frame of a video) and hands the estimator
its boxes, scores and (imported keypoints) keypoints mapped onto the 49 slots; an input the file does not list is an
:class:`~metahmr_cli.errors.InputError` naming the entry to add.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli.detect import ImportedBoxes, filter_detections
from metahmr_cli.detect.boxes_json import input_label
from metahmr_cli.errors import InputError
from metahmr_cli.estimator import Estimator
from metahmr_cli.keypoints import to_49

__all__ = ["ImportedPeople"]


class _ImportedKeypoints:
    """Keypoints of ``--keypoints-json`` for one input, matched to its boxes, mapped onto the 49 slots."""

    def __init__(self, imported: Any) -> None:
        self.imported = imported

    def boxes(self, path: Path, frame: int | None) -> Any:
        return self.imported.detections(path, frame)

    def keypoints(self, image: np.ndarray, boxes: np.ndarray, path: Path, frame: int | None) -> np.ndarray:
        kp = self.imported.bind(path, frame).estimate(image, boxes)
        return to_49(np.asarray(kp, np.float32), self.imported.format)


class ImportedPeople:
    """The imported boxes / keypoints of a run (none when neither file is given); made once the estimator is set
    up (it loads the keypoints file); ``boxes_json``: the runner's ``--boxes-json``."""

    def __init__(self, estimator: Estimator, boxes_json: Path | None) -> None:
        self.config = estimator.config
        self.boxes: Any = None
        self.keypoints: _ImportedKeypoints | None = None
        if estimator.imported_keypoints is not None:
            self.keypoints = _ImportedKeypoints(estimator.imported_keypoints)
        if boxes_json is not None:
            self.boxes = ImportedBoxes(boxes_json)

    def inputs(self, item: Any, frame: int | None, image: np.ndarray) -> dict[str, Any]:
        """Boxes / keypoints imported for this input (``--boxes-json`` / ``--keypoints-json``), for the estimator."""
        cfg = self.config
        if self.boxes is None and self.keypoints is None:
            return {}
        source = self.boxes if self.boxes is not None else self.keypoints
        dets = source.get(item.path, frame) if self.boxes is not None else source.boxes(item.path, frame)
        if dets is None:
            where = input_label(item.path, frame)
            path = cfg.boxes_json if cfg.boxes_json is not None else cfg.keypoints_json
            what = "boxes" if cfg.boxes_json is not None else "people"
            raise InputError(f"{path} lists no {what} for {where!r}; add an entry (may be empty).")
        out: dict[str, Any] = {"boxes": dets.xyxy, "scores": dets.scores}
        if self.keypoints is not None:
            H, W = image.shape[:2]
            kept = filter_detections(dets, min_box_size=cfg.min_box, max_people=cfg.max_people, image_size=(W, H))
            out = {"boxes": kept.xyxy, "scores": kept.scores,
                   "keypoints": self.keypoints.keypoints(image, kept.xyxy, Path(item.path), frame)}
        return out
