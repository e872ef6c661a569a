"""Cases: what a dataset layout lists (image, label, patient), with patients and cases named by salted hashes.

Raw patient identifiers and file names stay inside this module's :class:`Case` objects in memory; anything
written to the run directory uses :attr:`Case.key` and :attr:`Case.patient`, which are salted hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednas.config import TaskConfig
from mednas.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["Case", "Dataset", "hash_id", "load_dataset", "new_salt"]


def new_salt() -> str:
    """Return a fresh random salt (hex) for naming cases and patients in one run."""
    return secrets.token_hex(16)


def hash_id(salt: str, value: str, prefix: str) -> str:
    """Return ``prefix-<12 hex>``: a salted SHA-256 of ``value`` that cannot be reversed without the salt."""
    digest = hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


@dataclass(frozen=True)
class Case:
    """One case: an image (one path per channel), its label, and the salted names of case and patient.

    Args:
        key: Salted hash naming the case in every output (``c-…``).
        patient: Salted hash of the patient identifier (``p-…``).
        images: Absolute paths, one per input channel (a DICOM series is a folder).
        label: Class index (classification) or absolute mask path (segmentation); ``None`` when unlabelled.
        display_name: The source file name; shown only where the task's privacy settings allow.
        extra: Further datalist fields that are not identifying (e.g. simulated lesion positions).
    """

    key: str
    patient: str
    images: tuple[str, ...]
    label: int | str | None
    display_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def strata(self) -> int:
        """Label used to stratify splits: the class index, or lesion presence recorded by the layout (1/0)."""
        if isinstance(self.label, int):
            return self.label
        return int(self.extra.get("has_finding", 1))


@dataclass(frozen=True)
class Dataset:
    """All cases of a task plus dataset-level facts from the layout.

    Args:
        cases: Cases in a stable order (sorted by key).
        modality: Modality when the layout states it (``"MR"``, ``"CT"``, ``"CR"``), else ``None``.
        simulated: True for the built-in demo data, so every output can say "simulated data".
        description: The layout's own description, if any.
        root: Folder the layout lives in.
    """

    cases: tuple[Case, ...]
    modality: str | None = None
    simulated: bool = False
    description: str = ""
    root: str = ""

    def by_key(self) -> dict[str, Case]:
        """Map case key -> case."""
        return {c.key: c for c in self.cases}


def _label_value(raw: Any, names: Sequence[str], where: str, problem: str, base: Path) -> int | str | None:
    if raw is None:
        return None
    if problem == "segmentation":
        if not isinstance(raw, str):
            raise DataError(f"{where}: segmentation label must be a mask path, got {raw!r}")
        path = Path(os.path.expandvars(raw))
        return str(path if path.is_absolute() else (base / path))
    if isinstance(raw, bool):
        raw = int(raw)
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int):
        if not 0 <= raw < len(names):
            raise DataError(f"{where}: label {raw} is outside the declared classes 0..{len(names) - 1}")
        return raw
    if isinstance(raw, str):
        if raw in names:
            return names.index(raw)
        if raw.strip().lstrip("-").isdigit():
            return _label_value(int(raw), names, where, problem, base)
        from mednas._registry import did_you_mean

        raise DataError(f"{where}: label {raw!r} is not a declared class{did_you_mean(raw, list(names))}")
    raise DataError(f"{where}: cannot use label {raw!r}")


def _entries_to_cases(
    entries: Sequence[dict[str, Any]], base: Path, task: TaskConfig, salt: str, source: str
) -> list[Case]:
    cfg = task.data
    cases: list[Case] = []
    for i, entry in enumerate(entries):
        where = f"{source}: entry {i}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected a mapping, got {type(entry).__name__}")
        raw_image = entry.get(cfg.image_key)
        if raw_image is None:
            raise DataError(f"{where}: missing key {cfg.image_key!r}")
        raw_images = raw_image if isinstance(raw_image, list) else [raw_image]
        images = []
        for img in raw_images:
            p = Path(os.path.expandvars(str(img)))
            images.append(str(p if p.is_absolute() else base / p))
        label = _label_value(entry.get(cfg.label_key), task.labels.names, where, task.problem, base)
        raw_patient = entry.get(cfg.patient_key)
        # Without a patient field every image is its own patient (no grouping is possible).
        patient_source = str(raw_patient) if raw_patient is not None else f"image:{images[0]}"
        extra = {k: v for k, v in entry.items() if k not in (cfg.image_key, cfg.label_key, cfg.patient_key)}
        cases.append(
            Case(
                key=hash_id(salt, images[0], "c"),
                patient=hash_id(salt, patient_source, "p"),
                images=tuple(images),
                label=label,
                display_name=Path(images[0]).name,
                extra=extra,
            )
        )
    keys = [c.key for c in cases]
    if len(set(keys)) != len(keys):
        raise DataError(f"{source}: the same image is listed more than once")
    return sorted(cases, key=lambda c: c.key)


def _load_datalist(path: Path, task: TaskConfig, salt: str) -> Dataset:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: datalist not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid JSON datalist ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with a 'training' list")
    entries: list[dict[str, Any]] = []
    for section in ("training", "validation", "test"):
        items = data.get(section) or []
        if section == "test":
            # MONAI datalists' "test" lists are often unlabelled; mednas makes its own held-out split.
            items = [e for e in items if isinstance(e, dict) and task.data.label_key in e]
        entries.extend(items)
    if not entries:
        raise DataError(f"{path}: no labelled cases in 'training', 'validation' or 'test'")
    cases = _entries_to_cases(entries, path.parent, task, salt, str(path))
    return Dataset(
        cases=tuple(cases),
        modality=data.get("modality") if isinstance(data.get("modality"), str) else None,
        simulated=bool(data.get("simulated", False)),
        description=str(data.get("description", "")),
        root=str(path.parent),
    )


def default_cache_root(task: TaskConfig) -> Path:
    """Folder for derived data (demo datasets, proxy cache): ``data.cache_dir``, ``$MEDNAS_CACHE_DIR``, or ~/.cache."""
    if task.data.cache_dir:
        return Path(task.data.cache_dir)
    env = os.environ.get("MEDNAS_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mednas"


def load_dataset(task: TaskConfig, salt: str) -> Dataset:
    """List the task's cases from its data layout.

    Args:
        task: The validated task.
        salt: The run's salt for hashing case and patient names.

    Returns:
        The dataset, cases sorted by their salted key.

    Raises:
        DataError: With the file and the problem.
    """
    cfg = task.data
    if cfg.format == "demo":
        from mednas.data._demo import build_demo

        assert cfg.demo is not None
        folder = build_demo(cfg.demo, default_cache_root(task) / "demo", n_cases=cfg.n_cases, seed=task.search.seed)
        return _load_datalist(Path(folder) / "datalist.json", task, salt)
    assert cfg.path is not None
    path = Path(cfg.path)
    if cfg.format == "datalist":
        return _load_datalist(path, task, salt)
    from mednas.data import _layouts

    return _layouts.load_layout(task, salt)
