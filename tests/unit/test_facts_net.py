"""Network parsers on real outputs (tests/fixtures/net/PROVENANCE.md) and the facts around them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError

from aicluster.facts import ParseError, command_output
from aicluster.facts.net import (
    PARSE_KINDS,
    IpAddr,
    IpLink,
    PcieAcs,
    addresses_in_network,
    interface_for_address,
    parse_ip_addr,
    parse_ip_link,
    parse_lspci_acs,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "net"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- ip -j addr / ip -j link ------------------------------------------------------------------------


def test_ip_addr_of_the_dev_machine() -> None:
    interfaces = parse_ip_addr(fixture("ip-addr-dev-machine.txt"))["interfaces"]
    assert [i["name"] for i in interfaces] == ["lo", "ifb0", "ifb1", "eth0"]
    eth0 = interfaces[3]
    assert (eth0["ifindex"], eth0["mtu"], eth0["state"], eth0["mac"], eth0["link_type"]) == (
        4,
        1400,
        "UP",
        "02:fc:00:00:00:01",
        "ether",
    )
    assert [(a["family"], a["local"], a["prefixlen"], a["scope"]) for a in eth0["addresses"]] == [
        ("inet", "192.0.2.2", 24, "global"),
        ("inet6", "fd00::2", 64, "global"),
        ("inet6", "fe80::fc:ff:fe00:1", 64, "link"),
    ]
    lo = interfaces[0]
    assert (lo["mtu"], lo["state"], lo["flags"]) == (
        65536,
        "UNKNOWN",
        ["LOOPBACK", "UP", "LOWER_UP"],
    )
    assert interfaces[1]["state"] == "DOWN" and interfaces[1]["addresses"] == []


def test_pretty_printed_json_reads_the_same() -> None:
    compact = parse_ip_addr(fixture("ip-addr-dev-machine.txt"))
    assert parse_ip_addr(fixture("ip-addr-pretty-dev-machine.txt")) == compact


def test_ip_link_has_the_same_interfaces_without_addresses() -> None:
    links = parse_ip_link(fixture("ip-link-dev-machine.txt"))["interfaces"]
    addrs = parse_ip_addr(fixture("ip-addr-dev-machine.txt"))["interfaces"]
    assert all("addresses" not in link for link in links)
    assert [(i["name"], i["mtu"], i["mac"], i["state"]) for i in links] == [
        (i["name"], i["mtu"], i["mac"], i["state"]) for i in addrs
    ]


def test_interface_is_found_by_address_never_by_name() -> None:
    interfaces = parse_ip_addr(fixture("ip-addr-dev-machine.txt"))["interfaces"]
    assert interface_for_address(interfaces, "192.0.2.2") == "eth0"
    assert interface_for_address(interfaces, "fd00:0:0::2") == "eth0"
    assert interface_for_address(interfaces, "127.0.0.1") == "lo"
    assert interface_for_address(interfaces, "192.0.2.3") is None
    with pytest.raises(ValueError):
        interface_for_address(interfaces, "eth0")


def test_an_address_on_two_interfaces_is_not_guessed() -> None:
    interfaces = parse_ip_addr(fixture("ip-addr-dev-machine.txt"))["interfaces"]
    # The same real interface listed twice under two names, as a bond and its slave can look.
    twice = [*interfaces, {**interfaces[3], "name": "eth0-copy"}]
    with pytest.raises(ValueError, match="several interfaces"):
        interface_for_address(twice, "192.0.2.2")


def test_addresses_in_the_data_network() -> None:
    interfaces = parse_ip_addr(fixture("ip-addr-dev-machine.txt"))["interfaces"]
    assert addresses_in_network(interfaces, "192.0.2.0/24") == [
        {"interface": "eth0", "address": "192.0.2.2"}
    ]
    assert addresses_in_network(interfaces, "fd00::/64") == [
        {"interface": "eth0", "address": "fd00::2"}
    ]
    assert addresses_in_network(interfaces, "10.0.0.0/8") == []


def test_ip_output_cut_short_or_foreign_is_refused() -> None:
    body = command_output(fixture("ip-addr-dev-machine.txt"))
    with pytest.raises(ParseError, match="not complete JSON"):
        parse_ip_addr(body[: len(body) // 2])
    with pytest.raises(ParseError, match="not complete JSON"):
        parse_ip_link(fixture("lspci-vvv-dell-xeon.txt"))
    with pytest.raises(ParseError, match="empty output"):
        parse_ip_addr("")


# --- capture files ----------------------------------------------------------------------------------


def test_captures_were_made_with_the_facts_commands() -> None:
    assert fixture("ip-addr-dev-machine.txt").startswith(f"$ {IpAddr().command()}\n")
    assert fixture("ip-link-dev-machine.txt").startswith(f"$ {IpLink().command()}\n")


def test_capture_without_its_exit_line_is_refused() -> None:
    capture = fixture("ip-addr-dev-machine.txt")
    with pytest.raises(ParseError, match=r"no closing '\[exit N\]'"):
        parse_ip_addr(capture[: capture.rindex("[exit")])


# --- lspci -vvv: ACS --------------------------------------------------------------------------------


def test_acs_enabled_bridges_are_listed() -> None:
    parsed = parse_lspci_acs(fixture("lspci-vvv-dell-xeon.txt"))
    assert len(parsed["acs_devices"]) == 55
    assert parsed["acs_enabled"] == [
        "00:0c.0",
        "00:0e.0",
        "82:00.0",
        "82:01.0",
        "82:02.0",
        "82:03.0",
    ]
    assert parsed["access_denied"] == []
    devices = {d["slot"]: d for d in parsed["acs_devices"]}
    switch_port = devices["82:00.0"]
    assert (switch_port["class"], switch_port["description"]) == (
        "PCI bridge",
        "PMC-Sierra Inc. Device 4128 (prog-if 00 [Normal decode])",
    )
    # Request and completion redirect send GPU peer-to-peer traffic up to the root complex.
    assert switch_port["acs_control"] == {
        "SrcValid": True,
        "TransBlk": False,
        "ReqRedir": True,
        "CmpltRedir": True,
        "UpstreamFwd": True,
        "EgressCtrl": False,
        "DirectTrans": False,
    }
    root_port = devices["00:0c.0"]["acs_control"]
    assert [bit for bit, on in root_port.items() if on] == ["SrcValid"]
    assert not any(
        d["acs_enabled"] for slot, d in devices.items() if slot not in parsed["acs_enabled"]
    )


def test_lspci_output_foreign_text_is_refused() -> None:
    with pytest.raises(ParseError, match="line 1 is not a device header"):
        parse_lspci_acs(fixture("ip-link-dev-machine.txt"))


# --- facts ------------------------------------------------------------------------------------------


def test_facts_commands_and_defaults() -> None:
    assert (IpAddr().command(), IpAddr().requires_command()) == ("ip -j addr", "ip")
    assert (IpLink().command(), IpLink().requires_command()) == ("ip -j link", "ip")
    assert (PcieAcs().command(), PcieAcs().requires_command()) == ("lspci -vvv", "lspci")
    assert IpAddr.default() == IpLink.default() == {"interfaces": []}
    assert PcieAcs.default() == {"acs_devices": [], "acs_enabled": [], "access_denied": []}


def test_fact_process_parses_and_reports_bad_output_as_a_fact_error() -> None:
    body = command_output(fixture("ip-addr-dev-machine.txt"))
    assert IpAddr.process(body.splitlines()) == parse_ip_addr(body)
    with pytest.raises(FactProcessError, match="not complete JSON"):
        IpLink.process([*body.splitlines()[:1], "["])


def test_parse_kinds() -> None:
    expected = {"ip-addr": parse_ip_addr, "ip-link": parse_ip_link, "lspci-acs": parse_lspci_acs}
    assert expected == PARSE_KINDS
