"""``cervixfm train-cell-classifier``: a cell-classifier head from analysed slides' cells and ground-truth cells."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "train-cell-classifier", help="train a cell-classifier head on cells of analysed slides (linear probe)",
        description="Label the cells found by `cervixfm analyze --cells` with ground-truth cells (QuPath GeoJSON: the "
                    "class of the cell whose nucleus holds the detected nucleus centre), train the published linear "
                    "probe on their embeddings and write a 'linear' head file with class names, colours and normal "
                    "classes. Put it in a bundle with role cell-classifier: `cervixfm bundle init ... --head "
                    "cells:cell-classifier:FILE`.",
    )
    p.add_argument("results", nargs="+", metavar="RESULT_DIR",
                   help="slide result folders with a cell stage (cells.h5), e.g. from `cervixfm analyze --cells`")
    p.add_argument("--truth", nargs="+", metavar="GEOJSON",
                   help="ground-truth cells (QuPath GeoJSON with nucleusGeometry and classification), one per "
                        "result in the same order; default: the slide's path with .geojson")
    p.add_argument("--out", required=True, metavar="FILE", help="head file to write (.safetensors)")
    p.add_argument("--normal-classes", metavar="A,B", help="classes that count as normal for the abnormality score "
                   "(default: Bethesda NILM and the normal cell types)")
    p.add_argument("--max-distance-um", type=float, default=3.0,
                   help="label a cell by the nearest ground-truth nucleus within this distance when none holds its "
                        "centre (default 3)")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--patience", type=int, default=5, help="early stop after this many epochs without a lower "
                                                            "training loss (published: 5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-standardize", action="store_true",
                   help="train on raw embeddings as the published probe does (default: standardised per dimension, "
                        "folded back into the head so it takes raw embeddings)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.cell_classifier import handle

    return handle(args)
