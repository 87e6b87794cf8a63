"""vLLM: the OpenAI-compatible service, its arguments from the spec and the plan.

The service restarts only when its unit, its launcher or a secret changed, and every node that
serves the API waits until /health answers before the run goes on. The ranks of one engine restart
together (a rank restarted alone waits forever for its old peers); independent replicas (one per
node) restart one node at a time, each answering again before the next goes down, so the cluster
keeps serving. See aicluster/vllmserve.py for what runs where.
"""

from collections.abc import Callable

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import server

from aicluster import nccl as nccl_env
from aicluster import plan, runtime, vllmserve, wanted
from aicluster.deploy import (
    AnyChanged,
    drift,
    fact,
    fail_host,
    keep_running,
    put,
    restart,
    written,
)
from aicluster.inventory import host_spec
from aicluster.raycluster import STATE_DIR
from aicluster.secrets import SecretError, ensure_secret, secret_path
from roles import TEMPLATES, unit_file
from roles.ray import RESTARTS as RAY_RESTARTS

UNIT = vllmserve.UNIT
HEALTH_TIMEOUT_S = 900


# Configuration operations of every rank of a native multi-node engine, in this run, and the
# ranks whose systemd still runs an older unit file than the one on disk.
_ENGINE_CONFIG: list[OperationMeta] = []
_ENGINE_PENDING: list[str] = []
# Evaluated when the restart runs, after every host ran the configuration operations.
_any_rank_changed = AnyChanged(_ENGINE_CONFIG, always=_ENGINE_PENDING)


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
    files: list[wanted.File] = []
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
        files.append(wanted.File(dest, local.read_bytes().decode(), "600"))
        credentials.append((name, dest))
    wrapper = wanted.File(
        vllmserve.WRAPPER, (TEMPLATES / "vllm" / "vllm-serve.py").read_bytes().decode(), "755"
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
    port = spec.serving.api_port
    # All ranks of a native multi-node engine are one engine: a rank restarted alone waits
    # forever for its old peers, so every rank restarts when any rank's configuration changed.
    one_engine = (
        spec.serving.distributed_backend == "native"
        and len(spec.nodes) > 1
        and not launch.replica_per_node
    )
    # NCCL's environment is roles/nccl's file: when that role rewrites it, vLLM restarts too.
    environment = written(nccl_env.ENV_FILE)
    reads = (nccl_env.ENV_FILE, vllmserve.WRAPPER, *(f.path for f in files))
    found = drift(
        wanted.Wanted(files=(unit, wrapper, *files), services=(wanted.Service(UNIT, reads=reads),))
    )
    # vLLM over Ray loses its workers when Ray restarts on any node: it restarts after them.
    over_ray = (
        spec.serving.distributed_backend == "ray"
        and len(spec.nodes) > 1
        and not launch.replica_per_node
    )
    if found is None and not environment and not one_engine and not over_ray:
        return
    put_unit = None
    mine = []
    pending = False
    if found is not None:
        put_unit = put(unit, name=f"{UNIT}.service")
        mine = [put_unit, put(wrapper, name="vLLM launcher")]
        mine += [
            put(file, name=f"{name} (0600, root)")
            for (name, _), file in zip(credentials, files, strict=True)
        ]
        pending = found.restart_pending(UNIT)
    mine += environment
    changed: Callable[[], bool] = AnyChanged(
        mine, *([RAY_RESTARTS] if over_ray else []), always=[host.name] if pending else []
    )
    running = found is None or fact(SystemdStatus).get(f"{UNIT}.service", False)
    if launch.replica_per_node and running:
        if put_unit:
            keep_running(UNIT, put_unit, restart_if=None, pending=pending)
        server.shell(
            name="vLLM restarted one replica at a time, each answering before the next",
            commands=[f"systemctl restart {UNIT} || exit 1; {health_wait(port)}"],
            _serial=True,
            _if=changed,
        )
        return
    if one_engine:
        _ENGINE_CONFIG.extend(mine)
        if pending:
            _ENGINE_PENDING.append(host.name)
        changed = _any_rank_changed
    if put_unit:
        keep_running(UNIT, put_unit, restart_if=changed, pending=pending)
    else:
        restart(UNIT, changed)
    _wait_for_health(launch, port, changed)


def _wait_for_health(launch: vllmserve.Launch, port: int, changed: Callable[[], bool]) -> None:
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
