"""Time a no-op `dvc repro` (nothing changed) against a bare `dvc status` on the same project.

Usage, in a project where `dvc repro` has run and nothing changed since:
    python benchmarks/noop_repro.py [--runs 15]
Prints the median wall time of each command and their ratio; the two alternate run by run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time


def wall(command: list[str]) -> float:
    began = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0 or "Running stage" in out.stdout:
        raise SystemExit(f"{' '.join(command)} did work or failed; run `dvc repro` first:\n{out.stdout}{out.stderr}")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command, alternating")
    args = parser.parse_args()
    dvc = shutil.which("dvc") or "dvc"
    times = {"dvc status": [], "dvc repro": []}
    for _ in range(args.runs):
        for name in times:
            times[name].append(wall([dvc, *name.split()[1:]]))
    status, repro = (statistics.median(times[k]) for k in ("dvc status", "dvc repro"))
    print(
        f"median of {args.runs} runs: dvc status {status:.3f} s, no-op dvc repro {repro:.3f} s, "
        f"ratio {repro / status:.2f}"
    )


if __name__ == "__main__":
    main()
