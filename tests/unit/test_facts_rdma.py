"""RDMA parsers on real outputs (tests/fixtures/rdma/PROVENANCE.md) and the facts around them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.exceptions import FactProcessError

import aicluster
from aicluster.facts import ParseError
from aicluster.facts.rdma import (
    IB_SYSFS_COMMAND,
    PARSE_KINDS,
    IbStat,
    IbSysfs,
    IbvDevinfo,
    ShowGids,
    ib_sysfs_command,
    parse_ib_sysfs,
    parse_ibstat,
    parse_ibv_devinfo,
    parse_show_gids,
    roce_v2_gid_index,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "rdma"
CAPTURES = Path(aicluster.__file__).parent / "captures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def ibstat_ports(name: str) -> dict[tuple[str, int], dict[str, Any]]:
    parsed = parse_ibstat(fixture(name))
    return {(a["name"], p["port"]): p for a in parsed["adapters"] for p in a["ports"]}


# --- ibstat -----------------------------------------------------------------------------------------


def test_ibstat_roce_host_with_twelve_hcas() -> None:
    adapters = parse_ibstat(fixture("ibstat-h100-roce-12-hca.txt"))["adapters"]
    assert [a["name"] for a in adapters] == [
        f"mlx5_{n}" for n in (0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9)
    ]
    ports = [(a["ca_type"], p) for a in adapters for p in a["ports"]]
    assert all(p["state"] == "Active" and p["physical_state"] == "LinkUp" for _, p in ports)
    assert {p["link_layer"] for _, p in ports} == {"Ethernet"}
    # ConnectX-7 (MT4129) at 400, ConnectX-6 Dx (MT4125) at 100; RoCE ports have no LID.
    assert sorted(p["rate_gbps"] for t, p in ports if t == "MT4129") == [400] * 8
    assert sorted(p["rate_gbps"] for t, p in ports if t == "MT4125") == [100] * 4
    assert {p["base_lid"] for _, p in ports} == {0}
    assert adapters[0]["firmware"] == "28.39.1002"
    assert adapters[0]["ports"][0]["port_guid"] == "0xa288c2fffee3142a"


def test_ibstat_infiniband_ndr_host_with_an_ethernet_bond() -> None:
    ports = ibstat_ports("ibstat-h100-ib-ndr-9-hca.txt")
    infiniband = {k: p for k, p in ports.items() if p["link_layer"] == "InfiniBand"}
    assert sorted(name for name, _ in infiniband) == [f"mlx5_{n}" for n in (0, 1, 4, 5, 6, 7, 8, 9)]
    assert {p["rate_gbps"] for p in infiniband.values()} == {400}
    assert {p["sm_lid"] for p in infiniband.values()} == {1}
    assert ports[("mlx5_0", 1)]["base_lid"] == 128
    bond = ports[("mlx5_bond_0", 1)]
    assert (bond["link_layer"], bond["rate_gbps"], bond["state"]) == ("Ethernet", 200, "Active")


def test_ibstat_mixed_host_with_ports_down() -> None:
    ports = ibstat_ports("ibstat-h100-mixed-some-down.txt")
    down = {name for (name, _), p in ports.items() if p["state"] == "Down"}
    assert down == {"mlx5_2", "mlx5_7", "mlx5_8"}
    for name in down:
        port = ports[(name, 1)]
        assert (port["physical_state"], port["rate_gbps"], port["link_layer"]) == (
            "Disabled",
            40,
            "Ethernet",
        )
    assert ports[("mlx5_0", 1)]["link_layer"] == "InfiniBand"
    assert ports[("mlx5_1", 1)] | {"port_guid": None} == {
        "port": 1,
        "state": "Active",
        "physical_state": "LinkUp",
        "rate_gbps": 100,
        "link_layer": "Ethernet",
        "base_lid": 0,
        "sm_lid": 0,
        "port_guid": None,
    }


def test_ibstat_one_hca_with_an_infiniband_port_polling_and_an_ethernet_port() -> None:
    ports = ibstat_ports("ibstat-mlx4-ib-polling-eth-disabled.txt")
    assert list(ports) == [("mlx4_0", 1), ("mlx4_0", 2)]
    ib, eth = ports[("mlx4_0", 1)], ports[("mlx4_0", 2)]
    assert (ib["state"], ib["physical_state"], ib["rate_gbps"], ib["link_layer"]) == (
        "Down",
        "Polling",
        10,
        "InfiniBand",
    )
    assert (eth["state"], eth["physical_state"], eth["link_layer"]) == (
        "Down",
        "Disabled",
        "Ethernet",
    )


def test_ibstat_vf_with_link_up_but_no_subnet_manager_activation() -> None:
    port = ibstat_ports("ibstat-sriov-vf-down-linkup.txt")[("mlx5_7", 1)]
    assert (port["state"], port["physical_state"], port["rate_gbps"]) == ("Down", "LinkUp", 200)
    assert (port["base_lid"], port["sm_lid"]) == (65535, 1)


def test_ibstat_dual_port_fdr_and_a_roce_plus_infiniband_pair() -> None:
    fdr = ibstat_ports("ibstat-mlx4-fdr-dual-port.txt")
    assert sorted(fdr) == [("mlx4_0", 1), ("mlx4_0", 2), ("mlx4_1", 1), ("mlx4_1", 2)]
    assert {p["rate_gbps"] for p in fdr.values()} == {56}
    pair = ibstat_ports("ibstat-cx4-roce-and-ib.txt")
    assert pair[("mlx5_0", 1)]["link_layer"] == "Ethernet"
    assert pair[("mlx5_0", 1)]["state"] == "Active"
    ib = pair[("mlx5_1", 1)]
    assert (ib["link_layer"], ib["state"], ib["physical_state"], ib["base_lid"]) == (
        "InfiniBand",
        "Down",
        "Disabled",
        2,
    )


def test_ibstat_that_stopped_half_way_is_refused() -> None:
    with pytest.raises(ParseError, match=r"ibpanic.*mlx5_8"):
        parse_ibstat(fixture("ibstat-a100-ibpanic.txt"))


def test_ibstat_cut_short_is_refused() -> None:
    text = fixture("ibstat-h100-roce-12-hca.txt")
    with pytest.raises(ParseError, match="port 1 of mlx5_9 lacks link_layer"):
        parse_ibstat(text[: text.rindex("Link layer")])
    # Cut before the last CA's ports: it declares one port and lists none.
    with pytest.raises(ParseError, match="declares 1 ports but lists 0"):
        parse_ibstat(text[: text.rindex("Port 1:")])


def test_ibstat_empty_output_is_no_adapter() -> None:
    assert parse_ibstat("") == {"adapters": []}


def test_ibstat_reads_a_capture_file_like_the_raw_output() -> None:
    raw = fixture("ibstat-mlx4-fdr-dual-port.txt")
    assert parse_ibstat(f"$ ibstat\n{raw}[exit 0]\n") == parse_ibstat(raw)


def test_host_without_infiniband_tools_is_named_in_the_error() -> None:
    # The project's H100 host: no HCA, no infiniband-diags, no rdma-core.
    capture = (CAPTURES / "h100" / "ib.txt").read_text()
    for parser in (parse_ibstat, parse_ibv_devinfo, parse_show_gids):
        with pytest.raises(ParseError, match=r"not found on that host \(exit 127\).*ibstat"):
            parser(capture)


# --- ibv_devinfo ------------------------------------------------------------------------------------


def test_ibv_devinfo_two_dual_port_infiniband_hcas() -> None:
    devices = parse_ibv_devinfo(fixture("ibv_devinfo-mlx4-ib-dual-port.txt"))["devices"]
    assert [d["name"] for d in devices] == ["mlx4_1", "mlx4_0"]
    first = devices[0]
    assert (first["transport"], first["fw_ver"], first["node_guid"]) == (
        "InfiniBand",
        "2.42.5000",
        "7cfe:9003:00a5:95c0",
    )
    assert [(p["port"], p["state"]) for p in first["ports"]] == [
        (1, "PORT_ACTIVE"),
        (2, "PORT_DOWN"),
    ]
    assert first["ports"][0] == {
        "port": 1,
        "state": "PORT_ACTIVE",
        "link_layer": "InfiniBand",
        "max_mtu": 4096,
        "active_mtu": 4096,
        "sm_lid": 1,
        "port_lid": 22,
    }
    assert devices[1]["ports"][0]["port_lid"] == 32


def test_ibv_devinfo_roce_ports() -> None:
    (device,) = parse_ibv_devinfo(fixture("ibv_devinfo-cx3-roce-dual-port.txt"))["devices"]
    assert device["name"] == "mlx4_0"
    for port in device["ports"]:
        assert (port["state"], port["link_layer"]) == ("PORT_ACTIVE", "Ethernet")
        assert (port["max_mtu"], port["active_mtu"]) == (4096, 1024)


def test_ibv_devinfo_cut_short_or_foreign_text_is_refused() -> None:
    text = fixture("ibv_devinfo-mlx4-ib-dual-port.txt")
    with pytest.raises(ParseError, match="mlx4_0 has phys_port_cnt 2 but lists 1"):
        parse_ibv_devinfo(text[: text.rindex("\t\tport:\t2")])
    with pytest.raises(ParseError, match="port 2 of mlx4_0 lacks link_layer"):
        parse_ibv_devinfo(text[: text.rindex("\t\t\tlink_layer")])
    with pytest.raises(ParseError, match="line 1 is not ibv_devinfo output"):
        parse_ibv_devinfo(fixture("ibstat-mlx4-fdr-dual-port.txt"))


# --- show_gids and the NCCL_IB_GID_INDEX pick -------------------------------------------------------


def test_show_gids_roce_v1_and_v2_with_ipv4() -> None:
    gids = parse_show_gids(fixture("show_gids-rdma0.txt"))["gids"]
    assert [(g["index"], g["ipv4"], g["version"]) for g in gids] == [
        (0, None, "v1"),
        (1, None, "v2"),
        (2, "192.168.211.242", "v1"),
        (3, "192.168.211.242", "v2"),
    ]
    assert {(g["device"], g["port"], g["netdev"]) for g in gids} == {("mlx5_0", 1, "rdma0")}
    assert gids[3]["gid"] == "0000:0000:0000:0000:0000:ffff:c0a8:d3f2"
    assert roce_v2_gid_index(gids, "rdma0", "192.168.211.242") == 3


def test_gid_index_is_only_given_for_that_netdev_and_address() -> None:
    gids = parse_show_gids(fixture("show_gids-sriov-pod-net1.txt"))["gids"]
    assert roce_v2_gid_index(gids, "net1", "192.168.10.2") == 3
    assert roce_v2_gid_index(gids, "eth0", "192.168.10.2") is None
    assert roce_v2_gid_index(gids, "net1", "192.168.10.1") is None


def test_show_gids_with_spaces_and_an_infiniband_port_without_netdev() -> None:
    gids = parse_show_gids(fixture("show_gids-cx4-roce-and-ib.txt"))["gids"]
    assert [(g["device"], g["index"], g["version"], g["netdev"]) for g in gids] == [
        ("mlx5_0", 0, "v1", "ens11f0"),
        ("mlx5_0", 1, "v2", "ens11f0"),
        ("mlx5_1", 0, "v1", None),
    ]
    # Link-local only: there is no IPv4 GID to give NCCL.
    assert roce_v2_gid_index(gids, "ens11f0", "10.0.0.1") is None


def test_show_gids_with_no_gid() -> None:
    assert parse_show_gids(fixture("show_gids-empty-calico-pod.txt")) == {"gids": []}


def test_show_gids_cut_short_or_miscounted_is_refused() -> None:
    lines = fixture("show_gids-rdma0.txt").splitlines()
    with pytest.raises(ParseError, match="n_gids_found"):
        parse_show_gids("\n".join(lines[:-1]))
    with pytest.raises(ParseError, match="n_gids_found=4 but 3 rows"):
        parse_show_gids("\n".join(lines[:3] + lines[4:]))
    with pytest.raises(ParseError, match="header"):
        parse_show_gids(fixture("ibstat-cx4-roce-and-ib.txt"))


# --- sysfs ------------------------------------------------------------------------------------------


def test_sysfs_dump_fixture_was_made_by_our_command() -> None:
    first = fixture("ib-sysfs-gpud-h100.txt").splitlines()[0]
    assert first == "$ " + ib_sysfs_command("/tmp/sys-class-infiniband-h100.0")
    assert ib_sysfs_command() == IB_SYSFS_COMMAND


def test_sysfs_dump_of_an_ndr_host() -> None:
    parsed = parse_ib_sysfs(fixture("ib-sysfs-gpud-h100.txt"))
    devices = {d["name"]: d for d in parsed["devices"]}
    assert len(devices) == 9
    assert devices["mlx5_0"] | {"ports": None} == {
        "name": "mlx5_0",
        "fw_ver": "28.41.1000",
        "hca_type": "MT4129",
        "board_id": "MT_0000000838",
        "ports": None,
    }
    assert devices["mlx5_0"]["ports"] == [
        {
            "port": 1,
            "state": "ACTIVE",
            "physical_state": "LinkUp",
            "rate_gbps": 400,
            "link_layer": "InfiniBand",
        }
    ]
    bond = devices["mlx5_bond_0"]
    assert (bond["hca_type"], bond["ports"][0]["rate_gbps"], bond["ports"][0]["link_layer"]) == (
        "MT41692",
        200,
        "Ethernet",
    )
    assert parsed["gids"] == []


def test_sysfs_and_ibstat_agree_on_the_same_host() -> None:
    sysfs = parse_ib_sysfs(fixture("ib-sysfs-gpud-h100.txt"))["devices"]
    ibstat = parse_ibstat(fixture("ibstat-h100-ib-ndr-9-hca.txt"))["adapters"]
    from_sysfs = {(d["name"], p["rate_gbps"], p["link_layer"]) for d in sysfs for p in d["ports"]}
    from_ibstat = {(a["name"], p["rate_gbps"], p["link_layer"]) for a in ibstat for p in a["ports"]}
    assert from_sysfs == from_ibstat


def test_sysfs_dump_cut_short_is_refused() -> None:
    capture = fixture("ib-sysfs-gpud-h100.txt")
    with pytest.raises(ParseError, match=r"no closing '\[exit N\]'"):
        parse_ib_sysfs(capture[: capture.index("mlx5_bond_0/ports/1/link_layer")])
    output = "\n".join(capture.splitlines()[1:-1])
    with pytest.raises(ParseError, match="mlx5_bond_0 port 1 lacks link_layer"):
        parse_ib_sysfs(output[: output.index("mlx5_bond_0/ports/1/link_layer")])
    with pytest.raises(ParseError, match="not 'path:value'"):
        parse_ib_sysfs(fixture("ibstat-mlx4-fdr-dual-port.txt"))


def test_sysfs_command_on_a_host_without_rdma_devices(tmp_path: Path) -> None:
    # The H100 host's /sys/class/infiniband exists and is empty (its capture lists only . and ..).
    capture = (CAPTURES / "h100" / "ib.txt").read_text()
    listing = capture.split("/sys/class/infiniband:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[-1] for line in listing[1:]] == [".", ".."]
    for root in (tmp_path, tmp_path / "absent"):
        done = subprocess.run(
            ["sh", "-c", ib_sysfs_command(str(root))], capture_output=True, text=True, check=False
        )
        assert (done.returncode, done.stdout) == (0, "")
        assert parse_ib_sysfs(done.stdout) == {"devices": [], "gids": []}


# --- facts ------------------------------------------------------------------------------------------


def test_facts_run_the_tools_only_where_rdma_devices_exist() -> None:
    assert IbStat().requires_command() == "ibstat"
    assert IbvDevinfo().requires_command() == "ibv_devinfo"
    assert ShowGids().requires_command() == "show_gids"
    for fact, tool in ((IbStat(), "ibstat"), (IbvDevinfo(), "ibv_devinfo")):
        command = fact.command()
        assert "/sys/class/infiniband" in command and f"then {tool}; fi" in command
    assert IbSysfs().command() == IB_SYSFS_COMMAND


def test_fact_defaults_are_the_no_rdma_answers() -> None:
    assert IbStat.default() == {"adapters": []}
    assert IbvDevinfo.default() == {"devices": []}
    assert ShowGids.default() == {"gids": []}
    assert IbSysfs.default() == {"devices": [], "gids": []}


def test_fact_process_parses_and_reports_bad_output_as_a_fact_error() -> None:
    lines = fixture("show_gids-rdma0.txt").splitlines()
    assert ShowGids.process(lines) == parse_show_gids(fixture("show_gids-rdma0.txt"))
    with pytest.raises(FactProcessError, match="ibpanic"):
        IbStat.process(fixture("ibstat-a100-ibpanic.txt").splitlines())


def test_parse_kinds() -> None:
    expected = {
        "ibstat": parse_ibstat,
        "ibv-devinfo": parse_ibv_devinfo,
        "show-gids": parse_show_gids,
        "ib-sysfs": parse_ib_sysfs,
    }
    assert expected == PARSE_KINDS
