"""``validation.html`` opens in headless Chromium without a console error, every plot drawn with data."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import mednas
from tests.reporting.conftest import read_meta
from tests.reporting.test_browser import CHROMIUM, _open_in_chromium

# A headless Chromium process: the slow set, which .ci/run runs.
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)
def test_validation_page_in_chromium(cls_bundle: SimpleNamespace, shifted_site: Path, tmp_path: Path) -> None:
    result = mednas.evaluate(cls_bundle.path, shifted_site, out=tmp_path / "out", n_resamples=100)
    found, console = _open_in_chromium(result.html, tmp_path)
    assert found["problems"] == [], found["problems"]
    assert console == [], console
    meta = read_meta(result.html.read_text())
    assert meta["promise"] == "failed"
    assert (
        {p["id"] for p in found["plots"]}
        == {f"fig-{f}" for f in meta["figures"]}
        >= {"fig-roc", "fig-pr", "fig-calibration", "fig-confusion"}
    )
    for plot in found["plots"]:
        assert plot["svg"] >= 1 and plot["drawn"] >= 1, plot
        assert plot["traces"] and max(plot["traces"]) > 0, plot
