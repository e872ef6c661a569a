"""Segmentation metrics on hand-made label maps: Dice, HD95 with spacing, lesion-wise detection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from mednas.metrics import (
    LesionResult,
    OverlapRule,
    dice,
    dice_per_class,
    hd95,
    lesion_analysis,
    sensitivity_by_size,
    summarize_lesions,
)

SHAPE = (20, 21, 22)  # odd sizes catch axis mix-ups


def _vol() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.int16)


def _cube(vol: np.ndarray, corner: tuple[int, int, int], size: int, value: int = 1) -> np.ndarray:
    x, y, z = corner
    vol[x : x + size, y : y + size, z : z + size] = value
    return vol


# ----------------------------------------------------------------------------------------------- Dice


def test_dice_by_hand_and_per_class():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(9, 10, 11))
    gt = rng.integers(0, 3, size=(9, 10, 11))
    for c in (1, 2):
        p, g = pred == c, gt == c
        assert dice(pred, gt, label=c) == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()), rel=1e-6)
    per_class = dice_per_class(pred, gt, labels=[1, 2])
    assert list(per_class) == [1, 2]
    assert per_class[2] == pytest.approx(dice(pred, gt, label=2))
    p, g = pred > 0, gt > 0  # a region of several labels scores them together
    assert dice(pred, gt, label=[1, 2]) == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()), rel=1e-6)


def test_dice_equals_monai_compute_dice_including_empty_classes():
    import torch
    from monai.metrics import compute_dice

    rng = np.random.default_rng(3)
    pred = rng.integers(0, 3, size=(7, 8, 9))
    gt = rng.integers(0, 3, size=(7, 8, 9))
    pred[pred == 2] = 0  # class 2 absent from the prediction
    gt[gt == 2] = 0  # and from the truth: empty vs empty
    gt[0, 0, 0], pred[0, 0, 0] = 3, 0  # class 3 only in the truth
    labels = [1, 2, 3]

    def one_hot(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([x == c for c in labels])[None])

    reference = compute_dice(one_hot(pred), one_hot(gt), include_background=True, ignore_empty=False)[0]
    ours = dice_per_class(pred, gt, labels=labels)
    assert list(ours.values()) == pytest.approx(reference.tolist(), rel=1e-6)
    assert ours[2] == 1.0 and ours[3] == 0.0


def test_dice_empty_convention_and_2d():
    empty = np.zeros((6, 7), dtype=np.uint8)
    blob = empty.copy()
    blob[2:4, 2:4] = 1
    assert dice(empty, empty) == 1.0
    assert dice(blob, empty) == 0.0 and dice(empty, blob) == 0.0
    assert dice_per_class(blob, blob, labels=[1, 2]) == {1: 1.0, 2: 1.0}
    assert dice(blob.astype(bool), blob.astype(bool)) == 1.0
    assert type(dice(blob, blob * 0 + 1)) is float  # plain floats, not numpy scalars, go into JSON


# ----------------------------------------------------------------------------------------------- HD95


@pytest.mark.parametrize(
    ("spacing", "expected"), [(None, 3.0), ((1.0, 1.0, 3.0), 9.0), ((3.0, 1.0, 1.0), 3.0)]
)
def test_hd95_single_voxels_anisotropic(spacing, expected):
    gt = _vol()
    pred = _vol()
    gt[5, 5, 5] = 1
    pred[5, 5, 8] = 1  # 3 voxels apart along the last axis only
    assert hd95(pred, gt, spacing=spacing) == pytest.approx(expected)


def _brute_hd(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], q: float) -> float:
    def surface_points(mask: np.ndarray) -> np.ndarray:
        edge = mask & ~ndimage.binary_erosion(mask)
        return np.argwhere(edge) * np.asarray(spacing)

    d = cdist(surface_points(pred), surface_points(gt))
    return max(np.percentile(d.min(axis=1), q), np.percentile(d.min(axis=0), q))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.2, 3.0)])
def test_hd95_matches_brute_force_on_blobs(spacing):
    rng = np.random.default_rng(1)
    noise = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0)
    gt = np.zeros(SHAPE, bool)
    gt[3:-3, 3:-3, 3:-3] = noise[3:-3, 3:-3, 3:-3] > 0.05
    pred = np.zeros(SHAPE, bool)
    pred[3:-3, 3:-3, 3:-3] = ndimage.shift(noise, (1, 0, 2), order=0)[3:-3, 3:-3, 3:-3] > 0.0
    for q in (95.0, 100.0):
        got = hd95(pred.astype(np.uint8), gt.astype(np.uint8), spacing=spacing, percentile=q)
        assert got == pytest.approx(_brute_hd(pred, gt, spacing, q), rel=1e-4)


def test_hd95_empty_convention():
    blob = _cube(_vol(), (4, 4, 4), 3)
    assert hd95(_vol(), _vol()) == 0.0
    assert hd95(blob, _vol()) == math.inf
    assert hd95(_vol(), blob, worst=373.13) == 373.13


# ------------------------------------------------------------------------------------------- lesions


def test_missed_small_lesion_and_false_positive():
    gt = _cube(_vol(), (2, 2, 2), 5)  # 125 voxels, found
    gt = _cube(gt, (14, 14, 14), 2)  # 8 voxels, missed
    pred = _cube(_vol(), (2, 2, 2), 4)  # 64 voxels inside the big lesion
    pred = _cube(pred, (2, 14, 2), 3)  # 27-voxel false positive far from any lesion
    r = lesion_analysis(pred, gt)
    assert (r.n_lesions, r.n_detected, r.n_false_positives) == (2, 1, 1)
    assert r.sensitivity == 0.5
    big, small = sorted(r.lesions, key=lambda rec: -rec.size_voxels)
    assert (big.size_voxels, big.detected, small.size_voxels, small.detected) == (125, True, 8, False)
    assert big.dice == pytest.approx(2 * 64 / (125 + 64))
    assert big.overlap_fraction == pytest.approx(64 / 125) and big.iou == pytest.approx(64 / 125)
    assert small.dice == 0.0 and small.n_predictions == 0
    assert r.false_positive_sizes == (27,)
    # BraTS 2023: missed lesion adds 0, the false positive adds a 0 to the average.
    assert r.lesion_dice == pytest.approx(big.dice / 3)


def test_two_lesions_merged_by_one_prediction():
    gt = _cube(_vol(), (4, 4, 4), 3)
    gt = _cube(gt, (4, 4, 9), 3)
    pred = _vol()
    pred[4:7, 4:7, 4:12] = 1  # one component spanning both lesions and the gap: 72 voxels
    r = lesion_analysis(pred, gt)
    assert (r.n_lesions, r.n_detected, r.n_false_positives) == (2, 2, 0)
    for rec in r.lesions:
        assert rec.n_predictions == 1
        assert rec.dice == pytest.approx(2 * 27 / (27 + 72))
    assert r.lesion_dice == pytest.approx(2 * 27 / 99)


def test_empty_cases():
    both_empty = lesion_analysis(_vol(), _vol())
    assert (both_empty.n_lesions, both_empty.n_false_positives, both_empty.lesion_dice) == (0, 0, 1.0)
    assert math.isnan(both_empty.sensitivity)
    only_pred = lesion_analysis(_cube(_vol(), (3, 3, 3), 2), _vol())
    assert (only_pred.n_false_positives, only_pred.lesion_dice) == (1, 0.0)
    only_gt = lesion_analysis(_vol(), _cube(_vol(), (3, 3, 3), 2))
    assert (only_gt.n_lesions, only_gt.n_detected, only_gt.sensitivity, only_gt.lesion_dice) == (
        1,
        0,
        0.0,
        0.0,
    )


def test_connectivity_face_versus_full():
    gt = _vol()
    gt[5, 5, 5] = gt[6, 6, 6] = 1  # touch at a corner only
    assert lesion_analysis(gt, gt, connectivity="face").n_lesions == 2
    assert lesion_analysis(gt, gt, connectivity="full").n_lesions == 1
    flat = np.zeros((5, 6), np.uint8)
    flat[1, 1] = flat[2, 2] = 1
    assert lesion_analysis(flat, flat, connectivity="face").n_lesions == 2  # 4-connected in 2D
    assert lesion_analysis(flat, flat, connectivity="full").n_lesions == 1  # 8-connected


def test_overlap_rules():
    gt = _vol()
    gt[2:12, 2:4, 2:4] = 1  # 40 voxels
    pred = _vol()
    pred[2:5, 2:4, 2:4] = 1  # covers 12 of them (30%)
    pred[2:5, 4:6, 2:4] = 1  # and 12 voxels outside, same component: IoU 12 / 52
    assert lesion_analysis(pred, gt, overlap="any").n_detected == 1
    assert lesion_analysis(pred, gt, overlap="fraction>=0.3").n_detected == 1
    assert lesion_analysis(pred, gt, overlap="fraction>=0.5").n_detected == 0
    assert lesion_analysis(pred, gt, overlap=OverlapRule("iou", 0.2)).n_detected == 1
    assert lesion_analysis(pred, gt, overlap={"kind": "iou", "min_value": 0.25}).n_detected == 0
    rec = lesion_analysis(pred, gt).lesions[0]
    assert rec.iou == pytest.approx(12 / 52) and rec.overlap_fraction == pytest.approx(0.3)
    with pytest.raises(ValueError):
        OverlapRule.parse("dice>0.5")
    with pytest.raises(ValueError):
        OverlapRule("iou", 0.0)


def test_min_size_removes_speckle_in_voxels_and_mm3():
    gt = _cube(_vol(), (2, 2, 2), 4)
    pred = _cube(_vol(), (2, 2, 2), 4)
    pred[15, 15, 15] = 1  # one-voxel speckle
    gt[15, 2, 15] = 1  # one-voxel "lesion" nobody should be scored on
    assert lesion_analysis(pred, gt).n_false_positives == 1
    clean = lesion_analysis(pred, gt, min_size=2)
    assert (clean.n_lesions, clean.n_false_positives, clean.sensitivity) == (1, 0, 1.0)
    # 1 voxel is 2 mm^3 at this spacing, 64 voxels 128 mm^3
    spaced = lesion_analysis(pred, gt, spacing=(1.0, 1.0, 2.0), min_size=3.0, size_unit="mm3")
    assert (spaced.n_lesions, spaced.n_false_positives) == (1, 0)
    assert spaced.lesions[0].volume_mm3 == pytest.approx(128.0)
    assert (
        lesion_analysis(pred, gt, spacing=(1.0, 1.0, 2.0), min_size=2.0, size_unit="mm3").n_false_positives
        == 1
    )


def test_sensitivity_by_size_and_summary_pool_cases():
    case1 = _cube(_cube(_vol(), (2, 2, 2), 5), (14, 14, 14), 2)  # 125 and 8 voxels
    pred1 = _cube(_vol(), (2, 2, 2), 5)  # finds the big one only
    case2 = _cube(_vol(), (10, 10, 10), 2)  # 8 voxels
    pred2 = _cube(_cube(_vol(), (10, 10, 10), 2), (1, 1, 1), 2)  # finds it, plus a false positive
    results = [lesion_analysis(pred1, case1), lesion_analysis(pred2, case2), lesion_analysis(_vol(), _vol())]
    bins = sensitivity_by_size(results, [0, 10, 100, math.inf])
    assert [(b.n_lesions, b.n_detected) for b in bins] == [(2, 1), (0, 0), (1, 1)]
    assert bins[0].sensitivity == 0.5 and math.isnan(bins[1].sensitivity) and bins[2].sensitivity == 1.0
    summary = summarize_lesions(results)
    assert (summary.n_cases, summary.n_lesions, summary.n_detected, summary.n_false_positives) == (3, 3, 2, 1)
    assert summary.sensitivity == pytest.approx(2 / 3)
    assert summary.false_positives_per_case == pytest.approx(1 / 3)
    assert summary.lesion_dice == pytest.approx(np.mean([0.5, 0.5, 1.0]))
    with pytest.raises(ValueError, match="increasing"):
        sensitivity_by_size(results, [10, 5])


def test_lesion_result_is_json_ready_for_reports():
    gt = _cube(_vol(), (2, 2, 2), 3)
    r = lesion_analysis(gt, gt, spacing=(0.5, 0.5, 2.0), overlap="iou>=0.5")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["n_lesions"] == 1 and d["sensitivity"] == 1.0 and d["overlap"] == "iou>=0.5"
    assert d["lesions"][0]["volume_mm3"] == pytest.approx(27 * 0.5)
    assert isinstance(r, LesionResult) and r.connectivity == "full"


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (np.zeros((3, 3)), np.zeros((3, 4)), {}, "same shape"),
        (np.zeros((3, 3)), np.zeros((3, 3)), {}, "integer"),
        (np.zeros((0, 3), int), np.zeros((0, 3), int), {}, "empty"),
        (np.zeros((3, 3), int), np.zeros((3, 3), int), {"spacing": (1.0, 1.0, 1.0)}, "spacing"),
        (np.zeros((3, 3), int), np.zeros((3, 3), int), {"connectivity": "edge"}, "connectivity"),
    ],
)
def test_invalid_inputs_raise(pred, gt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lesion_analysis(pred, gt, **kwargs)
