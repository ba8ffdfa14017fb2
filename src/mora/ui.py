"""`mora ui`: a Gradio page for the six tasks (and the score card), one tab each.

Each job runs `mora.run` in a worker thread; the page streams one line per agent step, then
shows the video, the enhanced prompt, the route and the manifest. With review on, the first
frame waits in the page for Approve / Regenerate / Edit / Abort. One job runs at a time (Gradio's
queue; others see their position), uploads are copied into the job's own folder, and the server
binds to 127.0.0.1 unless told otherwise. Needs the `ui` extra (`pip install -e ".[ui]"`).
"""

import inspect
import logging
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from mora.errors import MoraError

logger = logging.getLogger(__name__)

REVIEW_TIMEOUT_S = 3600  # a first frame waits this long for a decision, then the job aborts
_JOB_SLOT = "mora-job"  # every tab's Generate shares one concurrency slot: one job at a time


class _Session:
    """The page's link to the running job of one browser session (review decisions)."""

    def __init__(self) -> None:
        self.decisions: queue.Queue = queue.Queue()


_SESSIONS: dict[str, _Session] = {}
_LOCK = threading.Lock()


def _session(request: gr.Request | None) -> _Session:
    key = getattr(request, "session_hash", None) or "local"
    with _LOCK:
        return _SESSIONS.setdefault(key, _Session())


class App:
    """The Gradio app and its settings.

    Args:
        preset, device, profile, llm_config: passed to every `mora.run`.
        output_root: jobs go to `<output_root>/<job id>/`; uploads are copied there.

    Example:
        >>> App(preset="tiny").build().launch(server_name="127.0.0.1", server_port=7860)
    """

    def __init__(self, preset: str = "mora", device: str = "auto", profile: str = "balanced",
                 llm_config: Any = None, output_root: str | Path = "outputs/ui"):
        self.preset, self.device, self.profile, self.llm_config = preset, device, profile, llm_config
        self.output_root = Path(output_root).resolve()

    # --- one job ---------------------------------------------------------------------------------

    def _job_dir(self) -> Path:
        path = self.output_root / uuid.uuid4().hex[:12]
        (path / "inputs").mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _keep_upload(upload: Any, job_dir: Path) -> str | None:
        """Copy an uploaded file into the job folder: the job reads only its own copies."""
        if not upload:
            return None
        source = Path(upload if isinstance(upload, str) else getattr(upload, "name", upload))
        target = job_dir / "inputs" / source.name
        shutil.copyfile(source, target)
        return str(target)

    def run_job(self, task: str, inputs: dict, options: dict, review_on: bool, request: gr.Request | None = None
                ) -> Iterator[tuple]:
        """Generator for Gradio: yields (log, review row, frame, video, enhanced prompt, route, manifest)."""
        import mora

        session = _session(request)
        while not session.decisions.empty():  # drop clicks left over from an earlier job
            session.decisions.get_nowait()
        job_dir = self._job_dir()
        inputs = {k: (self._keep_upload(v, job_dir) if k in ("image", "video", "video_a", "video_b") else v)
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

        def work() -> None:
            try:
                result = mora.run(
                    task, **inputs, **{k: v for k, v in options.items() if v not in (None, "", 0)},
                    preset=self.preset, device=self.device, profile=self.profile, llm_config=self.llm_config,
                    out=job_dir / f"{task}.mp4", review=review if review_on else None, on_step=on_step,
                    progress=False,
                )
                events.put(("done", result))
            except BaseException as e:  # reported in the page; the server keeps serving
                events.put(("error", e))

        threading.Thread(target=work, name=f"mora-{task}", daemon=True).start()
        log: list[str] = []
        hidden = gr.update(visible=False)
        yield "Starting...", hidden, None, None, "", "", None
        while True:
            kind, payload = events.get()
            if kind == "step":
                log.append(payload)
                yield "\n".join(f"- {line}" for line in log), hidden, gr.update(), None, "", "", None
            elif kind == "review":
                log.append("waiting for your review of the first frame")
                yield ("\n".join(f"- {line}" for line in log), gr.update(visible=True), payload, None, "", "", None)
            elif kind == "error":
                raise gr.Error(_message(payload), duration=None)
            else:
                manifest = payload.manifest
                log.append(f"done: {manifest['video']['num_frames']} frames, "
                           f"{manifest['video']['width']}x{manifest['video']['height']}")
                yield ("\n".join(f"- {line}" for line in log), hidden, gr.update(), str(payload.video_path),
                       manifest.get("enhanced_prompt") or "", " -> ".join(manifest["route"]),
                       str(payload.manifest_path))
                return

    @staticmethod
    def decide(decision: Any, request: gr.Request | None = None) -> None:
        _session(request).decisions.put(decision)

    def evaluate(self, video: Any) -> tuple[str, dict]:
        from mora.evaluation import format_table, score_card_for_file

        if not video:
            raise gr.Error("video: nothing uploaded; choose a video file to score", duration=None)
        try:
            card = score_card_for_file(video if isinstance(video, str) else video.name)
        except MoraError as e:
            raise gr.Error(str(e), duration=None) from None
        return f"```\n{format_table(card)}\n```", card

    # --- the page ----------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Mora") as demo:
            gr.Markdown(
                "# Mora\nMulti-agent video generation (arXiv 2403.13248). "
                f"Preset **{self.preset}**" + (" (random toy models: output is noise)" if "tiny" in self.preset else "")
            )
            self._task_tab("Text to video", "text-to-video", [("prompt", "Prompt", "text")], review=True)
            self._task_tab("Image to video", "image-to-video", [("image", "Image", "image"), ("prompt", "Prompt", "text")])
            self._task_tab("Extend", "extend", [("video", "Video", "video"), ("prompt", "Prompt (optional)", "text")])
            self._task_tab("Edit", "edit", [("video", "Video", "video"), ("instruction", "Instruction", "text")])
            self._task_tab("Connect", "connect", [("video_a", "First video", "video"),
                                                  ("video_b", "Second video", "video"),
                                                  ("prompt", "Transition prompt (optional)", "text")])
            self._task_tab("Simulate", "simulate", [("prompt", "Prompt", "text"), ("image", "Image (optional)", "image")],
                           review=True)
            with gr.Tab("Evaluate"):
                video = gr.File(label="Video", file_types=["video"])
                button = gr.Button("Score", variant="primary")
                table = gr.Markdown()
                card = gr.JSON(label="Score card")
                button.click(self.evaluate, [video], [table, card], concurrency_id=_JOB_SLOT)
        demo.queue(default_concurrency_limit=1)
        return demo

    def _task_tab(self, title: str, task: str, fields: list[tuple[str, str, str]], review: bool = False) -> None:
        with gr.Tab(title):
            components = []
            for _key, label, kind in fields:
                if kind == "text":
                    components.append(gr.Textbox(label=label, lines=2))
                elif kind == "image":
                    components.append(gr.Image(label=label, type="filepath", sources=["upload"]))
                else:
                    components.append(gr.File(label=label, file_types=["video", ".gif"]))
            with gr.Accordion("Options", open=False):
                seed = gr.Number(label="Seed (empty: random)", precision=0, value=None)
                num_frames = gr.Number(label="Frames (empty: preset default)", precision=0, value=None)
                steps = gr.Number(label="Steps (empty: preset default)", precision=0, value=None)
            review_box = gr.Checkbox(label="Review the first frame", value=False, visible=review)
            button = gr.Button("Generate", variant="primary")
            log = gr.Markdown(label="Progress")
            with gr.Column(visible=False) as review_row:
                frame = gr.Image(label="First frame", type="filepath", interactive=False)
                with gr.Row():
                    approve = gr.Button("Approve", variant="primary")
                    regenerate = gr.Button("Regenerate")
                    abort = gr.Button("Abort", variant="stop")
                instruction = gr.Textbox(label="Edit instruction")
                edit = gr.Button("Edit")
            video = gr.Video(label="Result")
            enhanced = gr.Textbox(label="Enhanced prompt", interactive=False)
            route = gr.Textbox(label="Route", interactive=False)
            manifest = gr.File(label="Manifest")
            keys = [key for key, _, _ in fields]

            def start(*values: Any):
                *inputs, seed_v, frames_v, steps_v, review_v, request = values
                options = dict(seed=_int(seed_v), num_frames=_int(frames_v), steps=_int(steps_v))
                yield from self.run_job(task, dict(zip(keys, inputs, strict=True)), options, bool(review_v), request)

            # Gradio passes inputs positionally and injects the request where a positional parameter
            # is annotated gr.Request: spell that signature out for this tab's number of inputs.
            start.__signature__ = inspect.Signature(
                [inspect.Parameter(f"input_{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(fields) + 4)]
                + [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)]
            )
            start.__annotations__ = {"request": gr.Request}

            button.click(start, [*components, seed, num_frames, steps, review_box],
                         [log, review_row, frame, video, enhanced, route, manifest], concurrency_id=_JOB_SLOT)
            def approve_fn(request: gr.Request) -> None:
                self.decide("approve", request)

            def regenerate_fn(request: gr.Request) -> None:
                self.decide("regenerate", request)

            def abort_fn(request: gr.Request) -> None:
                self.decide("abort", request)

            def edit_fn(text: str, request: gr.Request) -> None:
                if not (text or "").strip():
                    raise gr.Error("Edit instruction: empty; type what to change, e.g. 'make it snowy'")
                self.decide(("edit", text), request)

            # Review clicks must get through while the job holds the queue slot.
            approve.click(approve_fn, None, None, queue=False)
            regenerate.click(regenerate_fn, None, None, queue=False)
            abort.click(abort_fn, None, None, queue=False)
            edit.click(edit_fn, [instruction], None, queue=False)


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _message(error: BaseException) -> str:
    if isinstance(error, MoraError):
        return str(error)
    return f"unexpected failure: {type(error).__name__}: {error}"


def launch(host: str = "127.0.0.1", port: int = 7860, **app_options: Any) -> None:
    """Serve the page (blocks). Binds to 127.0.0.1 unless `host` says otherwise."""
    app = App(**app_options)
    logger.info("Mora UI on http://%s:%d", host, port)
    app.build().launch(server_name=host, server_port=port, show_error=True,
                       allowed_paths=[str(app.output_root)])
