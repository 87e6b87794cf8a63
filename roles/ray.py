"""Ray: a head and workers as systemd services, on the data network, fixed ports, token auth on.

Ray's ports are unauthenticated by default: anyone who reaches them runs code on the cluster.
Every node gets the cluster's one token (0600, owned by the service user) and RAY_AUTH_MODE=token.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations.util import any_changed

from aicluster import nccl as nccl_env
from aicluster import raycluster, wanted
from aicluster.deploy import drift, fail_host, keep_running, put, restart, written
from aicluster.inventory import host_spec
from aicluster.secrets import SecretError, ensure_secret, secret_path
from roles import unit_file

UNIT = "aicluster-ray"
# Ray's restarts on every host in this run: vLLM over Ray restarts on the head after any of them.
RESTARTS: list[OperationMeta] = []


@deploy("Ray")
def ray() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    if spec.security.ray_token_file is None:
        fail_host("security.ray_token_file is not set: Ray would run without authentication")
        return
    try:
        token = ensure_secret(
            secret_path(host.data.aicluster_spec_file, spec.security.ray_token_file)
        )
    except SecretError as error:
        fail_host(str(error))
        return
    token_file = wanted.File(
        raycluster.TOKEN_FILE,
        token.read_bytes().decode(),
        "600",
        user="aicluster",
        group="aicluster",
    )
    unit = unit_file(
        "ray",
        UNIT,
        spec=spec,
        node=node,
        ray=raycluster.ray_binary(),
        arguments=raycluster.start_arguments(spec, node),
        token_file=raycluster.TOKEN_FILE,
        state_dir=raycluster.STATE_DIR,
    )
    # NCCL's environment is roles/nccl's file: when that role rewrites it, Ray restarts too.
    environment = written(nccl_env.ENV_FILE)
    service = wanted.Service(
        UNIT, reads=(nccl_env.ENV_FILE, raycluster.TOKEN_FILE, unit.path), own_unit=True
    )
    found = drift(wanted.Wanted(files=(token_file, unit), services=(service,)))
    if found is None:
        if environment:
            RESTARTS.append(restart(UNIT, any_changed(*environment)))
        return
    put_token = put(token_file, name="Ray token (0600, service user)")
    put_unit = put(unit, name=f"{UNIT}.service")
    restarted = keep_running(
        UNIT,
        put_unit,
        restart_if=any_changed(put_unit, put_token, *environment),
        pending=found.restart_pending(UNIT),
    )
    if restarted:
        RESTARTS.append(restarted)
