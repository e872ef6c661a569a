"""The typed Python API that the ``mednas`` command wraps: search, and (as they land) retrain, export, predict.

Example:
    >>> import mednas
    >>> result = mednas.search("tasks/demo-xray-nodule.yaml", n_trials=4, run_dir="runs/x")  # doctest: +SKIP
    >>> result.summary["best"]["values"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mednas.config import TaskConfig, load_task

__all__ = ["default_run_dir", "load_config", "search"]


def load_config(
    task: str | os.PathLike[str] | TaskConfig | dict[str, Any],
    *,
    presets: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
) -> TaskConfig:
    """Return a validated task from a file, a mapping or an existing :class:`TaskConfig`."""
    if isinstance(task, TaskConfig):
        if presets or overrides:
            from mednas.config import task_to_dict

            return load_task(task_to_dict(task), presets=presets, overrides=overrides)
        return task
    return load_task(task, presets=presets, overrides=overrides)


def default_run_dir(task: TaskConfig) -> Path:
    """``runs/<task name>`` under the working directory: re-running a command continues the same run."""
    return Path("runs") / task.name


def search(
    task: str | os.PathLike[str] | TaskConfig | dict[str, Any],
    *,
    presets: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    run_dir: str | os.PathLike[str] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> Any:
    """Create or continue a search.

    Args:
        task: Task file, mapping or config.
        presets: Preset files/names merged under the task.
        overrides: ``key=value`` overrides.
        run_dir: Run directory (default ``runs/<task name>``).
        storage: Optuna storage URL (default: SQLite in the run directory).
        study_name: Study name (default: task name).
        n_trials: Finished trials to reach (default: the task's ``search.n_trials``).
        timeout: Seconds after which no new trial starts.
        device: ``auto``, ``cpu``, ``cuda``.
        show_progress: Progress bar on stderr.

    Returns:
        :class:`mednas.search.SearchResult` with ``run_dir`` and ``summary``.
    """
    from mednas.search import run_search

    cfg = load_config(task, presets=presets, overrides=overrides)
    return run_search(
        cfg,
        run_dir if run_dir is not None else default_run_dir(cfg),
        storage=storage,
        study_name=study_name,
        n_trials=n_trials,
        timeout=timeout,
        device=device,
        show_progress=show_progress,
    )
