"""Base: each node is named as in the spec and resolves every node to its data-network address.

Debian and Ubuntu map the hostname to 127.0.1.1; Gloo and torch.distributed resolve the hostname to
pick the address they advertise, so a multi-node start-up then waits forever for a peer at a
loopback address. The alias goes, and every node's name points at its data address instead.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

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
