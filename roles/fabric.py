"""Fabric: RDMA user space, the subnet manager, IPoIB and Thunderbolt addresses, port MTUs and
lossless RoCE QoS, from the spec's fabric.

Every decision, and why each setting is persisted the way it is, is in aicluster/fabric.py; this
role reads the facts and turns the plan into operations. Memlock for RDMA is roles/base's. In a
container (the lab) the links and the kernel are the host's: nothing but RDMA packages is touched.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Which
from pyinfra.operations import apt, server, systemd

from aicluster import fabric as fabric_plan
from aicluster import wanted
from aicluster.deploy import drift, fact, fail_host, keep_running, put
from aicluster.facts.net import IpAddr
from aicluster.facts.rdma import IbSysfs
from aicluster.facts.system import Container
from aicluster.inventory import host_spec
from aicluster.spec import LINUX, RDMA_FABRICS
from roles import unit_file


def node_facts(kind: str) -> fabric_plan.NodeFacts:
    container = fact(Container)
    if container:
        return fabric_plan.NodeFacts(container=container)
    return fabric_plan.NodeFacts(
        container=None,
        interfaces=fact(IpAddr)["interfaces"] if kind in ("infiniband", "thunderbolt") else (),
        rdma_devices=fact(IbSysfs)["devices"] if kind in RDMA_FABRICS else (),
        mlnx_qos=host.get_fact(Which, command="mlnx_qos") if kind == "roce" else None,
    )


@deploy("Fabric")
def fabric() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    kind = spec.cluster.fabric
    try:
        plan = fabric_plan.plan_fabric(
            spec, node, node_facts(kind) if node.os in LINUX else fabric_plan.NodeFacts(None)
        )
    except fabric_plan.FabricError as error:
        fail_host(str(error))
        return
    for note in plan.notes:
        host.noop(note)
    modules = wanted.File(fabric_plan.MODULES_FILE, plan.modules_conf(), "644")
    network_files = [wanted.File(f.path, f.content, "644") for f in plan.network_files]
    unit = (
        unit_file(
            "fabric",
            fabric_plan.UNIT,
            links=plan.links,
            qos=plan.qos,
            mlnx_qos=plan.mlnx_qos,
            ip=fabric_plan.IP,
            pfc=fabric_plan.pfc_priorities(),
            priority=fabric_plan.LOSSLESS_PRIORITY,
            traffic_class=fabric_plan.ROCE_TRAFFIC_CLASS,
        )
        if plan.unit_needed
        else None
    )
    services = [
        *([fabric_plan.SUBNET_MANAGER] if plan.opensm else []),
        *([fabric_plan.NETWORKD] if network_files else []),
        *([fabric_plan.UNIT] if unit else []),
    ]
    want = wanted.Wanted(
        files=(
            *([modules] if plan.modules else []),
            *network_files,
            *([unit] if unit else []),
        ),
        packages=(*plan.packages, *(["opensm"] if plan.opensm else [])),
        modules=plan.modules,
        services=tuple(
            wanted.Service(s, reads=(unit.path,), own_unit=True)
            if unit and s == fabric_plan.UNIT
            else wanted.Service(s)
            for s in services
        ),
    )
    if want == wanted.Wanted():
        return
    found = drift(want)
    if found is None:
        return
    if plan.packages:
        apt.packages(name="RDMA user space and tools", packages=list(plan.packages))
    if plan.opensm:
        apt.packages(name="opensm (no switch-run subnet manager)", packages=["opensm"])
        systemd.service(
            name="opensm running and enabled",
            service=fabric_plan.SUBNET_MANAGER,
            running=True,
            enabled=True,
        )
    if plan.modules:
        put(modules, name=f"{', '.join(plan.modules)} loaded at boot")
        server.modprobe(name=f"{', '.join(plan.modules)} loaded", module=list(plan.modules))
    if network_files:
        written = [put(file) for file in network_files]
        systemd.service(
            name="systemd-networkd running and enabled",
            service=fabric_plan.NETWORKD,
            running=True,
            enabled=True,
        )
        for file, put_file in zip(plan.network_files, written, strict=True):
            # An interface that is not there (a cable out) is configured when it appears.
            server.shell(
                name=f"systemd-networkd reloaded ({file.interface} changed)",
                commands=[
                    f"networkctl reload && if [ -e /sys/class/net/{file.interface} ]; then "
                    f"networkctl reconfigure {file.interface}; fi"
                ],
                _if=put_file.did_change,
            )
    if unit:
        put_unit = put(unit, name=f"{fabric_plan.UNIT}.service")
        keep_running(
            fabric_plan.UNIT,
            put_unit,
            restart_if=put_unit.did_change,
            pending=found.restart_pending(fabric_plan.UNIT),
        )
