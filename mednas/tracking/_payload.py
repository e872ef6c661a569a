"""What one MLflow run holds, taken from mednas's own records: a search trial, a retrained candidate, an export.

Pure functions over the records (no MLflow import), so what is logged can be read and tested on its own. Only
record fields go in: parameters, metrics, states and hashes; a free-text reason is scrubbed of paths and file
names (:func:`mednas.io._scrub.scrub_text`), and the run directory appears by its name only.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mednas.io._scrub import scrub_text
from mednas.rundir import TrialRecord

__all__ = ["RunPayload", "export_payload", "retrain_payloads", "trial_payload"]

#: MLflow's limits: a parameter value, a tag value and a key (longer ones are cut, never refused).
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 5000
MAX_KEY_CHARS = 250
_BAD_KEY_CHARS = re.compile(r"[^\w.\- :/]")
#: The per-epoch history keys and the metric each becomes (others: ``epoch_<key>``).
_HISTORY_KEYS = {"train_loss": "train_loss", "value": "val_objective"}
_RECORD_PARAMS = ("family", "spec_hash", "target", "loss", "sampling", "seed")
_COSTS = ("params", "macs", "activation_mb", "latency_ms", "seconds", "best_epoch", "epochs")


@dataclass
class RunPayload:
    """One MLflow run: its name, parameters, metrics ``(key, value, step)``, tags, end status and times (ms)."""

    name: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "FINISHED"
    start_ms: int | None = None
    end_ms: int | None = None
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (local folder, artifact path)

    def param(self, key: str, value: Any) -> None:
        """Add a parameter (``None`` left out; the value cut to MLflow's limit)."""
        if value is None:
            return
        text = value if isinstance(value, str) else _plain_text(value)
        self.params[_key(key)] = text[:MAX_PARAM_CHARS]

    def tag(self, key: str, value: Any) -> None:
        """Add a tag (``None`` left out)."""
        if value is not None:
            self.tags[_key(key)] = str(value)[:MAX_TAG_CHARS]

    def metric(self, key: str, value: Any, step: int = 0) -> None:
        """Add a metric value when it is a finite number (booleans and text are left out)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            item = getattr(value, "item", None)  # numpy scalars
            value = item() if callable(item) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return
        if math.isfinite(float(value)):
            self.metrics.append((_key(key), float(value), int(step)))

    def metric_table(self, metrics: Mapping[str, Any] | None, prefix: str = "") -> None:
        """Add ``{name: {"value", "ci95": [low, high]}}`` as ``<prefix><name>`` and its interval's ends."""
        for name, entry in (metrics or {}).items():
            if not isinstance(entry, Mapping):
                self.metric(f"{prefix}{name}", entry)
                continue
            self.metric(f"{prefix}{name}", entry.get("value"))
            ci = entry.get("ci95")
            if isinstance(ci, (list, tuple)) and len(ci) == 2:
                self.metric(f"{prefix}{name}_ci95_low", ci[0])
                self.metric(f"{prefix}{name}_ci95_high", ci[1])

    def history(self, rows: Iterable[Mapping[str, Any]] | None, prefix: str = "") -> None:
        """Add each epoch's values with ``step`` = its epoch (``value`` is the validation objective)."""
        for i, row in enumerate(rows or []):
            step = row.get("epoch", i + 1)
            for key, value in row.items():
                if key != "epoch":
                    self.metric(prefix + _HISTORY_KEYS.get(key, f"epoch_{key}"), value, step)


def trial_payload(record: TrialRecord | None, trial: Any, tags: Mapping[str, str]) -> RunPayload:
    """The run of one finished search trial: its Optuna parameters and record, per-epoch and final metrics.

    Args:
        record: The trial's record (``trials/<n>/metrics.json``); ``None`` when it has none (the state then comes
            from ``trial``).
        trial: The finished Optuna trial (``number``, ``params``, ``state``, ``datetime_start``/``_complete``).
        tags: Tags every run of the session carries (mednas version, task, study, run directory name).
    """
    number = int(trial.number)
    run = RunPayload(
        f"trial-{number}", start_ms=_ms(trial.datetime_start), end_ms=_ms(trial.datetime_complete)
    )
    state = _trial_state(record, trial)
    run.tags.update(tags)
    run.tag("mednas.step", "search")
    run.tag("mednas.trial", number)
    run.tag("mednas.state", state)
    run.status = "FAILED" if state == "failed" else "FINISHED"
    for name, value in (trial.params or {}).items():
        run.param(name, value)
    if record is None:
        return run
    for name in _RECORD_PARAMS:
        run.param(name, getattr(record, name))
    for name in ("retry_of", "duplicate_of", "parent", "fidelity", "rung_reached", "paused_at"):
        run.tag(f"mednas.{name}", getattr(record, name, None))
    continues = getattr(record, "continues", None)  # a ladder continuation: {"trial": paused trial, ...}
    run.tag("mednas.continues", continues.get("trial") if isinstance(continues, dict) else None)
    run.tag("mednas.learned", record.learned)
    run.tag("mednas.reason", scrub_text(record.reason) if record.reason else None)
    run.history(record.history)
    run.metric("objective", (record.objective or {}).get("value"))
    values = record.values or []
    if len(values) > 1:
        for i, value in enumerate(values):
            run.metric(f"objective_{i}", value)
    run.metric_table(record.metrics)
    for name in _COSTS:
        run.metric(name, getattr(record, name))
    run.metric("latency_p90_ms", (record.latency or {}).get("p90_ms"))
    return run


def retrain_payloads(
    candidates: Iterable[Mapping[str, Any]], ensemble: Mapping[str, Any] | None, tags: Mapping[str, str]
) -> list[RunPayload]:
    """One run per retrained candidate (validation and test metrics, its seeds or folds), and one for a fold ensemble.

    Args:
        candidates: Each candidate's ``retrain/<n>/metrics.json`` record.
        ensemble: ``retrain/ensemble.json`` of a cross-validated retrain, or None.
        tags: Tags every run of the session carries.
    """
    runs = [_retrained(record, tags) for record in candidates]
    if ensemble:
        run = RunPayload("retrain-ensemble", tags=dict(tags))
        run.tag("mednas.step", "retrain")
        run.tag("mednas.trial", ensemble.get("trial"))
        run.param("trial", ensemble.get("trial"))
        run.metric_table((ensemble.get("test") or {}).get("metrics"), "test_")
        runs.append(run)
    return runs


def export_payload(info: Mapping[str, Any], bundle: str, tags: Mapping[str, str]) -> RunPayload:
    """The ``export`` run: the exported trial, its source and formats, the bundle digest, the bundle as an artifact."""
    run = RunPayload("export", tags=dict(tags), artifacts=[(bundle, "bundle")])
    run.tag("mednas.step", "export")
    run.tag("mednas.trial", info.get("trial"))
    run.tag("mednas.bundle_digest", info.get("digest"))
    for name in ("trial", "source", "formats", "quantize"):
        run.param(name, info.get(name))
    for fmt, diff in (info.get("max_abs_diff") or {}).items():
        run.metric(f"max_abs_diff_{fmt}", diff)
    run.metric("seconds", info.get("seconds"))
    return run


def _retrained(record: Mapping[str, Any], tags: Mapping[str, str]) -> RunPayload:
    """The run of one retrained candidate."""
    trial = record.get("trial")
    run = RunPayload(f"retrain-{trial}", tags=dict(tags))
    state = str(record.get("state") or "unknown")
    run.tag("mednas.step", "retrain")
    run.tag("mednas.trial", trial)
    run.tag("mednas.state", state)
    run.tag("mednas.reason", scrub_text(record["reason"]) if record.get("reason") else None)
    run.status = "FAILED" if state == "failed" else "FINISHED"
    for name in ("trial", *_RECORD_PARAMS, "shape", "max_epochs", "patience"):
        run.param(name, record.get(name))
    patch = record.get("patch")
    run.param("patch", patch.get("size") if isinstance(patch, Mapping) else patch)
    rows = record.get("seeds") or []
    run.param("seeds", [row.get("seed") for row in rows] or None)
    run.history(record.get("history"))
    val, test = record.get("val") or {}, record.get("test") or {}
    run.metric("val_objective", val.get("objective"))
    run.metric_table(val.get("metrics"), "val_")
    run.metric_table(test.get("metrics"), "test_")
    for name in ("val_mean", "val_sd", "test_mean", "params", "best_epoch", "epochs", "seconds"):
        run.metric(name, record.get(name))
    run.metric("proxy_objective", (record.get("proxy") or {}).get("value"))
    for kind in ("seeds", "folds"):
        for i, row in enumerate(record.get(kind) or []):
            step = row.get("seed_index", row.get("fold", i))
            run.metric(f"{kind[:-1]}_val", row.get("val"), step)
            run.metric(f"{kind[:-1]}_test", row.get("test"), step)
    return run


def _trial_state(record: TrialRecord | None, trial: Any) -> str:
    """``complete``, ``pruned``, ``infeasible`` or ``failed``: the record's word, else Optuna's state's."""
    if record is not None and record.state != "running":
        return record.state
    if (getattr(trial, "user_attrs", None) or {}).get("infeasible"):
        return "infeasible"
    name = getattr(getattr(trial, "state", None), "name", "")
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(name, name.lower() or "unknown")


def _key(key: str) -> str:
    """A key MLflow accepts: letters, digits, ``_ - . : /`` and spaces, at most 250 characters."""
    return _BAD_KEY_CHARS.sub("_", str(key))[:MAX_KEY_CHARS] or "_"


def _plain_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_plain_text(v) for v in value)
    return str(value)


def _ms(when: Any) -> int | None:
    """Milliseconds since the epoch of a datetime (Optuna's trial times), else now."""
    stamp = getattr(when, "timestamp", None)
    return int(stamp() * 1000) if callable(stamp) else int(time.time() * 1000)
