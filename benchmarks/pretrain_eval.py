"""Does pretraining learn? The pretrained teacher's features against the same ViT randomly initialised, judged on
paired, source-image-disjoint splits.

Two experiments, each one command:

``cells``: DINOv2 pretraining (``--config tiny`` by default; ``--config small_data`` is the recipe tuned for this
data set, see ``training/pretrain/resources/configs/pretrain_small_data.yaml``) on the 469 real cell crops of
``../shared/data/cdetector_portion/train`` (no labels used), then an evaluation on their 4 classes.

``synthetic``: a few 4096 x 4096 synthetic Pap smears (``core.synthetic``), pretraining on random 224-px tiles at
0.5 µm/px from their cell-bearing area (``train.dataset_path`` = the slides), then the same evaluation on crops
centred on every ground-truth cell (224 px at 0.5 µm/px, read with ``slide.read_scaled``), classes = the ground-truth
cell classes, keys and queries from different slides.

Evaluation. Features: the normed CLS token at the training resolution (the global crop size; crops resized to it),
and at 224 px (the position table interpolated, as ``cervixfm embed`` uses a backbone). Splits: keys and queries come
from disjoint *source images* (file-name prefix): ``StratifiedGroupKFold`` with 5 folds, shuffled with seeds
0..``--repeats``-1, every crop a query once per repeat (repeat 0 is the single 5-fold split used before repeats were
added). Two read-outs per split, neither tuned on the queries: DINO's weighted 20-NN (cosine, votes exp(sim / 0.07))
and a linear probe (standardised features, L2 logistic regression, C = 1, class-balanced weights). Compared on the
*same* splits: the exported teacher, two random initialisations of the same architecture with the run's seed (layer
scale 1e-5, DINOv2's, whose CLS tokens are nearly constant, and layer scale 1, whose are not), and colour histograms.
Reported: mean ± std over all splits, and the paired per-split difference (pretrained minus baseline, same keys and
queries) as mean ± std, range and the number of splits it wins, against each baseline; per metric, the better random
initialisation is the one to beat. Splits of different repeats share crops, so they are not independent samples:
read the spread, not a p-value.

Usage (``cells --config small_data``: 150 iterations, about 5 minutes of training and 5 of evaluation on the shared
2-core machine; ``--config tiny``: 450 iterations, 20-50 minutes; run them in the background)::

    nice .venv/bin/python benchmarks/pretrain_eval.py cells --config small_data --out /tmp/pretrain_cells_small \\
        --docs-image
    nice .venv/bin/python benchmarks/pretrain_eval.py synthetic --out /tmp/pretrain_synthetic

Replicates (``train.seed=N``, one run folder each) are summarised by ``benchmarks/pretrain_seeds.py``: one run's
splits share one pretraining, so whether the gain holds for another seed needs other runs.

Extra ``key=value`` arguments override the pretraining settings; ``--skip-train`` re-evaluates an existing run (with
the settings it was trained with, read from its ``config.yaml``). Teachers exported along the run (set
``evaluation.eval_period_iterations``) are evaluated too, giving the accuracy-against-iteration curve.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SHARED = Path(os.environ.get("CERVIXFM_SHARED", REPO.parent / "shared"))
CELLS = SHARED / "data" / "cdetector_portion"
DOCS_IMAGE = REPO / "docs" / "images" / "pretrain_loss.png"
K = 20
KNN_TEMPERATURE = 0.07
PROBE_C = 1.0
EMBED_SIZE = 224  # the resolution cervixfm embed feeds a backbone
METRICS = ("knn_accuracy", "knn_balanced_accuracy", "probe_accuracy", "probe_balanced_accuracy")
METRIC_TITLES = {"knn_accuracy": "20-NN acc.", "knn_balanced_accuracy": "20-NN bal. acc.",
                 "probe_accuracy": "probe acc.", "probe_balanced_accuracy": "probe bal. acc."}
PRETRAINED = "pretrained teacher"
COLOUR = "colour histograms"
RANDOM_LAYERSCALES = (1e-5, 1.0)


# ------------------------------------------------------------------------------------------------- features
def embed(model, images: list[np.ndarray], size: int) -> np.ndarray:
    from core.models.inference import embed_images
    from core.models.preprocessing import Preprocessing

    model.eval()
    return embed_images(model, images, Preprocessing(size=size), batch_size=64)


def colour_histograms(images: list[np.ndarray], bins: int = 32) -> np.ndarray:
    from PIL import Image

    rows = []
    for img in images:
        hsv = np.asarray(Image.fromarray(img).convert("HSV"))
        parts = [np.histogram(ch, bins=bins, range=(0, 256))[0] for ch in (*img.transpose(2, 0, 1), *hsv.transpose(2, 0, 1))]
        h = np.concatenate(parts).astype(np.float64)
        rows.append(np.sqrt(h / h.sum()))
    return np.asarray(rows, np.float32)


def random_init_backbone(cfg, layerscale: float):
    """The student backbone exactly as a run with ``cfg`` (and this layer scale) starts it: same seed, same order of
    random draws, so with the run's own layer scale it is the teacher's iteration 0."""
    import torch

    from training.pretrain.meta_arch import SSLMetaArch

    changed = copy.deepcopy(cfg)
    changed.student.layerscale = float(layerscale)
    return SSLMetaArch(changed, torch.device("cpu"), seed=int(cfg.train.seed)).student["backbone"]


def random_init_name(cfg, layerscale: float) -> str:
    own = abs(float(cfg.student.layerscale) - layerscale) <= 1e-12 * max(1.0, layerscale)
    return f"random init, layer scale {layerscale:g}" + (" (this run's iteration 0)" if own else "")


# ------------------------------------------------------------------------------------------ splits and read-outs
def grouped_splits(labels: np.ndarray, groups: np.ndarray, folds: int = 5, repeats: int = 5
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(key indices, query indices) of every fold of ``repeats`` differently shuffled stratified group k-folds.

    One fold per group (leave one group out) has a single partition, so it is not repeated."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        raise ValueError("source-disjoint splits need crops from at least two source images")
    folds = min(folds, n_groups)
    repeats = 1 if folds == n_groups else max(1, repeats)
    splits = []
    for seed in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits += [(keys, queries) for keys, queries in splitter.split(np.zeros(len(labels)), labels, groups)]
    return splits


def knn_scores(features: np.ndarray, labels: np.ndarray, splits, k: int = K) -> dict[str, np.ndarray]:
    from core.metrics import balanced_accuracy, top1_accuracy
    from training.pretrain.knn import knn_predict

    n_classes = int(labels.max() + 1)
    acc, bal = [], []
    for keys, queries in splits:
        pred, _ = knn_predict(features[keys], labels[keys], features[queries], k, KNN_TEMPERATURE, n_classes)
        acc.append(top1_accuracy(labels[queries], pred))
        bal.append(balanced_accuracy(labels[queries], pred))
    return {"knn_accuracy": np.array(acc), "knn_balanced_accuracy": np.array(bal)}


def linear_probe_scores(features: np.ndarray, labels: np.ndarray, splits, c: float = PROBE_C) -> dict[str, np.ndarray]:
    """A class-balanced logistic regression on standardised features, fitted on the keys of each split. One fixed
    C for every feature set: choosing it on the queries would flatter whichever features are compared."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from core.metrics import balanced_accuracy, top1_accuracy

    features = np.asarray(features, np.float64)
    acc, bal = [], []
    for keys, queries in splits:
        scaler = StandardScaler().fit(features[keys])
        probe = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(scaler.transform(features[keys]), labels[keys])
        pred = probe.predict(scaler.transform(features[queries]))
        acc.append(top1_accuracy(labels[queries], pred))
        bal.append(balanced_accuracy(labels[queries], pred))
    return {"probe_accuracy": np.array(acc), "probe_balanced_accuracy": np.array(bal)}


def score_features(features: np.ndarray, labels: np.ndarray, splits) -> dict[str, np.ndarray]:
    return {**knn_scores(features, labels, splits), **linear_probe_scores(features, labels, splits)}


def summarise(scores: dict[str, np.ndarray]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, values in scores.items():
        out[key] = float(np.mean(values))
        out[key + "_std"] = float(np.std(values))
    return out


def paired_difference(ours: np.ndarray, theirs: np.ndarray, folds_per_repeat: int) -> dict[str, float]:
    """Per-split differences (same keys, same queries): their mean, std, range, how many splits ours wins, ties and
    loses, and the range of the per-repeat means (each a complete cross-validation)."""
    d = np.asarray(ours, float) - np.asarray(theirs, float)
    per_repeat = d.reshape(-1, folds_per_repeat).mean(axis=1) if len(d) % folds_per_repeat == 0 else d[None].mean(1)
    return {"mean": float(d.mean()), "std": float(d.std()), "min": float(d.min()), "max": float(d.max()),
            "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((d < 0).sum()), "n": int(len(d)),
            "repeat_mean_min": float(per_repeat.min()), "repeat_mean_max": float(per_repeat.max())}


def compare_scores(scores: dict[str, dict[str, np.ndarray]], folds_per_repeat: int) -> dict:
    """Paired differences of the pretrained teacher against every other row, and which random init is the best
    baseline for each metric (the one the teacher must beat)."""
    randoms = [name for name in scores if name.startswith("random init")]
    out: dict = {"against": {}, "best_random": {}}
    for name in scores:
        if name == PRETRAINED:
            continue
        out["against"][name] = {m: paired_difference(scores[PRETRAINED][m], scores[name][m], folds_per_repeat)
                                for m in METRICS}
    for m in METRICS:
        out["best_random"][m] = max(randoms, key=lambda name: float(np.mean(scores[name][m]))) if randoms else None
    return out


# ----------------------------------------------------------------------------------------------- comparison
def load_teacher(folder: Path):
    from core.models import load_backbone

    return load_backbone(folder / "teacher_backbone.pth", config=folder / "backbone_config.json").model


def exported_along_the_run(run: Path) -> list[tuple[int, Path]]:
    """(iteration, folder) of the teachers exported during training (``evaluation.eval_period_iterations``)."""
    found = []
    for folder in (run / "eval").glob("training_*"):
        suffix = folder.name.split("_", 1)[1]
        if suffix.isdigit() and (folder / "teacher_backbone.pth").is_file():
            found.append((int(suffix), folder))
    return sorted(found)


def final_iteration(run: Path) -> int | None:
    rows = read_metrics(run)
    return int(rows[-1]["iteration"]) + 1 if rows else None


def compare(cfg, run: Path, images: list[np.ndarray], labels: np.ndarray, groups: np.ndarray, folds: int,
            repeats: int, also_embed_size: bool = True, log=print) -> dict:
    size = int(cfg.crops.global_crops_size)
    splits = grouped_splits(labels, groups, folds, repeats)
    folds_per_repeat = min(folds, len(set(groups.tolist())))
    teacher = load_teacher(run)
    models = {PRETRAINED: teacher}
    for ls in sorted({*RANDOM_LAYERSCALES, float(cfg.student.layerscale)}):
        models[random_init_name(cfg, ls)] = random_init_backbone(cfg, ls)
    resolutions = [size] + ([EMBED_SIZE] if size != EMBED_SIZE and also_embed_size else [])
    log(f"{len(splits)} splits ({len(splits) // folds_per_repeat} x {folds_per_repeat} folds); embedding "
        f"{len(images)} crops with {len(models)} models at {' and '.join(f'{r} px' for r in resolutions)}")

    sections = {}
    for res in resolutions:
        scores = {name: score_features(embed(model, images, res), labels, splits) for name, model in models.items()}
        if res == size:
            scores[COLOUR] = score_features(colour_histograms(images), labels, splits)
        sections[f"{res}px"] = {"size": res, "rows": {n: summarise(s) for n, s in scores.items()},
                                "paired": compare_scores(scores, folds_per_repeat),
                                "per_split": {n: {m: v.tolist() for m, v in s.items()} for n, s in scores.items()}}

    curve = []
    own_start = next(name for name in models if name.endswith("iteration 0)"))
    curve.append({"iteration": 0, **sections[f"{size}px"]["rows"][own_start]})
    for iteration, folder in exported_along_the_run(run):
        curve.append({"iteration": iteration,
                      **summarise(score_features(embed(load_teacher(folder), images, size), labels, splits))})
    end = final_iteration(run)
    if end is not None and all(row["iteration"] != end for row in curve):
        curve.append({"iteration": end, **sections[f"{size}px"]["rows"][PRETRAINED]})

    counts = np.bincount(labels)
    return {"sections": sections, "curve": curve, "training_size": size,
            "majority_class_accuracy": float(counts.max() / len(labels)), "n_images": len(images),
            "class_counts": counts.tolist(), "n_groups": len(set(groups.tolist())), "n_splits": len(splits),
            "folds": folds_per_repeat, "repeats": len(splits) // folds_per_repeat,
            "probe": {"C": PROBE_C, "class_weight": "balanced", "standardised": True}, "k": K,
            "knn_temperature": KNN_TEMPERATURE}


# --------------------------------------------------------------------------------------------------- report
def _pm(row: dict, metric: str) -> str:
    return f"{row[metric]:.3f} ± {row[metric + '_std']:.3f}"


def _signed(d: dict) -> str:
    return (f"{d['mean']:+.3f} ± {d['std']:.3f} [{d['min']:+.3f}, {d['max']:+.3f}] won {d['wins']}, tied {d['ties']}, "
            f"lost {d['losses']} of {d['n']}; repeats {d['repeat_mean_min']:+.3f}..{d['repeat_mean_max']:+.3f}")


def print_table(title: str, result: dict) -> None:
    print(f"\n{title}: {result['n_images']} crops, classes {result['class_counts']}, {result['n_groups']} source "
          f"groups; {result['n_splits']} source-disjoint splits ({result['repeats']} x {result['folds']} folds); "
          f"majority-class accuracy {result['majority_class_accuracy']:.3f}, balanced 0.250 for 4 classes")
    for key, section in result["sections"].items():
        print(f"\nnormed CLS at {section['size']} px" +
              (" (training resolution)" if section["size"] == result["training_size"] else ""))
        print(f"{'features':52s}" + "".join(f"{METRIC_TITLES[m]:>17s}" for m in METRICS))
        for name, row in section["rows"].items():
            print(f"{name:52s}" + "".join(f"{_pm(row, m):>17s}" for m in METRICS))
        paired = section["paired"]
        print("paired differences, pretrained minus ... (same splits): mean ± std [min, max], splits won / tied / "
              "lost, range of the per-repeat means")
        for name, diffs in paired["against"].items():
            print(f"  {name}")
            for m in METRICS:
                best = " (best random baseline)" if paired["best_random"][m] == name else ""
                print(f"    {METRIC_TITLES[m]:16s} {_signed(diffs[m])}{best}")
    if len(result["curve"]) > 1:
        print(f"\nalong the run (teacher at {result['training_size']} px, mean over the same splits)")
        print(f"{'iteration':>10s}" + "".join(f"{METRIC_TITLES[m]:>17s}" for m in METRICS))
        for row in result["curve"]:
            print(f"{row['iteration']:10d}" + "".join(f"{_pm(row, m):>17s}" for m in METRICS))
    if "pretrain" in result:
        p = result["pretrain"]
        print(f"\npretraining wall time {p['wall_seconds'] / 60:.1f} min; own CPU {p['own_cpu_seconds'] / 60:.1f} min; "
              f"load average median {p['load_median']:.2f} (max {p['load_max']:.2f}) over {p['load_samples']} "
              f"samples; other processes took {p['other_cpu_share']:.0%} of the machine's CPU time")


# --------------------------------------------------------------------------------------------- loss figure
def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in rows if isinstance(r, dict) and "iteration" in r]


def plot_run(path: Path, run: Path, result: dict, title: str, prototypes: int) -> Path | None:
    """Losses against the iteration (left) and the teacher's 20-NN and linear-probe scores along the run against
    the best random initialisation (middle, right): the loss alone does not say whether the features improve.

    The DINO loss is drawn per (student crop, teacher crop) pair, where log K marks targets that say nothing; the
    dotted line, the prototypes the teacher's targets spread over, tells a loss near 0 from one prototype for all."""
    import math

    from matplotlib.figure import Figure

    from training.reporting import _save_figure

    rows = read_metrics(run)
    if not rows:
        return None
    its = [r["iteration"] for r in rows]
    fig = Figure(figsize=(13, 3.7))
    ax = fig.add_subplot(1, 3, 1)
    dino = [r.get("dino_local_crops_loss", 0.0) + r.get("dino_global_crops_loss", 0.0) for r in rows]
    ax.plot(its, [r["total_loss"] for r in rows], lw=2.0, color="tab:blue", label="total loss")
    ax.plot(its, dino, lw=1.0, color="tab:orange", label="DINO cross-entropy per crop pair")
    for key, colour in (("koleo_loss", "tab:red"), ("ibot_loss", "tab:green")):
        values = [r.get(key) for r in rows]
        if any(v is not None and math.isfinite(v) for v in values):
            ax.plot(its, [math.nan if v is None else v for v in values], lw=1.0, color=colour,
                    label=key.replace("_", " ").replace("koleo", "KoLeo").replace("ibot", "iBOT"))
    ax.axhline(math.log(prototypes), color="0.4", ls="--", lw=1, label=f"log K (K = {prototypes}): uniform targets")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    top = max([math.log(prototypes)] + [r["total_loss"] for r in rows if math.isfinite(r["total_loss"])])
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]), top=top * 1.45)  # room for the legend above the curves
    ax.legend(fontsize=7, loc="upper right", ncol=2, framealpha=0.8)
    used = [r.get("teacher_prototypes_used") for r in rows]
    if any(v is not None for v in used):  # runs logged before this statistic existed have none
        twin = ax.twinx()
        twin.plot(its, [math.nan if v is None else v for v in used], lw=1.0, ls=":", color="tab:green")
        twin.set_yscale("log")
        twin.set_ylim(0.8, prototypes * 1.25)
        twin.set_ylabel("teacher prototypes in use (dotted)", color="tab:green", fontsize=8)

    curve = result["curve"]
    x = [r["iteration"] for r in curve]
    section = result["sections"][f"{result['training_size']}px"]
    for index, (read_out, metrics) in enumerate((("20-NN", ("knn_accuracy", "knn_balanced_accuracy")),
                                                 ("linear probe", ("probe_accuracy", "probe_balanced_accuracy")))):
        axis = fig.add_subplot(1, 3, 2 + index)
        for metric, colour in zip(metrics, ("tab:blue", "tab:purple")):
            y = np.array([r[metric] for r in curve])
            s = np.array([r[metric + "_std"] for r in curve])
            name = "accuracy" if "balanced" not in metric else "balanced accuracy"
            axis.plot(x, y, "o-", color=colour, label=f"pretrained teacher, {name}")
            axis.fill_between(x, y - s, y + s, color=colour, alpha=0.12, lw=0)
            best = section["paired"]["best_random"][metric]
            if best is not None:
                axis.axhline(section["rows"][best][metric], color=colour, ls="--", lw=1,
                             label=f"best random init, {name}")
        axis.axhline(result["majority_class_accuracy"], color="0.5", ls=":", lw=1, label="majority class, accuracy")
        axis.axhline(1.0 / len(result["class_counts"]), color="0.7", ls=":", lw=1, label="chance, balanced")
        axis.set_xlabel("iteration")
        axis.set_ylabel("mean ± std over splits")
        axis.set_title(f"{read_out}, normed CLS at {result['training_size']} px, {result['n_splits']} source-disjoint "
                       "splits", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6.5, loc="center right")
    fig.tight_layout()
    return _save_figure(fig, path)


# ---------------------------------------------------------------------------------------- training and load
class LoadSampler:
    """The machine's load while a run trains: load average every ``period`` seconds, and the CPU time every other
    process (and the hypervisor, as steal) took, from ``/proc/stat``; on a shared machine wall times need this."""

    def __init__(self, period: float = 15.0):
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu_times() -> tuple[float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK"), time.monotonic()

    @staticmethod
    def _own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._start_cpu, self._start_own, self._start = self._cpu_times(), self._own_cpu(), time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self._start
        self.own = self._own_cpu() - self._start_own
        end = self._cpu_times()
        other = 0.0
        if end is not None and self._start_cpu is not None:
            capacity = (end[1] - self._start_cpu[1]) * (os.cpu_count() or 1)
            other = max(0.0, (end[0] - self._start_cpu[0]) - self.own) / capacity if capacity > 0 else 0.0
        self.other_share = other

    def report(self) -> dict:
        samples = self.samples or [os.getloadavg()[0]]
        return {"wall_seconds": self.wall, "own_cpu_seconds": self.own, "load_median": statistics.median(samples),
                "load_max": max(samples), "load_samples": len(self.samples), "other_cpu_share": self.other_share,
                "cpus": os.cpu_count()}


def pretrain(cfg, skip: bool) -> dict | None:
    """Train (unless ``skip`` and the run has its teacher); the wall time and load, kept beside the run so a
    re-evaluation still reports them."""
    from training.pretrain import run_pretraining
    from training.reporting import write_json

    run = Path(str(cfg.train.output_dir))
    record = run / "pretrain_time.json"
    if skip and (run / "teacher_backbone.pth").is_file():
        return json.loads(record.read_text()) if record.is_file() else None
    with LoadSampler() as sampler:
        run_pretraining(cfg, progress=True)
    report = sampler.report()
    write_json(record, report)
    return report


def load_run_config(name: str, run: Path, fixed: list[str], overrides: list[str], skip: bool):
    """The settings of the run: with ``--skip-train`` the ones it was trained with (its ``config.yaml``)."""
    from training.pretrain import load_config

    saved = run / "config.yaml"
    if skip and saved.is_file():
        if overrides:
            print(f"--skip-train: ignoring {' '.join(overrides)}; the run's own settings ({saved}) apply")
        return load_config(saved, [f"train.output_dir={run}"])
    return load_config(name, fixed + overrides)


def command_line() -> str:
    return "benchmarks/pretrain_eval.py " + " ".join(sys.argv[1:])


# ------------------------------------------------------------------------------------------------ experiments
def cells(args) -> dict:
    from core.images import read_rgb
    from training.datasets import read_label_table

    run = Path(args.out)
    cfg = load_run_config(args.config, run, [f"train.dataset_path={CELLS / 'train'}", f"train.output_dir={run}"],
                          args.overrides, args.skip_train)
    timing = pretrain(cfg, args.skip_train)
    names, _, labels = read_label_table(CELLS / "train.npy", num_classes=4)
    images = [read_rgb(CELLS / "train" / n) for n in names]
    groups = np.array([n.split("_", 1)[0] for n in names])
    result = compare(cfg, run, images, labels, groups, args.folds, args.repeats, not args.only_training_size)
    if timing:
        result["pretrain"] = timing
    print_table("cdetector_portion", result)
    figure = plot_run(run / "pretrain_eval.png", run, result, f"DINOv2 pretraining on {len(images)} cell crops",
                      int(cfg.dino.head_n_prototypes))
    if args.docs_image and figure is not None:
        DOCS_IMAGE.write_bytes(figure.read_bytes())
        print(f"loss and accuracy curves copied to {DOCS_IMAGE} ({DOCS_IMAGE.stat().st_size // 1024} KB)")
    return result


def synthetic(args) -> dict:
    from shapely.geometry import shape

    from core.slides import open_slide
    from core.synthetic import CLASS_NAMES, generate_slide

    out = Path(args.out)
    slides_dir = out / "slides"
    slides_dir.mkdir(parents=True, exist_ok=True)
    infos = []
    for seed in range(args.slides):
        path = slides_dir / f"synthetic_{seed}.tiff"
        if not path.is_file():
            generate_slide(path, 4096, 4096, seed=seed, abnormal_fraction=0.3)
        infos.append(path)
    cfg = load_run_config(args.config, out / "run", [f"train.dataset_path={slides_dir}",
                                                     f"train.output_dir={out / 'run'}",
                                                     "evaluation.eval_period_iterations=0", "optim.epochs=10"],
                          args.overrides, args.skip_train)
    timing = pretrain(cfg, args.skip_train)
    tile, mpp = int(cfg.train.slide_tile_size), float(cfg.train.slide_tile_mpp)
    images, labels, groups = [], [], []
    for k, path in enumerate(infos):
        features = json.loads(path.with_suffix(".geojson").read_text())["features"]
        with open_slide(path) as slide:
            w0, h0 = tile * mpp / slide.mpp[0], tile * mpp / slide.mpp[1]
            for f in features:
                cx, cy = shape(f["geometry"]).centroid.coords[0]
                images.append(slide.read_scaled(cx - w0 / 2, cy - h0 / 2, w0, h0, tile, tile))
                labels.append(CLASS_NAMES.index(f["properties"]["classification"]["name"]))
                groups.append(k)
    result = compare(cfg, out / "run", images, np.array(labels), np.array(groups), args.slides, 1,
                     not args.only_training_size)
    if timing:
        result["pretrain"] = timing
    result["classes"] = list(CLASS_NAMES)
    print_table("synthetic slides (ground-truth cell classes)", result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("cells", "synthetic"))
    parser.add_argument("--out", required=True, help="run folder (checkpoints, exports, metrics)")
    parser.add_argument("--config", default="tiny", help="pretraining config: a built-in name or a YAML file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--slides", type=int, default=6, help="synthetic slides to generate")
    parser.add_argument("--folds", type=int, default=5, help="source-disjoint folds per repeat (cells)")
    parser.add_argument("--repeats", type=int, default=5, help="differently shuffled k-folds (cells)")
    parser.add_argument("--only-training-size", action="store_true",
                        help=f"skip the evaluation at {EMBED_SIZE} px (faster; for choosing settings)")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the existing run in --out")
    parser.add_argument("--docs-image", action="store_true",
                        help=f"copy the loss and accuracy curves to {DOCS_IMAGE.relative_to(REPO)}")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_intermixed_args()  # KEY=VALUE may follow options
    import torch

    torch.set_num_threads(args.threads)
    print(f"command: {command_line()}", flush=True)
    result = cells(args) if args.experiment == "cells" else synthetic(args)
    from training.reporting import write_json

    result["command"] = command_line()
    target = (Path(args.out) / "eval.json") if args.experiment == "cells" else (Path(args.out) / "run" / "eval.json")
    write_json(target, result)
    print(f"results in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
