"""NVIDIA driver: the pinned branch, the kernel module flavour the GPUs need, held against drift.

Every decision is in aicluster/driver.py (from the spec and the facts read here); this role only
turns the plan into operations. Lab machines with simulated hardware never get a driver: they
carry aicluster.simulation.MARKER, and only the `preinstalled` check runs there, against what the
replayed nvidia-smi reports.
"""

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Arch, KernelVersion, LinuxDistribution
from pyinfra.operations import apt, files, server, systemd

from aicluster import driver, simulation, wanted
from aicluster.deploy import drift, fact, fail_host, logger, prefetch, put
from aicluster.facts.nvidia import NvidiaDriverVersion, NvidiaPciDevices, NvidiaSmiQuery
from aicluster.facts.secureboot import SecureBoot
from aicluster.inventory import host_spec
from aicluster.spec import LINUX

# What the plan is made of, read in one remote command.
PLAN_FACTS = (
    LinuxDistribution,
    Arch,
    KernelVersion,
    NvidiaPciDevices,
    NvidiaSmiQuery,
    NvidiaDriverVersion,
    SecureBoot,
)


def host_facts() -> driver.HostFacts:
    distribution, version = driver.os_of(fact(LinuxDistribution))
    pci = fact(NvidiaPciDevices)
    smi = fact(NvidiaSmiQuery)
    loaded = fact(NvidiaDriverVersion)
    secure = fact(SecureBoot)
    return driver.HostFacts(
        distribution=distribution,
        version=version,
        machine=fact(Arch),
        kernel_release=fact(KernelVersion),
        pci_gpu_ids=tuple(d["device_id"] for d in pci["gpus"] if d["device_id"]),
        nvswitches=len(pci["nvswitches"]),
        compute_capabilities=tuple(
            g["compute_capability"] for g in smi["gpus"] if g["compute_capability"]
        ),
        # /proc names the module; a lab machine only replays nvidia-smi.
        loaded_driver=loaded["version"] if loaded else smi["driver_version"],
        loaded_open=loaded["open_kernel_module"] if loaded else None,
        secure_boot=secure["secure_boot"],
        enrolled_keys=frozenset(secure["enrolled_keys"]),
    )


@deploy("NVIDIA driver")
def nvidia_driver() -> None:
    spec, node = host_spec(host.data.aicluster_spec_file, host.data.aicluster_node)
    if node.os not in LINUX or not node.gpus:
        host.noop("no NVIDIA GPUs in the spec for this node")
        return
    marker = f"/{simulation.MARKER}"
    prefetch((File, {"path": marker}), *PLAN_FACTS)
    if fact(File, path=marker) and spec.nvidia_driver.source != "preinstalled":
        host.noop("SIMULATION: lab machine with replayed GPU outputs: no driver is installed here")
        return
    try:
        plan = driver.plan_driver(spec, node, host_facts())
    except driver.DriverError as error:
        fail_host(str(error))
        return
    if not plan.install:
        host.noop(
            f"loaded driver is branch {plan.branch} as pinned (preinstalled: nothing changed)"
        )
        return
    install(spec.nvidia_driver.allow_reboot, plan)


def install(allow_reboot: bool, plan: driver.DriverPlan) -> None:
    blacklist = wanted.File(driver.NOUVEAU_BLACKLIST_FILE, driver.nouveau_blacklist(), "644")
    components = (
        wanted.File(
            driver.DEBIAN_COMPONENTS_FILE,
            driver.debian_components_sources(plan.debian_components),
            "644",
        )
        if plan.debian_components
        else None
    )
    peermem = wanted.File(driver.PEERMEM_FILE, driver.peermem_modules(), "644")
    fabricmanager = [plan.fabricmanager] if plan.fabricmanager else []
    services = ["nvidia-persistenced", *(["nvidia-fabricmanager"] if fabricmanager else [])]
    # Before the reboot the daemons are only enabled: they need the planned module loaded.
    ready = plan.reboot_reason is None
    found = drift(
        wanted.Wanted(
            files=(
                blacklist,
                *([components] if components else []),
                *([peermem] if plan.peermem else []),
            ),
            absent_files=() if plan.peermem else (driver.PEERMEM_FILE,),
            packages=(
                *(["cuda-keyring"] if plan.keyring_url else []),
                *plan.headers,
                *plan.pinning,
                *plan.packages,
                *fabricmanager,
            ),
            held=plan.hold,
            services=tuple(wanted.Service(s, running=ready) for s in services),
        )
    )
    if found is None and ready:
        return
    put_blacklist = put(blacklist, name="nouveau blacklisted")
    server.shell(
        name="initramfs updated (nouveau blacklisted)",
        commands=["update-initramfs -u"],
        _if=put_blacklist.did_change,
    )
    # apt.deb downloads its URL to /tmp on every run where the file is gone (after the reboot),
    # which counts as a change and would update the apt lists again: ask dpkg first.
    if components:
        put_components = put(
            components, name=f"Debian {' and '.join(plan.debian_components)} components"
        )
        apt.update(name="apt lists (Debian components added)", _if=put_components.did_change)
    if plan.keyring_url and (found is None or found.installed("cuda-keyring")):
        host.noop("cuda-keyring is installed")
    elif plan.keyring_url:
        keyring = apt.deb(name="NVIDIA CUDA repository keyring", src=plan.keyring_url)
        apt.update(name="apt lists (CUDA repository added)", _if=keyring.did_change)
    if plan.headers:
        apt.packages(name="Headers of the running kernel", packages=list(plan.headers))
    if plan.pinning:
        apt.packages(name=f"Driver branch {plan.branch} pinned", packages=list(plan.pinning))
    installed = apt.packages(
        name=f"NVIDIA driver {plan.branch} ({plan.flavour} kernel modules)",
        packages=[*plan.packages, *fabricmanager],
    )
    unheld = found.unheld() if found else []
    server.shell(
        name="Driver packages held against unattended upgrades",
        commands=[f"apt-mark hold {' '.join(plan.hold)}"],
        _if=None if unheld else installed.did_change,
    )
    if plan.peermem:
        put(peermem, name="nvidia-peermem loaded at boot (RDMA fabric)")
    else:
        files.file(name="no nvidia-peermem at boot", path=driver.PEERMEM_FILE, present=False)
    for service in services:
        systemd.service(name=f"{service} enabled", service=service, running=ready, enabled=True)
    if plan.reboot_reason is None:
        return
    if allow_reboot:
        server.reboot(name=f"Reboot: {plan.reboot_reason}", _serial=True)
    else:
        logger.warning(f"{host.print_prefix}reboot needed: {plan.reboot_reason}")
        host.noop(f"reboot needed ({plan.reboot_reason}); nvidia_driver.allow_reboot is off")
