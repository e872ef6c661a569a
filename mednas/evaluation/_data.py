"""The evaluation data: a task-like YAML or a data file, read through mednas's own layouts, filtered by split.

Cases are listed by :func:`mednas.data.load_dataset` exactly as a search lists them (MONAI datalists, CSV sheets,
class folders, Decathlon folders, MedMNIST files), with the bundle's classes. Nothing of the run directory is read.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednas.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["EvalData", "case_split", "read_eval_data", "select_split", "subgroup_attributes"]

#: Shorthand ``--data FILE``: the layout a file's suffix means.
_FORMAT_OF_SUFFIX = {".npz": "medmnist", ".json": "datalist", ".csv": "csv", ".tsv": "csv"}
#: Datalist/CSV fields that are mednas's own bookkeeping, never a population attribute.
_INTERNAL_FIELDS = {
    "split",
    "medmnist_split",
    "has_finding",
    "patient_problem",
    "lesions",
    "simulated",
    "source_split",
}
#: Column names that hint at an identifier, a date or a file: never shown as a subgroup.
_IDENTIFYING_WORDS = (
    "name",
    "id",
    "uid",
    "date",
    "birth",
    "dob",
    "time",
    "path",
    "file",
    "accession",
    "mrn",
    "address",
    "phone",
    "email",
    "comment",
    "note",
)
#: DICOM attributes that describe the population or the scanner without identifying anyone.
DICOM_SUBGROUPS = ("PatientSex", "Manufacturer", "ManufacturerModelName")
_MAX_GROUPS = 20


@dataclass
class EvalData:
    """Labelled cases to evaluate a bundle on, and how they were chosen.

    Attributes:
        cases: :class:`mednas.data.Case` objects (salted keys; paths stay in memory).
        source: The DATA path as the user gave it.
        name: Its file name (what every figure names the data by).
        layout: The data layout (``datalist``, ``csv``, ``medmnist``, ...).
        split: The ``--split`` filter, or ``None``.
        splits_present: Cases per source split before filtering (empty when the data records none).
        n_listed: Labelled cases the layout listed before filtering.
        attributes: Per case (same order as ``cases``): subgroup attribute -> value.
    """

    cases: list[Any]
    source: str
    name: str
    layout: str
    split: str | None
    splits_present: dict[str, int]
    n_listed: int
    attributes: list[dict[str, str]] = field(default_factory=list)

    @property
    def n_patients(self) -> int:
        """Distinct patients among the cases."""
        return len({c.patient for c in self.cases})


def case_split(case: Any) -> str | None:
    """The split a case's source assigns it (MedMNIST arrays, a CSV/datalist ``split`` field), or ``None``.

    The one place that knows where cases record their given split, so ``--split`` follows the data layer.
    """
    for value in (
        getattr(case, "given_split", None),
        case.extra.get("split"),
        case.extra.get("medmnist_split"),
    ):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def select_split(cases: Sequence[Any], split: str | None, where: str) -> tuple[list[Any], dict[str, int]]:
    """Keep the cases of ``split`` (all when ``None``); return them and the count per split found.

    Raises:
        DataError: When ``split`` is given and no case carries it.
    """
    present = Counter(s for s in (case_split(c) for c in cases) if s is not None)
    counts = dict(sorted(present.items()))
    if split is None:
        return list(cases), counts
    split = _split_name(split)
    chosen = [c for c in cases if case_split(c) == split]
    if not chosen:
        found = ", ".join(f"{k} ({v})" for k, v in counts.items()) or "none: the layout records no split"
        raise DataError(f"{where}: --split {split} selects no case (splits found: {found})")
    return chosen, counts


def _split_name(split: str) -> str:
    """``validation`` -> ``val`` etc., as the data layer names given splits (unknown names stay as they are)."""
    try:
        from mednas.data._cases import SPLIT_NAMES
    except ImportError:  # a data layer without given splits
        return split
    return SPLIT_NAMES.get(split.strip().lower(), split)


def read_eval_data(
    info: dict[str, Any],
    *,
    data: str | os.PathLike[str] | None,
    data_file: str | os.PathLike[str] | None,
    split: str | None,
) -> EvalData:
    """List the labelled evaluation cases from a task-like YAML (``data``) or a data file (``data_file``).

    Args:
        info: The bundle's ``mednas`` metadata section (classes, problem, dimensions).
        data: A YAML file with a ``data:`` section (and optionally ``labels:``, which must match the bundle's).
        data_file: Shorthand: ``.npz`` (MedMNIST), ``.json`` (datalist), ``.csv`` sheet, or a folder (class folders,
            or a Decathlon folder with ``dataset.json``).
        split: Keep only cases of this given split.

    Raises:
        ConfigError: Neither or both of ``data``/``data_file``; labels that differ from the bundle's.
        DataError: A missing file, unlabelled cases, or a split that selects nothing.
    """
    from mednas.config import deep_merge, load_task, load_yaml
    from mednas.data import load_dataset, new_salt

    if (data is None) == (data_file is None):
        raise ConfigError("evaluate: give either a DATA.yaml or --data FILE (not both)")
    base = _base_task(info)
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise DataError(f"{path}: data file not found")
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise ConfigError(
                f"{path}: DATA must be a YAML file with a data: section; for a data file use --data {path}"
            )
        raw = load_yaml(path)
        if not isinstance(raw.get("data"), dict):
            raise ConfigError(f"{path}: no data: section (a task-like YAML names its images under data:)")
        _check_labels(raw, info, str(path))
        merged = deep_merge(
            base, {k: v for k, v in raw.items() if k in ("data", "labels", "privacy", "description")}
        )
        _absolute_paths(merged["data"], path.resolve().parent, str(path))
        layout = str(merged["data"].get("format", "datalist"))
    else:
        path = Path(data_file)  # type: ignore[arg-type]
        if not path.exists():
            raise DataError(f"{path}: data file not found")
        layout = _layout_of(path)
        merged = deep_merge(base, {"data": {"format": layout, "path": str(path.resolve())}})
    if merged["data"].get("format") == "demo":
        raise ConfigError(f"{path}: data.format demo is simulated training data, not an evaluation set")
    try:
        task = load_task(merged)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {str(exc).removeprefix('<task>: ')}") from None
    dataset = load_dataset(task, new_salt())
    listed = list(dataset.cases)
    unlabelled = sum(1 for c in listed if c.label is None)
    if unlabelled:
        raise DataError(
            f"{path}: {unlabelled} of {len(listed)} cases have no label; evaluation needs labelled cases"
        )
    cases, present = select_split(listed, split, str(path))
    return EvalData(
        cases=cases,
        source=os.fspath(path),
        name=path.name,
        layout=layout,
        split=_split_name(split) if split else None,
        splits_present=present,
        n_listed=len(listed),
        attributes=subgroup_attributes(cases),
    )


def _base_task(info: dict[str, Any]) -> dict[str, Any]:
    """A task mapping with the bundle's classes; the DATA file adds the data (placeholders fill the rest)."""
    t = info.get("task") or {}
    problem = t.get("problem") or info["pipeline"]["problem"]
    terms = t.get("objective_terms") or [{"metric": "auroc" if problem == "classification" else "dice"}]
    return {
        "name": "evaluation",
        "problem": problem,
        "spatial_dims": int(t.get("spatial_dims") or info["pipeline"]["spatial_dims"]),
        "in_channels": int(info["pipeline"].get("in_channels", 1)),
        "labels": {
            "names": list(t.get("labels") or info["pipeline"]["class_names"]),
            "findings": list(t.get("findings") or []),
        },
        "objective": {"terms": terms},
        "search": {"spaces": ["resnet" if problem == "classification" else "unet"]},
    }


def _check_labels(raw: dict[str, Any], info: dict[str, Any], where: str) -> None:
    labels = raw.get("labels")
    if labels is None:
        return
    names = labels.get("names") if isinstance(labels, dict) else None
    want = list((info.get("task") or {}).get("labels") or info["pipeline"]["class_names"])
    if names is not None and list(names) != want:
        raise ConfigError(
            f"{where}: labels.names {list(names)} differ from the bundle's classes {want} (same names, same order)"
        )
    for key in ("problem", "spatial_dims"):
        if key in raw and raw[key] != (info.get("task") or {}).get(key, raw[key]):
            raise ConfigError(
                f"{where}: {key} {raw[key]!r} differs from the bundle's {(info.get('task') or {}).get(key)!r}"
            )


def _absolute_paths(section: dict[str, Any], base: Path, where: str) -> None:
    from mednas.data._cases import expand_path

    for key in ("path", "cache_dir"):
        value = section.get(key)
        if isinstance(value, str) and value:
            section[key] = expand_path(value, base, f"{where}: data.{key}")


def _layout_of(path: Path) -> str:
    if path.is_dir():
        return "decathlon" if (path / "dataset.json").is_file() else "folders"
    fmt = _FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path}: --data takes a .npz (MedMNIST), .json (datalist), .csv sheet or a folder; "
            "for other layouts write a DATA.yaml with a data: section"
        )
    return fmt


# ------------------------------------------------------------------------------------------ subgroups


def _is_attribute(key: str) -> bool:
    from mednas.io._phi import is_identifying

    low = key.lower()
    words = low.replace("-", "_").replace(" ", "_").split("_")
    return not (
        low in _INTERNAL_FIELDS
        or is_identifying(key)
        or any(w in _IDENTIFYING_WORDS for w in words)
        or any(low.endswith(w) for w in ("id", "date", "name"))
    )


def subgroup_attributes(cases: Sequence[Any]) -> list[dict[str, str]]:
    """Per case, the population attributes to break results down by (no identifying value ever).

    Scalar datalist/CSV fields other than image, label and patient (e.g. ``sex``, ``site``, ``scanner``) whose
    names do not suggest an identifier, date or file, and that take 2-20 values, each shared by more than one
    case; for DICOM images also PatientSex, Manufacturer and ManufacturerModelName.
    """
    rows: list[dict[str, str]] = []
    for case in cases:
        attrs = {
            k: str(v).strip()
            for k, v in case.extra.items()
            if isinstance(v, (str, int, bool)) and str(v).strip() and _is_attribute(str(k))
        }
        attrs.update(_dicom_attributes(case.images[0]))
        rows.append(attrs)
    keep = set()
    for key in {k for r in rows for k in r}:
        counts = Counter(r[key] for r in rows if key in r)
        # An attribute where most cases have their own value is an identifier in disguise.
        if (
            2 <= len(counts) <= _MAX_GROUPS
            and max(counts.values()) > 1
            and len(counts) <= max(2, len(rows) // 2)
        ):
            keep.add(key)
    return [{k: v for k, v in r.items() if k in keep} for r in rows]


def _dicom_attributes(image: str) -> dict[str, str]:
    path = Path(image)
    first: Path | None = None
    if path.is_dir():
        first = next((p for p in sorted(path.rglob("*")) if p.is_file()), None)
    elif path.is_file() and (path.suffix.lower() in (".dcm", ".dicom") or _has_dicm(path)):
        first = path
    if first is None:
        return {}
    try:
        import pydicom

        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=list(DICOM_SUBGROUPS))
    except Exception:  # noqa: BLE001 - not DICOM after all, or unreadable: the reader reports it when predicting
        return {}
    out = {}
    for tag in DICOM_SUBGROUPS:
        value = str(getattr(ds, tag, "") or "").strip()
        if value:
            out[tag] = value
    return out


def _has_dicm(path: Path) -> bool:
    if path.name.lower().endswith(
        (".nii", ".nii.gz", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
    ):
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False
