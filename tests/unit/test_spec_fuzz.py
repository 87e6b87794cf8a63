"""Malformed inventories only ever give a SpecError that says where: never another exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicluster.inventory import SpecError, load_spec

HOMELAB = yaml.safe_load((Path(__file__).parents[2] / "inventories" / "homelab.yaml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["auto", "yes", "3.10", "10.10.0.300", "10.10.0.0/33", "", "head", "nvlink"]),
)
structures = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def leaf_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        children = data.items()
    elif isinstance(data, list):
        children = enumerate(data)
    else:
        return [prefix]
    paths = [prefix] if prefix else []
    for key, value in children:
        paths.extend(leaf_paths(value, (*prefix, key)))
    return paths


PATHS = leaf_paths(HOMELAB)


def load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        load_spec(path)
    except SpecError as error:
        assert error.problems
        for line in error.lines():
            assert line.startswith(f"{path}: ")
            assert line.count(": ") >= 2
        return [problem.where() for problem in error.problems]
    return []


settings_ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings_
@given(structures)
def test_any_structure_gives_a_spec_error_or_a_spec(tmp_path: Path, data: Any) -> None:
    load(tmp_path, yaml.safe_dump(data))


@settings_
@given(st.text(max_size=200))
def test_any_text_gives_a_spec_error_or_a_spec(tmp_path: Path, text: str) -> None:
    load(tmp_path, text)


@settings_
@given(st.sampled_from(PATHS), structures, st.booleans())
def test_a_broken_field_is_named(
    tmp_path: Path, path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    data = copy.deepcopy(HOMELAB)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    for where in load(tmp_path, yaml.safe_dump(data)):
        # A problem inside a valid top-level mapping always names its section.
        assert where.split(".")[0].split("[")[0] in {"cluster", "nodes", "serving", "security"}
