"""The photometric augmentations as settings: DINOv2's values by default, changeable by file or override, checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.errors import ConfigError
from training.pretrain.augment import ColorJitter, MultiCropAugmentation
from training.pretrain.config import Config, load_config


def test_the_reference_settings_build_dinov2s_augmentation():
    built = MultiCropAugmentation.from_config(load_config().crops)
    assert built == MultiCropAugmentation()
    assert (built.jitter_p, built.grayscale_p, built.blur_p, built.solarize_p) == (0.8, 0.2, (1.0, 0.1, 0.5), 0.2)
    assert built.jitter == ColorJitter(0.4, 0.4, 0.2, 0.1)


def test_a_config_without_the_photometric_keys_keeps_dinov2s_values():
    crops = Config({k: v for k, v in load_config().crops.items()
                    if k not in ("color_jitter_prob", "color_jitter", "grayscale_prob", "blur_prob", "solarize_prob")})
    assert MultiCropAugmentation.from_config(crops) == MultiCropAugmentation()


def test_overrides_change_what_the_crops_go_through():
    cfg = load_config("tiny", ["crops.color_jitter=[0.3, 0.3, 0.1, 0]", "crops.grayscale_prob=0",
                               "crops.solarize_prob=0", "crops.blur_prob=[0.2, 0.1, 0.1]", "crops.color_jitter_prob=1"])
    built = MultiCropAugmentation.from_config(cfg.crops)
    assert built.jitter == ColorJitter(0.3, 0.3, 0.1, 0.0)
    assert (built.jitter_p, built.grayscale_p, built.blur_p, built.solarize_p) == (1.0, 0.0, (0.2, 0.1, 0.1), 0.0)


def test_without_photometric_augmentation_a_crop_keeps_its_colours():
    """All photometric probabilities 0: a global crop is the resized image region, only normalised."""
    cfg = load_config("tiny", ["crops.color_jitter_prob=0", "crops.grayscale_prob=0", "crops.solarize_prob=0",
                               "crops.blur_prob=[0, 0, 0]", "crops.global_crops_scale=[1, 1]",
                               "crops.local_crops_number=0"])
    augmentation = dataclasses.replace(MultiCropAugmentation.from_config(cfg.crops), flip_p=0.0)
    image = np.zeros((112, 112, 3), np.uint8)
    image[..., 0], image[..., 2] = 200, 60  # a pink-magenta field, as eosinophilic cytoplasm
    crop = augmentation(image, np.random.default_rng(0))["global_crops"][0]
    mean = np.array(augmentation.mean).reshape(3, 1, 1)
    std = np.array(augmentation.std).reshape(3, 1, 1)
    restored = crop.numpy() * std + mean
    assert np.allclose(restored[:, 8:-8, 8:-8], (image[8:-8, 8:-8] / 255.0).transpose(2, 0, 1), atol=2e-3)


@pytest.mark.parametrize("override, message", [
    ("crops.grayscale_prob=1.5", "grayscale_prob"),
    ("crops.solarize_prob=-0.1", "solarize_prob"),
    ("crops.blur_prob=[0.5, 0.5]", "blur_prob"),
    ("crops.color_jitter=[0.4, 0.4, 0.2, 0.7]", "color_jitter"),
    ("crops.color_jitter=[0.4, -0.4, 0.2, 0.1]", "color_jitter"),
])
def test_bad_augmentation_settings_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_quarter_turns_show_a_cell_in_every_orientation():
    """With ``quarter_turns`` a whole-image crop is the image turned by 0, 90, 180 or 270 degrees (then maybe
    flipped): all eight orientations of the square occur; without it only the upright image and its mirror."""
    overrides = ["crops.color_jitter_prob=0", "crops.grayscale_prob=0", "crops.solarize_prob=0",
                 "crops.blur_prob=[0, 0, 0]", "crops.global_crops_scale=[1, 1]", "crops.local_crops_number=0",
                 "crops.global_crops_size=32"]
    image = np.zeros((32, 32, 3), np.uint8)
    image[2:12, 4:8] = 255  # a bar near one corner: every orientation looks different
    orientations = [np.rot90(image, k) for k in range(4)]
    orientations += [o[:, ::-1] for o in orientations]

    def seen(extra):
        augmentation = MultiCropAugmentation.from_config(load_config("tiny", overrides + extra).crops)
        assert augmentation.quarter_turns == (extra == ["crops.quarter_turns=true"])
        found = set()
        for seed in range(64):
            crop = augmentation(image, np.random.default_rng(seed))["global_crops"][0].numpy()
            bright = crop[0] > 0  # normalised: > 0 where the bar is
            matches = [i for i, o in enumerate(orientations) if np.array_equal(bright, o[..., 0] > 0)]
            assert len(matches) == 1
            found.add(matches[0])
        return found

    assert seen([]) == {0, 4}
    assert seen(["crops.quarter_turns=true"]) == set(range(8))
