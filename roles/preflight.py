"""Preflight: before anything changes, every node's environment is compared with the others'.

Nodes that disagree (one upgraded by hand, a driver updated by unattended-upgrades, a different
kernel) stop the whole run with a table of the differences: restarting services across such a
cluster is how a multi-node engine ends up hanging at start. Nodes that all agree but differ from
the spec are an upgrade, which the roles carry out.
"""

from typing import Any

from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.context import host, inventory

from aicluster import runtime
from aicluster.deploy import fact
from aicluster.facts.runtime import RuntimeFingerprint

_checked: dict[str, str] = {}


@deploy("Preflight")
def preflight() -> None:
    # Every host's greenlet reads its own node first, all at once; the table then waits for them.
    fact(RuntimeFingerprint)
    if "table" not in _checked:
        fingerprints: dict[str, dict[str, Any]] = {}
        active = set(inventory.get_active_hosts())
        for node in (h for h in inventory if h in active):  # inventory order: a stable table
            fingerprint = fact(RuntimeFingerprint, node)
            if fingerprint and fingerprint.get("python") is not None:
                fingerprints[node.name] = fingerprint
        _checked["table"] = runtime.drift_table(runtime.drift(fingerprints))
    if _checked["table"]:
        raise DeployError(
            "version drift between nodes; nothing was changed. Bring the odd node back with "
            f"`pyinfra INVENTORY deploys/vllm_cluster.py --limit NODE`:\n{_checked['table']}"
        )
    host.noop("every node with an environment has the same versions")
