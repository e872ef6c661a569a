"""Reveal a run's splits: each case's original identifier and split, written only on request and only locally.

``splits.json`` names cases by salted hashes so that no run directory, report or bundle carries file names
(which can hold patient names). To train a baseline on exactly the same split, a user asks for the mapping
(``mednas splits RUN_DIR --reveal --out FILE``); it is written outside the run directory and any bundle.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

from mednas.errors import DataError, RunDirError

logger = logging.getLogger(__name__)

__all__ = ["read_revealed", "reveal_splits"]

_SPLITS = ("train", "val", "test")


def reveal_splits(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, reveal: bool = False
) -> Path:
    """Write each case's original identifier and split of a run to ``out`` (CSV or JSON by its extension).

    The identifier is the image path relative to the data root (the folder of the datalist, sheet or
    Decathlon folder), or ``file.npz:train[12]`` for MedMNIST; the hashed case key is written beside it, so
    the file maps back to ``splits.json``.

    Args:
        run_dir: A run directory with ``resolved.yaml``, ``.salt`` and ``splits.json``.
        out: Output file ending in ``.csv`` or ``.json``; must lie outside the run directory and any bundle.
        reveal: Must be True: identifiers may identify patients, so revealing them is an explicit choice.

    Returns:
        The written file.

    Raises:
        DataError: Without ``reveal``, for an output inside the run directory or a bundle, an unknown
            extension, or data that no longer matches the run's split.
        RunDirError: When ``run_dir`` is not a run with splits.

    Example:
        >>> reveal_splits("runs/real-pneumoniamnist", "/secure/splits.csv", reveal=True)  # doctest: +SKIP
    """
    from mednas.data._cases import load_dataset
    from mednas.io._atomic import dumps_json, read_json, write_text
    from mednas.rundir import RunDir

    if not reveal:
        raise DataError(
            "mednas splits writes original identifiers (file names can identify patients) only with --reveal"
        )
    out_path = Path(out)
    suffix = out_path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DataError(f"{out}: the output must end in .csv or .json")
    rd = RunDir(run_dir)
    for need in (rd.resolved_path, rd.salt, rd.splits):
        if not need.is_file():
            raise RunDirError(f"{rd.root}: no {need.name} (run `mednas search` first)")
    _refuse_inside(out_path, rd.root)
    task = rd.task()
    splits = read_json(rd.splits)
    dataset = load_dataset(task, rd.salt.read_text().strip(), run_dir=rd.root)
    by_key = dataset.by_key()
    rows: list[dict[str, str]] = []
    for split in _SPLITS:
        for key in splits.get(split, []):
            case = by_key.get(key)
            if case is None:
                raise DataError(
                    f"{rd.splits}: case {key} is not in the dataset (data changed since the split?)"
                )
            rows.append({"identifier": case.identifier or case.display_name, "split": split, "case": key})
    logger.warning(
        "%s: writes original identifiers of %d cases; they may identify patients: keep the file local",
        out_path,
        len(rows),
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        record: dict[str, Any] = {
            "task": task.name,
            "policy": splits.get("policy", "random"),
            "splits_hash": splits.get("hash"),
            "data_root": dataset.root,
            "cases": rows,
        }
        write_text(out_path, dumps_json(record) + "\n")
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["identifier", "split", "case"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(out_path, buf.getvalue())
    return out_path


def read_revealed(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a file written by :func:`reveal_splits`: original identifier -> split.

    Raises:
        DataError: Naming the file when it is not such a file.
    """
    from mednas.io._atomic import read_json

    path = Path(path)
    if path.suffix.lower() == ".json":
        rows = (read_json(path) or {}).get("cases", [])
    else:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    try:
        return {str(r["identifier"]): str(r["split"]) for r in rows}
    except (KeyError, TypeError):
        raise DataError(f"{path}: not a revealed-splits file (needs identifier and split)") from None


def _refuse_inside(out: Path, run_root: Path) -> None:
    target = out.resolve()
    root = run_root.resolve()
    if target == root or root in target.parents:
        raise DataError(f"{out}: inside the run directory {run_root}; write revealed identifiers outside it")
    for parent in target.parents:
        if (parent / "configs" / "metadata.json").is_file():
            raise DataError(f"{out}: inside the bundle {parent}; write revealed identifiers outside it")
