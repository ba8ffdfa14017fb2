"""Test-only: with `MORA_TEST_HANG_PROMPT` set, a job of that prompt hangs in the worker process.

`tests/test_serve_cancel.py` puts this folder on PYTHONPATH for the spawned worker process
(`mora.service.worker.ChildProcess`), which imports it at start (Python's `site` does): a step
that never returns and never asks its cancel flag, as a wedged native call would.
"""

import os

PROMPT = os.environ.get("MORA_TEST_HANG_PROMPT")

if PROMPT:
    import time

    from mora.service import worker

    original = worker.Worker.run_one

    def run_one(self, row):
        if row.job.get("prompt") != PROMPT:
            return original(self, row)
        self.store.step(row.id, "hanging: a step that never returns", 1)
        while True:
            time.sleep(1)

    worker.Worker.run_one = run_one
