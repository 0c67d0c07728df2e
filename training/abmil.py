"""Slide classification with ABMIL over tile features: cross-validated training, a deployable head, prediction.

Training follows CLAM's single-branch recipe: one slide per step, Adam (lr 1e-4, weight decay 1e-5), dropout 0.25,
at most 200 epochs with early stopping on a validation share of the training slides (stop once the validation loss
has not improved for ``patience`` epochs, not before ``min_epochs``; the best epoch's weights are kept). Class
imbalance is handled by weighting each slide's loss by ``n / (C * n_class)``; the validation loss is weighted the
same way, so early stopping does not favour the majority class. Cross-validation is stratified k-fold, seeded; each
fold's test slides are never seen in training or early stopping. The final head is trained on every slide (with a
validation share for early stopping) and saved as an ``abmil`` head file for model bundles.

``python -m training.abmil train ...`` / ``predict ...`` mirror ``cervixfm train-abmil`` / ``predict-abmil``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import CervixFMError, InputError

from .mil_data import BagSet, load_labelled_bags, load_unlabelled_bags
from .reporting import SCALAR_METRICS, RunLog, write_classification_outputs, write_csv, write_json, write_predictions


@dataclasses.dataclass
class ABMILOptions:
    lr: float = 1e-4
    weight_decay: float = 1e-5
    epochs: int = 200
    min_epochs: int = 20
    patience: int = 20
    hidden_dim: int = 512
    attn_dim: int = 256
    dropout: float = 0.25
    class_weights: bool = True
    val_fraction: float = 0.15
    seed: int = 0
    device: Any = "cpu"

    def check(self) -> "ABMILOptions":
        if self.epochs < 1 or self.patience < 1 or self.min_epochs < 0:
            raise CervixFMError("--epochs and --patience must be at least 1 and --min-epochs at least 0.")
        if not self.lr > 0 or self.weight_decay < 0:
            raise CervixFMError("--lr must be positive and --weight-decay non-negative.")
        if not 0 <= self.val_fraction < 1:
            raise CervixFMError("--val-fraction must be in [0, 1).")
        if not 0 <= self.dropout < 1 or self.hidden_dim < 1 or self.attn_dim < 1:
            raise CervixFMError("--dropout must be in [0, 1) and --hidden-dim/--attn-dim at least 1.")
        return self


@dataclasses.dataclass
class TrainedABMIL:
    model: Any  # core.models.heads.ABMIL
    history: list[dict[str, float]]
    best_epoch: int
    n_train: int
    n_val: int


def loss_weights(labels: np.ndarray, num_classes: int, enabled: bool = True) -> np.ndarray:
    """Inverse class frequency ``n / (C * n_c)`` (1 for classes absent from ``labels``, or when disabled)."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    if not enabled:
        return np.ones(num_classes)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def validation_split(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices; stratified when every class has two slides or more."""
    from sklearn.model_selection import train_test_split

    indices = np.asarray(indices)
    if fraction <= 0 or len(indices) < 4:
        return indices, indices[:0]
    n_val = max(1, int(round(fraction * len(indices))))
    y = labels[indices]
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and n_val >= (counts > 0).sum() else None
    train, val = train_test_split(indices, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def train_abmil(bags: BagSet, train_idx: Sequence[int], val_idx: Sequence[int], num_classes: int,
                opts: ABMILOptions, log: Callable[[str], None] = lambda _m: None) -> TrainedABMIL:
    import torch
    import torch.nn.functional as F

    from core.models.heads import ABMIL

    opts.check()
    device = torch.device(opts.device)
    labels = bags.labels
    train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
    torch.manual_seed(opts.seed)
    model = ABMIL(bags.dim, num_classes, opts.hidden_dim, opts.attn_dim, opts.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    weights = torch.as_tensor(loss_weights(labels[train_idx], num_classes, opts.class_weights), dtype=torch.float32,
                              device=device)
    rng = np.random.default_rng(opts.seed)

    def bag(i: int):
        return torch.as_tensor(bags.features(int(i)), device=device)

    def target(i: int):
        return torch.as_tensor([labels[int(i)]], device=device)

    history: list[dict[str, float]] = []
    best_state, best_loss, best_epoch, waited = None, math.inf, -1, 0
    for epoch in range(opts.epochs):
        model.train()
        total = 0.0
        for i in rng.permutation(train_idx):
            y = target(i)
            # per-slide weight applied explicitly: with one slide per step, CrossEntropyLoss(weight=...) with its
            # mean reduction would divide the weight back out
            loss = weights[y[0]] * F.cross_entropy(model(bag(i)).logits[None], y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        entry = {"epoch": epoch, "train_loss": total / max(len(train_idx), 1)}
        if len(val_idx):
            model.eval()
            with torch.inference_mode():
                num = den = 0.0
                for i in val_idx:
                    y = target(i)
                    w = float(weights[y[0]])
                    num += w * float(F.cross_entropy(model(bag(i)).logits[None], y))
                    den += w
            entry["val_loss"] = num / den
            if entry["val_loss"] < best_loss:
                best_loss, best_epoch, waited = entry["val_loss"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
        history.append(entry)
        if epoch % 20 == 0:
            log(f"  epoch {epoch}: train loss {entry['train_loss']:.4f}"
                + (f", validation loss {entry['val_loss']:.4f}" if "val_loss" in entry else ""))
        if len(val_idx) and waited >= opts.patience and epoch + 1 >= opts.min_epochs:
            log(f"  early stop at epoch {epoch}: best validation loss {best_loss:.4f} at epoch {best_epoch}")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(history) - 1
    return TrainedABMIL(model.eval(), history, best_epoch, len(train_idx), len(val_idx))


def predict_bags(model, bags: BagSet, indices: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(probabilities (n, C), attention per slide, raw attention scores per slide)."""
    probs, attention, scores = [], [], []
    for i in indices:
        p, a, s = model.predict(bags.features(int(i)))
        probs.append(p)
        attention.append(a)
        scores.append(s)
    return (np.stack(probs) if probs else np.zeros((0, model.num_classes))), attention, scores


def _encoder_of(bags: BagSet) -> str | None:
    import h5py

    try:
        with h5py.File(bags.bags[0].path, "r") as h5:
            value = h5.attrs.get("encoder")
            return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else None)
    except OSError:
        return None


def cross_validate(bags: BagSet, folds: int, opts: ABMILOptions, log: Callable[[str], None]
                   ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, list]:
    """Per-fold results, out-of-fold probabilities (n, C), the fold of each slide, and the fold models."""
    from sklearn.model_selection import StratifiedKFold

    from core.metrics import classification_metrics

    labels = bags.labels
    num_classes = len(bags.classes)
    oof = np.full((len(bags), num_classes), np.nan)
    fold_of = np.full(len(bags), -1)
    results, models = [], []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=opts.seed)
    for k, (train_all, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        train, val = validation_split(train_all, labels, opts.val_fraction, opts.seed + k)
        log(f"fold {k}: {len(train)} training, {len(val)} validation, {len(test)} test slides")
        trained = train_abmil(bags, train, val, num_classes, dataclasses.replace(opts, seed=opts.seed + k), log)
        probs, _, _ = predict_bags(trained.model, bags, test)
        oof[test] = probs
        fold_of[test] = k
        metrics = classification_metrics(labels[test], probs, num_classes)
        results.append({"fold": k, "n_train": len(train), "n_val": len(val), "n_test": len(test),
                        "epochs_run": len(trained.history), "best_epoch": trained.best_epoch,
                        **{m: metrics[m] for m in SCALAR_METRICS}, "confusion_matrix": metrics["confusion_matrix"],
                        "history": trained.history})
        models.append(trained.model)
        log(f"fold {k}: balanced accuracy {metrics['balanced_accuracy']:.4f}, AUROC macro {metrics['auroc_macro']:.4f}")
    return results, oof, fold_of, models


def summarise_folds(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in SCALAR_METRICS:
        values = np.array([np.nan if r[key] is None else r[key] for r in results], float)
        finite = values[np.isfinite(values)]
        out[key] = {"mean": float(finite.mean()) if len(finite) else float("nan"),
                    "std": float(finite.std()) if len(finite) else float("nan")}
    return out


def abmil_options(args: argparse.Namespace, device) -> ABMILOptions:
    return ABMILOptions(lr=args.lr, weight_decay=args.weight_decay, epochs=args.epochs, min_epochs=args.min_epochs,
                        patience=args.patience, hidden_dim=args.hidden_dim, attn_dim=args.attn_dim,
                        dropout=args.dropout, class_weights=not args.no_class_weights,
                        val_fraction=args.val_fraction, seed=args.seed, device=device).check()


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    from core.metrics import classification_metrics, roc_curves
    from core.models.heads import save_head

    from .linear_probe import resolve_device

    log = RunLog()
    classes = [c for c in args.classes.split(",")] if args.classes else None
    bags, notes = load_labelled_bags(args.features, args.labels, classes)
    for note in notes:
        log(note)
    num_classes = len(bags.classes)
    labels = bags.labels
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        absent = [bags.classes[c] for c in np.flatnonzero(counts == 0)]
        raise InputError(f"No slide has the class(es) {', '.join(absent)}; every class needs slides to learn from.")
    if args.folds < 1:
        raise CervixFMError("--folds must be at least 1 (1 = no cross-validation).")
    if args.folds > 1 and counts.min() < args.folds:
        small = bags.classes[int(counts.argmin())]
        raise InputError(f"Class {small} has {counts.min()} slide(s), fewer than --folds {args.folds}: lower --folds "
                         "or add slides.")
    if args.folds == 1 and args.no_final:
        raise CervixFMError("--folds 1 with --no-final would train nothing.")
    device = resolve_device(args.device)
    opts = abmil_options(args, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"{len(bags)} slides [{', '.join(f'{c}: {n}' for c, n in zip(bags.classes, counts))}], "
        f"{bags.dim}-d tile features, {args.folds}-fold cross-validation")
    encoder = _encoder_of(bags)
    info = {"classes": bags.classes, "n_slides": len(bags), "class_counts": counts.tolist(), "feature_dim": bags.dim,
            "encoder": encoder, "folds": args.folds,
            "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "device"}}
    summary: dict[str, Any] = {}
    if args.folds > 1:
        results, oof, fold_of, models = cross_validate(bags, args.folds, opts, log)
        summary = summarise_folds(results)
        pooled = classification_metrics(labels, oof, num_classes)
        curves = roc_curves(labels, oof, num_classes)
        (out / "folds").mkdir(exist_ok=True)
        for k, model in enumerate(models):
            save_head(out / "folds" / f"fold_{k}.safetensors", "abmil", model, model.config(), bags.classes,
                      info={**info, "fold": k})
        write_predictions(out / "oof_predictions.csv", [b.slide_id for b in bags.bags], labels, oof, bags.classes,
                          name_column="slide_id")
        columns = ["fold", "n_train", "n_val", "n_test", "epochs_run", "best_epoch", *SCALAR_METRICS]
        rows = [[r[c] for c in columns] for r in results]
        rows.append(["mean", "", "", "", "", "", *[summary[m]["mean"] for m in SCALAR_METRICS]])
        rows.append(["std", "", "", "", "", "", *[summary[m]["std"] for m in SCALAR_METRICS]])
        write_csv(out / "cv_metrics.csv", columns, rows)
        write_json(out / "cv_metrics.json", {**info, "summary": summary, "pooled_out_of_fold": pooled,
                                             "folds": [{k: v for k, v in r.items() if k != "history"} for r in results],
                                             "fold_of_slide": dict(zip([b.slide_id for b in bags.bags], fold_of.tolist()))})
        write_classification_outputs(out, pooled, curves, bags.classes, extra={**info, "evaluation": "out-of-fold"},
                                     title=f"ABMIL, {args.folds}-fold out-of-fold predictions")
        history_rows = [[r["fold"], h["epoch"], h["train_loss"], h.get("val_loss")] for r in results for h in r["history"]]
        log("cross-validation: " + ", ".join(f"{m} {summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}"
                                             for m in ("balanced_accuracy", "f1_macro", "auroc_macro")))
    else:
        history_rows = []
    if not args.no_final:
        train, val = validation_split(np.arange(len(bags)), labels, opts.val_fraction, opts.seed)
        log(f"final head: {len(train)} training, {len(val)} validation slides")
        final = train_abmil(bags, train, val, num_classes, opts, log)
        history_rows += [["final", h["epoch"], h["train_loss"], h.get("val_loss")] for h in final.history]
        save_head(out / "head.safetensors", "abmil", final.model, final.model.config(), bags.classes,
                  info={**info, "cv_summary": summary, "best_epoch": final.best_epoch})
        log(f"saved {out / 'head.safetensors'}")
    write_csv(out / "training_history.csv", ["fold", "epoch", "train_loss", "val_loss"], history_rows)
    log.save(out / "log.txt")
    return {**info, "summary": summary}


def run_predict(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Score every slide in ``--features`` with an ABMIL head; writes the CSV and one attention file per slide."""
    from core.errors import CheckpointError
    from core.io import atomic_write
    from core.models.heads import load_head

    from .linear_probe import resolve_device

    log = RunLog()
    head = load_head(args.head, device="cpu")
    if head.kind != "abmil":
        raise CheckpointError(f"{args.head} is a {head.kind} head; predict-abmil needs an abmil head from train-abmil.")
    bags = load_unlabelled_bags(args.features)
    wrong = [f"{b.slide_id} ({b.dim}-d)" for b in bags.bags if b.n_tiles and b.dim != head.module.in_dim]
    if wrong:
        raise InputError(f"The head expects {head.module.in_dim}-d tile features, but these files hold others: "
                         f"{', '.join(wrong[:5])}. Extract them with the backbone the head was trained on.")
    trained_encoder = (head.info or {}).get("encoder")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CervixFMError(f"Output folder {out.parent} does not exist.")
    attention_dir = Path(args.attention_dir) if args.attention_dir else out.parent / f"{out.stem}_attention"
    device = resolve_device(args.device)
    model = head.module.to(device)
    rows, attention_files = [], []
    for i, bag in enumerate(bags.bags):
        if bag.n_tiles == 0:
            log(f"{bag.slide_id}: no tiles, no score")
            rows.append([bag.slide_id, 0, "", *[""] * len(head.classes)])
            continue
        probs, attention, scores = model.predict(bags.features(i))
        rows.append([bag.slide_id, bag.n_tiles, head.classes[int(np.argmax(probs))], *[float(p) for p in probs]])
        buffer = io.BytesIO()
        np.savez(buffer, coords=bags.coords(i), attention=attention.astype(np.float32),
                 attention_logits=scores.astype(np.float32), probabilities=probs.astype(np.float32),
                 classes=np.asarray(head.classes, dtype=str))
        attention_files.append((attention_dir / f"{bag.slide_id}.attention.npz", buffer))
        if trained_encoder:
            from core.pipeline.feature_file import read_features

            encoder = read_features(bag.path).attrs.get("encoder")
            if encoder and encoder != trained_encoder:
                log(f"warning: {bag.slide_id} was extracted with {encoder}, the head was trained on {trained_encoder}")
    attention_dir.mkdir(parents=True, exist_ok=True)
    for path, buffer in attention_files:
        with atomic_write(path, "wb") as handle:
            handle.write(buffer.getvalue())
    write_csv(out, ["slide_id", "n_tiles", "prediction", *[f"prob_{c}" for c in head.classes]], rows)
    log(f"scored {len(rows)} slide(s): {out}; attention in {attention_dir}")
    return [dict(zip(["slide_id", "n_tiles", "prediction"], r[:3])) for r in rows]


def handle_train(args: argparse.Namespace) -> int:
    run_train(args)
    return 0


def handle_predict(args: argparse.Namespace) -> int:
    run_predict(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .cli_args import add_predict_abmil_arguments, add_train_abmil_arguments, run_module_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        return run_module_cli("python -m training.abmil predict", "Score slides with an ABMIL head.",
                              add_predict_abmil_arguments, handle_predict, argv[1:])
    if argv[:1] == ["train"]:
        argv = argv[1:]
    return run_module_cli("python -m training.abmil train", "Train an ABMIL slide classifier (cross-validated).",
                          add_train_abmil_arguments, handle_train, argv)


if __name__ == "__main__":
    sys.exit(main())
