"""The --html page's explanations as its own script makes them: the page's engine (its
``<script class="engine">``) run on each section's data and numbers, in node where it is
installed, else in headless chromium (selenium); tests that need it skip, with the reason,
where neither can be had."""

from __future__ import annotations

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
var out = input.sections.map(function (section) {
  var raw = typeof atob === "function" ? atob(section.numbers) : Buffer.from(section.numbers, "base64").toString("binary");
  var bytes = new Uint8Array(raw.length);
  for (var k = 0; k < raw.length; k++) { bytes[k] = raw.charCodeAt(k); }
  var cells = new Set(section.cells);
  var explain = make[0](section.data, new Float64Array(bytes.buffer), make[1], function (key) { return cells.has(key); });
  var result = {};
  section.terms.forEach(function (term) { result[term] = explain(term); });
  return result;
});
"""


def _script(text: str, cls: str) -> list[str]:
    return re.findall(rf'<script[^>]*class="{cls}"[^>]*>(.*?)</script>', text, flags=re.S)


def _sections(text: str) -> list[dict]:
    out = []
    for part in text.split('<section class="trace"')[1:]:
        cells = [f"t:{unescape(k)}" for k in re.findall(r'data-term="([^"]*)"', part)]
        cells += [f"i:{unescape(k)}" for k in re.findall(r'data-input="([^"]*)"', part)]
        (data,) = _script(part, "page-data")
        (numbers,) = _script(part, "numbers")
        terms = [c[2:] for c in cells if c.startswith("t:")]
        out.append({"data": json.loads(data), "numbers": numbers, "cells": cells, "terms": terms})
    return out


def _node(payload: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory) / "run.js"
        script.write_text("var input = JSON.parse(require('fs').readFileSync(0, 'utf8'));" + RUN
                          + "process.stdout.write(JSON.stringify(out));")  # fmt: skip
        result = subprocess.run(["node", str(script)], input=json.dumps(payload), capture_output=True, text=True,
                                check=True)  # fmt: skip
    return json.loads(result.stdout)


def _chromium(payload: dict) -> list[dict]:
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
    try:
        return driver.execute_script("var input = arguments[0];" + RUN + "return out;", payload)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def explanations(text: str) -> list[dict]:
    """For each section of the page ``text``: every shown entry's TERM -> {text, sources},
    as the page's script explains it when the entry is clicked."""
    (engine,) = _script(text, "engine")
    payload = {"engine": engine, "sections": _sections(text)}
    return _node(payload) if shutil.which("node") else _chromium(payload)
