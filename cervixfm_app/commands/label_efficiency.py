"""``cervixfm label-efficiency``: linear probes over label-efficiency ratios x seeds, one table and one plot."""

from __future__ import annotations


def register(sub) -> None:
    from training.cli_args import add_sweep_arguments

    p = sub.add_parser(
        "label-efficiency", help="linear-probe sweep over label-efficiency ratios and seeds",
        description="Extract (or reuse cached) frozen features once, then train and evaluate one linear probe per "
                    "ratio and seed with the published per-class sampling. Writes label_efficiency.csv (every run), "
                    "label_efficiency_summary.csv (mean and std per ratio) and label_efficiency.png.",
    )
    add_sweep_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.label_efficiency_sweep import handle

    return handle(args)
