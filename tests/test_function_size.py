"""``tools/check_function_size.py``: functions over the line limit are listed and fail the check (issue 16)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "check_function_size.py"


def _function(
    name: str, n_lines: int, *, decorated: bool = False, indent: str = "", docstring_lines: int = 0
) -> str:
    """Source of a function of ``n_lines`` lines of code (a decorator and a comment are two of them).

    ``docstring_lines`` adds a docstring of that many lines on top (the tool counts it like any other line).
    """
    head = [f"{indent}@staticmethod"] if decorated else []
    head += [f"{indent}def {name}() -> int:"]
    if docstring_lines == 1:
        head += [f'{indent}    """A docstring."""']
    elif docstring_lines:
        inner = [f"{indent}    Args and examples." for _ in range(docstring_lines - 2)]
        head += [f'{indent}    """A docstring.', *inner, f'{indent}    """']
    head += [f"{indent}    # comments count", f"{indent}    x = 0"]
    body = [f"{indent}    x += 1"] * (n_lines + docstring_lines - len(head) - 1)
    return "\n".join([*head, *body, f"{indent}    return x"]) + "\n"


def _check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A tiny package: one 81-line function (too long) and one 80-line function (just allowed)."""
    pkg = tmp_path / "tinypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "long.py").write_text("X = 1\n\n\n" + _function("too_long", 81))
    (pkg / "fine.py").write_text(_function("just_fits", 80))
    return pkg


def test_the_helper_writes_functions_of_the_length_asked() -> None:
    """The fixture's functions have exactly the lengths the tests rely on."""
    assert len(_function("f", 81).splitlines()) == 81
    assert len(_function("f", 80, decorated=True).splitlines()) == 80
    assert len(_function("f", 80, docstring_lines=1).splitlines()) == 81
    assert len(_function("f", 80, docstring_lines=30).splitlines()) == 110


def test_an_81_line_function_fails_and_is_named(package: Path) -> None:
    """The 81-line function is printed as path:line name N lines and the exit status is 1."""
    result = _check(package)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].endswith("tinypkg/sub/long.py:4 too_long 81 lines")
    assert "just_fits" not in result.stdout


def test_an_80_line_function_passes(package: Path) -> None:
    """With only the 80-line function left, nothing is printed and the exit status is 0."""
    (package / "sub" / "long.py").unlink()
    result = _check(package)
    assert (result.returncode, result.stdout) == (0, ""), result.stderr


def test_decorators_and_methods_count(tmp_path: Path) -> None:
    """A method's decorator line counts towards its length; nested and class-level functions are checked."""
    source = "class A:\n" + _function("method", 81, decorated=True, indent="    ")
    (tmp_path / "m.py").write_text(source)
    result = _check(tmp_path / "m.py")
    assert result.returncode == 1
    assert result.stdout.strip().endswith("m.py:2 method 81 lines")
    (tmp_path / "m.py").write_text("class A:\n" + _function("method", 80, decorated=True, indent="    "))
    assert _check(tmp_path / "m.py").returncode == 0


def test_a_docstring_counts(tmp_path: Path) -> None:
    """50 lines of code under a 30-line docstring are 80 lines and pass; 51 under it are reported as 81."""
    (tmp_path / "doc.py").write_text(_function("documented", 50, docstring_lines=30))
    assert _check(tmp_path / "doc.py").returncode == 0
    (tmp_path / "doc.py").write_text(_function("documented", 51, docstring_lines=30))
    result = _check(tmp_path / "doc.py")
    assert result.returncode == 1
    assert result.stdout.strip().endswith("doc.py:1 documented 81 lines")


def test_a_file_that_does_not_parse_is_named(tmp_path: Path) -> None:
    """A syntax error fails the check with the file and line, not a traceback."""
    (tmp_path / "broken.py").write_text("x = 1\ndef f(:\n")
    result = _check(tmp_path / "broken.py")
    assert result.returncode == 1
    assert "broken.py:2: cannot parse" in result.stderr, result.stderr


def test_max_lines_sets_the_limit(package: Path) -> None:
    """``--max-lines 79`` also rejects the 80-line function; ``--max-lines 81`` accepts both."""
    strict = _check("--max-lines", "79", package)
    assert strict.returncode == 1
    assert [line.rsplit(" ", 3)[1] for line in strict.stdout.splitlines()] == ["just_fits", "too_long"]
    assert _check("--max-lines", "81", package).returncode == 0
