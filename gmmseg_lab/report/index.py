"""``index.html``: one self-contained page (no script, no network) linking every executed notebook."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

from ..io_utils import atomic_write_text
from ..stats import headline
from .results import format_mean_std

#: Columns of the summary table: (metric, label, higher is better).
SUMMARY_COLUMNS = tuple(
    (m.key, m.label, m.higher_is_better) for m in headline("miou", "ece", "bayes_ece", "auroc", "ap", "fpr95")
)
STATUS_COLOUR = {
    "ok": "#1a7f37",
    "reused": "#0969da",
    "failed": "#cf222e",
    "skipped": "#9a6700",
    "pending": "#57606a",
    "running": "#57606a",
}

CSS = """
body{font-family:"DejaVu Sans",Arial,sans-serif;margin:2em auto;max-width:1200px;color:#1f2328;padding:0 1em}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} th,td{border:1px solid #d0d7de;padding:.3em .6em;
text-align:left;vertical-align:top} th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{font-weight:bold} .err{color:#cf222e;font-family:monospace;white-space:pre-wrap;max-width:40em}
.note{color:#57606a;font-size:.9em} code{background:#f6f8fa;padding:0 .2em}
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _group_text(group: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def render_index(summary: dict) -> str:
    """The page as a string: ``summary.json``'s content and the time it was built."""
    jobs = summary["jobs"]
    n_ok = sum(j["status"] in ("ok", "reused") for j in jobs.values())
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>GMMSeg lab report ({_esc(summary['preset'])})</title><style>{CSS}</style></head><body>",
        f"<h1>GMMSeg lab report: preset <code>{_esc(summary['preset'])}</code></h1>",
        f"<p class='note'>Built {built}. {n_ok} of {len(jobs)} notebooks succeeded. Data set: embedded "
        f"<code>{_esc(summary['preset'])}</code> preset, data seed {summary['data_seed']}."
        + (f" Grid: <code>{_esc(summary['grid'])}</code>." if summary.get("grid") else "")
        + "</p>",
        "<h2>Notebooks</h2><table><tr><th>notebook</th><th>parameters</th><th>status</th><th>time</th>"
        "<th>open</th></tr>",
    ]
    for name, job in jobs.items():
        colour = STATUS_COLOUR.get(job["status"], "#57606a")
        links = []
        if job.get("html"):
            links.append(f"<a href='{_esc(job['html'])}'>page</a>")
        if job.get("notebook_file"):
            links.append(f"<a href='{_esc(job['notebook_file'])}'>.ipynb</a>")
        params = json.dumps(job["parameters"], sort_keys=True) if job["parameters"] else "defaults"
        error = f"<div class='err'>{_esc(job['error'])}</div>" if job.get("error") else ""
        parts.append(
            f"<tr id='job-{_esc(name)}'><td>{_esc(name)}</td><td><code>{_esc(params)}</code></td>"
            f"<td><span class='status' style='color:{colour}'>{_esc(job['status'])}</span>{error}</td>"
            f"<td class='num'>{job['seconds']:.0f} s</td><td>{' · '.join(links) or '—'}</td></tr>"
        )
    parts.append("</table>")

    groups = summary.get("groups") or []
    if groups:
        parts.append("<h2>Results (mean ± sample std over seeds)</h2>")
        parts.append(
            "<p class='note'>↑ higher is better, ↓ lower is better. Anomaly scores: GMMSeg "
            "−max<sub>c</sub> log p(x|c), softmax 1 − max p(c|x). ECE (Bayes) is the calibration of "
            "GMMSeg's posterior softmax<sub>c</sub> log p(x|c).</p>"
        )
        parts.append(
            "<table><tr><th>notebook</th><th>settings</th><th>seeds</th>"
            + "".join(f"<th>{label} {'↑' if up else '↓'}</th>" for _, label, up in SUMMARY_COLUMNS)
            + "</tr>"
        )
        for g in groups:
            cells = "".join(
                f"<td class='num'>{_esc(format_mean_std(g['metrics'].get(key)))}</td>" for key, _, _ in SUMMARY_COLUMNS
            )
            parts.append(
                f"<tr><td>{_esc(g['notebook'])}</td><td>{_esc(_group_text(g['group']))}</td>"
                f"<td>{_esc(', '.join(str(s) for s in g['seeds']))}</td>{cells}</tr>"
            )
        parts.append("</table>")
    parts.append("<p class='note'>All metrics of every run: <a href='summary.json'>summary.json</a>.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_index(path: Path, summary: dict) -> Path:
    return atomic_write_text(path, render_index(summary))
