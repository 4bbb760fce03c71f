"""A real Jupyter kernel (ipykernel, driven by nbclient) runs a notebook that uses the library:
every cell runs inside the kernel's asyncio loop, as in JupyterLab."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
CELLS = [
    "from orchestrator import open_batch, run_batch, run_batch_async",
    # top-level await in a cell: the batch runs on a trio guest run on the kernel's loop
    "result = await run_batch_async(['a', 'b'], backend='sim', options={'ttft': 0.01}, log='cell.jsonl')\n"
    "print('succeeded', result.summary.succeeded)",
    "kinds = []\n"
    "async with open_batch(['x', 'y', 'z'], backend='sim', options={'tokens_per_s': 2}) as batch:\n"
    "    async for tagged in batch:\n"
    "        kinds.append(tagged.event.kind)\n"
    "        if tagged.event.kind == 'text_delta':\n"
    "            batch.cancel()\n"
    "print('stopped', batch.result.summary.stopped, kinds[-1])",
    "try:\n    run_batch(['x'], backend='sim')\nexcept RuntimeError as exc:\n    print(exc)",
    "shown = await run_batch_async(['<b>bold?</b>'], backend='sim', options={'ttft': 0.6}, progress=True)",
]


@pytest.mark.slow
def test_a_notebook_runs_batches_in_its_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    # the kernel imports this checkout's package
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", str(REPO)))
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = ["".join(out.get("text", "") for out in cell.outputs) for cell in notebook.cells]
    assert outputs[1] == "succeeded 2\n"
    assert outputs[2] == "stopped cancelled batch_finished\n"
    assert "run_batch() cannot run inside a running asyncio event loop" in outputs[3]
    assert "await run_batch_async(...)" in outputs[3]
    assert (tmp_path / "cell.jsonl").exists()
    # progress=True: one display under the cell, updated in place, ending on the status line
    [display] = notebook.cells[4].outputs
    assert display["output_type"] == "display_data"
    assert "1/1 done" in display["data"]["text/html"]
