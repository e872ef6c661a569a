"""The Optuna search: study from config, trial runner, summary."""

from __future__ import annotations

from mednas.search._runner import (
    SearchResult,
    class_weights_for,
    prepare_run,
    proxy_context,
    run_search,
    suggest_imbalance,
)
from mednas.search._study import make_pruner, make_sampler, make_storage, open_study
from mednas.search._summary import best_trials, build_summary, pareto_front, write_summary

__all__ = [
    "SearchResult",
    "best_trials",
    "build_summary",
    "class_weights_for",
    "suggest_imbalance",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "pareto_front",
    "prepare_run",
    "proxy_context",
    "run_search",
    "write_summary",
]

from mednas._callable import make_callable  # noqa: E402

make_callable(__name__, "search")
