"""The HTML report of a run directory, and its live status.

``write_report`` reads a run directory (never a live study object, except the storage for parameter
importances) and writes one self-contained ``report.html`` that opens offline; ``read_status`` and
``format_status`` give what ``mednas status`` prints, also while a search runs in another process.

Example:
    >>> from mednas.reporting import write_report
    >>> result = write_report("runs/demo-xray-nodule")  # doctest: +SKIP
    >>> result.path.name  # doctest: +SKIP
    'report.html'
    >>> import mednas
    >>> mednas.report("runs/demo-xray-nodule").figures  # the same, through the API  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ReportResult", "format_status", "read_status", "write_report"]

# Heavy imports (plotly, torch) wait until a name is used, so `import mednas` stays light.
_MODULE_OF = {
    "ReportResult": "_report",
    "write_report": "_report",
    "format_status": "_status",
    "read_status": "_status",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'mednas.reporting' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mednas.reporting.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
