"""Linear probe of a backbone on labelled cell crops: the published protocol, as a function and as a CLI.

``python -m training.linear_probe`` and ``cervixfm linear-probe`` take the same options. The backbone is frozen by
default; its features are computed once and cached (see ``feature_cache``), a zero-initialised linear head is trained
with the published recipe (see ``probe_training``) on the (optionally label-efficient) training split, and the head
is evaluated on the test split. ``--finetune`` trains the backbone as well (learning rate and weight decay x 0.01);
``--test-only --head H`` evaluates a saved head.

Unlike the published script, which fine-tunes unless ``--ViT_freeze`` is given, freezing is the default here:
fine-tuning a ViT-L by accident on a laptop would be a day lost. Outputs go straight into ``--save_path``:
``metrics.json``/``.csv``, ``confusion_matrix.png``/``.csv``, ``roc_curves.png``/``.csv``, ``predictions.csv``,
``training_history.csv``, ``head.safetensors`` (a ``linear`` head usable in a model bundle), ``log.txt``, and with
``--finetune`` ``backbone_finetuned.safetensors``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import CervixFMError, CheckpointError

from .cli_args import add_linear_probe_arguments, run_module_cli
from .datasets import DatasetSplits, LabelledImages, label_efficient, load_dataset
from .label_efficiency import check_ratio
from .reporting import RunLog, write_classification_outputs, write_csv, write_predictions


# ------------------------------------------------------------------------------------------- shared with siblings
def resolve_device(name: str):
    """``auto``/``cpu``/``cuda[:N]``, or a bare CUDA index as the published scripts take (CPU when no GPU)."""
    import torch

    from core.models.inference import select_device

    name = str(name)
    if name.isdigit():
        return torch.device(f"cuda:{name}") if torch.cuda.is_available() else torch.device("cpu")
    return select_device(name)


def load_backbone_from_args(args: argparse.Namespace, device):
    from core.models import load_backbone
    from core.models.loader import input_size_note
    from core.paths import resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    loaded = load_backbone(path, config=args.config, preset=args.preset, strict=not args.non_strict, device=device,
                           input_size=getattr(args, "size", 224))
    for note in [*loaded.notes, input_size_note(loaded)]:
        if note:
            print(f"note: {note}", file=sys.stderr)
    return loaded


def class_names(args: argparse.Namespace, num_classes: int) -> list[str]:
    if not getattr(args, "class_names", None):
        return [str(i) for i in range(num_classes)]
    names = [n.strip() for n in args.class_names.split(",")]
    if len(names) != num_classes or any(not n for n in names) or len(set(names)) != len(names):
        raise CervixFMError(f"--class-names needs {num_classes} distinct names separated by commas, got "
                            f"{args.class_names!r}.")
    return names


def make_embedder(loaded, device, batch_size: int, workers: int) -> Callable[[Sequence[Path]], np.ndarray]:
    from tqdm import tqdm

    from core.images import read_rgb
    from core.models.inference import embed_images, prefetched

    if batch_size < 1:
        raise CervixFMError("--embed-batch-size must be at least 1.")
    prep = loaded.preprocessing()

    def embed(paths: Sequence[Path]) -> np.ndarray:
        stream = prefetched(list(paths), read_rgb, ahead=4 * batch_size, workers=max(1, workers))
        with tqdm(total=len(paths), unit="img", desc="embed", disable=None, file=sys.stderr) as bar:
            return embed_images(loaded.model, stream, prep, batch_size=batch_size, device=device,
                                feature=loaded.feature, progress=bar.update)
    return embed


def cache_file(feature_dir: Path, images: LabelledImages) -> Path:
    """One cache per image folder, so train/ and test/ (or the single data/) each keep theirs."""
    return feature_dir / f"{images.root.name}.features.npz"


def frozen_features(images_sets: Sequence[LabelledImages], loaded, identity: dict, feature_dir: Path,
                    args: argparse.Namespace, device, log) -> list[np.ndarray]:
    from .feature_cache import cached_features

    embed = make_embedder(loaded, device, args.embed_batch_size, args.workers)
    out = []
    overwrite = bool(args.overwrite_cache)
    refreshed: set[Path] = set()
    for images in images_sets:
        path = cache_file(feature_dir, images)
        out.append(cached_features(path, identity, images.names, images.paths, embed,
                                   overwrite=overwrite and path not in refreshed, log=log))
        refreshed.add(path)
    return out


def probe_options(args: argparse.Namespace, device):
    from .probe_training import ProbeOptions

    return ProbeOptions(lr=args.learning_rate, weight_decay=args.weight_decay, batch_size=args.batch_size,
                        epochs=args.epochs, patience=args.patience, seed=args.seed if args.seed is not None else 0,
                        device=device).check()


def check_num_classes(num_classes: int) -> int:
    if num_classes is None or num_classes < 2:
        raise CervixFMError("--num_class must be at least 2.")
    return int(num_classes)


def describe_counts(images: LabelledImages, num_classes: int, classes: Sequence[str]) -> str:
    counts = images.class_counts(num_classes)
    return ", ".join(f"{c}: {n}" for c, n in zip(classes, counts))


# --------------------------------------------------------------------------------------------------- head files
def load_probe_head(path: str | Path, num_classes: int):
    """A saved linear head: ours (.safetensors) or the published ``{"model": {"classifier.*": …}}`` .pth."""
    from core.models.checkpoint_io import read_weights_file
    from core.models.heads import LinearHead, load_head

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Head file {path} does not exist.")
    if path.suffix.lower() == ".safetensors":
        head = load_head(path)
        if head.kind != "linear":
            raise CheckpointError(f"{path} is a {head.kind} head; the linear probe evaluates linear heads.")
        module, info, names = head.module, head.info, head.classes
    else:
        obj = read_weights_file(path)
        state = obj.get("model", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict) or "classifier.weight" not in state or "classifier.bias" not in state:
            raise CheckpointError(f"{path} holds no linear classifier (expected classifier.weight and classifier.bias, "
                                  "as the published probe saves them, or a head .safetensors written by CervixFM).")
        weight = state["classifier.weight"]
        module = LinearHead(weight.shape[1], weight.shape[0])
        module.load_state_dict({"classifier.weight": weight, "classifier.bias": state["classifier.bias"]})
        info, names = {}, [str(i) for i in range(weight.shape[0])]
    if module.num_classes != num_classes:
        raise CervixFMError(f"Head {path} predicts {module.num_classes} classes but --num_class is {num_classes}.")
    return module.eval(), info, names


def _check_head_backbone(head_info: dict, identity: dict, head_path) -> None:
    trained = (head_info or {}).get("backbone") or {}
    sha = trained.get("checkpoint_sha256")
    if sha and identity.get("checkpoint_sha256") and sha != identity["checkpoint_sha256"]:
        raise CervixFMError(
            f"Head {head_path} was trained on features of another backbone (weights sha256 {sha[:12]}…, now "
            f"{identity['checkpoint_sha256'][:12]}…). Pass the backbone it was trained with as --pretrained_path "
            "(for a fine-tuned run: its backbone_finetuned.safetensors)."
        )
    size = (trained.get("preprocessing") or {}).get("size")
    now = (identity.get("preprocessing") or {}).get("size")
    if size and now and size != now:
        raise CervixFMError(f"Head {head_path} was trained on features of {size}-px crops, and the backbone is now fed "
                            f"{now}-px crops. Pass --size {size}.")


# ---------------------------------------------------------------------------------------------------------- run
def prepare(args: argparse.Namespace, test_only: bool) -> tuple[DatasetSplits, LabelledImages, int, list[str]]:
    """Everything that can be wrong with the inputs, checked before any output is written."""
    num_classes = check_num_classes(args.num_class)
    names = class_names(args, num_classes)
    ratio = check_ratio(args.label_efficiency)
    need = ("test",) if test_only else ("train", "test")
    splits = load_dataset(args.data_path, num_classes, args.seed, args.trust_pickled_labels, need=need)
    train = label_efficient(splits.train, ratio, args.seed)
    if not test_only and len(train) == 0:
        raise CervixFMError(f"No training rows left at --label_efficiency {ratio} (each class keeps int(n * ratio) "
                            "rows); use a larger ratio.")
    if len(splits.test) == 0:
        raise CervixFMError(f"The test split of {args.data_path} is empty.")
    return splits, train, num_classes, names


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or with ``--test-only`` evaluate) a linear probe; returns the metrics dictionary."""
    import torch

    from core.metrics import classification_metrics, roc_curves
    from core.models.heads import LinearHead, save_head

    from .feature_cache import backbone_identity
    from .probe_training import (BackboneClassifier, finetune_param_groups, fit, image_batches, predict_probabilities,
                                 train_linear_probe)

    log = RunLog()
    test_only = bool(args.test_only or args.head)  # a saved head means evaluation, as the published test script
    if test_only and not args.head:
        raise CervixFMError("--test-only needs --head (or --model_path): the saved head to evaluate.")
    if args.finetune and test_only:
        raise CervixFMError("--finetune trains a new head; --test-only/--head evaluates a saved one; evaluate a fine-tuned run with "
                            "--test-only --pretrained_path SAVE_PATH/backbone_finetuned.safetensors --head SAVE_PATH/head.safetensors.")
    splits, train, num_classes, names = prepare(args, test_only)
    head_module = head_info = None
    if test_only:
        head_module, head_info, head_names = load_probe_head(args.head, num_classes)
        if not args.class_names:
            names = head_names
    opts = probe_options(args, "cpu")
    device = resolve_device(args.device)
    opts.device = device
    loaded = load_backbone_from_args(args, device)
    log(f"backbone: {loaded.summary()}")
    out = Path(args.save_path)
    out.mkdir(parents=True, exist_ok=True)
    feature_dir = Path(args.feature_path) if args.feature_path else out / "features"
    identity = backbone_identity(loaded)
    log(f"data: {splits.layout} layout; train {len(train)} of {len(splits.train)} rows "
        f"(label efficiency {args.label_efficiency}, seed {args.seed}) [{describe_counts(train, num_classes, names)}]; "
        f"test {len(splits.test)} [{describe_counts(splits.test, num_classes, names)}]")
    fit_result = None
    mode = "test-only" if test_only else ("finetune" if args.finetune else "frozen")
    if mode == "finetune":
        torch.manual_seed(opts.seed)
        model = BackboneClassifier(loaded.model, LinearHead(loaded.config.embed_dim * (2 if loaded.feature != "cls" else 1),
                                                           num_classes), loaded.feature).to(device)
        for p in model.backbone.parameters():
            p.requires_grad_(True)
        prep = loaded.preprocessing()
        fit_result = fit(model, finetune_param_groups(model, opts), len(train),
                         image_batches(train.paths, train.labels, opts.batch_size, prep, args.workers), opts, log)
        from core.models.checkpoint_io import save_weights_file

        backbone_path = save_weights_file(model.backbone.state_dict(), out / "backbone_finetuned.safetensors")
        loaded.model, loaded.path = model.backbone.eval(), backbone_path
        identity = backbone_identity(loaded)  # the head belongs to the fine-tuned weights
        embed = make_embedder(loaded, device, args.embed_batch_size, args.workers)
        head_module = model.head.cpu()
        probs = predict_probabilities(head_module, embed(splits.test.paths))
    else:
        if mode == "test-only":
            _check_head_backbone(head_info, identity, args.head)
            (test_x,) = frozen_features([splits.test], loaded, identity, feature_dir, args, device, log)
            if test_x.shape[1] != head_module.in_dim:
                raise CervixFMError(f"Head {args.head} expects {head_module.in_dim}-d features but the backbone gives "
                                    f"{test_x.shape[1]}-d; pass the backbone it was trained with.")
        else:
            train_x, test_x = frozen_features([train, splits.test], loaded, identity, feature_dir, args, device, log)
            head_module, fit_result = train_linear_probe(train_x, train.labels, num_classes, opts, log)
        probs = predict_probabilities(head_module, test_x)
    metrics = classification_metrics(splits.test.labels, probs, num_classes)
    curves = roc_curves(splits.test.labels, probs, num_classes)
    run_info = {
        "mode": mode, "data_path": str(args.data_path), "layout": splits.layout, "num_classes": num_classes,
        "label_efficiency": args.label_efficiency, "seed": args.seed, "n_train": len(train),
        "n_test": len(splits.test), "train_class_counts": train.class_counts(num_classes), "backbone": identity,
        "options": {k: v for k, v in vars(opts).items() if k != "device"},
    }
    if fit_result is not None:
        run_info.update(epochs_run=fit_result.epochs_run, best_epoch=fit_result.best_epoch,
                        best_train_loss=fit_result.best_loss, stopped_early=fit_result.stopped_early)
        write_csv(out / "training_history.csv", ["epoch", "loss", "lr"],
                  [(h["epoch"], h["loss"], h["lr"]) for h in fit_result.history])
        save_head(out / "head.safetensors", "linear", head_module, head_module.config(), names,
                  info={k: run_info[k] for k in ("mode", "data_path", "label_efficiency", "seed", "n_train", "backbone")})
    write_classification_outputs(out, metrics, curves, names, extra=run_info,
                                 title=f"linear probe ({mode}, {len(train)} training crops)")
    write_predictions(out / "predictions.csv", splits.test.names, splits.test.labels, probs, names)
    log(f"test: balanced accuracy {metrics['balanced_accuracy']:.4f}, F1 macro {metrics['f1_macro']:.4f}, "
        f"AUROC macro {metrics['auroc_macro']:.4f}; results in {out}")
    log.save(out / "log.txt")
    return {**run_info, **metrics}


def handle(args: argparse.Namespace) -> int:
    run(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_module_cli("python -m training.linear_probe", "Linear probe of a backbone on labelled cell crops.",
                          add_linear_probe_arguments, handle, argv)


if __name__ == "__main__":
    sys.exit(main())
