#!/usr/bin/env python3
"""End-to-end test of Corral's Docker images and compose farm on the real Docker engine.

Usage: python3 tests/docker/e2e.py          (what `make docker-test` and `make test` run)

When no Docker engine answers (`docker info` fails) it prints a loud SKIPPED line and
exits 0. Otherwise it builds the images (`make images`' steps: the release binary, the
local Debian bases, the two images), brings up compose.yaml with three nodes under the
project name `corral-e2e`, and checks, each as one step:
  - the tutorial's `curl -X POST http://localhost:4000/render ...` job reaches `200` with
    all 20 frames in the host folder (which Docker creates, as on a fresh clone), and
    corral and Blender run as a non-root user;
  - `docker kill` of a node mid-task: the job still completes, the node's chunk re-run;
  - `docker network disconnect` of a node mid-task (a partition): the orchestrator marks
    it down, its chunk is re-run elsewhere and the job completes; after `docker network
    connect` the node is `up` again and takes tasks of a new job;
  - `docker compose restart orchestrator` mid-job: the job completes, and the jobs from
    before the restart are still in the database (a named volume);
  - `docker compose stop` mid-render (SIGTERM): every container exits 0 within the grace
    period, no Blender left;
  - `docker compose down -v --remove-orphans` leaves no container, network or volume;
  - compose.postgres.yaml over compose.yaml: PostgreSQL (an image made from the local
    Debian base) and two orchestrators; `docker kill` of the orchestrator that dispatches
    mid-job: the other takes over and the job completes with every frame on the host.
It prints the image sizes and the time each step took. Everything it starts is removed on
any exit (compose down -v), and its requests go only to localhost and its own containers.
  - compose.remote.yaml (issue 9): an orchestrator and three nodes sharing no volume, tokens
    on; from this machine, `corral submit --upload --wait` of a generated scene with a
    texture at a relative path, one at an absolute path outside its folder and a linked
    library: the frames arrive here with the pixels of a local `blender -b` render; a second
    submit uploads 0 B while a node is killed mid-job; the orchestrator restarted mid-upload
    (the client goes through a throttling proxy), the upload resumes and every frame comes;
    without a token or with a revoked one a client, a would-be node and a `POST /job` to a
    node are refused and nothing is stored.
Environment: CORRAL_E2E_KEEP=1 keeps the output folder; CORRAL_E2E_SKIP_BUILD=1 uses the
images already built; CORRAL_E2E_ONLY=remote runs only the remote farm's steps.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROJECT = "corral-e2e"
NETWORK = "blender-network"
PORT = 4000
BASE = f"http://localhost:{PORT}"
NODES = 3
NODE_IMAGE = "corral-node:latest"

steps = []  # (name, seconds, note)
work_dir = None
compose_cmd = None
compose_env = None
started_compose = False


def log(msg):
    print(f"docker-e2e: {msg}", flush=True)


class Failed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


# ---------------------------------------------------------------- processes and HTTP


def run(args, check_rc=True, capture=True, env=None, timeout=1800):
    res = subprocess.run(
        args,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
        timeout=timeout,
    )
    if check_rc and res.returncode != 0:
        out = (res.stdout or "")[-4000:]
        raise Failed(f"`{' '.join(args)}` exited {res.returncode}:\n{out}")
    return res


def compose(*args, check_rc=True, timeout=600):
    return run(compose_cmd + list(args), check_rc=check_rc, env=compose_env, timeout=timeout)


def docker(*args, check_rc=True, timeout=300):
    return run(["docker"] + list(args), check_rc=check_rc, timeout=timeout)


def http(method, path, body=None, timeout=30, base=None):
    """(status, headers, parsed JSON or text); never raises for an HTTP status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request((base or BASE) + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, dict(e.headers), e.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode(errors="replace")


def wait_for(what, fn, timeout, interval=0.5):
    """Polls fn() until it returns a truthy value; returns it, or fails after timeout."""
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            last_err = e
        time.sleep(interval)
    raise Failed(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last_err})" if last_err else ""))


# ---------------------------------------------------------------- farm helpers


def nodes():
    status, _, body = http("GET", "/api/v1/nodes")
    check(status == 200, f"GET /api/v1/nodes answered {status}: {body}")
    return body


def up_nodes():
    return [n for n in nodes() if n["state"] == "up"]


def container_of(node):
    """The container whose hostname a node advertises (http://SHORTID:3000)."""
    host = node["url"].split("//", 1)[1].rsplit(":", 1)[0]
    return host


def job(job_id):
    status, _, body = http("GET", f"/api/v1/jobs/{job_id}")
    check(status == 200, f"GET /api/v1/jobs/{job_id} answered {status}: {body}")
    return body


def submit(frm, to, chunk):
    status, _, body = http("POST", "/api/v1/jobs", {"from": frm, "to": to, "chunk_size": chunk})
    check(status == 202, f"POST /api/v1/jobs answered {status}: {body}")
    return body["id"]


def wait_job_done(job_id, timeout=300):
    def done():
        j = job(job_id)
        if j["state"] in ("failed", "cancelled"):
            raise Failed(f"job {job_id} ended {j['state']}: {j.get('failure')}\n"
                         + "\n".join(str(brief(t)) for t in j["tasks"]))
        return j if j["state"] == "completed" else None

    return wait_for(f"job {job_id} to complete", done, timeout)


def brief(task):
    """A task without its Blender log tail, except the last lines when it failed."""
    t = {k: v for k, v in task.items() if k != "log_tail"}
    if task.get("failure"):
        t["log_tail"] = task.get("log_tail", [])[-5:]
    return t


def running_task(job_id, min_age=1.0):
    """A task of the job that has been running on a node for at least min_age seconds."""
    j = job(job_id)
    now = time.time()
    for t in j["tasks"]:
        if t["state"] == "running" and t["node"] and t["started_at"]:
            started = parse_time(t["started_at"])
            if now - started >= min_age:
                return t
    return None


def parse_time(s):
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def node_by_id(node_id):
    for n in nodes():
        if n["id"] == node_id:
            return n
    raise Failed(f"node {node_id} is not in /api/v1/nodes")


def frames_on_host(job_id, frm, to):
    """Checks that every frame of the range is a PNG in the host output folder."""
    folder = os.path.join(work_dir, "output", job_id)
    missing = []
    for f in range(frm, to + 1):
        path = os.path.join(folder, f"frame_{f:04d}.png")
        try:
            with open(path, "rb") as fh:
                if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                    missing.append(f"{f} (not a PNG)")
        except OSError:
            missing.append(str(f))
    check(not missing, f"frames missing on the host in {folder}: {', '.join(missing)}")
    return folder


def wait_nodes_up(count, timeout=120):
    return wait_for(f"{count} nodes up", lambda: len(up_nodes()) >= count and up_nodes(), timeout)


def step(name):
    """Decorator-ish context: times a step and records it."""

    class Step:
        def __enter__(self):
            self.t = time.monotonic()
            self.note = ""
            log(f"--- {name}")
            return self

        def __exit__(self, kind, exc, tb):
            secs = time.monotonic() - self.t
            if kind is None:
                steps.append((name, secs, self.note))
                log(f"ok  {name}: {secs:.1f} s{' (' + self.note + ')' if self.note else ''}")
            else:
                steps.append((name, secs, "FAILED"))
            return False

    return Step()


# ---------------------------------------------------------------- cleanup


def cleanup():
    global started_compose
    remote_cleanup()
    if started_compose:
        started_compose = False
        log("cleaning up: docker compose down -v --remove-orphans")
        try:
            compose("down", "-v", "--remove-orphans", "-t", "5", check_rc=False, timeout=180)
        except Exception as e:  # cleanup must go on
            log(f"cleanup: compose down failed: {e}")
    if work_dir and os.path.isdir(work_dir) and os.environ.get("CORRAL_E2E_KEEP") != "1":
        # The frames belong to the container's user; remove them from inside a container
        # so that a non-root caller can delete the folder too.
        out = os.path.join(work_dir, "output")
        if os.path.isdir(out) and os.geteuid() != 0:
            run(["docker", "run", "--rm", "--entrypoint", "sh", "-u", "10001", "-v", f"{out}:/o", NODE_IMAGE,
                 "-c", "rm -rf /o/* /o/.[!.]*"], check_rc=False)
        shutil.rmtree(work_dir, ignore_errors=True)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- the steps


def build_images():
    if os.environ.get("CORRAL_E2E_SKIP_BUILD") == "1":
        log("CORRAL_E2E_SKIP_BUILD=1: using the images already built")
        return
    with step("release binary (cargo build --release -p corral)"):
        run(["cargo", "build", "--release", "-p", "corral", "--locked"], capture=False)
    if os.environ.get("BASE_IMAGE"):
        log(f"BASE_IMAGE={os.environ['BASE_IMAGE']}: the images are built FROM it, no local base")
    else:
        base_images()
    with step("images corral-node and corral-orchestrator"):
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        run(["bash", "docker/build-images.sh", os.path.join(target, "release", "corral")], capture=False)


def base_images():
    with step("base images (debootstrap + docker import; cached)") as s:
        out = run(["bash", "docker/base-image.sh"]).stdout
        print(out, end="", flush=True)
        s.note = "cached" if "up to date" in out else "built"


def image_sizes():
    sizes = []
    for image in ["corral-node:latest", "corral-orchestrator:latest", "corral-postgres:latest",
                  "corral-base-node:bookworm", "corral-base:bookworm", "corral-base-postgres:bookworm"]:
        r = docker("image", "inspect", "--format", "{{.Size}}", image, check_rc=False)
        if r.returncode == 0:
            sizes.append((image, int(r.stdout.strip()) / 1e6))
    return sizes


def static_checks():
    with step("image metadata: non-root, HEALTHCHECK, SIGTERM"):
        for image in ["corral-node:latest", "corral-orchestrator:latest"]:
            cfg = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
            check(cfg.get("Healthcheck") and cfg["Healthcheck"].get("Test"), f"{image} declares no HEALTHCHECK")
            check(cfg.get("StopSignal") in (None, "SIGTERM"), f"{image} stops with {cfg.get('StopSignal')}")
            uid = docker("run", "--rm", image, "id", "-u").stdout.strip()
            check(uid not in ("", "0"), f"a command in {image} runs as uid {uid!r}")
            log(f"{image}: commands run as uid {uid}; healthcheck {' '.join(cfg['Healthcheck']['Test'][1:])}")
        # No compiler, no Blender in the orchestrator's image.
        r = docker("run", "--rm", "corral-orchestrator:latest", "sh", "-c",
                   "command -v blender cc gcc rustc cargo || true")
        check(r.stdout.strip() == "", f"the orchestrator image has {r.stdout.strip()}")


def bring_up():
    global started_compose
    with step(f"docker compose up -d --scale node={NODES}") as s:
        started_compose = True
        compose("up", "-d", "--scale", f"node={NODES}")
        t = time.monotonic()
        wait_for("the orchestrator on localhost:4000", lambda: http("GET", "/readyz")[0] == 200, 60)
        ups = wait_nodes_up(NODES, 120)
        s.note = f"{NODES} nodes registered {time.monotonic() - t:.1f} s after up"
        urls = sorted(n["url"] for n in ups)
        log(f"nodes: {', '.join(urls)}")
        check(len(set(urls)) == NODES, f"nodes share an address: {urls}")
    with step("healthchecks report healthy"):
        ids = compose("ps", "-q").stdout.split()

        def healthy():
            states = [docker("inspect", "--format", "{{.State.Health.Status}}", c).stdout.strip() for c in ids]
            return all(s == "healthy" for s in states)

        wait_for("every container healthy", healthy, 120, interval=1)


def tutorial_job():
    with step("tutorial curl job (frames 1-20) to 200, frames on the host") as s:
        r = run(["curl", "-sS", "-i", "-X", "POST", f"{BASE}/render", "-H", "Content-Type: application/json",
                 "-d", '{"from": 1, "to": 20}'])
        head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
        check(head.split()[1] == "202", f"POST /render answered:\n{r.stdout}")
        job_id = json.loads(body)["jobId"]
        t = time.monotonic()

        def completed():
            r = run(["curl", "-sS", "-i", f"{BASE}/status/{job_id}"])
            code = r.stdout.split()[1]
            if code == "200":
                check("Job completed" in r.stdout, f"status answered 200 but not completed:\n{r.stdout}")
                return True
            check(code == "202", f"GET /status answered:\n{r.stdout}")
            return False

        wait_for(f"/status/{job_id} to answer 200", completed, 120)
        render_secs = time.monotonic() - t
        folder = frames_on_host(job_id, 1, 20)
        owner = os.stat(os.path.join(folder, "frame_0001.png")).st_uid
        check(owner != 0, "frames on the host are owned by root")
        s.note = f"render {render_secs:.1f} s, 20 frames in {os.path.relpath(folder, REPO)}, owned by uid {owner}"
        return job_id


def check_non_root_processes(container):
    """Every process in the container (tini, corral, Blender) runs as a non-root user."""
    out = docker("top", container, "-eo", "pid,uid,comm").stdout.splitlines()[1:]
    procs = [line.split(None, 2)[1:] for line in out if line.strip()]
    check(procs, f"no processes in {container}")
    rooted = [p for p in procs if p[0] == "0"]
    check(not rooted, f"processes running as root in {container}: {rooted}")
    return procs


def job_with_a_running_task(frames, chunk):
    """Submits frames 1..`frames` in chunks of `chunk` and waits until one task renders;
    returns the job id, that task, its node and the node's container."""
    job_id = submit(1, frames, chunk)
    task = wait_for("a task rendering on a node", lambda: running_task(job_id), 120, interval=0.2)
    node = node_by_id(task["node"])
    return job_id, task, node, container_of(node)


def kill_node():
    with step("docker kill a node mid-job; the job completes") as s:
        job_id, task, node, container = job_with_a_running_task(60, 10)
        procs = check_non_root_processes(container)
        check(any("blender" in p[1] for p in procs), f"no Blender running in {container}: {procs}")
        docker("kill", container)
        log(f"killed {container} while it rendered frames {task['from']}-{task['to']} (task {task['id']}); "
            f"its processes ran as uids {sorted({p[0] for p in procs})}")
        j = wait_job_done(job_id)
        frames_on_host(job_id, 1, 60)
        t = next(t for t in j["tasks"] if t["id"] == task["id"])
        check(t["node"] != node["id"], f"the killed node's task was not re-run elsewhere: {brief(t)}")
        s.note = f"task {task['from']}-{task['to']} re-run on {node_by_id(t['node'])['url']}"
    with step(f"the killed node back (compose up -d --scale node={NODES})") as s:
        restarted = docker("inspect", "--format", "{{.State.Running}}", container).stdout.strip() == "true"
        compose("up", "-d", "--scale", f"node={NODES}")
        wait_for(f"{container} up again",
                 lambda: any(n["url"] == node["url"] and n["state"] == "up" for n in nodes()), 120)
        wait_nodes_up(NODES)
        s.note = "restarted by its restart policy" if restarted else "started again by compose up"


def partition_node():
    with step("network partition of a node mid-job; chunk re-run elsewhere, job completes") as s:
        job_id, task, node, container = job_with_a_running_task(60, 15)
        docker("network", "disconnect", NETWORK, container)
        t0 = time.monotonic()
        log(f"disconnected {container} from {NETWORK} while it rendered frames {task['from']}-{task['to']}")
        wait_for(f"{node['url']} marked down", lambda: node_by_id(node["id"])["state"] == "down", 60, interval=0.2)
        down_after = time.monotonic() - t0
        j = wait_job_done(job_id)
        frames_on_host(job_id, 1, 60)
        t = next(t for t in j["tasks"] if t["id"] == task["id"])
        check(t["node"] != node["id"], f"the partitioned node's task was not re-run elsewhere: {brief(t)}")
        s.note = f"marked down after {down_after:.1f} s; task re-run on {node_by_id(t['node'])['url']}"
    with step("reconnect: the node is up again and takes tasks of a new job") as s:
        docker("network", "connect", NETWORK, container)
        t0 = time.monotonic()
        wait_for(f"{node['url']} up again", lambda: node_by_id(node["id"])["state"] == "up", 60, interval=0.2)
        up_after = time.monotonic() - t0
        job2 = submit(1, 30, 2)
        j = wait_job_done(job2)
        frames_on_host(job2, 1, 30)
        took = [t for t in j["tasks"] if t["node"] == node["id"] and t["state"] == "completed"]
        check(took, f"the reconnected node {node['url']} took no task of job {job2}")
        s.note = f"up {up_after:.1f} s after connect; rendered {len(took)} of {len(j['tasks'])} tasks of the new job"


def restart_orchestrator(earlier_jobs):
    with step("docker compose restart orchestrator mid-job; the job completes") as s:
        job_id = submit(1, 60, 10)
        wait_for("a task rendering on a node", lambda: running_task(job_id, 0.5), 120, interval=0.2)
        t0 = time.monotonic()
        compose("restart", "orchestrator")
        wait_for("the orchestrator back", lambda: http("GET", "/readyz")[0] == 200, 60)
        back = time.monotonic() - t0
        j = job(job_id)
        check(j["state"] != "completed", "the job completed before the orchestrator restarted; nothing was tested")
        wait_job_done(job_id)
        frames_on_host(job_id, 1, 60)
        for old in earlier_jobs:
            status, _, body = http("GET", f"/status/{old}")
            check(status == 200 and body["status"] == "Job completed",
                  f"job {old} from before the restart answers {status} {body}")
        s.note = f"API back {back:.1f} s after restart; {len(earlier_jobs)} earlier jobs still in the database"


def sigterm_stop():
    with step("docker compose stop (SIGTERM) mid-render: clean exits, no Blender left") as s:
        wait_nodes_up(NODES)
        job_id = submit(1, 60, 20)
        task = wait_for("a task rendering on a node", lambda: running_task(job_id, 0.5), 120, interval=0.2)
        container = container_of(node_by_id(task["node"]))
        procs = check_non_root_processes(container)
        check(any("blender" in p[1] for p in procs), f"no Blender running in {container}: {procs}")
        ids = compose("ps", "-q").stdout.split()
        t0 = time.monotonic()
        compose("stop", "-t", "20")
        took = time.monotonic() - t0
        codes = {c[:12]: docker("inspect", "--format", "{{.State.ExitCode}}", c).stdout.strip() for c in ids}
        check(all(code == "0" for code in codes.values()), f"exit codes after SIGTERM: {codes}")
        check(took < 20, f"stopping took {took:.1f} s: something waited for SIGKILL")
        logs = docker("logs", container).stdout
        check("SIGTERM received" in logs, f"{container} logged no SIGTERM:\n{logs[-2000:]}")
        leftover = run(["pgrep", "-f", "blender.*/opt/corral/demo.blend"], check_rc=False).stdout.strip()
        check(not leftover, f"Blender processes left: {leftover}")
        s.note = f"{len(ids)} containers exited 0 in {took:.1f} s, {container} was rendering"


def down():
    global started_compose
    with step("docker compose down -v leaves nothing behind") as s:
        compose("down", "-v", "--remove-orphans")
        started_compose = False
        label = f"label=com.docker.compose.project={PROJECT}"
        left = {
            "containers": docker("ps", "-aq", "--filter", label).stdout.split(),
            "networks": docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$").stdout.split()
            + docker("network", "ls", "-q", "--filter", label).stdout.split(),
            "volumes": docker("volume", "ls", "-q", "--filter", label).stdout.split(),
        }
        check(not any(left.values()), f"left behind: {left}")
        s.note = "no container, network or volume of the project"


PORT2 = 4001
BASE2 = f"http://localhost:{PORT2}"


def postgres_farm():
    """Two orchestrators on one PostgreSQL; the one that dispatches is killed mid-job."""
    global compose_cmd, compose_env, started_compose
    compose_cmd = compose_cmd + ["-f", os.path.join(REPO, "compose.postgres.yaml")]
    compose_env = dict(compose_env, CORRAL_DB_PASSWORD="e2e-" + os.urandom(6).hex(),
                       CORRAL_PORT2=str(PORT2))
    with step("PostgreSQL and two orchestrators: compose.postgres.yaml up") as s:
        started_compose = True
        compose("up", "-d", "--scale", f"node={NODES}")
        t = time.monotonic()
        for base in (BASE, BASE2):
            wait_for(f"{base}/readyz", lambda b=base: http("GET", "/readyz", base=b)[0] == 200, 120)
        wait_nodes_up(NODES, 120)
        s.note = f"both ready and {NODES} nodes up {time.monotonic() - t:.1f} s after up"
    with step("docker kill the dispatching orchestrator mid-job; the other finishes it") as s:
        def dispatcher():
            for base, service in ((BASE, "orchestrator"), (BASE2, "orchestrator-2")):
                status, _, body = http("GET", "/readyz", base=base)
                if status == 200 and body.get("dispatching"):
                    return base, service
            return None

        leader_base, leader = wait_for("an orchestrator that dispatches", dispatcher, 30)
        other = BASE2 if leader_base == BASE else BASE
        status, _, body = http("POST", "/api/v1/jobs", {"from": 1, "to": 40, "chunk_size": 4}, base=other)
        check(status == 202, f"POST /api/v1/jobs to {other} answered {status}: {body}")
        job_id = body["id"]

        def running():
            status, _, j = http("GET", f"/api/v1/jobs/{job_id}", base=other)
            return status == 200 and j["frames_done"] >= 4

        wait_for("frames of the job rendered", running, 180, interval=0.3)
        container = compose("ps", "-q", leader).stdout.split()[0]
        docker("kill", container)
        t0 = time.monotonic()
        wait_for(f"{other} to dispatch", lambda: http("GET", "/readyz", base=other)[2].get("dispatching"), 60)
        took_over = time.monotonic() - t0

        def done():
            status, _, j = http("GET", f"/api/v1/jobs/{job_id}", base=other)
            check(status == 200, f"{other} answered {status}")
            check(j["state"] not in ("failed", "cancelled"), f"job ended {j['state']}: {j.get('failure')}")
            return j["state"] == "completed"

        wait_for(f"job {job_id} to complete on {other}", done, 300)
        frames_on_host(job_id, 1, 40)
        s.note = (f"killed {leader}; {other} dispatched {took_over:.1f} s later and finished the job "
                  f"{time.monotonic() - t0:.1f} s after the kill")
    down()


# ---------------------------------------------------------------- a remote farm (issue 9)
#
# compose.remote.yaml: an orchestrator and three nodes that share no folder or volume, tokens
# on. The client is the release `corral` on this machine; scenes travel as uploads, frames
# come back through the orchestrator.

REMOTE_PROJECT = "corral-e2e-remote"
REMOTE_NETWORK = "corral-remote-farm"
REMOTE_PORT = 4002
REMOTE_FRAMES = 12
REMOTE_BATCH = 3
# Enough samples that a task of REMOTE_BATCH frames renders for about two seconds on a
# node (128 samples took 0.56 s for 3 frames on a warm node here, and a kill 0.3 s into
# such a task could land after it ended): long enough to kill it mid-task.
REMOTE_SAMPLES = 512
ORCH_DATA = "/var/lib/corral/orchestrator"
# The scene of the orchestrator-restart step carries this much incompressible ballast, and
# the client reaches the farm through a proxy that passes UPLOAD_RATE bytes/s upwards: the
# upload takes about 11 s, longer than the orchestrator's 5 s shutdown grace.
BALLAST_MIB = 32
UPLOAD_RATE = 3 << 20
TOKEN_RE = re.compile(r"corral_[A-Za-z0-9_-]{43}")

remote = {}  # compose command and environment, tokens, folders, while the remote farm is up


def farm_access(token, host="127.0.0.1", port=REMOTE_PORT):
    """How a client on this machine (or, with host `orchestrator` and port 4000, a node in
    the farm's network) reaches the remote farm with `token`: `corral` arguments and the
    node's environment. The farm serves HTTPS (tokens are on, off loopback), so both are
    its join string, `corral://HOST:PORT?token=TOKEN&fp=FINGERPRINT`, which pins the
    certificate the orchestrator made on its first start."""
    query = (f"token={token}&" if token else "") + f"fp={remote['fp']}"
    join = f"corral://{host}:{port}?{query}"
    return ["--server", join], {"CORRAL_ORCHESTRATOR": join, "CORRAL_JOIN_TOKEN": token or ""}


def https_request(container, request):
    """Sends a raw HTTP/1.1 `request` over TLS to port 3000 of `container` (a node, which
    serves HTTPS with a certificate of its own), from this machine through the farm's
    network; returns (status code, body). The node's certificate is not checked here: the
    test plays a client that has no pin (or an attacker), and only the node's answer
    matters."""
    ip = docker("inspect", "-f", "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % REMOTE_NETWORK,
                container).stdout.strip()
    check(ip, f"container {container} has no address on {REMOTE_NETWORK}")
    import ssl
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((ip, 3000), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=ip) as tls:
        tls.sendall(request.encode())
        chunks = []
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks).decode(errors="replace")
    head, _, body = answer.replace("\r\n", "\n").partition("\n\n")
    parts = head.split()
    return (parts[1] if len(parts) > 1 else ""), body


def corral_bin():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target, "release", "corral")


def client_env():
    """This machine's environment without the CORRAL_ variables a developer may have set;
    the copies `corral submit` remembers go to the test's own cache folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["XDG_CACHE_HOME"] = os.path.join(remote["dir"], "cache")
    return env


def corral(*args, token=None, port=REMOTE_PORT, timeout=300):
    """`corral ARGS --server ... --token ...` on this machine: (exit status, stdout, stderr)."""
    access, _ = farm_access(token, port=port)
    res = subprocess.run([corral_bin()] + list(args) + access, cwd=remote["dir"], env=client_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return res.returncode, res.stdout, res.stderr


def corral_json(*args):
    rc, out, err = corral(*args, "--json", token=remote["client"])
    check(rc == 0, f"`corral {' '.join(args)} --json` exited {rc}: {err.strip()}")
    return json.loads(out)


def remote_compose(*args, check_rc=True, timeout=600, env=None):
    return run(remote["compose"] + list(args), check_rc=check_rc, env=dict(remote["env"], **(env or {})),
               timeout=timeout)


def orchestrator_container():
    ids = remote_compose("ps", "-q", "orchestrator").stdout.split()
    check(ids, "the remote farm's orchestrator container is not there")
    return ids[0]


def orch_exec(*args, check_rc=True):
    """A command in the orchestrator's container as its user (the owner of its data)."""
    return docker("exec", "-u", "10001:10001", orchestrator_container(), *args, check_rc=check_rc)


def make_token(kind, name):
    """`corral token create KIND` in the orchestrator's container: (id, token)."""
    res = subprocess.run(["docker", "exec", "-u", "10001:10001", orchestrator_container(), "corral", "token",
                          "create", kind, "--name", name, "--data", ORCH_DATA],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    check(res.returncode == 0, f"corral token create {kind} exited {res.returncode}: {res.stderr}")
    token = TOKEN_RE.search(res.stdout)
    made = re.search(r"token (\d+) made", res.stderr)
    check(token and made, f"no token in the answer of corral token create: {res.stdout!r} {res.stderr!r}")
    return made.group(1), token.group(0)


def blob_files():
    """The files in the orchestrator's blob store (partial uploads included)."""
    out = orch_exec("find", f"{ORCH_DATA}/blobs", "-type", "f", check_rc=False).stdout
    return [line for line in out.splitlines() if line.startswith("/")]


def remote_nodes_up():
    return [n for n in corral_json("nodes") if n["state"] == "up"]


def remote_wait_nodes(count, timeout=120):
    return wait_for(f"{count} remote nodes up", lambda: len(remote_nodes_up()) >= count, timeout, interval=1)


def make_remote_scene(project, elsewhere, ballast=0):
    args = ["blender", "-b", "--factory-startup", "--python",
            os.path.join(REPO, "tests", "docker", "make_remote_scene.py"), "--",
            project, elsewhere, "--frames", str(REMOTE_FRAMES), "--samples", str(REMOTE_SAMPLES)]
    if ballast:
        args += ["--ballast", str(ballast)]
    run(args, timeout=300)
    return os.path.join(project, "shot.blend")


def pixels(path):
    """A PNG's decoded pixels (RGBA, 8 bits), by FFmpeg: the same image in another encoding
    compares equal."""
    res = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgba", "-"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    check(res.returncode == 0 and res.stdout, f"ffmpeg cannot decode {path}: {res.stderr.decode(errors='replace')}")
    return res.stdout


def same_frames(folder, reference):
    """Every frame of the scene is in `folder` with the pixels of the local render."""
    differ = []
    for f in range(1, REMOTE_FRAMES + 1):
        name = f"frame_{f:04d}.png"
        got = os.path.join(folder, name)
        check(os.path.isfile(got), f"frame {f} did not arrive in {folder} (there: {sorted(os.listdir(folder))})")
        if pixels(got) != pixels(os.path.join(reference, name)):
            differ.append(f)
    check(not differ, f"frames {differ} in {folder} differ from the local `blender -b` render")


def uploaded(stderr):
    """(bytes text, blobs) from corral submit's `Uploaded 1.2 MiB in 3 blobs` line."""
    m = re.search(r"Uploaded (\d+(?:\.\d+)? \w+) in (\d+) blobs?", stderr)
    check(m, f"corral submit printed no `Uploaded ...` line:\n{stderr[-2000:]}")
    return m.group(1), int(m.group(2))


def submit_remote(scene, download, port=REMOTE_PORT):
    """Starts `corral submit SCENE --upload --wait --download DIR`; returns the process."""
    access, _ = farm_access(remote["client"], port=port)
    args = [corral_bin(), "submit", scene, "--upload", "--wait", "--download", download,
            "--batch-size", str(REMOTE_BATCH)] + access
    return subprocess.Popen(args, cwd=remote["dir"], env=client_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, what, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise Failed(f"{what} did not end in {timeout} s:\n{err[-3000:]}")
    check(proc.returncode == 0, f"{what} exited {proc.returncode}:\n{out[-2000:]}\n{err[-3000:]}")
    return out, err


def remote_running_task():
    """A task of the newest job that has rendered on a node for a moment: (job id, task)."""
    jobs = corral_json("jobs")
    if not jobs:
        return None
    job_id = jobs[0]["id"]
    for t in corral_json("status", job_id)["tasks"]:
        if t["state"] == "running" and t["node"] and t["started_at"] \
                and time.time() - parse_time(t["started_at"]) >= 0.3:
            return job_id, t
    return None


def post_job_to_node(node, bearer=None):
    """`POST /job` straight to a node, from outside its orchestrator: the status code."""
    host = node["url"].split("//", 1)[1].rsplit(":", 1)[0]
    body = '{"from": 1, "to": 2}'
    auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
    request = (f"POST /job HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
    code, _ = https_request(container_of(node), request)
    return code


def node_jobs(container):
    """The jobs a node holds (`GET /jobs` under the node's own secret, read from its
    container)."""
    secret = docker("exec", "-u", "10001:10001", container, "cat", "/var/lib/corral/node/node-secret").stdout.strip()
    check(secret, f"no node secret in {container}")
    code, body = https_request(container, f"GET /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
                                          "Connection: close\r\n\r\n")
    check(code == "200", f"GET /jobs on {container} with its secret answered {code}:\n{body[:500]}")
    return json.loads(body)


class ThrottlingProxy:
    """A TCP proxy from 127.0.0.1:PORT (picked by the system) to the farm's published port that
    passes at most `rate` bytes/s from client to server. It counts the bytes sent upwards and
    notes each connection the server ended while the client was still sending, with how much
    that connection had carried. TLS-agnostic: it only moves bytes."""

    def __init__(self, upstream_port, rate):
        self.upstream_port = upstream_port
        self.rate = rate
        self.lock = threading.Lock()
        self.up_bytes = 0
        self.next_send = 0.0
        self.cut = []  # bytes sent upwards on each connection the server ended first
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.listener.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            server.settimeout(None)
        except OSError:
            client.close()
            return
        conn = {"up": 0, "client_done": False}
        down = threading.Thread(target=self._down, args=(server, client, conn), daemon=True)
        down.start()
        try:
            while True:
                data = client.recv(16384)
                if not data:
                    break
                with self.lock:
                    now = time.monotonic()
                    self.next_send = max(self.next_send, now) + len(data) / self.rate
                    wait = self.next_send - now - len(data) / self.rate
                if wait > 0:
                    time.sleep(wait)
                server.sendall(data)
                conn["up"] += len(data)
                with self.lock:
                    self.up_bytes += len(data)
        except OSError:
            pass
        conn["client_done"] = True
        for s in (server, client):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        down.join(10)
        client.close()
        server.close()

    def _down(self, server, client, conn):
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        if not conn["client_done"]:
            with self.lock:
                self.cut.append(conn["up"])
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def remote_cleanup():
    if remote.get("started"):
        remote["started"] = False
        log("cleaning up the remote farm: docker compose down -v --remove-orphans")
        try:
            remote_compose("down", "-v", "--remove-orphans", "-t", "5", check_rc=False, timeout=180)
        except Exception as e:  # cleanup must go on
            log(f"cleanup: compose down failed: {e}")
    for name in remote.get("intruders", []):
        docker("rm", "-f", name, check_rc=False)
    if remote.get("elsewhere"):
        shutil.rmtree(remote["elsewhere"], ignore_errors=True)


def remote_farm():
    """Issue 9 end to end: a farm sharing no volume, tokens on, scenes uploaded from here."""
    remote["dir"] = os.path.join(work_dir, "remote")
    os.makedirs(remote["dir"])
    # Outside the scene's folder, and outside the test's folder too.
    remote["elsewhere"] = tempfile.mkdtemp(prefix="corral-e2e-elsewhere-")
    remote["compose"] = compose_cmd[:compose_cmd.index("-p")] + ["-p", REMOTE_PROJECT, "-f",
                                                                 os.path.join(REPO, "compose.remote.yaml")]
    remote["env"] = dict(os.environ, CORRAL_PORT=str(REMOTE_PORT), CORRAL_BIND="127.0.0.1", CORRAL_JOIN_TOKEN="")
    remote["intruders"] = []
    project = os.path.join(remote["dir"], "project")
    reference = os.path.join(remote["dir"], "reference")

    with step("remote farm: a scene with a relative texture, an absolute one and a library; "
              "local blender -b render") as s:
        scene = make_remote_scene(project, remote["elsewhere"])
        t = time.monotonic()
        run(["blender", "-b", scene, "-o", os.path.join(reference, "frame_####"), "-a"], timeout=300)
        frames = sorted(os.listdir(reference))
        check(len(frames) == REMOTE_FRAMES, f"the local render made {frames}")
        s.note = f"{REMOTE_FRAMES} reference frames in {time.monotonic() - t:.1f} s"

    with step("remote farm: compose.remote.yaml up (tokens on, no shared volume), 3 nodes join") as s:
        remote_compose("down", "-v", "--remove-orphans", "-t", "5", check_rc=False)
        remote["started"] = True
        remote_compose("up", "-d", "orchestrator")
        t0 = time.monotonic()
        wait_for("the remote orchestrator listening",
                 lambda: "listening on" in docker("logs", orchestrator_container()).stdout, 60)
        logs = docker("logs", orchestrator_container()).stdout
        check("This farm requires tokens" in logs, f"the remote orchestrator does not require tokens:\n{logs[-2000:]}")
        check("listening on https://" in logs, f"the remote orchestrator does not serve HTTPS:\n{logs[-2000:]}")
        fp = re.search(r"certificate fingerprint \(SHA-256\): ([0-9a-f]{64})", logs)
        check(fp, f"the remote orchestrator printed no certificate fingerprint:\n{logs[-2000:]}")
        remote["fp"] = fp.group(1)
        _, remote["client"] = make_token("client", "e2e-client")
        _, join = make_token("join", "e2e-join")
        remote["revoked_client_id"], remote["revoked_client"] = make_token("client", "e2e-revoked")
        remote["revoked_join_id"], remote["revoked_join"] = make_token("join", "e2e-revoked-join")
        for kind in ("client", "join"):
            orch_exec("corral", "token", "revoke", remote[f"revoked_{kind}_id"], "--data", ORCH_DATA)
        _, node_env = farm_access(join, host="orchestrator", port=4000)
        remote["env"].update(node_env)
        remote_compose("up", "-d", "--scale", f"node={NODES}")
        remote_wait_nodes(NODES)
        # Joined with a token off loopback, each node serves HTTPS with its own certificate,
        # which the orchestrator pins.
        plain = [n["url"] for n in corral_json("nodes") if not n["url"].startswith("https://")]
        check(not plain, f"nodes registered without TLS: {plain}")
        # Each container has at most its own named volume: no bind mount, nothing shared.
        mounts = {}
        for c in remote_compose("ps", "-q").stdout.split():
            for m in json.loads(docker("inspect", "--format", "{{json .Mounts}}", c).stdout):
                check(m["Type"] == "volume", f"container {c[:12]} has a {m['Type']} mount of {m.get('Source')}")
                check(m["Name"] not in mounts, f"containers {mounts.get(m['Name'])} and {c[:12]} share volume {m['Name']}")
                mounts[m["Name"]] = c[:12]
        s.note = f"{NODES} nodes joined {time.monotonic() - t0:.1f} s after up; volumes: {len(mounts)}, none shared"

    with step("remote farm: no token, a revoked one: client, would-be node, POST /job refused") as s:
        # Would-be nodes, one without a token and one with a revoked join token; they try
        # to register at once and every 5 s.
        intruders = []  # (container, the status its registration must get)
        for name, token, code in (("no-token", None, 401), ("revoked", remote["revoked_join"], 403)):
            cname = f"{REMOTE_PROJECT}-intruder-{name}"
            remote["intruders"].append(cname)
            intruders.append((cname, code))
            docker("rm", "-f", cname, check_rc=False)
            _, intruder_env = farm_access(token, host="orchestrator", port=4000)
            env = ["-e", f"CORRAL_ORCHESTRATOR={intruder_env['CORRAL_ORCHESTRATOR']}"]
            docker("run", "-d", "--name", cname, "--network", REMOTE_NETWORK, *env, NODE_IMAGE)
        blobs_before = blob_files()
        # Clients: a read and an upload, with no token and with a revoked one.
        for token, code, words in ((None, 401, "refused the call"), (remote["revoked_client"], 403, "refused the token")):
            rc, _, err = corral("jobs", token=token)
            check(rc == 1 and words in err, f"`corral jobs` with token {token} ({code} expected) exited {rc}: {err}")
            rc, _, err = corral("submit", scene, "--upload", token=token, timeout=120)
            check(rc == 1 and words in err, f"`corral submit --upload` with token {token} exited {rc}: {err}")
        # A node takes no job from anyone but its orchestrator.
        node = remote_nodes_up()[0]
        for bearer in (None, remote["client"]):
            code = post_job_to_node(node, bearer)
            check(code in ("401", "403"), f"POST /job to {node['url']} with bearer {bearer} answered {code!r}")
        node_held = node_jobs(container_of(node))

        def refused(cname, code):
            logs = docker("logs", cname).stdout
            return f"answered {code}" in logs and logs

        for cname, code in intruders:
            logs = wait_for(f"{cname}'s registration refused with {code}", lambda c=cname, k=code: refused(c, k), 60)
            check("registered with the orchestrator" not in logs, f"{cname} registered:\n{logs[-2000:]}")
        for cname in remote["intruders"]:
            docker("rm", "-f", cname)
        remote["intruders"] = []
        nodes_now = corral_json("nodes")
        check(len(nodes_now) == NODES, f"the farm lists {len(nodes_now)} nodes: {nodes_now}")
        check(corral_json("jobs") == [], "a refused client left a job")
        check(blob_files() == blobs_before, f"a refused client left blobs: {blob_files()}")
        check(node_held == [], f"a refused POST /job left jobs on {node['url']}: {node_held}")
        s.note = "jobs/submit 401 and 403, 2 would-be nodes refused, POST /job to a node refused; nothing stored"

    with step(f"remote farm: corral submit --upload --wait, {REMOTE_FRAMES} frames back, pixels equal") as s:
        t = time.monotonic()
        _, err = finish(submit_remote(scene, os.path.join(remote["dir"], "first")), "the first corral submit")
        sent, blobs = uploaded(err)
        check(blobs >= 4, f"the first submit uploaded {blobs} blobs (shot, library, 2 textures expected)")
        same_frames(os.path.join(remote["dir"], "first"), reference)
        s.note = f"uploaded {sent} in {blobs} blobs; frames equal to the local render; {time.monotonic() - t:.1f} s"

    with step("remote farm: a second submit uploads 0 B; a node killed mid-job; frames equal") as s:
        blobs_before = blob_files()
        proc = submit_remote(scene, os.path.join(remote["dir"], "second"))
        try:
            job_id, task = wait_for("a task rendering on a remote node", remote_running_task, 120, interval=0.2)
            node = next(n for n in corral_json("nodes") if n["id"] == task["node"])
            container = container_of(node)
            docker("kill", container)
            log(f"killed {container} while it rendered frames {task['from']}-{task['to']} of job {job_id}")
        except BaseException:
            proc.kill()
            raise
        _, err = finish(proc, "the second corral submit")
        sent, blobs = uploaded(err)
        check((sent, blobs) == ("0 B", 0), f"the second submit uploaded {sent} in {blobs} blobs")
        check(blob_files() == blobs_before, "the second submit added blobs on the orchestrator")
        same_frames(os.path.join(remote["dir"], "second"), reference)
        t = next(t for t in corral_json("status", job_id)["tasks"] if t["id"] == task["id"])
        check(t["node"] != node["id"], f"the killed node's task was not re-run elsewhere: {brief(t)}")
        remote_compose("up", "-d", "--scale", f"node={NODES}")
        remote_wait_nodes(NODES)
        s.note = f"0 B in 0 blobs; frames {task['from']}-{task['to']} re-run after the kill"

    with step("remote farm: orchestrator restarted mid-upload; the upload resumes, frames equal") as s:
        big = make_remote_scene(os.path.join(remote["dir"], "project2"), remote["elsewhere"], ballast=BALLAST_MIB)
        proxy = ThrottlingProxy(REMOTE_PORT, UPLOAD_RATE)
        try:
            proc = submit_remote(big, os.path.join(remote["dir"], "third"), port=proxy.port)
            try:
                wait_for("a quarter of the ballast uploaded", lambda: proxy.up_bytes >= (BALLAST_MIB << 20) // 4,
                         120, interval=0.1)
                at = proxy.up_bytes
                t0 = time.monotonic()
                remote_compose("restart", "orchestrator")
                restart_secs = time.monotonic() - t0
            except BaseException:
                proc.kill()
                raise
            _, err = finish(proc, "the corral submit through the orchestrator's restart")
        finally:
            proxy.close()
        same_frames(os.path.join(remote["dir"], "third"), reference)
        ballast = BALLAST_MIB << 20
        cut = [n for n in proxy.cut if (1 << 20) < n < ballast]
        check(cut, f"no upload was cut by the restart (connections the server ended: {proxy.cut}); "
                   f"restart began after {at} bytes")
        check(proxy.up_bytes < ballast * 1.3, f"{proxy.up_bytes} bytes went up for a {ballast}-byte ballast: "
                                              "the upload started over instead of resuming")
        sent, blobs = uploaded(err)
        s.note = (f"restart at {at >> 20} MiB took {restart_secs:.1f} s, upload cut at {max(cut) >> 20} MiB "
                  f"and resumed ({proxy.up_bytes >> 20} MiB sent in all, {sent} in {blobs} blobs)")

    with step("remote farm: compose down -v leaves nothing behind") as s:
        remote_compose("down", "-v", "--remove-orphans")
        remote["started"] = False
        label = f"label=com.docker.compose.project={REMOTE_PROJECT}"
        left = {
            "containers": docker("ps", "-aq", "--filter", label).stdout.split()
            + docker("ps", "-aq", "--filter", f"name={REMOTE_PROJECT}-intruder").stdout.split(),
            "networks": docker("network", "ls", "-q", "--filter", f"name=^{REMOTE_NETWORK}$").stdout.split(),
            "volumes": docker("volume", "ls", "-q", "--filter", label).stdout.split(),
        }
        check(not any(left.values()), f"left behind: {left}")
        s.note = "no container, network or volume of the project"


def main():
    global work_dir, compose_cmd, compose_env
    t_start = time.monotonic()
    info = subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) \
        if shutil.which("docker") else None
    if info is None or info.returncode != 0:
        print("", flush=True)
        print("#" * 78)
        print("### docker-e2e: SKIPPED: no Docker engine answers (`docker info` failed);")
        print("### the Docker images and the compose farm were NOT tested.")
        print("#" * 78, flush=True)
        return 0
    if subprocess.run(["docker", "compose", "version"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        compose_cmd = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        compose_cmd = ["docker-compose"]
    else:
        log("FAILED: Docker answers but neither `docker compose` nor `docker-compose` is installed")
        return 1
    compose_cmd += ["-p", PROJECT, "-f", os.path.join(REPO, "compose.yaml")]
    os.makedirs(os.path.join(REPO, "target", "docker"), exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix="e2e-", dir=os.path.join(REPO, "target", "docker"))
    # The output folder does not exist yet: Docker creates it, as on a fresh clone.
    compose_env = dict(os.environ, CORRAL_OUTPUT_DIR=os.path.join(work_dir, "output"),
                       CORRAL_SCENES_DIR=os.path.join(work_dir, "scenes"), CORRAL_PORT=str(PORT),
                       CORRAL_BIND="127.0.0.1")
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    log(f"using `{' '.join(compose_cmd[:2] if compose_cmd[0] == 'docker' else compose_cmd[:1])}`, "
        f"project {PROJECT}, work folder {os.path.relpath(work_dir, REPO)}")

    failed = None
    try:
        # Whatever an earlier run that was SIGKILLed left of this project.
        compose("down", "-v", "--remove-orphans", "-t", "5", check_rc=False)
        with socket.socket() as sock:
            check(sock.connect_ex(("127.0.0.1", PORT)) != 0,
                  f"port {PORT} is in use on this machine: stop what listens there first")
        check(docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$").stdout.strip() == "",
              f"a network named {NETWORK} exists: is a Corral farm up? (docker compose down)")
        with socket.socket() as sock:
            check(sock.connect_ex(("127.0.0.1", REMOTE_PORT)) != 0,
                  f"port {REMOTE_PORT} is in use on this machine: stop what listens there first")
        build_images()
        static_checks()
        if os.environ.get("CORRAL_E2E_ONLY") != "remote":
            bring_up()
            first = tutorial_job()
            kill_node()
            partition_node()
            restart_orchestrator([first])
            sigterm_stop()
            down()
            postgres_farm()
        remote_farm()
    except Failed as e:
        failed = str(e)
    except subprocess.TimeoutExpired as e:
        failed = f"command timed out: {e}"
    except Exception as e:  # a bug here or an answer of an unexpected shape: still report
        import traceback

        traceback.print_exc()
        failed = f"{type(e).__name__}: {e}"
    if failed:
        log(f"FAILED: {failed}")
        if started_compose:
            log("--- last lines of the farm's logs")
            print(compose("logs", "--no-color", "--tail", "60", check_rc=False).stdout[-20000:], flush=True)
            try:
                log(f"nodes: {json.dumps(nodes(), indent=1)}")
            except Exception:
                pass
        if remote.get("started"):
            log("--- last lines of the remote farm's logs")
            print(remote_compose("logs", "--no-color", "--tail", "60", check_rc=False).stdout[-20000:], flush=True)
    cleanup()

    print("", flush=True)
    log("image sizes:")
    for image, mb in image_sizes():
        log(f"  {image:<30} {mb:8.0f} MB")
    log("steps:")
    for name, secs, note in steps:
        log(f"  {secs:7.1f} s  {name}{'  [' + note + ']' if note else ''}")
    log(f"total {time.monotonic() - t_start:.0f} s")
    passed = sum(1 for s in steps if s[2] != "FAILED")
    print(f"docker-e2e: {passed} passed, {0 if not failed else 1} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
