"""The run directory's layout: one place that knows where each record lives.

Every step (search, retrain, export, report) reads and writes one run directory; paths stored inside it are
relative to it. Writes are atomic (see :mod:`mednas.io._atomic`).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mednas.errors import RunDirError
from mednas.io._atomic import read_json, write_json, write_text

__all__ = ["RunDir", "environment_info"]


@dataclass(frozen=True)
class RunDir:
    """Paths of a run directory.

    Example:
        >>> rd = RunDir("runs/demo")
        >>> rd.trial_dir(3).as_posix()
        'runs/demo/trials/3'
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    # records
    @property
    def resolved(self) -> Path:
        return self.root / "resolved.yaml"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def salt(self) -> Path:
        return self.root / ".salt"

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def log(self) -> Path:
        return self.root / "search.log"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def trial_dir(self, number: int) -> Path:
        return self.root / "trials" / str(number)

    def retrain_dir(self, number: int) -> Path:
        return self.root / "retrain" / str(number)

    def default_storage(self) -> str:
        """SQLite storage inside the run directory (Optuna's RDB storage)."""
        return f"sqlite:///{self.study_db.resolve()}"

    def require(self, *paths: Path, step: str = "this step") -> None:
        """Raise :class:`RunDirError` naming the first missing record."""
        if not self.root.is_dir():
            raise RunDirError(f"{self.root}: not a run directory (run `mednas search` first)")
        for p in paths:
            if not p.exists():
                raise RunDirError(f"{self.root}: {p.relative_to(self.root)} is missing; {step} needs it")

    def read_json(self, path: Path) -> Any:
        try:
            return read_json(path)
        except FileNotFoundError:
            raise RunDirError(f"{path}: missing") from None
        except ValueError as exc:
            raise RunDirError(f"{path}: not valid JSON ({exc})") from None

    def write_json(self, path: Path, obj: Any) -> Path:
        return write_json(path, obj)

    def write_text(self, path: Path, text: str) -> Path:
        return write_text(path, text)

    def rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the run directory, POSIX style."""
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: str, seed: int) -> dict[str, Any]:
    """Versions, device, seed and git commit: what ``env.json`` records."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for pkg in ("mednas", "torch", "monai", "optuna", "numpy", "pydantic", "nibabel", "pydicom", "scikit-image", "scikit-learn", "scipy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname_hash": __import__("hashlib").sha256(socket.gethostname().encode()).hexdigest()[:12],
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "device": device,
        "seed": seed,
        "git_commit": _git_commit(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except Exception:  # noqa: BLE001 - environment reporting must never fail a run
        pass
    return info
