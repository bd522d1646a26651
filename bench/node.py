#!/usr/bin/env python3
"""Measures the render node against plain Blender on this machine and prints the figures
BENCHMARKS.md quotes. Real Blender, real node; nothing simulated.

Usage:
  python3 bench/node.py [CORRAL]                   overhead and completion notice (below)
  python3 bench/node.py modes [CORRAL] [RUNS]      plain Blender vs a cold and a warm node
  python3 bench/node.py scene OUT.blend            writes the benchmark scene
  python3 bench/node.py submit URL FRAMES CHUNK    one client run against a running node:
                                                   frames 1-FRAMES as jobs of CHUNK frames,
                                                   all posted at once, waits for every one
CORRAL defaults to target/release/corral. The scene: 160x120, 16 samples, Cycles.

Default (overhead):
1. plain:    `blender -b scene -o ... -s 1 -e 24 -t 0 -a`, wall time.
2. via node: POST /job 1-24 to `corral node --threads 0 --render-mode cold`, long-poll
             until 200, wall time
             from the POST to the answer (node overhead = this - plain).
3. notice:   for 10 one-frame jobs, the delay between the job's `finished_at` (node clock)
             and the long-poll answer arriving (same machine, same clock).

modes: starts a cold and a warm node (one slot, `--threads 0` each, both idle while the
other runs) and, RUNS times (default 5) in turn, times from outside: plain Blender
rendering frames 1-24 (`-t 0 -a`), then `submit` of the same 24 frames to the cold node and
to the warm node, as one job and as five jobs of at most 5 frames (the orchestrator's
default chunk). Prints the median wall time of each and its ratio to plain Blender.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORRAL = os.path.join(REPO, "target/release/corral")
WIDTH, HEIGHT, SAMPLES, FRAMES = 160, 120, 16, 24


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return resp.status, json.loads(resp.read())


def wait_done(base, job_id):
    since = 0
    while True:
        status, view = http("GET", f"{base}/job/{job_id}?wait=60&since={since}")
        if status == 200:
            return view
        since = view["version"]


def make_scene(path):
    subprocess.run(["blender", "-b", "--factory-startup", "--python",
                    os.path.join(REPO, "scripts/make_scene.py"), "--", path,
                    "--width", str(WIDTH), "--height", str(HEIGHT),
                    "--samples", str(SAMPLES), "--end", str(FRAMES)],
                   check=True, capture_output=True)


def plain_command(scene, out):
    return ["blender", "-b", scene, "-o", os.path.join(out, "f_####"),
            "-E", "CYCLES", "-s", "1", "-e", str(FRAMES), "-t", "0", "-a"]


def start_node(corral, scene, work, mode):
    node = subprocess.Popen([corral, "node", "--listen", "127.0.0.1:0", "--blend", scene,
                             "--output", os.path.join(work, f"out-{mode}"),
                             "--data", os.path.join(work, f"data-{mode}"),
                             "--threads", "0", "--render-mode", mode],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = node.stdout.readline().strip().rsplit(" ", 1)[-1]
    if mode == "warm":
        # Ready when its worker is: the first, one-frame job pays Blender's start-up and
        # Cycles' first initialisation, as the first job on any node does.
        submit(base, 1, 1)
    return node, base


def submit(base, frames, chunk):
    """Posts frames 1-`frames` as jobs of `chunk` frames, all at once; waits for all."""
    ids = []
    for start in range(1, frames + 1, chunk):
        end = min(start + chunk - 1, frames)
        _, job = http("POST", f"{base}/job", {"from": start, "to": end})
        ids.append(job["id"])
    for job_id in ids:
        done = wait_done(base, job_id)
        if done["state"] != "completed":
            raise SystemExit(f"job {job_id} ended {done['state']}: {done['failure']}")


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def overhead(corral):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    scene = os.path.join(work, "scene.blend")
    make_scene(scene)
    plain = timed(lambda: subprocess.run(plain_command(scene, os.path.join(work, "plain")),
                                         check=True, capture_output=True))
    node = subprocess.Popen([corral, "node", "--listen", "127.0.0.1:0", "--blend", scene,
                             "--output", os.path.join(work, "out"),
                             "--data", os.path.join(work, "data"), "--threads", "0",
                             "--render-mode", "cold"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = node.stdout.readline().strip().rsplit(" ", 1)[-1]
        t0 = time.monotonic()
        _, job = http("POST", f"{base}/job", {"from": 1, "to": FRAMES})
        done = wait_done(base, job["id"])
        via_node = time.monotonic() - t0
        assert done["state"] == "completed", done

        delays = []
        for frame in range(1, 11):
            _, job = http("POST", f"{base}/job", {"from": frame, "to": frame})
            done = wait_done(base, job["id"])
            received = datetime.now().astimezone()
            finished = datetime.fromisoformat(done["finished_at"].replace("Z", "+00:00"))
            delays.append((received - finished).total_seconds() * 1000)
    finally:
        node.terminate()
        node.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    print(f"scene: {WIDTH}x{HEIGHT}, {SAMPLES} samples, Cycles, {FRAMES} frames, {os.cpu_count()} cores")
    print(f"plain blender -a -t 0:        {plain:6.2f} s")
    print(f"corral node (cold), POST to 200: {via_node:6.2f} s  (overhead {via_node - plain:+.2f} s)")
    print(f"completion notice (10 jobs):  median {statistics.median(delays):.1f} ms, "
          f"max {max(delays):.1f} ms after finished_at")


def modes(corral, runs):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    scene = os.path.join(work, "scene.blend")
    make_scene(scene)
    nodes = {}
    try:
        for mode in ("cold", "warm"):
            nodes[mode] = start_node(corral, scene, work, mode)
        cases = [("plain blender -b -a -t 0, 24 frames",
                  lambda: subprocess.run(plain_command(scene, os.path.join(work, "plain")),
                                         check=True, capture_output=True))]
        for chunk in (FRAMES, 5):
            for mode in ("cold", "warm"):
                base = nodes[mode][1]
                label = f"{mode} node, {'one job of 24' if chunk == FRAMES else 'five jobs of <=5'}"
                cases.append((label, lambda base=base, chunk=chunk: submit(base, FRAMES, chunk)))
        times = {label: [] for label, _ in cases}
        for _ in range(runs):
            for label, run in cases:
                times[label].append(timed(run))
    finally:
        for node, _ in nodes.values():
            node.terminate()
            node.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    plain = statistics.median(times[cases[0][0]])
    print(f"scene: {WIDTH}x{HEIGHT}, {SAMPLES} samples, Cycles, {FRAMES} frames, "
          f"{os.cpu_count()} cores, {runs} runs each, medians")
    for label, _ in cases:
        median = statistics.median(times[label])
        print(f"{label:42s} {median:6.2f} s  x{median / plain:.2f} of plain "
              f"(min {min(times[label]):.2f}, max {max(times[label]):.2f})")


def main():
    args = sys.argv[1:]
    if args[:1] == ["scene"]:
        make_scene(os.path.abspath(args[1]))
    elif args[:1] == ["submit"]:
        submit(args[1], int(args[2]), int(args[3]))
    elif args[:1] == ["modes"]:
        corral = args[1] if len(args) > 1 else DEFAULT_CORRAL
        modes(corral, int(args[2]) if len(args) > 2 else 5)
    else:
        overhead(args[0] if args else DEFAULT_CORRAL)


if __name__ == "__main__":
    main()
