"""Evaluation sets for the tiny session bundles (``cls_bundle``/``seg_bundle`` from tests/_bundles.py).

The tiny classification task calls a bright disc a finding. A shifted site is built honestly: its normal images
carry a bright disc too (an artefact such as a marker or an electrode, which a reader would not call a finding),
so the ground truth says "normal" where the bundle sees the finding pattern.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _disc(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.25, size * 0.75, size=2)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= (size * 0.12) ** 2


def write_eval_set(
    root: Path, items: list[dict[str, Any]], *, seed: int = 11, size: int = 32, name: str = "datalist.json"
) -> Path:
    """Write PNG images and a datalist; each item: ``label``, ``disc`` (bright disc drawn), other fields kept."""
    from skimage import io as skio

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for i, item in enumerate(items):
        img = rng.normal(0.3, 0.08, size=(size, size))
        if item.get("disc"):
            img[_disc(size, rng)] += 0.5
        rel = f"images/eval_{i:03d}.png"
        skio.imsave(root / rel, np.clip(img * 65535, 0, 65535).astype(np.uint16), check_contrast=False)
        entry = {"image": rel, "label": item["label"], "patient": item.get("patient", f"site-b-{i:03d}")}
        entry.update({k: v for k, v in item.items() if k not in ("label", "disc", "patient")})
        entries.append(entry)
    path = root / name
    path.write_text(json.dumps({"training": entries}, indent=1))
    return path


@pytest.fixture(scope="session")
def shifted_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 cases: 20 findings, 20 normals of which 16 carry a bright artefact disc; a sex column for subgroups."""
    items = []
    for i in range(20):
        items.append({"label": 1, "disc": True, "sex": "F" if i % 2 else "M", "site": "B"})
    for i in range(20):
        items.append({"label": 0, "disc": i < 16, "sex": "F" if i % 2 else "M", "site": "B"})
    return write_eval_set(tmp_path_factory.mktemp("site-b"), items)


def copy_images(paths: list[str], dest: Path, prefix: str) -> list[str]:
    """Copy image files under new names (same pixels, other file); return the names relative to ``dest``."""
    (dest / "images").mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(paths):
        rel = f"images/{prefix}_{i:03d}{Path(p).suffix}"
        shutil.copyfile(p, dest / rel)
        out.append(rel)
    return out
