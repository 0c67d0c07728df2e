"""The published optimisation: zero-initialised head, per-step cosine to 1e-6, early stopping, best weights kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.models.heads import LinearHead
from training.probe_training import ProbeOptions, cosine_steps, feature_batches, fit, train_linear_probe


def test_head_starts_at_zero():
    head = LinearHead(8, 3)
    assert torch.count_nonzero(head.classifier.weight) == 0 and torch.count_nonzero(head.classifier.bias) == 0


def test_cosine_schedule_reaches_the_floor_after_the_published_step_count():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    opts = ProbeOptions(epochs=3, patience=100, batch_size=64)
    assert cosine_steps(128, opts) == 6  # epochs * n // batch: exactly the 6 steps taken
    _, fit = train_linear_probe(x, y, 2, opts)
    assert fit.history[-1]["lr"] == pytest.approx(1e-6)
    assert fit.history[0]["lr"] < 1e-3


def test_early_stopping_and_best_epoch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    y = rng.integers(0, 3, 200)  # unlearnable beyond memorising: the loss soon stops improving
    _, fit = train_linear_probe(x, y, 3, ProbeOptions(epochs=1000, patience=5, lr=0.5))
    assert fit.stopped_early
    losses = [h["loss"] for h in fit.history]
    assert fit.best_epoch == int(np.argmin(losses)) and fit.best_loss == pytest.approx(min(losses))
    assert len(losses) == fit.best_epoch + 1 + 5


def test_returned_head_has_the_best_epochs_weights():
    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.normal(size=(100, 8)).astype(np.float32))
    y = torch.as_tensor(rng.integers(0, 2, 100))
    head = LinearHead(8, 2)
    snapshots = []  # weights at the start of each epoch = at the end of the previous one
    epoch_batches = feature_batches(x, y, 64)

    def batches(generator):
        snapshots.append(head.classifier.weight.detach().clone())
        return epoch_batches(generator)

    opts = ProbeOptions(epochs=1000, patience=3, lr=2.0)
    result = fit(head, [{"params": head.parameters()}], 100, batches, opts)
    assert result.stopped_early and result.best_epoch < result.epochs_run - 1
    torch.testing.assert_close(head.classifier.weight, snapshots[result.best_epoch + 1])
    assert not torch.equal(head.classifier.weight, snapshots[-1])
