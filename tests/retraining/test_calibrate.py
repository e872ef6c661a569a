"""Proxy calibration: tau and cost per setting, the recommendation, re-use of finished trainings, no test reads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mednas import api
from mednas.errors import ConfigError
from mednas.retraining import ProxySetting, parse_grid
from mednas.retraining._calibrate import _assemble, _Candidate, _recommend, _run_key
from mednas.testing import tiny_task


def test_parse_grid() -> None:
    assert parse_grid("0.25x2, 0.5X5") == [(0.25, 2), (0.5, 5)]
    assert parse_grid(["0.25x2", "1x1"]) == [(0.25, 2), (1.0, 1)]
    for bad in ("0.25", "2x2", "0.5x0", ""):
        with pytest.raises(ConfigError, match="--grid"):
            parse_grid(bad)


def _fake_calibration(full: list[float], proxies: dict[ProxySetting, tuple[list[float], float]]) -> dict:
    specs = [
        _Candidate(
            SimpleNamespace(hash=f"h{i}", family="resnet", target="monai.networks.nets.ResNet", kwargs={})
        )
        for i in range(len(full))
    ]
    runs = {
        _run_key(s, None): {"value": v, "learned": True, "seconds": 10.0, "epochs": 3}
        for s, v in zip(specs, full)
    }
    for setting, (values, seconds) in proxies.items():
        for s, v in zip(specs, values):
            runs[_run_key(s, setting)] = {
                "value": v,
                "learned": True,
                "seconds": seconds / len(specs),
                "epochs": 1,
            }
    task = SimpleNamespace(name="t", search=SimpleNamespace(seed=0))
    plan = SimpleNamespace(splits={"train": [1], "val": [1], "test": [1]})
    fidelity = SimpleNamespace(
        to_dict=lambda: {"shape": [32, 32], "patch": None, "max_epochs": 3, "patience": 8}
    )
    return _assemble(task, plan, specs, list(proxies), fidelity, runs, 0.6, {})  # type: ignore[arg-type]


def test_tau_cost_and_the_cheapest_good_setting() -> None:
    cheap, better, best = (
        ProxySetting((8, 8), 1, 0.25),
        ProxySetting((16, 16), 2, 0.5),
        ProxySetting((16, 16), 5, 0.5),
    )
    full = [0.9, 0.8, 0.7, 0.6]
    rec = _fake_calibration(
        full,
        {
            cheap: ([0.6, 0.7, 0.8, 0.9], 4.0),  # reversed: tau -1
            better: ([0.9, 0.7, 0.8, 0.6], 8.0),  # one swap of six pairs: tau 2/3
            best: ([0.9, 0.8, 0.7, 0.6], 20.0),  # exact: tau 1
        },
    )
    rows = {r["setting"]: r for r in rec["settings"]}
    assert rows[cheap.label]["kendall_tau"] == pytest.approx(-1.0)
    assert rows[cheap.label]["top1_regret"] == pytest.approx(0.3)
    assert rows[better.label]["kendall_tau"] == pytest.approx(2 / 3)
    assert rows[best.label]["kendall_tau"] == pytest.approx(1.0) and rows[best.label]["top1_regret"] == 0.0
    assert rows[better.label]["cost_fraction"] == pytest.approx(8.0 / 40.0)
    assert rec["full"]["seconds"] == pytest.approx(40.0)
    # The cheapest setting that reaches tau 0.6 wins, not the most faithful one.
    assert (
        rec["recommendation"]["setting"] == better.label
        and "proxy.epochs=2" in rec["recommendation"]["message"]
    )


def test_recommendation_when_no_setting_is_good_enough() -> None:
    rows = [
        {
            "setting": "a",
            "kendall_tau": 0.2,
            "seconds": 1.0,
            "cost_fraction": 0.1,
            "shape": [8],
            "epochs": 1,
            "scale": 0.25,
            "reason": None,
        },
        {
            "setting": "b",
            "kendall_tau": 0.4,
            "seconds": 2.0,
            "cost_fraction": 0.2,
            "shape": [16],
            "epochs": 2,
            "scale": 0.5,
            "reason": None,
        },
    ]
    rec = _recommend(rows, 0.6, complete=True)
    assert (
        rec["setting"] is None and rec["best_tau_setting"] == "b" and "no setting reached" in rec["message"]
    )
    assert _recommend(rows, 0.3, complete=True)["setting"] == "b"
    assert _recommend(rows, 0.6, complete=False)["setting"] is None


def test_non_learners_at_the_proxy_rank_last() -> None:
    s = ProxySetting((8, 8), 1, 0.25)
    specs_full = [0.9, 0.8, 0.7]
    rec = _fake_calibration(specs_full, {s: ([0.5, 0.95, 0.4], 3.0)})
    # Mark spec 1 as a proxy non-learner with a high but meaningless score: ranked last, tau becomes 1/3.
    runs = rec["runs"]
    runs[_run_key(SimpleNamespace(hash="h1"), s)]["learned"] = False
    specs = [
        _Candidate(SimpleNamespace(hash=f"h{i}", family="resnet", target="x", kwargs={})) for i in range(3)
    ]
    fidelity = SimpleNamespace(
        to_dict=lambda: {"shape": [32, 32], "patch": None, "max_epochs": 3, "patience": 8}
    )
    again = _assemble(
        SimpleNamespace(name="t", search=SimpleNamespace(seed=0)),
        SimpleNamespace(splits={}),
        specs,
        [s],
        fidelity,
        runs,
        0.6,
        {},
    )  # type: ignore[arg-type]
    row = again["settings"][0]
    assert row["n_not_learning"] == 1 and row["kendall_tau"] == pytest.approx(1 / 3)


def test_seeds_give_the_ceiling_seed_means_top3_and_intervals() -> None:
    from scipy import stats

    setting = ProxySetting((8, 8), 2, 0.25)
    specs = [
        _Candidate(SimpleNamespace(hash=f"h{i}", family="resnet", target="x", kwargs={})) for i in range(5)
    ]
    full = [[0.9, 0.8, 0.7, 0.6, 0.5], [0.85, 0.82, 0.6, 0.65, 0.5]]  # seeds disagree on one pair of ten
    proxy = [[0.5, 0.9, 0.7, 0.6, 0.4], [0.6, 0.8, 0.7, 0.6, 0.4]]
    runs = {}
    for k in range(2):
        for s, v in zip(specs, full[k]):
            runs[_run_key(s, None, k)] = {"value": v, "learned": True, "seconds": 10.0, "epochs": 3}
        for s, v in zip(specs, proxy[k]):
            runs[_run_key(s, setting, k)] = {"value": v, "learned": True, "seconds": 1.0, "epochs": 2}
    fidelity = SimpleNamespace(
        to_dict=lambda: {"shape": [32, 32], "patch": None, "max_epochs": 3, "patience": 8}
    )
    rec = _assemble(
        SimpleNamespace(name="t", search=SimpleNamespace(seed=0)),
        SimpleNamespace(splits={}),
        specs,  # type: ignore[arg-type]
        [setting],
        fidelity,
        runs,
        0.6,
        {},
        full_seeds=2,
        proxy_seeds=2,
    )
    assert rec["seed_ceiling"]["kendall_tau"] == pytest.approx(0.8)
    lo, hi = rec["seed_ceiling"]["interval"]
    assert -1.0 <= lo <= 0.8 <= hi <= 1.0
    row = rec["settings"][0]
    # Proxy seed means 0.55, 0.85, 0.7, 0.6, 0.4 against full seed means 0.875, 0.81, 0.65, 0.625, 0.5: 3 of 10 pairs swapped.
    assert row["kendall_tau"] == pytest.approx(0.4) and row["kendall_tau_interval"] is not None
    assert row["top1_regret"] == pytest.approx(0.875 - 0.81)
    assert row["top3_contains_best"] is False  # the proxy's top three are specs 1, 2, 3; the best is spec 0
    assert row["proxy_self_tau"] == pytest.approx(stats.kendalltau(proxy[0], proxy[1]).statistic)
    assert row["cost_fraction"] == pytest.approx(1.0 / 10.0)  # per training: 1 s proxy against 10 s full
    assert rec["full"]["trainings"] == 10 and rec["full"]["seed_sd"] is not None
    assert row["regret_in_seed_sd"] == pytest.approx(row["top1_regret"] / rec["full"]["seed_sd"])


def test_calibration_on_tiny_data_never_reads_the_test_split(
    tmp_path: Path, tiny_cls_datalist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mednas.data._plan as plan_mod
    import mednas.retraining._calibrate as cal_mod

    loaded: list[str] = []
    real = plan_mod.load_arrays

    def spy(cases, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        loaded.extend(c.key for c in cases)
        return real(cases, *a, **kw)

    monkeypatch.setattr(plan_mod, "load_arrays", spy)
    task = tiny_task("classification", tiny_cls_datalist, training={"epochs": 2})
    result = api.calibrate_proxy(task, run_dir=tmp_path / "cal", n_specs=3, grid="0.5x1", show_progress=False)
    test_keys = set(json.loads((tmp_path / "cal" / "splits.json").read_text())["test"])
    assert test_keys and loaded and not test_keys & set(loaded)

    rec = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert rec["settings"] == result.record["settings"]
    assert rec["data"]["test_read"] is False and len(rec["specs"]) == 3
    assert [r["current"] for r in rec["settings"]] == [
        False,
        True,
    ]  # 16x16 x 1 epoch, then the task's 16x16 x 2
    for row in rec["settings"]:
        assert {
            "kendall_tau",
            "spearman",
            "top1_regret",
            "seconds",
            "cost_fraction",
            "n_not_learning",
        } <= set(row)
        assert row["n_done"] == 3 and row["seconds"] > 0
    assert len(rec["full"]["values"]) == 3 and rec["full"]["seconds"] > 0
    assert rec["recommendation"]["message"]

    # A re-run with the same settings re-uses every recorded training.
    real_fit = cal_mod.train_candidate

    def no_training(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a recorded training was repeated")

    monkeypatch.setattr(cal_mod, "train_candidate", no_training)
    again = api.calibrate_proxy(task, run_dir=tmp_path / "cal", n_specs=3, grid="0.5x1", show_progress=False)
    assert again.record["settings"] == rec["settings"]

    # Other full-fidelity settings: the proxy trainings are re-used, only full fidelity is trained again.
    trained: list[int] = []

    def count_full(task, spec, train, val, fidelity, **kw):  # noqa: ANN001, ANN003, ANN202
        assert fidelity.kind == "full", "a proxy setting was trained again"
        trained.append(fidelity.epochs)
        return real_fit(task, spec, train, val, fidelity, **kw)

    monkeypatch.setattr(cal_mod, "train_candidate", count_full)
    third = api.calibrate_proxy(
        task, run_dir=tmp_path / "cal", n_specs=3, grid="0.5x1", full_epochs=1, show_progress=False
    )
    assert trained == [1, 1, 1] and third.record["full"]["max_epochs"] == 1

    # Another configuration in the same directory is refused before anything is trained.
    from mednas.errors import RunDirError

    other = tiny_task("classification", tiny_cls_datalist, training={"epochs": 3})
    with pytest.raises(RunDirError, match="different configuration"):
        api.calibrate_proxy(other, run_dir=tmp_path / "cal", n_specs=3, grid="0.5x1", show_progress=False)
