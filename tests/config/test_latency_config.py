"""``objective.latency`` (runtime, precision, threads, batch, warm-up, device) and deployment targets (issue 18)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from mednas.config import config_hash, load_task, shipped_presets, shipped_targets, task_to_dict
from mednas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TASK_FILE = ROOT / "tasks" / "demo-xray-nodule.yaml"
LATENCY_CONSTRAINT = "objective.constraints=[{metric: latency_ms, max: 20}]"


def test_latency_defaults_time_on_onnxruntime_one_thread() -> None:
    latency = load_task(TASK_FILE).objective.latency
    assert (latency.runtime, latency.precision, latency.threads, latency.batch) == (
        "onnxruntime",
        "fp32",
        1,
        1,
    )
    assert (latency.warmup, latency.repeats, latency.device, latency.input_shape) == (3, 20, None, None)
    assert latency.measured_on("cuda") == "cpu"  # ONNX Runtime runs on the CPU whatever the trial's device
    torch_latency = load_task(TASK_FILE, overrides=["objective.latency.runtime=torch"]).objective.latency
    assert torch_latency.measured_on("cuda:1") == "cuda:1"  # unset: the trial's device


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["objective.latency.runtime=torch", "objective.latency.precision=int8"],
            "objective.latency.precision: int8 is timed on ONNX Runtime only",
        ),
        (
            ["objective.latency.runtime=torchscript", "objective.latency.precision=int8"],
            "objective.latency.precision: int8 is timed on ONNX Runtime only",
        ),
        (["objective.latency.device=cuda"], "objective.latency.device: runtime onnxruntime runs on the CPU"),
        (["objective.latency.device=gpu"], "objective.latency.device"),
        (["objective.latency.runtime=onnx"], "objective.latency.runtime: 'onnx' is not one of onnxruntime"),
        (["objective.latency.precision=fp16"], "objective.latency.precision"),
        (["objective.latency.threads=0"], "objective.latency.threads"),
        (["objective.latency.batch=0"], "objective.latency.batch"),
        (["objective.latency.warmup=-1"], "objective.latency.warmup"),
        (["objective.latency.thread=2"], "objective.latency.thread: unknown key (did you mean 'threads'?)"),
    ],
)
def test_bad_latency_settings_are_one_line_errors_naming_the_key(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_task(TASK_FILE, overrides=overrides)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_int8_and_gpu_figures_are_accepted_where_the_runtime_has_them() -> None:
    int8 = load_task(TASK_FILE, overrides=["objective.latency.precision=int8"]).objective.latency
    assert (int8.runtime, int8.precision) == ("onnxruntime", "int8")
    gpu = load_task(
        TASK_FILE, overrides=["objective.latency.runtime=torchscript", "objective.latency.device=cuda:0"]
    ).objective.latency
    assert gpu.measured_on("cpu") == "cuda:0"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("cpu-1thread", ("onnxruntime", "fp32", 1, 1, "cpu")),
        ("cpu-1thread-int8", ("onnxruntime", "int8", 1, 1, "cpu")),
        ("cpu-4thread", ("onnxruntime", "fp32", 4, 1, "cpu")),
        ("gpu", ("torch", "fp32", 1, 1, "cuda")),
    ],
)
def test_a_shipped_target_sets_the_latency_settings_and_is_recorded(target: str, expected: tuple) -> None:
    task = load_task(TASK_FILE, overrides=[f"target={target}"])
    latency = task.objective.latency
    assert (latency.runtime, latency.precision, latency.threads, latency.batch, latency.device) == expected
    resolved = task_to_dict(task)
    assert resolved["target"] == target
    assert resolved["objective"]["latency"]["runtime"] == expected[0]


def test_the_tasks_own_latency_keys_win_over_the_target(tmp_path: Path) -> None:
    data = yaml.safe_load(TASK_FILE.read_text())
    data["target"] = "cpu-4thread"
    data["objective"]["latency"] = {"threads": 2, "repeats": 5}
    data["data"]["path"] = None
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    latency = load_task(path).objective.latency
    assert (latency.runtime, latency.threads, latency.repeats) == ("onnxruntime", 2, 5)
    # --set wins too, and a target named on the command line applies under the task's keys.
    latency = load_task(
        path, overrides=["target=cpu-1thread-int8", "objective.latency.batch=4"]
    ).objective.latency
    assert (latency.precision, latency.threads, latency.batch) == ("int8", 2, 4)


def test_an_unknown_target_lists_the_known_ones_in_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_task(TASK_FILE, overrides=["target=cpu-1-thread"])
    msg = str(info.value)
    assert "\n" not in msg
    assert "target: unknown deployment target 'cpu-1-thread' (did you mean 'cpu-1thread'?)" in msg
    assert msg.endswith("known: cpu-1thread, cpu-1thread-int8, cpu-4thread, gpu")
    with pytest.raises(ConfigError, match="target: unknown deployment target '../gpu'"):
        load_task(TASK_FILE, overrides=["target=../gpu"])


def test_a_projects_own_target_is_found_and_may_set_only_latency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "targets").mkdir(parents=True)
    own = tmp_path / "configs" / "targets" / "edge-box.yaml"
    own.write_text("objective:\n  latency: {runtime: torchscript, threads: 2}\n")
    latency = load_task(TASK_FILE, overrides=["target=edge-box"]).objective.latency
    assert (latency.runtime, latency.threads) == ("torchscript", 2)
    own.write_text("objective:\n  latency: {threads: 2}\nsearch: {n_trials: 1}\n")
    with pytest.raises(
        ConfigError, match="edge-box.yaml: a deployment target sets objective.latency and nothing"
    ):
        load_task(TASK_FILE, overrides=["target=edge-box"])


def test_targets_ship_as_package_data_apart_from_the_presets() -> None:
    assert sorted(shipped_targets()) == ["cpu-1thread", "cpu-1thread-int8", "cpu-4thread", "gpu"]
    assert not any(name.startswith("targets/") for name in shipped_presets())
    package_data = _package_data()
    for path in shipped_targets().values():
        rel = path.relative_to(ROOT / "mednas").as_posix()
        assert any(Path(rel).match(pattern) for pattern in package_data), rel


def _package_data() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "mednas"
    ]


# ------------------------------------------------------------------------------------------- the run's identity


def _old_hash(old: dict) -> str:
    """The config hash mednas computed before issue 18 (its volatile and added keys) of a resolved task."""
    from mednas.config._load import _ADDED_KEYS, _VOLATILE_KEYS

    data = json.loads(json.dumps(old))
    for dotted in [k for k in _VOLATILE_KEYS if k != "target"]:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    for dotted, default in _ADDED_KEYS.items():
        if dotted.startswith("objective.latency."):
            continue
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        if last in node and node[last] == default:
            del node[last]
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _as_before(task_overrides: list[str], latency: dict) -> dict:
    """A resolved task as mednas wrote it before the latency runtimes existed."""
    old = task_to_dict(load_task(TASK_FILE, overrides=task_overrides))
    old.pop("target")
    old["objective"]["latency"] = latency
    return old


@pytest.mark.parametrize(
    ("overrides", "latency"),
    [
        ([], {"input_shape": None, "repeats": 10}),
        ([], {"input_shape": [64, 64], "repeats": 5}),
        ([LATENCY_CONSTRAINT], {"input_shape": None, "repeats": 10}),
        ([LATENCY_CONSTRAINT, "objective.secondary=[latency_ms]"], {"input_shape": [96, 96], "repeats": 30}),
    ],
)
def test_an_older_run_keeps_eager_torch_and_its_config_hash(
    tmp_path: Path, overrides: list[str], latency: dict
) -> None:
    """A run made before objective.latency.runtime existed, loaded from its run directory, still times in eager
    torch on the trial's device, and its config hash is the one its study recorded (it can be continued)."""
    from mednas.io._atomic import write_yaml
    from mednas.rundir import RunDir

    old = _as_before(overrides, latency)
    write_yaml(tmp_path / "resolved.yaml", old)
    task = RunDir(tmp_path).task()
    assert task.objective.latency.runtime == "torch"
    assert task.objective.latency.measured_on("cuda") == "cuda"
    assert task.objective.latency.repeats == latency["repeats"]
    assert config_hash(task) == _old_hash(old)


def test_a_task_that_times_nothing_continues_an_older_run_with_the_same_file() -> None:
    """Latency settings do not change what is searched when no constraint or objective names latency_ms."""
    old = _as_before([], {"input_shape": None, "repeats": 10})
    assert config_hash(load_task(TASK_FILE)) == _old_hash(old)
    # ... but a task that does time candidates searches something else on the new runtime.
    measured = _as_before([LATENCY_CONSTRAINT], {"input_shape": None, "repeats": 10})
    assert config_hash(load_task(TASK_FILE, overrides=[LATENCY_CONSTRAINT])) != _old_hash(measured)
    same_as_before = load_task(
        TASK_FILE,
        overrides=[LATENCY_CONSTRAINT, "objective.latency.runtime=torch", "objective.latency.repeats=10"],
    )
    assert config_hash(same_as_before) == _old_hash(measured)


def test_latency_settings_belong_to_the_identity_of_a_search_that_times_candidates() -> None:
    base = load_task(TASK_FILE, overrides=[LATENCY_CONSTRAINT])
    for override in (
        "objective.latency.runtime=torchscript",
        "objective.latency.precision=int8",
        "objective.latency.threads=4",
        "objective.latency.batch=2",
        "objective.latency.warmup=1",
        "objective.latency.device=cpu",
    ):
        assert config_hash(load_task(TASK_FILE, overrides=[LATENCY_CONSTRAINT, override])) != config_hash(
            base
        ), override
    # The target's name is not: its settings are (the same settings written out are the same search).
    by_name = load_task(TASK_FILE, overrides=[LATENCY_CONSTRAINT, "target=cpu-4thread"])
    spelled_out = load_task(
        TASK_FILE,
        overrides=[LATENCY_CONSTRAINT, "objective.latency.threads=4", "objective.latency.device=cpu"],
    )
    assert config_hash(by_name) == config_hash(spelled_out) != config_hash(base)


def test_a_resolved_task_keeps_its_target_name_without_reading_the_target_again(tmp_path: Path) -> None:
    """The settings a target gave are in resolved.yaml: a run made with a project's own target (gone now, or beside
    the task file rather than the run) still loads, and keeps the name."""
    from mednas.io._atomic import write_yaml
    from mednas.rundir import RunDir

    resolved = task_to_dict(load_task(TASK_FILE, overrides=["target=cpu-4thread"]))
    resolved["target"] = "a-project-target"
    write_yaml(tmp_path / "resolved.yaml", resolved)
    task = RunDir(tmp_path).task()
    assert task.target == "a-project-target"
    assert task.objective.latency.threads == 4
    # A --workers child loads resolved.yaml as a task file: the same.
    assert load_task(tmp_path / "resolved.yaml").objective.latency.threads == 4
    # A task that leaves a key to the target needs the target's file.
    del resolved["objective"]["latency"]["device"]
    with pytest.raises(ConfigError, match="unknown deployment target 'a-project-target'"):
        load_task(resolved)
