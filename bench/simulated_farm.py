#!/usr/bin/env python3
"""SIMULATED farm benchmark of the orchestrator's scheduler: a real `corral orchestrator`
drives N simulated render nodes (this script; no Blender) that speak the node API and
"render" each frame by sleeping. It measures scheduling overhead at farm scale, which a
2-core machine cannot show with real Blender. The simulated nodes are named as such and are
never used where a user-facing feature is claimed to work.

Usage: python3 bench/simulated_farm.py [corral binary] [nodes] [frames] [chunk] [ms/frame]
Defaults: target/release/corral 100 10000 5 10
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
args = sys.argv[1:]
CORRAL = args[0] if len(args) > 0 else os.path.join(REPO, "target/release/corral")
NODES = int(args[1]) if len(args) > 1 else 100
FRAMES = int(args[2]) if len(args) > 2 else 10000
CHUNK = int(args[3]) if len(args) > 3 else 5
MS_PER_FRAME = int(args[4]) if len(args) > 4 else 10


def now():
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class SimulatedNode:
    """One simulated node with one slot: jobs 'render' by sleeping MS_PER_FRAME a frame."""

    def __init__(self):
        self.jobs = {}
        self.cond = threading.Condition()
        self.alias = 0
        self.busy = 0
        self.max_busy = 0

    def submit(self, body):
        with self.cond:
            self.alias += 1
            job = {"id": str(uuid.uuid4()), "pid": self.alias, "state": "running",
                   "status": "Job still running", "from": body["from"], "to": body["to"],
                   "scene": "/sim.blend", "engine": "CYCLES", "format": None, "threads": 0,
                   "frames_total": body["to"] - body["from"] + 1, "frames_done": 0,
                   "current_frame": None, "current_sample": None, "outputs": [],
                   "exit_code": None, "failure": None, "log_tail": [], "submitted_at": now(),
                   "started_at": now(), "finished_at": None, "blender_pid": None, "version": 1}
            self.jobs[job["id"]] = job
            self.busy += 1
            self.max_busy = max(self.max_busy, self.busy)
        threading.Thread(target=self.render, args=(job,), daemon=True).start()
        return job

    def render(self, job):
        for frame in range(job["from"], job["to"] + 1):
            time.sleep(MS_PER_FRAME / 1000)
            with self.cond:
                job["outputs"].append({"frame": frame, "path": f"/sim/{frame:06}.png"})
                job["frames_done"] += 1
                job["version"] += 1
                self.cond.notify_all()
        with self.cond:
            job.update(state="completed", status="Job completed", exit_code=0,
                       finished_at=now())
            job["version"] += 1
            self.busy -= 1
            self.cond.notify_all()

    def wait(self, job_id, since, wait):
        deadline = time.monotonic() + wait
        with self.cond:
            while True:
                job = self.jobs.get(job_id)
                if job is None or job["version"] > since or job["state"] != "running":
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    return job
                self.cond.wait(left)


def handler_for(node):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.reply(202, node.submit(body))

        def do_GET(self):
            if self.path == "/info":
                return self.reply(200, {"hostname": "simulated", "cores": 1, "memory_bytes": 1,
                                        "blender_version": "simulated", "corral_version": "0",
                                        "slots": 1, "running": node.busy, "queued": 0,
                                        "engines": ["CYCLES"], "formats": ["PNG"],
                                        "max_frames_per_job": 100000})
            if self.path == "/jobs":
                with node.cond:
                    return self.reply(200, list(node.jobs.values()))
            m = re.match(r"/job/([^?]+)(?:\?wait=([\d.]+)&since=(\d+))?", self.path)
            if not m:
                return self.reply(404, {"title": "not found", "status": 404})
            job = node.wait(m[1], int(m[3] or 0), float(m[2] or 0))
            if job is None:
                return self.reply(404, {"title": "Job not found", "status": 404})
            with node.cond:
                self.reply(200 if job["state"] != "running" else 202, job)

        def do_DELETE(self):
            self.reply(404, {"title": "Job not found", "status": 404})
    return Handler


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, resp.read().decode()


def main():
    nodes, urls = [], []
    for _ in range(NODES):
        node = SimulatedNode()
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(node))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        nodes.append(node)
        urls.append(f"http://127.0.0.1:{server.server_address[1]}")
    work = tempfile.mkdtemp(prefix="corral-simfarm-")
    orch = subprocess.Popen([CORRAL, "orchestrator", "--listen", "127.0.0.1:0",
                             "--data", work, "--node", ",".join(urls)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "RUST_LOG": "warn"})
    try:
        base = orch.stdout.readline().strip().rsplit(" ", 1)[-1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            up = json.loads(http("GET", f"{base}/api/v1/nodes")[1])
            if sum(n["state"] == "up" for n in up) == NODES:
                break
            time.sleep(0.2)
        t0 = time.monotonic()
        _, body = http("POST", f"{base}/api/v1/jobs",
                       {"from": 1, "to": FRAMES, "chunk_size": CHUNK})
        job_id = json.loads(body)["id"]
        while True:
            code, body = http("GET", f"{base}/status/{job_id}")
            if code == 200:
                break
            time.sleep(0.05)
        wall = time.monotonic() - t0
        status = json.loads(body)
        metrics = http("GET", f"{base}/metrics")[1]
    finally:
        orch.terminate()
        orch.wait(timeout=30)
    tasks = -(-FRAMES // CHUNK)
    ideal = tasks * CHUNK * MS_PER_FRAME / 1000 / NODES
    def metric(name):
        m = re.search(rf"^{name} ([\d.e+-]+)$", metrics, re.M)
        return float(m[1]) if m else float("nan")
    d_sum, d_n = metric("corral_dispatch_seconds_sum"), metric("corral_dispatch_seconds_count")
    c_sum, c_n = metric("corral_completion_notice_seconds_sum"), metric("corral_completion_notice_seconds_count")
    print(f"SIMULATED: {NODES} nodes x 1 slot, {FRAMES} frames in {tasks} tasks of {CHUNK}, "
          f"{MS_PER_FRAME} ms/frame")
    print(f"state {status['state']}, frames {status['framesDone']}/{status['framesTotal']}")
    print(f"wall {wall:.2f} s; ideal with zero overhead {ideal:.2f} s; "
          f"overhead {wall - ideal:.2f} s ({(wall - ideal) / tasks * 1000:.1f} ms per task)")
    print(f"mean dispatch (POST /job) {d_sum / d_n * 1000:.1f} ms; "
          f"mean completion notice {c_sum / c_n * 1000:.1f} ms")
    print(f"max tasks at once on one simulated node: {max(n.max_busy for n in nodes)} (slots: 1)")


if __name__ == "__main__":
    main()
