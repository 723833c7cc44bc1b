"""The --html page's explanations as its own script makes them: the page's engine (its
``<script class="engine">``) run on each section's data and numbers, in node where it is
installed, else in headless chromium (selenium); tests that need it skip, with the reason,
where neither can be had."""

from __future__ import annotations

import atexit
import json
import re
import shutil
import subprocess
import tempfile
from html import unescape
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

#: Run by node, or as a function body in the browser: every term of every section explained.
RUN = """
var make = new Function(input.engine + "; return [cnntraceExplainer, RECIPES];")();
function inflate(text) {  // the numbers: base64 of deflated float64s
  var raw = atob(text), bytes = new Uint8Array(raw.length);
  for (var k = 0; k < raw.length; k++) { bytes[k] = raw.charCodeAt(k); }
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Response(stream).arrayBuffer().then(function (buffer) { return new Float64Array(buffer); });
}
var out = Promise.all(input.sections.map(function (section) {
  return inflate(section.numbers).then(function (values) {
    var cells = new Set(section.cells);
    var explain = make[0](section.data, values, make[1], function (key) { return cells.has(key); });
    var result = {};
    section.terms.forEach(function (term) { result[term] = explain(term); });
    return result;
  });
}));
"""


def _script(text: str, cls: str) -> list[str]:
    return re.findall(rf'<script[^>]*class="{cls}"[^>]*>(.*?)</script>', text, flags=re.S)


def drawn(data: dict) -> list[str]:
    """The keys of the cells of the tables a section's script draws (its ``grids``)."""
    out = []
    for grid in data["grids"]:
        head = "t:" if grid["attribute"] == "data-term" else "i:"
        for r in grid["rows"]:
            for c in grid["cols"]:
                if r is not None and c is not None:
                    index = [*grid["prefix"], *([r, c] if grid["two"] else [c])]
                    out.append(f"{head}{grid['name']}[{','.join(map(str, index))}]")
    return out


def _sections(text: str) -> list[dict]:
    out = []
    for part in text.split('<section class="trace"')[1:]:
        cells = [f"t:{unescape(k)}" for k in re.findall(r'data-term="([^"]*)"', part)]
        cells += [f"i:{unescape(k)}" for k in re.findall(r'data-input="([^"]*)"', part)]
        (data,) = _script(part, "page-data")
        (numbers,) = _script(part, "numbers")
        data = json.loads(data)
        cells += drawn(data)
        terms = [c[2:] for c in cells if c.startswith("t:")]
        out.append({"data": data, "numbers": numbers, "cells": cells, "terms": terms})
    return out


#: One of the engine's functions on each case's arguments, each result as String() writes it.
CALL = """
var f = new Function(input.engine + "; return " + input.function + ";")();
var out = Promise.resolve(input.cases.map(function (c) { return String(f.apply(null, c)); }));
"""


def _node(payload: dict, run: str = RUN) -> list:
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory) / "run.js"
        script.write_text("var input = JSON.parse(require('fs').readFileSync(0, 'utf8'));" + run
                          + "out.then(function (r) { process.stdout.write(JSON.stringify(r)); });")  # fmt: skip
        result = subprocess.run(["node", str(script)], input=json.dumps(payload), capture_output=True, text=True,
                                check=True)  # fmt: skip
    return json.loads(result.stdout)


_DRIVER: list = []  # one headless chromium for the whole test session, started when first needed


def _driver():
    if _DRIVER:
        return _DRIVER[0]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("neither node nor selenium is installed: the page's script cannot run")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("neither node nor chromium is installed: the page's script cannot run")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="cnntrace-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as error:  # noqa: BLE001 - any failure to start is "no browser here"
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"chromium would not start: {str(error).splitlines()[0]}")
    driver.set_script_timeout(300)

    def close():
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

    atexit.register(close)
    _DRIVER.append(driver)
    return driver


def _chromium(payload: dict, run: str = RUN) -> list:
    return _driver().execute_async_script("var input = arguments[0], done = arguments[1];" + run + "out.then(done);",
                                          payload)  # fmt: skip


def explanations(text: str) -> list[dict]:
    """For each section of the page ``text``: every shown entry's TERM -> {text, sources},
    as the page's script explains it when the entry is clicked."""
    (engine,) = _script(text, "engine")
    payload = {"engine": engine, "sections": _sections(text)}
    return _node(payload) if shutil.which("node") else _chromium(payload)


def call(function: str, cases: list[list]) -> list[str]:
    """The page engine's ``function`` (cnntraceNumber, cnntraceFsum) on each case's
    arguments, as the page runs it; each result as JavaScript's String() writes it."""
    from cnntrace.render.html import ENGINE

    payload = {"engine": ENGINE, "function": function, "cases": cases}
    return _node(payload, CALL) if shutil.which("node") else _chromium(payload, CALL)
