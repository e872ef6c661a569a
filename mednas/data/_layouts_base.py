"""The extension point for dataset layouts: how the cases of a ``data.format`` are listed.

A layout is a :class:`BaseLayout` subclass registered with :func:`register_layout` (the built-ins too; a plugin
also lists it in the ``mednas.layouts`` entry-point group). It turns the task's ``data`` section into a
:class:`~mednas.data.Dataset`: cases with salted case and patient names. :func:`dataset_from_entries` does the
naming for a layout that can list its cases as datalist-style mappings.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from mednas._registry import PluginRegistry
from mednas.config import TaskConfig
from mednas.data._cases import Dataset, _entries_to_cases

__all__ = ["LAYOUTS", "BaseLayout", "dataset_from_entries", "list_layouts", "register_layout"]


class BaseLayout(abc.ABC):
    """A dataset layout: lists the cases of a task's ``data`` section.

    Subclasses implement :meth:`load`; set :attr:`needs_path` to False for a layout that reads no
    ``data.path``. Reading the images is not the layout's job: every case's images are read later through
    :func:`mednas.io.read_image`, so a layout names files that reader understands.
    """

    #: Registry key (the value of ``data.format``), set by :func:`register_layout`.
    name: ClassVar[str] = ""
    #: Whether the task must set ``data.path`` (absolute, ``${VAR}`` expanded, by the time :meth:`load` runs).
    needs_path: ClassVar[bool] = True

    @abc.abstractmethod
    def load(self, task: TaskConfig, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
        """List the task's cases.

        Args:
            task: The validated task (``task.data`` holds the layout's settings).
            salt: The run's salt: case and patient names are salted hashes
                (:func:`mednas.data.hash_id`); raw identifiers never leave the :class:`~mednas.data.Case`.
            run_dir: The run directory, if any (for layouts that derive data: see
                :func:`mednas.data.default_cache_root`).

        Returns:
            The dataset, cases sorted by their key.

        Raises:
            mednas.errors.DataError: One line naming the file and the problem.
        """


LAYOUTS: PluginRegistry[type[BaseLayout]] = PluginRegistry(
    "dataset layout", "mednas.layouts", base=BaseLayout, builtins="mednas.data._layouts_builtin"
)


def register_layout(name: str) -> Any:
    """Register a :class:`BaseLayout` subclass as ``data.format: <name>``.

    Built-in layouts use this decorator too; a plugin package also lists the class in its ``mednas.layouts``
    entry-point group so that a task naming the format finds it.
    """
    return LAYOUTS.register(name)


def list_layouts(pattern: str = "*") -> list[str]:
    """Names of the registered layouts (``data.format`` values) matching ``pattern``."""
    return LAYOUTS.names(pattern)


def dataset_from_entries(
    entries: Sequence[dict[str, Any]],
    task: TaskConfig,
    salt: str,
    *,
    root: str | os.PathLike[str],
    source: str,
    modality: str | None = None,
    description: str = "",
) -> Dataset:
    """Turn datalist-style mappings into a :class:`~mednas.data.Dataset` with salted names.

    Each entry holds the task's ``data.image_key`` (a path, or a list of paths: one per channel),
    ``data.label_key`` (class index or name; mask path for segmentation) and, where the source has one,
    ``data.patient_key``; ``data.split_key`` gives a split the source defines. Relative paths are relative to
    ``root``; patient fields and DICOM PatientIDs are hashed here, as for MONAI datalists.

    Args:
        entries: One mapping per case.
        task: The task.
        salt: The run's salt.
        root: Folder that relative paths start from.
        source: What to name in errors (the file the entries came from).
        modality: ``"CT"``, ``"MR"``, ... where the source says.
        description: The source's own description.

    Raises:
        mednas.errors.DataError: Naming ``source`` and the entry, for a missing key, an unknown class, ...
    """
    cases = _entries_to_cases(list(entries), Path(root), task, salt, source)
    return Dataset(cases=tuple(cases), modality=modality, description=description, root=str(root))
