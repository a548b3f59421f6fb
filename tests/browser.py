"""Open pages in headless Chromium (the system's Debian package, driven by Playwright) as a person would.

Used by the browser tests; they skip with a reason where Chromium or Playwright is absent (``.ci/run``
installs Chromium, so CI always runs them).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def skip_reason() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return "no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
    return None


@dataclass
class PageCheck:
    url: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    plotly_divs: int = 0
    plotly_drawn: int = 0
    main_svgs: int = 0
    title: str = ""

    @property
    def problems(self) -> list[str]:
        out = [f"console error: {e}" for e in self.console_errors]
        out += [f"page error: {e}" for e in self.page_errors]
        out += [f"failed request: {e}" for e in self.failed_requests]
        if self.plotly_drawn < self.plotly_divs:
            out.append(f"{self.plotly_divs - self.plotly_drawn} of {self.plotly_divs} plotly figures not drawn")
        return out


def launch(playwright):
    return playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS)


def check_page(browser, path: Path, screenshot: Path | None = None, settle_ms: int = 1500) -> PageCheck:
    """Load a local page offline, collect console / page errors and failed requests, count plotly figures."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    page = context.new_page()
    result = PageCheck(url=path.resolve().as_uri())
    page.on("console", lambda msg: result.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: result.page_errors.append(str(err)))
    page.on("requestfailed", lambda req: result.failed_requests.append(f"{req.url} ({req.failure})"))
    page.goto(result.url, wait_until="load", timeout=120_000)
    page.wait_for_timeout(settle_ms)
    result.title = page.title()
    # plotly marks a drawn figure's div with .js-plotly-plot and puts its drawing in svg.main-svg
    result.plotly_divs = page.locator("div.plotly-graph-div").count()
    result.plotly_drawn = page.locator("div.plotly-graph-div.js-plotly-plot").count()
    result.main_svgs = page.locator("svg.main-svg").count()
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=False)
    context.close()
    return result
