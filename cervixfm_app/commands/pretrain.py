"""``cervixfm pretrain``: DINOv2 self-supervised pretraining (see training/README.md, "Pretraining")."""

from __future__ import annotations


def register(sub) -> None:
    from training.pretrain.cli import add_arguments

    p = sub.add_parser(
        "pretrain", help="DINOv2 self-supervised pretraining of a backbone on cell crops or whole slides",
        description="Trains a student ViT against an EMA teacher with the DINO, iBOT and KoLeo losses (DINOv2). "
                    "Settings: the reference YAML, then --config FILE, then KEY=VALUE overrides. Resumes from the "
                    "last checkpoint in train.output_dir. For several processes: torchrun --nproc_per_node N "
                    "-m training.pretrain --config FILE ...",
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from training.pretrain.cli import handle

    return handle(args)
