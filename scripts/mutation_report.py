"""Mutation testing of the modules the counts' honesty rests on: killed share per module.

Runs mutmut (pinned in the ``mutation`` extra) on one module at a time, each with only the
fast test files that target it, in a throw-away copy of the checkout (the working tree is
never mutated), and prints one row per module::

    module                        mutants  killed  survived  no_tests  timeout  killed %

Usage (CPU heavy: minutes to tens of minutes per module on 2 cores; not part of CI)::

    nice -n 15 python scripts/mutation_report.py                      # every module, in order
    nice -n 15 python scripts/mutation_report.py detector/raster.py   # just these
    nice -n 15 python scripts/mutation_report.py --list               # modules and their tests

Survivors' diffs go to ``outputs/mutation/<module>.survivors.txt`` and the table to
``outputs/mutation/report.md``; ``docs/mutation.md`` holds the last figures and the
survivors judged equivalent. The killed share counts timeouts as killed (mutmut's score)
and mutants no test reaches as not killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "mutation"

# Module → the fast test files that target it (listed in priority order: the modules the
# issue's planted bugs came from first). Keep in step with the [tool.mutmut] only_mutate list.
MODULES: dict[str, list[str]] = {
    "detector/infer/counting.py": ["tests/test_infer_counting.py",
                                   "tests/test_reference_counting.py"],
    "detector/infer/tiling.py": ["tests/test_infer_tiling.py", "tests/test_reference_geo.py"],
    "detector/raster.py": ["tests/test_reference_geo.py", "tests/test_reference_raster.py"],
    "detector/geometry.py": ["tests/test_core.py", "tests/test_reference_geo.py"],
    "detector/evaluate/count_metrics.py": ["tests/test_evaluate_metrics.py",
                                           "tests/test_reference_counting.py"],
    "detector/calibration.py": ["tests/test_reference_calibration.py",
                                "tests/test_train_calibrate.py"],
    "detector/infer/merge.py": ["tests/test_infer_tiling.py", "tests/test_reference_merge.py"],
    "detector/infer/aoi.py": ["tests/test_reference_geo.py"],
    "detector/train/calibrate.py": ["tests/test_train_calibrate.py",
                                    "tests/test_reference_calibration.py"],
    "detector/monitor/baseline.py": ["tests/test_monitor_baseline.py",
                                     "tests/test_reference_baseline.py"],
    # test_shift.py builds and calibrates models (minutes): the pure statistics are tested
    # by the reference file; the feature hooks (feature_layer, tile_features, tapped) are
    # reached by no test here and count as not killed
    "detector/shift.py": ["tests/test_reference_shift.py"],
    # test_adapt.py fine-tunes models (minutes per run): the stand-in tests target the module
    "detector/adapt/crossfit.py": ["tests/test_reference_crossfit.py"],
}


def checkout_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the checkout (what a commit would hold)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, check=True, capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def mutmut_section(module: str, tests: list[str]) -> str:
    """The [tool.mutmut] table for one module and its tests."""
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return ("[tool.mutmut]\n"
            'source_paths = ["detector"]\n'
            f"only_mutate = {toml_list([module])}\n"
            'pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:cacheprovider", "-q"]\n'
            f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
            'also_copy = ["conf", "tests", "scripts"]\n'
            "use_git_change_detection = false\n")


def prepare(module: str, tests: list[str]) -> Path:
    """A copy of the checkout whose pyproject's [tool.mutmut] targets ``module`` only."""
    work = Path(tempfile.mkdtemp(prefix="mutation-"))
    for name in checkout_files():
        dst = work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dst)
    pyproject = (work / "pyproject.toml").read_text()
    head = pyproject.split("[tool.mutmut]")[0].rstrip() + "\n\n"
    (work / "pyproject.toml").write_text(head + mutmut_section(module, tests))
    return work


def survivor_names(module: str) -> list[str]:
    """Mutants that survived the last run of ``module`` (from its survivors file)."""
    path = OUT / (module.replace("/", ".") + ".survivors.txt")
    if not path.is_file():
        raise SystemExit(f"{module}: no {path}; run the module in full first")
    return [line[2:].split(":")[0] for line in path.read_text().splitlines()
            if line.startswith("# ")]


def run_module(module: str, tests: list[str], jobs: int, only: list[str] | None = None
               ) -> dict[str, int | float | str]:
    """Mutate ``module`` in a scratch copy, run its tests per mutant; stats and survivors.

    With ``only`` (mutant names: the last run's survivors), just those are tested again and
    the result is merged into the module's last full run from ``results.json``.
    """
    missing = [t for t in tests if not (REPO / t).is_file()]
    if missing:
        raise SystemExit(f"{module}: test file(s) {missing} not found; fix MODULES in {__file__}")
    work = prepare(module, tests)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut sets sys.path
    mutmut = [sys.executable, "-m", "mutmut"]
    start = time.time()
    try:
        log = subprocess.run([*mutmut, "run", "--max-children", str(jobs), *(only or [])],
                             cwd=work, env=env, capture_output=True, text=True)
        if log.returncode != 0:
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / (Path(module).stem + ".log")).write_text(log.stdout + log.stderr)
            raise SystemExit(f"{module}: mutmut run failed (exit {log.returncode}); "
                             f"see {OUT / (Path(module).stem + '.log')}")
        listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, env=env,
                                 check=True, capture_output=True, text=True).stdout
        status = dict(line.strip().rsplit(": ", 1) for line in listing.splitlines()
                      if ": " in line)
        if only:
            status = {name: status.get(name, "not checked") for name in only}
        survivors = [n for n, v in status.items() if v in ("survived", "no tests")]
        diffs = [subprocess.run([*mutmut, "show", name], cwd=work, env=env,
                                capture_output=True, text=True).stdout for name in survivors]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / (module.replace("/", ".") + ".survivors.txt")).write_text("\n".join(diffs))
    counts = {k: sum(v == k for v in status.values())
              for k in ("killed", "timeout", "survived", "no tests")}
    result = {"module": module, "mutants": len(status), "killed": counts["killed"],
              "timeout": counts["timeout"], "survived": counts["survived"],
              "no_tests": counts["no tests"], "minutes": round((time.time() - start) / 60, 1)}
    if only:  # merge into the last full run: its killed stay killed
        last = json.loads((OUT / "results.json").read_text())[module]
        result["mutants"] = last["mutants"]
        result["killed"] += last["killed"]
        result["timeout"] += last["timeout"]
        result["minutes"] = round(last["minutes"] + result["minutes"], 1)
        result["rerun"] = len(only)
    killed = result["killed"] + result["timeout"]
    counted = killed + result["survived"] + result["no_tests"]
    result["share"] = round(100 * killed / counted, 1) if counted else 0.0
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module paths (default: all, in order)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--list", action="store_true", help="print modules and tests, exit")
    parser.add_argument("--survivors", action="store_true",
                        help="test only the last run's survivors again (after adding tests)")
    args = parser.parse_args(argv)
    if args.list:
        for module, tests in MODULES.items():
            print(f"{module}: {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"unknown module(s) {unknown}; known: {list(MODULES)}", file=sys.stderr)
        return 2
    print(HEADER[0], flush=True)
    for module in args.modules or list(MODULES):
        only = survivor_names(module) if args.survivors else None
        result = run_module(module, MODULES[module], args.jobs, only)
        print(table_row(result), flush=True)
        save(result)
    return 0


HEADER = ["| module | mutants | killed | timeout | survived | no tests | killed % | min |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]


def table_row(r: dict[str, int | float | str]) -> str:
    """One markdown table row of a module's result."""
    return (f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['timeout']} | "
            f"{r['survived']} | {r['no_tests']} | {r['share']} | {r['minutes']} |")


def save(result: dict[str, int | float | str]) -> None:
    """Merge one module's result into ``results.json`` and rewrite ``report.md`` (all runs)."""
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    results[str(result["module"])] = result
    store.write_text(json.dumps(results, indent=1))
    rows = [table_row(results[m]) for m in MODULES if m in results]
    (OUT / "report.md").write_text("\n".join(HEADER + rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
