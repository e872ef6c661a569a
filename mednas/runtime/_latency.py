"""A network's inference latency on the runtime that will serve it (eager torch, TorchScript, ONNX Runtime).

The figure is the median and 90th percentile of ``repeats`` timed forward passes of one random float32 batch, after
``warmup`` untimed ones, on an explicit number of threads. ONNX Runtime runs on the CPU; an INT8 figure is taken on
a model quantized with random calibration inputs (the speed of an INT8 graph does not depend on the calibration
values; the accuracy does, which is why ``mednas export --quantize int8`` calibrates on training images).
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import MednasError

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "LatencyFigure",
    "cpu_name",
    "device_name",
    "measure_latency",
    "measure_onnx_file",
]

RUNTIMES = ("onnxruntime", "torchscript", "torch")
PRECISIONS = ("fp32", "int8")
_N_CALIBRATION = 4


@dataclass(frozen=True)
class LatencyFigure:
    """One latency measurement and where it was taken.

    Attributes:
        median_ms: Median time of one forward pass of the batch, in milliseconds.
        p90_ms: 90th percentile of the same passes.
        runtime: ``onnxruntime``, ``torchscript`` or ``torch`` (eager).
        precision: ``fp32`` or ``int8``.
        threads: Intra-op threads (CPU) the figure was taken with.
        batch: Images per forward pass.
        shape: Input shape, channels first, without the batch axis.
        device: ``cpu`` or ``cuda[:n]``.
        hardware: The CPU model (``/proc/cpuinfo``) or the GPU's name.
        repeats: Timed passes.
        warmup: Untimed passes before them.
        seconds: Wall time of the whole measurement (export, session start and passes).
    """

    median_ms: float
    p90_ms: float
    runtime: str
    precision: str
    threads: int
    batch: int
    shape: tuple[int, ...]
    device: str
    hardware: str
    repeats: int
    warmup: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyFigure:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["shape"] = tuple(fields.get("shape", ()))
        return cls(**fields)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split()) or "unknown CPU"
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str) -> str:
    """The hardware a figure on ``device`` is taken on: the GPU's name for ``cuda``, else the CPU model."""
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    return cpu_name()


def measure_latency(
    model: Any,
    input_shape: Sequence[int],
    *,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
    threads: int = 1,
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    device: str = "cpu",
) -> LatencyFigure:
    """Time ``model`` on ``runtime`` at ``precision`` with ``threads`` threads.

    Args:
        model: A ``torch.nn.Module`` (its weights need not be trained: the time does not depend on them).
        input_shape: Channels first, without the batch axis, e.g. ``(1, 128, 128)``.
        runtime: ``onnxruntime`` (CPU), ``torchscript`` (traced) or ``torch`` (eager).
        precision: ``fp32``, or ``int8`` (ONNX Runtime only).
        threads: Intra-op threads on the CPU (torch's are restored afterwards).
        batch: Images per forward pass.
        warmup: Untimed passes first.
        repeats: Timed passes.
        device: ``cpu`` or ``cuda[:n]`` (torch and TorchScript only).

    Raises:
        MednasError: An unknown runtime or precision, INT8 or CUDA asked of a runtime that has not got it, or ONNX
            Runtime missing (with the install command).
    """
    _check(runtime, precision, device, threads, batch, repeats)
    import torch

    t0 = time.perf_counter()
    shape = tuple(int(s) for s in input_shape)
    x = torch.randn((int(batch), *shape), generator=torch.Generator().manual_seed(0))
    model = model.eval()
    with _torch_threads(threads), tempfile.TemporaryDirectory(prefix="mednas-latency-") as tmp:
        run = _runner(model, x, runtime, precision, device, threads, Path(tmp))
        times = _time(run, warmup, repeats)
    return LatencyFigure(
        float(np.median(times)),
        float(np.percentile(times, 90)),
        runtime,
        precision,
        int(threads),
        int(batch),
        shape,
        device,
        device_name(device),
        int(repeats),
        int(warmup),
        time.perf_counter() - t0,
    )


def measure_onnx_file(
    path: str | Path,
    input_shape: Sequence[int],
    *,
    precision: str = "fp32",
    threads: int = 1,
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 20,
) -> LatencyFigure:
    """Time an ONNX file as it is (for example a bundle's ``model.onnx`` or ``model_int8.onnx``) in ONNX Runtime.

    Args:
        path: The ONNX model (input ``image``).
        input_shape: Channels first, without the batch axis.
        precision: What the file holds, for the record (``fp32`` or ``int8``); nothing is converted.
        threads, batch, warmup, repeats: As for :func:`measure_latency`.
    """
    _check("onnxruntime", precision, "cpu", threads, batch, repeats)
    from mednas.runtime._onnx import check_onnx_available, ort_session

    check_onnx_available("latency on onnxruntime", "")
    t0 = time.perf_counter()
    shape = tuple(int(s) for s in input_shape)
    x = np.random.default_rng(0).standard_normal((int(batch), *shape)).astype(np.float32)
    session = ort_session(path, threads)
    times = _time(lambda: session.run(None, {"image": x}), warmup, repeats)
    return LatencyFigure(
        float(np.median(times)),
        float(np.percentile(times, 90)),
        "onnxruntime",
        precision,
        int(threads),
        int(batch),
        shape,
        "cpu",
        cpu_name(),
        int(repeats),
        int(warmup),
        time.perf_counter() - t0,
    )


def _check(runtime: str, precision: str, device: str, threads: int, batch: int, repeats: int) -> None:
    if runtime not in RUNTIMES:
        raise MednasError(f"latency runtime {runtime!r}: choose from {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise MednasError(f"latency precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "int8" and runtime != "onnxruntime":
        raise MednasError(f"latency precision int8 needs runtime onnxruntime (got {runtime})")
    if runtime == "onnxruntime" and device != "cpu":
        raise MednasError(f"latency runtime onnxruntime runs on the CPU (got device {device})")
    if min(threads, batch, repeats) < 1:
        raise MednasError("latency threads, batch and repeats must be at least 1")


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _runner(
    model: Any, x: Any, runtime: str, precision: str, device: str, threads: int, tmp: Path
) -> Callable[[], Any]:
    """A no-argument callable that runs one forward pass (and waits for it on a GPU)."""
    import torch

    if runtime == "onnxruntime":
        return _onnx_runner(model, x, precision, threads, tmp)
    model = model.to(device)
    xd = x.to(device)
    if runtime == "torchscript":
        from mednas.runtime._onnx import quiet_exporters

        with torch.no_grad(), quiet_exporters():
            model = torch.jit.trace(model, xd, check_trace=False)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run() -> Any:
        with torch.inference_mode():
            out = model(xd)
        sync()
        return out

    return run


def _onnx_runner(model: Any, x: Any, precision: str, threads: int, tmp: Path) -> Callable[[], Any]:
    from mednas.runtime._onnx import check_onnx_available, ort_session, write_onnx
    from mednas.runtime._quantize import quantize_int8

    check_onnx_available("latency on onnxruntime", "objective.latency.runtime: torch")
    path = tmp / "model.onnx"
    write_onnx(model.cpu(), x[:1], path, fast=True)
    if precision == "int8":
        rng = np.random.default_rng(0)
        calibration = [
            rng.standard_normal(tuple(x[:1].shape)).astype(np.float32) for _ in range(_N_CALIBRATION)
        ]
        quantize_int8(path, tmp / "model.int8.onnx", calibration)
        path = tmp / "model.int8.onnx"
    session = ort_session(path, threads)
    feed = {"image": x.numpy()}
    return lambda: session.run(None, feed)


def _time(run: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    return times
