"""Measure glibc allocator tuning: training-step times with and without the MALLOC_* settings mednas sets.

mednas re-executes long-running commands with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_/MALLOC_TOP_PAD_
set (see mednas/cli.py). This script times the same 3D training steps in two fresh processes, one with the
settings and one without, and prints the median, spread and ratio.

    python benchmarks/allocator.py [--shape 64] [--steps 12] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

TUNED = {
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}

CHILD = r"""
import json, sys, time, torch
from monai.networks.nets import UNet
shape, steps, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = UNet(3, 1, 2, channels=[16, 32, 64, 128], strides=[2, 2, 2], num_res_units=2)
opt = torch.optim.AdamW(net.parameters(), 1e-3)
loss_fn = torch.nn.CrossEntropyLoss()
x = torch.randn(batch, 1, shape, shape, shape); y = torch.randint(0, 2, (batch, shape, shape, shape))
times = []
for i in range(steps + 2):
    t = time.perf_counter()
    opt.zero_grad(); loss_fn(net(x), y).backward(); opt.step()
    times.append(time.perf_counter() - t)
print(json.dumps(times[2:]))
"""


def _run(env_extra: dict[str, str], shape: int, steps: int, batch: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in TUNED}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(shape), str(steps), str(batch)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    import statistics

    result: dict[str, object] = {
        "shape": [args.shape] * 3,
        "batch": args.batch,
        "steps": args.steps,
        "cpus": os.cpu_count(),
    }
    for name, env in (("default", {}), ("tuned", TUNED), ("default_again", {})):
        times = _run(env, args.shape, args.steps, args.batch)
        result[name] = {
            "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4),
            "max_s": round(max(times), 4),
        }
    default = min(result["default"]["median_s"], result["default_again"]["median_s"])  # type: ignore[index]
    result["speedup_median"] = round(default / result["tuned"]["median_s"], 2)  # type: ignore[index]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
