"""Ray on loopback only, for tests and benchmarks of the Ray engine: what to set before Ray
starts, and the processes a test started, found by pid.

Ray binds and advertises the machine's external interface unless told otherwise, reports usage
statistics, and probes a cloud metadata address at start unless ``~/ray_bootstrap_config.yaml``
exists. Set :func:`loopback_env` in the environment of every process that starts Ray (this one,
or an ``orchestrate`` it runs), and start it with ``ray.init(address="local")``: without an
address Ray joins a cluster that anyone started on the machine (``ray start``, a test's
``Cluster``). Linux only (reads ``/proc``). Does not import Ray.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

MARK = "ORCHESTRATOR_RAY_TEST"  # set in the environment our Ray processes inherit


def loopback_env(home: Path, mark: str) -> dict[str, str]:
    """The variables that keep Ray on 127.0.0.1 and quiet; ``home`` gets the bootstrap file."""
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HOME": str(home),
        MARK: mark,
    }


def processes_marked(mark: str) -> Iterator[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries ``mark``: the
    processes a test started, and nobody else's."""
    needle = f"{MARK}={mark}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                if f.read().split(b") ", 1)[-1][:1] == b"Z":
                    continue  # a zombie has ended; only its parent's wait is missing
        except OSError:
            continue
        yield int(entry.name), cmdline


def shard_workers(mark: str) -> list[int]:
    """Pids of our Ray workers running a shard right now (Ray titles a busy worker
    ``ray::`` and its task's name)."""
    return [pid for pid, cmdline in processes_marked(mark) if cmdline.startswith("ray::run_shard")]


def runs_a_shard(raylet: int) -> bool:
    """Whether a worker of the node whose raylet has pid ``raylet`` is running a shard."""
    try:
        with open(f"/proc/{raylet}/task/{raylet}/children") as f:
            children = f.read().split()
    except OSError:
        return False
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::run_shard"):
                    return True
        except OSError:
            continue
    return False
