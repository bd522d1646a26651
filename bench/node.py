#!/usr/bin/env python3
"""Measures the render node against plain Blender on this machine and prints the figures
BENCHMARKS.md quotes. Real Blender, real node; nothing simulated.

Usage: python3 bench/node.py [path/to/corral]   (default target/release/corral)

1. plain:    `blender -b scene -o ... -s 1 -e 24 -t 0 -a`, wall time.
2. via node: POST /job 1-24 to `corral node --threads 0`, long-poll until 200, wall time
             from the POST to the answer (node overhead = this - plain).
3. notice:   for 10 one-frame jobs, the delay between the job's `finished_at` (node clock)
             and the long-poll answer arriving (same machine, same clock).
"""
import json
import shutil
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORRAL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target/release/corral")
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


def main():
    work = tempfile.mkdtemp(prefix="corral-bench-")
    scene = os.path.join(work, "scene.blend")
    subprocess.run(["blender", "-b", "--factory-startup", "--python",
                    os.path.join(REPO, "scripts/make_scene.py"), "--", scene,
                    "--width", str(WIDTH), "--height", str(HEIGHT),
                    "--samples", str(SAMPLES), "--end", str(FRAMES)],
                   check=True, capture_output=True)

    t0 = time.monotonic()
    subprocess.run(["blender", "-b", scene, "-o", os.path.join(work, "plain/f_####"),
                    "-E", "CYCLES", "-s", "1", "-e", str(FRAMES), "-t", "0", "-a"],
                   check=True, capture_output=True)
    plain = time.monotonic() - t0

    node = subprocess.Popen([CORRAL, "node", "--listen", "127.0.0.1:0", "--blend", scene,
                             "--output", os.path.join(work, "out"),
                             "--data", os.path.join(work, "data"), "--threads", "0"],
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
    print(f"corral node, POST to 200:     {via_node:6.2f} s  (overhead {via_node - plain:+.2f} s)")
    print(f"completion notice (10 jobs):  median {statistics.median(delays):.1f} ms, "
          f"max {max(delays):.1f} ms after finished_at")


if __name__ == "__main__":
    main()
