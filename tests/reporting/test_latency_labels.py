"""How the report and ``mednas status`` name what a latency figure was taken on (issue 18)."""

from __future__ import annotations

from mednas.reporting._status import format_status, latency_setting

SUMMARY_LATENCY = {
    "target": "cpu-1thread",
    "runtime": "onnxruntime",
    "precision": "fp32",
    "threads": 1,
    "batch": 1,
    "warmup": 3,
    "repeats": 20,
    "device": "cpu",
    "input_shape": None,
    "taken_on": [{"hardware": "AMD EPYC 7B13", "device": "cpu", "threads": 1, "figures": 9}],
    "figures": {"measured": 7, "cached": 2},
}


def test_the_setting_names_runtime_precision_threads_and_hardware() -> None:
    assert latency_setting(SUMMARY_LATENCY) == "onnxruntime fp32, 1 thread, AMD EPYC 7B13"
    four = {**SUMMARY_LATENCY, "threads": 4, "precision": "int8", "batch": 8, "taken_on": []}
    assert latency_setting(four) == "onnxruntime int8, 4 threads, batch 8"
    gpu = {
        **SUMMARY_LATENCY,
        "runtime": "torch",
        "device": "cuda",
        "taken_on": [{"hardware": "NVIDIA H200", "device": "cuda", "threads": 1, "figures": 3}],
    }
    assert latency_setting(gpu) == "torch fp32, cuda, NVIDIA H200"
    assert latency_setting(None) == "" and latency_setting({}) == ""


def test_status_prints_the_latency_line() -> None:
    status = {
        "task": "t",
        "run_dir": "runs/t",
        "study": "t",
        "storage": None,
        "objective": {"names": ["auroc", "latency_ms"], "directions": ["maximize", "minimize"]},
        "counts": dict.fromkeys(("complete", "pruned", "infeasible", "failed", "running"), 0),
        "target": 4,
        "finished": 0,
        "running": False,
        "stopped": {"reason": "n_trials reached", "at": "2026-12-02T10:00:00+00:00"},
        "elapsed_s": 1.0,
        "remaining_s": None,
        "best": None,
        "trials": [],
        "latency": SUMMARY_LATENCY,
    }
    lines = format_status(status).splitlines()
    assert (
        "  latency: onnxruntime fp32, 1 thread, AMD EPYC 7B13 (target cpu-1thread); 7 timed, 2 reused from "
        "the run's cache"
    ) in lines
    assert not any(
        line.startswith("  latency:") for line in format_status({**status, "latency": None}).splitlines()
    )


def test_the_pareto_figure_takes_axis_labels() -> None:
    from mednas.reporting._figures import pareto_figure

    points = [
        {"trial": 0, "values": [0.9, 3.0], "ci95": None, "family": "resnet"},
        {"trial": 1, "values": [0.8, 1.0], "ci95": None, "family": "resnet"},
    ]
    label = "latency_ms (onnxruntime fp32, 1 thread, AMD EPYC 7B13)"
    fig = pareto_figure(points, [0, 1], ["auroc", "latency_ms"], ["maximize", "minimize"], ["auroc", label])
    assert fig.layout.xaxis.title.text == f"{label}, lower is better"
    plain = pareto_figure(points, [0, 1], ["auroc", "latency_ms"], ["maximize", "minimize"])
    assert plain.layout.xaxis.title.text == "latency_ms, lower is better"
