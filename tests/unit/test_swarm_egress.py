"""Where an allowlist sandbox goes on a Swarm: the node choice, from Swarm's view alone."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_sandbox import InternalServerError
from jupyter_sandbox.backends.swarm_egress import choose_node

GIB = 1 << 30


def node(node_id: str, memory: int, state: str = "ready", availability: str = "active") -> Any:
    return {
        "ID": node_id,
        "Status": {"State": state},
        "Spec": {"Availability": availability},
        "Description": {"Resources": {"MemoryBytes": memory}},
    }


def task(node_id: str, reserved: int) -> Any:
    return {"NodeID": node_id, "Spec": {"Resources": {"Reservations": {"MemoryBytes": reserved}}}}


@pytest.mark.parametrize(
    ("nodes", "tasks", "memory", "chosen"),
    [
        ([node("a", 8 * GIB), node("b", 8 * GIB)], [task("a", 2 * GIB)], GIB, "b"),
        ([node("a", 8 * GIB), node("b", 8 * GIB)], [task("b", 2 * GIB)], GIB, "a"),
        ([node("a", 8 * GIB), node("b", 4 * GIB)], [], GIB, "a"),  # the most left unreserved
        ([node("a", 8 * GIB), node("b", 8 * GIB, state="down")], [task("a", 6 * GIB)], GIB, "a"),
        ([node("a", 8 * GIB), node("b", 8 * GIB, availability="drain")], [], GIB, "a"),
        ([node("a", 8 * GIB), node("b", 8 * GIB, availability="pause")], [], GIB, "a"),
        ([node("a", 2 * GIB), node("b", 8 * GIB)], [task("b", 7 * GIB)], 2 * GIB, "a"),
        # Tasks without a node yet, or without a reservation, reserve nothing anywhere.
        ([node("a", 8 * GIB)], [{"Spec": {}}, {"NodeID": "a", "Spec": {}}], 8 * GIB, "a"),
    ],
)
def test_the_ready_active_node_with_the_most_unreserved_memory_is_chosen(
    nodes: list[Any], tasks: list[Any], memory: int, chosen: str
) -> None:
    assert choose_node(nodes, tasks, memory) == chosen


@pytest.mark.parametrize(
    ("nodes", "tasks"),
    [
        ([node("a", 4 * GIB), node("b", 4 * GIB)], [task("a", 3 * GIB), task("b", 3 * GIB)]),
        ([node("a", 8 * GIB, state="down")], []),
        ([node("a", 8 * GIB, availability="drain")], []),
        ([], []),
    ],
)
def test_no_node_that_holds_the_reservation_fails_closed_with_swarms_words(
    nodes: list[Any], tasks: list[Any]
) -> None:
    with pytest.raises(InternalServerError) as caught:
        choose_node(nodes, tasks, 2 * GIB)
    assert "insufficient resources" in caught.value.message
