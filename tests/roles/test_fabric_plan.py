"""Operation plans of roles/fabric for each fabric kind (tests/roles/plan.py).

aicluster's facts come from REAL outputs: the /sys/class/infiniband dump of a real H100 node (8 x
NDR InfiniBand mlx5_0, _1, _4-_9 and an Ethernet bond mlx5_bond_0, tests/fixtures/rdma), `ip -j
addr` of the dev machine (eth0 holds 192.0.2.2, tests/fixtures/net) and systemd-detect-virt in an
nspawn container (tests/fixtures/system). Where mlnx_qos is or is not installed, and which kernel
modules are loaded, are pyinfra's own facts (Which, KernelModules), given as pyinfra's values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Directory, File, Sha1File
from pyinfra.facts.server import Kernel, KernelModules, Which
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from aicluster import fabric as fabric_plan
from aicluster.facts.net import IpAddr
from aicluster.facts.rdma import IbSysfs
from aicluster.facts.state import ManagedState
from aicluster.facts.system import Container
from roles.fabric import fabric
from tests.roles.plan import (
    ROOT,
    Facts,
    HostPlan,
    captured,
    converged_state,
    plan_role,
    spec_from_inventory,
)

FIXTURES = ROOT / "tests/fixtures"
H100_SYSFS = captured(IbSysfs, FIXTURES / "rdma/ib-sysfs-gpud-h100.txt")
DEV_MACHINE = captured(IpAddr, FIXTURES / "net/ip-addr-dev-machine.txt")
NSPAWN = captured(Container, FIXTURES / "system/detect-virt-container-nspawn.txt")
# The InfiniBand HCAs of that H100 node, as its sysfs names them.
IB_HCAS = ["mlx5_0", "mlx5_1", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_7", "mlx5_8", "mlx5_9"]
UNIT = f"{fabric_plan.UNIT}.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
APT_INSTALL = (
    'DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::="--force-confdef" '
    '-o Dpkg::Options::="--force-confold" install '
)


def real_host(more: Facts | None = None) -> Facts:
    """A real (not containerised) H100 node with nothing of the role on it yet, plus `more`."""
    return {
        Container: None,
        IbSysfs: H100_SYSFS,
        IpAddr: DEV_MACHINE,
        Kernel: "Linux",
        **(more or {}),
    }


def infiniband(subnet_manager: str | None = None) -> dict[str, Any]:
    def edit(data: dict[str, Any]) -> None:
        if subnet_manager:
            data["cluster"]["subnet_manager"] = subnet_manager
        for node in data["nodes"]:
            node["fabric"] = [
                {"kind": "infiniband", "interface": f"ib{i}", "hca": hca, "rate_gbps": 400,
                 "mtu": 4092}
                for i, hca in enumerate(IB_HCAS)
            ]  # fmt: skip

    return spec_from_inventory("multinode_ib", edit)


def roce() -> dict[str, Any]:
    def edit(data: dict[str, Any]) -> None:
        data["cluster"]["fabric"] = "roce"
        for node in data["nodes"]:
            node["fabric"] = [{"kind": "roce", "interface": "bond0", "hca": "mlx5_bond_0",
                               "rate_gbps": 200, "mtu": 9000}]  # fmt: skip

    return spec_from_inventory("multinode_ib", edit)


def thunderbolt() -> dict[str, Any]:
    """The homelab's two boxes cabled directly with Thunderbolt: one cable, 10.10.0.0/30."""

    def edit(data: dict[str, Any]) -> None:
        data["cluster"]["fabric"] = "thunderbolt"
        first, second = data["nodes"]
        first["data_address"], second["data_address"] = "10.10.0.1", "10.10.0.2"
        for node, peer in ((first, second), (second, first)):
            node["fabric"] = [{"kind": "thunderbolt", "interface": "thunderbolt0",
                               "rate_gbps": 40, "mtu": 9000, "peer": peer["name"]}]  # fmt: skip

    return spec_from_inventory("homelab", edit)


def plan_of(tmp_path: Path, spec: dict[str, Any], facts: Facts, node: str) -> HostPlan:
    return plan_role(fabric, spec, tmp_path, {node: facts})[node]


def installed(plan: HostPlan, name: str) -> list[str]:
    (command,) = plan.op(name).commands
    assert command.startswith(APT_INSTALL), command
    return command.removeprefix(APT_INSTALL).split()


def unit_lines(plan: HostPlan) -> list[str]:
    content = plan.op(UNIT).uploads[UNIT_PATH]
    return [line for line in content.splitlines() if line.strip()]


def test_infiniband_with_a_switch_subnet_manager(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, infiniband(), real_host(), "hgx1")
    assert not plan.failed and plan.errors == []
    assert installed(plan, "RDMA user space and tools") == [
        "rdma-core", "ibverbs-providers", "ibverbs-utils", "infiniband-diags", "perftest"
    ]  # fmt: skip
    assert not any("opensm" in name for name in plan.names())
    assert "the switch runs the subnet manager (cluster.subnet_manager): no opensm" in plan.noops
    modules = plan.op("ib_ipoib, ib_umad loaded at boot").uploads[fabric_plan.MODULES_FILE]
    assert modules.splitlines()[1:] == ["ib_ipoib", "ib_umad"]
    assert plan.op("ib_ipoib, ib_umad loaded").commands == ("modprobe -a ib_ipoib ib_umad",)
    # The first port holds the data address; the others carry RDMA only, all at the spec's MTU.
    data_file = "/etc/systemd/network/60-aicluster-ib0.network"
    data_port = plan.op(data_file).uploads[data_file].splitlines()
    for line in ("Name=ib0", "MTUBytes=4092", "RequiredForOnline=no", "Address=10.100.0.11/24"):
        assert line in data_port
    other_file = "/etc/systemd/network/60-aicluster-ib7.network"
    other = plan.op(other_file).uploads[other_file].splitlines()
    assert "Name=ib7" in other and "MTUBytes=4092" in other
    assert not any(line.startswith("Address=") for line in other)
    networkd = plan.op("systemd-networkd running and enabled").commands
    assert networkd == (
        "systemctl start systemd-networkd.service",
        "systemctl enable systemd-networkd.service",
    )
    reload = plan.op("systemd-networkd reloaded (ib0 changed)")
    assert reload.after_change_of == (data_file,)
    assert reload.commands == (
        "networkctl reload && if [ -e /sys/class/net/ib0 ]; then networkctl reconfigure ib0; fi",
    )
    # No Ethernet or RoCE port: no MTU unit.
    assert UNIT not in plan.names()


def test_infiniband_without_a_switch_subnet_manager_runs_opensm(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, infiniband("opensm"), real_host(), "hgx2")
    assert installed(plan, "opensm (no switch-run subnet manager)") == ["opensm"]
    assert plan.op("opensm running and enabled").commands == (
        "systemctl start opensm.service",
        "systemctl enable opensm.service",
    )
    assert not any("subnet manager" in note for note in plan.noops)
    data_file = "/etc/systemd/network/60-aicluster-ib0.network"
    assert "Address=10.100.0.12/24" in plan.op(data_file).uploads[data_file].splitlines()


def test_infiniband_port_named_on_a_missing_hca_stops_the_node(tmp_path: Path) -> None:
    # The inventory's mlx5_2 and mlx5_3 are not on this H100 node (its sysfs lists _4 to _9).
    plan = plan_of(tmp_path, spec_from_inventory("multinode_ib"), real_host(), "hgx1")
    assert plan.failed and plan.ops == []
    (error,) = plan.errors
    assert error.startswith("hgx1: mlx5_2 is not in /sys/class/infiniband (it lists mlx5_0, ")
    assert error.endswith(": correct the hca of nodes.hgx1.fabric")


def test_roce_port_named_on_an_infiniband_hca_stops_the_node(tmp_path: Path) -> None:
    spec = roce()
    spec["nodes"][0]["fabric"][0]["hca"] = "mlx5_0"
    plan = plan_of(tmp_path, spec, real_host(), "hgx1")
    assert plan.failed
    assert plan.errors == [
        "hgx1: mlx5_0 is InfiniBand, not Ethernet: correct the hca of nodes.hgx1.fabric"
    ]


def test_data_address_already_on_another_interface_stops_the_node(tmp_path: Path) -> None:
    spec = infiniband()
    spec["cluster"]["data_network"] = "192.0.2.0/24"
    spec["nodes"][0]["data_address"] = "192.0.2.2"  # eth0 of the dev machine holds it
    spec["nodes"][1]["data_address"] = "192.0.2.12"
    plan = plan_of(tmp_path, spec, real_host(), "hgx1")
    assert plan.failed
    assert plan.errors == [
        "hgx1: 192.0.2.2 is already on eth0; the fabric puts it on ib0: remove it from eth0 or "
        "correct nodes.hgx1.data_address"
    ]


def test_roce_with_mlnx_qos_makes_the_port_lossless_at_boot(tmp_path: Path) -> None:
    facts = real_host({Which: lambda command: "/usr/bin/mlnx_qos"})
    plan = plan_of(tmp_path, roce(), facts, "hgx1")
    assert not plan.failed
    assert "infiniband-diags" in installed(plan, "RDMA user space and tools")
    lines = unit_lines(plan)
    assert "Requires=sys-subsystem-net-devices-bond0.device" in lines
    assert "Before=network-pre.target" in lines
    assert [line for line in lines if line.startswith("ExecStart=")] == [
        "ExecStart=/usr/sbin/ip link set dev bond0 mtu 9000",
        "ExecStart=/usr/bin/mlnx_qos -i bond0 --trust dscp",
        "ExecStart=/usr/bin/mlnx_qos -i bond0 --pfc 0,0,0,1,0,0,0,0",
        "ExecStart=/bin/sh -c 'echo 1 > /sys/class/net/bond0/ecn/roce_np/enable/3 && "
        "echo 1 > /sys/class/net/bond0/ecn/roce_rp/enable/3'",
        "ExecStart=/bin/sh -c 'echo 106 > /sys/class/infiniband/mlx5_bond_0/tc/1/traffic_class'",
    ]
    assert plan.op(f"{fabric_plan.UNIT} running and enabled").commands
    assert plan.op(f"{fabric_plan.UNIT} restarted (configuration changed)").after_change_of == (
        UNIT,
    )
    # RoCE needs no IPoIB, no kernel module of ours and no networkd file.
    assert not any(
        name.startswith(("/etc/systemd/network", "systemd-networkd")) for name in plan.names()
    )
    assert not any(name.endswith("loaded at boot") for name in plan.names())


def test_roce_without_mlnx_qos_sets_the_mtu_and_says_why_not_qos(tmp_path: Path) -> None:
    facts = real_host({Which: lambda command: None})
    plan = plan_of(tmp_path, roce(), facts, "hgx2")
    execs = [line for line in unit_lines(plan) if line.startswith("ExecStart=")]
    assert execs == ["ExecStart=/usr/sbin/ip link set dev bond0 mtu 9000"]
    assert any(note.startswith("mlnx_qos is not installed") for note in plan.noops)


def test_thunderbolt_loads_thunderbolt_net_and_gives_each_cable_its_30(tmp_path: Path) -> None:
    plans = plan_role(fabric, thunderbolt(), tmp_path, {"gpu1": real_host(), "gpu2": real_host()})
    for name, address in (("gpu1", "10.10.0.1/30"), ("gpu2", "10.10.0.2/30")):
        plan = plans[name]
        assert not plan.failed
        assert plan.op("thunderbolt_net loaded").commands == ("modprobe -a thunderbolt_net",)
        conf = plan.op("thunderbolt_net loaded at boot").uploads[fabric_plan.MODULES_FILE]
        assert conf.splitlines()[1:] == ["thunderbolt_net"]
        path = "/etc/systemd/network/60-aicluster-thunderbolt0.network"
        lines = plan.op(path).uploads[path].splitlines()
        assert f"Address={address}" in lines and "MTUBytes=9000" in lines
        assert "[Route]" not in lines  # the peer's data address is on this very cable
        assert "RDMA user space and tools" not in plan.names()
        assert UNIT not in plan.names()


def test_thunderbolt_already_loaded_is_not_loaded_again(tmp_path: Path) -> None:
    loaded = {KernelModules: {"thunderbolt_net": {"size": 0, "instances": 0, "state": "Live"}}}
    plan = plan_of(tmp_path, thunderbolt(), real_host(loaded), "gpu1")
    assert plan.op("thunderbolt_net loaded").commands == ()


def test_ethernet_port_mtu_is_persisted(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, spec_from_inventory("homelab"), real_host(), "gpu1")
    execs = [line for line in unit_lines(plan) if line.startswith("ExecStart=")]
    assert execs == ["ExecStart=/usr/sbin/ip link set dev enp5s0 mtu 9000"]
    assert not any(
        name.startswith(("RDMA", "opensm", "/etc/systemd/network")) for name in plan.names()
    )


def test_ethernet_without_a_port_changes_nothing(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, spec_from_inventory("h100_workstation"), real_host(), "h100")
    assert plan.ops == [] and not plan.failed
    assert plan.noops == ["no port with an MTU to set: the data interface keeps its own"]


def _lab_like() -> dict[str, Any]:
    """The lab's fabric as aicluster.lab writes it: Ethernet, data0 at MTU 1500."""

    def edit(data: dict[str, Any]) -> None:
        for node in data["nodes"]:
            node["fabric"] = [
                {"kind": "ethernet", "interface": "data0", "rate_gbps": 10, "mtu": 1500}
            ]

    return spec_from_inventory("homelab", edit)


def test_a_container_changes_nothing_and_says_why(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, _lab_like(), {Container: NSPAWN}, "gpu2")
    assert plan.ops == [] and not plan.failed
    assert plan.noops == [
        "kernel modules, links, addresses and QoS of this systemd-nspawn container belong to its "
        "host: nothing set here"
    ]


def test_a_container_on_an_rdma_fabric_gets_the_user_space_only(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, infiniband("opensm"), {Container: NSPAWN}, "hgx1")
    assert plan.names() == ["RDMA user space and tools"]


def test_second_run_on_a_converged_node_changes_nothing(tmp_path: Path) -> None:
    """RoCE with mlnx_qos, converged: packages installed, the unit as rendered and running."""
    facts = real_host({Which: lambda command: "/usr/bin/mlnx_qos"})
    first = plan_of(tmp_path, roce(), facts, "hgx1")
    content = first.op(UNIT).uploads[UNIT_PATH]
    service = UNIT

    def file(path: str) -> dict[str, Any] | None:
        return {"mode": 644, "size": len(content)} if path == UNIT_PATH else None

    converged = {
        **facts,
        File: file,
        Directory: lambda path: {"mode": 755} if path == "/etc/systemd/system" else None,
        Sha1File: lambda path: (
            hashlib.sha1(content.encode()).hexdigest() if path == UNIT_PATH else None
        ),
        DebPackages: {name: ["1"] for name in fabric_plan.RDMA_PACKAGES},
        SystemdStatus: {service: True},
        SystemdEnabled: {service: True},
    }
    plan = plan_of(tmp_path, roce(), converged, "hgx1")
    assert not plan.failed
    assert [op.name for op in plan.ops if plan.runs(op.name)] == []


@pytest.mark.parametrize(
    ("fabric_spec", "node", "facts", "summary"),
    [
        (lambda: infiniband("opensm"), "hgx1", {},
         "9 files, 2 services, 6 packages and 2 kernel modules as wanted"),
        (roce, "hgx1", {Which: lambda command: "/usr/bin/mlnx_qos"},
         "1 file, 1 service and 5 packages as wanted"),
        (thunderbolt, "gpu1", {}, "2 files, 1 service and 1 kernel module as wanted"),
    ],
    ids=["infiniband-opensm", "roce-mlnx_qos", "thunderbolt"],
)  # fmt: skip
def test_once_its_operations_ran_the_role_reads_one_state_and_adds_nothing(
    tmp_path: Path,
    fabric_spec: Callable[[], dict[str, Any]],
    node: str,
    facts: Facts,
    summary: str,
) -> None:
    first = plan_of(tmp_path, fabric_spec(), real_host(facts), node)
    assert not first.failed and first.ops
    after = converged_state(first)
    second = plan_of(tmp_path, fabric_spec(), real_host({**facts, ManagedState: after}), node)
    assert second.ops == [] and not second.failed
    assert summary in second.noops
