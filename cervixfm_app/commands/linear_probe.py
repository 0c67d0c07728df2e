"""``cervixfm linear-probe``: the published linear-probe protocol on labelled cell crops (see training.linear_probe)."""

from __future__ import annotations


def register(sub) -> None:
    from training.cli_args import add_linear_probe_arguments

    p = sub.add_parser(
        "linear-probe", help="linear probe / fine-tune a backbone on labelled cell crops (published protocol)",
        description="Train a zero-initialised linear head on frozen (cached) backbone features of the training split "
                    "and evaluate it on the test split: balanced accuracy, top-1, F1, AUROC, confusion matrix and "
                    "ROC curves. --finetune trains the backbone too; --test-only --head H evaluates a saved head. "
                    "The published flag names (--data_path, --ViT_freeze, ...) are accepted.",
    )
    add_linear_probe_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.linear_probe import handle

    return handle(args)
