"""Metrics of an external validation, each with a patient-level bootstrap interval, and the promise check.

Everything is computed with :mod:`mednas.metrics` (the functions a search scores candidates with) from one set
of patient resamples per table, so the figures here and in a run's report mean the same thing.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["classification_results", "promise_check", "segmentation_results", "subgroup_table"]

#: Groups with fewer cases get their count only: intervals on a handful of cases say nothing, and small cells
#: are the ones that could point at a person.
MIN_GROUP = 5
_CONSTRAINED = {"sensitivity_at_specificity": "specificity", "specificity_at_sensitivity": "sensitivity"}


def _bootstrap(
    fn: Any, arrays: Sequence[np.ndarray], patients: Sequence[str] | np.ndarray, n_resamples: int, seed: int
) -> dict[str, Any]:
    from mednas.metrics._objective import _bootstrap_all

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # undefined metrics on a resample (one class drawn) are counted, not news
        return _bootstrap_all(
            fn, list(arrays), list(patients), n_resamples=n_resamples, seed=seed, confidence=0.95
        )


# ------------------------------------------------------------------------------------------ classification


def _cls_values(n_classes: int, findings: Sequence[int], full: bool) -> Any:
    from mednas.metrics import _classification as C

    def fn(y: np.ndarray, score: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        truth = np.isin(y, findings).astype(int)
        called = np.isin(pred, findings).astype(
            float
        )  # the bundle's decision: finding score >= its threshold
        both = bool(truth.any() and not truth.all())
        out = {
            "auroc": C.auroc(truth, score) if both else math.nan,
            "sensitivity": C.sensitivity(truth, called),
            "specificity": C.specificity(truth, called),
            "accuracy": float(np.mean(y == pred)),
        }
        recalls = [float(np.mean(pred[y == c] == c)) for c in range(n_classes) if (y == c).any()]
        out["balanced_accuracy"] = float(np.mean(recalls)) if len(recalls) > 1 else math.nan
        if full:
            out["auprc"] = C.auprc(truth, score) if truth.any() else math.nan
            out["ppv"] = C.ppv(truth, called)
            out["npv"] = C.npv(truth, called)
            out["brier"] = C.brier_score(truth, score)
            out["ece"] = C.expected_calibration_error(truth, score)
            out.update(
                {k: v for k, v in C.per_class_metrics(y, pred, n_classes).items() if not k.endswith("_n")}
            )
        return out

    return fn


def classification_results(
    y: np.ndarray,
    score: np.ndarray,
    pred: np.ndarray,
    patients: Sequence[str],
    *,
    class_names: Sequence[str],
    findings: Sequence[int],
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Threshold-free metrics, metrics at the bundle's decisions, per-class table, confusion matrix, calibration.

    Args:
        y: ``(N,)`` true class indices.
        score: ``(N,)`` finding scores (summed probability of the finding classes) as the bundle gave them.
        pred: ``(N,)`` predicted class indices at the bundle's operating threshold (what ``mednas predict`` labels).
        patients: ``(N,)`` patient keys (the bootstrap resamples patients).
        class_names: Class names in index order.
        findings: Finding class indices.
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.
    """
    from mednas.reporting._curves import calibration_bins

    n_classes = len(class_names)
    metrics = _bootstrap(
        _cls_values(n_classes, findings, True), [y, score, pred], patients, n_resamples, seed
    )
    per_class = []
    for c, name in enumerate(class_names):
        per_class.append(
            {
                "class": name,
                "n": int(np.sum(y == c)),
                "n_called": int(np.sum(pred == c)),
                "sensitivity": metrics.pop(f"class{c}_recall"),
                "ppv": metrics.pop(f"class{c}_ppv"),
            }
        )
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (y.astype(int), pred.astype(int)), 1)
    truth = np.isin(y, findings).astype(int)
    called = np.isin(pred, findings)
    finding_matrix = [
        [int(((truth == 0) & ~called).sum()), int(((truth == 0) & called).sum())],
        [int(((truth == 1) & ~called).sum()), int(((truth == 1) & called).sum())],
    ]
    return {
        "metrics": metrics,
        "per_class": per_class,
        "confusion": {
            "rows": "true class",
            "columns": "predicted class",
            "labels": list(class_names),
            "matrix": matrix.tolist(),
        },
        "finding_confusion": {"labels": ["no finding", "finding"], "matrix": finding_matrix},
        "calibration": {
            "ece": metrics.get("ece"),
            "n_bins": 10,
            "bins": calibration_bins(truth.tolist(), score.tolist()),
        },
        "prevalence": float(truth.mean()),
    }


def promise_check(
    rule: str | None, op: dict[str, Any], metrics: dict[str, Any], truth: np.ndarray, score: np.ndarray
) -> dict[str, Any]:
    """Check the bundle's operating-point promise on these data, and find the threshold that would keep it here.

    The promise of ``sensitivity_at_specificity>=0.8`` is specificity >= 0.8: ``failed`` when the whole 95%
    interval of the specificity achieved lies below 0.8, ``uncertain`` when it straddles 0.8, ``held`` when it lies
    at or above. Rules without a floor (Youden, F-beta, cost) make no promise (``status: none``). The would-be
    threshold is information only; the bundle's threshold is what was applied.
    """
    from mednas.metrics import choose_threshold

    out: dict[str, Any] = {
        "rule": rule,
        "threshold": op.get("threshold"),
        "chosen_on": op.get("chosen_on", "validation"),
        "validation": {k: op.get(k) for k in ("sensitivity", "specificity") if op.get(k) is not None},
    }
    parsed = _parse_rule(rule)
    if parsed is None:
        out.update(status="none", text=f"no operating-point promise to check (rule {rule or 'not recorded'})")
        return out
    both = bool(truth.any() and not truth.all())
    if both:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            would = choose_threshold(truth, score, parsed)
        out["would_meet_here"] = {
            "threshold": would.threshold,
            "sensitivity": would.sensitivity,
            "specificity": would.specificity,
            "note": "the threshold the same rule picks on these data: information only, never applied",
        }
    kind, target = parsed.kind, parsed.target
    if kind not in _CONSTRAINED or target is None:
        out.update(status="none", text=f"the rule {rule} sets no floor, so there is no promise to check")
        return out
    metric = _CONSTRAINED[kind]
    achieved = metrics.get(metric) or {}
    value, ci = achieved.get("value"), achieved.get("ci95") or [None, None]
    out.update(metric=metric, promised=target, achieved=achieved)
    if value is None:
        out.update(
            status="not checked",
            text=f"{metric} >= {target:.2f} promised; not measurable here "
            f"(no case {'without' if metric == 'specificity' else 'with'} the finding)",
        )
        return out
    low, high = ci
    if high is not None and high < target:
        status = "failed"
    elif low is None or low < target:
        status = "uncertain"
    else:
        status = "held"
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    out.update(
        status=status, text=f"{metric} >= {target:.2f} promised, {value:.2f}{interval} achieved: {status}"
    )
    return out


def _parse_rule(rule: str | None) -> Any:
    """The :class:`~mednas.metrics.ThresholdRule` a recorded rule string names, or ``None``."""
    from mednas.metrics import ThresholdRule

    if not rule:
        return None
    text = rule.split(" (")[0].strip()
    m = re.fullmatch(r"(sensitivity_at_specificity|specificity_at_sensitivity)>=([0-9.eE+-]+)", text)
    try:
        if m:
            return ThresholdRule(m.group(1), target=float(m.group(2)))  # type: ignore[arg-type]
        if text == "youden":
            return ThresholdRule("youden")
        m = re.fullmatch(r"fbeta\(beta=([0-9.eE+-]+)\)", text)
        if m:
            return ThresholdRule("fbeta", beta=float(m.group(1)))
        m = re.fullmatch(r"min_cost\((.*)\)", text)
        if m:
            cost = json.loads(m.group(1))
            return ThresholdRule("min_cost", cost_matrix=tuple(tuple(float(v) for v in r) for r in cost))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None
    return None


# -------------------------------------------------------------------------------------------- segmentation


def segmentation_case_rows(
    pred: np.ndarray, gt: np.ndarray, *, findings: Sequence[int], n_classes: int, overlap: str
) -> list[float]:
    """One case: ``[dice, lesions, detected, false-positive lesions, lesion-wise Dice sum, dice per class...]``."""
    from mednas.metrics import dice, dice_per_class, lesion_analysis

    res = lesion_analysis(pred, gt, label=list(findings), overlap=overlap)
    per_class = dice_per_class(pred, gt, list(range(1, n_classes)))
    return [
        dice(pred, gt, label=list(findings)),
        res.n_lesions,
        res.n_detected,
        res.n_false_positives,
        sum(r.dice for r in res.lesions),
        *[per_class[c] for c in range(1, n_classes)],
    ]


def _seg_values(n_classes: int) -> Any:
    from mednas.metrics._objective import segmentation_stat_values

    def fn(stats: np.ndarray) -> dict[str, float]:
        out = segmentation_stat_values(stats[:, :5])
        for c in range(1, n_classes):
            out[f"class{c}_dice"] = float(stats[:, 4 + c].mean())
        return out

    return fn


def segmentation_results(
    rows: np.ndarray, patients: Sequence[str], *, class_names: Sequence[str], n_resamples: int, seed: int
) -> dict[str, Any]:
    """Dice (finding classes as one region), lesion detection, per-class Dice; each with its interval."""
    n_classes = len(class_names)
    metrics = _bootstrap(_seg_values(n_classes), [rows], patients, n_resamples, seed)
    per_class = [
        {"class": class_names[c], "dice": metrics.pop(f"class{c}_dice")} for c in range(1, n_classes)
    ]
    return {
        "metrics": metrics,
        "per_class": per_class,
        "per_case_dice": [float(v) for v in rows[:, 0]],
        "lesions": {
            "n": int(rows[:, 1].sum()),
            "detected": int(rows[:, 2].sum()),
            "false_positives": int(rows[:, 3].sum()),
        },
    }


# ------------------------------------------------------------------------------------------ subgroups


def subgroup_table(
    attributes: Sequence[dict[str, str]],
    arrays: Sequence[np.ndarray],
    patients: Sequence[str],
    *,
    fn: Any,
    n_resamples: int,
    seed: int,
    count: Any = None,
) -> list[dict[str, Any]]:
    """Metrics per value of every subgroup attribute, each with its interval and counts.

    Args:
        attributes: Per case: attribute -> value.
        arrays: Per-case arrays ``fn`` takes (cases along axis 0).
        patients: Patient key per case.
        fn: Metric function over the arrays (returns name -> value).
        n_resamples: Bootstrap resamples per group.
        seed: Bootstrap seed.
        count: Optional ``count(index) -> dict`` of extra counts per group (e.g. cases with the finding).
    """
    patients_arr = np.asarray(patients)
    rows = []
    for key in sorted({k for a in attributes for k in a}):
        values = np.array([a.get(key, "") for a in attributes], dtype=object)
        for value in sorted({v for v in values if v}):
            idx = np.flatnonzero(values == value)
            row: dict[str, Any] = {
                "attribute": key,
                "value": value,
                "n": int(idx.size),
                "n_patients": int(len(set(patients_arr[idx]))),
            }
            if count is not None:
                row.update(count(idx))
            if idx.size < MIN_GROUP:
                row["metrics"] = None
                row["note"] = f"fewer than {MIN_GROUP} cases: counts only"
            else:
                row["metrics"] = _bootstrap(
                    fn, [a[idx] for a in arrays], patients_arr[idx], n_resamples, seed
                )
            rows.append(row)
        missing = int(np.sum(values == ""))
        if missing:
            rows.append(
                {
                    "attribute": key,
                    "value": "(not recorded)",
                    "n": missing,
                    "metrics": None,
                    "n_patients": int(len(set(patients_arr[values == ""]))),
                    "note": "attribute missing",
                }
            )
    return rows


def classification_subgroup_fn(n_classes: int, findings: Sequence[int]) -> Any:
    """The per-group classification metrics (AUROC, sensitivity, specificity, accuracy, balanced accuracy)."""
    return _cls_values(n_classes, findings, False)


def segmentation_subgroup_fn() -> Any:
    """The per-group segmentation metrics (Dice, lesion sensitivity, false-positive lesions per case)."""
    from mednas.metrics._objective import segmentation_stat_values

    def fn(stats: np.ndarray) -> dict[str, float]:
        out = segmentation_stat_values(stats[:, :5])
        out.pop("lesion_dice", None)
        return out

    return fn
