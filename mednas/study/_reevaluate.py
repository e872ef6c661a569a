"""Noise-aware ranking: re-train the best few proxy candidates with extra seeds and rank them by the seed mean.

A single short proxy training is noisy; the best of many candidates is partly the luckiest (winner's curse).
Re-evaluating the leaders with a few more seeds, after the trials are done, turns their score into a mean.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mednas.io._atomic import write_json
from mednas.rundir import TrialRecord
from mednas.rundir._ranking import ATTR_PREFIX, best_trials, reevaluations

logger = logging.getLogger("mednas.study")

__all__ = ["ATTR_PREFIX", "reevaluate_top", "reevaluation_seeds", "reevaluations", "select_for_reevaluation"]


def reevaluation_seeds(task_seed: int, trial_number: int, seeds: int) -> list[int]:
    """The extra proxy seeds of one trial: ``derive_seed(task_seed, trial_number, k)`` for k = 1..seeds.

    The trial's own seed is ``derive_seed(task_seed, trial_number)``, so the extra ones never repeat it.
    """
    from mednas.train import derive_seed

    return [derive_seed(task_seed, trial_number, k) for k in range(1, seeds + 1)]


def select_for_reevaluation(study: Any, top: int) -> list[Any]:
    """The ``top`` best complete trials by their single-seed value that meet every constraint and learned.

    Duplicates of an earlier candidate are skipped. The choice uses the single-seed values, not the means,
    so re-running the search picks the same trials.
    """
    ranked = best_trials(study, len(study.get_trials(deepcopy=False)), by_mean=False)
    pool = [
        t for t in ranked if t.user_attrs.get("learned") is not False and "duplicate_of" not in t.user_attrs
    ]
    return pool[:top]


def reevaluate_top(study: Any, objective: Any, *, top: int, seeds: int) -> list[int]:
    """Re-train the ``top`` best trials' candidates at the proxy with ``seeds`` extra seeds each.

    Each trial's result goes to ``trials/<n>/reevaluation.json`` (written after every seed, so a killed run
    resumes), its record (``proxy_seed_values``, ``proxy_mean``, ``proxy_std``) and the study user
    attribute ``reevaluation:<n>``. A trial already re-evaluated with these seeds is skipped.

    Args:
        study: The search's Optuna study.
        objective: The search's trial objective (its proxy fidelity, data and device).
        top: How many trials.
        seeds: Extra seeds per trial.

    Returns:
        The trial numbers that are re-evaluated now (including those that were already).
    """
    task, rd = objective.task, objective.run_dir
    chosen = select_for_reevaluation(study, top)
    done = reevaluations(study)
    if chosen:
        logger.info(
            "re-evaluating the %d best proxy candidate(s) with %d extra seed(s) each: trials %s",
            len(chosen),
            seeds,
            ", ".join(str(t.number) for t in chosen),
        )
    for i, t in enumerate(chosen, 1):
        wanted = reevaluation_seeds(task.search.seed, t.number, seeds)
        if (done.get(t.number) or {}).get("seeds") == [t.user_attrs.get("seed"), *wanted]:
            logger.info("trial %d: already re-evaluated with these seeds", t.number)
            continue
        result = _reevaluate_trial(t, objective, wanted, progress=f"{i}/{len(chosen)}")
        study.set_user_attr(f"{ATTR_PREFIX}{t.number}", result)
        rec = rd.trial(t.number) or TrialRecord(trial=t.number)
        rd.write_trial(
            rec.updated(
                proxy_seed_values=result["values"], proxy_mean=result["mean"], proxy_std=result["std"]
            )
        )
    return [t.number for t in chosen]


def _reevaluate_trial(t: Any, objective: Any, wanted: list[int], *, progress: str) -> dict[str, Any]:
    """Proxy-train trial ``t``'s candidate with each seed of ``wanted`` not done yet; return its result.

    ``trials/<n>/reevaluation.json`` is rewritten after every seed, so a killed run goes on where it stopped.
    """
    rd = objective.run_dir
    path = rd.trial_dir(t.number) / "reevaluation.json"
    previous = rd.read_json(path) if path.exists() else {}
    runs: dict[str, dict[str, Any]] = {str(r["seed"]): r for r in previous.get("runs", []) if "seed" in r}
    seeds = [t.user_attrs.get("seed"), *wanted]
    retrain = _Retrain.of(t, objective)
    for k, seed in enumerate(wanted, 1):
        if str(seed) in runs:
            continue
        logger.info(
            "trial %d (%s): proxy training with extra seed %d/%d (%d)",
            t.number,
            progress,
            k,
            len(wanted),
            seed,
        )
        runs[str(seed)] = retrain(seed)
        write_json(path, {"trial": t.number, "seeds": seeds, "runs": list(runs.values()), "complete": False})
    result = _result(t, seeds, [runs[str(s)] for s in wanted])
    write_json(path, {**result, "runs": [runs[str(s)] for s in wanted], "complete": True})
    logger.info(
        "trial %d: proxy %.4f -> mean %.4f +/- %.4f over %d seeds (%.1fs)",
        t.number,
        result["values"][0],
        result["mean"],
        result["std"],
        len(result["values"]),
        result["seconds"],
    )
    return result


def _result(t: Any, seeds: list[Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A re-evaluated trial's result: its own value and those of the extra seeds that trained, their mean and
    sample standard deviation (0 with a single value), and the seconds the extra seeds took."""
    values = [float(t.values[0])] + [float(r["value"]) for r in runs if r.get("value") is not None]
    return {
        "trial": t.number,
        "seeds": seeds,
        "values": values,
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "seconds": float(sum(r.get("seconds") or 0.0 for r in runs)),
    }


@dataclass(frozen=True)
class _Retrain:
    """The proxy training of one trial's candidate, as the trial itself ran it, with another seed."""

    t: Any
    objective: Any
    spec: Any
    loss: str
    sampling: str
    batch_size: int | None

    @classmethod
    def of(cls, t: Any, objective: Any) -> _Retrain:
        """Read the trial's spec and record: the loss, batch sampling and batch size it trained with.

        Raises:
            RunDirError: The trial's ``spec.json`` or record is missing or unreadable.
        """
        from mednas.errors import RunDirError
        from mednas.spec import load_spec

        task, rd = objective.task, objective.run_dir
        spec_path = rd.trial_dir(t.number) / "spec.json"
        spec = load_spec(rd.read_json(spec_path), spec_path, error=RunDirError)
        rec = rd.trial(t.number)
        if rec is None:
            raise RunDirError(f"{rd.trial_record_path(t.number)}: missing or unreadable")
        return cls(
            t,
            objective,
            spec,
            loss=rec.loss or t.params.get("loss") or task.training.loss,
            sampling=rec.sampling or t.params.get("sampling") or task.training.sampling,
            batch_size=rec.oom_retry_batch_size,
        )

    def __call__(self, seed: int) -> dict[str, Any]:
        """Train with ``seed``; the run's record (a seed that breaks is recorded and left out of the mean)."""
        from mednas.train import train_candidate

        o, t0 = self.objective, time.perf_counter()
        try:
            # The trial's own proxy training with another seed (and the batch size it fell back to, if any).
            fr = train_candidate(
                o.task,
                self.spec,
                o.train,
                o.val,
                o.fidelity,
                seed=seed,
                device=o.device,
                loss=self.loss,
                sampling=self.sampling,
                batch_size=self.batch_size,
            ).result
        except Exception as exc:  # noqa: BLE001 - a seed that breaks is recorded and left out of the mean
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            logger.warning(
                "trial %d: extra seed %d failed (%s); left out of the mean", self.t.number, seed, reason
            )
            return {"seed": seed, "value": None, "error": reason, "seconds": time.perf_counter() - t0}
        return {
            "seed": seed,
            "value": float(fr.best_value) if math.isfinite(fr.best_value) else 0.0,  # as the trial is scored
            "learned": fr.learned,
            "not_learning": fr.not_learning_reason,
            "best_epoch": fr.best_epoch,
            "seconds": time.perf_counter() - t0,
        }
