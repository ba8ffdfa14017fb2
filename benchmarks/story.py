"""Peak RSS of `mora story` for 2 vs 8 shots on the tiny preset (memory must not grow with the film).

Each size runs in a fresh process; peak RSS is that child's ru_maxrss.
Run: OMP_NUM_THREADS=1 python benchmarks/story.py [--shot-seconds 0.6]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, sys, mora
r = mora.story("A red fox wakes. The fox runs. The fox swims. The fox climbs. The fox eats. The fox hides. "
               "The fox plays. The fox sleeps.", shots=int(sys.argv[1]), shot_seconds=float(sys.argv[2]),
               preset="tiny", device="cpu", seed=0, out=sys.argv[3], progress=False)
print(json.dumps({"frames": r.manifest["video"]["num_frames"]}))
"""


def measure(shots: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(shots), str(seconds), f"{tmp}/film.mp4"],
                             capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # max over children so far, MiB
    return {"shots": shots, "frames": json.loads(out.stdout.strip().splitlines()[-1])["frames"],
            "peak_rss_mib": round(rss, 1), "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shot-seconds", type=float, default=0.6)
    args = parser.parse_args()
    rows = [measure(2, args.shot_seconds), measure(8, args.shot_seconds)]  # 2 first: ru_maxrss is a running max
    for row in rows:
        print(json.dumps(row))  # noqa: T201 - a benchmark script reports on stdout
    print(f"8 vs 2 shots peak RSS: {rows[1]['peak_rss_mib'] / rows[0]['peak_rss_mib'] - 1:+.1%}")  # noqa: T201


if __name__ == "__main__":
    main()
