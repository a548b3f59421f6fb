"""JupyterLab smoke test: the live notebook as a person uses it.

Starts ``jupyter lab`` on loopback (isolated config, data, runtime, settings and workspace folders in
tmp; nothing in the user's home is touched), opens ``02_component_assignments`` in headless Chromium,
runs every cell against the quick report's trained models, checks that no cell failed and that the
ipywidgets view (:func:`gmmseg_lab.viz.components.component_widget`) draws its plotly figures, then
picks another class in the widget's dropdown and checks the view changed: in the figures' data read
from the page and in two screenshots (before / after, kept in the test's tmp folder, paths printed).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import browser
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser.skip_reason() is not None, reason=str(browser.skip_reason())),
]

NOTEBOOK = "02_component_assignments.ipynb"
NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
PARAMETERS = (
    "arch",
    "seed",
    "max_images",
    "checkpoint",
    "images",
    "work_dir",
    "data_dir",
    "preset",
    "data_seed",
    "results_path",
    "live",
)

SERVER_START_S = 180  # jupyter lab answering /api/status
KERNEL_IDLE_S = 240  # page loaded, notebook open, kernel started and idle
RUN_ALL_S = 480  # every cell run (imports, predictions on 4 images, 4 figures, the widget)
REDRAW_S = 180  # the widget's callback redrawing both figures after a control change
MIN_CHANGED_PIXELS = 0.02  # share of the widget's screenshot that must change


# ----------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(no log: {err})"
    return text[-chars:]


def _write_notebook(folder: Path, work_dir: Path, data_dir: Path) -> Path:
    """The notebook with its parameters cell pointing at the quick report's data and trained runs."""
    nb = json.loads((NOTEBOOKS_DIR / NOTEBOOK).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{NOTEBOOK} should have exactly one cell tagged 'parameters', found {len(cells)}"
    source = "".join(cells[0]["source"])
    missing = [name for name in PARAMETERS if f"{name} =" not in source]
    assert not missing, f"{NOTEBOOK}'s parameters cell lacks {missing}; update this test:\n{source}"
    values = dict(
        arch="segformer",
        seed=0,
        max_images=4,
        checkpoint=None,  # the run notebook 01 trained, on the labelled validation images
        images=None,
        work_dir=str(work_dir),
        data_dir=str(data_dir),
        preset="quick",
        data_seed=0,
        results_path=None,
        live=True,
    )
    cells[0]["source"] = "\n".join(f"{name} = {values[name]!r}" for name in PARAMETERS)
    for cell in nb["cells"]:  # start clean, as a fresh copy of the notebook
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    path = folder / NOTEBOOK
    path.write_text(json.dumps(nb, indent=1))
    return path


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings for the isolated lab: no news / update toasts over the notebook, and no notebook
    windowing (every cell is laid out, so off-screen outputs draw as on-screen ones)."""
    overrides = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for rel, value in overrides.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


class LabServer:
    def __init__(self, root: Path, home: Path):
        self.root, self.home = root, home
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.log = home / "jupyter-lab.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"

    def start(self) -> None:
        dirs = {name: self.home / name for name in ("config", "data", "runtime", "settings", "workspaces", "ipython")}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        _write_lab_settings(dirs["settings"])
        env = dict(os.environ)
        env.update(
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            # user-level Jupyter folders in tmp; the venv's own share/jupyter (kernelspec, the widgets and
            # plotly lab extensions) stays on the search path (sys.prefix), and comes first
            JUPYTER_CONFIG_DIR=str(dirs["config"]),
            JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
            JUPYTER_PREFER_ENV_PATH="1",
            JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
            JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
            IPYTHONDIR=str(dirs["ipython"]),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers, CI
            cmd.append("--allow-root")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + SERVER_START_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"jupyter lab exited with code {self.proc.returncode} before answering; "
                    f"log {self.log}:\n{_tail(self.log)}"
                )
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as response:
                    if response.status == 200:
                        json.loads(response.read())
                        return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError) as err:
                last = err
            time.sleep(1)
        raise AssertionError(
            f"jupyter lab did not answer {self.base}/api/status in {SERVER_START_S} s "
            f"(last error: {last}); log {self.log}:\n{_tail(self.log)}"
        )

    def stop(self) -> None:
        """SIGTERM (the server shuts its kernels down), then SIGKILL to its process group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # jupyter_server stops on SIGTERM, shutting its kernels down
        try:
            self.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pass
        try:  # anything left in the server's session (a kernel that outlived it)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=15)


@pytest.fixture
def lab(quick_report, tmp_path):
    """A running JupyterLab whose root holds the rewritten notebook; stopped on teardown."""
    work_dir, data_dir = Path(quick_report.out) / "work", Path(quick_report.out) / "work" / "data"
    run = work_dir / "runs" / "segformer_gmm_quick_s0"
    assert (run / "metrics.json").is_file(), f"the quick report has no trained {run.name} (looked in {run})"
    root = tmp_path / "lab"
    root.mkdir()
    _write_notebook(root, work_dir, data_dir)
    server = LabServer(root, tmp_path / "jupyter")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        print(f"\njupyter lab log: {server.log}")


@pytest.fixture
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = browser.launch(pw)
        try:
            yield b
        finally:
            b.close()


# ----------------------------------------------------------------------------------- page scripts
# The notebook panel of our file (window.jupyterapp is exposed by --LabApp.expose_app_in_browser).
_PANEL = f"""(() => {{
    const app = window.jupyterapp;
    if (!app || !app.shell) return null;
    return Array.from(app.shell.widgets('main')).find(
        w => w.context && w.context.path && w.context.path.endsWith('{NOTEBOOK}') && w.content && w.sessionContext) || null;
}})()"""

KERNEL_IDLE = f"""() => {{
    const panel = {_PANEL};
    if (!panel || !panel.context.isReady) return false;
    const s = panel.sessionContext;
    return !!(s.session && s.session.kernel && s.kernelDisplayStatus === 'idle');
}}"""

RUN_ALL = f"""async () => {{
    const app = window.jupyterapp, panel = {_PANEL};
    app.shell.activateById(panel.id);
    await app.commands.execute('notebook:run-all-cells');
}}"""

# Each code cell's execution count and outputs (nbformat JSON), and the kernel's status.
CELLS = f"""() => {{
    const panel = {_PANEL};
    const cells = panel.content.widgets.filter(c => c.model.type === 'code').map(c => ({{
        count: c.model.executionCount,
        outputs: c.model.outputs.toJSON(),
        source: c.model.sharedModel.getSource().slice(0, 80),
    }}));
    return {{status: panel.sessionContext.kernelDisplayStatus, cells}};
}}"""

# What the widget's plotly figures show: titles, annotation texts and a digest of every image source.
FIGURES = """(widget) => Array.from(widget.querySelectorAll('.js-plotly-plot')).map(gd => {
    const digest = s => { let h = 0; for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0; return s.length + ':' + h; };
    const layout = gd.layout || {};
    return {
        title: (layout.title && layout.title.text) || '',
        annotations: (layout.annotations || []).map(a => a.text || ''),
        sources: (gd.data || []).map(t => t.source ? digest(t.source) : null),
        traces: (gd.data || []).map(t => t.type + ':' + (t.name || '')),
        // the overlay's hover layer names the predicted class of each sampled pixel
        predicted: Array.from(new Set((gd.data || []).filter(t => t.type === 'heatmap')
                                      .flatMap(t => (t.text || []).flat()))).sort(),
        drawn: gd.querySelectorAll('svg.main-svg').length,
    };
})"""


def _errors(cells: list[dict]) -> list[str]:
    found = []
    for i, cell in enumerate(cells):
        for out in cell["outputs"]:
            if out.get("output_type") == "error":
                tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", [])))  # no ANSI colours
                found.append(f"cell {i} ({cell['source']!r}): {out.get('ename')}: {out.get('evalue')}\n{tb}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                if "Traceback" in text:
                    found.append(f"cell {i} ({cell['source']!r}) wrote a traceback to stderr:\n{text}")
    return found


def _wait_run_all(page, timeout_s: float) -> list[dict]:
    """Poll until every code cell has run and the kernel is idle; fail at the first error output."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(CELLS)
        errors = _errors(state["cells"])
        assert not errors, "a cell failed:\n" + "\n\n".join(errors)
        if state["status"] == "idle" and all(c["count"] is not None for c in state["cells"]):
            return state["cells"]
        page.wait_for_timeout(1000)
    pending = (
        [f"cell {i}: {c['source']!r} (count {c['count']})" for i, c in enumerate(state["cells"]) if c["count"] is None]
        if state
        else "?"
    )
    raise AssertionError(
        f"run-all did not finish in {timeout_s:.0f} s (kernel {state and state['status']}); not run: {pending}"
    )


def _changed_share(before: Path, after: Path) -> tuple[float, tuple, tuple]:
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(before).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(after).convert("RGB"), dtype=np.int16)
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    changed = (np.abs(a[:h, :w] - b[:h, :w]).max(-1) > 24).sum()
    total = max(a.shape[0], b.shape[0]) * max(a.shape[1], b.shape[1])
    changed += total - h * w  # a size change counts as changed area
    return float(changed) / total, a.shape, b.shape


def _wait(page, script: str, what: str, timeout_s: float, arg=None) -> None:
    """``page.wait_for_function`` that fails with what the page shows (dialogs, kernel status)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(script, arg=arg, timeout=timeout_s * 1000, polling=500)
    except PlaywrightTimeout:
        seen = page.evaluate(f"""() => {{
            const panel = {_PANEL};
            return {{dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText),
                     notebook: panel ? panel.context.path : null,
                     kernel: panel ? panel.sessionContext.kernelDisplayStatus : null}}; }}""")
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; the page shows {seen}") from None


# ----------------------------------------------------------------------------------- the test
def test_live_widget_in_jupyterlab(lab, chromium, tmp_path):
    import numpy as np
    from PIL import Image

    shots = tmp_path / "screenshots"
    shots.mkdir()
    # tall enough for the whole widget (controls, overlay, posteriors) to fit on screen
    context = chromium.new_context(viewport={"width": 1400, "height": 1700})
    page = context.new_page()
    page_errors: list[str] = []
    console_errors: list[str] = []
    page.on("pageerror", lambda err: page_errors.append(str(err)))
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    t0 = time.monotonic()
    try:
        page.goto(lab.url(f"lab/tree/{NOTEBOOK}"), wait_until="domcontentloaded", timeout=120_000)
        _wait(page, KERNEL_IDLE, "the notebook to open with an idle kernel", KERNEL_IDLE_S)
        print(f"\nnotebook open, kernel idle after {time.monotonic() - t0:.0f} s")

        page.evaluate(RUN_ALL)
        cells = _wait_run_all(page, RUN_ALL_S)
        print(f"all {len(cells)} code cells ran after {time.monotonic() - t0:.0f} s")
        last = cells[-1]
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in last["outputs"]), (
            f"the last cell displayed no widget (is live still True?); its outputs: {last['outputs']}"
        )

        # the widget, drawn by the widgets extension in the last cell's output, with its plotly figures
        widget = (
            page.locator(".jp-Notebook .jp-CodeCell")
            .last.locator(".jp-OutputArea-output .jupyter-widgets.widget-vbox")
            .first
        )
        widget.wait_for(state="visible", timeout=60_000)
        dropdown = widget.locator(".widget-dropdown select").first
        dropdown.wait_for(state="visible", timeout=30_000)
        handle = widget.element_handle()
        _wait(
            page,
            "(w) => { const f = w.querySelectorAll('.js-plotly-plot'); return f.length >= 2 && "
            "Array.from(f).every(gd => gd.querySelector('svg.main-svg') && gd.data && gd.layout); }",
            "the widget's two plotly figures (overlay, posteriors) to be drawn",
            120,
            arg=handle,
        )
        text = widget.inner_text()
        assert "Error displaying widget" not in text, f"the widget failed to render: {text[:500]}"
        before_state = page.evaluate(FIGURES, handle)
        assert len(before_state) == 2, f"expected 2 figures in the widget, found {len(before_state)}: {before_state}"
        assert any(before_state[0]["sources"]), f"the overlay figure shows no image: {before_state[0]}"

        widget.scroll_into_view_if_needed()
        page.wait_for_timeout(1500)  # let plotly finish its layout before the picture
        before = shots / "01_widget_before.png"
        widget.screenshot(path=str(before))
        colours = len(np.unique(np.asarray(Image.open(before).convert("RGB")).reshape(-1, 3), axis=0))
        assert colours > 50, f"the widget's screenshot is nearly blank ({colours} colours): {before}"

        # move a control: another class in the class dropdown. Pick a class the model predicts in the
        # image (its pixels stay in colour, the rest washes out), other than the one the posterior figure
        # examines now (the centre pixel's), so both figures must change.
        options = [o.replace("\xa0", " ") for o in dropdown.locator("option").all_inner_texts()]  # widgets use nbsp
        assert len(options) >= 2 and options[0] == "all classes", f"unexpected class options {options}"
        shown = [a for a in before_state[1]["annotations"] if "class = " in a]
        others = [o for o in options[1:] if not any(f"class = {o})" in a for a in shown)]
        assert others, f"no class to choose besides the one shown: options {options}, posterior {shown}"
        predicted = before_state[0]["predicted"]
        chosen = next((o for o in others if o in predicted), others[0])
        print(f"classes predicted in the image: {predicted}; choosing {chosen!r}")
        dropdown.select_option(label=chosen)
        _wait(
            page,
            "([w, old]) => { const f = w.querySelectorAll('.js-plotly-plot'); if (f.length < 2) return false;"
            " if (!Array.from(f).every(gd => gd.querySelector('svg.main-svg') && gd.data)) return false;"
            f" const now = ({FIGURES})(w);"
            " return JSON.stringify(now[0].sources) !== JSON.stringify(old[0].sources) &&"
            " JSON.stringify(now[1].annotations) !== JSON.stringify(old[1].annotations); }",
            f"both figures to be redrawn for class {chosen!r}",
            REDRAW_S,
            arg=[handle, before_state],
        )
        _wait(page, KERNEL_IDLE, "the kernel to be idle after the redraw", REDRAW_S)
        page.wait_for_timeout(1500)
        after_state = page.evaluate(FIGURES, handle)
        widget.scroll_into_view_if_needed()
        after = shots / "02_widget_after.png"
        widget.screenshot(path=str(after))
        full = shots / "03_page_after.png"
        page.screenshot(path=str(full))
        print(f"screenshots: {before}\n             {after}\n             {full}")

        errors = _errors(page.evaluate(CELLS)["cells"])
        assert not errors, "the widget's callback failed:\n" + "\n\n".join(errors)
        # the figures' data in the page changed: the overlay's image and the posterior's class ...
        assert after_state[0]["sources"] != before_state[0]["sources"], (
            f"choosing class {chosen!r} did not change the overlay image: {before_state[0]} -> {after_state[0]}"
        )
        assert any(f"class = {chosen})" in a for a in after_state[1]["annotations"]), (
            f"the posterior figure does not examine class {chosen!r}: {after_state[1]['annotations']}"
        )
        assert after_state[0]["title"] == before_state[0]["title"], "the overlay figure was replaced by another"
        # ... and so did the picture
        share, shape_before, shape_after = _changed_share(before, after)
        print(
            f"class {chosen!r}: {share:.1%} of the widget's pixels changed ({shape_before} -> {shape_after}); "
            f"{time.monotonic() - t0:.0f} s in the browser"
        )
        assert share >= MIN_CHANGED_PIXELS, (
            f"only {share:.2%} of the widget's pixels changed after choosing {chosen!r} (see {before}, {after})"
        )
        if page_errors or console_errors:
            print("page / console errors (not fatal):", *page_errors, *console_errors[-20:], sep="\n  ")
    except BaseException:
        try:
            page.screenshot(path=str(shots / "failure.png"))
            print(f"\nfailure screenshot: {shots / 'failure.png'}")
        except Exception as err:  # noqa: BLE001 - the page may be gone
            print(f"\n(no failure screenshot: {err})")
        print(f"page errors: {page_errors}\nconsole errors: {console_errors[-20:]}")
        print(f"jupyter lab log {lab.log}:\n{_tail(lab.log)}")
        raise
    finally:
        context.close()
