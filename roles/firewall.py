"""Firewall: nftables keeps Ray, NCCL/Gloo, TCPStore and vLLM's internal ports to the cluster.

Ray's and vLLM's internal ports run code or move tensors for whoever connects. The rules are in
aicluster/firewall.py; a oneshot unit loads them at boot, before the services start.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt
from pyinfra.operations.util import any_changed

from aicluster import firewall as rules
from aicluster import wanted
from aicluster.deploy import drift, fact, fail_host, keep_running, put
from aicluster.facts.net import IpAddr, interface_for_address
from aicluster.inventory import host_spec
from roles import unit_file


@deploy("Firewall")
def firewall() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    interface = interface_for_address(fact(IpAddr)["interfaces"], str(node.data_address))
    if interface is None:
        fail_host(f"no interface holds the data address {node.data_address}: cannot guard it")
        return
    ruleset = wanted.File(rules.RULES_FILE, rules.ruleset(spec, interface), "644")
    unit = unit_file("firewall", rules.UNIT, table=rules.TABLE, rules=rules.RULES_FILE)
    found = drift(
        wanted.Wanted(
            files=(ruleset, unit),
            services=(
                wanted.Service(rules.UNIT, reads=(rules.RULES_FILE, unit.path), own_unit=True),
            ),
            packages=("nftables",),
        )
    )
    if found is None:
        return
    apt.packages(name="nftables", packages=["nftables"])
    put_ruleset = put(ruleset)
    put_unit = put(unit, name=f"{rules.UNIT}.service")
    keep_running(
        rules.UNIT,
        put_unit,
        restart_if=any_changed(put_ruleset, put_unit),
        pending=found.restart_pending(rules.UNIT),
    )
