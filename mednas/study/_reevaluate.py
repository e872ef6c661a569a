"""Noise-aware ranking: re-train the best few proxy candidates with extra seeds and rank them by the seed mean.

A single short proxy training is noisy; the best of many candidates is partly the luckiest (winner's curse).
Re-evaluating the leaders with a few more seeds, after the trials are done, turns their score into a mean.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from mednas.io._atomic import write_json

logger = logging.getLogger("mednas.study")

__all__ = ["ATTR_PREFIX", "reevaluate_top", "reevaluation_seeds", "reevaluations", "select_for_reevaluation"]

#: Study user attribute ``reevaluation:<trial number>`` holds each trial's result. Optuna does not let a
#: finished trial's own attributes change, so the study carries them and :func:`mednas.study.best_trials`
#: merges them into the trials it returns (``proxy_seed_values``, ``proxy_mean``, ``proxy_std``, ...).
ATTR_PREFIX = "reevaluation:"


def reevaluation_seeds(task_seed: int, trial_number: int, seeds: int) -> list[int]:
    """The extra proxy seeds of one trial: ``derive_seed(task_seed, trial_number, k)`` for k = 1..seeds.

    The trial's own seed is ``derive_seed(task_seed, trial_number)``, so the extra ones never repeat it.
    """
    from mednas.train import derive_seed

    return [derive_seed(task_seed, trial_number, k) for k in range(1, seeds + 1)]


def reevaluations(study: Any) -> dict[int, dict[str, Any]]:
    """Re-evaluation results stored on the study, by trial number (see :data:`ATTR_PREFIX`)."""
    out: dict[int, dict[str, Any]] = {}
    for key, value in study.user_attrs.items():
        if key.startswith(ATTR_PREFIX) and isinstance(value, dict):
            try:
                out[int(key[len(ATTR_PREFIX) :])] = value
            except ValueError:
                continue
    return out


def select_for_reevaluation(study: Any, top: int) -> list[Any]:
    """The ``top`` best complete trials by their single-seed value that meet every constraint and learned.

    Duplicates of an earlier candidate are skipped. The choice uses the single-seed values, not the means,
    so re-running the search picks the same trials.
    """
    from mednas.study._summary import best_trials

    ranked = best_trials(study, len(study.get_trials(deepcopy=False)), by_mean=False)
    pool = [
        t for t in ranked if t.user_attrs.get("learned") is not False and "duplicate_of" not in t.user_attrs
    ]
    return pool[:top]


def reevaluate_top(study: Any, objective: Any, *, top: int, seeds: int) -> list[int]:
    """Re-train the ``top`` best trials' candidates at the proxy with ``seeds`` extra seeds each.

    Each trial's result goes to ``trials/<n>/reevaluation.json`` (written after every seed, so a killed run
    resumes), its ``metrics.json`` (``proxy_seed_values``, ``proxy_mean``, ``proxy_std``) and the study user
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
        rec_path = rd.trial_dir(t.number) / "metrics.json"
        rec = rd.read_json(rec_path) if rec_path.exists() else {}
        rec.update(proxy_seed_values=result["values"], proxy_mean=result["mean"], proxy_std=result["std"])
        write_json(rec_path, rec)
    return [t.number for t in chosen]


def _reevaluate_trial(t: Any, objective: Any, wanted: list[int], *, progress: str) -> dict[str, Any]:
    from mednas.errors import RunDirError
    from mednas.spec import load_spec
    from mednas.train import train_candidate

    task, rd = objective.task, objective.run_dir
    tdir = rd.trial_dir(t.number)
    path = tdir / "reevaluation.json"
    previous = rd.read_json(path) if path.exists() else {}
    runs: dict[str, dict[str, Any]] = {str(r["seed"]): r for r in previous.get("runs", []) if "seed" in r}
    spec = load_spec(rd.read_json(tdir / "spec.json"), tdir / "spec.json", error=RunDirError)
    rec = rd.read_json(tdir / "metrics.json")
    loss = rec.get("loss") or t.params.get("loss") or task.training.loss
    sampling = rec.get("sampling") or t.params.get("sampling") or task.training.sampling
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
        t0 = time.perf_counter()
        try:
            # The trial's own proxy training with another seed (and the batch size it fell back to, if any).
            fr = train_candidate(
                task,
                spec,
                objective.train,
                objective.val,
                objective.fidelity,
                seed=seed,
                device=objective.device,
                loss=loss,
                sampling=sampling,
                batch_size=rec.get("oom_retry_batch_size"),
            ).result
            value = (
                float(fr.best_value) if math.isfinite(fr.best_value) else 0.0
            )  # as the trial itself is scored
            run: dict[str, Any] = {
                "seed": seed,
                "value": value,
                "learned": fr.learned,
                "not_learning": fr.not_learning_reason,
                "best_epoch": fr.best_epoch,
                "seconds": time.perf_counter() - t0,
            }
        except Exception as exc:  # noqa: BLE001 - a seed that breaks is recorded and left out of the mean
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            logger.warning(
                "trial %d: extra seed %d failed (%s); left out of the mean", t.number, seed, reason
            )
            run = {"seed": seed, "value": None, "error": reason, "seconds": time.perf_counter() - t0}
        runs[str(seed)] = run
        write_json(
            path,
            {
                "trial": t.number,
                "seeds": [t.user_attrs.get("seed"), *wanted],
                "runs": list(runs.values()),
                "complete": False,
            },
        )
    values = [float(t.values[0])] + [
        float(runs[str(s)]["value"]) for s in wanted if runs[str(s)].get("value") is not None
    ]
    seconds = float(sum(runs[str(s)].get("seconds") or 0.0 for s in wanted))
    result = {
        "trial": t.number,
        "seeds": [t.user_attrs.get("seed"), *wanted],
        "values": values,
        "mean": float(np.mean(values)),
        # Sample standard deviation over the seeds (0 with a single value).
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "seconds": seconds,
    }
    write_json(path, {**result, "runs": [runs[str(s)] for s in wanted], "complete": True})
    logger.info(
        "trial %d: proxy %.4f -> mean %.4f +/- %.4f over %d seeds (%.1fs)",
        t.number,
        values[0],
        result["mean"],
        result["std"],
        len(values),
        seconds,
    )
    return result
