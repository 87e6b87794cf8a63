"""Base: node name, service user, name resolution, clock, kernel settings, limits and swap.

Debian and Ubuntu map the hostname to 127.0.1.1; Gloo and torch.distributed resolve the hostname to
pick the address they advertise, so a multi-node start-up then waits forever for a peer at a
loopback address. The alias goes, and every node's name points at its data address instead.

In a container (the lab's machines) the clock, the kernel and swap belong to the host: those steps
say so and change nothing; the limits apply everywhere.
"""

from dataclasses import replace

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from aicluster import system, wanted
from aicluster.deploy import drift, fact, put
from aicluster.facts.system import ActiveSwaps, Container
from aicluster.inventory import host_spec

# No regex metacharacters: pyinfra matches the marker as a regular expression.
HOSTS_MARKER = "# {mark} aicluster nodes on the data network"
LOOPBACK_ALIAS = r"^127\.0\.1\.1\s.*$"
# An active swap line of /etc/fstab, as sed -E reads it (files.replace), and as Python does.
FSTAB_SWAP = r"^([^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$"
FSTAB_SWAP_PYTHON = FSTAB_SWAP.replace("[:space:]", r"\s")
SERVICE_USER = wanted.User("aicluster", home="/var/lib/aicluster", shell="/usr/sbin/nologin")


@deploy("Base node settings")
def base() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    container = fact(Container)
    limits = wanted.File(system.LIMITS_FILE, system.limits_conf(), "644")
    sysctl = wanted.File(system.SYSCTL_FILE, system.sysctl_conf(), "644")
    hosts = wanted.Block(
        "/etc/hosts",
        HOSTS_MARKER,
        "\n".join(f"{peer.data_address}\t{peer.name}" for peer in spec.nodes),
    )
    want = wanted.Wanted(
        hostname=node.name,
        users=(SERVICE_USER,),
        directories=(
            wanted.Directory(SERVICE_USER.home, user=SERVICE_USER.name, group=SERVICE_USER.name),
        ),
        files=(limits,),
        no_lines=(wanted.NoLine("/etc/hosts", LOOPBACK_ALIAS),),
        blocks=(hosts,),
    )
    if not container:
        want = replace(
            want,
            files=(limits, sysctl),
            packages=(system.TIME_SERVICE,),
            services=(wanted.Service(system.TIME_SERVICE),),
            no_lines=(
                *want.no_lines,
                wanted.NoLine("/etc/fstab", FSTAB_SWAP_PYTHON),
                wanted.NoLine("/proc/swaps", "^/"),  # an active swap area's line
            ),
        )
    if drift(want) is None:
        return
    server.hostname(name="Hostname is the node name", hostname=node.name)
    server.user(
        name="Service user aicluster",
        user=SERVICE_USER.name,
        system=True,
        home=SERVICE_USER.home,
        shell=SERVICE_USER.shell,
        create_home=True,
    )
    files.line(
        name="No loopback alias for the hostname",
        path="/etc/hosts",
        line=LOOPBACK_ALIAS,
        present=False,
    )
    files.block(
        name="Every node resolves to its data-network address",
        path=hosts.path,
        content=hosts.content,
        marker=hosts.marker,
    )
    put(limits, name=f"memlock unlimited for logins ({system.LIMITS_FILE})")
    if container:
        host.noop(
            f"clock, kernel settings and swap belong to the host of this {container} container"
        )
        return
    apt.packages(name="chrony keeps the clock in sync", packages=[system.TIME_SERVICE])
    systemd.service(
        name="chrony running and enabled", service=system.TIME_SERVICE, running=True, enabled=True
    )
    put_sysctl = put(sysctl)
    # -e: a kernel without NUMA has no kernel.numa_balancing; the rest still applies.
    server.shell(
        name="Kernel settings applied",
        commands=[f"sysctl -e -q -p {system.SYSCTL_FILE}"],
        _if=put_sysctl.did_change,
    )
    files.replace(
        name="No swap at boot (fstab entries commented out)",
        path="/etc/fstab",
        text=FSTAB_SWAP,
        replace=r"# \1",
        extended_regex=True,
    )
    if fact(ActiveSwaps):
        server.shell(name="Swap off now", commands=["swapoff -a"])
