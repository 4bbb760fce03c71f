"""How many attempts a node can run at once: the ``llm_slots`` it offers the Ray engine.

An attempt of most backends is a connection and a few kilobytes: a node's slots are then what
the user asks for. An attempt of ``claude-code`` is a CLI process of about 200 MB (its kind's
``memory_per_attempt``), so a node offers one slot per 200 MB of the memory available when it
starts, less :data:`RESERVE_BYTES` for Ray's own processes and the shards' workers, and at
least one: a node with little memory gets fewer agents, and none runs out of memory. With
several backends, the hungriest one decides.

The engine's own local instance applies the rule itself; a cluster's nodes advertise it when
they start (``ray start --resources="$(python -m orchestrator.engines.ray.slots claude-code)"``).
Does not import Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable

from orchestrator.backends import BackendKind, backend_kind

SLOTS = "llm_slots"
RESERVE_BYTES = 1024**3  # Ray's raylet, object store and shard workers, the driver on the head
DEFAULT_SLOTS = 64  # a node's slots when no backend needs memory of its own


def memory_per_attempt(kinds: Iterable[BackendKind]) -> int:
    """The memory one attempt of the hungriest of ``kinds`` takes (0: none to speak of)."""
    return max((getattr(kind, "memory_per_attempt", 0) for kind in kinds), default=0)


def node_slots(per_attempt: int, memory: int, most: int) -> int:
    """Slots for a node with ``memory`` bytes available: at most ``most``, and at most one per
    ``per_attempt`` bytes beyond :data:`RESERVE_BYTES` (when attempts need memory), at least 1."""
    if per_attempt <= 0:
        return max(1, most)
    return max(1, min(most, (memory - RESERVE_BYTES) // per_attempt))


def available_memory() -> int:
    """Bytes of memory available to new processes (Linux: MemAvailable; else all of it)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.engines.ray.slots",
        description="Print the resources for `ray start --resources=...`: this node's attempt slots.",
    )
    parser.add_argument("backends", nargs="*", help="the backends the node will run (e.g. claude-code)")
    parser.add_argument("--most", type=int, default=DEFAULT_SLOTS, help="at most this many slots")
    args = parser.parse_args(argv)
    try:
        kinds = [backend_kind(name) for name in args.backends]
    except KeyError as exc:
        print(f"slots: unknown backend {exc}", file=sys.stderr)
        return 2
    slots = node_slots(memory_per_attempt(kinds), available_memory(), args.most)
    print(json.dumps({SLOTS: slots}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
