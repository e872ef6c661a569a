"""Embedded demo datasets: simulated findings inserted into real anatomy that pip packages ship.

`make demo` must run a real search with no download and no user data; these builders make that data from
pydicom-data's chest radiograph and nilearn's MNI152 template, deterministically, in seconds.
"""

from __future__ import annotations

import functools
import gzip
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mednas._registry import did_you_mean
from mednas.errors import ConfigError, DataError
from mednas.io._atomic import atomic_dir, write_bytes, write_json

__all__ = ["DEMO_DATASETS", "DemoInfo", "build_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoInfo:
    """What one demo dataset is: its problem, geometry, labels and default size.

    Attributes:
        name: Registry key, e.g. ``"xray-nodule"``.
        problem: ``"classification"`` or ``"segmentation"``.
        spatial_dims: 2 or 3.
        labels: Label names; the index is the label value.
        findings: The labels that are findings (positives), e.g. ``("nodule",)``.
        n_cases: Default number of images.
        modality: DICOM modality code of the simulated images (``"CR"``, ``"MR"``).
        image_shape: Shape of every image, ``(H, W)`` or ``(X, Y, Z)``.
        description: One paragraph for reports and the datalist.
        version: Builder version; bumped whenever the output bytes change, and part of the folder name.
    """

    name: str
    problem: str
    spatial_dims: int
    labels: tuple[str, ...]
    findings: tuple[str, ...]
    n_cases: int
    modality: str
    image_shape: tuple[int, ...]
    description: str
    version: int


DEMO_DATASETS: dict[str, DemoInfo] = {
    "xray-nodule": DemoInfo(
        name="xray-nodule",
        problem="classification",
        spatial_dims=2,
        labels=("normal", "nodule"),
        findings=("nodule",),
        n_cases=240,
        modality="CR",
        image_shape=(128, 128),
        description=(
            "SIMULATED chest radiographs: augmented crops of one real chest radiograph (pydicom-data "
            "RG1_UNCR, CR) with 1-2 simulated nodules inserted in the lung fields of about 40% of images. "
            "Label 1 means a simulated nodule was inserted; the source radiograph itself is not a normal "
            "chest."
        ),
        version=1,
    ),
    "mri-lesion": DemoInfo(
        name="mri-lesion",
        problem="segmentation",
        spatial_dims=3,
        labels=("background", "lesion"),
        findings=("lesion",),
        n_cases=48,
        modality="MR",
        image_shape=(64, 64, 64),
        description=(
            "SIMULATED brain T1 MRI: randomly deformed copies of the real MNI152 2009 T1 template (nilearn) "
            "with bias field and Rician noise, 64^3 voxels at 3 mm; 80% of cases carry 1-3 simulated "
            "hyper- or hypo-intense ellipsoidal lesions in the white matter, labelled voxel-wise."
        ),
        version=2,
    ),
}

# A stream that no per-case index reaches: it draws the dataset-level plan (labels, patient sizes).
_PLAN_KEY = 0x706C616E


def build_demo(name: str, root: str | Path, *, n_cases: int | None = None, seed: int = 0) -> Path:
    """Build a demo dataset under ``root`` unless it is already there, and return its folder.

    The folder ``root/<name>-v<version>-n<n_cases>-s<seed>/`` appears complete or not at all (it is built
    under a temporary name and renamed), so concurrent builders cannot corrupt it. It holds the images and
    ``datalist.json`` (MONAI datalist form, every case under ``"training"``, paths relative to the folder).
    The same name, ``n_cases`` and ``seed`` give byte-identical files with the same package versions.

    Args:
        name: A key of :data:`DEMO_DATASETS`.
        root: Folder that holds built demo datasets (a cache; safe to delete).
        n_cases: Number of images; the dataset's default when ``None``.
        seed: Non-negative integer; every case draws from ``SeedSequence([seed, index])``.

    Returns:
        The dataset folder.

    Raises:
        ConfigError: The name is unknown, or ``n_cases`` or ``seed`` is invalid.
        DataError: The folder exists but holds no ``datalist.json``.

    Example:
        >>> folder = build_demo("mri-lesion", "/tmp/mednas-demo", n_cases=4)  # doctest: +SKIP
        >>> (folder / "datalist.json").is_file()  # doctest: +SKIP
        True
    """
    if name not in DEMO_DATASETS:
        known = ", ".join(sorted(DEMO_DATASETS))
        raise ConfigError(
            f"unknown demo dataset {name!r}{did_you_mean(name, list(DEMO_DATASETS))}; known: {known}"
        )
    info = DEMO_DATASETS[name]
    n = info.n_cases if n_cases is None else n_cases
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"demo dataset {name!r}: n_cases must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"demo dataset {name!r}: seed must be a non-negative integer, got {seed!r}")
    n, seed = int(n), int(seed)

    folder = Path(root) / f"{name}-v{info.version}-n{n}-s{seed}"
    if (folder / "datalist.json").is_file():
        return folder
    if folder.exists():
        raise DataError(
            f"{folder}: exists but holds no datalist.json (not a complete demo dataset); delete it"
        )

    start = time.perf_counter()
    logger.info("building demo dataset %s (%d cases, seed %d) in %s", name, n, seed, folder)
    with atomic_dir(folder) as tmp:
        cases, sources = _BUILDERS[name](tmp, n, seed)
        datalist = {
            "name": name,
            "description": info.description,
            "simulated": True,
            "version": info.version,
            "seed": seed,
            "n_cases": n,
            "problem": info.problem,
            "spatial_dims": info.spatial_dims,
            "modality": info.modality,
            "labels": {str(i): label for i, label in enumerate(info.labels)},
            "findings": list(info.findings),
            "sources": sources,
            "training": cases,
        }
        (tmp / "NOTICE.txt").write_text(_NOTICE_HEAD.format(name=name) + _NOTICES[name], encoding="utf-8")
        # Written last: its presence marks a complete dataset even if the folder was copied by hand.
        write_json(tmp / "datalist.json", datalist)
    logger.info("built demo dataset %s in %.1f s", name, time.perf_counter() - start)
    return folder


# ---------------------------------------------------------------------------------------------------------
# Shared helpers


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _soft_profile(d: np.ndarray, edge: float) -> np.ndarray:
    """Return 1 inside ``d <= 1 - edge``, 0 beyond ``1 + edge``, a raised-cosine ramp between (0.5 at 1)."""
    t = np.clip((d - (1.0 - edge)) / (2.0 * edge), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def _package_version(dist: str) -> str:
    from mednas._versions import package_version

    return package_version(dist) or "unknown"


def _r(x: float, nd: int = 3) -> float:
    # Rounded floats keep the datalist short and identical across platforms' last-ulp differences.
    return round(float(x), nd)


# ---------------------------------------------------------------------------------------------------------
# xray-nodule: simulated nodules on one real chest radiograph

_XR_SOURCE_FILE = "RG1_UNCR.dcm"
_XR_SOURCE_ROWS = 512  # the radiograph is downsampled once to this height (1955 -> 512 rows)
_XR_OUT = 128
_XR_POSITIVE_FRACTION = 0.4
_XR_SECOND_IMAGE_P = 0.3  # -> about 1.3 images per simulated patient
_XR_AREA = (0.55, 0.90)  # fraction of the radiograph's (square) field that a crop covers
_XR_RADIUS = (3.0, 7.0)  # nodule radius (half maximum) in output pixels of the first view
_XR_SUBTLE_P = 0.25
_XR_CONTRAST_SUBTLE = (0.18, 0.30)  # added at the nodule core, in display units of the [0, 1] image
_XR_CONTRAST_VISIBLE = (0.35, 0.50)


@dataclass(frozen=True)
class _XraySource:
    image: np.ndarray  # (H, W) float64 in [0, 1], MONOCHROME2 (air dark)
    lungs: np.ndarray  # (H, W) bool, lung fields estimated from the image
    lung_points: np.ndarray  # (N, 2) float64 (row, col) of lung pixels well inside the fields
    thorax_centre: np.ndarray  # (2,) (row, col)


@functools.lru_cache(maxsize=1)
def _xray_source() -> _XraySource:
    try:
        import data_store
        import pydicom
        from pydicom.pixels import apply_voi_lut
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DataError(
            f"demo dataset 'xray-nodule' needs pydicom and pydicom-data ({exc}); install mednas[demo]"
        ) from None
    from scipy import ndimage as ndi
    from skimage.measure import label, regionprops
    from skimage.morphology import disk
    from skimage.transform import resize

    path = Path(data_store.__file__).parent / "data" / _XR_SOURCE_FILE
    ds = pydicom.dcmread(path)
    pixels = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = -pixels  # MONOCHROME1 shows high values dark; flip to MONOCHROME2 (air dark, bone bright)
    rows = _XR_SOURCE_ROWS
    cols = round(pixels.shape[1] * rows / pixels.shape[0])
    image = resize(pixels, (rows, cols), order=1, anti_aliasing=True, preserve_range=True)
    lo, hi = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - lo) / (hi - lo), 0.0, 1.0)

    # Lung fields = the darkest large regions of the smoothed image inside the central thorax, after
    # removing half of the large-scale trend (the lower lungs lie behind more soft tissue).
    smooth = ndi.gaussian_filter(image, 5) - 0.5 * ndi.gaussian_filter(image, 50)
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w]
    box = (
        (yy > 0.06 * h)
        & (yy < 0.80 * h)
        & (xx > 0.06 * w)
        & (xx < 0.94 * w)
        & (np.abs(xx - w / 2) > 0.08 * w)
    )
    dark = (smooth < np.percentile(smooth[box], 50)) & box
    labelled = label(dark)
    largest = sorted(regionprops(labelled), key=lambda r: -r.area)[:2]
    lungs = np.isin(labelled, [r.label for r in largest])
    lungs = ndi.binary_fill_holes(ndi.binary_closing(lungs, disk(9)))
    lungs = ndi.binary_erosion(lungs, disk(5))
    inner = ndi.binary_erosion(lungs, disk(6))  # nodule centres stay clear of the lung edges
    lung_points = np.argwhere(inner)[::7].astype(np.float64)  # a regular subsample is plenty
    rr, cc = np.nonzero(lungs)
    centre = np.array([(rr.min() + rr.max()) / 2.0, (cc.min() + cc.max()) / 2.0])
    return _XraySource(image=image, lungs=lungs, lung_points=lung_points, thorax_centre=centre)


@dataclass(frozen=True)
class _XrayView:
    """One augmented view: output pixel p (row, col) samples source point ``centre + matrix @ (p - c0)``."""

    matrix: np.ndarray  # (2, 2)
    centre: np.ndarray  # (2,)
    scale: float  # source pixels per output pixel
    gamma: float
    blur: float
    noise: float

    def to_output(self, points: np.ndarray) -> np.ndarray:
        c0 = (_XR_OUT - 1) / 2.0
        return (points - self.centre) @ np.linalg.inv(self.matrix).T + c0


def _xray_draw_view(rng: np.random.Generator, src: _XraySource) -> _XrayView:
    h, w = src.image.shape
    scale = math.sqrt(rng.uniform(*_XR_AREA)) * max(h, w) / _XR_OUT
    aspect = rng.uniform(0.95, 1.05)
    angle = math.radians(rng.uniform(-8.0, 8.0))
    flip = rng.random() < 0.3
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.diag([scale * aspect, scale / aspect])
    if flip:
        matrix = matrix @ np.diag([1.0, -1.0])
    centre = src.thorax_centre + rng.uniform(-0.04, 0.04, size=2) * np.array([h, w])
    return _XrayView(
        matrix=matrix,
        centre=centre,
        scale=scale,
        gamma=float(rng.uniform(0.8, 1.25)),
        blur=float(rng.uniform(0.0, 0.7)),
        noise=float(rng.uniform(0.006, 0.02)),
    )


def _xray_warp(src: _XraySource, view: _XrayView) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage as ndi

    c0 = (_XR_OUT - 1) / 2.0
    grid = np.mgrid[:_XR_OUT, :_XR_OUT].reshape(2, -1).astype(np.float64) - c0
    coords = view.matrix @ grid + view.centre[:, None]
    # Anti-alias once for this view's downsampling factor (about 3-3.8x).
    source = ndi.gaussian_filter(src.image, 0.4 * view.scale)
    image = ndi.map_coordinates(source, coords, order=1, mode="constant", cval=0.0)
    lungs = ndi.map_coordinates(src.lungs.astype(np.uint8), coords, order=0, mode="constant", cval=0)
    return image.reshape(_XR_OUT, _XR_OUT), lungs.reshape(_XR_OUT, _XR_OUT).astype(bool)


def _xray_pick_nodules(
    rng: np.random.Generator, src: _XraySource, views: list[_XrayView], lungs: list[np.ndarray]
) -> list[tuple[np.ndarray, float, float]]:
    """Draw 1-2 nodules (source centre, source radius, contrast) visible inside the lungs of every view."""
    n_nodules = 1 if rng.random() < 0.7 else 2
    chosen: list[tuple[np.ndarray, float, float]] = []
    for _ in range(n_nodules):
        radius_src = float(rng.uniform(*_XR_RADIUS)) * views[0].scale  # sized in the first view
        subtle = rng.random() < _XR_SUBTLE_P
        contrast = float(rng.uniform(*_XR_CONTRAST_SUBTLE) if subtle else rng.uniform(*_XR_CONTRAST_VISIBLE))
        ok = np.ones(len(src.lung_points), dtype=bool)
        for view, lung in zip(views, lungs):
            p = view.to_output(src.lung_points)
            margin = radius_src / view.scale + 1.0
            inside = np.all((p >= margin) & (p <= _XR_OUT - 1 - margin), axis=1)
            idx = np.clip(np.rint(p).astype(int), 0, _XR_OUT - 1)
            ok &= inside & lung[idx[:, 0], idx[:, 1]]
        for centre, r, _ in chosen:
            ok &= np.linalg.norm(src.lung_points - centre, axis=1) > r + radius_src + 2.0 * views[0].scale
        candidates = np.flatnonzero(ok)
        if candidates.size == 0:
            break
        chosen.append((src.lung_points[rng.choice(candidates)], radius_src, contrast))
    return chosen


def _xray_render(
    image: np.ndarray,
    view: _XrayView,
    nodules: list[tuple[np.ndarray, float, float]],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[list[float]]]:
    """Add the nodules to a warped view, then gamma, blur and noise; return uint16 pixels and records."""
    from scipy import ndimage as ndi

    yy, xx = np.mgrid[:_XR_OUT, :_XR_OUT].astype(np.float64)
    records = []
    for centre, radius_src, contrast in nodules:
        (row, col) = view.to_output(centre[None, :])[0]
        radius = radius_src / view.scale
        d = np.hypot(yy - row, xx - col) / radius
        image = image + contrast * _soft_profile(d, edge=min(0.45, 1.2 / radius))
        records.append([_r(col, 2), _r(row, 2), _r(radius, 2), _r(contrast, 4)])
    # Acquisition effects act on the whole picture, nodules included.
    image = np.clip(image, 0.0, 1.0) ** view.gamma
    if view.blur > 0.05:
        image = ndi.gaussian_filter(image, view.blur)
    image = image + rng.normal(0.0, view.noise, size=image.shape)
    pixels = np.rint(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
    return pixels, records


def _build_xray(folder: Path, n_cases: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    from skimage.io import imsave

    src = _xray_source()
    plan = _rng(seed, _PLAN_KEY)
    sizes: list[int] = []
    while sum(sizes) < n_cases:
        sizes.append(2 if plan.random() < _XR_SECOND_IMAGE_P else 1)
    sizes[-1] -= sum(sizes) - n_cases
    n_pos = round(_XR_POSITIVE_FRACTION * len(sizes))
    labels = plan.permutation(np.arange(len(sizes)) < n_pos)

    (folder / "images").mkdir()
    cases: list[dict[str, Any]] = []
    for p, (size, positive) in enumerate(zip(sizes, labels)):
        rng = _rng(seed, p)
        patient = f"sim-xr-{p + 1:04d}"
        views = [_xray_draw_view(rng, src) for _ in range(size)]
        warped = [_xray_warp(src, v) for v in views]
        nodules: list[tuple[np.ndarray, float, float]] = []
        if positive:
            nodules = _xray_pick_nodules(rng, src, views, [lung for _, lung in warped])
            if not nodules:  # cannot happen with crops centred on the thorax; fail loudly if it does
                raise RuntimeError(f"no lung field visible in every view of {patient}")
        for v, (view, (image, _)) in enumerate(zip(views, warped)):
            pixels, records = _xray_render(image, view, nodules, rng)
            rel = f"images/{patient}-{v + 1}.png"
            imsave(folder / rel, pixels, check_contrast=False)
            cases.append({"image": rel, "label": int(bool(positive)), "patient": patient, "nodules": records})
    sources = [
        {
            "package": "pydicom-data",
            "version": _package_version("pydicom-data"),
            "file": f"data_store/data/{_XR_SOURCE_FILE}",
            "origin": "PA chest CR (Philips, 2004), a public DICOM compression test image "
            "(CompressedSamples RG1)",
            "licence": "MIT (pydicom-data); notice in NOTICE.txt",
        }
    ]
    return cases, sources


# ---------------------------------------------------------------------------------------------------------
# mri-lesion: simulated lesions in deformed copies of the MNI152 template

_MR_SHAPE = (64, 64, 64)
_MR_SPACING = 3.0
_MR_LESION_FRACTION = 0.8


@dataclass(frozen=True)
class _MriSource:
    t1: np.ndarray  # (X, Y, Z) float64 in [0, 1], lightly smoothed against aliasing at 3 mm
    brain: np.ndarray  # (X, Y, Z) uint8
    wm: np.ndarray  # (X, Y, Z) float64 white-matter probability
    inv_affine: np.ndarray  # (4, 4) world mm -> source voxel
    out_affine: np.ndarray  # (4, 4) output voxel -> world mm (RAS, MNI mm)
    centre: np.ndarray  # (3,) brain centre in mm


@functools.lru_cache(maxsize=1)
def _mri_source() -> _MriSource:
    try:
        from nilearn.datasets import (
            load_mni152_brain_mask,
            load_mni152_template,
            load_mni152_wm_template,
        )
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DataError(f"demo dataset 'mri-lesion' needs nilearn ({exc}); install mednas[demo]") from None
    from scipy import ndimage as ndi

    template = load_mni152_template(resolution=2)
    affine = np.asarray(template.affine, dtype=np.float64)
    t1 = np.asarray(template.get_fdata(), dtype=np.float64)
    brain = np.asarray(load_mni152_brain_mask(resolution=2).get_fdata() > 0, dtype=np.uint8)
    wm = np.asarray(load_mni152_wm_template(resolution=2).get_fdata(), dtype=np.float64)

    idx = np.argwhere(brain)
    centre_vox = (idx.min(0) + idx.max(0)) / 2.0
    centre = np.rint(affine[:3, :3] @ centre_vox + affine[:3, 3])
    out_affine = np.diag([_MR_SPACING, _MR_SPACING, _MR_SPACING, 1.0])
    out_affine[:3, 3] = centre - _MR_SPACING * (np.array(_MR_SHAPE) - 1) / 2.0
    return _MriSource(
        t1=ndi.gaussian_filter(t1, 0.5),
        brain=brain,
        wm=wm,
        inv_affine=np.linalg.inv(affine),
        out_affine=out_affine,
        centre=centre,
    )


def _rotation(angles: np.ndarray) -> np.ndarray:
    a, b, c = (float(x) for x in angles)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _mri_warp(rng: np.random.Generator, src: _MriSource) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample the template onto the output grid through a random affine plus smooth displacement."""
    from scipy import ndimage as ndi

    grid = np.indices(_MR_SHAPE, dtype=np.float64).reshape(3, -1)
    world = src.out_affine[:3, :3] @ grid + src.out_affine[:3, 3:4]
    matrix = _rotation(np.radians(rng.uniform(-4.0, 4.0, size=3))) @ np.diag(
        1.0 + rng.uniform(-0.04, 0.04, 3)
    )
    shift = rng.uniform(-3.0, 3.0, size=3)
    moved = matrix @ (world - src.centre[:, None]) + (src.centre + shift)[:, None]
    # Smooth displacement: coarse 8^3 noise upsampled by a quadratic spline (C1, 3x cheaper than cubic),
    # scaled to a maximum of 1-4 mm.
    coarse = rng.normal(size=(3, 8, 8, 8))
    field = np.stack([ndi.zoom(c, 8, order=2) for c in coarse]).reshape(3, -1)
    field *= rng.uniform(1.0, 4.0) / np.sqrt((field**2).sum(0)).max()
    moved += field
    coords = src.inv_affine[:3, :3] @ moved + src.inv_affine[:3, 3:4]
    t1 = ndi.map_coordinates(src.t1, coords, order=1, mode="constant", cval=0.0).reshape(_MR_SHAPE)
    brain = ndi.map_coordinates(src.brain, coords, order=0, mode="constant", cval=0).reshape(_MR_SHAPE)
    wm = ndi.map_coordinates(src.wm, coords, order=1, mode="constant", cval=0.0).reshape(_MR_SHAPE)
    return t1, brain.astype(bool), wm


def _mri_insert_lesions(
    rng: np.random.Generator, t1: np.ndarray, brain: np.ndarray, wm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
    """Multiply soft ellipsoids into ``t1``; return the image, the uint8 label and one record per lesion."""
    from scipy import ndimage as ndi

    depth = ndi.distance_transform_edt(brain)
    grid = np.indices(_MR_SHAPE, dtype=np.float64)
    label = np.zeros(_MR_SHAPE, dtype=np.uint8)
    factor = np.ones(_MR_SHAPE, dtype=np.float64)
    records: list[list[float]] = []
    centres: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.integers(1, 4))):
        radius = float(rng.uniform(3.0, 7.0))
        axes = np.clip(radius * rng.uniform(0.75, 1.3, size=3), 2.0, 8.5)
        ok = (wm > 0.5) & (depth > axes.max() + 2.0)
        for c, r in centres:
            ok &= np.sqrt(((grid - c[:, None, None, None]) ** 2).sum(0)) > r + axes.max() + 1.0
        candidates = np.argwhere(ok)
        if len(candidates) == 0:
            continue
        centre = candidates[rng.integers(len(candidates))].astype(np.float64)
        rot = _rotation(rng.uniform(-math.pi, math.pi, size=3))
        hyper = rng.random() < 0.5  # enhancing metastasis-like vs T1-hypointense MS-like
        contrast = float(rng.uniform(0.45, 0.9) if hyper else -rng.uniform(0.35, 0.6))
        half = int(math.ceil(axes.max() * 1.5)) + 1
        lo = np.maximum(centre.astype(int) - half, 0)
        hi = np.minimum(centre.astype(int) + half + 1, _MR_SHAPE)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        local = np.indices(hi - lo, dtype=np.float64).reshape(3, -1) + lo[:, None] - centre[:, None]
        d = np.sqrt((((rot.T @ local) / axes[:, None]) ** 2).sum(0)).reshape(hi - lo)
        profile = _soft_profile(d, edge=0.3) * brain[box]
        factor[box] *= 1.0 + contrast * profile
        label[box] |= ((d <= 1.0) & brain[box]).astype(np.uint8)
        centres.append((centre, float(axes.max())))
        records.append([int(centre[0]), int(centre[1]), int(centre[2]), _r(axes.mean(), 2), _r(contrast, 3)])
    return t1 * factor, label, records


def _mri_acquire(rng: np.random.Generator, t1: np.ndarray) -> np.ndarray:
    """Apply a smooth multiplicative bias field, intensity scaling and Rician noise; return int16."""
    xyz = np.indices(_MR_SHAPE, dtype=np.float64) / (np.array(_MR_SHAPE)[:, None, None, None] - 1) * 2 - 1
    terms = [
        xyz[0],
        xyz[1],
        xyz[2],
        xyz[0] * xyz[1],
        xyz[1] * xyz[2],
        xyz[0] * xyz[2],
        xyz[0] ** 2,
        xyz[1] ** 2,
    ]
    coefs = rng.normal(0.0, 0.07, size=len(terms))
    bias = np.exp(sum(c * t for c, t in zip(coefs, terms)))
    scale = 1000.0 * rng.uniform(0.8, 1.25)
    sigma = scale * rng.uniform(0.015, 0.04)
    signal = t1 * bias * scale
    noisy = np.hypot(signal + rng.normal(0.0, sigma, size=_MR_SHAPE), rng.normal(0.0, sigma, size=_MR_SHAPE))
    return np.rint(np.clip(noisy, 0, 32767)).astype(np.int16)


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, description: str) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=4)  # 4 = MNI 152: world coordinates are (deformed) MNI mm
    img.header.set_sform(affine, code=4)
    img.header["descrip"] = description.encode("ascii")[:79]
    # gzip with no name and no time stamp, so the bytes depend on the data alone.
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def _build_mri(folder: Path, n_cases: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    src = _mri_source()
    plan = _rng(seed, _PLAN_KEY)
    with_lesions = plan.permutation(np.arange(n_cases) < round(_MR_LESION_FRACTION * n_cases))

    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    cases: list[dict[str, Any]] = []
    for i in range(n_cases):
        rng = _rng(seed, i)
        patient = f"sim-mr-{i + 1:04d}"
        t1, brain, wm = _mri_warp(rng, src)
        records: list[list[float]] = []
        label = np.zeros(_MR_SHAPE, dtype=np.uint8)
        if with_lesions[i]:
            t1, label, records = _mri_insert_lesions(rng, t1, brain, wm)
        image = _mri_acquire(rng, t1)
        image_rel, label_rel = f"images/{patient}.nii.gz", f"labels/{patient}.nii.gz"
        write_bytes(folder / image_rel, _nifti_bytes(image, src.out_affine, "mednas SIMULATED T1 (MNI152)"))
        write_bytes(folder / label_rel, _nifti_bytes(label, src.out_affine, "mednas SIMULATED lesion label"))
        cases.append({"image": image_rel, "label": label_rel, "patient": patient, "lesions": records})
    sources = [
        {
            "package": "nilearn",
            "version": _package_version("nilearn"),
            "file": "nilearn/datasets/data/mni_icbm152_{t1,wm}_tal_nlin_sym_09a_converted.nii.gz",
            "origin": "ICBM 2009a nonlinear MNI152 T1 template and white-matter map "
            "(McConnell Brain Imaging Centre)",
            "licence": "MNI ICBM152 permissive notice (keep it with copies); notice in NOTICE.txt",
        }
    ]
    return cases, sources


_NOTICE_HEAD = """\
mednas demo dataset {name}: SIMULATED findings inserted into real anatomy. Not patient data, not for
clinical use; results on it say that a pipeline works, not that a model would work on patients.
See docs/demo-data.md in mednas. The images are derived from the source below, whose notice follows.

"""

_NOTICES = {
    "xray-nodule": """\
Source: RG1_UNCR.dcm from pydicom-data (https://github.com/pydicom/pydicom-data), MIT License:

MIT License

Copyright (c) 2020 Dicom in Python

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR
THE USE OR OTHER DEALINGS IN THE SOFTWARE.
""",
    "mri-lesion": """\
Source: the ICBM 2009a nonlinear MNI152 T1 template and white-matter probability map, as shipped in
nilearn (https://nilearn.github.io), files nilearn/datasets/data/mni_icbm152_*_tal_nlin_sym_09a_converted.
The template's notice, from the ICBM 2009 distribution
(https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009):

Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute,
McGill University. Permission to use, copy, modify, and distribute this software and its documentation
for any purpose and without fee is hereby granted, provided that the above copyright notice appear in all
copies. The authors and McGill University make no representations about the suitability of this software
for any purpose. It is provided "as is" without express or implied warranty.
""",
}

_BUILDERS: dict[str, Callable[[Path, int, int], tuple[list[dict[str, Any]], list[dict[str, str]]]]] = {
    "xray-nodule": _build_xray,
    "mri-lesion": _build_mri,
}
