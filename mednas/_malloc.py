"""glibc allocator settings that make large CPU training steps faster and steadier (see docs/benchmarks.md).

They only take effect when set before a process starts, so long-running commands re-execute themselves with
them and worker processes are started with them.
"""

from __future__ import annotations

MALLOC_ENV: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}
