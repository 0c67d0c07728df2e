"""``cervixfm``: one command, one subcommand per task.

Each subcommand lives in ``cervixfm_app/commands/<name>.py`` with ``register(subparsers)`` that adds its parser and
sets ``func``. Heavy imports (torch, Qt, training) happen inside the handlers so ``cervixfm --help`` stays instant.
Errors a user can cause are ``CervixFMError``: printed as one line, exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core import __version__
from core.errors import CervixFMError

# Module names under cervixfm_app.commands, in the order --help lists them.
COMMANDS = ["embed", "inspect", "convert", "analyze", "bundle", "linear_probe", "label_efficiency", "retrieval_eval", "train_abmil", "predict_abmil", "train_cell_classifier", "info", "demo_slide", "demo_bundle", "export_regions", "pretrain", "atlas", "index", "search"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cervixfm", description="CervixFM: AI-assisted cervical cytology.")
    parser.add_argument("--version", action="version", version=f"cervixfm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"cervixfm_app.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CervixFMError as exc:
        print(f"cervixfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cervixfm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
