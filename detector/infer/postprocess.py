"""Per-tile postprocessing in numpy: confidence filter, class-agnostic (rotated) NMS, boxes.

The exported backends (OpenVINO, ONNX Runtime) hand back the network's raw output as a numpy
array; this turns it into detections without torch or Ultralytics, reproducing
``ultralytics.utils.nms.non_max_suppression`` (what the torch backend runs):

* the classic head, (B, 4 + nc + extra, N) with xywh, class scores and, for OBB, the angle:
  best class per anchor, ``score > conf``, then NMS: Fast-NMS with probabilistic IoU for
  rotated boxes (a box is dropped when any higher-scored box overlaps it more than ``iou``),
  greedy IoU NMS for axis-aligned ones (as torchvision's);
* the end-to-end head of YOLO26 (``end2end``), (B, K, 6 + extra) rows of xywh (xyxy for
  detect), score, class, extra: already one box per object, so only ``score > conf`` and
  ``max_det``.

Ties in score are broken by anchor order (a stable sort); Ultralytics' torch sort is not
stable, so two boxes of exactly equal score may resolve differently (rare, and both are the
same object).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_NMS = 30000  # boxes entering NMS per tile, highest scores first (Ultralytics' default)
MAX_WH = 7680  # class offset for class-aware NMS (Ultralytics' default)
_EPS = 1e-7


@dataclass
class TileDetections:
    """Detections of one tile in tile-image pixels: corners (N, 4, 2), scores, class ids."""

    corners: np.ndarray
    scores: np.ndarray
    cls: np.ndarray


def postprocess(raw: np.ndarray, rotated: bool, nc: int, conf: float, iou: float,
                agnostic: bool = True, max_det: int = 1000, end2end: bool = False
                ) -> list[TileDetections]:
    """Raw network output of a batch → detections per tile.

    Args:
        raw: (B, 4 + nc + extra, N) classic head output, or (B, K, 6 + extra) end-to-end.
        rotated: OBB (angle in the last channel) rather than axis-aligned boxes.
        nc: number of classes.
        conf: keep boxes whose best class score exceeds this.
        iou: NMS overlap threshold (probabilistic IoU for rotated boxes).
        agnostic: one box per object across classes.
        max_det: at most this many boxes per tile.
        end2end: ``raw`` comes from an NMS-free end-to-end head.

    Returns:
        One :class:`TileDetections` per tile (after NMS sorted by descending score; an
        end-to-end head's rows in its own order).
    """
    raw = np.asarray(raw, dtype=np.float32)
    rows = [_end2end_rows(p, conf, max_det) if end2end else
            _nms_rows(p, rotated, nc, conf, iou, agnostic, max_det) for p in raw]
    return [_to_detections(r, rotated) for r in rows]


def _end2end_rows(pred: np.ndarray, conf: float, max_det: int) -> np.ndarray:
    return pred[pred[:, 4] > conf][:max_det]


def _nms_rows(pred: np.ndarray, rotated: bool, nc: int, conf: float, iou: float,
              agnostic: bool, max_det: int) -> np.ndarray:
    """(K, 6 + extra) rows [box, score, class, extra] kept by NMS, highest score first."""
    nc = nc or pred.shape[0] - 4
    scores_all = pred[4:4 + nc]
    best = scores_all.max(axis=0)
    x = pred[:, best > conf].T  # (n, 4 + nc + extra)
    if not len(x):
        return np.zeros((0, 6 + pred.shape[0] - 4 - nc), np.float32)
    box, cls_scores, extra = x[:, :4], x[:, 4:4 + nc], x[:, 4 + nc:]
    if not rotated:
        box = xywh2xyxy(box)
    score = cls_scores.max(axis=1)
    label = cls_scores.argmax(axis=1).astype(np.float32)
    x = np.concatenate([box, score[:, None], label[:, None], extra], axis=1)
    order = np.argsort(-x[:, 4], kind="stable")[:MAX_NMS]
    x = x[order]
    offset = x[:, 5:6] * (0 if agnostic else MAX_WH)
    if rotated:
        boxes = np.concatenate([x[:, :2] + offset, x[:, 2:4], x[:, -1:]], axis=1)
        keep = fast_nms_rotated(boxes, iou)
    else:
        keep = greedy_nms(x[:, :4] + offset, iou)
    return x[keep[:max_det]]


def xywh2xyxy(box: np.ndarray) -> np.ndarray:
    """(N, 4) centre/size → corners x1, y1, x2, y2."""
    half = box[:, 2:4] / 2
    return np.concatenate([box[:, :2] - half, box[:, :2] + half], axis=1)


def probiou(boxes: np.ndarray) -> np.ndarray:
    """(N, N) probabilistic IoU of rotated boxes (N, 5) xywhr with each other.

    The Bhattacharyya-distance similarity of the boxes' Gaussians (arXiv 2106.06072), as
    ``ultralytics.utils.metrics.batch_probiou`` computes it (in float64 here).
    """
    b = boxes.astype(np.float64)
    x, y = b[:, 0], b[:, 1]
    w2, h2 = b[:, 2] ** 2 / 12, b[:, 3] ** 2 / 12
    cos, sin = np.cos(b[:, 4]), np.sin(b[:, 4])
    a = w2 * cos ** 2 + h2 * sin ** 2
    bb = w2 * sin ** 2 + h2 * cos ** 2
    c = (w2 - h2) * cos * sin
    sa, sb, sc = a[:, None] + a[None], bb[:, None] + bb[None], c[:, None] + c[None]
    dx, dy = x[:, None] - x[None], y[:, None] - y[None]
    det = sa * sb - sc ** 2
    t1 = (sa * dy ** 2 + sb * dx ** 2) / (det + _EPS) * 0.25
    t2 = (sc * (-dx) * dy) / (det + _EPS) * 0.5
    own = np.clip(a * bb - c ** 2, 0, None)
    t3 = np.log(det / (4 * np.sqrt(own[:, None] * own[None]) + _EPS) + _EPS) * 0.5
    bd = np.clip(t1 + t2 + t3, _EPS, 100.0)
    return 1 - np.sqrt(1.0 - np.exp(-bd) + _EPS)


def fast_nms_rotated(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by Fast-NMS of score-sorted rotated boxes (N, 5): a box goes when any box
    before it overlaps it by more than ``iou`` (probabilistic IoU)."""
    if not len(boxes):
        return np.zeros(0, int)
    over = np.triu(probiou(boxes) > iou, k=1)
    return np.flatnonzero(~over.any(axis=0))


def greedy_nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS of score-sorted axis-aligned boxes (N, 4) xyxy."""
    b = boxes.astype(np.float64)
    area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    alive = np.ones(len(b), bool)
    keep = []
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if not len(rest):
            break
        w = (np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])).clip(0)
        h = (np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])).clip(0)
        inter = w * h
        alive[rest[inter / (area[i] + area[rest] - inter + 1e-12) > iou]] = False
    return np.asarray(keep, int)


def obb_corners(xywhr: np.ndarray) -> np.ndarray:
    """(N, 5) centre, size, angle (radians) → (N, 4, 2) corners, in Ultralytics' order."""
    ctr = xywhr[:, :2]
    w, h, angle = xywhr[:, 2:3], xywhr[:, 3:4], xywhr[:, 4:5]
    cos, sin = np.cos(angle), np.sin(angle)
    v1 = np.concatenate([w / 2 * cos, w / 2 * sin], axis=-1)
    v2 = np.concatenate([-h / 2 * sin, h / 2 * cos], axis=-1)
    return np.stack([ctr + v1 + v2, ctr + v1 - v2, ctr - v1 - v2, ctr - v1 + v2], axis=-2)


def box_corners(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 → (N, 4, 2) corners, clockwise from the top left."""
    x1, y1, x2, y2 = xyxy.T
    return np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1),
                     np.stack([x2, y2], -1), np.stack([x1, y2], -1)], 1)


def _to_detections(rows: np.ndarray, rotated: bool) -> TileDetections:
    rows = rows.astype(np.float32)
    if rotated:
        corners = obb_corners(np.concatenate([rows[:, :4], rows[:, -1:]], axis=1))
    else:
        corners = box_corners(rows[:, :4])
    return TileDetections(corners.reshape(-1, 4, 2).astype(float), rows[:, 4].astype(float),
                          rows[:, 5].astype(int))
