"""``mednas report``: every part of the page from a real tiny run, graceful gaps, privacy, and the numbers behind it."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from mednas.reporting import ReportResult, write_report
from tests.reporting.conftest import LiveRun, read_meta


def _fake_retrain(run: Path, *, tests: bool = True) -> list[int]:
    """Give a copied run the records `mednas retrain` writes (weights and predictions of the proxy trials reused)."""
    from mednas.retraining import proxy_fidelity

    summary = json.loads((run / "summary.json").read_text())
    recs = {int(d.name): json.loads((d / "metrics.json").read_text()) for d in (run / "trials").iterdir()}
    chosen = sorted(
        (
            n
            for n, r in recs.items()
            if r["state"] == "complete"
            and (run / "trials" / str(n) / "model.pt").exists()
            and "duplicate_of" not in r
        ),
        key=lambda n: -recs[n]["values"][0],
    )[:3]
    full = []
    for i, n in enumerate(chosen):
        src, dst = run / "trials" / str(n), run / "retrain" / str(n)
        dst.mkdir(parents=True)
        for name in ("spec.json", "model.pt"):
            shutil.copy(src / name, dst / name)
        preds = json.loads((src / "predictions.json").read_text())
        (dst / "predictions.json").write_text(json.dumps(preds))
        if tests:
            (dst / "predictions_test.json").write_text(json.dumps(dict(preds, split="test")))
        r = recs[n]
        value = r["values"][0] - 0.05 * i
        full.append(value)
        (dst / "metrics.json").write_text(
            json.dumps(
                {
                    "trial": n,
                    "state": "complete",
                    "reason": None,
                    "shape": summary["proxy"]["shape"],
                    "patch": None,
                    "divisor": r.get("divisor"),
                    "params": r["params"],
                    "family": r["family"],
                    "proxy": {"value": r["values"][0]},
                    "val": {"objective": value, "metrics": r["metrics"]},
                    "operating_point": r.get("operating_point"),
                    "test": {"metrics": r["metrics"]},
                    "best_epoch": 2,
                    "epochs": 3,
                    "seconds": 1.5,
                    "learned": True,
                }
            )
        )
    summary["retrain"] = {
        "top_k": 3,
        "candidates": chosen,
        "best": chosen[0],
        "shape": summary["proxy"]["shape"],
    }
    summary["proxy_fidelity"] = proxy_fidelity(
        chosen, [recs[n]["values"][0] for n in chosen], full, [True] * len(chosen)
    )
    (run / "summary.json").write_text(json.dumps(summary))
    return chosen


def test_report_of_a_classification_search(cls_report: ReportResult, tiny_cls_datalist: Path) -> None:
    result = cls_report
    out = result.path
    assert result.errors == []
    assert {"history", "roc", "pr", "calibration", "confusion-0"} <= set(result.figures)
    assert result.images >= 2 and result.size_bytes == out.stat().st_size
    assert any("not retrained" in n for n in result.notes)
    text = out.read_text()
    meta = read_meta(text)
    assert meta["figures"] == result.figures and meta["errors"] == []
    assert text.count('class="mednas-figure"') == len(result.figures)
    assert "SIMULATED DATA" in text and "Not retrained yet" in text and "0.73-0.84" not in text
    assert "AUROC" in text and "95% CI" in text  # intervals in legends and tables
    # Offline: plotly.js is inline, nothing is fetched from the network.
    assert "Plotly.newPlot" in text and len(text) > 3_000_000
    outside_scripts = re.sub(
        r"<script[^>]*>.*?</script>", "", text, flags=re.S
    )  # plotly.js itself holds URLs
    assert not re.search(r"""(src|href)=["']?https?:""", outside_scripts)
    assert not re.search(r"""<script[^>]+src=["']?(https?:)?//""", text)
    # No file names: neither the data folder nor any image name; cases only as salted keys.
    assert str(tiny_cls_datalist.parent) not in text and "img_0" not in text and "toy-0" not in text
    assert re.search(r"c-[0-9a-f]{12}", text)
    assert "optuna-dashboard sqlite:///" in text


def test_report_shows_retraining_and_fidelity(live_cls_run: LiveRun, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(live_cls_run.run_dir, run)
    chosen = _fake_retrain(run)
    result = write_report(run)
    assert result.errors == [] and result.path == run / "report.html"
    assert "fidelity" in result.figures
    assert not any("not retrained" in n for n in result.notes)
    text = result.path.read_text()
    assert f"Retrained at full fidelity: trial {chosen[0]}" in text
    assert "retrained" in text and f"retrained {chosen[0]}, test" in text  # retrain predictions become curves
    # The seed-noise ceiling: this run's own (not measured here), never a figure from another experiment.
    assert "0.73-0.84" not in text and "not measured on this run" in text
    if len(chosen) >= 3:
        assert "Kendall tau" in text
    assert (
        f"Retrained trial {chosen[0]} (full fidelity)" in text
    )  # the pictures come from the retrained weights
    # The curves come from the model export ships: the retrained one's validation and test, not the proxy trial.
    assert {"confusion-0", "confusion-1"} <= set(result.figures) and "confusion-2" not in result.figures
    assert "search, trial" not in text.split("Sources:", 1)[1].split("</p>", 1)[0]


def test_report_curves_fall_back_to_the_proxy_labelled(live_cls_run: LiveRun, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(live_cls_run.run_dir, run)
    chosen = _fake_retrain(run)
    for path in (run / "retrain" / str(chosen[0])).glob("predictions*.json"):
        path.unlink()
    result = write_report(run)
    text = result.path.read_text()
    sources = text.split("Sources:", 1)[1].split("</p>", 1)[0]
    assert "the proxy trial, not retrained" in sources
    assert any("curves show the proxy trial" in n for n in result.notes)


def test_report_shows_test_row_per_class_and_calibration(live_cls_run: LiveRun, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(live_cls_run.run_dir, run)
    chosen = _fake_retrain(run)
    path = run / "retrain" / str(chosen[0]) / "metrics.json"
    rec = json.loads(path.read_text())
    ci = {"ci95": [0.1, 0.9], "n_resamples": 10}
    # Known test figures: the row must show them as recorded (computed at the validation threshold), nothing else.
    rec["test"]["metrics"] = {
        "objective": {"value": 0.4321, **ci},
        "accuracy": {"value": 0.6543, **ci},
        "balanced_accuracy": {"value": 0.5432, **ci},
    }
    rec["test"]["per_class"] = {
        "normal": {"recall": {"value": 0.7777, **ci}, "ppv": {"value": 0.6666, **ci}, "n": 9},
        "finding": {"recall": {"value": 0.5555, **ci}, "ppv": {"value": 0.4444, **ci}, "n": 4},
    }
    rec["calibration"] = {
        "temperature": 2.5,
        "ece_before": 0.31,
        "ece_after": 0.12,
        "nll_before": 0.9,
        "nll_after": 0.6,
        "n_cases": 13,
        "warnings": ["extreme threshold 0.02 (outside 0.05-0.95): tail"],
    }
    path.write_text(json.dumps(rec))
    text = write_report(run).path.read_text()
    assert "test (once, at the validation threshold)" in text and "0.432" in text and "0.654" in text
    assert "balanced_accuracy" in text and "0.778" in text and "0.444" in text and "PPV / precision" in text
    assert "temperature <strong>2.500</strong>" in text and "ECE 0.310 before, 0.120 after" in text
    assert "Warning: extreme threshold 0.02" in text and "mednas evaluate" in text


def test_report_degrades_for_an_older_run(live_cls_run: LiveRun, tmp_path: Path) -> None:
    run = tmp_path / "old"
    shutil.copytree(live_cls_run.run_dir, run)
    for path in [*run.glob("trials/*/predictions.json"), *run.glob("trials/*/model.pt"), run / "study.db"]:
        path.unlink()
    result = write_report(run, plotlyjs="beside")
    assert result.errors == []
    assert result.figures == ["history"]
    notes = " ".join(result.notes)
    assert "predictions are missing" in notes and "No kept weights" in notes and "storage" in notes
    text = result.path.read_text()
    scripts = list(run.glob("plotly-*.min.js"))
    assert len(scripts) == 1 and f'src="{scripts[0].name}"' in text and len(text) < 1_000_000


def _section(text: str, sid: str) -> str:
    found = re.search(rf"<section id='{sid}'>.*?</section>", text, re.S)
    assert found, sid
    return found.group(0)


def test_report_reads_trials_from_their_records(live_cls_run: LiveRun, tmp_path: Path) -> None:
    # The storage keeps only what the search needs; what each trial did comes from trials/<n>/metrics.json.
    from tests.reporting.test_status import strip_record_only_attrs

    copy = tmp_path / "run"
    shutil.copytree(live_cls_run.run_dir, copy)
    strip_record_only_attrs(copy)
    before = write_report(live_cls_run.run_dir, tmp_path / "before.html", images=False)
    after = write_report(copy, tmp_path / "after.html", images=False)
    assert after.errors == [] and after.figures == before.figures and after.notes == before.notes
    old, new = before.path.read_text(), after.path.read_text()
    for sid in ("overview", "search", "performance", "trials"):
        assert _section(new, sid) == _section(old, sid), sid


def test_reporting_opens_run_records_only_through_rundir() -> None:
    # resolved.yaml, summary.json and */metrics.json are read by mednas.rundir.RunDir alone; reporting code names
    # them only in docstrings, comments and text built from mednas.rundir's constants.
    import ast

    import mednas.reporting

    found = []
    for path in sorted(Path(mednas.reporting.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        found += [
            f"{path.name}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and any(name in node.value for name in ("metrics.json", "summary.json", "resolved.yaml"))
        ]
    assert found == []


def test_report_of_a_segmentation_search(seg_run: Path, seg_report: ReportResult) -> None:
    result = seg_report
    assert result.errors == [] and result.path == seg_run / "report.html"
    assert "history" in result.figures and "dice" in result.figures
    preds = json.loads(next(seg_run.glob("trials/*/predictions.json")).read_text())
    if preds["lesions"]:
        assert "lesions-0" in result.figures
    assert result.images >= 5  # axial image, truth, prediction, coronal, sagittal of at least one case
    text = result.path.read_text()
    assert "axial: ground truth" in text and "sagittal: both" in text and "data:image/png;base64," in text


def test_report_command(live_cls_run: LiveRun, tmp_path: Path) -> None:
    from mednas.cli import main

    root = logging.getLogger("mednas")
    saved = (list(root.handlers), root.level, root.propagate)
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            code = main(
                ["report", str(live_cls_run.run_dir), "--out", str(tmp_path / "r.html"), "--no-images"]
            )
    finally:
        root.handlers[:], root.level, root.propagate = saved
    assert code == 0
    assert "mednas report:" in buf.getvalue() and "left out: case pictures" in buf.getvalue()
    assert (tmp_path / "r.html").exists()


# ------------------------------------------------------------------------------------------ the numbers


def test_roc_and_pr_bands_match_sklearn() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from mednas.reporting._curves import pr_band, roc_band

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40, int), np.ones(20, int)]
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    patients = [f"p{i // 2}" for i in range(60)]
    roc = roc_band(y, s, patients, n_resamples=100)
    assert roc.area == pytest.approx(roc_auc_score(y, s))
    assert roc.area_ci[0] < roc.area < roc.area_ci[1]
    assert np.all(roc.low <= roc.high + 1e-12) and roc.low[-1] == pytest.approx(1.0)
    pr = pr_band(y, s, patients, n_resamples=100)
    assert pr.area == pytest.approx(average_precision_score(y, s))
    assert pr.extra["prevalence"] == pytest.approx(1 / 3)


def test_calibration_confusion_and_wilson() -> None:
    from mednas.reporting._curves import calibration_bins, confusion_at_threshold, wilson_interval

    y = [0, 0, 1, 1, 1]
    s = [0.05, 0.15, 0.55, 0.95, 0.91]
    bins = calibration_bins(y, s)
    assert [b["n"] for b in bins] == [1, 1, 1, 2] and bins[-1]["observed"] == 1.0
    assert confusion_at_threshold(y, s, 0.5).tolist() == [[2, 0], [0, 3]]
    assert confusion_at_threshold(y, s, 0.6).tolist() == [[2, 0], [1, 2]]
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35


def test_lesion_sensitivity_by_size() -> None:
    from mednas.reporting._curves import lesion_sensitivity_by_size

    record = {
        "patients": ["a", "b", "c"],
        "per_case": [{"lesions": 2}, {"lesions": 0}, {"lesions": 2}],
        "lesions": [
            {"size_voxels": 5, "detected": False},
            {"size_voxels": 300, "detected": True},
            {"size_voxels": 8, "detected": True},
            {"size_voxels": 250, "detected": True},
        ],
    }
    bins = lesion_sensitivity_by_size(record, n_bins=2, n_resamples=50)
    assert [b["n_lesions"] for b in bins] == [2, 2]
    assert [b["sensitivity"] for b in bins] == [0.5, 1.0]
    assert all(0.0 <= b["ci95"][0] <= b["sensitivity"] <= b["ci95"][1] <= 1.0 for b in bins)


def test_png_encoder_round_trips() -> None:
    import base64

    from PIL import Image

    from mednas.reporting._images import overlay, png_data_uri

    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[1:4, 2:6] = 200
    truth = np.zeros((5, 7), bool)
    truth[1:4, 2:5] = True
    pic = overlay(rgb, truth=truth)
    uri = png_data_uri(pic)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))
    assert decoded.shape == (5, 7, 3) and np.array_equal(decoded, pic)
    assert tuple(pic[1, 2]) == (46, 204, 64)  # the outline takes the ground-truth colour
