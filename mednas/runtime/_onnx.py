"""Writing a network to ONNX and opening ONNX Runtime sessions with an explicit thread count."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mednas.errors import MednasError

logger = logging.getLogger(__name__)

__all__ = ["INSTALL_HINT", "check_onnx_available", "ort_session", "quiet_exporters", "write_onnx"]

INSTALL_HINT = 'pip install "mednas[export]"'


def check_onnx_available(what: str = "ONNX export", alternative: str = "export --format torchscript") -> None:
    """Raise a one-line error naming the install command when ``onnx`` or ``onnxruntime`` is missing.

    Args:
        what: What needs them, for the message.
        alternative: What the user can do instead, for the message (empty: nothing is suggested).
    """
    missing = []
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MednasError(
            f"{what} needs {' and '.join(missing)}: {INSTALL_HINT}"
            + (f" (or {alternative})" if alternative else "")
        )


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Silence the exporters' and quantizer's progress prints and chatter (they are not the user's to act on)."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir", "onnxruntime")
    quiet_loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in quiet_loggers]
    root = logging.getLogger()
    # onnxruntime.quantization logs through the root logger ("Axis 1 is out-of-range for weight ...").
    root_filter = _DropFrom(("onnxruntime", "quantize", "calibrate", "quant_utils", "shape_inference"))
    root.addFilter(root_filter)
    for lg in quiet_loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(root_filter)
        for lg, level in zip(quiet_loggers, levels):
            lg.setLevel(level)


class _DropFrom(logging.Filter):
    """Drop root-logger records emitted from modules whose path mentions one of ``parts``."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        where = record.pathname.replace("\\", "/")
        return not ("onnxruntime/" in where and any(p in where for p in self.parts))


def write_onnx(model: Any, example: Any, path: str | os.PathLike[str], *, fast: bool = False) -> str:
    """Write ``model`` to one ONNX file (weights inside), input ``image``, output ``pred``, batch axis dynamic.

    Args:
        model: The network in eval mode, on CPU.
        example: An example input batch.
        path: Destination file.
        fast: Use the TorchScript-based exporter directly (about 1 s instead of 5-10 s for a ResNet-18; the graph
            ONNX Runtime runs is timed the same within noise, see docs/benchmarks.md "Edge"). The bundle uses the
            dynamo exporter when ``onnxscript`` is installed and falls back to the TorchScript-based one.

    Returns:
        The exporter used: ``"dynamo"`` or ``"torchscript"``.

    Raises:
        MednasError: If the TorchScript-based exporter fails too (naming the dynamo exporter's error as well).
    """
    path = Path(path)
    error: Exception | None = None
    if not fast:
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            pass
        else:
            try:
                _export_dynamo(model, example, path)
                return "dynamo"
            except Exception as exc:  # noqa: BLE001 - fall back to the older exporter, say why in the log
                error = exc
                logger.info(
                    "the dynamo ONNX exporter failed (%s); using the TorchScript-based exporter",
                    (str(exc).splitlines() or [type(exc).__name__])[0][:200],
                )
    try:
        _export_torchscript_based(model, example, path)
    except Exception as exc:
        raise MednasError(
            f"ONNX export failed: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}"
            + (f" (dynamo exporter: {str(error).splitlines()[0][:120]})" if error else "")
        ) from exc
    return "torchscript"


def _export_torchscript_based(model: Any, example: Any, path: Path) -> None:
    import torch

    with quiet_exporters():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["pred"],
            dynamo=False,
            dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
        )


def _export_dynamo(model: Any, example: Any, path: Path) -> None:
    """PyTorch's dynamo ONNX exporter, weights inside the file, the batch axis dynamic (1 to 1024)."""
    import torch

    with quiet_exporters():
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["pred"],
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )


def ort_session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on ``threads`` intra-op threads (default: as many as torch uses), one inter-op.

    The thread count is always set explicitly: ONNX Runtime's default (one per core, spinning) oversubscribes a
    shared machine.
    """
    import onnxruntime as ort

    if threads is None:
        import torch

        threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
