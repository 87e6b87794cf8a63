"""Ray's start arguments and the secrets it depends on (operation-plan level, no host)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aicluster import ports, raycluster
from aicluster.inventory import load_spec
from aicluster.secrets import SecretError, ensure_secret

INVENTORIES = Path(__file__).parents[2] / "inventories"


def test_head_binds_everything_to_its_data_address_on_fixed_ports() -> None:
    spec = load_spec(INVENTORIES / "homelab.yaml")
    args = raycluster.start_arguments(spec, spec.head)
    assert args[:5] == [
        "--head",
        f"--port={ports.RAY_GCS}",
        f"--ray-client-server-port={ports.RAY_CLIENT_SERVER}",
        "--dashboard-host=10.10.0.11",  # the dashboard never listens on the management LAN
        f"--dashboard-port={ports.RAY_DASHBOARD}",
    ]
    assert "--node-ip-address=10.10.0.11" in args
    assert "--num-gpus=4" in args
    # No port left for Ray to pick at random: the firewall must be able to name them all.
    assert {
        "--min-worker-port=10002",
        "--max-worker-port=10999",
        "--node-manager-port=6380",
    } <= set(args)


def test_worker_joins_the_head_over_the_data_network() -> None:
    spec = load_spec(INVENTORIES / "multinode_ib.yaml")
    worker = spec.nodes[1]
    args = raycluster.start_arguments(spec, worker)
    assert args[0] == "--address=10.100.0.11:6379"
    assert "--node-ip-address=10.100.0.12" in args
    assert "--head" not in args
    assert "--num-gpus=8" in args


def test_a_missing_secret_is_generated_readable_only_by_its_owner(tmp_path: Path) -> None:
    path = ensure_secret(tmp_path / "secrets" / "ray_token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 32
    assert ensure_secret(path).read_text() == path.read_text()  # kept, not regenerated


def test_an_unsafe_or_empty_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api_key"
    path.write_text("sk-local\n")
    path.chmod(0o644)
    with pytest.raises(SecretError, match=r"readable by others .* chmod 600"):
        ensure_secret(path)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        ensure_secret(path)
