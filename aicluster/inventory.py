"""Loading an inventory: a YAML file validated into a ClusterSpec, then turned into pyinfra groups.

Validation happens here, before anything connects to a host. Every problem is reported as
`<file>: <section or nodes.NAME>.<field>: <message>`, and bad input never raises anything but
SpecError.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aicluster.spec import ClusterSpec, Loc, Node, Problem, RuleViolation


class SpecError(Exception):
    """An inventory that cannot be used, with every problem found in it."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}: {problem.where()}: {problem.message}" for problem in self.problems]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice: PyYAML would silently keep the last one."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def spec_path(inventory: str | Path) -> Path:
    """The YAML spec of an inventory given as `x.yaml` or as its pyinfra module `x.py`."""
    path = Path(inventory)
    return path.with_suffix(".yaml") if path.suffix == ".py" else path


def load_spec(inventory: str | Path) -> ClusterSpec:
    """Read and validate an inventory; raise SpecError naming every problem."""
    path = spec_path(inventory)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(path, [Problem((), f"cannot read the file: {error}")]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise SpecError(path, [_yaml_problem(error)]) from None
    if not isinstance(data, dict):
        raise SpecError(
            path,
            [
                Problem(
                    (), "expected a mapping with the sections cluster, nodes, serving and security"
                )
            ],
        )
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(path, _problems(error, data)) from None


def _yaml_problem(error: yaml.YAMLError) -> Problem:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where: Loc = (f"line {mark.line + 1} column {mark.column + 1}",) if mark else ()
    return Problem(where, f"not valid YAML: {problem}")


def _problems(error: ValidationError, data: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors():
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolation):
            problems.extend(cause.problems)
            continue
        loc = _named_loc(tuple(item["loc"]), data)
        problems.append(Problem(loc, _message(item)))
    return problems


PATTERN_HINTS = {
    "name": "a DNS-safe name (lowercase letters, digits and inner hyphens, at most 63)",
    "interface": "a network interface name (at most 15 characters, no spaces or slashes)",
    "hca": "an RDMA device name such as mlx5_0",
    "user": "a login name (lowercase letters, digits, _ and -)",
    "hf_id": "a Hugging Face repository id such as org/model",
    "nvidia_driver_branch": 'a driver branch such as "570" or "570-open"',
}


def _message(item: Any) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        return "unknown field (check its spelling and the section it is in)"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch" and item["loc"][-1] in PATTERN_HINTS:
        return f"{item['input']!r} is not {PATTERN_HINTS[item['loc'][-1]]}"
    message = str(item["msg"])
    return message.removeprefix("Value error, ")


def _named_loc(loc: Loc, data: dict[str, Any]) -> Loc:
    """Replace a node's list index by its name when it has one: nodes.gpu2.ssh, not nodes[1].ssh."""
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        nodes = data.get("nodes")
        if isinstance(nodes, list) and loc[1] < len(nodes):
            node = nodes[loc[1]]
            name = node.get("name") if isinstance(node, dict) else None
            if isinstance(name, str) and name and names_unique(nodes, name):
                return ("nodes", name, *loc[2:])
    return loc


def names_unique(nodes: list[Any], name: str) -> bool:
    return sum(1 for node in nodes if isinstance(node, dict) and node.get("name") == name) == 1


HostEntry = tuple[str, dict[str, Any]]


def pyinfra_groups(spec: ClusterSpec, spec_file: Path) -> dict[str, list[HostEntry]]:
    """pyinfra groups for a spec: nodes, head, workers, and one group per engine (vllm, exo).

    Host data carries the SSH connection and where to find the spec; roles read everything else
    from the spec itself, so no derived value lives in two places."""
    base = spec_file.resolve().parent
    hosts: dict[str, HostEntry] = {}
    for node in spec.nodes:
        data: dict[str, Any] = {
            "ssh_hostname": node.ssh.address,
            "ssh_port": node.ssh.port,
            "ssh_user": node.ssh.user,
            "aicluster_spec_file": str(spec_file.resolve()),
            "aicluster_node": node.name,
            "aicluster_role": node.role,
            "aicluster_data_address": str(node.data_address),
        }
        if node.ssh.key_file:
            data["ssh_key"] = str(base / node.ssh.key_file)
        if node.ssh.known_hosts_file:
            data["ssh_known_hosts_file"] = str(base / node.ssh.known_hosts_file)
            data["ssh_strict_host_key_checking"] = "yes"
        if node.ssh.user != "root":
            data["_sudo"] = True
        hosts[node.name] = (node.name, data)
    engine = spec.cluster.engine
    return {
        "nodes": list(hosts.values()),
        "head": [hosts[spec.head.name]],
        "workers": [hosts[node.name] for node in spec.nodes if node.role == "worker"],
        "vllm": list(hosts.values()) if engine == "vllm" else [],
        "exo": list(hosts.values()) if engine == "exo" else [],
    }


def groups_for(inventory_module: str) -> dict[str, list[HostEntry]]:
    """Called by inventories/<name>.py: validate <name>.yaml beside it and return its groups.

    An invalid spec stops pyinfra right here, before it connects to anything, with the same
    messages as `aicluster validate` and exit status 2."""
    path = spec_path(inventory_module)
    try:
        spec = load_spec(path)
    except SpecError as error:
        for line in error.lines():
            print(line, file=sys.stderr)
        raise SystemExit(2) from None
    return pyinfra_groups(spec, path)


@lru_cache(maxsize=8)
def host_spec(spec_file: str, node_name: str) -> tuple[ClusterSpec, Node]:
    """The spec (validated once per run) and this host's node in it, for roles."""
    spec = load_spec(spec_file)
    return spec, next(node for node in spec.nodes if node.name == node_name)
