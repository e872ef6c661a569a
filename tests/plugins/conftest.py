"""A plugin package installed into a temporary site folder, as ``pip install`` would lay it out."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mednas.testing import fresh_plugins

HERE = Path(__file__).parent

TINYPLUG_ENTRY_POINTS = """\
[mednas.spaces]
tinyplug = tinyplug:TinyResNetSpace

[mednas.metrics]
tinyplug_accuracy = tinyplug:CutoffAccuracy

[mednas.layouts]
tinyplug_tsv = tinyplug:TsvLayout

[mednas.losses]
tinyplug_smooth_ce = tinyplug:SmoothCrossEntropy
"""


def install(site: Path, name: str, entry_points: str, package: Path | None = None) -> None:
    """Lay out ``name`` in ``site``: its package folder (when given) and ``<name>-0.1.dist-info``."""
    if package is not None:
        shutil.copytree(package, site / name)
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty site folder on ``sys.path``; the registries read their entry-point groups afresh inside the test.

    Modules imported from the folder are forgotten afterwards, and the registries restored, so no plugin leaks
    into other tests.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    with fresh_plugins():
        yield site
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and str(site) in str(sys.modules[name].__file__):
            del sys.modules[name]


@pytest.fixture
def tinyplug(plugin_site: Path) -> Path:
    """The ``tinyplug`` package (one space, metric term, layout and loss) installed into ``plugin_site``."""
    install(plugin_site, "tinyplug", TINYPLUG_ENTRY_POINTS, HERE / "tinyplug")
    return plugin_site
