"""The local lab: real Debian 12 machines on one host, booted with systemd-nspawn.

Each machine is an overlay of one cached debootstrap rootfs, booted with systemd as its init,
reachable over SSH with a key made for the lab, with two interfaces like a real cluster node:
mgmt0 on the management bridge and data0 on the data bridge. Both bridges use the benchmarking
range 198.18.0.0/15 (RFC 2544), which is never routed on the Internet. Machines reach only DNS
and HTTP(S) through the host (for apt and PyPI); the data network is not routed at all.

Everything the lab creates on the host is named `aic-*` / `aicluster_lab` and recorded, so that
`down` removes exactly what `up` made and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

from aicluster import simulation
from aicluster.inventory import load_spec
from aicluster.paths import cache_dir

STATE_DIR = Path(os.environ.get("AICLUSTER_LAB_DIR", "/var/lib/aicluster/lab"))

MGMT_NETWORK = IPv4Network("198.18.0.0/24")
DATA_NETWORK = IPv4Network("198.19.0.0/24")
MGMT_BRIDGE = "aic-mgmt"
DATA_BRIDGE = "aic-data"
NFT_TABLE = "aicluster_lab"
MAX_NODES = 8
OUTSIDER = "outsider"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
ROOTFS_PACKAGES = (
    "systemd,systemd-sysv,dbus,libpam-systemd,openssh-server,python3,iproute2,iputils-ping,"
    "ca-certificates,sudo,procps,curl"
)
SOURCES_LIST = (
    f"deb {MIRROR} bookworm main\n"
    f"deb {MIRROR} bookworm-updates main\n"
    "deb http://deb.debian.org/debian-security bookworm-security main\n"
)
# Files a usable rootfs must have; a cache missing one is rebuilt.
ROOTFS_ESSENTIALS = (
    "usr/lib/systemd/systemd",
    "usr/sbin/sshd",
    "usr/bin/python3",
    "usr/bin/apt-get",
)
HOST_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nsenter": "util-linux",
}
BOOT_TIMEOUT_S = 90.0
# Where every lab node finds the demo model, staged by `lab up` as a user would copy theirs.
MODEL_PATH = "/var/lib/aicluster/models/lab-tiny-llama"
STOP_TIMEOUT_S = 15.0


class LabError(Exception):
    """The lab cannot do what was asked; the message says why and what to do."""


Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Machine:
    """One lab machine: a cluster node (node1..nodeN) or the outsider."""

    name: str
    index: int

    @property
    def is_node(self) -> bool:
        return self.name != OUTSIDER

    @property
    def mgmt_address(self) -> IPv4Address:
        return MGMT_NETWORK.network_address + 10 + self.index

    @property
    def data_address(self) -> IPv4Address:
        return DATA_NETWORK.network_address + 10 + self.index

    @property
    def netns(self) -> str:
        return f"aic-{self.name}"

    @property
    def veths(self) -> tuple[str, str]:
        return (f"aic-{self.name}-m", f"aic-{self.name}-d")

    @property
    def home(self) -> Path:
        return STATE_DIR / "machines" / self.name

    @property
    def root(self) -> Path:
        return self.home / "root"


def machines_for(nodes: int, outsider: bool) -> list[Machine]:
    if not 1 <= nodes <= MAX_NODES:
        raise LabError(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
    machines = [Machine(f"node{i}", i) for i in range(1, nodes + 1)]
    if outsider:
        machines.append(Machine(OUTSIDER, 90))
    return machines


@dataclass
class HostBefore:
    """What the host looked like before the lab, so that `down` puts it back exactly."""

    ip_forward: str
    run_netns_existed: bool
    run_netns_mounted: bool
    nspawn_dir_existed: bool


@dataclass
class LabState:
    nodes: int
    outsider: bool
    profile: str
    inventory: str
    host: HostBefore
    machines: list[str] = field(default_factory=list)

    @classmethod
    def load(cls) -> LabState | None:
        path = STATE_DIR / "lab.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["host"] = HostBefore(**data["host"])
        return cls(**data)

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / "lab.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    def all_machines(self) -> list[Machine]:
        return machines_for(self.nodes, self.outsider)


# --- host commands ---------------------------------------------------------------------------


def run(
    *args: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, input=input, check=False)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def require_host() -> None:
    """The lab needs Linux and root; say so plainly otherwise."""
    if sys.platform != "linux":
        raise LabError("the lab runs on Linux only (it boots machines with systemd-nspawn)")
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it creates bridges, namespaces and mounts (run with sudo)"
        )


def ensure_host_packages(say: Say) -> None:
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise LabError(f"install these packages first: {' '.join(missing)}")
    say(f"installing host packages the lab needs: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise LabError(f"`{' '.join(command)}` failed: {result.stderr.strip()[-500:]}")


# --- the cached rootfs -----------------------------------------------------------------------


def _recipe() -> str:
    return hashlib.sha256(
        f"{SUITE} {MIRROR} {ROOTFS_PACKAGES} {SOURCES_LIST}".encode()
    ).hexdigest()[:12]


def rootfs_dir() -> Path:
    return cache_dir() / f"rootfs-{SUITE}-{_recipe()}"


def _stamp_of(rootfs: Path) -> dict[str, str]:
    status = (rootfs / "var/lib/dpkg/status").read_bytes()
    return {"recipe": _recipe(), "dpkg_status_sha256": hashlib.sha256(status).hexdigest()}


def rootfs_is_sound(rootfs: Path) -> bool:
    """A cache is used only when its stamp matches its recipe and contents."""
    stamp = rootfs.with_name(rootfs.name + ".stamp")
    try:
        recorded = json.loads(stamp.read_text())
        return recorded == _stamp_of(rootfs) and all(
            (rootfs / f).exists() for f in ROOTFS_ESSENTIALS
        )
    except (OSError, ValueError):
        return False


def ensure_rootfs(say: Say) -> Path:
    rootfs = rootfs_dir()
    if rootfs_is_sound(rootfs):
        return rootfs
    if rootfs.exists():
        say(f"the cached rootfs {rootfs} is incomplete or stale: rebuilding it")
    building = rootfs.with_name(rootfs.name + ".building")
    for stale in (rootfs, building, rootfs.with_name(rootfs.name + ".stamp")):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    cache_dir().mkdir(parents=True, exist_ok=True)
    log = cache_dir() / "debootstrap.log"
    say(f"building the Debian 12 rootfs with debootstrap (once; about a minute), log: {log}")
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={ROOTFS_PACKAGES}",
                SUITE,
                str(building),
                MIRROR,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        last = ""
        while process.poll() is None:
            time.sleep(2)
            step = _last_line(log)
            if step != last:
                say(f"  debootstrap {time.monotonic() - started:4.0f}s  {step}")
                last = step
    if process.returncode != 0:
        raise LabError(f"debootstrap failed ({process.returncode}); see {log}")
    _prepare_rootfs(building)
    building.rename(rootfs)
    rootfs.with_name(rootfs.name + ".stamp").write_text(json.dumps(_stamp_of(rootfs)) + "\n")
    say(f"rootfs ready in {time.monotonic() - started:.0f}s")
    return rootfs


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][:70] if lines else ""


def _prepare_rootfs(rootfs: Path) -> None:
    """What every machine shares: package sources, no host identity, quiet PAM."""
    (rootfs / "etc/apt/sources.list").write_text(SOURCES_LIST)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/ssh/sshd_config.d/aicluster-lab.conf").write_text(
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nUseDNS no\n"
    )
    (rootfs / "etc/default/locale").touch()
    (rootfs / "etc/machine-id").write_text("")
    run("chroot", str(rootfs), "apt-get", "clean")


# --- host networking -------------------------------------------------------------------------


def _link_exists(name: str) -> bool:
    return run("ip", "link", "show", name, check=False).returncode == 0


def _resolver() -> str:
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            return parts[1]
    raise LabError(
        "no nameserver in /etc/resolv.conf: lab machines could not resolve the package mirror"
    )


def network_up() -> None:
    if not _link_exists(MGMT_BRIDGE):
        run("ip", "link", "add", MGMT_BRIDGE, "type", "bridge")
        run(
            "ip",
            "addr",
            "add",
            f"{MGMT_NETWORK.network_address + 1}/{MGMT_NETWORK.prefixlen}",
            "dev",
            MGMT_BRIDGE,
        )
    if not _link_exists(DATA_BRIDGE):
        # The host has no address on the data network: like a real fabric, it joins nodes only.
        run("ip", "link", "add", DATA_BRIDGE, "type", "bridge")
    run("ip", "link", "set", MGMT_BRIDGE, "up")
    run("ip", "link", "set", DATA_BRIDGE, "up")
    # Without this route the host would send data-network packets to its default gateway.
    run("ip", "route", "replace", "unreachable", str(DATA_NETWORK))
    # Lab machines may reach DNS (the host's resolver) and HTTP(S) (package mirrors) only.
    ruleset = f"""
table ip {NFT_TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {MGMT_NETWORK} ip daddr != {MGMT_NETWORK} oifname != "aic-*" masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{MGMT_BRIDGE}" oifname != "aic-*" ct state established,related accept
    iifname "{MGMT_BRIDGE}" oifname != "aic-*" ip daddr {_resolver()} meta l4proto {{ tcp, udp }} th dport 53 accept
    iifname "{MGMT_BRIDGE}" oifname != "aic-*" tcp dport {{ 80, 443 }} accept
    iifname "{MGMT_BRIDGE}" oifname != "aic-*" drop
  }}
}}
"""
    run("nft", "delete", "table", "ip", NFT_TABLE, check=False)
    run("nft", "-f", "-", input=ruleset)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def network_down(host: HostBefore | None) -> None:
    run("ip", "route", "del", "unreachable", str(DATA_NETWORK), check=False)
    for bridge in (MGMT_BRIDGE, DATA_BRIDGE):
        if _link_exists(bridge):
            run("ip", "link", "del", bridge)
    run("nft", "delete", "table", "ip", NFT_TABLE, check=False)
    if host is None:
        return
    Path("/proc/sys/net/ipv4/ip_forward").write_text(host.ip_forward + "\n")
    netns_dir = Path("/run/netns")
    if netns_dir.is_dir() and not any(netns_dir.iterdir()):
        # `ip netns add` bind-mounts /run/netns onto itself the first time: undo what it did.
        if not host.run_netns_mounted:
            run("umount", str(netns_dir), check=False)
        if not host.run_netns_existed:
            netns_dir.rmdir()
    if not host.nspawn_dir_existed:
        for leftover in ("propagate", "locks", ""):
            with suppress(OSError):
                (Path("/run/systemd/nspawn") / leftover).rmdir()


def host_before() -> HostBefore:
    return HostBefore(
        ip_forward=Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        run_netns_existed=Path("/run/netns").is_dir(),
        run_netns_mounted=os.path.ismount("/run/netns"),
        nspawn_dir_existed=Path("/run/systemd/nspawn").is_dir(),
    )


def _machine_network(machine: Machine) -> None:
    """A network namespace with both interfaces configured before boot: nothing inside the machine
    configures the network, so a reboot finds it as it was."""
    ns = machine.netns
    run("ip", "netns", "del", ns, check=False)
    for veth in machine.veths:
        run("ip", "link", "del", veth, check=False)
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")
    wiring = (
        (machine.veths[0], "mgmt0", MGMT_BRIDGE, machine.mgmt_address, MGMT_NETWORK),
        (machine.veths[1], "data0", DATA_BRIDGE, machine.data_address, DATA_NETWORK),
    )
    for host_end, inside, bridge, address, network in wiring:
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", inside, "netns", ns)
        run("ip", "link", "set", host_end, "master", bridge, "up")
        run("ip", "-n", ns, "addr", "add", f"{address}/{network.prefixlen}", "dev", inside)
        run("ip", "-n", ns, "link", "set", inside, "up")
    run("ip", "-n", ns, "route", "add", "default", "via", str(MGMT_NETWORK.network_address + 1))


# --- machines --------------------------------------------------------------------------------


def _cgroup_roots() -> list[Path]:
    """Hierarchies in which each machine gets its own cgroup. Without one, every systemd-nspawn
    started from the same cgroup shares one payload cgroup with the others."""
    roots = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, fstype, options = line.split()[:4]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            roots.append(Path(mount))
    return roots


def _cgroups(machine: Machine) -> list[Path]:
    return [root / machine.netns for root in _cgroup_roots()]


def _pid_file(machine: Machine, kind: str) -> Path:
    return machine.home / f"{kind}.pid"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def nspawn_pid(machine: Machine) -> int | None:
    """The PID of this machine's systemd-nspawn, if it is running (checked by its command line)."""
    pid = _read_pid(_pid_file(machine, "nspawn"))
    if not _alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if f"--directory={machine.root}".encode() in cmdline else None


def leader_pid(machine: Machine) -> int | None:
    """The machine's own systemd (PID 1 inside), for nsenter."""
    pid = _read_pid(_pid_file(machine, "leader"))
    if pid is not None and _alive(pid) and _in_machine_cgroup(pid, machine):
        return pid
    return None


def _in_machine_cgroup(pid: int, machine: Machine) -> bool:
    try:
        return f"/{machine.netns}/" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def demo_model(say: Say) -> Path:
    """The lab's tiny Llama, generated once on this machine (no model hub involved)."""
    model = cache_dir() / "models" / "lab-tiny-llama-seed0"
    if (model / "complete").exists():
        return model
    try:
        from aicluster.tinymodel import write_tiny_llama
    except ImportError as error:
        raise LabError(
            f"the demo model needs the lab extra ({error.name} is missing): "
            "pip install 'aicluster[lab]'"
        ) from None
    say(f"generating the demo model (tiny Llama, random weights) in {model}")
    shutil.rmtree(model, ignore_errors=True)
    write_tiny_llama(model)
    (model / "complete").touch()
    return model


def _stage_model(machine: Machine, model: Path) -> None:
    """Copy the model onto a node's disk at MODEL_PATH, readable by the service user."""
    dest = machine.root / MODEL_PATH.lstrip("/")
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model, dest, ignore=shutil.ignore_patterns("complete"))
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _prepare_machine(machine: Machine, rootfs: Path, key: Path, profile: str) -> None:
    """Mount the machine's overlay; on its first boot give it its own identity."""
    for part in ("upper", "work", "root"):
        (machine.home / part).mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(machine.root):
        upper, work = machine.home / "upper", machine.home / "work"
        run("mount", "-t", "overlay", machine.netns, "-o",
            f"lowerdir={rootfs},upperdir={upper},workdir={work}", str(machine.root))  # fmt: skip
    root = machine.root
    host_key = root / "etc/ssh/ssh_host_ed25519_key"
    if not host_key.exists():
        (root / "etc/hostname").write_text(machine.name + "\n")
        (root / "etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{machine.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        (root / "etc/machine-id").write_text(hashlib.md5(os.urandom(16)).hexdigest() + "\n")
        run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"root@{machine.name}",
            "-f",
            str(host_key),
        )
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        simulation.install(root, profile if machine.is_node else "cpu")
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copy("/etc/resolv.conf", resolv)


def _boot(machine: Machine) -> int:
    cgroups = _cgroups(machine)
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)

    def enter_own_cgroup() -> None:
        for cgroup in cgroups:
            (cgroup / "cgroup.procs").write_text("0")

    log = (machine.home / "nspawn.log").open("w")
    # fmt: off
    process = subprocess.Popen(
        [
            "systemd-nspawn",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=passive",
            "--resolv-conf=off",
            "--link-journal=no",
            f"--network-namespace-path=/run/netns/{machine.netns}",
            # Like any node, a machine manages its own network (nftables): only its namespace's.
            "--capability=CAP_NET_ADMIN",
            f"--machine={machine.name}",
            f"--directory={machine.root}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=enter_own_cgroup,
    )
    # fmt: on
    log.close()
    _pid_file(machine, "nspawn").write_text(f"{process.pid}\n")
    return process.pid


def _wait_ready(machine: Machine, pid: int, ssh_config: Path) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            tail = (machine.home / "nspawn.log").read_text(errors="replace")[-1500:]
            raise LabError(f"{machine.name}: systemd-nspawn exited during boot:\n{tail}")
        if leader_pid(machine) is None:
            with suppress(OSError, ValueError):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                if children:
                    _pid_file(machine, "leader").write_text(children[0] + "\n")
        probe = ssh(machine.name, "true", config=ssh_config, timeout=5)
        if probe.returncode == 0:
            return
        time.sleep(0.3)
    raise LabError(
        f"{machine.name}: no SSH answer within {BOOT_TIMEOUT_S:.0f}s; see {machine.home / 'nspawn.log'}"
    )


def stop_machine(machine: Machine, keep_disk: bool) -> None:
    """Stop a machine however it was left (running, its nspawn killed, half set up) and remove
    its mounts, cgroups and network; keep its disk unless told not to."""
    pid = nspawn_pid(machine)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)  # systemd-nspawn asks the machine's systemd to halt
        if not _wait_gone(pid):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)
    leader = leader_pid(machine)
    if leader is not None:
        # systemd-nspawn was killed but the machine runs on: power it off cleanly.
        os.kill(leader, signal.SIGRTMIN + 4)
        _wait_gone(leader)
    for _ in range(20):
        leftovers = _cgroup_pids(machine)
        if not leftovers:
            break
        for leftover in leftovers:
            with suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        time.sleep(0.2)
    if machine.root.exists():
        stat = machine.root.stat()
        Path(f"/run/systemd/nspawn/locks/inode-{stat.st_dev}:{stat.st_ino}").unlink(missing_ok=True)
    for mount in _mounts_under(machine.root):
        if run("umount", mount, check=False).returncode != 0:
            run("umount", "-l", mount)
    for cgroup in _cgroups(machine):
        for directory in sorted(cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                directory.rmdir()
        with suppress(FileNotFoundError):
            cgroup.rmdir()
    with suppress(OSError):
        Path(f"/run/systemd/nspawn/propagate/{machine.name}").rmdir()
    run("ip", "netns", "del", machine.netns, check=False)
    for veth in machine.veths:
        # Deleting the namespace deletes the pairs too, asynchronously: the link may vanish meanwhile.
        run("ip", "link", "del", veth, check=False)
    for kind in ("nspawn", "leader"):
        _pid_file(machine, kind).unlink(missing_ok=True)
    if not keep_disk and machine.home.exists():
        shutil.rmtree(machine.home)


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _cgroup_pids(machine: Machine) -> set[int]:
    pids: set[int] = set()
    for cgroup in _cgroups(machine):
        for procs in cgroup.rglob("cgroup.procs") if cgroup.exists() else ():
            with suppress(OSError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    mounts = [
        line.split()[1].encode().decode("unicode_escape")
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ]
    inside = [m for m in mounts if m == prefix or m.startswith(prefix + "/")]
    return sorted(set(inside), key=len, reverse=True)


# --- SSH -------------------------------------------------------------------------------------


def key_path() -> Path:
    return STATE_DIR / "id_ed25519"


def ssh_config_path() -> Path:
    return STATE_DIR / "ssh_config"


def _ensure_key() -> Path:
    key = key_path()
    if not key.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aicluster-lab", "-f", str(key))
    return key


def _write_ssh_files(machines: list[Machine]) -> None:
    """known_hosts from the host keys the lab generated itself (no trust on first use), and an
    ssh_config naming every machine, for ssh, testinfra (--ssh-config) and `lab ssh`."""
    known = STATE_DIR / "known_hosts"
    lines = []
    for m in machines:
        key_type, key = (m.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        lines.append(f"{m.mgmt_address} {key_type} {key}\n")
    known.write_text("".join(lines))
    blocks = [
        f"Host {m.name}\n  HostName {m.mgmt_address}\n  User root\n  IdentityFile {key_path()}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 5\n"
        for m in machines
    ]
    ssh_config_path().write_text("\n".join(blocks))


def ssh(
    name: str, *command: str, config: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a command (argv, quoted for the remote shell) on a lab machine over real SSH."""
    args = ["ssh", "-F", str(config or ssh_config_path()), name, shlex.join(command)]
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(
            args, 124, str(error.stdout or ""), f"timed out after {timeout}s"
        )


# --- the lab's inventory ---------------------------------------------------------------------


def inventory_spec(machines: list[Machine], profile: str) -> dict[str, Any]:
    """The lab as a cluster spec, in the same format users write: deploys and checks run on the lab
    exactly as on real hosts, with only the inventory changed."""
    nodes = [m for m in machines if m.is_node]
    gpus = simulation.spec_gpus(profile)
    return {
        "cluster": {
            "name": "lab",
            "engine": "vllm",
            "management_network": str(MGMT_NETWORK),
            "data_network": str(DATA_NETWORK),
            "fabric": "ethernet",
        },
        "nodes": [
            {
                "name": m.name,
                "role": "head" if m.index == 1 else "worker",
                "os": "debian",
                "ssh": {
                    "address": str(m.mgmt_address),
                    "user": "root",
                    "key_file": str(key_path()),
                    "known_hosts_file": str(STATE_DIR / "known_hosts"),
                },
                "data_address": str(m.data_address),
                **(
                    {"gpus": gpus, "accelerator_link": simulation.spec_accelerator_link(profile)}
                    if gpus
                    else {}
                ),
                "fabric": [
                    {"kind": "ethernet", "interface": "data0", "rate_gbps": 10, "mtu": 1500}
                ],
            }
            for m in nodes
        ],
        "serving": {
            "model": {"path": MODEL_PATH, "quantization": "float32", "max_context": 2048},
            # One stage per node; a simulated multi-GPU node holds replicas (the tiny model has
            # too few heads to split by tensor parallel).
            "parallelism": {
                "tensor": 1,
                "pipeline": len(nodes),
                "data": sum(group["count"] for group in gpus) or 1,
            },
            "api_port": 8000,
            "versions": {"python": "3.11", "vllm": "0.32.0", "ray": "2.60.0"},
            # The CPU build refuses the Ray executor; Ray itself still runs, secured, for the checks.
            "distributed_backend": "native",
            "cpu_kv_cache_gib": 1,
        },
        "security": {
            "api_key_file": str(STATE_DIR / "secrets" / "api_key"),
            "ray_token_file": str(STATE_DIR / "secrets" / "ray_token"),
        },
    }


INVENTORY_HEADER = """\
# Written by `aicluster lab up`: the local lab cluster ({profile} profile{simulated}).
# Machines are systemd-nspawn containers on this host; `aicluster lab down` removes them and this file.
"""
INVENTORY_MODULE = '''\
"""pyinfra inventory of the local lab, built from lab.yaml (written by `aicluster lab up`)."""

from aicluster.inventory import groups_for

globals().update(groups_for(__file__))
'''


def write_inventory(path: Path, machines: list[Machine], profile: str) -> None:
    spec = inventory_spec(machines, profile)
    simulated = ", simulated hardware replaying real captures" if profile != "cpu" else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        INVENTORY_HEADER.format(profile=profile, simulated=simulated)
        + yaml.safe_dump(spec, sort_keys=False)
    )
    path.with_suffix(".py").write_text(INVENTORY_MODULE)
    load_spec(path)  # the lab's own inventory must pass the same validation as any other


# --- up / down / status ----------------------------------------------------------------------


def up(nodes: int, outsider: bool, profile: str, inventory: Path, say: Say = _quiet) -> LabState:
    """Bring the lab to N running nodes (+ the outsider); machines already running are kept."""
    require_host()
    if profile not in simulation.profiles():
        raise LabError(
            f"unknown profile {profile!r}: choose one of {', '.join(simulation.profiles())}"
        )
    wanted = machines_for(nodes, outsider)
    ensure_host_packages(say)
    state = LabState.load()
    if state is not None and state.profile != profile:
        raise LabError(
            f"the lab is up with profile {state.profile}: run `aicluster lab down` first"
        )
    if state is None:
        state = LabState(nodes, outsider, profile, str(inventory.resolve()), host_before())
    rootfs = ensure_rootfs(say)
    model = demo_model(say)
    key = _ensure_key()
    network_up()
    for machine in state.all_machines():
        if machine not in wanted:
            say(f"{machine.name}: not wanted any more, removing it")
            stop_machine(machine, keep_disk=False)
    state.nodes, state.outsider, state.inventory = nodes, outsider, str(inventory.resolve())
    state.machines = [m.name for m in wanted]
    state.save()
    booting: list[tuple[Machine, int]] = []
    for machine in wanted:
        if nspawn_pid(machine) is not None and leader_pid(machine) is not None:
            continue
        if machine.home.exists():
            say(f"{machine.name}: not running, starting it again with its disk")
        stop_machine(machine, keep_disk=True)  # clears what a killed machine left behind
        _prepare_machine(machine, rootfs, key, profile)
        _machine_network(machine)
        booting.append((machine, _boot(machine)))
    for machine in wanted:
        if machine.is_node:
            _stage_model(machine, model)
    _write_ssh_files(wanted)
    for machine, pid in booting:
        _wait_ready(machine, pid, ssh_config_path())
        say(f"{machine.name}: up at {machine.mgmt_address} (data {machine.data_address})")
    write_inventory(inventory, wanted, profile)
    return state


def down(say: Say = _quiet) -> None:
    """Remove every machine, bridge, rule, mount and file the lab made. Safe to repeat."""
    require_host()
    state = LabState.load()
    known = state.all_machines() if state else []
    machines_dir = STATE_DIR / "machines"
    on_disk = [p.name for p in machines_dir.iterdir()] if machines_dir.is_dir() else []
    extra = [Machine(name, 0) for name in on_disk if name not in {m.name for m in known}]
    for machine in [*known, *extra]:
        stop_machine(machine, keep_disk=False)
        say(f"{machine.name}: stopped and removed")
    network_down(state.host if state else None)
    if state is not None:
        inventory = Path(state.inventory)
        for written in (inventory, inventory.with_suffix(".py")):
            written.unlink(missing_ok=True)
    for path in (STATE_DIR / "lab.json", STATE_DIR / "ssh_config", STATE_DIR / "known_hosts"):
        path.unlink(missing_ok=True)
    shutil.rmtree(STATE_DIR / "secrets", ignore_errors=True)  # a new lab gets new secrets
    with suppress(OSError):
        machines_dir.rmdir()


@dataclass(frozen=True)
class MachineStatus:
    name: str
    role: str
    running: bool
    ssh: bool
    mgmt_address: str
    data_address: str
    nspawn_pid: int | None


def status() -> tuple[LabState | None, list[MachineStatus]]:
    require_host()
    state = LabState.load()
    if state is None:
        return None, []
    rows = []
    for machine in state.all_machines():
        pid = nspawn_pid(machine)
        role = ("head" if machine.index == 1 else "worker") if machine.is_node else "outsider"
        rows.append(
            MachineStatus(
                name=machine.name,
                role=role,
                running=pid is not None and leader_pid(machine) is not None,
                ssh=pid is not None and _port_open(str(machine.mgmt_address), 22),
                mgmt_address=str(machine.mgmt_address),
                data_address=str(machine.data_address),
                nspawn_pid=pid,
            )
        )
    return state, rows


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False
