"""`mora serve` and the pieces other front doors share: the durable job store and the worker.

- `mora.service.store.JobStore`: jobs, their events and their folders, in SQLite (WAL).
- `mora.service.worker.Worker`: a thread that runs queued jobs one at a time, models kept warm.
- `mora.service.app`: the HTTP service (FastAPI; the extra `serve`), the OpenAI Videos API shape
  and the native `/v1/jobs` API.
- `mora.service.cli`: the `mora serve` parser (argparse only: `mora --help` imports nothing heavy).

Nothing here is imported by `mora` itself; the service imports workflows, never the reverse.
"""
