"""``cervixfm predict-abmil``: slide scores and per-tile attention from a trained ABMIL head."""

from __future__ import annotations


def register(sub) -> None:
    from training.cli_args import add_predict_abmil_arguments

    p = sub.add_parser(
        "predict-abmil", help="score slides with an ABMIL head: class probabilities and tile attention",
        description="Apply an ABMIL head to one tile-feature file or a folder of them. Writes a CSV with one row per "
                    "slide (predicted class and probabilities) and, per slide, <slide_id>.attention.npz with the tile "
                    "coordinates, attention weights and raw attention scores (for the heat map).",
    )
    add_predict_abmil_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.abmil import handle_predict

    return handle_predict(args)
