"""A scripted, OpenAI-compatible chat-completions server for tests (stdlib only, 127.0.0.1).

Tests push the answers the "LLM" gives, in order, and read back every request body it received;
mora talks to it through the real `openai` client (no mocking). Each POST to
`/v1/chat/completions` (or `/chat/completions`) pops one scripted response:

- `push_text("...")`: a plain assistant answer (finish_reason "stop");
- `push_tool_call(name, arguments)`: one tool call; `arguments` is sent verbatim, so it may be
  malformed JSON (a dict is JSON-encoded for convenience); `push_tool_calls([...])` sends several;
- `push_error(status, message)`: an HTTP error with an OpenAI-style JSON error body;
- `push_hang(seconds)`: take the request and answer nothing for `seconds` (an endpoint that hangs).

When the queue is empty the server answers with `default` (a plain text answer,
`DEFAULT_ANSWER`, unless a test sets `fake.default = None`, which makes an empty queue a 500
"fake queue is empty" error instead). A plain text answer is what a chatty model says when it
should have called a tool, so a tool agent reached with an empty queue exercises the fallback.

Error responses carry `retry-after-ms: 1`, a header the openai client honours, so that if its own
retries were on they would cost a request each but no back-off sleep. Mora turns them off
(`mora.agents.llm.CLIENT_MAX_RETRIES` is 0): a 500 consumes one queued response per mora attempt.

Example:
    >>> with FakeOpenAI() as fake:
    ...     fake.push_text("a fox")
    ...     mora.run("text-to-video", prompt="fox", llm_config=fake.config_list, ...)
    ...     fake.requests[0]["messages"]
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-SECRET123"
MODEL = "fake-model"
DEFAULT_ANSWER = "A fake default answer from the scripted LLM."
PATHS = ("/v1/chat/completions", "/chat/completions")

_ids = itertools.count(1)


def completion(message: dict, finish_reason: str, model: str = MODEL) -> dict:
    """A `chat.completion` object as the OpenAI API returns it."""
    return {
        "id": f"chatcmpl-fake{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        "system_fingerprint": None,
    }


class FakeOpenAI:
    """The server and its script. Start with `start()` (or `with`), stop with `close()`.

    Attributes:
        requests: the JSON body of every chat-completions request, in order of arrival.
        headers: the request headers (a dict per request), same order.
        config_list: an OAI_CONFIG_LIST pointing at this server.
        default: the answer when the queue is empty (a response spec, or None for a 500).
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.default: dict | None = {"kind": "text", "content": DEFAULT_ANSWER}
        self._queue: deque[dict] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- the script ---------------------------------------------------------------------------

    def push_text(self, content: str) -> None:
        """Queue a plain assistant answer."""
        self._push({"kind": "text", "content": content})

    def push_tool_call(self, name: str, arguments: str | dict) -> None:
        """Queue an answer with one tool call; `arguments` (a str) is sent as is, even if not JSON."""
        self.push_tool_calls([(name, arguments)])

    def push_tool_calls(self, calls: list[tuple[str, str | dict]]) -> None:
        """Queue an answer with several tool calls [(name, arguments), ...]."""
        self._push({"kind": "tools", "calls": [(n, a if isinstance(a, str) else json.dumps(a)) for n, a in calls]})

    def push_error(self, status: int = 500, message: str = "fake server error", times: int = 1) -> None:
        """Queue `times` HTTP errors with an OpenAI-style JSON body."""
        for _ in range(times):
            self._push({"kind": "error", "status": status, "message": message})

    def push_hang(self, seconds: float = 30.0, times: int = 1) -> None:
        """Queue `times` requests that get no answer for `seconds` (then the connection closes)."""
        for _ in range(times):
            self._push({"kind": "hang", "seconds": seconds})

    def _push(self, spec: dict) -> None:
        with self._lock:
            self._queue.append(spec)

    @property
    def pending(self) -> int:
        """Scripted responses not consumed yet."""
        with self._lock:
            return len(self._queue)

    def _next(self, body: dict, headers: dict) -> dict | None:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            return self._queue.popleft() if self._queue else self.default

    # --- what a tool-calling agent saw -------------------------------------------------------------

    def tools_of(self, request: dict) -> dict[str, dict]:
        """tool name -> its JSON-schema parameters, in one request body."""
        return {t["function"]["name"]: t["function"].get("parameters", {}) for t in request.get("tools", [])}

    def requests_with_tool(self, name: str) -> list[dict]:
        """The requests whose tool list offered `name`."""
        return [r for r in self.requests if name in self.tools_of(r)]

    # --- the server -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the fake server is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def config_list(self) -> list[dict]:
        return [{"model": MODEL, "base_url": self.base_url, "api_key": API_KEY}]

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client (httpx) expects

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.split("?")[0] not in PATHS:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                spec = fake._next(body, dict(self.headers.items()))
                if spec is None:
                    spec = {"kind": "error", "status": 500, "message": "fake queue is empty"}
                if spec["kind"] == "hang":
                    fake._stop.wait(spec["seconds"])  # ends early when the server closes
                    self.close_connection = True
                    return
                if spec["kind"] == "error":
                    self._send(spec["status"], {"error": {"message": spec["message"], "type": "server_error",
                                                          "param": None, "code": None}},
                               {"retry-after-ms": "1"})
                    return
                model = body.get("model", MODEL)
                if spec["kind"] == "text":
                    message = {"role": "assistant", "content": spec["content"], "refusal": None}
                    self._send(200, completion(message, "stop", model))
                    return
                calls = [{"id": f"call_fake{next(_ids)}", "type": "function", "function": {"name": n, "arguments": a}}
                         for n, a in spec["calls"]]
                message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls}
                self._send(200, completion(message, "tool_calls", model))

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free port
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)  # a short poll: a fast shutdown
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
