"""The bundle's ``docs/README.md``: a model card a clinical validation team reads before running the model.

It states what the model is for, what data it saw (and loudly when that data was simulated or augmented), its
metrics with 95% intervals per split, the operating point, how the architecture was searched, and its limits.
Everything comes from the metadata the bundle carries; no case or patient is named.
"""

from __future__ import annotations

from typing import Any

__all__ = ["model_card"]


def _ci(m: Any) -> str:
    if not isinstance(m, dict) or m.get("value") is None:
        return "n/a"
    ci = m.get("ci95") or [None, None]
    if ci[0] is None or ci[1] is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"


def _metrics_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    splits = [s for s in ("val", "test") if metrics.get(s)]
    if not splits:
        return ["No metrics were recorded."]
    names = sorted({n for s in splits for n in metrics[s]})
    head = {"val": "validation (95% CI)", "test": "held-out test (95% CI)"}
    lines = ["| metric | " + " | ".join(head[s] for s in splits) + " |", "|---|" + "---|" * len(splits)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_ci(metrics[s].get(name)) for s in splits) + " |")
    return lines


def model_card(meta: dict[str, Any]) -> str:
    """Return the model card's Markdown from the bundle's ``metadata.json``."""
    m = meta["mednas"]
    p = m["pipeline"]
    kind = str(m["source"])  # "retrained", "ladder" (top rung of the resolution ladder) or "proxy"
    shape = "x".join(map(str, p["shape"]))
    lines: list[str] = [
        f"# {m['task']['name']}: {m['spec']['target'].rsplit('.', 1)[-1]} found by mednas",
        "",
    ]
    lines += _warnings(m, shape, kind)
    lines += _use_and_data(meta, m)
    lines += _preprocessing(p, shape)
    lines += _operating_point(m, tested=kind == "retrained")
    lines += _performance(m, kind)
    lines += _ensemble(m.get("ensemble"))
    lines += _int8(m.get("int8"))
    lines += _search(m)
    lines += _limitations_and_files(m)
    lines += _pinning()
    return "\n".join(lines)


def _warnings(m: dict[str, Any], shape: str, kind: str) -> list[str]:
    """The loud notes: proxy or ladder weights (never retrained), simulated data, augmented copies."""
    lines: list[str] = []
    if kind == "proxy":
        lines += [
            "> **PROXY CANDIDATE, NOT RETRAINED.** These are the weights of a short, low-resolution proxy "
            f"training ({shape}) from the architecture search. They were never retrained at full fidelity or "
            "evaluated on the held-out test split. Run `mednas retrain` and export again before any validation.",
            "",
        ]
    elif kind == "ladder":
        lines += [
            "> **FULL-RESOLUTION LADDER CANDIDATE, NOT RETRAINED.** These weights were trained at full "
            f"resolution ({shape}) on the search's resolution ladder, one seed, no test-split evaluation: run "
            "`mednas retrain` for seeds and the held-out test, and export again before any validation.",
            "",
        ]
    if m["data"].get("simulated"):
        lines += [
            "> **SIMULATED data.** The model was trained and evaluated on simulated images; its metrics say "
            "nothing about performance on patients.",
            "",
        ]
    if m["data"].get("augmentation"):
        note = m["data"]["augmentation"].get("note") if isinstance(m["data"]["augmentation"], dict) else None
        lines += [
            f"> **AUGMENTED COPIES.** The dataset was enlarged with augmented copies of its cases ({note or 'see metadata'}); "
            "the metrics are computed over patients but are optimistic compared with independent data.",
            "",
        ]
    return lines


def _use_and_data(meta: dict[str, Any], m: dict[str, Any]) -> list[str]:
    """Intended use, problem and classes; the data, its split and hashes."""
    p = m["pipeline"]
    lines: list[str] = []
    lines += [
        "## Intended use",
        "",
        meta.get("intended_use", ""),
        "",
        f"- Problem: {p['problem']}, {p['spatial_dims']}D, {p['in_channels']} input channel(s).",
        f"- Classes: {', '.join(p['class_names'])}; finding class(es): "
        f"{', '.join(p['class_names'][i] for i in p['finding_indices'])}.",
        "",
    ]
    lines += ["## Data", ""]
    d = m["data"]
    splits = d.get("splits") or {}
    lines += [
        f"- {d.get('n_cases', 'n/a')} cases, split by patient: "
        + ", ".join(f"{k} {v}" for k, v in splits.items())
        + ".",
        f"- Data fingerprint hash `{d.get('fingerprint_hash')}`, split hash `{d.get('split_hash')}` (identify the "
        "exact data and split without naming any case).",
        f"- Simulated data: {'**yes (SIMULATED data)**' if d.get('simulated') else 'no'}."
        + (" Augmented copies: **yes**." if d.get("augmentation") else ""),
        "",
    ]
    return lines


def _preprocessing(p: dict[str, Any], shape: str) -> list[str]:
    """How an image is read, normalised and resized, and what the model outputs."""
    lines: list[str] = []
    lines += [
        "## Preprocessing and inference",
        "",
        "- Read with MONAI's `LoadImaged` (DICOM series folders, NIfTI, NRRD, PNG/JPEG), channel first"
        + (f", reoriented to {p['orientation']}" if p.get("orientation") else "")
        + ".",
        f"- Intensity normalisation `{p['normalize']}`"
        + (f" (window {p['ct_window'][0]:g} to {p['ct_window'][1]:g} HU)" if p["normalize"] == "ct" else "")
        + ".",
        f"- Resized to {shape} ({p['resize_mode']} interpolation), the resolution the weights were trained at.",
    ]
    if p["problem"] == "classification":
        t = p.get("temperature")
        lines.append(
            (
                "- Output: softmax of the logits divided by the temperature "
                f"{t:.4g} (temperature scaling, fitted on validation; `configs/inference.json`, `mednas predict`, "
                "`mednas.load` and `mednas evaluate` all apply it)"
                if t is not None
                else "- Output: softmax probabilities, **not calibrated** (no temperature could be fitted)"
            )
            + "; the finding score is the summed probability of the finding classes."
        )
    else:
        lines.append(
            "- Output: softmax probabilities"
            + (f" from sliding windows of {'x'.join(map(str, p['patch']))}" if p.get("patch") else "")
            + ", resampled back onto the input's own grid, then argmax: a label map with the input's shape and affine."
        )
    lines.append("")
    return lines


def _operating_point(m: dict[str, Any], *, tested: bool) -> list[str]:
    """The threshold chosen on validation (applied to the test split when ``tested``) and the calibration, or argmax."""
    p = m["pipeline"]
    lines: list[str] = []
    lines += ["## Operating point", ""]
    op = m.get("operating_point")
    if p["problem"] == "classification" and op and op.get("threshold") is not None:
        lines += [
            f"A case is called a finding when its finding score is >= **{op['threshold']:.4f}**. The threshold was "
            f"chosen on the validation patients by the rule `{op.get('rule')}`"
            + (
                f" (validation sensitivity {op['sensitivity']:.3f}, specificity {op['specificity']:.3f})"
                if op.get("sensitivity") is not None and op.get("specificity") is not None
                else ""
            )
            + (" and applied unchanged to the held-out test split" if tested else "")
            + ".",
            "",
        ]
    elif p["problem"] == "classification":
        lines += [
            "No operating threshold could be chosen on validation; predictions report probabilities only.",
            "",
        ]
    if p["problem"] == "classification":
        lines += _calibration_lines(m.get("temperature_scaling"), p.get("threshold"))
    else:
        lines += ["Segmentation: each voxel takes the class of highest probability (argmax).", ""]
    return lines


_PERFORMANCE_NOTE = {
    "proxy": "Validation metrics of the proxy training (low resolution, few epochs); no test evaluation.",
    "ladder": "Validation metrics at the top rung of the search's resolution ladder (full resolution, one seed); "
    "no test evaluation.",
    "retrained": "Validation after full-fidelity retraining; test evaluated once at the validation operating point.",
}


def _performance(m: dict[str, Any], kind: str) -> list[str]:
    """Metrics per split with 95% intervals, and calibration."""
    lines: list[str] = []
    lines += [
        "## Performance",
        "",
        "95% percentile-bootstrap intervals, resampling patients. "
        + (
            f"Ensemble {m['metrics_note'].removeprefix('ensemble: ')}."
            if m.get("ensemble")
            else _PERFORMANCE_NOTE.get(kind, _PERFORMANCE_NOTE["proxy"])
        ),
        "",
    ]
    lines += _metrics_table(m.get("metrics") or {})
    cal = m.get("calibration") or {}
    if cal:
        lines += [
            "",
            "Calibration (lower is better): "
            + "; ".join(
                f"{split}: Brier {_ci(v.get('brier'))}, ECE {_ci(v.get('ece'))}" for split, v in cal.items()
            ),
        ]
    return lines


def _ensemble(ens: dict[str, Any] | None) -> list[str]:
    """An ensemble bundle: its members, and its metrics beside those of its best single member."""
    if not ens:
        return []
    member = ens.get("best_member") or {}
    mine, theirs = ens.get("metrics") or {}, member.get("metrics") or {}
    fold = ens.get("fold_mean") or {}
    ci = fold.get("ci95")
    lines = [
        "",
        "## Ensemble",
        "",
        f"The network averages the softmax probabilities of {ens['k']} fold models of one architecture "
        f"(`{', '.join(ens.get('members') or [])}` of the run), each trained on {ens['k'] - 1} of "
        f"{ens['k']} patient-grouped folds of the training and validation patients and validated on the remaining "
        "one. It outputs the log of the mean probability, so the softmax of the postprocessing gives the mean.",
        "",
        f"Validation objective over the folds: mean {_num(fold.get('mean'))}, SD {_num(fold.get('sd'))}"
        + (f", 95% t interval {ci[0]:.3f}-{ci[1]:.3f}" if ci else "")
        + ". The ensemble's validation figures are its members' pooled out-of-fold predictions (where its "
        "temperature and operating point were chosen); each figure on the held-out test split comes from one "
        "evaluation of that model at its own validation operating point.",
        "",
    ]
    splits = [("val", "ensemble, validation (out-of-fold)"), ("test", "ensemble, held-out test")]
    cols = [(mine.get(s) or {}, h) for s, h in splits if mine.get(s)]
    own = [("val", "its fold's validation"), ("test", "held-out test")]
    cols += [
        (theirs.get(s) or {}, f"best member (fold {member.get('fold')}), {h}")
        for s, h in own
        if theirs.get(s)
    ]
    names = sorted({n for c, _ in cols for n in c})
    lines += ["| metric | " + " | ".join(h for _, h in cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {n} | " + " | ".join(_ci(c.get(n)) for c, _ in cols) + " |" for n in names]
    return lines


def _num(v: Any, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _int8_ci(value: Any, ci: Any, fmt: str = ".3f") -> str:
    ci = ci or [None, None]
    if value is None:
        return "n/a"
    if ci[0] is None or ci[1] is None:
        return format(value, fmt)
    return f"{format(value, fmt)} ({format(ci[0], fmt)} to {format(ci[1], fmt)})"


def _int8(rec: dict[str, Any] | None) -> list[str]:
    """The INT8 model: how it was made, its accuracy cost on validation, its speed and size, or why it is absent."""
    if not rec:
        return []
    ev, cal, lat, size = rec["evaluated_on"], rec["calibration"], rec["latency"], rec["size"]
    lines = ["", "## INT8 model", ""]
    if rec.get("accepted"):
        lines.append(
            "`models/model_int8.onnx` is `models/model.onnx` quantized to 8-bit integers ("
            f"{rec['method']}), calibrated on {cal['n_images']} images drawn from the training split. Run it with "
            "`mednas predict BUNDLE INPUT... --out DIR --backend onnx-int8` (Python: "
            '`mednas.load(BUNDLE, backend="onnx-int8")`; `mednas evaluate ... --backend onnx-int8`).'
        )
    else:
        lines.append(f"**No INT8 model in this bundle:** {rec.get('reason')}. The figures below are why.")
    boot = rec.get("bootstrap") or {}
    lines += [
        "",
        f"Measured on {ev['population']}: {ev['n_cases']} cases, {ev['n_patients']} patients. Both models ran on "
        f"identical preprocessed inputs; intervals are {boot.get('confidence', 0.95):.0%} percentile-bootstrap "
        "intervals over patients, the difference paired (INT8 minus float32 on the same resamples).",
        "",
        "| metric | float32 | INT8 | INT8 - float32 |",
        "|---|---|---|---|",
    ]
    for name, row in (rec.get("metrics") or {}).items():
        lines.append(
            f"| {name} | {_int8_ci(row.get('float32'), row.get('float32_ci95'))} | "
            f"{_int8_ci(row.get('int8'), row.get('int8_ci95'))} | "
            f"{_int8_ci(row.get('delta'), row.get('delta_ci95'), '+.3f')} |"
        )
    f32, i8 = lat.get("float32") or {}, lat.get("int8") or {}
    lines += [
        "",
        f"- Objective ({rec.get('objective')}) drop: {_num(rec.get('objective_drop'), '.4f')}; tolerance "
        f"{rec['tolerance']:g}: {'accepted' if rec.get('accepted') else 'refused'}.",
        f"- Latency (ONNX Runtime, {lat.get('threads')} thread, batch 1, input "
        f"{'x'.join(map(str, f32.get('shape') or []))}, median of {f32.get('repeats')} passes) on {lat.get('hardware')}: "
        f"float32 {_num(f32.get('median_ms'), '.2f')} ms, INT8 {_num(i8.get('median_ms'), '.2f')} ms; "
        f"ratio {_num(lat.get('ratio'), '.2f')} (above 1: INT8 faster). Other CPUs give other ratios.",
        f"- Size: float32 {size['float32_bytes'] / 1e6:.2f} MB, INT8 {size['int8_bytes'] / 1e6:.2f} MB; "
        f"ratio {size['ratio']:.2f}.",
    ]
    if lat.get("ratio") is not None and lat["ratio"] < 1:
        lines.append(f"- {SLOWER_NOTE}")
    if rec.get("threshold"):
        lines.append(f"- Operating point: {rec['threshold']}.")
    return lines


def _search(m: dict[str, Any]) -> list[str]:
    """The objective, trial counts, proxy, exported trial and proxy fidelity."""
    task = m["task"]
    lines: list[str] = []
    lines += ["", "## How it was searched", ""]
    s = m.get("search") or {}
    n = s.get("n_trials") or {}
    prx = s.get("proxy") or {}
    terms = "; ".join(", ".join(f"{k} {v}" for k, v in t.items()) for t in task.get("objective_terms") or [])
    lines += [
        f"- Objective: {', '.join((task.get('objective') or {}).get('names') or [])} "
        f"({', '.join((task.get('objective') or {}).get('directions') or [])})"
        + (f"; terms: {terms}" if terms else "")
        + ", computed on the validation patients.",
        f"- {n.get('complete', 0)} complete, {n.get('pruned', 0)} pruned, {n.get('infeasible', 0)} infeasible, "
        f"{n.get('failed', 0)} failed trials over families {', '.join(sorted((s.get('families') or {}).keys()))}.",
        _fidelity_line(s, prx),
        f"- Exported: trial {m['trial']} ({m['source']}), {m['spec']['target']}, "
        f"{m.get('params', 0):,} parameters, spec hash `{m['spec']['hash']}`. Every trial is in `search_record.json`.",
    ]
    fid = m.get("proxy_fidelity")
    if fid:
        tau = fid.get("kendall_tau")
        lines.append(
            f"- Proxy fidelity: Kendall tau {tau:.2f} over {fid.get('n')} retrained candidates."
            if tau is not None
            else f"- Proxy fidelity: Kendall tau n/a ({fid.get('reason')})."
        )
    return lines


def _fidelity_line(s: dict[str, Any], prx: dict[str, Any]) -> str:
    """How candidates were trained during the search: the resolution ladder's rungs, or the flat proxy."""
    ladder = s.get("ladder") or {}
    if ladder.get("rungs"):
        rungs = " -> ".join(
            f"{'x'.join(map(str, r.get('shape') or []))} ({r.get('epochs')} epoch{'' if r.get('epochs') == 1 else 's'})"
            for r in ladder["rungs"]
        )
        return (
            f"- Resolution ladder: {rungs}; eta {ladder.get('eta')}, {ladder.get('brackets')}. Survivors of each "
            "rung continued on the next from their own weights; the top rung is the full resolution."
        )
    return (
        f"- Proxy: {'x'.join(map(str, prx.get('shape') or []))} for {prx.get('epochs')} epochs"
        + (
            f" on {prx.get('subset'):.0%} of training patients"
            if prx.get("subset") not in (None, 1.0)
            else ""
        )
        + "."
    )


def _limitations_and_files(m: dict[str, Any]) -> list[str]:
    """The limitations, and what each file of the bundle is."""
    lines: list[str] = []
    lines += ["", "## Limitations", ""]
    lims = list(m.get("limitations") or [])
    lines += [f"- {x}" for x in lims]
    lines += [
        "",
        "## Files",
        "",
        "- `configs/inference.json`: MONAI bundle config (network, preprocessing, inferer, postprocessing); "
        "runs with MONAI alone (`python -m monai.bundle run --config_file configs/inference.json "
        "--bundle_root . --input_dir DIR`; the evaluator needs pytorch-ignite).",
        "- `configs/metadata.json`: MONAI metadata plus the `mednas` section (all figures above).",
        "- `models/model.pt` (state dict; `torch.load(..., weights_only=True)`), `models/model.ts` (TorchScript), "
        "`models/model.onnx` (ONNX, weights inside): see metadata for the measured differences from PyTorch.",
        *(
            ['- `models/model_int8.onnx`: the INT8 model (see "INT8 model" above).']
            if (m.get("int8") or {}).get("accepted")
            else []
        ),
        "- `search_record.json`: every trial of the search; `checksums.sha256`: `sha256sum -c checksums.sha256`.",
        "",
    ]
    return lines


#: Said wherever an INT8 model is slower than its float32 model (measured: networks of some 10k-500k parameters).
SLOWER_NOTE = (
    "The INT8 model is slower than the float32 one on this CPU: in a network this small, quantizing and "
    "dequantizing activations costs more than the integer arithmetic saves; serve models/model.onnx."
)


def _calibration_lines(cal: dict[str, Any] | None, threshold: float | None) -> list[str]:
    """The calibration figures, the operating point's warnings, and where the operating point holds."""
    lines: list[str] = []
    if cal:

        def f(v: Any) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        lines += [
            f"Calibration on the {cal.get('n_cases', 'n/a')} validation cases: temperature **{cal['temperature']:.3f}**; "
            f"expected calibration error (ECE, finding score, 10 bins) **{f(cal.get('ece_before'))} before, "
            f"{f(cal.get('ece_after'))} after** temperature scaling; negative log-likelihood "
            f"{f(cal.get('nll_before'))} before, {f(cal.get('nll_after'))} after. The operating threshold was "
            "chosen on the calibrated probabilities. (Both ECE figures are measured on the data the "
            "temperature was fitted on, so the one after is optimistic.)",
            "",
        ]
        warnings = list(cal.get("warnings") or [])
        if warnings:
            lines += (
                ["**Warnings about the operating point:**", ""]
                + [f"- **WARNING:** {w}" for w in warnings]
                + [""]
            )
    else:
        lines += [
            "**The probabilities are not calibrated** (no validation predictions to fit a temperature on).",
            "",
        ]
    if threshold is not None:
        lines += [
            "The operating point was chosen on the validation distribution. Sensitivity and specificity at "
            "this threshold hold only where the population, scanners and prevalence match that data: re-check "
            "them with `mednas evaluate BUNDLE DATA --out DIR` on the target population before any use.",
            "",
        ]
    return lines


def _pinning() -> list[str]:
    """How a validation team makes sure the bundle it runs is the bundle it validated."""
    return [
        "## Pinning this bundle",
        "",
        "`checksums.sha256` detects accidents (a truncated copy, a flipped bit), not attacks: whoever can change a "
        "file can recompute the listing. What cannot be recomputed is the **bundle digest** once you hold it from a "
        "source you trust: one SHA-256 over the sorted relative path and SHA-256 of every file, printed by "
        "`mednas export` (and recorded in the run's `summary.json`), never stored in the bundle itself.",
        "",
        "1. Get the digest from the team that exported the model through a channel other than the bundle (a signed "
        "e-mail, the validation protocol, a ticket).",
        "2. Check it without mednas: `sha256sum -c checksums.sha256 && sha256sum checksums.sha256` must print that "
        "digest (and no file may be added under `configs/` or `models/`); or let mednas do both: "
        "`mednas predict BUNDLE INPUT... --out DIR --expect-digest DIGEST` (Python: "
        "`mednas.load(BUNDLE, expect_digest=DIGEST)`) refuses any other bundle before loading it.",
        "3. Where both teams share a secret key, `mednas export --sign-key KEYFILE` writes `signature.json` (an "
        "HMAC-SHA256 of the digest) and `mednas predict --verify-key KEYFILE` refuses an unsigned or differently "
        "signed bundle.",
        "",
        "Re-pin after every re-export: any change to any file, the weights included, changes the digest.",
        "",
    ]
