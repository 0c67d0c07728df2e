"""ABMIL: learns from bags where a few tiles carry the label, attends to those tiles; CLI train/predict and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from cervixfm_app.cli import main as cervixfm
from core.metrics import binary_auroc
from core.models.heads import ABMIL, load_head, save_head
from core.pipeline.feature_file import write_features
from training.abmil import ABMILOptions, loss_weights, predict_bags, train_abmil, validation_split
from training.mil_data import Bag, BagSet

DIM = 16


def synthetic_bag(label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """20-40 noise tiles; a positive bag has 1-3 'abnormal' tiles shifted along four feature axes."""
    n = int(rng.integers(20, 41))
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    key = np.zeros(n, bool)
    if label == 1:
        key[rng.choice(n, int(rng.integers(1, 4)), replace=False)] = True
        x[key, :4] += 2.5
    return x, key


class MemoryBags(BagSet):
    def __init__(self, arrays, labels):
        super().__init__([Bag(f"s{i}", None, int(y), len(a), DIM) for i, (a, y) in enumerate(zip(arrays, labels))],
                         ["negative", "positive"])
        self.arrays = arrays

    def features(self, i):
        return self.arrays[i]


def test_abmil_learns_few_instance_bags_and_attends_to_them():
    rng = np.random.default_rng(0)
    labels = (rng.random(280) < 0.3).astype(int)  # imbalanced: about 30 % positive
    made = [synthetic_bag(y, rng) for y in labels]
    bags = MemoryBags([m[0] for m in made], labels)
    train_all, test = np.arange(200), np.arange(200, 280)
    train, val = validation_split(train_all, labels, 0.15, 0)
    opts = ABMILOptions(lr=1e-3, epochs=30, min_epochs=5, patience=8, hidden_dim=64, attn_dim=32, seed=0)
    trained = train_abmil(bags, train, val, 2, opts)
    probs, attention, _ = predict_bags(trained.model, bags, test)
    auroc = binary_auroc(labels[test] == 1, probs[:, 1])
    assert auroc >= 0.95, auroc
    top1_is_key, all_keys_first = [], []
    for a, i in zip(attention, test):
        key = made[i][1]
        assert a.shape == (len(key),) and a.sum() == pytest.approx(1, abs=1e-5)
        if labels[i] == 1:
            top1_is_key.append(key[np.argmax(a)])
            all_keys_first.append(key[np.argsort(-a)[: key.sum()]].all())
    # the most attended tile of a positive slide is an abnormal one, and usually all of them come first
    assert np.mean(top1_is_key) >= 0.95, np.mean(top1_is_key)
    assert np.mean(all_keys_first) >= 0.8, np.mean(all_keys_first)


def test_loss_weights_balance_the_classes():
    w = loss_weights(np.array([0, 0, 0, 1]), 3)
    assert w.tolist() == pytest.approx([4 / 6, 2.0, 1.0])  # n / (present classes * n_c); absent class -> 1
    assert loss_weights(np.array([0, 1]), 2, enabled=False).tolist() == [1, 1]


def test_abmil_head_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ABMIL(DIM, 3, 32, 16).eval()
    path = save_head(tmp_path / "h.safetensors", "abmil", model, model.config(), ["a", "b", "c"],
                     colors=[[255, 0, 0], [0, 255, 0], [0, 0, 255]], info={"encoder": "x"})
    head = load_head(path)
    x = torch.randn(25, DIM)
    with torch.inference_mode():
        want, got = model(x), head.module(x)
    torch.testing.assert_close(got.logits, want.logits)
    torch.testing.assert_close(got.attention, want.attention)
    assert head.kind == "abmil" and head.classes == ["a", "b", "c"] and head.colors[2] == [0, 0, 255]
    assert head.info == {"encoder": "x"}


def test_head_file_errors(tmp_path):
    from core.errors import CheckpointError
    from core.models.heads import LinearHead

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a head at all")
    with pytest.raises(CheckpointError, match="not a readable head"):
        load_head(bad)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a CervixFM head"):
        load_head(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_head(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError):
        save_head(tmp_path / "x.safetensors", "linear", LinearHead(4, 2), {"in_dim": 4, "num_classes": 2}, ["only one"])
    assert not (tmp_path / "x.safetensors").exists()


@pytest.fixture()
def slide_features(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "features"
    folder.mkdir()
    rows = []
    for i in range(36):
        label = int(i % 3 == 0)  # 12 positive, 24 negative
        x, _ = synthetic_bag(label, rng)
        coords = np.stack([np.arange(len(x)) * 224, np.zeros(len(x))], 1)
        write_features(folder / f"slide{i:02d}.h5", [(x, coords)], {"encoder": "synthetic", "patch_size": 224})
        rows.append((f"slide{i:02d}", "HSIL" if label else "NILM"))
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\n" + "".join(f"{s},{y}\n" for s, y in rows))
    return folder, labels


FAST = ["--epochs", "25", "--min-epochs", "5", "--patience", "5", "--hidden-dim", "32", "--attn-dim", "16",
        "--lr", "1e-3", "--device", "cpu"]


def test_train_and_predict_cli(slide_features, tmp_path):
    folder, labels = slide_features
    out = tmp_path / "abmil"
    assert cervixfm(["train-abmil", "--features", str(folder), "--labels", str(labels), "--out", str(out),
                     "--folds", "3", "--classes", "NILM,HSIL", *FAST]) == 0
    for name in ("cv_metrics.csv", "cv_metrics.json", "oof_predictions.csv", "metrics.json", "confusion_matrix.png",
                 "roc_curves.png", "head.safetensors", "folds/fold_0.safetensors", "folds/fold_2.safetensors",
                 "training_history.csv", "log.txt"):
        assert (out / name).is_file(), name
    with open(out / "cv_metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["fold"] for r in rows] == ["0", "1", "2", "mean", "std"]
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert sum(f["n_test"] for f in cv["folds"]) == 36 and cv["class_counts"] == [24, 12]
    assert cv["summary"]["auroc_macro"]["mean"] >= 0.8
    head = load_head(out / "head.safetensors")
    assert head.kind == "abmil" and head.classes == ["NILM", "HSIL"] and head.info["encoder"] == "synthetic"

    scores = tmp_path / "scores.csv"
    assert cervixfm(["predict-abmil", "--head", str(out / "head.safetensors"), "--features", str(folder),
                     "--out", str(scores)]) == 0
    with open(scores) as handle:
        predicted = list(csv.DictReader(handle))
    assert len(predicted) == 36 and set(predicted[0]) == {"slide_id", "n_tiles", "prediction", "prob_NILM", "prob_HSIL"}
    truth = dict(line.split(",") for line in labels.read_text().split()[1:])
    assert np.mean([p["prediction"] == truth[p["slide_id"]] for p in predicted]) >= 0.8
    with np.load(tmp_path / "scores_attention" / "slide00.attention.npz") as att:
        assert att["attention"].shape == (int(predicted[0]["n_tiles"]),) and att["coords"].shape[1] == 2
        assert att["attention"].sum() == pytest.approx(1, abs=1e-5)
    # one file works too
    single = tmp_path / "one.csv"
    assert cervixfm(["predict-abmil", "--head", str(out / "head.safetensors"), "--features",
                     str(folder / "slide03.h5"), "--out", str(single), "--attention-dir", str(tmp_path / "att")]) == 0
    assert (tmp_path / "att" / "slide03.attention.npz").is_file()


@pytest.mark.parametrize("problem", ["no-label-column", "missing-features", "unknown-class", "too-few-for-folds",
                                     "mixed-dims", "two-labels"])
def test_train_abmil_bad_input(slide_features, tmp_path, problem, capsys):
    folder, labels = slide_features
    extra = ["--classes", "NILM,HSIL"]
    if problem == "no-label-column":
        labels.write_text("slide,diagnosis\nslide00,NILM\n")
        expect = "slide_id and label"
    elif problem == "missing-features":
        labels.write_text(labels.read_text() + "ghost,NILM\n")
        expect = "no feature file"
    elif problem == "unknown-class":
        labels.write_text("slide_id,label\nslide00,NILM\nslide01,LSIL\n")
        expect = "not one of --classes"
    elif problem == "too-few-for-folds":
        extra += ["--folds", "20"]
        expect = "fewer than --folds"
    elif problem == "mixed-dims":
        write_features(folder / "slide00.h5", [(np.zeros((5, 8)), np.zeros((5, 2)))])
        expect = "different feature sizes"
    else:
        labels.write_text(labels.read_text() + "slide00,NILM\n")  # slide00 is HSIL above
        expect = "two labels"
    capsys.readouterr()
    out = tmp_path / "out"
    code = cervixfm(["train-abmil", "--features", str(folder), "--labels", str(labels), "--out", str(out),
                     *extra, *FAST])
    err = capsys.readouterr().err
    assert code == 2 and expect in err, err
    assert not out.exists()


def test_predict_refuses_features_of_another_size(slide_features, tmp_path, capsys):
    folder, _ = slide_features
    model = ABMIL(DIM + 1, 2, 8, 4)
    head = save_head(tmp_path / "h.safetensors", "abmil", model, model.config(), ["NILM", "HSIL"])
    out = tmp_path / "scores.csv"
    assert cervixfm(["predict-abmil", "--head", str(head), "--features", str(folder), "--out", str(out)]) == 2
    assert "expects 17-d" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "scores_attention").exists()
