"""Command-line options of the evaluation recipes, shared by ``cervixfm <command>`` and ``python -m training.<x>``.

Kept free of heavy imports so building the ``cervixfm`` parser stays instant. The published downstream scripts'
flag names (``--data_path``, ``--feature_path``, ``--save_path``, ``--pretrained_path``, ``--num_class``,
``--ViT_freeze``, ``--label_efficiency``, ``--seed``, ``--device``, ``--model_path``, ``--key_feature_path``,
``--query_feature_path``) are accepted next to dashed spellings, so the published command lines run unchanged
(apart from the script name).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable


def _backbone(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("backbone")
    g.add_argument("--pretrained_path", "--pretrained-path", "--checkpoint", dest="checkpoint", metavar="PATH",
                   help="backbone weights (.pth/.pt/.safetensors, any supported layout); default: $CERVIXFM_CHECKPOINT "
                        "or ~/.local/share/cervixfm/models/CervixFM.pth")
    g.add_argument("--config", metavar="YAML", help="architecture config overriding what the weights imply")
    g.add_argument("--preset", metavar="NAME", help="named architecture, e.g. cervixfm-vitl16")
    g.add_argument("--non-strict", action="store_true", help="load what fits instead of refusing a mismatching checkpoint")
    g.add_argument("--size", default="224", metavar="PX|trained",
                   help="input size in pixels, or 'trained' for the size the backbone was trained at (e.g. 112 for a "
                        "small_data pretraining run); default 224, the published protocol")
    g.add_argument("--model", default="ViT_classifier", help=argparse.SUPPRESS)  # published flag; the backbone is --pretrained_path
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or a CUDA index as published (0, 1, …)")
    g.add_argument("--embed-batch-size", type=int, default=32, metavar="N", help="images per forward pass when embedding")
    g.add_argument("--workers", type=int, default=2, help="image-decoding threads")


def _dataset(parser: argparse.ArgumentParser, num_class_required: bool = True) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data_path", "--data-path", dest="data_path", required=True, metavar="DIR",
                   help="data set: train/ test/ train.npy test.npy, or data/ data_label.npy (rows [file name, label])")
    g.add_argument("--num_class", "--num-classes", dest="num_class", type=int, required=num_class_required, metavar="C",
                   help="number of classes; labels must be 0..C-1")
    g.add_argument("--class-names", metavar="A,B,…", help="names of classes 0..C-1 for reports and the saved head")
    g.add_argument("--seed", type=int, default=None,
                   help="seed of the 80/20 split (single-folder layout) and of label-efficiency sampling")
    g.add_argument("--trust-pickled-labels", action="store_true",
                   help="allow label tables that store Python objects (only for files you trust)")
    g.add_argument("--feature_path", "--feature-path", dest="feature_path", metavar="DIR",
                   help="folder of the frozen-feature caches (default: SAVE_PATH/features)")
    g.add_argument("--overwrite-cache", action="store_true", help="recompute cached features even if present")


def _optimisation(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("optimisation (published defaults)")
    g.add_argument("--epochs", type=int, default=1000)
    g.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=64)
    g.add_argument("--learning_rate", "--lr", dest="learning_rate", type=float, default=1e-3)
    g.add_argument("--weight_decay", "--weight-decay", dest="weight_decay", type=float, default=1e-4)
    g.add_argument("--patience", type=int, default=5,
                   help="early stop after this many epochs without training-loss improvement (the published "
                        "frozen-feature script used 100)")


def add_linear_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save_path", "--save-path", "--out", dest="save_path", required=True, metavar="DIR",
                        help="output folder: metrics, plots, head weights, log")
    _dataset(parser)
    mode = parser.add_argument_group("mode")
    mode.add_argument("--ViT_freeze", "--freeze", dest="freeze", action="store_true",
                      help="frozen backbone (the default here; accepted for the published command lines)")
    mode.add_argument("--finetune", action="store_true",
                      help="train the backbone too, at learning rate and weight decay x 0.01")
    mode.add_argument("--label_efficiency", "--label-efficiency", dest="label_efficiency", type=float, default=1.0,
                      metavar="R", help="train on this share of each class, sampled as published (0 < R <= 1)")
    mode.add_argument("--test-only", action="store_true", help="evaluate a saved head (--head) on the test split")
    mode.add_argument("--head", "--model_path", "--model-path", dest="head", metavar="PATH",
                      help="saved head for --test-only (.safetensors from this tool, or a published .pth)")
    _optimisation(parser)
    _backbone(parser)


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save_path", "--save-path", "--out", dest="save_path", required=True, metavar="DIR")
    _dataset(parser)
    parser.add_argument("--ratios", default="0.01,0.05,0.1,0.25,0.5,1.0", metavar="R1,R2,…",
                        help="label-efficiency ratios")
    parser.add_argument("--seeds", default="42,43,44", metavar="S1,S2,…",
                        help="sampling seeds (integers; 'none' for the published unseeded rule)")
    _optimisation(parser)
    _backbone(parser)


def add_retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save_path", "--save-path", "--out", dest="save_path", required=True, metavar="DIR")
    _dataset(parser, num_class_required=False)
    parser.add_argument("--key_feature_path", "--key-features", dest="key_feature_path", metavar="NPZ",
                        help="feature cache of the keys (training split); default: in --feature_path")
    parser.add_argument("--query_feature_path", "--query-features", dest="query_feature_path", metavar="NPZ",
                        help="feature cache of the queries (test split); default: in --feature_path")
    parser.add_argument("--k", type=int, default=10, help="neighbours retrieved per query (published: 10)")
    _backbone(parser)


def add_train_abmil_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", required=True, metavar="DIR", help="folder of <slide_id>.h5 tile-feature files")
    parser.add_argument("--labels", required=True, metavar="CSV", help="table with columns slide_id,label")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--classes", metavar="A,B,…", help="class order (default: sorted label names, or 0..C-1)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (stratified); 1 = no CV")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="share of each training fold for early stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=200, help="maximum epochs")
    parser.add_argument("--min-epochs", type=int, default=20, help="epochs before early stopping may stop")
    parser.add_argument("--patience", type=int, default=20, help="epochs without validation-loss improvement")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--attn-dim", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.25)
    parser.add_argument("--no-class-weights", action="store_true", help="do not weight the loss by inverse class frequency")
    parser.add_argument("--no-final", action="store_true", help="skip the final head trained on every slide")
    parser.add_argument("--device", default="auto")


def add_predict_abmil_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--head", required=True, metavar="PATH", help="ABMIL head (.safetensors) from train-abmil")
    parser.add_argument("--features", required=True, metavar="DIR_OR_FILE", help="an .h5 tile-feature file or a folder of them")
    parser.add_argument("--out", required=True, metavar="CSV", help="slide predictions table")
    parser.add_argument("--attention-dir", metavar="DIR",
                        help="folder for <slide_id>.attention.npz (coords, attention); default: next to --out")
    parser.add_argument("--device", default="auto")


def run_module_cli(prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                   handler: Callable[[argparse.Namespace], int], argv: list[str] | None = None) -> int:
    """``python -m training.<x>``: the same options and error handling as the ``cervixfm`` subcommand."""
    from core.errors import CervixFMError

    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(handler(args) or 0)
    except CervixFMError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
