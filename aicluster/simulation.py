"""Simulated hardware for lab machines: commands replay REAL outputs captured on real hosts.

A profile is a folder of captures under aicluster/captures/<profile>/ (each file: `$ command`,
the command's unedited output, `[exit N]`; provenance in PROVENANCE.md). Inside a machine with a
profile, `nvidia-smi ARGS` prints what the real nvidia-smi printed for exactly those ARGS and exits
as it did; anything never captured fails loudly rather than inventing an answer. Every such
machine carries /etc/aicluster-lab-simulation, and deploys must refuse to install drivers there.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicluster.facts.nvidia import parse_nvidia_smi_query, parse_nvidia_topo, parse_nvlink_status
from aicluster.plan import gpu_info

CAPTURES = Path(__file__).parent / "captures"
MARKER = "etc/aicluster-lab-simulation"
SHARE = "usr/share/aicluster-lab/simulation"
REPLAYED = ("nvidia-smi",)
# Options nvidia-smi documents as the same: a capture of one answers the other.
ALIASES = {"-a": "-q", "--query": "-q"}


def profiles() -> list[str]:
    """cpu (no simulated hardware) and every folder of captures."""
    return ["cpu", *sorted(p.name for p in CAPTURES.iterdir() if (p / "PROVENANCE.md").exists())]


@dataclass(frozen=True)
class Capture:
    argv: tuple[str, ...]
    output: str
    exit_status: int


def read_capture(text: str) -> Capture | None:
    """A capture file as (argv, output, exit status); None when it is not one simple command."""
    lines = text.split("\n")
    if not lines or not lines[0].startswith("$ "):
        return None
    command = lines[0][2:]
    if any(token in command for token in ("|", ";", "<", ">", "&", "$(")):
        return None
    body = lines[1:]
    while body and body[-1] == "":
        body.pop()
    if not body or not body[-1].startswith("[exit "):
        return None
    status = int(body[-1].removeprefix("[exit ").removesuffix("]"))
    output = "\n".join(body[:-1])
    return Capture(tuple(shlex.split(command)), output + "\n" if output else "", status)


def replayable(profile: str) -> list[tuple[Path, Capture]]:
    found = []
    for path in sorted((CAPTURES / profile).glob("*.txt")):
        capture = read_capture(path.read_text())
        if capture is not None and capture.argv[0] in REPLAYED:
            found.append((path, capture))
    return found


def _captured(profile: str, *argv: str) -> Capture | None:
    wanted = [ALIASES.get(arg, arg) for arg in argv]
    for _, capture in replayable(profile):
        if [ALIASES.get(arg, arg) for arg in capture.argv] == wanted and capture.exit_status == 0:
            return capture
    return None


def _models_from_query_csv(profile: str) -> list[tuple[str, float]]:
    models: list[tuple[str, float]] = []
    for _, capture in replayable(profile):
        options = dict(arg.split("=", 1) for arg in capture.argv[1:] if "=" in arg)
        if "--query-gpu" not in options:
            continue
        # Columns are the queried fields, in order, whatever the header says.
        fields = options["--query-gpu"].split(",")
        rows = capture.output.strip().splitlines()
        if "noheader" not in options.get("--format", ""):
            rows = rows[1:]
        for row in rows:
            cells = dict(zip(fields, (cell.strip() for cell in row.split(",")), strict=True))
            models.append((cells["name"], round(int(cells["memory.total"].split()[0]) / 1024, 1)))
        break
    return models


def _models_from_reports(profile: str) -> list[tuple[str, float]]:
    """From `nvidia-smi -q`, else from the GPU lines of `nvidia-smi nvlink -s` (memory from the
    planner's GPU table)."""
    query = _captured(profile, "nvidia-smi", "-q")
    if query is not None:
        gpus = parse_nvidia_smi_query(query.output)["gpus"]
        return [(g["name"], round(g["memory_total_mib"] / 1024, 1)) for g in gpus]
    links = _captured(profile, "nvidia-smi", "nvlink", "-s")
    models = []
    for gpu in parse_nvlink_status(links.output)["gpus"] if links else []:
        info = gpu_info(gpu["name"])
        if info is not None:
            models.append((gpu["name"], float(info.memory_gib)))
    return models


def spec_gpus(profile: str) -> list[dict[str, Any]]:
    """The GPUs of a profile as the spec lists them, read from its real captures: `--query-gpu`,
    else `nvidia-smi -q`, else `nvidia-smi nvlink -s`."""
    if profile == "cpu":
        return []
    models = _models_from_query_csv(profile) or _models_from_reports(profile)
    return [
        {"model": model, "count": models.count((model, memory)), "memory_gib": memory}
        for model, memory in dict.fromkeys(models)
    ]


def spec_accelerator_link(profile: str) -> str:
    """nvlink when the profile's real `nvidia-smi topo -m` joins GPUs by NVLink, else pcie."""
    topo = _captured(profile, "nvidia-smi", "topo", "-m")
    if topo is None:
        return "pcie"
    links = parse_nvidia_topo(topo.output)["links"]
    nvlinked = any(cell.startswith("NV") for row in links.values() for cell in row.values())
    return "nvlink" if nvlinked else "pcie"


REPLAY_SCRIPT = '''\
#!/usr/bin/python3
"""SIMULATION by the aicluster lab: not a real {command}. It replays real output captured on
{profile} hardware (see /etc/aicluster-lab-simulation), for exactly the arguments captured."""
import shlex
import sys
from pathlib import Path

# This script lives in /usr/local/bin; the captures beside it in /usr/share.
CAPTURES = Path(__file__).resolve().parents[2] / "{share_in_usr}/{profile}"
ALIASES = {ALIASES!r}


def canonical(argv):
    return [ALIASES.get(arg, arg) for arg in argv]


asked = ["{command}", *sys.argv[1:]]
for path in sorted(CAPTURES.glob("*.txt")):
    lines = path.read_text().split("\\n")
    if lines[0].startswith("$ ") and canonical(shlex.split(lines[0][2:])) == canonical(asked):
        body = lines[1:]
        while body and body[-1] == "":
            body.pop()
        sys.stdout.write("\\n".join(body[:-1]) + ("\\n" if body[:-1] else ""))
        sys.exit(int(body[-1][len("[exit "):-1]))
sys.stderr.write("aicluster lab simulation ({profile}): no real capture of `%s`\\n" % shlex.join(asked))
sys.exit(2)
'''


def install(root: Path, profile: str) -> None:
    """Put a profile into a machine's root filesystem (nothing for the cpu profile)."""
    if profile == "cpu":
        return
    share = root / SHARE / profile
    share.mkdir(parents=True, exist_ok=True)
    shutil.copy(CAPTURES / profile / "PROVENANCE.md", share / "PROVENANCE.md")
    for path, _ in replayable(profile):
        shutil.copy(path, share / path.name)
    for command in REPLAYED:
        script = root / "usr/local/bin" / command
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(
            REPLAY_SCRIPT.format(
                command=command,
                profile=profile,
                share_in_usr=SHARE.removeprefix("usr/"),
                ALIASES=ALIASES,
            )
        )
        script.chmod(0o755)
    (root / MARKER).parent.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        f"SIMULATION: this lab machine has no {profile.upper()} GPU. {', '.join(REPLAYED)} replay real "
        f"outputs captured on a real {profile.upper()} host ({SHARE}/{profile}/PROVENANCE.md).\n"
        "aicluster never installs drivers on a machine that carries this file.\n"
    )
