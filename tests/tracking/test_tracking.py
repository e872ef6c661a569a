"""MLflow tracking (issue 19, item 3): one run per trial, retrained candidate and export; never a stop, never a secret.

One tracked tiny search (a local ``file:`` store, read back with ``mlflow.search_runs``), retrained for one epoch and
exported, and a one-trial search against a closed port.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mednas import api
from mednas.config import config_hash, load_task
from mednas.errors import ConfigError
from mednas.rundir import TrialRecord
from mednas.testing import tiny_task
from mednas.tracking import INSTALL_HINT, Tracker, normalize_uri, parse_uri, public_uri, trial_payload

CLOSED_PORT = "http://mednas:s3cret-pw@127.0.0.1:9"


def _runs(store: Path, experiment: str, step: str | None = "search"):  # noqa: ANN202
    import mlflow

    mlflow.set_tracking_uri(store.as_uri())
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs if step is None else runs[runs["tags.mednas.step"] == step]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, tiny_cls_datalist: Path) -> SimpleNamespace:
    """A 2-trial tiny search tracked to a local file store (``file:`` URI, relative to the working directory)."""
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        task = tiny_task("classification", tiny_cls_datalist, search={"n_trials": 2})
        result = api.search(task, run_dir=root / "run", show_progress=False, mlflow="file:./mlruns")
    return SimpleNamespace(root=root, run_dir=root / "run", store=root / "mlruns", summary=result.summary)


@pytest.fixture(autouse=True)
def _mednas_logs_reach_caplog(monkeypatch: pytest.MonkeyPatch) -> None:
    # `mednas.cli.main`, run in-process by other tests, stops the mednas logger's propagation to the root.
    monkeypatch.setattr(logging.getLogger("mednas"), "propagate", True)


@pytest.fixture
def file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow >= 3.7 reads a file store only when asked to (mednas asks for its own calls only).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def test_one_run_per_trial_with_params_metrics_and_history(
    tracked: SimpleNamespace, file_store: None
) -> None:
    runs = _runs(tracked.store, "tiny-cls")
    trials = sorted((tracked.run_dir / "trials").iterdir())
    assert len(trials) == 2 and len(runs) == 2
    import mlflow

    client = mlflow.MlflowClient(tracked.store.as_uri())
    by_trial = {int(row["tags.mednas.trial"]): row for _, row in runs.iterrows()}
    for tdir in trials:
        record = json.loads((tdir / "metrics.json").read_text())
        row = by_trial[record["trial"]]
        assert row["tags.mlflow.runName"] == f"trial-{record['trial']}"
        assert row["tags.mednas.state"] == record["state"]
        assert row["tags.mednas.run_dir"] == "run" and row["tags.mednas.study"] == "tiny-cls"
        assert row["params.spec_hash"] == record["spec_hash"] and row["params.family"] == record["family"]
        assert row["params.seed"] == str(record["seed"]) and row["params.loss"] == record["loss"]
        assert row["metrics.params"] == record["params"]
        history = client.get_metric_history(row["run_id"], "val_objective")
        assert [(m.step, m.value) for m in history] == [(h["epoch"], h["value"]) for h in record["history"]]
        if record["state"] == "complete":
            assert row["metrics.objective"] == pytest.approx(record["objective"]["value"])
            low, high = record["metrics"]["auroc"]["ci95"]
            assert (row["metrics.auroc_ci95_low"], row["metrics.auroc_ci95_high"]) == pytest.approx(
                (low, high)
            )
    # An Optuna parameter of each trial is there under its own name.
    assert any(name.startswith("params.resnet.") or name.startswith("params.efficientnet.") for name in runs)


def test_the_run_records_its_store_absolute_and_keeps_its_hash(tracked: SimpleNamespace) -> None:
    resolved = yaml.safe_load((tracked.run_dir / "resolved.yaml").read_text())
    assert resolved["tracking"] == {"mlflow": tracked.store.resolve().as_uri(), "experiment": None}
    # Tracking changes nothing that is searched: it is not part of the run's identity.
    plain = load_task(tiny_task("classification", resolved["data"]["path"]))
    tracked_task = load_task(
        {**tiny_task("classification", resolved["data"]["path"]), "tracking": {"mlflow": "x"}}
    )
    assert config_hash(plain) == config_hash(tracked_task) == tracked.summary["study"]["config_hash"]


def test_tracking_section_rejects_unknown_keys() -> None:
    task = {**tiny_task("classification", "x.json"), "tracking": {"mlfow": "file:./mlruns"}}
    with pytest.raises(ConfigError, match=r"tracking\.mlfow: unknown key \(did you mean 'mlflow'\?\)"):
        load_task(task)


def test_unreachable_server_warns_once_and_the_search_completes(
    tmp_path: Path, tiny_cls_datalist: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mednas.study import _runner

    opened: list[float] = []
    real_open = _runner.open_tracker

    def timed_open(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        try:
            return real_open(*args, **kwargs)
        finally:
            opened.append(time.perf_counter() - t0)

    monkeypatch.setattr(_runner, "open_tracker", timed_open)
    task = tiny_task("classification", tiny_cls_datalist, search={"n_trials": 1})
    with caplog.at_level(logging.INFO, logger="mednas"):
        result = api.search(task, run_dir=tmp_path / "run", show_progress=False, mlflow=CLOSED_PORT)
    assert result.summary["stopped"]["reason"] == "n_trials reached"
    warnings = [r.getMessage() for r in caplog.records if "MLflow tracking off" in r.getMessage()]
    assert warnings == ["mednas: MLflow tracking off: http://127.0.0.1:9: Connection refused"]
    assert opened and max(opened) < 10.0, opened  # one short check, no retries with back-off
    # The credentials in the URI appear nowhere: not in a log line, not in the run directory.
    assert "s3cret" not in caplog.text
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".log", ".txt"):
            assert "s3cret" not in path.read_text(errors="replace"), path
    resolved = yaml.safe_load((tmp_path / "run" / "resolved.yaml").read_text())
    assert resolved["tracking"]["mlflow"] == "http://127.0.0.1:9"


def test_missing_mlflow_is_a_one_line_error_before_anything_is_written(
    tmp_path: Path, tiny_cls_datalist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    task = tiny_task("classification", tiny_cls_datalist)
    with pytest.raises(ConfigError) as info:
        api.search(task, run_dir=tmp_path / "run", show_progress=False, mlflow="http://u:s3cret@host:5000")
    message = str(info.value)
    assert 'pip install "mednas[tracking]"' in message and "\n" not in message and "s3cret" not in message
    assert not (tmp_path / "run").exists()


def test_a_tracked_run_without_mlflow_later_is_a_warning(
    tracked: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mednas.tracking import open_run_tracker

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with caplog.at_level(logging.WARNING, logger="mednas"):
        tracker = open_run_tracker(tracked.run_dir)  # the URI the search recorded, not asked for here
    assert not tracker.enabled
    assert "MLflow tracking off: file://" in caplog.text and 'pip install "mednas[tracking]"' in caplog.text
    with pytest.raises(ConfigError, match=re.escape(INSTALL_HINT)):
        open_run_tracker(tracked.run_dir, "file:./elsewhere")  # asked for: an error


def test_a_failure_while_logging_warns_once_then_tracking_stops(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    class BrokenClient:
        def create_run(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append(1)
            raise ConnectionError("[Errno 111] Connection refused")

    tracker = Tracker("http://u:s3cret@127.0.0.1:9")
    tracker._client = BrokenClient()
    trial = SimpleNamespace(number=3, params={}, state=None, datetime_start=None, datetime_complete=None)
    with caplog.at_level(logging.WARNING, logger="mednas"):
        tracker.log_trial(None, trial)  # raises inside: never out of the trial
        tracker.log_trial(None, trial)
    assert calls == [1] and not tracker.enabled
    assert [r.getMessage() for r in caplog.records] == [
        "mednas: MLflow tracking off: http://127.0.0.1:9: Connection refused"
    ]
    assert tracker.worker_env() == {"MEDNAS_MLFLOW_URI": ""}  # workers do not try again


def test_uris_keep_credentials_out_and_local_stores_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_uri("file:./mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert normalize_uri("mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert normalize_uri("sqlite:///m.db") == f"sqlite:///{(tmp_path / 'm.db').resolve()}"
    assert normalize_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    parsed = parse_uri("https://ana%40lab:p%3Ass@mlflow.example.org:8443/x")
    assert parsed == ("https://mlflow.example.org:8443/x", "ana@lab", "p:ss")
    assert public_uri("https://ana:pw@mlflow.example.org") == "https://mlflow.example.org"
    assert public_uri("postgresql://ana:pw@db/mlflow") == "postgresql://ana:***@db/mlflow"


def test_a_trial_reason_is_logged_without_paths() -> None:
    record = TrialRecord(trial=5, state="failed", reason="DataError: /data/smith_john/ct.nii.gz: truncated")
    trial = SimpleNamespace(number=5, params={"a" * 300: "v" * 7000, "odd key!": 1}, state=None)
    trial.datetime_start = trial.datetime_complete = None
    run = trial_payload(record, trial, {"mednas.task": "t"})
    assert run.tags["mednas.reason"] == "DataError: <path>: truncated" and run.status == "FAILED"
    assert {len(k) for k in run.params} == {250, 8} and "odd key_" in run.params
    assert max(len(v) for v in run.params.values()) == 6000  # MLflow's limit on a parameter value


def test_retrain_and_export_are_logged(tracked: SimpleNamespace, file_store: None, tmp_path: Path) -> None:
    # No --mlflow: both steps use the URI the search recorded.
    result = api.retrain(tracked.run_dir, top_k=1, epochs=1, seeds=1, show_progress=False)
    candidate = result.candidates[0]
    retrained = _runs(tracked.store, "tiny-cls", step="retrain")
    assert len(retrained) == 1
    row = retrained.iloc[0]
    assert row["tags.mlflow.runName"] == f"retrain-{candidate['trial']}" and row["params.seed"] == str(
        candidate["seed"]
    )
    test_objective = candidate["test"]["metrics"]["objective"]
    assert row["metrics.test_objective"] == pytest.approx(test_objective["value"])
    assert row["metrics.test_objective_ci95_low"] == pytest.approx(test_objective["ci95"][0])
    assert row["metrics.val_objective"] == pytest.approx(candidate["val"]["objective"])
    api.export(tracked.run_dir, tmp_path / "bundle", formats="torchscript")
    exported = _runs(tracked.store, "tiny-cls", step="export")
    assert len(exported) == 1 and exported.iloc[0]["tags.mlflow.runName"] == "export"
    import mlflow

    client = mlflow.MlflowClient(tracked.store.as_uri())
    files = {f.path for f in client.list_artifacts(exported.iloc[0]["run_id"], "bundle/configs")}
    assert "bundle/configs/metadata.json" in files


@pytest.mark.slow
def test_workers_log_the_trials_they_run(
    tmp_path: Path, tiny_cls_datalist: Path, file_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    monkeypatch.chdir(tmp_path)
    task = tiny_task("classification", tiny_cls_datalist, search={"n_trials": 4, "pruner": {"name": "none"}})
    api.search(task, run_dir=tmp_path / "run", show_progress=False, workers=2, mlflow="file:./mlruns")
    study = optuna.load_study(study_name="tiny-cls", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    runs = _runs(tmp_path / "mlruns", "tiny-cls")
    assert sorted(int(n) for n in runs["tags.mednas.trial"]) == [t.number for t in study.trials]
    # Each process opened the store (the worker from the URI its parent handed it) and logs the trials it ran.
    log = (tmp_path / "run" / "search.log").read_text()
    assert log.count("tracking in MLflow: file://") == 2, log


class _FakeServer(BaseHTTPRequestHandler):
    """The few REST endpoints of an MLflow tracking server that logging a run calls; records every request."""

    seen: list[tuple[str, str | None, dict]] = []
    RUN = {"run_id": "r1", "experiment_id": "7", "status": "RUNNING", "lifecycle_stage": "active"}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self._answer()

    def _answer(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        endpoint = self.path.split("?")[0].rsplit("/mlflow/", 1)[-1]
        self.seen.append((endpoint, self.headers.get("Authorization"), body))
        code, reply = {
            "experiments/get-by-name": (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "none"}),
            "experiments/create": (200, {"experiment_id": "7"}),
            "runs/create": (200, {"run": {"info": self.RUN, "data": {}}}),
            "runs/get": (200, {"run": {"info": self.RUN, "data": {}}}),
        }.get(endpoint, (200, {}))
        data = json.dumps(reply).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_tracking_server_gets_the_run_with_the_credentials_as_basic_auth(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mednas.tracking import open_tracker

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tracker = open_tracker(f"http://ana:s3cret@127.0.0.1:{server.server_address[1]}", "exp")
        record = TrialRecord(
            trial=1, state="complete", history=[{"epoch": 1, "train_loss": 0.5, "value": 0.7}]
        )
        trial = SimpleNamespace(
            number=1, params={"family": "unet"}, datetime_start=None, datetime_complete=None
        )
        tracker.log_trial(record, trial)
    finally:
        server.shutdown()
    assert tracker.enabled
    calls = {endpoint: (auth, body) for endpoint, auth, body in _FakeServer.seen}
    assert set(calls) >= {"experiments/create", "runs/create", "runs/log-batch", "runs/update"}
    assert {auth for auth, _ in calls.values()} == {"Basic " + base64.b64encode(b"ana:s3cret").decode()}
    assert calls["runs/create"][1]["run_name"] == "trial-1"
    metrics = calls["runs/log-batch"][1]["metrics"]
    assert [(int(m["step"]), m["value"]) for m in metrics if m["key"] == "val_objective"] == [(1, 0.7)]
    assert calls["runs/update"][1]["status"] == "FINISHED"
    assert "View run" not in capsys.readouterr().out  # mednas's stdout stays its own
