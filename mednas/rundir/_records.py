"""The typed record of one search trial: ``trials/<n>/metrics.json``.

A :class:`TrialRecord` is the one truth about a trial: what was sampled (family, spec hash, loss, sampling, seed),
what it cost (parameters, MACs, activations, latency), how it trained (history, best epoch, timing) and how it
scored (values, metrics with bootstrap intervals, operating point, constraints). Optuna's user attributes keep only
what samplers, pruners and crash recovery need (see ``mednas.study``); the summary, the report, ``status``,
retrain and export read this record through :class:`mednas.rundir.RunDir`.

The file carries ``schema_version``; a record without one was written before the field existed (version 0) and
reads the same. Keys this version does not know are kept (a newer mednas may add some), so reading and writing
a record never loses information.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["TRIAL_RECORD_SCHEMA", "TrialRecord", "TrialState"]

#: The version of the trial record this mednas writes. Bump it when a field changes meaning or type.
TRIAL_RECORD_SCHEMA = 1

#: A trial's state as the record names it (Optuna's COMPLETE, PRUNED, FAIL, RUNNING; ``infeasible``: rejected
#: before training by a static budget, pruned in Optuna's storage).
TrialState = Literal["running", "complete", "pruned", "infeasible", "failed"]


class TrialRecord(BaseModel):
    """``trials/<n>/metrics.json``: one search trial, as the trial itself wrote it.

    Fields are optional where a trial may end before they are known (an infeasible candidate is never trained, a
    pruned one has no final metrics). ``metrics`` maps a metric name to ``{"value": float, "ci95": [low, high]}``;
    ``objective`` is ``{"name", "value", ...}`` of the primary objective; ``values`` are the objective values
    Optuna received (one per objective); ``constraints`` lists ``{"constraint", "value", "violation"}``;
    ``history`` lists ``{"epoch", "train_loss", "value", ...}`` per epoch; ``timing`` splits the trial's wall time
    (``before_first_epoch_s``, ``epochs_s``, ``after_last_epoch_s``).

    A ladder trial (``fidelity: "ladder"``) adds ``rungs``, one ``{"rung", "shape", "epochs", "value",
    "best_epoch", "seconds", "voxel_epochs", "start", "learned"}`` per rung it completed (``value``: the primary
    objective at the rung's best epoch; ``voxel_epochs``: epochs x training cases x voxels of the shape;
    ``start``: ``fresh`` on rung 0, ``carried`` when the previous rung's best weights were loaded, ``restarted``
    when the network could not run them at the new size), ``shape`` (the spatial shape its final weights were
    trained at), ``rung_reached`` (the highest rung index completed) and ``compute`` (``{"voxel_epochs",
    "seconds"}`` in total, a rung stopped early included). Its ``history`` runs across the rungs (``epoch``
    counted over the ladder, ``rung`` beside it); ``best_epoch`` is the top rung's.

    A candidate timed before training (a ``latency_ms`` constraint or objective) has ``latency_ms``, the median of
    its timed passes, and ``latency``: the whole figure (``median_ms``, ``p90_ms``, ``runtime``, ``precision``,
    ``threads``, ``batch``, ``shape``, ``device``, ``hardware``, ``repeats``, ``warmup``, ``seconds``; see
    :class:`mednas.runtime.LatencyFigure`) and ``cached`` (true when an earlier trial's figure for the same network
    and setting was reused). A record with ``latency_ms`` but no ``latency`` was written before runtimes could be
    chosen: its figure was taken in eager torch on the trial's device.

    With weight inheritance (``search.inherit``), ``parent`` is the finished trial whose weights this one started
    from (None: no candidate of its family had finished, it started fresh) and ``inherited_fraction`` the share of
    its network's state-dict elements copied from them (0 when fresh); a ladder trial's rung 0 then has
    ``start: "inherited"``.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=False)

    schema_version: int = TRIAL_RECORD_SCHEMA
    trial: int
    state: TrialState = "running"
    seed: int | None = None
    retry_of: int | None = None
    # sampled
    family: str | None = None
    spec_hash: str | None = None
    target: str | None = None
    loss: str | None = None
    sampling: str | None = None
    duplicate_of: int | None = None
    # priced before training
    params: int | None = None
    macs: int | float | None = None
    macs_proxy: int | float | None = None
    activation_mb: float | None = None
    latency_ms: float | None = None
    latency: dict[str, Any] | None = None
    # trained
    epochs: int | None = None
    best_epoch: int | None = None
    divisor: list[Any] | None = None
    oom_retry_batch_size: int | None = None
    history: list[dict[str, Any]] | None = None
    learned: bool | None = None
    not_learning: str | None = None
    weights: str | None = None
    # scored
    objective: dict[str, Any] | None = None
    values: list[float | None] | None = None
    metrics: dict[str, dict[str, Any]] | None = None
    operating_point: dict[str, Any] | None = None
    constraints: list[dict[str, Any]] | None = None
    feasible: bool | None = None
    # the resolution ladder (search.fidelity: ladder; absent from flat trials)
    fidelity: Literal["flat", "ladder"] | None = None
    rungs: list[dict[str, Any]] | None = None
    shape: list[int] | None = None
    rung_reached: int | None = None
    compute: dict[str, Any] | None = None
    # weight inheritance (search.inherit; absent when it is off)
    parent: int | None = None
    inherited_fraction: float | None = None
    # re-evaluated with extra seeds (search.reevaluate)
    proxy_seed_values: list[float] | None = None
    proxy_seeds: list[int] | None = None
    proxy_mean: float | None = None
    proxy_std: float | None = None
    # a retried ladder trial that resumed a killed one: {trial, rung, epoch}; the rung entries it took over carry
    # `resumed_from: <trial>`
    resumed_from: dict[str, Any] | None = None
    # how it ended
    reason: str | None = None
    seconds: float | None = None
    timing: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any, *, number: int | None = None) -> TrialRecord:
        """Validate a parsed ``metrics.json`` (a record of schema 0 has no ``schema_version``; it reads as such).

        Raises:
            pydantic.ValidationError: If ``data`` is not a trial record.
        """
        if isinstance(data, dict):
            if "schema_version" not in data:
                data = {**data, "schema_version": 0}
            if "trial" not in data and number is not None:
                data = {**data, "trial": number}
        return cls.model_validate(data)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready values, fields that were never set left out (as the trial wrote it).

        Plain Python values are returned as they are (numpy scalars in metrics included): the run directory's
        ``write_json`` turns them, and NaN or infinity into ``null``, as for every other record.
        """
        data = self.model_dump(mode="python", exclude_unset=True)
        data.pop("schema_version", None)
        return {"schema_version": TRIAL_RECORD_SCHEMA, **data}

    def updated(self, **fields: Any) -> TrialRecord:
        """A copy with ``fields`` set (and counted as set, so :meth:`to_json` writes them)."""
        data = self.model_dump(mode="python", exclude_unset=True)
        data.update(fields)
        return type(self).model_validate(data)

    # -- what every reader asks

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def metric(self, name: str) -> float | None:
        """The value of metric ``name`` (None when the trial has none)."""
        m = (self.metrics or {}).get(name) or {}
        value = m.get("value")
        return float(value) if value is not None else None

    @property
    def objective_value(self) -> float | None:
        """The primary objective's value (None before scoring)."""
        value = (self.objective or {}).get("value")
        return float(value) if value is not None else None
