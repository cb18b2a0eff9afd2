"""The one table bench/run.py prints (median per engine, cocod/CocoIndex), and its plots.

Why medians: each value is a handful of fresh-process runs on a shared machine; the median
is what a user would see most of the time, and the JSON keeps every sample.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
from pathlib import Path
from typing import Any

# (figure, metric, label, unit); rows appear in this order, once per case present.
ROWS: list[tuple[str, str, str, str]] = [
    ("engine", "chunks", "chunks in target", ""),
    ("engine", "initial_s", "initial index, update()", "s"),
    ("engine", "chunks_per_s", "initial index", "chunks/s"),
    ("engine", "initial_process_s", "initial index, whole process", "s"),
    ("engine", "initial_peak_rss_mb", "initial index, peak RSS", "MB"),
    ("engine", "noop_s", "no-op update, fresh", "s"),
    ("engine", "noop_process_s", "no-op update, whole process", "s"),
    ("engine", "noop_setup_s", "no-op update, setup() before it", "s"),
    ("engine", "noop_warm_s", "no-op update, warm", "s"),
    ("engine", "edit_s", "one-file edit, fresh", "s"),
    ("engine", "edit_process_s", "one-file edit, whole process", "s"),
    ("engine", "edit_warm_s", "one-file edit, warm", "s"),
    ("engine", "delete_s", "one-file delete, fresh", "s"),
    ("engine", "delete_process_s", "one-file delete, whole process", "s"),
    ("engine", "delete_warm_s", "one-file delete, warm", "s"),
    ("model", "chunks", "chunks in target", ""),
    ("model", "chunks_per_s", "initial index, real model", "chunks/s"),
    ("model", "raw_texts_per_s", "raw encode, same texts", "texts/s"),
    ("model", "ratio_to_raw", "engine / raw encode", "×"),
    ("model", "unique_texts_per_s", "initial index, unique texts", "texts/s"),
    ("model", "unique_ratio_to_raw", "engine unique texts / raw encode", "×"),
    ("model", "raw_lanes_texts_per_s", "raw encode on cocod's lanes", "texts/s"),
    ("model", "unique_ratio_to_raw_lanes", "engine unique texts / lanes raw", "×"),
    ("model", "peak_rss_mb", "initial index, peak RSS", "MB"),
    ("live", "p50_ms", "save-to-visible p50", "ms"),
    ("live", "p95_ms", "save-to-visible p95", "ms"),
    ("live", "idle_cpu_pct", "idle CPU (engine + children)", "%"),
    ("live", "burst_s", "burst, all visible after", "s"),
    ("live", "burst_visible", "burst, files visible", ""),
    ("status", "status_p50_ms", "cocod status p50", "ms"),
    ("status", "status_p95_ms", "cocod status p95", "ms"),
    ("status", "status_json_p50_ms", "cocod status --json p50", "ms"),
    ("status", "ping_p50_ms", "cocod ping p50", "ms"),
    ("memory", "rss_mb", "RSS with children, live instances", "MB"),
]
CASE_LABEL = {
    "engine": "{} files",
    "model": "{} files",
    "live": "{} files",
    "status": "{} rows",
    "memory": "{} inst.",
}


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def table_lines(results: dict[str, Any]) -> list[str]:
    figures = results["figures"]
    rows = [("figure", "case", "metric", "unit", "cocod", "CocoIndex", "cocod/CocoIndex")]
    for fig in dict.fromkeys(f for f, *_ in ROWS):
        cases = figures.get(fig, {})
        for case in sorted(cases, key=lambda c: (not c[0].isdigit(), int(c.split("-")[-1]))):
            per = cases[case]
            for f, metric, label, unit in ROWS:
                if f != fig:
                    continue
                ours = _median(per.get("cocod", {}).get(metric))
                theirs = _median(per.get("cocoindex", {}).get(metric))
                if ours is None and theirs is None:
                    continue
                ratio = f"{ours / theirs:.2f}" if ours is not None and theirs else "–"
                case_label = CASE_LABEL[fig].format(case)
                rows.append((fig, case_label, label, unit, _fmt(ours), _fmt(theirs), ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [
            c.ljust(w) if i < 4 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for fig, err in figures.get("errors", {}).items():
        lines.append(f"{fig}: FAILED ({err.splitlines()[0]})")
    return lines


def print_table(results: dict[str, Any]) -> str:
    text = "\n".join(table_lines(results))
    print("\n" + text)
    return text


def write_plots(results_json: Path, out_dir: Path, fallback_python: Path) -> None:
    """Plots with matplotlib here, else with an interpreter that has it, else a note."""
    if importlib.util.find_spec("matplotlib") is not None:
        import json

        from plots import plot

        for p in plot(json.loads(results_json.read_text()), out_dir):
            print(f"wrote {p}")
        return
    script = Path(__file__).resolve().parent / "plots.py"
    if fallback_python.exists():
        res = subprocess.run(
            [str(fallback_python), str(script), str(results_json), str(out_dir)],
            capture_output=True,
            text=True,
        )
        if res.returncode == 0:
            print(res.stdout.strip() + f"  (matplotlib of {fallback_python})")
            return
    print("note: matplotlib is not installed here (nor in .venv-cocoindex): no PNG plots")
