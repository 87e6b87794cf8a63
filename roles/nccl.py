"""NCCL: one environment file per node, read by every service that talks over the data network.

NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME and VLLM_HOST_IP come from the interface that holds the
node's data address, NCCL_IB_HCA from the spec's ports that the node reports Active: see
aicluster/nccl.py. A node whose facts contradict the spec fails alone, with the reason.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from aicluster import nccl as nccl_env
from aicluster import wanted
from aicluster.deploy import drift, fact, fail_host, put
from aicluster.facts.net import IpAddr
from aicluster.facts.rdma import IbSysfs, ShowGids
from aicluster.inventory import host_spec
from aicluster.spec import RDMA_FABRICS


@deploy("NCCL environment")
def nccl() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    fabric = spec.cluster.fabric
    try:
        env = nccl_env.environment(
            spec,
            node,
            interfaces=fact(IpAddr)["interfaces"],
            # sysfs, not ibstat: it answers before roles/fabric installs infiniband-diags.
            ib_adapters=fact(IbSysfs)["devices"] if fabric in RDMA_FABRICS else None,
            gids=fact(ShowGids)["gids"] if fabric == "roce" else None,
            debug=host.data.get("nccl_debug", "WARN"),
        )
    except nccl_env.NcclError as error:
        fail_host(str(error))
        return
    env_file = wanted.File(nccl_env.ENV_FILE, nccl_env.render(env), "644")
    directory = wanted.Directory("/etc/aicluster", mode="755")
    if drift(wanted.Wanted(files=(env_file,), directories=(directory,))) is None:
        return
    files.directory(name=directory.path, path=directory.path, mode=directory.mode)
    put(env_file)
