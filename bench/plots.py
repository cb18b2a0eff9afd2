"""PNG plots of a bench/run.py results.json: cost per file against corpus size, latency.

Why its own module: matplotlib is optional. bench/run.py imports this when the cocod venv
has matplotlib, and otherwise runs it as a script under any interpreter that has it
(``python bench/plots.py results.json OUT_DIR``), e.g. .venv-cocoindex.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

COLORS = {"cocod": "tab:blue", "cocoindex": "tab:orange"}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    engine = results.get("figures", {}).get("engine")
    if engine:
        fig, axes = plt.subplots(1, 4, figsize=(16, 4))
        for ax, step in zip(axes, ("initial", "noop", "edit", "delete"), strict=True):
            for name in COLORS:
                xs, ys = [], []
                for size, per in sorted(engine.items(), key=lambda kv: int(kv[0])):
                    vals = per.get(name, {}).get(f"{step}_s", [])
                    if vals:
                        xs.append(int(size))
                        ys.append(_median(vals) / int(size) * 1000)
                if xs:
                    ax.plot(xs, ys, "o-", color=COLORS[name], label=name)
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_title(f"{step}: ms per file (fresh process)")
            ax.set_xlabel("files in corpus")
            ax.legend()
        fig.tight_layout()
        path = out_dir / "engine_cost_per_file.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    live = results.get("figures", {}).get("live")
    if live:
        fig, ax = plt.subplots(figsize=(8, 4))
        for case, per in live.items():
            for name, color in COLORS.items():
                samples = sorted(per.get(name, {}).get("latency_ms", []))
                if samples:
                    ys = [(i + 1) / len(samples) for i in range(len(samples))]
                    style = "-" if "model" not in case else "--"
                    ax.step(samples, ys, style, color=color, label=f"{name} {case}", where="post")
        ax.set_xscale("log")
        ax.set_xlabel("save-to-visible latency (ms)")
        ax.set_ylabel("fraction of edits")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "live_latency_cdf.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":
    results_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    for p in plot(json.loads(results_path.read_text()), out):
        print(f"wrote {p}")
