"""Segmentation metrics on integer label maps: Dice, HD95 and lesion-wise detection in the BraTS 2023 manner.

Voxel-wise Dice hides a missed small metastasis behind a well-segmented large one; lesion-wise counts (which
lesions were found, how many false alarms per case, by lesion size) are what a radiologist reads.

Conventions:

* Inputs are one case at a time: ``pred`` and ``gt`` integer (or bool) label maps of the same shape
  ``(X, Y[, Z])``; ``label`` picks the structure, one label or a set of labels taken together (a region).
* Empty against empty is perfect: Dice 1.0, HD95 0.0, lesion-wise Dice 1.0 (the common challenge convention,
  so a case without a finding rewards a model that predicts none). Exactly one side empty is worst: Dice 0.0,
  HD95 ``worst`` (``inf`` unless declared). Lesion-wise sensitivity of a case without lesions is ``nan``
  (there is nothing to detect); pool counts over cases with :func:`summarize_lesions` instead.
* ``spacing`` is the voxel size in mm per axis; without it voxels are 1 mm and volumes are voxel counts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

__all__ = [
    "LesionRecord",
    "LesionResult",
    "LesionSummary",
    "OverlapRule",
    "SizeBin",
    "dice",
    "dice_per_class",
    "hd95",
    "lesion_analysis",
    "sensitivity_by_size",
    "summarize_lesions",
]

Label = int | Sequence[int]
Connectivity = Literal["face", "full"]


# ------------------------------------------------------------------------------------------ voxel-wise


def dice(pred: np.ndarray, gt: np.ndarray, *, label: Label = 1) -> float:
    """Compute the Dice coefficient of one structure (MONAI's ``compute_dice`` convention).

    Args:
        pred: ``(X, Y[, Z])`` integer label map predicted for one case.
        gt: ``(X, Y[, Z])`` ground-truth label map of the same shape.
        label: The structure's label, or several labels scored as one region (e.g. BraTS tumour core).

    Returns:
        ``2 |P & G| / (|P| + |G|)``; 1.0 when both are empty, 0.0 when exactly one is.

    Example:
        >>> dice(np.array([[0, 1, 1]]), np.array([[1, 1, 0]]))
        0.5
    """
    pred, gt = _check_maps(pred, gt)
    return _dice_counts([_mask(pred, label)], [_mask(gt, label)])[0]


def dice_per_class(pred: np.ndarray, gt: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Compute Dice for each label separately (empty against empty is 1.0).

    Args:
        pred: ``(X, Y[, Z])`` integer label map predicted for one case.
        gt: ``(X, Y[, Z])`` ground-truth label map.
        labels: The labels to score, usually every foreground class.

    Returns:
        ``{label: dice}`` in the order of ``labels``.
    """
    pred, gt = _check_maps(pred, gt)
    if not len(labels):
        raise ValueError("labels must name at least one class")
    values = _dice_counts([pred == c for c in labels], [gt == c for c in labels])
    return {int(c): v for c, v in zip(labels, values)}


def _dice_counts(pred_masks: list[np.ndarray], gt_masks: list[np.ndarray]) -> list[float]:
    """Dice per mask pair with MONAI's ``compute_dice(..., ignore_empty=False)`` convention.

    Counted with numpy rather than through MONAI: on one case's label map that is ~500x faster (0.5 ms
    against 250 ms for a 128x128x96 volume), and Dice runs per case per epoch. The tests check equality with
    MONAI.
    """
    out = []
    for p, g in zip(pred_masks, gt_masks):
        denominator = np.count_nonzero(p) + np.count_nonzero(g)
        out.append(float(2 * np.count_nonzero(p & g) / denominator) if denominator else 1.0)
    return out


def hd95(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    label: Label = 1,
    spacing: Sequence[float] | None = None,
    percentile: float = 95.0,
    worst: float = math.inf,
) -> float:
    """Compute the 95th-percentile symmetric Hausdorff distance in mm (MONAI's ``compute_hausdorff_distance``).

    Distances run between the boundary voxels of the two masks; MONAI takes the percentile of each directed
    distance set and returns the larger.

    Args:
        pred: ``(X, Y[, Z])`` integer label map predicted for one case.
        gt: ``(X, Y[, Z])`` ground-truth label map.
        label: The structure's label or labels.
        spacing: Voxel size per axis in mm (anisotropic allowed); ``None`` means 1 mm.
        percentile: The percentile, 95 for HD95, 100 for the plain Hausdorff distance.
        worst: Returned when exactly one mask is empty (``inf``; BraTS declares 373.13 for its volumes).

    Returns:
        The distance in mm; 0.0 when both masks are empty.
    """
    pred, gt = _check_maps(pred, gt)
    sp = _check_spacing(spacing, pred.ndim)
    p, g = _mask(pred, label), _mask(gt, label)
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 0.0
    if has_p != has_g:
        return float(worst)
    import torch
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        # MONAI 1.5-1.6 warns about its own deprecated internal argument on every call.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        out = compute_hausdorff_distance(
            torch.from_numpy(p[None, None]),
            torch.from_numpy(g[None, None]),
            include_background=True,
            percentile=percentile,
            spacing=list(sp),
        )
    return float(out[0, 0])


# ------------------------------------------------------------------------------------------- lesion-wise


@dataclass(frozen=True)
class OverlapRule:
    """When a predicted lesion counts as detecting a ground-truth lesion.

    Attributes:
        kind: ``"any"``: at least one voxel overlaps. ``"iou"``: the IoU of the ground-truth lesion with the
            predicted components that touch it is ``>= min_value``. ``"fraction"``: the fraction of the
            ground-truth lesion's voxels that are predicted is ``>= min_value``.
        min_value: The bound for ``"iou"`` and ``"fraction"``, in (0, 1].

    Example:
        >>> OverlapRule.parse("iou>=0.3")
        OverlapRule(kind='iou', min_value=0.3)
    """

    kind: Literal["any", "iou", "fraction"] = "any"
    min_value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("any", "iou", "fraction"):
            raise ValueError(f"overlap kind must be 'any', 'iou' or 'fraction', got {self.kind!r}")
        if self.kind == "any" and self.min_value != 0.0:
            raise ValueError("overlap 'any' takes no min_value")
        if self.kind != "any" and not 0.0 < self.min_value <= 1.0:
            raise ValueError(f"overlap {self.kind!r} needs min_value in (0, 1], got {self.min_value}")

    @classmethod
    def parse(cls, value: OverlapRule | str | Mapping[str, Any]) -> OverlapRule:
        """Read ``"any"``, ``"iou>=0.5"``, ``"fraction>=0.1"`` or a ``{kind, min_value}`` mapping."""
        if isinstance(value, OverlapRule):
            return value
        if isinstance(value, Mapping):
            return cls(**value)
        text = str(value).replace(" ", "")
        if text == "any":
            return cls()
        kind, sep, bound = text.partition(">=")
        if not sep:
            raise ValueError(f"overlap rule {value!r} is not 'any', 'iou>=x' or 'fraction>=x'")
        return cls(kind, float(bound))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return "any" if self.kind == "any" else f"{self.kind}>={self.min_value:g}"


@dataclass(frozen=True)
class LesionRecord:
    """One ground-truth lesion (a connected component) and how the prediction met it.

    Attributes:
        size_voxels: Voxels in the lesion.
        volume_mm3: Its volume (``size_voxels`` times the voxel volume).
        detected: Whether the overlap rule counts it as found.
        dice: Dice of the lesion with the union of predicted components that touch it (0.0 if none).
        iou: IoU of the same pair.
        overlap_fraction: Fraction of the lesion's voxels that are predicted.
        n_predictions: Number of predicted components that touch it (> 1: split; a component shared with
            another lesion: merged).
    """

    size_voxels: int
    volume_mm3: float
    detected: bool
    dice: float
    iou: float
    overlap_fraction: float
    n_predictions: int


@dataclass(frozen=True)
class LesionResult:
    """The lesion-wise analysis of one case.

    Attributes:
        lesions: One record per ground-truth lesion, in ``scipy.ndimage.label`` order.
        false_positive_sizes: Voxel count of each predicted component that touches no ground-truth lesion.
        voxel_volume_mm3: Volume of one voxel.
        connectivity: ``"face"`` or ``"full"``.
        overlap: The detection rule, as text (``"any"``, ``"iou>=0.5"``).
        min_size: Components smaller than this were removed from both maps first.
        size_unit: ``"voxels"`` or ``"mm3"``, the unit of ``min_size``.
    """

    lesions: tuple[LesionRecord, ...]
    false_positive_sizes: tuple[int, ...]
    voxel_volume_mm3: float = 1.0
    connectivity: str = "full"
    overlap: str = "any"
    min_size: float = 0.0
    size_unit: str = "voxels"

    @property
    def n_lesions(self) -> int:
        """Number of ground-truth lesions."""
        return len(self.lesions)

    @property
    def n_detected(self) -> int:
        """Number of ground-truth lesions detected."""
        return sum(r.detected for r in self.lesions)

    @property
    def n_false_positives(self) -> int:
        """Number of predicted components that touch no ground-truth lesion."""
        return len(self.false_positive_sizes)

    @property
    def sensitivity(self) -> float:
        """Detected / ground-truth lesions; ``nan`` for a case without lesions."""
        return self.n_detected / self.n_lesions if self.lesions else math.nan

    @property
    def lesion_dice(self) -> float:
        """BraTS 2023 lesion-wise Dice: sum of per-lesion Dice / (lesions + false positives); 1.0 if both are 0."""
        denominator = self.n_lesions + self.n_false_positives
        return sum(r.dice for r in self.lesions) / denominator if denominator else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Return the records, counts and the derived rates as a JSON-ready dict."""
        out = asdict(self)
        out.update(
            n_lesions=self.n_lesions,
            n_detected=self.n_detected,
            n_false_positives=self.n_false_positives,
            sensitivity=self.sensitivity,
            lesion_dice=self.lesion_dice,
        )
        return out


def lesion_analysis(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    label: Label = 1,
    spacing: Sequence[float] | None = None,
    connectivity: Connectivity = "full",
    overlap: OverlapRule | str | Mapping[str, Any] = "any",
    min_size: float = 0.0,
    size_unit: Literal["voxels", "mm3"] = "voxels",
) -> LesionResult:
    """Match connected components of prediction and ground truth for one case.

    Lesions are connected components (``scipy.ndimage.label``) of ``label`` in each map. For every
    ground-truth lesion the predicted components that touch it are gathered; their union is scored against the
    lesion (Dice, IoU) and the overlap rule decides detection. A predicted component that touches no
    ground-truth lesion is a false positive. One predicted component spanning two lesions detects both (and
    lowers both Dice values). Unlike the BraTS 2023 reference code, ground-truth lesions are not dilated
    before matching.

    Args:
        pred: ``(X, Y[, Z])`` integer label map predicted for one case.
        gt: ``(X, Y[, Z])`` ground-truth label map.
        label: The lesion label or labels.
        spacing: Voxel size in mm per axis (for volumes and ``size_unit="mm3"``).
        connectivity: ``"face"`` (6-connected in 3D, 4 in 2D) or ``"full"`` (26 / 8, as BraTS 2023).
        overlap: Detection rule: an :class:`OverlapRule`, ``"any"``, ``"iou>=x"`` or ``"fraction>=x"``.
        min_size: Components of either map smaller than this are removed first (speckle); 0 keeps all.
        size_unit: Unit of ``min_size``: ``"voxels"`` or ``"mm3"``.

    Returns:
        A :class:`LesionResult`.

    Example:
        >>> gt = np.zeros((8, 8), int); gt[1:3, 1:3] = 1; gt[5:7, 5:7] = 1
        >>> pred = np.zeros((8, 8), int); pred[1:3, 1:3] = 1; pred[0, 7] = 1
        >>> r = lesion_analysis(pred, gt)
        >>> r.n_lesions, r.n_detected, r.n_false_positives, r.lesion_dice
        (2, 1, 1, 0.3333333333333333)
    """
    pred, gt = _check_maps(pred, gt)
    sp = _check_spacing(spacing, pred.ndim)
    rule = OverlapRule.parse(overlap)
    _check_lesion_options(connectivity, size_unit, min_size)
    voxel_mm3 = float(np.prod(sp))
    min_voxels = min_size / voxel_mm3 if size_unit == "mm3" else min_size
    structure = ndimage.generate_binary_structure(pred.ndim, 1 if connectivity == "face" else pred.ndim)
    gt_cc, gt_sizes = _components(_mask(gt, label), structure, min_voxels)
    pr_cc, pr_sizes = _components(_mask(pred, label), structure, min_voxels)
    records, fp_sizes = _match_components(gt_cc, gt_sizes, pr_cc, pr_sizes, rule, voxel_mm3)
    return LesionResult(
        lesions=tuple(records),
        false_positive_sizes=fp_sizes,
        voxel_volume_mm3=voxel_mm3,
        connectivity=connectivity,
        overlap=str(rule),
        min_size=float(min_size),
        size_unit=size_unit,
    )


def _check_lesion_options(connectivity: str, size_unit: str, min_size: float) -> None:
    """Raise ``ValueError`` naming the first of :func:`lesion_analysis`'s options that is not valid."""
    if connectivity not in ("face", "full"):
        raise ValueError(f"connectivity must be 'face' or 'full', got {connectivity!r}")
    if size_unit not in ("voxels", "mm3"):
        raise ValueError(f"size_unit must be 'voxels' or 'mm3', got {size_unit!r}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")


def _match_components(
    gt_cc: np.ndarray,
    gt_sizes: np.ndarray,
    pr_cc: np.ndarray,
    pr_sizes: np.ndarray,
    rule: OverlapRule,
    voxel_mm3: float,
) -> tuple[list[LesionRecord], tuple[int, ...]]:
    """Score each ground-truth component against the predicted ones touching it; also the false-positive sizes."""
    # Overlap counts of every (gt component, predicted component) pair that touch, in one pass.
    both = (gt_cc > 0) & (pr_cc > 0)
    n_pr = len(pr_sizes)
    pairs, pair_voxels = np.unique(
        gt_cc[both].astype(np.int64) * (n_pr + 1) + pr_cc[both], return_counts=True
    )
    pair_gt, pair_pr = np.divmod(pairs, n_pr + 1)

    records = []
    for g in range(1, len(gt_sizes) + 1):
        hit = pair_gt == g
        touching = pair_pr[hit]
        inter = int(pair_voxels[hit].sum())
        size = int(gt_sizes[g - 1])
        pred_size = int(pr_sizes[touching - 1].sum()) if touching.size else 0
        iou = inter / (size + pred_size - inter)
        fraction = inter / size
        detected = inter > 0 and (
            rule.kind == "any" or (iou if rule.kind == "iou" else fraction) >= rule.min_value
        )
        records.append(
            LesionRecord(
                size_voxels=size,
                volume_mm3=size * voxel_mm3,
                detected=bool(detected),
                dice=2 * inter / (size + pred_size),
                iou=iou,
                overlap_fraction=fraction,
                n_predictions=int(touching.size),
            )
        )
    matched = np.zeros(n_pr + 1, dtype=bool)
    matched[pair_pr] = True
    fp_sizes = tuple(int(s) for s, m in zip(pr_sizes, matched[1:]) if not m)
    return records, fp_sizes


def _components(mask: np.ndarray, structure: np.ndarray, min_voxels: float) -> tuple[np.ndarray, np.ndarray]:
    """Label connected components, drop those under ``min_voxels``; return ``(labels, sizes)`` renumbered 1..K."""
    cc, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(cc.ravel(), minlength=n + 1)[1:]
    if min_voxels > 0 and n:
        keep = sizes >= min_voxels
        lut = np.zeros(n + 1, dtype=cc.dtype)
        lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        cc, sizes = lut[cc], sizes[keep]
    return cc, sizes


# -------------------------------------------------------------------------------------- across cases


@dataclass(frozen=True)
class LesionSummary:
    """Lesion-wise results pooled over cases.

    Attributes:
        n_cases: Cases pooled.
        n_lesions: Ground-truth lesions over all cases.
        n_detected: Of those, detected.
        n_false_positives: False-positive components over all cases.
        sensitivity: ``n_detected / n_lesions`` (pooled, so every lesion weighs the same); ``nan`` if none.
        false_positives_per_case: ``n_false_positives / n_cases``.
        lesion_dice: Mean over cases of the per-case lesion-wise Dice (BraTS 2023 reports it per case).
    """

    n_cases: int
    n_lesions: int
    n_detected: int
    n_false_positives: int
    sensitivity: float
    false_positives_per_case: float
    lesion_dice: float

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


def summarize_lesions(results: Sequence[LesionResult]) -> LesionSummary:
    """Pool per-case lesion analyses (one :class:`LesionResult` per case) into dataset-level figures.

    Raises:
        ValueError: If ``results`` is empty.
    """
    if not results:
        raise ValueError("summarize_lesions needs at least one case")
    n_lesions = sum(r.n_lesions for r in results)
    n_detected = sum(r.n_detected for r in results)
    n_fp = sum(r.n_false_positives for r in results)
    return LesionSummary(
        n_cases=len(results),
        n_lesions=n_lesions,
        n_detected=n_detected,
        n_false_positives=n_fp,
        sensitivity=n_detected / n_lesions if n_lesions else math.nan,
        false_positives_per_case=n_fp / len(results),
        lesion_dice=float(np.mean([r.lesion_dice for r in results])),
    )


@dataclass(frozen=True)
class SizeBin:
    """Detection sensitivity of lesions whose size lies in ``[low, high)``."""

    low: float
    high: float
    n_lesions: int
    n_detected: int
    sensitivity: float = field(default=math.nan)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


def sensitivity_by_size(
    results: LesionResult | Sequence[LesionResult],
    bin_edges: Sequence[float],
    *,
    unit: Literal["voxels", "mm3"] = "voxels",
) -> tuple[SizeBin, ...]:
    """Compute lesion detection sensitivity per lesion-size bin, pooled over cases.

    Args:
        results: One case's :class:`LesionResult` or several.
        bin_edges: Increasing edges; bin ``i`` holds sizes in ``[edges[i], edges[i+1])``. End with ``inf`` to
            keep the largest lesions; sizes outside all bins are not counted.
        unit: Measure sizes in ``"voxels"`` or ``"mm3"``.

    Returns:
        One :class:`SizeBin` per bin; ``sensitivity`` is ``nan`` for a bin without lesions.

    Example:
        >>> r = LesionResult(lesions=(LesionRecord(5, 5.0, False, 0.0, 0.0, 0.0, 0),), false_positive_sizes=())
        >>> [b.n_lesions for b in sensitivity_by_size(r, [0, 10, math.inf])]
        [1, 0]
    """
    edges = np.asarray(bin_edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bin_edges must be at least two strictly increasing values")
    if unit not in ("voxels", "mm3"):
        raise ValueError(f"unit must be 'voxels' or 'mm3', got {unit!r}")
    cases = [results] if isinstance(results, LesionResult) else list(results)
    lesions = [r for case in cases for r in case.lesions]
    sizes = np.array([r.size_voxels if unit == "voxels" else r.volume_mm3 for r in lesions], dtype=float)
    found = np.array([r.detected for r in lesions], dtype=bool)
    bins = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (sizes >= low) & (sizes < high)
        n, k = int(inside.sum()), int(found[inside].sum())
        bins.append(SizeBin(float(low), float(high), n, k, k / n if n else math.nan))
    return tuple(bins)


# ------------------------------------------------------------------------------------------ validation


def _check_maps(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    if pred.size == 0:
        raise ValueError("label maps must not be empty")
    if pred.ndim not in (2, 3):
        raise ValueError(f"label maps must be (X, Y) or (X, Y, Z) for one case, got shape {pred.shape}")
    for name, arr in (("pred", pred), ("gt", gt)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(
                f"{name} must be an integer label map, got dtype {arr.dtype} (threshold it first)"
            )
    return pred, gt


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or any(not s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive values (mm per axis), got {spacing!r}")
    return sp


def _mask(labels: np.ndarray, label: Label) -> np.ndarray:
    if np.isscalar(label):
        return labels == label
    values = list(label)  # type: ignore[arg-type]
    if not values:
        raise ValueError("label must name at least one value")
    return np.isin(labels, values)
