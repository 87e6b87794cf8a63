"""Node-wide settings every inference node gets: kernel, limits, swap, clock.

The values are here, once: roles/base writes them, aicluster/checks reads them back.
"""

from __future__ import annotations

SYSCTL_FILE = "/etc/sysctl.d/90-aicluster.conf"
LIMITS_FILE = "/etc/security/limits.d/90-aicluster.conf"

# key -> (value, why). Values as `sysctl -n` prints them (tabs between numbers).
SYSCTL: dict[str, tuple[str, str]] = {
    "kernel.numa_balancing": (
        "0",
        "automatic NUMA balancing migrates pinned GPU/RDMA buffers and stalls kernels; "
        "NVIDIA's tuning guides turn it off",
    ),
    "vm.swappiness": ("1", "model weights and the KV cache must never be swapped out"),
    "vm.max_map_count": (
        "1048576",
        "safetensors shards, Ray's object store and vLLM map many regions",
    ),
    "net.core.rmem_max": ("536870912", "socket buffers for NCCL/Gloo over fast Ethernet"),
    "net.core.wmem_max": ("536870912", "socket buffers for NCCL/Gloo over fast Ethernet"),
    "net.ipv4.tcp_rmem": ("4096\t87380\t268435456", "TCP autotuning may grow to 256 MiB"),
    "net.ipv4.tcp_wmem": ("4096\t65536\t268435456", "TCP autotuning may grow to 256 MiB"),
}

# Registered memory (RDMA, NCCL's IB transport, pinned host buffers) counts against memlock.
MEMLOCK = "infinity"
NOFILE = 65536

# Not containers: their clock, kernel and swap belong to the host.
TIME_SERVICE = "chrony"


def sysctl_conf() -> str:
    lines = ["# Written by aicluster (roles/base). Applied with sysctl --system at boot."]
    for key, (value, why) in SYSCTL.items():
        lines += [f"# {why}", f"{key} = {value.replace(chr(9), ' ')}"]
    return "\n".join(lines) + "\n"


def limits_conf() -> str:
    return (
        "# Written by aicluster (roles/base): RDMA and pinned buffers need unlimited memlock;\n"
        "# aicluster's services set the same in their units (LimitMEMLOCK, LimitNOFILE).\n"
        "*\tsoft\tmemlock\tunlimited\n"
        "*\thard\tmemlock\tunlimited\n"
        f"*\tsoft\tnofile\t{NOFILE}\n"
        f"*\thard\tnofile\t{NOFILE}\n"
    )
