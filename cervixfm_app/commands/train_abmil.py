"""``cervixfm train-abmil``: slide classification by gated-attention MIL over tile-feature files."""

from __future__ import annotations


def register(sub) -> None:
    from training.cli_args import add_train_abmil_arguments

    p = sub.add_parser(
        "train-abmil", help="train an ABMIL slide classifier on tile features (cross-validated)",
        description="Stratified k-fold cross-validation of an ABMIL head (CLAM layout) on <slide_id>.h5 tile-feature "
                    "files with slide labels from a CSV (slide_id,label): class-weighted loss, early stopping on a "
                    "validation share of each training fold, metrics per fold and mean ± std, out-of-fold "
                    "predictions, and a final head trained on every slide (head.safetensors, usable in a bundle).",
    )
    add_train_abmil_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.abmil import handle_train

    return handle_train(args)
