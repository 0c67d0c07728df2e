"""A demonstration model bundle, trained on this machine from synthetic Pap smears, for the viewer's demo.

The published CervixFM weights do not ship with the program, yet a first-time user should see the analysis run on
the demo slide: tile heat map, cell classes, suspicious-cell ranking, similar cells. This recipe builds a small but
honest model for that, end to end with the project's own training code and nothing else:

1. synthetic smears (``core.synthetic``) with known cells, at several abnormal fractions, none of them the viewer's
   demo slide (seed 1); two more are held out of every training step and used only for the numbers in README.txt;
2. DINOv2 self-supervised pretraining (``training.pretrain``, the ``tiny`` preset: ViT 192-d, 6 blocks, patch 16)
   on random tiles of the training smears, its schedule sized to a time box from a timed iteration, so that the
   run ends properly (warm-up, cosine decay) on a busy laptop as on an idle one;
3. the training smears analysed by ``core.pipeline`` with the cell stage (tile features, cells, cell embeddings);
4. two heads on the frozen backbone, both the published linear probe (``training.probe_training``) on standardised
   features folded back into the head: a cell classifier on the ground-truth cell classes
   (``training.cell_classifier``) and a tile classifier on the worst Bethesda category (NILM, LSIL, HSIL) among the
   ground-truth nuclei in each tile. The worst category rather than "any abnormal cell": the tile map then reads
   like a Pap report (the worst lesion seen decides) and a reviewer can tell high-grade areas from low-grade ones;
5. a bundle folder (``core.models.bundle``) assembled in a staging folder beside the destination, loaded back and
   evaluated on the held-out smears through its own files, then renamed into place, so a cancelled or failed build
   never leaves half a bundle where the viewer looks.

No slide (ABMIL) head: trained on ten smears (also with smear sub-bags, smaller heads, or 34 smears) it learned each
smear's stain, not its lesions, and scored held-out smears no better than chance; a slide score that is noise
would mislead more than no score. MIL needs far more slides than a CPU build can analyse.

Tiles are 112 px at 0.5 µm/px (56 µm, one or two cells). The pretraining samples 160-px tiles at 0.5 µm/px and
resizes its global crops (32-100 % of the tile) to 112 px, so the network sees 0.4-0.7 µm/px during pretraining and
0.5 µm/px, on the same 7 x 7 token grid, during analysis: the resolution it learned, at a quarter of the cost of
224-px tiles. Cell detection runs at the model's 0.5 µm/px, the resolution the classical detector is tuned for.
Layer scale starts at 1 rather than DINOv2's 1e-5: in a run this short, 1e-5 leaves every tile with nearly the same
CLS token (benchmarks/README.md, "It learns").
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import CervixFMError
from core.models.inference import torch_threads

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]

BUNDLE_NAME = "CervixFM demo (synthetic data, not for diagnosis)"
TILE_CLASSES = ("NILM", "LSIL", "HSIL")  # worst Bethesda category among the tile's ground-truth nuclei
NILM_COLOR = (90, 170, 110)


class DemoBundleCancelled(CervixFMError):
    """The build was cancelled; nothing was written at the destination."""


@dataclasses.dataclass(frozen=True)
class SmearSpec:
    seed: int
    abnormal_fraction: float

    def file_name(self, size: int) -> str:
        return f"smear_seed{self.seed}_abn{self.abnormal_fraction:.2f}_{size}px.tiff"


@dataclasses.dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides what the build makes; the full and quick recipes differ only in sizes."""

    slide_size: int  # level-0 side of each synthetic smear at 0.25 µm/px
    density: float
    cellularity: float
    train: tuple[SmearSpec, ...]
    held_out: tuple[SmearSpec, ...]
    pretrain_overrides: tuple[str, ...]
    #: Pretraining time: the schedule is sized to it from a timed iteration (0 epochs bounds: use the overrides' own
    #: schedule); the run stops at 1.2 x this if the machine slows down meanwhile.
    pretrain_seconds: float
    min_pretrain_epochs: int
    max_pretrain_epochs: int
    tile_size: int = 112
    target_mpp: float = 0.5
    cell_core_px: int = 1024

    def describe(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # nested SmearSpecs become dicts too
        out["pretrain_overrides"] = list(self.pretrain_overrides)
        return out


# Seeds 2001+ are used nowhere else (the viewer's demo slide is seed 1, tests and benchmarks use 0-5).
FULL = DemoRecipe(
    slide_size=4096, density=2.0, cellularity=0.5,
    train=tuple(SmearSpec(2001 + k, f) for k, f in enumerate((0.0, 0.0, 0.0, 0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5))),
    held_out=(SmearSpec(2101, 0.25), SmearSpec(2102, 0.0)),
    pretrain_overrides=("student.layerscale=1.0", "train.slide_tile_size=160", "train.num_workers=0",
                        "evaluation.eval_period_iterations=0", "train.checkpoint_period_iterations=1000000"),
    pretrain_seconds=6 * 60, min_pretrain_epochs=2, max_pretrain_epochs=30,
)

QUICK = DemoRecipe(
    slide_size=1536, density=2.0, cellularity=0.6,
    train=(SmearSpec(2001, 0.0), SmearSpec(2002, 0.4), SmearSpec(2003, 0.5)),
    held_out=(SmearSpec(2101, 0.4),),
    pretrain_overrides=(
        "student.arch=vit-test16", "student.drop_path_rate=0.0", "crops.global_crops_size=64",
        "crops.local_crops_size=32", "crops.local_crops_number=2", "dino.head_n_prototypes=256",
        "dino.head_hidden_dim=64", "dino.head_bottleneck_dim=32", "ibot.head_n_prototypes=256",
        "ibot.head_hidden_dim=64", "ibot.head_bottleneck_dim=32", "train.OFFICIAL_EPOCH_LENGTH=2", "optim.epochs=2",
        "optim.warmup_epochs=1", "optim.freeze_last_layer_epochs=0", "teacher.warmup_teacher_temp_epochs=1",
        "train.batch_size_per_gpu=4", "train.slide_tile_size=96", "train.num_workers=0",
        "train.log_period_iterations=1", "evaluation.eval_period_iterations=0"),
    pretrain_seconds=60, min_pretrain_epochs=0, max_pretrain_epochs=0, cell_core_px=512,
)

# Share of the whole build each stage takes (full recipe on two cores), for one progress fraction.
_STAGES = {"slides": (0.0, 0.03), "pretrain": (0.03, 0.65), "analyse": (0.65, 0.97), "heads": (0.97, 1.0)}


class _Reporter:
    """Maps a stage's own progress onto the whole build and checks for cancellation at every report."""

    def __init__(self, progress: ProgressCallback | None, cancel: CancelCheck | None):
        self._progress = progress
        self._cancel = cancel
        self._fraction = 0.0  # reports never move backwards, whichever part of a stage sends them

    def cancelled(self) -> bool:
        return bool(self._cancel is not None and self._cancel())

    def check(self) -> None:
        if self.cancelled():
            raise DemoBundleCancelled("Building the demo bundle was cancelled; nothing was written.")

    def __call__(self, stage: str, within: float, message: str, check: bool = True) -> None:
        start, end = _STAGES[stage]
        self._fraction = max(self._fraction, start + (end - start) * min(max(within, 0.0), 1.0))
        if self._progress is not None:
            self._progress(self._fraction, message)
        if check:
            self.check()


# ------------------------------------------------------------------------------------------------- destination
def _has_bundle(folder: Path) -> bool:
    return (folder / "bundle.json").is_file()


def check_destination(out_dir: Path, force: bool) -> None:
    """Refuse before any work: an existing bundle without ``force``, or a folder that holds something else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CervixFMError(f"{out_dir} is a file, not a folder; choose another destination for the demo bundle.")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not _has_bundle(out_dir):
        raise CervixFMError(f"{out_dir} already holds files that are not a model bundle; choose an empty or new "
                            "folder for the demo bundle (nothing was changed).")
    if not force:
        raise CervixFMError(f"{out_dir} already holds a model bundle. Use --force (force=True) to replace it; the "
                            "old one stays in place until the new one is complete.")


def _install(staging: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished staging folder to ``out_dir``; a replaced bundle is removed only afterwards."""
    check_destination(out_dir, force)  # again: something may have appeared there during the build
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a bundle is as readable as any folder the user makes
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


# ------------------------------------------------------------------------------------------------------ stages
def _generate_smears(recipe: DemoRecipe, folder: Path, smears: Sequence[SmearSpec], report: _Reporter,
                     done_before: int, total: int) -> list[Path]:
    """The smears (reused when an earlier build in the same work folder drew them: the same seed, the same files)."""
    from core.synthetic import generate_slide

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, smear in enumerate(smears):
        path = folder / smear.file_name(recipe.slide_size)
        index = done_before + k

        def tile_done(done: int, tiles: int, index=index) -> None:
            report("slides", (index + done / max(tiles, 1)) / total, f"drawing synthetic smear {index + 1} of {total}")

        if not (path.is_file() and path.with_suffix(".geojson").is_file()):  # the GeoJSON is written last
            generate_slide(path, recipe.slide_size, recipe.slide_size, seed=smear.seed,
                           abnormal_fraction=smear.abnormal_fraction, density=recipe.density,
                           cellularity=recipe.cellularity, progress=tile_done)
        paths.append(path)
    return paths


def schedule_overrides(epochs: int) -> list[str]:
    """A DINOv2 schedule of ``epochs`` short epochs with the tiny preset's proportions: 10 % learning-rate warm-up,
    a sixth of the run warming the teacher temperature, the last layer frozen for the first epoch when there are
    five or more."""
    return [f"optim.epochs={epochs}", f"optim.warmup_epochs={max(1, round(epochs / 10))}",
            f"teacher.warmup_teacher_temp_epochs={max(1, round(epochs / 6))}",
            f"optim.freeze_last_layer_epochs={1 if epochs >= 5 else 0}"]


def _pretrain_config(recipe: DemoRecipe, slides_folder: Path, run_folder: Path, extra: Sequence[str] = ()):
    from training.pretrain import load_config

    return load_config("tiny", [f"train.dataset_path={slides_folder}", f"train.output_dir={run_folder}",
                                *recipe.pretrain_overrides, *extra])


def _seconds_per_iteration(recipe: DemoRecipe, slides_folder: Path, run_folder: Path, report: _Reporter) -> float:
    """Time the second iteration (the first warms up) on this machine, as loaded as it is now.

    The pretraining schedule is then sized to the time box: a DINOv2 run cut short in its warm-up would leave the
    learning rate rising and the teacher temperature cold, while a schedule that fits ends properly."""
    from training.pretrain import run_pretraining

    marks: dict[int, float] = {}

    def should_stop(done: int) -> bool:
        marks[done] = time.perf_counter()
        report("pretrain", 0.02 * done / 2, f"pretraining: timing an iteration on this machine ({done} of 2)")
        return done >= 2

    try:
        run_pretraining(_pretrain_config(recipe, slides_folder, run_folder), log=lambda _m: report.check(),
                        progress=False, should_stop=should_stop)
    finally:
        shutil.rmtree(run_folder, ignore_errors=True)
    return marks[2] - marks[1]


def _pretrain(recipe: DemoRecipe, slides_folder: Path, run_folder: Path, report: _Reporter) -> dict[str, Any]:
    """DINOv2 pretraining on the training smears with a schedule sized to the time box; returns what was done."""
    from training.pretrain import run_pretraining
    from training.pretrain.config import total_iterations

    schedule: list[str] = []
    measured = None
    if recipe.max_pretrain_epochs:
        measured = _seconds_per_iteration(recipe, slides_folder, run_folder.with_name("pretrain_timing"), report)
        epoch_length = int(_pretrain_config(recipe, slides_folder, run_folder).train.OFFICIAL_EPOCH_LENGTH)
        fits = int(recipe.pretrain_seconds / (measured * epoch_length))
        schedule = schedule_overrides(min(max(fits, recipe.min_pretrain_epochs), recipe.max_pretrain_epochs))
    cfg = _pretrain_config(recipe, slides_folder, run_folder, schedule)
    planned = total_iterations(cfg)
    deadline = 1.2 * recipe.pretrain_seconds  # if the machine gets busier than when it was timed
    started = time.perf_counter()
    state = {"done": 0}

    def should_stop(done: int) -> bool:
        state["done"] = done
        elapsed = time.perf_counter() - started
        report("pretrain", 0.02 + 0.98 * max(done / planned, elapsed / deadline),
               f"pretraining: iteration {done} of {planned} ({elapsed / done:.1f} s each)")
        return elapsed >= deadline

    report("pretrain", 0.02, f"pretraining: {planned} iterations planned")
    result = run_pretraining(cfg, log=lambda message: report("pretrain", 0.02 + 0.98 * state["done"] / planned,
                                                             f"pretraining: {message}"),
                             progress=False, should_stop=should_stop)
    report.check()
    last = result.history[-1] if result.history else {}
    return {"iterations": int(result.end_iteration), "planned_iterations": planned,
            "seconds": round(time.perf_counter() - started, 1),
            "seconds_per_iteration_measured": round(measured, 2) if measured else None,
            "schedule": schedule or [o for o in recipe.pretrain_overrides if o.startswith(("optim.", "teacher."))],
            "batch_size": int(cfg.train.batch_size_per_gpu), "final_loss": last.get("total_loss"),
            "time_boxed": result.end_iteration < planned, "backbone": result.exports["backbone"],
            "config": result.exports["config"], "architecture": json.loads(result.exports["config"].read_text())}


def _analyse(model, slides: Sequence[Path], out_root: Path, recipe: DemoRecipe, report: _Reporter):
    """Tile features and the cell stage of every smear; a cancel request stops the running analysis at once."""
    from core.cells import CellOptions
    from core.pipeline.analyze import SlideAnalysis

    results = []
    for k, path in enumerate(slides):
        analysis = SlideAnalysis(path, model, out_root, batch_size=32,
                                 cells=CellOptions(core_px=recipe.cell_core_px, exports=False, index=False))
        message = f"analysing smear {k + 1} of {len(slides)}"

        def step(within: float, analysis=analysis, k=k, message=message) -> None:
            if report.cancelled():  # called from the analysis: ask it to stop rather than raise through it
                analysis.cancel()
                return
            report("analyse", (k + within) / len(slides), message, check=False)

        result = analysis.run(progress=lambda p: step(0.3 * p.done / max(p.total, 1)),
                              cell_progress=lambda p: step(0.3 + 0.7 * p.tiles_done / max(p.tiles_total, 1)))
        report.check()
        if result.status != "complete" or result.cells.get("status") != "complete":
            raise CervixFMError(f"The analysis of {path.name} did not complete ({result.status}); the demo bundle "
                                "was not written.")
        results.append(result)
    return results


# -------------------------------------------------------------------------------------------------- labelling
def _worst_category(names: Sequence[str]) -> int:
    """Index into TILE_CLASSES of the worst Bethesda category of these ground-truth cells (NILM when none)."""
    from core.synthetic.classes import CLASSES

    bethesda = {c.name: c.bethesda for c in CLASSES}
    found = [TILE_CLASSES.index(bethesda[n]) for n in names if bethesda.get(n) in TILE_CLASSES]
    return max(found, default=0)


def _tile_labels(result, truth) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of a slide's tiles: the worst category among ground-truth nucleus centres in each tile."""
    features = result.read_features()
    w0, h0 = result.params["tile_size_level0"]
    centres = truth.nucleus_centres
    labels = np.zeros(len(features.features), np.int64)
    for i, (x, y) in enumerate(features.coords):
        inside = ((centres[:, 0] >= x) & (centres[:, 0] < x + w0) & (centres[:, 1] >= y) & (centres[:, 1] < y + h0)
                  if len(centres) else np.zeros(0, bool))
        labels[i] = _worst_category([truth.names[j] for j in np.flatnonzero(inside)])
    return features.features, labels


# ------------------------------------------------------------------------------------------------------- heads
def _train_cell_head(results, truths, path: Path, identity: dict) -> dict[str, Any]:
    from core.synthetic import CLASS_NAMES
    from training.cell_classifier import labelled_cells, save_cell_classifier, train_cell_classifier
    from training.probe_training import ProbeOptions

    cells = labelled_cells([r.read_cells() for r in results], truths, classes=list(CLASS_NAMES))
    head, fit = train_cell_classifier(cells, ProbeOptions(seed=0))
    save_cell_classifier(path, head, cells.classes, cells.colors, None,
                         {**identity, "trained_on": "synthetic smears", "cells": len(cells),
                          "class_counts": cells.class_counts(), "best_epoch": fit.best_epoch, "standardized": True})
    return {"cells": len(cells), "class_counts": cells.class_counts(), "epochs": fit.epochs_run}


def _train_tile_head(results, truths, path: Path, identity: dict) -> dict[str, Any]:
    from core.models.heads import save_head
    from core.synthetic.classes import CLASSES
    from training.probe_training import ProbeOptions, train_linear_probe

    pairs = [_tile_labels(r, t) for r, t in zip(results, truths)]
    x = np.concatenate([p[0] for p in pairs]).astype(np.float32)
    y = np.concatenate([p[1] for p in pairs])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    head, fit = train_linear_probe((x - mean) / std, y, len(TILE_CLASSES), ProbeOptions(seed=0))
    fold_into_linear(head.classifier, mean, std)  # the saved head takes raw tile features, like any other
    colors = {c.name: list(c.color) for c in CLASSES}
    counts = dict(zip(TILE_CLASSES, np.bincount(y, minlength=len(TILE_CLASSES)).tolist()))
    save_head(path, "linear", head, head.config(), TILE_CLASSES,
              [list(NILM_COLOR), colors["LSIL"], colors["HSIL"]],
              {**identity, "role": "tile-classifier", "normal_classes": ["NILM"], "tiles": len(y),
               "class_counts": counts, "label": "worst Bethesda category among the ground-truth nuclei in the tile",
               "best_epoch": fit.best_epoch, "standardized": True})
    return {"tiles": len(y), "class_counts": counts, "epochs": fit.epochs_run}


def fold_into_linear(layer, mean: np.ndarray, std: np.ndarray) -> None:
    """Make a linear layer trained on ``(x - mean) / std`` take ``x``: W' = W / std, b' = b - W' mean."""
    import torch

    with torch.no_grad():
        w = layer.weight / torch.as_tensor(std, dtype=layer.weight.dtype)
        layer.bias -= w @ torch.as_tensor(mean, dtype=w.dtype)
        layer.weight.copy_(w)


# -------------------------------------------------------------------------------------------------- evaluation
def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def evaluate_bundle(model, results, truths) -> dict[str, Any]:
    """Held-out numbers of a loaded bundle's heads on analysed smears with ground truth."""
    import torch

    from core.cells import classifiers_of_model
    from core.metrics import balanced_accuracy, binary_auroc
    from core.synthetic import CLASS_NAMES
    from core.synthetic.classes import ABNORMAL
    from training.cell_classifier import labelled_cells

    out: dict[str, Any] = {}
    classifier = classifiers_of_model(model)[0]
    cells = labelled_cells([r.read_cells() for r in results], truths, classes=list(CLASS_NAMES))
    probs = classifier.predict(cells.features)
    abnormal = np.isin(cells.labels, sorted(ABNORMAL))
    present = np.unique(cells.labels)
    out["cells"] = {"n": len(cells), "class_counts": cells.class_counts(),
                    "balanced_accuracy": _finite(balanced_accuracy(cells.labels, probs.argmax(1))),
                    "chance_balanced_accuracy": _finite(1.0 / len(present)) if len(present) else None,
                    "auroc_abnormal_vs_normal": _finite(binary_auroc(abnormal, classifier.abnormality(probs))),
                    "abnormal_cells": int(abnormal.sum())}
    tile_head = model.heads_with_role("tile-classifier")[0]
    pairs = [_tile_labels(r, t) for r, t in zip(results, truths)]
    x = np.concatenate([p[0] for p in pairs]).astype(np.float32)
    y = np.concatenate([p[1] for p in pairs])
    with torch.inference_mode():
        tile_probs = torch.softmax(tile_head.module(torch.as_tensor(x)), dim=-1).numpy()
    out["tiles"] = {"n": int(len(y)), "class_counts": dict(zip(TILE_CLASSES, np.bincount(y, minlength=3).tolist())),
                    "balanced_accuracy": _finite(balanced_accuracy(y, tile_probs.argmax(1))),
                    "chance_balanced_accuracy": _finite(1.0 / len(np.unique(y))) if len(y) else None,
                    "auroc_abnormal_vs_normal": _finite(binary_auroc(y > 0, 1.0 - tile_probs[:, 0]))}
    return out


# ---------------------------------------------------------------------------------------------------- writing
def _readme(report: dict[str, Any]) -> str:
    ev, pre, recipe = report["held_out"], report["pretraining"], report["recipe"]
    cells, tiles = ev["cells"], ev["tiles"]
    arch = pre["architecture"].get("constructor", {})
    train = textwrap.fill(", ".join(f"seed {s['seed']} ({s['abnormal_fraction']:.2f})" for s in recipe["train"]),
                          110, subsequent_indent="    ")
    held = ", ".join(f"seed {s['seed']} ({s['abnormal_fraction']:.2f})" for s in recipe["held_out"])

    def num(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return f"""CervixFM DEMONSTRATION MODEL - TRAINED ON SYNTHETIC DATA - NOT FOR DIAGNOSIS

What this is
  A small model built on this computer by `cervixfm demo-bundle` ({report['software']}, {report['created']}),
  so that the viewer's demo has a real model to run. It was trained only on synthetic Pap smears drawn by CervixFM's
  own generator and has never seen a real slide. Its output on real slides means nothing. Do not use it for
  diagnosis, screening, quality control, research conclusions or teaching about real cytology. For real work, use
  the published CervixFM weights in a bundle of their own (`cervixfm bundle init`).

How it was made ({report['build_seconds'] / 60:.1f} minutes{', quick test build' if report['quick'] else ''})
  Smears: {len(recipe['train'])} synthetic smears of {recipe['slide_size']} x {recipe['slide_size']} px at 0.25 um/px; seed (expected abnormal fraction):
    {train}.
  Backbone: ViT {arch.get('embed_dim')}-d, {arch.get('depth')} blocks, patch {arch.get('patch_size')}, pretrained with
    CervixFM's DINOv2 recipe (training/pretrain, 'tiny' preset{', shrunk further' if report['quick'] else ''}) \
on random tiles of those smears, no labels:
    {pre['iterations']} iterations of {pre['batch_size']} tiles ({pre['planned_iterations']} planned; \
{'stopped at the time limit' if pre['time_boxed'] else 'complete'}), {pre['seconds'] / 60:.1f} minutes.
  Heads, trained on the frozen backbone with the smears' ground truth:
    cells (cell-classifier): the six synthetic cell classes, linear probe on the cell-stage embeddings
      ({report['heads']['cells']['cells']} cells); LSIL and HSIL count as abnormal.
    tiles (tile-classifier): NILM / LSIL / HSIL, the worst Bethesda category among the ground-truth nuclei in each
      {recipe['tile_size']}-px tile at {recipe['target_mpp']} um/px ({report['heads']['tiles']['tiles']} tiles), \
linear probe.
    No slide head: an ABMIL slide classifier trained on this few smears learns to recognise each smear's stain
      rather than its lesions and scored held-out smears no better than chance, so none is shipped; the viewer's
      slide summary comes from the cell classifier (the most abnormal cells).

Held-out results (smears never used in any training step: {held})
  Cells: balanced accuracy {num(cells['balanced_accuracy'])} over the classes present (chance \
{num(cells['chance_balanced_accuracy'])}),
    AUROC abnormal (LSIL/HSIL) vs normal {num(cells['auroc_abnormal_vs_normal'])}; {cells['n']} cells, \
{cells['abnormal_cells']} abnormal.
  Tiles: balanced accuracy {num(tiles['balanced_accuracy'])} (chance {num(tiles['chance_balanced_accuracy'])}), \
AUROC abnormal vs NILM {num(tiles['auroc_abnormal_vs_normal'])}; {tiles['n']} tiles.
  These numbers describe synthetic smears like the training ones, from the same generator; they say that the
  pipeline learns, not how a model would do on real Pap smears. report.json holds the details.
"""


def _copy_backbone(staging: Path, pretrained: dict[str, Any]) -> tuple[Path, Path]:
    """The pretrained teacher and its architecture, copied in; returns the bundle's checkpoint and config paths."""
    checkpoint = staging / "backbone.pth"
    config = staging / "backbone_config.json"
    shutil.copyfile(pretrained["backbone"], checkpoint)
    shutil.copyfile(pretrained["config"], config)
    return checkpoint, config


def _manifest(staging: Path, checkpoint: Path, config: Path, heads: Sequence, recipe: DemoRecipe):
    from core.models.bundle import BundleSpec, write_bundle_manifest
    from core.models.checkpoint_io import file_sha256
    from core.models.presets import IMAGENET_MEAN, IMAGENET_STD

    spec = BundleSpec(folder=staging, name=BUNDLE_NAME, checkpoint=checkpoint, preset=None, config=config,
                      sha256=file_sha256(checkpoint), tile_size=recipe.tile_size, target_mpp=recipe.target_mpp,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, heads=tuple(heads))
    write_bundle_manifest(spec)
    return spec


# ------------------------------------------------------------------------------------------------------- build
def default_bundle_dir() -> Path:
    """Where the viewer looks for the demo bundle (``cervixfm_app.viewer.demo.demo_bundle_path``)."""
    from core.paths import data_dir

    return data_dir() / "bundles" / "demo"


def build_demo_bundle(out_dir: str | os.PathLike, *, work_dir: str | os.PathLike | None = None, quick: bool = False,
                      progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
                      force: bool = False) -> Path:
    """Build the demo bundle into ``out_dir`` and return it (see the module docstring for what it holds).

    ``progress(fraction, message)`` follows the whole build; ``cancel()`` returning True (e.g. an Event's
    ``is_set``) stops it at the next tile, iteration or stage with ``DemoBundleCancelled``. ``work_dir`` keeps the
    smears, the pretraining run and the analyses for inspection or a faster rebuild; by default they go to a
    temporary folder removed at the end. ``quick`` builds a tiny bundle in seconds (tests). ``force`` replaces an
    existing bundle at ``out_dir``; a folder holding anything else is never touched.
    """
    import torch

    from core import __version__
    from core.cells.evaluate import read_truth
    from core.io import atomic_write_text
    from core.models.bundle import HeadSpec, read_bundle_spec
    from core.pipeline.analysis_model import model_from_bundle, model_from_checkpoint

    recipe = QUICK if quick else FULL
    out_dir = Path(out_dir).expanduser().resolve()
    check_destination(out_dir, force)
    report = _Reporter(progress, cancel)
    report.check()
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    own_work = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="cervixfm-demo-bundle-")) if own_work else Path(work_dir).expanduser()
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        work.mkdir(parents=True, exist_ok=True)
        n_smears = len(recipe.train) + len(recipe.held_out)
        train_slides = _generate_smears(recipe, work / "slides" / "train", recipe.train, report, 0, n_smears)
        held_slides = _generate_smears(recipe, work / "slides" / "held_out", recipe.held_out, report,
                                       len(recipe.train), n_smears)
        pretrained = _pretrain(recipe, work / "slides" / "train", work / "pretrain", report)

        model = model_from_checkpoint(pretrained["backbone"], config=pretrained["config"], device="cpu",
                                      target_mpp=recipe.target_mpp, tile_size=recipe.tile_size)
        analysed = _analyse(model, [*train_slides, *held_slides], work / "analyses", recipe, report)
        train_results, held_results = analysed[:len(train_slides)], analysed[len(train_slides):]
        truths = [read_truth(p.with_suffix(".geojson")) for p in train_slides]
        held_truths = [read_truth(p.with_suffix(".geojson")) for p in held_slides]

        checkpoint, config = _copy_backbone(staging, pretrained)
        (staging / "heads").mkdir()
        identity = {"backbone": BUNDLE_NAME, "backbone_sha256": model.sha256}
        heads_info = {}
        with torch_threads(1):  # probe training multiplies tiny matrices
            report("heads", 0.0, "training the cell classifier")
            heads_info["cells"] = _train_cell_head(train_results, truths, staging / "heads" / "cells.safetensors",
                                                   identity)
            report("heads", 0.4, "training the tile classifier")
            heads_info["tiles"] = _train_tile_head(train_results, truths, staging / "heads" / "tiles.safetensors",
                                                   identity)
            heads = [HeadSpec("cells", "cell-classifier", staging / "heads" / "cells.safetensors"),
                     HeadSpec("tiles", "tile-classifier", staging / "heads" / "tiles.safetensors")]
            _manifest(staging, checkpoint, config, heads, recipe)
            report("heads", 0.8, "evaluating the bundle on the held-out smears")
            held_out = evaluate_bundle(model_from_bundle(staging, device="cpu"), held_results, held_truths)
        info = {
            "what": "CervixFM demonstration bundle trained on synthetic smears; not for diagnosis",
            "software": f"cervixfm {__version__}", "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%d %H:%M"), "quick": quick,
            "build_seconds": round(time.perf_counter() - started, 1), "recipe": recipe.describe(),
            "pretraining": {k: (str(v) if isinstance(v, Path) else v) for k, v in pretrained.items()
                            if k not in ("backbone", "config")},
            "heads": heads_info, "held_out": held_out,
        }
        atomic_write_text(staging / "report.json", json.dumps(info, indent=1))
        atomic_write_text(staging / "README.txt", _readme(info))
        read_bundle_spec(staging)  # the manifest, files and sizes check out before anything is moved into place
        report.check()
        _install(staging, out_dir, force)
        report("heads", 1.0, f"demo bundle written to {out_dir}", check=False)
        return out_dir
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when installed
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def read_report(folder: str | os.PathLike) -> dict[str, Any]:
    """The build report of a demo bundle (``report.json``): recipe, timings and held-out numbers."""
    path = Path(folder) / "report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CervixFMError(f"{path} cannot be read: {exc}") from exc
