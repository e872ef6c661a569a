"""Patient-grouped splits, saved to ``splits.json`` and re-used on resume: the source's own, or seeded and stratified.

No patient ever appears in two splits (:func:`check_splits` proves it for any saved file), and exact duplicate
images across splits are counted (:func:`find_duplicates`) and refused between train and test.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from mednas.config import SplitConfig
from mednas.data._cases import Case, order_key
from mednas.errors import DataError

__all__ = [
    "check_duplicates",
    "check_splits",
    "describe_duplicates",
    "find_duplicates",
    "make_folds",
    "make_splits",
    "splits_hash",
]

SPLITS = ("train", "val", "test")


def _patient_strata(cases: Sequence[Case]) -> dict[str, int]:
    # A patient's stratum is its highest label (any finding makes the patient a finding patient).
    strata: dict[str, int] = {}
    for case in cases:
        strata[case.patient] = max(strata.get(case.patient, 0), case.strata())
    return strata


def _allocate(n: int, frac: float, minimum: int) -> int:
    return min(n, max(minimum, int(round(n * frac))))


def case_order(case: Case) -> tuple[str, str, str]:
    """Salt-independent sort key of a case: its patient's unsalted digest, then its own (ties: the salted key)."""
    return (case.order or case.patient, order_key(case.identifier) if case.identifier else "", case.key)


def make_splits(cases: Sequence[Case], cfg: SplitConfig, seed: int) -> dict[str, Any]:
    """Split cases into train/val/test by patient: the source's own splits, or seeded and label-stratified.

    ``cfg.policy`` decides: ``auto`` keeps the splits the source defines (:attr:`Case.given_split`) and makes a
    random split where it defines none, ``given`` requires them, ``random`` pools every case and re-splits.
    Given splits without validation get it carved out of their training patients (fraction ``cfg.val``); given
    splits without test have an empty test split. With ``cfg.folds`` set, test is held out first (given or
    carved) and the rest is divided into k folds; fold ``cfg.fold`` is the validation set.

    Returns:
        ``{"train": [case keys], "val": [...], "test": [...], "seed", "policy", "method", "n_patients",
        "notes", "hash"}`` (with given splits also ``"given"``: the source's split sizes).

    Raises:
        DataError: If there are too few patients, given splits are missing or incomplete, or a patient is in
            two given splits.
    """
    # A source defines splits when it sets cases apart for validation or test (a train-only file defines none).
    defined = any(c.given_split in ("val", "test") for c in cases)
    if cfg.policy == "given" and not defined:
        raise DataError(
            "data.split.policy is 'given' but the data defines no splits (no MedMNIST val/test arrays, no split "
            "column or field, no validation/test section); use policy random (or auto)"
        )
    strata = _patient_strata(cases)
    # Order patients by a salt-independent key so the same data and seed give the same split in any run.
    order: dict[str, str] = {}
    for case in cases:
        key = case.order or case.patient
        order[case.patient] = min(order.get(case.patient, key), key)
    patients = sorted(strata, key=lambda p: (order[p], p))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5911]))
    notes: list[str] = []
    given_sizes: dict[str, int] | None = None
    if cfg.policy != "random" and defined:
        policy = "given"
        assignment, given_sizes = _given(cases, patients, strata, cfg, rng, notes)
    else:
        policy = "random"
        if len(patients) < 3:
            raise DataError(f"need at least 3 patients for train/val/test splits, found {len(patients)}")
        assignment = {}
        _divide(patients, strata, cfg, rng, assignment, test=cfg.test)
    out: dict[str, Any] = {s: [] for s in SPLITS}
    # Cases in a salt-independent order too: the arrays follow this order, so with the same data and seed every
    # run directory trains on the same batches and gets the same scores.
    for case in sorted(cases, key=case_order):
        out[assignment[case.patient]].append(case.key)
    wanted = ("train", "val") + (("test",) if policy == "random" and cfg.test > 0 else ())
    for split in wanted:
        if not out[split]:
            raise DataError(
                f"the {split} split is empty: {len(patients)} patients are too few for val={cfg.val}, test={cfg.test}"
            )
    out["seed"] = seed
    out["policy"] = policy
    strat = ", label-stratified" if cfg.stratify else ""
    folds = f", {cfg.folds}-fold (validation fold {cfg.fold})" if cfg.folds else ""
    if policy == "given":
        out["method"] = f"given by the source, patient-grouped{folds}"
        out["given"] = given_sizes
    else:
        out["method"] = f"random, patient-grouped{strat}{folds}"
    out["notes"] = notes
    members = {s: set(out[s]) for s in SPLITS}
    out["n_patients"] = {s: len({c.patient for c in cases if c.key in members[s]}) for s in SPLITS}
    out["hash"] = splits_hash(out)
    return out


def _divide(
    patients: Sequence[str],
    strata: dict[str, int],
    cfg: SplitConfig,
    rng: np.random.Generator,
    assignment: dict[str, str],
    *,
    test: float,
    val: float | None = None,
) -> None:
    """Assign ``patients`` (in their salt-independent order) to test, then folds or val, then train."""
    groups: dict[int, list[str]] = defaultdict(list)
    for p in patients:
        groups[strata[p] if cfg.stratify else 0].append(p)  # keeps the salt-independent order
    val_frac = cfg.val / (1 - cfg.test) if val is None else val
    for stratum in sorted(groups):
        members = list(groups[stratum])
        rng.shuffle(members)
        n = len(members)
        n_test = _allocate(n, test, 0) if test > 0 else 0
        rest = members[n_test:]
        for p in members[:n_test]:
            assignment[p] = "test"
        if cfg.folds:
            for i, p in enumerate(rest):
                assignment[p] = "val" if i % cfg.folds == cfg.fold else "train"
        else:
            n_val = _allocate(len(rest), val_frac, 0)
            for i, p in enumerate(rest):
                assignment[p] = "val" if i < n_val else "train"


def _given(
    cases: Sequence[Case],
    patients: Sequence[str],
    strata: dict[str, int],
    cfg: SplitConfig,
    rng: np.random.Generator,
    notes: list[str],
) -> tuple[dict[str, str], dict[str, int]]:
    """Patient -> split from the source's own splits (validation carved out of train where it gives none)."""
    blank = [c for c in cases if not c.given_split]
    if blank:
        raise DataError(
            f"{len(blank)} of {len(cases)} cases have no given split while the others have one: give every case a "
            "split (train, val or test), or set data.split.policy: random"
        )
    given: dict[str, str] = {}
    for case in cases:
        split = str(case.given_split)
        if given.setdefault(case.patient, split) != split:
            raise DataError(
                f"patient {case.patient} has cases in both the given {given[case.patient]} and {split} splits; "
                "a patient must stay in one split (fix the source's splits, or set data.split.policy: random)"
            )
    sizes = {s: sum(1 for c in cases if c.given_split == s) for s in SPLITS}
    if not sizes["train"]:
        raise DataError("the source's splits have no training cases")
    assignment = dict(given)
    if cfg.folds:
        pool = [p for p in patients if given[p] != "test"]
        _divide(pool, strata, cfg, rng, assignment, test=0.0)
        notes.append(f"given train and val pooled into {cfg.folds} folds by patient; given test kept")
    elif not sizes["val"]:
        train = [p for p in patients if given[p] == "train"]
        if len(train) < 2:
            raise DataError(
                "the source gives no validation split and too few training patients to carve one out"
            )
        _divide(train, strata, cfg, rng, assignment, test=0.0, val=cfg.val)
        notes.append(
            f"the source gives no validation split: it was carved out of the given training split by patient "
            f"(data.split.val = {cfg.val:g} of its patients{', label-stratified' if cfg.stratify else ''}, seeded)"
        )
    if not sizes["test"]:
        notes.append("the source gives no test split: there is no held-out test evaluation")
    return assignment, sizes


def make_folds(cases: Sequence[Case], k: int, seed: int, *, stratify: bool = True) -> list[list[str]]:
    """Divide ``cases`` into ``k`` patient-grouped folds (label-stratified when ``stratify``), seeded.

    Patients are ordered by the same salt-independent key as :func:`make_splits`, shuffled within their stratum
    and dealt to the folds in turn (one count across strata, so fold sizes differ by at most one patient).

    Returns:
        ``k`` lists of case keys, each in the salt-independent case order.

    Raises:
        DataError: With fewer patients than folds.
    """
    strata = _patient_strata(cases)
    if k < 2 or len(strata) < k:
        raise DataError(f"{k} folds need at least {max(2, k)} patients; train+val hold {len(strata)}")
    order: dict[str, str] = {}
    for case in cases:
        key = case.order or case.patient
        order[case.patient] = min(order.get(case.patient, key), key)
    groups: dict[int, list[str]] = defaultdict(list)
    for p in sorted(strata, key=lambda p: (order[p], p)):
        groups[strata[p] if stratify else 0].append(p)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF01D5]))
    fold_of: dict[str, int] = {}
    dealt = 0
    for stratum in sorted(groups):
        members = list(groups[stratum])
        rng.shuffle(members)
        for p in members:
            fold_of[p] = dealt % k
            dealt += 1
    folds: list[list[str]] = [[] for _ in range(k)]
    for case in sorted(cases, key=case_order):
        folds[fold_of[case.patient]].append(case.key)
    return folds


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
                raise DataError(
                    f"splits.json lists case {key} that is not in the dataset (data changed since the split?)"
                )
            if key in seen:
                raise DataError(f"splits.json: case {key} is in both {seen[key]} and {split}")
            seen[key] = split
            patient = by_key[key].patient
            if patient_split.setdefault(patient, split) != split:
                raise DataError(
                    f"splits.json: patient {patient} is in both {patient_split[patient]} and {split}"
                )
    missing = set(by_key) - set(seen)
    if missing:
        raise DataError(
            f"splits.json does not place {len(missing)} case(s) of the dataset (data changed since the split?)"
        )


#: Pairs of splits whose shared images are counted, in report order.
PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))


def find_duplicates(records: Sequence[dict[str, Any]], splits: dict[str, Any]) -> dict[str, Any] | None:
    """Count exact duplicates (same decoded pixels) across and within splits from the fingerprint's records.

    Args:
        records: Fingerprint case records with ``case`` and ``pixels`` (see :func:`~mednas.data.pixel_hash`).
        splits: The split record (``{"train": [case keys], ...}``).

    Returns:
        ``{"across": {"train/val": n, "train/test": n, "val/test": n}, "within": {split: n}, "method": ...}``,
        where ``across`` counts distinct pixel contents that occur in both splits and ``within`` counts the
        surplus copies inside one split; ``None`` when the records carry no pixel digests (an older run).
    """
    if not records or any("pixels" not in r for r in records):
        return None
    split_of = {key: split for split in SPLITS for key in splits.get(split, [])}
    by_content: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        split = split_of.get(record["case"])
        if split:
            by_content[record["pixels"]][split] += 1
    return {
        "across": {f"{a}/{b}": sum(1 for c in by_content.values() if c[a] and c[b]) for a, b in PAIRS},
        "within": {s: sum(c[s] - 1 for c in by_content.values() if c[s] > 1) for s in SPLITS},
        "method": "digest of the decoded pixel array (shape, dtype, values) of each case's first image",
    }


def check_duplicates(duplicates: dict[str, Any] | None, *, allow_test: bool) -> None:
    """Refuse images of the test split that also occur in train (same pixels), unless ``allow_test``.

    Raises:
        DataError: One line with the count and the fix.
    """
    n = (duplicates or {}).get("across", {}).get("train/test", 0)
    if n and not allow_test:
        raise DataError(
            f"{n} image{'s' if n != 1 else ''} of the test split also occur{'' if n != 1 else 's'} in train (same "
            "pixel content), which inflates test figures: remove the duplicates from the source, or set "
            "data.allow_test_duplicates: true to count them and go on"
        )


def describe_duplicates(duplicates: dict[str, Any] | None) -> str:
    """One line: exact duplicates across and within splits (or that they were not checked)."""
    if duplicates is None:
        return "not checked (records without pixel digests)"
    across = ", ".join(f"{pair} {n}" for pair, n in duplicates["across"].items())
    within = ", ".join(f"{s} {n}" for s, n in duplicates["within"].items() if n)
    return (
        f"across splits {across}"
        + (f"; within a split: {within}" if within else "")
        + " (same pixel content)"
    )
