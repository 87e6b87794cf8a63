"""Operation plans of roles/exo (tests/roles/plan.py).

aicluster's facts come from REAL outputs (tests/fixtures/macos): `sw_vers` of macOS 26.3
(25D5087f) and of Catalina (19F101, the "different build" node), `rdma_ctl status` saying enabled
and Apple's `ibv_devices` of an M4 Pro Mac mini (rdma_en2-4). "rdma_ctl missing" is pyinfra's
None for a fact whose command is not installed. pyinfra's own facts (File, Directory, Sha1File,
FindInFile) are given as pyinfra's values.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from pyinfra.facts.files import Directory, File, FindInFile, Sha1File

from aicluster import exo as exo_plan
from aicluster.facts.macos import IbvDevices, RdmaCtl, SwVers
from aicluster.inventory import load_spec
from roles.exo import exo
from tests.roles.plan import ROOT, Facts, HostPlan, captured, plan_role, spec_from_inventory
from tests.roles.test_mac_network_plan import mesh

FIXTURES = ROOT / "tests/fixtures/macos"
TAHOE = captured(SwVers, FIXTURES / "sw-vers-tahoe-26.3.txt")
CATALINA = captured(SwVers, FIXTURES / "sw-vers-catalina.txt")
RDMA_ON = captured(RdmaCtl, FIXTURES / "rdma-ctl-status-enabled.txt")
DEVICES = captured(IbvDevices, FIXTURES / "ibv-devices-m4pro-mac-mini-tn3205.txt")
MAC: Facts = {SwVers: TAHOE, RdmaCtl: RDMA_ON, IbvDevices: DEVICES}
BUILD = "Exo 1.0.60 built from source with uv"


def plans_for(tmp_path: Path, spec: dict[str, Any], facts: dict[str, Facts]) -> dict[str, HostPlan]:
    return plan_role(exo, spec, tmp_path, facts)


def test_two_studios_install_run_and_fence_exo(tmp_path: Path) -> None:
    spec = spec_from_inventory("mac_studios")
    plans = plans_for(tmp_path, spec, {"studio1": MAC, "studio2": MAC})
    for plan in plans.values():
        assert not plan.failed, plan.errors
        assert plan.op(BUILD).commands == (
            "rm -rf /opt/aicluster/exo/exo-1.0.60 && git clone --quiet --depth 1 --branch v1.0.60 "
            "https://github.com/exo-explore/exo /opt/aicluster/exo/exo-1.0.60 && cd "
            "/opt/aicluster/exo/exo-1.0.60 && uv sync --frozen && touch "
            "/opt/aicluster/exo/exo-1.0.60/.aicluster-installed",
        )
        assert "RDMA over Thunderbolt ready on" in plan.noops[0]
        plist = plan.op(exo_plan.PLIST).uploads[exo_plan.PLIST]
        # One namespace for the cluster, the variable Exo 1.0.60 reads; identity in its own HOME.
        for line in ("<key>EXO_LIBP2P_NAMESPACE</key>", "<string>mac-studios</string>",
                     "<key>EXO_DEFAULT_MODELS_DIR</key>", "<string>/opt/aicluster/exo/home</string>",
                     "<string>/opt/aicluster/exo/exo-1.0.60/.venv/bin/exo</string>"):  # fmt: skip
            assert line in plist
        anchor = plan.op(exo_plan.PF_ANCHOR_FILE).uploads[exo_plan.PF_ANCHOR_FILE]
        assert "table <aicluster_exo_peers> const { 169.254.10.0/24, 192.168.1.0/24 }" in anchor
        assert "block in quick proto { tcp, udp } to port { 52413, 52414, 52415 }" in anchor
        pf = plan.op("pf rules loaded and pf enabled")
        assert pf.after_change_of == (
            (exo_plan.PF_ANCHOR_FILE, *(f"pf.conf: {line}" for line in exo_plan.PF_CONF_LINES)),
        )
        restart = plan.op("Exo (re)started by launchd (configuration changed)")
        assert restart.after_change_of == (exo_plan.PLIST,)
        assert restart.commands[-1] == f"launchctl bootstrap system {exo_plan.PLIST}"


def test_four_studio_mesh_shares_one_namespace(tmp_path: Path) -> None:
    names = ("studio1", "studio2", "studio3", "studio4")
    plans = plans_for(tmp_path, mesh(4), {name: MAC for name in names})
    plists = {plans[n].op(exo_plan.PLIST).uploads[exo_plan.PLIST] for n in names}
    # Identical files: nothing node-specific but the comment naming the node.
    assert len({re.sub(r"on studio\d", "", p) for p in plists}) == 1
    assert all(not plans[n].failed for n in names)


def test_rdma_missing_warns_and_goes_on_over_tcp(tmp_path: Path) -> None:
    facts = {**MAC, RdmaCtl: None}
    plan = plans_for(tmp_path, spec_from_inventory("mac_studios"), {"studio1": facts})["studio1"]
    assert not plan.failed
    assert plan.warnings == [
        "studio1 has no rdma_ctl: RDMA over Thunderbolt needs macOS 26.2 or later. Exo serves "
        "over TCP"
    ]
    assert BUILD in plan.names()


def test_rdma_off_prints_the_recovery_steps() -> None:
    node = load_spec("inventories/mac_studios.yaml").nodes[1]
    ready, message = exo_plan.rdma_state(node, {"enabled": False}, [])
    assert not ready
    assert "macOS Recovery" in message and "3. run: rdma_ctl enable" in message
    assert message.startswith("RDMA over Thunderbolt is off on studio2")


def test_rdma_not_wanted_reads_no_rdma_fact(tmp_path: Path) -> None:
    spec = spec_from_inventory("mac_studios", lambda d: d.update(exo={"rdma": False}))
    plan = plans_for(tmp_path, spec, {"studio1": {SwVers: TAHOE}})["studio1"]
    assert not plan.failed and plan.warnings == []
    assert not any("RDMA" in note for note in plan.noops)


def test_a_node_on_another_macos_build_stops_every_node(tmp_path: Path) -> None:
    plans = plans_for(
        tmp_path,
        spec_from_inventory("mac_studios"),
        {"studio1": MAC, "studio2": {**MAC, SwVers: CATALINA}},
    )
    for plan in plans.values():
        assert plan.failed and plan.ops == []
        assert plan.errors == [
            "macOS builds differ: studio1 25D5087f, studio2 19F101: update every node to one "
            "build (Software Update) before Exo joins them; MLX and RDMA over Thunderbolt change "
            "between builds"
        ]


def test_second_run_on_a_converged_node_changes_nothing(tmp_path: Path) -> None:
    spec = spec_from_inventory("mac_studios")
    first = plans_for(tmp_path, spec, {"studio1": MAC})["studio1"]
    contents = {
        exo_plan.PLIST: first.op(exo_plan.PLIST).uploads[exo_plan.PLIST],
        exo_plan.PF_ANCHOR_FILE: first.op(exo_plan.PF_ANCHOR_FILE).uploads[exo_plan.PF_ANCHOR_FILE],
    }
    marker = "/opt/aicluster/exo/exo-1.0.60/.aicluster-installed"

    def file(path: str) -> dict[str, Any] | None:
        if path in contents:
            return {"mode": 644, "size": len(contents[path])}
        return {"mode": 644, "size": 0} if path in (marker, exo_plan.PF_CONF) else None

    def find_in_file(path: str, pattern: str, **_: Any) -> list[str]:
        return [line for line in exo_plan.PF_CONF_LINES if re.search(pattern, line)]

    converged = {
        **MAC,
        File: file,
        Directory: lambda path: {"mode": 755},
        Sha1File: lambda path: (
            hashlib.sha1(contents[path].encode()).hexdigest() if path in contents else None
        ),
        FindInFile: find_in_file,
    }
    plan = plans_for(tmp_path, spec, {"studio1": converged})["studio1"]
    assert not plan.failed
    assert [op.name for op in plan.ops if plan.runs(op.name)] == []
    assert "Exo 1.0.60 is installed from source" in plan.noops
