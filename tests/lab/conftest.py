"""One lab for the whole test session: up once, down at the end, even on failure or interrupt."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from aicluster import lab

LAB_NODES = 3


@dataclass(frozen=True)
class HostSnapshot:
    """What the lab may change on the host, to prove `down` puts all of it back."""

    links: frozenset[str]
    mounts: frozenset[str]
    netns: frozenset[str]
    nft_tables: frozenset[str]
    routes: frozenset[str]
    ip_forward: str
    lab_processes: frozenset[int]

    @classmethod
    def take(cls) -> HostSnapshot:
        def lines(*args: str) -> frozenset[str]:
            return frozenset(
                subprocess.run(
                    args, capture_output=True, text=True, check=False
                ).stdout.splitlines()
            )

        links = frozenset(
            line.split(":")[1].strip().split("@")[0] for line in lines("ip", "-o", "link")
        )
        mounts = frozenset(
            line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
        )
        return cls(
            links=links,
            mounts=mounts,
            netns=lines("ip", "netns", "list"),
            nft_tables=lines("nft", "list", "tables"),
            routes=lines("ip", "route"),
            ip_forward=Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
            lab_processes=frozenset(nspawn_processes()),
        )


def nspawn_processes() -> list[int]:
    """systemd-nspawn processes running a lab machine (matched on the lab's own state directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if (
                cmdline.startswith(b"systemd-nspawn\0")
                and f"--directory={lab.STATE_DIR}".encode() in cmdline
            ):
                found.append(int(proc.name))
    return found


@dataclass(frozen=True)
class Lab:
    inventory: Path
    before: HostSnapshot
    nodes: list[lab.Machine]
    outsider: lab.Machine

    def up(self) -> None:
        lab.up(LAB_NODES, outsider=True, profile="cpu", inventory=self.inventory)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def lab_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail(
            "lab tests need root (they boot machines with systemd-nspawn); run `make test` as root"
        )
    state = lab.LabState.load()
    if state is not None and any(lab.nspawn_pid(m) for m in state.all_machines()):
        pytest.fail(
            "a lab is already running: the tests never take down a lab they did not start; "
            "run `aicluster lab down` first"
        )
    if state is not None:
        lab.down()  # what a dead earlier lab left behind (no machine of it runs)
    # A CI runner stops jobs with SIGTERM: turn it into an interrupt so the lab still comes down.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    before = HostSnapshot.take()
    machines = lab.machines_for(LAB_NODES, outsider=True)
    cluster = Lab(
        inventory=tmp_path_factory.mktemp("lab") / "lab.yaml",
        before=before,
        nodes=[m for m in machines if m.is_node],
        outsider=machines[-1],
    )
    try:
        cluster.up()
        yield cluster
    finally:
        lab.down()
        signal.signal(signal.SIGTERM, previous)
