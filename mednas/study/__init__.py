"""The Optuna study behind a search: storage, sampler, pruner, trial runner, workers, recovery, summary.

The verb users call is the function :func:`mednas.search` (in :mod:`mednas.api`); this package is the noun that
holds its parts. ``class_weights_for`` and ``suggest_imbalance`` belong to the candidate trainer
(:mod:`mednas.train`) and are re-exported here for the code that found them in the study.
"""

from __future__ import annotations

from mednas.rundir import best_trials, pareto_front
from mednas.study._ladder import Rung, ladder_rungs, rung_shape
from mednas.study._runner import (
    SearchResult,
    prepare_run,
    proxy_context,
    run_search,
)
from mednas.study._study import make_pruner, make_sampler, make_storage, open_study
from mednas.study._summary import build_summary, write_summary
from mednas.train._candidate import class_weights_for, suggest_imbalance

__all__ = [
    "Rung",
    "SearchResult",
    "best_trials",
    "build_summary",
    "class_weights_for",
    "suggest_imbalance",
    "ladder_rungs",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "pareto_front",
    "prepare_run",
    "proxy_context",
    "rung_shape",
    "run_search",
    "write_summary",
]
