"""Dataset layouts besides MONAI datalists: Decathlon / nnU-Net raw folders, CSV sheets, class folders, MedMNIST.

Each layout is turned into the same list of :class:`~mednas.data.Case` objects, patients named by salted hashes,
so everything downstream (validation, fingerprint, splits, proxy cache) reads images through
:func:`mednas.io.read_image` (MedMNIST images as references into the user's ``.npz``, never copied out).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mednas.config import DataConfig, TaskConfig
from mednas.data._cases import Case, Dataset, _entries_to_cases, hash_id, order_key
from mednas.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["load_layout"]

#: Part of a MedMNIST case's salted name; fixed, so case keys (and saved splits) survive changes to how images are read.
_MEDMNIST_KEY_VERSION = 1
_IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".dcm",
    ".dicom",
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
)
# nnU-Net channel names that mean MR; "CT" is the one nnU-Net normalises differently.
_MR_NAMES = {"MR", "MRI", "T1", "T1W", "T1C", "T1GD", "T1CE", "T2", "T2W", "FLAIR", "ADC", "DWI", "PD", "SWI"}


def load_layout(task: TaskConfig, salt: str) -> Dataset:
    """List the cases of a ``decathlon``, ``csv``, ``folders`` or ``medmnist`` dataset.

    Args:
        task: The validated task (``task.data.path`` is absolute, ``${VAR}`` already expanded).
        salt: The run's salt for case and patient names.

    Returns:
        The dataset, cases sorted by their salted key.

    Raises:
        DataError: One line naming the file and the problem (missing file, bad column, unknown class...).

    Example:
        >>> dataset = load_layout(load_task("tasks/real-pyradiomics-lesion.yaml"), salt)  # doctest: +SKIP
        >>> len(dataset.cases)
        3
    """
    from mednas.data._layouts_base import LAYOUTS

    fmt = task.data.format
    assert task.data.path is not None
    if fmt in ("demo", "datalist"):
        raise DataError(f"data.format {fmt!r} is not a file layout")
    # The registry's layouts (built-ins and plugins alike) read their own files.
    return LAYOUTS.get(fmt)().load(task, salt)


# --------------------------------------------------------------------------------------------- decathlon


def _modality_name(name: Any) -> str | None:
    text = str(name or "").strip().upper()
    if text == "CT":
        return "CT"
    if text in _MR_NAMES or text.startswith("MR"):
        return "MR"
    return None


def _decathlon_labels(raw: Any, where: str) -> dict[int, str]:
    """Class index -> name from MSD v1 (``{"0": "background"}``) or nnU-Net v2 (``{"background": 0}``) labels."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: 'labels' must be a mapping of class indices and names")
    out: dict[int, str] = {}
    for key, value in raw.items():
        if str(key).strip().lstrip("-").isdigit():
            index, name = int(key), str(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            index, name = value, str(key)
        elif isinstance(value, list):
            raise DataError(
                f"{where}: region-based label {key!r} ({value}) is not supported; give one index per class"
            )
        else:
            raise DataError(f"{where}: cannot read label entry {key!r}: {value!r}")
        out[index] = name
    return out


def _load_decathlon(path: Path, task: TaskConfig, salt: str) -> Dataset:
    """The cases of a Decathlon (MSD) or nnU-Net v2 raw folder, or of its ``dataset.json`` named directly."""
    if task.problem != "segmentation":
        raise DataError(f"{path}: the decathlon layout holds segmentation masks; the task is {task.problem}")
    root = path.parent if path.is_file() else path
    meta_path = path if path.is_file() else path / "dataset.json"
    meta = _decathlon_meta(meta_path)
    where = str(meta_path)
    _check_decathlon_classes(_decathlon_labels(meta.get("labels"), where), task.labels.names, where)
    channels, modality = _decathlon_channels(meta, where)
    cfg = task.data
    if "channel_names" in meta or "file_ending" in meta:
        # nnU-Net v2: imagesTr/<case>_<XXXX><ending>, labelsTr/<case><ending>.
        ending = str(meta.get("file_ending", ".nii.gz"))
        n_channels = max(1, len(channels))
        if n_channels != task.in_channels:
            raise DataError(
                f"{where}: {n_channels} channels (channel_names) but the task has in_channels={task.in_channels}"
            )
        entries = _nnunet_v2_entries(root, meta, ending, n_channels, where, cfg.image_key, cfg.label_key)
    else:
        entries = _msd_entries(meta, where, cfg)
    if not any(cfg.patient_key in e for e in entries):
        logger.info(
            "%s: no patient field: each case is its own patient (DICOM PatientID where available)", where
        )
    cases = _entries_to_cases(entries, root, task, salt, where)
    return Dataset(
        cases=tuple(cases),
        modality=modality,
        description=str(meta.get("description", meta.get("name", ""))),
        root=str(root),
    )


def _decathlon_meta(meta_path: Path) -> dict[str, Any]:
    """The ``dataset.json`` of a Decathlon / nnU-Net raw folder, read under the JSON size limit."""
    from mednas.io._limits import load_json_bounded

    if not meta_path.exists():
        raise DataError(f"{meta_path}: dataset.json not found (expected a Decathlon / nnU-Net raw folder)")
    meta = load_json_bounded(meta_path)
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object")
    return meta


def _check_decathlon_classes(labels: dict[int, str], names: list[str], where: str) -> None:
    """Refuse a dataset whose class indices differ from the task's; warn where only their names differ."""
    if sorted(labels) != list(range(len(names))):
        raise DataError(
            f"{where}: declares classes {sorted(labels)} but the task's labels.names has {len(names)} "
            f"({', '.join(names)})"
        )
    renamed = [
        f"{i}: {labels[i]!r} vs {names[i]!r}"
        for i in range(len(names))
        if labels[i].lower() != names[i].lower()
    ]
    if renamed:
        logger.warning(
            "%s: class names differ from the task's (%s); the task's names are used",
            where,
            "; ".join(renamed),
        )


def _decathlon_channels(meta: dict[str, Any], where: str) -> tuple[list[Any], str | None]:
    """The channel names in index order (``channel_names`` or MSD's ``modality``) and the one modality they share."""
    channel_map = meta.get("channel_names", meta.get("modality")) or {}
    if not isinstance(channel_map, dict):
        raise DataError(f"{where}: 'channel_names'/'modality' must map channel indices to names")
    channels = [channel_map[k] for k in sorted(channel_map, key=lambda k: int(k))] if channel_map else []
    modalities = {_modality_name(c) for c in channels} - {None}
    return channels, modalities.pop() if len(modalities) == 1 else None


def _msd_entries(meta: dict[str, Any], where: str, cfg: DataConfig) -> list[dict[str, Any]]:
    """Datalist entries of an MSD ``dataset.json``: its ``training`` list, plus its labelled ``test`` cases."""
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise DataError(f"{where}: no 'training' list (MSD) and no 'channel_names' (nnU-Net v2)")
    entries = []
    for i, item in enumerate(training):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise DataError(f"{where}: training[{i}] must have 'image' and 'label'")
        entry = {cfg.image_key: item["image"], cfg.label_key: item["label"]}
        if cfg.patient_key in item:
            entry[cfg.patient_key] = item[cfg.patient_key]
        entries.append(entry)
    declared = meta.get("numTraining")
    if isinstance(declared, int) and declared != len(entries):
        logger.warning(
            "%s: numTraining says %d, the training list has %d cases", where, declared, len(entries)
        )
    # The Decathlon's test cases (imagesTs) are the given test split where they come with labels; the
    # original MSD lists bare image paths there (labels withheld), which cannot test anything.
    tests = [t for t in meta.get("test") or [] if isinstance(t, dict) and "image" in t and "label" in t]
    if tests:
        for entry in entries:
            entry[cfg.split_key] = "train"
        for item in tests:
            entry = {cfg.image_key: item["image"], cfg.label_key: item["label"], cfg.split_key: "test"}
            if cfg.patient_key in item:
                entry[cfg.patient_key] = item[cfg.patient_key]
            entries.append(entry)
    elif meta.get("test"):
        logger.info("%s: the 'test' list (imagesTs) has no labels: not used", where)
    return entries


def _nnunet_v2_entries(
    root: Path, meta: dict[str, Any], ending: str, n_channels: int, where: str, image_key: str, label_key: str
) -> list[dict[str, Any]]:
    custom = meta.get("dataset")
    if isinstance(custom, dict) and custom:
        entries = []
        for name, item in sorted(custom.items()):
            if not isinstance(item, dict) or "images" not in item or "label" not in item:
                raise DataError(f"{where}: dataset[{name!r}] must have 'images' and 'label'")
            entries.append({image_key: list(item["images"]), label_key: item["label"]})
        return entries
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        raise DataError(f"{labels_dir}: folder not found (nnU-Net v2 layout needs imagesTr/ and labelsTr/)")
    label_files = sorted(
        p for p in labels_dir.iterdir() if p.name.endswith(ending) and not p.name.startswith(".")
    )
    if not label_files:
        raise DataError(f"{labels_dir}: no label files ending in {ending!r}")
    entries = []
    for label in label_files:
        case_id = label.name[: -len(ending)]
        images = [f"imagesTr/{case_id}_{c:04d}{ending}" for c in range(n_channels)]
        entries.append({image_key: images, label_key: f"labelsTr/{label.name}"})
    declared = meta.get("numTraining")
    if isinstance(declared, int) and declared != len(entries):
        logger.warning("%s: numTraining says %d, labelsTr holds %d cases", where, declared, len(entries))
    return entries


# --------------------------------------------------------------------------------------------------- csv


def _load_csv(path: Path, task: TaskConfig, salt: str) -> Dataset:
    cfg = task.data
    from mednas.io._limits import max_list_bytes, read_text_bounded

    text = read_text_bounded(path, max_list_bytes(), DataError, "CSV")
    try:
        # Only the start of the header row: sniffing a forged megabyte-long line is slow.
        dialect = csv.Sniffer().sniff(
            text[:65536].splitlines()[0] if text.strip() else ",", delimiters=",;\t"
        )
    except csv.Error:
        dialect = csv.excel  # type: ignore[assignment]
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if not columns:
        raise DataError(
            f"{path}: empty CSV file (expected a header row with {cfg.image_key!r} and {cfg.label_key!r})"
        )
    from mednas._registry import did_you_mean

    for key, what in ((cfg.image_key, "image_key"), (cfg.label_key, "label_key")):
        if key not in columns:
            raise DataError(
                f"{path}: no column {key!r} (data.{what}){did_you_mean(key, columns)}; columns: {', '.join(columns)}"
            )
    entries: list[dict[str, Any]] = []
    rows: list[str] = []
    try:
        for row in reader:
            clean = {
                str(k).strip(): (v.strip() if isinstance(v, str) else v)
                for k, v in row.items()
                if k is not None
            }
            if not any(clean.values()):
                continue  # blank line
            line = f"row {reader.line_num}"
            if not clean.get(cfg.image_key):
                raise DataError(f"{path}: {line}: column {cfg.image_key!r} is empty")
            entry: dict[str, Any] = {k: (v if v != "" else None) for k, v in clean.items()}
            image = entry[cfg.image_key]
            # Several channels: paths separated by ';' (one row per case).
            entry[cfg.image_key] = [p.strip() for p in image.split(";")] if ";" in image else image
            entries.append(entry)
            rows.append(line)
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: {exc}") from None
    if not entries:
        raise DataError(f"{path}: no rows below the header")
    if cfg.patient_key not in columns:
        logger.info(
            "%s: no %r column: each row is its own patient (DICOM PatientID where available)",
            path,
            cfg.patient_key,
        )
    cases = _entries_to_cases(
        entries,
        path.parent,
        task,
        salt,
        str(path),
        item_names=rows,
        has_patient_field=cfg.patient_key in columns,
    )
    modalities = {str(c.extra.get("modality")) for c in cases if c.extra.get("modality")}
    return Dataset(
        cases=tuple(cases),
        modality=_modality_name(modalities.pop()) if len(modalities) == 1 else None,
        description=f"CSV sheet {path.name}",
        root=str(path.parent),
    )


# ----------------------------------------------------------------------------------------------- folders


def _load_folders(path: Path, task: TaskConfig, salt: str) -> Dataset:
    if task.problem != "classification":
        raise DataError(
            f"{path}: the folders layout (one folder per class) is for classification; the task is {task.problem}"
        )
    if not path.is_dir():
        raise DataError(
            f"{path}: {'not a folder' if path.exists() else 'folder not found'} (data.format folders)"
        )
    names = task.labels.names
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    from mednas._registry import did_you_mean

    for folder in folders:
        if folder.name not in names:
            raise DataError(
                f"{folder}: folder name {folder.name!r} is not a class in labels.names"
                f"{did_you_mean(folder.name, list(names))} ({', '.join(names)})"
            )
    present = {f.name for f in folders}
    missing = [n for n in names if n not in present]
    if missing:
        raise DataError(
            f"{path}: no folder for class{'es' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
        )
    entries: list[dict[str, Any]] = []
    skipped = 0
    cfg = task.data
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.name.lower().endswith(_IMAGE_SUFFIXES) or "." not in p.name]
        skipped += len(files) - len(images)
        if not images:
            raise DataError(f"{folder}: class folder holds no images")
        for image in images:
            entries.append({cfg.image_key: str(image), cfg.label_key: folder.name})
    if skipped:
        # File names can hold patient names: counts only.
        logger.info("%s: skipped %d file%s that are not images", path, skipped, "" if skipped == 1 else "s")
    logger.warning(
        "%s: the folders layout has no patient ids: each image is its own patient unless it is DICOM with a "
        "PatientID; if one patient has several images, use a CSV with a %r column instead",
        path,
        cfg.patient_key,
    )
    cases = _entries_to_cases(entries, path, task, salt, str(path))
    return Dataset(cases=tuple(cases), description=f"class folders in {path.name}", root=str(path))


# ---------------------------------------------------------------------------------------------- medmnist


def _load_medmnist(path: Path, task: TaskConfig, salt: str) -> Dataset:
    """List a MedMNIST archive's images as cases that reference the archive (``file.npz:train[12]``).

    Nothing is written: the proxy cache and every reader slice the arrays where the user keeps the file.
    """
    from mednas.data._prepare import file_digest
    from mednas.io import member_reference

    if task.problem != "classification":
        raise DataError(f"{path}: MedMNIST files hold class labels; the task is {task.problem}")
    if not path.is_file():
        raise DataError(f"{path}: MedMNIST file not found")
    if not path.name.lower().endswith(".npz"):
        raise DataError(f"{path}: a MedMNIST file must be an .npz archive")
    arrays = _read_npz(path, task.spatial_dims)
    # Case names hash the archive's bytes exactly as when the images were copied out as PNG files (version 1), so
    # runs made then keep their case keys, splits and fingerprint.
    digest = hashlib.sha256(
        f"{file_digest(path)}:{task.spatial_dims}:{_MEDMNIST_KEY_VERSION}".encode()
    ).hexdigest()[:20]
    archive = path.resolve()
    names = task.labels.names
    cases = []
    for split, (_, labels) in arrays.items():
        bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
        if bad.size:
            raise DataError(
                f"{path}: {split}_labels[{bad[0]}] = {int(labels[bad[0]])} is outside the declared classes 0..{len(names) - 1}"
            )
        for index, label in enumerate(labels.tolist()):
            source = f"medmnist:{digest}:{split}:{index}"
            name = f"{path.name}:{split}[{index}]"
            cases.append(
                Case(
                    key=hash_id(salt, source, "c"),
                    # MedMNIST has no patient ids: each image is its own patient.
                    patient=hash_id(salt, source, "p"),
                    images=(member_reference(archive, split, index),),
                    label=int(label),
                    display_name=name,
                    extra={"medmnist_split": split},
                    order=order_key(source),
                    given_split=split,
                    identifier=name,
                )
            )
    logger.warning(
        "%s: MedMNIST has no patient ids: each image is treated as its own patient, so images of one patient "
        "may fall into different splits",
        path,
    )
    return Dataset(
        cases=tuple(sorted(cases, key=lambda c: c.key)),
        description=f"MedMNIST {path.name} ({len(cases)} images)",
        root=str(path.parent),
    )


def _read_npz(npz: Path, spatial_dims: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from mednas.io import npz_arrays

    archive = npz_arrays(npz)
    keys = set(archive)
    if "train_images" not in keys or "train_labels" not in keys:
        raise DataError(
            f"{npz}: not a MedMNIST file: needs 'train_images' and 'train_labels' (has {', '.join(sorted(keys))})"
        )
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "val", "test"):
        if f"{split}_images" not in keys:
            continue
        if f"{split}_labels" not in keys:
            raise DataError(f"{npz}: has {split}_images but no {split}_labels")
        images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
        assert images is not None and labels is not None  # MedMNIST members are always read
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise DataError(
                f"{npz}: {split}_labels has shape {labels.shape}: multi-label MedMNIST sets are not supported"
            )
        if len(labels) != len(images):
            raise DataError(
                f"{npz}: {split}_images has {len(images)} images but {split}_labels {len(labels)} labels"
            )
        if spatial_dims == 2:
            ok = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))
        else:
            # (N, D, H, 1|3) would read as 2D images with channels (see mednas.io.read_npz_member).
            ok = images.ndim == 4 and images.shape[-1] not in (1, 3)
        if not ok:
            want = "(N, H, W) or (N, H, W, C)" if spatial_dims == 2 else "(N, D, H, W) with W > 3"
            raise DataError(
                f"{npz}: {split}_images has shape {images.shape}; a {spatial_dims}D task needs {want}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{npz}: {split}_labels must be integers, found {labels.dtype}")
        out[split] = (images, labels)
    return out
