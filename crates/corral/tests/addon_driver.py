"""Drives the Corral add-on inside real Blender for crates/corral/tests/addon.rs.

Run as: blender -b --factory-startup SCENE.blend --python addon_driver.py -- CONFIG.json

It installs the add-on from its zip (as an artist would, from the preferences), enables it,
sets the panel's properties and runs `bpy.ops.corral.submit()`: the error cases the config
asks for, then (if asked) one real submit whose progress it follows by calling the
add-on's polling step itself (Blender runs no timers while a background script runs). It
prints one line, `CORRAL_ADDON_RESULT {json}`, for the test to check; the test, not this
script, decides what is right.
"""

import http.server
import json
import sys
import threading
import time

import bpy

config = json.load(open(sys.argv[sys.argv.index("--") + 1]))
result = {"errors": {}, "fake_auth": []}


def run_submit():
    """Runs the operator as a button press would; returns (result set, error text)."""
    try:
        return sorted(bpy.ops.corral.submit()), ""
    except RuntimeError as e:
        # An operator that reports an ERROR raises this when called from Python; its text
        # is the report.
        return ["CANCELLED"], str(e)


class FakeFarm(http.server.BaseHTTPRequestHandler):
    """A farm that refuses in ways the real one cannot be made to: a bad token, and a
    problem body naming a field."""

    def _answer(self, status, body, kind="application/json"):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        result["fake_auth"].append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != "Bearer good":
            return self._answer(401, {"type": "about:blank", "title": "Unauthorized",
                                      "status": 401, "detail": "a valid token is required"},
                                "application/problem+json")
        self._answer(200, {"folder": "/farm/scenes", "scenes": []})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if self.path.startswith("/api/v1/local-farm/scenes?"):
            return self._answer(200, {"scene": "uploads/shot.blend", "bytes": length})
        self._answer(400, {"type": "/problems/invalid-field", "title": "Invalid field",
                           "status": 400, "detail": "must be at most 100000",
                           "field": "chunk_size"}, "application/problem+json")

    def log_message(self, *args):
        pass


def main():
    bpy.ops.preferences.addon_install(filepath=config["zip"])
    bpy.ops.preferences.addon_enable(module="corral_submit")
    import corral_submit
    from corral_submit import submit as submitting

    prefs = bpy.context.preferences.addons["corral_submit"].preferences
    scene = bpy.context.scene
    settings = scene.corral
    result["defaults"] = {
        "farm_url": prefs.farm_url,
        "use_scene_range": settings.use_scene_range,
        "batch_size": settings.batch_size,
        "submit_anyway": settings.submit_anyway,
    }
    result["bl_info_blender"] = list(corral_submit.bl_info["blender"])
    result["before"] = {"filepath": bpy.data.filepath, "is_dirty": bpy.data.is_dirty}

    def error_case(name, **changes):
        saved = {}
        for key, value in changes.items():
            target = prefs if hasattr(prefs, key) else settings
            saved[(target, key)] = getattr(target, key)
            setattr(target, key, value)
        result["errors"][name] = run_submit()
        for (target, key), value in saved.items():
            setattr(target, key, value)

    if config.get("errors"):
        error_case("range", use_scene_range=False, frame_start=5, frame_end=2)
        error_case("scheme", farm_url="ftp://127.0.0.1:4000")
        error_case("unreachable", farm_url=config["unreachable"])
        # An image whose file is gone blocks the submit, unless the artist says otherwise
        # (then the next problem shows: here, the unreachable farm).
        image = bpy.data.images.new("wood", 4, 4)
        image.source = "FILE"
        image.filepath = "//textures/wood-that-is-not-there.png"
        error_case("missing", farm_url=config["unreachable"])
        error_case("missing_anyway", farm_url=config["unreachable"], submit_anyway=True)
        bpy.data.images.remove(image)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeFarm)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        fake = "http://127.0.0.1:%d" % server.server_address[1]
        error_case("token", farm_url=fake, token="wrong")
        error_case("field", farm_url=fake, token="good")
        server.shutdown()
        # Nothing was submitted, so there is nothing to follow.
        result["followed_after_errors"] = submitting.followed()[0] is not None

    submit = config.get("submit")
    if submit and config.get("shared_errors"):
        # A farm that takes no uploads needs the shared folder.
        error_case("no_shared_folder", farm_url=submit["farm"], shared_folder="",
                   corral_executable="")
        error_case("shared_folder_gone", farm_url=submit["farm"],
                   shared_folder=submit["shared_folder"] + "/not-there")
    if submit and config.get("upload_errors"):
        # Without a shared folder the add-on runs `corral submit --upload`: a program that
        # is not there, and one that fails, each end in one line.
        for name, program in config["upload_errors"].items():
            # The token reaches `corral` in CORRAL_TOKEN (the failing one prints it).
            error_case(name, farm_url=submit["farm"], shared_folder="",
                       corral_executable=program, token="corral_test_token")
    if submit:
        prefs.farm_url = submit["farm"]
        prefs.corral_executable = submit.get("corral", "")
        prefs.token = submit.get("token", "")
        prefs.shared_folder = submit.get("shared_folder", "")
        settings.use_scene_range = False
        settings.frame_start, settings.frame_end = submit["frames"]
        settings.batch_size = submit["batch_size"]
        settings.priority = submit["priority"]
        # An unsaved change: the farm must render the scene as it is now, not as saved.
        scene.render.resolution_x = submit["resolution_x"]
        result["submit"] = run_submit()
        job, farm, _ = submitting.followed()
        result["job_id"] = job["id"] if job else None
        result["dashboard_url"] = farm.dashboard_url(job["id"]) if job else None
        deadline = time.monotonic() + submit["timeout"]
        polls = 0
        while time.monotonic() < deadline and submitting.poll_once():
            polls += 1
            time.sleep(0.5)
        job, _, note = submitting.followed()
        result["polls"] = polls
        # Without its tasks' log tails, so a failing assertion prints something readable.
        result["job"] = {k: v for k, v in job.items() if k != "tasks"} if job else None
        result["note"] = note
        result["progress_text"] = corral_submit.progress_text(job) if job else ""

        # Background Blender draws no panels: draw this one on a layout that records what
        # it is asked to show, and checks every property it names exists.
        layout = RecordingLayout()
        corral_submit.RENDER_PT_corral.draw(type("Panel", (), {"layout": layout})(),
                                            bpy.context)
        result["panel"] = layout.shown
        # The dashboard link, opened through the browser the test put in $BROWSER.
        result["open_job"] = sorted(bpy.ops.corral.open_job())

    result["after"] = {"filepath": bpy.data.filepath, "is_dirty": bpy.data.is_dirty}


class RecordingLayout:
    """Stands in for a panel's layout: records labels, properties and operator buttons."""

    def __init__(self, shown=None):
        self.shown = shown if shown is not None else []
        self.use_property_split = self.use_property_decorate = self.enabled = False

    def prop(self, data, name, **_):
        if not hasattr(data, name):
            raise AttributeError("the panel names a missing property %r" % name)
        self.shown.append("prop:" + name)

    def label(self, text="", **_):
        self.shown.append("label:" + text)

    def operator(self, idname, **_):
        self.shown.append("operator:" + idname)

    def column(self, **_):
        return RecordingLayout(self.shown)

    box = row = column


main()
print("CORRAL_ADDON_RESULT " + json.dumps(result), flush=True)
