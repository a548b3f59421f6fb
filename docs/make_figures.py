"""Render the README's figures from a finished report: small PNGs, one per claim.

Usage::

    .venv/bin/python docs/make_figures.py --report runs/report-cpu --out docs/figures

``--report`` is a folder written by ``gmmseg-lab report``: it holds ``work/runs/<run>/`` (``run.json``,
``metrics.json``, checkpoints and the prediction caches ``analysis/predictions_<split>_<n>.npz``) and
``work/data/`` (the embedded data set, with ``anomaly/sources.json`` and ``anomaly/source_masks/``).
Nothing is trained or evaluated here: the figures read what the report computed.

Figures (``--out``, default ``docs/figures``):

- ``anomaly_photo.png``: a photographed anomaly on the road, with GMMSeg's ``-max_c log p(x|c)``, the
  softmax twin's ``1 - max_c p(c|x)`` and the ground-truth outline;
- ``reliability.png``: reliability diagrams of GMMSeg's logits, its Bayes posterior and the softmax
  twin, pooled over seeds (``calibration_bins``, ``bayes_posterior_calibration.bins``);
- ``layernorm_bound.png``: the bound on the top softmax probability of LayerNorm-ed logits against
  gamma, with each GMMSeg model's learned gamma (read from its checkpoint);
- ``anomaly_by_source.png``: AUROC per kind of anomaly (``anomaly_by_source``).

Only runs of the default recipe are used (no ablation overrides). The compared pair is, by default,
the architecture and backbone with the most seeds (the preset's own backbone first); ``--model
segformer@mit`` picks another. Every title names the preset and the seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gmmseg_lab.catalog import PRETRAINED_BACKBONE, default_backbone  # noqa: E402

DPI = 100
MAX_BYTES = 200_000
GMM_COLOUR, SOFTMAX_COLOUR, BAYES_COLOUR = "#1f6fb4", "#d9622b", "#2a9d5c"
#: metrics.json's headline anomaly score of each head.
HEADLINE_SCORE = {"gmm": "neg_max_log_likelihood", "softmax": "max_softmax"}


# ---------------------------------------------------------------------------------------- the runs
@dataclass
class Run:
    """One trained model of the report: ``work/runs/<name>`` with its record and metrics."""

    path: Path
    arch: str
    head: str
    preset: str
    seed: int
    backbone: str
    metrics: dict = field(repr=False)

    @property
    def model(self) -> str:
        return f"{self.arch}@{self.backbone}"


def read_runs(report: Path) -> list[Run]:
    """The report's finished runs of the default recipe (no ``gmm_cfg`` / ``gmm_head`` /
    ``cfg_options`` override), with the backbone spelled out (the preset's default when unset)."""
    runs = []
    for run_dir in sorted((report / "work" / "runs").glob("*")):
        record_file, metrics_file = run_dir / "run.json", run_dir / "metrics.json"
        if not (record_file.is_file() and metrics_file.is_file()):
            continue
        record = json.loads(record_file.read_text())
        if record.get("gmm_cfg") or record.get("gmm_head") or record.get("cfg_options"):
            continue  # an ablation variant
        backbone = record.get("backbone") or default_backbone(record["arch"], record["preset"])
        if backbone == "native":
            backbone = default_backbone(record["arch"], "quick")  # the architecture's own
        runs.append(
            Run(
                run_dir,
                record["arch"],
                record["head"],
                record["preset"],
                int(record["seed"]),
                backbone,
                json.loads(metrics_file.read_text()),
            )
        )
    if not runs:
        raise SystemExit(f"{report}: no finished run under work/runs/ (is this a folder made by gmmseg-lab report?)")
    return runs


def choose_model(runs: list[Run], wanted: str | None) -> str:
    """``arch@backbone`` of the compared pair: ``wanted``, else the one with GMM and softmax runs for
    the most seeds, the pretrained backbone first."""
    models = {r.model for r in runs}
    if wanted is not None:
        if "@" not in wanted:
            matches = sorted(m for m in models if m.startswith(wanted + "@"))
            wanted = matches[0] if matches else wanted
        if wanted not in models:
            raise SystemExit(f"--model {wanted!r}: the report has {sorted(models)}")
        return wanted

    def paired_seeds(model: str) -> int:
        heads = {h: {r.seed for r in runs if r.model == model and r.head == h} for h in ("gmm", "softmax")}
        return len(heads["gmm"] & heads["softmax"])

    return max(sorted(models), key=lambda m: (paired_seeds(m), m.endswith("@" + PRETRAINED_BACKBONE)))


def model_label(model: str) -> str:
    arch, backbone = model.split("@")
    names = {"segformer": "SegFormer", "deeplabv3plus": "DeepLabV3+", "upernet": "UPerNet", "ocrnet": "OCRNet"}
    encoder = {
        PRETRAINED_BACKBONE: "EfficientNet-Lite0 (ImageNet)",
        "mit": "MiT (from scratch)",
        "resnet": "ResNet (from scratch)",
        "hrnet": "HRNet (from scratch)",
    }.get(backbone, backbone)
    return f"{names.get(arch, arch)}, {encoder}"


def seeds_text(runs: list[Run]) -> str:
    seeds = sorted({r.seed for r in runs})
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(str(s) for s in seeds)


def provenance(runs: list[Run], data_seed: int | None) -> str:
    presets = sorted({r.preset for r in runs})
    data = "" if data_seed is None else f", data seed {data_seed}"
    return f"preset {'/'.join(presets)}, {seeds_text(runs)}{data}"


def save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG with an adaptive 256-colour palette (a third of the bytes of full RGB for
    these figures, with no visible change), and say its size."""
    import io

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True
        )
    size = path.stat().st_size
    print(f"{path}: {size / 1000:.0f} kB" + ("  (over the 200 kB budget)" if size > MAX_BYTES else ""))
    return path


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


# ---------------------------------------------------------------------- (a) a photographed anomaly
def _prediction_cache(run: Run, split: str) -> Path | None:
    """The run's largest cached prediction file of ``split`` (``analysis/predictions_<split>_<n>.npz``)."""
    caches = sorted(
        (run.path / "analysis").glob(f"predictions_{split}_*.npz"),
        key=lambda p: int(p.stem.rsplit("_", 1)[-1]) if p.stem.rsplit("_", 1)[-1].isdigit() else -1,
    )
    return caches[-1] if caches else None


def _cache_names(path: Path) -> list[str]:
    with np.load(path) as npz:
        return json.loads(bytes(npz["__meta__"]).decode())["names"]


def _photo_area(data_dir: Path, names: list[str]) -> dict[str, int]:
    """Pixels of photographed anomalies per image (source masks' ids of kind ``photo``)."""
    from PIL import Image

    sources_file = data_dir / "anomaly" / "sources.json"
    if not sources_file.is_file():
        return {}
    photo_ids = [s["id"] for s in json.loads(sources_file.read_text())["sources"] if s.get("kind") == "photo"]
    area = {}
    for name in names:
        mask = data_dir / "anomaly" / "source_masks" / f"{Path(name).stem}.png"
        if mask.is_file():
            with Image.open(mask) as im:
                area[name] = int(np.isin(np.asarray(im), photo_ids).sum())
    return area


def figure_anomaly(runs: list[Run], model: str, report: Path, out: Path, data_seed: int | None) -> Path | None:
    pairs = []
    for seed in sorted({r.seed for r in runs if r.model == model}):
        by_head = {r.head: r for r in runs if r.model == model and r.seed == seed}
        caches = {h: _prediction_cache(by_head[h], "anomaly") for h in ("gmm", "softmax") if h in by_head}
        if len(caches) == 2 and all(caches.values()):
            pairs.append((seed, by_head, caches))
    if not pairs:
        print("anomaly_photo.png: skipped, no GMM/softmax pair with cached anomaly predictions")
        return None
    seed, by_head, caches = pairs[0]
    common = [n for n in _cache_names(caches["gmm"]) if n in set(_cache_names(caches["softmax"]))]
    area = _photo_area(report / "work" / "data", common)
    name = max(common, key=lambda n: area.get(n, 0)) if area else common[0]

    def load(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        with np.load(path) as npz:
            index = json.loads(bytes(npz["__meta__"]).decode())["names"].index(name)
            return {k: npz[k][index] for k in keys}

    gmm = load(caches["gmm"], ("images", "gt", "anomaly_score"))
    soft = load(caches["softmax"], ("anomaly_score",))
    outline = (gmm["gt"] == 1).astype(float)

    fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.3), constrained_layout=True)
    panels = [
        (gmm["images"], "image (outline: the anomaly)", None),
        (gmm["anomaly_score"], "GMMSeg: $-\\max_c \\log p(x|c)$", "magma"),
        (soft["anomaly_score"], "softmax twin: $1 - \\max_c p(c|x)$", "magma"),
    ]
    for ax, (img, title, cmap) in zip(axes, panels):
        if cmap is None:
            ax.imshow(img, interpolation="nearest")
        else:
            valid = gmm["gt"] != 255
            lo, hi = np.percentile(img[valid], [2, 99.5])
            ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-6, interpolation="nearest")
        ax.contour(outline, levels=[0.5], colors="#3fe0ff", linewidths=1.0)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(
        f"A photographed anomaly ({name}): {model_label(model)}; {provenance([by_head['gmm']], data_seed)}", fontsize=9
    )
    return save(fig, out / "anomaly_photo.png")


# ---------------------------------------------------------------------------- (b) reliability diagrams
def _pooled_bins(bin_sets: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bins pooled over runs (weighted by pixel counts); the last, zero-width bin ``[1, 1]`` of
    exactly-1.0 confidences is drawn with the bin below it. Returns ``lower, upper, count, conf, acc``."""
    lower = np.asarray(bin_sets[0]["lower"], float)
    upper = np.asarray(bin_sets[0]["upper"], float)
    count = np.zeros_like(lower)
    conf_sum = np.zeros_like(lower)
    acc_sum = np.zeros_like(lower)
    for bins in bin_sets:
        n = np.asarray(bins["count"], float)
        conf = np.asarray([c if c is not None else 0.0 for c in bins["confidence"]], float)
        acc = np.asarray([a if a is not None else 0.0 for a in bins["accuracy"]], float)
        count += n
        conf_sum += n * conf
        acc_sum += n * acc
    if len(lower) > 1 and upper[-1] <= lower[-1]:  # merge [1, 1] into the last real bin
        count[-2] += count[-1]
        conf_sum[-2] += conf_sum[-1]
        acc_sum[-2] += acc_sum[-1]
        lower, upper, count, conf_sum, acc_sum = lower[:-1], upper[:-1], count[:-1], conf_sum[:-1], acc_sum[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return lower, upper, count, conf_sum / count, acc_sum / count


def figure_reliability(runs: list[Run], model: str, out: Path, data_seed: int | None) -> Path | None:
    gmm = [r for r in runs if r.model == model and r.head == "gmm"]
    soft = [r for r in runs if r.model == model and r.head == "softmax"]
    panels = []
    if gmm:
        panels.append(
            (
                "GMMSeg: softmax of the logits",
                [r.metrics["calibration_bins"] for r in gmm],
                [r.metrics.get("ece") for r in gmm],
                GMM_COLOUR,
            )
        )
        bayes = [r for r in gmm if r.metrics.get("bayes_posterior_calibration")]
        if bayes:
            panels.append(
                (
                    "GMMSeg: Bayes' posterior",
                    [r.metrics["bayes_posterior_calibration"]["bins"] for r in bayes],
                    [r.metrics["bayes_posterior_calibration"].get("ece") for r in bayes],
                    BAYES_COLOUR,
                )
            )
    if soft:
        panels.append(
            (
                "softmax twin",
                [r.metrics["calibration_bins"] for r in soft],
                [r.metrics.get("ece") for r in soft],
                SOFTMAX_COLOUR,
            )
        )
    if not panels:
        print("reliability.png: skipped, no run of that model")
        return None
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.0 * len(panels), 3.3), constrained_layout=True, sharey=True, squeeze=False
    )
    for ax, (title, bin_sets, eces, colour) in zip(axes[0], panels):
        lower, upper, count, conf, acc = _pooled_bins(bin_sets)
        used = count > 0
        ax.bar(
            lower[used],
            acc[used],
            width=(upper - lower)[used],
            align="edge",
            color=colour,
            alpha=0.75,
            edgecolor="white",
            linewidth=0.5,
            label="accuracy",
        )
        ax.plot(conf[used], acc[used], "o", color="black", markersize=2.5, label="(mean confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_title(f"{title}\nECE {_mean_std(eces)}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("accuracy", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.suptitle(
        f"Reliability, pooled over seeds: {model_label(model)}; {provenance(gmm + soft, data_seed)}", fontsize=9
    )
    return save(fig, out / "reliability.png")


# ------------------------------------------------------------------------ (c) the LayerNorm bound
def _score_norm_parameters():
    """``score_norm_parameters`` from where it lives (``experiments.predictions``; formerly ``analysis``)."""
    try:
        from gmmseg_lab.experiments.predictions import score_norm_parameters
    except ImportError:
        from gmmseg_lab.analysis import score_norm_parameters
    return score_norm_parameters


def figure_bound(runs: list[Run], out: Path, data_seed: int | None) -> Path | None:
    import torch

    from gmmseg_lab.eval.confidence_bound import layernorm_confidence_bound, layernorm_confidence_bound_per_class

    torch.set_num_threads(1)
    score_norm_parameters = _score_norm_parameters()
    gmm = [r for r in runs if r.head == "gmm"]
    if not gmm:
        print("layernorm_bound.png: skipped, no GMMSeg run")
        return None
    num_classes = len(gmm[0].metrics["per_class_iou"])
    learned = []
    for run in gmm:
        params = score_norm_parameters(run.path)
        if params is not None:
            bound = float(
                layernorm_confidence_bound_per_class(
                    torch.from_numpy(params["gamma"]), torch.from_numpy(params["beta"])
                ).max()
            )
            learned.append((run, params["gamma"], bound))
    gammas = np.linspace(0.0, 3.0, 121)
    fig, ax = plt.subplots(figsize=(6.0, 3.6), constrained_layout=True)
    for c, style in ((num_classes, "-"), (19, ":"), (150, "-.")):
        label = f"C = {c}" + (" (this data set)" if c == num_classes else "")
        ax.plot(
            gammas,
            [layernorm_confidence_bound(c, float(g)) for g in gammas],
            style,
            color="black" if c == num_classes else "grey",
            linewidth=1.5 if c == num_classes else 1,
            label=label,
        )
    models = sorted({r.model for r, _, _ in learned}, key=lambda m: not m.endswith("@" + PRETRAINED_BACKBONE))
    seeds = sorted({r.seed for r, _, _ in learned})
    markers, colours = "osD^v<>", (GMM_COLOUR, BAYES_COLOUR, SOFTMAX_COLOUR, "#7b4ea3")
    for i, model in enumerate(models):
        for run, gamma, bound in (x for x in learned if x[0].model == model):
            mean = float(np.mean(gamma))
            ax.errorbar(
                mean,
                bound,
                xerr=[[mean - float(gamma.min())], [float(gamma.max()) - mean]],
                fmt=markers[seeds.index(run.seed) % len(markers)],
                color=colours[i % len(colours)],
                markersize=5,
                capsize=2,
                linewidth=1,
                alpha=0.85,
                label=f"{model_label(model)}, seed {run.seed}",
            )
    ax.axvline(1.0, color="grey", linewidth=0.6, linestyle="--")
    ax.set_xlabel(
        "LayerNorm weight $\\gamma$ \n(curves: one $\\gamma$ for every class; markers: a trained "
        "model's mean $\\gamma$, bars: its min..max)",
        fontsize=7.5,
    )
    ax.set_ylabel(
        "largest possible top softmax probability\n(markers: the model's bound with its own $\\gamma$, $\\beta$)",
        fontsize=7.5,
    )
    ax.set_xlim(0, 3)
    ax.set_ylim(0, 1.02)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6.5, loc="lower right")
    ax.set_title(
        f"The LayerNorm over classes bounds the confidence of the logits\n{provenance(gmm, data_seed)}", fontsize=9
    )
    return save(fig, out / "layernorm_bound.png")


# ---------------------------------------------------------------- (d) per-source anomaly AUROC
def figure_sources(runs: list[Run], model: str, report: Path, out: Path, data_seed: int | None) -> Path | None:
    pair = [r for r in runs if r.model == model and r.metrics.get("anomaly_by_source")]
    if not pair:
        print("anomaly_by_source.png: skipped, no run with anomaly_by_source")
        return None
    sources_file = report / "work" / "data" / "anomaly" / "sources.json"
    if sources_file.is_file():
        order = [s["name"] for s in json.loads(sources_file.read_text())["sources"]]
    else:
        order = list(pair[0].metrics["anomaly_by_source"])
    heads = [
        (h, label, colour)
        for h, label, colour in (
            ("gmm", "GMMSeg: $-\\max_c \\log p(x|c)$", GMM_COLOUR),
            ("softmax", "softmax twin: $1 - \\max_c p(c|x)$", SOFTMAX_COLOUR),
        )
        if any(r.head == h for r in pair)
    ]
    fig, ax = plt.subplots(figsize=(7.0, 3.4), constrained_layout=True)
    width = 0.8 / len(heads)
    x = np.arange(len(order))
    for i, (head, label, colour) in enumerate(heads):
        values = []
        for source in order:
            seeds = [
                r.metrics["anomaly_by_source"].get(source, {}).get(HEADLINE_SCORE[head], {}).get("auroc")
                for r in pair
                if r.head == head
            ]
            values.append([v for v in seeds if v is not None])
        means = [np.mean(v) if v else np.nan for v in values]
        stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        pos = x + (i - (len(heads) - 1) / 2) * width
        ax.bar(pos, means, width=width * 0.95, yerr=stds, color=colour, alpha=0.8, capsize=2, label=label)
        for p, v in zip(pos, values):
            ax.plot([p] * len(v), v, ".", color="black", markersize=3)
    ax.set_xticks(x, order, fontsize=8)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("AUROC (anomaly vs every inlier pixel)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(
        f"Anomaly detection per kind of object: {model_label(model)}\n"
        f"{provenance(pair, data_seed)}; bars: mean ± std, dots: seeds",
        fontsize=9,
    )
    return save(fig, out / "anomaly_by_source.png")


# ------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", required=True, type=Path, help="a folder made by `gmmseg-lab report`")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures", help="where the PNGs go")
    parser.add_argument(
        "--model",
        default=None,
        help="arch or arch@backbone of the compared pair (default: the one with the most seeds)",
    )
    args = parser.parse_args(argv)
    report = args.report
    if not (report / "work" / "runs").is_dir():
        parser.error(f"{report}: no work/runs/ folder; pass a folder made by `gmmseg-lab report`")
    summary = report / "summary.json"
    data_seed = json.loads(summary.read_text()).get("data_seed") if summary.is_file() else None
    runs = read_runs(report)
    model = choose_model(runs, args.model)
    print(f"compared pair: {model} ({model_label(model)}), {seeds_text([r for r in runs if r.model == model])}")
    figure_anomaly(runs, model, report, args.out, data_seed)
    figure_reliability(runs, model, args.out, data_seed)
    figure_bound(runs, args.out, data_seed)
    figure_sources(runs, model, report, args.out, data_seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
