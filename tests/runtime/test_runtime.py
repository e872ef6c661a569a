"""mednas.runtime: latency on each serving runtime, INT8 quantization, explicit threads (issue 18)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mednas.errors import MednasError
from mednas.runtime import (
    LatencyFigure,
    measure_latency,
    measure_onnx_file,
    ort_session,
    quantize_int8,
    write_onnx,
)

pytest.importorskip("onnxruntime")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 2),
    ).eval()


@pytest.mark.parametrize(
    ("runtime", "precision"),
    [("torch", "fp32"), ("torchscript", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")],
)
def test_each_runtime_gives_a_median_and_a_90th_percentile(runtime: str, precision: str) -> None:
    before = torch.get_num_threads()
    fig = measure_latency(
        _net(), (1, 16, 16), runtime=runtime, precision=precision, threads=2, repeats=5, warmup=1
    )
    assert torch.get_num_threads() == before  # the thread count asked for is undone afterwards
    assert 0 < fig.median_ms <= fig.p90_ms
    assert (fig.runtime, fig.precision, fig.threads, fig.batch) == (runtime, precision, 2, 1)
    assert fig.shape == (1, 16, 16) and fig.device == "cpu" and fig.hardware
    assert LatencyFigure.from_dict(fig.to_dict()) == fig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtime": "tensorrt"}, "latency runtime 'tensorrt': choose from onnxruntime, torchscript, torch"),
        ({"runtime": "torch", "precision": "int8"}, "latency precision int8 needs runtime onnxruntime"),
        ({"runtime": "onnxruntime", "device": "cuda"}, "onnxruntime runs on the CPU"),
        ({"precision": "fp16"}, "latency precision 'fp16': choose from fp32, int8"),
        ({"threads": 0}, "at least 1"),
    ],
)
def test_impossible_settings_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(MednasError, match=message.replace("(", r"\(")):
        measure_latency(_net(), (1, 8, 8), **kwargs)


def _calibration(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal((1, 1, 16, 16)).astype(np.float32) for _ in range(n)]


def test_int8_model_is_smaller_and_close_to_the_float_one(tmp_path, caplog) -> None:
    net = _net()
    src = tmp_path / "model.onnx"
    assert write_onnx(net, torch.zeros(1, 1, 16, 16), src, fast=True) == "torchscript"
    with caplog.at_level(logging.WARNING):
        info = quantize_int8(src, tmp_path / "int8.onnx", _calibration())
    # ONNX Runtime's quantizer chatter goes through the root logger; none of it reaches the user.
    assert not [r for r in caplog.records if "onnxruntime" in r.pathname]
    assert info.n_calibration == 4 and info.int8_bytes < info.float_bytes
    # About 4 for real networks; the graph's own overhead weighs on 5k weights.
    assert info.to_dict()["size_ratio"] > 1.5
    x = _calibration(1)[0]
    ref = ort_session(src, 1).run(None, {"image": x})[0]
    out = ort_session(tmp_path / "int8.onnx", 1).run(None, {"image": x})[0]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 0.1 * max(1.0, np.abs(ref).max())
    fig = measure_onnx_file(tmp_path / "int8.onnx", (1, 16, 16), precision="int8", repeats=3)
    assert fig.runtime == "onnxruntime" and fig.precision == "int8" and fig.median_ms > 0


def test_quantization_without_calibration_images_is_refused(tmp_path) -> None:
    src = tmp_path / "model.onnx"
    write_onnx(_net(), torch.zeros(1, 1, 16, 16), src, fast=True)
    with pytest.raises(MednasError, match="at least one calibration image"):
        quantize_int8(src, tmp_path / "int8.onnx", [])
    assert not (tmp_path / "int8.onnx").exists()


def test_a_broken_onnx_file_fails_quantization_in_one_line(tmp_path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(b"not an onnx model")
    with pytest.raises(MednasError, match=r"model\.onnx: INT8 quantization failed") as err:
        quantize_int8(src, tmp_path / "int8.onnx", _calibration(1))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "int8.onnx").exists()
