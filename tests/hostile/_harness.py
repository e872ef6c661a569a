"""What every hostile-input test asserts: a refusal is one line naming the culprit, a non-zero exit, no
traceback, nothing written outside the command's own outputs, no earlier result changed, no payload marker.

``mednas_cli`` runs the command in-process (fast: no torch import per call); ``mednas_subprocess`` runs the
installed ``python -m mednas`` for what must be seen from outside (exit codes, concurrency, hangs).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outcome", "assert_refused", "assert_unchanged", "mednas_cli", "mednas_subprocess", "snapshot"]


@dataclass
class Outcome:
    """What a command did: exit status, standard output, standard error."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The non-empty lines on standard error."""
        return [line for line in self.err.splitlines() if line.strip()]


def mednas_cli(*args: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None) -> Outcome:
    """Run ``mednas ARGS`` in this process; an exception escaping ``main`` fails the calling test."""
    from mednas.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(old)
    return Outcome(int(code), out.getvalue(), err.getvalue())


def mednas_subprocess(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run ``python -m mednas ARGS --quiet`` as a new process."""
    proc = subprocess.run(
        [sys.executable, "-m", "mednas", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "MEDNAS_NO_PROGRESS": "1", **(env or {})},
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_refused(outcome: Outcome, *names: str, code: int | None = None) -> str:
    """Assert a clean refusal: non-zero exit (``code`` if given), one ``mednas: error:`` line, the last on stderr,
    naming every one of ``names``; no traceback, at most a few log lines before it. Returns the error line."""
    assert outcome.code != 0, f"accepted (exit 0); stdout: {outcome.out[-500:]!r}"
    if code is not None:
        assert outcome.code == code, f"exit {outcome.code}, expected {code}: {outcome.err[-800:]}"
    assert outcome.code != 70, f"an internal error, not a refusal: {outcome.err[-800:]}"
    assert "Traceback" not in outcome.err, outcome.err[-2000:]
    lines = outcome.error_lines
    # Log lines (progress, a warning about the input) may come first; the error itself is one line, the last.
    assert lines, "nothing on stderr"
    assert len(lines) <= 6, f"{len(lines)} lines on stderr: {outcome.err[-2000:]}"
    errors = [line for line in lines if line.startswith("mednas: ")]
    assert len(errors) == 1, f"{len(errors)} error lines, expected one: {outcome.err[-2000:]}"
    line = lines[-1]
    assert line.startswith("mednas: error: "), (
        f"the last line on stderr is not the error: {outcome.err[-2000:]}"
    )
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    return line


def snapshot(*roots: str | os.PathLike[str]) -> dict[str, str]:
    """Every file under ``roots`` (recursively) with its SHA-256; missing roots give no entries."""
    files: dict[str, str] = {}
    for root in map(Path, roots):
        if root.is_file():
            files[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def assert_unchanged(before: dict[str, str], *roots: str | os.PathLike[str]) -> None:
    """Assert that no file under ``roots`` was added, removed or changed since ``before``."""
    after = snapshot(*roots)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), (
        f"added {added[:5]}, removed {removed[:5]}, changed {changed[:5]}"
    )
