"""Every file the configuration reads is a regular file: a device never ends and a FIFO blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.config.dataset import load_data_file
from orchestrator.config.files import NOT_REGULAR, open_regular
from orchestrator.config.jobfile import load_job_file
from orchestrator.errors import ConfigError


@pytest.fixture(params=["device", "fifo", "directory"])
def not_regular(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """A path that is no regular file, and the words a problem about it says."""
    if request.param == "device":
        return Path("/dev/zero"), NOT_REGULAR
    if request.param == "fifo":
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)  # nobody writes: a blocking read would wait forever
        return fifo, NOT_REGULAR
    return tmp_path, "directory"


def test_open_regular_refuses_without_reading_or_blocking(not_regular: tuple[Path, str]) -> None:
    path, words = not_regular
    with pytest.raises(OSError, match=words):
        open_regular(path)


def test_open_regular_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"hello\n")
    with open_regular(path) as f:
        assert f.read() == b"hello\n"


def test_an_output_schema_file_that_is_no_regular_file_is_a_problem_not_a_read(
    tmp_path: Path, not_regular: tuple[Path, str]
) -> None:
    path, words = not_regular
    job_file = tmp_path / "jobs.toml"
    job_file.write_text(
        f'[defaults]\nbackend = "sim"\noutput_schema_file = "{path}"\n[[jobs]]\nprompt = "x"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_job_file(job_file)
    assert f"{job_file}: defaults.output_schema_file: {path}:" in str(caught.value)
    assert words in str(caught.value)


def test_a_data_file_that_is_no_regular_file_is_a_problem_not_a_read(
    tmp_path: Path, not_regular: tuple[Path, str]
) -> None:
    path, words = not_regular
    for suffix in (".csv", ".jsonl"):
        named = tmp_path / f"rows{suffix}"
        named.unlink(missing_ok=True)
        named.symlink_to(path)
        with pytest.raises(ConfigError) as caught:
            load_data_file(str(named), {"backend": "sim", "prompt_template": "x {a}"})
        assert f"{named}:" in str(caught.value) and words in str(caught.value)
