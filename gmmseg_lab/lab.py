"""The notebooks' experiment steps: train (or reuse) the runs a notebook looks at, and their records.

Runs live in ``<work_dir>/runs/<name>`` (:func:`gmmseg_lab.ablation.run_name`) and are trained once:
every notebook of a report asks for the runs it needs and gets the cached ones. Each function returns
plain dicts so notebooks stay a few lines long.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .ablation import VARIANTS, check_variants, run_name, variant_request
from .catalog import parse_model_spec
from .demo import ensure_dataset, run_many
from .report.results import flatten_metrics

HEADS = ("gmm", "softmax")


def prepare_data(data_dir: str | Path, preset: str, data_seed: int = 0) -> Path:
    """The embedded data set of ``preset`` and ``data_seed`` at ``data_dir`` (generated once, then reused)."""
    return ensure_dataset(Path(data_dir), preset, data_seed)


def train_twins(work_dir: str | Path, data_dir: str | Path, archs: Iterable[str], seeds: Iterable[int],
                preset: str, progress: bool = True, jobs: int | None = None) -> dict[tuple[str, str, int], dict]:
    """Train (or reuse) GMMSeg and its softmax twin for every architecture and seed.

    ``archs``: architecture names, each optionally ``@backbone`` (``"deeplabv3plus@resnet"``: its own
    backbone from scratch, where the preset's default is the pretrained encoder). Runs that need
    training train side by side, ``jobs`` at a time (:func:`gmmseg_lab.demo.run_many`).

    Returns:
        ``{(arch spec, head, seed): {"run_dir": Path, "metrics": metrics.json dict}}``.
    """
    seeds = list(seeds)  # looped once per architecture: a generator would be spent after the first
    keys, requests = [], []
    for spec in archs:
        arch, backbone = parse_model_spec(spec)
        for seed in seeds:
            for head in HEADS:
                keys.append((spec, head, seed))
                requests.append(dict(data_dir=Path(data_dir), run_dir=run_dir_of(work_dir, spec, head, preset, seed),
                                     arch=arch, head=head, preset=preset, seed=seed, backbone=backbone))
    metrics = run_many(requests, jobs=jobs, progress=progress)
    return {key: {"run_dir": r["run_dir"], "metrics": m} for key, r, m in zip(keys, requests, metrics)}


def twin_records(runs: dict[tuple[str, str, int], dict]) -> list[dict]:
    """Records for :func:`gmmseg_lab.report.record_runs`, grouped by (arch, head)."""
    return [{"group": {"arch": arch, "head": head}, "seed": seed, "metrics": flatten_metrics(r["metrics"])}
            for (arch, head, seed), r in runs.items()]


def twin_summary(runs: dict[tuple[str, str, int], dict]) -> dict:
    """Mean and std over seeds per (arch, head) of :func:`train_twins`' runs (see
    :func:`gmmseg_lab.demo.aggregate_over_seeds`)."""
    from .demo import aggregate_over_seeds

    by: dict[str, dict[str, list[dict]]] = {}
    for (arch, head, _seed), r in sorted(runs.items(), key=lambda kv: kv[0][2]):
        by.setdefault(arch, {}).setdefault(head, []).append(r["metrics"])
    return aggregate_over_seeds(by)


def run_dir_of(work_dir: str | Path, arch: str, head: str, preset: str, seed: int, variant: str = "default") -> Path:
    """Where the run of these settings lives (trained by :func:`train_twins` / :func:`train_ablation`);
    ``arch`` may name a backbone as ``arch@backbone``."""
    arch, backbone = parse_model_spec(arch)
    return Path(work_dir) / "runs" / run_name(arch, head, preset, seed, variant, backbone=backbone)


def train_ablation(work_dir: str | Path, data_dir: str | Path, arch: str, variants: Iterable[str],
                   seeds: Iterable[int], preset: str, progress: bool = True,
                   jobs: int | None = None) -> dict[tuple[str, int], dict]:
    """Train (or reuse) every GMMSeg variant of :data:`gmmseg_lab.ablation.VARIANTS` for every seed, the
    runs that need training ``jobs`` at a time (:func:`gmmseg_lab.demo.run_many`).

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
    return [{"group": {"arch": arch, "variant": variant, "label": VARIANTS[variant].label}, "seed": seed,
             "metrics": flatten_metrics(r["metrics"])} for (variant, seed), r in runs.items()]


def resolve_dirs(work_dir: str | Path | None, data_dir: str | Path | None, preset: str,
                 data_seed: int = 0) -> tuple[Path, Path]:
    """The notebooks' folders: ``work_dir`` (default ``../runs/lab-<preset>`` beside ``notebooks/``, for
    live use in JupyterLab) and ``data_dir`` (default ``<work_dir>/data``), with the data set of
    ``preset`` and ``data_seed`` made there."""
    work = Path(work_dir) if work_dir else Path("..") / "runs" / f"lab-{preset}"
    work = work.expanduser().resolve()
    data = Path(data_dir).expanduser().resolve() if data_dir else work / "data"
    work.mkdir(parents=True, exist_ok=True)
    prepare_data(data, preset, data_seed)
    return work, data


def toy_far_confidence(data, gmm, softmax_model, radius_factor: float = 3.0, n_points: int = 360,
                       background_quantile: float = 0.01) -> dict[str, float]:
    """Mean confidence of both classifiers on a circle far outside the toy data.

    The circle has ``radius_factor`` times the largest distance of a training point from the data's
    centre. Softmax confidence is ``max_c p(c|x)``; the GMM's is its open-set posterior with a
    background class (:func:`gmmseg_lab.toy.gmm_open_set_confidence`).
    """
    import math

    import torch

    from .toy import background_log_density, gmm_open_set_confidence

    x = data.x.double()
    centre = x.mean(0)
    radius = radius_factor * float((x - centre).norm(dim=1).max())
    angles = torch.linspace(0, 2 * math.pi, n_points + 1, dtype=torch.float64)[:-1]
    ring = (centre + radius * torch.stack([angles.cos(), angles.sin()], 1)).float()
    with torch.no_grad():
        softmax_conf = torch.softmax(softmax_model(ring).double(), dim=1).amax(1)
        gmm_conf, _ = gmm_open_set_confidence(gmm.class_log_likelihood(ring),
                                              background_log_density(gmm, data, background_quantile))
    return {"radius": radius, "softmax_confidence": float(softmax_conf.mean()),
            "gmm_confidence": float(gmm_conf.mean())}


def anomaly_curves(run_dir: str | Path, data_dir: str | Path, max_points: int = 300) -> dict:
    """ROC / PR curves and AUROC, AP, FPR95 of a run's headline anomaly score on the whole anomaly split.

    Returns:
        ``{"curves": {fpr, tpr, precision, recall, thresholds}, "metrics": {auroc, ap, fpr95, ...},
        "predictions": Predictions of the anomaly split}``.
    """
    import torch

    from .analysis import collect_predictions
    from .eval.metrics import AnomalyScores

    from .data.layout import list_anomaly_pairs

    n = len(list_anomaly_pairs(data_dir))
    preds = collect_predictions(run_dir, data_dir, split="anomaly", max_images=n)
    scores = AnomalyScores()
    scores.update(torch.from_numpy(preds.anomaly_score.reshape(-1)), torch.from_numpy(preds.gt.reshape(-1)))
    curves = {k: v.tolist() for k, v in scores.curves(max_points=max_points).items()}
    return {"curves": curves, "metrics": scores.compute(), "predictions": preds}


def memory_bytes(run_dir: str | Path) -> int:
    """Bytes of the GMM's sample store (FIFO queue or streaming statistics) of a trained run's config."""
    from mmengine.config import Config

    from .gmm import GMMClassifier

    cfg = Config.fromfile(str(Path(run_dir) / "config.py"))
    head = cfg.model.decode_head
    head = head[-1] if isinstance(head, (list, tuple)) else head
    gmm_cfg = dict(head.get("gmm_cfg") or {})
    clf = GMMClassifier(int(head["num_classes"] if "num_classes" in head else head["head"]["num_classes"]),
                        int(head.get("num_components", 5)), int(head.get("embed_dim", 64)), **gmm_cfg)
    return clf.memory_nbytes()


def anomaly_image_order(names: Iterable[str], data_dir: str | Path) -> list[int]:
    """Positions of the anomaly images ``names``, those that show a photographed object first (a cat on
    the road reads at a glance), then the others, each group in its given order. Without
    ``anomaly/sources.json`` the given order."""
    from .data.layout import read_anomaly_sources

    names = list(names)
    found = read_anomaly_sources(data_dir)
    if found is None:
        return list(range(len(names)))
    sources, images = found
    photos = {s["name"] for s in sources if s.get("kind") == "photo"}
    with_photo = [i for i, n in enumerate(names) if photos & set(images.get(n, ()))]
    return with_photo + [i for i in range(len(names)) if i not in set(with_photo)]


def ensure_run(work_dir: str | Path, data_dir: str | Path, arch: str, head: str, preset: str, seed: int,
               progress: bool = True) -> Path:
    """Train (or reuse) one run of :func:`train_twins` and return its folder; ``arch`` may name a
    backbone as ``arch@backbone``."""
    from .demo import run_one

    name, backbone = parse_model_spec(arch)
    run_dir = run_dir_of(work_dir, arch, head, preset, seed)
    run_one(Path(data_dir), run_dir, name, head, preset, seed, progress=progress, backbone=backbone)
    return run_dir
