"""Reduce: ``summary.csv`` and ``summary.json`` of a run, rebuilt from its per-scene outputs.

A scene is *done* when its counts JSON exists (written last), *failed* when it has an
``.error.json`` (the reason), *missing* otherwise (not run yet, or its task died). Any task
can die at any time and this still tells the truth, so a partial run can be summarised
whenever wanted (``python -m detector.infer reduce_only=true ...``), and is, automatically,
when a multirun ends (:class:`detector.infer.callbacks.SummarizeShards`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector.atomic import write_text
from detector.infer.outputs import output_paths, summary_rows, write_summary
from detector.infer.results import SceneResult


def scene_state(out: Path, path: Path, name: str) -> SceneResult:
    """What the outputs in ``out`` say about one scene (no model, no pixels read)."""
    paths = output_paths(out, name)
    outputs = {k: p for k, p in paths.items() if k != "error" and p.exists()}
    try:
        if paths["counts"].exists():
            counts = json.loads(paths["counts"].read_text())
            return SceneResult(path, True, None, counts=counts, outputs=outputs, name=name)
        if paths["error"].exists():
            error = json.loads(paths["error"].read_text()).get("error", "unknown error")
            return SceneResult(path, False, str(error), name=name)
    except (OSError, json.JSONDecodeError) as err:
        return SceneResult(path, False, f"{paths['counts']}: unreadable ({err}); rerun with "
                           "overwrite=true", name=name)
    return SceneResult(path, False, "not run yet, or its task died; rerun the same command",
                       name=name, missing=True)


def collect(out: Path, scenes: Sequence[tuple[Path, str]]) -> list[SceneResult]:
    """The state of every (path, name) scene of a run."""
    return [scene_state(Path(out), path, name) for path, name in scenes]


def tally(results: Sequence[SceneResult]) -> dict[str, int]:
    """How many scenes are done, failed and missing."""
    states = Counter("missing" if r.missing else ("done" if r.ok else "failed") for r in results)
    return {"scenes": len(results), **{k: states.get(k, 0) for k in ("done", "failed", "missing")}}


def classes_of(results: Sequence[SceneResult]) -> list[str]:
    """Class names in the order the counts JSONs list them."""
    names: dict[str, None] = {}
    for res in results:
        names.update(dict.fromkeys(res.counts.get("classes", {})))
    return list(names)


def status_line(counts: dict[str, int], out: Path) -> str:
    """One line for the whole run, e.g. ``12 scenes: 10 done, 1 failed, 1 missing``."""
    line = (f"{counts['scenes']} scenes: {counts['done']} done, {counts['failed']} failed, "
            f"{counts['missing']} missing; summary in {Path(out) / 'summary.csv'}")
    if counts["missing"]:
        line += " (rerun the same command to finish)"
    return line


def summarize(out: str | Path, scenes: Sequence[tuple[Path, str]]) -> dict[str, Any]:
    """Write ``out/summary.csv`` and ``out/summary.json`` for ``scenes``; return the JSON.

    The JSON holds the tally, the failed scenes with their reasons, the missing ones and
    one row per scene (the CSV's).
    """
    out = Path(out)
    results = collect(out, scenes)
    counts = tally(results)
    rows = summary_rows(results, classes_of(results))
    summary = {**counts,
               "failed_scenes": [{"scene": str(r.scene), "error": r.error}
                                 for r in results if not r.ok and not r.missing],
               "missing_scenes": [str(r.scene) for r in results if r.missing],
               "rows": rows}
    if results:
        write_summary(out / "summary.csv", rows)
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
