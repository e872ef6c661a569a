"""``mednas export`` of a resolution-ladder search that was not retrained (issue 17).

A trial that climbed to the top rung ships the weights it was trained with at full resolution, labelled as a
full-resolution ladder candidate (one seed, no test evaluation), never as a proxy candidate; one that stopped
below the top rung ships its weights at the shape it stopped at, with the proxy flag. The ladder run is a copy of
the session's tiny classification search, its records rewritten to ladder form through ``RunDir``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mednas import api
from mednas.rundir import RunDir
from tests._bundles import schema_path

#: The tiny task's full shape is 32x32: rungs at scales 0.5, 0.75 and 1.0 (multiples of 8, at least 16).
SCALES = (0.5, 0.75, 1.0)


def ladder_run(source: Path, dest: Path, *, top: bool = True, survivors: int = 1) -> dict[str, Any]:
    """Copy a finished tiny flat search to ``dest`` and rewrite its records as a ladder search's.

    The best trial climbed every rung (``top``) or stopped one rung below the top; its ``model.pt`` is replaced
    by weights trained further at that rung's shape, and its ``spec.json`` is the spec as sampled at rung 0.
    The next ``survivors - 1`` complete trials climbed every rung too; every other trial was pruned at rung 0.
    Returns what was written: ``rungs``, ``best``, ``survivors``, ``shape``, ``compute``.
    """
    shutil.copytree(source, dest)
    rd = RunDir(dest)
    summary = rd.summary()
    full = [int(s) for s in summary["proxy"]["full_shape"]]
    rungs = [
        {
            "scale": sc,
            "shape": [max(16, 8 * round(s * sc / 8)) for s in full],
            "epochs": 2 if sc == 1.0 else 1,
        }
        for sc in SCALES
    ]
    n_train = int(summary["data"]["splits"]["train"])
    best = int(summary["best"]["trial"])
    records = rd.trials()
    others = [n for n, r in records.items() if n != best and r.state == "complete" and r.values]
    tops = {best, *others[: survivors - 1]}
    total = pruned = 0
    for n, rec in records.items():
        if rec.state not in ("complete", "pruned"):
            continue  # never trained: no rung to climb
        reached = (len(rungs) - 1 if top or n != best else len(rungs) - 2) if n in tops else 0
        done = _climb(rec, rungs[: reached + 1], n_train)
        rec.fidelity, rec.rungs, rec.rung_reached = "ladder", done, reached
        rec.shape = list(rungs[reached]["shape"])
        rec.compute = {
            "voxel_epochs": sum(r["voxel_epochs"] for r in done),
            "seconds": sum(r["seconds"] for r in done),
        }
        if n not in tops:
            rec.state, rec.reason = "pruned", "pruned at rung 0 (successive halving)"
            pruned += rec.compute["voxel_epochs"]
        total += rec.compute["voxel_epochs"]
        rd.write_trial(rec)
    _train_at(rd, best, tuple(rungs[-1 if top else -2]["shape"]))
    compute = {"voxel_epochs": total, "pruned_voxel_epochs": pruned, "pruned_share": pruned / total}
    ladder = {
        "rungs": [{k: r[k] for k in ("scale", "shape", "epochs")} for r in rungs],
        "eta": 3,
        "brackets": "successive_halving",
    }
    rd.update_summary(fidelity="ladder", ladder=ladder, compute=compute)
    shape = rungs[-1 if top else -2]["shape"]
    return {"rungs": rungs, "best": best, "survivors": sorted(tops), "shape": shape, "compute": compute}


def _climb(rec: Any, rungs: list[dict[str, Any]], n_train: int) -> list[dict[str, Any]]:
    """Per-rung records of a trial that completed ``rungs``, its value rising towards its recorded one."""
    final = float((rec.values or [0.5])[0] or 0.5)
    out = []
    for k, r in enumerate(rungs):
        voxels = math.prod(r["shape"])
        out.append(
            {
                "rung": k,
                "shape": r["shape"],
                "epochs": r["epochs"],
                "value": final - 0.05 * (len(rungs) - 1 - k),
                "best_epoch": r["epochs"],
                "seconds": 0.1 * (k + 1),
                "voxel_epochs": n_train * voxels * r["epochs"],
                "start": "fresh" if k == 0 else "carried",
            }
        )
    return out


def _train_at(rd: RunDir, n: int, shape: tuple[int, ...]) -> None:
    """Train trial ``n``'s network a few steps further on inputs of ``shape``; write those weights as its model.pt."""
    import torch

    from mednas.spec import ArchSpec, build

    spec = ArchSpec.from_dict(json.loads((rd.trial_dir(n) / "spec.json").read_text()))
    net = build(spec)
    net.load_state_dict(torch.load(rd.trial_dir(n) / "model.pt", weights_only=True))
    net.train()
    gen = torch.Generator().manual_seed(n)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        x = torch.randn(4, spec.in_channels, *shape, generator=gen)
        y = torch.randint(0, spec.out_channels, (4,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.save(net.state_dict(), rd.trial_dir(n) / "model.pt")


def _meta(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def _same_state(a: Path, b: Path) -> bool:
    import torch

    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_top_rung_ladder_candidate_ships_its_full_resolution_weights(
    cls_run: SimpleNamespace, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    made = ladder_run(cls_run.run_dir, run)
    best = made["best"]
    original = cls_run.run_dir / "trials" / str(best) / "model.pt"
    assert not _same_state(run / "trials" / str(best) / "model.pt", original)  # trained further at 32x32

    result = api.export(run, formats="torchscript", schema=schema_path())
    bundle = result.path
    if schema_path() is not None:
        assert result.checks["metadata"].startswith("MONAI schema")
    m = _meta(bundle)["mednas"]
    assert (m["source"], m["trial"]) == ("ladder", best)
    assert m["source_label"] == "full-resolution ladder candidate, not retrained"
    assert m["pipeline"]["shape"] == made["shape"] == cls_run.summary["proxy"]["full_shape"]
    assert m["pipeline"]["shape"] != cls_run.summary["proxy"]["shape"]
    # The weights shipped are the ones the trial left at the top rung, bit for bit.
    assert _same_state(bundle / "models" / "model.pt", run / "trials" / str(best) / "model.pt")
    # The spec is the one those weights ran with at full resolution (EfficientNet's image_size follows it).
    if m["spec"]["target"].endswith("EfficientNet"):
        assert m["spec"]["kwargs"]["image_size"] == max(made["shape"])
    assert result.source == "ladder" and not result.is_proxy

    card = (bundle / "docs" / "README.md").read_text()
    assert "PROXY CANDIDATE" not in card and "FULL-RESOLUTION LADDER CANDIDATE, NOT RETRAINED" in card
    assert "trained at full resolution (32x32) on the search's resolution ladder, one seed" in card
    assert "no test-split evaluation" in card and "mednas retrain" in card
    assert "Validation metrics at the top rung of the search's resolution ladder" in card
    assert "applied unchanged to the held-out test split" not in card
    summary = json.loads((run / "summary.json").read_text())
    assert summary["export"]["source"] == "ladder" and summary["export"]["trial"] == best
    assert summary["export"]["source_label"] == m["source_label"]


def test_ladder_trial_below_the_top_rung_is_a_proxy_candidate(
    cls_run: SimpleNamespace, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    made = ladder_run(cls_run.run_dir, run, top=False)
    result = api.export(run, formats="torchscript")
    m = _meta(result.path)["mednas"]
    assert (m["source"], m["source_label"]) == ("proxy", "proxy candidate, not retrained")
    assert m["pipeline"]["shape"] == made["shape"] == [24, 24]  # where it stopped, not the flat proxy's 16x16
    assert _same_state(result.path / "models" / "model.pt", run / "trials" / str(made["best"]) / "model.pt")
    card = (result.path / "docs" / "README.md").read_text()
    assert "PROXY CANDIDATE, NOT RETRAINED" in card and "LADDER CANDIDATE" not in card


def test_ladder_records_that_contradict_each_other_are_refused(
    cls_run: SimpleNamespace, tmp_path: Path
) -> None:
    from mednas.bundle import resolve_source
    from mednas.errors import RunDirError

    run = tmp_path / "run"
    made = ladder_run(cls_run.run_dir, run)
    rd = RunDir(run)
    rec = rd.trial(made["best"])
    assert rec is not None
    rec.shape = [16, 16]  # claims the top rung but records weights at rung 0's shape
    rd.write_trial(rec)
    with pytest.raises(RunDirError, match="completed the top rung"):
        resolve_source(run)
    rec.shape = None
    rd.write_trial(rec)
    with pytest.raises(RunDirError, match="has no shape"):
        resolve_source(run)


def test_ladder_export_metadata_says_what_the_weights_are(cls_run: SimpleNamespace, tmp_path: Path) -> None:
    run = tmp_path / "run"
    made = ladder_run(cls_run.run_dir, run)
    meta = _meta(api.export(run, formats="torchscript").path)
    m = meta["mednas"]
    for text in (meta["description"], meta["intended_use"]):
        assert "trained at full resolution on the search's resolution ladder, one seed" in text
        assert "NOT RETRAINED" in text and "PROXY" not in text
    assert "retrained at full fidelity" not in meta["description"]
    assert m["metrics_note"].startswith("validation metrics at the top rung of the resolution ladder")
    assert any(x.startswith("FULL-RESOLUTION LADDER CANDIDATE, NOT RETRAINED") for x in m["limitations"])
    assert not any("PROXY CANDIDATE" in x for x in m["limitations"])
    assert m["search"]["fidelity"] == "ladder" and m["search"]["compute"] == made["compute"]
    assert [r["shape"] for r in m["search"]["ladder"]["rungs"]] == [[16, 16], [24, 24], [32, 32]]
    card = (run / "bundle" / "docs" / "README.md").read_text()
    assert "- Resolution ladder: 16x16 (1 epoch) -> 24x24 (1 epoch) -> 32x32 (2 epochs); eta 3" in card
