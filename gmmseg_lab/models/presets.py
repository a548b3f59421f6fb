"""The shipped configs: 4 architectures x {gmm, softmax} x presets, and a Python API to use them.

Layout (mmengine-style Python configs with ``_base_`` inheritance, in ``gmmseg_lab/configs/``)::

    _base_/default_runtime.py                 default_scope='mmseg', custom_imports, randomness
    _base_/models/{segformer_mit,deeplabv3plus_r,upernet_r,ocrnet_hr}.py
    _base_/datasets/{gmmlab_quick,gmmlab_cpu,cityscapes_512x1024,ade20k_512x512,coco-stuff10k_512x512}.py
    _base_/schedules/{quick,cpu,sgd_80k,sgd_160k,adamw_160k}.py
    <arch>/<arch>_<preset>_softmax.py         the softmax network of that size, data and schedule
    <arch>/<arch>_<preset>_gmm.py             _base_ = the softmax twin; the decode head wrapped in
                                              GMMSegHead (nothing else changes)

Presets: ``quick`` (64-px embedded data, tiny widths, 20 iterations: CI), ``cpu`` (128-px embedded
data, small widths, a few minutes on 2 cores), ``paper`` (the paper's sizes on Cityscapes 512x1024),
``paper-ade20k`` and ``paper-cocostuff10k`` (512x512, slide inference with 768x768 windows).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mmengine.config import Config

__all__ = ["ARCHS", "HEADS", "PRESETS", "CONFIG_DIR", "config_path", "list_configs", "build_config",
           "gmm_head_configs", "flatten_gmm_heads", "config_diff", "set_max_iters"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
ARCHS = ("segformer", "deeplabv3plus", "upernet", "ocrnet")
HEADS = ("gmm", "softmax")
PRESETS = ("quick", "cpu", "paper", "paper-ade20k", "paper-cocostuff10k")
_ALIASES = {"deeplabv3+": "deeplabv3plus", "deeplab": "deeplabv3plus", "uper": "upernet",
            "ocr": "ocrnet", "segformer": "segformer"}


def _norm_arch(arch: str) -> str:
    a = _ALIASES.get(arch.lower(), arch.lower())
    if a not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    return a


def config_path(arch: str, head: str = "gmm", preset: str = "quick") -> Path:
    """Path of the shipped config ``configs/<arch>/<arch>_<preset>_<head>.py``."""
    arch = _norm_arch(arch)
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    path = CONFIG_DIR / arch / f"{arch}_{preset}_{head}.py"
    if not path.is_file():  # pragma: no cover - a packaging error
        raise FileNotFoundError(path)
    return path


def list_configs() -> list[tuple[str, str, str, Path]]:
    """Every shipped ``(arch, head, preset, path)``."""
    return [(a, h, p, config_path(a, h, p)) for a in ARCHS for p in PRESETS for h in HEADS]


# ---------------------------------------------------------------------- config surgery helpers
def _decode_heads(model: dict) -> list[dict]:
    heads = model.get("decode_head")
    return list(heads) if isinstance(heads, (list, tuple)) else [heads]


def gmm_head_configs(cfg) -> list[dict]:
    """The decode-head config dicts of type ``GMMSegHead`` (or ``GMM*Head``) in ``cfg.model``."""
    return [h for h in _decode_heads(cfg["model"])
            if isinstance(h, dict) and str(h.get("type", "")).startswith("GMM")]


def _walk_dicts(obj: Any):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk_dicts(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk_dicts(v)


def _merge_into(dst: dict, src: dict) -> None:
    """Recursive in-place merge of ``src`` into ``dst`` (dicts merge, everything else replaces)."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def _set_num_classes(model: dict, num_classes: int) -> None:
    for d in _walk_dicts(model):
        if "num_classes" in d:
            d["num_classes"] = num_classes


def _dataloader_datasets(cfg) -> list[dict]:
    out = []
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if loader and loader.get("dataset") is not None:
            ds = loader["dataset"]
            out.extend(ds.get("datasets", [ds]) if ds.get("type") == "ConcatDataset" else [ds])
    return out


def set_max_iters(cfg, max_iters: int) -> None:
    """Set the run length: loop, LR schedule ends, validation/checkpoint intervals."""
    max_iters = int(max_iters)
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    old = int(cfg.train_cfg.max_iters)
    cfg.train_cfg.max_iters = max_iters
    for sched in cfg.get("param_scheduler", []) or []:
        if sched.get("end", 0) >= old:
            sched["end"] = max_iters
        if sched.get("end", max_iters) > max_iters:
            sched["end"] = max_iters
        if sched.get("begin", 0) >= sched.get("end", max_iters):
            sched["begin"] = max(0, sched["end"] - 1)
    if "val_interval" in cfg.train_cfg:
        cfg.train_cfg.val_interval = min(int(cfg.train_cfg.val_interval), max_iters)
    ckpt = cfg.get("default_hooks", {}).get("checkpoint")
    if ckpt is not None:
        ckpt["interval"] = min(int(ckpt.get("interval", max_iters)), max_iters)


def build_config(arch: str, head: str = "gmm", preset: str = "quick", data_root: str | Path | None = None,
                 work_dir: str | Path | None = None, seed: int = 0, *, max_iters: int | None = None,
                 gmm_cfg: dict | None = None, gmm_head: dict | None = None,
                 cfg_options: dict | None = None, **overrides) -> Config:
    """Load a shipped config and set the data root, work dir and seed (and optional overrides).

    Args:
        arch: ``segformer``, ``deeplabv3plus``, ``upernet`` or ``ocrnet``.
        head: ``gmm`` or ``softmax`` (the twins differ only in the decode head's classifier).
        preset: one of :data:`PRESETS`.
        data_root: data set directory; every dataloader's dataset gets it. For the embedded layout
            its ``classes.json`` also sets ``num_classes`` of every head.
        work_dir: where the Runner writes logs and checkpoints (default ``work_dirs/<config name>``).
        seed: ``randomness.seed`` (both twins use the same).
        max_iters: run length; the LR schedule, validation and checkpoint intervals follow.
        gmm_cfg: merged into the GMM head's ``gmm_cfg`` (``memory_size``, ``mean_momentum``,
            ``e_step``, ``memory``...). gmm_head: merged into the GMM head itself
            (``num_components``, ``embed_dim``, ``loss_component_weight``...). Only for ``head='gmm'``.
        cfg_options: dotted keys, as mmengine's ``--cfg-options`` (``{'train_dataloader.batch_size': 2}``).
        **overrides: top-level keys merged into the config (dicts merge recursively).
    """
    path = config_path(arch, head, preset)
    cfg = Config.fromfile(str(path))

    if data_root is not None:
        data_root = str(Path(data_root).expanduser().absolute())
        cfg.data_root = data_root
        for ds in _dataloader_datasets(cfg):
            ds["data_root"] = data_root
        classes_file = Path(data_root) / "classes.json"
        if classes_file.is_file():
            from ..data.layout import read_classes

            classes, _ = read_classes(classes_file)
            _set_num_classes(cfg.model, len(classes))

    cfg.work_dir = str(Path(work_dir).expanduser().absolute()) if work_dir is not None \
        else str(Path("work_dirs") / path.stem)
    randomness = dict(cfg.get("randomness", {}) or {})
    randomness["seed"] = int(seed)
    cfg.randomness = randomness

    if max_iters is not None:
        set_max_iters(cfg, max_iters)

    if gmm_cfg or gmm_head:
        heads = gmm_head_configs(cfg)
        if not heads:
            raise ValueError(f"{path.name} has no GMM head; gmm_cfg / gmm_head apply to head='gmm' only")
        for h in heads:
            if gmm_head:
                _merge_into(h, gmm_head)
            if gmm_cfg:
                if h.get("gmm_cfg") is None:
                    h["gmm_cfg"] = {}
                _merge_into(h["gmm_cfg"], gmm_cfg)

    if overrides:
        cfg.merge_from_dict(overrides, allow_list_keys=True)
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options), allow_list_keys=True)
    return cfg


# ---------------------------------------------------------------------- twin comparison
def flatten_gmm_heads(cfg_dict: dict) -> dict:
    """A copy of a config dict where every wrapped ``GMMSegHead(head=dict(type=X, ...), **gmm)`` is
    written in the equivalent flat form ``GMMSegHead(base_type=X, ..., **gmm)``."""
    out = copy.deepcopy(cfg_dict)
    model = out.get("model", {})
    heads = model.get("decode_head")
    seq = heads if isinstance(heads, list) else [heads]
    for i, h in enumerate(seq):
        if isinstance(h, dict) and h.get("type") == "GMMSegHead" and "head" in h:
            inner = dict(h.pop("head"))
            flat = {**inner, **h}
            flat["base_type"] = inner["type"]
            flat["type"] = h["type"]
            seq[i] = flat
    if not isinstance(heads, list):
        model["decode_head"] = seq[0]
    return out


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        items = {}
        for k, v in obj.items():
            items.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return items or {prefix: {}}
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        items = {}
        for i, v in enumerate(obj):
            items.update(_flatten(v, f"{prefix}.{i}"))
        return items
    return {prefix: obj}


def config_diff(a, b) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two configs (after :func:`flatten_gmm_heads`),
    ``{key: (value_in_a, value_in_b)}``; a missing key shows as ``<missing>``."""
    fa = _flatten(flatten_gmm_heads(a.to_dict() if hasattr(a, "to_dict") else dict(a)))
    fb = _flatten(flatten_gmm_heads(b.to_dict() if hasattr(b, "to_dict") else dict(b)))
    missing = "<missing>"
    return {k: (fa.get(k, missing), fb.get(k, missing)) for k in sorted(set(fa) | set(fb))
            if fa.get(k, missing) != fb.get(k, missing)}
