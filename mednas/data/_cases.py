"""Cases: what a dataset layout lists (image, label, patient), with patients and cases named by salted hashes.

Raw patient identifiers and file names stay inside this module's :class:`Case` objects in memory; anything
written to the run directory uses :attr:`Case.key` and :attr:`Case.patient`, which are salted hashes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednas.config import TaskConfig
from mednas.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["Case", "Dataset", "default_cache_root", "hash_id", "load_dataset", "new_salt"]


def new_salt() -> str:
    """Return a fresh random salt (hex) for naming cases and patients in one run."""
    return secrets.token_hex(16)


def order_key(value: str) -> str:
    """Unsalted digest used only to order patients in memory (see :attr:`Case.order`); never write it."""
    return hashlib.sha256(f"order\x00{value}".encode()).hexdigest()


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
        order: Salt-independent sort key of the patient (an unsalted digest, held in memory only and never
            written), so that a seeded split is the same in every run directory regardless of the salt.
        given_split: The split the source assigns (``train``, ``val`` or ``test``), or ``None``.
        identifier: The case's original identifier (image path relative to the data root, or
            ``file.npz:train[12]``); held in memory only, written solely by ``mednas splits --reveal``.
    """

    key: str
    patient: str
    images: tuple[str, ...]
    label: int | str | None
    display_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    order: str = field(default="", compare=False, hash=False, repr=False)
    given_split: str | None = field(default=None, compare=False, hash=False)
    identifier: str = field(default="", compare=False, hash=False, repr=False)

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
        augmentation: Set when cases include augmented copies (``data.augment_copies``): how many, how they
            were grouped for splits, and a note that every output repeats.
    """

    cases: tuple[Case, ...]
    modality: str | None = None
    simulated: bool = False
    description: str = ""
    root: str = ""
    augmentation: dict[str, Any] | None = None

    def by_key(self) -> dict[str, Case]:
        """Map case key -> case."""
        return {c.key: c for c in self.cases}


def _label_value(raw: Any, names: Sequence[str], where: str, problem: str, base: Path) -> int | str | None:
    if raw is None:
        return None
    if problem == "segmentation":
        if not isinstance(raw, str):
            raise DataError(f"{where}: segmentation label must be a mask path, got {raw!r}")
        return expand_path(raw, base, where)
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


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_path(raw: str, base: Path, where: str) -> str:
    """Expand ``${VAR}`` and ``~`` in a path from a datalist or sheet, and make it absolute relative to ``base``.

    Raises:
        DataError: Naming ``where`` when a referenced environment variable is not set.
    """

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise DataError(f"{where}: environment variable ${{{name}}} is not set")
        return os.environ[name]

    path = Path(os.path.expanduser(_VAR.sub(sub, str(raw).strip())))
    return str(path if path.is_absolute() else base / path)


_NOT_DICOM_SUFFIXES = (
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".npz",
    ".npy",
)


def _dicom_patient(image: str) -> tuple[str | None, str | None]:
    """Return ``(raw PatientID or None, problem or None)`` of a DICOM file or series folder; others give (None, None).

    The raw value must be hashed at once by the caller. A folder or file that cannot be read is not an error
    here: validation reports it with the rest of the case's problems.
    """
    path = Path(image)
    name = path.name.lower()
    if path.is_file():
        if name.endswith(_NOT_DICOM_SUFFIXES):
            return None, None
        if not name.endswith((".dcm", ".dicom")):
            try:
                with open(path, "rb") as fh:
                    if fh.read(132)[128:132] != b"DICM":
                        return None, None
            except OSError:
                return None, None
    elif not path.is_dir():
        return None, None
    from mednas.io import patient_key

    try:
        return patient_key(path), None
    except DataError as exc:
        return None, str(exc)


#: Names a source may give a split, mapped to mednas's three.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "tr": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "tune": "val",
    "tuning": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "ts": "test",
    "holdout": "test",
}


#: A cross-validation fold field (MONAI Auto3DSeg datalists): fold ``data.split.fold`` is val, the others train.
FOLD_KEY = "fold"


def given_split_name(raw: Any, where: str, key: str) -> str | None:
    """Return ``train``/``val``/``test`` for a source's split value (``None`` for a blank one).

    Raises:
        DataError: Naming ``where`` for a value that is not a split name.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    name = SPLIT_NAMES.get(str(raw).strip().lower())
    if name is None:
        raise DataError(f"{where}: {key} {str(raw)[:40]!r} is not a split (use train, val or test)")
    return name


def _fold_split(raw: Any, fold: int, where: str) -> str:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise DataError(f"{where}: {FOLD_KEY!r} {str(raw)[:40]!r} is not a fold number") from None
    return "val" if value == fold else "train"


def _identifier(image: str, base: Path) -> str:
    try:
        return Path(os.path.relpath(image, base)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(image).as_posix()


def _entries_to_cases(
    entries: Sequence[dict[str, Any]],
    base: Path,
    task: TaskConfig,
    salt: str,
    source: str,
    *,
    item_names: Sequence[str] | None = None,
    has_patient_field: bool | None = None,
) -> list[Case]:
    cfg = task.data
    cases: list[Case] = []
    if has_patient_field is None:
        has_patient_field = any(isinstance(e, dict) and cfg.patient_key in e for e in entries)
    blank: list[str] = []
    for i, entry in enumerate(entries):
        name = item_names[i] if item_names is not None else f"entry {i}"
        where = f"{source}: {name}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected a mapping, got {type(entry).__name__}")
        raw_image = entry.get(cfg.image_key)
        if raw_image is None:
            raise DataError(f"{where}: missing key {cfg.image_key!r}")
        raw_images = raw_image if isinstance(raw_image, list) else [raw_image]
        images = [expand_path(str(img), base, where) for img in raw_images]
        label = _label_value(entry.get(cfg.label_key), task.labels.names, where, task.problem, base)
        raw_patient = entry.get(cfg.patient_key)
        if isinstance(raw_patient, str) and not raw_patient.strip():
            raw_patient = None
        if raw_patient is None and has_patient_field:
            blank.append(name)
        given = given_split_name(entry.get(cfg.split_key), where, repr(cfg.split_key))
        if given is None and entry.get(FOLD_KEY) is not None:
            given = _fold_split(entry[FOLD_KEY], cfg.split.fold, where)
        extra = {
            k: v
            for k, v in entry.items()
            if k not in (cfg.image_key, cfg.label_key, cfg.patient_key, cfg.split_key)
        }
        dicom_id, problem = (None, None)
        if raw_patient is None and cfg.dicom_patient_id:
            # DICOM PatientID groups a patient's series; the raw value is hashed here and kept nowhere.
            dicom_id, problem = _dicom_patient(images[0])
            if problem:
                extra["patient_problem"] = problem
        # Without a patient field or PatientID every image is its own patient (no grouping is possible).
        if raw_patient is not None:
            patient_source = str(raw_patient)
        elif dicom_id is not None:
            patient_source = dicom_id
        else:
            patient_source = f"image:{images[0]}"
        cases.append(
            Case(
                key=hash_id(salt, images[0], "c"),
                patient=hash_id(salt, patient_source, "p"),
                images=tuple(images),
                label=label,
                display_name=Path(images[0]).name,
                extra=extra,
                order=order_key(patient_source),
                given_split=given,
                identifier=_identifier(images[0], base),
            )
        )
    if blank:
        _blank_patients(blank, len(entries), source, cfg.patient_key, cfg.blank_patient)
    keys = [c.key for c in cases]
    if len(set(keys)) != len(keys):
        raise DataError(f"{source}: the same image is listed more than once")
    return sorted(cases, key=lambda c: c.key)


def _blank_patients(names: Sequence[str], total: int, source: str, key: str, policy: str) -> None:
    """Refuse blank patient cells (or, with ``data.blank_patient: own``, warn that each is its own patient)."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if policy == "own":
        logger.warning(
            "%s: %d of %d cases have a blank %r (%s): each is its own patient (data.blank_patient: own)",
            source,
            len(names),
            total,
            key,
            shown,
        )
        return
    raise DataError(
        f"{source}: {len(names)} of {total} cases have a blank {key!r} field ({shown}); fill them in, or set "
        "data.blank_patient: own to make each such case its own patient"
    )


def _load_datalist(path: Path, task: TaskConfig, salt: str) -> Dataset:
    from mednas.io._limits import load_json_bounded

    if not path.exists():
        raise DataError(f"{path}: datalist not found")
    data = load_json_bounded(path, what="JSON datalist")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with a 'training' list")
    entries: list[dict[str, Any]] = []
    split_key = task.data.split_key
    for section, split in (
        ("training", "train"),
        ("validation", "val"),
        ("testing", "test"),
        ("test", "test"),
    ):
        items = data.get(section) or []
        if not isinstance(items, list):
            raise DataError(f"{path}: {section!r} must be a list")
        if split == "test":
            # MONAI datalists' test lists are often unlabelled (plain paths): only labelled entries can test.
            items = [e for e in items if isinstance(e, dict) and task.data.label_key in e]
        if section != "training" and items:
            # A section names its entries' split (an entry's own split field wins); then the training
            # section is the train split.
            items = [{**e, split_key: e.get(split_key, split)} if isinstance(e, dict) else e for e in items]
            entries = [
                {**e, split_key: e.get(split_key, "train")}
                if isinstance(e, dict) and FOLD_KEY not in e
                else e
                for e in entries
            ]
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


def default_cache_root(task: TaskConfig, run_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder for derived data (proxy cache, demo data, augmented copies), chosen by the user or beside the run.

    In order: ``data.cache_dir``; ``$MEDNAS_CACHE_DIR``; ``RUN_DIR/cache`` when a run directory is given; else a
    private temporary folder that is removed when the process ends (``mednas validate`` and ``mednas evaluate``
    without a cache setting). Nothing goes into the home directory unless the user names it.
    """
    if task.data.cache_dir:
        return Path(task.data.cache_dir)
    env = os.environ.get("MEDNAS_CACHE_DIR")
    if env:
        return Path(env)
    if run_dir is not None:
        # Absolute and canonical: demo case names hash their image paths, and `retrain runs/x` must find the same
        # cases as `search --run-dir /abs/runs/x` did.
        return Path(run_dir).resolve() / "cache"
    return _process_cache()


_process_cache_dir: Path | None = None


def _process_cache() -> Path:
    """A temporary cache folder for this process, made on first use and removed at exit."""
    global _process_cache_dir
    if _process_cache_dir is None or not _process_cache_dir.is_dir():
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="mednas-cache-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        logger.debug(
            "no run directory and no data.cache_dir: derived data go to a temporary folder removed at exit"
        )
        _process_cache_dir = folder
    return _process_cache_dir


def load_dataset(task: TaskConfig, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """List the task's cases from its data layout (``data.format``: a registered :class:`BaseLayout`).

    Args:
        task: The validated task.
        salt: The run's salt for hashing case and patient names.
        run_dir: The run directory, if any: derived data (demo data, augmented copies) go to its ``cache/``
            unless ``data.cache_dir`` or ``$MEDNAS_CACHE_DIR`` say otherwise (see :func:`default_cache_root`).

    Returns:
        The dataset, cases sorted by their salted key.

    Raises:
        DataError: With the file and the problem.
    """
    from mednas.data._layouts_base import LAYOUTS

    cfg = task.data
    dataset = LAYOUTS.get(cfg.format)().load(task, salt, run_dir=run_dir)
    if cfg.augment_copies or cfg.label_threshold is not None:
        from mednas.data._synth import synthesise

        dataset = synthesise(dataset, task, salt, cache_root=default_cache_root(task, run_dir))
    return dataset
