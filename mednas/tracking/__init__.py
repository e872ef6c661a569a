"""Experiment tracking: each search trial, retrained candidate and exported bundle as an MLflow run.

``--mlflow URI`` (or the task's ``tracking.mlflow``) turns it on; the ``tracking`` extra installs MLflow, which is
imported only then. A store that cannot be used is a one-line warning and the work goes on untracked.
"""

from __future__ import annotations

from mednas.tracking._payload import RunPayload, export_payload, retrain_payloads, trial_payload
from mednas.tracking._tracker import (
    INSTALL_HINT,
    WORKER_ENV,
    Tracker,
    open_run_tracker,
    open_tracker,
    require_mlflow,
    session_tags,
    session_uri,
)
from mednas.tracking._uri import normalize_uri, parse_uri, public_uri

__all__ = [
    "INSTALL_HINT",
    "WORKER_ENV",
    "RunPayload",
    "Tracker",
    "export_payload",
    "normalize_uri",
    "open_run_tracker",
    "open_tracker",
    "parse_uri",
    "public_uri",
    "require_mlflow",
    "retrain_payloads",
    "session_tags",
    "session_uri",
    "trial_payload",
]
