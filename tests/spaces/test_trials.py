"""RandomTrial draws reproducibly within Optuna's rules; ReplayTrial plays the draws back and refuses misfits."""

from __future__ import annotations

import pytest

from mednas.testing import RandomTrial, ReplayTrial


def _draw(trial: RandomTrial | ReplayTrial) -> tuple[object, ...]:
    return (
        trial.suggest_int("a.depth", 1, 9),
        trial.suggest_int("a.stepped", 2, 10, step=4),
        trial.suggest_int("a.log_int", 1, 1000, log=True),
        trial.suggest_float("a.rate", 0.0, 0.5),
        trial.suggest_float("a.lr", 1e-5, 1e-1, log=True),
        trial.suggest_float("a.grid", 0.0, 1.0, step=0.25),
        trial.suggest_categorical("a.norm", ["instance", "batch", None]),
    )


def test_same_seed_same_draws_and_other_seeds_differ() -> None:
    first = _draw(RandomTrial(3))
    assert _draw(RandomTrial(3)) == first
    assert len({_draw(RandomTrial(seed)) for seed in range(8)}) > 1


def test_draws_respect_bounds_and_steps() -> None:
    for seed in range(50):
        depth, stepped, log_int, rate, lr, grid, norm = _draw(RandomTrial(seed))
        assert 1 <= depth <= 9 and stepped in (2, 6, 10) and 1 <= log_int <= 1000
        assert 0.0 <= rate <= 0.5 and 1e-5 <= lr <= 1e-1 and grid in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert norm in ("instance", "batch", None)


def test_every_value_of_a_small_range_is_reachable() -> None:
    assert {RandomTrial(seed).suggest_int("a.k", 1, 3) for seed in range(40)} == {1, 2, 3}


def test_params_are_recorded_and_a_repeated_name_returns_the_first_value() -> None:
    trial = RandomTrial(0)
    value = trial.suggest_int("a.depth", 1, 100)
    assert trial.suggest_int("a.depth", 1, 100) == value
    assert trial.params == {"a.depth": value}


def test_changing_a_distribution_kind_within_a_trial_fails_like_optuna() -> None:
    trial = RandomTrial(0)
    trial.suggest_int("a.depth", 1, 4)
    with pytest.raises(ValueError, match="different distribution kind"):
        trial.suggest_categorical("a.depth", [1, 2])


def test_replay_returns_the_recorded_draws() -> None:
    trial = RandomTrial(11)
    drawn = _draw(trial)
    replay = ReplayTrial(trial.params)
    assert _draw(replay) == drawn
    assert replay.params == trial.params and replay.unused == []


def test_replay_refuses_missing_and_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="no recorded value for parameter 'a.depth'"):
        ReplayTrial({}).suggest_int("a.depth", 1, 4)
    with pytest.raises(ValueError, match="outside"):
        ReplayTrial({"a.depth": 7}).suggest_int("a.depth", 1, 4)
    with pytest.raises(ValueError):
        ReplayTrial({"a.norm": "layer"}).suggest_categorical("a.norm", ["instance", "batch"])


def test_replay_reports_unused_recorded_names() -> None:
    replay = ReplayTrial({"a.depth": 2, "a.gone": 1})
    replay.suggest_int("a.depth", 1, 4)
    assert replay.unused == ["a.gone"]
