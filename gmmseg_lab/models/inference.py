"""From a built segmentor (or a checkpoint) to per-pixel class logits, ``log p(x|c)`` and embeddings.

The evaluator's path::

    from gmmseg_lab.models import load_segmentor, predict_batch, build_dataloader
    model, cfg = load_segmentor(work_dir)               # config.py + last checkpoint of a train() run
    loader = build_dataloader(cfg, "val")                # or cfg with any dataloader config
    for data_batch in loader:
        for r in predict_batch(model, data_batch):       # one dict per image, at its original size
            r["seg_logits"], r["pred"], r["class_log_likelihood"], r["anomaly_score"], r["gt"]

At the tensor level: ``segmentor_outputs(model, inputs, batch_img_metas)`` runs
``model.extract_feat(inputs)``, the earlier cascade stages (OCRNet's soft object regions) and then the
GMM head's :meth:`~gmmseg_lab.models.gmm_head.GMMHeadMixin.predict_gmm`, in whole or slide mode as
``model.test_cfg.mode`` says. Softmax heads give ``seg_logits`` only, so the same code evaluates both
twins.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from mmseg.models.utils import resize
from torch import Tensor, nn

from ..checkpoints import CheckpointError, check_checkpoint, last_checkpoint
from .gmm_head import is_gmm_head

__all__ = [
    "decode_head_of",
    "segmentor_outputs",
    "predict_batch",
    "load_segmentor",
    "read_config",
    "ConfigError",
    "build_dataloader",
    "quiet_mmengine",
]

#: Config file suffixes ``mmengine.Config.fromfile`` reads.
CONFIG_SUFFIXES = (".py", ".json", ".yaml", ".yml")


class ConfigError(ValueError):
    """A config file that is missing, not a file, or not a valid mmengine config (the message names it)."""


def read_config(path: str | Path, what: str = "config file"):
    """``mmengine.Config.fromfile(path)``, with every way the file can be unusable reported as a
    :class:`ConfigError` naming it: missing, a directory, an unsupported suffix, or content that
    does not run as a config (syntax error, undefined name, missing ``_base_`` file...); a config
    without ``model`` too. ``what`` names the file in the message (e.g. ``"--config"``)."""
    from mmengine.config import Config

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path}: no such file")
    if path.is_dir():
        raise ConfigError(f"{what} {path}: a directory, not a config file")
    if path.suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"{what} {path}: not a config file (expected {', '.join(CONFIG_SUFFIXES)})")
    try:
        cfg = Config.fromfile(str(path))
    # Executing the file runs its code: these are what a broken config raises (mmengine re-raises
    # the config's own errors); anything else is left to show its traceback.
    except (SyntaxError, NameError, ImportError, AttributeError, KeyError, TypeError, ValueError, OSError) as exc:
        detail = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
        line = f", line {exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise ConfigError(
            f"{what} {path}: not a valid mmengine config ({type(exc).__name__}{line}: {detail})"
        ) from None
    if not isinstance(cfg.get("model"), dict):
        raise ConfigError(f"{what} {path}: no 'model' in it (not a model config)")
    return cfg


@contextmanager
def quiet_mmengine(level: int = logging.WARNING):
    """Temporarily raise the level of mmengine's current logger (e.g. around ``init_weights``,
    which otherwise prints one line per parameter when no log file is open)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(level)
    try:
        yield logger
    finally:
        logger.setLevel(old)


def decode_head_of(segmentor: nn.Module) -> nn.Module:
    """The head that makes the final prediction (the last stage of a cascade)."""
    head = segmentor.decode_head
    return head[-1] if isinstance(head, nn.ModuleList) else head


def _whole(segmentor: nn.Module, inputs: Tensor, metas: list[dict], features: bool = False) -> dict[str, Tensor]:
    head = decode_head_of(segmentor)
    if not is_gmm_head(head):
        if not features:
            return dict(seg_logits=segmentor.encode_decode(inputs, metas))
        # The decode head's fused feature is what its 1x1 softmax classifier (conv_seg) reads.
        seen: list[Tensor] = []
        hook = head.conv_seg.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            logits = segmentor.encode_decode(inputs, metas)
        finally:
            hook.remove()
        return dict(seg_logits=logits, features=seen[-1])
    feats = segmentor.extract_feat(inputs)
    prev = None
    if isinstance(segmentor.decode_head, nn.ModuleList):
        stages = segmentor.decode_head
        prev = stages[0].forward(feats)
        for stage in stages[1:-1]:
            prev = stage.forward(feats, prev)
    return head.predict_gmm(feats, metas, segmentor.test_cfg, prev_output=prev)


#: Outputs of a window at the input's resolution, and at the feature resolution (embeddings of a GMM
#: head, the decode head's fused feature of a softmax head).
_PIXEL_KEYS = ("seg_logits", "class_log_likelihood")
_GRID_KEYS = ("embeddings", "features")


def _slide(segmentor: nn.Module, inputs: Tensor, metas: list[dict], features: bool = False) -> dict[str, Tensor]:
    """mmseg's sliding-window inference: windows of ``test_cfg.crop_size`` every ``test_cfg.stride``,
    overlaps averaged. The per-pixel outputs are exact averages; the feature-resolution grids
    (``embeddings``, ``features``) are stitched at the windows' stride ``s`` with their offsets rounded
    to the grid (each window's grid cell ``(i, j)`` lands at ``(round(y1 / s) + i, round(x1 / s) + j)``),
    averaged where windows overlap, and embeddings renormalised to unit length."""
    h_stride, w_stride = segmentor.test_cfg.stride
    h_crop, w_crop = segmentor.test_cfg.crop_size
    b, _, h_img, w_img = inputs.shape
    rows = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    cols = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    sums: dict[str, Tensor] = {}
    grids: dict[str, Tensor] = {}
    grid_count: Tensor | None = None
    count = inputs.new_zeros((b, 1, h_img, w_img))
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * h_stride + h_crop, h_img), min(c * w_stride + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop = inputs[:, :, y1:y2, x1:x2]
            crop_metas = [dict(m, img_shape=crop.shape[2:]) for m in metas]
            out = _whole(segmentor, crop, crop_metas, features=features)
            for key in _PIXEL_KEYS:
                if key in out:
                    if key not in sums:
                        sums[key] = inputs.new_zeros((b, out[key].shape[1], h_img, w_img))
                    sums[key][:, :, y1:y2, x1:x2] += out[key]
            count[:, :, y1:y2, x1:x2] += 1
            for key in _GRID_KEYS:
                if key not in out:
                    continue
                grid = out[key]
                scale = crop.shape[2] / grid.shape[2]  # input pixels per grid cell
                if key not in grids:
                    shape = (b, grid.shape[1], -(-h_img // round(scale)), -(-w_img // round(scale)))
                    grids[key] = grid.new_zeros(shape)
                    grid_count = grid.new_zeros((b, 1, *shape[2:]))
                gy, gx = round(y1 / scale), round(x1 / scale)
                gh = min(grid.shape[2], grids[key].shape[2] - gy)
                gw = min(grid.shape[3], grids[key].shape[3] - gx)
                grids[key][:, :, gy : gy + gh, gx : gx + gw] += grid[:, :, :gh, :gw]
                grid_count[:, :, gy : gy + gh, gx : gx + gw] += 1  # a head gives one of the grid keys
    result = {k: v / count for k, v in sums.items()}
    for key, grid in grids.items():
        grid = grid / grid_count.clamp_min(1)
        result[key] = torch.nn.functional.normalize(grid, dim=1) if key == "embeddings" else grid
    return result


@torch.no_grad()
def segmentor_outputs(
    segmentor: nn.Module, inputs: Tensor, batch_img_metas: list[dict], features: bool = False
) -> dict[str, Tensor]:
    """Per-pixel outputs of a batch at the (padded) input size, mmseg's whole or slide inference.

    Returns ``seg_logits`` ``[B, C, H, W]``; for GMM heads also ``class_log_likelihood``
    ``[B, C, H, W]`` (``log p(x|c)``) and ``embeddings`` ``[B, D, h, w]`` at feature resolution
    (stitched from the windows in slide mode); with ``features=True`` a softmax head also gives its
    decode head's fused feature ``features`` ``[B, Ch, h, w]``, the input of its 1x1 classifier.
    """
    mode = segmentor.test_cfg.get("mode", "whole") if segmentor.test_cfg else "whole"
    if mode == "slide":
        return _slide(segmentor, inputs, batch_img_metas, features=features)
    if mode != "whole":
        raise ValueError(f"test_cfg.mode must be 'whole' or 'slide', got {mode!r}")
    return _whole(segmentor, inputs, batch_img_metas, features=features)


def _undo_geometry(x: Tensor, meta: dict, align_corners: bool) -> Tensor:
    """``[C, H, W]`` at the padded input size -> ``[C, h0, w0]`` at the image's original size."""
    height, width = x.shape[-2:]
    left, right, top, bottom = meta.get("img_padding_size", meta.get("padding_size", [0, 0, 0, 0]))
    x = x[None, :, top : height - bottom, left : width - right]
    if meta.get("flip", False):
        x = x.flip(dims=(3,) if meta.get("flip_direction") == "horizontal" else (2,))
    return resize(x, size=meta["ori_shape"], mode="bilinear", align_corners=align_corners, warning=False)[0]


@torch.no_grad()
def predict_batch(segmentor: nn.Module, data_batch: dict, features: bool = False) -> list[dict]:
    """Run a data-loader batch through the model; one dict per image at its original size.

    Keys: ``seg_logits`` ``[C, H, W]``, ``pred`` ``[H, W]`` (argmax), ``gt`` ``[H, W]`` (when the batch
    has labels), ``img_path``; for GMM heads also ``class_log_likelihood`` ``[C, H, W]``
    (``log p(x|c)``), ``anomaly_score`` ``[H, W]`` (``-max_c log p(x|c)``) and ``embeddings``
    ``[D, h, w]`` at feature resolution of the (padded) input; with ``features=True`` a softmax head
    also gives ``features`` ``[Ch, h, w]`` (its decode head's fused feature, see
    :func:`segmentor_outputs`).
    """
    was_training = segmentor.training
    segmentor.eval()
    try:
        data = segmentor.data_preprocessor(data_batch, False)
        inputs, samples = data["inputs"], data["data_samples"]
        metas = [s.metainfo for s in samples]
        out = segmentor_outputs(segmentor, inputs, metas, features=features)
    finally:
        segmentor.train(was_training)
    align = decode_head_of(segmentor).align_corners
    results = []
    for i, (sample, meta) in enumerate(zip(samples, metas)):
        r: dict = {"img_path": meta.get("img_path")}
        r["seg_logits"] = _undo_geometry(out["seg_logits"][i], meta, align)
        r["pred"] = r["seg_logits"].argmax(dim=0)
        if "class_log_likelihood" in out:
            cll = _undo_geometry(out["class_log_likelihood"][i], meta, align)
            r["class_log_likelihood"] = cll
            r["anomaly_score"] = -cll.amax(dim=0)
        for key in _GRID_KEYS:
            if key in out:
                r[key] = out[key][i]
        if "gt_sem_seg" in sample:
            r["gt"] = sample.gt_sem_seg.data[0]
        results.append(r)
    return results


def load_segmentor(
    config, checkpoint: str | Path | None = "last", device: str | torch.device | None = None, *, strict: bool = True
):
    """Build a segmentor from a config and load a checkpoint; returns ``(model, cfg)`` in eval mode.

    Args:
        config: an ``mmengine.Config``, a config file, or a ``train()`` work dir (which holds
            ``config.py`` and ``last_checkpoint``).
        checkpoint: a ``.pth`` path, ``"last"`` (the work dir's ``last_checkpoint``; nothing is loaded
            when there is none) or ``None`` (random initialisation).
        device: default CUDA when available, else CPU.
        strict: the checkpoint's weights must fit the model exactly: every parameter and buffer
            (GMM means, memory...) present, none left over, the same shapes.

    Raises:
        ConfigError: a config file that is missing or invalid (:func:`read_config`).
        gmmseg_lab.checkpoints.CheckpointError: a checkpoint that is missing, empty, corrupt, not a
            checkpoint (:func:`~gmmseg_lab.checkpoints.check_checkpoint`), or, with ``strict``, whose
            weights do not fit the model (another architecture, number of classes or GMM size than
            the config's), naming the file and the config.
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    work_dir = None
    if isinstance(config, (str, Path)) and Path(config).is_dir():
        work_dir = Path(config)
        config = work_dir / "config.py"
    cfg = config if isinstance(config, Config) else read_config(config)
    if checkpoint == "last":
        work_dir = work_dir or (Path(cfg.work_dir) if cfg.get("work_dir") else None)
        checkpoint = last_checkpoint(work_dir) if work_dir else None
    if checkpoint is not None:
        checkpoint = check_checkpoint(checkpoint, for_resume=False)  # before building anything
    init_default_scope(cfg.get("default_scope", "mmseg"))
    model = MODELS.build(copy.deepcopy(cfg.model))
    if checkpoint is not None:
        _load_weights(model, checkpoint, cfg, strict)
    else:
        with quiet_mmengine():
            model.init_weights()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        model = revert_sync_batchnorm(model)  # SyncBN (paper configs) -> BN outside a process group
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return model, cfg


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def _load_weights(model: nn.Module, path: Path, cfg, strict: bool) -> None:
    """Load checkpoint ``path`` (checked by ``check_checkpoint``) into ``model``; with ``strict``, a
    ``CheckpointError`` first when its weights do not fit (names, shapes)."""
    import re
    from collections import OrderedDict

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    source = ckpt["state_dict"] if "state_dict" in ckpt else ckpt  # mmengine's, or a bare state dict
    state = OrderedDict((re.sub(r"^module\.", "", k), v) for k, v in source.items())  # saved from a DDP wrapper
    metadata = getattr(source, "_metadata", None)
    if metadata is not None:  # per-module versions (BatchNorm's), which load_state_dict reads
        state._metadata = OrderedDict((re.sub(r"^module\.?", "", k), v) for k, v in metadata.items())
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} (model: {tuple(expected[k].shape)})"
        for k in expected
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != expected[k].shape
    ]
    if strict and (missing or unexpected or reshaped):
        where = Path(cfg.filename).name if cfg.filename else "the config"
        parts = [
            f"{len(missing)} of the model's {len(expected)} weights missing ({_listed(missing)})" if missing else "",
            f"{len(unexpected)} unexpected ({_listed(unexpected)})" if unexpected else "",
            f"{len(reshaped)} of another shape ({_listed(reshaped, 2)})" if reshaped else "",
        ]
        raise CheckpointError(
            f"checkpoint {path} does not fit the model of {where}: {'; '.join(p for p in parts if p)}. Is it "
            "a checkpoint of another architecture, number of classes or GMM size? Evaluate it with the "
            "config it was trained with (the config.py of its work dir)"
        )
    if strict:
        model.load_state_dict(state, strict=True)
    else:  # what fits is loaded, the rest keeps its initial values (mmengine's non-strict loading)
        from mmengine.runner.checkpoint import load_state_dict

        load_state_dict(model, state, strict=False, logger="silent")


def build_dataloader(cfg, split: str = "val"):
    """The ``{split}_dataloader`` of a config, built by mmengine's Runner helper."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    init_default_scope(cfg.get("default_scope", "mmseg"))
    return Runner.build_dataloader(copy.deepcopy(cfg[f"{split}_dataloader"]))
