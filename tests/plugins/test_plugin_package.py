"""A third-party package adds a space, a metric term, a layout and a loss through entry points, and a search uses
all four; a broken entry point fails in one line that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mednas.config import load_task
from mednas.data import LAYOUTS, list_layouts
from mednas.errors import ConfigError, PluginError
from mednas.metrics import METRICS, list_metrics
from mednas.spaces import SPACES, list_spaces
from mednas.testing import check_layout, check_loss, check_metric_term, check_space, tiny_task
from mednas.train import LOSSES, list_losses
from tests.plugins.conftest import install

GROUPS = {
    "mednas.spaces": SPACES,
    "mednas.metrics": METRICS,
    "mednas.layouts": LAYOUTS,
    "mednas.losses": LOSSES,
}


def _tsv(datalist: Path, folder: Path) -> Path:
    """The tiny classification dataset as the plugin layout's sheet: image, class name, patient."""
    entries = json.loads(datalist.read_text())["training"]
    names = ["normal", "finding"]
    path = folder / "cases.tsv"
    path.write_text(
        "".join(f"{datalist.parent / e['image']}\t{names[e['label']]}\t{e['patient']}\n" for e in entries)
    )
    return path


def _plugin_task(datalist: Path, folder: Path) -> dict:
    return tiny_task(
        "classification",
        datalist,
        data={"format": "tinyplug_tsv", "path": str(_tsv(datalist, folder))},
        objective={"metric": "tinyplug_accuracy", "cutoff": 0.4, "bootstrap": {"resamples": 50}},
        search={"spaces": ["tinyplug"], "space_options": {"tinyplug": {"widths": [2, 4]}}, "n_trials": 2},
        training={"loss": "tinyplug_smooth_ce"},
    )


def test_the_four_groups_load_the_plugin(tinyplug: Path) -> None:
    assert "tinyplug" in list_spaces()
    assert "tinyplug_accuracy" in list_metrics(problem="classification")
    assert "tinyplug_tsv" in list_layouts()
    assert list_losses(problem="classification") == ["ce", "focal", "tinyplug_smooth_ce", "weighted_ce"]
    import tinyplug as plugin

    assert SPACES.get("tinyplug") is plugin.TinyResNetSpace and plugin.TinyResNetSpace.name == "tinyplug"
    assert METRICS.get("tinyplug_accuracy") is plugin.CutoffAccuracy
    assert LAYOUTS.get("tinyplug_tsv") is plugin.TsvLayout
    assert LOSSES.get("tinyplug_smooth_ce") is plugin.SmoothCrossEntropy


def test_without_the_package_the_names_are_unknown(plugin_site: Path) -> None:
    assert "tinyplug" not in list_spaces() and "tinyplug_accuracy" not in list_metrics()
    with pytest.raises(ConfigError, match=r": objective: unknown metric 'tinyplug_accuracy'"):
        load_task(tiny_task("classification", "x.json", objective={"metric": "tinyplug_accuracy"}))


def test_the_plugin_passes_every_conformance_check(
    tinyplug: Path, tiny_cls_datalist: Path, tmp_path: Path
) -> None:
    check_space("tinyplug", spatial_dims=(2,), seeds=(0, 1))
    check_metric_term("tinyplug_accuracy", options={"cutoff": 0.4})
    check_layout("tinyplug_tsv", _plugin_task(tiny_cls_datalist, tmp_path))
    check_loss("tinyplug_smooth_ce")


def test_task_validation_knows_plugin_names_and_their_keys(
    tinyplug: Path, tiny_cls_datalist: Path, tmp_path: Path
) -> None:
    task = _plugin_task(tiny_cls_datalist, tmp_path)
    cfg = load_task(task)
    assert cfg.objective.terms[0].cutoff == 0.4 and cfg.objective.name == "tinyplug_accuracy"
    assert cfg.data.format == "tinyplug_tsv" and cfg.training.loss == "tinyplug_smooth_ce"
    bad_key = {**task, "objective": {"metric": "tinyplug_accuracy", "cutof": 0.4}}
    with pytest.raises(ConfigError, match=r"objective.cutof: unknown key \(did you mean 'cutoff'\?\)"):
        load_task(bad_key)
    typo = {**task, "training": {**task["training"], "loss": "tinyplug_smooth_c"}}
    with pytest.raises(
        ConfigError,
        match=r"training.loss: 'tinyplug_smooth_c' is not one of .*did you mean 'tinyplug_smooth_ce'",
    ):
        load_task(typo)
    with pytest.raises(ConfigError, match=r"search.losses: 'tinyplug_smooth_ce' is not a segmentation loss"):
        load_task(tiny_task("segmentation", "x.json", search={"losses": ["dice", "tinyplug_smooth_ce"]}))


@pytest.mark.timeout(600)
def test_a_search_uses_the_plugin_space_metric_layout_and_loss(
    tinyplug: Path, tiny_cls_datalist: Path, tmp_path: Path
) -> None:
    from mednas import api

    result = api.search(
        _plugin_task(tiny_cls_datalist, tmp_path), run_dir=tmp_path / "run", show_progress=False, threads=1
    )
    trials = sorted((tmp_path / "run" / "trials").iterdir())
    records = [json.loads((t / "metrics.json").read_text()) for t in trials]
    assert [r["state"] for r in records] == ["complete", "complete"]
    for trial, rec in zip(trials, records):
        assert json.loads((trial / "spec.json").read_text())["family"] == "tinyplug"
        assert rec["loss"] == "tinyplug_smooth_ce"
        accuracy = rec["metrics"]["tinyplug_accuracy"]
        assert (
            0.0 <= accuracy["value"] <= 1.0
            and accuracy["ci95"][0] <= accuracy["value"] <= accuracy["ci95"][1]
        )
        assert rec["metrics"]["objective"]["value"] == pytest.approx(accuracy["value"])
    assert result.summary["best"]["values"][0] == max(r["metrics"]["objective"]["value"] for r in records)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_a_broken_entry_point_fails_in_one_line_naming_it(plugin_site: Path, group: str) -> None:
    install(plugin_site, "brokenplug", f"[{group}]\nbroken = brokenplug_missing.module:Thing\n")
    registry = GROUPS[group]
    with pytest.raises(PluginError) as err:
        registry.get("broken")
    message = str(err.value)
    assert "\n" not in message
    assert f"plugin 'broken' (entry point 'brokenplug_missing.module:Thing' in group '{group}')" in message
    assert "ModuleNotFoundError" in message
    assert "broken" not in registry.names()  # listing the others still works


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_an_entry_point_that_is_not_a_plugin_class_is_refused(plugin_site: Path, group: str) -> None:
    (plugin_site / "notaplugin.py").write_text("def thing():\n    return 1\n")
    install(plugin_site, "notaplugin", f"[{group}]\nnotaplugin = notaplugin:thing\n")
    with pytest.raises(
        PluginError, match=r"cannot be used: TypeError: <function thing .*> is not a subclass of mednas\."
    ):
        GROUPS[group].get("notaplugin")


def test_a_task_naming_a_broken_plugin_says_which_entry_point(plugin_site: Path) -> None:
    install(plugin_site, "brokenplug", "[mednas.metrics]\nbroken_metric = brokenplug_missing:Thing\n")
    with pytest.raises(
        PluginError, match=r"metric term plugin 'broken_metric' \(entry point 'brokenplug_missing:Thing'"
    ):
        load_task(tiny_task("classification", "x.json", objective={"metric": "broken_metric"}))
