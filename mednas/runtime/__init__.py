"""The runtimes a model is served on: ONNX writing, ONNX Runtime sessions, INT8 quantization, latency timing.

A component floor shared by the search (a candidate's latency on the serving runtime) and the export (the bundle's
ONNX and INT8 models): neither imports the other for it. Nothing here reads the run directory.

Example:
    >>> from mednas.runtime import measure_latency  # doctest: +SKIP
    >>> measure_latency(model, (1, 128, 128), runtime="onnxruntime", threads=1).median_ms  # doctest: +SKIP
    3.41
"""

from __future__ import annotations

from mednas.runtime._latency import (
    PRECISIONS,
    RUNTIMES,
    LatencyFigure,
    cpu_name,
    device_name,
    measure_latency,
    measure_onnx_file,
)
from mednas.runtime._onnx import INSTALL_HINT, check_onnx_available, ort_session, quiet_exporters, write_onnx
from mednas.runtime._quantize import QuantizeInfo, quantize_int8

__all__ = [
    "INSTALL_HINT",
    "PRECISIONS",
    "RUNTIMES",
    "LatencyFigure",
    "QuantizeInfo",
    "check_onnx_available",
    "cpu_name",
    "device_name",
    "measure_latency",
    "measure_onnx_file",
    "ort_session",
    "quantize_int8",
    "quiet_exporters",
    "write_onnx",
]
