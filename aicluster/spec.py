"""The cluster specification: one validated description that deploys, checks and the planner read.

Every model is strict: unknown keys are refused (a typo never silently becomes a default) and no
value is coerced across types (the string "yes" is not a boolean, the number 3.10 is not the version
"3.10"). Rules that involve several fields live in `ClusterSpec.check_rules` and report every
violation at once, each with the place it concerns, so that a user fixes a file in one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    model_validator,
)

from aicluster import driver

Loc = tuple[str | int, ...]

# A node name becomes a hostname, a pyinfra host name and part of file names: keep it DNS-safe.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# Linux network interface names are at most 15 characters (IFNAMSIZ - 1).
INTERFACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}$"
VERSION_PATTERN = r"^[0-9]+(\.[0-9]+)*([a-z0-9.+-]*)$"

OsFamily = Literal["ubuntu", "debian", "macos"]
LINUX: frozenset[str] = frozenset({"ubuntu", "debian"})
RDMA_FABRICS: frozenset[str] = frozenset({"infiniband", "roce"})
# Every Thunderbolt cable between two nodes is its own point-to-point network.
CABLE_PREFIX = 30


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (a path of keys) and what to do about it."""

    loc: Loc
    message: str

    def where(self) -> str:
        """The location as `section.field[index].field`, or `(file)` for the whole file."""
        text = ""
        for part in self.loc:
            if isinstance(part, int):
                text += f"[{part}]"
            else:
                text += f".{part}" if text else part
        return text or "(file)"


class RuleViolation(ValueError):
    """Raised by the cross-field rules; carries every problem found, with its location."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.where()}: {p.message}" for p in problems))
        self.problems = problems


def _quoted_version(value: Any) -> Any:
    # YAML reads `3.10` as the float 3.1: refuse numbers rather than guess which version was meant.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"write versions in quotes (YAML reads {value!r} as a number): '{value}'")
    return value


def _parallel_degree(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f'must be a whole number >= 1 or "auto", not {value!r}')


Version = Annotated[str, BeforeValidator(_quoted_version), Field(pattern=VERSION_PATTERN)]
Degree = Annotated[int | Literal["auto"], BeforeValidator(_parallel_degree)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ClusterSection(Strict):
    """What the cluster is called, which engine serves, and its two networks."""

    name: Name
    """Short DNS-safe name, used in service names and file paths."""
    engine: Literal["vllm", "exo"]
    """vllm: NVIDIA or CPU nodes on Linux. exo: Macs sharing unified memory."""
    management_network: IPvAnyNetwork
    """CIDR of the network aicluster reaches nodes on over SSH."""
    data_network: IPvAnyNetwork
    """CIDR of the fast network the engine's traffic (NCCL, Gloo, Ray, Exo) must use. It may equal the
    management network on a single-network homelab."""
    fabric: Literal["ethernet", "infiniband", "roce", "thunderbolt"] = "ethernet"
    """Kind of the data network. infiniband, roce and thunderbolt need their ports named on every node.
    thunderbolt between Linux nodes (or Macs whose ports all name their peer): every pair of nodes has its own cable, and the cable between
    the i-th and the j-th node (i < j, in list order) takes the k-th /30 of data_network, counting
    cables by j, then i (so appending a node never moves an existing cable); the earlier node gets
    its first address, the later node the second. Each node's data_address is one of its cable
    addresses, and peers reach it over their direct cable."""
    subnet_manager: Literal["switch", "opensm"] = "switch"
    """InfiniBand only: who runs the subnet manager. switch: a managed switch (or an SM already on
    the fabric). opensm: no switch-run SM (unmanaged switch, or nodes cabled back to back), so
    every node runs opensm: one becomes master, the others stand by."""


class Ssh(Strict):
    """How aicluster reaches a node."""

    address: Annotated[str, Field(min_length=1, pattern=r"^[^\s@]+$")]
    """IP address or resolvable hostname on the management network."""
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "root"
    """Login user; any user but root gets sudo for every operation."""
    key_file: str | None = None
    """Private key on the control machine (relative to the inventory file). Default: ssh-agent/ssh config."""
    known_hosts_file: str | None = None
    """known_hosts file on the control machine (relative to the inventory file). Default: ~/.ssh/known_hosts."""


class GpuGroup(Strict):
    """Identical GPUs in one node. A node with two GPU models lists two groups, in index order."""

    model: Annotated[str, Field(min_length=1)]
    """Model as nvidia-smi names it, e.g. "NVIDIA GeForce RTX 3090", or the chip, e.g. "Apple M3 Ultra"."""
    count: Annotated[int, Field(ge=1, le=64)]
    memory_gib: Annotated[float, Field(gt=0)]
    """Memory of one GPU in GiB (unified memory for a Mac)."""


class FabricPort(Strict):
    """One network port of the data fabric on a node."""

    kind: Literal["ethernet", "infiniband", "roce", "thunderbolt"]
    interface: Annotated[str, Field(pattern=INTERFACE_PATTERN)]
    """Network interface name on the node (ib0, enp65s0f0np0, en2)."""
    rate_gbps: Annotated[float, Field(gt=0)]
    """Expected link rate: checks fail when the port runs slower."""
    mtu: Annotated[int, Field(ge=1280, le=65520)] = 1500
    hca: Annotated[str, Field(pattern=INTERFACE_PATTERN)] | None = None
    """RDMA device of an InfiniBand/RoCE port (mlx5_0), as NCCL_IB_HCA names it."""
    peer: Name | None = None
    """Thunderbolt only: the node at the other end of this port's cable. Required on Linux nodes,
    where each cable gets its own /30 (see cluster.fabric). On Macs, naming the peer of every port
    gives each cable its /30 too (roles/mac_network); naming none leaves macOS's own Thunderbolt
    configuration alone."""


@dataclass(frozen=True)
class CableEnd:
    node: str
    interface: str
    address: IPv4Address


@dataclass(frozen=True)
class Cable:
    """A Thunderbolt cable between two nodes, with the /30 derived for it."""

    network: IPv4Network
    first: CableEnd
    second: CableEnd

    def joins(self, node: str) -> bool:
        return node in (self.first.node, self.second.node)

    def end_of(self, node: str) -> CableEnd:
        return self.first if self.first.node == node else self.second

    def other_end(self, node: str) -> CableEnd:
        return self.second if self.first.node == node else self.first


class Node(Strict):
    """One machine of the cluster."""

    name: Name
    role: Literal["head", "worker"]
    """Exactly one head: it runs the Ray head / vLLM API (or Exo's first node)."""
    os: OsFamily
    ssh: Ssh
    data_address: IPvAnyAddress
    """This node's address on the data network: NCCL, Gloo, Ray and vLLM bind and advertise it."""
    gpus: list[GpuGroup] = []
    """GPU groups in index order. Empty: a CPU-only node (the lab), which runs one CPU worker."""
    accelerator_link: Literal["nvlink", "pcie", "unified_memory"] | None = None
    """How the GPUs of this node talk to each other. Required when the node has GPUs."""
    fabric: list[FabricPort] = []
    """Ports of the data fabric. Ethernet ports may be left out: the data address finds them (and
    keep their MTU). On an InfiniBand fabric the first infiniband port carries the data address
    (IPoIB)."""
    psu_watts: Annotated[int, Field(gt=0)] | None = None
    """Power supply rating, for the planner's power budget (optional)."""

    def device_models(self) -> list[str]:
        """The model of each device by index; a CPU-only node counts as one "cpu" device."""
        if not self.gpus:
            return ["cpu"]
        return [group.model for group in self.gpus for _ in range(group.count)]


class ModelSource(Strict):
    """The model to serve."""

    hf_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")] | None = None
    """Hugging Face repository id, e.g. meta-llama/Llama-3.3-70B-Instruct."""
    path: str | None = None
    """Absolute path of the model directory on every node (takes precedence over hf_id)."""
    revision: str | None = None
    """Commit or tag of hf_id, pinned so every node loads the same weights."""
    quantization: Literal["bf16", "fp16", "float32", "fp8", "int8", "int4"] = "bf16"
    """Weights as served: bf16/fp16/float32 (--dtype), fp8 (dynamic FP8), int8/int4 (a quantized
    checkpoint, read from its own config)."""
    max_context: Annotated[int, Field(ge=1)]
    """Longest context (prompt + output tokens) the service must accept."""


class Parallelism(Strict):
    """How the model is split: tensor x pipeline x data must equal the devices of all nodes."""

    tensor: Degree = "auto"
    """GPUs sharing every layer; for vLLM always inside one node, over identical GPUs."""
    pipeline: Degree = "auto"
    """Stages of consecutive layers, normally one per node."""
    data: Degree = "auto"
    """Independent replicas of the whole model."""


class Versions(Strict):
    """Versions pinned for every node: drift between nodes is the classic multi-node failure."""

    python: Version
    vllm: Version | None = None
    ray: Version | None = None
    exo: Version | None = None
    nvidia_driver_branch: Annotated[str, Field(pattern=r"^[0-9]{3}(-open)?$")] | None = None
    """Driver branch such as "570" or "570-open"."""


class NvidiaDriver(Strict):
    """How the NVIDIA driver gets onto GPU nodes (roles/nvidia_driver; branch in serving.versions)."""

    source: Literal["cuda-repo", "distro", "preinstalled"] = "cuda-repo"
    """cuda-repo: NVIDIA's CUDA repository (Ubuntu 22.04/24.04, Debian 12). distro: the
    distribution's own packages (Ubuntu's signed -server modules, Debian 12's 535). preinstalled:
    change nothing, only check that the loaded driver is the pinned branch."""
    kernel_modules: Literal["auto", "open", "proprietary"] = "auto"
    """auto: open for Turing and newer, proprietary for Maxwell, Pascal and Volta. A branch ending
    in -open asks for open."""
    allow_reboot: bool = False
    """Reboot a node (one at a time) when its loaded driver is not the planned one. Off: the run
    says "reboot needed" and leaves it to you."""


class Serving(Strict):
    model: ModelSource
    parallelism: Parallelism = Parallelism()
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """Port of the OpenAI-compatible API on the head node."""
    api_allowed_networks: list[IPvAnyNetwork] = []
    """Networks whose clients may reach the API port. Empty: the management network only."""
    versions: Versions
    distributed_backend: Literal["ray", "native"] = "ray"
    """How vLLM spans nodes: ray (the Ray executor, started on the head) or native (vLLM's own
    --nnodes/--node-rank/--master-addr, one vLLM service per node). One node never needs either."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Share of each GPU's memory vLLM may use for weights, runtime and KV cache."""
    cpu_kv_cache_gib: Annotated[float, Field(gt=0)] = 4.0
    """KV cache per CPU worker (VLLM_CPU_KVCACHE_SPACE), for CPU-only nodes."""


class Security(Strict):
    """Paths (on the control machine, relative to the inventory file) of files holding secrets.

    Secrets are never written in the inventory itself: it is copied, committed and pasted."""

    api_key_file: str | None = None
    ray_token_file: str | None = None
    hf_token_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("api_key", "ray_token", "hf_token"):
                if key in data:
                    raise ValueError(
                        f"{key}: secrets are never written inline; put the value in a file "
                        f"readable only by you and set {key}_file to its path"
                    )
        return data


class Exo(Strict):
    """How roles/exo runs Exo on the Macs of an `engine: exo` cluster (version in serving.versions)."""

    install: Literal["source", "app"] = "source"
    """source: Exo's git tag v<version> built with uv under /opt/aicluster/exo (needs git and uv on
    the node). app: EXO.app of that version, installed by you in /Applications (the role checks it
    is there and runs its bundled exo)."""
    namespace: Name | None = None
    """Discovery namespace shared by every node; default: cluster.name. Set explicitly because Exo
    otherwise derives it from its version, so nodes on two versions never see each other."""
    models_dir: str = "/opt/aicluster/exo/models"
    """Absolute directory on every node where Exo keeps (and finds) model weights."""
    offline: bool = False
    """Serve only models already in models_dir; never reach Hugging Face."""
    rdma: bool = True
    """Use RDMA over Thunderbolt 5 (macOS 26.2+, enabled from Recovery): the checks then want a
    full Thunderbolt mesh and rdma_en* devices. Off: Exo talks TCP over the Thunderbolt IP links."""


class ClusterSpec(Strict):
    """A whole cluster: the single source of truth."""

    cluster: ClusterSection
    nodes: Annotated[list[Node], Field(min_length=1)]
    serving: Serving
    security: Security = Security()
    nvidia_driver: NvidiaDriver = NvidiaDriver()
    exo: Exo = Exo()

    @model_validator(mode="after")
    def _rules(self) -> ClusterSpec:
        problems = self.check_rules()
        if problems:
            raise RuleViolation(problems)
        return self

    def check_rules(self) -> list[Problem]:
        """Every cross-field rule, each with its own message and location."""
        return [
            *self._unique(),
            *self._one_head(),
            *self._engine_os(),
            *self._accelerators(),
            *self._fabric_ports(),
            *self._subnet_manager(),
            *self._thunderbolt_cables(),
            *self._addresses(),
            *self._model_source(),
            *self._pinned_versions(),
            *self._parallelism(),
            *self._distributed_backend(),
            *self._driver_flavour(),
            *self._exo_settings(),
        ]

    @property
    def head(self) -> Node:
        return next(node for node in self.nodes if node.role == "head")

    def devices(self) -> int:
        return sum(len(node.device_models()) for node in self.nodes)

    def _node_loc(self, node: Node, *fields: str | int) -> Loc:
        return ("nodes", node.name, *fields)

    def _unique(self) -> list[Problem]:
        keys: dict[str, Callable[[Node], str]] = {
            "name": lambda n: n.name,
            "ssh": lambda n: f"{n.ssh.address}:{n.ssh.port}",
            "data_address": lambda n: str(n.data_address),
        }
        problems = []
        for field, key in keys.items():
            seen: set[str] = set()
            for index, node in enumerate(self.nodes):
                value = key(node)
                if value in seen:
                    # A repeated name cannot name the node: point at its index instead.
                    loc = (
                        ("nodes", index, "name") if field == "name" else self._node_loc(node, field)
                    )
                    problems.append(Problem(loc, f"{value} is used by more than one node"))
                seen.add(value)
        return problems

    def _one_head(self) -> list[Problem]:
        heads = [node.name for node in self.nodes if node.role == "head"]
        if len(heads) == 1:
            return []
        detail = f"found {', '.join(heads)}" if heads else "found none"
        return [Problem(("nodes",), f"exactly one node must have role: head ({detail})")]

    def _engine_os(self) -> list[Problem]:
        engine = self.cluster.engine
        problems = []
        for node in self.nodes:
            if engine == "vllm" and node.os not in LINUX:
                problems.append(
                    Problem(
                        self._node_loc(node, "os"),
                        f"vLLM runs on Linux nodes only ({node.os}); Macs serve with engine: exo",
                    )
                )
            if engine == "exo" and node.os != "macos":
                problems.append(
                    Problem(
                        self._node_loc(node, "os"),
                        f"Exo clusters are macOS nodes only ({node.os}); Linux nodes serve with engine: vllm",
                    )
                )
        return problems

    def _accelerators(self) -> list[Problem]:
        problems = []
        for node in self.nodes:
            link = node.accelerator_link
            loc = self._node_loc(node, "accelerator_link")
            gpu_count = sum(group.count for group in node.gpus)
            if node.gpus and link is None:
                problems.append(
                    Problem(loc, "say how the GPUs are connected: nvlink, pcie or unified_memory")
                )
            if not node.gpus and link is not None:
                problems.append(Problem(loc, f"{link} given but the node lists no gpus"))
            if link == "unified_memory" and node.os != "macos":
                problems.append(
                    Problem(loc, "unified_memory is the Apple silicon link; use nvlink or pcie")
                )
            if node.os == "macos" and node.gpus and link != "unified_memory":
                problems.append(
                    Problem(loc, "a Mac's GPU shares unified memory: use unified_memory")
                )
            if link == "nvlink" and gpu_count < 2:
                problems.append(Problem(loc, "nvlink needs at least two GPUs in the node"))
        return problems

    def _fabric_ports(self) -> list[Problem]:
        fabric = self.cluster.fabric
        problems = []
        for node in self.nodes:
            kinds = [port.kind for port in node.fabric]
            if fabric != "ethernet" and fabric not in kinds:
                problems.append(
                    Problem(
                        self._node_loc(node, "fabric"),
                        f"the cluster's data fabric is {fabric}: name this node's {fabric} port(s) "
                        "(interface, rate_gbps, mtu)",
                    )
                )
            for index, port in enumerate(node.fabric):
                if port.kind in RDMA_FABRICS and port.hca is None:
                    problems.append(
                        Problem(
                            self._node_loc(node, "fabric", index, "hca"),
                            f"a {port.kind} port names its RDMA device (e.g. mlx5_0) for NCCL_IB_HCA",
                        )
                    )
        return problems

    def _subnet_manager(self) -> list[Problem]:
        fabric = self.cluster.fabric
        if fabric == "infiniband" or self.cluster.subnet_manager == "switch":
            return []
        return [Problem(("cluster", "subnet_manager"),
            f"a subnet manager is for an InfiniBand fabric; this cluster's fabric is {fabric}: "
            "remove subnet_manager")]  # fmt: skip

    def _cabled_thunderbolt(self) -> bool:
        """Thunderbolt whose cables are each a /30 (see cluster.fabric): between Linux nodes, or
        between Macs whose every Thunderbolt port names its peer."""
        if self.cluster.fabric != "thunderbolt":
            return False
        if all(n.os in LINUX for n in self.nodes):
            return True
        ports = [p for n in self.nodes for p in n.fabric if p.kind == "thunderbolt"]
        return all(n.os == "macos" for n in self.nodes) and all(p.peer for p in ports)

    def _thunderbolt_cables(self) -> list[Problem]:
        """Each Thunderbolt port with a peer is one end of a cable whose other end names it back."""
        by_name = {node.name: node for node in self.nodes}
        problems = []
        for node in self.nodes:
            seen: set[str] = set()
            for index, port in enumerate(node.fabric):
                loc = self._node_loc(node, "fabric", index, "peer")
                if port.kind != "thunderbolt":
                    if port.peer is not None:
                        problems.append(Problem(loc,
                            "only a thunderbolt port names a peer (its cable's other end)"))  # fmt: skip
                    continue
                if port.peer is None:
                    if node.os in LINUX:
                        problems.append(Problem(loc,
                            "name the node at the other end of this Thunderbolt cable: each "
                            "cable gets its own /30"))  # fmt: skip
                    continue
                peer = by_name.get(port.peer)
                if peer is None or peer is node:
                    what = "this node itself" if peer is node else "no node of the spec"
                    problems.append(
                        Problem(loc, f"{port.peer} is {what}: name the node cabled here")
                    )
                elif port.peer in seen:
                    problems.append(Problem(loc,
                        f"a second cable to {port.peer}: one cable per pair of nodes"))  # fmt: skip
                elif not any(p.kind == "thunderbolt" and p.peer == node.name for p in peer.fabric):
                    problems.append(Problem(loc,
                        f"{port.peer} has no thunderbolt port with peer: {node.name}: name both "
                        "ends of the cable"))  # fmt: skip
                seen.add(port.peer)
        if problems or not self._cabled_thunderbolt():
            return problems
        return self._cable_addresses()

    def _cable_addresses(self) -> list[Problem]:
        """Nodes over Thunderbolt have no switch: every pair needs its own cable, the data
        network must hold a /30 for each, and a node's data address is one of its cable ends."""
        names = [node.name for node in self.nodes]
        problems = []
        cabled = {frozenset((n.name, p.peer)) for n in self.nodes for p in n.fabric if p.peer}
        for j, later in enumerate(self.nodes):
            missing = [n for n in names[:j] if frozenset((n, later.name)) not in cabled]
            if missing:
                problems.append(Problem(self._node_loc(later, "fabric"),
                    f"no Thunderbolt cable to {', '.join(missing)}: Thunderbolt has no switch, "
                    "so every pair of nodes needs its own cable"))  # fmt: skip
        network = self.cluster.data_network
        needed = len(cabled) << (32 - CABLE_PREFIX)
        if not isinstance(network, IPv4Network) or network.num_addresses < needed:
            problems.append(Problem(("cluster", "data_network"),
                f"{len(cabled)} Thunderbolt cable(s) need {len(cabled)} IPv4 /{CABLE_PREFIX} "
                f"networks inside data_network ({network} is too small or not IPv4)"))  # fmt: skip
        if problems:
            return problems
        for node in self.nodes:
            ends = [cable.end_of(node.name) for cable in self.cables() if cable.joins(node.name)]
            if node.data_address not in [end.address for end in ends]:
                choices = ", ".join(f"{end.address} ({end.interface})" for end in ends)
                problems.append(Problem(self._node_loc(node, "data_address"),
                    f"{node.data_address} is on no Thunderbolt cable of this node: use one of "
                    f"{choices}"))  # fmt: skip
        return problems

    def cables(self) -> list[Cable]:
        """The Thunderbolt cables between nodes, with their /30s (see cluster.fabric)."""
        network = self.cluster.data_network
        if not self._cabled_thunderbolt() or not isinstance(network, IPv4Network):
            return []
        subnets = network.subnets(new_prefix=CABLE_PREFIX)
        cables = []
        for j, later in enumerate(self.nodes):
            for earlier in self.nodes[:j]:
                first = next((p for p in earlier.fabric if p.peer == later.name), None)
                second = next((p for p in later.fabric if p.peer == earlier.name), None)
                if first is None or second is None:
                    continue
                subnet = next(subnets)
                low, high = list(subnet.hosts())
                cables.append(Cable(subnet, CableEnd(earlier.name, first.interface, low),
                                    CableEnd(later.name, second.interface, high)))  # fmt: skip
        return cables

    def _addresses(self) -> list[Problem]:
        data_net = self.cluster.data_network
        mgmt_net = self.cluster.management_network
        problems = []
        for node in self.nodes:
            if node.data_address not in data_net:
                problems.append(
                    Problem(
                        self._node_loc(node, "data_address"),
                        f"{node.data_address} is outside cluster.data_network {data_net}",
                    )
                )
            ssh_ip = _ip_or_none(node.ssh.address)
            if ssh_ip is not None and ssh_ip not in mgmt_net:
                problems.append(
                    Problem(
                        self._node_loc(node, "ssh", "address"),
                        f"{ssh_ip} is outside cluster.management_network {mgmt_net}",
                    )
                )
        return problems

    def _model_source(self) -> list[Problem]:
        model = self.serving.model
        if model.hf_id is None and model.path is None:
            return [Problem(("serving", "model"), "give hf_id, path, or both")]
        if model.path is not None and not model.path.startswith("/"):
            return [
                Problem(
                    ("serving", "model", "path"),
                    "an absolute path on the nodes, where every node has the same files",
                )
            ]
        return []

    def _pinned_versions(self) -> list[Problem]:
        versions = self.serving.versions
        engine = self.cluster.engine
        pinned = getattr(versions, engine)
        if pinned is None:
            return [
                Problem(
                    ("serving", "versions", engine),
                    f"pin the {engine} version: every node must run the same one",
                )
            ]
        return []

    def _distributed_backend(self) -> list[Problem]:
        serving = self.serving
        if (
            self.cluster.engine != "vllm"
            or len(self.nodes) < 2
            or serving.distributed_backend != "ray"
        ):
            return []
        problems = []
        if any(not node.gpus for node in self.nodes):
            problems.append(Problem(("serving", "distributed_backend"),
                "vLLM's CPU build refuses the Ray executor (\"current platform cpu does not support "
                "ray\"): use distributed_backend: native"))  # fmt: skip
        if serving.versions.ray is None:
            problems.append(Problem(("serving", "versions", "ray"),
                "pin the Ray version: the Ray executor needs the same Ray on every node"))  # fmt: skip
        return problems

    def _driver_flavour(self) -> list[Problem]:
        branch = self.serving.versions.nvidia_driver_branch
        modules = self.nvidia_driver.kernel_modules
        if branch is not None and branch.endswith("-open") and modules == "proprietary":
            return [Problem(("nvidia_driver", "kernel_modules"),
                f"proprietary contradicts the branch {branch}: drop -open or choose open")]  # fmt: skip
        problems = []
        for node in self.nodes:
            if node.os not in LINUX:
                continue
            for index, group in enumerate(node.gpus):
                generation = driver.generation_of_model(group.model)
                problem = generation and driver.flavour_problem(generation, branch, modules)
                if problem:
                    problems.append(Problem(self._node_loc(node, "gpus", index, "model"),
                        f"{group.model}: {problem}"))  # fmt: skip
        return problems

    def _exo_settings(self) -> list[Problem]:
        exo = self.exo
        if self.cluster.engine != "exo":
            if exo != Exo():
                return [Problem(("exo",),
                    "Exo settings on an engine: vllm cluster: remove the exo section")]  # fmt: skip
            return []
        problems = []
        if not exo.models_dir.startswith("/"):
            problems.append(Problem(("exo", "models_dir"),
                f"{exo.models_dir}: an absolute directory on every node"))  # fmt: skip
        if exo.rdma and self.cluster.fabric != "thunderbolt":
            problems.append(Problem(("exo", "rdma"),
                f"RDMA runs over Thunderbolt 5 only (cluster.fabric is {self.cluster.fabric}): set "
                "cluster.fabric: thunderbolt or exo.rdma: false"))  # fmt: skip
        return problems

    def _parallelism(self) -> list[Problem]:
        loc: Loc = ("serving", "parallelism")
        par = self.serving.parallelism
        devices = self.devices()
        degrees = {"tensor": par.tensor, "pipeline": par.pipeline, "data": par.data}
        fixed = {name: value for name, value in degrees.items() if isinstance(value, int)}
        product = 1
        for value in fixed.values():
            product *= value
        problems = []
        if len(fixed) == 3 and product != devices:
            shown = " x ".join(str(v) for v in fixed.values())
            problems.append(
                Problem(
                    loc,
                    f"tensor x pipeline x data = {shown} = {product}, but "
                    f"the nodes have {devices} devices in use: make them equal",
                )
            )
        elif fixed and devices % product:
            shown = " x ".join(f"{k} {v}" for k, v in fixed.items())
            problems.append(
                Problem(loc, f"{shown} = {product} does not divide the {devices} devices in use")
            )
        # Exo shards tensors across Macs over RDMA: only vLLM keeps a tensor group in one node.
        if isinstance(par.tensor, int) and self.cluster.engine == "vllm":
            problems.extend(self._tensor_groups(par.tensor))
        return problems

    def _tensor_groups(self, tensor: int) -> list[Problem]:
        problems = []
        for node in self.nodes:
            models = node.device_models()
            loc = self._node_loc(node, "gpus")
            if len(models) % tensor:
                problems.append(
                    Problem(
                        loc,
                        f"{len(models)} device(s) cannot hold tensor-parallel "
                        f"groups of {tensor}: a group would span nodes, and vLLM's tensor parallelism "
                        "stays inside one node (use pipeline parallelism across nodes)",
                    )
                )
                continue
            for start in range(0, len(models), tensor):
                group = models[start : start + tensor]
                kinds = sorted(set(group))
                if len(kinds) > 1:
                    problems.append(
                        Problem(
                            loc,
                            f"tensor-parallel group of GPUs {start}-"
                            f"{start + tensor - 1} mixes {' and '.join(kinds)}: it would run at the "
                            "speed of the slowest card; group identical GPUs or lower "
                            "serving.parallelism.tensor",
                        )
                    )
        return problems


def _ip_or_none(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None
