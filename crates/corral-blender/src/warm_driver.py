"""Corral's warm-worker driver: keeps one Blender process ready between renders.

A Corral render node writes this file into its data folder and starts, for each slot,

    blender -b -noaudio -Y --python warm-driver.py -- --corral-fd 3

It is driven over file descriptor 3, a socket the node holds, never over stdout and
stderr, which stay Blender's log (a scene cannot forge a message by printing). Messages
both ways are a 4-byte big-endian length followed by that many bytes of UTF-8 JSON.
Paths travel as the hex of their bytes, so any file name survives the trip.

    node -> driver  {"type": "render", "task": T, "scene_hex": ..., "scene_key": K,
                     "engine": "CYCLES", "format": null or "PNG", "threads": N,
                     "from": A, "to": B, "output_hex": ...}
    driver -> node  {"type": "hello", "pid": P, "version": "3.4.1"}      once, at start
                    {"type": "frame", "task": T, "frame": F}             may F start?
    node -> driver  {"type": "go", "task": T} or {"type": "stop", "task": T}
    driver -> node  {"type": "saved", "task": T, "frame": F, "path_hex": ...}
                                                                          a frame's file
                                                                          is written
                    {"type": "done", "task": T, "ok": true/false, "error": null or "..."}

The range is rendered frame by frame, each frame a one-frame `render(animation=True)`
(what `-a` runs for it, so frames are those of a cold render), and the driver asks the
node before each frame: a node that was told to end the render earlier (its range was
truncated) answers `stop`, and the task ends there, done and well.

After "done" the driver prints `corral-task-end T` on stdout and on stderr, so the node
knows it has every line Blender printed for the task.

The scene stays loaded between tasks when the next task names the same file with the same
`scene_key` (the node derives it from the file's device, inode, size and times); anything
else is opened fresh. Cycles keeps its render data between renders of the loaded scene
(`use_persistent_data`). The render settings a task changes are put back after it; a task
that changed the image format leaves the scene to be reopened, since setting a format
also changes colour settings that cannot be restored one by one.
"""

import ctypes
import json
import os
import socket
import struct
import sys
import traceback

import bpy

MAX_MESSAGE = 1 << 20


class Channel:
    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)

    def send(self, message):
        body = json.dumps(message).encode("utf-8")
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def recv(self):
        header = self._read(4)
        if header is None:
            return None
        (length,) = struct.unpack(">I", header)
        if length > MAX_MESSAGE:
            raise ValueError(f"message of {length} bytes")
        body = self._read(length)
        if body is None:
            return None
        return json.loads(body.decode("utf-8"))

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data


def flush_output():
    """Flushes Python's and C's buffered output, so every line Blender printed for a task
    is in the pipe before the end marker."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass


def error_text(exc):
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("Error: "):
        text = text[len("Error: "):]
    return " ".join(text.split())


# The settings a task sets, put back after it in this order (frame_start before frame_end:
# Blender moves the end when the start passes it, and the saved values are in order).
RENDER_SETTINGS = ("engine", "filepath", "threads_mode", "threads")
SCENE_SETTINGS = ("frame_start", "frame_end", "frame_step", "frame_current")


class Worker:
    def __init__(self, channel):
        self.channel = channel
        self.task = None
        self.loaded_key = None
        self.dirty = False

    def may_render(self, task, frame):
        """Asks the node whether to render `frame` of `task`."""
        self.channel.send({"type": "frame", "task": task, "frame": frame})
        answer = self.channel.recv()
        if answer is None:
            raise ConnectionError("the node closed the channel")
        if answer.get("task") != task or answer.get("type") not in ("go", "stop"):
            raise ValueError(f"an answer that is not go or stop for {task}: {answer!r}")
        return answer["type"] == "go"

    def on_render_write(self, scene):
        # Called once the frame's file is completely written.
        if self.task is not None:
            path = bpy.path.abspath(scene.render.frame_path(frame=scene.frame_current))
            self.channel.send({
                "type": "saved",
                "task": self.task,
                "frame": scene.frame_current,
                "path_hex": os.fsencode(path).hex(),
            })

    def load(self, message):
        key = message.get("scene_key")
        if key is not None and key == self.loaded_key and not self.dirty:
            return
        self.loaded_key = None
        path = os.fsdecode(bytes.fromhex(message["scene_hex"]))
        # load_ui as a cold `blender -b FILE` does (the file's own active scene);
        # use_scripts off: Python stored in a scene never runs in a worker that outlives it.
        bpy.ops.wm.open_mainfile(filepath=path, load_ui=True, use_scripts=False)
        self.loaded_key = key
        self.dirty = False

    def render(self, message):
        task = message["task"]
        error = None
        try:
            self.load(message)
            scene = bpy.context.scene
            render = scene.render
            saved_render = {name: getattr(render, name) for name in RENDER_SETTINGS}
            saved_scene = {name: getattr(scene, name) for name in SCENE_SETTINGS}
            try:
                # What a cold `blender -b FILE -o OUT -E ENGINE [-F FORMAT] -s A -e B -j 1
                # -t N -a` sets, in the same places.
                render.engine = message["engine"]
                if message.get("format"):
                    self.dirty = True
                    render.image_settings.file_format = message["format"]
                if message["threads"] > 0:
                    render.threads_mode = "FIXED"
                    render.threads = message["threads"]
                scene.frame_step = 1
                render.filepath = os.fsdecode(bytes.fromhex(message["output_hex"]))
                render.use_persistent_data = True
                self.task = task
                for frame in range(message["from"], message["to"] + 1):
                    if not self.may_render(task, frame):
                        break
                    # The start first: Blender moves the end up when the start passes it.
                    scene.frame_start = frame
                    scene.frame_end = frame
                    result = bpy.ops.render.render(animation=True)
                    if "FINISHED" not in result:
                        error = f"Blender did not finish the render ({', '.join(sorted(result))})"
                        break
            finally:
                self.task = None
                try:
                    for name, value in saved_render.items():
                        setattr(render, name, value)
                    for name, value in saved_scene.items():
                        setattr(scene, name, value)
                    # Evaluate the restored frame now, while the task's files are still
                    # there: left tagged, the scene would be evaluated when the next task
                    # opens another file, after the node removed this task's workspace,
                    # and a modifier reading a file (a mesh cache) would print an error
                    # into the next task's log.
                    bpy.context.view_layer.update()
                except Exception:
                    self.dirty = True
        except Exception as exc:
            error = error_text(exc)
            # Whatever state a failure left the file in, open it afresh next time.
            self.loaded_key = None
        flush_output()
        self.channel.send({"type": "done", "task": task, "ok": error is None, "error": error})
        print(f"corral-task-end {task}", flush=True)
        print(f"corral-task-end {task}", file=sys.stderr, flush=True)


WORKER = None


# Handlers survive the loading of another file only when marked persistent.
@bpy.app.handlers.persistent
def on_render_write(scene, *_):
    WORKER.on_render_write(scene)


def main():
    global WORKER
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    fd = int(argv[argv.index("--corral-fd") + 1])
    channel = Channel(fd)
    worker = WORKER = Worker(channel)
    bpy.app.handlers.render_write.append(on_render_write)
    channel.send({"type": "hello", "pid": os.getpid(), "version": bpy.app.version_string})
    while True:
        message = channel.recv()
        if message is None:
            break
        if message.get("type") == "render":
            worker.render(message)


try:
    main()
except Exception:
    traceback.print_exc()
    flush_output()
    # A broken channel or driver: leave, and let the node start a fresh worker.
    os._exit(1)
