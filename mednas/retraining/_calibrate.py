"""Choose the proxy on the user's own data: which resolution and epoch budget rank candidates like full training?

:func:`calibrate_proxy` samples M random specs from the task's search spaces, trains each at every setting of a
small grid (resolution scale x epochs, plus the task's current proxy) and at full fidelity, and reports per
setting the Kendall tau against the full-fidelity ranking and the cost. It recommends the cheapest setting that
reaches a declared tau. Only the training and validation splits are read: the test split stays untouched.

With ``full_seeds`` >= 2 every spec is trained at full fidelity once per seed: the specs are ranked by their seed
mean, and the agreement between seeds (``seed_ceiling``) is the most any proxy could reach. With ``proxy_seeds``
>= 2 each proxy setting is trained once per seed too, ranked by the proxy seed mean, and its self-agreement is
recorded. Every tau carries a percentile bootstrap interval over specs. This is the protocol
``benchmarks/fidelity.py`` runs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednas._progress import ProgressBar
from mednas.config import TaskConfig
from mednas.data import ArrayData, DataPlan
from mednas.retraining._fidelity import (
    bootstrap_tau_interval,
    ceiling_note,
    mean_std,
    rank_agreement,
    seed_ceiling,
    top1_regret,
)
from mednas.rundir import RunDir
from mednas.train import Fidelity, FitResult, space_context, space_for, suggest_imbalance, train_candidate

logger = logging.getLogger("mednas.calibrate")

__all__ = ["CalibrationResult", "ProxySetting", "calibrate_proxy", "parse_grid"]

DEFAULT_SCALES = (0.25, 0.5)
DEFAULT_EPOCHS = (2, 5)
_SPEC_TAG = 0xCA1  # separates calibration's spec-sampling seeds from the search's trial seeds


@dataclass(frozen=True)
class ProxySetting:
    """One proxy setting: an input shape (from a scale of the full shape, or the task's own) and epochs."""

    shape: tuple[int, ...]
    epochs: int
    scale: float | None = None
    current: bool = False

    @property
    def label(self) -> str:
        """A readable name, e.g. ``scale 0.25 x 2 epochs``."""
        where = f"scale {self.scale:g}" if self.scale is not None else "x".join(map(str, self.shape))
        return f"{where} x {self.epochs} ep" + (" (task's proxy)" if self.current else "")

    @property
    def key(self) -> str:
        return f"{'x'.join(map(str, self.shape))}@{self.epochs}"


@dataclass
class CalibrationResult:
    """What :func:`calibrate_proxy` returns: the run directory and the ``calibration.json`` record."""

    run_dir: Path
    record: dict[str, Any] = field(default_factory=dict)


def parse_grid(text: str | Sequence[str]) -> list[tuple[float, int]]:
    """Parse ``"0.25x2,0.5x5"`` (or a list of ``SCALExEPOCHS``) into ``[(0.25, 2), (0.5, 5)]``.

    Raises:
        ConfigError: For an entry that is not ``SCALExEPOCHS`` with ``0 < scale <= 1`` and ``epochs >= 1``.
    """
    from mednas.errors import ConfigError

    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            scale_s, epochs_s = item.lower().split("x")
            scale, epochs = float(scale_s), int(epochs_s)
        except ValueError:
            raise ConfigError(f"--grid {item!r}: expected SCALExEPOCHS, e.g. 0.25x2") from None
        if not (0 < scale <= 1) or epochs < 1:
            raise ConfigError(f"--grid {item!r}: scale must be in (0, 1] and epochs at least 1")
        out.append((scale, epochs))
    if not out:
        raise ConfigError("--grid: no settings given")
    return out


def _settings(
    task: TaskConfig, plan: DataPlan, grid: Sequence[tuple[float, int]], min_size: int
) -> list[ProxySetting]:
    full = plan.full_shape
    out: list[ProxySetting] = []
    for scale, epochs in grid:
        shape = tuple(min(s, max(min_size, int(round(s * scale)))) for s in full)
        out.append(ProxySetting(shape, int(epochs), float(scale)))
    current = ProxySetting(
        tuple(plan.proxy_shape), task.proxy.epochs, None if task.proxy.shape else task.proxy.scale, True
    )
    keys = {s.key for s in out}
    if current.key in keys:
        out = [ProxySetting(s.shape, s.epochs, s.scale, True) if s.key == current.key else s for s in out]
    else:
        out.append(current)
    unique: dict[str, ProxySetting] = {}
    for s in out:
        unique.setdefault(s.key, s)
    return sorted(unique.values(), key=lambda s: (math.prod(s.shape) * s.epochs, s.epochs))


@dataclass(frozen=True)
class _Candidate:
    """A sampled spec with the loss and batch sampling the search would pair it with."""

    spec: Any
    loss: str | None = None
    sampling: str | None = None

    @property
    def hash(self) -> str:
        extra = [v for v in (self.loss, self.sampling) if v]
        return ":".join([self.spec.hash, *extra])

    def to_dict(self, index: int) -> dict[str, Any]:
        s = self.spec
        return {
            "index": index,
            "family": s.family,
            "target": s.target,
            "spec_hash": s.hash,
            "loss": self.loss,
            "sampling": self.sampling,
            "kwargs": dict(s.kwargs),
        }


def _sample_specs(task: TaskConfig, plan: DataPlan, shape: tuple[int, ...], n_specs: int) -> list[_Candidate]:
    """Draw ``n_specs`` distinct, within-budget candidates with seeded :class:`~mednas.testing.RandomTrial`.

    Like a search trial, each draws a family, the family's architecture and, where the task searches them, a
    loss (``search.losses``) and a batch sampling (``search.sampling``).
    """
    from mednas.errors import ConfigError
    from mednas.spaces import RandomTrial, check_budget, estimate_cost
    from mednas.train import derive_seed

    ctx = space_context(task, shape, plan.full_shape)
    spaces = {name: space_for(task, name) for name in task.search.spaces}
    spaces = {name: sp for name, sp in spaces.items() if sp.supports(ctx) is None}
    if not spaces:
        raise ConfigError(
            f"search.spaces: no family can take the smallest calibration shape {list(shape)}; use larger --grid scales"
        )
    b = task.search.budget
    losses = list(getattr(task.search, "losses", None) or [])
    samplings = list(getattr(task.search, "sampling", None) or [])
    out: list[_Candidate] = []
    seen: set[str] = set()
    for attempt in range(max(50, 20 * n_specs)):
        trial = RandomTrial(derive_seed(task.search.seed, attempt, _SPEC_TAG))
        family = trial.suggest_categorical("family", sorted(spaces))
        try:
            spec = spaces[family].sample(trial, ctx)
            full_spec = spaces[family].adapt_to_shape(spec, plan.full_shape)
            cost = estimate_cost(full_spec, plan.full_shape, batch_size=task.training.batch_size)
            per_image = estimate_cost(full_spec, plan.full_shape, batch_size=1)
        except ValueError:
            continue
        if losses or samplings:
            candidate = _Candidate(spec, *suggest_imbalance(trial, task))
        else:
            candidate = _Candidate(spec, None, None)
        over = check_budget(cost, max_params=b.max_params, max_activation_mb=b.max_activation_mb) or (
            b.max_macs is not None and per_image.macs > b.max_macs
        )
        if candidate.hash in seen or over:
            continue
        seen.add(candidate.hash)
        out.append(candidate)
        if len(out) == n_specs:
            break
    if len(out) < n_specs:
        logger.warning(
            "only %d distinct specs within budget could be sampled (asked for %d)", len(out), n_specs
        )
    return out


def calibrate_proxy(
    task: TaskConfig,
    run_dir: str | os.PathLike[str],
    *,
    n_specs: int = 8,
    grid: Sequence[tuple[float, int]] | None = None,
    min_tau: float = 0.6,
    full_epochs: int | None = None,
    full_seeds: int = 1,
    proxy_seeds: int = 1,
    device: str | None = None,
    show_progress: bool = True,
) -> CalibrationResult:
    """Measure which proxy setting ranks random candidates like full-fidelity training, and at what cost.

    Args:
        task: The validated task.
        run_dir: Where ``calibration.json`` (and the data plan's ``fingerprint.json``/``splits.json``) go; a
            re-run with the same settings re-uses the trainings already recorded there.
        n_specs: How many random specs to train (tau over n specs moves in steps of ``4 / (n (n - 1))``).
        grid: ``(scale, epochs)`` settings (default: scales 0.25 and 0.5 x epochs 2 and 5); the task's own
            proxy is always added.
        min_tau: The Kendall tau the recommended setting must reach.
        full_epochs: Maximum full-fidelity epochs (default: ``training.epochs``).
        full_seeds: Full-fidelity trainings per spec with different seeds; 2 or more measure the seed-noise
            ceiling (``seed_ceiling``) and rank specs by their seed mean.
        proxy_seeds: Trainings per spec at each proxy setting; 2 or more rank by the proxy seed mean and record
            each setting's self-agreement (``proxy_self_tau``).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (default: the task's).
        show_progress: Progress bar on stderr (``MEDNAS_NO_PROGRESS=1`` also disables it).

    Returns:
        The run directory and the record written to ``calibration.json``: ``settings`` (one row per setting with
        ``kendall_tau`` and its ``kendall_tau_interval``, ``kendall_tau_all`` (non-learners included),
        ``spearman``, ``top1_regret``, ``top3_contains_best``, ``seconds``, ``cost_fraction``), ``full``,
        ``seed_ceiling``, ``specs`` and ``recommendation``.

    Example:
        >>> from mednas import load_config
        >>> result = calibrate_proxy(load_config("tasks/demo-xray-nodule.yaml"), "runs/cal")  # doctest: +SKIP
        >>> result.record["recommendation"]["setting"]  # doctest: +SKIP
    """
    from mednas.data import plan_data, read_or_create_salt
    from mednas.errors import ConfigError
    from mednas.train import select_device

    if full_seeds < 1 or proxy_seeds < 1:
        raise ConfigError(
            f"--full-seeds and --proxy-seeds must be at least 1, got {full_seeds} and {proxy_seeds}"
        )
    rd = _open_run_dir(task, run_dir)
    dev = select_device(device or task.device)
    grid = list(grid) if grid else [(s, e) for s in DEFAULT_SCALES for e in DEFAULT_EPOCHS]
    bar = _Progress(enabled=show_progress)
    try:
        plan = plan_data(task, rd, salt=read_or_create_salt(rd), progress=bar.stage)
        if not rd.resolved_path.exists():
            rd.write_task(task)
        settings, specs, full = _design(task, plan, grid, n_specs, full_epochs)
        cal = _Calibration(task, rd, plan, specs, settings, full, dev, min_tau, full_seeds, proxy_seeds)
        bar.start(*cal.counts())
        _log_start(task, cal, dev)
        # Cheap settings first, full fidelity last: the table fills in cost order.
        for setting in [*settings, None]:
            cal.train_setting(setting, bar)
        rec = cal.write()
    finally:
        bar.close()
    logger.info("%s", rec["recommendation"]["message"])
    return CalibrationResult(rd.root, rec)


def _open_run_dir(task: TaskConfig, run_dir: str | os.PathLike[str]) -> RunDir:
    """The calibration's run directory, created; refused when it holds a run of another configuration."""
    from mednas.config import config_hash

    rd = RunDir(run_dir)
    if rd.resolved_path.exists():
        from mednas.errors import RunDirError

        if config_hash(rd.task()) != config_hash(task):
            raise RunDirError(f"{rd.root} holds a run of a different configuration; use another --run-dir")
    rd.root.mkdir(parents=True, exist_ok=True)
    return rd


def _log_start(task: TaskConfig, cal: _Calibration, device: str) -> None:
    """Log what the calibration trains: specs, proxy settings and full fidelity, seeds, device."""
    full, full_seeds, proxy_seeds = cal.full, cal.full_seeds, cal.proxy_seeds
    logger.info(
        "calibrate-proxy %s: %d specs x %d proxy settings (%d seed%s) + full fidelity (%s, up to %d epochs, %d "
        "seed%s), device %s",
        task.name,
        len(cal.specs),
        len(cal.settings),
        proxy_seeds,
        "" if proxy_seeds == 1 else "s",
        "x".join(map(str, full.shape)),
        full.epochs,
        full_seeds,
        "" if full_seeds == 1 else "s",
        device,
    )


def _design(
    task: TaskConfig, plan: DataPlan, grid: Sequence[tuple[float, int]], n_specs: int, full_epochs: int | None
) -> tuple[list[ProxySetting], list[_Candidate], Fidelity]:
    """The proxy settings, the sampled candidates and full fidelity of one calibration."""
    # Small scales are raised to the largest minimum input size among the task's families, so every family
    # can be sampled and trained at every setting.
    families = [space_for(task, n) for n in task.search.spaces]
    min_size = max([8] + [sp.min_input_size for sp in families if task.problem in sp.problems])
    settings = _settings(task, plan, grid, min_size)
    sample_shape = tuple(min(s.shape[a] for s in settings) for a in range(task.spatial_dims))
    specs = _sample_specs(task, plan, sample_shape, n_specs)
    return settings, specs, Fidelity.full(task, plan.full_shape, epochs=full_epochs)


class _Calibration:
    """The trainings of one calibration, recorded in ``calibration.json`` after each (so a re-run resumes)."""

    def __init__(
        self,
        task: TaskConfig,
        rd: RunDir,
        plan: DataPlan,
        specs: list[_Candidate],
        settings: list[ProxySetting],
        full: Fidelity,
        device: str,
        min_tau: float,
        full_seeds: int,
        proxy_seeds: int,
    ) -> None:
        from mednas.config import config_hash

        self.task, self.rd, self.plan, self.specs, self.settings, self.full = (
            task,
            rd,
            plan,
            specs,
            settings,
            full,
        )
        self.device, self.min_tau, self.full_seeds, self.proxy_seeds = (
            device,
            min_tau,
            full_seeds,
            proxy_seeds,
        )
        self.path = rd.root / "calibration.json"
        self.identity = {
            "config_hash": config_hash(task),
            "specs": [s.hash for s in specs],
            "full": full.to_dict(),
        }
        self.runs = self._previous_runs()

    def _previous_runs(self) -> dict[str, dict[str, Any]]:
        """The trainings a previous calibration with the same identity recorded (proxy ones only if full changed)."""
        if not self.path.exists():
            return {}
        old = self.rd.read_json(self.path)
        same = old.get("identity") or {}
        identity = self.identity
        if same == identity:
            runs = dict(old.get("runs", {}))
            logger.info("re-using %d trainings recorded in %s", len(runs), self.path)
            return runs
        if {k: v for k, v in same.items() if k != "full"} == {
            k: v for k, v in identity.items() if k != "full"
        }:
            # Only the full-fidelity settings changed (e.g. --full-epochs): the proxy trainings still hold.
            runs = {k: v for k, v in old.get("runs", {}).items() if k.split("|")[1] != "full"}
            logger.info(
                "full-fidelity settings changed: re-using %d proxy trainings recorded in %s, training full "
                "fidelity afresh",
                len(runs),
                self.path,
            )
            return runs
        return {}

    def counts(self) -> tuple[int, int]:
        """How many trainings the calibration has, and how many of them are already recorded."""
        wanted = {
            _run_key(c, st, k)
            for c in self.specs
            for st in [*self.settings, None]
            for k in range(self.full_seeds if st is None else self.proxy_seeds)
        }
        return len(wanted), len(wanted & set(self.runs))

    def seed_of(self, i: int, k: int) -> int:
        """The seed of spec ``i``'s training number ``k`` (at every setting the same)."""
        from mednas.train import derive_seed

        # The first seed is the one calibration always used, so earlier records stay valid.
        seed = self.task.search.seed
        return derive_seed(seed, i, _SPEC_TAG) if k == 0 else derive_seed(seed, i, _SPEC_TAG, k)

    def fidelity(self, setting: ProxySetting | None) -> Fidelity:
        """The proxy fidelity of ``setting`` (the search's proxy at that shape and epochs), or full fidelity."""
        if setting is None:
            return self.full
        return Fidelity.proxy(self.task, setting.shape, epochs=setting.epochs)

    def train_setting(self, setting: ProxySetting | None, bar: _Progress) -> None:
        """Train every spec (and seed) not yet recorded at ``setting`` (None: full fidelity)."""
        n_seeds = self.full_seeds if setting is None else self.proxy_seeds
        pending = [
            (i, k)
            for k in range(n_seeds)
            for i, s in enumerate(self.specs)
            if _run_key(s, setting, k) not in self.runs
        ]
        if not pending:
            return
        label = setting.label if setting else "full fidelity"
        train, val = self.data(setting, progress=lambda split, d, t: bar.stage(f"{label}: {split}", d, t))
        for i, k in pending:
            cand = self.specs[i]
            bar.run(label + (f", seed {k + 1}/{n_seeds}" if n_seeds > 1 else ""), i, len(self.specs))
            self.runs[_run_key(cand, setting, k)] = self._train_one(
                cand, i, k, setting, train, val, label, bar
            )
            bar.advance()
            self.write()

    def data(
        self, setting: ProxySetting | None, progress: Callable[[str, int, int], None] | None = None
    ) -> tuple[ArrayData, ArrayData]:
        """Training and validation arrays at ``setting`` (None: full fidelity), as the search loads its proxy's."""
        return self.fidelity(setting).load(self.plan, seed=self.task.search.seed, progress=progress)

    def train(
        self,
        cand: _Candidate,
        setting: ProxySetting | None,
        seed: int,
        train: ArrayData,
        val: ArrayData,
        on_epoch: Callable[[Any], None] | None = None,
    ) -> FitResult:
        """Train ``cand`` at ``setting`` with ``seed``: at the task's proxy, exactly the search's trial training."""
        return train_candidate(
            self.task,
            cand.spec,
            train,
            val,
            self.fidelity(setting),
            seed=seed,
            device=self.device,
            loss=cand.loss,
            sampling=cand.sampling,
            on_epoch=on_epoch,
        ).result

    def _train_one(
        self,
        cand: _Candidate,
        i: int,
        k: int,
        setting: ProxySetting | None,
        train: ArrayData,
        val: ArrayData,
        label: str,
        bar: _Progress,
    ) -> dict[str, Any]:
        epochs = self.fidelity(setting).epochs
        try:
            fr = self.train(
                cand, setting, self.seed_of(i, k), train, val, on_epoch=lambda r: bar.epoch(r.epoch, epochs)
            )
        except Exception as exc:  # noqa: BLE001 - a spec that breaks at one setting is recorded, not fatal
            logger.warning("spec %d (%s) at %s failed: %s", i, cand.spec.class_name, label, exc)
            return {
                "value": None,
                "learned": False,
                "epochs": 0,
                "seconds": 0.0,
                "error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}",
            }
        value = float(fr.best_value) if math.isfinite(fr.best_value) else None
        return {
            "value": value,
            "learned": fr.learned,
            "epochs": len(fr.history),
            "seconds": float(sum(h.seconds for h in fr.history)),
            "not_learning": getattr(fr, "not_learning_reason", None),
        }

    def write(self) -> dict[str, Any]:
        """Assemble the record from the trainings so far and write ``calibration.json``."""
        from mednas.rundir import environment_info

        rec = _assemble(
            self.task,
            self.plan,
            self.specs,
            self.settings,
            self.full,
            self.runs,
            self.min_tau,
            self.identity,
            self.full_seeds,
            self.proxy_seeds,
        )
        rec["env"] = environment_info(self.device, self.task.search.seed)
        self.rd.write_json(self.path, rec)
        return rec


def _run_key(spec: Any, setting: ProxySetting | None, k: int = 0) -> str:
    return f"{spec.hash}|{setting.key if setting else 'full'}" + (f"|s{k}" if k else "")


def _seed_mean(rs: list[dict[str, Any] | None]) -> tuple[float | None, bool | None, float]:
    """Mean value, majority learned flag and summed seconds of one spec's runs at one setting (missing runs skipped)."""
    done = [r for r in rs if r is not None]
    vals = [float(r["value"]) for r in done if r.get("value") is not None]
    flags = [bool(r["learned"]) for r in done if r.get("value") is not None]
    mean = sum(vals) / len(vals) if vals else None
    learned = (sum(flags) * 2 >= len(flags)) if flags else None
    return mean, learned, sum(float(r.get("seconds") or 0.0) for r in done)


def _assemble(
    task: TaskConfig,
    plan: DataPlan,
    specs: list[Any],
    settings: list[ProxySetting],
    full: Any,
    runs: dict[str, dict[str, Any]],
    min_tau: float,
    identity: dict[str, Any],
    full_seeds: int = 1,
    proxy_seeds: int = 1,
) -> dict[str, Any]:
    """Build the ``calibration.json`` record from the trainings done so far."""
    n = len(specs)
    fs = _FullStats(task.search.seed, specs, runs, full_seeds)
    rows = [_setting_row(setting, specs, runs, fs, proxy_seeds, task.search.seed) for setting in settings]
    ceiling = fs.ceiling
    recommendation = _recommend(
        rows, min_tau, complete=fs.complete, ceiling=ceiling["kendall_tau"] if ceiling else None
    )
    not_learning = [i for i in range(n) if fs.values[i] is not None and not fs.learned[i]]
    return {
        "task": task.name,
        "identity": identity,
        "min_tau": min_tau,
        "full_seeds": full_seeds,
        "proxy_seeds": proxy_seeds,
        "full": {
            **full.to_dict(),
            "seconds": fs.seconds,
            "trainings": fs.trainings,
            "values": fs.values,
            "seed_values": [[(r or {}).get("value") for r in row] for row in fs.by_seed],
            "seed_sd": fs.seed_sd,
            "n_not_learning": len(not_learning),
            "not_learning": not_learning,
        },
        "seed_ceiling": ceiling
        or {
            "kendall_tau": None,
            "interval": None,
            "pairs": [],
            "reason": "one full-fidelity seed per spec: use --full-seeds 2 to measure it",
        },
        "specs": [s.to_dict(i) for i, s in enumerate(specs)],
        "settings": rows,
        "recommendation": recommendation,
        "ceiling": {
            "kendall_tau": (ceiling or {}).get("kendall_tau"),
            "note": ceiling_note((ceiling or {}).get("kendall_tau")).replace(
                "`mednas retrain RUN_DIR --seeds 2`", "--full-seeds 2"
            )
            + "; tau over n specs moves in steps of 4/(n(n-1))",
        },
        "data": {
            "train": len(plan.splits.get("train", [])),
            "val": len(plan.splits.get("val", [])),
            "test_read": False,
        },
        "runs": runs,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class _FullStats:
    """The full-fidelity side of a calibration: each spec's seed mean, learned flag, cost and the seed ceiling."""

    def __init__(self, seed: int, specs: list[Any], runs: dict[str, dict[str, Any]], full_seeds: int) -> None:
        n = len(specs)
        self.by_seed = [[runs.get(_run_key(s, None, k)) for s in specs] for k in range(full_seeds)]
        stats = [_seed_mean([self.by_seed[k][i] for k in range(full_seeds)]) for i in range(n)]
        self.values = [m for m, _, _ in stats]
        self.learned = [bool(lr) for _, lr, _ in stats]
        #: The specs that learned at full fidelity: the only ones with a meaningful rank.
        self.ok = [i for i in range(n) if self.values[i] is not None and self.learned[i]]
        self.seconds = sum(sec for _, _, sec in stats)
        self.trainings = sum(1 for row in self.by_seed for r in row if r)
        self.complete = all(r for row in self.by_seed for r in row)
        # The seed-noise ceiling, over the specs that learned at full fidelity.
        rows_by_seed = [[(self.by_seed[k][i] or {}).get("value") for i in self.ok] for k in range(full_seeds)]
        self.ceiling = seed_ceiling(rows_by_seed, seed=seed) if full_seeds >= 2 else None
        sds = []
        for i in self.ok:
            vals = [
                float(r["value"])
                for r in (self.by_seed[k][i] for k in range(full_seeds))
                if r and r.get("value") is not None
            ]
            sd = mean_std(vals)[1]
            if sd is not None:
                sds.append(sd)
        self.seed_sd = sum(sds) / len(sds) if sds else None


def _setting_row(
    setting: ProxySetting,
    specs: list[Any],
    runs: dict[str, dict[str, Any]],
    fs: _FullStats,
    proxy_seeds: int,
    seed: int,
) -> dict[str, Any]:
    """One row of the calibration table: how the proxy ``setting`` ranks the specs against full fidelity."""
    n = len(specs)
    per_seed = [[runs.get(_run_key(s, setting, k)) for s in specs] for k in range(proxy_seeds)]
    stats_ = [_seed_mean([per_seed[k][i] for k in range(proxy_seeds)]) for i in range(n)]
    seconds = sum(sec for _, _, sec in stats_)
    trainings = sum(1 for row in per_seed for r in row if r)
    # Specs that never learned at full fidelity have no meaningful rank and are left out; specs that never
    # learned at the proxy stay in, ranked last, as the search ranks them.
    idx = [i for i in fs.ok if stats_[i][0] is not None]
    proxy_scores = _ranks([(bool(stats_[i][1]), stats_[i][0]) for i in idx])  # type: ignore[misc]
    full_idx = [fs.values[i] for i in idx]
    tau, p, rho, reason = rank_agreement(proxy_scores, full_idx)  # type: ignore[arg-type]
    interval = bootstrap_tau_interval(proxy_scores, full_idx, seed=seed) if tau is not None else None  # type: ignore[arg-type]
    # With the specs that never learned at full fidelity kept in: how much of tau comes from telling them apart.
    all_idx = [i for i in range(n) if stats_[i][0] is not None and fs.values[i] is not None]
    tau_all = rank_agreement(
        _ranks([(bool(stats_[i][1]), stats_[i][0]) for i in all_idx]),  # type: ignore[misc]
        [fs.values[i] for i in all_idx],
    )[0]  # type: ignore[misc]
    regret = top3 = None
    if len(idx) >= 2:
        order = sorted(range(len(idx)), key=lambda j: (-proxy_scores[j], idx[j]))
        regret = top1_regret(full_idx, order[0])  # type: ignore[arg-type]
        best = max(range(len(idx)), key=lambda j: full_idx[j])  # type: ignore[arg-type,return-value]
        top3 = best in order[:3]
    self_tau = None
    if proxy_seeds >= 2:
        self_tau = seed_ceiling(
            [[(per_seed[k][i] or {}).get("value") for i in range(n)] for k in range(proxy_seeds)], seed=seed
        )["kendall_tau"]
    return {
        "setting": setting.label,
        "scale": setting.scale,
        "shape": list(setting.shape),
        "epochs": setting.epochs,
        "current": setting.current,
        "kendall_tau": tau,
        "kendall_tau_interval": interval,
        "kendall_p": p,
        "kendall_tau_all": tau_all,
        "spearman": rho,
        "top1_regret": regret,
        "regret_in_seed_sd": (regret / fs.seed_sd) if regret is not None and fs.seed_sd else None,
        "top3_contains_best": top3,
        "proxy_self_tau": self_tau,
        "n": len(idx),
        "reason": reason,
        "n_not_learning": sum(1 for m, lr, _ in stats_ if m is not None and lr is False),
        "n_done": sum(1 for row in per_seed for r in row if r),
        "seconds": seconds,
        "cost_fraction": ((seconds / trainings) / (fs.seconds / fs.trainings))
        if trainings and fs.seconds > 0 and fs.complete
        else None,
        "values": [m for m, _, _ in stats_],
    }


def _ranks(keys: list[tuple[bool, float]]) -> list[float]:
    """Rank ``(learned, value)`` pairs (ties share a rank): learners above non-learners, then by value."""
    order = sorted(set(keys))
    return [float(order.index(k)) for k in keys]


def _recommend(
    rows: list[dict[str, Any]], min_tau: float, *, complete: bool, ceiling: float | None = None
) -> dict[str, Any]:
    if not complete:
        return {
            "setting": None,
            "message": "calibration incomplete: full-fidelity trainings are still missing",
        }
    good = [r for r in rows if r["kendall_tau"] is not None and r["kendall_tau"] >= min_tau]
    if good:
        best = min(good, key=lambda r: (r["seconds"], -r["kendall_tau"]))
        cheap = (
            f"{best['cost_fraction']:.0%} of the full-fidelity cost"
            if best["cost_fraction"] is not None
            else ""
        )
        return {
            "setting": best["setting"],
            "shape": best["shape"],
            "epochs": best["epochs"],
            "scale": best["scale"],
            "kendall_tau": best["kendall_tau"],
            "message": f"recommended proxy: {best['setting']} (Kendall tau {best['kendall_tau']:.2f} >= {min_tau:g}, "
            f"{cheap}); set proxy.shape={best['shape']} proxy.epochs={best['epochs']}",
        }
    scored = [r for r in rows if r["kendall_tau"] is not None]
    if not scored:
        why = next((r["reason"] for r in rows if r["reason"]), "too few specs learned at full fidelity")
        return {
            "setting": None,
            "message": f"no setting could be scored: {why}; use more --specs, more full-fidelity "
            "epochs or a harder objective",
        }
    top = max(scored, key=lambda r: r["kendall_tau"])
    return {
        "setting": None,
        "best_tau_setting": top["setting"],
        "kendall_tau": top["kendall_tau"],
        "message": f"no setting reached Kendall tau {min_tau:g}; the closest is {top['setting']} (tau "
        f"{top['kendall_tau']:.2f}). Try more epochs or larger scales in --grid, or more --specs "
        + (
            f"(full training agrees with itself across seeds at tau {ceiling:.2f} here, the most any proxy "
            "can reach)"
            if ceiling is not None
            else "(the seed-noise ceiling was not measured: --full-seeds 2 measures it)"
        ),
    }


class _Progress:
    """The calibration's progress bar over all trainings: which setting, which spec, which epoch.

    The bar appears once the number of trainings is known (:meth:`start`); preparation stages before it are
    logged only.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: ProgressBar | None = None
        #: What the bar says of the training in progress (``scale 0.5 x 2 ep, spec 3/8``).
        self.detail = ""

    def start(self, total: int, done: int) -> None:
        self.bar = ProgressBar("calibrate", total=total, initial=done, unit="training", enabled=self.enabled)

    def stage(self, name: str, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.describe(f"{name} {done}/{total}")

    def run(self, label: str, i: int, n: int) -> None:
        self.detail = f"{label}, spec {i + 1}/{n}"
        if self.bar is not None:
            self.bar.describe(self.detail)

    def epoch(self, epoch: int, epochs: int) -> None:
        if self.bar is not None:
            self.bar.describe(f"{self.detail}, epoch {epoch}/{epochs}")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
