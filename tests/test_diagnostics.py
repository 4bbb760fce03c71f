"""A library leaves its host's logging alone: importing orchestrator and running a batch
configures nothing, and our diagnostics reach whatever the host set up.

Each case runs in a fresh interpreter: structlog's configuration and our modules are process-wide
and cached, so in this test process an earlier import or test could hide the very change we
look for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# One job whose first attempt hits a rate limit: the runner logs the failed attempt (debug).
BATCH = """
from orchestrator import run_batch
result = run_batch(
    [{"prompt": "x", "sim": {"faults": ["rate_limit"]}}],
    backend="sim",
    options={"ttft": 0, "tokens_per_s": 0},
    retry={"max_attempts": 2, "base_delay": 0, "max_delay": 0},
)
assert result.ok and result.summary.retries == 1
"""


def run_host(setup: str, report: str) -> tuple[dict[str, Any], str]:
    """Run a host program: ``setup``, then :data:`BATCH`, then ``report``, which prints one JSON
    line last. Returns that and the program's stderr."""
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_DEBUG"}
    program = textwrap.dedent(setup) + BATCH + textwrap.dedent(report)
    done = subprocess.run(
        [sys.executable, "-c", program],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_a_hosts_structlog_configuration_is_left_as_it_was_and_sees_our_events() -> None:
    setup = """
        import json
        import structlog

        seen = []

        def keep(logger, method, event_dict):
            seen.append((event_dict.get("logger_name"), method, event_dict["event"]))
            raise structlog.DropEvent

        structlog.configure(
            processors=[keep],
            wrapper_class=structlog.make_filtering_bound_logger(0),
            cache_logger_on_first_use=False,
        )
        before = structlog.get_config()
        processors = list(before["processors"])

        import orchestrator
    """
    report = """
        after = structlog.get_config()
        print(json.dumps({
            "configured": structlog.is_configured(),
            "unchanged": after == before and list(after["processors"]) == processors == [keep],
            "seen": [event for _, method, event in seen],
        }))
    """
    out, _ = run_host(setup, report)
    assert out["configured"] and out["unchanged"]
    assert "attempt failed" in out["seen"]  # our diagnostic went through the host's processor


def test_an_unconfigured_host_stays_unconfigured_and_gets_stdlib_logging_records() -> None:
    setup = """
        import json
        import logging
        import structlog

        records = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append((record.name, record.levelname, record.getMessage()))

        logging.getLogger().addHandler(Keep())
        logging.getLogger().setLevel(logging.DEBUG)

        import orchestrator
    """
    report = """
        print(json.dumps({"configured": structlog.is_configured(), "records": records}))
    """
    out, stderr = run_host(setup, report)
    assert out["configured"] is False
    assert any(
        name == "orchestrator.run.runner" and level == "DEBUG" and "attempt failed" in message
        for name, level, message in out["records"]
    )
    assert stderr == ""


def test_a_host_with_no_logging_at_all_sees_no_debug_output() -> None:
    out, stderr = run_host("import json\n", "print(json.dumps({}))\n")
    assert out == {} and stderr == ""
