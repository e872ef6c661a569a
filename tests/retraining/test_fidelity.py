"""Proxy fidelity from hand-made scores: known tau, rho and regret, undefined cases, non-learners, the warning."""

from __future__ import annotations

import pytest

from mednas.retraining import LOW_TAU, SEED_NOISE_TAU, proxy_fidelity, rank_agreement, top1_regret


def test_known_tau_rho_and_regret() -> None:
    # Proxy order 10, 11, 12, 13; full order 11, 10, 12, 13: one discordant pair of six.
    rec = proxy_fidelity([10, 11, 12, 13], [0.9, 0.8, 0.7, 0.6], [0.80, 0.85, 0.70, 0.50], [True] * 4)
    assert rec["kendall_tau"] == pytest.approx(4 / 6)
    assert rec["spearman"] == pytest.approx(0.8)
    assert rec["top1_regret"] == pytest.approx(0.05)  # proxy picked 10 (0.80), the best at full is 11 (0.85)
    assert rec["top1_trial"] == 10 and rec["best_full_trial"] == 11
    assert rec["n"] == 4 and rec["n_not_learning"] == 0 and rec["warning"] is None and rec["reason"] is None
    # Not measured (one seed): said so, with no figure from another experiment.
    assert rec["ceiling"]["kendall_tau"] is None and rec["ceiling"]["measured"] is False
    assert "not measured on this run" in rec["ceiling"]["note"] and "0.73" not in rec["ceiling"]["note"]
    assert "steps of 0.33" in rec["note"]  # four candidates: one swapped pair moves tau by 1/3


def test_perfect_agreement_has_no_regret() -> None:
    rec = proxy_fidelity([1, 2, 3], [0.9, 0.5, 0.1], [0.7, 0.6, 0.2], [True] * 3)
    assert rec["kendall_tau"] == pytest.approx(1.0) and rec["spearman"] == pytest.approx(1.0)
    assert rec["top1_regret"] == 0.0


@pytest.mark.parametrize("k", [1, 2])
def test_fewer_than_three_candidates_give_null_tau_with_reason(k: int) -> None:
    rec = proxy_fidelity(list(range(k)), [0.9, 0.8][:k], [0.7, 0.8][:k], [True] * k)
    assert rec["kendall_tau"] is None and rec["spearman"] is None
    assert "at least 3" in rec["reason"]
    assert rec["warning"] is None
    if k == 2:
        assert rec["top1_regret"] == pytest.approx(0.1)


def test_non_learners_are_counted_not_ranked() -> None:
    # Trial 3 never learned: with it the ranking would be perfect; without it three candidates disagree fully.
    rec = proxy_fidelity([0, 1, 2, 3], [0.9, 0.8, 0.7, 0.1], [0.5, 0.6, 0.7, 0.0], [True, True, True, False])
    assert rec["n"] == 3 and rec["n_not_learning"] == 1 and rec["not_learning"] == [3]
    assert rec["kendall_tau"] == pytest.approx(-1.0)


def test_low_tau_warns_with_advice_and_ceiling() -> None:
    rec = proxy_fidelity([0, 1, 2, 3], [0.9, 0.8, 0.7, 0.6], [0.5, 0.6, 0.7, 0.8], [True] * 4)
    assert rec["kendall_tau"] == pytest.approx(-1.0) and rec["kendall_tau"] < LOW_TAU
    w = rec["warning"]
    assert w and "low proxy fidelity" in w and "proxy.epochs" in w and "calibrate-proxy" in w
    assert "not measured on this run" in w and f"{SEED_NOISE_TAU[0]:.2f}" not in w


def test_failed_retraining_is_left_out() -> None:
    rec = proxy_fidelity([0, 1, 2, 3], [0.9, 0.8, 0.7, 0.6], [None, 0.8, 0.7, 0.6], [True] * 4)
    assert rec["n"] == 3 and rec["n_retrained"] == 3 and rec["kendall_tau"] == pytest.approx(1.0)
    assert rec["top1_trial"] == 1  # the proxy's first choice that was retrained


def test_ties_and_direction() -> None:
    tau, _, rho, reason = rank_agreement([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    assert tau is None and rho is None and "tied" in reason
    # Minimised objective: lower is better on both sides, so the same order agrees.
    rec = proxy_fidelity([0, 1, 2], [0.1, 0.2, 0.3], [1.0, 2.0, 3.5], [True] * 3, maximize=False)
    assert rec["kendall_tau"] == pytest.approx(1.0) and rec["top1_regret"] == 0.0
    assert top1_regret([3.0, 1.0], 0, maximize=False) == pytest.approx(2.0)


def test_tau_of_one_half_is_not_below_one_half_and_tied_seeds_are_named() -> None:
    # scipy gives tau-b 0.49999999999999994 for these ties: that is 0.5, not a low-fidelity warning.
    half = proxy_fidelity([0, 1, 2], [0.2, 0.2, 0.1], [0.2, 0.1, 0.1], [True] * 3)
    assert half["kendall_tau"] == pytest.approx(0.5) and half["warning"] is None
    # Two seeds, but the first seed's scores are all tied: the ceiling is undefined and says why in seed terms.
    rec = proxy_fidelity(
        [0, 1, 2, 3],
        [0.9, 0.8, 0.7, 0.6],
        None,
        [True] * 4,
        full_seeds=[[0.9, 0.5], [0.9, 0.7], [0.9, 0.8], [0.9, 0.6]],
    )
    assert rec["seeds"] == 2 and rec["seed_ceiling_tau"] is None
    assert "one seed's full-fidelity scores are all tied" in rec["seed_ceiling_reason"]
    assert (
        rec["warning"]
        and "could not be measured on this run" in rec["warning"]
        and "--seeds 2" not in rec["warning"]
    )
