"""Exo: installed at the pinned version, run in the foreground by launchd, its ports kept to the
cluster by pf, restarted only when its configuration changed. RDMA over Thunderbolt is detected;
when it is off the run prints the manual Recovery steps and goes on over TCP.

Every decision is in aicluster/exo.py; this role reads the facts and turns them into operations.
"""

from io import StringIO

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.context import state
from pyinfra.facts.files import File
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from aicluster import exo as exo_plan
from aicluster.deploy import fact, fail_host
from aicluster.facts.macos import IbvDevices, RdmaCtl, SwVers, thunderbolt_rdma_devices
from aicluster.inventory import host_spec
from roles import TEMPLATES


def _builds() -> dict[str, str | None]:
    """The macOS build of every node in this run, by node name."""
    builds: dict[str, str | None] = {}
    for other in state.inventory:
        builds[other.data.aicluster_node] = fact(SwVers, other)["build"]
    return builds


@deploy("Exo")
def exo() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    if spec.cluster.engine != "exo":
        host.noop("not an Exo cluster")
        return
    mismatch = exo_plan.build_mismatch(_builds())
    if mismatch:
        fail_host(mismatch)
        return
    if spec.exo.rdma:
        devices = thunderbolt_rdma_devices(fact(IbvDevices)["devices"])
        ready, message = exo_plan.rdma_state(node, fact(RdmaCtl), devices)
        if ready:
            host.noop(message)
        else:
            logger.warning(f"{host.print_prefix}{message}")
    version = exo_plan.pinned_version(spec)
    for path in (exo_plan.PREFIX, exo_plan.HOME, spec.exo.models_dir):
        files.directory(name=f"{path} exists", path=path, mode="755")
    if spec.exo.install == "source":
        if host.get_fact(File, path=exo_plan.install_marker(spec)):
            host.noop(f"Exo {version} is installed from source")
        else:
            server.shell(
                name=f"Exo {version} built from source with uv",
                commands=[exo_plan.source_install(spec)],
            )
    elif not host.get_fact(File, path=exo_plan.APP_EXO):
        fail_host(
            f"{node.name}: exo.install is app but {exo_plan.APP_EXO} is missing: install EXO.app "
            f"{version} in /Applications, or set exo.install: source"
        )
        return
    plist = files.template(
        name=exo_plan.PLIST,
        src=str(TEMPLATES / "exo" / f"{exo_plan.LABEL}.plist.j2"),
        dest=exo_plan.PLIST,
        mode="644",
        label=exo_plan.LABEL,
        version=version,
        node=node.name,
        program=exo_plan.program(spec),
        environment=exo_plan.environment(spec),
        home=exo_plan.HOME,
        log=exo_plan.LOG,
    )
    anchor = files.put(
        name=exo_plan.PF_ANCHOR_FILE,
        src=StringIO(exo_plan.pf_anchor(spec)),
        dest=exo_plan.PF_ANCHOR_FILE,
        mode="644",
    )
    conf = [
        files.line(name=f"pf.conf: {line}", path=exo_plan.PF_CONF, line=line)
        for line in exo_plan.PF_CONF_LINES
    ]
    server.shell(
        name="pf rules loaded and pf enabled",
        commands=[f"pfctl -q -f {exo_plan.PF_CONF} && (pfctl -q -e 2>/dev/null || true)"],
        _if=any_changed(anchor, *conf),
    )
    server.shell(
        name="Exo (re)started by launchd (configuration changed)",
        commands=[
            f"launchctl bootout system/{exo_plan.LABEL} 2>/dev/null || true",
            f"launchctl bootstrap system {exo_plan.PLIST}",
        ],
        _if=plist.did_change,
    )
