"""Thunderbolt networking of a Mac: the Thunderbolt Bridge taken apart, one network service per
Thunderbolt port with its cable's static /30 (no DHCP), persisted by networksetup.

A role of its own rather than a branch of roles/fabric: the Linux fabric writes systemd-networkd
files, a Mac is configured through networksetup and its system preferences; both read the same
cables and addresses from ClusterSpec.cables(). Decisions are in aicluster/exo.py.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from aicluster import exo as exo_plan
from aicluster.deploy import fact, fail_host
from aicluster.facts.macos import HardwarePorts, Ifconfig
from aicluster.inventory import host_spec


@deploy("Mac network")
def mac_network() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    if node.os != "macos" or spec.cluster.fabric != "thunderbolt":
        host.noop("no Thunderbolt fabric of Macs: nothing to set")
        return
    if not any(cable.joins(node.name) for cable in spec.cables()):
        host.noop("no Thunderbolt port names its peer: macOS's own Thunderbolt setup is left alone")
        return
    try:
        plan = exo_plan.plan_mac_network(
            spec, node, fact(HardwarePorts)["ports"], fact(Ifconfig)["interfaces"]
        )
    except exo_plan.ExoError as error:
        fail_host(str(error))
        return
    for note in plan.notes:
        host.noop(note)
    removal = exo_plan.bridge_removal(plan)
    if removal:
        server.shell(name="Thunderbolt Bridge taken apart", commands=removal)
    if plan.to_address:
        # One operation for every port: its name is the same on every Mac of the run.
        server.shell(
            name="Thunderbolt ports: one service and a static /30 per cable",
            commands=[c for port in plan.to_address for c in exo_plan.port_address(port)],
        )
