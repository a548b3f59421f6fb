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

from ..catalog import (
    ARCHS,
    BACKBONES,
    HEADS,
    PRESETS,
    PRETRAINED_BACKBONE,
    TRAINING_PRESETS,
    default_backbone,
    norm_arch,
    parse_model_spec,
    training_preset,
)
from ..data.layout import read_classes
from ..gmm import GMMClassifier

__all__ = [
    "ARCHS",
    "BACKBONES",
    "CONFIG_SETS",
    "HEADS",
    "PRESETS",
    "PRETRAINED_BACKBONE",
    "PRETRAINED_PRESETS",
    "TRAINING_PRESETS",
    "CONFIG_DIR",
    "config_path",
    "default_backbone",
    "list_configs",
    "parse_model_spec",
    "build_config",
    "gmm_head_configs",
    "flatten_gmm_heads",
    "config_diff",
    "set_max_iters",
    "check_gmm_options",
    "gmm_options",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: The sets of shipped config files (``configs/<arch>/<arch>[_lite0]_<set>_<head>.py``); several
#: training presets may share one (``demo`` trains the ``cpu`` configs for fewer iterations).
CONFIG_SETS = tuple(dict.fromkeys(p.configs for p in TRAINING_PRESETS.values()))
#: Config sets that ship configs for the pretrained backbone.
PRETRAINED_PRESETS = tuple(dict.fromkeys(p.configs for p in TRAINING_PRESETS.values() if p.pretrained_configs))
#: File-name tag of a non-native backbone in ``configs/<arch>/<arch>_<tag>_<set>_<head>.py``.
_BACKBONE_TAGS = {PRETRAINED_BACKBONE: "lite0"}
_norm_arch = norm_arch


def config_path(arch: str, head: str = "gmm", preset: str = "quick", backbone: str | None = None) -> Path:
    """Path of the shipped config ``configs/<arch>/<arch>[_<backbone tag>]_<set>_<head>.py`` of a
    training preset (or of a config set, :data:`CONFIG_SETS`).

    ``backbone``: one of ``BACKBONES[arch]``; ``None`` is the preset's default (:func:`default_backbone`).
    The architecture's own backbone has no tag; EfficientNet-Lite0 is ``lite0``.
    """
    arch = norm_arch(arch)
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
    spec = training_preset(preset)
    backbone = default_backbone(arch, preset) if backbone is None else backbone
    if backbone not in BACKBONES[arch]:
        raise ValueError(f"unknown backbone {backbone!r} for {arch}; choose one of {BACKBONES[arch]}")
    if backbone != BACKBONES[arch][0] and not spec.pretrained_configs:
        raise ValueError(
            f"backbone {backbone!r} has configs for the presets "
            f"{tuple(p.name for p in TRAINING_PRESETS.values() if p.pretrained_configs)}, not {preset!r}"
        )
    tag = _BACKBONE_TAGS.get(backbone)
    name = f"{arch}_{tag}_{spec.configs}_{head}.py" if tag else f"{arch}_{spec.configs}_{head}.py"
    path = CONFIG_DIR / arch / name
    if not path.is_file():  # pragma: no cover - a packaging error
        raise FileNotFoundError(path)
    return path


def list_configs() -> list[tuple[str, str, str, str, Path]]:
    """Every shipped config file, ``(arch, head, config set, backbone, path)``."""
    return [
        (a, h, c, b, config_path(a, h, c, b))
        for a in ARCHS
        for c in CONFIG_SETS
        for b in BACKBONES[a]
        if b == BACKBONES[a][0] or c in PRETRAINED_PRESETS
        for h in HEADS
    ]


# ---------------------------------------------------------------------- config surgery helpers
def _decode_heads(model: dict) -> list[dict]:
    heads = model.get("decode_head")
    return list(heads) if isinstance(heads, (list, tuple)) else [heads]


def gmm_head_configs(cfg) -> list[dict]:
    """The decode-head config dicts of type ``GMMSegHead`` (or ``GMM*Head``) in ``cfg.model``."""
    return [h for h in _decode_heads(cfg["model"]) if isinstance(h, dict) and str(h.get("type", "")).startswith("GMM")]


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


#: Arguments of GMMClassifier set by the GMM head itself, not through its ``gmm_cfg``.
_GMM_HEAD_ARGS = ("num_classes", "num_components", "embed_dim")


def _gmm_parameters() -> dict[str, Any]:
    """GMMClassifier's keyword arguments but those set on the head: ``{name: inspect.Parameter}``
    (annotations evaluated)."""
    import inspect

    params = inspect.signature(GMMClassifier.__init__, eval_str=True).parameters.values()
    return {
        p.name: p
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self" and p.name not in _GMM_HEAD_ARGS
    }


def gmm_options() -> dict[str, Any]:
    """The valid keys of a GMM head's ``gmm_cfg`` with their defaults: the keyword arguments of
    :class:`~gmmseg_lab.gmm.GMMClassifier` but ``num_classes``, ``num_components`` and ``embed_dim``
    (set on the head)."""
    return {name: p.default for name, p in _gmm_parameters().items()}


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _gmm_value_problem(value: Any, annotation: Any) -> str | None:
    """What ``value`` should have been for an option annotated ``annotation`` (``float``,
    ``int | None``...), or None when it fits (an int fits a float; a bool fits neither)."""
    import typing

    allowed = typing.get_args(annotation) or (annotation,)
    if not all(t in _TYPE_WORDS for t in allowed):
        return None  # an annotation this check does not know: GMMClassifier decides
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return None
        if t in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float) if t is float else int):
            return None
        if t in (str, type(None)) and isinstance(value, t):
            return None
    return " or ".join(_TYPE_WORDS[t] for t in allowed)


def check_gmm_options(gmm_cfg: dict, what: str = "gmm_cfg") -> None:
    """Check a GMM head's ``gmm_cfg`` before any model is built (:func:`build_config` and
    :func:`gmmseg_lab.train.train` call it).

    Raises:
        ValueError: naming an unknown key and listing the valid ones (:func:`gmm_options`), a value
            of the wrong type, or a value :class:`~gmmseg_lab.gmm.GMMClassifier` refuses (out of
            range, unknown ``memory`` / ``e_step``); the message starts with ``what``.
    """
    if not isinstance(gmm_cfg, dict):
        raise ValueError(f"{what}: expected a dict of GMM options, got {type(gmm_cfg).__name__}")
    valid = _gmm_parameters()
    for key, value in gmm_cfg.items():
        if key in _GMM_HEAD_ARGS:
            raise ValueError(f"{what}: {key!r} is set on the GMM head (gmm_head=dict({key}=...)), not in gmm_cfg")
        if key not in valid:
            raise ValueError(f"{what}: unknown GMM option {key!r}; valid options: {', '.join(valid)}")
        expected = _gmm_value_problem(value, valid[key].annotation)
        if expected:
            raise ValueError(f"{what}: {key}={value!r}: expected {expected}")
    probe = dict(gmm_cfg)
    size = probe.get("memory_size")
    if isinstance(size, int) and size > 2:  # the probe's FIFO would hold 2 x memory_size floats: the same checks
        probe["memory_size"] = 2
    try:
        GMMClassifier(2, 1, 1, **probe)  # its own range checks, on a 2-class, 1-component, 1-D mixture
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def build_config(
    arch: str,
    head: str = "gmm",
    preset: str = "quick",
    data_root: str | Path | None = None,
    work_dir: str | Path | None = None,
    seed: int = 0,
    *,
    backbone: str | None = None,
    max_iters: int | None = None,
    gmm_cfg: dict | None = None,
    gmm_head: dict | None = None,
    init_from: str | Path | None = None,
    cfg_options: dict | None = None,
    **overrides,
) -> Config:
    """Load a shipped config and set the data root, work dir and seed (and optional overrides).

    Args:
        arch: ``segformer``, ``deeplabv3plus``, ``upernet`` or ``ocrnet``.
        head: ``gmm`` or ``softmax`` (the twins differ only in the decode head's classifier).
        preset: one of :data:`PRESETS`.
        data_root: data set directory; every dataloader's dataset gets it. For the embedded layout
            its ``classes.json`` also sets ``num_classes`` of every head.
        work_dir: where the Runner writes logs and checkpoints (default ``work_dirs/<config name>``).
        seed: ``randomness.seed`` (both twins use the same).
        backbone: one of ``BACKBONES[arch]`` (``"efficientnet-lite0"``: ImageNet-pretrained); default
            the preset's (:func:`default_backbone`).
        max_iters: run length; the LR schedule, validation and checkpoint intervals follow.
        gmm_cfg: merged into the GMM head's ``gmm_cfg`` (``memory_size``, ``mean_momentum``,
            ``e_step``, ``memory``...). gmm_head: merged into the GMM head itself
            (``num_components``, ``embed_dim``, ``loss_component_weight``...). Only for ``head='gmm'``.
        init_from: a checkpoint of the same architecture (e.g. an mmseg model-zoo softmax model, or
            the lab's softmax twin) to start from: everything but the softmax classifier is loaded
            before the first iteration (:class:`~gmmseg_lab.models.transfer.InitFromCheckpointHook`),
            after the pretrained encoder's initialisation.
        cfg_options: dotted keys, as mmengine's ``--cfg-options`` (``{'train_dataloader.batch_size': 2}``).
        **overrides: top-level keys merged into the config (dicts merge recursively).
    """
    path = config_path(arch, head, preset, backbone)
    cfg = Config.fromfile(str(path))

    if data_root is not None:
        data_root = str(Path(data_root).expanduser().absolute())
        cfg.data_root = data_root
        for ds in _dataloader_datasets(cfg):
            ds["data_root"] = data_root
        classes_file = Path(data_root) / "classes.json"
        if classes_file.is_file():
            classes, _ = read_classes(classes_file)
            _set_num_classes(cfg.model, len(classes))

    cfg.work_dir = (
        str(Path(work_dir).expanduser().absolute()) if work_dir is not None else str(Path("work_dirs") / path.stem)
    )
    randomness = dict(cfg.get("randomness", {}) or {})
    randomness["seed"] = int(seed)
    cfg.randomness = randomness

    if max_iters is None:
        max_iters = training_preset(preset).max_iters  # e.g. demo: the cpu configs, fewer iterations
    if max_iters is not None:
        set_max_iters(cfg, max_iters)

    if init_from is not None:
        init_from = Path(init_from).expanduser().absolute()
        if not init_from.is_file():
            raise FileNotFoundError(f"{init_from}: no such checkpoint to initialise from (--init-from)")
        hooks = [h for h in (cfg.get("custom_hooks") or []) if h.get("type") != "InitFromCheckpointHook"]
        cfg.custom_hooks = hooks + [dict(type="InitFromCheckpointHook", checkpoint=str(init_from))]

    if gmm_cfg or gmm_head:
        heads = gmm_head_configs(cfg)
        if not heads:
            raise ValueError(f"{path.name} has no GMM head; gmm_cfg / gmm_head apply to head='gmm' only")
        for h in heads:
            if gmm_head:
                _merge_into(h, gmm_head)
            if gmm_cfg:
                check_gmm_options(gmm_cfg)  # unknown keys named as given, before the merge
                if h.get("gmm_cfg") is None:
                    h["gmm_cfg"] = {}
                _merge_into(h["gmm_cfg"], gmm_cfg)
                check_gmm_options(h["gmm_cfg"])  # the values together (e.g. memory with memory_size)

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
    return {
        k: (fa.get(k, missing), fb.get(k, missing))
        for k in sorted(set(fa) | set(fb))
        if fa.get(k, missing) != fb.get(k, missing)
    }
