"""Where CervixFM keeps user files: the default weights location, caches (demo slide), sidecars.

``CervixFM.pth`` is looked for at ``$CERVIXFM_CHECKPOINT`` if set, else ``<data dir>/models/CervixFM.pth`` with the
data dir ``$CERVIXFM_HOME`` or ``$XDG_DATA_HOME/cervixfm`` (``~/.local/share/cervixfm``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError


def data_dir() -> Path:
    if os.environ.get("CERVIXFM_HOME"):
        return Path(os.environ["CERVIXFM_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "cervixfm"


def cache_dir() -> Path:
    if os.environ.get("CERVIXFM_HOME"):
        return Path(os.environ["CERVIXFM_HOME"]).expanduser() / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cervixfm"


def default_checkpoint_path() -> Path:
    env = os.environ.get("CERVIXFM_CHECKPOINT")
    return Path(env).expanduser() if env else data_dir() / "models" / "CervixFM.pth"


def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """The checkpoint the user gave, else the default location; a clear error when there is none."""
    if path:
        return Path(path).expanduser()
    default = default_checkpoint_path()
    if default.is_file():
        return default
    raise CheckpointError(
        f"No checkpoint given and none at the default location {default}. Pass --checkpoint PATH, or copy "
        "CervixFM.pth there (or set CERVIXFM_CHECKPOINT)."
    )
