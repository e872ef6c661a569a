"""Which candidate an export ships, read from the run directory alone.

The best retrained candidate (``summary["retrain"]["best"]``, weights ``retrain/<n>/model.pt``) when there is one;
otherwise the best search trial (``summary["best"]["trial"]``, ``trials/<n>/model.pt``): a proxy candidate, which
every output flags as not retrained, or, on the resolution ladder (``search.fidelity: ladder``), a trial that
climbed to the top rung and so was trained at full resolution (one seed, no test evaluation: labelled as such,
not as a proxy). Nothing here opens the Optuna study or reads an image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednas.bundle._pipeline import Pipeline, resize_mode_for
from mednas.errors import RunDirError
from mednas.rundir import RunDir
from mednas.spec import ArchSpec

logger = logging.getLogger(__name__)

__all__ = ["LADDER_FLAG", "LADDER_NOTE", "PROXY_FLAG", "ExportSource", "resolve_source"]

#: How every output names a proxy candidate (a ladder trial that stopped below the top rung is one too).
PROXY_FLAG = "proxy candidate, not retrained"
#: How every output names a ladder trial that completed the top (full-resolution) rung.
LADDER_FLAG = "full-resolution ladder candidate, not retrained"
#: What a ladder candidate's weights are, and are not, in one sentence (model card and metadata).
LADDER_NOTE = (
    "trained at full resolution on the search's resolution ladder, one seed, no test-split evaluation: "
    "run `mednas retrain` for seeds and the held-out test"
)
_LABELS = {"retrained": "retrained", "ladder": LADDER_FLAG, "proxy": PROXY_FLAG}


@dataclass
class ExportSource:
    """The candidate to export and everything recorded about it.

    Args:
        kind: ``"retrained"``; ``"ladder"`` (a search trial that completed the resolution ladder's top rung:
            full resolution, one seed, no test evaluation); or ``"proxy"`` (a flat proxy trial, or a ladder trial
            pruned below the top rung, at the shape it stopped at).
        trial: Trial number.
        spec: The architecture as its weights were trained (full-shape adapted for retrained candidates).
        weights: Path of the state dict.
        pipeline: Preprocessing and postprocessing.
        metrics: Per split (``val``, ``test`` where retrained): metric name -> ``{value, ci95, n_resamples}``.
        operating_point: Classification: the threshold record chosen on validation; else ``None``.
        record: The candidate's record (``retrain/<n>/metrics.json``, or the proxy trial's
            :class:`~mednas.rundir.TrialRecord` as JSON).
        summary: ``summary.json``.
        task: The validated task.
        resize_counts: Training cases resized by area averaging / linear interpolation.
        calibration: Classification: the temperature-scaling record (``temperature``, ``ece_before``,
            ``ece_after``, ``nll_before``, ``nll_after``, ``warnings``), fitted on validation at retrain or, for a
            proxy candidate, at export; ``None`` when nothing could be fitted.
    """

    kind: str
    trial: int
    spec: ArchSpec
    weights: Path
    pipeline: Pipeline
    metrics: dict[str, dict[str, Any]]
    operating_point: dict[str, Any] | None
    record: dict[str, Any]
    summary: dict[str, Any]
    task: Any
    resize_counts: dict[str, int] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None

    @property
    def is_proxy(self) -> bool:
        """True when the weights are the proxy's (short, low-resolution training)."""
        return self.kind == "proxy"

    @property
    def is_ladder(self) -> bool:
        """True when the weights are a ladder trial's from its top (full-resolution) rung, never retrained."""
        return self.kind == "ladder"

    @property
    def label(self) -> str:
        """``"retrained"``, the ladder flag or the proxy flag, as outputs show it."""
        return _LABELS[self.kind]


def resolve_source(run_dir: str | Path) -> ExportSource:
    """Pick the candidate to export from a run directory.

    Raises:
        RunDirError: When the run has no completed trial, the chosen candidate's weights or spec are missing,
            or the records contradict each other.
    """
    rd = RunDir(run_dir)
    rd.require(rd.summary_path, rd.resolved_path, step="export")
    summary = rd.summary()
    task = rd.task()
    fingerprint = rd.read_json(rd.fingerprint) if rd.fingerprint.exists() else {}
    retrain_best = (summary.get("retrain") or {}).get("best")
    if retrain_best is not None:
        # A cross-validated retrain (`--folds`) names its best fold model's folder.
        best_dir = (summary.get("retrain") or {}).get("best_dir")
        cdir = rd.root / best_dir if best_dir else None
        return _retrained(rd, int(retrain_best), summary, task, fingerprint, cdir)
    best = summary.get("best")
    if not best or best.get("trial") is None:
        raise RunDirError(f"{rd.root}: no completed trial to export (run `mednas search` first)")
    return _proxy(rd, int(best["trial"]), summary, task, fingerprint)


def _retrained(
    rd: RunDir,
    n: int,
    summary: dict[str, Any],
    task: Any,
    fingerprint: dict[str, Any],
    cdir: Path | None = None,
) -> ExportSource:
    cdir = cdir or rd.retrain_dir(n)
    path = rd.retrained_path(n, seed_dir=cdir)
    rd.require(path, cdir / "spec.json", cdir / "model.pt", step="export of the retrained candidate")
    record = rd.retrained(n, seed_dir=cdir)
    if record is None:
        raise RunDirError(
            f"{path}: not a readable record of retrained candidate {n}; re-run `mednas retrain`"
        )
    if record.get("state") != "complete":
        raise RunDirError(
            f"{path}: candidate {n} is {record.get('state')!r}, not complete; re-run `mednas retrain`"
        )
    spec = _spec(cdir / "spec.json")
    shape = tuple(int(s) for s in record["shape"])
    patch = record.get("patch") or None
    # What retraining itself used; a record without it: what the run's data plan recorded.
    prep = record.get("preprocessing") or _recorded_preprocessing(rd, task, fingerprint)
    op = record.get("operating_point")
    metrics = {"val": dict((record.get("val") or {}).get("metrics") or {})}
    if record.get("test"):
        metrics["test"] = dict(record["test"].get("metrics") or {})
    cal = record.get("calibration") if task.problem == "classification" else None
    pipeline, counts = _pipeline(
        task, fingerprint, prep, shape, record.get("divisor"), patch, op, (cal or {}).get("temperature")
    )
    return ExportSource(
        "retrained", n, spec, cdir / "model.pt", pipeline, metrics, op, record, summary, task, counts, cal
    )


def _proxy(
    rd: RunDir, n: int, summary: dict[str, Any], task: Any, fingerprint: dict[str, Any]
) -> ExportSource:
    """The best search trial's weights, at the shape they were trained at: a proxy or a top-rung ladder candidate."""
    tdir = rd.trial_dir(n)
    rd.require(rd.trial_record_path(n), tdir / "spec.json", step="export")
    if not (tdir / "model.pt").exists():
        raise RunDirError(
            f"{rd.root}: trials/{n}/model.pt is missing: the search keeps proxy weights for its best "
            "search.keep_weights trials only; run `mednas retrain` to train the candidate at full fidelity"
        )
    spec = _spec(tdir / "spec.json")  # checked before anything else is said or done
    trial = rd.trial(n)
    if trial is None:
        raise RunDirError(f"{rd.trial_record_path(n)}: not a readable trial record of trial {n}")
    record = trial.to_json()
    kind, shape = _trained_shape(rd, n, record, summary)
    if record.get("fidelity") == "ladder":
        spec = _adapted(task, spec, shape, tdir / "spec.json")
    logger.warning(
        "no retrained candidate in %s: exporting the best search trial %d (%s)", rd.root, n, _LABELS[kind]
    )
    op = trial.operating_point
    cal = None
    if task.problem == "classification":
        cal, op = _calibrate_proxy(rd, tdir, task, op, kind)
    prep = _recorded_preprocessing(rd, task, fingerprint)
    pipeline, counts = _pipeline(
        task, fingerprint, prep, shape, trial.divisor, None, op, (cal or {}).get("temperature")
    )
    metrics = {"val": dict(trial.metrics or {})}
    return ExportSource(
        kind, n, spec, tdir / "model.pt", pipeline, metrics, op, record, summary, task, counts, cal
    )


def _trained_shape(
    rd: RunDir, n: int, record: dict[str, Any], summary: dict[str, Any]
) -> tuple[str, tuple[int, ...]]:
    """The export kind of search trial ``n`` and the spatial shape its ``model.pt`` was trained at.

    A flat trial was trained at ``summary["proxy"]["shape"]``: ``"proxy"``. A ladder trial (``fidelity ==
    "ladder"``) at its record's ``shape``: ``"ladder"`` when it completed the top rung (``rung_reached`` is the
    last of ``summary["ladder"]["rungs"]``), else ``"proxy"``.

    Raises:
        RunDirError: When the shape is not recorded, or a top-rung trial's shape is not the top rung's.
    """
    if record.get("fidelity") != "ladder":
        shape = tuple(int(s) for s in (summary.get("proxy") or {}).get("shape") or ())
        if not shape:
            raise RunDirError(
                f"{rd.summary_path}: proxy.shape is missing; cannot tell the resolution trial {n} was trained at"
            )
        return "proxy", shape
    path = rd.trial_record_path(n)
    shape = tuple(int(s) for s in record.get("shape") or ())
    if not shape:
        raise RunDirError(
            f"{path}: a ladder trial's record has no shape; cannot tell the resolution trial {n} was trained at"
        )
    rungs = (summary.get("ladder") or {}).get("rungs") or []
    if not rungs:
        raise RunDirError(
            f"{rd.summary_path}: ladder.rungs is missing; cannot tell whether ladder trial {n} reached the top rung"
        )
    reached = record.get("rung_reached")
    if reached is None or int(reached) < len(rungs) - 1:
        return "proxy", shape
    top = tuple(int(s) for s in rungs[-1].get("shape") or ())
    if top and shape != top:  # a summary written before the data plan knew the full shape has no rung shapes
        raise RunDirError(
            f"{path}: trial {n} completed the top rung ({'x'.join(map(str, top))}) but records its weights at "
            f"{'x'.join(map(str, shape))}; the records contradict each other"
        )
    return "ladder", shape


def _calibrate_proxy(
    rd: RunDir, tdir: Path, task: Any, op: dict[str, Any] | None, kind: str = "proxy"
) -> tuple[dict[str, Any] | None, Any]:
    """Fit the temperature of a search trial on its validation predictions; re-choose the threshold on them.

    The trial's ``predictions.json`` holds its validation probabilities (softmax of the logits, so their log
    gives the logits up to a constant softmax ignores; a ladder trial's are its last rung's). Without it (runs
    from before it was written) the bundle stays uncalibrated and says so.
    """
    import numpy as np

    from mednas.metrics import calibration_record, choose_threshold, finding_score, operating_point_warnings
    from mednas.metrics._objective import operating_rule

    path = tdir / "predictions.json"
    pred = rd.read_json(path) if path.exists() else None
    if not pred or not pred.get("probabilities") or not pred.get("labels"):
        logger.warning("%s: no validation predictions: the bundle's probabilities are not calibrated", tdir)
        return None, op
    probs = np.asarray(pred["probabilities"], dtype=np.float64)
    labels = np.asarray(pred["labels"], dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels) or probs.shape[1] != task.n_classes:
        raise RunDirError(
            f"{path}: probabilities and labels do not match the task's {task.n_classes} classes"
        )
    cal, calibrated = calibration_record(probs, labels, task.labels.finding_indices)
    truth = np.isin(labels, task.labels.finding_indices).astype(int)
    if truth.any() and not truth.all():
        point = choose_threshold(
            truth, finding_score(calibrated, positive=list(task.labels.finding_indices)), operating_rule(task)
        )
        op = point.to_dict()
    cal["fitted_at"] = (
        "export (full-resolution ladder candidate: validation predictions of the trial's top rung)"
        if kind == "ladder"
        else "export (proxy candidate: validation predictions of the proxy trial)"
    )
    cal["warnings"] = operating_point_warnings(
        op,
        ece_after=cal["ece_after"],
        truth=truth,
        temperature=cal["temperature"],
        ece_before=cal["ece_before"],
    )
    return cal, op


def _adapted(task: Any, spec: ArchSpec, shape: tuple[int, ...], path: Path) -> ArchSpec:
    """``spec`` as a ladder trial's weights were last trained: set for inputs of ``shape`` by its family.

    A ladder trial samples its spec at the lowest rung; a family whose constructor takes the image size
    (EfficientNet's ``image_size``) ran each rung with the spec reset for that rung's shape (weights unaffected).

    Raises:
        RunDirError: When the spec's family is not a search space that can be found.
    """
    from mednas.errors import MednasError
    from mednas.train import space_for

    try:
        return space_for(task, spec.family).adapt_to_shape(spec, shape)
    except (KeyError, MednasError) as exc:
        raise RunDirError(
            f"{path}: family {spec.family!r} cannot set the spec for {'x'.join(map(str, shape))}: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None


def _spec(path: Path) -> ArchSpec:
    """Read and fully check a spec (allowed network class, signature, size) before anything builds it."""
    from mednas.io import read_json
    from mednas.spec import load_spec

    try:
        data = read_json(path)
    except (ValueError, TypeError) as exc:
        raise RunDirError(
            f"{path}: not a valid architecture spec ({' '.join(str(exc).split())[:200]})"
        ) from None
    return load_spec(data, path, error=RunDirError)


def _recorded_preprocessing(rd: RunDir, task: Any, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing the search's data plan recorded (decided again by the plan's rule for older runs)."""
    from mednas.data import recorded_preprocessing

    return recorded_preprocessing(rd, task, fingerprint)


def _ras_shape(shape: list[int], codes: str | None) -> list[int]:
    """Permute a stored 3D shape to the RAS axis order training reoriented to."""
    axis_of = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    if (
        not codes
        or len(shape) != 3
        or len(codes) != 3
        or sorted(axis_of.get(c, -1) for c in codes) != [0, 1, 2]
    ):
        return list(shape)
    out = [0, 0, 0]
    for size, code in zip(shape, codes):
        out[axis_of[code]] = int(size)
    return out


def _pipeline(
    task: Any,
    fingerprint: dict[str, Any],
    prep: dict[str, Any],
    shape: tuple[int, ...],
    divisor: Any,
    patch: Any,
    op: dict[str, Any] | None,
    temperature: float | None = None,
) -> tuple[Pipeline, dict[str, int]]:
    dims = int(prep.get("spatial_dims", task.spatial_dims))
    cases = fingerprint.get("cases") or []
    shapes = [
        _ras_shape(list(c["shape"])[:dims], c.get("orientation")) if dims == 3 else list(c["shape"])[:dims]
        for c in cases
        if c.get("shape")
    ]
    mode, counts = resize_mode_for(shapes, shape)
    threshold = None
    if task.problem == "classification" and op and op.get("threshold") is not None:
        t = float(op["threshold"])
        threshold = t if math.isfinite(t) else None
    pipeline = Pipeline(
        problem=task.problem,
        spatial_dims=dims,
        in_channels=int(prep.get("in_channels", task.in_channels)),
        n_classes=int(prep.get("n_classes", task.n_classes)),
        class_names=tuple(task.labels.names),
        finding_indices=tuple(task.labels.finding_indices),
        normalize=str(prep["normalize"]),
        ct_window=(float(prep["ct_window"][0]), float(prep["ct_window"][1])),
        orientation=(prep.get("orientation") or "RAS") if dims == 3 else None,
        shape=tuple(int(s) for s in shape),
        resize_mode=mode,
        divisor=tuple(int(k) for k in (divisor or (1,) * dims)),
        patch=tuple(int(p) for p in patch["size"]) if patch else None,
        overlap=float(patch.get("overlap", 0.25)) if patch else 0.25,
        threshold=threshold,
        temperature=float(temperature)
        if temperature is not None and task.problem == "classification"
        else None,
    )
    return pipeline, counts
