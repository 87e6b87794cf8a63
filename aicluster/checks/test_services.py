"""Service checks: aicluster's units run, the firewall keeps cluster ports inside, secrets are private."""

from __future__ import annotations

import json

import pytest
import testinfra.host

from aicluster import firewall, vllmserve
from aicluster.checks import fail
from aicluster.checks.context import Target
from aicluster.raycluster import TOKEN_FILE
from aicluster.spec import ClusterSpec, Node

SECRETS = (vllmserve.API_KEY_FILE, vllmserve.HF_TOKEN_FILE, TOKEN_FILE)


def test_service_running(host: testinfra.host.Host, unit: Target) -> None:
    """Each aicluster service this node should run is active and enabled (back after a reboot)."""
    service = host.service(unit.value)
    state = host.run(f"systemctl is-active {unit.value}").stdout.strip() or "unknown"
    if not service.is_running:
        fail(
            f"{unit.value} is {state}",
            f"journalctl -u {unit.value} -n 50; systemctl restart {unit.value}",
        )
    if not service.is_enabled:
        fail(
            f"{unit.value} runs but is not enabled: it will not come back after a reboot",
            f"systemctl enable {unit.value}",
        )


def test_firewall_keeps_cluster_ports_inside(host: testinfra.host.Host, spec: ClusterSpec) -> None:
    """No port of Ray, NCCL/Gloo, TCPStore or vLLM's internals accepts a connection from outside
    the cluster (Ray's ports run code for whoever connects)."""
    result = host.run(f"nft -j list table inet {firewall.TABLE}")
    if result.rc != 0:
        fail(
            f"table inet {firewall.TABLE} is not loaded: every cluster port is open",
            f"systemctl restart {firewall.UNIT} (roles/firewall)",
        )
    exposed = firewall.exposed_ports(json.loads(result.stdout), spec)
    if exposed:
        fail(
            f"open to outside the cluster: {'; '.join(exposed[:4])}"
            + (f" and {len(exposed) - 4} more" if len(exposed) > 4 else ""),
            f"remove the rule (nft -a list table inet {firewall.TABLE}), or systemctl restart {firewall.UNIT}",
        )


def test_secrets_private(host: testinfra.host.Host) -> None:
    """The API key, HF token and Ray token on the node are readable by their owner only."""
    loose = []
    for path in SECRETS:
        secret = host.file(path)
        if secret.exists and secret.mode & 0o077:
            loose.append(f"{path} ({oct(secret.mode)})")
    if loose:
        fail(f"readable by others: {', '.join(loose)}", "chmod 600 them; converge again")


def test_api_answers_health(host: testinfra.host.Host, node: Node, spec: ClusterSpec) -> None:
    """vLLM's OpenAI API answers /health on every node that serves it (the head, or each replica)."""
    try:
        serves = vllmserve.launch(spec, node).serves_api
    except vllmserve.LaunchError as error:
        fail(f"the spec cannot be served: {error}", "aicluster validate; aicluster plan")
    if not serves:
        pytest.skip("the API is served by the head")
    url = f"http://127.0.0.1:{spec.serving.api_port}/health"
    code = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {url}").stdout.strip()
    if code != "200":
        fail(
            f"/health on port {spec.serving.api_port} answers {code if code != '000' else 'nothing'}",
            f"journalctl -u {vllmserve.UNIT} -n 100 (start-up takes minutes: model load, warm-up)",
        )
