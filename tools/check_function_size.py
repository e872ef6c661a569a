"""Report every function in ``mednas/`` longer than ``--max-lines`` (issue 16: small parts); exit 1 if any.

What counts: every line of a function, from its first decorator (or its ``def`` line) to its last line:
signature, docstring, comments, blank lines and nested functions included, as a reader scrolls it. (A function
whose Args/Returns/Raises and example push it over the limit is long for a reader too; split it rather than
trim its documentation.) Methods and nested functions are also checked on their own (a nested function's lines
count towards its parent too). Standard library only, so ``make lint`` can run it
before anything is installed.

Usage::

    python tools/check_function_size.py [--max-lines 80] [PATH ...]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "mednas"
DEFAULT_MAX_LINES = 80


def function_lengths(source: str, filename: str = "<unknown>") -> Iterator[tuple[int, str, int]]:
    """Yield ``(first line, name, length in lines)`` of every function and method in ``source``.

    The length runs from the first decorator (or the ``def`` line) to the last line, docstring included.

    Args:
        source: Python source text.
        filename: Named in the SyntaxError raised when ``source`` does not parse.

    Example:
        >>> list(function_lengths('@staticmethod\\ndef f():\\n    "Doc."\\n    return 1\\n'))
        [(1, 'f', 4)]
    """
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            span = (node.end_lineno or node.lineno) - first + 1
            yield first, node.name, span


def python_files(paths: Sequence[Path]) -> list[Path]:
    """The ``.py`` files under each folder of ``paths`` (and each file given directly), sorted."""
    files: set[Path] = set()
    for path in paths:
        files.update(path.rglob("*.py") if path.is_dir() else [path])
    return sorted(files)


def oversized(paths: Sequence[Path], max_lines: int) -> list[tuple[Path, int, str, int]]:
    """Return ``(file, line, name, length)`` for every function over ``max_lines`` lines, in file order."""
    found = []
    for file in python_files(paths):
        for line, name, length in function_lengths(file.read_text(encoding="utf-8"), str(file)):
            if length > max_lines:
                found.append((file, line, name, length))
    return sorted(found)


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def main(argv: Sequence[str] | None = None) -> int:
    """Print ``path:line name N lines`` for each function over the limit; return 1 if there is one, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "paths", nargs="*", type=Path, help=f"files or folders to check (default: {DEFAULT_ROOT})"
    )
    parser.add_argument(
        "--max-lines",
        type=int,
        default=DEFAULT_MAX_LINES,
        help=f"longest allowed function, in lines (default {DEFAULT_MAX_LINES})",
    )
    args = parser.parse_args(argv)
    paths = args.paths or [DEFAULT_ROOT]
    missing = [p for p in paths if not p.exists()]
    if missing:
        parser.error(f"{missing[0]}: no such file or folder")
    try:
        found = oversized(paths, args.max_lines)
    except SyntaxError as exc:
        print(f"{exc.filename}:{exc.lineno}: cannot parse: {exc.msg}", file=sys.stderr)
        return 1
    for file, line, name, length in found:
        print(f"{_shown(file)}:{line} {name} {length} lines")
    if found:
        print(f"{len(found)} function(s) over {args.max_lines} lines", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
