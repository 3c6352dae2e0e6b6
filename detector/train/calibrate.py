"""Turn raw detector scores into probabilities, from the model's own validation predictions.

The model predicts on the val split at a low candidate confidence; each candidate is matched
to ground truth (same class, rotated IoU for ``obb``, axis-aligned IoU for ``detect``, greedy
by score); per-class isotonic maps from score to P(correct) are fitted on the matches
(``detector.calibration``). The expected calibration error after calibration is measured
by 2-fold cross-fitting over images, so it is not flattered by fitting and scoring the same
candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector import calibration
from detector.data.yolo import dataset_split_images
from detector.errors import DetectorError
from detector.matching import greedy_match, iou_matrix

FALLBACK_THRESHOLD = 0.25  # Ultralytics' predict default, for a class without any candidate


@dataclass
class MatchedCandidates:
    """Every candidate detection on a split, with whether it matched a truth."""

    n_classes: int
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    image: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    n_truth: np.ndarray | None = None          # truth instances per class
    truth_found: np.ndarray | None = None      # truth matched by some candidate, per class
    truth_per_image: dict[int, np.ndarray] = field(default_factory=dict)  # per-class counts

    def __post_init__(self) -> None:
        if self.n_truth is None:
            self.n_truth = np.zeros(self.n_classes, int)
        if self.truth_found is None:
            self.truth_found = np.zeros(self.n_classes, int)

    def add(self, image: int, scores: np.ndarray, classes: np.ndarray, correct: np.ndarray,
            truth_classes: np.ndarray, truth_matched: np.ndarray) -> None:
        """Append one image's candidates and truth bookkeeping."""
        self.scores = np.concatenate([self.scores, scores])
        self.classes = np.concatenate([self.classes, classes.astype(int)])
        self.correct = np.concatenate([self.correct, correct.astype(bool)])
        self.image = np.concatenate([self.image, np.full(len(scores), image, int)])
        per_class = np.bincount(truth_classes.astype(int), minlength=self.n_classes)
        self.truth_per_image[image] = self.truth_per_image.get(image, 0) + per_class
        self.n_truth += per_class
        self.truth_found += np.bincount(truth_classes[truth_matched].astype(int),
                                        minlength=self.n_classes)


# -- matching ---------------------------------------------------------------------------

def match(pred: np.ndarray, scores: np.ndarray, pred_cls: np.ndarray, truth: np.ndarray,
          truth_cls: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy same-class matching in order of falling score.

    Args:
        pred: predicted polygons (N, 4, 2) in pixels.
        scores: their scores (N,).
        pred_cls: their class ids (N,).
        truth: true polygons (M, 4, 2).
        truth_cls: their class ids (M,).
        iou_threshold: minimum IoU of a match.

    Returns:
        ``correct`` (N,) bool per prediction and ``matched`` (M,) bool per truth.
    """
    allowed = np.asarray(pred_cls)[:, None] == np.asarray(truth_cls)[None, :]
    result = greedy_match(iou_matrix(pred, truth), scores, iou_threshold, allowed)
    correct = result >= 0
    matched = np.zeros(len(truth), bool)
    matched[result[correct]] = True
    return correct, matched


# -- reading a split --------------------------------------------------------------------

def read_truth(label_file: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ids (M,) and pixel polygons (M, 4, 2) of a YOLO label file (obb or detect rows)."""
    if not label_file.exists():
        return np.zeros(0, int), np.zeros((0, 4, 2))
    rows = [r.split() for r in label_file.read_text().splitlines() if r.strip()]
    classes, polys = [], []
    for row in rows:
        values = np.array(row[1:], float)
        if values.size == 8:
            poly = values.reshape(4, 2)
        elif values.size == 4:
            cx, cy, w, h = values
            poly = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2],
                             [cx + w / 2, cy + h / 2], [cx - w / 2, cy + h / 2]])
        else:
            raise DetectorError(f"{label_file}: label rows need 4 (detect) or 8 (obb) "
                                "coordinates; rebuild the dataset")
        classes.append(int(row[0]))
        polys.append(poly * (width, height))
    return np.array(classes, int), np.array(polys).reshape(-1, 4, 2)


def result_polygons(result: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polygons (N, 4, 2), scores and class ids of one Ultralytics result (obb or detect)."""
    if getattr(result, "obb", None) is not None:
        obb = result.obb
        return (obb.xyxyxyxy.cpu().numpy().reshape(-1, 4, 2), obb.conf.cpu().numpy(),
                obb.cls.cpu().numpy().astype(int))
    boxes = result.boxes
    x0, y0, x1, y1 = boxes.xyxy.cpu().numpy().T
    polys = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1),
                      np.stack([x1, y1], -1), np.stack([x0, y1], -1)], 1)
    return polys.reshape(-1, 4, 2), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy().astype(int)


def collect_candidates(model: Any, data_yaml: str | Path, n_classes: int, cal_cfg: Any,
                       imgsz: int, device: Any = None, split: str = "val",
                       progress: bool = False) -> MatchedCandidates:
    """Predict on a split at ``cal_cfg.candidate_conf`` and match every candidate to truth
    (``progress``: a bar over the chip batches)."""
    from detector.data.yolo import label_path
    from detector.progress import progress as progress_bar

    images = dataset_split_images(data_yaml, split)
    cands = MatchedCandidates(n_classes)
    size = int(cal_cfg.batch)
    for start in progress_bar(range(0, len(images), size), desc="calibration chips",
                              unit="batch", enabled=progress):
        batch = images[start:start + size]
        results = model.predict([str(p) for p in batch], conf=cal_cfg.candidate_conf,
                                iou=float(cal_cfg.nms.iou), agnostic_nms=bool(cal_cfg.nms.agnostic),
                                imgsz=imgsz, device=device,
                                max_det=int(cal_cfg.max_det), verbose=False)
        for k, (image, result) in enumerate(zip(batch, results, strict=True)):
            height, width = result.orig_shape
            truth_cls, truth = read_truth(label_path(image), width, height)
            polys, scores, classes = result_polygons(result)
            correct, matched = match(polys, scores, classes, truth, truth_cls, cal_cfg.iou)
            cands.add(start + k, scores, classes, correct, truth_cls, matched)
    return cands


def run_scenes(weights: str | Path, scenes: Sequence[tuple[Path, Path]], cal_cfg: Any,
               device: Any = None, progress: bool = False) -> list[Any]:
    """Run the real inference pipeline with the calibration's candidate settings.

    One run over all scenes: the bundle is loaded (and its sha256 checked) once. Returns
    the :class:`detector.infer.SceneResult` of each scene (all candidates, tile features).
    ``progress`` shows inference's bars (scenes, tiles).
    """
    import tempfile

    from detector.infer import run

    with tempfile.TemporaryDirectory(prefix="calibrate_") as out:
        # The torch network is the reference (other backends match it,
        # tests/test_infer_backends.py), it alone yields the shift features, and a model
        # calibrated once is not worth exporting.
        return run([image for image, _ in scenes], weights, out=out, overwrite=True,
                   backend="torch", quicklook=False, progress=progress,
                   conf=float(cal_cfg.candidate_conf),
                   iou=float(cal_cfg.nms.iou), agnostic_nms=bool(cal_cfg.nms.agnostic),
                   **({"device": str(device)} if device is not None else {}))


def scene_candidates(results: Sequence[Any], scenes: Sequence[tuple[Path, Path]],
                     names: Sequence[str], cal_cfg: Any, cands: MatchedCandidates | None = None,
                     first_image: int = 0) -> MatchedCandidates:
    """Match the candidates of inference ``results`` to the truth of their ``scenes``.

    Appends to ``cands`` (a new set when None) with image ids from ``first_image`` on, so
    the candidates of several models (cross-fitting folds) can be pooled.
    """
    from detector.evaluate.matching import IGNORED
    from detector.evaluate.scenes import load_scene
    from detector.evaluate.scoring import SceneEval, scene_matches

    cands = MatchedCandidates(len(names)) if cands is None else cands
    index = {name: c for c, name in enumerate(names)}
    for k, ((image, labels), result) in enumerate(zip(scenes, results, strict=True)):
        scene = load_scene(image, labels, list(names))
        if not result.ok:
            raise DetectorError(f"{image}: inference failed during calibration "
                                f"({result.error}); fix the scene or leave it out")
        matches, _ = scene_matches(SceneEval(image.stem, result.detections, result.counts,
                                             scene.truth, scene.width, scene.height))
        assigned = matches.match(float(cal_cfg.iou))
        truth_cls = np.array([index[c] for c in matches.truth_cls], int)
        found = np.zeros(len(truth_cls), bool)
        found[assigned[assigned >= 0]] = True
        kept = ~matches.ignore
        used = assigned != IGNORED  # detections of cars mostly outside the scene
        det_cls = np.array([index[c] for c in matches.det_cls], int)
        cands.add(first_image + k, matches.scores[used], det_cls[used], assigned[used] >= 0,
                  truth_cls[kept], found[kept])
    return cands


def collect_scene_candidates(weights: str | Path, scenes: Sequence[tuple[Path, Path]],
                             names: Sequence[str], cal_cfg: Any, device: Any = None
                             ) -> MatchedCandidates:
    """Candidates from the real inference pipeline on whole labelled scenes.

    Counting happens on tiled, merged scenes, not on training chips (where cars cut by a
    chip edge are harder), so calibrating here makes ``p`` and the recall mean what the
    count intervals assume. Truth less than half inside a scene is neither required nor
    penalised, as in evaluation.
    """
    return scene_candidates(run_scenes(weights, scenes, cal_cfg, device), scenes, names,
                            cal_cfg)


# -- fitting and reporting --------------------------------------------------------------

def fit_maps(cands: MatchedCandidates, names: Sequence[str], min_samples: int = 20
             ) -> dict[str, dict[str, Any]]:
    """Per-class isotonic score -> probability maps (identity for classes with few samples)."""
    return {name: calibration.fit_isotonic(cands.scores[cands.classes == c],
                                           cands.correct[cands.classes == c], min_samples)
            for c, name in enumerate(names)}


def cross_fitted(cands: MatchedCandidates, n_classes: int, min_samples: int = 20) -> np.ndarray:
    """Calibrated probability of each candidate from maps fitted on the other half of images."""
    fold = cands.image % 2
    probs = cands.scores.astype(float).copy()
    for c in range(n_classes):
        for f in (0, 1):
            fit = (cands.classes == c) & (fold != f)
            use = (cands.classes == c) & (fold == f)
            if use.any():
                cmap = calibration.fit_isotonic(cands.scores[fit], cands.correct[fit],
                                                min_samples)
                probs[use] = calibration.apply(cmap, cands.scores[use])
    return probs


def ece_report(cands: MatchedCandidates, names: Sequence[str], min_samples: int = 20
               ) -> dict[str, Any]:
    """ECE of raw scores and of (cross-fitted) calibrated probabilities, overall and per class."""
    after = cross_fitted(cands, len(names), min_samples)
    ece = calibration.expected_calibration_error
    report: dict[str, Any] = {
        "ece_before": round(ece(cands.scores, cands.correct), 4),
        "ece_after": round(ece(after, cands.correct), 4),
        "per_class": {}}
    for c, name in enumerate(names):
        sel = cands.classes == c
        report["per_class"][name] = {
            "ece_before": round(ece(cands.scores[sel], cands.correct[sel]), 4),
            "ece_after": round(ece(after[sel], cands.correct[sel]), 4),
            "candidates": int(sel.sum())}
    return report


def f1_threshold(scores: np.ndarray, correct: np.ndarray, n_truth: int) -> tuple[float, float]:
    """The raw score threshold that maximises F1, and that F1.

    Detections with ``score >= threshold`` are kept; truths never proposed count as misses.
    """
    if scores.size == 0 or n_truth == 0:
        return FALLBACK_THRESHOLD, 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(correct[order])
    kept = np.arange(1, scores.size + 1)
    f1 = 2 * tp / (kept + n_truth)
    best = int(f1.argmax())
    return float(scores[order][best]), float(f1[best])


def count_threshold(scores: np.ndarray, correct: np.ndarray, n_truth: int
                    ) -> tuple[float, float]:
    """The raw threshold that keeps as many candidates as there are true objects, and its F1.

    Counting at it is unbiased on the calibration data (misses and false alarms balance),
    where the F1-optimal threshold undercounts whenever recall trails precision.
    """
    if scores.size == 0 or n_truth == 0:
        return FALLBACK_THRESHOLD, 0.0
    order = np.argsort(-scores, kind="stable")
    kept = min(n_truth, scores.size)
    f1 = 2 * float(correct[order][:kept].sum()) / (kept + n_truth)
    return float(scores[order][kept - 1]), f1


THRESHOLD_RULES = {"count": count_threshold, "f1": f1_threshold}


def operating_thresholds(cands: MatchedCandidates, names: Sequence[str], rule: str = "count"
                         ) -> dict[str, Any]:
    """Global and per-class raw operating thresholds (with their F1 on the calibration data).

    Args:
        cands: matched candidates.
        names: class names in id order.
        rule: ``count`` (as many kept as there are true objects) or ``f1`` (F1-optimal).
    """
    if rule not in THRESHOLD_RULES:
        raise DetectorError(f"calibration.operating={rule}: use one of {list(THRESHOLD_RULES)}")
    choose = THRESHOLD_RULES[rule]
    thr, f1 = choose(cands.scores, cands.correct, int(cands.n_truth.sum()))
    per_class = {}
    for c, name in enumerate(names):
        sel = cands.classes == c
        t, f = choose(cands.scores[sel], cands.correct[sel], int(cands.n_truth[c]))
        per_class[name] = {"threshold": round(t, 4), "f1": round(f, 4)}
    return {"threshold": round(thr, 4), "f1": round(f1, 4), "per_class": per_class}


def recall_at_candidate_conf(cands: MatchedCandidates, names: Sequence[str]
                             ) -> dict[str, float | None]:
    """Share of each class's truth matched by some candidate (None without truth)."""
    return {name: (round(float(cands.truth_found[c] / cands.n_truth[c]), 4)
                   if cands.n_truth[c] else None) for c, name in enumerate(names)}


def recall_counts(cands: MatchedCandidates, names: Sequence[str]) -> dict[str, list[int]]:
    """[found, total] truth per class: the evidence behind the recall, for its uncertainty."""
    return {name: [int(cands.truth_found[c]), int(cands.n_truth[c])]
            for c, name in enumerate(names)}


def dispersion(cands: MatchedCandidates, names: Sequence[str], maps: dict[str, dict[str, Any]],
               evidence: dict[str, list[int]], not_wagons: Sequence[str]) -> dict[str, float]:
    """Variance ratio of per-scene counts vs their Poisson-binomial model, per class, for
    wagons and for all vehicles (every class: what class-agnostic evaluation counts).

    Only meaningful when each image is a whole scene (scene-level calibration): within a
    scene, detections share its haze, sun and density, so their errors are correlated and
    the independent-detection interval is too narrow by this factor.
    """
    from detector.infer.counting import (
        VEHICLES,
        WAGONS,
        class_summary,
        convolve_pmfs,
        dispersion_ratio,
    )

    images = sorted(cands.truth_per_image)
    pmfs: dict[str, list[np.ndarray]] = {name: [] for name in [*names, WAGONS, VEHICLES]}
    truth: dict[str, list[int]] = {name: [] for name in pmfs}
    for k in images:
        wagon_pmf, wagon_truth = np.ones(1), 0
        all_pmf, all_truth = np.ones(1), 0
        for c, name in enumerate(names):
            sel = (cands.image == k) & (cands.classes == c)
            p = calibration.apply(maps.get(name), cands.scores[sel])
            _, pmf = class_summary(cands.scores[sel], p, 1.0, recall_evidence=evidence[name])
            n = int(cands.truth_per_image[k][c])
            pmfs[name].append(pmf)
            truth[name].append(n)
            all_pmf, all_truth = convolve_pmfs(all_pmf, pmf), all_truth + n
            if name not in not_wagons:
                wagon_pmf, wagon_truth = convolve_pmfs(wagon_pmf, pmf), wagon_truth + n
        pmfs[WAGONS].append(wagon_pmf)
        truth[WAGONS].append(wagon_truth)
        pmfs[VEHICLES].append(all_pmf)
        truth[VEHICLES].append(all_truth)
    return {name: round(dispersion_ratio(truth[name], pmfs[name]), 3) for name in pmfs}


def calibrate(cands: MatchedCandidates, names: Sequence[str], min_samples: int = 20,
              rule: str = "count") -> dict[str, Any]:
    """Everything the card needs from the candidates: maps, ECE, thresholds, recall."""
    return {"calibration": fit_maps(cands, names, min_samples),
            "ece": ece_report(cands, names, min_samples),
            "operating": operating_thresholds(cands, names, rule),
            "recall_at_candidate_conf": recall_at_candidate_conf(cands, names),
            "recall_counts": recall_counts(cands, names),
            "n_candidates": int(cands.scores.size), "n_truth": int(cands.n_truth.sum()),
            "n_truth_per_class": {name: int(cands.n_truth[c]) for c, name in enumerate(names)}}
