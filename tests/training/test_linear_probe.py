"""Linear probe end to end on tiny data: outputs, cache reuse and refusal, test mode, fine-tuning, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cervixfm_app.cli import main as cervixfm
from core.models.heads import load_head
from tests_support import REPO_ROOT

FAST = ["--epochs", "60", "--device", "cpu", "--embed-batch-size", "8"]


def _probe(data, out, backbone, *extra):
    return cervixfm(["linear-probe", "--data_path", str(data), "--save_path", str(out), "--pretrained_path",
                     str(backbone), "--num_class", "3", *FAST, *extra])


def test_frozen_probe_writes_every_output_and_learns(train_test_dataset, tiny_backbone, tmp_path):
    out = tmp_path / "run"
    assert _probe(train_test_dataset, out, tiny_backbone, "--ViT_freeze", "--seed", "42") == 0
    for name in ("metrics.json", "metrics.csv", "confusion_matrix.png", "confusion_matrix.csv", "roc_curves.png",
                 "roc_curves.csv", "predictions.csv", "training_history.csv", "head.safetensors", "log.txt",
                 "features/train.features.npz", "features/test.features.npz"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 26 and metrics["n_test"] == 12 and metrics["mode"] == "frozen"
    assert metrics["balanced_accuracy"] >= 0.9 and metrics["auroc_macro"] >= 0.95
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    head = load_head(out / "head.safetensors")
    assert head.kind == "linear" and head.classes == ["0", "1", "2"] and head.config == {"in_dim": 64, "num_classes": 3}
    assert head.info["backbone"]["checkpoint_sha256"]
    assert not [p for p in out.rglob("*.tmp")]


def test_test_mode_reuses_the_head_and_the_cache(train_test_dataset, tiny_backbone, tmp_path):
    out = tmp_path / "run"
    assert _probe(train_test_dataset, out, tiny_backbone) == 0
    first = json.loads((out / "metrics.json").read_text())
    cache = out / "features" / "test.features.npz"
    stamp = cache.stat().st_mtime_ns
    evaluation = tmp_path / "eval"
    assert _probe(train_test_dataset, evaluation, tiny_backbone, "--test-only", "--model_path",
                  str(out / "head.safetensors"), "--feature_path", str(out / "features")) == 0
    again = json.loads((evaluation / "metrics.json").read_text())
    assert again["mode"] == "test-only"
    assert again["balanced_accuracy"] == pytest.approx(first["balanced_accuracy"])
    assert again["auroc_macro"] == pytest.approx(first["auroc_macro"])
    assert cache.stat().st_mtime_ns == stamp  # read, not recomputed


def test_cache_from_another_backbone_is_refused_then_overwritten(train_test_dataset, tiny_backbone, other_backbone,
                                                                 tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _probe(train_test_dataset, tmp_path / "a", tiny_backbone, "--feature_path", str(cache)) == 0
    before = (cache / "train.features.npz").read_bytes()
    capsys.readouterr()
    assert _probe(train_test_dataset, tmp_path / "b", other_backbone, "--feature_path", str(cache)) == 2
    err = capsys.readouterr().err
    assert "different backbone" in err and "--overwrite-cache" in err
    assert (cache / "train.features.npz").read_bytes() == before
    assert not (tmp_path / "b" / "metrics.json").exists()
    assert _probe(train_test_dataset, tmp_path / "b", other_backbone, "--feature_path", str(cache),
                  "--overwrite-cache") == 0
    assert (cache / "train.features.npz").read_bytes() != before


def test_single_folder_layout_and_label_efficiency(single_folder_dataset, tiny_backbone, tmp_path):
    out = tmp_path / "run"
    assert _probe(single_folder_dataset, out, tiny_backbone, "--seed", "7", "--label_efficiency", "0.5",
                  "--class-names", "red,green,blue") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # 80/20 per class of 10/10/5 -> train 8/8/4, test 2/2/1; half of each training class: 4/4/2
    assert metrics["layout"] == "single-folder" and metrics["n_test"] == 5
    assert metrics["train_class_counts"] == [4, 4, 2]
    assert metrics["classes"] == ["red", "green", "blue"]
    assert (out / "features" / "data.features.npz").is_file()


def test_finetune_mode_trains_the_backbone(train_test_dataset, tiny_backbone, tmp_path):
    out = tmp_path / "ft"
    assert _probe(train_test_dataset, out, tiny_backbone, "--finetune", "--epochs", "3", "--batch_size", "16") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "finetune" and metrics["epochs_run"] == 3
    import torch

    from core.models.checkpoint_io import read_weights_file

    tuned = read_weights_file(out / "backbone_finetuned.safetensors")
    original = torch.load(tiny_backbone, weights_only=True)
    assert any(not torch.equal(tuned[k], original[k]) for k in original if k != "mask_token")
    head = load_head(out / "head.safetensors")
    assert head.info["mode"] == "finetune"
    # the fine-tuned pair evaluates in test mode
    evaluation = tmp_path / "eval"
    assert cervixfm(["linear-probe", "--data_path", str(train_test_dataset), "--save_path", str(evaluation),
                     "--pretrained_path", str(out / "backbone_finetuned.safetensors"), "--num_class", "3",
                     "--head", str(out / "head.safetensors"), *FAST]) == 0
    assert json.loads((evaluation / "metrics.json").read_text())["balanced_accuracy"] == pytest.approx(
        metrics["balanced_accuracy"])


@pytest.mark.parametrize("problem", ["wrong-shape", "label-out-of-range", "missing-image", "not-integer",
                                     "no-layout", "head-wrong-backbone"])
def test_bad_input_fails_clearly_and_writes_nothing(train_test_dataset, tiny_backbone, other_backbone, tmp_path,
                                                    problem, capsys):
    data = train_test_dataset
    extra = []
    if problem == "wrong-shape":
        np.save(data / "train.npy", np.asarray([["a.png", "0", "x"]], dtype=str))
        expect = "shape"
    elif problem == "label-out-of-range":
        table = np.load(data / "train.npy")
        table[3, 1] = "3"
        np.save(data / "train.npy", table)
        expect = "outside 0..2"
    elif problem == "missing-image":
        table = np.load(data / "test.npy")
        (data / "test" / table[0, 0]).unlink()
        expect = "missing"
    elif problem == "not-integer":
        table = np.load(data / "train.npy")
        table[0, 1] = "HSIL"
        np.save(data / "train.npy", table)
        expect = "integer"
    elif problem == "no-layout":
        data = tmp_path / "empty"
        data.mkdir()
        expect = "not a data set folder"
    else:
        trained = tmp_path / "trained"
        assert _probe(data, trained, tiny_backbone) == 0
        extra = ["--head", str(trained / "head.safetensors")]
        expect = "another backbone"
    capsys.readouterr()
    out = tmp_path / "out"
    code = _probe(data, out, other_backbone if problem == "head-wrong-backbone" else tiny_backbone, *extra)
    err = capsys.readouterr().err
    assert code == 2 and expect in err, err
    assert not (out / "metrics.json").exists() and not (out / "head.safetensors").exists()


def test_python_module_entry_point_accepts_published_flags(train_test_dataset, tiny_backbone, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    out = tmp_path / "published"
    result = subprocess.run(
        [sys.executable, "-m", "training.linear_probe", "--model", "ViT_classifier", "--data_path",
         str(train_test_dataset), "--feature_path", str(tmp_path / "feat"), "--save_path", str(out),
         "--pretrained_path", str(tiny_backbone), "--num_class", "3", "--ViT_freeze", "--label_efficiency", "0.5",
         "--seed", "42", "--device", "0", "--epochs", "20"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_class_counts"] == [6, 4, 3]


def test_input_size_is_recorded_and_a_head_is_evaluated_at_its_own_size(train_test_dataset, tiny_backbone, tmp_path,
                                                                        capsys):
    """``--size`` feeds the backbone smaller crops (as for a backbone pretrained at 112 px); the head records the
    size, and evaluating it at another size is refused with the size to pass."""
    out = tmp_path / "run"
    assert _probe(train_test_dataset, out, tiny_backbone, "--size", "112") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"]["preprocessing"]["size"] == 112
    head = str(out / "head.safetensors")
    assert _probe(train_test_dataset, tmp_path / "eval224", tiny_backbone, "--test-only", "--model_path", head) == 2
    assert "Pass --size 112" in capsys.readouterr().err
    assert not (tmp_path / "eval224" / "metrics.json").exists()
    assert _probe(train_test_dataset, tmp_path / "eval112", tiny_backbone, "--test-only", "--model_path", head,
                  "--size", "112", "--feature_path", str(out / "features")) == 0
    again = json.loads((tmp_path / "eval112" / "metrics.json").read_text())
    assert again["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
    assert _probe(train_test_dataset, tmp_path / "bad", tiny_backbone, "--size", "120") == 2
    assert "patch size" in capsys.readouterr().err
