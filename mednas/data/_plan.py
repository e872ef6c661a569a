"""Plan a run's data once: cases, fingerprint, patient-grouped splits, shapes, normalisation, cache.

Search and retrain both start from :func:`plan_data`; its records (``fingerprint.json``, ``splits.json``,
``preprocessing.json``) are written to the run directory the first time and re-used on resume. The test split is
guarded: only a caller that says ``allow_test=True`` (final evaluation after retraining) can load it.

How images become network inputs is decided in one place, :func:`decide_preprocessing`, and recorded once
(``preprocessing.json``): export ships what the run recorded (:func:`recorded_preprocessing`), and decides it
again with the same function only for a run made before the record existed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mednas.config import TaskConfig
from mednas.data._cases import Dataset, default_cache_root, load_dataset, new_salt
from mednas.data._prepare import ArrayData, Preprocessing, load_arrays
from mednas.data._splits import (
    check_duplicates,
    check_splits,
    describe_duplicates,
    find_duplicates,
    make_splits,
)
from mednas.data._validate import validate_cases, with_finding_strata
from mednas.errors import DataError, RunDirError
from mednas.io._atomic import read_json, write_json
from mednas.rundir import RunDir
from mednas.rundir._layout import PREPROCESSING

logger = logging.getLogger(__name__)

__all__ = [
    "PREPROCESSING",
    "DataPlan",
    "TestSplitAccessError",
    "check_families",
    "decide_preprocessing",
    "plan_data",
    "read_or_create_salt",
    "recorded_preprocessing",
    "unsupported_families",
]


class TestSplitAccessError(RuntimeError):
    """Raised when code that must not see the held-out test split asks for it."""


def read_or_create_salt(run_dir: RunDir, shared: str | None = None) -> str:
    """Return the run's salt: ``shared`` (from a shared study) if given, else ``.salt``, created once atomically.

    ``.salt`` is written by exclusive create (a private temporary file hard-linked to the name), so processes
    starting together agree on one salt and none ever reads a half-written one.
    """
    path = run_dir.salt
    if not shared:
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
    run_dir.root.mkdir(parents=True, exist_ok=True)
    salt = shared or new_salt()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(salt)
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return shared or path.read_text().strip()


@dataclass
class DataPlan:
    """Everything a step needs to load arrays for training and evaluation."""

    task: TaskConfig
    dataset: Dataset
    splits: dict[str, Any]
    fingerprint: dict[str, Any]
    prep: Preprocessing
    full_shape: tuple[int, ...]
    proxy_shape: tuple[int, ...]
    cache_dir: Path

    def cases(self, split: str) -> list[Any]:
        """Cases of ``split`` in the saved order."""
        by_key = self.dataset.by_key()
        return [by_key[k] for k in self.splits[split]]

    def arrays(
        self,
        split: str,
        shape: tuple[int, ...],
        *,
        subset: float = 1.0,
        seed: int = 0,
        allow_test: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ArrayData:
        """Load ``split`` preprocessed to ``shape`` (cached).

        Args:
            split: ``train``, ``val`` or ``test``.
            shape: Spatial shape.
            subset: Fraction of the split's patients to keep (proxy), chosen by ``seed``.
            seed: Seed for the subset.
            allow_test: Must be True to read the test split; search and proxy calibration never set it.

        Raises:
            TestSplitAccessError: For ``split == "test"`` without ``allow_test``.
        """
        if split == "test" and not allow_test:
            raise TestSplitAccessError(
                "the held-out test split must not be read during search or proxy calibration"
            )
        cases = self.cases(split)
        if subset < 1.0 and cases:
            # In a salt-independent order, so the same seed keeps the same patients in every run directory.
            first: dict[str, tuple[str, str]] = {}
            for c in cases:
                first.setdefault(c.patient, (c.order or c.patient, c.patient))
            patients = [p for _, p in sorted(first.values())]
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B5E7]))
            keep_n = max(2, int(round(len(patients) * subset)))
            keep = set(rng.choice(patients, size=min(keep_n, len(patients)), replace=False).tolist())
            cases = [c for c in cases if c.patient in keep]
        return load_arrays(cases, shape, self.prep, self.cache_dir, progress=progress)


def _resolve_shapes(task: TaskConfig, fp: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    full = tuple(task.training.shape) if task.training.shape else tuple(fp["suggestions"]["full"])
    if task.proxy.shape:
        proxy = tuple(task.proxy.shape)
    else:
        proxy = tuple(min(int(s), max(8, int(round(s * task.proxy.scale)))) for s in full)
    return tuple(int(s) for s in full), tuple(int(s) for s in proxy)


def unsupported_families(task: TaskConfig, proxy: tuple[int, ...], full: tuple[int, ...]) -> list[str]:
    """Return one line per search family of the task that cannot run at the proxy or full shape (with the fix).

    The check is static (the family's problems and minimum input size), so ``validate`` and ``search`` refuse
    such a task before any case is cached or trained.
    """
    from mednas.spaces import SpaceContext, create_space

    ctx = SpaceContext(
        problem=task.problem,
        spatial_dims=task.spatial_dims,
        in_channels=task.in_channels,
        out_channels=task.n_classes,
        input_shape=proxy,
        full_shape=full,
    )
    out = []
    for name in task.search.spaces:
        reason = create_space(name, **task.search.space_options.get(name, {})).supports(ctx)
        if reason:
            out.append(reason)
    return out


def check_families(task: TaskConfig, proxy: tuple[int, ...], full: tuple[int, ...]) -> None:
    """Raise :class:`ConfigError` naming the first search family that cannot run at the task's shapes."""
    problems = unsupported_families(task, proxy, full)
    if problems:
        from mednas.errors import ConfigError

        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"search.spaces: {problems[0]}{more}")


def decide_preprocessing(task: TaskConfig, fingerprint: dict[str, Any]) -> Preprocessing:
    """Decide how the run's images become network inputs, from the task and the data's fingerprint alone.

    The normalisation is the task's, or under ``data.normalize: auto`` the fingerprint's suggestion (percentile
    when it has none); the CT window is the task's, else the fingerprint's, else -1000..1000 HU; 3D volumes are
    reoriented to RAS. No image is read. This is the one place the decision is made: the data plan uses it, and
    export of a run older than ``preprocessing.json`` calls it again.
    """
    suggestions = fingerprint.get("suggestions") or {}
    normalize = (
        task.data.normalize if task.data.normalize != "auto" else suggestions.get("normalize", "percentile")
    )
    window = task.data.ct_window or suggestions.get("ct_window") or (-1000.0, 1000.0)
    return Preprocessing(
        problem=task.problem,
        spatial_dims=task.spatial_dims,
        in_channels=task.in_channels,
        n_classes=task.n_classes,
        normalize=str(normalize),
        ct_window=(float(window[0]), float(window[1])),
    )


def recorded_preprocessing(run_dir: RunDir, task: TaskConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing the run recorded (``preprocessing.json``, as :meth:`Preprocessing.to_dict` wrote it).

    A run made before the record existed has none: its preprocessing is decided again from the task and the
    fingerprint by :func:`decide_preprocessing`, as its data plan decided it.

    Raises:
        RunDirError: If the record exists but is not a preprocessing record (naming the file).
    """
    path = run_dir.preprocessing
    if not path.exists():
        return decide_preprocessing(task, fingerprint).to_dict()
    data = run_dir.read_json(path)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("normalize"), str)
        or len(data.get("ct_window") or ()) != 2
    ):
        raise RunDirError(
            f"{path}: not a preprocessing record (normalize and a two-value ct_window expected)"
        )
    return data


def plan_data(
    task: TaskConfig,
    run_dir: RunDir,
    *,
    salt: str,
    progress: Callable[[str, int, int], None] | None = None,
) -> DataPlan:
    """List cases, compute or re-use the fingerprint and splits, and decide shapes and preprocessing.

    Args:
        task: The validated task.
        run_dir: Where ``fingerprint.json``, ``splits.json`` and ``preprocessing.json`` live.
        salt: The run's salt for case and patient names.
        progress: ``(stage, done, total)`` callback for long reads.

    Raises:
        DataError: For data that validation rejects (one line: how many bad cases, and the first), or a saved
            split that no longer matches the data.
    """
    dataset = load_dataset(task, salt, run_dir=run_dir.root)
    fp = _fingerprint(task, run_dir, dataset, progress)
    dataset = with_finding_strata(dataset, fp)
    full, proxy = _resolve_shapes(task, fp)
    if task.search.fidelity == "ladder":
        # The ladder trains at its rungs (checked when the trial objective is built), not at the proxy shape.
        proxy = tuple(min(p, f) for p, f in zip(proxy, full))
    check_families(task, proxy, full)
    splits = _splits(task, run_dir, dataset, fp)
    prep = decide_preprocessing(task, fp)
    if any(p > f for p, f in zip(proxy, full)):
        raise DataError(f"proxy shape {list(proxy)} is larger than the full shape {list(full)}")
    _record_preprocessing(run_dir, prep)
    cache_dir = default_cache_root(task, run_dir.root) / "proxy"
    return DataPlan(task, dataset, splits, fp, prep, full, proxy, cache_dir)


def _fingerprint(
    task: TaskConfig,
    run_dir: RunDir,
    dataset: Dataset,
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, Any]:
    """Re-use ``fingerprint.json`` when it lists the dataset's cases; else validate every case and write it."""
    if run_dir.fingerprint.exists():
        fp = read_json(run_dir.fingerprint)
        if {r["case"] for r in fp.get("cases", [])} == {c.key for c in dataset.cases}:
            return fp
        logger.warning("fingerprint.json does not match the dataset's cases; recomputing it")
    # One pass reads every case: validation (refuse bad data) and the fingerprint come from it together.
    report = validate_cases(
        dataset, task, progress=(lambda d, t: progress("validate", d, t)) if progress else None
    )
    if not report.ok or report.fingerprint is None:
        raise DataError(report.error_line())
    write_json(run_dir.fingerprint, report.fingerprint)
    return report.fingerprint


def _splits(task: TaskConfig, run_dir: RunDir, dataset: Dataset, fp: dict[str, Any]) -> dict[str, Any]:
    """Re-use and check ``splits.json``; else make the patient-grouped split, check it and write it."""
    if run_dir.splits.exists():
        splits = read_json(run_dir.splits)
        check_splits(splits, dataset.cases)
        check_duplicates(
            find_duplicates(fp.get("cases", []), splits), allow_test=task.data.allow_test_duplicates
        )
        return splits
    splits = make_splits(dataset.cases, task.data.split, task.search.seed)
    check_splits(splits, dataset.cases)
    splits["duplicates"] = find_duplicates(fp.get("cases", []), splits)
    check_duplicates(splits["duplicates"], allow_test=task.data.allow_test_duplicates)
    write_json(run_dir.splits, splits)
    logger.info(
        "splits (%s): %s; exact duplicates %s",
        splits["method"],
        ", ".join(f"{s} {len(splits[s])}" for s in ("train", "val", "test")),
        describe_duplicates(splits["duplicates"]),
    )
    for note in splits.get("notes", []):
        logger.info("splits: %s", note)
    return splits


def _record_preprocessing(run_dir: RunDir, prep: Preprocessing) -> None:
    """Write ``preprocessing.json`` the first time (or when a recomputed fingerprint changed the decision)."""
    path = run_dir.preprocessing
    record = prep.to_dict()
    try:
        if read_json(path) == record:
            return
    except (OSError, ValueError):
        pass  # not written yet (or half-written by a crash): write it
    write_json(path, record)
