"""Each loss against a direct computation (float64 numpy loops over the definitions), on small tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.pretrain.losses import DINOLoss, KoLeoLoss, iBOTPatchLoss, sinkhorn_knopp, target_statistics


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def ce(p, s_logits, temp):
    """sum_k p_k * -log softmax(s / temp)_k for one row."""
    return -float(np.sum(p * log_softmax(s_logits / temp)))


def test_dino_loss_sums_batch_mean_cross_entropies_over_pairs():
    rng = np.random.default_rng(0)
    b, k, temp_t = 5, 7, 0.04
    students = [rng.normal(size=(b, k)) for _ in range(3)]
    teacher_logits = rng.normal(size=(2 * b, k))
    center = rng.normal(size=(1, k)) * 0.1
    loss = DINOLoss(k)
    loss.center.copy_(torch.tensor(center, dtype=torch.float32))
    targets = loss.softmax_center_teacher(torch.tensor(teacher_logits, dtype=torch.float32), temp_t)
    got = loss([torch.tensor(s, dtype=torch.float32) for s in students], list(targets.view(2, b, k)))

    probs = softmax((teacher_logits - center) / temp_t)
    expected = 0.0
    for s in students:
        for t in (probs[:b], probs[b:]):
            expected += np.mean([ce(t[i], s[i], 0.1) for i in range(b)])
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_center_is_an_ema_of_the_batch_mean_applied_after_the_targets():
    rng = np.random.default_rng(1)
    k = 6
    loss = DINOLoss(k)
    first, second = rng.normal(size=(8, k)), rng.normal(size=(8, k))
    loss.update_center(torch.tensor(first, dtype=torch.float32))
    expected = 0.1 * first.mean(0)
    np.testing.assert_allclose(loss.center.numpy()[0], expected, rtol=1e-5, atol=1e-7)
    targets = loss.softmax_center_teacher(torch.tensor(second, dtype=torch.float32), 0.07).numpy()
    np.testing.assert_allclose(targets, softmax((second - expected) / 0.07), rtol=1e-4, atol=1e-6)
    loss.update_center(torch.tensor(second, dtype=torch.float32))
    np.testing.assert_allclose(loss.center.numpy()[0], 0.9 * expected + 0.1 * second.mean(0), rtol=1e-5, atol=1e-7)


def sinkhorn_reference(logits: np.ndarray, temp: float, iterations: int = 3) -> np.ndarray:
    q = np.exp(logits / temp).T  # (K, B)
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True) / k  # every prototype gets mass 1/K
        q = q / q.sum(axis=0, keepdims=True) / b  # every sample gets mass 1/B
    return (q * b).T


def test_sinkhorn_knopp_balances_prototypes_and_normalises_samples():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(12, 5)) * 0.05  # cosine-like scores
    got = sinkhorn_knopp(torch.tensor(logits, dtype=torch.float32), 0.07).numpy()
    np.testing.assert_allclose(got, sinkhorn_reference(logits, 0.07), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)  # each sample's assignment is a distribution
    # prototypes are close to equally used (exactly after infinitely many iterations)
    assert np.abs(got.sum(axis=0) - 12 / 5).max() < 0.05 * 12 / 5


def test_ibot_loss_weights_each_image_by_its_masked_count():
    rng = np.random.default_rng(3)
    n_images, n_patches, k = 4, 6, 5
    masks = np.zeros((n_images, n_patches), bool)
    masks[0, [1, 2, 3]] = True
    masks[2, [0]] = True
    masks[3, [2, 5]] = True  # image 1 is not masked
    m = int(masks.sum())
    student, teacher_logits = rng.normal(size=(m, k)), rng.normal(size=(m, k))
    probs = softmax(teacher_logits / 0.05)
    weights = (1.0 / masks.sum(1).clip(min=1))[:, None].repeat(n_patches, 1)[masks]
    loss = iBOTPatchLoss(k)
    got = loss(torch.tensor(student, dtype=torch.float32), torch.tensor(probs, dtype=torch.float32),
               torch.tensor(weights, dtype=torch.float32), n_images=n_images)

    expected, row = 0.0, 0
    for i in range(n_images):
        idx = np.flatnonzero(masks[i])
        per_image = [ce(probs[row + j], student[row + j], 0.1) for j in range(len(idx))]
        row += len(idx)
        if per_image:
            expected += np.mean(per_image)
    assert got.item() == pytest.approx(expected / n_images, rel=1e-5)


def test_koleo_is_minus_mean_log_nearest_neighbour_distance():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 4))
    got = KoLeoLoss(global_batch=False)(torch.tensor(x, dtype=torch.float32)).item()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    nearest = []
    for i in range(len(unit)):
        nearest.append(min(np.linalg.norm(unit[i] - unit[j]) for j in range(len(unit)) if j != i))
    assert got == pytest.approx(-np.mean(np.log(np.array(nearest) + 1e-8)), rel=1e-5)


def test_koleo_stays_in_float32_under_autocast_and_resolves_nearly_identical_vectors():
    # A fresh ViT's CLS tokens differ by ~1e-6: the nearest neighbour must come from real distances.
    base = torch.randn(1, 16)
    x = base + 1e-6 * torch.arange(6, dtype=torch.float32).view(-1, 1) * torch.randn(1, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = KoLeoLoss(global_batch=False)(x)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    unit = torch.nn.functional.normalize(x.double(), dim=1)
    d = torch.cdist(unit, unit)
    d.fill_diagonal_(float("inf"))
    expected = -torch.log(d.min(dim=1).values + 1e-8).mean()
    assert value.item() == pytest.approx(expected.item(), rel=0.05)


@pytest.mark.parametrize("case", ["one prototype for all", "uniform", "one prototype each", "random"])
def test_target_statistics_tell_the_two_collapses_from_healthy_targets(case):
    k, b = 16, 8
    rng = np.random.default_rng(0)
    if case == "one prototype for all":
        p = np.zeros((2, b, k)); p[..., 3] = 1.0
    elif case == "uniform":
        p = np.full((2, b, k), 1.0 / k)
    elif case == "one prototype each":
        p = np.zeros((2, b, k)); p[:, np.arange(b), np.arange(b)] = 1.0
    else:
        p = softmax(rng.normal(size=(2, b, k)) * 3)
    got = target_statistics(torch.tensor(p, dtype=torch.float32))
    rows = p.reshape(-1, k)
    entropy = np.mean([-sum(q * np.log(q) for q in row if q > 0) for row in rows])
    marginal = rows.mean(axis=0)
    used = np.exp(-sum(q * np.log(q) for q in marginal if q > 0))
    assert got["teacher_entropy"].item() == pytest.approx(entropy, abs=1e-5)
    assert got["teacher_prototypes_used"].item() == pytest.approx(used, rel=1e-5)
    expected = {"one prototype for all": (0.0, 1.0), "uniform": (np.log(k), k), "one prototype each": (0.0, b)}
    if case in expected:
        assert (got["teacher_entropy"].item(), got["teacher_prototypes_used"].item()) == pytest.approx(
            expected[case], abs=1e-4)
