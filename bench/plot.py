"""Draw throughput and latency, dunlink beside its baselines, from the JSON the benchmarks saved.

Reads ``bench/out/pipeline.json`` (intake: dunlink api vs a bare endpoint) and ``bench/out/chain.json``
(end to end: dunlink vs a plain Celery chain) and writes one PNG with four panels.

    .venv/bin/python bench/plot.py [--pipeline bench/out/pipeline.json] [--chain bench/out/chain.json]
        [--output docs/bench/throughput-latency.png]

Needs matplotlib, for the benchmarks only: ``.venv/bin/pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
DUNLINK, BASELINE = "#1f6feb", "#9aa4b2"


def bars(axis: Any, labels: list[str], values: list[float], colours: list[str], *, unit: str, title: str) -> None:
    drawn = axis.bar(labels, values, color=colours)
    axis.bar_label(drawn, labels=[f"{v:,.1f}" if v < 100 else f"{v:,.0f}" for v in values], padding=2, fontsize=8)
    axis.set_title(title, fontsize=10)
    axis.set_ylabel(unit)
    axis.tick_params(axis="x", labelsize=8)
    axis.margins(y=0.15)


def grouped(axis: Any, groups: list[str], series: dict[str, tuple[list[float], str]], *, unit: str,
            title: str) -> None:
    width = 0.8 / len(series)
    for n, (name, (values, colour)) in enumerate(series.items()):
        xs = [i + (n - (len(series) - 1) / 2) * width for i in range(len(groups))]
        drawn = axis.bar(xs, values, width, label=name, color=colour)
        axis.bar_label(drawn, labels=[f"{v:.1f}" if v < 10 else f"{v:.0f}" for v in values], padding=2, fontsize=7)
    axis.set_xticks(range(len(groups)), groups, fontsize=8)
    axis.set_title(title, fontsize=10)
    axis.set_ylabel(unit)
    axis.legend(fontsize=8)
    axis.margins(y=0.15)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=ROOT / "bench/out/pipeline.json")
    parser.add_argument("--chain", type=Path, default=ROOT / "bench/out/chain.json")
    parser.add_argument("--output", type=Path, default=ROOT / "docs/bench/throughput-latency.png")
    args = parser.parse_args()
    intake = json.loads(args.pipeline.read_text())["intake"]
    chain = json.loads(args.chain.read_text())

    def phase(stack: str, name: str) -> dict[str, Any]:
        return next(p for r in chain["runs"] if r["stack"] == stack for p in r["phases"] if p["phase"] == name)

    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    bars(axes[0][0], ["bare endpoint", "dunlink api"], [intake["bare"]["rps"], intake["dunlink"]["rps"]],
         [BASELINE, DUNLINK], unit="signed IPNs/s", title=f"Intake throughput (ratio {intake['ratio']:.2f})")
    grouped(axes[0][1], ["p50", "p99"],
            {"bare endpoint": ([intake["bare"]["p50_ms"], intake["bare"]["p99_ms"]], BASELINE),
             "dunlink api": ([intake["dunlink"]["p50_ms"], intake["dunlink"]["p99_ms"]], DUNLINK)},
            unit="ms", title=f"Intake latency (wrk, {intake['connections']} connections)")
    burst_d, burst_c = phase("dunlink", "burst"), phase("chain", "burst")
    bars(axes[1][0], ["plain Celery chain", "dunlink"], [burst_c["cases_per_s"], burst_d["cases_per_s"]],
         [BASELINE, DUNLINK], unit="cases/s, IPN to email",
         title=f"End to end, burst of {burst_d['cases']} (ratio {chain['summary']['ratio']:.2f})")
    paced_d, paced_c = phase("dunlink", "paced"), phase("chain", "paced")
    grouped(axes[1][1], [f"p50 paced {paced_d['rate']:g}/s", f"p99 paced {paced_d['rate']:g}/s"],
            {"plain Celery chain": ([1000 * paced_c["p50_s"], 1000 * paced_c["p99_s"]], BASELINE),
             "dunlink": ([1000 * paced_d["p50_s"], 1000 * paced_d["p99_s"]], DUNLINK)},
            unit="ms, IPN to email", title="End-to-end latency below capacity")
    figure.suptitle(f"dunlink on {chain['cpus']} cores, {chain['date'][:10]}: blue dunlink, grey baseline",
                    fontsize=11)
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=110)
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
