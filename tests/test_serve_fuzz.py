"""A schema-driven fuzz test of `mora serve`'s HTTP API: no request answers 5xx.

schemathesis reads the service's own OpenAPI document (the request bodies are the job model's
schemas: `openapi_extra` on each route) and sends generated requests, valid and invalid, to the
ASGI app in-process (hypothesis underneath). No worker runs (`start_worker=False`): a job the
fuzzer gets accepted is only queued.

The operations are driven with hypothesis' `given` here rather than schemathesis' pytest plugin,
whose parametrization breaks on pytest 9 (`'Function' object has no attribute '_nodeid'`).
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.python import asgi  # noqa: E402

from mora.service.app import build_service  # noqa: E402

MAX_EXAMPLES = 30  # per operation (about 15 of them), valid and invalid: seconds on a CPU
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def test_no_generated_request_is_a_server_error(tmp_path):
    # schemathesis' in-process client calls itself `testserver`: the Host check admits that name, as a
    # reverse proxy's is admitted (its refusals have their own tests in test_serve_security.py)
    service = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                            host={"device": "cpu"}, start_worker=False, allowed_hosts=(asgi.HOST,))
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", service.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        labels = {op.label for op in operations}
        assert {"POST /v1/jobs", "POST /v1/videos", "POST /v1/videos/extensions"} <= labels, labels
        bodies = [op for op in operations if op.body]
        assert len(bodies) >= 5, "the POST routes document their bodies (openapi_extra)"
        for operation in operations:  # valid requests (they queue) and invalid ones (wrong types, ...)
            @FUZZ
            @given(case=st.one_of(operation.as_strategy(mode) for mode in GenerationMode))
            def fuzz(case):
                case.call_and_validate(checks=[not_a_server_error])

            fuzz()
    finally:
        service.store.close()
