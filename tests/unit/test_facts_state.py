"""ManagedState (one command reads what a role manages) on real lab outputs, and the comparison
with what a role wants (aicluster/wanted.py). Provenance: tests/fixtures/state/PROVENANCE.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.exceptions import FactProcessError

from aicluster import wanted
from aicluster.facts import ParseError
from aicluster.facts.state import ManagedState, parse_state, state_command
from roles.base import FSTAB_SWAP, FSTAB_SWAP_PYTHON, HOSTS_MARKER, LOOPBACK_ALIAS

FIXTURES = Path(__file__).parents[1] / "fixtures" / "state"
# The arguments each capture was made with (its .command file is state_command of these).
CONVERGED_PROBE: dict[str, list[str]] = {
    "files": ["/etc/aicluster/nccl.env", "/nope"],
    "directories": ["/etc/aicluster"],
    "units": ["aicluster-firewall.service", "nope.service"],
    "packages": ["nftables", "nope"],
    "users": ["aicluster", "nobody2"],
    "modules": ["ib_ipoib"],
    "texts": ["/etc/hosts"],
}
DRIFTED_PROBE = {
    **CONVERGED_PROBE,
    "files": ["/etc/aicluster/nccl.env", "/nope", "/etc/aicluster/firewall.nft"],
    "directories": ["/etc/aicluster", "/nope-dir"],
    "texts": ["/etc/hosts", "/tmp/probe-text", "/nope.txt"],
}
HOSTS_BLOCK = "198.19.0.11\tnode1\n198.19.0.12\tnode2"


def state(name: str) -> dict[str, Any]:
    return parse_state((FIXTURES / f"{name}.txt").read_text())


def firewall_node(hostname: str) -> wanted.Wanted:
    """What roles/nccl, roles/firewall and roles/base want of the captured things."""
    return wanted.Wanted(
        hostname=hostname,
        files=(
            wanted.File(
                "/etc/aicluster/nccl.env", (FIXTURES / "lab-node1-nccl.env").read_text(), "644"
            ),
        ),
        directories=(wanted.Directory("/etc/aicluster", mode="755"),),
        services=(wanted.Service("aicluster-firewall", reads=("/etc/aicluster/firewall.nft",)),),
        packages=("nftables",),
        users=(wanted.User("aicluster", "/var/lib/aicluster", "/usr/sbin/nologin"),),
        no_lines=(wanted.NoLine("/etc/hosts", LOOPBACK_ALIAS),),
        blocks=(wanted.Block("/etc/hosts", HOSTS_MARKER, HOSTS_BLOCK),),
    )


@pytest.mark.parametrize(
    ("name", "probe"),
    [("lab-node-converged", CONVERGED_PROBE), ("lab-node-drifted", DRIFTED_PROBE)],
)
def test_each_capture_was_made_by_the_command_for_its_probe(
    name: str, probe: dict[str, list[str]]
) -> None:
    command = (FIXTURES / f"{name}.command").read_text().strip()
    assert command == state_command(**probe)
    assert command == ManagedState().command(**probe)


def test_a_converged_lab_node() -> None:
    seen = state("lab-node-converged")
    assert seen["hostname"] == "node1"
    assert seen["boot"] == 1795749019  # /proc/stat btime: seconds since the epoch
    assert seen["files"] == {
        "/etc/aicluster/nccl.env": {
            "mode": "644",
            "user": "root",
            "group": "root",
            "sha1": "714779b93c2fc96b9059c954420e67f30861b912",
            "mtime": 1795774322,
        },
        "/nope": None,
    }
    assert seen["directories"] == {
        "/etc/aicluster": {"mode": "755", "user": "root", "group": "root"}
    }
    assert seen["units"] == {
        "aicluster-firewall.service": {
            "SubState": "exited",
            "UnitFileState": "enabled",
            "NeedDaemonReload": "no",
            "ActiveEnterTimestampMonotonic": "25305592841",  # 2.6 s after nccl.env was written
        },
        "nope.service": {
            "SubState": "dead",
            "UnitFileState": "-",
            "NeedDaemonReload": "no",
            "ActiveEnterTimestampMonotonic": "0",
        },
    }
    assert seen["packages"] == {"nftables": "ii"}  # dpkg-query names no unknown package
    assert seen["users"] == {
        "aicluster": {"home": "/var/lib/aicluster", "shell": "/usr/sbin/nologin"},
        "nobody2": None,
    }
    assert seen["modules"] == {"ib_ipoib": False}
    assert seen["texts"]["/etc/hosts"][2:] == [
        "# BEGIN aicluster nodes on the data network",
        "198.19.0.11\tnode1",
        "198.19.0.12\tnode2",
        "# END aicluster nodes on the data network",
    ]
    assert wanted.differences(firewall_node("node1"), seen) == []
    # nccl.env was written before the firewall started; a stopped service is never "stale".
    reads = ("/etc/aicluster/nccl.env",)
    for unit in ("aicluster-firewall", "nope"):
        want = wanted.Wanted(services=(wanted.Service(unit, reads=reads),))
        assert not any("started before" in d for d in wanted.differences(want, seen))
    assert wanted.drift(firewall_node("node1"), seen) is None


def test_a_drifted_lab_node_names_each_difference() -> None:
    seen = state("lab-node-drifted")
    # A file without a last newline keeps its line, and the next item still parses.
    assert seen["texts"]["/tmp/probe-text"] == ["no newline at the end"]
    assert seen["texts"]["/nope.txt"] is None
    assert seen["directories"]["/nope-dir"] is None  # as on a fresh node before roles/nccl
    assert wanted.differences(firewall_node("node2"), seen) == [
        "/etc/aicluster/nccl.env: content differs",  # node2's own address
        "/etc/aicluster/nccl.env: mode 600, wanted 644",
        # touched 5 s after the converge: the firewall runs what the file held before
        "aicluster-firewall.service: started before /etc/aicluster/firewall.nft last changed",
        r"/etc/hosts: a line matches ^127\.0\.1\.1\s.*$",
    ]
    found = wanted.drift(firewall_node("node2"), seen)
    assert found is not None and found.restart_pending("aicluster-firewall")
    assert not found.reload_pending("aicluster-firewall")


def test_what_else_a_node_can_lack() -> None:
    seen = state("lab-node-converged")
    want = wanted.Wanted(
        hostname="node9",
        files=(wanted.File("/nope", "", "644"),),
        absent_files=("/etc/aicluster/nccl.env",),
        services=(wanted.Service("nope"),),
        packages=("nope",),
        held=("nftables",),
        users=(wanted.User("nobody2", "/", "/bin/sh"), wanted.User("aicluster", "/", "/bin/sh")),
        modules=("ib_ipoib",),
        blocks=(wanted.Block("/etc/hosts", "# {mark} other", "x"),),
    )
    assert wanted.differences(want, seen) == [
        "hostname is node1, wanted node9",
        "/nope: missing",
        "/etc/aicluster/nccl.env: present, wanted absent",
        "nope.service: dead",
        "nope.service: -",
        "package nope: not installed",
        "package nftables: not held",
        "user nobody2: missing",
        "user aicluster: home /var/lib/aicluster, shell /usr/sbin/nologin",
        "kernel module ib_ipoib: not loaded",
        "/etc/hosts: the # other block differs",
    ]
    found = wanted.drift(want, seen)
    assert found is not None and found.unheld() == ["nftables"]
    assert found.installed("nftables") and not found.installed("nope")


def test_a_unit_systemd_has_not_reloaded_is_not_converged() -> None:
    seen = state("lab-node-converged")
    seen["units"]["aicluster-firewall.service"]["NeedDaemonReload"] = "yes"
    # A packaged unit (chrony's) with a drop-in the administrator has not loaded is theirs.
    packaged = wanted.Wanted(services=(wanted.Service("aicluster-firewall"),))
    assert wanted.differences(packaged, seen) == []
    want = wanted.Wanted(services=(wanted.Service("aicluster-firewall", own_unit=True),))
    found = wanted.drift(want, seen)
    assert found is not None and found.reload_pending("aicluster-firewall")
    assert found.differences == (
        "aicluster-firewall.service: unit file changed since systemd loaded it",
    )


def test_nothing_read_is_nothing_converged() -> None:
    want = wanted.Wanted(files=(wanted.File("/etc/x", "x", "644"),), packages=("nftables",))
    assert wanted.differences(want, ManagedState.default()) == [
        "/etc/x: missing",
        "package nftables: not installed",
    ]


def test_probe_and_summary_cover_every_kind() -> None:
    want = wanted.Wanted(
        hostname="n",
        files=(wanted.File("/a", "", "644"),),
        absent_files=("/b",),
        directories=(wanted.Directory("/d"),),
        services=(wanted.Service("s.timer"),),
        packages=("p",),
        held=("p", "q"),
        users=(wanted.User("u", "/", "/bin/sh"),),
        modules=("m",),
        no_lines=(wanted.NoLine("/etc/hosts", "x"),),
        blocks=(wanted.Block("/etc/hosts", "# {mark}", "y"),),
    )
    assert want.probe() == {
        "files": ["/a", "/b"],
        "directories": ["/d"],
        "units": ["s.timer"],
        "packages": ["p", "q"],
        "users": ["u"],
        "modules": ["m"],
        "texts": ["/etc/hosts"],
    }
    assert want.summary() == (
        "hostname, 2 files, 1 directory, 1 service, 2 packages, 1 user, 1 kernel module "
        "and 1 text file"
    )
    assert wanted.Wanted(packages=("a",)).summary() == "1 package"


@pytest.mark.parametrize(
    "text",
    [
        "hostname node1\nfile 644 root /etc/x",  # no group or hash
        "unit aicluster-firewall.service exited enabled",  # a property short
        "|127.0.0.1 localhost",  # a text line before any text file
        "socket 9 /run/x",  # an unknown kind
    ],
)
def test_other_output_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ParseError) as error:
        parse_state(text)
    assert "\n" not in str(error.value)
    with pytest.raises(FactProcessError):
        ManagedState.process(text.splitlines())


@pytest.mark.parametrize(
    "line",
    [
        "/swap.img\tnone\tswap\tsw\t0\t0",
        "UUID=0a3407de-014b-458b-b5c1-848e92a327a3 none swap sw 0 0",
        "/dev/mapper/vg-swap_1 none            swap    sw              0       0",
        "# /swap.img none swap sw 0 0",
        "#/dev/sda2 none swap sw 0 0",
        "UUID=b1f3 / ext4 errors=remount-ro 0 1",
        "/dev/sdb1 /srv/swap ext4 defaults 0 2",
        "",
    ],
)
def test_the_fstab_swap_pattern_means_the_same_to_python_and_to_sed(line: str) -> None:
    # roles/base comments swap lines with sed -E (files.replace); the no-op check reads fstab
    # with Python: both must pick the same lines.
    commented = subprocess.run(
        ["sed", "-E", f"s/{FSTAB_SWAP}/# \\1/"],
        input=line + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.rstrip("\n")
    sed_matches = commented != line
    assert sed_matches == bool(re.search(FSTAB_SWAP_PYTHON, line))


def test_paths_with_spaces_and_links_read_on_this_machine(tmp_path: Path) -> None:
    # The command run for real by this machine's shell (no systemd here: files, directories and
    # text files only). A linked directory reads as its target, as pyinfra's operations see it.
    (tmp_path / "a b.txt").write_text("x\n")
    (tmp_path / "real dir").mkdir(mode=0o750)
    (tmp_path / "link").symlink_to(tmp_path / "real dir")
    files = [str(tmp_path / "a b.txt"), str(tmp_path / "c d.txt")]
    directories = [str(tmp_path / "link"), str(tmp_path / "no dir")]
    command = state_command(files=files, directories=directories, texts=[files[0]])
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    seen = parse_state(output.stdout)
    assert seen["files"][files[0]]["sha1"] == wanted.File(files[0], "x\n", "644").sha1
    assert seen["files"][files[1]] is None
    assert seen["directories"][directories[0]]["mode"] == "750"
    assert seen["directories"][directories[1]] is None
    assert seen["texts"][files[0]] == ["x"]


def _hosts_with(*lines: str) -> dict[str, Any]:
    seen = state("lab-node-converged")
    seen["texts"]["/etc/hosts"] = list(lines)
    return seen


def test_the_hosts_block_is_read_as_pyinfras_block_fact_reads_it() -> None:
    begin, end = (HOSTS_MARKER.format(mark=mark) for mark in ("BEGIN", "END"))
    want = wanted.Wanted(blocks=(wanted.Block("/etc/hosts", HOSTS_MARKER, HOSTS_BLOCK),))
    nodes = HOSTS_BLOCK.split("\n")
    # Markers left with nothing between them: files.block adds a second block at the end, and
    # from then on pyinfra reads both blocks' lines together: converged for both.
    assert (
        wanted.differences(want, _hosts_with("127.0.0.1 localhost", begin, end, begin, *nodes, end))
        == []
    )
    # The first block right and a second one stale: pyinfra would rewrite, so it differs.
    stale = _hosts_with(begin, *nodes, end, begin, "10.0.0.9\told", end)
    assert wanted.differences(want, stale) == [
        "/etc/hosts: the # aicluster nodes on the data network block differs"
    ]
    assert wanted.differences(want, _hosts_with(begin, end)) != []


def test_a_name_apt_never_installed_is_not_held_again_and_again() -> None:
    seen = state("lab-node-converged")
    seen["packages"].update({"held": "hi", "installed": "ii", "never": "hn"})
    want = wanted.Wanted(held=("held", "installed", "never", "absent"))
    assert wanted.differences(want, seen) == ["package installed: not held"]
    found = wanted.drift(want, seen)
    assert found is not None and found.unheld() == ["installed"]
