"""The readiness checks' pure parts: which node a host is, per-item parameters, the ssh config,
the reports, and the parsers the checks read real outputs with."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from aicluster import system
from aicluster.checks import runner
from aicluster.checks.context import node_for_host, node_items, services
from aicluster.facts import ParseError
from aicluster.facts.nvidia import parse_xid_events
from aicluster.facts.system import parse_container, parse_proc_swaps
from aicluster.inventory import load_spec

FIXTURES = Path(__file__).parents[1] / "fixtures"
INVENTORIES = Path(__file__).parents[2] / "inventories"


def test_a_host_is_the_node_of_its_name_or_ssh_address() -> None:
    spec = load_spec(INVENTORIES / "homelab.yaml")
    first, second = spec.nodes[0], spec.nodes[1]
    assert node_for_host(spec, f"ssh://{first.name}") == first
    assert node_for_host(spec, f"paramiko://root@{second.ssh.address}:22") == second
    assert node_for_host(spec, "local://", override=second.name) == second
    with pytest.raises(LookupError, match="no node of the spec"):
        node_for_host(spec, "ssh://elsewhere")
    with pytest.raises(LookupError, match="--aicluster-node nope"):
        node_for_host(spec, "local://", override="nope")


def test_items_follow_each_nodes_spec() -> None:
    spec = load_spec(INVENTORIES / "multinode_ib.yaml")
    node = spec.nodes[0]
    gpus = node_items(spec, node, "gpu")
    assert [g.id for g in gpus] == [f"gpu{i}" for i in range(8)]
    peers = node_items(spec, node, "peer")
    assert [p.id for p in peers] == [n.name for n in spec.nodes[1:]]
    ports = node_items(spec, node, "fabric_port")
    assert [p.id for p in ports] == [port.interface for port in node.fabric]
    assert [k.id for k in node_items(spec, node, "sysctl_key")] == list(system.SYSCTL)


def test_ray_workers_run_no_vllm_service_with_the_ray_executor() -> None:
    spec = load_spec(INVENTORIES / "multinode_ib.yaml")
    assert spec.serving.distributed_backend == "ray"
    head = spec.head
    worker = next(n for n in spec.nodes if n.role == "worker")
    assert "aicluster-vllm" in services(spec, head)
    assert services(spec, worker) == ["aicluster-firewall", "aicluster-ray"]


def test_ssh_config_pins_host_keys_and_keys_from_the_spec(tmp_path: Path) -> None:
    spec = load_spec(INVENTORIES / "homelab.yaml")
    text = runner.ssh_config(spec, INVENTORIES / "homelab.yaml", tmp_path)
    for node in spec.nodes:
        block = text.split(f"Host {node.name}\n")[1].split("\n\n")[0]
        assert f"HostName {node.ssh.address}" in block
        assert f"User {node.ssh.user}" in block
        assert "BatchMode yes" in block
        if node.ssh.known_hosts_file:
            assert "StrictHostKeyChecking yes" in block
    assert runner.hostspec(spec.nodes[0], local=False).startswith(f"ssh://{spec.nodes[0].name}")


RESULTS = [
    {
        "node": "gpu1",
        "check": "swap_off",
        "item": None,
        "verdict": "pass",
        "reason": None,
        "fix": None,
        "about": "",
    },
    {
        "node": "gpu1",
        "check": "ecc_enabled",
        "item": "gpu0",
        "verdict": "skip",
        "reason": "no ECC",
        "fix": None,
        "about": "",
    },
    {
        "node": "gpu1",
        "check": "disk_space",
        "item": None,
        "verdict": "warn",
        "reason": "/ has 4 GiB",
        "fix": "free space",
        "about": "",
    },
    {
        "node": "cluster",
        "check": "completion_succeeds",
        "item": None,
        "verdict": "fail",
        "reason": "no <JSON> & more",
        "fix": "journalctl",
        "about": "",
    },
]


def test_junit_is_valid_xml_with_one_suite_per_node() -> None:
    root = ET.fromstring(runner.to_junit(RESULTS))
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    assert set(suites) == {"gpu1", "cluster"}
    assert suites["gpu1"].get("tests") == "3" and suites["gpu1"].get("skipped") == "1"
    failure = suites["cluster"].find("testcase/failure")
    assert failure is not None and failure.get("message") == "no <JSON> & more"
    assert "fix: journalctl" in (failure.text or "")
    assert root.find(".//testcase[@name='ecc_enabled[gpu0]']/skipped") is not None


def test_json_says_ready_only_without_failures() -> None:
    report = json.loads(runner.to_json(RESULTS, "inventories/homelab.py"))
    assert report["ready"] is False
    assert report["counts"] == {"pass": 1, "warn": 1, "fail": 1, "skip": 1}
    assert json.loads(runner.to_json(RESULTS[:3], "x"))["ready"] is True


def test_xid_events_are_read_and_classified() -> None:
    events = parse_xid_events(
        (FIXTURES / "nvidia/dmesg-xid-48-63-94-dbe-row-remap.txt").read_text()
    )["events"]
    assert [e["xid"] for e in events[:3]] == [48, 63, 94]
    assert [e["fatal"] for e in events[:3]] == [True, False, True]
    assert events[0]["device"] == "PCI:0000:19:00"
    gsp = parse_xid_events((FIXTURES / "nvidia/dmesg-xid-119-gsp-timeout-xe9680.txt").read_text())[
        "events"
    ]
    assert gsp and all(e["xid"] == 119 and e["fatal"] for e in gsp)
    app = parse_xid_events((FIXTURES / "nvidia/dmesg-xid-13-43-decode-iso.txt").read_text())[
        "events"
    ]
    assert {e["xid"] for e in app} == {13, 43} and not any(e["fatal"] for e in app)


@pytest.mark.parametrize(
    ("name", "device"),
    [
        ("dmesg-fallen-off-bus-no-xid-26b5.txt", "0000:b3:00.0"),
        ("dmesg-fallen-off-bus-no-xid-b200-journalctl.txt", "0000:18:00.0"),
    ],
)
def test_a_gpu_fallen_off_the_bus_is_fatal_without_an_xid_line(name: str, device: str) -> None:
    events = parse_xid_events((FIXTURES / "nvidia" / name).read_text())["events"]
    assert events == [
        {
            "xid": None,
            "device": device,
            "detail": "fallen off the bus and not responding",
            "fatal": True,
        }
    ]


def test_a_clean_kernel_log_has_no_events() -> None:
    captured = Path(__file__).parents[2] / "aicluster/captures/h100/dmesg-nvrm.txt"
    assert parse_xid_events(captured.read_text()) == {"events": []}


def test_swaps_and_container() -> None:
    assert parse_proc_swaps((FIXTURES / "system/proc-swaps-none.txt").read_text()) == []
    with pytest.raises(ParseError, match="header"):
        parse_proc_swaps("Filename Size\n/dev/sda2 1\n")
    assert (
        parse_container((FIXTURES / "system/detect-virt-container-nspawn.txt").read_text())
        == "systemd-nspawn"
    )
    assert (
        parse_container((FIXTURES / "system/detect-virt-container-docker.txt").read_text())
        == "docker"
    )
    assert parse_container("none\n") is None


def test_every_check_has_a_unique_name_and_says_what_it_proves() -> None:
    import importlib
    import pkgutil

    import aicluster.checks as package

    seen: list[str] = []
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("test_"):
            loaded = importlib.import_module(f"aicluster.checks.{module.name}")
            seen += [name for name in vars(loaded) if name.startswith("test_")]
    assert len(seen) == len(set(seen)), "two checks share a name: --only could not tell them apart"
    names = runner.check_names()
    assert sorted(names) == sorted(name.removeprefix("test_") for name in seen)
    assert all(len(about) > 20 for about in names.values())
