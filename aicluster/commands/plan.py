"""`aicluster plan`: does the model fit, does it need a cluster, how to split it, and why.

Two forms: an inventory (its nodes, model, quantization, context and layout), or ad hoc hardware
(`--gpus 4xRTX3090 --nodes 2`) with `--model`. The model is a config.json or a catalogue name.
Exit status: 0 it fits, 1 it does not, 2 the input is unusable (one line on stderr, no traceback).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import click
from rich.console import Console
from rich.table import Table

from aicluster import plan as planner
from aicluster.inventory import SpecError, load_spec

EXIT_DOES_NOT_FIT = 1
EXIT_BAD_INPUT = 2
DEFAULT_CONTEXT = 8192


class _BadInput(Exception):
    """Input `plan` cannot use; the message is the whole story."""


def _architecture(model: str) -> planner.Architecture:
    """A config.json (or a model directory holding one), else a catalogue name."""
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" or path.exists():
        try:
            config: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise _BadInput(f"cannot read the model config {path}: {error}") from None
        name = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
        return planner.architecture_from_config(config, name)
    return planner.architecture_from_name(model)


def _from_inventory(
    inventory: str, model: str | None, quant: str | None, context: int | None, users: int
) -> tuple[planner.Architecture, planner.Hardware, planner.Request]:
    spec = load_spec(inventory)
    if model is not None:
        arch = _architecture(model)
    else:
        found = planner.architecture_for_spec(spec)
        if found is None:
            source = spec.serving.model.hf_id or spec.serving.model.path
            raise _BadInput(
                f"the catalogue does not know {source}: give its config.json with --model"
            )
        arch = found
    request = planner.request_from_spec(spec, users)
    if quant is not None:
        request = replace(request, quantization=quant)
    if context is not None:
        request = replace(request, context=context)
    return arch, planner.hardware_from_spec(spec), request


@click.command("plan")
@click.argument("inventory", required=False, metavar="[INVENTORY]")
@click.option("--model", help="A config.json (or its directory), or a catalogue model name.")
@click.option("--gpus", help="GPUs of each node without an inventory: COUNTxMODEL[:GiB].")
@click.option("--nodes", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--quant",
    type=click.Choice(planner.QUANTIZATIONS),
    help="Weights format (default: the inventory's, or the config's: float32 or bf16).",
)
@click.option(
    "--kv-cache-dtype",
    type=click.Choice(tuple(planner.KV_BYTES)),
    help="KV cache element type (default: the activation dtype, as vLLM's 'auto').",
)
@click.option(
    "--context",
    type=click.IntRange(min=1),
    help=f"Tokens per request (default: the inventory's max_context, or {DEFAULT_CONTEXT}"
    " capped at the model's limit).",
)
@click.option("--users", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--svg",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw nodes, GPUs, links and the layers and heads each GPU holds.",
)
def plan_command(
    inventory: str | None,
    model: str | None,
    gpus: str | None,
    nodes: int,
    quant: str | None,
    kv_cache_dtype: str | None,
    context: int | None,
    users: int,
    as_json: bool,
    svg: Path | None,
) -> None:
    """Does a model fit, need a cluster, and how to split it.

    Sizes a model on an inventory's hardware, or on --gpus, and chooses its parallel layout."""
    try:
        if inventory is not None:
            if gpus is not None or nodes != 1:
                raise _BadInput(
                    "--gpus and --nodes describe hardware without an inventory: give one or other"
                )
            arch, hardware, request = _from_inventory(inventory, model, quant, context, users)
        else:
            if model is None or gpus is None:
                raise _BadInput("give an INVENTORY, or --model and --gpus")
            arch = _architecture(model)
            hardware = planner.parse_gpus(gpus, nodes)
            # Without a context, a typical chat context, or all of a model that accepts less;
            # without a format, the checkpoint's own (a float32 model stays float32, as on CPU).
            default = min(DEFAULT_CONTEXT, arch.max_position)
            native = "float32" if arch.dtype == "float32" else "bf16"
            request = planner.Request(quant or native, context or default, users)
        if kv_cache_dtype is not None:
            request = replace(request, kv_dtype=kv_cache_dtype)
        result = planner.plan(arch, hardware, request)
    except SpecError as error:
        for line in error.lines():
            click.echo(line, err=True)
        sys.exit(EXIT_BAD_INPUT)
    except (_BadInput, planner.PlanError) as error:
        click.echo(f"aicluster plan: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)

    if svg is not None:
        try:
            svg.write_text(render_svg(result, hardware), encoding="utf-8")
        except OSError as error:
            click.echo(f"aicluster plan: cannot write {svg}: {error}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print(result, located=inventory is not None)
    if not result.fits:
        sys.exit(EXIT_DOES_NOT_FIT)


def _gib(value: float) -> str:
    return f"{value / planner.GIB:,.1f} GiB"


def _print(result: planner.Plan, located: bool) -> None:
    """Tables and reasons for a terminal; errors name their inventory field when there is one."""
    console = Console(highlight=False)
    verdict = "[green]fits[/green]" if result.fits else "[red]does not fit[/red]"
    summary = Table(title=f"{result.model}: {verdict}", title_justify="left", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("weights", f"{result.weights_bytes / planner.GB:,.1f} GB at {result.quantization}"),
        ("KV cache", f"{result.kv_bytes_per_token / planner.KIB:,.1f} KiB per token"),
        ("KV at context", f"{result.kv_bytes_at_context / planner.GB:,.1f} GB"),
        ("layout", str(result.layout)),
        ("needs a cluster", "yes" if result.needs_cluster else "no: one device holds it"),
        ("longest request", f"{result.max_context_tokens:,} tokens"),
        ("requests at once", f"{result.concurrent_sequences} of {result.context:,} tokens"),
    ]
    for name, value in rows:
        summary.add_row(name, value)
    console.print(summary)
    if result.stages:
        stages = Table(title="per device, by pipeline stage", title_justify="left")
        for column in ("stage", "layers", "nodes", "device", "weights", "KV/token", "KV room"):
            stages.add_column(column)
        for stage in result.stages:
            stages.add_row(
                str(stage.index + 1),
                f"{stage.layers.start}-{stage.layers.stop - 1}",
                ", ".join(stage.nodes),
                stage.device.model,
                _gib(stage.weights_bytes),
                f"{stage.kv_bytes_per_token / planner.KIB:,.1f} KiB",
                f"{stage.kv_tokens:,} tokens",
            )
        console.print(stages)
    console.print("[bold]Why[/bold]")
    for line in result.reason:
        console.print(f"  {line}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    for error in result.errors:
        where = f"{error.where()}: " if located else ""
        console.print(f"[red]error:[/red] {where}{error.message}")


# --- the drawing ------------------------------------------------------------------------------

_STAGE_COLOURS = ("#cfe8ff", "#ffe2c2", "#d8f5d0", "#f3d4f5", "#fff3b0", "#d9d9f7")
_LINK_NAMES = {"nvlink": "NVLink", "pcie": "PCIe", "unified_memory": "unified memory"}
_NODE_WIDTH, _DEVICE_HEIGHT, _GAP, _TOP = 250, 78, 12, 70


def render_svg(result: planner.Plan, hardware: planner.Hardware) -> str:
    """Nodes side by side, each GPU with its replica, stage, layers and heads, links labelled."""
    where = {(p.node, p.device_index): p for p in result.placements}
    tallest = max(len(node.devices) for node in hardware.nodes)
    node_height = 40 + tallest * (_DEVICE_HEIGHT + _GAP) + 24
    title = f"{result.model}: {result.layout}, " + (
        f"fits, longest request {result.max_context_tokens:,} tokens"
        if result.fits
        else "does not fit"
    )
    # About 8 px per character of the 15 px title, so that it never runs off the drawing.
    width = max(len(hardware.nodes) * (_NODE_WIDTH + 60) + 20, 40 + 8 * len(title))
    height = _TOP + node_height + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<text x="20" y="28" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="20" y="48">{escape(_subtitle(result))}</text>',
    ]
    for column, node in enumerate(hardware.nodes):
        x = 20 + column * (_NODE_WIDTH + 60)
        if column:
            fabric = hardware.fabric + (
                f" {hardware.fabric_gbps:g} Gb/s" if hardware.fabric_gbps else ""
            )
            middle = _TOP + node_height // 2
            parts.append(
                f'<line x1="{x - 60}" y1="{middle}" x2="{x}" y2="{middle}" '
                'stroke="#555" stroke-width="3"/>'
            )
            parts.append(
                f'<text x="{x - 30}" y="{middle - 8}" text-anchor="middle" font-size="10">'
                f"{escape(fabric)}</text>"
            )
        parts.append(
            f'<rect x="{x}" y="{_TOP}" width="{_NODE_WIDTH}" height="{node_height}" rx="10" '
            'fill="#f7f7f7" stroke="#333"/>'
        )
        parts.append(
            f'<text x="{x + 12}" y="{_TOP + 24}" font-weight="bold">{escape(node.name)}</text>'
        )
        for index, device in enumerate(node.devices):
            y = _TOP + 40 + index * (_DEVICE_HEIGHT + _GAP)
            placement = where.get((node.name, index))
            parts.extend(_device_svg(x + 12, y, index, device, placement))
        link = _LINK_NAMES.get(node.link or "", "")
        if link:
            parts.append(
                f'<text x="{x + 12}" y="{_TOP + node_height - 10}" font-size="11" '
                f'fill="#333">GPUs linked by {escape(link)}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _subtitle(result: planner.Plan) -> str:
    return (
        f"{result.weights_bytes / planner.GB:,.1f} GB of weights at {result.quantization}, "
        f"{result.kv_bytes_per_token / planner.KIB:,.1f} KiB of KV per token; colour = stage"
    )


def _device_svg(
    x: int, y: int, index: int, device: planner.Device, placement: planner.Placement | None
) -> list[str]:
    width = _NODE_WIDTH - 24
    colour = _STAGE_COLOURS[placement.stage % len(_STAGE_COLOURS)] if placement else "#ffffff"
    lines = [f"{index}: {device.model}"]
    if placement is not None:
        lines.append(
            f"replica {placement.replica + 1}, stage {placement.stage + 1}, "
            f"TP rank {placement.tp_rank}"
        )
        lines.append(f"layers {placement.layers.start}-{placement.layers.stop - 1}")
        heads = f"heads {placement.heads.start}-{placement.heads.stop - 1}"
        if len(placement.kv_heads):
            heads += f", KV {placement.kv_heads.start}-{placement.kv_heads.stop - 1}"
        lines.append(heads)
    else:
        lines.append("no layout")
    out = [
        f'<rect x="{x}" y="{y}" width="{width}" height="{_DEVICE_HEIGHT}" rx="6" '
        f'fill="{colour}" stroke="#666"/>'
    ]
    for row, text in enumerate(lines):
        weight = ' font-weight="bold"' if row == 0 else ""
        out.append(f'<text x="{x + 8}" y="{y + 17 + row * 16}"{weight}>{escape(text)}</text>')
    return out
