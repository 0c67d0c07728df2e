"""Paths for tests that need repository files."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def random_backbone(path, preset: str = "vit-test16", seed: int = 0) -> Path:
    """A randomly initialised backbone saved as a bare state dict, with unit layer scales: DINOv2's initial 1e-5
    makes a fresh ViT's CLS token nearly independent of the image, and tests need features that depend on it."""
    import torch

    from core.models import build_vit, get_preset

    torch.manual_seed(seed)
    state = build_vit(get_preset(preset).config).state_dict()
    for key, value in state.items():
        if key.endswith(".gamma"):
            value.fill_(1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def one_torch_thread():
    """Tiny test backbones gain nothing from intra-op threads; on a busy 2-core machine extra ones only fight the
    reader threads."""
    from core.models.inference import torch_threads

    return torch_threads(1)
