"""``mednas export --ensemble``: the chosen candidate's K fold models as one bundle whose network averages them.

The network is :class:`mednas.train._ensemble.EnsembleNet` (log of the members' mean softmax probabilities), saved
as TorchScript; the bundle's ``network_def`` is ``torch.jit.load`` of that file, so MONAI's parser builds it with
torch alone and ``verify_net_in_out`` runs it. The postprocessing is a single model's: a softmax of the output is
the mean probability. The operating point and temperature are the ensemble's own, chosen at retrain on the
pooled out-of-fold validation predictions (``retrain/ensemble.json``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednas.bundle._source import ExportSource, _pipeline, _recorded_preprocessing, _spec
from mednas.errors import RunDirError
from mednas.rundir import RunDir

__all__ = ["EnsembleSource", "ensemble_metadata", "ensemble_network_def", "ensemble_source", "load_ensemble"]

#: The ensemble's record that ``mednas retrain --folds`` writes.
_ENSEMBLE_RECORD = "retrain/ensemble.json"


@dataclass
class EnsembleSource(ExportSource):
    """An :class:`ExportSource` for the fold ensemble: ``weights`` is the first member's, ``members`` all of them.

    Args:
        members: Each member's ``model.pt``, fold order.
        ensemble: ``retrain/ensemble.json``.
    """

    members: list[Path] = field(default_factory=list)
    ensemble: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How outputs name the ensemble."""
        return f"ensemble of {len(self.members)} fold models, retrained"


def ensemble_source(run_dir: str | Path) -> EnsembleSource:
    """The chosen candidate's fold ensemble recorded by ``mednas retrain --folds``.

    Raises:
        RunDirError: When the run has no cross-validated retrain (one line: run ``mednas retrain RUN --folds K``),
            or a member's record, spec or weights are missing or incomplete.
    """
    rd = RunDir(run_dir)
    rd.require(rd.summary_path, rd.resolved_path, step="export")
    summary = rd.summary()
    path = rd.root / _ENSEMBLE_RECORD
    if not (summary.get("retrain") or {}).get("folds") or not path.is_file():
        raise RunDirError(
            f"{rd.root}: no cross-validated retrain to export as an ensemble; run `mednas retrain {rd.root} "
            "--folds K` first"
        )
    task = rd.task()
    ens = rd.read_json(path)
    dirs = [rd.root / d for d in ens.get("members") or []]
    if not dirs:
        raise RunDirError(f"{path}: lists no members")
    records = []
    for d in dirs:
        rd.require(d / "spec.json", d / "model.pt", step="export of the ensemble")
        # The member's record, through the run directory's one reader (any trial number: seed_dir names the folder).
        record = rd.retrained(0, seed_dir=d)
        where = rd.retrained_path(0, seed_dir=d)
        if record is None:
            raise RunDirError(f"{where}: missing or unreadable; re-run `mednas retrain --folds`")
        if record.get("state") != "complete":
            raise RunDirError(f"{where}: member is not complete; re-run `mednas retrain --folds`")
        records.append(record)
    first = records[0]
    spec = _spec(dirs[0] / "spec.json")
    for d in dirs[1:]:
        if _spec(d / "spec.json").hash != spec.hash:
            raise RunDirError(f"{d / 'spec.json'}: members of one ensemble must share one architecture")
    fingerprint = rd.read_json(rd.fingerprint) if rd.fingerprint.exists() else {}
    prep = first.get("preprocessing") or _recorded_preprocessing(rd, task, fingerprint)
    op = ens.get("operating_point") if task.problem == "classification" else None
    cal = ens.get("calibration") if task.problem == "classification" else None
    shape = tuple(int(s) for s in first["shape"])
    pipeline, counts = _pipeline(
        task,
        fingerprint,
        prep,
        shape,
        first.get("divisor"),
        first.get("patch"),
        op,
        (cal or {}).get("temperature"),
    )
    metrics = {"val": dict(ens["val"]["metrics"] or {})}
    if ens.get("test"):
        metrics["test"] = dict(ens["test"].get("metrics") or {})
    record = {"state": "complete", "learned": ens.get("learned"), "test": ens.get("test"), "folds": len(dirs)}
    return EnsembleSource(
        "retrained", int(ens["trial"]), spec, dirs[0] / "model.pt", pipeline, metrics, op, record, summary,
        task, counts, cal, members=[d / "model.pt" for d in dirs], ensemble=ens,
    )  # fmt: skip


def load_ensemble(src: EnsembleSource, load_one: Callable[[ExportSource], Any]) -> Any:
    """Load every member with ``load_one`` (the single-model loader and its checks) into one averaging network."""
    from mednas.train._ensemble import EnsembleNet

    members = [load_one(dataclasses.replace(src, weights=w)) for w in src.members]
    return EnsembleNet(members).eval()


def ensemble_network_def() -> dict[str, Any]:
    """The bundle's ``network_def``: the TorchScript ensemble, built by torch alone (``CheckpointLoader`` then loads
    ``models/model.pt``, the same weights, into it)."""
    return {"_target_": "torch.jit.load", "f": "$@bundle_root + '/models/model.ts'", "map_location": "cpu"}


def ensemble_metadata(meta: dict[str, Any], src: EnsembleSource) -> None:
    """Say in ``metadata.json`` that this is an ensemble: members, how they combine, the ensemble's and the best
    member's figures (both tested once on the held-out split), and what the operating point was chosen on."""
    ens, m = src.ensemble, meta["mednas"]
    k = len(src.members)
    member = ens.get("best_member") or {}
    clean = _metrics_clean
    m["source_label"] = src.label
    m["ensemble"] = {
        "k": k,
        "members": list(ens.get("members") or []),
        "combine": ens.get("combine"),
        "output": "log of the members' mean softmax probabilities (softmax of it = the mean)",
        "fold_mean": ens.get("fold_mean"),
        "folds_file": (src.summary.get("retrain") or {}).get("folds_file"),
        "metrics": {
            "val": clean((ens.get("val") or {}).get("metrics") or {}),
            "test": clean(((ens.get("test") or {}).get("metrics")) or {}),
        },
        "operating_point_from": (ens.get("val") or {}).get("population"),
        "best_member": {
            "fold": member.get("fold"),
            "dir": member.get("dir"),
            "metrics": {
                "val": clean(((member.get("val") or {}).get("metrics")) or {}),
                "test": clean(((member.get("test") or {}).get("metrics")) or {}),
            },
            "operating_point": member.get("operating_point"),
        },
    }
    m["metrics_note"] = (
        "ensemble: validation = pooled out-of-fold predictions of the members (each case by the member that did "
        "not train on it; the operating point and temperature were chosen there); test evaluated once at that "
        "operating point"
    )
    if m.get("operating_point"):
        m["operating_point"]["chosen_on"] = "pooled out-of-fold validation predictions"
    meta["description"] = meta["description"].replace(
        "retrained at full fidelity", f"ensemble of {k} fold models (mean of their probabilities), retrained"
    )
    meta["changelog"] = {
        meta["version"]: f"exported by mednas: ensemble of trial {src.trial}'s {k} fold models"
    }
    m["limitations"].insert(
        0,
        f"ENSEMBLE of {k} fold models, each trained on {k - 1}/{k} of the training and validation patients. Its "
        "temperature and operating point were chosen on the members' pooled out-of-fold predictions, an "
        "approximation of the average's own behaviour; the test split checks it once.",
    )


def _metrics_clean(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("value", "ci95", "n_resamples")
    return {name: {k: v[k] for k in keep if k in v} for name, v in metrics.items() if isinstance(v, dict)}
