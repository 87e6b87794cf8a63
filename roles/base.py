"""Base: node name, service user, name resolution, clock, kernel settings, limits and swap.

Debian and Ubuntu map the hostname to 127.0.1.1; Gloo and torch.distributed resolve the hostname to
pick the address they advertise, so a multi-node start-up then waits forever for a peer at a
loopback address. The alias goes, and every node's name points at its data address instead.

In a container (the lab's machines) the clock, the kernel and swap belong to the host: those steps
say so and change nothing; the limits apply everywhere.
"""

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from aicluster import system
from aicluster.deploy import fact
from aicluster.facts.system import ActiveSwaps, Container
from aicluster.inventory import host_spec

# No regex metacharacters: pyinfra matches the marker as a regular expression.
HOSTS_MARKER = "# {mark} aicluster nodes on the data network"


@deploy("Base node settings")
def base() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    server.hostname(name="Hostname is the node name", hostname=node.name)
    server.user(
        name="Service user aicluster",
        user="aicluster",
        system=True,
        home="/var/lib/aicluster",
        shell="/usr/sbin/nologin",
        create_home=True,
    )
    files.line(
        name="No loopback alias for the hostname",
        path="/etc/hosts",
        line=r"^127\.0\.1\.1\s.*$",
        present=False,
    )
    files.block(
        name="Every node resolves to its data-network address",
        path="/etc/hosts",
        content="\n".join(f"{peer.data_address}\t{peer.name}" for peer in spec.nodes),
        marker=HOSTS_MARKER,
    )
    files.put(
        name=f"memlock unlimited for logins ({system.LIMITS_FILE})",
        src=StringIO(system.limits_conf()),
        dest=system.LIMITS_FILE,
        mode="644",
    )
    container = fact(Container)
    if container:
        host.noop(
            f"clock, kernel settings and swap belong to the host of this {container} container"
        )
        return
    apt.packages(name="chrony keeps the clock in sync", packages=[system.TIME_SERVICE])
    systemd.service(
        name="chrony running and enabled", service=system.TIME_SERVICE, running=True, enabled=True
    )
    sysctl = files.put(
        name=system.SYSCTL_FILE,
        src=StringIO(system.sysctl_conf()),
        dest=system.SYSCTL_FILE,
        mode="644",
    )
    # -e: a kernel without NUMA has no kernel.numa_balancing; the rest still applies.
    server.shell(
        name="Kernel settings applied",
        commands=[f"sysctl -e -q -p {system.SYSCTL_FILE}"],
        _if=sysctl.did_change,
    )
    files.replace(
        name="No swap at boot (fstab entries commented out)",
        path="/etc/fstab",
        text=r"^([^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$",
        replace=r"# \1",
        extended_regex=True,
    )
    if fact(ActiveSwaps):
        server.shell(name="Swap off now", commands=["swapoff -a"])
