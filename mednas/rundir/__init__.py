"""The run directory and the records in it: the one reader and writer of a run's files.

:class:`RunDir` knows where every record lives and is the only code that opens ``resolved.yaml``
(:meth:`RunDir.task`), ``summary.json`` (:meth:`RunDir.summary`, :meth:`RunDir.update_summary`) and the
``metrics.json`` of trials (:class:`TrialRecord` through :meth:`RunDir.trials`) and retrained candidates. The study
storage that a run keeps beside them is opened with :func:`make_storage`; :func:`best_trials` and
:func:`pareto_front` rank its trials by the search's rules, for the search itself and for the steps after it.
"""

from __future__ import annotations

from mednas.rundir._layout import (
    MARKER,
    PREPARATION_RECORDS,
    RECORD,
    RESOLVED,
    SUMMARY,
    RunClaim,
    RunDir,
    check_run_dir,
    claim_run_dir,
    environment_info,
)
from mednas.rundir._ranking import best_trials, pareto_front
from mednas.rundir._records import TRIAL_RECORD_SCHEMA, TrialRecord, TrialState
from mednas.rundir._storage import make_storage

__all__ = [
    "MARKER",
    "PREPARATION_RECORDS",
    "RECORD",
    "RESOLVED",
    "SUMMARY",
    "TRIAL_RECORD_SCHEMA",
    "RunClaim",
    "RunDir",
    "TrialRecord",
    "TrialState",
    "best_trials",
    "check_run_dir",
    "claim_run_dir",
    "environment_info",
    "make_storage",
    "pareto_front",
]
