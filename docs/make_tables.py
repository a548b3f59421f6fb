"""Print the README's and the results page's tables from a finished report, as Markdown.

Usage::

    .venv/bin/python docs/make_tables.py --report runs/report-cpu

``--report`` is a folder written by ``gmmseg-lab report`` (``work/runs/<run>/metrics.json``,
``run.json`` and the training logs). Nothing is trained or evaluated: the tables read what the report
computed. Printed, in order:

- the twins' table: per model (architecture, backbone, head), mIoU, ECE of the logits' softmax, of
  Bayes' posterior and of each after temperature scaling, and the headline anomaly score's AUROC, AP
  and FPR95, as mean ± sample standard deviation over the seeds found (the seeds are named);
- every anomaly score of ``anomaly_by_score`` for each model (AUROC and FPR95);
- the ablation: each variant of ``gmmseg_lab.experiments.ablation.VARIANTS`` found in the report,
  with its difference to ``default`` on the seeds both have (``default`` itself over all its seeds)
  and the component balance at the end of training (last logged ``decode.gmm_balance``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from gmmseg_lab.catalog import default_backbone  # noqa: E402
from gmmseg_lab.experiments.ablation import VARIANTS, variant_run_name  # noqa: E402
from gmmseg_lab.experiments.predictions import learning_curves  # noqa: E402
from gmmseg_lab.stats import metric_value  # noqa: E402

HEADLINE_SCORE = {"gmm": "neg_max_log_likelihood", "softmax": "max_softmax"}
SCORE_LABELS = {
    "max_softmax": "1 − max softmax",
    "entropy": "entropy",
    "max_logit": "−max logit",
    "energy": "energy (−logsumexp z)",
    "neg_max_log_likelihood": "−max log p(x\\|c)",
    "neg_logsumexp_log_likelihood": "−logsumexp log p(x\\|c)",
}


def mean_std(values) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def read(report: Path) -> dict[str, dict]:
    """run folder name -> {"record": run.json, "metrics": metrics.json, "path": folder} of finished runs."""
    runs = {}
    for run_dir in sorted((report / "work" / "runs").glob("*")):
        if (run_dir / "run.json").is_file() and (run_dir / "metrics.json").is_file():
            runs[run_dir.name] = {
                "record": json.loads((run_dir / "run.json").read_text()),
                "metrics": json.loads((run_dir / "metrics.json").read_text()),
                "path": run_dir,
            }
    if not runs:
        raise SystemExit(f"{report}: no finished run under work/runs/")
    return runs


def twins_table(runs: dict[str, dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for run in runs.values():
        rec = run["record"]
        if rec.get("gmm_cfg") or rec.get("gmm_head") or rec.get("cfg_options"):
            continue  # an ablation variant
        groups.setdefault(
            (rec["arch"], rec.get("backbone") or default_backbone(rec["arch"], rec["preset"]), rec["head"]), []
        ).append(run)
    lines = [
        "| model | head | seeds | mIoU ↑ | ECE ↓ (logits) | ECE ↓ (logits, after T) | ECE ↓ (Bayes posterior) "
        "| ECE ↓ (Bayes, after T) | AUROC ↑ | AP ↑ | FPR95 ↓ |",
        "|" + "---|" * 11,
    ]
    for (arch, backbone, head), members in sorted(groups.items()):
        members.sort(key=lambda r: r["record"]["seed"])
        m = [r["metrics"] for r in members]
        score = HEADLINE_SCORE[head]

        def col(*path):
            return mean_std([metric_value(x, path) for x in m])

        bayes = head == "gmm"
        lines.append(
            " | ".join(
                [
                    f"| {arch} ({backbone})",
                    head,
                    ", ".join(str(r["record"]["seed"]) for r in members),
                    col("miou"),
                    col("ece"),
                    col("temperature_scaling", "logits", "ece_after"),
                    col("bayes_posterior_calibration", "ece") if bayes else "—",
                    col("temperature_scaling", "bayes_posterior", "ece_after") if bayes else "—",
                    col("anomaly_by_score", score, "auroc"),
                    col("anomaly_by_score", score, "ap"),
                    col("anomaly_by_score", score, "fpr95"),
                ]
            )
            + " |"
        )
        temps = [metric_value(x, ("temperature_scaling", "logits", "temperature")) for x in m]
        lines.append(f"<!-- {arch} {head}: fitted temperature of the logits {mean_std(temps)} -->")
    return "\n".join(lines)


def scores_table(runs: dict[str, dict]) -> str:
    lines = ["| model | head | score | AUROC ↑ | FPR95 ↓ | mean F1 (components) ↑ |", "|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for run in runs.values():
        rec = run["record"]
        if not (rec.get("gmm_cfg") or rec.get("gmm_head") or rec.get("cfg_options")):
            groups.setdefault(
                (rec["arch"], rec.get("backbone") or default_backbone(rec["arch"], rec["preset"]), rec["head"]), []
            ).append(run)
    for (arch, backbone, head), members in sorted(groups.items()):
        m = [r["metrics"] for r in members]
        for score in m[0].get("anomaly_by_score", {}):
            lines.append(
                f"| {arch} ({backbone}) | {head} | {SCORE_LABELS.get(score, score)} | "
                f"{mean_std([metric_value(x, ('anomaly_by_score', score, 'auroc')) for x in m])} | "
                f"{mean_std([metric_value(x, ('anomaly_by_score', score, 'fpr95')) for x in m])} | "
                f"{mean_std([metric_value(x, ('anomaly_components_by_score', score, 'mean_f1')) for x in m])} |"
            )
    return "\n".join(lines)


def _balance(run_dir: Path) -> float | None:
    try:
        values = learning_curves(run_dir)["train"].get("decode.gmm_balance", [])
    except (OSError, ValueError, KeyError):
        return None
    values = [v for v in values if math.isfinite(v)]
    return float(values[-1]) if values else None


def ablation_table(runs: dict[str, dict], arch: str, preset: str, seeds: list[int]) -> str:
    lines = [
        "| variant | seeds | mIoU ↑ | Δ mIoU | AUROC ↑ | Δ AUROC | FPR95 ↓ | component balance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    reference: dict[int, dict] = {}
    for name, variant in VARIANTS.items():
        found = {s: runs.get(variant_run_name(arch, preset, s, name)) for s in seeds}
        found = {s: r for s, r in found.items() if r is not None}
        if not found:
            continue
        if name == "default":
            reference = found
        score = HEADLINE_SCORE["gmm"]
        miou = {s: r["metrics"]["miou"] for s, r in found.items()}
        auroc = {s: metric_value(r["metrics"], ("anomaly_by_score", score, "auroc")) for s, r in found.items()}
        fpr = [metric_value(r["metrics"], ("anomaly_by_score", score, "fpr95")) for r in found.values()]
        common = [s for s in found if s in reference]

        def delta(values, key):
            if name == "default" or not common:
                return "—"
            ref = [metric_value(reference[s]["metrics"], key) for s in common]
            return f"{np.mean([values[s] for s in common]) - np.mean(ref):+.3f}"

        balance = [_balance(r["path"]) for r in found.values()]
        lines.append(
            f"| `{name}`: {variant.label} | {', '.join(map(str, sorted(found)))} | "
            f"{mean_std(list(miou.values()))} | {delta(miou, ('miou',))} | {mean_std(list(auroc.values()))} | "
            f"{delta(auroc, ('anomaly_by_score', score, 'auroc'))} | {mean_std(fpr)} | {mean_std(balance)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, required=True, help="a folder written by gmmseg-lab report")
    parser.add_argument("--arch", default="segformer", help="the ablation's architecture (default segformer)")
    parser.add_argument("--preset", default="cpu", help="the report's training preset (default cpu)")
    args = parser.parse_args(argv)
    runs = read(args.report)
    seeds = sorted({r["record"]["seed"] for r in runs.values()})
    print("## The twins\n\n" + twins_table(runs))
    print("\n## Every anomaly score\n\n" + scores_table(runs))
    print("\n## The ablation\n\n" + ablation_table(runs, args.arch, args.preset, seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
