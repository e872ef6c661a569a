"""The run directory's latency cache (``cache/latency.json``) and the trial record's ``latency`` (issue 18)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from mednas.rundir import TRIAL_RECORD_SCHEMA, RunDir, TrialRecord

KEY = {
    "spec_hash": "36175e485826bd80",
    "runtime": "onnxruntime",
    "precision": "fp32",
    "threads": 1,
    "batch": 1,
    "shape": [1, 64, 64],
    "device": "cpu",
    "hardware": "AMD EPYC 7B13",
}
FIGURE = {
    "median_ms": 0.41,
    "p90_ms": 0.52,
    "runtime": "onnxruntime",
    "precision": "fp32",
    "threads": 1,
    "batch": 1,
    "shape": [1, 64, 64],
    "device": "cpu",
    "hardware": "AMD EPYC 7B13",
    "repeats": 20,
    "warmup": 3,
    "seconds": 0.2,
}


def test_a_figure_is_found_under_exactly_its_key(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.cached_latency(KEY) is None
    rd.cache_latency(KEY, FIGURE)
    assert rd.latency_cache == tmp_path / "cache" / "latency.json"
    assert (
        RunDir(tmp_path).cached_latency(dict(reversed(list(KEY.items())))) == FIGURE
    )  # key order is irrelevant
    for name, other in (
        ("hardware", "Intel Xeon"),
        ("threads", 4),
        ("precision", "int8"),
        ("runtime", "torch"),
        ("shape", [1, 32, 32]),
        ("spec_hash", "0"),
        ("batch", 2),
        ("device", "cuda"),
    ):
        assert rd.cached_latency({**KEY, name: other}) is None, name


def test_a_damaged_cache_is_measured_again_and_rewritten(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.latency_cache.parent.mkdir(parents=True)
    rd.latency_cache.write_text("{not json")
    assert rd.cached_latency(KEY) is None
    rd.cache_latency(KEY, FIGURE)
    assert rd.cached_latency(KEY) == FIGURE


def _put(root: str, prefix: str, n: int) -> None:
    rd = RunDir(root)
    for i in range(n):
        rd.cache_latency({**KEY, "spec_hash": f"{prefix}{i}"}, {**FIGURE, "median_ms": float(i)})


def test_workers_sharing_the_run_directory_lose_no_figure(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_put, args=(str(tmp_path), p, 30)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rd = RunDir(tmp_path)
    for prefix in "ab":
        for i in range(30):
            assert rd.cached_latency({**KEY, "spec_hash": f"{prefix}{i}"}) == {
                **FIGURE,
                "median_ms": float(i),
            }
    assert not list(rd.latency_cache.parent.glob("*.tmp*"))


def test_the_trial_record_keeps_the_whole_figure_and_reads_older_records() -> None:
    rec = TrialRecord(trial=3, latency_ms=0.41, latency={**FIGURE, "cached": True})
    data = rec.to_json()
    assert data["schema_version"] == TRIAL_RECORD_SCHEMA
    assert TrialRecord.from_json(data).latency == {**FIGURE, "cached": True}
    # A record written before runtimes could be chosen has the median only (eager torch, the trial's device).
    old = TrialRecord.from_json({"trial": 2, "state": "complete", "latency_ms": 1.5})
    assert old.latency_ms == 1.5 and old.latency is None
    assert "latency" not in old.to_json()
