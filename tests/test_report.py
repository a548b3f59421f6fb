"""The report runner on tiny stand-in notebooks: order, reuse, failure, grids, validation, safety."""

from __future__ import annotations

import json
import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from gmmseg_lab.report.results import aggregate, format_mean_std, record_runs
from gmmseg_lab.report.runner import ReportRunner, code_fingerprint
from gmmseg_lab.report.spec import ReportSpecError, load_plan, notebook_parameters

INJECTED = textwrap.dedent("""\
    work_dir = None
    data_dir = None
    preset = "quick"
    data_seed = 0
    results_path = None
    live = True
""")


def write_notebook(path: Path, parameters: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(INJECTED + textwrap.dedent(parameters))
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(textwrap.dedent(body))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture()
def lab(tmp_path):
    """A notebooks folder and a report definition: a -> b (needs a), c fails, d needs c."""
    nbs, defs = tmp_path / "notebooks", tmp_path / "reports"
    nbs.mkdir()
    (defs / "presets").mkdir(parents=True)
    write_notebook(
        nbs / "a.ipynb",
        "seeds = [0]\nscale = 1.0\n",
        """
        import pathlib, time
        from gmmseg_lab.report import record_runs
        pathlib.Path(work_dir, "a_done").write_text(str(time.time()))
        record_runs(results_path, [{"group": {"model": "m"}, "seed": s, "metrics": {"miou": scale * (s + 1)}}
                                   for s in seeds])
    """,
    )
    write_notebook(
        nbs / "b.ipynb",
        "",
        """
        import pathlib
        assert pathlib.Path(work_dir, "a_done").is_file(), "b ran before a"
        pathlib.Path(work_dir, "b_runs.txt").open("a").write("x")
    """,
    )
    write_notebook(
        nbs / "c.ipynb",
        "",
        """
        raise RuntimeError("deliberate failure in c")
    """,
    )
    write_notebook(nbs / "d.ipynb", "", "print('never')\n")
    (defs / "presets" / "quick.yaml").write_text(
        textwrap.dedent("""\
        preset: quick
        notebooks:
          - name: a
            parameters: {seeds: [0, 1, 2]}
          - name: b
            needs: [a]
          - name: c
          - name: d
            needs: [c]
    """)
    )
    return nbs, defs


def runner(lab, out, **kw):
    nbs, defs = lab
    return ReportRunner(out, preset="quick", notebooks_dir=nbs, definitions_dir=defs, progress=False, **kw)


@pytest.mark.slow
def test_build_order_failure_reuse_and_index(lab, tmp_path):
    out = tmp_path / "out"
    r = runner(lab, out)
    summary = r.run()
    status = {name: job["status"] for name, job in summary["jobs"].items()}
    assert status == {"a": "ok", "b": "ok", "c": "failed", "d": "skipped"}
    assert "deliberate failure in c" in summary["jobs"]["c"]["error"]
    assert "needs c" in summary["jobs"]["d"]["error"]
    assert sorted(r.failed) == ["c", "d"]
    # executed notebooks and pages exist, also for the failed one (its error cell is visible)
    for name in ("a", "b", "c"):
        assert (out / "notebooks" / f"{name}.ipynb").is_file() and (out / "html" / f"{name}.html").is_file()
    assert "deliberate failure in c" in (out / "html" / "c.html").read_text()
    assert not list(out.rglob("*.partial")) and not list(out.rglob("*.tmp"))
    # summary: mean and sample std over the three seeds of a's records: 1, 2, 3
    (group,) = summary["groups"]
    assert group["group"] == {"model": "m"} and group["seeds"] == [0, 1, 2]
    assert group["metrics"]["miou"]["mean"] == pytest.approx(2.0) and group["metrics"]["miou"]["std"] == pytest.approx(
        1.0
    )
    assert json.loads((out / "summary.json").read_text())["groups"] == summary["groups"]
    index = (out / "index.html").read_text()
    assert "html/a.html" in index and "failed" in index and "deliberate failure in c" in index
    assert "2.000 ± 1.000" in index and "<script" not in index

    # rerun: finished notebooks are reused (b is not executed again), the failed one is retried
    summary2 = runner(lab, out).run()
    status2 = {name: job["status"] for name, job in summary2["jobs"].items()}
    assert status2 == {"a": "reused", "b": "reused", "c": "failed", "d": "skipped"}
    assert (out / "work" / "b_runs.txt").read_text() == "x"
    assert summary2["groups"] == summary["groups"]

    # an interrupted build: a's state says "running" (killed mid-way) -> a and only a is redone
    status_file = out / "jobs" / "a" / "status.json"
    state = json.loads(status_file.read_text())
    status_file.write_text(json.dumps({**state, "status": "running"}))
    summary3 = runner(lab, out).run()
    assert {n: j["status"] for n, j in summary3["jobs"].items()}["a"] == "ok"
    assert summary3["jobs"]["b"]["status"] == "reused"


@pytest.mark.slow
def test_grid_expands_one_notebook_per_combination(lab, tmp_path):
    nbs, defs = lab
    grid = tmp_path / "grid.yaml"
    grid.write_text("notebook: a\nparameters: {seeds: [0, 1]}\ngrid: {scale: [1.0, 10.0]}\n")
    (defs / "presets" / "quick.yaml").write_text("preset: quick\nnotebooks:\n  - name: a\n")
    out = tmp_path / "out"
    r = ReportRunner(out, preset="quick", grid=grid, notebooks_dir=nbs, definitions_dir=defs, progress=False, jobs=2)
    assert [j.name for j in r.plan.jobs] == ["a__scale-1.0", "a__scale-10.0"]
    summary = r.run()
    assert all(job["status"] == "ok" for job in summary["jobs"].values())
    # one group per combination (the grid value is part of the group); mean over seeds 0, 1 of scale*(s+1)
    groups = {g["group"]["scale"]: g for g in summary["groups"]}
    assert set(groups) == {1.0, 10.0}
    assert groups[1.0]["metrics"]["miou"]["mean"] == pytest.approx(1.5)
    assert groups[10.0]["metrics"]["miou"]["mean"] == pytest.approx(15.0)
    assert groups[10.0]["group"] == {"scale": 10.0, "model": "m"}
    nb = nbformat.read(str(out / "notebooks" / "a__scale-10.0.ipynb"), as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "scale = 10.0" in injected.source and "seeds = [0, 1]" in injected.source


def test_invalid_definitions_stop_before_any_work(lab, tmp_path):
    nbs, defs = lab
    out = tmp_path / "never"
    cases = {
        "preset: quick\nnotebooks:\n  - name: a\n    parameters: {sedes: [0]}\n": "no parameter 'sedes'",
        "preset: quick\nnotebooks:\n  - name: a\n    parameters: {seeds: 3}\n": "'seeds' = 3: expected a list",
        "preset: quick\nnotebooks:\n  - name: a\n    parameters: {seeds: [-1]}\n": "non-negative",
        "preset: quick\nnotebooks:\n  - name: a\n    parameters: {work_dir: /etc}\n": "set by the report runner",
        "preset: huge\nnotebooks:\n  - name: a\n": "'preset' must be one of",
        "preset: quick\nnotebooks:\n  - name: ../../etc/passwd\n": "'name' must be a notebook name",
        "preset: quick\nnotebooks:\n  - name: zz\n": "no notebook",
        "preset: quick\nnotebooks:\n  - name: b\n    needs: [a]\n": "'needs' must list notebooks defined above",
        "preset: quick\nnotbooks: []\n": "unknown key 'notbooks'",
        "preset: !!python/object/apply:os.system ['echo pwned']\nnotebooks: []\n": "not valid YAML",
        "preset: quick\nnotebooks:\n  - name: a\n  - name: a\n": "listed twice",
        "preset: quick\nnotebooks:\n  - name: a\n    parameters: {seeds: [0, 1, 0]}\n": "without repeated values",
        "preset: quick\nnotebooks:\n  - name: a\n  - name: b\n    needs: [[a]]\n": "'needs' must list",
        "preset: quick\nnotebooks:\n  - name: a\n    parameters: {data_seed: 3}\n": "set by the report runner",
    }
    for text, message in cases.items():
        (defs / "presets" / "quick.yaml").write_text(text)
        with pytest.raises(ReportSpecError, match=message.replace("(", r"\(").replace("[", r"\[")):
            runner(lab, out)
    assert not out.exists()  # nothing was created


def test_invalid_grid_files_name_the_key(lab, tmp_path):
    nbs, defs = lab
    grid = tmp_path / "grid.yaml"
    cases = {
        "notebook: a\ngrid: {scale: 2.0}\n": "grid.scale must be a non-empty list",
        "notebook: a\ngrid: {scael: [1.0]}\n": "no parameter 'scael'",
        "notebook: zz\ngrid: {scale: [1.0]}\n": "'notebook' must be one of",
        "notebook: a\ngrid: {seeds: [[0], 3]}\n": "'seeds' = 3: expected a list",
        "notebook: a\ngird: {scale: [1.0]}\n": "unknown key 'gird'",
        "[1, 2": "not valid YAML",
    }
    for text, message in cases.items():
        grid.write_text(text)
        with pytest.raises(ReportSpecError, match=message.replace("(", r"\(").replace("[", r"\[")):
            load_plan(defs / "presets" / "quick.yaml", nbs, grid)
    with pytest.raises(ReportSpecError, match="no such file"):
        load_plan(defs / "presets" / "quick.yaml", nbs, tmp_path / "missing.yaml")
    with pytest.raises(ReportSpecError, match="--jobs"):
        runner(lab, tmp_path / "x", jobs=0)


def test_grid_values_cannot_escape_the_output_folder(lab, tmp_path):
    nbs, defs = lab
    write_notebook(nbs / "e.ipynb", "tag = 'x'\n", "print(tag)\n")
    (defs / "presets" / "quick.yaml").write_text("preset: quick\nnotebooks:\n  - name: e\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text("notebook: e\ngrid: {tag: ['../../../../tmp/evil', '/etc/passwd']}\n")
    r = ReportRunner(
        tmp_path / "out", preset="quick", grid=grid, notebooks_dir=nbs, definitions_dir=defs, progress=False
    )
    for job in r.plan.jobs:
        assert "/" not in job.name and not job.name.startswith(".")
        assert r.out in r.job_dir(job).parents and r.out in r.html_out(job).parents


def test_notebook_parameters_and_fingerprint(lab):
    nbs, _ = lab
    params = notebook_parameters(nbs / "a.ipynb")
    assert params["seeds"] == [0] and params["scale"] == 1.0 and params["results_path"] is None
    assert len(code_fingerprint()) == 64


def test_results_aggregate_and_format(tmp_path):
    path = tmp_path / "r.json"
    record_runs(
        path, [{"group": {"h": "gmm"}, "seed": s, "metrics": {"miou": v}} for s, v in ((0, 0.5), (1, 0.7))], note="x"
    )
    res = json.loads(path.read_text())
    assert res["extra"] == {"note": "x"}
    (group,) = aggregate({"job": {"notebook": "n", **res}, "job2": {"notebook": "n", **res}})
    assert group["seeds"] == [0, 1] and group["jobs"] == ["job", "job2"]  # a run recorded twice counts once
    assert group["metrics"]["miou"]["n"] == 2
    assert format_mean_std(group["metrics"]["miou"]) == "0.600 ± 0.141"
    assert format_mean_std({"n": 1, "mean": 0.5, "std": 0.0}) == "0.500" and format_mean_std({}) == "n/a"
    with pytest.raises(ValueError, match="records\\[0\\]"):
        record_runs(path, [{"seed": 0}])
    assert record_runs(None, []) is None


def test_a_parameters_cell_that_is_not_plain_python_is_named(lab, tmp_path):
    nbs, defs = lab
    write_notebook(nbs / "m.ipynb", "%matplotlib inline\n", "print(1)\n")
    (defs / "presets" / "quick.yaml").write_text("preset: quick\nnotebooks:\n  - name: m\n")
    with pytest.raises(ReportSpecError, match="m.ipynb: its parameters cell is not plain Python"):
        runner(lab, tmp_path / "out")


def test_an_out_folder_with_another_data_set_is_refused_before_any_work(lab, tmp_path):
    out = tmp_path / "out"
    meta = out / "work" / "data" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"preset": "cpu", "seed": 0}))
    with pytest.raises(ReportSpecError, match="made with preset 'cpu' seed 0, this report needs preset 'quick'"):
        runner(lab, out)
    meta.write_text(json.dumps({"preset": "quick", "seed": 0}))
    runner(lab, out)  # the same data set: accepted


@pytest.mark.slow
def test_a_notebook_is_redone_when_a_run_it_used_changed_or_vanished(lab, tmp_path):
    """The runs a notebook used are part of its cache validity (deleting a run retrains it)."""
    nbs, defs = lab
    run = tmp_path / "fake_run"
    run.mkdir()
    (run / "metrics.json").write_text('{"miou": 0.5}')
    write_notebook(
        nbs / "u.ipynb",
        "",
        f"""
        import pathlib
        from gmmseg_lab.experiments.runs import note_run_used
        note_run_used(pathlib.Path({str(run)!r}))
        pathlib.Path(work_dir, "u_runs.txt").open("a").write("x")
    """,
    )
    (defs / "presets" / "quick.yaml").write_text("preset: quick\nnotebooks:\n  - name: u\n")
    out = tmp_path / "out"
    assert runner(lab, out).run()["jobs"]["u"]["status"] == "ok"
    assert str(run) in (out / "jobs" / "u" / "runs_used.jsonl").read_text()
    assert runner(lab, out).run()["jobs"]["u"]["status"] == "reused"
    (run / "metrics.json").write_text('{"miou": 0.6}')  # retrained: other numbers
    assert runner(lab, out).run()["jobs"]["u"]["status"] == "ok"
    assert runner(lab, out).run()["jobs"]["u"]["status"] == "reused"
    (run / "metrics.json").unlink()  # deleted
    assert runner(lab, out).run()["jobs"]["u"]["status"] == "failed"  # note_run_used needs metrics.json
    assert (out / "work" / "u_runs.txt").read_text() == "xx"  # executed twice; the third failed first


def test_a_grid_over_seeds_aggregates_its_jobs_as_the_seeds_of_one_group():
    results = {
        f"a__seeds-{s}": {
            "notebook": "a",
            "combination": {"seeds": [s]},
            "records": [{"group": {"model": "m"}, "seed": s, "metrics": {"miou": float(s)}}],
        }
        for s in (0, 1, 2)
    }
    (group,) = aggregate(results)
    assert group["group"] == {"model": "m"} and group["seeds"] == [0, 1, 2]
    assert group["metrics"]["miou"]["mean"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- the pages themselves
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """What a reader of an exported page meets: its contents block, headings, folded code, outputs, scripts."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, set]] = []
        self.toc_links: list[str] = []
        self.toc_texts: list[str] = []
        self.heading_ids: list[str] = []
        self.details_open: list[bool] = []
        self.summaries: list[str] = []
        self.editors_folded: list[bool] = []  # per code editor: inside a <details class="gl-code">
        self.stderr_blocks = 0
        self.script_srcs: list[str] = []
        self.output_text: list[str] = []
        self.markdown_text: list[str] = []
        self.feed(text)
        self.close()

    def inside(self, flag: str) -> bool:
        return any(flag in flags for _, flags in self.stack)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        flags = set()
        if tag == "nav" and "gl-toc" in classes:
            flags.add("toc")
        if tag == "a" and self.inside("toc"):
            self.toc_links.append(attrs.get("href") or "")
            flags.add("toc_link")
            self.toc_texts.append("")
        if tag == "details" and "gl-code" in classes:
            flags.add("code")
            self.details_open.append("open" in attrs)
        if tag == "summary" and self.inside("code"):
            flags.add("summary")
            self.summaries.append("")
        if "jp-InputArea-editor" in classes:
            self.editors_folded.append(self.inside("code"))
        if "jp-OutputArea-output" in classes:
            flags.add("output")
        if "jp-RenderedMarkdown" in classes:
            flags.add("markdown")
        if attrs.get("data-mime-type") == "application/vnd.jupyter.stderr" or "output_stderr" in classes:
            self.stderr_blocks += 1
        if tag in ("script", "style"):
            flags.add("script")
            if tag == "script" and attrs.get("src"):
                self.script_srcs.append(attrs["src"])
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456" and attrs.get("id") and not self.inside("toc"):
            self.heading_ids.append(attrs["id"])
        if tag not in _VOID:
            self.stack.append((tag, flags))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        if self.inside("script"):
            return
        if self.inside("toc_link"):
            self.toc_texts[-1] += data
        if self.inside("summary"):
            self.summaries[-1] += data
        if self.inside("output"):
            self.output_text.append(data)
        if self.inside("markdown"):
            self.markdown_text.append(data)


def test_export_folds_code_links_every_heading_and_loads_nothing(tmp_path):
    from gmmseg_lab.report._execute import export_html

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed = 0")
    params.metadata["tags"] = ["parameters"]
    shown = nbformat.v4.new_code_cell(
        "print('hello')", execution_count=2, outputs=[nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    )
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 00 · A title\nSome text with p(x|c) = Σ<sub>m</sub> π<sub>m</sub>."),
        params,
        shown,
        nbformat.v4.new_markdown_cell("## A *part*, with: punctuation?\n\n### Sub-part"),
        nbformat.v4.new_code_cell(""),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    ipynb, html = tmp_path / "n.ipynb", tmp_path / "n.html"
    nbformat.write(nb, str(ipynb))
    export_html(ipynb, html)
    page = Page(html.read_text())
    assert page.toc_texts == ["00 · A title", "A part, with: punctuation?", "Sub-part"]
    assert page.toc_links == ["#" + i for i in page.heading_ids] and len(page.heading_ids) == 3
    assert page.details_open == [False, False]  # the two cells with code; the empty one has none
    assert [s.strip() for s in page.summaries] == ["show code (parameters)", "show code"]
    assert page.editors_folded == [True, True]
    assert "hello" in "".join(page.output_text) and page.stderr_blocks == 0
    assert page.script_srcs == []  # nothing is loaded: no require.js, no MathJax, no widget manager
    assert "Σ" in "".join(page.markdown_text) and "<sub>" not in "".join(page.markdown_text)


@pytest.mark.slow
def test_report_pages_have_contents_folded_code_no_warnings_and_offline_math(quick_report):
    pages = sorted((quick_report.out / "html").glob("*.html"))
    assert len(pages) == 7
    for path in pages:
        name = path.stem
        page = Page(path.read_text())
        nb = nbformat.read(str(quick_report.out / "notebooks" / f"{name}.ipynb"), as_version=4)
        # a contents block at the top, linking every markdown heading of the notebook
        headings = [
            line
            for c in nb.cells
            if c.cell_type == "markdown"
            for line in c.source.splitlines()
            if re.match(r"#{1,6} ", line)
        ]
        assert len(headings) >= 3, name
        assert len(page.heading_ids) == len(headings), (name, page.heading_ids)
        assert page.toc_links == ["#" + i for i in page.heading_ids], name
        # every code cell folded behind a closed <details>
        code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        assert len(page.details_open) == len(code) and not any(page.details_open), name
        assert page.editors_folded and all(page.editors_folded), name
        # no stderr block, no warning in any output, in the page or in the executed notebook
        assert page.stderr_blocks == 0, name
        text = "".join(page.output_text)
        assert not re.search(r"warning", text, re.IGNORECASE), (name, text[text.lower().find("warning") - 300 :][:600])
        streams = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "stream"]
        assert not [o for o in streams if o.get("name") == "stderr"], name
        # math as text: no script from anywhere, no TeX left for a MathJax that is not there
        assert page.script_srcs == [], (name, page.script_srcs)
        markdown = "".join(page.markdown_text)
        assert not re.search(r"\$|\\\(|\\\[|\\frac|\\sum|\\log", markdown), name
    calibration = "".join(Page((quick_report.out / "html" / "04_calibration.html").read_text()).markdown_text)
    assert "ECE = Σ" in " ".join(calibration.split()) and "√(C − 1)" in calibration
