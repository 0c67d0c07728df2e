"""Multi-crop augmentation: geometry, the colour operations against their definitions, determinism by seed."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from training.pretrain.augment import (MultiCropAugmentation, adjust_contrast, adjust_hue, adjust_saturation,
                                       gaussian_blur, grayscale, hsv_to_rgb, random_resized_crop_box, rgb_to_hsv,
                                       solarize)


def test_random_resized_crop_boxes_cover_the_requested_area_share():
    rng = np.random.default_rng(0)
    for _ in range(300):
        top, left, h, w = random_resized_crop_box(224, 224, (0.05, 0.32), rng)
        assert 0 <= top and top + h <= 224 and 0 <= left and left + w <= 224
        share = h * w / 224**2
        assert 0.04 <= share <= 0.34  # rounding of the sides
        assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1


def test_hsv_round_trip_and_hue_rotation_match_colorsys():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.random((3, 5, 7)), dtype=torch.float32)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    shifted = adjust_hue(x, 0.2).numpy()
    for i in range(5):
        for j in range(7):
            h, s, v = colorsys.rgb_to_hsv(*x[:, i, j].tolist())
            expected = colorsys.hsv_to_rgb((h + 0.2) % 1.0, s, v)
            np.testing.assert_allclose(shifted[:, i, j], expected, atol=1e-5)


def test_contrast_saturation_grayscale_solarize_blur_follow_their_definitions():
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.random((3, 6, 6)), dtype=torch.float32)
    gray = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    torch.testing.assert_close(grayscale(x)[0], gray)
    torch.testing.assert_close(adjust_contrast(x, 1.3), (1.3 * x + (1 - 1.3) * gray.mean()).clamp(0, 1))
    torch.testing.assert_close(adjust_saturation(x, 0.7), (0.7 * x + 0.3 * gray).clamp(0, 1))
    sol = solarize(x).numpy()
    np.testing.assert_allclose(sol, np.where(x.numpy() * 255 >= 128, 1 - x.numpy(), x.numpy()), atol=1e-6)
    flat = torch.full((3, 12, 12), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)  # a normalised kernel keeps flat images flat
    noisy = torch.tensor(rng.random((3, 32, 32)), dtype=torch.float32)
    assert gaussian_blur(noisy, 2.0).std() < 0.5 * noisy.std()


def test_multicrop_output_shapes_normalisation_and_determinism():
    aug = MultiCropAugmentation(global_crops_size=64, local_crops_size=32, local_crops_number=3)
    image = np.random.default_rng(3).integers(0, 255, (90, 80, 3), dtype=np.uint8)
    a = aug(image, np.random.default_rng(7))
    b = aug(image, np.random.default_rng(7))
    c = aug(image, np.random.default_rng(8))
    assert [t.shape for t in a["global_crops"]] == [(3, 64, 64)] * 2
    assert [t.shape for t in a["local_crops"]] == [(3, 32, 32)] * 3
    for x, y in zip(a["global_crops"] + a["local_crops"], b["global_crops"] + b["local_crops"]):
        assert torch.equal(x, y)
    assert not torch.equal(a["global_crops"][0], c["global_crops"][0])
    lo = (0 - np.array(aug.mean)) / np.array(aug.std)
    hi = (1 - np.array(aug.mean)) / np.array(aug.std)
    for t in a["global_crops"]:
        for ch in range(3):
            assert lo[ch] - 1e-5 <= t[ch].min() and t[ch].max() <= hi[ch] + 1e-5


def test_reference_probabilities_blur_always_on_global_one_and_solarize_only_on_global_two():
    # A flat grey image: blur and jitter cannot change it much, solarise inverts it exactly (0.7 -> 0.3).
    image = np.full((64, 64, 3), int(0.7 * 255), np.uint8)
    aug = MultiCropAugmentation(global_crops_size=32, local_crops_size=16, local_crops_number=2, jitter_p=0.0,
                                grayscale_p=0.0)
    solarised = {0: 0, 1: 0}
    for seed in range(400):
        out = aug(image, np.random.default_rng(seed))
        for k in (0, 1):
            value = out["global_crops"][k][0].mean().item() * aug.std[0] + aug.mean[0]
            solarised[k] += value < 0.5
    assert solarised[0] == 0
    assert solarised[1] / 400 == pytest.approx(0.2, abs=0.06)
