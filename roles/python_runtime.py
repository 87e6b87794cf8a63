"""Python runtime: one environment per node at /opt/aicluster/venv, with exactly the pinned versions.

The environment is built by uv from a wheelhouse made once on the control machine and pushed as one
file, so every node installs the very same wheels. A node already at the pins costs one remote
command (its fingerprint, shared with preflight; two for the CPU build, which also asks for its
system packages) and changes nothing.
"""

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from aicluster import runtime, wanted, wheelhouse
from aicluster.deploy import drift, fact
from aicluster.facts.runtime import RuntimeFingerprint
from aicluster.inventory import host_spec

STAGING = f"{runtime.ROOT}/wheelhouse"
# uv unpacks wheels in its cache; /tmp is often a small tmpfs (a container's always is), so the cache
# sits beside the environment and goes when the environment is built.
UV_CACHE = f"{runtime.ROOT}/uv-cache"


@deploy("Python runtime")
def python_runtime() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    pins = runtime.pins_for(spec, node)
    # vLLM's CPU kernels link libnuma, and torch.compile builds its CPU kernels with g++ against
    # the Python headers: without them every worker fails at start.
    cpu_build = ("libnuma1", "g++", "python3-dev")
    if pins.flavour == "cpu" and drift(wanted.Wanted(packages=cpu_build)) is not None:
        apt.packages(
            name="libnuma, g++ and Python headers for vLLM's CPU build", packages=list(cpu_build)
        )
    fingerprint = fact(RuntimeFingerprint)
    if runtime.satisfies(fingerprint, pins):
        host.noop(
            f"{pins.vllm_distribution} {pins.vllm} and ray {pins.ray} on Python {fingerprint['python']}"
        )
        return
    house = wheelhouse.ensure(pins, fingerprint["arch"], say=logger.info)
    files.directory(name="aicluster directories", path=f"{runtime.ROOT}/bin", mode="755")
    files.put(name="uv", src=str(house.uv_binary), dest=runtime.UV, mode="755")
    files.put(name="Wheelhouse", src=str(house.tarball), dest=f"{STAGING}.tar", mode="600")
    uv = f"UV_OFFLINE=1 UV_PYTHON_DOWNLOADS=never UV_CACHE_DIR={UV_CACHE} {runtime.UV}"
    python = f"{runtime.VENV}/bin/python"
    install = (
        f"{uv} pip install --python {python} --no-index --find-links {STAGING}/{wheelhouse.WHEELS}"
    )
    commands = [f"rm -rf {STAGING} && mkdir -p {STAGING} && tar -xf {STAGING}.tar -C {STAGING}"]
    if pins.flavour == "cpu":
        excludes = f"{STAGING}/excludes.txt"
        commands.append(f"printf '%s\\n' {' '.join(runtime.CPU_BUILD_EXCLUDES)} > {excludes}")
        install += f" --excludes {excludes}"
    commands += [
        f"{uv} venv --clear --python {pins.python} {runtime.VENV}",
        f"{install} {' '.join(pins.requirements())}",
        f"rm -rf {STAGING} {STAGING}.tar {UV_CACHE}",
    ]
    server.shell(name=f"Environment with {' '.join(pins.requirements())}", commands=commands)
