"""Result files of the evaluation recipes: JSON, CSV, PNG plots and a run log, each written atomically.

Plots use matplotlib's Agg backend through ``Figure`` objects (no pyplot state, no display needed) and are rendered
to memory first, so a failed plot never leaves a partial PNG.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from core.io import atomic_write, atomic_write_text


def to_jsonable(value: Any) -> Any:
    """Numpy scalars/arrays to plain Python; NaN to null (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    atomic_write_text(path, json.dumps(to_jsonable(data), indent=1) + "\n")
    return Path(path)


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


class RunLog:
    """Messages echoed to stderr as they happen and saved (atomically) as the run's log file when it ends."""

    def __init__(self, echo: bool = True):
        self.lines: list[str] = []
        self.echo = echo

    def __call__(self, message: str) -> None:
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        self.lines.append(f"{stamp} {message}")
        if self.echo:
            print(message, file=sys.stderr, flush=True)

    def save(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, "\n".join(self.lines) + "\n")
        return Path(path)


def _save_figure(fig, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def _figure(width: float = 5.5, height: float = 4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_confusion_matrix(path: str | os.PathLike, cm: np.ndarray, classes: Sequence[str], title: str = "") -> Path:
    cm = np.asarray(cm)
    size = max(4.0, 0.6 * len(classes) + 2.5)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black",
                    fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix")
    return _save_figure(fig, path)


def plot_roc_curves(path: str | os.PathLike, curves: Mapping[str, Mapping[str, Any]], classes: Sequence[str],
                    title: str = "") -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    for key, curve in curves.items():
        if key.startswith("class_"):
            label = classes[int(key.split("_", 1)[1])]
            style = {"lw": 1.0}
        elif key == "positive":
            label, style = classes[1] if len(classes) > 1 else "positive", {"lw": 1.5}
        else:
            label, style = key, {"lw": 2.0, "ls": ":" if key == "micro" else "-", "color": "black" if key == "macro" else "0.4"}
        ax.plot(curve["fpr"], curve["tpr"], label=f"{label} (AUC {curve['auc']:.3f})", **style)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC curves (one vs rest)")
    ax.legend(fontsize=7, loc="lower right")
    return _save_figure(fig, path)


def plot_mean_std(path: str | os.PathLike, x: Sequence[float], series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                  xlabel: str, title: str, log_x: bool = False) -> Path:
    """One line per series with a shaded mean ± std band (label-efficiency curves)."""
    fig = _figure(6, 4.2)
    ax = fig.add_subplot()
    xs = np.asarray(x, float)
    for name, (mean, std) in series.items():
        mean, std = np.asarray(mean, float), np.nan_to_num(np.asarray(std, float))
        ax.plot(xs, mean, marker="o", label=name)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (mean ± std over seeds)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _save_figure(fig, path)


SCALAR_METRICS = ("balanced_accuracy", "top1_accuracy", "f1_macro", "f1_micro", "f1_weighted", "auroc_macro",
                  "auroc_micro", "auroc_weighted")


def write_classification_outputs(out_dir: Path, metrics: Mapping[str, Any], curves: Mapping[str, Mapping[str, Any]],
                                 classes: Sequence[str], extra: Mapping[str, Any] | None = None,
                                 title: str = "") -> list[Path]:
    """metrics.json, metrics.csv, confusion_matrix.csv/.png and roc_curves.csv/.png in ``out_dir``."""
    written = [write_json(out_dir / "metrics.json", {**dict(extra or {}), "classes": list(classes), **metrics,
                                                      "roc_curves": curves})]
    written.append(write_csv(out_dir / "metrics.csv", ["metric", "value"],
                             [(k, metrics[k]) for k in SCALAR_METRICS if k in metrics]))
    cm = np.asarray(metrics["confusion_matrix"])
    written.append(write_csv(out_dir / "confusion_matrix.csv", ["true \\ predicted", *classes],
                             [[classes[i], *cm[i].tolist()] for i in range(len(classes))]))
    written.append(plot_confusion_matrix(out_dir / "confusion_matrix.png", cm, classes, title))
    rows = [(name, float(f), float(t)) for name, c in curves.items() for f, t in zip(c["fpr"], c["tpr"])]
    written.append(write_csv(out_dir / "roc_curves.csv", ["curve", "fpr", "tpr"], rows))
    written.append(plot_roc_curves(out_dir / "roc_curves.png", curves, classes, title))
    return written


def write_predictions(path: Path, names: Sequence[str], labels: Sequence[int] | None, probs: np.ndarray,
                      classes: Sequence[str], name_column: str = "name") -> Path:
    header = [name_column, *(["label"] if labels is not None else []), "prediction", *[f"prob_{c}" for c in classes]]
    rows = []
    for i, name in enumerate(names):
        row = [name]
        if labels is not None:
            row.append(classes[int(labels[i])])
        row.append(classes[int(np.argmax(probs[i]))])
        row.extend(float(v) for v in probs[i])
        rows.append(row)
    return write_csv(path, header, rows)
