"""vLLM: the OpenAI-compatible service, its arguments from the spec and the plan.

The service restarts only when its unit, its launcher or a secret changed, and every node that
serves the API waits until /health answers before the run goes on. The ranks of one engine restart
together (a rank restarted alone waits forever for its old peers); independent replicas (one per
node) restart one node at a time, each answering again before the next goes down, so the cluster
keeps serving. See aicluster/vllmserve.py for what runs where.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from aicluster import plan, runtime, vllmserve
from aicluster.deploy import fact, fail_host, keep_running
from aicluster.inventory import host_spec
from aicluster.raycluster import STATE_DIR
from aicluster.secrets import SecretError, ensure_secret, secret_path
from roles import TEMPLATES, unit_file

UNIT = vllmserve.UNIT
HEALTH_TIMEOUT_S = 900


# Configuration operations of every rank of a native multi-node engine, in this run.
_ENGINE_CONFIG: list[OperationMeta] = []


def _any_rank_changed() -> bool:
    """Evaluated when the restart runs, after every host ran the configuration operations."""
    for op in _ENGINE_CONFIG:
        try:
            if op.did_change():
                return True
        except RuntimeError:  # a failed host never ran it
            continue
    return False


@deploy("vLLM")
def vllm() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    problems = plan.spec_problems(spec)
    if problems:
        fail_host("; ".join(f"{p.where()}: {p.message}" for p in problems))
        return
    try:
        launch = vllmserve.launch(spec, node)
    except vllmserve.LaunchError as error:
        fail_host(str(error))
        return
    if not launch.runs_vllm:
        host.noop("a Ray worker: vLLM runs on the head and reaches this node through Ray")
        return
    secrets = [("api_key", spec.security.api_key_file, vllmserve.API_KEY_FILE)]
    if spec.security.hf_token_file and spec.serving.model.path is None:
        secrets.append(("hf_token", spec.security.hf_token_file, vllmserve.HF_TOKEN_FILE))
    pushed = []
    credentials = []
    for name, configured, dest in secrets:
        if configured is None:
            fail_host(f"security.{name}_file is not set: the API would answer anyone")
            return
        try:
            local = ensure_secret(secret_path(host.data.aicluster_spec_file, configured))
        except SecretError as error:
            fail_host(str(error))
            return
        pushed.append(files.put(name=f"{name} (0600, root)", src=str(local), dest=dest, mode="600"))
        credentials.append((name, dest))
    wrapper = files.put(
        name="vLLM launcher",
        src=str(TEMPLATES / "vllm" / "vllm-serve.py"),
        dest=vllmserve.WRAPPER,
        mode="755",
    )
    pins = runtime.pins_for(spec, node)
    unit = unit_file(
        "vllm",
        UNIT,
        spec=spec,
        node=node,
        launch=launch,
        credentials=credentials,
        python=f"{runtime.VENV}/bin/python",
        wrapper=vllmserve.WRAPPER,
        state_dir=STATE_DIR,
        ray=spec.serving.distributed_backend == "ray" and len(spec.nodes) > 1,
        pins=" ".join(pins.requirements()),
    )
    mine = [unit, wrapper, *pushed]
    changed = any_changed(*mine)
    port = spec.serving.api_port
    if launch.replica_per_node and fact(SystemdStatus).get(f"{UNIT}.service", False):
        keep_running(UNIT, unit, restart_if=None)
        server.shell(
            name="vLLM restarted one replica at a time, each answering before the next",
            commands=[f"systemctl restart {UNIT} || exit 1; {health_wait(port)}"],
            _serial=True,
            _if=changed,
        )
        return
    if (
        spec.serving.distributed_backend == "native"
        and len(spec.nodes) > 1
        and not launch.replica_per_node
    ):
        # All ranks are one engine: a rank restarted alone waits forever for its old peers.
        _ENGINE_CONFIG.extend(mine)
        changed = _any_rank_changed
    keep_running(UNIT, unit, restart_if=changed)
    if launch.serves_api:
        server.shell(
            name=f"vLLM answers /health on port {port}",
            commands=[health_wait(port)],
            _if=changed,
        )


def health_wait(port: int) -> str:
    """Shell that waits for vLLM's /health on this node, failing with where to look."""
    return (
        f"for i in $(seq 1 {HEALTH_TIMEOUT_S // 5}); do "
        f"curl -sf -o /dev/null http://127.0.0.1:{port}/health && exit 0; sleep 5; done; "
        f"echo 'vLLM did not answer /health within {HEALTH_TIMEOUT_S}s: "
        f"journalctl -u {UNIT}' >&2; exit 1"
    )
