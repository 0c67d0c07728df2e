"""torchrun with 2 CPU processes (gloo): DDP and FSDP follow the 1-process trajectory with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from pretrain_support import TINY, tiny_config
from tests_support import REPO_ROOT
from training.pretrain.trainer import run_pretraining

LOSSES = ("total_loss", "dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss")
TARGETS = ("teacher_entropy", "teacher_prototypes_used")  # over the global batch too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data, out, *extra):
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "training.pretrain", "--config", "tiny", "--quiet", *TINY,
            f"train.dataset_path={data}", f"train.output_dir={out}", "train.batch_size_per_gpu=2", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_ddp_and_fsdp_match_one_process_with_the_same_global_batch(texture_images, tmp_path):
    single = run_pretraining(tiny_config(texture_images, tmp_path / "one", "train.batch_size_per_gpu=4"),
                             log=lambda m: None, progress=False)
    assert len(single.history) == 4
    runs = {}
    for mode in ("ddp", "fsdp"):
        runs[mode] = _torchrun(texture_images, tmp_path / mode, f"train.parallel={mode}")
        assert [r["iteration"] for r in runs[mode]] == [0, 1, 2, 3]
        for expected, got in zip(single.history, runs[mode]):
            assert got["lr"] == pytest.approx(expected["lr"])  # the lr is scaled by the global batch
            for key in LOSSES + TARGETS:
                assert got[key] == pytest.approx(expected[key], rel=2e-5, abs=1e-6), (mode, expected["iteration"], key)
    one = torch.load(single.exports["backbone"], weights_only=True)
    for mode in ("ddp", "fsdp"):
        other = torch.load(tmp_path / mode / "teacher_backbone.pth", weights_only=True)
        assert other.keys() == one.keys()
        assert all(other[k].shape == one[k].shape for k in one)
        assert max((other[k] - one[k]).abs().max().item() for k in one) < 1e-4
        wrapped = torch.load(tmp_path / mode / "teacher_checkpoint.pth", weights_only=True)["teacher"]
        assert wrapped.keys() == torch.load(single.exports["teacher"], weights_only=True)["teacher"].keys()
