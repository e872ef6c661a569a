"""The report opens in headless Chromium with no console error, and every plot is drawn with data.

A copy of the report gets two small scripts: one at the top of ``<head>`` that records console errors and
warnings, uncaught exceptions, failed resource loads and unhandled promise rejections; one that, after the page
has loaded and plotly has drawn, writes what it found into the DOM. ``chromium --dump-dom`` (virtual time, so
timers run without waiting) prints that DOM; Chromium's own console log on stderr is checked as well.
Debian's ``chromium`` package provides the browser (``.ci/run`` installs it); without it these tests skip.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mednas.reporting import ReportResult
from tests.reporting.conftest import read_meta

# Headless Chromium processes (about 20 s with the report they render): the slow set, which .ci/run runs.
pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = next(
    (
        p
        for p in (
            os.environ.get("MEDNAS_CHROMIUM"),
            shutil.which("chromium"),
            shutil.which("chromium-browser"),
            shutil.which("google-chrome"),
        )
        if p
    ),
    None,
)

CAPTURE = """<script>
window.__mednasProblems = [];
(function () {
  var record = function (kind, args) {
    window.__mednasProblems.push(kind + ': ' + Array.prototype.map.call(args, String).join(' '));
  };
  var error = console.error, warn = console.warn;
  console.error = function () { record('console.error', arguments); return error.apply(console, arguments); };
  console.warn = function () { record('console.warn', arguments); return warn.apply(console, arguments); };
  window.addEventListener('error', function (e) {
    var t = e.target;
    record('error', [e.message || ('failed to load ' + (t && (t.src || t.href || t.tagName)))]);
  }, true);
  window.addEventListener('unhandledrejection', function (e) { record('unhandledrejection', [e.reason]); });
})();
</script>"""

INSPECT = """<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var plots = Array.prototype.map.call(document.querySelectorAll('.js-plotly-plot'), function (gd) {
      var points = (gd.data || []).map(function (t) {
        var n = 0;
        ['x', 'y', 'z', 'values'].forEach(function (k) { if (t[k] && t[k].length) { n = Math.max(n, t[k].length); } });
        return n;
      });
      return {id: gd.id, traces: points, svg: gd.querySelectorAll('svg.main-svg').length,
              drawn: gd.querySelectorAll('g.trace, g.boxlayer path, g.heatmaplayer image, g.barlayer path').length};
    });
    var images = Array.prototype.map.call(document.querySelectorAll('main img'), function (img) {
      return {complete: img.complete, width: img.naturalWidth};
    });
    var out = document.createElement('pre');
    out.id = 'mednas-check';
    out.textContent = JSON.stringify({problems: window.__mednasProblems, plots: plots, images: images,
                                      figures: document.querySelectorAll('figure.mednas-figure').length});
    document.body.appendChild(out);
  }, 3000);
});
</script>"""


def _open_in_chromium(report: Path, tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    """Load the report (with the capture scripts) in headless Chromium; return the page's findings and console lines."""
    text = report.read_text()
    page = tmp_path / "page.html"
    page.write_text(text.replace("<head>", "<head>" + CAPTURE, 1).replace("</body>", INSPECT + "</body>", 1))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=30000",
        "--window-size=1280,900",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<pre id="mednas-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, "the inspection script never ran: " + proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(match.group(1))), console


def _check(report: Path, tmp_path: Path) -> dict[str, Any]:
    found, console = _open_in_chromium(report, tmp_path)
    assert found["problems"] == [], found["problems"]
    assert console == [], console  # nothing at all on the console: no error, no warning, no stray log
    meta = read_meta(report.read_text())
    assert found["figures"] == len(meta["figures"]) and len(found["plots"]) == len(meta["figures"])
    for plot in found["plots"]:
        assert plot["svg"] >= 1 and plot["drawn"] >= 1, plot  # plotly drew it
        assert plot["traces"] and max(plot["traces"]) > 0, plot  # and it has data
    assert all(img["complete"] and img["width"] > 0 for img in found["images"]), found["images"]
    assert len(found["images"]) == meta["images"]
    return found


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)
def test_classification_report_in_chromium(cls_report: ReportResult, tmp_path: Path) -> None:
    assert cls_report.errors == []
    found = _check(cls_report.path, tmp_path)
    assert {p["id"] for p in found["plots"]} >= {
        "fig-history",
        "fig-roc",
        "fig-pr",
        "fig-calibration",
        "fig-confusion-0",
    }
    assert found["images"]


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)
def test_segmentation_report_in_chromium(seg_report: ReportResult, tmp_path: Path) -> None:
    assert seg_report.errors == []
    found = _check(seg_report.path, tmp_path)
    assert {p["id"] for p in found["plots"]} >= {"fig-history", "fig-dice"}


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)
def test_the_check_sees_a_broken_page(tmp_path: Path) -> None:
    # The harness must fail on what it is there to catch: a script error and a plot without data.
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><head></head><body><main><div class='js-plotly-plot'></div></main>"
        "<script>undefinedFunction();</script></body></html>"
    )
    found, console = _open_in_chromium(page, tmp_path)
    assert any("undefinedFunction" in p for p in found["problems"])
    assert found["plots"] and found["plots"][0]["traces"] == []
