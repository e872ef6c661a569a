"""Patient-grouped, label-stratified, seeded splits, saved to ``splits.json`` and re-used on resume.

No patient ever appears in two splits; :func:`check_splits` proves it for any saved file.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from mednas.config import SplitConfig
from mednas.data._cases import Case
from mednas.errors import DataError

__all__ = ["check_splits", "make_splits", "splits_hash"]

SPLITS = ("train", "val", "test")


def _patient_strata(cases: Sequence[Case]) -> dict[str, int]:
    # A patient's stratum is its highest label (any finding makes the patient a finding patient).
    strata: dict[str, int] = {}
    for case in cases:
        strata[case.patient] = max(strata.get(case.patient, 0), case.strata())
    return strata


def _allocate(n: int, frac: float, minimum: int) -> int:
    return min(n, max(minimum, int(round(n * frac))))


def make_splits(cases: Sequence[Case], cfg: SplitConfig, seed: int) -> dict[str, Any]:
    """Split cases into train/val/test by patient, stratified by label, deterministic for a seed.

    With ``cfg.folds`` set, the test patients are carved out first and the rest is divided into k folds;
    fold ``cfg.fold`` is the validation set.

    Returns:
        ``{"train": [case keys], "val": [...], "test": [...], "seed", "method", "n_patients", "hash"}``.

    Raises:
        DataError: If there are too few patients for the requested splits.
    """
    strata = _patient_strata(cases)
    # Order patients by a salt-independent key so the same data and seed give the same split in any run.
    order: dict[str, str] = {}
    for case in cases:
        key = case.order or case.patient
        order[case.patient] = min(order.get(case.patient, key), key)
    patients = sorted(strata, key=lambda p: (order[p], p))
    if len(patients) < 3:
        raise DataError(f"need at least 3 patients for train/val/test splits, found {len(patients)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5911]))
    groups: dict[int, list[str]] = defaultdict(list)
    for p in patients:
        groups[strata[p] if cfg.stratify else 0].append(p)  # keeps the salt-independent order
    assignment: dict[str, str] = {}
    fold_of: dict[str, int] = {}
    for stratum in sorted(groups):
        members = list(groups[stratum])
        rng.shuffle(members)
        n = len(members)
        n_test = _allocate(n, cfg.test, 0) if cfg.test > 0 else 0
        rest = members[n_test:]
        for p in members[:n_test]:
            assignment[p] = "test"
        if cfg.folds:
            for i, p in enumerate(rest):
                fold_of[p] = i % cfg.folds
                assignment[p] = "val" if fold_of[p] == cfg.fold else "train"
        else:
            n_val = _allocate(len(rest), cfg.val / (1 - cfg.test), 0)
            for i, p in enumerate(rest):
                assignment[p] = "val" if i < n_val else "train"
    out: dict[str, Any] = {s: [] for s in SPLITS}
    for case in sorted(cases, key=lambda c: c.key):
        out[assignment[case.patient]].append(case.key)
    for split in ("train", "val") + (("test",) if cfg.test > 0 else ()):
        if not out[split]:
            raise DataError(
                f"the {split} split is empty: {len(patients)} patients are too few for val={cfg.val}, test={cfg.test}"
            )
    out["seed"] = seed
    out["method"] = (
        f"patient-grouped{', label-stratified' if cfg.stratify else ''}"
        + (f", {cfg.folds}-fold (validation fold {cfg.fold})" if cfg.folds else "")
    )
    members = {s: set(out[s]) for s in SPLITS}
    out["n_patients"] = {s: len({c.patient for c in cases if c.key in members[s]}) for s in SPLITS}
    out["hash"] = splits_hash(out)
    return out


def splits_hash(splits: dict[str, Any]) -> str:
    """Hash of the case keys in each split (what a bundle records to identify its data split)."""
    payload = json.dumps({s: sorted(splits.get(s, [])) for s in SPLITS}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_splits(splits: dict[str, Any], cases: Sequence[Case]) -> None:
    """Raise :class:`DataError` unless every case is in exactly one split and no patient spans two splits."""
    by_key = {c.key: c for c in cases}
    seen: dict[str, str] = {}
    patient_split: dict[str, str] = {}
    for split in SPLITS:
        for key in splits.get(split, []):
            if key not in by_key:
                raise DataError(f"splits.json lists case {key} that is not in the dataset (data changed since the split?)")
            if key in seen:
                raise DataError(f"splits.json: case {key} is in both {seen[key]} and {split}")
            seen[key] = split
            patient = by_key[key].patient
            if patient_split.setdefault(patient, split) != split:
                raise DataError(f"splits.json: patient {patient} is in both {patient_split[patient]} and {split}")
    missing = set(by_key) - set(seen)
    if missing:
        raise DataError(f"splits.json does not place {len(missing)} case(s) of the dataset (data changed since the split?)")
