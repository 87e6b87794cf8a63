"""Wall time and peak memory of the control process for a cold converge, a no-op re-converge and
`aicluster verify`, at several lab sizes, and the remote commands a no-op re-converge sends.

    sudo .venv/bin/python benchmarks/converge.py [--nodes 1 3 8]

The engine install is left out (benchmarks/deploy_without_engine.py), so the figures are
aicluster's own cost; verify then finds no services, which costs what the checks cost. Each size
gets a fresh lab; rows are appended to benchmarks/results/converge.md with the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from aicluster import lab

sys.path.insert(0, str(Path(__file__).parent))
from lab_up import machine

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
DEPLOY = "benchmarks/deploy_without_engine.py"
RESULTS = Path(__file__).parent / "results" / "converge.md"
HEADER = (
    "| date (UTC) | machine | nodes | cold converge (s, MiB) | no-op converge (s, MiB) "
    "| verify (s, MiB) | remote commands per node, no-op |\n|---|---|---|---|---|---|---|\n"
)
REMOTE_COMMAND = re.compile(r"Running command on (\S+):")


def measured(*command: str) -> tuple[float, float, str]:
    """Seconds, peak resident memory of the process (MiB), and its output."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, usage.ru_maxrss / 1024, output


def run(nodes: int) -> str:
    inventory = ROOT / "inventories" / "lab.yaml"
    lab.up(nodes, outsider=False, profile="cpu", inventory=inventory)
    try:
        pyinfra = [str(BIN / "pyinfra"), "-y", str(inventory.with_suffix(".py")), DEPLOY]
        cold = measured(*pyinfra)
        noop = measured(*pyinfra[:2], "--debug", *pyinfra[2:])
        verify = measured(str(BIN / "aicluster"), "verify", str(inventory.with_suffix(".py")))
    finally:
        lab.down()
    per_host = Counter(REMOTE_COMMAND.findall(noop[2]))
    commands = f"{min(per_host.values())}-{max(per_host.values())}" if per_host else "-"
    cells = " | ".join(f"{seconds:.1f} s, {mib:.0f}" for seconds, mib, _ in (cold, noop, verify))
    return (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {machine()} | {nodes} | {cells} | {commands} |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 3, 8])
    args = parser.parse_args()
    if lab.LabState.load() is not None:
        sys.exit("a lab is up: run `aicluster lab down` first")
    rows = [run(nodes) for nodes in args.nodes]
    if not RESULTS.exists():
        RESULTS.write_text("# converge and verify at several lab sizes\n\n" + HEADER)
    with RESULTS.open("a") as out:
        out.writelines(rows)
    print(HEADER + "".join(rows), end="")


if __name__ == "__main__":
    main()
