"""Shift alarm: how unlike the calibration scenes a scene looks to the model, and whether
its count can be trusted.

Two kinds of evidence. (1) Feature score, below: early-layer statistics of the tiles.
(2) Output signals (:func:`output_signals`, backend-independent: computed from the
candidates every backend returns): the share of uncertain candidates, the share of faint
ones, the mean calibrated probability of the counted ones and the candidates per km2, plus
the feature score. The card's ``shift.alarm`` rule (:func:`fit_alarm`, fitted at
recalibration) holds each signal's mean and spread on the calibration scenes; a scene alarms
when any signal in the rule's ``use`` list lies more than ``threshold_z`` spreads (combined
with the scene's own sampling error) beyond them in the direction that means trouble, or when
the feature score exceeds its own threshold while the rule uses it or the model found too
little to measure the output signals. Then the scene's interval is reported as not
calibrated. Which signals and threshold: ``scripts/bench_shift.py`` (README).

During inference a forward hook pools an early backbone block (:data:`LAYER`, where colour,
texture and blur show; the last backbone layer measured worse on planted restyled scenes)
into a 4 x 4 grid of channel-mean vectors per tile: nearly free, since the forward pass runs
anyway. At calibration the patch vectors of the calibration scenes are summarised in the
card's ``shift`` field: standardisation, the main principal components and the residual
variance (a probabilistic-PCA Gaussian). A scene's score is the median over its patches of
their normalised Mahalanobis distance to that Gaussian (about 1 for patches like the
calibration ones). The alarm threshold is ``margin`` times the highest leave-one-scene-out
score of the calibration scenes (each scored against a reference fitted without it). With
``margin`` 1 this is a conformal bound: a new scene exchangeable with n calibration scenes
exceeds it with probability at most 1 / (n + 1) (25% with 3 scenes, 6% with 16).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHOD = "patch-features-ppca/1"
NO_REFERENCE = ("the model card has no shift reference; recalibrate the model on labelled "
                "scenes (python -m detector.train.recalibrate weights=... scenes=DIR) to "
                "enable the alarm")
NO_FEATURES = "no tile features from this model; shift not measured"
_SD_FLOOR = 1e-3
GRID = 4  # patches per tile side: more samples per tile than one global pool
LAYER = 2  # the first feature block after the stem of Ultralytics YOLO v8/11/26 nets


@dataclass
class FeatureLog:
    """Pooled feature vectors of every tile (patch) the model saw, in forward order."""

    layer: int | None = None
    parts: list[np.ndarray] = field(default_factory=list)

    def hook(self, _module: Any, _inputs: Any, output: Any) -> None:
        """Forward hook: (B, C, H, W) -> (B * cells, C) channel means on a coarse grid."""
        import torch

        x = output.detach().float()
        grid = torch.nn.functional.adaptive_avg_pool2d(x, min(GRID, x.shape[-1], x.shape[-2]))
        self.parts.append(grid.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).cpu().numpy())

    def array(self) -> np.ndarray | None:
        """(patches, features), or None when nothing was recorded."""
        return np.concatenate(self.parts) if self.parts else None


def feature_layer(net: Any) -> int | None:
    """:data:`LAYER` when ``net`` has a YOLO layer list that long, else None."""
    layers = getattr(net, "model", None)
    if layers is None or not hasattr(layers, "__len__") or len(layers) <= LAYER:
        return None
    return LAYER


@contextmanager
def tile_features(net: Any, layer: int | None = None) -> Iterator[FeatureLog]:
    """Record pooled features of ``net``'s layer ``layer`` (default: :func:`feature_layer`).

    A net without YOLO layers (another backend) yields an empty log.
    """
    layer = feature_layer(net) if layer is None else int(layer)
    log = FeatureLog(layer)
    layers = getattr(net, "model", None)
    if layer is None or layers is None or not 0 <= layer < len(layers):
        yield FeatureLog(None)
        return
    handle = layers[layer].register_forward_hook(log.hook)
    try:
        yield log
    finally:
        handle.remove()


class FeatureTap:
    """Wraps a non-torch runner (ONNX Runtime, OpenVINO) so the shift features still exist.

    On every ``every``-th batch the torch net's layers up to ``layer`` (the stem and the first
    block: a small share of the network's work) run on the same tiles, so the feature hook
    fires as it would in a torch forward pass; the detections still come from ``runner``.
    """

    def __init__(self, runner: Any, net: Any, layer: int, every: int = 2):
        self.runner, self.net, self.layer, self.every = runner, net, int(layer), max(1, every)
        self.calls = 0
        self.name = getattr(runner, "name", type(runner).__name__)

    def __call__(self, images: np.ndarray) -> Any:
        out = self.runner(images)
        if self.calls % self.every == 0:
            self._early_layers(images)
        self.calls += 1
        return out

    def _early_layers(self, images: np.ndarray) -> None:
        import torch

        param = next(self.net.parameters())
        x = torch.from_numpy(np.ascontiguousarray(images)).to(param.device)
        x = (x.to(param.dtype) / 255.0).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            for module in self.net.model[: self.layer + 1]:  # these layers chain one to one
                x = module(x)


@contextmanager
def tapped(predictor: Any, net: Any, layer: int | None) -> Iterator[None]:
    """Inside the block a non-torch ``predictor.runner`` also feeds the feature hook."""
    runner = getattr(predictor, "runner", None)
    if (runner is None or layer is None or net is None
            or getattr(runner, "name", "torch") == "torch"):
        yield
        return
    predictor.runner = FeatureTap(runner, net, layer)
    try:
        yield
    finally:
        predictor.runner = runner


# -- reference and score ------------------------------------------------------------------

def fit_gaussian(features: np.ndarray, components: int) -> dict[str, Any]:
    """Standardisation + top principal components + residual variance of patch features."""
    x = np.asarray(features, float)
    mean, sd = x.mean(axis=0), np.maximum(x.std(axis=0), _SD_FLOOR)
    z = (x - mean) / sd
    k = int(max(1, min(components, z.shape[0] - 1, z.shape[1] - 1)))
    _, s, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    var = s ** 2 / max(1, z.shape[0] - 1)
    residual = float(var[k:].sum() / max(1, z.shape[1] - k)) if var.size > k else 1e-6
    return {"mean": mean, "sd": sd, "components": vt[:k], "variances": np.maximum(var[:k], 1e-6),
            "residual_var": max(residual, 1e-6)}


def tile_distances(gauss: Mapping[str, Any], features: np.ndarray) -> np.ndarray:
    """Normalised Mahalanobis distance of each patch (about 1 for reference-like ones)."""
    z = (np.asarray(features, float) - np.asarray(gauss["mean"])) / np.asarray(gauss["sd"])
    comps = np.asarray(gauss["components"], float)
    proj = z @ comps.T
    inside = (proj ** 2 / np.asarray(gauss["variances"], float)).sum(axis=1)
    resid = ((z - proj @ comps) ** 2).sum(axis=1) / float(gauss["residual_var"])
    return np.sqrt((inside + resid) / z.shape[1])


def scene_score(gauss: Mapping[str, Any], features: np.ndarray) -> float:
    """Median patch distance of one scene."""
    return float(np.median(tile_distances(gauss, features)))


def _subsample(features: np.ndarray, max_patches: int, seed: int) -> np.ndarray:
    if len(features) <= max_patches:
        return features
    rng = np.random.default_rng(seed)
    return features[np.sort(rng.choice(len(features), max_patches, replace=False))]


def fit_reference(scene_features: Sequence[np.ndarray | None], layer: int | None,
                  components: int = 4, margin: float = 1.0, max_patches: int = 2000,
                  names: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The card's ``shift`` field from the patch features of the calibration scenes.

    Args:
        scene_features: (patches, features) per calibration scene (None: not measured).
        layer: the backbone layer the features came from (inference hooks the same one).
        components: principal components kept.
        margin: the threshold is ``margin`` x the highest leave-one-scene-out score.
        max_patches: patches per scene used (a seeded sample of larger scenes).
        names: scene names for the record.

    Returns:
        The reference dict, or None when fewer than two scenes have features.
    """
    feats = [_subsample(np.asarray(f, float), max_patches, k)
             for k, f in enumerate(scene_features) if f is not None and len(f)]
    if len(feats) < 2 or layer is None:
        return None
    loo = []
    for k in range(len(feats)):
        rest = np.concatenate([f for j, f in enumerate(feats) if j != k])
        loo.append(scene_score(fit_gaussian(rest, components), feats[k]))
    gauss = fit_gaussian(np.concatenate(feats), components)
    in_sample = [scene_score(gauss, f) for f in feats]
    return {
        "method": METHOD, "layer": int(layer),
        "mean": _round(gauss["mean"]), "sd": _round(gauss["sd"]),
        "components": _round(gauss["components"]), "variances": _round(gauss["variances"]),
        "residual_var": float(f"{gauss['residual_var']:.5g}"),
        "threshold": round(margin * max(loo), 4), "margin": float(margin),
        "reference": {"scenes": len(feats), "patches": int(sum(len(f) for f in feats)),
                      "loo_scores": [round(s, 4) for s in loo],
                      "in_sample_scores": [round(s, 4) for s in in_sample],
                      **({"names": list(names)} if names is not None else {})},
    }


def _round(values: np.ndarray) -> list:
    return np.asarray(values, float).round(5).tolist()


def shift_fields(reference: Mapping[str, Any] | None, features: np.ndarray | None
                 ) -> dict[str, Any]:
    """The counts JSON ``shift`` entry: ``{"score", "alarm", "threshold"}``, or None + note.

    Args:
        reference: the card's ``shift`` reference (None when it has none).
        features: this scene's tile features.
    """
    if not reference or "threshold" not in reference:
        return {"shift": None, "shift_note": NO_REFERENCE if not reference else NO_FEATURES}
    if features is None or not len(features):
        return {"shift": None, "shift_note": NO_FEATURES}
    score = scene_score(reference, features)
    threshold = float(reference["threshold"])
    return {"shift": {"score": round(score, 4), "alarm": bool(score > threshold),
                      "threshold": threshold}}


def alarm_message(scene: str, shift: Mapping[str, Any]) -> str:
    """One line for an alarmed scene: what it means and what to do."""
    if shift.get("fired"):
        why = ", ".join(f"{name} z={z:+.1f}" for name, z in shift["fired"].items())
        what = f"SHIFT ({why} beyond {shift['threshold_z']:g})"
    else:
        what = f"SHIFT score {shift['score']:.2f} > {shift['threshold']:.2f}"
    return (f"{scene}: {what}: the 95% interval is NOT calibrated for this scene (it looks "
            "unlike the scenes the model was calibrated on; the count may be wrong); adapt the "
            "model to this imagery (python -m detector.adapt scenes=DIR of a few labelled "
            "scenes)")


def auroc(negatives: Sequence[float], positives: Sequence[float]) -> float | None:
    """Probability that a positive (off-style) score exceeds a negative one (ties count half)."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if not neg.size or not pos.size:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (neg.size * pos.size))


# -- output signals and the alarm rule --------------------------------------------------------

ALARM_METHOD = "output-signals/1"
UNSURE = (0.2, 0.8)  # a candidate with p in this range is uncertain (as the review flag)
# name: (direction, spread floor). +1: high means trouble, -1: low does, 0: either way.
SIGNALS: dict[str, tuple[int, float]] = {
    "uncertain": (1, 0.05),     # share of plausible candidates (p >= 0.2) with p < 0.8
    "faint": (1, 0.05),         # share of all candidates with p < 0.2: cars scored under the
                                # candidates a model trusts when the imagery is unfamiliar
    "top_p": (-1, 0.03),        # mean calibrated probability of the counted detections
    "log_density": (1, 0.2),    # log10(1 + candidates per km2); few is an empty yard, not
                                # trouble (a small-scale benchmark: two-sided alarmed on them)
    "feature": (1, 0.05),       # the feature score above (leave-one-out on calibration)
}
# Fewer candidates than these leave a share or a mean undefined (an empty yard is no evidence).
MIN_PLAUSIBLE, MIN_COUNTED = 5, 3
NOT_CALIBRATED = ("the shift alarm fired: the 95% interval is not calibrated for this scene "
                  "(not widened); check the count or adapt the model to this imagery")


def output_signals(p: np.ndarray, counted: np.ndarray, area_km2: float,
                   feature: float | None = None) -> dict[str, float | None]:
    """Backend-independent signals of one scene from its candidates.

    Each share or mean comes with its sampling standard error in this scene (``NAME_se``):
    binomial for shares, s/sqrt(n) for the mean probability, Poisson for the density
    (delta method). A scene with few candidates has a noisy signal; :func:`_z` adds that
    error to the calibration scenes' spread, so small scenes do not alarm by chance.

    Args:
        p: calibrated probability of every candidate (N,).
        counted: (N,) bool, candidates at or above their class's operating threshold.
        area_km2: area looked at (scene or AOI), km2.
        feature: the scene's feature score (None where not measured).

    Returns:
        {signal: value or None (undefined, e.g. no counted detection), signal_se: its error}.
    """
    p = np.asarray(p, float)
    counted = np.asarray(counted, bool)
    plausible = p >= UNSURE[0]
    out: dict[str, float | None] = {}

    def share(name: str, flags: np.ndarray, enough: bool) -> None:
        value = float(flags.mean()) if enough else None
        out[name] = value
        # Agresti-Coull: a share of 0 or 1 from a few candidates is not certain.
        q = (flags.sum() + 1) / (len(flags) + 2)
        out[f"{name}_se"] = None if value is None else float(np.sqrt(q * (1 - q) / len(flags)))

    share("uncertain", p[plausible] < UNSURE[1], plausible.sum() >= MIN_PLAUSIBLE)
    share("faint", ~plausible, len(p) >= MIN_PLAUSIBLE)
    top = p[counted]
    out["top_p"] = float(top.mean()) if len(top) >= MIN_COUNTED else None
    # At least the error of a Bernoulli mean: isotonic maps put many candidates on one p.
    out["top_p_se"] = (None if out["top_p"] is None else float(max(
        top.std(ddof=1), np.sqrt(out["top_p"] * (1 - out["top_p"]))) / np.sqrt(len(top))))
    area = max(area_km2, 1e-9)
    out["log_density"] = float(np.log10(1 + len(p) / area))
    out["log_density_se"] = float(np.sqrt(max(len(p), 1)) / (np.log(10) * (area + len(p))))
    out["feature"] = None if feature is None else float(feature)
    return out


def _z(stats: Mapping[str, Any], name: str, value: float | None, se: float | None = None
       ) -> float | None:
    """Signed distance of ``value`` beyond the reference, in spreads (positive: trouble).

    The spread is the calibration scenes' one combined with this scene's own sampling
    error ``se`` (root sum of squares).
    """
    if value is None or name not in stats:
        return None
    spread = float(np.hypot(float(stats[name]["sd"]), float(se or 0.0)))
    d = (float(value) - float(stats[name]["mean"])) / spread
    direction = SIGNALS.get(name, (0, 0))[0]
    return abs(d) if direction == 0 else direction * d


def _stats(rows: Sequence[Mapping[str, float | None]]) -> dict[str, dict[str, float]]:
    """Per signal the calibration scenes' centre and spread: median and 1.4826 x MAD (the
    standard deviation of a normal sample, robust to a few odd scenes such as near-empty
    yards, which made the density's plain standard deviation four times larger), at least
    the signal's floor; with two scenes, mean and standard deviation. Stored as ``mean`` and
    ``sd`` (the names older cards use)."""
    out = {}
    for name, (direction, floor) in SIGNALS.items():
        values = np.array([r[name] for r in rows if r.get(name) is not None], float)
        if len(values) < 2:
            continue
        centre, spread = float(values.mean()), float(values.std(ddof=1))
        if len(values) > 2:
            centre = float(np.median(values))
            spread = 1.4826 * float(np.median(np.abs(values - centre)))
        out[name] = {"mean": round(centre, 5), "sd": round(max(spread, floor), 5),
                     "direction": direction}
    return out


def alarm_score(rule: Mapping[str, Any], signals: Mapping[str, float | None]
                ) -> tuple[float | None, dict[str, float]]:
    """Largest z of the rule's used signals, and the z of every measured signal (used or
    not: the others are diagnostics)."""
    zs = {name: _z(rule["signals"], name, signals.get(name), signals.get(f"{name}_se"))
          for name in rule["signals"]}
    zs = {k: round(v, 3) for k, v in zs.items() if v is not None}
    used = [v for k, v in zs.items() if k in rule["use"]]
    return (max(used) if used else None), zs


def fit_alarm(rows: Sequence[Mapping[str, float | None]], use: Sequence[str],
              threshold_z: float, names: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The card's ``shift.alarm`` rule from the calibration scenes' :func:`output_signals`.

    Args:
        rows: signals per calibration scene (with the calibration being fitted).
        use: the signals the rule watches (the rest are recorded, not used).
        threshold_z: a scene alarms when a used signal lies more than this many spreads
            beyond the calibration scenes in its trouble direction.
        names: scene names for the record.

    Returns:
        The rule, or None with fewer than two calibration scenes.
    """
    if len(rows) < 2:
        return None
    stats = _stats(rows)
    rule = {"method": ALARM_METHOD, "signals": stats, "use": [u for u in use if u in stats],
            "threshold_z": float(threshold_z), "unsure": list(UNSURE)}
    loo = []
    for k in range(len(rows)):
        others = {**rule, "signals": _stats([r for j, r in enumerate(rows) if j != k])}
        loo.append(alarm_score(others, rows[k])[0] if len(rows) > 2 else None)
    rule["reference"] = {
        "scenes": len(rows), "signals": [dict(r) for r in rows],
        "loo_scores": [None if v is None else round(v, 3) for v in loo],
        "loo_alarms": sum(v is not None and v > threshold_z for v in loo),
        **({"names": list(names)} if names is not None else {})}
    return rule


def alarm_fields(rule: Mapping[str, Any] | None, shift: Mapping[str, Any] | None,
                 p: np.ndarray, counted: np.ndarray, area_km2: float) -> dict[str, Any]:
    """The counts JSON ``shift`` entry with the output-signal alarm, and the interval flag.

    Args:
        rule: the card's ``shift.alarm`` (None: only the feature alarm, as older cards).
        shift: the feature entry from :func:`shift_fields` (may be None).
        p, counted, area_km2: see :func:`output_signals`.

    Returns:
        ``{"shift": {...}, "interval_calibrated": bool, ["interval_note"]}``.
    """
    entry = dict(shift or {})
    if rule:
        signals = output_signals(p, counted, area_km2, entry.get("score"))
        score, zs = alarm_score(rule, signals)
        fired = {k: v for k, v in zs.items()
                 if k in rule["use"] and v > float(rule["threshold_z"])}
        entry.update({"signals": {k: None if v is None else round(v, 4)
                                  for k, v in signals.items()},
                      "z": zs, "alarm_score": score, "threshold_z": float(rule["threshold_z"]),
                      "feature_alarm": bool(entry.get("alarm", False)),
                      "fired": fired, "rule": ALARM_METHOD})
        # The feature score past its own (conformal) threshold alarms when the rule uses it,
        # or when the model found too few plausible candidates to measure ``uncertain`` and
        # ``top_p`` (a model blind to the imagery): scripts/bench_shift.py found it alarming
        # on many in-style scenes and few misses otherwise.
        blind = all(signals.get(k) is None for k in ("uncertain", "top_p"))
        entry["alarm"] = bool(fired) or (entry["feature_alarm"]
                                         and ("feature" in rule["use"] or blind))
    out: dict[str, Any] = {"shift": entry or None}
    alarmed = bool(entry.get("alarm"))
    out["interval_calibrated"] = None if not entry else not alarmed  # None: not checked
    if alarmed:
        out["interval_note"] = NOT_CALIBRATED
    return out
