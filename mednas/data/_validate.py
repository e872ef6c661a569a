"""Validate a dataset: read every case once, list every bad one with a one-line reason, and fingerprint the rest.

A search must not start on data that would fail half-way or train on wrong labels; ``mednas validate`` shows all
problems at once (not only the first), and the same pass yields the fingerprint, so no case is read twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mednas.config import TaskConfig
from mednas.data._cases import Case, Dataset, load_dataset
from mednas.data._fingerprint import compute_fingerprint, describe_case
from mednas.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["BadCase", "ValidationReport", "validate_cases", "validate_dataset", "with_finding_strata"]


@dataclass(frozen=True)
class BadCase:
    """A case that cannot be used, and why.

    Args:
        case: Its salted key.
        path: The file the problem is about (the image, or the label), as the user gave it.
        problem: One line, without the path.
    """

    case: str
    path: str
    problem: str

    def line(self) -> str:
        """``<path>: <problem>``."""
        return f"{self.path}: {self.problem}"


@dataclass
class ValidationReport:
    """What validation found.

    Args:
        task: Task name.
        n_cases: Cases the layout lists.
        n_patients: Distinct patients among them.
        bad: Every bad case, in dataset order.
        fingerprint: Fingerprint of the good cases (``None`` when none is good).
        splits: Split sizes ``{split: {"cases": n, "patients": n}}`` over all cases, as a search would make them.
        split_method: How the splits are made (``patient-grouped, label-stratified``...).
        split_error: Why no split could be made, if so.
        notes: Observations that are not errors (all-background masks, augmented copies...).
    """

    task: str
    n_cases: int
    n_patients: int
    bad: list[BadCase] = field(default_factory=list)
    fingerprint: dict[str, Any] | None = None
    splits: dict[str, dict[str, int]] | None = None
    split_method: str = ""
    split_error: str | None = None
    notes: list[str] = field(default_factory=list)
    split_policy: str = ""
    duplicates: dict[str, Any] | None = None
    family_errors: list[str] = field(default_factory=list)
    shapes: dict[str, list[int]] | None = None

    @property
    def ok(self) -> bool:
        """True when every case can be used and splits can be made."""
        return not self.bad and self.split_error is None and not self.family_errors

    def error_line(self, *, listed: bool = False) -> str:
        """One line for a :class:`DataError`: how many bad cases, and the first (or "listed above")."""
        if self.bad:
            n = len(self.bad)
            head = f"{n} bad case{'s' if n != 1 else ''} of {self.n_cases}"
            if listed:
                return f"{head} (listed above)"
            return f"{head}; run `mednas validate TASK.yaml` to list them: first: {self.bad[0].line()}"
        if self.split_error is not None:
            return f"cannot split the data: {self.split_error}"
        more = f" (and {len(self.family_errors) - 1} more)" if len(self.family_errors) > 1 else ""
        return f"search.spaces: {self.family_errors[0]}{more}"

    def summary_lines(self) -> list[str]:
        """Human-readable summary: cases, fingerprint, suggestions, splits (no paths, no identifiers)."""
        fp = self.fingerprint
        augmentation = (fp or {}).get("augmentation") or {}
        by_copy = augmentation.get("group") == "copy"
        units = "split units (augmented copies)" if by_copy else "patients"
        lines = [f"data: {self.n_cases} cases, {self.n_patients} {units}, {len(self.bad)} bad"]
        if augmentation:
            lines[0] += (
                f"; made from {augmentation['n_sources']} source cases of {augmentation['n_source_patients']} patients"
            )
        if fp:
            s = fp["summary"]
            lines.append(
                f"fingerprint ({s['n_cases']} good cases): modality {s['modality']}; median shape "
                f"{_dims(s['median_shape'])} (min {_dims(s['min_shape'])}, max {_dims(s['max_shape'])}); median spacing "
                f"{_dims(s['median_spacing'], '.3g')} mm; orientations "
                + ", ".join(f"{k} x{v}" for k, v in s["orientations"].items())
            )
            fgi = s["intensity_foreground"]
            lines.append(
                f"  intensities: min {s['intensity_min']:.6g}, max {s['intensity_max']:.6g}; foreground median "
                f"p0.5 {fgi['p00_5']:.6g}, p50 {fgi['p50']:.6g}, p99.5 {fgi['p99_5']:.6g}"
            )
            if "class_counts" in s:
                lines.append("  classes: " + ", ".join(f"{k} {v}" for k, v in s["class_counts"].items()))
            else:
                lines.append(
                    "  label voxels: "
                    + ", ".join(
                        f"{k} {v} ({s['label_fraction'][k]:.2%})" for k, v in s["label_voxels"].items()
                    )
                    + f"; {s['cases_with_finding']} case(s) with a finding, "
                    f"{s['label_sanity']['all_background_cases']} all-background"
                )
            sug = fp["suggestions"]
            window = (
                f" (HU window {sug['ct_window'][0]:g}..{sug['ct_window'][1]:g})" if "ct_window" in sug else ""
            )
            lines.append(
                f"  suggestions: normalize {sug['normalize']}{window}: {sug['normalize_reason']}; full shape "
                f"{_dims(sug['full'])}, proxy shape {_dims(sug['proxy'])}"
            )
            if fp.get("augmentation"):
                lines.append(f"  AUGMENTED DATA: {fp['augmentation']['note']}")
        if self.shapes:
            lines.append(
                f"  shapes used: full {_dims(self.shapes['full'])}, proxy {_dims(self.shapes['proxy'])}"
            )
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.splits is not None:
            unit = "copies" if by_copy else "patients"
            parts = [f"{s} {v['cases']} cases / {v['patients']} {unit}" for s, v in self.splits.items()]
            lines.append(f"splits: policy {self.split_policy} ({self.split_method}): " + ", ".join(parts))
        if self.splits is not None or self.duplicates is not None:
            from mednas.data._splits import describe_duplicates

            lines.append(f"exact duplicates: {describe_duplicates(self.duplicates)}")
        if self.split_error:
            lines.append(f"splits: cannot be used: {self.split_error}")
        for problem in self.family_errors:
            lines.append(f"search family refused: {problem}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths of bad cases included: they are the user's own)."""
        return {
            "task": self.task,
            "ok": self.ok,
            "n_cases": self.n_cases,
            "n_patients": self.n_patients,
            "bad": [{"case": b.case, "path": b.path, "problem": b.problem} for b in self.bad],
            "summary": (self.fingerprint or {}).get("summary"),
            "suggestions": (self.fingerprint or {}).get("suggestions"),
            "splits": self.splits,
            "split_policy": self.split_policy,
            "split_method": self.split_method,
            "duplicates": self.duplicates,
            "split_error": self.split_error,
            "family_errors": self.family_errors,
            "shapes": self.shapes,
            "notes": self.notes,
        }


def _dims(values: Any, fmt: str = "d") -> str:
    return " x ".join(format(v if fmt != "d" else int(v), fmt) for v in values)


def validate_dataset(
    task: TaskConfig, salt: str, *, progress: Callable[[int, int], None] | None = None
) -> ValidationReport:
    """List the task's cases, read every one, and report every bad case, the fingerprint and the split sizes.

    Args:
        task: The validated task.
        salt: Salt for case and patient names (a throw-away one is fine: nothing is written).
        progress: ``(done, total)`` callback.

    Returns:
        The report; :attr:`ValidationReport.ok` tells whether a search may start.

    Raises:
        DataError: When the layout itself cannot be listed (missing datalist, unknown class folder...).

    Example:
        >>> report = validate_dataset(load_task("tasks/real-colin27-brain.yaml"), new_salt())  # doctest: +SKIP
        >>> report.ok, [b.line() for b in report.bad]
        (True, [])
    """
    from mednas.data._plan import _resolve_shapes, unsupported_families
    from mednas.data._splits import check_duplicates, find_duplicates, make_splits

    dataset = load_dataset(task, salt)
    report = validate_cases(dataset, task, progress=progress)
    if report.fingerprint is not None:
        dataset = with_finding_strata(dataset, report.fingerprint)
        full, proxy = _resolve_shapes(task, report.fingerprint)  # as plan_data resolves them
        report.shapes = {"full": list(full), "proxy": list(proxy)}
        report.family_errors = unsupported_families(task, proxy, full)
    try:
        splits = make_splits(dataset.cases, task.data.split, task.search.seed)  # as plan_data makes them
    except DataError as exc:
        report.split_error = str(exc)
    else:
        report.split_policy = str(splits.get("policy", ""))
        report.split_method = str(splits.get("method", ""))
        if dataset.augmentation and dataset.augmentation.get("group") == "copy":
            report.split_method += "; the units are augmented copies, not patients"
        report.splits = {
            s: {"cases": len(splits[s]), "patients": int(splits["n_patients"][s])}
            for s in ("train", "val", "test")
        }
        report.notes.extend(f"splits: {n}" for n in splits.get("notes", []))
        if report.fingerprint is not None:
            report.duplicates = find_duplicates(report.fingerprint["cases"], splits)
            try:
                check_duplicates(report.duplicates, allow_test=task.data.allow_test_duplicates)
            except DataError as exc:
                report.split_error = str(exc)
    return report


def with_finding_strata(dataset: Dataset, fingerprint: dict[str, Any]) -> Dataset:
    """Record lesion presence (from the fingerprint's label counts) so segmentation splits stratify by it.

    Cases whose layout already states ``has_finding`` keep it; cases without a record keep the default.
    """
    present = {
        r["case"]: int(sum(r["label_voxels"][1:]) > 0)
        for r in fingerprint.get("cases", [])
        if "label_voxels" in r
    }
    if not present:
        return dataset
    cases = tuple(
        replace(c, extra={**c.extra, "has_finding": present[c.key]})
        if c.key in present and "has_finding" not in c.extra
        else c
        for c in dataset.cases
    )
    return replace(dataset, cases=cases)


def validate_cases(
    dataset: Dataset, task: TaskConfig, *, progress: Callable[[int, int], None] | None = None
) -> ValidationReport:
    """Read every case of ``dataset``; collect every bad case and fingerprint the good ones in the same pass.

    Checks: each file readable (missing, empty, corrupt, mislabelled, unsupported, NaN/Inf: the readers' own
    one-line errors), spatial dimensions and channels as the task declares, a label for every case, and for
    segmentation a one-channel mask with the image's shape and geometry whose values are class indices.
    An all-background mask is allowed and counted.
    """
    records: list[dict[str, Any]] = []
    bad: list[BadCase] = []
    total = len(dataset.cases)
    for i, case in enumerate(dataset.cases):
        try:
            records.append(_check_case(case, task, dataset.modality))
        except _CaseProblem as exc:
            bad.append(BadCase(case.key, exc.path, exc.problem))
        if progress:
            progress(i + 1, total)
    n_patients = len({c.patient for c in dataset.cases})
    report = ValidationReport(task=task.name, n_cases=total, n_patients=n_patients, bad=bad)
    if records:
        report.fingerprint = compute_fingerprint(
            dataset,
            problem=task.problem,
            spatial_dims=task.spatial_dims,
            label_names=task.labels.names,
            records=records,
        )
        sanity = report.fingerprint["summary"].get("label_sanity", {})
        if sanity.get("all_background_cases"):
            report.notes.append(
                f"{sanity['all_background_cases']} of {len(records)} label masks are all background (allowed; they "
                "count as cases without a finding)"
            )
    elif total == 0:
        report.split_error = "the dataset has no cases"
    if bad:
        logger.debug("%d of %d cases are bad", len(bad), total)  # the caller reports them, once
    return report


class _CaseProblem(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path, self.problem = path, " ".join(problem.split())


def _from_data_error(exc: DataError, path: str) -> _CaseProblem:
    # Reader errors already start with the path they are about; keep that path, drop the duplicate.
    text = " ".join(str(exc).split())
    for candidate in sorted({path, *text.split(": ", 1)[:1]}, key=len, reverse=True):
        if text.startswith(f"{candidate}: "):
            return _CaseProblem(candidate, text[len(candidate) + 2 :])
    return _CaseProblem(path, text)


def _check_case(case: Case, task: TaskConfig, modality: str | None) -> dict[str, Any]:
    from mednas.io import read_image

    if case.extra.get("patient_problem"):
        raise _from_data_error(DataError(case.extra["patient_problem"]), case.images[0])
    images = []
    for path in case.images:
        try:
            images.append(read_image(path))
        except DataError as exc:
            raise _from_data_error(exc, path) from None
    first = images[0]
    shapes = {img.spatial_shape for img in images}
    if len(shapes) != 1:
        raise _CaseProblem(case.images[0], f"channel images have different shapes {sorted(shapes)}")
    dims = first.spatial_dims
    shape = first.spatial_shape
    if dims != task.spatial_dims and not (task.spatial_dims == 2 and dims == 3 and shape[-1] == 1):
        raise _CaseProblem(
            case.images[0], f"image has {dims} spatial dimensions, the task declares {task.spatial_dims}"
        )
    channels = sum(img.channels for img in images)
    if channels != task.in_channels and not (task.in_channels == 1 and channels in (3, 4)):
        raise _CaseProblem(
            case.images[0], f"image has {channels} channels, the task declares in_channels={task.in_channels}"
        )
    label: np.ndarray | None = None
    if task.problem == "segmentation":
        if not isinstance(case.label, str):
            raise _CaseProblem(case.images[0], "no label mask (segmentation needs one per case)")
        try:
            mask = read_image(case.label)
        except DataError as exc:
            raise _from_data_error(exc, case.label) from None
        if mask.channels != 1:
            raise _CaseProblem(case.label, f"a label map must have one channel, found {mask.channels}")
        if mask.spatial_shape != shape:
            raise _CaseProblem(
                case.label, f"label shape {list(mask.spatial_shape)} differs from image shape {list(shape)}"
            )
        if not np.allclose(mask.affine, first.affine, atol=1e-3):
            worst = float(np.abs(np.asarray(mask.affine) - np.asarray(first.affine)).max())
            raise _CaseProblem(
                case.label, f"label geometry (affine) differs from its image's (by up to {worst:.3g} mm)"
            )
        label = mask.array[0]
        values = np.unique(label)
        wrong = [v for v in values.tolist() if v < 0 or v >= task.n_classes or v != round(v)]
        if wrong:
            shown = ", ".join(f"{v:g}" for v in wrong[:5]) + (", ..." if len(wrong) > 5 else "")
            raise _CaseProblem(
                case.label, f"label values {shown} are outside the declared classes 0..{task.n_classes - 1}"
            )
    elif not isinstance(case.label, int):
        raise _CaseProblem(case.images[0], "no class label (classification needs one per case)")
    return describe_case(
        case, first, label=label, n_classes=task.n_classes, channels=channels, modality=modality
    )
