"""The one progress bar of every long step (search, retrain, calibrate-proxy): a tqdm bar on stderr.

Log lines print above the bar while it is shown; on a terminal it refreshes twice a second, elsewhere (a log file,
a CI job) every 5 s. ``MEDNAS_NO_PROGRESS=1``, ``--quiet`` and ``--log-json`` turn it off; every step also logs
its progress as structured lines, so nothing is lost without the bar.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """A tqdm bar whose description says what runs now (``retrain [candidate 2/3: trial 7, epoch 4/20]``).

    Args:
        desc: The step's name, shown first (``search``, ``retrain``, ``calibrate``).
        total: Units of work.
        initial: Units already done (a continued step).
        unit: What one unit is (``trial``, ``candidate``, ``training``).
        enabled: False for no bar (``--quiet``); ``MEDNAS_NO_PROGRESS=1`` also turns it off.
        bar_format: tqdm's format string, where the step wants its own layout.
        above_logs: Route the ``mednas`` logger's console handlers through the bar so lines print above it.

    Example:
        >>> bar = ProgressBar("retrain", total=3, unit="candidate", enabled=False)
        >>> bar.describe("candidate 1/3"); bar.update(); bar.close()
    """

    def __init__(
        self,
        desc: str,
        *,
        total: int,
        initial: int = 0,
        unit: str = "it",
        enabled: bool = True,
        bar_format: str | None = None,
        above_logs: bool = False,
    ) -> None:
        self.name = desc
        self.enabled = enabled and os.environ.get("MEDNAS_NO_PROGRESS") != "1"
        self.bar: Any = None
        self._last = 0.0
        self._swapped: list[tuple[logging.Handler, logging.Handler]] = []
        if self.enabled:
            from tqdm.auto import tqdm

            kwargs: dict[str, Any] = {"bar_format": bar_format} if bar_format else {}
            self.bar = tqdm(
                total=total,
                initial=min(initial, total),
                desc=desc,
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                mininterval=0.5 if sys.stderr.isatty() else 5.0,
                **kwargs,
            )
            if above_logs:
                self._redirect_console_logging()

    def describe(self, detail: str | None, *, force: bool = False) -> None:
        """Show ``name [detail]`` (just the name for None), refreshing at most every ``mininterval``."""
        if self.bar is not None:
            self.bar.set_description_str(f"{self.name} [{detail}]" if detail else self.name, refresh=False)
            self.refresh(force)

    def stage(self, name: str, done: int, total: int) -> None:
        """Show a preparation stage (``validate 3/40``, ``proxy cache``)."""
        self.describe(f"{name} {done}/{total}" if total else name)

    def postfix(self, text: str) -> None:
        """Show ``text`` after the counts (the best so far, say)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def set_format(self, bar_format: str) -> None:
        """Replace the bar's layout (tqdm's ``bar_format``)."""
        if self.bar is not None:
            self.bar.bar_format = bar_format

    def update(self, n: int = 1) -> None:
        """Count ``n`` units done."""
        if self.bar is not None:
            self.bar.update(n)

    def set_done(self, done: int) -> None:
        """Set the count of units done (work finished by other processes counts too)."""
        if self.bar is not None and done != self.bar.n:
            self.bar.n = done

    def refresh(self, force: bool = False) -> bool:
        """Redraw now if ``force`` or ``mininterval`` has passed; returns whether it redrew."""
        now = time.monotonic()
        if self.bar is not None and (force or now - self._last >= self.bar.mininterval):
            self._last = now
            self.bar.refresh()
            return True
        return False

    def close(self) -> None:
        """Close the bar and give the console handlers back."""
        self._restore_console_logging()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- log lines above the bar

    def _redirect_console_logging(self) -> None:
        bar_cls = type(self.bar)

        class _AboveBar(logging.StreamHandler):  # type: ignore[type-arg]
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    bar_cls.write(self.format(record), file=self.stream)
                    self.flush()
                except Exception:  # noqa: BLE001 - logging must never break the step
                    self.handleError(record)

        root = logging.getLogger("mednas")
        for h in list(root.handlers):
            if type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout):
                new = _AboveBar(h.stream)
                new.setFormatter(h.formatter)
                new.setLevel(h.level)
                for f in h.filters:
                    new.addFilter(f)
                root.handlers[root.handlers.index(h)] = new
                self._swapped.append((h, new))

    def _restore_console_logging(self) -> None:
        root = logging.getLogger("mednas")
        for old, new in self._swapped:
            if new in root.handlers:
                root.handlers[root.handlers.index(new)] = old
        self._swapped = []
