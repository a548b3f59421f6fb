"""The built report opened in headless Chromium, offline, as a reader would: no console errors, no
failed requests, every plotly figure drawn; one static menu operated to check it changes the view."""

from __future__ import annotations

import browser
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser.skip_reason() is not None, reason=str(browser.skip_reason())),
]


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = browser.launch(pw)
        yield b
        b.close()


def test_index_and_every_notebook_page_render_offline(quick_report, chromium, tmp_path):
    out = quick_report.out
    index = browser.check_page(chromium, out / "index.html", tmp_path / "index.png")
    assert not index.problems, index.problems
    assert "GMMSeg lab report" in index.title
    pages = sorted((out / "html").glob("*.html"))
    assert len(pages) == 7
    for page in pages:
        result = browser.check_page(chromium, page, tmp_path / f"{page.stem}.png")
        assert not result.problems, (page.name, result.problems)
        assert result.plotly_divs >= 1 and result.plotly_drawn == result.plotly_divs, page.name
        assert result.main_svgs >= result.plotly_divs, page.name


def test_static_menu_changes_the_view(quick_report, chromium):
    """In the component page, the image menu of the overlay swaps the picture, without a kernel."""
    page_path = quick_report.out / "html" / "02_component_assignments.html"
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    page = context.new_page()
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    page.wait_for_selector("div.js-plotly-plot")
    state = """() => { const gd = document.querySelector('div.js-plotly-plot');
                       return JSON.stringify(gd.data.map(t => [t.name, t.visible])); }"""
    before = page.evaluate(state)
    plot = page.locator("div.js-plotly-plot").first
    headers = plot.locator("g.updatemenu-header-group")
    assert headers.count() >= 1, "the overlay figure has no menu"
    headers.first.click()  # the image menu opens its options
    options = plot.locator("g.updatemenu-dropdown-button-group > g")
    options.first.wait_for(state="visible")
    assert options.count() >= 2, "the image menu offers one image only"
    assert "val_00001" in options.nth(1).text_content()
    options.nth(1).click()
    page.wait_for_timeout(800)
    after = page.evaluate(state)
    visible = [name for name, shown in __import__("json").loads(after) if shown is True and name]
    context.close()
    assert after != before, "choosing another image in the menu did not change the figure"
    assert any("00001" in name for name in visible), visible


def test_code_is_folded_and_the_contents_block_works(quick_report, chromium):
    """A reader sees figures and text first: code opens per cell (and all at once from the contents
    block), each contents link brings its heading into view, formulas show as text; all offline."""
    page_path = quick_report.out / "html" / "04_calibration.html"
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    page.wait_for_selector("div.js-plotly-plot")
    folded = page.locator("details.gl-code")
    editors = page.locator("details.gl-code .jp-InputArea-editor")
    count = folded.count()
    assert count >= 5 and editors.count() == count
    assert page.evaluate("() => Array.from(document.querySelectorAll('details.gl-code')).every(d => !d.open)")
    assert not any(editors.nth(i).is_visible() for i in range(count)), "code is shown before it is asked for"
    assert page.locator("div.plotly-graph-div").first.is_visible()
    # one cell's code, by its own summary (no script involved)
    folded.nth(2).locator("summary").click()
    assert editors.nth(2).is_visible() and not editors.nth(3).is_visible()
    # every cell's code, by the contents block's button, and back
    toggle = page.locator("nav.gl-toc button.gl-code-toggle")
    toggle.click()
    assert page.evaluate("() => Array.from(document.querySelectorAll('details.gl-code')).every(d => d.open)")
    assert toggle.text_content() == "hide all code"
    toggle.click()
    assert page.evaluate("() => Array.from(document.querySelectorAll('details.gl-code')).every(d => !d.open)")
    # each contents link scrolls its heading into view
    links = page.locator("nav.gl-toc a")
    assert links.count() >= 4
    for i in (links.count() - 1, 1):
        target = links.nth(i).get_attribute("href")[1:]
        links.nth(i).click()
        page.wait_for_timeout(300)
        top, at_end = page.evaluate(
            "(id) => { const h = document.getElementById(id); const e = document.scrollingElement; "
            "return [h ? h.getBoundingClientRect().top : null, "
            "e.scrollTop + window.innerHeight >= e.scrollHeight - 2]; }",
            target,
        )
        # near the top of the window, unless the page ends first (a heading near the end of the page
        # cannot scroll higher than the page's last screen)
        assert top is not None and -5 <= top < 1000 and (top < 300 or at_end), (
            target,
            top,
            at_end,
        )  # 1000: the viewport
    # formulas are text, with HTML subscripts
    assert page.locator(".jp-RenderedMarkdown sub").count() > 5
    context.close()
    assert not errors, errors
