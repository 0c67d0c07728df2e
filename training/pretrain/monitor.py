"""What a pretraining run reports: metric rows (JSONL as they happen, CSV at checkpoints and at the end), optional
TensorBoard events, a progress bar, and a loss-curve PNG.

``metrics.jsonl`` gets one line per logged iteration, flushed immediately, so a crashed run still shows how it went;
on resume, rows from iterations the restored checkpoint had not reached are dropped (they will be recomputed).
TensorBoard event files are written when the ``tensorboard`` package is installed (it is optional).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from core.io import atomic_write_text

LOSS_KEYS = ("total_loss", "dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss")


class MetricsLog:
    def __init__(self, output_dir: Path, start_iteration: int, enabled: bool = True, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        self.jsonl = self.output_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if self.jsonl.is_file():
            for line in self.jsonl.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(row, dict) and int(row.get("iteration", -1)) < start_iteration:
                    self.rows.append(row)
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        self._handle = open(self.jsonl, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=start_iteration)
            except Exception:  # tensorboard not installed
                self.writer = None

    def add(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()
        if self.writer is not None:
            for key, value in row.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["iteration"])

    def write_csv(self) -> Path | None:
        if not self.enabled or not self.rows:
            return None
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        lines = [",".join(keys)]
        for row in self.rows:
            lines.append(",".join(_fmt(row.get(k)) for k in keys))
        path = self.output_dir / "metrics.csv"
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    def close(self) -> None:
        if not self.enabled:
            return
        self._handle.close()
        if self.writer is not None:
            self.writer.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plot_loss_curve(path: Path, rows: Sequence[dict[str, Any]], title: str = "DINOv2 pretraining") -> Path | None:
    """Losses (left) and learning rate / teacher momentum (right) against the iteration, as a small PNG."""
    rows = [r for r in rows if "iteration" in r]
    if not rows:
        return None
    from matplotlib.figure import Figure

    from training.reporting import _save_figure

    its = [r["iteration"] for r in rows]
    targets = any("teacher_prototypes_used" in r for r in rows)
    panels = 3 if targets else 2
    fig = Figure(figsize=(4.5 * panels, 3.4))
    ax = fig.add_subplot(1, panels, 1)
    for key in LOSS_KEYS:
        values = [r.get(key) for r in rows]
        if any(v is not None and math.isfinite(v) for v in values):
            ax.plot(its, [math.nan if v is None else v for v in values], label=key.replace("_", " "),
                    lw=2.0 if key == "total_loss" else 1.0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if targets:
        _plot_targets(fig.add_subplot(1, panels, 2), its, rows)
    ax2 = fig.add_subplot(1, panels, panels)
    ax2.plot(its, [r.get("lr", math.nan) for r in rows], color="tab:blue", label="lr")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("learning rate", color="tab:blue")
    twin = ax2.twinx()
    twin.plot(its, [r.get("mom", math.nan) for r in rows], color="tab:red", label="teacher momentum")
    twin.set_ylabel("teacher momentum", color="tab:red")
    ax2.set_title("schedules", fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, path)


def _plot_targets(ax, its: list, rows: Sequence[dict[str, Any]]) -> None:
    """Prototypes in use (log scale) and per-image entropy of the teacher's targets: the two collapses (one
    prototype for every image; uniform targets) are told apart here, not in the loss."""
    ax.plot(its, [r.get("teacher_prototypes_used", math.nan) for r in rows], color="tab:green")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("prototypes in use (exp entropy of batch mean)", color="tab:green", fontsize=8)
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(its, [r.get("teacher_entropy", math.nan) for r in rows], color="tab:purple")
    twin.set_ylabel("entropy per image (nats)", color="tab:purple", fontsize=8)
    ax.set_title("teacher targets", fontsize=9)


def progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="it", desc="pretrain", disable=not enabled or None,
                file=sys.stderr, dynamic_ncols=True)
