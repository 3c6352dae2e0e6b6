"""What monitoring writes and prints: ``timeseries.csv``, ``report.md`` and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detector.atomic import write_csv, write_text
from detector.monitor.baseline import fmt_p

COVERED = "covered_car"


def classes_of(result: Any) -> list[str]:
    """Class names in the counts, in the model's order."""
    for e in result.series:
        if e.counts.get("classes"):
            return list(e.counts["classes"])
    return []


def _ci(stats: dict[str, Any]) -> str:
    ci = stats.get("ci95")
    return f"{stats.get('count', '')} ({ci[0]}–{ci[1]})" if ci else ""


def csv_rows(result: Any) -> list[dict[str, Any]]:
    """One row per scene: the dated series in date order, then the scenes left out."""
    classes = classes_of(result)
    rows = []
    for e in [*result.series, *result.left_out]:
        v, c = e.verdict, e.counts
        row: dict[str, Any] = {
            "date": e.date.day.isoformat() if e.date else "",
            "scene": str(e.scene), "date_source": e.date.source if e.date else "",
            "aoi_imaged_share": "" if e.share is None else round(e.share, 3)}
        for name, stats in [("wagons", c.get("wagons", {})),
                            *((n, c.get("classes", {}).get(n, {})) for n in classes)]:
            ci = stats.get("ci95") or ["", ""]
            row.update({name: stats.get("count", ""),
                        f"{name}_expected": stats.get("expected", ""),
                        f"{name}_ci95_low": ci[0], f"{name}_ci95_high": ci[1]})
        shift = c.get("shift") or {}
        row.update({
            "shift_score": shift.get("score", ""),
            "shift_alarm": "" if "alarm" not in shift else bool(shift["alarm"]),
            "baseline_dates": len(v.baseline) if v else "",
            "baseline_since": (min(result.series[j].date.day for j in v.baseline).isoformat()
                               if v and v.baseline else ""),
            "p_above": "" if not v or v.p_above is None else round(v.p_above, 4),
            "p_below": "" if not v or v.p_below is None else round(v.p_below, 4),
            "status": v.status if v else "left out",
            "reason": v.reason if v else e.left_out})
        rows.append(row)
    return rows


def table_rows(result: Any) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the printed / Markdown table (dated series only)."""
    header = ["date", "scene", "AOI imaged", "wagons (95% CI)", "covered_car (95% CI)",
              "P(above all)", "status"]
    cells = []
    for e in result.series:
        v = e.verdict
        shift = (e.counts.get("shift") or {}).get("alarm")
        status = v.status + (" (shift alarm)" if shift else "")
        cells.append([e.date.day.isoformat(), e.scene.name, f"{e.share:.0%}",
                      _ci(e.counts["wagons"]), _ci(e.counts.get("classes", {}).get(COVERED, {})),
                      "" if v.p_above is None else fmt_p(v.p_above).replace("= ", ""), status])
    return header, cells


def flag_line(result: Any, n_flagged: int) -> str:
    """``flagged: N of M dates``, with how many could be compared and why the others were
    not (a date needs ``baseline.min_dates`` comparable earlier dates; a partial one images
    too little of the AOI)."""
    statuses = [e.verdict.status for e in result.series]
    compared = sum(s in ("flagged", "ok") for s in statuses)
    total = len(statuses)
    line = f"flagged: {n_flagged} of {total} dates"
    if compared < total:
        s = result.settings
        before = (f"in the {s.years:g} years before it" if s.mode == "rolling"
                  else "in the baseline window")
        why = []
        if statuses.count("no history"):
            why.append(f"{statuses.count('no history')} had fewer than {s.min_dates} "
                       f"comparable earlier dates {before} (baseline.min_dates)")
        if statuses.count("partial"):
            why.append(f"{statuses.count('partial')} imaged too little of the AOI (min_share)")
        line += (f"; {compared} of {total} could be compared"
                 + (f": {'; '.join(why)}" if why else ""))
    return line + (":" if n_flagged else "")


def format_table(result: Any) -> str:
    """The plain-text summary: table, flags with reasons, what was left out."""
    header, cells = table_rows(result)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *cells, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*r).rstrip() for r in [header, *cells]]
    flagged = [e for e in result.series if e.verdict.status == "flagged"]
    lines.append("")
    lines.append(flag_line(result, len(flagged)))
    lines += [f"  {e.date.day} {e.scene.name}: {e.verdict.reason}" for e in flagged]
    if result.left_out:
        lines.append(f"left out: {len(result.left_out)} scene(s):")
        lines += [f"  {e.scene.name}: {e.left_out}" for e in result.left_out]
    return "\n".join(lines)


def method_text(result: Any) -> str:
    """What the probability means and which dates form each baseline, in plain words."""
    s = result.settings
    if s.mode == "rolling":
        window = (f"the comparable dates in the {s.years:g} years before it"
                  + (", flagged dates excluded" if s.exclude_flagged else ""))
    else:
        window = (f"the comparable dates from {s.start or 'the first'} to {s.end or 'the last'}"
                  " (the date itself left out)")
    rule = {"up": f"P(above all) ≥ {s.p_flag:g}", "down": f"P(below all) ≥ {s.p_flag:g}",
            "both": f"P(above all) or P(below all) ≥ {s.p_flag:g}"}[s.direction]
    return (
        f"Each date is compared with its baseline: {window}. A date is comparable when it "
        f"images at least {result.min_share:.0%} of the AOI; with fewer than {s.min_dates} "
        "baseline dates it is not compared. Every date's wagon total is uncertain, so it is "
        "taken as a distribution over whole counts built from its expected value and 95% "
        "interval (a normal split at the expected value, each half reaching the interval's "
        "end at 2.5%, cut at zero). **P(above all)** is the probability that the date's true "
        "total exceeds the true total of every one of its baseline dates, computed exactly "
        "from these distributions, taking the dates' errors as independent; P(below all) "
        f"likewise. A date is flagged when {rule}. Errors that every date shares (a model "
        "that misses a share of tarped cars on every date) mostly cancel in the comparison, "
        "so taking the errors as independent makes P cautious there. What it cannot cover "
        "is a date whose imagery the model handles worse than its calibration scenes (haze, "
        "a new sensor): that date's interval is too narrow (the table marks a shift alarm "
        "where the counts carry one), so read a flag together with the plot and the scene.")


def report_markdown(result: Any, plot: Path | None) -> str:
    """``report.md``: headline, flags in plain words, the table, what was left out, method."""
    series = result.series
    model = result.model or {}
    lines = [f"# Site monitoring: {result.label}", "",
             f"{len(series)} dates from {series[0].date.day} to {series[-1].date.day} in "
             f"`{result.site}`; AOI `{result.aoi or 'whole scenes'}`; model "
             f"`{model.get('path', '?')}` (sha256 {str(model.get('sha256', '?'))[:12]}).", ""]
    if plot is not None:
        lines += [f"![wagons over time]({plot.name})", ""]
    flagged = [e for e in series if e.verdict.status == "flagged"]
    lines += ["## Flags", ""]
    lines += ([f"- **{e.date.day}** ({e.scene.name}): {e.verdict.reason}" for e in flagged]
              or ["No date is flagged."])
    header, cells = table_rows(result)
    reasons = [e.verdict.reason for e in series]
    lines += ["", "## Dates", "", "| " + " | ".join([*header, "why"]) + " |",
              "|" + "---|" * (len(header) + 1)]
    lines += ["| " + " | ".join([*row, why]) + " |"
              for row, why in zip(cells, reasons, strict=True)]
    if result.left_out:
        lines += ["", "## Left out", ""]
        lines += [f"- `{e.scene.name}`: {e.left_out}" for e in result.left_out]
    lines += ["", "## What is computed", "", method_text(result), ""]
    if result.demo_truth is not None:
        lines += ["This is the generated demo site; the true totals inside the AOI are in "
                  f"`{result.demo_truth}`.", ""]
    return "\n".join(lines)


def write_outputs(result: Any, out: Path) -> dict[str, Path]:
    """Write timeseries.csv, monitor.png and report.md to ``out`` (each atomically)."""
    from detector.monitor.plot import plot_series

    out.mkdir(parents=True, exist_ok=True)
    paths = {"timeseries": out / "timeseries.csv", "plot": out / "monitor.png",
             "report": out / "report.md"}
    write_csv(paths["timeseries"], csv_rows(result))
    plot_series(result, paths["plot"])
    write_text(paths["report"], report_markdown(result, paths["plot"]))
    return paths
