"""Whole runs in one process: resume to the same trajectory, exports that load, the command line, k-NN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pretrain_support import tiny_config
from training.pretrain.trainer import run_pretraining

LOSSES = ("total_loss", "dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss")


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def labelled_cells(tmp_path_factory):
    """train/ + train.npy: 24 flat-colour crops of 3 classes from 8 "source images" (file-name prefixes)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("labelled")
    (root / "train").mkdir()
    rng = np.random.default_rng(0)
    colours = [(200, 60, 60), (60, 180, 60), (60, 60, 200)]
    rows = []
    for i in range(24):
        label = i % 3
        image = np.clip(np.array(colours[label]) + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
        name = f"{i // 3:03d}_{i}.png"
        Image.fromarray(image).save(root / "train" / name)
        rows.append([name, str(label)])
    np.save(root / "train.npy", np.asarray(rows, dtype=str))
    return root


@pytest.fixture(scope="module")
def uninterrupted(texture_images, labelled_cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    # with a periodic export + k-NN evaluation at iteration 2, which must not change the trajectory
    cfg = tiny_config(texture_images, out, "student.drop_path_rate=0.2", "evaluation.eval_period_iterations=2",
                      f"evaluation.knn_data={labelled_cells}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the function-scoped runs it is compared with (set by tests/training/conftest.py)
    try:
        return cfg, run_pretraining(cfg, log=_quiet, progress=False)
    finally:
        torch.set_num_threads(threads)


def test_resumed_run_repeats_the_uninterrupted_trajectory(texture_images, tmp_path, uninterrupted):
    _, full = uninterrupted
    out = tmp_path / "resumed"
    first = run_pretraining(tiny_config(texture_images, out, "student.drop_path_rate=0.2",
                                        "train.stop_at_iteration=2"), log=_quiet, progress=False)
    assert first.end_iteration == 2 and (out / "checkpoints" / "iter_0000002.pth").is_file()
    # resume with a loader worker this time: data are a function of the iteration only
    second = run_pretraining(tiny_config(texture_images, out, "student.drop_path_rate=0.2", "train.num_workers=1"),
                             log=_quiet, progress=False)
    assert second.start_iteration == 2 and second.end_iteration == 4
    assert [r["iteration"] for r in second.history] == [2, 3]
    for expected, got in zip(full.history[2:], second.history):
        for key in LOSSES:
            assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key
    a = torch.load(full.exports["backbone"], weights_only=True)
    b = torch.load(second.exports["backbone"], weights_only=True)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the metrics file holds each iteration once
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert (out / "loss_curve.png").stat().st_size > 1000 and (out / "metrics.csv").is_file()
    # with the spread of the teacher's targets beside the losses (collapse shows there)
    assert all(0 <= r["teacher_entropy"] <= np.log(256) + 1e-4 and 1 <= r["teacher_prototypes_used"] <= 256 + 1e-2
               for r in rows)


def test_periodic_exports_and_knn_evaluation(uninterrupted):
    _, full = uninterrupted
    assert [r["iteration"] for r in full.knn] == [2, 4]
    for r in full.knn:
        assert r["n_keys"] + r["n_queries"] == 24 and 0.0 <= r["knn20_balanced_accuracy"] <= 1.0
    folder = full.output_dir / "eval" / "training_2"
    assert {p.name for p in folder.iterdir()} >= {"teacher_backbone.pth", "teacher_checkpoint.pth",
                                                  "backbone_config.json", "knn.json"}
    # keys and queries come from different source images (file-name prefixes)
    assert json.loads((folder / "knn.json").read_text())["iteration"] == 2


def test_exports_load_as_cervixfm_backbones(texture_images, uninterrupted):
    from core.models import load_backbone
    from core.models.inference import embed_images
    from core.models.preprocessing import Preprocessing

    cfg, full = uninterrupted
    bare = torch.load(full.exports["backbone"], weights_only=True)
    assert "blocks.1.1.attn.qkv.weight" in bare and "mask_token" in bare  # chunked CervixFM layout
    wrapped = torch.load(full.exports["teacher"], weights_only=True)
    assert set(wrapped) == {"teacher"}
    assert {k[len("backbone."):] for k in wrapped["teacher"] if k.startswith("backbone.")} == set(bare)
    assert any(k.startswith("dino_head.") for k in wrapped["teacher"])

    checkpoint = torch.load(full.checkpoint, weights_only=True)
    teacher = {k[len("backbone."):]: v for k, v in checkpoint["teacher"].items() if k.startswith("backbone.")}
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(3)]
    features = []
    for path in (full.exports["backbone"], full.exports["teacher"]):
        loaded = load_backbone(path, config=full.exports["config"])
        assert all(torch.equal(loaded.model.state_dict()[k], teacher[k]) for k in teacher)
        features.append(embed_images(loaded.model, images, Preprocessing(size=64)))
    np.testing.assert_array_equal(features[0], features[1])


def test_cli_prints_the_merged_config_and_reports_mistakes(capsys, tmp_path):
    from cervixfm_app.cli import main

    assert main(["pretrain", "--config", "tiny", "--print-config", "optim.base_lr=0.002",
                 "--output-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "base_lr: 0.002" in text and f"output_dir: {tmp_path}" in text
    assert main(["pretrain", "--config", "tiny", "optim.base_lr=oops"]) == 2
    assert "optim.base_lr must be a number" in capsys.readouterr().err
    assert main(["pretrain", "--config", "tiny", f"train.output_dir={tmp_path}"]) == 2
    assert "train.dataset_path" in capsys.readouterr().err


def test_weighted_knn_matches_a_direct_vote():
    from training.pretrain.knn import knn_predict

    rng = np.random.default_rng(0)
    keys, labels, queries = rng.normal(size=(30, 5)), rng.integers(0, 3, 30), rng.normal(size=(7, 5))
    pred, scores = knn_predict(keys, labels, queries, k=4, temperature=0.1, num_classes=3)
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    for q in range(7):
        sims = kn @ (queries[q] / np.linalg.norm(queries[q]))
        top = np.argsort(-sims)[:4]
        votes = np.zeros(3)
        for j in top:
            votes[labels[j]] += np.exp(sims[j] / 0.1)
        np.testing.assert_allclose(scores[q], votes, rtol=1e-4)
        assert pred[q] == votes.argmax()


def test_knn_keys_and_queries_come_from_different_source_images(labelled_cells):
    from training.pretrain.knn import labelled_split, source_groups

    keys, queries = labelled_split(labelled_cells, seed=0)
    assert len(keys) + len(queries) == 24 and len(queries) > 0
    assert not set(source_groups(keys.names)) & set(source_groups(queries.names))
