"""The EM-versus-Sinkhorn ablation: named variants of the GMM head, each changing one factor.

Every variant is the shipped GMMSeg config of an architecture with one factor changed from the
paper's settings (Sinkhorn E-step, M=5 components per class, mean momentum 0.999, FIFO memory), so
each comparison against ``default`` isolates one choice. Runs are cached by name under a runs folder
(:func:`gmmseg_lab.demo.run_one`), so the ablation notebook and the comparison notebook share the
``default`` runs, and an interrupted ablation resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

#: name -> (label, gmm_head overrides, gmm_cfg overrides)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "default": ("Sinkhorn E-step, M=5, momentum 0.999, FIFO (paper)", {}, {}),
    "em": ("standard EM E-step", {}, {"e_step": "em"}),
    "m1": ("M=1 (one Gaussian per class)", {"num_components": 1}, {}),
    "m10": ("M=10 components per class", {"num_components": 10}, {}),
    "momentum0.99": ("mean momentum 0.99", {}, {"mean_momentum": 0.99}),
    "stats": ("streaming statistics memory", {}, {"memory": "stats"}),
}


def check_variants(names: Iterable[str]) -> list[str]:
    """Validate variant names; raises ``ValueError`` naming the unknown one and the known ones."""
    names = list(names)
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"unknown ablation variant {name!r}; known: {', '.join(VARIANTS)}")
    return names


def run_name(arch: str, head: str, preset: str, seed: int, variant: str = "default") -> str:
    """Folder name of one training run: ``<arch>_<head>_<preset>_s<seed>`` (+ ``_<variant>``)."""
    base = f"{arch}_{head}_{preset}_s{seed}"
    return base if variant == "default" or head != "gmm" else f"{base}_{variant}"


def run_variant(data_dir: Path, runs_dir: Path, arch: str, preset: str, seed: int, variant: str,
                progress: bool = True) -> dict:
    """Train (or reuse) and evaluate the GMMSeg ``variant`` of ``arch``; returns its metrics."""
    from .demo import run_one

    check_variants([variant])
    _, gmm_head, gmm_cfg = VARIANTS[variant]
    name = run_name(arch, "gmm", preset, seed, variant)
    return run_one(Path(data_dir), Path(runs_dir) / name, arch, "gmm", preset, seed,
                   gmm_cfg=gmm_cfg or None, gmm_head=gmm_head or None, progress=progress)
