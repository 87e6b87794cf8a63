"""aicluster.deploy.fact: pyinfra prepares every host in its own greenlet at once; a fact that
several greenlets ask for (preflight reads every node's fingerprint from every host) is read once."""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from aicluster import deploy
from aicluster.facts.runtime import RuntimeFingerprint


class _Node:
    """Stands for a pyinfra Host: a name, and get_fact that takes a round trip's time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.asked = 0

    def get_fact(self, kind: type[Any], **kwargs: Any) -> dict[str, str]:
        self.asked += 1
        gevent.sleep(0.01)
        if self.name == "broken":
            raise OSError("connection reset")
        return {"node": self.name}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    deploy._facts.clear()


def test_greenlets_asking_at_once_share_one_read() -> None:
    nodes = [_Node(f"node{i}") for i in range(8)]

    def preflight() -> list[Any]:
        return [deploy.fact(RuntimeFingerprint, node) for node in nodes]  # type: ignore[arg-type]

    greenlets = [gevent.spawn(preflight) for _ in nodes]
    gevent.joinall(greenlets, raise_error=True)
    assert all(g.value == [{"node": n.name} for n in nodes] for g in greenlets)
    assert [n.asked for n in nodes] == [1] * 8


def test_a_failed_read_fails_every_asker() -> None:
    node = _Node("broken")
    greenlets = [
        gevent.spawn(deploy.fact, RuntimeFingerprint, node)  # type: ignore[arg-type]
        for _ in range(3)
    ]
    gevent.joinall(greenlets)
    assert all(isinstance(g.exception, OSError) for g in greenlets) and node.asked == 1
