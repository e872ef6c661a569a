"""Patient-level bootstrap: reproducible, resamples whole patients, fast paths agree with the generic path."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from mednas.metrics import (
    Estimate,
    auroc,
    bootstrap_ci,
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    patient_resamples,
)


def _clustered(n_patients: int = 12, per_patient: int = 15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-case values where every image of a patient is identical (maximal within-patient correlation)."""
    rng = np.random.default_rng(seed)
    patient_value = rng.normal(0.7, 0.1, n_patients)
    groups = np.repeat([f"P{i:03d}" for i in range(n_patients)], per_patient)
    return np.repeat(patient_value, per_patient), groups


def test_same_seed_same_interval_and_different_seed_differs():
    values, groups = _clustered()
    a = bootstrap_ci(np.mean, values, groups=groups, n_resamples=300, seed=11)
    b = bootstrap_ci(np.mean, values, groups=groups, n_resamples=300, seed=11)
    c = bootstrap_ci(np.mean, values, groups=groups, n_resamples=300, seed=12)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.value == c.value == pytest.approx(values.mean())
    ss = np.random.SeedSequence([3, 7])  # derived seeds, as mednas derives them per trial
    assert bootstrap_mean_ci(values, groups=groups, seed=ss) == bootstrap_mean_ci(
        values, groups=groups, seed=np.random.SeedSequence([3, 7])
    )


def test_resamples_take_every_case_of_each_drawn_patient_together():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 6, size=9)  # patients with 1 to 5 images each
    groups = np.repeat(np.arange(9) * 10, sizes)
    rng.shuffle(groups)  # a patient's cases need not be adjacent in the input
    case_ids = np.arange(groups.size)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def record(ids: np.ndarray, pids: np.ndarray) -> float:
        seen.append((ids, pids))
        return 0.0

    bootstrap_ci(record, case_ids, groups, groups=groups, n_resamples=50, seed=5)
    draws = patient_resamples(groups, n_resamples=50, seed=5)
    patients = np.unique(groups)
    assert len(seen) == 51  # once on all cases, then one call per resample
    for drawn, (ids, pids) in zip(draws, seen[1:]):
        assert np.array_equal(groups[ids], pids)  # the arrays stay aligned
        offset = 0
        for g in drawn:  # blocks arrive patient by patient, each block is all of that patient's cases
            own = np.flatnonzero(groups == patients[g])
            block = ids[offset : offset + own.size]
            assert sorted(block.tolist()) == own.tolist()
            offset += own.size
        assert offset == ids.size


def test_patient_resampling_is_wider_than_image_resampling():
    values, groups = _clustered(n_patients=12, per_patient=15)
    by_patient = bootstrap_mean_ci(values, groups=groups, n_resamples=1000, seed=0)
    by_image = bootstrap_mean_ci(values, groups=np.arange(values.size), n_resamples=1000, seed=0)
    width_patient = by_patient.high - by_patient.low
    width_image = by_image.high - by_image.low
    # 15 identical images per patient carry one patient's worth of evidence: about sqrt(15) ~ 3.9x wider.
    assert width_patient > 2.5 * width_image
    assert by_patient.low < values.mean() < by_patient.high


def test_fast_paths_equal_the_generic_path_for_the_same_seed():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 25, size=120)
    values = rng.random(120)
    generic = bootstrap_ci(np.mean, values, groups=groups, n_resamples=400, seed=9)
    fast = bootstrap_mean_ci(values, groups=groups, n_resamples=400, seed=9)
    assert fast.value == pytest.approx(generic.value)
    assert (fast.low, fast.high) == pytest.approx((generic.low, generic.high), rel=1e-12)

    detected = rng.integers(0, 3, size=120).astype(float)
    lesions = detected + rng.integers(0, 2, size=120)
    generic = bootstrap_ci(lambda d, n: d.sum() / n.sum(), detected, lesions, groups=groups, n_resamples=400)
    fast = bootstrap_ratio_ci(detected, lesions, groups=groups, n_resamples=400)
    assert fast.value == pytest.approx(detected.sum() / lesions.sum())
    assert (fast.low, fast.high) == pytest.approx((generic.low, generic.high), rel=1e-12)


def test_mean_fast_path_leaves_nan_cases_out():
    values = np.array([1.0, np.nan, 0.0, 0.5, np.nan, 1.0])
    groups = np.array([1, 1, 2, 3, 3, 4])
    est = bootstrap_mean_ci(values, groups=groups, n_resamples=200)
    assert est.value == pytest.approx(np.nanmean(values))
    only_nan_patient = bootstrap_mean_ci([np.nan, np.nan, 1.0], groups=[1, 1, 2], n_resamples=200)
    assert only_nan_patient.n_skipped > 0  # resamples that drew patient 1 twice have no valid case
    assert only_nan_patient.n_resamples + only_nan_patient.n_skipped == 200


def test_undefined_resamples_are_skipped_and_counted_quietly():
    # 3 patients with positives, 3 without: many resamples contain one class only.
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.4, 0.3, 0.5, 0.1, 0.2, 0.6, 0.7])
    groups = np.array([0, 1, 2, 3, 3, 4, 4, 5, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the silenced UndefinedMetricWarnings would raise here
        est = bootstrap_ci(auroc, y, s, groups=groups, n_resamples=300, seed=0)
    assert est.n_skipped > 0 and est.n_resamples + est.n_skipped == 300
    assert 0.0 <= est.low <= est.value <= est.high <= 1.0


def test_metric_undefined_on_all_cases_gives_nan_interval():
    with pytest.warns(RuntimeWarning):
        est = bootstrap_ci(auroc, [0, 0, 0], [0.1, 0.2, 0.3], groups=[1, 2, 3], n_resamples=10)
    assert math.isnan(est.value) and math.isnan(est.low) and est.n_resamples == 0


def test_estimate_is_json_ready():
    est = bootstrap_mean_ci([0.1, 0.4, 0.9], groups=["a", "b", "c"], n_resamples=50, alpha=0.1)
    d = json.loads(json.dumps(est.to_dict()))
    assert set(d) == {"value", "low", "high", "n_resamples", "n_skipped", "confidence"}
    assert d["confidence"] == pytest.approx(0.9) and d["n_resamples"] == 50
    assert isinstance(est, Estimate)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groups": [1, 2]}, "one row per case"),
        ({"groups": [1, 2, 3], "n_resamples": 0}, "n_resamples"),
        ({"groups": [1, 2, 3], "alpha": 1.5}, "alpha"),
        ({"groups": []}, "groups"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(np.mean, np.array([1.0, 2.0, 3.0]), **kwargs)
