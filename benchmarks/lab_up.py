"""How long `aicluster lab up --nodes N` takes cold (no cached rootfs) and warm, and `lab down`.

    sudo .venv/bin/python benchmarks/lab_up.py [--nodes 3] [--skip-cold]

Appends one row per measurement to benchmarks/results/lab_up.md with the machine it ran on.
Cold removes the cached rootfs first, so it includes debootstrap from the Debian mirror.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from aicluster import lab

RESULTS = Path(__file__).parent / "results" / "lab_up.md"
HEADER = "| date (UTC) | machine | nodes | cold up (s) | warm up (s) | warm up, all running (s) | down (s) |\n|---|---|---|---|---|---|---|\n"


def timed(*args: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [str(Path(sys.executable).parent / "aicluster"), "lab", *args],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def machine() -> str:
    cpus = os.cpu_count()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {cpus} cores, {memory_gib:.0f} GiB, kernel {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true", help="keep the cached rootfs")
    args = parser.parse_args()
    nodes = str(args.nodes)
    if lab.LabState.load() is not None:
        sys.exit("a lab is up: run `aicluster lab down` first")
    cold = "-"
    if not args.skip_cold:
        shutil.rmtree(lab.rootfs_dir(), ignore_errors=True)
        cold = f"{timed('up', '--nodes', nodes):.1f}"
        timed("down")
    warm = timed("up", "--nodes", nodes)
    again = timed("up", "--nodes", nodes)
    down = timed("down")
    if not RESULTS.exists():
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("# lab up / down timings\n\n" + HEADER)
    row = f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {machine()} | {nodes} | {cold} | {warm:.1f} | {again:.1f} | {down:.1f} |\n"
    with RESULTS.open("a") as out:
        out.write(row)
    print(HEADER + row, end="")


if __name__ == "__main__":
    main()
