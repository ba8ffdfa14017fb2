"""`story` is a task of the task table: its inputs, help, tools and route (a `Film`) are the table's, and
the service's progress denominator and work budget both count the route that prepare builds from it."""

from __future__ import annotations

import pytest

from mora.workflows.prepare import Hooks, prepare
from mora.workflows.tasks import STORY, TASK_TABLE, TASKS, Film, director_task_list

FOX = "A fox wakes. The fox runs."
BOARD = {"title": "fox", "style": "ink", "characters": [],
         "shots": [{"prompt": "a fox wakes", "seconds": 0.6, "transition": "cut"},  # no transition after a cut
                   {"prompt": "a fox runs", "seconds": 1.2, "transition": "connect"}]}  # two extends


def test_story_is_a_task_of_the_table_with_its_inputs_tools_and_route():
    from mora.workflows.jobspec import JOB_TASKS, task_inputs

    task = TASK_TABLE[STORY]
    assert isinstance(task.route, Film) and task.film is task.route
    assert [(i.name, i.kind, i.required) for i in task.inputs] == [("story", "text", False),
                                                                    ("storyboard", "storyboard", False)]
    assert task_inputs(STORY) == task.inputs and JOB_TASKS == tuple(TASK_TABLE)
    # the tools its steps call, the shots' video tool last (its frame rules bound every shot)
    assert task.film.tools() == ("text_to_image", "edit_image", "extend_video", "connect_videos", "image_to_video")
    assert "edit_image" not in task.film.tools(keyframe=False)  # prompt continuity paints every first frame
    steps = task.film.route([0, 1], [True], keyframe=True)
    assert [(s.agent, s.tool) for s in steps] == [
        ("storyboard_agent", None), ("text_to_image_agent", "text_to_image"), ("image_to_video_agent", "image_to_video"),
        ("image_to_image_agent", "edit_image"), ("image_to_video_agent", "image_to_video"),
        ("image_to_video_agent", "extend_video"), ("video_connection_agent", "connect_videos")]
    assert task.film.shots(steps) == 2
    # the six stay the paper's tasks: the director starts none of story's
    assert STORY not in TASKS and len(TASKS) == 6 and f"{STORY} (" not in director_task_list()


def test_the_command_and_the_mcp_tool_take_story_from_the_table():
    from mora.cli import build_parser
    from mora.mcp.tools import task_tool

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sub.choices[STORY].description == TASK_TABLE[STORY].about
    assert task_tool(STORY)["description"].startswith(TASK_TABLE[STORY].help)


def _prepared(**job):
    return prepare({"task": STORY, "preset": "tiny", **job}, Hooks(progress=False), files=False)


def test_a_given_storyboard_makes_the_route_exact():
    """No storyboard_agent step when the user gives the storyboard, each shot's own seconds, a cut joins nothing."""
    p = _prepared(storyboard=BOARD)
    assert [s.agent for s in p.route] == ["text_to_image_agent", "image_to_video_agent", "image_to_image_agent",
                                         "image_to_video_agent", "image_to_video_agent", "image_to_video_agent"]
    connected = _prepared(storyboard=BOARD, transition="connect")  # --transition overrides every boundary
    assert [s.agent for s in connected.route][-1] == "video_connection_agent"
    assert [s.agent for s in _prepared(story=FOX, storyboard_only=True).route] == ["storyboard_agent"]


def test_progress_and_work_budget_both_follow_the_tables_film(monkeypatch):
    """Change how the table builds a shot: the worker's denominator and the guard's shots both follow."""
    from mora.service.guards import job_work
    from mora.service.worker import acting_steps

    job = {"task": STORY, "story": FOX, "preset": "tiny", "shots": 2, "shot_seconds": 0.6}
    assert acting_steps(job) == 1 + 2 + 2 + 1  # storyboard, two shots of two steps, one transition
    assert job_work(_prepared(**job)).shots == 2
    assert job_work(_prepared(**job), own=True).shots == 3  # the preset's own story: the default shots
    film = TASK_TABLE[STORY].film
    monkeypatch.setattr(Film, "shot", lambda self, k, extends, keyframe: (self.frame, self.video, self.video))
    assert acting_steps(job) == 1 + 3 + 3 + 1
    assert job_work(_prepared(**job)).shots == film.shots(_prepared(**job).route) == 4
    assert job_work(_prepared(**job), own=True).shots == 6


@pytest.mark.parametrize("job", [dict(storyboard=BOARD), dict(story=FOX, shots=2, shot_seconds=0.6)],
                         ids=["storyboard", "storyboard_agent"])
def test_a_storys_step_lines_are_its_route(tmp_path, job):
    """The progress denominator is the number of step lines the story prints, and the manifest's route is
    the one prepared: a service job's progress reaches 100% on its last step, not before."""
    from mora.service.worker import acting_steps
    from mora.workflows.runner import run_job

    job = {"task": STORY, "preset": "tiny", "device": "cpu", "seed": 1, "metrics": False,
           "out": str(tmp_path / "film.mp4"), **job}
    total, route = acting_steps(job), [s.agent for s in _prepared(**job).route]  # as the worker, before it runs
    lines: list[str] = []
    result = run_job(job, Hooks(on_step=lambda agent, doing: lines.append(agent), progress=False))
    assert len(lines) == total and lines == route
    assert lines == result.manifest["route"][len(result.manifest["route"]) - len(lines):]
