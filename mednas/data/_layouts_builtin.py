"""The built-in dataset layouts, registered with :func:`~mednas.data._layouts_base.register_layout` like a plugin.

``demo`` (simulated data written to the cache) and ``datalist`` (MONAI datalist JSON) read through
:mod:`mednas.data._cases`; ``decathlon``, ``csv``, ``folders`` and ``medmnist`` through :mod:`mednas.data._layouts`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from mednas.config import TaskConfig
from mednas.data._cases import Dataset, _load_datalist, default_cache_root
from mednas.data._layouts_base import BaseLayout, register_layout

__all__: list[str] = []


def _path(task: TaskConfig) -> Path:
    assert task.data.path is not None  # the config requires it for every layout but `demo`
    return Path(task.data.path)


@register_layout("demo")
class DemoLayout(BaseLayout):
    """Built-in simulated data (``data.demo``), written once into the cache as a MONAI datalist."""

    needs_path: ClassVar[bool] = False

    def load(self, task: TaskConfig, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
        from mednas.data._demo import build_demo

        cfg = task.data
        assert cfg.demo is not None
        folder = build_demo(
            cfg.demo, default_cache_root(task, run_dir) / "demo", n_cases=cfg.n_cases, seed=cfg.seed
        )
        return _load_datalist(Path(folder) / "datalist.json", task, salt)


@register_layout("datalist")
class DatalistLayout(BaseLayout):
    """A MONAI datalist JSON (``training``, ``validation``, ``testing`` lists)."""

    def load(self, task: TaskConfig, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
        return _load_datalist(_path(task), task, salt)


@register_layout("decathlon")
class DecathlonLayout(BaseLayout):
    """A Medical Segmentation Decathlon or nnU-Net raw folder (``dataset.json``, ``imagesTr``, ``labelsTr``)."""

    def load(self, task: TaskConfig, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
        from mednas.data._layouts import _load_decathlon

        return _load_decathlon(_path(task), task, salt)


@register_layout("csv")
class CsvLayout(BaseLayout):
    """A sheet with image, label and patient columns."""

    def load(self, task: TaskConfig, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
        from mednas.data._layouts import _load_csv

        return _load_csv(_path(task), task, salt)


@register_layout("folders")
class FoldersLayout(BaseLayout):
    """One folder per class."""

    def load(self, task: TaskConfig, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
        from mednas.data._layouts import _load_folders

        return _load_folders(_path(task), task, salt)


@register_layout("medmnist")
class MedMNISTLayout(BaseLayout):
    """A MedMNIST ``.npz`` archive (images read in place)."""

    def load(self, task: TaskConfig, salt: str, *, run_dir: str | os.PathLike[str] | None = None) -> Dataset:
        from mednas.data._layouts import _load_medmnist

        return _load_medmnist(_path(task), task, salt)
