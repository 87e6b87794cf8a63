"""macOS parsers on real outputs (tests/fixtures/macos/PROVENANCE.md), and their refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicluster.facts import ParseError
from aicluster.facts.macos import (
    parse_chip_memory,
    parse_hardware_ports,
    parse_ibv_devices,
    parse_ifconfig,
    parse_rdma_ctl,
    parse_sw_vers,
    parse_thunderbolt,
    thunderbolt_devices,
    thunderbolt_links,
    thunderbolt_rdma_devices,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "macos"
MACBOOK = "817DCFA4-B481-4100-80FC-91C7AA969F0B"
STUDIO = "28CA4C30-A263-4C55-B302-953416D0B209"
FOREIGN = (FIXTURES.parent / "system" / "proc-swaps-none.txt").read_text()


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_sw_vers_gives_version_and_build() -> None:
    assert parse_sw_vers(read("sw-vers-catalina.txt")) == {
        "product_name": "Mac OS X", "version": "10.15.5", "build": "19F101"
    }  # fmt: skip
    assert parse_sw_vers(read("sw-vers-tahoe-26.3.txt"))["build"] == "25D5087f"


def test_hardware_ports_name_the_thunderbolt_ports_and_the_bridge() -> None:
    ports = parse_hardware_ports(
        read("networksetup-listallhardwareports-macbook-thunderbolt-bridge.txt")
    )["ports"]
    assert [p["device"] for p in ports] == ["en0", "en5", "en3", "en1", "en2", "bridge0"]
    assert thunderbolt_devices(ports) == {"en1": "Thunderbolt 1", "en2": "Thunderbolt 2"}
    assert ports[-1]["port"] == "Thunderbolt Bridge"


def test_thunderbolt_json_finds_the_mac_at_the_other_end_of_each_cable() -> None:
    macbook = parse_thunderbolt(read("thunderbolt-json-m5max-macbook-pro-cabled-to-studio.json"))
    studio = parse_thunderbolt(read("thunderbolt-json-m3ultra-mac-studio-cabled-to-macbook.json"))
    assert len(macbook["buses"]) == 3 and len(studio["buses"]) == 6
    assert thunderbolt_links(macbook["buses"]) == {MACBOOK: STUDIO}
    # The Envoy Ultra drive on the Studio's bus_3 is no Mac: no link.
    assert thunderbolt_links(studio["buses"]) == {STUDIO: MACBOOK}
    cabled = next(bus for bus in macbook["buses"] if bus["peers"])
    assert cabled["speed"] == "80 Gb/s" and cabled["connected"]
    assert cabled["peers"][0]["model"] == "Mac15,14" and cabled["peers"][0]["ip_service"]


def test_rdma_ctl_enabled() -> None:
    assert parse_rdma_ctl(read("rdma-ctl-status-enabled.txt")) == {"enabled": True}


def test_ibv_devices_lists_rdma_over_thunderbolt_devices() -> None:
    devices = parse_ibv_devices(read("ibv-devices-m4pro-mac-mini-tn3205.txt"))["devices"]
    assert devices[0] == {"name": "rdma_en2", "node_guid": "e0c5797d9c8fac05"}
    assert thunderbolt_rdma_devices(devices) == ["rdma_en2", "rdma_en3", "rdma_en4"]


def test_ifconfig_gives_bridge_members_and_addresses() -> None:
    interfaces = parse_ifconfig(read("ifconfig-intel-mac-thunderbolt-bridge-4-members.txt"))[
        "interfaces"
    ]
    assert interfaces["bridge0"]["members"] == ["en1", "en2", "en3", "en4"]
    assert interfaces["bridge100"]["inet"] == ["192.168.64.1/24"]
    assert interfaces["lo0"]["inet"] == ["127.0.0.1/8"]
    assert interfaces["en8"]["status"] == "active" and interfaces["en2"]["inet"] == []


@pytest.mark.parametrize(
    ("parser", "start"),
    [
        (parse_sw_vers, "sw_vers: unexpected line"),
        (parse_hardware_ports, "networksetup: unexpected line"),
        (parse_thunderbolt, "system_profiler: not JSON"),
        (parse_rdma_ctl, "rdma_ctl status: expected enabled or disabled"),
        (parse_ibv_devices, "ibv_devices: expected the header"),
        (parse_ifconfig, "ifconfig: unexpected line"),
        (parse_chip_memory, "sysctl: expected the chip then the memory in bytes"),
    ],
)
def test_foreign_text_is_refused(parser: object, start: str) -> None:
    """Each parser refuses another command's real output (/proc/swaps) in one line."""
    with pytest.raises(ParseError) as error:
        parser(FOREIGN)  # type: ignore[operator]
    assert str(error.value).startswith(start) and "\n" not in str(error.value)
