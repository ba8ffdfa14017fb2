"""`mora ui`: a Gradio page for the six tasks, a story (multi-shot film) and the score card, one tab each.

Each job runs `mora.run` in a worker thread; the page streams one line per agent step, then
shows the video, the enhanced prompt, the route and the manifest. With review on, the first
frame waits in the page for Approve / Regenerate / Edit / Abort. One job runs at a time (Gradio's
queue; others see their position; and a lock held by the job's thread, which outlives a closed
page), uploads are copied into the job's own folder, and the server binds to 127.0.0.1 unless told otherwise. Needs the `ui` extra (`pip install -e ".[ui]"`).

Files cross the page only through gradio's upload cache (`mora.ui_files`): no client-named path in,
no server path served.

Mounted by `mora serve` at /ui, the page is given the service's job store instead: each job is
submitted to that queue (it shows in GET /v1/jobs like any other) and the page follows its events;
the review gate needs a person at the page, so it is not offered there.
"""

import inspect
import json
import logging
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from mora.errors import MoraError, one_line
from mora.service.rows import LOCAL_OWNER
from mora.ui_files import cached, file_access, owner, received
from mora.workflows.jobspec import OPTIONS, task_inputs, task_options
from mora.workflows.tasks import MEDIA_KINDS, STORY, TASK_TABLE

logger = logging.getLogger(__name__)

REVIEW_TIMEOUT_S = 3600  # a first frame waits this long for a decision, then the job aborts
QUEUE_POLL_S = 0.2  # how often a queued job's new events are read (the store is SQLite: cheap)
QUEUE_REVIEW = ("review: a job of the server's queue cannot wait for a person's review; untick it, or run "
                "`mora ui` (or mora run --review) to review the first frame")
_JOB_SLOT = "mora-job"  # every tab's Generate shares one concurrency slot: one job at a time
# gradio's slot is held by the handler only: a closed page frees it while the job's thread runs on. The
# pipelines are cached per process, so the thread itself holds this lock for the whole job.
_RUNNING = threading.Lock()


class _Session:
    """The page's link to the running job of one browser session (review decisions)."""

    def __init__(self) -> None:
        self.decisions: queue.Queue = queue.Queue()


NO_SESSION = "no-session"  # the key of calls that come without a gradio session (the API, tests)
_SESSIONS: dict[str, _Session] = {}
_LOCK = threading.Lock()


def _session(request: gr.Request | None) -> _Session:
    key = getattr(request, "session_hash", None) or NO_SESSION
    with _LOCK:
        return _SESSIONS.setdefault(key, _Session())


def _end_session(request: gr.Request | None) -> None:
    """A job is over: forget its session (the table holds only sessions with a running job)."""
    with _LOCK:
        _SESSIONS.pop(getattr(request, "session_hash", None) or NO_SESSION, None)


# The page's per-job fields: the job model's `job` and `person` options of each task. The preset
# is the page's own (one set of warm models per server), so it is not a per-job field.
PAGE_SCOPES = ("job", "person")
PAGE_FIXED = ("preset",)


def page_fields(task: str) -> list[str]:
    """The option fields the page shows for `task` (derived from the job model).

    Example:
        >>> page_fields("connect")
        ['seed', 'num_frames', 'width', 'height', 'steps', 'fps', 'metrics']
    """
    return [o.name for o in task_options(task, PAGE_SCOPES) if o.name not in PAGE_FIXED]


def check_shared(shared: dict) -> None:
    """The options every job of the page shares are valid (InputError otherwise), before serving."""
    from mora.workflows.prepare import check_shared_options

    check_shared_options(shared, "the page's options")


class App:
    """The Gradio app and its settings.

    Args:
        preset, device, profile, llm_config, adapter, preset_file: passed to every `mora.run`.
        output_root: jobs go to `<output_root>/<job id>/`; uploads are copied there.
        store: a `mora.service.store.JobStore`: jobs are submitted to its queue (run by the service's
            worker, listed by its APIs) instead of run by the page; no review gate then.

    Example:
        >>> App(preset="tiny").build().launch(server_name="127.0.0.1", server_port=7860)
    """

    def __init__(self, output_root: str | Path = "outputs/ui", shared: dict | None = None, store: Any = None,
                 **options: Any):
        # the options every job of the page uses (preset, device, profile, llm_config, adapter, preset_file, ...)
        self.shared = {k: v for k, v in {**(shared or {}), **options}.items() if v is not None}
        unknown = sorted(set(self.shared) - set(OPTIONS))
        if unknown:
            raise TypeError(f"App: {unknown[0]!r} is not a job option; use one of {', '.join(OPTIONS)}")
        self.preset = self.shared.get("preset", OPTIONS["preset"].default)
        self.output_root = Path(output_root).resolve()
        self.store = store
        self.demo: gr.Blocks | None = None  # set by build(): its upload record says which files the page received

    def file_access(self, *also_blocked: str | Path) -> dict:
        """gradio's file rules for this page (`launch` / `mount_gradio_app` keywords): nothing served by
        path; the job folders and `also_blocked` (the service's folders, its database) refused."""
        return file_access((self.output_root, *also_blocked))

    # --- one job ---------------------------------------------------------------------------------

    def _job_dir(self) -> Path:
        path = self.output_root / uuid.uuid4().hex[:12]
        (path / "inputs").mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _keep_upload(upload: Any, job_dir: Path, key: str) -> str | None:
        """Copy an uploaded file into the job folder: the job reads only its own copies (the page's
        handlers pass only files `ui_files.received` checked; Python callers of run_job are trusted)."""
        if not upload:
            return None
        source = Path(upload if isinstance(upload, str) else getattr(upload, "name", upload))
        target = job_dir / "inputs" / f"{key}-{source.name}"  # video_a and video_b may share a file name
        shutil.copyfile(source, target)
        return str(target)

    def run_job(self, task: str, inputs: dict, options: dict, review_on: bool, request: gr.Request | None = None
                ) -> Iterator[tuple]:
        """Generator for Gradio: yields (log, review row, frame, video, enhanced prompt, route, manifest)."""
        if self.store is not None:
            yield from self._show_job(self._queue_job(task, inputs, options, review_on, owner(request)))
            return
        session = _session(request)
        try:
            yield from self._job_updates(session, task, inputs, options, review_on)
        finally:
            session.decisions.put("abort")  # a closed page's job reaching its review gate ends, freeing the lock
            _end_session(request)

    def _job_updates(self, session: _Session, task: str, inputs: dict, options: dict, review_on: bool
                     ) -> Iterator[tuple]:
        while not session.decisions.empty():  # drop clicks left over from an earlier job
            session.decisions.get_nowait()
        job_dir = self._job_dir()
        kinds = {i.name: i.kind for i in task_inputs(task)}
        inputs = {k: (self._keep_upload(v, job_dir, k) if kinds[k] in MEDIA_KINDS else v)
                  for k, v in inputs.items()}
        inputs = {k: v for k, v in inputs.items() if v not in (None, "")}
        events: queue.Queue = queue.Queue()

        def on_step(agent: str, doing: str) -> None:
            events.put(("step", f"{agent}: {doing}"))

        def review(image_path: str, info: dict) -> Any:
            events.put(("review", image_path))
            try:
                return session.decisions.get(timeout=REVIEW_TIMEOUT_S)
            except queue.Empty:
                return "abort"

        chosen = {k: v for k, v in options.items() if v not in (None, "")}  # empty: the default (0 is a value)
        job = {"task": task, **inputs, **chosen, **self.shared, "out": str(job_dir / f"{task}.mp4"),
               **({"review": True} if review_on else {})}

        def work() -> None:
            from mora.workflows.prepare import Hooks
            from mora.workflows.runner import run_job

            events.put(("done", run_job(job, Hooks(review=review, on_step=on_step, progress=False))))

        _start_alone(work, events, f"mora-{task}")
        yield from self._show_job(iter(events.get, None))

    @staticmethod
    def _show_job(events: Iterator[tuple]) -> Iterator[tuple]:
        """The page's view of a job's events: ("step", line), ("review", frame), ("error", e), ("done", result)."""
        log: list[str] = []
        hidden = gr.update(visible=False)
        yield "Starting...", hidden, None, None, "", "", None
        for kind, payload in events:
            if kind == "step":
                log.append(payload)
                yield _lines(log), hidden, gr.update(), None, "", "", None
            elif kind == "review":
                log.append("waiting for your review of the first frame")
                yield (_lines(log), gr.update(visible=True), payload, None, "", "", None)
            elif kind == "error":
                raise gr.Error(_message(payload), duration=None)
            else:
                manifest = payload.manifest
                log.append(f"done: {manifest['video']['num_frames']} frames, "
                           f"{manifest['video']['width']}x{manifest['video']['height']}")
                yield (_lines(log), hidden, gr.update(), str(payload.video_path),
                       manifest.get("enhanced_prompt") or "", " -> ".join(manifest["route"]),
                       str(payload.manifest_path))
                return

    def run_story(self, story: str, shots: Any, seconds: Any, storyboard_only: bool,
                  request: gr.Request | None = None) -> Iterator[tuple]:
        """Generator for Gradio: yields (log, storyboard, film, contact sheet, manifest).

        The storyboard is written first (`storyboard_only`) and shown; the film is then made from
        that file, so the page shows exactly the storyboard the shots follow.
        """
        if self.store is not None:
            yield from self._show_story(self._queue_story(story, shots, seconds, storyboard_only, owner(request)))
            return
        from mora.workflows.prepare import Hooks
        from mora.workflows.runner import run_job

        job_dir = self._job_dir()
        events: queue.Queue = queue.Queue()
        hooks = Hooks(on_step=lambda agent, doing: events.put(("step", f"{agent}: {doing}")), progress=False)
        job = {"task": STORY, "story": story, **self.shared, "out": str(job_dir / "story.mp4"),
               **{k: v for k, v in (("shots", shots), ("shot_seconds", seconds)) if v not in (None, "")}}

        def work() -> None:
            board = run_job({**job, "storyboard_only": True}, hooks)
            events.put(("storyboard", board))
            film = None if storyboard_only else run_job({**job, "storyboard": str(board.manifest_path)}, hooks)
            events.put(("done", film))

        _start_alone(work, events, "mora-story")
        yield from self._show_story(iter(events.get, None))

    @staticmethod
    def _show_story(events: Iterator[tuple]) -> Iterator[tuple]:
        """The page's view of a story's events: ("step", line), ("storyboard", result), ("error", e), ("done", film)."""
        log: list[str] = []
        board: Any = None
        board_path = ""
        yield "Starting...", None, None, None, None
        for kind, payload in events:
            if kind == "error":
                raise gr.Error(_message(payload), duration=None)
            if kind == "step":
                log.append(payload)
            elif kind == "storyboard":
                board, board_path = payload.manifest, str(payload.manifest_path)
                log.append(f"storyboard {board['title']!r}: {len(board['shots'])} shots")
            elif payload is None:  # storyboard only: its file is the manifest view's download
                log.append("done: storyboard only")
                yield _lines(log), board, None, None, board_path
                return
            else:
                manifest = payload.manifest
                log.append(f"done: {manifest['video']['num_frames']} frames, {len(manifest['shots'])} shots")
                yield (_lines(log), board, str(payload.video_path), manifest.get("contact_sheet"),
                       str(payload.manifest_path))
                return
            yield _lines(log), board, None, None, None

    @staticmethod
    def decide(decision: Any, request: gr.Request | None = None) -> None:
        _session(request).decisions.put(decision)

    def evaluate(self, video: Any) -> tuple[str, dict]:
        """The Evaluate tab's handler: the score card of a video uploaded to the page (no other path)."""
        from mora.evaluation import format_table, score_card_for_file

        if not video:
            raise gr.Error("video: nothing uploaded; choose a video file to score", duration=None)
        path = received(self.demo, video, "video")
        try:
            card = score_card_for_file(path)
        except MoraError as e:
            raise gr.Error(str(e), duration=None) from None
        return f"```\n{format_table(card)}\n```", card

    # --- the service's queue (`mora serve` mounts the page with its store) ------------------------------

    def _submit(self, job: dict, files: dict[str, Path] | None = None, owner: str | None = None) -> Any:
        """Queue the job in the store, as the caller's key's (`owner`) when the request has one; a refused
        job is the page's error (the store keeps nothing of it)."""
        try:
            return self.store.submit(job, files=files, meta={"door": "ui"}, owner=owner or LOCAL_OWNER)
        except MoraError as e:
            raise gr.Error(_message(e), duration=None) from None

    def _queue_job(self, task: str, inputs: dict, options: dict, review_on: bool, owner: str | None = None
                   ) -> Iterator[tuple]:
        """A task job through the queue: its uploads moved into the job's folder by the store, its events followed."""
        if review_on:
            raise gr.Error(QUEUE_REVIEW, duration=None)
        kinds = {i.name: i.kind for i in task_inputs(task)}
        staging = self._job_dir()  # the uploads' copies wait here until submit moves them into the job's folder
        try:
            files = {k: Path(self._keep_upload(v, staging, k)) for k, v in inputs.items()
                     if kinds[k] in MEDIA_KINDS and v}
            given = {k: v for k, v in {**inputs, **options}.items() if v not in (None, "") and k not in files}
            row = self._submit({"task": task, **given}, files, owner)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        yield "step", f"queued as {row.id}"
        yield from self._follow(row.id, owner)

    def _queue_story(self, story: str, shots: Any, seconds: Any, storyboard_only: bool, owner: str | None = None
                     ) -> Iterator[tuple]:
        """A story through the queue as one job; its storyboard is shown when the job is done."""
        given = {k: v for k, v in (("shots", shots), ("shot_seconds", seconds)) if v not in (None, "")}
        row = self._submit({"task": STORY, "story": story, **given, **({"storyboard_only": True}
                                                                        if storyboard_only else {})}, owner=owner)
        yield "step", f"queued as {row.id}"
        for kind, result in self._follow(row.id, owner):
            if kind != "done":
                yield kind, result
            elif storyboard_only:
                yield "storyboard", result
                yield "done", None
            else:
                from mora.workflows.prepare import RunResult

                board_path = Path(result.manifest["storyboard"])
                board = json.loads(board_path.read_text(encoding="utf-8"))
                yield "storyboard", RunResult(None, board, board_path, result.artifacts_dir)
                yield "done", result

    def _follow(self, job_id: str, owner: str | None = None) -> Iterator[tuple]:
        """The queued job's events as the page shows them: ("step", line)..., then ("done", RunResult) or
        ("error", e) once it is completed, failed or cancelled."""
        from mora.service.store import VIDEO_NAME
        from mora.workflows.prepare import RunResult

        seq = 0
        while True:
            # read before the events: a finished row's events are all written
            row = self.store.get(job_id, owner=owner or LOCAL_OWNER)
            for event in self.store.events(job_id, after=seq):
                seq = event["seq"]
                if event["type"] == "step":
                    yield "step", event["data"]["step"]
            if row is None or row.finished:
                break
            time.sleep(QUEUE_POLL_S)
        if row is None:
            yield "error", MoraError(f"job {job_id} was deleted from the server's queue; submit it again")
        elif row.status != "completed":
            yield "error", MoraError(row.error or f"job {job_id} was cancelled; submit it again")
        else:
            out = self.store.folder(job_id) / VIDEO_NAME  # the worker's outputs for the job (store.VIDEO_NAME)
            video = out if row.video else None  # a storyboard-only story has no video
            yield "done", RunResult(video, row.manifest, out.with_name(f"{out.stem}_storyboard.json") if video is None
                                    else out.with_suffix(".json"), out.with_name(f"{out.stem}_artifacts"))

    # --- the page ----------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Mora") as demo:
            gr.Markdown(
                "# Mora\nMulti-agent video generation (arXiv 2403.13248). "
                f"Preset **{self.preset}**" + (" (random toy models: output is noise)" if "tiny" in self.preset else "")
                + (f", adapter `{self.shared['adapter']}`" if self.shared.get("adapter") else "")
            )
            for task in TASK_TABLE.values():  # one tab per task, from the task table
                if task.film is not None:  # a film's tab shows its storyboard, then the film
                    self._story_tab()
                else:
                    self._task_tab(task)
            with gr.Tab("Evaluate"):
                video = gr.File(label="Video", file_types=["video"])
                button = gr.Button("Score", variant="primary")
                table = gr.Markdown()
                card = gr.JSON(label="Score card")
                button.click(self.evaluate, [video], [table, card], concurrency_id=_JOB_SLOT)
        self.demo = demo
        # In-process, one job at a time; on a service's queue the page only submits and follows, and the
        # queue orders the jobs (one worker, or a Ray pool running several at once): no slot to wait for.
        demo.queue(default_concurrency_limit=1 if self.store is None else None)
        return demo

    def _task_tab(self, task: Any) -> None:
        with gr.Tab(task.name.replace("-", " ").capitalize()):
            gr.Markdown(task.help)
            components = [_input_component(item) for item in task.inputs]
            names = [n for n in page_fields(task.name) if n != "review"]
            with gr.Accordion("Options", open=False):
                options = [_option_component(OPTIONS[name]) for name in names]
            review_box = gr.Checkbox(label="Review the first frame", value=False,  # a queue has no person
                                     visible="review" in page_fields(task.name) and self.store is None)
            button = gr.Button("Generate", variant="primary")
            log = gr.Markdown(label="Progress")
            with gr.Column(visible=False) as review_row:
                frame = gr.Image(label="First frame", type="filepath", interactive=False)
                self._review_buttons()
            outputs = [log, review_row, frame, gr.Video(label="Result"),
                       gr.Textbox(label="Enhanced prompt", interactive=False),
                       gr.Textbox(label="Route", interactive=False), gr.File(label="Manifest")]
            keys = [item.name for item in task.inputs]

            files = {item.name for item in task.inputs if item.kind in MEDIA_KINDS}

            def start(*values: Any):
                *given, review_v, request = values
                inputs, picked = given[:len(keys)], given[len(keys):]
                inputs = [received(self.demo, v, k) if k in files else v for k, v in zip(keys, inputs, strict=True)]
                chosen = {n: _value(OPTIONS[n], v) for n, v in zip(names, picked, strict=True)}
                yield from cached(self.run_job(task.name, dict(zip(keys, inputs, strict=True)), chosen,
                                                bool(review_v), request), (2, 3, 6))  # frame, video, manifest

            # Gradio passes inputs positionally and injects the request where a positional parameter
            # is annotated gr.Request: spell that signature out for this tab's number of inputs.
            start.__signature__ = inspect.Signature(
                [inspect.Parameter(f"input_{i}", inspect.Parameter.POSITIONAL_ONLY)
                 for i in range(len(keys) + len(names) + 1)]
                + [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)]
            )
            start.__annotations__ = {"request": gr.Request}
            button.click(start, [*components, *options, review_box], outputs, concurrency_id=_JOB_SLOT)

    def _story_tab(self) -> None:
        with gr.Tab("Story"):
            gr.Markdown("A multi-shot film from a story: storyboard_agent writes the storyboard (shown first), "
                        "then each shot goes through the agents; the film and a contact sheet (one frame per shot) "
                        "follow.")
            story = gr.Textbox(label="Story", placeholder="A fox wakes in its den. The fox runs through the snow.",
                               lines=4)
            with gr.Row():
                count = OPTIONS["shots"]  # the job model's default and bounds
                shots = gr.Number(label="Shots", precision=0, value=count.default, minimum=count.bounds["ge"],
                                  maximum=count.bounds["le"])
                seconds = gr.Number(label="Seconds per shot (empty: preset default)", value=None)
            only = gr.Checkbox(label="Storyboard only", value=False)
            button = gr.Button("Generate", variant="primary")
            log = gr.Markdown(label="Progress")
            outputs = [log, gr.JSON(label="Storyboard"), gr.Video(label="Film"),
                       gr.Image(label="Contact sheet", type="filepath", interactive=False),
                       gr.File(label="Manifest")]

            def start_story(story_v: str, shots_v: Any, seconds_v: Any, only_v: bool, request: gr.Request):
                yield from cached(self.run_story(story_v, shots_v, seconds_v, bool(only_v), request),
                                   (2, 3, 4))  # film, contact sheet, manifest

            button.click(start_story, [story, shots, seconds, only], outputs, concurrency_id=_JOB_SLOT)

    def _review_buttons(self) -> None:
        """Approve / Regenerate / Abort / Edit: decisions for the job waiting at its review gate."""
        with gr.Row():
            approve = gr.Button("Approve", variant="primary")
            regenerate = gr.Button("Regenerate")
            abort = gr.Button("Abort", variant="stop")
        instruction = gr.Textbox(label="Edit instruction")
        edit = gr.Button("Edit")

        def edit_fn(text: str, request: gr.Request) -> None:
            if not (text or "").strip():
                raise gr.Error("Edit instruction: empty; type what to change, e.g. 'make it snowy'")
            self.decide(("edit", text), request)

        # Review clicks must get through while the job holds the queue slot.
        for button, decision in ((approve, "approve"), (regenerate, "regenerate"), (abort, "abort")):
            button.click(_decider(self, decision), None, None, queue=False)
        edit.click(edit_fn, [instruction], None, queue=False)


def _start_alone(work: Any, events: queue.Queue, name: str) -> None:
    """Run `work` in a thread of its own once no other job of this process runs (`_RUNNING`); its failure
    is the page's ("error", e) event."""

    def alone() -> None:
        if not _RUNNING.acquire(blocking=False):
            events.put(("step", "waiting for the job already running to finish"))
            _RUNNING.acquire()
        try:
            work()
        except BaseException as e:  # reported in the page; the server keeps serving
            events.put(("error", e))
        finally:
            _RUNNING.release()

    threading.Thread(target=alone, name=name, daemon=True).start()


def _decider(app: App, decision: str):
    """A click handler that sends `decision`; Gradio injects the request by the annotation."""

    def decide(request: gr.Request) -> None:
        app.decide(decision, request)

    return decide


def _input_component(item: Any) -> Any:
    """The page's field for one task input (its label from the name; the help under it)."""
    label = item.name.replace("_", " ").capitalize() + ("" if item.required else " (optional)")
    if item.kind == "text":
        return gr.Textbox(label=label, placeholder=item.help, lines=2)
    if item.kind == "image":
        # image_mode None: the handler gets the uploaded file itself, not a converted copy outside gradio's
        # upload record (the job converts to RGB when it reads it)
        return gr.Image(label=label, type="filepath", sources=["upload"], image_mode=None)
    return gr.File(label=label, file_types=["video", ".gif"])


def _lines(log: list[str]) -> str:
    return "\n".join(f"- {line}" for line in log)


def _option_component(option: Any) -> Any:
    """The page's field for one job option, from the job model (type, default, help)."""
    import typing

    kind, label = option.kind, option.name.replace("_", " ").capitalize()
    if kind is bool:
        return gr.Checkbox(label=label, value=option.default, info=option.help)
    if typing.get_origin(kind) is typing.Literal:
        return gr.Dropdown(label=label, choices=list(typing.get_args(kind)), value=option.default, info=option.help)
    return gr.Number(label=f"{label} (empty: default)" if option.default is None else label, value=option.default,
                     precision=0 if kind is int else None, info=option.help)


def _value(option: Any, value: Any) -> Any:
    """A field's value for the job: empty means not given (0 is a value: seed 0 is a seed)."""
    if value in (None, ""):
        return None
    return int(value) if option.kind is int and float(value).is_integer() else value


def _message(error: BaseException) -> str:
    if isinstance(error, MoraError):
        return one_line(error)
    return f"unexpected failure: {one_line(error)}"


def launch(host: str = "127.0.0.1", port: int = 7860, **app_options: Any) -> None:
    """Serve the page (blocks). Binds to 127.0.0.1 unless `host` says otherwise."""
    app = App(**app_options)
    logger.info("Mora UI on http://%s:%d", host, port)
    app.build().launch(server_name=host, server_port=port, show_error=True, **app.file_access())
