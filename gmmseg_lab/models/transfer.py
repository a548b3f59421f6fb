"""Start a model from another model's checkpoint: everything that fits except the softmax classifier.

A GPU user with an mmseg model-zoo checkpoint (a softmax SegFormer, DeepLabV3+, UPerNet, OCRNet) can
start the GMMSeg model of the same architecture from it: backbone, neck and decode-head layers are
loaded; the softmax classifier ``conv_seg`` of the final decode head is not (GMMSeg has none: its
classifier is the mixture, which starts from its initialisation); tensors whose shape differs (say an
auxiliary head for another number of classes) are left at their initialisation and reported::

    report = transfer_weights(model, "segformer_mit-b0_cityscapes.pth")
    print(report.summary())          # loaded N tensors; missing: ...; unexpected: ...; shape mismatch: ...

In training, ``gmmseg-lab train ... --init-from CKPT`` (``build_config(init_from=...)``) adds
:class:`InitFromCheckpointHook`, which does this once before the first iteration (never on resume,
where the run's own checkpoint is loaded instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import nn

__all__ = ["InitFromCheckpointHook", "TransferReport", "classifier_keys", "read_state_dict", "transfer_weights"]


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did, key by key (model's key names)."""

    checkpoint: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, checkpoint, model shape)
    skipped_classifier: list[str] = field(default_factory=list)

    def summary(self, max_keys: int = 12) -> str:
        def names(keys):
            keys = list(keys)
            shown = ", ".join(keys[:max_keys])
            return shown + (f", ... ({len(keys) - max_keys} more)" if len(keys) > max_keys else "") if keys else "none"

        lines = [f"init from {self.checkpoint}: loaded {len(self.loaded)} tensors",
                 f"  softmax classifier not loaded: {names(self.skipped_classifier)}",
                 f"  missing (left at their initialisation): {names(self.missing)}",
                 f"  unexpected (in the checkpoint only): {names(self.unexpected)}"]
        if self.mismatched:
            lines.append("  shape mismatch (left at their initialisation): " + names(
                f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched))
        return "\n".join(lines)


def read_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of an mmengine / mmcv checkpoint file (``state_dict`` entry, ``module.`` of
    DDP stripped) or of a plain state-dict file.

    Raises:
        FileNotFoundError, ValueError: naming the file, when it is missing or holds no state dict.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict of tensors (expected an mmengine checkpoint with "
                         "'state_dict', or a dict of tensors)")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def classifier_keys(model: nn.Module, keys) -> list[str]:
    """The keys of ``keys`` that belong to the softmax classifier (``conv_seg``) of ``model``'s final
    decode head (``decode_head.conv_seg.*``, or ``decode_head.<last>.conv_seg.*`` for a cascade)."""
    heads = getattr(model, "decode_head", None)
    prefix = f"decode_head.{len(heads) - 1}." if isinstance(heads, nn.ModuleList) else "decode_head."
    return [k for k in keys if k.startswith(prefix + "conv_seg.")]


def transfer_weights(model: nn.Module, checkpoint: str | Path, *, logger=None) -> TransferReport:
    """Load every tensor of ``checkpoint`` that ``model`` has with the same name and shape, except the
    final decode head's softmax classifier; returns what was loaded, missing, unexpected, mismatched.

    Args:
        model: the segmentor (unwrapped from DDP).
        checkpoint: an mmseg / mmengine checkpoint (e.g. of the softmax twin, or of the model zoo).
        logger: an mmengine logger to log :meth:`TransferReport.summary` to (default: none).
    """
    source = read_state_dict(checkpoint)
    report = TransferReport(checkpoint=str(checkpoint))
    report.skipped_classifier = classifier_keys(model, source)
    own = model.state_dict()
    take = {}
    for key, value in source.items():
        if key in report.skipped_classifier:
            continue
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            take[key] = value
    report.loaded = sorted(take)
    mismatched = {key for key, _, _ in report.mismatched}
    report.missing = sorted(k for k in own if k not in take and k not in mismatched)
    model.load_state_dict(take, strict=False)
    if logger is not None:
        logger.info(report.summary())
    return report


@HOOKS.register_module()
class InitFromCheckpointHook(Hook):
    """Before the first training iteration, start the model from ``checkpoint`` (:func:`transfer_weights`).

    Runs after mmengine's weight initialisation (so the rest keeps its init, e.g. the pretrained
    encoder of a layer the checkpoint lacks) and only at iteration 0: a resumed run keeps its own
    weights. The report is written to the run's log and ``work_dir/init_from.txt``.
    """

    priority = "VERY_HIGH"

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = str(checkpoint)

    def before_train(self, runner) -> None:
        if runner.iter > 0:  # resumed: the run's own checkpoint was loaded
            return
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        report = transfer_weights(model, self.checkpoint, logger=runner.logger)
        if getattr(runner, "rank", 0) == 0:
            from ..io_utils import atomic_write_text

            print(report.summary(), flush=True)  # also when the console log level hides INFO
            atomic_write_text(Path(runner.work_dir) / "init_from.txt", report.summary(max_keys=10**6) + "\n")
