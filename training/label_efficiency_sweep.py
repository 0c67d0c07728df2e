"""Label-efficiency sweep: one frozen-feature linear probe per (ratio, seed), summarised as mean ± std per ratio.

Features are extracted once (the same caches as the linear probe) and every run samples its training rows with the
published rule (``label_efficiency``). For the single-folder layout the 80/20 split is itself seeded, so each seed
gets its own split, as running the published script with that seed would. Standard deviations are over seeds
(population std, ``ddof=0``); runs whose ratio leaves no training row are recorded with empty metrics.

Outputs in ``--save_path``: ``label_efficiency.csv`` (every run), ``label_efficiency_summary.csv`` (per ratio),
``label_efficiency.json``, ``label_efficiency.png`` and ``log.txt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CervixFMError

from .cli_args import add_sweep_arguments, run_module_cli
from .datasets import LabelledImages, detect_layout, load_dataset, load_table
from .label_efficiency import check_ratio, label_efficiency_indices, split_train_test
from .reporting import SCALAR_METRICS, RunLog, plot_mean_std, write_csv, write_json

PLOTTED = {"balanced_accuracy": "balanced accuracy", "f1_macro": "F1 macro", "auroc_macro": "AUROC macro"}


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise CervixFMError(f"--ratios must be numbers separated by commas, not {text!r}.") from exc
    if not ratios:
        raise CervixFMError("--ratios is empty.")
    return sorted({check_ratio(r) for r in ratios})


def parse_seeds(text: str) -> list[int | None]:
    seeds: list[int | None] = []
    for value in (v.strip() for v in text.split(",") if v.strip()):
        if value.lower() == "none":
            seeds.append(None)
            continue
        try:
            seeds.append(int(value))
        except ValueError as exc:
            raise CervixFMError(f"--seeds must be integers (or 'none') separated by commas, not {text!r}.") from exc
    if not seeds:
        raise CervixFMError("--seeds is empty.")
    return list(dict.fromkeys(seeds))


def summarise(rows: list[dict[str, Any]], ratios: list[float]) -> list[dict[str, Any]]:
    summary = []
    for ratio in ratios:
        runs = [r for r in rows if r["ratio"] == ratio]
        entry: dict[str, Any] = {"ratio": ratio, "runs": len(runs),
                                 "n_train_mean": float(np.mean([r["n_train"] for r in runs]))}
        for key in SCALAR_METRICS:
            values = np.array([np.nan if r.get(key) is None else r[key] for r in runs], dtype=float)
            finite = values[np.isfinite(values)]
            entry[f"{key}_mean"] = float(finite.mean()) if len(finite) else float("nan")
            entry[f"{key}_std"] = float(finite.std()) if len(finite) else float("nan")
        summary.append(entry)
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.metrics import classification_metrics

    from .feature_cache import backbone_identity
    from .linear_probe import (check_num_classes, class_names, frozen_features, load_backbone_from_args,
                               probe_options, resolve_device)
    from .probe_training import predict_probabilities, train_linear_probe

    log = RunLog()
    num_classes = check_num_classes(args.num_class)
    names = class_names(args, num_classes)
    ratios = parse_ratios(args.ratios)
    seeds = parse_seeds(args.seeds)
    data_path = Path(args.data_path)
    if not data_path.is_dir():
        raise CervixFMError(f"Data set folder {data_path} does not exist.")
    layout = detect_layout(data_path)
    if layout == "single-folder":
        everything = load_table(data_path / "data", data_path / "data_label.npy", num_classes,
                                args.trust_pickled_labels)
        image_sets = [everything]
    else:
        fixed = load_dataset(data_path, num_classes, None, args.trust_pickled_labels)
        if len(fixed.test) == 0:
            raise CervixFMError(f"The test split of {data_path} is empty.")
        image_sets = [fixed.train, fixed.test]
    device = resolve_device(args.device)
    opts = probe_options(args, device)
    loaded = load_backbone_from_args(args, device)
    log(f"backbone: {loaded.summary()}")
    out = Path(args.save_path)
    out.mkdir(parents=True, exist_ok=True)
    identity = backbone_identity(loaded)
    feature_dir = Path(args.feature_path) if args.feature_path else out / "features"
    features = frozen_features(image_sets, loaded, identity, feature_dir, args, device, log)

    def split_for(seed: int | None) -> tuple[LabelledImages, np.ndarray, LabelledImages, np.ndarray]:
        if layout == "single-folder":
            train_idx, test_idx = split_train_test(everything.raw_labels, seed)
            return (everything.subset(train_idx), features[0][train_idx], everything.subset(test_idx),
                    features[0][test_idx])
        return image_sets[0], features[0], image_sets[1], features[1]

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        train, train_x, test, test_x = split_for(seed)
        for ratio in ratios:
            idx = label_efficiency_indices(train.raw_labels, ratio, seed)
            row: dict[str, Any] = {"ratio": ratio, "seed": seed, "n_train": int(len(idx)),
                                   "train_class_counts": train.subset(idx).class_counts(num_classes)}
            if len(idx) == 0:
                log(f"ratio {ratio}, seed {seed}: no training rows (every class has fewer than 1/ratio rows)")
                rows.append(row)
                continue
            opts.seed = seed if seed is not None else 0
            head, fit = train_linear_probe(train_x[idx], train.labels[idx], num_classes, opts)
            metrics = classification_metrics(test.labels, predict_probabilities(head, test_x), num_classes)
            row.update({k: metrics[k] for k in SCALAR_METRICS}, epochs_run=fit.epochs_run, n_test=len(test))
            rows.append(row)
            log(f"ratio {ratio}, seed {seed}: {len(idx)} training rows, balanced accuracy "
                f"{metrics['balanced_accuracy']:.4f}, F1 macro {metrics['f1_macro']:.4f}, "
                f"AUROC macro {metrics['auroc_macro']:.4f}")
    summary = summarise(rows, ratios)
    columns = ["ratio", "seed", "n_train", "n_test", "epochs_run", *SCALAR_METRICS]
    write_csv(out / "label_efficiency.csv", columns, [[r.get(c) for c in columns] for r in rows])
    summary_columns = ["ratio", "runs", "n_train_mean"] + [f"{k}_{s}" for k in SCALAR_METRICS for s in ("mean", "std")]
    write_csv(out / "label_efficiency_summary.csv", summary_columns, [[s[c] for c in summary_columns] for s in summary])
    write_json(out / "label_efficiency.json", {"classes": names, "layout": layout, "backbone": identity,
                                               "ratios": ratios, "seeds": seeds, "runs": rows, "summary": summary})
    plot_mean_std(out / "label_efficiency.png", ratios,
                  {label: ([s[f"{k}_mean"] for s in summary], [s[f"{k}_std"] for s in summary])
                   for k, label in PLOTTED.items()},
                  xlabel="share of training labels per class", title=f"Label efficiency ({len(seeds)} seed(s))",
                  log_x=min(ratios) > 0 and max(ratios) / min(ratios) >= 20)
    log(f"wrote {len(rows)} runs to {out / 'label_efficiency.csv'} and the plot {out / 'label_efficiency.png'}")
    log.save(out / "log.txt")
    return {"runs": rows, "summary": summary}


def handle(args: argparse.Namespace) -> int:
    run(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_module_cli("python -m training.label_efficiency_sweep", "Linear-probe label-efficiency sweep.",
                          add_sweep_arguments, handle, argv)


if __name__ == "__main__":
    sys.exit(main())
