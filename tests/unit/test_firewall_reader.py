"""Reading a node's live nftables table back: which cluster ports would outsiders reach?

Every ruleset here is real (`nft -j list table inet aicluster` of a lab node, see PROVENANCE.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aicluster import firewall, ports
from aicluster.inventory import load_spec
from aicluster.spec import ClusterSpec

FIXTURES = Path(__file__).parents[1] / "fixtures" / "firewall"


def lab_spec() -> ClusterSpec:
    """A spec whose two nodes have the data addresses of the lab the rulesets come from."""
    spec = load_spec(Path(__file__).parents[2] / "inventories" / "homelab.yaml")
    data = spec.model_dump(mode="json")
    data["cluster"]["data_network"] = "198.19.0.0/24"
    for index, node in enumerate(data["nodes"]):
        node["data_address"] = f"198.19.0.{11 + index}"
    return ClusterSpec.model_validate(data)


def ruleset(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def test_the_table_roles_firewall_loads_exposes_nothing() -> None:
    assert firewall.exposed_ports(ruleset("nft-j-lab-node1.json"), lab_spec()) == []


def test_a_rule_opening_a_ray_port_to_an_outsider_is_named() -> None:
    exposed = firewall.exposed_ports(
        ruleset("nft-j-lab-node1-ray-opened-to-outsider.json"), lab_spec()
    )
    assert exposed == [f"{ports.RAY_GCS}/tcp (rule: ip saddr 198.18.0.100 tcp dport 6379 accept)"]


def test_an_outsider_added_to_the_cluster_set_opens_every_cluster_port() -> None:
    exposed = firewall.exposed_ports(
        ruleset("nft-j-lab-node1-outsider-in-cluster-set.json"), lab_spec()
    )
    assert exposed and all("ip saddr @cluster_v4 accept" in line for line in exposed)
    assert any(line.startswith(f"{ports.VLLM_MASTER}/tcp") for line in exposed)


def test_a_flushed_chain_falls_through_to_its_accept_policy() -> None:
    exposed = firewall.exposed_ports(ruleset("nft-j-lab-node1-chain-flushed.json"), lab_spec())
    assert len(exposed) == len(
        {*ports.RAY_PORTS, ports.VLLM_MASTER, *ports.RAY_WORKER_PORTS, *ports.INTERNAL_RANGE}
    )
    assert all("chain policy accept" in line for line in exposed)


def test_a_missing_table_is_every_port_open() -> None:
    assert firewall.exposed_ports({"nftables": []}, lab_spec()) == [
        "every cluster port: no input chain in table inet aicluster (firewall not loaded)"
    ]
