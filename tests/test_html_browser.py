"""The --html page in a real headless browser (Debian's chromium, driven by selenium):
clicking any entry explains it with the value step reports and lights up its sources, Enter
on a focused entry does the same, the arrow keys walk the stages, and the page opens from
disk with nothing fetched. Skipped, with the reason, where no browser can be had."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from cnntrace.explain import explain_entry, parse_term
from cnntrace.io import load_problem
from cnntrace.render import View
from cnntrace.render import html as render_html
from cnntrace.render.explanation import render_text
from cnntrace.tracer import run
from tests.inputs import REFERENCE, SAMPLES
from tests.page_script import explanations

SOFTMAX = SAMPLES / "rgb-softmax.json"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install '.[browser]'"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing: apt-get install chromium chromium-driver"
    return None


pytestmark = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cnntrace-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={profile}", "--window-size=1366,768"):
        options.add_argument(flag)
    # An explicit driver: selenium's manager never looks for (or downloads) one.
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as error:  # noqa: BLE001 - any failure to start is "no browser here"
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"chromium would not start: {str(error).splitlines()[0]}")
    # The network off: the page must not need it.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(browser, tmp_path_factory, source: Path, **view):
    trace = run(load_problem(source))
    path = tmp_path_factory.mktemp("page") / "trace.html"
    path.write_text(render_html.render(trace, View(**view)), encoding="utf-8")
    browser.get(path.as_uri())
    wait_ready(browser)
    return trace


def wait_ready(browser):
    """Until the page has read its numbers (<html data-ready>)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.documentElement.dataset.ready"))


def click(browser, selector: str):
    """Click the element as a user would: in view, not under the sticky header."""
    from selenium.webdriver.common.by import By

    element = browser.find_element(By.CSS_SELECTOR, selector)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()
    return element


def explanation(browser) -> str:
    return browser.execute_script("return document.getElementById('explanation').textContent")


def lit(browser) -> set[str]:
    return set(browser.execute_script(
        "return Array.from(document.querySelectorAll('.source'))"
        ".map(e => e.dataset.term !== undefined ? 't:' + e.dataset.term : 'i:' + e.dataset.input)"))


@pytest.mark.parametrize("source", [REFERENCE, SOFTMAX], ids=["reference", "rgb-softmax"])
def test_clicking_every_entry_explains_it_as_explain_does_with_its_sources_lit(browser, tmp_path_factory, source):
    trace = open_page(browser, tmp_path_factory, source)
    (made,) = explanations(browser.execute_script("return document.documentElement.outerHTML"))
    expected = {}
    for term, entry in made.items():
        name, index = parse_term(term)
        expected[term] = {"text": render_text(explain_entry(trace, name, index), 4).rstrip("\n"),
                          "sources": sorted(entry["sources"])}
    # Every cell clicked in the page itself: what the click left in #explanation is explain's
    # text, and the cells lit are the ones its factors read.
    problems = browser.execute_script("""
        var want = arguments[0], out = [], cells = document.querySelectorAll('[data-term]');
        cells.forEach(function (el) {
          el.click();
          var text = document.getElementById('explanation').textContent;
          if (text !== want[el.dataset.term].text) { out.push([el.dataset.term, text, want[el.dataset.term].text]); }
          var lit = Array.from(document.querySelectorAll('.source')).map(function (e) {
            return e.dataset.term !== undefined ? 't:' + e.dataset.term : 'i:' + e.dataset.input; }).sort();
          if (JSON.stringify(lit) !== JSON.stringify(want[el.dataset.term].sources)) {
            out.push([el.dataset.term, lit, want[el.dataset.term].sources]); }
        });
        return [cells.length, out];
    """, expected)
    count, mismatches = problems
    assert count > 20 and mismatches == []


def test_a_click_shows_the_arithmetic_and_lights_its_sources_then_the_next_clears_them(browser, tmp_path_factory):
    open_page(browser, tmp_path_factory, REFERENCE)
    click(browser, '[data-term="dL_dW1[0,1]"]')
    text = explanation(browser)
    assert text.splitlines()[0].startswith("dL/dW1[0,1] = Σ")
    assert "X[0,1]·dL/dZ1[0,0]" in text and text.splitlines()[-1] == "dL/dW1[0,1] = -0.3998"
    first = lit(browser)
    assert "i:X[0,1]" in first and "t:dL_dZ1[3,3]" in first and len(first) == 32
    click(browser, '[data-term="P1[0,0]"]')
    assert lit(browser) == {"t:A1[0,0]", "t:A1[0,1]", "t:A1[1,0]", "t:A1[1,1]"}
    assert explanation(browser).splitlines()[-1] == "P1[0,0] = 0.8750"


def test_enter_on_a_focused_entry_explains_it(browser, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, tmp_path_factory, SOFTMAX)
    cell = browser.find_element(By.CSS_SELECTOR, '[data-term="Z1[1,0,2,3]"]')
    browser.execute_script("arguments[0].focus()", cell)
    cell.send_keys(Keys.ENTER)
    assert explanation(browser).splitlines()[-1] == f"Z1[1,0,2,3] = {cell.text}"
    assert "i:W1[0,2,1,1]" in lit(browser)
    assert browser.execute_script("return document.activeElement.dataset.term") == "Z1[1,0,2,3]"


def test_the_arrow_keys_walk_the_stages_in_the_derivations_order(browser, tmp_path_factory):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    trace = open_page(browser, tmp_path_factory, SOFTMAX)

    def current():
        return browser.execute_script("""
            var c = document.querySelectorAll('article.current');
            if (c.length !== 1) { return [c.length]; }
            var r = c[0].getBoundingClientRect();
            return [1, c[0].dataset.name, r.top < window.innerHeight && r.bottom > 0,
                    document.getElementById('stage-info').textContent];
        """)

    names = [stage.name for stage in trace.stages]
    assert current()[:2] == [1, names[0]]
    keys = ActionChains(browser)
    walked = [names[0]]
    for _ in names[1:]:
        keys.send_keys(Keys.ARROW_RIGHT).perform()
        count, name, visible, info = current()
        assert visible, name
        walked.append(name)
    assert walked == names
    keys.send_keys(Keys.ARROW_RIGHT).perform()  # past the last: stays there
    assert current()[1] == names[-1]
    keys.send_keys(Keys.ARROW_LEFT).perform()
    assert current()[1] == names[-2]
    # The panel carries the current stage's chain rule and numbers.
    browser.find_element(By.ID, "previous").click()
    count, name, visible, info = current()
    assert name == names[-3] and trace.stage(name).symbol in info
    index = names.index("dL_dW1")
    for _ in range(len(names) - 3 - index):
        browser.find_element(By.ID, "previous").click()
    count, name, visible, info = current()
    assert name == "dL_dW1" and "∂L/∂W1" in info and "with " in info and visible


def test_the_page_opened_from_disk_fetches_nothing(browser, tmp_path_factory):
    open_page(browser, tmp_path_factory, SOFTMAX)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []
    assert browser.execute_script("return document.querySelectorAll('[data-term]').length") > 500


def test_a_network_of_the_size_people_use_explains_a_clicked_entry_as_explain_does(browser, tmp_path_factory):
    # The stride-2 MNIST net of benchmarks/networks.py at batch 4: its page explains in the
    # browser, when clicked, a convolution's weight gradient (784 products) and a pooled sum.
    import importlib.util

    import numpy as np

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "networks.py"
    spec = importlib.util.spec_from_file_location("networks", path)
    networks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(networks)
    folder = tmp_path_factory.mktemp("stride2")
    np.savez(folder / "stride2.npz", **networks.arrays("stride2"))
    trace = open_page(browser, tmp_path_factory, folder / "stride2.npz")
    browser.execute_script("window.dispatchEvent(new Event('beforeprint'))")  # every table drawn
    for term in ("dL_dW1[0,0,1,1]", "Z2[3,15,6,6]", "dL_dA1[1,2,0,13]", "F[2,783]", "dL_dW3[0,9]"):
        click(browser, f'[data-term="{term}"]')
        name, index = parse_term(term)
        assert explanation(browser) == render_text(explain_entry(trace, name, index), 4).rstrip("\n"), term


def test_the_tables_the_script_draws_are_the_ones_the_page_would_write(browser, tmp_path_factory, monkeypatch):
    # Every table drawn by the page's script (html.DEFERRED = 0) is, cell for cell, the markup
    # the page writes out for a small matrix: numbers, colours, marks, keys.
    pages = {}
    for deferred in (10**9, 0):
        monkeypatch.setattr(render_html, "DEFERRED", deferred)
        open_page(browser, tmp_path_factory, SOFTMAX)
        browser.execute_script("window.dispatchEvent(new Event('beforeprint'))")
        assert browser.execute_script("return document.querySelectorAll('div.deferred').length") == 0
        pages[deferred] = browser.execute_script(  # the page without its data, which differ
            "var main = document.querySelector('main').cloneNode(true);"
            "main.querySelectorAll('script').forEach(function (s) { s.remove(); }); return main.innerHTML")
    assert "<td" in pages[0] and pages[0] == pages[10**9]
