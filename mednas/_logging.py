"""Console logging for the ``mednas`` command: plain lines for people, or JSON lines (``--log-json``) for machines.

With ``--log-json`` every record is one JSON object on stderr: ``time`` (ISO 8601, local time with offset),
``level``, ``logger``, ``message``, and the structured fields a record carries (``trial``, ``epoch``,
``value``, ``state``, ...: whatever was passed as ``extra=``), plus ``exception`` when there is a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a structured field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _plain(value: Any) -> Any:
    """Return ``value`` as something :func:`json.dumps` accepts (non-finite floats become null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line with its structured fields.

    Example:
        >>> record = logging.LogRecord("mednas.study", logging.INFO, "", 0, "trial %d done", (3,), None)
        >>> record.trial = 3
        >>> line = json.loads(JsonFormatter().format(record))
        >>> line["message"], line["trial"], line["level"]
        ('trial 3 done', 3, 'INFO')
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object on one line."""
        out: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = _plain(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, allow_nan=False)

    @staticmethod
    def _time(record: logging.LogRecord) -> str:
        local = time.localtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        offset = time.strftime("%z", local)
        return (
            f"{stamp}.{int(record.msecs):03d}{offset[:3]}:{offset[3:]}"
            if offset
            else f"{stamp}.{int(record.msecs):03d}"
        )


def configure_logging(
    *, debug: bool = False, quiet: bool = False, json_lines: bool = False
) -> logging.Handler:
    """Send the ``mednas`` loggers to stderr: plain messages, or JSON lines with ``json_lines``.

    Args:
        debug: Show debug records (and, in plain mode, the level and logger of each line).
        quiet: Warnings and errors only.
        json_lines: One JSON object per record (see the module docstring).

    Returns:
        The console handler that was installed (it replaces earlier console handlers of ``mednas``).
    """
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s")
        )
    root = logging.getLogger("mednas")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    handler.setLevel(level)
    root.propagate = False
    for noisy in ("optuna", "monai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
