"""The documentation's code runs: Python blocks execute, ``mednas`` command lines parse, relative links resolve.

Python blocks of one page run in order in one namespace, in a temporary working directory. A block preceded by
``<!-- snippet: skip (reason) -->`` is skipped with that reason (it needs a finished search, a GPU, or data of
the reader's own). In ``bash`` blocks every ``mednas ...`` line (continuation lines joined, comments dropped)
goes through the real argument parser, so a renamed subcommand or option fails here.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*snippet:\s*skip\s*\((?P<reason>.+?)\)\s*-->")


def blocks(path: Path, language: str) -> Iterator[tuple[int, str, str | None]]:
    """Yield ``(line, code, skip reason or None)`` for each fenced block of ``language`` in ``path``."""
    text = path.read_text()
    previous_end = 0
    for m in FENCE.finditer(text):
        if m.group(1) == language:
            before = text[previous_end : m.start()].strip().splitlines()
            marker = SKIP.search(before[-1]) if before else None
            yield text.count("\n", 0, m.start()) + 2, m.group(2), marker.group("reason") if marker else None
        previous_end = m.end()


def _pages_with(language: str) -> list[Path]:
    return [p for p in PAGES if any(True for _ in blocks(p, language))]


def test_the_snippet_finder_sees_skips_and_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n<!-- snippet: skip (needs a GPU) -->\n```python\ny = 2\n```\n"
        "```bash\nmednas spaces\n```\n"
    )
    assert list(blocks(page, "python")) == [(4, "x = 1\n", None), (9, "y = 2\n", "needs a GPU")]
    assert [code for _, code, _ in blocks(page, "bash")] == ["mednas spaces\n"]


@pytest.mark.parametrize("page", _pages_with("python"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"snippets_{page.stem}"}
    ran, skipped = 0, []
    for line, code, reason in blocks(page, "python"):
        if reason:
            skipped.append(f"line {line}: {reason}")
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102 - the docs' own code
        ran += 1
    if not ran:
        pytest.skip(f"{page.name}: every Python block is marked skip ({'; '.join(skipped)})")


def _command_lines(code: str) -> Iterator[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", code)
    for raw in joined.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line.startswith("mednas "):
            continue
        line = re.sub(r"\s\d*>>?&?\s*\S+", " ", line.split(" | ")[0])  # drop pipes and redirections
        yield shlex.split(line, comments=True)[1:]


def test_bash_snippets_parse() -> None:
    from mednas.cli import _build_parser

    parser = _build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    seen, problems = set(), []
    for page in _pages_with("bash"):
        for line, code, _ in blocks(page, "bash"):
            for args in _command_lines(code):
                command = next((a for a in args if not a.startswith("-")), None)
                err = io.StringIO()
                try:
                    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                        parsed = parser.parse_args(args)
                except SystemExit:
                    problems.append(
                        f"{page.name}:{line}: mednas {' '.join(args)}: {err.getvalue().strip().splitlines()[-1:]}"
                    )
                    continue
                assert parsed.command in subcommands
                seen.add(command)
    assert not problems, "\n".join(problems)
    assert {
        "search",
        "status",
        "report",
        "retrain",
        "export",
    } <= seen  # the pages do show the everyday commands


def test_every_subcommand_used_in_the_docs_has_help() -> None:
    from mednas.cli import _build_parser

    parser = _build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    for name in subcommands:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
            parser.parse_args([name, "--help"])
        assert exc.value.code == 0 and f"mednas {name}" in out.getvalue()


def test_relative_links_resolve() -> None:
    broken = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_index_lists_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    missing = [
        p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md" and f"]({p.name})" not in index
    ]
    assert not missing, f"docs/index.md does not link {missing}"
