"""The ``mednas`` command: argument parsing and printing over :mod:`mednas.api`, no logic of its own.

Errors the user can fix print one line (``mednas: error: ...``) and exit non-zero; ``--debug`` shows the
traceback. Heavy imports happen inside the subcommands so ``mednas --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

# Steadier, faster large CPU steps with glibc (see docs/benchmarks.md): must be set before the process starts,
# so long-running commands re-execute themselves once with these set.
from mednas._malloc import MALLOC_ENV as _MALLOC_ENV

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


class _Parser(argparse.ArgumentParser):
    """argparse with mednas's error form: one line on stderr naming the option, exit status 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse's hook
        self.exit(2, f"mednas: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _common() -> argparse.ArgumentParser:
    # --debug/--quiet work before or after the subcommand.
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs"
    )
    common.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars; warnings and errors only",
    )
    common.add_argument(
        "--log-json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log JSON lines on stderr (time, level, logger, message, fields); no progress bars",
    )
    return common


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, refused in one line like a task key."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _out_dir(text: str) -> str:
    """An argparse type: an output folder path that is not an existing file."""
    if os.path.lexists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return text


def _out_file(text: str) -> str:
    """An argparse type: an output file path that is not an existing folder and whose parent is not a file."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder, expected a file name")
    parent = os.path.dirname(text)
    if parent and os.path.lexists(parent) and not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{parent} exists and is not a folder")
    return text


def _tau(text: str) -> float:
    """An argparse type: a Kendall tau in [-1, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from -1 to 1, got {text!r}") from None
    if not -1 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from -1 to 1 (a Kendall tau), got {text}")
    return value


def _gpu_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU indices like 0,1, got {text!r}") from None


def _add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="task YAML file")
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME|FILE",
        help="preset merged under the task: a shipped name (quick-cpu, gpu-day, objectives/screening, ...; "
        "works from any folder) or a YAML file; repeatable",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override any key, e.g. --set search.n_trials=12; repeatable",
    )


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=_int_at_least(1),
        metavar="N",
        help="CPU threads for torch/OpenMP/MKL per process (default: the task's training.threads, else the "
        "CPUs this process may use divided by the local workers, fewer when the machine is busy at start)",
    )


def _add_mlflow_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--mlflow",
        metavar="URI",
        help=f"MLflow tracking URI (file:./mlruns, sqlite:///mlflow.db, http://host:5000): {what}; an "
        'unreachable store is a warning (needs pip install "mednas[tracking]")',
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mednas",
        description="Neural architecture search for medical imaging: MONAI search spaces, Optuna proxy search, clinical objectives.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; warnings and errors only")
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="log JSON lines on stderr (time, level, logger, message, fields); no progress bars",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common()
    _orig_add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return _orig_add(name, parents=[common], **kw)  # the subparsers' class is the parent's: _Parser

    sub.add_parser = add_parser  # type: ignore[method-assign]

    for add in _SUBCOMMANDS:  # in the order `mednas --help` lists them
        add(sub)
    return parser


def _add_search(sub: Any) -> None:
    """Add ``search``: create or continue a study."""
    p = sub.add_parser(
        "search",
        help="create or continue a search",
        description="Create or continue a search. Running the same command again continues the same study.",
    )
    _add_task_args(p)
    p.add_argument("--run-dir", help="run directory (default: runs/<task name>)")
    p.add_argument(
        "--storage",
        help="Optuna storage URL: sqlite:///FILE, postgresql://..., journal:///FILE (default: SQLite in the run directory)",
    )
    p.add_argument("--study-name", help="study name (default: the task name)")
    p.add_argument(
        "--storage-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="seconds a PostgreSQL/MySQL server gets to connect and answer (default 10, or "
        "$MEDNAS_STORAGE_TIMEOUT; a connect_timeout= in the URL wins)",
    )
    p.add_argument(
        "--n-trials", type=_int_at_least(1), help="finished trials (complete + pruned) the study should reach"
    )
    p.add_argument("--timeout", type=_positive_float, help="seconds after which no new trial starts")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the task's, auto)")
    p.add_argument(
        "--workers",
        type=_int_at_least(1),
        default=1,
        help="local worker processes sharing the study (default 1)",
    )
    p.add_argument("--gpus", type=_gpu_list, help="GPU indices to pack trials onto, e.g. 0,1")
    p.add_argument(
        "--trials-per-gpu",
        type=_int_at_least(1),
        default=1,
        help="concurrent proxy trials per GPU (with --gpus)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    _add_mlflow_arg(p, "log each trial (parameters, per-epoch and final metrics) as a run")
    _add_threads_arg(p)
    p.set_defaults(func=_cmd_search)


def _add_retrain(sub: Any) -> None:
    """Add ``retrain``: the best candidates at full fidelity, tested once."""
    p = sub.add_parser(
        "retrain",
        help="retrain the best candidates at full fidelity, test them, measure proxy fidelity",
        description="Retrain the top-k candidates of a search at full resolution (early stopping on the "
        "validation objective, cosine schedule), choose each operating point on validation, evaluate "
        "once on the held-out test split, and record Kendall tau between proxy and full rankings. "
        "A killed retrain continues the candidate it was training; finished candidates are skipped.",
    )
    p.add_argument("run_dir", help="run directory of a search")
    p.add_argument(
        "--top-k",
        type=_int_at_least(1),
        default=3,
        help="candidates to retrain (default 3; the Pareto front for several objectives)",
    )
    p.add_argument(
        "--seeds",
        type=_int_at_least(1),
        default=2,
        metavar="S",
        help="full-fidelity trainings per candidate with different seeds (default 2): ranks by the seed mean "
        "and measures the seed-noise ceiling of proxy fidelity; 1 halves the cost",
    )
    p.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="cross-validate instead: train each candidate once per patient-grouped fold of the train+val "
        "patients (K >= 2; --seeds is not used), rank by the fold mean with its t interval, and test the chosen "
        "candidate's fold models and their ensemble once each (`mednas export RUN --ensemble` ships it)",
    )
    p.add_argument(
        "--epochs", type=_int_at_least(1), help="maximum epochs (default: the task's training.epochs)"
    )
    p.add_argument(
        "--patch",
        type=_int_at_least(1),
        nargs="+",
        metavar="N",
        help="train on random patches of this size with sliding-window validation (default: training.patch)",
    )
    p.add_argument(
        "--storage", help="Optuna storage URL the search used (default: SQLite in the run directory)"
    )
    p.add_argument("--study-name", help="study name (default: the search's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the task's, auto)")
    _add_mlflow_arg(p, "log each candidate's validation and test figures as a run (default: the search's)")
    _add_threads_arg(p)
    p.set_defaults(func=_cmd_retrain)


def _add_calibrate_proxy(sub: Any) -> None:
    """Add ``calibrate-proxy``: which proxy setting ranks like full training."""
    p = sub.add_parser(
        "calibrate-proxy",
        help="measure which proxy setting ranks candidates like full training",
        description="Train random specs from the task's search spaces at a grid of proxy settings "
        "(resolution scale x epochs, plus the task's own proxy) and at full fidelity; print Kendall tau "
        "and cost per setting and recommend the cheapest setting that reaches --min-tau. Never reads the test split.",
    )
    _add_task_args(p)
    p.add_argument(
        "--run-dir", type=_out_dir, help="where calibration.json goes (default: runs/<task name>-calibration)"
    )
    p.add_argument(
        "--specs", type=_int_at_least(2), default=8, metavar="M", help="random specs to train (default 8)"
    )
    p.add_argument(
        "--grid",
        metavar="SCALExEPOCHS,...",
        help="proxy settings, e.g. 0.25x2,0.5x5 (default: scales 0.25 and 0.5 x epochs 2 and 5)",
    )
    p.add_argument(
        "--min-tau",
        type=_tau,
        default=0.6,
        help="Kendall tau the recommended setting must reach (default 0.6)",
    )
    p.add_argument(
        "--full-epochs",
        type=_int_at_least(1),
        help="maximum full-fidelity epochs (default: the task's training.epochs)",
    )
    p.add_argument(
        "--full-seeds",
        type=_int_at_least(1),
        default=1,
        metavar="S",
        help="full-fidelity trainings per spec with different seeds (default 1; 2 or more measure the "
        "seed-noise ceiling that bounds every proxy's tau)",
    )
    p.add_argument(
        "--proxy-seeds",
        type=_int_at_least(1),
        default=1,
        metavar="S",
        help="trainings per spec at each proxy setting (default 1; 2 or more rank by the proxy seed mean)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the task's, auto)")
    _add_threads_arg(p)
    p.set_defaults(func=_cmd_calibrate)


def _add_validate(sub: Any) -> None:
    """Add ``validate``: a task file and every case of its data."""
    p = sub.add_parser(
        "validate",
        help="check a task file and its data",
        description="Read every case of a task, print the fingerprint summary and split sizes, and list every bad case (exit status 3 if any).",
    )
    _add_task_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_validate)


def _add_inspect(sub: Any) -> None:
    """Add ``inspect``: one image's geometry and values, or a DICOM folder's series."""
    p = sub.add_parser(
        "inspect",
        help="show an image's geometry and values, or the series in a DICOM folder",
        description="Print shape, spacing, affine, dtype, min, max, mean and modality of an image file or DICOM series; for a folder of several series, list them.",
    )
    p.add_argument("path", help="image file (DICOM, NIfTI, NRRD, PNG, JPEG, TIFF) or DICOM folder")
    p.add_argument("--series", help="series to read from a folder of several (key, number or description)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON (for an image, exactly the keys shape, spacing, affine, dtype, min, max, mean, modality)",
    )
    p.set_defaults(func=_cmd_inspect)


def _add_export(sub: Any) -> None:
    """Add ``export``: the best candidate as a verified MONAI bundle."""
    p = sub.add_parser(
        "export",
        help="write the best candidate as a verified MONAI bundle",
        description="Write the best retrained candidate (or, where none was retrained, the best proxy "
        "candidate, flagged as such) as a MONAI bundle: inference.json, metadata, state dict, TorchScript "
        "and ONNX checked against PyTorch (max |diff| <= 1e-4), model card, search record, checksums. "
        "Built in a temporary folder and renamed into place only once every check passed.",
    )
    p.add_argument("run_dir", help="run directory of a search (and retrain)")
    p.add_argument(
        "--out",
        type=_out_dir,
        help="bundle folder (default: RUN_DIR/bundle; an earlier mednas bundle there is replaced)",
    )
    p.add_argument(
        "--format",
        default="onnx,torchscript",
        metavar="FORMATS",
        help="exported formats besides the state dict: onnx,torchscript (default), onnx, or torchscript",
    )
    p.add_argument(
        "--schema",
        metavar="FILE",
        help="MONAI's meta_schema_20240725.json to check the metadata against, "
        "offline (default: $MEDNAS_BUNDLE_SCHEMA; without it the schema's required fields are checked)",
    )
    p.add_argument(
        "--license",
        metavar="FILE",
        help="text for the bundle's LICENSE (default: a notice that no licence was chosen)",
    )
    p.add_argument(
        "--sign-key",
        metavar="FILE",
        help="key file (>= 16 bytes, e.g. `openssl rand -hex 32`) to sign the "
        "bundle digest with (HMAC-SHA256, signature.json; default: $MEDNAS_BUNDLE_KEY when set)",
    )
    p.add_argument(
        "--quantize",
        metavar="int8",
        help="also write models/model_int8.onnx (ONNX Runtime static quantization, calibrated on training images; "
        "needs the onnx format), unless the objective on the validation split drops by more than "
        "--int8-tolerance; the metadata and model card give the metric deltas, latency and size ratios",
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        default=64,
        metavar="N",
        help="training images the INT8 model is calibrated on (default 64)",
    )
    p.add_argument(
        "--int8-tolerance",
        type=float,
        default=0.01,
        metavar="T",
        help="largest drop of the objective (float32 minus INT8, on validation) accepted, 0 to 1 (default 0.01)",
    )
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="export the fold models of `mednas retrain RUN --folds K` as one bundle whose network averages their "
        "probabilities, with the ensemble's operating point, calibration and test metrics beside the best member's",
    )
    _add_mlflow_arg(p, "log the bundle as the artifact of a run named export (default: the search's URI)")
    _add_threads_arg(p)
    p.set_defaults(func=_cmd_export)


def _add_predict(sub: Any) -> None:
    """Add ``predict``: run an exported bundle on images."""
    p = sub.add_parser(
        "predict",
        help="run an exported bundle on images",
        description="Verify a bundle's checksums, load it (weights_only) and predict. Classification "
        "writes OUT/predictions.csv (probabilities, decision at the exported threshold); segmentation "
        "writes OUT/<name>_seg.nii.gz on each input's own grid and affine, and OUT/predictions.csv. "
        "--format dicom-seg (DICOM inputs): OUT/<name>_seg.dcm, a DICOM Segmentation referencing the source "
        "images, or for classification OUT/<name>.json naming the referenced UIDs.",
    )
    p.add_argument("bundle", help="bundle folder written by mednas export")
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="DICOM series folder, NIfTI, NRRD, PNG or JPEG file"
    )
    p.add_argument("--out", required=True, type=_out_dir, help="output folder (created)")
    p.add_argument(
        "--backend",
        choices=["torch", "torchscript", "onnx", "onnx-int8"],
        default="torch",
        help="run the state dict in PyTorch (default), the TorchScript module, the ONNX model, or the INT8 ONNX "
        "model (onnx-int8: a bundle exported with --quantize int8)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--format",
        choices=["auto", "nifti", "dicom-seg"],
        default="auto",
        help="auto (default) and nifti: NIfTI masks; dicom-seg: a DICOM SEG per input series (segmentation) or a "
        "JSON result naming its UIDs (classification); DICOM inputs only",
    )
    p.add_argument(
        "--expect-digest",
        metavar="HEX",
        help="refuse the bundle unless its digest (printed by mednas export) is this one",
    )
    p.add_argument(
        "--verify-key", metavar="FILE", help="refuse the bundle unless signature.json was made with this key"
    )
    _add_threads_arg(p)
    p.set_defaults(func=_cmd_predict)


def _add_evaluate(sub: Any) -> None:
    """Add ``evaluate``: external validation of a bundle on labelled data."""
    p = sub.add_parser(
        "evaluate",
        help="validate an exported bundle on labelled data it never saw",
        description="Run a frozen bundle (verified as by predict) on labelled data and write "
        "OUT/validation.json and a self-contained OUT/validation.html: AUROC, AUPRC (Dice and lesion "
        "metrics for segmentation), sensitivity, specificity, PPV, NPV, accuracy and balanced accuracy at "
        "the bundle's locked operating point, per-class table, confusion matrix, ECE and reliability "
        "diagram, subgroups, the operating point's promise checked, and overlap with the training images; "
        "every figure with a 95% bootstrap interval over patients. Needs nothing of the run directory.",
    )
    p.add_argument("bundle", help="bundle folder written by mednas export")
    p.add_argument(
        "data", nargs="?", metavar="DATA.yaml", help="task-like YAML with a data: section (and labels:)"
    )
    p.add_argument(
        "--data",
        dest="data_file",
        metavar="FILE",
        help="instead of DATA.yaml: a .npz (MedMNIST), .json datalist, .csv sheet or a folder",
    )
    p.add_argument(
        "--split",
        metavar="NAME",
        help="keep only cases of this given split (e.g. test: MedMNIST's test arrays, a split column)",
    )
    p.add_argument("--out", required=True, type=_out_dir, help="output folder (created)")
    p.add_argument("--expect-digest", metavar="HEX", help="refuse the bundle unless its digest is this one")
    p.add_argument(
        "--verify-key", metavar="FILE", help="refuse the bundle unless signature.json was made with this key"
    )
    p.add_argument(
        "--backend",
        choices=["torch", "torchscript", "onnx", "onnx-int8"],
        default="torch",
        help="default torch; onnx-int8 runs the INT8 model of a bundle exported with --quantize int8",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--resamples",
        type=_int_at_least(50),
        default=1000,
        metavar="N",
        help="bootstrap resamples over patients (default 1000)",
    )
    _add_threads_arg(p)
    p.set_defaults(func=_cmd_evaluate)


def _add_report(sub: Any) -> None:
    """Add ``report``: the run's self-contained HTML report."""
    p = sub.add_parser(
        "report",
        help="write the run's HTML report (plots, figures with intervals, cases)",
        description="Write RUN_DIR/report.html: one file that opens offline (plotly.js inline) with the "
        "optimisation history, Pareto front, parameter importances, proxy-versus-full fidelity, ROC, "
        "precision-recall and calibration curves with the operating point, confusion matrix, lesion "
        "sensitivity by size, pictures of validation cases with ground truth and prediction, the data "
        "fingerprint, splits, task settings and environment. Parts a run lacks (not retrained yet) say so.",
    )
    p.add_argument("run_dir", help="run directory of a search")
    p.add_argument("--out", metavar="FILE", type=_out_file, help="output file (default: RUN_DIR/report.html)")
    p.add_argument(
        "--no-images", action="store_true", help="no case pictures (skips loading weights and data)"
    )
    p.add_argument(
        "--cases",
        type=_int_at_least(1),
        metavar="N",
        help="case pictures to show (default 8 for 2D, 4 for 3D)",
    )
    p.add_argument(
        "--plotlyjs",
        choices=["inline", "beside"],
        default="inline",
        help="plotly.js inside the file (default, ~5 MB) or in plotly-VERSION.min.js beside it",
    )
    p.add_argument(
        "--storage",
        help="Optuna storage URL the search used, for parameter importances (default: RUN_DIR/study.db)",
    )
    p.add_argument("--study-name", help="study name (default: the search's)")
    _add_threads_arg(p)
    p.set_defaults(func=_cmd_report)


def _add_status(sub: Any) -> None:
    """Add ``status``: the trials table and best so far, also while a search runs."""
    p = sub.add_parser(
        "status",
        help="show a run's trials table and best so far (also while it runs)",
        description="Print the trials table (number, state, family, parameters, objective, epochs, "
        "seconds, reason) and the best candidate so far, read from the study storage and the run "
        "directory; works while a search runs in another process or on other machines. Says whether a "
        "search is running (with the time left) or why it stopped (n_trials reached, timeout reached, "
        "interrupted, failed; or not recorded, for a search that was killed).",
    )
    p.add_argument("run_dir", help="run directory of a search")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument(
        "--all",
        action="store_true",
        help="list every trial (default: the latest 30, running ones and the best)",
    )
    p.add_argument("--storage", help="Optuna storage URL the search used (default: RUN_DIR/study.db)")
    p.add_argument("--study-name", help="study name (default: the search's)")
    p.set_defaults(func=_cmd_status)


def _add_splits(sub: Any) -> None:
    """Add ``splits``: the run's splits with original identifiers (``--reveal``)."""
    p = sub.add_parser(
        "splits",
        help="write a run's splits with original identifiers (--reveal, local only)",
        description="Write each case's original identifier (file path relative to the data root, or "
        "file.npz:train[12] for MedMNIST), its split and its hashed case key, as CSV or JSON by the "
        "extension of --out, so a baseline can be trained on exactly the run's split. Identifiers may "
        "identify patients: refused without --reveal and for an --out inside the run directory or a "
        "bundle; splits.json itself stays hashed.",
    )
    p.add_argument("run_dir", help="run directory of a search")
    p.add_argument(
        "--reveal",
        action="store_true",
        help="required: write original identifiers (they may identify patients)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        type=_out_file,
        help="output .csv or .json, outside the run directory",
    )
    p.set_defaults(func=_cmd_splits)


def _add_spaces(sub: Any) -> None:
    """Add ``spaces``: list the search-space families."""
    p = sub.add_parser("spaces", help="list the search-space families")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=_cmd_spaces)


_SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    _add_search,
    _add_retrain,
    _add_calibrate_proxy,
    _add_validate,
    _add_inspect,
    _add_export,
    _add_predict,
    _add_evaluate,
    _add_report,
    _add_status,
    _add_splits,
    _add_spaces,
)


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
    # Deferred ladder promotion: a paused candidate climbs on in a continuation trial (docs/ladder.md).
    continued = (
        f" ({n['continuations']} of them continued a paused ladder trial)" if n.get("continuations") else ""
    )
    print(
        f"  trials: {n.get('complete', 0)} complete, {n.get('pruned', 0)} pruned, {n.get('infeasible', 0)} infeasible, "
        f"{n.get('failed', 0)} failed{continued}; families sampled: "
        f"{', '.join(f'{k} x{v}' for k, v in summary.get('families', {}).items())}"
    )
    best = summary.get("best")
    if not best:
        print("  no trial has completed yet")
        return
    print(
        f"  best: trial {best['trial']}, {best.get('target')} ({best.get('family')}), "
        f"{best.get('params') or 0:,} parameters, spec {best.get('spec_hash')}"
    )
    print(
        f"  objective {summary['objective']['names'][0]} = {best['values'][0]:.4f} ({_best_fidelity(summary)})"
    )
    for name, m in sorted((best.get("metrics") or {}).items()):
        print(f"    {name}: {_fmt_ci(m)}")
    op = best.get("operating_point")
    if op and op.get("threshold") is not None:
        print(f"    operating threshold: {op['threshold']:.4f}")
    print(f"  architecture: {run_dir}/trials/{best['trial']}/spec.json")


def _best_fidelity(summary: dict[str, Any]) -> str:
    """How the best trial's score was measured: on the proxy, or at the ladder's top rung (full resolution)."""
    if summary.get("fidelity") != "ladder":
        return "validation, proxy"
    best = summary.get("best") or {}
    rungs = (summary.get("ladder") or {}).get("rungs") or []
    if rungs and best.get("rung_reached") == len(rungs) - 1:
        return "validation, full resolution on the ladder, one seed"
    return "validation, ladder rung below full resolution"


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
        workers=args.workers,
        gpus=args.gpus,
        trials_per_gpu=args.trials_per_gpu,
        worker=args.worker,
        storage_timeout=args.storage_timeout,
        threads=args.threads,
        mlflow=args.mlflow,
    )
    if not args.worker:
        _print_search_summary(result.summary, result.run_dir)
    return 0


def _fmt_value(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print(indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _fmt_tau_ci(tau: float | None, ci: list[float] | None) -> str:
    if tau is None:
        return "n/a"
    return f"{tau:.2f}" + (f" ({ci[0]:.2f} to {ci[1]:.2f})" if ci else "")


def _print_retrain(result: Any) -> None:
    """Print what ``mednas retrain`` did: settings, the candidates table, the best, cost and proxy fidelity."""
    s = result.summary
    r = s.get("retrain", {})
    fid = result.fidelity
    name = fid.get("objective") or (s.get("objective") or {}).get("names", ["objective"])[0]
    patch = r.get("patch")
    print(f"\nmednas retrain: {s.get('task')} -> {result.run_dir}")
    print(
        f"  full fidelity: {'x'.join(map(str, r.get('shape', [])))}"
        + (f" (patches {'x'.join(map(str, patch['size']))}, sliding-window validation)" if patch else "")
        + f", up to {r.get('max_epochs')} epochs, early stopping after {r.get('patience')}; objective {name}"
    )
    _print_retrain_table(result.candidates)
    if r.get("best") is not None:
        print(f"  best at full fidelity: trial {r['best']} ({result.run_dir}/retrain/{r['best']}/model.pt)")
        _print_calibration(
            next((c for c in result.candidates if c.get("trial") == r["best"]), {}).get("calibration")
        )
    cost = r.get("cost") or {}
    if cost.get("full_over_proxy"):
        print(
            f"  cost: {_fmt_seconds(cost['full_seconds'])} full-fidelity training vs {_fmt_seconds(cost['proxy_seconds'])} proxy "
            f"; one full training {cost['full_over_proxy']:.1f}x one proxy trial"
        )
    _print_fidelity(fid)


def _print_retrain_table(candidates: list[dict[str, Any]]) -> None:
    """One row per retrained candidate; the seed column only when candidates were trained with several seeds."""
    multi = any(c.get("seeds") for c in candidates)
    _print_table(
        [
            "trial",
            "family",
            "params",
            "proxy (val)",
            "full val (95% CI)",
            *(["full val seed mean +- sd (each seed)"] if multi else []),
            "test (95% CI)",
            "test metrics at the val operating point",
        ],
        [_retrain_row(c, multi) for c in candidates],
    )


def _retrain_row(c: dict[str, Any], multi: bool) -> list[str]:
    """A candidate's row: its proxy, full validation and test figures, or the reason it did not complete."""
    if c.get("state") != "complete":
        return [
            str(c["trial"]),
            c.get("family") or "",
            "",
            _fmt_value(c["proxy"]["value"]),
            f"{c['state']}: {c.get('reason')}",
            *([""] if multi else []),
            "",
            "",
        ]
    test = c["test"]["metrics"]
    extra = ""
    if "sensitivity" in test and "specificity" in test:
        extra = f"sens {_fmt_ci(test['sensitivity'])}, spec {_fmt_ci(test['specificity'])}"
    elif "dice" in test:
        extra = f"dice {_fmt_ci(test['dice'])}"
    flag = "" if c.get("learned_majority", c.get("learned")) is not False else " (never learned)"
    return [
        str(c["trial"]),
        c.get("family") or "",
        f"{c.get('params') or 0:,}",
        _fmt_value(c["proxy"]["value"]),
        _fmt_ci(c["val"]["metrics"].get("objective")) + flag,
        *([_fmt_seeds(c)] if multi else []),
        _fmt_ci(test.get("objective")) if test else "n/a (no test split)",
        extra,
    ]


def _fmt_seeds(c: dict[str, Any]) -> str:
    """A candidate's full validation over seeds: ``mean +- sd (each seed)``, or the seeds alone; empty for one."""
    if not c.get("seeds"):
        return ""
    vals = [_fmt_value(v) if v is not None else "failed" for v in (seed["val"] for seed in c["seeds"])]
    if c.get("val_sd") is not None:
        return f"{_fmt_value(c.get('val_mean'))} +- {_fmt_value(c.get('val_sd'))} ({', '.join(vals)})"
    return ", ".join(vals)


def _print_fidelity(fid: dict[str, Any]) -> None:
    """Print how well the proxy ranked the candidates (Kendall tau, regret) against the seed-noise ceiling."""
    if fid.get("kendall_tau") is not None:
        ci = fid.get("kendall_tau_interval")
        print(
            f"  proxy fidelity over {fid['n']} candidates: Kendall tau {fid['kendall_tau']:.2f}"
            + (f" (95% CI {ci[0]:.2f} to {ci[1]:.2f})" if ci else "")
            + (" against the full seed mean" if (fid.get("seeds") or 1) > 1 else "")
            + f", Spearman {fid['spearman']:.2f}, top-1 regret {_fmt_value(fid.get('top1_regret'), 4)}"
        )
    else:
        print(
            f"  proxy fidelity: Kendall tau n/a ({fid.get('reason')}); top-1 regret {_fmt_value(fid.get('top1_regret'), 4)}"
        )
    _print_seed_noise(fid)
    if fid.get("top3_contains_best") is not None:
        print(
            f"  the proxy's top 3 {'contain' if fid['top3_contains_best'] else 'miss'} the best full-fidelity candidate"
            + (f" ({fid['top3_note']})" if fid.get("top3_note") else "")
        )
    print(f"    ({fid['ceiling']['note']})")
    if fid.get("note"):
        print(f"    ({fid['note']})")
    if fid.get("n_not_learning"):
        print(
            f"    {fid['n_not_learning']} candidate(s) never started learning (trials "
            f"{', '.join(map(str, fid['not_learning']))}): flagged, not ranked"
        )
    if fid.get("warning"):
        print(f"  WARNING: {fid['warning']}")


def _print_seed_noise(fid: dict[str, Any]) -> None:
    """Print the seed-noise ceiling of proxy fidelity and the top-1 regret in seed standard deviations."""
    if fid.get("seed_ceiling_tau") is not None:
        ratio = fid.get("tau_over_ceiling")
        print(
            f"  seed-noise ceiling: full training agrees with itself across {fid['seeds']} seeds at Kendall tau "
            f"{fid['seed_ceiling_tau']:.2f}"
            + (f"; the proxy reaches {ratio:.0%} of it" if ratio is not None else "")
        )
    elif fid.get("seed_ceiling_reason"):
        print(f"  seed-noise ceiling: not measured ({fid['seed_ceiling_reason']})")
    if fid.get("regret_in_seed_sd") is not None:
        print(
            f"  top-1 regret is {fid['regret_in_seed_sd']:.1f} seed standard deviations ({_fmt_value(fid.get('seed_sd'), 4)}): "
            + ("within seed noise" if fid.get("regret_within_seed_noise") else "larger than seed noise")
        )


def _print_calibration(cal: dict[str, Any] | None) -> None:
    """Print a classification model's temperature, validation ECE before/after, and its operating-point warnings."""
    if not cal:
        return
    before, after = cal.get("ece_before"), cal.get("ece_after")
    print(
        f"  calibration (validation): temperature {cal['temperature']:.3f}; ECE {_fmt_value(before)} -> {_fmt_value(after)}; "
        "the operating point is chosen on the calibrated probabilities"
    )
    for w in cal.get("warnings") or []:
        print(f"  WARNING: {w}")


def _cmd_retrain(args: argparse.Namespace) -> int:
    from mednas import api

    result = api.retrain(
        args.run_dir,
        top_k=args.top_k,
        epochs=args.epochs,
        patch=args.patch,
        device=args.device,
        storage=args.storage,
        study_name=args.study_name,
        seeds=args.seeds,
        show_progress=not args.quiet,
        threads=args.threads,
        folds=args.folds,
        mlflow=args.mlflow,
    )
    if result.folds:
        _print_fold_retrain(result)
    else:
        _print_retrain(result)
    return 0


def _print_fold_retrain(result: Any) -> None:
    """Print a cross-validated retrain: each candidate's fold scores and mean with its t interval, the ensemble."""
    r = result.summary.get("retrain", {})
    name = result.fidelity.get("objective") or "objective"
    print(f"\nmednas retrain --folds {result.folds}: {result.summary.get('task')} -> {result.run_dir}")
    print(
        f"  {result.folds} patient-grouped folds over train+val ({r.get('folds_file')}); validation {name} per fold, "
        "mean +- SD (95% t interval over folds)"
    )
    rows = []
    for c in result.candidates:
        ci = c.get("val_ci95")
        rows.append(
            [
                str(c["trial"]),
                c.get("family") or "",
                _fmt_value((c.get("proxy") or {}).get("value")),
                ", ".join(_fmt_value(f["val"]) for f in c["folds"]),
                (
                    f"{_fmt_value(c.get('val_mean'))} +- {_fmt_value(c.get('val_sd'))}"
                    + (f" ({ci[0]:.3f} to {ci[1]:.3f})" if ci else "")
                    if c.get("val_mean") is not None
                    else f"{c['state']}: {c.get('reason')}"
                ),
            ]
        )
    _print_table(["trial", "family", "proxy (val)", "fold values", "fold mean +- sd (95% CI)"], rows)
    ens = result.ensemble
    if not ens:
        print("  no candidate completed every fold: nothing was tested")
        return
    member = ens["best_member"]
    ens_test = (ens["test"].get("metrics") or {}).get("objective")
    member_test = ((member.get("test") or {}).get("metrics") or {}).get("objective")
    print(f"  chosen by fold mean: trial {ens['trial']}; test split evaluated once per final model")
    print(f"  ensemble of {ens['k']} fold models: test {name} {_fmt_ci(ens_test) if ens_test else 'n/a'}")
    print(
        f"  best member (fold {member['fold']}, {member['dir']}): test {name} "
        f"{_fmt_ci(member_test) if member_test else 'n/a'}"
    )
    print(f"  export the ensemble: mednas export {result.run_dir} --ensemble")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from mednas import api

    result = api.calibrate_proxy(
        args.task,
        presets=args.preset,
        overrides=args.overrides,
        run_dir=args.run_dir,
        n_specs=args.specs,
        grid=args.grid,
        min_tau=args.min_tau,
        full_epochs=args.full_epochs,
        full_seeds=args.full_seeds,
        proxy_seeds=args.proxy_seeds,
        device=args.device,
        show_progress=not args.quiet,
        threads=args.threads,
    )
    rec = result.record
    full = rec["full"]
    print(
        f"\nmednas calibrate-proxy: {rec['task']}, {len(rec['specs'])} random specs -> {result.run_dir}/calibration.json"
    )
    print(
        f"  full fidelity: {'x'.join(map(str, full['shape']))}, up to {full['max_epochs']} epochs, "
        f"{rec.get('full_seeds', 1)} seed(s): {_fmt_seconds(full['seconds'])} in all"
        + (
            f"; {full['n_not_learning']} spec(s) never learned (left out of tau)"
            if full.get("n_not_learning")
            else ""
        )
    )
    ceiling = rec.get("seed_ceiling") or {}
    if ceiling.get("kendall_tau") is not None:
        print(
            f"  seed-noise ceiling: full-fidelity seeds agree at Kendall tau {_fmt_tau_ci(ceiling['kendall_tau'], ceiling.get('interval'))}"
            " (no proxy can rank better)"
        )
    rows = []
    for row in rec["settings"]:
        top3 = row.get("top3_contains_best")
        rows.append(
            [
                row["setting"],
                "x".join(map(str, row["shape"])),
                str(row["epochs"]),
                _fmt_tau_ci(row["kendall_tau"], row.get("kendall_tau_interval")),
                _fmt_value(row.get("kendall_tau_all"), 2),
                _fmt_value(row["spearman"], 2),
                _fmt_value(row["top1_regret"], 3),
                "n/a" if top3 is None else ("yes" if top3 else "no"),
                _fmt_seconds(row["seconds"]),
                f"{row['cost_fraction']:.0%}" if row["cost_fraction"] is not None else "n/a",
                str(row["n_not_learning"]),
            ]
        )
    _print_table(
        [
            "setting",
            "shape",
            "epochs",
            "tau (95% CI)",
            "tau incl. non-learners",
            "rho",
            "regret",
            "top-3 hit",
            "cost",
            "of full",
            "not learning",
        ],
        rows,
    )
    print(f"  {rec['ceiling']['note']}")
    print(f"  {rec['recommendation']['message']}")
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
        print(
            f"{args.task}: task {cfg.name!r} ({cfg.problem}, {cfg.spatial_dims}D, objective {cfg.objective.name})"
        )
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


def _cmd_export(args: argparse.Namespace) -> int:
    from mednas import api

    result = api.export(
        args.run_dir,
        args.out,
        formats=args.format,
        schema=args.schema,
        license_file=args.license,
        sign_key=args.sign_key,
        threads=args.threads,
        quantize=args.quantize,
        calibration_images=args.calibration_images,
        int8_tolerance=args.int8_tolerance,
        ensemble=args.ensemble,
        mlflow=args.mlflow,
    )
    m = result.metadata["mednas"]
    print(f"\nmednas export: {m['task']['name']} -> {result.path}")
    source = {
        "proxy": "PROXY CANDIDATE, NOT RETRAINED (short low-resolution proxy weights; run `mednas retrain` first "
        "for a model worth validating)",
        "ladder": "FULL-RESOLUTION LADDER CANDIDATE, NOT RETRAINED (trained at full resolution on the search's "
        "resolution ladder, one seed, no test-split evaluation: run `mednas retrain` for seeds and the held-out test)",
    }.get(result.source, "retrained at full fidelity")
    if m.get("ensemble"):
        source = f"{m['source_label']} (best member: fold {m['ensemble']['best_member']['fold']})"
    print(f"  source: trial {result.trial}, {m['spec']['target']} ({m['params']:,} parameters), {source}")
    p = m["pipeline"]
    print(
        f"  inputs resized to {'x'.join(map(str, p['shape']))} ({p['resize_mode']}), normalisation {p['normalize']}"
        + (f", reoriented to {p['orientation']}" if p.get("orientation") else "")
        + (f", sliding windows {'x'.join(map(str, p['patch']))}" if p.get("patch") else "")
    )
    if p.get("threshold") is not None:
        op = m.get("operating_point") or {}
        print(
            f"  operating threshold {p['threshold']:.4f} on the finding score ({op.get('rule')}, chosen on validation)"
        )
    _print_calibration(m.get("temperature_scaling"))
    for split, metrics in (m.get("metrics") or {}).items():
        shown = ", ".join(
            f"{k} {_fmt_ci(v)}"
            for k, v in sorted(metrics.items())
            if k in ("objective", "auroc", "sensitivity", "specificity", "dice", "lesion_sensitivity")
        )
        print(
            f"  {split}: {shown}"
            if shown
            else f"  {split}: no figures (the task has no {split} split; check the "
            "bundle with `mednas evaluate` on held-out data)"
        )
    if m.get("ensemble"):
        best = m["ensemble"]["best_member"]
        print(
            f"  best member (fold {best['fold']}): test objective "
            f"{_fmt_ci(best['metrics']['test'].get('objective'))} (ensemble's above)"
        )
    for fmt, conv in result.conversions.items():
        print(
            f"  {fmt} ({conv['method']}): max |diff| from eager PyTorch {conv['max_abs_diff']:.2e} over "
            f"{conv['n_inputs']} inputs, outputs up to {conv.get('output_max_abs', float('nan')):.3g} "
            f"(tolerance {conv['tolerance']:.0e}), {conv['seconds']:.1f}s"
        )
    chk = result.checks
    agreement = chk.get("pipeline_agreement") or {}
    print(
        f"  checks: metadata ({chk.get('metadata')}), network in/out (monai.bundle verify_net_in_out), "
        f"mednas predict = inference.json (max |diff| {agreement.get('max_abs_diff', float('nan')):.1e}), checksums"
    )
    if m["data"].get("simulated"):
        print("  data: SIMULATED (the model card says so)")
    if m["data"].get("augmentation"):
        print("  data: AUGMENTED COPIES (the model card says so)")
    print(f"  {len(result.files)} files in {result.seconds:.1f}s; model card: {result.path}/docs/README.md")
    print(f"  bundle digest: {result.digest}" + (" (signed: signature.json)" if result.signed else ""))
    print(f"  pin it: mednas predict {result.path} ... --expect-digest {result.digest}")
    return _print_int8(result.int8, result.path)


def _print_int8(rec: dict[str, Any] | None, bundle: Any) -> int:
    """Print the INT8 model's figures; when it was refused, the one-line reason on stderr and status 1."""
    if rec is None:
        return 0

    def delta(name: str, row: dict[str, Any]) -> str:
        if row.get("delta") is None:
            return f"{name} n/a"
        low, high = row.get("delta_ci95") or [None, None]
        ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
        return f"{name} {row['delta']:+.3f}{ci}"

    lat, size = rec["latency"], rec["size"]
    print(
        f"  int8: {', '.join(delta(k, v) for k, v in rec['metrics'].items())} (INT8 - float32 on "
        f"{rec['evaluated_on']['n_patients']} validation patients); latency ratio {lat['ratio']:.2f} "
        f"({lat['threads']} thread, {lat['hardware']}); size ratio {size['ratio']:.2f}"
    )
    if rec.get("accepted"):
        print(f"  int8 model: {bundle}/{rec['file']} (predict/evaluate --backend onnx-int8)")
        if lat.get("ratio") is not None and lat["ratio"] < 1:
            from mednas.bundle._model_card import SLOWER_NOTE

            print(f"  note: {SLOWER_NOTE}")
        return 0
    print(
        f"mednas export: INT8 model not written: {rec.get('reason')}; the float32 bundle at {bundle} is complete",
        file=sys.stderr,
    )
    return 1


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from mednas import api

    preds, files = api.predict(
        args.bundle,
        args.inputs,
        args.out,
        backend=args.backend,
        device=args.device,
        expect_digest=args.expect_digest,
        verify_key=args.verify_key,
        threads=args.threads,
        format=args.format,
    )
    model_note = preds[0].source if preds else ""
    print(f"\nmednas predict: {len(preds)} input(s) -> {args.out} ({args.backend}; model: {model_note})")
    for pred in preds:
        if pred.mask is not None:
            counts = {int(v): int(n) for v, n in zip(*np.unique(pred.mask.array, return_counts=True))}
            print(
                f"  {pred.case}: mask {'x'.join(map(str, pred.mask.spatial_shape))}, voxels per label {counts}"
            )
        else:
            decision = (
                ""
                if pred.decision is None
                else f", {'FINDING' if pred.decision else 'no finding'} at {pred.threshold:.4f}"
            )
            print(f"  {pred.case}: {pred.label} (finding score {pred.finding_score:.4f}{decision})")
    print(f"  wrote {', '.join(f.name for f in files)}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mednas import api
    from mednas.errors import ConfigError

    if (args.data is None) == (args.data_file is None):
        raise ConfigError("evaluate: give either DATA.yaml or --data FILE (see mednas evaluate --help)")
    result = api.evaluate(
        args.bundle,
        args.data if args.data is not None else args.data_file,
        out=args.out,
        split=args.split,
        expect_digest=args.expect_digest,
        verify_key=args.verify_key,
        backend=args.backend,
        device=args.device,
        n_resamples=args.resamples,
        threads=args.threads,
    )
    rec = result.record
    b = rec["bundle"]
    print(
        f"\nmednas evaluate: {b['task']} bundle ({b.get('source_label') or b.get('source')}) on {rec['population']}"
    )
    print(
        f"  bundle digest {b['digest']}"
        + (" (pinned)" if b.get("digest_pinned") else " (not pinned: pass --expect-digest)")
    )
    shown = (
        "auroc",
        "auprc",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "accuracy",
        "balanced_accuracy",
        "ece",
        "dice",
        "lesion_sensitivity",
        "false_positive_lesions_per_case",
    )
    for name in shown:
        if name in rec["metrics"]:
            print(f"  {name}: {_fmt_ci(rec['metrics'][name])}")
    op = rec.get("operating_point")
    if op:
        flag = {"failed": "PROMISE FAILED", "uncertain": "PROMISE UNCERTAIN", "held": "promise held"}.get(
            op.get("status"), ""
        )
        thr = op.get("threshold")
        print(
            f"  operating point {'none' if thr is None else f'{thr:.4f}'} ({op.get('rule')}): {op.get('text')}"
            + (f"  <-- {flag}" if flag else "")
        )
        would = op.get("would_meet_here") or {}
        if would.get("threshold") is not None:
            print(
                f"    the same rule on these data would pick threshold {would['threshold']:.4f} (information only, not applied)"
            )
    print(f"  overlap with training: {rec['overlap']['text']}")
    if rec["subgroups"]["attributes"]:
        print(f"  subgroups by {', '.join(rec['subgroups']['attributes'])} (see the HTML)")
    print(f"  wrote {result.path} and {result.html} in {result.seconds:.1f}s")
    if result.failures:
        print(
            f"mednas: error: {result.failures[0][1]} ({len(result.failures)} of {rec['data']['n_selected']} cases "
            f"failed, listed in {result.path.parent / 'failed.csv'}; left out of every metric)",
            file=sys.stderr,
        )
        return 7
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mednas import api

    result = api.report(
        args.run_dir,
        args.out,
        images=not args.no_images,
        n_cases=args.cases,
        storage=args.storage,
        study_name=args.study_name,
        plotlyjs=args.plotlyjs,
        threads=args.threads,
    )
    print(
        f"\nmednas report: {result.path} ({result.size_bytes / 2**20:.1f} MB, {len(result.figures)} plots, "
        f"{result.images} case pictures, {result.seconds:.1f}s)"
    )
    for note in result.notes:
        print(f"  left out: {note}")
    for err in result.errors:
        print(f"  not drawn (a bug; please report it): {err}")
    print(f"  open it in a browser: file://{result.path.resolve()}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from mednas import api
    from mednas.reporting import format_status

    status = api.status(args.run_dir, storage=args.storage, study_name=args.study_name)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(format_status(status, max_rows=None if args.all else 30))
    return 0


def _cmd_splits(args: argparse.Namespace) -> int:
    from mednas import api

    path = api.reveal_splits(args.run_dir, args.out, reveal=args.reveal)
    print(f"mednas splits: {path} (original identifiers: keep this file local)")
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    from mednas.spaces import SPACES, list_spaces

    for name in list_spaces(args.pattern):
        cls = SPACES.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:12s} {'/'.join(cls.problems):28s} min size {cls.min_input_size:<4d} {doc}")
    return 0


# ---------------------------------------------------------------------------------------------------- main


def _configure_logging(debug: bool, quiet: bool, log_json: bool = False) -> None:
    from mednas._logging import configure_logging

    configure_logging(debug=debug, quiet=quiet, json_lines=log_json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mednas`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from mednas._versions import package_version

        print(f"mednas {package_version('mednas') or 'unknown (not installed)'}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    if sys.argv[1:] == argv:
        if getattr(args, "threads", None):
            # Before torch (and the re-executed process) starts: OpenMP and MKL read these once, at load.
            os.environ.update(
                {k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
            )
        _maybe_reexec_with_malloc_tuning(argv)
    log_json = bool(getattr(args, "log_json", False))
    _configure_logging(args.debug, args.quiet, log_json)
    if args.quiet or log_json:
        os.environ["MEDNAS_NO_PROGRESS"] = "1"  # a bar would break the JSON lines on stderr
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
    except RecursionError:
        if args.debug:
            raise
        print(
            "mednas: error: an input is nested too deeply to read (a hostile or broken file?)",
            file=sys.stderr,
        )
        return 2
    except MemoryError:
        if args.debug:
            raise
        print(
            "mednas: error: out of memory (an input declares more data than this machine can hold?)",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: one line and exit 70 (EX_SOFTWARE); --debug shows it
        if args.debug:
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        print(
            f"mednas: internal error: {type(exc).__name__}: {first} (a bug in mednas: rerun with --debug for the "
            "traceback and report it)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
