"""``search_record.json``: every trial of the search as the bundle carries it, with nothing that names a patient.

Each trial keeps its spec, proxy metrics (with intervals), state, seed, costs and training history. Case and
patient keys never appear in trial records, and free-text reasons (an exception message may quote a file name,
and file names can hold patient names) have paths and image file names replaced by ``<path>``/``<file>``.
"""

from __future__ import annotations

from typing import Any

from mednas.io._scrub import scrub_text
from mednas.rundir import RunDir

__all__ = ["scrub_text", "search_record"]

_TRIAL_KEYS = (
    "trial",
    "state",
    "seed",
    "family",
    "target",
    "spec_hash",
    "params",
    "macs",
    "macs_proxy",
    "activation_mb",
    "objective",
    "values",
    "metrics",
    "operating_point",
    "learned",
    "feasible",
    "constraints",
    "best_epoch",
    "epochs",
    "history",
    "seconds",
    "loss",
    "sampling",
    "duplicate_of",
    "retry_of",
    "divisor",
)


def search_record(rd: RunDir, summary: dict[str, Any], exported: dict[str, Any]) -> dict[str, Any]:
    """Build the bundle's record of the whole search from ``trials/<n>/`` (each trial's record and spec) and
    ``summary.json``. A trial folder without a readable record is listed with state ``unknown``.

    Args:
        rd: The run directory.
        summary: ``summary.json``.
        exported: ``{"trial": n, "source": "retrained" | "proxy"}``.
    """
    trials = []
    root = rd.root / "trials"
    numbers = (
        sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        if root.is_dir()
        else []
    )
    for n in numbers:
        record = rd.trial(n)
        metrics = record.to_json() if record is not None else {"trial": n, "state": "unknown"}
        row = {k: metrics[k] for k in _TRIAL_KEYS if k in metrics}
        row.setdefault("trial", n)
        if metrics.get("reason") is not None:
            row["reason"] = scrub_text(metrics["reason"])
        spec = rd.trial_dir(n) / "spec.json"
        row["spec"] = rd.read_json(spec) if spec.exists() else None
        trials.append(row)
    retrain = summary.get("retrain") or {}
    retrained = [{k: scrub_text(v) for k, v in r.items()} for r in retrain.get("results") or []]
    return {
        "task": summary.get("task"),
        "problem": summary.get("problem"),
        "objective": summary.get("objective"),
        "n_trials": summary.get("n_trials"),
        "families": summary.get("families"),
        "proxy": summary.get("proxy"),
        "pareto_front": summary.get("pareto_front"),
        "best_proxy_trial": (summary.get("best") or {}).get("trial"),
        "exported": exported,
        "retrain": {
            k: retrain.get(k)
            for k in ("top_k", "candidates", "best", "shape", "patch", "max_epochs", "patience")
        }
        if retrain
        else None,
        "retrained": retrained,
        "proxy_fidelity": summary.get("proxy_fidelity"),
        "trials": trials,
    }
