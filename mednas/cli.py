"""The ``mednas`` command: argument parsing and printing over :mod:`mednas.api`, no logic of its own.

Errors the user can fix print one line (``mednas: error: ...``) and exit non-zero; ``--debug`` shows the
traceback. Heavy imports happen inside the subcommands so ``mednas --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Steadier, faster large CPU steps with glibc (see docs/benchmarks.md): must be set before the process starts,
# so long-running commands re-execute themselves once with these set.
_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}
_HEAVY = {"search", "retrain", "calibrate-proxy"}


def _maybe_reexec_with_malloc_tuning(argv: Sequence[str]) -> None:
    if not sys.platform.startswith("linux") or os.environ.get("MEDNAS_MALLOC_TUNING", "1") == "0":
        return
    if all(os.environ.get(k) for k in _MALLOC_ENV) or os.environ.get("_MEDNAS_REEXEC"):
        return
    if not any(a in _HEAVY for a in argv):
        return
    env = dict(os.environ, **{k: os.environ.get(k) or v for k, v in _MALLOC_ENV.items()}, _MEDNAS_REEXEC="1")
    try:
        os.execve(sys.executable, [sys.executable, "-m", "mednas", *argv], env)
    except OSError:
        return


def _common() -> argparse.ArgumentParser:
    # --debug/--quiet work before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars; warnings and errors only")
    return common


def _add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="task YAML file")
    p.add_argument("--preset", action="append", default=[], metavar="FILE",
                   help="preset merged under the task (a file, or a name in configs/); repeatable")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override any key, e.g. --set search.n_trials=12; repeatable")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mednas",
        description="Neural architecture search for medical imaging: MONAI search spaces, Optuna proxy search, clinical objectives.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; warnings and errors only")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common()
    _orig_add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return _orig_add(name, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser("search", help="create or continue a search", description="Create or continue a search. Running the same command again continues the same study.")
    _add_task_args(p)
    p.add_argument("--run-dir", help="run directory (default: runs/<task name>)")
    p.add_argument("--storage", help="Optuna storage URL: sqlite:///FILE, postgresql://..., journal:///FILE (default: SQLite in the run directory)")
    p.add_argument("--study-name", help="study name (default: the task name)")
    p.add_argument("--n-trials", type=int, help="finished trials (complete + pruned) the study should reach")
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the task's, auto)")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("validate", help="check a task file and its data",
                       description="Read every case of a task, print the fingerprint summary and split sizes, and list every bad case (exit status 3 if any).")
    _add_task_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("inspect", help="show an image's geometry and values, or the series in a DICOM folder",
                       description="Print shape, spacing, affine, dtype, min, max, mean and modality of an image file or DICOM series; for a folder of several series, list them.")
    p.add_argument("path", help="image file (DICOM, NIfTI, NRRD, PNG, JPEG, TIFF) or DICOM folder")
    p.add_argument("--series", help="series to read from a folder of several (key, number or description)")
    p.add_argument("--json", action="store_true", help="print JSON (for an image, exactly the keys shape, spacing, affine, dtype, min, max, mean, modality)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("spaces", help="list the search-space families")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=_cmd_spaces)
    return parser


# ------------------------------------------------------------------------------------------------ commands


def _fmt_ci(m: Any) -> str:
    if isinstance(m, dict) and "value" in m:
        v = m.get("value")
        ci = m.get("ci95")
        if v is None:
            return "n/a"
        if ci and ci[0] is not None and ci[1] is not None:
            return f"{v:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
        return f"{v:.3f}"
    return str(m)


def _print_search_summary(summary: dict[str, Any], run_dir: Any) -> None:
    n = summary.get("n_trials", {})
    print(f"\nmednas search: {summary.get('task')} -> {run_dir}")
    if summary.get("simulated_data"):
        print("  data: SIMULATED (demo data built on real anatomy; see docs/demo-data.md)")
    augmentation = (summary.get("data") or {}).get("augmentation")
    if augmentation:
        note = augmentation.get("note") if isinstance(augmentation, dict) else None
        print(f"  data: AUGMENTED COPIES: {note or json.dumps(augmentation)}")
    print(f"  trials: {n.get('complete', 0)} complete, {n.get('pruned', 0)} pruned, {n.get('infeasible', 0)} infeasible, "
          f"{n.get('failed', 0)} failed; families sampled: {', '.join(f'{k} x{v}' for k, v in summary.get('families', {}).items())}")
    best = summary.get("best")
    if not best:
        print("  no trial has completed yet")
        return
    print(f"  best: trial {best['trial']}, {best.get('target')} ({best.get('family')}), "
          f"{best.get('params') or 0:,} parameters, spec {best.get('spec_hash')}")
    print(f"  objective {summary['objective']['names'][0]} = {best['values'][0]:.4f} (validation, proxy)")
    for name, m in sorted((best.get("metrics") or {}).items()):
        print(f"    {name}: {_fmt_ci(m)}")
    op = best.get("operating_point")
    if op and op.get("threshold") is not None:
        print(f"    operating threshold: {op['threshold']:.4f}")
    print(f"  architecture: {run_dir}/trials/{best['trial']}/spec.json")


def _cmd_search(args: argparse.Namespace) -> int:
    from mednas import api

    result = api.search(
        args.task,
        presets=args.preset,
        overrides=args.overrides,
        run_dir=args.run_dir,
        storage=args.storage,
        study_name=args.study_name,
        n_trials=args.n_trials,
        timeout=args.timeout,
        device=args.device,
        show_progress=not args.quiet,
    )
    _print_search_summary(result.summary, result.run_dir)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from mednas import api
    from mednas.data import new_salt, validate_dataset
    from mednas.errors import DataError

    cfg = api.load_config(args.task, presets=args.preset, overrides=args.overrides)
    report = validate_dataset(cfg, new_salt())
    if args.json:
        from mednas.io import dumps_json

        print(dumps_json(report.to_dict()))
    else:
        print(f"{args.task}: task {cfg.name!r} ({cfg.problem}, {cfg.spatial_dims}D, objective {cfg.objective.name})")
        for line in report.summary_lines():
            print(line)
        if report.bad:
            print(f"bad cases ({len(report.bad)}):")
            for bad in report.bad:
                print(f"  {bad.line()}")
    if not report.ok:
        raise DataError(f"{args.task}: {report.error_line(listed=True)}")
    if not args.json:
        print("ok: every case can be used")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from mednas.io import dumps_json, format_summary, inspect_path

    result = inspect_path(args.path, series=args.series)
    if args.json:
        print(dumps_json(result.get("image", result)))
    else:
        print(format_summary(f"{args.path} [series {args.series}]" if args.series else args.path, result))
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    from mednas.spaces import SPACES, list_spaces

    for name in list_spaces(args.pattern):
        cls = SPACES.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:12s} {'/'.join(cls.problems):28s} min size {cls.min_input_size:<4d} {doc}")
    return 0


# ---------------------------------------------------------------------------------------------------- main


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    root = logging.getLogger("mednas")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    handler.setLevel(level)
    root.propagate = False
    for noisy in ("optuna", "monai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mednas`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(f"mednas {version('mednas')}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    if sys.argv[1:] == argv:
        _maybe_reexec_with_malloc_tuning(argv)
    _configure_logging(args.debug, args.quiet)
    if args.quiet:
        os.environ["MEDNAS_NO_PROGRESS"] = "1"
    from mednas.errors import MednasError

    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MednasError as exc:
        if args.debug:
            raise
        print(f"mednas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mednas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mednas ... | head`: the reader went away; exit quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
