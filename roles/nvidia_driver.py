"""NVIDIA driver: the pinned branch, the kernel module flavour the GPUs need, held against drift.

Every decision is in aicluster/driver.py (from the spec and the facts read here); this role only
turns the plan into operations. Lab machines with simulated hardware never get a driver: they
carry aicluster.simulation.MARKER, and only the `preinstalled` check runs there, against what the
replayed nvidia-smi reports.
"""

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.facts.server import Arch, KernelVersion, LinuxDistribution
from pyinfra.operations import apt, files, server, systemd

from aicluster import driver, simulation
from aicluster.deploy import fact, fail_host, logger
from aicluster.facts.nvidia import NvidiaDriverVersion, NvidiaPciDevices, NvidiaSmiQuery
from aicluster.facts.secureboot import SecureBoot
from aicluster.inventory import host_spec
from aicluster.spec import LINUX


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
    simulated = host.get_fact(File, path=f"/{simulation.MARKER}")
    if simulated and spec.nvidia_driver.source != "preinstalled":
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
    blacklist = files.put(
        name="nouveau blacklisted",
        src=StringIO(driver.nouveau_blacklist()),
        dest=driver.NOUVEAU_BLACKLIST_FILE,
        mode="644",
    )
    server.shell(
        name="initramfs updated (nouveau blacklisted)",
        commands=["update-initramfs -u"],
        _if=blacklist.did_change,
    )
    # apt.deb downloads its URL to /tmp on every run where the file is gone (after the reboot),
    # which counts as a change and would update the apt lists again: ask dpkg first.
    if plan.debian_components:
        components = files.put(
            name=f"Debian {' and '.join(plan.debian_components)} components",
            src=StringIO(driver.debian_components_sources(plan.debian_components)),
            dest=driver.DEBIAN_COMPONENTS_FILE,
            mode="644",
        )
        apt.update(name="apt lists (Debian components added)", _if=components.did_change)
    if plan.keyring_url and "cuda-keyring" in host.get_fact(DebPackages):
        host.noop("cuda-keyring is installed")
    elif plan.keyring_url:
        keyring = apt.deb(name="NVIDIA CUDA repository keyring", src=plan.keyring_url)
        apt.update(name="apt lists (CUDA repository added)", _if=keyring.did_change)
    if plan.headers:
        apt.packages(name="Headers of the running kernel", packages=list(plan.headers))
    if plan.pinning:
        apt.packages(name=f"Driver branch {plan.branch} pinned", packages=list(plan.pinning))
    fabricmanager = [plan.fabricmanager] if plan.fabricmanager else []
    installed = apt.packages(
        name=f"NVIDIA driver {plan.branch} ({plan.flavour} kernel modules)",
        packages=[*plan.packages, *fabricmanager],
    )
    server.shell(
        name="Driver packages held against unattended upgrades",
        commands=[f"apt-mark hold {' '.join(plan.hold)}"],
        _if=installed.did_change,
    )
    if plan.peermem:
        files.put(
            name="nvidia-peermem loaded at boot (RDMA fabric)",
            src=StringIO(driver.peermem_modules()),
            dest=driver.PEERMEM_FILE,
            mode="644",
        )
    else:
        files.file(name="no nvidia-peermem at boot", path=driver.PEERMEM_FILE, present=False)
    # The daemons need the planned module loaded: before the reboot they are only enabled.
    ready = plan.reboot_reason is None
    for service in ["nvidia-persistenced", *(["nvidia-fabricmanager"] if fabricmanager else [])]:
        systemd.service(name=f"{service} enabled", service=service, running=ready, enabled=True)
    if plan.reboot_reason is None:
        return
    if spec.nvidia_driver.allow_reboot:
        server.reboot(name=f"Reboot: {plan.reboot_reason}", _serial=True)
    else:
        logger.warning(f"{host.print_prefix}reboot needed: {plan.reboot_reason}")
        host.noop(f"reboot needed ({plan.reboot_reason}); nvidia_driver.allow_reboot is off")
