"""Fixtures for the search-space tests: one torch thread, because tiny ops on a shared 2-core CPU crawl with two."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # With two intra-op threads and other processes on the cores, OpenMP barriers make a 10 ms step take 1 s.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def scratch_registry() -> Iterator[list[str]]:
    """Yield a list to append test-registered space names to; they are removed from ``SPACES`` afterwards."""
    from mednas.spaces import SPACES

    names: list[str] = []
    yield names
    for name in names:
        SPACES._entries.pop(name, None)
