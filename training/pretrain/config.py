"""Pretraining settings: DINOv2's YAML structure, its defaults, and ``key=value`` overrides from the command line.

A run's settings are the reference file (``resources/configs/pretrain_default.yaml``), then the user's file merged
over it, then dotted overrides (``optim.base_lr=0.001 crops.local_crops_number=4``). Only keys that exist in the
reference are accepted, so a typo stops the run with the nearest valid names instead of being silently ignored.
Values are parsed as YAML and converted to the type of the reference value (an int where a float is expected, a
number written ``1e-3`` that YAML 1.1 reads as text).
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from core.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "resources" / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "pretrain_default.yaml"
NAMED_CONFIGS = {"default": DEFAULT_CONFIG, "tiny": CONFIG_DIR / "pretrain_tiny.yaml",
                 "small_data": CONFIG_DIR / "pretrain_small_data.yaml"}
PRECISIONS = ("fp16", "bf16", "fp32")
MODULES = ("backbone", "dino_head", "ibot_head")
TEXT_OR_LIST = {"train.dataset_path"}  # settings that take one path or a list of paths


class Config(dict):
    """A nested dict whose keys read as attributes (``cfg.optim.base_lr``), as DINOv2's OmegaConf configs do."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


def _wrap(data: Any) -> Any:
    if isinstance(data, Mapping):
        return Config({k: _wrap(v) for k, v in data.items()})
    return data


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"Pretraining config {path} does not exist (built-in ones: {', '.join(NAMED_CONFIGS)}).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"Pretraining config {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"Pretraining config {path} must hold a mapping of settings, not {type(data).__name__}.")
    return dict(data)


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A built-in config name (``default``, ``tiny``, ``small_data``) or a file path."""
    text = str(name_or_path)
    if text in NAMED_CONFIGS:
        return NAMED_CONFIGS[text]
    return Path(text)


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _all_keys(tree: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        out.append(prefix + key)
        if isinstance(value, Mapping):
            out += _all_keys(value, f"{prefix}{key}.")
    return out


def _coerce(value: Any, reference: Any, key: str) -> Any:
    """``value`` converted to the type of the reference setting, or a ConfigError naming the key."""
    if reference is None or value is None:
        return value
    if isinstance(reference, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key} must be true or false, not {value!r}.")
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value.lower() for c in ".en") else int(value)
            except ValueError:
                raise ConfigError(f"{key} must be a number, not {value!r}.") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, not {value!r}.")
        if isinstance(reference, int) and not isinstance(reference, bool):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, float):
                raise ConfigError(f"{key} must be a whole number, not {value!r}.")
            return value
        return float(value)
    if isinstance(reference, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list such as {reference!r}, not {value!r}.")
        if reference and len(value) == len(reference):
            return [_coerce(v, r, key) for v, r in zip(value, reference)]
        return list(value)
    if isinstance(reference, str):
        if key in TEXT_OR_LIST and isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        if isinstance(value, (Mapping, list)):
            raise ConfigError(f"{key} must be text, not {value!r}.")
        return str(value)
    return value


def _merge(base: dict, update: Mapping, source: str, prefix: str = "") -> None:
    for key, value in update.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: setting names must be text, not {key!r}.")
        full = prefix + key
        if key not in base:
            raise ConfigError(f"{source}: unknown setting {full!r}.{_suggest(key, base.keys())}")
        if isinstance(base[key], Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {full} is a group of settings ({', '.join(base[key])}), not a value.")
            _merge(base[key], value, source, full + ".")
        else:
            base[key] = _coerce(value, base[key], full)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.base_lr=1e-3"`` -> (["optim", "base_lr"], "1e-3" parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} is not key=value (for example optim.base_lr=0.001).")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Override {text!r} has an empty setting name.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> None:
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = cfg
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, Mapping) or part not in node:
                where = ".".join(parts[:depth + 1])
                raise ConfigError(f"Unknown setting {where!r} in override {text!r}."
                                  f"{_suggest('.'.join(parts), _all_keys(cfg))}")
            node = node[part]
        last = parts[-1]
        if not isinstance(node, Mapping) or last not in node:
            raise ConfigError(f"Unknown setting {'.'.join(parts)!r} in override {text!r}."
                              f"{_suggest('.'.join(parts), _all_keys(cfg))}")
        if isinstance(node[last], Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{'.'.join(parts)} is a group of settings; override one of its keys "
                                  f"({', '.join('.'.join(parts) + '.' + k for k in node[last])}).")
            _merge(node[last], value, f"override {text!r}", ".".join(parts) + ".")
        else:
            node[last] = _coerce(value, node[last], ".".join(parts))


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                updates: Mapping | None = None) -> Config:
    """The reference settings, then ``path`` (a file or a built-in name) merged over them, then ``updates`` (a
    nested mapping, for code), then the ``key=value`` overrides; checked for consistency."""
    cfg = _read_yaml(DEFAULT_CONFIG)
    if path is not None:
        resolved = resolve_config_path(path)
        if resolved.resolve() != DEFAULT_CONFIG.resolve():
            _merge(cfg, _read_yaml(resolved), str(resolved))
    if updates:
        _merge(cfg, updates, "settings")
    apply_overrides(cfg, overrides)
    config = _wrap(cfg)
    validate(config)
    return config


def validate(cfg: Config) -> None:
    """Settings that cannot work together, reported before anything is built."""
    t, o, c, i = cfg.train, cfg.optim, cfg.crops, cfg.ibot

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(t.batch_size_per_gpu >= 1, "train.batch_size_per_gpu must be at least 1.")
    need(t.OFFICIAL_EPOCH_LENGTH >= 1, "train.OFFICIAL_EPOCH_LENGTH must be at least 1.")
    need(t.num_workers >= 0, "train.num_workers cannot be negative.")
    need(t.centering in ("centering", "sinkhorn_knopp"), "train.centering must be 'centering' or 'sinkhorn_knopp'.")
    need(t.parallel in ("fsdp", "ddp"), "train.parallel must be 'fsdp' or 'ddp'.")
    need(t.checkpoint_period_iterations >= 1, "train.checkpoint_period_iterations must be at least 1.")
    need(t.checkpoint_keep >= 1, "train.checkpoint_keep must be at least 1.")
    need(t.log_period_iterations >= 1, "train.log_period_iterations must be at least 1.")
    need(t.stop_at_iteration is None or (isinstance(t.stop_at_iteration, int) and t.stop_at_iteration >= 0),
         "train.stop_at_iteration must be null or a non-negative whole number.")
    need(o.epochs >= 1, "optim.epochs must be at least 1.")
    need(0 <= o.warmup_epochs <= o.epochs, "optim.warmup_epochs must lie between 0 and optim.epochs.")
    need(0 <= o.freeze_last_layer_epochs <= o.epochs, "optim.freeze_last_layer_epochs must lie between 0 and optim.epochs.")
    need(o.scaling_rule in ("sqrt_wrt_1024", "none"), "optim.scaling_rule must be 'sqrt_wrt_1024' or 'none'.")
    need(o.base_lr >= 0 and o.min_lr >= 0, "optim.base_lr and optim.min_lr cannot be negative.")
    need(0 < o.layerwise_decay <= 1, "optim.layerwise_decay must be in (0, 1].")
    need(o.clip_grad >= 0, "optim.clip_grad cannot be negative (0 turns clipping off).")
    need(0 <= cfg.teacher.warmup_teacher_temp_epochs <= o.epochs,
         "teacher.warmup_teacher_temp_epochs must lie between 0 and optim.epochs.")
    need(cfg.teacher.teacher_temp > 0 and cfg.teacher.warmup_teacher_temp > 0, "Teacher temperatures must be positive.")
    need(0 <= cfg.dino.center_momentum < 1, "dino.center_momentum must be in [0, 1) (0: centre on this batch only).")
    for name in ("global_crops_scale", "local_crops_scale"):
        lo, hi = (list(c[name]) + [None, None])[:2]
        need(len(c[name]) == 2 and lo is not None and 0 < lo <= hi <= 1,
             f"crops.{name} must be [min, max] with 0 < min <= max <= 1.")
    need(c.local_crops_number >= 0, "crops.local_crops_number cannot be negative.")
    for name in ("color_jitter_prob", "grayscale_prob", "solarize_prob"):
        need(0 <= c[name] <= 1, f"crops.{name} must be a probability in [0, 1].")
    need(len(c.blur_prob) == 3 and all(0 <= p <= 1 for p in c.blur_prob),
         "crops.blur_prob must be three probabilities [global crop 1, global crop 2, local crops].")
    need(len(c.color_jitter) == 4 and all(v >= 0 for v in c.color_jitter) and c.color_jitter[3] <= 0.5,
         "crops.color_jitter must be [brightness, contrast, saturation, hue] strengths, each >= 0 and hue <= 0.5.")
    lo, hi = (list(i.mask_ratio_min_max) + [None, None])[:2]
    need(len(i.mask_ratio_min_max) == 2 and lo is not None and 0 <= lo <= hi <= 1,
         "ibot.mask_ratio_min_max must be [min, max] with 0 <= min <= max <= 1.")
    need(0 <= i.mask_sample_probability <= 1, "ibot.mask_sample_probability must be in [0, 1].")
    for head in ("dino", "ibot"):
        h = cfg[head]
        need(h.head_n_prototypes >= 1 and h.head_bottleneck_dim >= 1 and h.head_nlayers >= 1 and h.head_hidden_dim >= 1,
             f"{head}.head_* sizes must be at least 1.")
    for role in ("teacher", "student"):
        for module in MODULES:
            node = cfg.compute_precision[role][module]
            need(node.mixed_precision.param_dtype in PRECISIONS,
                 f"compute_precision.{role}.{module}.mixed_precision.param_dtype must be one of {', '.join(PRECISIONS)}.")
            need(node.sharding_strategy in ("FULL_SHARD", "SHARD_GRAD_OP"),
                 f"compute_precision.{role}.{module}.sharding_strategy must be FULL_SHARD or SHARD_GRAD_OP "
                 "(for unsharded data parallelism use train.parallel=ddp).")
    need(cfg.evaluation.eval_period_iterations >= 0, "evaluation.eval_period_iterations cannot be negative (0: never).")
    need(cfg.evaluation.knn_k >= 1 and cfg.evaluation.knn_temperature > 0,
         "evaluation.knn_k must be at least 1 and evaluation.knn_temperature positive.")


def total_iterations(cfg: Config) -> int:
    return int(cfg.optim.epochs * cfg.train.OFFICIAL_EPOCH_LENGTH)


def scaled_lr(cfg: Config, world_size: int) -> float:
    """DINOv2's scaling rule: base_lr is the rate for a global batch of 1024, scaled by the square root of the ratio."""
    if cfg.optim.scaling_rule == "sqrt_wrt_1024":
        return float(cfg.optim.base_lr) * math.sqrt(cfg.train.batch_size_per_gpu * world_size / 1024.0)
    return float(cfg.optim.base_lr)


def dataset_paths(cfg: Config) -> list[Path]:
    value = cfg.train.dataset_path
    items = value if isinstance(value, list) else [value] if value else []
    return [Path(str(v)).expanduser() for v in items if str(v).strip()]
