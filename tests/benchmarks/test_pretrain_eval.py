"""The statistics behind "pretraining learns": source-disjoint repeated splits, paired differences, the read-outs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain_eval.py"


@pytest.fixture(scope="module")
def pretrain_eval():
    spec = importlib.util.spec_from_file_location("pretrain_eval_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grouped_labels(n_groups=20, per_group=6, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    labels = rng.integers(0, 3, size=len(groups))
    return labels, groups


def test_splits_keep_source_images_apart_and_every_crop_is_a_query_once_per_repeat(pretrain_eval):
    labels, groups = _grouped_labels()
    splits = pretrain_eval.grouped_splits(labels, groups, folds=5, repeats=3)
    assert len(splits) == 15
    for repeat in range(3):
        queried = np.concatenate([q for _, q in splits[5 * repeat:5 * repeat + 5]])
        assert np.array_equal(np.sort(queried), np.arange(len(labels)))
    for keys, queries in splits:
        assert not set(groups[keys]) & set(groups[queries])
    # shuffled differently: the repeats are not the same partition
    assert any(not np.array_equal(np.sort(a[1]), np.sort(b[1])) for a, b in zip(splits[:5], splits[5:10]))


def test_one_fold_per_group_is_not_repeated(pretrain_eval):
    labels, groups = _grouped_labels(n_groups=4)
    assert len(pretrain_eval.grouped_splits(labels, groups, folds=4, repeats=5)) == 4


def test_paired_difference_counts_wins_and_summarises_each_repeat(pretrain_eval):
    ours = np.array([0.8, 0.7, 0.6, 0.9, 0.5, 0.6])
    theirs = np.array([0.7, 0.7, 0.7, 0.6, 0.5, 0.4])
    d = pretrain_eval.paired_difference(ours, theirs, folds_per_repeat=3)
    assert d["wins"] == 3 and d["ties"] == 2 and d["losses"] == 1 and d["n"] == 6
    assert d["mean"] == pytest.approx(np.mean(ours - theirs))
    assert d["min"] == pytest.approx(-0.1) and d["max"] == pytest.approx(0.3)
    assert d["repeat_mean_min"] == pytest.approx(0.0) and d["repeat_mean_max"] == pytest.approx(0.5 / 3)


def test_read_outs_separate_informative_features_from_noise(pretrain_eval):
    rng = np.random.default_rng(1)
    labels, groups = _grouped_labels(n_groups=30, per_group=8)
    centres = rng.normal(size=(3, 16)) * 3
    informative = (centres[labels] + rng.normal(size=(len(labels), 16))).astype(np.float32)
    noise = rng.normal(size=(len(labels), 16)).astype(np.float32)
    splits = pretrain_eval.grouped_splits(labels, groups, folds=5, repeats=2)
    good = pretrain_eval.score_features(informative, labels, splits)
    bad = pretrain_eval.score_features(noise, labels, splits)
    assert set(good) == set(pretrain_eval.METRICS)
    for metric in pretrain_eval.METRICS:
        assert good[metric].shape == (len(splits),)
        assert good[metric].mean() > 0.9 and bad[metric].mean() < 0.5
    compared = pretrain_eval.compare_scores({pretrain_eval.PRETRAINED: good, "random init, layer scale 1": bad,
                                             "random init, layer scale 1e-05": bad}, folds_per_repeat=5)
    assert compared["against"]["random init, layer scale 1"]["knn_accuracy"]["wins"] == len(splits)
    assert compared["best_random"]["knn_accuracy"].startswith("random init")


def test_random_init_rows_rebuild_the_runs_iteration_0(pretrain_eval):
    import torch

    from training.pretrain import load_config
    from training.pretrain.meta_arch import SSLMetaArch

    cfg = load_config("tiny", ["student.depth=1", "student.embed_dim=48", "student.num_heads=2",
                               "student.block_chunks=0", "student.layerscale=1.0", "dino.head_n_prototypes=16",
                               "train.dataset_path=unused"])
    start = SSLMetaArch(cfg, torch.device("cpu"), seed=0).student["backbone"].state_dict()
    rebuilt = pretrain_eval.random_init_backbone(cfg, 1.0).state_dict()
    assert all(torch.equal(start[k], rebuilt[k]) for k in start)
    other = pretrain_eval.random_init_backbone(cfg, 1e-5).state_dict()
    gammas = [k for k in other if k.endswith("gamma")]
    assert gammas and all(torch.allclose(other[k], torch.full_like(other[k], 1e-5)) for k in gammas)
    assert cfg.student.layerscale == 1.0  # the run's settings are left as they were
    assert pretrain_eval.random_init_name(cfg, 1.0).endswith("(this run's iteration 0)")
    assert not pretrain_eval.random_init_name(cfg, 1e-5).endswith(")")


def _module(name):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", SCRIPT.with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replicate_runs_are_summarised_against_each_runs_better_random_init():
    seeds = _module("pretrain_seeds")

    def result(pretrained, random_a, random_b, best):
        rows = {"pretrained teacher": {m: pretrained for m in seeds.METRICS},
                "a": {m: random_a for m in seeds.METRICS}, "b": {m: random_b for m in seeds.METRICS}}
        against = {name: {m: {"mean": pretrained - rows[name][m], "wins": 20, "losses": 3, "n": 25}
                          for m in seeds.METRICS} for name in ("a", "b")}
        return {"sections": {"112px": {"rows": rows, "paired": {"against": against,
                                                                 "best_random": {m: best for m in seeds.METRICS}}}}}

    gains = seeds.run_gains(result(0.74, 0.69, 0.70, "b"), 112)["knn_accuracy"]
    assert gains["gain"] == pytest.approx(0.04) and gains["random"] == 0.70 and gains["wins"] == 20

    summary = seeds.across_runs([0.05, 0.03, 0.03, 0.04])
    assert summary["mean"] == pytest.approx(0.0375) and summary["positive"] == 4 and summary["runs"] == 4
    assert summary["p_greater"] < 0.01
    assert seeds.across_runs([0.05, -0.05])["p_greater"] == pytest.approx(0.5)
    assert "p_greater" not in seeds.across_runs([0.02])
