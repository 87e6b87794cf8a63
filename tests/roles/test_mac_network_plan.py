"""Operation plans of roles/mac_network (tests/roles/plan.py): the Thunderbolt Bridge taken apart
and one network service with a static /30 per cable.

aicluster's facts come from REAL outputs (tests/fixtures/macos): `networksetup
-listallhardwareports` of a MacBook with Thunderbolt 1 (en1), Thunderbolt 2 (en2) and the default
Thunderbolt Bridge, and `ifconfig` of a Mac whose bridge0 holds en1-en4. No converged Mac was at
hand: its facts are those real values with the role's own changes applied (bridge gone, each
cable's address on its port), which is what the second run reads.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from aicluster.facts.macos import HardwarePorts, Ifconfig
from roles.mac_network import mac_network
from tests.roles.plan import ROOT, Facts, captured, plan_role, spec_from_inventory

FIXTURES = ROOT / "tests/fixtures/macos"
PORTS = captured(
    HardwarePorts, FIXTURES / "networksetup-listallhardwareports-macbook-thunderbolt-bridge.txt"
)
BRIDGED = captured(Ifconfig, FIXTURES / "ifconfig-intel-mac-thunderbolt-bridge-4-members.txt")
PORTS_OP = "Thunderbolt ports: one service and a static /30 per cable"
MAC: Facts = {HardwarePorts: PORTS, Ifconfig: BRIDGED}
BRIDGE_REMOVAL = (
    "ifconfig bridge0 deletem en1",
    "ifconfig bridge0 deletem en2",
    "ifconfig bridge0 deletem en3",
    "ifconfig bridge0 deletem en4",
    "networksetup -setnetworkserviceenabled 'Thunderbolt Bridge' off",
    "/usr/libexec/PlistBuddy -c 'Delete :VirtualNetworkInterfaces:Bridge:bridge0' "
    "/Library/Preferences/SystemConfiguration/preferences.plist",
)


def mesh(count: int) -> dict[str, Any]:
    """mac_studios with `count` Studios, every pair cabled; node i's k-th peer on en(k+1). Node
    j's data address is the later end of its cable to studio1 (cables count by later node)."""

    def edit(data: dict[str, Any]) -> None:
        template = data["nodes"][1]
        names = [f"studio{i + 1}" for i in range(count)]
        data["nodes"] = [
            {
                **template,
                "name": name,
                "role": "head" if j == 0 else "worker",
                "ssh": {"address": f"192.168.1.{31 + j}", "user": "admin"},
                "data_address": f"169.254.10.{1 if j == 0 else 4 * (j * (j - 1) // 2) + 2}",
                "fabric": [
                    {
                        "kind": "thunderbolt",
                        "interface": f"en{k + 1}",
                        "rate_gbps": 80,
                        "peer": peer,
                    }
                    for k, peer in enumerate(other for other in names if other != name)
                ],
            }
            for j, name in enumerate(names)
        ]
        data["serving"]["parallelism"] = {"tensor": count, "pipeline": 1, "data": 1}

    return spec_from_inventory("mac_studios", edit)


def converged(addresses: dict[str, str]) -> Facts:
    interfaces = copy.deepcopy(BRIDGED)
    del interfaces["interfaces"]["bridge0"]
    for interface, address in addresses.items():
        interfaces["interfaces"][interface]["inet"].append(f"{address}/30")
    ports = {"ports": [p for p in PORTS["ports"] if p["device"] != "bridge0"]}
    return {HardwarePorts: ports, Ifconfig: interfaces}


def test_two_studios_lose_the_bridge_and_get_their_cable_addresses(tmp_path: Path) -> None:
    spec = spec_from_inventory("mac_studios")
    plans = plan_role(mac_network, spec, tmp_path, {"studio1": MAC, "studio2": MAC})
    for name, address in (("studio1", "169.254.10.1"), ("studio2", "169.254.10.2")):
        plan = plans[name]
        assert not plan.failed, plan.errors
        assert plan.op("Thunderbolt Bridge taken apart").commands == BRIDGE_REMOVAL
        assert plan.op(PORTS_OP).commands == (
            "networksetup -listallnetworkservices | grep -qx 'aicluster en2' || "
            "networksetup -createnetworkservice 'aicluster en2' en2",
            f"networksetup -setmanual 'aicluster en2' {address} 255.255.255.252",
        )


def test_three_studios_in_a_mesh_get_one_30_per_cable(tmp_path: Path) -> None:
    plans = plan_role(
        mac_network, mesh(3), tmp_path, {name: MAC for name in ("studio1", "studio2", "studio3")}
    )

    def addresses(node: str) -> list[str]:
        commands = plans[node].op(PORTS_OP).commands
        return [c.split()[3] + " " + c.split()[4] for c in commands if "-setmanual" in c]

    assert addresses("studio1") == ["en1' 169.254.10.1", "en2' 169.254.10.5"]
    assert addresses("studio2") == ["en1' 169.254.10.2", "en2' 169.254.10.9"]
    assert addresses("studio3") == ["en1' 169.254.10.6", "en2' 169.254.10.10"]


def test_four_studios_need_a_third_port_this_mac_lacks(tmp_path: Path) -> None:
    plan = plan_role(mac_network, mesh(4), tmp_path, {"studio1": MAC})["studio1"]
    assert plan.failed and plan.ops == []
    assert plan.errors == [
        "studio1: en3 is no Thunderbolt port of this Mac (its Thunderbolt ports: en1 "
        "(Thunderbolt 1), en2 (Thunderbolt 2)): correct nodes.studio1.fabric"
    ]


def test_second_run_on_a_converged_node_changes_nothing(tmp_path: Path) -> None:
    spec = spec_from_inventory("mac_studios")
    plan = plan_role(mac_network, spec, tmp_path, {"studio1": converged({"en2": "169.254.10.1"})})
    plan = plan["studio1"]
    assert plan.ops == [] and not plan.failed
    assert plan.noops == [
        "the Thunderbolt Bridge is gone: no bridge0 to take apart",
        "every Thunderbolt cable has its /30: en2 169.254.10.1 (to studio2)",
    ]
