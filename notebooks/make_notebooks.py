"""Write the demo notebooks and execute them on the tiny preset, so a reader sees their outputs.

Edit the cells here, then run `python notebooks/make_notebooks.py`: each notebook is generated,
executed top to bottom with nbclient (under a minute each on a CPU) and written with its outputs,
frame strips included (as JPEG). `--no-execute` writes them without outputs, for quick edits;
run it again without the flag before committing (tests/test_notebooks.py checks that the stored
notebooks are executed, current and free of library noise, and executes them again).

Execution is hermetic: a temporary working directory, a private MORA_HOME (the tiny models are
built there) and MORA_OUTPUTS, HF_HUB_OFFLINE=1, OMP_NUM_THREADS=1, no OAI_CONFIG_LIST, and a
`python3` kernel of this interpreter.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT_S = 600
TEMP_PREFIX = "mora-notebooks-"  # the execution folders; no stored output may name one
# Library chatter that must not reach a notebook's outputs (tests/test_notebooks.py checks it too).
NOISE = (
    "TqdmWarning",
    "IProgress",
    "Loading pipeline components",
    "Loading weights",
    "torchvision",
    "Token indices sequence length",
    "truncated because CLIP",
)

# The output root, the same in every notebook: never the kernel's working directory.
OUTPUT_ROOT = '''
# Every output goes under one root: $MORA_OUTPUTS, else ~/mora-outputs (not the working directory).
OUT = Path(os.environ.get("MORA_OUTPUTS", Path.home() / "mora-outputs")).expanduser() / "notebooks" / "{name}"
SHOWN_OUT = ("$MORA_OUTPUTS" if "MORA_OUTPUTS" in os.environ else "~/mora-outputs") + "/notebooks/{name}"


def rel(path):
    """`path` relative to OUT when it is inside it: how this notebook prints paths."""
    path = Path(path)
    return path.relative_to(OUT) if path.is_relative_to(OUT) else path
'''


def output_root(name: str) -> str:
    return textwrap.dedent(OUTPUT_ROOT).strip().format(name=name)


OUTPUTS_MD = """
## Where the outputs go

Every file this notebook writes goes under `OUT`, defined in the next cell as
`$MORA_OUTPUTS/notebooks/{name}`, or `~/mora-outputs/notebooks/{name}` when `MORA_OUTPUTS` is
not set, whatever folder Jupyter was started from. Paths are printed relative to `OUT`.
"""


def outputs_md(name: str):
    return md(textwrap.dedent(OUTPUTS_MD).format(name=name))

# Shared by notebooks 01 and 02: a few frames of a video side by side, with PIL only.
FRAME_STRIP = '''
def frame_strip(video_path, count=6, height=96, gap=4):
    """`count` evenly spaced frames of a video, side by side in one PIL image `height` pixels tall."""
    video = media.read_video(video_path)
    picks = sorted({round(i * (video.num_frames - 1) / max(1, count - 1)) for i in range(count)})
    width = max(1, round(video.width * height / video.height))
    # Toy videos are enlarged without blurring; real ones are shrunk smoothly.
    resample = Image.Resampling.NEAREST if video.height < height else Image.Resampling.LANCZOS
    strip = Image.new("RGB", (len(picks) * (width + gap) - gap, height), "white")
    for k, index in enumerate(picks):
        frame = Image.fromarray(video.frames[index]).resize((width, height), resample)
        strip.paste(frame, (k * (width + gap), 0))
    return strip
'''


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(*parts: str):
    """A code cell of `parts`, each dedented on its own: one blank line apart, two after a definition."""
    source = ""
    for part in (textwrap.dedent(part).strip() for part in parts):
        if source:
            source += "\n\n\n" if source.splitlines()[-1].startswith((" ", "\t")) else "\n\n"
        source += part
    return new_code_cell(source)


def notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(nb.cells, start=1):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating gives the same file
    return nb


QUICKSTART = [
    md("""
    # Mora quickstart: six video tasks, one call each

    **Open the notebooks**: from the repository root, `pip install -e ".[notebooks]"` (Mora plus
    JupyterLab), then `jupyter lab notebooks/`. The stored copies show the outputs of a run on the
    `tiny` preset.

    **Mora** ([Yuan et al., arXiv 2403.13248](https://arxiv.org/abs/2403.13248)) is a multi-agent framework
    for generalist video generation. Five specialist agents, each wrapping an open diffusion model,
    pass their work along a fixed route in an AutoGen group chat:

    | agent | what it does | default model (preset `mora`) |
    |---|---|---|
    | `prompt_agent` | rewrites your text into a detailed visual prompt | an LLM if configured, else a deterministic enhancer |
    | `text_to_image_agent` | paints the first frame | SDXL base + refiner |
    | `image_to_image_agent` | edits an image by instruction | InstructPix2Pix |
    | `image_to_video_agent` | animates a frame; extends a video from its last frame | Stable Video Diffusion XT |
    | `video_connection_agent` | generates a transition between two videos | LTX-Video (first/last frame) |

    `mora.run(task, ...)` runs one of six tasks — `text-to-video`, `image-to-video`, `extend`, `edit`,
    `connect`, `simulate` — and writes the video plus a JSON manifest (route, enhanced prompt,
    artifacts, models, settings, timings) beside it. This notebook runs all six, feeding the
    outputs of earlier cells into later ones.
    """),
    md("""
    ## Presets: `tiny` here, `mora` for real videos

    `PRESET = "tiny"` builds every model family at toy size with **random weights** (cached under
    `$MORA_HOME`, default `~/.cache/mora`). It runs in seconds on a CPU and needs no download, but
    **the frames are noise**: it shows the plumbing, not the pictures.

    For real results set `PRESET = "mora"` (the paper's models, downloaded from the Hugging Face Hub
    on first use) and run on a GPU; `"ltx"` uses LTX-Video for the video steps. `DEVICE = "auto"`
    picks CUDA, then MPS, then the CPU.
    """),
    outputs_md("quickstart"),
    code("""
    import os
    import time
    from pathlib import Path

    from IPython.display import display
    from PIL import Image

    import mora
    from mora import media

    PRESET = "tiny"  # "mora" on a GPU for real videos; "tiny" = random weights, noise frames
    DEVICE = "auto"
    SEED = 0
    PROGRESS = PRESET != "tiny"  # diffusion step bars; not worth showing for two toy steps
    """, output_root("quickstart"), """
    OUT.mkdir(parents=True, exist_ok=True)

    # overwrite=True: running the notebook again replaces its own earlier videos
    RUN = dict(preset=PRESET, device=DEVICE, seed=SEED, progress=PROGRESS, overwrite=True)
    started = time.perf_counter()
    print(f"mora {mora.__version__}; preset {PRESET!r}: {mora.get_preset(PRESET).description}")
    print(f"outputs: {SHOWN_OUT}")
    """),
    code(FRAME_STRIP + '''

def report(result):
    """Print what a run did (route, enhanced prompt, video) and show a strip of its frames."""
    m = result.manifest
    v = m["video"]
    print(f"task:            {m['task']}")
    print(f"route:           {' -> '.join(m['route'])}")
    print(f"enhanced prompt: {m['enhanced_prompt'] or '(none: no prompt agent on this route)'}")
    print(f"video:           {rel(result.video_path)} ({v['num_frames']} frames, {v['width']}x{v['height']}, "
          f"{v['fps']:g} fps; {m['timings']['total_s']:.1f} s)")
    display(frame_strip(result.video_path))
'''),
    md("""
    ## 1. Text to video

    `prompt_agent` → `text_to_image_agent` (the first frame) → `image_to_video_agent` (animates it).
    The first frame is kept among the run's artifacts, in `<out stem>_artifacts/`.
    """),
    code("""
    t2v = mora.run("text-to-video", prompt="a red fox running through fresh snow at dawn",
                   out=OUT / "text_to_video.mp4", **RUN)
    report(t2v)
    first_frame = next(path for path in t2v.manifest["artifacts"] if path.endswith(".png"))
    print("first frame:", rel(first_frame))
    """),
    md("""
    ## 2. Image to video

    Starts from an image: here the first frame painted above. `image_to_image_agent` adapts it to
    the new prompt, then `image_to_video_agent` animates it.
    """),
    code("""
    i2v = mora.run("image-to-video", image=first_frame, prompt="the fox leaps over a fallen log",
                   out=OUT / "image_to_video.mp4", **RUN)
    report(i2v)
    """),
    md("""
    ## 3. Extend a video

    `image_to_video_agent` continues the video from its last frame; the output is the input video
    followed by its continuation (the prompt is optional).
    """),
    code("""
    extended = mora.run("extend", video=t2v.video_path, prompt="the fox keeps running toward the pine forest",
                        out=OUT / "extend.mp4", **RUN)
    report(extended)
    frames_in = media.read_video(t2v.video_path).num_frames
    print(f"{frames_in} frames in, {extended.manifest['video']['num_frames']} out")
    """),
    md("""
    ## 4. Edit a video

    The video's first frame is edited by instruction (`image_to_image_agent`) and animated again.
    """),
    code("""
    edited = mora.run("edit", video=t2v.video_path, instruction="turn it into a night scene under moonlight",
                      out=OUT / "edit.mp4", **RUN)
    report(edited)
    """),
    md("""
    ## 5. Connect two videos

    `video_connection_agent` generates a transition from the last frame of the first video to the first
    frame of the second: the output is video A + transition + video B. Here: the fox by day, then by night.
    """),
    code("""
    connected = mora.run("connect", video_a=t2v.video_path, video_b=edited.video_path,
                         prompt="day turns into night", out=OUT / "connect.mp4", **RUN)
    report(connected)
    """),
    md("""
    ## 6. Simulate a digital world

    Like text-to-video, with a digital-world (game engine) style cue added by the prompt agent.
    """),
    code("""
    simulated = mora.run("simulate", prompt="a fox exploring a blocky village", out=OUT / "simulate.mp4", **RUN)
    report(simulated)
    """),
    md("""
    ## What was written

    Each run wrote `<name>.mp4`, its manifest `<name>.json` and an `<name>_artifacts/` folder.
    The same runs from a shell: `mora text-to-video "a red fox ..." --preset tiny --out fox.mp4`, and so on.
    """),
    code("""
    results = {"text-to-video": t2v, "image-to-video": i2v, "extend": extended, "edit": edited,
               "connect": connected, "simulate": simulated}
    for task, result in results.items():
        v = result.manifest["video"]
        print(f"{task:15} {v['num_frames']:3d} frames  {rel(result.video_path)}  + {rel(result.manifest_path)}")
    videos = sorted(OUT.glob("*.mp4"))
    print(f"{len(videos)} videos in {SHOWN_OUT}; all six tasks took {time.perf_counter() - started:.1f} s")
    """),
]

SCRIPTED_CHAT = [
    md("""
    # Inside a run: the agents' group chat, built by hand

    `mora.run` validates the inputs, builds a `RouteRun` (the route and the files of this run), a `Toolset`
    (the model tools) and a `Team` (five AutoGen agents, a user proxy that executes their tool calls,
    and a `GroupChatManager`), runs the chat, then writes the video and its manifest. This notebook
    builds those three objects itself, runs one route, and reads the group chat message by message.

    Without an LLM (as here) the prompt agent uses a deterministic prompt enhancer and the tool
    agents emit scripted tool calls; with one (see `03_conversational.ipynb`) those come from the LLM
    and are validated. Speaker order is never left to an LLM: it walks the task's route, which is data.

    `PRESET = "tiny"` uses random-weight toy models (noise frames, seconds on a CPU); set
    `PRESET = "mora"` on a GPU for real videos.
    """),
    outputs_md("scripted_chat"),
    code("""
    import os
    from pathlib import Path
    """, output_root("scripted_chat"), """
    print(f"outputs: {SHOWN_OUT}")
    """),
    md("""
    ## The route table

    `mora.workflows.tasks.TASK_TABLE` is the one table of tasks (inputs, help, route); the command's
    subcommands, the web page's tabs and the chat director's schema are generated from it.
    `route_for(task, inputs)` gives the steps of each task; optional inputs can add or swap a step.
    `review` is the optional human-in-the-loop gate on the route's image (a no-op unless a
    `review=` callback is given).
    """),
    code("""
    from mora.workflows.tasks import REVIEW, TASKS, route_for

    EXAMPLES = [  # (task, inputs); the file names only matter for which optional inputs are present
        ("text-to-video", {"prompt": "a paper boat"}),
        ("image-to-video", {"image": "frame.png", "prompt": "a paper boat"}),
        ("extend", {"video": "a.mp4"}),
        ("extend", {"video": "a.mp4", "prompt": "it keeps going"}),
        ("edit", {"video": "a.mp4", "instruction": "make it night"}),
        ("connect", {"video_a": "a.mp4", "video_b": "b.mp4"}),
        ("simulate", {"prompt": "a blocky village"}),
        ("simulate", {"prompt": "a blocky village", "image": "frame.png"}),
    ]
    assert {task for task, _ in EXAMPLES} == set(TASKS)


    def step_label(step):
        return "(review gate)" if step.agent == REVIEW else step.agent + (f"[{step.tool}]" if step.tool else "")


    for task, inputs in EXAMPLES:
        label = f"{task} ({', '.join(inputs)})"
        print(f"{label:42} {' -> '.join(step_label(s) for s in route_for(task, inputs))}")
    """),
    md("""
    ## Build the job, the tools and the team

    The same steps as `mora.run` (see `workflows/runner.py`): `prepare` checks everything, then the
    route state machine (`RouteRun`), the tools and the AutoGen team are built. The job's `guard` makes
    the tools accept input paths only from this job's inputs and artifacts.
    """),
    code("""
    import json
    import textwrap

    from IPython.display import display
    from PIL import Image

    from mora import media
    from mora.agents.roles import AGENT_TOOLS
    from mora.agents.team import Team
    from mora.tools.toolset import Toolset
    from mora.workflows.prepare import prepare
    from mora.workflows.route_run import RouteRun

    PRESET = "tiny"  # "mora" on a GPU for real videos
    TASK = "text-to-video"

    spec = prepare({"task": TASK, "prompt": "a paper boat drifting down a rainy street", "preset": PRESET, "seed": 0,
                    "out": str(OUT / "boat.mp4"), "overwrite": True})  # the job model's fields, checked
    job = RouteRun(task=TASK, inputs=spec.inputs, options=spec.pinned, seed=spec.seed,
              route=list(route_for(TASK, spec.inputs)), artifacts_dir=spec.artifacts_dir)
    tools = Toolset(preset=spec.preset, device="auto", output_dir=job.artifacts_dir, progress=False,
                    input_guard=job.guard)
    team = Team(job, tools, config_list=None,  # no LLM: deterministic prompt, scripted tool calls
                on_step=lambda agent, what: print(f"  {agent}: {what}"))

    print("device:", tools.device)
    for name, agent in team.agents.items():
        print(f"{name:24} tools {list(AGENT_TOOLS[name]) or '-'}; {agent.description}")
    """),
    md("""
    ## Run the route

    `team.run()` starts the chat from the user proxy; the manager asks the speaker-selection function
    who speaks next, which follows `job.route`.
    """),
    code("""
    team.run()
    print("agents that acted:", " -> ".join(job.acted))
    """),
    md("""
    ## The group chat, message by message

    `team.groupchat.messages` holds every message: the task message of the user proxy, the prompt
    agent's enhanced prompt, each tool agent's tool call (name and JSON arguments), and the user
    proxy's tool response (the path of the file the tool wrote).
    """),
    code("""
    def short(text):  # the chat's paths are absolute: print them relative to OUT
        return str(text).replace(f"{OUT}{os.sep}", "")


    def show_message(index, message):
        print(f"[{index}] {message.get('name', '?')} (role: {message['role']})")
        for call in message.get("tool_calls") or []:
            arguments = json.loads(call["function"]["arguments"])
            print(f"    tool call {call['id']}: {call['function']['name']}(")
            for key, value in arguments.items():
                print(f"        {key}={short(value) if isinstance(value, str) else value!r},")
            print("    )")
        for response in message.get("tool_responses") or []:
            print(f"    tool response to {response['tool_call_id']}: {short(response['content'])}")
        content = message.get("content")
        if content not in (None, "", "None") and not message.get("tool_responses"):
            for line in short(content).splitlines():
                print(textwrap.fill(line, 100, initial_indent="    ", subsequent_indent="    "))


    for index, message in enumerate(team.groupchat.messages):
        show_message(index, message)
    print("speakers:", " -> ".join(m.get("name", "?") for m in team.groupchat.messages))
    """),
    md("""
    ## What the tools made

    `tools.calls` records every tool call (arguments, model, seconds, output). `mora.run` would now copy
    the last video to `--out` and write the manifest; here we just look at it.
    """),
    code(FRAME_STRIP + '''

for call in tools.calls:
    print(f"{call['tool']:15} {call['seconds']:6.2f} s  {call['model'][0]:20} -> {rel(call['output'])}")
print("enhanced prompt:", job.enhanced_prompt)
print("final video:", rel(job.videos[-1]))
display(frame_strip(job.videos[-1]))
'''),
]

CONVERSATIONAL = [
    md("""
    # Conversational prompting: `mora.chat`

    In a chat, a **director** LLM talks with you, picks the task and its inputs, and starts it with a
    `start_task` tool call. Mora validates that call like any LLM output (a known task, only that
    task's inputs, only file paths you typed yourself), then runs the task's route; with an LLM
    configured, the prompt agent and the tool agents use it too (falling back to scripted calls,
    counted in `manifest["llm"]["fallbacks"]`, when an answer is unusable).

    ## Setup: an `OAI_CONFIG_LIST` file

    Chat needs an OpenAI-compatible chat model. Copy `OAI_CONFIG_LIST.example` from the repository root
    to a file named `OAI_CONFIG_LIST`, keep the entry you want (entries are tried in order), and either
    put it in this notebook's working directory or point `$OAI_CONFIG_LIST` at it before starting
    Jupyter. For example:

    OpenAI:
    ```json
    [{"model": "gpt-4o-mini", "api_key": "sk-..."}]
    ```
    Ollama, locally (`ollama pull llama3.1` first; use a model with tool calling):
    ```json
    [{"model": "llama3.1", "base_url": "http://localhost:11434/v1", "api_key": "ollama"}]
    ```
    The key is only sent to that endpoint; manifests record the model name, never a key.

    Without a configuration the next cell says so and the later cells skip themselves (writing
    nothing), so this notebook always runs to the end. `PRESET = "tiny"` makes noise frames in
    seconds; set `PRESET = "mora"` on a GPU for real videos.
    """),
    outputs_md("conversational"),
    code("""
    import os
    from pathlib import Path

    import mora
    from mora.agents.llm import describe, load_llm_config

    PRESET = "tiny"  # "mora" on a GPU for real videos
    """, output_root("conversational"), """

    try:
        config_list = load_llm_config()  # $OAI_CONFIG_LIST (a path or JSON), then ./OAI_CONFIG_LIST
    except mora.InputError as error:
        print(f"The LLM configuration is unusable: {error}")
        config_list = None

    if config_list:
        where = config_list[0].get("base_url", "the OpenAI API")
        print(f"LLM configured: model {describe(config_list)['model']!r} at {where}")
    else:
        print("No LLM configured: mora.chat needs one. Create an OAI_CONFIG_LIST file (see "
              "OAI_CONFIG_LIST.example and the setup above), then restart the kernel and run this "
              "notebook again. The cells below are skipped.")
    """),
    md("""
    ## One message, one video

    `mora.chat(message, ...)` returns a `ChatResult`: the task it started, the validated inputs, and
    the `RunResult` of `mora.run` (options such as `preset`, `seed` and `out` are passed through). If
    the director asks a question instead, the chat ends with it in `reply`, unless you pass
    `ask=`, a function that answers it (`ask=input` makes the chat interactive).
    """),
    code("""
    if config_list:
        chat_result = mora.chat(
            "Make a short video of a red fox running through fresh snow at dawn.",
            llm_config=config_list, preset=PRESET, seed=0, device="auto", out=OUT / "chat.mp4", progress=False,
            overwrite=True,  # running the notebook again replaces its earlier video
        )
        for message in chat_result.messages:
            print(f"{message['role']:>9}: {message['content']}")
        if chat_result.task:
            manifest = chat_result.result.manifest
            print(f"task:            {chat_result.task}")
            print(f"inputs:          {chat_result.inputs}")
            print(f"route:           {' -> '.join(manifest['route'])}")
            print(f"enhanced prompt: {manifest['enhanced_prompt']}")
            llm = manifest["llm"]
            print(f"llm:             model {llm['model']!r}, {llm['fallbacks']} fallback(s) to scripted calls")
            print(f"video:           {rel(chat_result.result.video_path)} ({manifest['video']['num_frames']} frames)")
        else:
            print("The director answered without starting a task:", chat_result.reply)
    else:
        print("Skipped: no LLM configured.")
    """),
    md("""
    ## A look at the video

    The first, middle and last frames, side by side (noise on the tiny preset).
    """),
    code("""
    if config_list and chat_result.task:
        from IPython.display import display
        from PIL import Image

        from mora import media

        video = media.read_video(chat_result.result.video_path)
        picks = [0, video.num_frames // 2, video.num_frames - 1]
        strip = Image.new("RGB", (video.width * len(picks), video.height))
        for k, index in enumerate(picks):
            strip.paste(Image.fromarray(video.frames[index]), (k * video.width, 0))
        display(strip.resize((strip.width * 2, strip.height * 2)) if video.height < 128 else strip)
    else:
        print("Skipped: no video was made.")
    """),
]

FINE_TUNING = [
    md("""
    # Fine-tuning Mora's agents: self-modulated training and the data-free loop

    The Mora paper trains its agents together instead of chaining frozen models. This notebook runs,
    on the `tiny` preset (random weights, noise frames, seconds on a CPU):

    1. **Self-modulated multi-agent fine-tuning** (`mora.train(data=...)`): LoRA weights theta_i on
       the text-to-image and image-to-video agents plus a learnable *modulation embedding* z_i per
       agent, trained on one coupled loss whose gradients flow from the video agent back into the
       image agent. The modulation factor ||z_i|| is reported at every step.
    2. The **adapter** it writes, used for a new video (`mora.run(..., adapter=...)`).
    3. One iteration of **data-free training** (`mora.train(prompts=...)`): the agents make candidate
       videos, judges (the score card and any vision LLM) vote, the agents fine-tune on what
       survives.

    The same runs from the command line: `mora train --data DIR --out RUN_DIR` and
    `mora train --prompts FILE --out RUN_DIR`. Design and limits: `docs/training.md`.
    """),
    outputs_md("fine_tuning"),
    code("""
    import json
    import os
    import shutil
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    from IPython.display import display
    from PIL import Image

    import mora
    from mora import media

    PRESET = "tiny"  # "mora" on a large GPU (and real clips) for a real adapter
    DEVICE = "auto"
    # Toy training sizes for the tiny preset; drop them on a GPU to use the defaults (512x288, 14 frames).
    TRAIN = dict(preset=PRESET, device=DEVICE, train_size=(64, 64), train_frames=4, rank=4,
                 gradient_checkpointing=False, progress=False)
    """, output_root("fine_tuning"), """
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"mora {mora.__version__}; preset {PRESET!r}; outputs: {SHOWN_OUT}")
    """),
    md("""
    ## Training data: clips with captions

    A data folder holds videos and `metadata.jsonl`, one `{"file_name", "text"}` per line (the
    Hugging Face videofolder layout). Here two synthetic 8-frame clips: colour gradients that drift.
    """),
    code("""
    clips = OUT / "clips"
    clips.mkdir(exist_ok=True)
    captions = {"drift.mp4": "a warm gradient drifting to the right", "rise.mp4": "a cool gradient rising"}
    for k, name in enumerate(captions):
        y, x = np.mgrid[0:64, 0:96]
        frames = np.stack([np.stack([(x * 2 + 6 * t * (k == 0)) % 256, (y * 3 + 6 * t * (k == 1)) % 256,
                                     np.full_like(x, 90 + 80 * k)], axis=-1) for t in range(8)]).astype(np.uint8)
        media.write_video(frames, clips / name, fps=8)
    lines = [json.dumps({"file_name": name, "text": text}) for name, text in captions.items()]
    (clips / "metadata.jsonl").write_text("\\n".join(lines) + "\\n")
    print((clips / "metadata.jsonl").read_text())
    """),
    md("""
    ## Train a few steps

    `mora.train(data=..., out=RUN_DIR, ...)` checks every data line first, then trains and writes
    `RUN_DIR/adapter/` (for `--adapter`), `metrics.jsonl` (one line per step), `loss.png`,
    `train.json` and checkpoints (`resume=True` continues an interrupted run exactly).
    """),
    code("""
    run_dir = OUT / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # running the notebook again starts a fresh run
    result = mora.train(data=clips, out=run_dir, steps=8, lr=1e-2, mod_lr=1e-1, seed=0, **TRAIN)
    print(f"adapter:     {rel(result.adapter_dir)}")
    print(f"steps:       {result.steps}, final loss {result.final_loss:.4f}")
    print("modulation:  " + ", ".join(f"{agent} ||z|| = {value:.3f}" for agent, value in result.modulation.items()))
    """),
    md("""
    ## Loss and modulation factors

    From `metrics.jsonl`: the total loss, each agent's loss, and the modulation factor ||z_i|| of
    each agent, step by step (the same curves as `loss.png`).
    """),
    code("""
    records = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    steps = [r["step"] for r in records]
    fig, (loss_ax, mod_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_ax.plot(steps, [r["loss"] for r in records], color="black", label="total")
    for agent in records[0]["loss_per_agent"]:
        loss_ax.plot(steps, [r["loss_per_agent"][agent] for r in records], label=agent)
    loss_ax.set(xlabel="step", ylabel="loss", title="coupled loss")
    loss_ax.legend(fontsize=8)
    for agent in records[0]["modulation"]:
        mod_ax.plot(steps, [r["modulation"][agent] for r in records], label=agent)
    mod_ax.set(xlabel="step", ylabel="||z_i||", title="modulation factors")
    mod_ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md("""
    ## A video with the adapter

    `adapter=` works for every task (`--adapter DIR` on the command line). The manifest records the
    adapter: its path, sha256, agents and modulation factors.
    """),
    code(FRAME_STRIP + '''

video = mora.run("text-to-video", prompt="a red fox running through snow", preset=PRESET, device=DEVICE, seed=0,
                 out=OUT / "with_adapter.mp4", adapter=result.adapter_dir, progress=False, overwrite=True)
entry = video.manifest["adapter"]
print(f"video:   {rel(video.video_path)}")
print(f"adapter: agents {entry['agents']}, sha256 {entry['sha256'][:12]}..., modulation {entry['modulation']}")
display(frame_strip(video.video_path))'''),
    md("""
    ## Data-free training: one iteration

    Video training data is scarce, so the paper makes its own. `mora.train(prompts=..., out=RUN_DIR)`
    repeats, `iterations` times: make `candidates` videos per prompt through the text-to-video route
    (with the adapter of the previous iteration), let the judges vote for one candidate per prompt,
    keep it in `RUN_DIR/data/iter-k/` (the `--data` format), fine-tune `steps` steps on everything
    kept so far.

    The judges are the score card (always) and every LLM entry tagged `"vision"` in the LLM config
    (`"tags": ["vision"]`), which sees a contact sheet of several frames per candidate and answers
    `{"choice": N}` or `{"choice": "none"}`. All agree: kept (`unanimous`); they disagree:
    `human(candidates, votes)` decides (a candidate number or None), or without one the prompt is
    dropped. With no vision LLM, as here, the score card decides alone (`single_judge`).
    """),
    code("""
    loop_dir = OUT / "data_free"
    shutil.rmtree(loop_dir, ignore_errors=True)
    prompts = ["a red fox running through snow", "a sailing boat on a calm lake"]
    loop = mora.train(prompts=prompts, out=loop_dir, iterations=1, candidates=2, steps=2, seed=0, **TRAIN)
    print(loop.manifest["summary"])
    for row in loop.iterations:
        print(f"iteration {row['iteration']}: {row['candidates']} candidates, {row['kept']} kept, dropped "
              f"{row['dropped']}, mean kept score {row['mean_kept_score']}, loss {row['loss']:.4f}")
    sample = json.loads((loop_dir / "data/iter-1/metadata.jsonl").read_text().splitlines()[0])
    print({k: sample[k] for k in ("file_name", "prompt", "seed", "votes", "decided_by", "quality")})
    print(f"adapter: {rel(loop.adapter_dir)}")
    """),
    md("""
    What a judge (and a human, on a disagreement) looks at: one contact sheet per candidate, frames
    in time order. The kept candidate's line in `metadata.jsonl` records every judge's vote.
    """),
    code("""
    for sheet in sorted((loop_dir / "candidates/iter-1/p001").glob("c*_sheet.png")):
        print(rel(sheet))
        image = Image.open(sheet)
        display(image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST))
    """),
]

STORY = [
    md("""
    # A multi-shot film from a story: `mora story`

    `mora.story(story, shots=N, ...)` (`mora story "..." --shots N` on the command line) turns a
    story into a film of several shots:

    1. **`storyboard_agent`** writes a storyboard: a title, a style sheet, the characters, and per shot
       a prompt, its length in seconds, a camera note and how it leads into the next shot (`connect`
       or `cut`). With an LLM configured (`OAI_CONFIG_LIST`, see `03_conversational.ipynb`) an LLM
       writes it and Mora validates it; without one, as here, a deterministic splitter turns the
       story's sentences into shots.
    2. Each shot runs through the agents: shot 1 is painted by `text_to_image_agent`; with
       `continuity="keyframe"` (the default) every later shot starts from `image_to_image_agent`'s
       edit of the previous shot's last frame; `image_to_video_agent` animates it (and extends it
       until it lasts its seconds).
    3. Between two shots, `video_connection_agent` generates a transition (`connect`), or the film
       simply cuts (`cut`).

    The film is written with its manifest, the storyboard (`<name>_storyboard.json`), a contact
    sheet (`<name>_contact.png`: the first frame of each shot) and each shot's files in
    `<name>_artifacts/shot-NN/`. The manifest also scores the film's seams and compares the cuts it
    detects with the cuts the storyboard asked for.

    `PRESET = "tiny"` builds toy models with **random weights**: it runs in seconds on a CPU, but
    **the film is noise**. Set `PRESET = "mora"` on a GPU for a real film (and drop `SHOT_SECONDS`
    to use the preset's own shot length).
    """),
    outputs_md("story"),
    code("""
    import os
    import textwrap
    from itertools import pairwise
    from pathlib import Path

    from IPython.display import display
    from PIL import Image

    import mora

    PRESET = "tiny"  # "mora" on a GPU for a real film; "tiny" = random weights, noise frames
    SHOT_SECONDS = 0.6  # short shots: the whole tiny film takes seconds
    RUN = dict(preset=PRESET, device="auto", seed=0, progress=False, overwrite=True)
    STORY = ("A red fox wakes in a snowy forest. The fox runs across a frozen river. "
             "The fox sleeps under a pine tree.")
    """, output_root("story"), """
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"mora {mora.__version__}; preset {PRESET!r}; outputs: {SHOWN_OUT}")
    """),
    md("""
    ## 1. The storyboard

    `storyboard_only=True` writes the storyboard and stops: no model runs. Edit it (here: as a dict;
    on the command line: the JSON file) and pass it back with `storyboard=` to make exactly that film.
    """),
    code("""
    plan = mora.story(STORY, shots=3, shot_seconds=SHOT_SECONDS, storyboard_only=True,
                      out=OUT / "fox_story.mp4", **RUN)
    board = plan.manifest  # with storyboard_only, the storyboard itself
    print(f"storyboard: {rel(plan.manifest_path)}")
    print(f"title:      {board['title']}")
    print(f"style:      {board['style']}")
    for character in board["characters"]:
        print(f"character:  {character['name']}: {character['description']}")
    for k, shot in enumerate(board["shots"], start=1):
        then = shot["transition"] if k < len(board["shots"]) else "the end"
        print(f"\\nshot {k}: {shot['seconds']:g} s, {shot['camera']}, then {then}")
        print(textwrap.fill(shot["prompt"], 100, initial_indent="    ", subsequent_indent="    "))
    """),
    md("""
    A cut instead of a generated transition between shots 2 and 3 (the last shot's transition is
    ignored: nothing follows it).
    """),
    code("""
    board["shots"][1]["transition"] = "cut"
    print(" | ".join(f"shot {k}: {shot['transition']}" for k, shot in enumerate(board["shots"][:-1], start=1)))
    """),
    md("""
    ## 2. The film

    The same call with the edited storyboard. Shot k's seed is the story's seed + k, so a shot can
    be remade on its own (`resume=True` reuses the finished shots of an interrupted run).
    """),
    code("""
    film = mora.story(storyboard=board, out=OUT / "fox_story.mp4", **RUN)
    m = film.manifest
    v = m["video"]
    print(f"film:          {rel(film.video_path)} ({v['num_frames']} frames, {v['width']}x{v['height']}, "
          f"{v['fps']:g} fps; {m['timings']['total_s']:.1f} s)")
    print(f"manifest:      {rel(film.manifest_path)}")
    print(f"contact sheet: {rel(m['contact_sheet'])}")
    print(f"note:          {m.get('note', '-')}")
    """),
    md("""
    The contact sheet: the first frame of each shot (noise on the tiny preset; with keyframe
    continuity each shot starts from an edit of the previous shot's end).
    """),
    code("""
    sheet = Image.open(m["contact_sheet"]).convert("RGB")
    if sheet.height < 200:  # toy frames: enlarged without blurring
        sheet = sheet.resize((sheet.width * 2, sheet.height * 2), Image.Resampling.NEAREST)
    display(sheet)
    """),
    md("""
    ## 3. Shots, seams and cuts

    Per shot, from the manifest: its seed, its frames and the seconds the storyboard asked for.
    Then the film's score card (`manifest["metrics"]`): the **seam continuity** at each boundary
    between two pieces of the film (1 = seamless), and the **cuts** the detector found compared
    with the cuts the storyboard intended. On the tiny preset every frame is noise, so the detector
    need not find the intended cut; with real models a `cut` should be found and a `connect` should
    not.
    """),
    code("""
    print(f"{'shot':>4} {'seed':>5} {'frames':>6} {'seconds':>7}  then")
    for shot in m["shots"]:
        then = shot["transition"] if shot["index"] < len(m["shots"]) else "(end)"
        print(f"{shot['index']:>4} {shot['seed']:>5} {shot['frames']:>6} {shot['seconds']:>7g}  {then}")
    transitions = {t["index"]: t for t in m["transitions"]}
    for index, t in transitions.items():
        print(f"transition {index} -> {index + 1}: {t['frames']} generated frames, seed {t['seed']}")

    # the film's pieces in order, to name each boundary
    pieces = []
    for shot in m["shots"]:
        if shot["index"] - 1 in transitions:
            pieces.append(f"transition {shot['index'] - 1}->{shot['index']}")
        pieces.append(f"shot {shot['index']}")
    card = m["metrics"]
    print("\\nseam continuity (1 = seamless):")
    for seam, (before, after) in zip(card["seam_continuity"], pairwise(pieces), strict=True):
        score = "-" if seam["score"] is None else f"{seam['score']:.3f}"  # None: too few frames to score
        print(f"    frame {seam['frame']:>3}: {before:>16} | {after:<16} {score}")
    print(f"    mean {card['seam_mean']:.3f}")
    cuts = card["cuts"]
    print("cuts (frame numbers):")
    for key in ("intended", "detected", "matched", "missed", "unexpected"):
        print(f"    {key:10} {cuts[key]}")
    """),
    md("""
    ## 4. The route

    Every agent that acted, in order: the storyboard, then each shot and each transition.
    """),
    code("""
    groups = {}
    for step in m["steps"]:
        groups.setdefault(step["where"], []).append(step["agent"])
    for where, agents in groups.items():
        print(f"{where:14} {' -> '.join(agents)}")
    print(f"{len(m['route'])} agent turns; shot files in {rel(film.artifacts_dir)}/: "
          f"{', '.join(sorted(p.name for p in film.artifacts_dir.iterdir()))}")
    """),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_scripted_group_chat.ipynb": SCRIPTED_CHAT,
    "03_conversational.ipynb": CONVERSATIONAL,
    "04_fine_tuning.ipynb": FINE_TUNING,
    "05_story.ipynb": STORY,
}


def output_text(nb) -> str:
    """Everything a notebook's code cells printed, displayed or raised, in order."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                parts.append(output.get("data", {}).get("text/plain", ""))
            elif output.output_type == "error":
                parts.append("\n".join([f"{output.ename}: {output.evalue}", *output.traceback]))
    return "\n".join(parts)


def problems(nb) -> list[str]:
    """What must not be in a stored notebook's outputs: errors, library noise, temporary paths."""
    found = [f"error output: {o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code"
             for o in c.outputs if o.output_type == "error"]
    text = output_text(nb)
    found += [f"library noise {phrase!r}: {line.strip()}" for phrase in NOISE
              for line in text.splitlines() if phrase in line]
    found += [f"a temporary path: {line.strip()}" for line in text.splitlines() if TEMP_PREFIX in line]
    return found


@contextmanager
def hermetic_environment(root: Path):
    """Set the kernels' environment (they inherit this process's) for the duration, then restore it."""
    from ipykernel.kernelspec import install

    # A `python3` kernelspec that starts this interpreter, searched before any other kernel folder.
    prefix = root / "jupyter-prefix"
    install(prefix=str(prefix), kernel_name="python3", display_name="Python 3 (ipykernel)")
    changes = {
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "MORA_HOME": str(root / "mora-home"),  # the tiny models are built here, never in the user's cache
        "MORA_OUTPUTS": str(root / "outputs"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "OAI_CONFIG_LIST": None,  # no LLM: the notebooks take their documented no-LLM paths
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # the debugger's frozen-modules notice on the kernel's stderr
    }
    saved = {key: os.environ.get(key) for key in changes}
    try:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(nb: nbformat.NotebookNode, workdir: Path) -> None:
    """Run `nb` top to bottom in a kernel whose working directory is `workdir`, filling in its outputs."""
    from nbclient import NotebookClient

    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, allow_errors=False,
                            record_timing=False, resources={"metadata": {"path": str(workdir)}})
    metadata = dict(nb.metadata)
    client.execute()  # raises CellExecutionError, with the failing cell's traceback
    nb.metadata = nbformat.from_dict(metadata)  # not the kernel's Python version: regenerating elsewhere gives no diff
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/jpeg" in data:
                # IPython shows a PIL image as PNG and JPEG; one is enough, and a noise frame strip
                # is 90 kB as PNG, 17 kB as JPEG
                data.pop("image/png", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true",
                        help="write the notebooks without outputs (quick edits; run without it before committing)")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"only these notebooks (default: all of {', '.join(NOTEBOOKS)})")
    args = parser.parse_args(argv)
    names = args.names or list(NOTEBOOKS)
    unknown = [name for name in names if name not in NOTEBOOKS]
    if unknown:
        parser.error(f"{unknown[0]!r} is not one of {', '.join(NOTEBOOKS)}")
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as temp:
        root = Path(temp)
        with hermetic_environment(root):
            for name in names:
                nb = notebook(NOTEBOOKS[name])
                nbformat.validate(nb)
                if not args.no_execute:
                    print(f"executing {name} ...", flush=True)
                    execute(nb, root / "work" / Path(name).stem)
                    found = problems(nb)
                    if found:
                        print(f"{name}: not written, its outputs have problems:", *found, sep="\n  ", file=sys.stderr)
                        return 1
                nbformat.write(nb, HERE / name)
                state = "without outputs" if args.no_execute else "executed"
                print(f"wrote notebooks/{name} ({len(nb.cells)} cells, {state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
