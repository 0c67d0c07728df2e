"""Command line of DINOv2 pretraining: ``cervixfm pretrain`` and ``python -m training.pretrain`` (also under torchrun).

    cervixfm pretrain --config FILE [key=value ...]
    torchrun --nproc_per_node 2 -m training.pretrain --config FILE train.parallel=ddp key=value ...

The run resumes from the last checkpoint in ``train.output_dir`` when there is one.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser, overrides_nargs: str = argparse.REMAINDER) -> None:
    """Options and KEY=VALUE overrides. The overrides are collected as a remainder (re-parsed in ``handle``) so
    options may come between them under ``cervixfm`` too, whose top-level parser does not intermix."""
    parser.add_argument("--config", default="default", metavar="FILE",
                        help="YAML merged over the reference settings, or a built-in name: default, tiny, "
                             "small_data (default: default)")
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", metavar="DIR",
                        help="where checkpoints, metrics and exports go (same as train.output_dir=DIR)")
    parser.add_argument("--no-resume", action="store_true",
                        help="refuse to start if DIR already holds checkpoints (default: resume from the last one)")
    parser.add_argument("--print-config", action="store_true", help="print the merged settings and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs=overrides_nargs, metavar="KEY=VALUE",
                        help="settings to override, e.g. optim.base_lr=0.001 train.dataset_path=cells/ "
                             "student.arch=vit_small")


def _reparse_remainder(args: argparse.Namespace) -> argparse.Namespace:
    """Options found among the overrides (``a=1 --quiet b=2``) parsed as options; what was set before is kept."""
    rest = list(args.overrides or [])
    if not any(item.startswith("-") for item in rest):
        return args
    parser = argparse.ArgumentParser(prog="pretrain", add_help=False)
    add_arguments(parser, overrides_nargs="*")
    given = {k: v for k, v in vars(args).items() if k != "overrides"}
    fresh = parser.parse_intermixed_args(rest)
    defaults = vars(parser.parse_args([]))
    merged = {**given, **{k: v for k, v in vars(fresh).items() if v != defaults.get(k)}}
    merged["overrides"] = fresh.overrides
    return argparse.Namespace(**merged)


def config_from_args(args: argparse.Namespace):
    from .config import load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    return load_config(args.config, overrides)


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.errors import ConfigError

    from .checkpoint import latest_checkpoint
    from .trainer import check_ready, run_pretraining

    args = _reparse_remainder(args)
    cfg = config_from_args(args)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    check_ready(cfg)
    if args.no_resume and latest_checkpoint(Path(str(cfg.train.output_dir))) is not None:
        raise ConfigError(f"{cfg.train.output_dir} already holds pretraining checkpoints and --no-resume was given: "
                          "choose another output folder or drop --no-resume to continue that run.")
    run_pretraining(cfg, progress=not args.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    from core.errors import CervixFMError

    parser = argparse.ArgumentParser(prog="python -m training.pretrain",
                                     description="DINOv2 self-supervised pretraining of a CervixFM backbone.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return handle(args)
    except CervixFMError as exc:
        print(f"pretrain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pretrain: interrupted (the last checkpoint is kept; run the same command to resume)", file=sys.stderr)
        return 130
