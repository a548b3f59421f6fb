"""Start a model from another model's checkpoint: everything that fits except the softmax classifier.

A GPU user with an mmseg model-zoo checkpoint (a softmax SegFormer, DeepLabV3+, UPerNet, OCRNet) can
start the GMMSeg model of the same architecture from it: backbone, neck and decode-head layers are
loaded; the softmax classifier ``conv_seg`` of the final decode head is not (GMMSeg has none: its
classifier is the mixture, which starts from its initialisation); tensors whose shape differs (say an
auxiliary head for another number of classes) are left at their initialisation and reported::

    report = transfer_weights(model, "segformer_mit-b0_cityscapes.pth")
    print(report.summary())          # loaded N tensors; missing: ...; unexpected: ...; shape mismatch: ...

In training, ``gmmseg-lab train ... --init-from CKPT`` (``build_config(init_from=...)``) adds
:class:`gmmseg_lab.train.hooks.InitFromCheckpointHook`, which does this once before the first
iteration (never on resume, where the run's own checkpoint is loaded instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..checkpoints import read_state_dict

__all__ = ["TransferReport", "classifier_keys", "transfer_weights"]


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

        lines = [
            f"init from {self.checkpoint}: loaded {len(self.loaded)} tensors",
            f"  softmax classifier not loaded: {names(self.skipped_classifier)}",
            f"  missing (left at their initialisation): {names(self.missing)}",
            f"  unexpected (in the checkpoint only): {names(self.unexpected)}",
        ]
        if self.mismatched:
            lines.append(
                "  shape mismatch (left at their initialisation): "
                + names(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched)
            )
        return "\n".join(lines)


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
