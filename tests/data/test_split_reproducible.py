"""A seeded split is the same in every run directory, whatever the run's salt."""

from __future__ import annotations

from pathlib import Path

from mednas.config import load_task
from mednas.data import load_dataset, make_splits
from mednas.testing import tiny_task


def test_same_seed_same_split_across_salts(tiny_cls_datalist: Path) -> None:
    task = load_task(tiny_task("classification", tiny_cls_datalist))
    membership = []
    for salt in ("salt-one", "salt-two"):
        ds = load_dataset(task, salt)
        splits = make_splits(ds.cases, task.data.split, seed=7)
        by_key = ds.by_key()
        membership.append(
            {s: sorted(by_key[k].images[0] for k in splits[s]) for s in ("train", "val", "test")}
        )
    assert membership[0] == membership[1]
    ds = load_dataset(task, "salt-one")
    other = make_splits(ds.cases, task.data.split, seed=8)
    assert sorted(ds.by_key()[k].images[0] for k in other["test"]) != membership[0]["test"]


def test_same_seed_same_case_order_and_proxy_subset_across_salts(
    tiny_cls_datalist: Path, tmp_path: Path
) -> None:
    """The arrays follow the split's order, and the proxy subset is drawn from it: both must not depend on the
    salt, or the same seed trains on other batches (other scores) in every run directory."""
    from mednas.data import plan_data
    from mednas.rundir import RunDir

    task = load_task(tiny_task("classification", tiny_cls_datalist))
    orders, subsets = [], []
    for salt in ("salt-one", "salt-two"):
        ds = load_dataset(task, salt)
        splits = make_splits(ds.cases, task.data.split, seed=7)
        by_key = ds.by_key()
        orders.append({s: [by_key[k].images[0] for k in splits[s]] for s in ("train", "val", "test")})
        rd = RunDir(tmp_path / salt)
        rd.root.mkdir()
        plan = plan_data(task, rd, salt=salt)
        arrays = plan.arrays("train", plan.proxy_shape, subset=0.5, seed=3)
        subsets.append(arrays.images.tobytes())
    assert orders[0] == orders[1]
    assert subsets[0] == subsets[1]
