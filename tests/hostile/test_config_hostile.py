"""Hostile task files, overrides and datalists: bounded in aliases, depth and size; bad values named by key."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.hostile._harness import assert_refused, assert_unchanged, mednas_cli, snapshot


def _task(tmp_path: Path, datalist: Path, **overrides: object) -> dict:
    from mednas.testing import tiny_task

    return tiny_task("classification", datalist, **overrides)


def _write(tmp_path: Path, task: dict, extra: str = "") -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task) + extra)
    return path


def test_alias_bomb_in_space_options(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    task = _task(tmp_path, tiny_cls_datalist)
    task["search"]["space_options"] = {"resnet": {"blocks": "BOMB"}}
    laughs = "".join(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))
    text = yaml.safe_dump(task).replace("blocks: BOMB", "blocks: *l9")
    path = tmp_path / "task.yaml"
    path.write_text("anchors:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + laughs + text)
    before = snapshot(tmp_path)
    line = assert_refused(mednas_cli("validate", path), str(path), "aliases", code=2)
    assert "billion laughs" in line
    assert_unchanged(before, tmp_path)


def test_alias_bomb_in_set_override(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    path = _write(tmp_path, _task(tmp_path, tiny_cls_datalist))
    bomb = (
        "{a: &a [x,x,x,x,x,x,x,x,x,x], "
        + ", ".join(f"{c}: &{c} [" + ",".join([f"*{p}"] * 10) + "]" for p, c in zip("abcdefg", "bcdefgh"))
        + "}"
    )
    assert_refused(mednas_cli("validate", path, "--set", f"description={bomb}"), "--set description", code=2)


def test_deep_yaml(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    path = _write(
        tmp_path, _task(tmp_path, tiny_cls_datalist), "description: " + "[" * 20000 + "]" * 20000 + "\n"
    )
    line = assert_refused(mednas_cli("validate", path), str(path), code=2)
    assert "nested more than" in line


def test_deep_json_datalist(tmp_path: Path) -> None:
    datalist = tmp_path / "datalist.json"
    datalist.write_text('{"training": ' + "[" * 20000 + "]" * 20000 + "}")
    path = _write(tmp_path, _task(tmp_path, datalist))
    line = assert_refused(mednas_cli("validate", path), str(datalist), code=3)
    assert "nested more than" in line


def test_unknown_space_option(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    path = _write(tmp_path, _task(tmp_path, tiny_cls_datalist))
    line = assert_refused(
        mednas_cli("validate", path, "--set", "search.space_options.resnet.max_widht=8"),
        "search.space_options",
        "max_widht",
        code=2,
    )
    assert "did you mean 'max_width'" in line


def test_task_file_is_a_folder(tmp_path: Path) -> None:
    assert_refused(mednas_cli("validate", tmp_path), str(tmp_path), code=2)


def test_task_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_bytes(b"name: \xff\xfe caf\xe9\n")
    line = assert_refused(mednas_cli("validate", path), str(path), code=2)
    assert "UTF-8" in line


def test_blank_patient_cells_csv(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    entries = json.loads(tiny_cls_datalist.read_text())["training"]
    rows = ["image,label,patient"] + [
        f"{tiny_cls_datalist.parent / e['image']},{e['label']},{'  ' if i in (2, 5) else e['patient']}"
        for i, e in enumerate(entries)
    ]
    sheet = tmp_path / "cases.csv"
    sheet.write_text("\n".join(rows) + "\n")
    task = _task(tmp_path, sheet)
    task["data"] = {"format": "csv", "path": str(sheet)}
    path = _write(tmp_path, task)
    line = assert_refused(mednas_cli("validate", path), str(sheet), "'patient'", "row 4", "row 7", code=3)
    assert "2 of 32" in line
    out = mednas_cli("validate", path, "--set", "data.blank_patient=own", "--quiet")
    assert out.code == 0, out.err
    assert "blank 'patient'" in out.err


def test_blank_patient_datalist(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    entries = json.loads(tiny_cls_datalist.read_text())["training"]
    entries = [{**e, "image": str(tiny_cls_datalist.parent / e["image"])} for e in entries]
    entries[3]["patient"] = ""
    del entries[4]["patient"]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": entries}))
    path = _write(tmp_path, _task(tmp_path, datalist))
    before = snapshot(tmp_path)
    run_dir = tmp_path / "run"
    line = assert_refused(mednas_cli("search", path, "--run-dir", run_dir, "--quiet"), str(datalist), code=3)
    assert "entry 3" in line and "entry 4" in line
    assert not run_dir.exists()
    assert_unchanged(before, tmp_path)


def test_csv_with_huge_field(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    sheet = tmp_path / "cases.csv"
    sheet.write_text("image,label,patient\n" + "x" * 2_000_000 + ",0,p1\n")
    task = _task(tmp_path, sheet)
    task["data"] = {"format": "csv", "path": str(sheet)}
    path = _write(tmp_path, task)
    assert_refused(mednas_cli("validate", path), str(sheet), code=3)


def test_task_file_is_a_fifo(tmp_path: Path) -> None:
    import os

    path = tmp_path / "task.yaml"
    os.mkfifo(path)
    line = assert_refused(mednas_cli("validate", path), str(path), code=2)
    assert "not a regular file" in line


def test_nan_class_label_in_datalist(tmp_path: Path, tiny_cls_datalist: Path) -> None:
    entries = json.loads(tiny_cls_datalist.read_text())["training"]
    entries = [{**e, "image": str(tiny_cls_datalist.parent / e["image"])} for e in entries]
    text = json.dumps({"training": entries}).replace('"label": 1', '"label": NaN', 1)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(text)
    path = _write(tmp_path, _task(tmp_path, datalist))
    line = assert_refused(mednas_cli("validate", path), str(datalist), code=3)
    assert "nan" in line
