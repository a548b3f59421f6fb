"""The ablation: named variants of the GMMSeg model, each changing one factor of the release's recipe.

Every variant is the shipped GMMSeg config of an architecture with one factor changed from the
paper's settings and the release's training recipe (Sinkhorn E-step, M=5 components per class, mean
momentum 0.999, FIFO memory sized for the schedule, projection conv+BN+ReLU, decode head at 10x the
encoder's learning rate, class-balanced sampling, the preset's backbone), so each comparison against
``default`` isolates one choice. Runs are cached by name under a runs folder
(:mod:`gmmseg_lab.experiments.runs`), so the ablation notebook and the comparison notebook share the
``default`` runs, and an interrupted ablation resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple

from mmengine.config import Config

from ..catalog import BACKBONES
from ..gmm import GMMClassifier
from ..stats import flatten_metrics
from .runs import run_many, run_name, run_one

__all__ = [
    "VARIANTS",
    "Variant",
    "ablation_records",
    "check_variants",
    "memory_bytes",
    "resolve_backbone",
    "run_variant",
    "train_ablation",
    "variant_request",
    "variant_run_name",
]


class Variant(NamedTuple):
    """One ablation row: a label and the overrides of :func:`gmmseg_lab.models.build_config`."""

    label: str
    gmm_head: dict = {}
    gmm_cfg: dict = {}
    cfg_options: dict = {}
    #: ``"native"``: the architecture's own backbone (from scratch in the quick / cpu presets);
    #: ``None``: the preset's default.
    backbone: str | None = None


#: name -> :class:`Variant`
VARIANTS: dict[str, Variant] = {
    "default": Variant("the release's recipe (Sinkhorn E-step, M=5, momentum 0.999, FIFO)"),
    "em": Variant("standard EM E-step", gmm_cfg={"e_step": "em"}),
    "m1": Variant("M=1 (one Gaussian per class)", gmm_head={"num_components": 1}),
    "m10": Variant("M=10 components per class", gmm_head={"num_components": 10}),
    "momentum0.99": Variant("mean momentum 0.99", gmm_cfg={"mean_momentum": 0.99}),
    "stats": Variant("streaming statistics memory", gmm_cfg={"memory": "stats"}),
    "memory32000": Variant("the release's memory size, 32000 per component", gmm_cfg={"memory_size": 32000}),
    "linear_projection": Variant("projection: 1x1 conv with bias (no BN, no ReLU)", gmm_head={"projection": "linear"}),
    "head_lr1": Variant(
        "decode head at the encoder's learning rate (x1, not x10)",
        cfg_options={"optim_wrapper.paramwise_cfg.custom_keys.head.lr_mult": 1.0},
    ),
    "uniform_sampler": Variant(
        "uniform image sampling (no class balancing)",
        cfg_options={"train_dataloader.sampler": {"type": "InfiniteSampler", "shuffle": True}},
    ),
    "scratch": Variant("the architecture's own backbone from scratch (no ImageNet weights)", backbone="native"),
}


def check_variants(names: Iterable[str]) -> list[str]:
    """Validate variant names; raises ``ValueError`` naming the unknown one and the known ones."""
    names = list(names)
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"unknown ablation variant {name!r}; known: {', '.join(VARIANTS)}")
    return names


def resolve_backbone(arch: str, backbone: str | None) -> str | None:
    """``"native"`` -> the architecture's own backbone name; anything else unchanged."""
    if backbone != "native":
        return backbone
    return BACKBONES[arch][0]


def variant_run_name(arch: str, preset: str, seed: int, variant: str) -> str:
    """Folder name of the GMMSeg ``variant`` run (see :func:`run_name`). A variant that only swaps
    the backbone is the GMMSeg run of the twins with that backbone (notebook 01 trains it too): the
    same folder, trained once."""
    check_variants([variant])
    v = VARIANTS[variant]
    backbone = resolve_backbone(arch, v.backbone)
    only_backbone = backbone is not None and not (v.gmm_head or v.gmm_cfg or v.cfg_options)
    return run_name(arch, "gmm", preset, seed, "default" if only_backbone else variant, backbone=backbone)


def variant_request(data_dir: Path, runs_dir: Path, arch: str, preset: str, seed: int, variant: str) -> dict:
    """The keyword arguments of :func:`gmmseg_lab.experiments.runs.run_one` for the GMMSeg ``variant`` of ``arch``,
    in ``runs_dir / variant_run_name(...)``."""
    v = VARIANTS[variant]
    return dict(
        data_dir=Path(data_dir),
        run_dir=Path(runs_dir) / variant_run_name(arch, preset, seed, variant),
        arch=arch,
        head="gmm",
        preset=preset,
        seed=seed,
        gmm_cfg=v.gmm_cfg or None,
        gmm_head=v.gmm_head or None,
        backbone=resolve_backbone(arch, v.backbone),
        cfg_options=v.cfg_options or None,
    )


def run_variant(
    data_dir: Path, runs_dir: Path, arch: str, preset: str, seed: int, variant: str, progress: bool = True
) -> dict:
    """Train (or reuse) and evaluate the GMMSeg ``variant`` of ``arch``; returns its metrics."""
    return run_one(**variant_request(data_dir, runs_dir, arch, preset, seed, variant), progress=progress)


def train_ablation(
    work_dir: str | Path,
    data_dir: str | Path,
    arch: str,
    variants: Iterable[str],
    seeds: Iterable[int],
    preset: str,
    progress: bool = True,
    jobs: int | None = None,
) -> dict[tuple[str, int], dict]:
    """Train (or reuse) every GMMSeg variant of :data:`gmmseg_lab.experiments.ablation.VARIANTS` for every seed, the
    runs that need training ``jobs`` at a time (:func:`gmmseg_lab.experiments.runs.run_many`).

    Returns:
        ``{(variant, seed): {"run_dir": Path, "metrics": dict}}``.
    """
    variants = check_variants(variants)
    seeds = list(seeds)  # looped once per variant: a generator would be spent after the first
    runs_dir = Path(work_dir) / "runs"
    keys = [(variant, seed) for variant in variants for seed in seeds]
    requests = [variant_request(Path(data_dir), runs_dir, arch, preset, seed, variant) for variant, seed in keys]
    metrics = run_many(requests, jobs=jobs, progress=progress)
    return {key: {"run_dir": r["run_dir"], "metrics": m} for key, r, m in zip(keys, requests, metrics)}


def ablation_records(arch: str, runs: dict[tuple[str, int], dict]) -> list[dict]:
    """Records grouped by (arch, variant)."""
    return [
        {
            "group": {"arch": arch, "variant": variant, "label": VARIANTS[variant].label},
            "seed": seed,
            "metrics": flatten_metrics(r["metrics"]),
        }
        for (variant, seed), r in runs.items()
    ]


def memory_bytes(run_dir: str | Path) -> int:
    """Bytes of the GMM's sample store (FIFO queue or streaming statistics) of a trained run's config."""
    cfg = Config.fromfile(str(Path(run_dir) / "config.py"))
    head = cfg.model.decode_head
    head = head[-1] if isinstance(head, (list, tuple)) else head
    gmm_cfg = dict(head.get("gmm_cfg") or {})
    clf = GMMClassifier(
        int(head["num_classes"] if "num_classes" in head else head["head"]["num_classes"]),
        int(head.get("num_components", 5)),
        int(head.get("embed_dim", 64)),
        **gmm_cfg,
    )
    return clf.memory_nbytes()
