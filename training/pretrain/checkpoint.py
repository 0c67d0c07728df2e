"""Training checkpoints that resume to the same trajectory, and exports of the teacher for downstream use.

A checkpoint holds everything the next iteration depends on: student and teacher weights, optimiser state, the
DINO/iBOT centers, the grad scaler, the iteration number (which is the whole data state, see ``data.py``) and the
random-number states of every process (drop path draws from torch's generator). Weights and optimiser state are
stored unsharded and keyed by parameter name, so an FSDP run's checkpoint loads in a DDP or single-process run.

Files: ``checkpoints/iter_NNNNNNN.pth`` written atomically by process 0, then ``checkpoints/last_checkpoint`` (the
file name) replaced atomically; a crash at any point leaves the previous checkpoint usable. The ``keep`` most recent
are kept. Exports: ``teacher_backbone.pth`` (bare backbone state dict in the CervixFM layout, what ``load_backbone``
and ``cervixfm embed`` read), ``teacher_checkpoint.pth`` (``{"teacher": {"backbone.*", "dino_head.*"}}``, DINOv2's
export) and ``backbone_config.json`` (the architecture, for ``--config`` where the weights cannot tell it).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import CheckpointError
from core.io import atomic_write, atomic_write_text
from core.models.layouts import export_cervixfm, model_to_canonical

FORMAT = "cervixfm-pretrain-checkpoint"
POINTER = "last_checkpoint"
_NAME = re.compile(r"^iter_(\d+)\.pth$")


# ----------------------------------------------------------------------------------------------- random states
def rng_state() -> dict[str, Any]:
    """This process's generator states in types that ``torch.load(weights_only=True)`` reads back."""
    np_key, np_state, np_pos, np_has_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": np_key, "state": torch.from_numpy(np_state.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached": float(np_cached)},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: Path) -> Path | None:
    folder = checkpoint_dir(output_dir)
    pointer = folder / POINTER
    if pointer.is_file():
        path = folder / pointer.read_text().strip()
        if path.is_file():
            return path
    found = sorted((p for p in folder.glob("iter_*.pth") if _NAME.match(p.name)),
                   key=lambda p: int(_NAME.match(p.name).group(1)))
    return found[-1] if found else None


def save_checkpoint(output_dir: Path, state: dict[str, Any], keep: int) -> Path:
    folder = checkpoint_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"iter_{int(state['iteration']):07d}.pth"
    with atomic_write(path, "wb") as handle:
        torch.save({"format": FORMAT, "version": 1, **state}, handle)
    atomic_write_text(folder / POINTER, path.name + "\n")
    older = sorted((p for p in folder.glob("iter_*.pth") if _NAME.match(p.name) and p != path),
                   key=lambda p: int(_NAME.match(p.name).group(1)))
    for stale in older[:max(0, len(older) - (keep - 1))]:
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"Cannot read pretraining checkpoint {path}: {exc}. Delete it to start from the "
                              "previous one, or choose another train.output_dir.") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CervixFM pretraining checkpoint.")
    return state


def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


# ---------------------------------------------------------------------------------------------------- exports
def cervixfm_backbone(state: dict[str, torch.Tensor], block_chunks: int) -> dict[str, torch.Tensor]:
    """A backbone state dict in the CervixFM layout (chunked blocks as the model has them, flat when 0)."""
    return export_cervixfm(model_to_canonical(state), block_chunks=block_chunks)


def export_teacher(folder: Path, teacher: dict[str, dict[str, torch.Tensor]], block_chunks: int,
                   architecture: dict[str, Any]) -> dict[str, Path]:
    """Write the three export files into ``folder``; ``teacher`` maps module name -> its full state dict."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = {k: v.contiguous() for k, v in cervixfm_backbone(teacher["backbone"], block_chunks).items()}
    paths = {"backbone": folder / "teacher_backbone.pth", "teacher": folder / "teacher_checkpoint.pth",
             "config": folder / "backbone_config.json"}
    with atomic_write(paths["backbone"], "wb") as handle:
        torch.save(backbone, handle)
    wrapped = {f"backbone.{k}": v for k, v in backbone.items()}
    for name, module_state in teacher.items():
        if name != "backbone":
            wrapped.update({f"{name}.{k}": v.contiguous() for k, v in module_state.items()})
    with atomic_write(paths["teacher"], "wb") as handle:
        torch.save({"teacher": wrapped}, handle)
    atomic_write_text(paths["config"], json.dumps({"constructor": architecture}, indent=1) + "\n")
    return paths
