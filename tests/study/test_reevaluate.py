"""Noise-aware ranking: the best proxy candidates are re-trained with extra seeds and ranked by the seed mean."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import create_trial

from mednas import api
from mednas.study import best_trials, pareto_front
from mednas.study._reevaluate import ATTR_PREFIX, reevaluation_seeds
from mednas.testing import tiny_task


def test_search_reevaluates_the_top_trials_once(
    tmp_path: Path, tiny_cls_datalist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mednas.train

    run_dir = tmp_path / "run"
    task = tiny_task(
        "classification",
        tiny_cls_datalist,
        objective={"metric": "auroc"},
        search={"n_trials": 3, "pruner": "none", "reevaluate": {"top": 2, "seeds": 1}},
    )
    summary = api.search(task, run_dir=run_dir, show_progress=False).summary
    study = optuna.load_study(study_name="tiny-cls", storage=f"sqlite:///{run_dir / 'study.db'}")
    eligible = [
        t for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs.get("learned") is not False
    ]
    assert len(eligible) >= 2, "the tiny search should give at least two candidates that learned"

    ranked = best_trials(study, 3)
    again = [t for t in ranked if "proxy_mean" in t.user_attrs]
    assert len(again) == 2
    for t in again:
        values = t.user_attrs["proxy_seed_values"]
        assert len(values) == 2 and values[0] == t.values[0]
        assert t.user_attrs["proxy_mean"] == pytest.approx(sum(values) / 2)
        assert t.user_attrs["proxy_seeds"] == [t.user_attrs["seed"], *reevaluation_seeds(0, t.number, 1)]
        rec = json.loads((run_dir / "trials" / str(t.number) / "metrics.json").read_text())
        assert rec["proxy_mean"] == t.user_attrs["proxy_mean"] and rec["proxy_seed_values"] == values
        saved = json.loads((run_dir / "trials" / str(t.number) / "reevaluation.json").read_text())
        assert (
            saved["complete"]
            and saved["values"] == values
            and saved["runs"][0]["seed"] == t.user_attrs["proxy_seeds"][1]
        )
    # Ranked by the mean: re-evaluated trials are in mean order among themselves.
    means = [t.user_attrs["proxy_mean"] for t in ranked if "proxy_mean" in t.user_attrs]
    assert means == sorted(means, reverse=True)

    r = summary["reevaluation"]
    assert r["top"] == 2 and r["seeds"] == 1
    assert sorted(x["trial"] for x in r["trials"]) == sorted(t.number for t in again)
    assert r["seconds"] > 0 and r["search_seconds"] > 0
    assert r["cost_fraction"] == pytest.approx(r["seconds"] / r["search_seconds"])
    assert summary["best"]["proxy_mean"] == best_trials(study, 1)[0].user_attrs.get("proxy_mean")

    calls: list[int] = []
    real_fit = mednas.train.fit

    def counting_fit(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real_fit(*a, **kw)

    monkeypatch.setattr(mednas.train, "fit", counting_fit)
    rerun = api.search(task, run_dir=run_dir, show_progress=False).summary
    assert calls == [], "a re-evaluated trial was trained again"
    assert rerun["reevaluation"]["trials"] == r["trials"]
    # One more seed: only the new seed trains, for each of the two trials.
    more = {**task, "search": {**task["search"], "reevaluate": {"top": 2, "seeds": 2}}}
    again = api.search(more, run_dir=run_dir, show_progress=False).summary
    assert len(calls) == 2
    assert all(len(x["values"]) == 3 for x in again["reevaluation"]["trials"])


def _study_with(
    values: dict[int, float], means: dict[int, float], directions: list[str] | None = None
) -> optuna.Study:
    study = optuna.create_study(directions=directions or ["maximize"])
    dist = {"family": CategoricalDistribution(["resnet"])}
    for number, value in sorted(values.items()):
        vals = [value] + ([1000.0 - number] if directions and len(directions) > 1 else [])
        study.add_trial(
            create_trial(
                values=vals,
                params={"family": "resnet"},
                distributions=dist,
                user_attrs={"learned": True, "seed": number},
            )
        )
    for number, mean in means.items():
        study.set_user_attr(
            f"{ATTR_PREFIX}{number}",
            {
                "values": [values[number], 2 * mean - values[number]],
                "mean": mean,
                "std": 0.1,
                "seeds": [number, 99],
                "seconds": 1.0,
            },
        )
    return study


def test_best_trials_rank_by_the_seed_mean() -> None:
    # Trial 0 won on one lucky seed; its mean over seeds falls below trial 1's.
    study = _study_with({0: 0.90, 1: 0.85, 2: 0.80}, {0: 0.78, 1: 0.84})
    assert [t.number for t in best_trials(study, 3)] == [1, 2, 0]
    assert [t.number for t in best_trials(study, 3, by_mean=False)] == [0, 1, 2]
    assert best_trials(study, 1)[0].user_attrs["proxy_mean"] == 0.84
    assert "proxy_mean" not in study.trials[1].user_attrs  # the stored trial is left alone


def test_pareto_front_orders_by_the_seed_mean() -> None:
    # Trial 2 is on the front by its measured values either way; only its order changes.
    study = _study_with({0: 0.90, 1: 0.85, 2: 0.80}, {0: 0.70}, directions=["maximize", "minimize"])
    assert [t.number for t in pareto_front(study)] == [1, 2, 0]
    assert [t.number for t in pareto_front(study, by_mean=False)] == [0, 1, 2]
