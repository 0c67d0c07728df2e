"""Is the pretraining gain more than the luck of one run? Summarise replicate runs of ``pretrain_eval.py cells``.

One run's 25 splits share their crops and its one pretraining and one random initialisation, so they say how stable
the comparison is for *that* pair of networks, not whether another seed would give the same. Independent replicates
are runs with different ``train.seed`` (which changes the pretraining's initialisation, crops and order, and the
random-init baseline built with the same seed). This script takes their ``eval.json`` files and reports, per metric,
each run's paired gain (pretrained minus the better random initialisation, mean over its splits) and, across runs,
their mean, standard deviation, range, how many runs gained, and a one-sided one-sample t-test of "mean gain > 0"
with the runs as the samples.

Usage::

    .venv/bin/python benchmarks/pretrain_seeds.py /tmp/pretrain_small_seed{0,1,2,3,4}/eval.json [--size 112]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

METRICS = ("knn_accuracy", "knn_balanced_accuracy", "probe_accuracy", "probe_balanced_accuracy")
PRETRAINED = "pretrained teacher"


def run_gains(result: dict, size: int) -> dict[str, dict]:
    """Per metric: the pretrained score, the better random init's score and the paired gain over the run's splits."""
    section = result["sections"][f"{size}px"]
    out = {}
    for metric in METRICS:
        baseline = section["paired"]["best_random"][metric]
        paired = section["paired"]["against"][baseline][metric]
        out[metric] = {"pretrained": section["rows"][PRETRAINED][metric], "random": section["rows"][baseline][metric],
                       "gain": paired["mean"], "wins": paired["wins"], "losses": paired["losses"], "n": paired["n"]}
    return out


def across_runs(gains: list[float]) -> dict:
    """Mean, spread and a one-sided t-test over replicate runs (needs at least two)."""
    from scipy import stats

    summary = {"mean": statistics.fmean(gains), "min": min(gains), "max": max(gains),
               "positive": sum(g > 0 for g in gains), "runs": len(gains)}
    if len(gains) >= 2:
        summary["std"] = statistics.stdev(gains)
        summary["p_greater"] = float(stats.ttest_1samp(gains, 0.0, alternative="greater").pvalue)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="eval.json of each replicate run")
    parser.add_argument("--size", type=int, default=112, help="evaluation resolution (a section of eval.json)")
    args = parser.parse_args()
    per_run = []
    for path in args.runs:
        if not path.is_file():
            parser.error(f"{path}: no such file (pass each run's eval.json)")
        result = json.loads(path.read_text())
        if f"{args.size}px" not in result.get("sections", {}):
            parser.error(f"{path}: no {args.size}-px evaluation in it")
        per_run.append((path, run_gains(result, args.size)))

    print(f"{len(per_run)} runs, evaluation at {args.size} px; gain = pretrained minus the better random init, "
          "paired over each run's splits\n")
    print(f"{'run':<44}" + "".join(f"{m:>28}" for m in METRICS))
    for path, gains in per_run:
        cells = "".join(f"{g['pretrained']:.3f} vs {g['random']:.3f} {g['gain']:+.3f}".rjust(28)
                        for g in gains.values())
        print(f"{str(path.parent)[-44:]:<44}{cells}")
    print()
    summaries = {m: across_runs([g[m]["gain"] for _, g in per_run]) for m in METRICS}
    for metric, s in summaries.items():
        spread = f" ± {s['std']:.3f}" if "std" in s else ""
        test = f", one-sided t-test p = {s['p_greater']:.2g}" if "p_greater" in s else ""
        splits_won = sum(g[metric]["wins"] for _, g in per_run)
        splits_lost = sum(g[metric]["losses"] for _, g in per_run)
        splits = sum(g[metric]["n"] for _, g in per_run)
        print(f"{metric:<24} gain {s['mean']:+.3f}{spread} [{s['min']:+.3f}, {s['max']:+.3f}], "
              f"{s['positive']}/{s['runs']} runs gained{test}; splits won {splits_won}, lost {splits_lost} of {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
