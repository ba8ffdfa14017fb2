"""The per-step split (issue 21, item 10): each metrics.jsonl row says where the step's time went."""

from __future__ import annotations

import json

import pytest
from conftest import gradient_frames

from mora import media

FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu")


@pytest.mark.parametrize(("cache", "max_grad_norm"), [(True, 1.0), (False, 0.0)])
def test_each_step_records_its_five_phases_within_its_wall_time(tmp_path, cache, max_grad_norm):
    from mora.training import train
    from mora.training.timing import PHASES

    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(6, 64, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    result = train(data, tmp_path / "run", steps=2, progress=False, cache=cache,
                   max_grad_norm=max_grad_norm, **FAST)
    rows = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        split = row["phase_seconds"]
        assert tuple(split) == PHASES
        assert all(v >= 0 for v in split.values()), split
        assert sum(split.values()) <= row["seconds"] + 5 * 1e-4, (split, row["seconds"])  # each rounded to 1e-4
        assert split["forward"] > 0 and split["backward"] > 0 and split["optimizer"] > 0, split
        assert row["grad_norm"] > 0  # measured with and without clipping
    # step 1 runs the frozen encoders (VAE, text encoders); --no-cache runs them every step
    assert rows[0]["phase_seconds"]["encode"] > 0
    assert all(r["phase_seconds"]["encode"] > 0 for r in rows) or cache
