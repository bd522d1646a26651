"""What the Submit button does, and the job it follows afterwards.

Order matters: everything that can be checked here (the inputs, missing files) is checked
before the farm is asked anything, and the farm is asked (is it there, does it take the
token, does it take uploads) before a copy of the scene is written, so a refused submit
leaves nothing behind. The artist's open file is never saved: the farm gets a copy written
with `save_as_mainfile(copy=True)`, which leaves `bpy.data.filepath` and the unsaved-changes
flag as they were.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import bpy

from . import farm as farm_api

# The farm's bounds (crates/corral-core: frames, chunk sizes, priorities, frame rates).
MAX_FRAME = 1048574
MAX_BATCH = 100000
PRIORITY_RANGE = (-1000, 1000)
FPS_RANGE = (1.0, 240.0)
ENGINES = ("CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")
# Sub-folder of a shared folder the copies are written to.
SHARED_SUBFOLDER = "corral"
# Seconds between two polls of a submitted job's progress.
POLL_EVERY = 2.0
# How many missing files an error names before it says "and N more".
NAMED_MISSING = 3
# Longest `corral submit --upload` may take (Blender lists the files, then they are hashed
# and uploaded); Blender's window waits for it.
CORRAL_SUBMIT_TIMEOUT = 600.0


class SubmitError(Exception):
    """A submit refused here, before or while talking to the farm; one line for the artist."""


def preferences(context):
    return context.preferences.addons[__package__].preferences


def frame_range(scene, settings):
    """The frames to render: the scene's own, or the panel's start and end, checked."""
    if settings.use_scene_range:
        start, end = scene.frame_start, scene.frame_end
    else:
        start, end = settings.frame_start, settings.frame_end
    if start > end:
        raise SubmitError("Start frame %d is after end frame %d" % (start, end))
    if start < 0 or end > MAX_FRAME:
        raise SubmitError("Frames must be between 0 and %d (got %d-%d)" % (MAX_FRAME, start, end))
    return start, end


def check_inputs(settings):
    if not 0 <= settings.batch_size <= MAX_BATCH:
        raise SubmitError(
            "Batch size must be between 0 (the farm sizes tasks) and %d" % MAX_BATCH)
    if not PRIORITY_RANGE[0] <= settings.priority <= PRIORITY_RANGE[1]:
        raise SubmitError("Priority must be between %d and %d" % PRIORITY_RANGE)


def _udim_paths(image, path):
    """The files of a tiled (UDIM) image: one per tile."""
    if "<UDIM>" not in path:
        return [path]
    return [path.replace("<UDIM>", str(tile.number)) for tile in image.tiles]


def missing_files():
    """External files the scene uses that do not exist on this machine (unpacked images,
    movie clips, sounds, linked libraries), as the paths the scene names them by."""
    missing = []

    def check(datablock, paths):
        for path in paths:
            absolute = bpy.path.abspath(path, library=datablock.library)
            if not os.path.exists(absolute):
                missing.append(path)

    for image in bpy.data.images:
        if image.packed_file or not image.filepath or image.source not in (
                "FILE", "SEQUENCE", "MOVIE", "TILED"):
            continue
        check(image, _udim_paths(image, image.filepath))
    for clip in bpy.data.movieclips:
        if clip.filepath:
            check(clip, [clip.filepath])
    for sound in bpy.data.sounds:
        if not sound.packed_file and sound.filepath:
            check(sound, [sound.filepath])
    for library in bpy.data.libraries:
        if not library.packed_file and library.filepath:
            check(library, [library.filepath])
    return missing


def _missing_text(missing):
    named = ", ".join(missing[:NAMED_MISSING])
    more = len(missing) - NAMED_MISSING
    if more > 0:
        named += " and %d more" % more
    noun = "file is" if len(missing) == 1 else "files are"
    return "%d %s missing: %s (fix, or tick Submit anyway)" % (len(missing), noun, named)


def scene_name():
    """A plain file name for the copy: the open file's name, or `untitled.blend`."""
    stem = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "untitled"
    # Only characters every filesystem and the farm's name check take.
    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", stem).strip(" .") or "untitled"
    return stem[:100] + ".blend"


def save_copy(path):
    """Writes the current state (unsaved changes included) to `path`, leaving the open
    file, its path and its unsaved-changes flag alone. Relative paths are remapped to the
    copy's folder (`relative_remap`), so they name the same files from there."""
    try:
        result = bpy.ops.wm.save_as_mainfile(filepath=path, copy=True, relative_remap=True)
    except RuntimeError as e:
        raise SubmitError("Cannot write a copy of the scene to %s: %s"
                          % (path, " ".join(str(e).split()))) from None
    if "FINISHED" not in result or not os.path.isfile(path):
        raise SubmitError("Cannot write a copy of the scene to %s" % path)


def job_request(scene, settings, scene_path, start, end):
    """The body of `POST /api/v1/jobs` (crates/corral-core/src/orchestrator_api.rs)."""
    engine = scene.render.engine
    if engine not in ENGINES:
        raise SubmitError("The farm renders with Cycles, Eevee or Workbench; this scene "
                          "uses %s" % engine)
    job = {
        "scene": scene_path,
        "from": start,
        "to": end,
        "priority": settings.priority,
        "engine": engine,
    }
    if settings.batch_size > 0:
        job["chunk_size"] = settings.batch_size
    fps = scene.render.fps / (scene.render.fps_base or 1.0)
    if FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        job["fps"] = round(fps, 3)
    return job


def submit(context):
    """Checks, copies and submits the scene; returns the farm's job (a dict). Raises
    SubmitError or farm.FarmError, each one line for the artist."""
    scene = context.scene
    settings = scene.corral
    prefs = preferences(context)
    start, end = frame_range(scene, settings)
    check_inputs(settings)
    farm = farm_api.Farm(prefs.farm_url, prefs.token)
    if not settings.submit_anyway:
        missing = missing_files()
        if missing:
            raise SubmitError(_missing_text(missing))

    if farm.scenes_folder() is not None:
        # A `corral up` farm: upload the copy; nothing of it stays on this machine.
        folder = tempfile.mkdtemp(prefix="corral-submit-")
        try:
            # Named apart from the open file, so Blender's "Saved ..." line cannot be read as the
            # artist's file being saved.
            copy = os.path.join(folder, "corral-copy-" + scene_name())
            save_copy(copy)
            scene_path = farm.upload(copy, scene_name())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    elif prefs.shared_folder.strip():
        scene_path = _copy_to_shared_folder(prefs)
    else:
        # No shared folder: `corral submit --upload` packs and uploads the scene.
        job = _submit_with_corral(prefs, farm, scene, settings, start, end)
        follow(farm, job)
        return job
    job = farm.submit(job_request(scene, settings, scene_path, start, end))
    follow(farm, job)
    return job


def _copy_to_shared_folder(prefs):
    """Writes the copy into the shared folder (the farm's scenes folder as mounted here);
    returns its path relative to that folder, which is what the farm's nodes resolve."""
    shared = os.path.realpath(bpy.path.abspath(prefs.shared_folder))
    if not os.path.isdir(shared):
        raise SubmitError("Shared folder %s does not exist" % shared)
    folder = os.path.join(shared, SHARED_SUBFOLDER)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise SubmitError("Cannot create %s: %s" % (folder, e.strerror or e)) from None
    stem = os.path.splitext(scene_name())[0]
    # A new name per submit: a job renders the scene as it was submitted, even when the
    # artist submits again while it runs.
    name = "%s-%s-%s.blend" % (stem, time.strftime("%Y%m%d-%H%M%S"), uuid.uuid4().hex[:6])
    save_copy(os.path.join(folder, name))
    return SHARED_SUBFOLDER + "/" + name


def _corral_executable(prefs):
    """The `corral` program the preferences name (a path, or a name looked up on PATH)."""
    named = prefs.corral_executable.strip()
    if not named:
        raise SubmitError("This farm takes no uploads from Blender: set Corral executable "
                          "(it uploads the scene with `corral submit --upload`) or Shared "
                          "folder (the farm's scenes folder as this computer sees it)")
    if os.sep not in named and not named.startswith("//"):
        found = shutil.which(named)
        if found:
            return found
    path = os.path.abspath(bpy.path.abspath(named))
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise SubmitError("Corral executable %s does not exist or cannot be run; check "
                          "Corral executable in the add-on's preferences" % path)
    return path


def _corral_failure(stderr):
    """The line that says why `corral` failed (its `error: ...` line), for the status bar."""
    lines = [" ".join(l.split()) for l in stderr.splitlines() if l.strip()]
    errors = [l[len("error: "):] for l in lines if l.startswith("error: ")]
    text = errors[-1] if errors else (lines[-1] if lines else "no message")
    return text if len(text) <= 300 else text[:299] + "…"


def _corral_env(token=""):
    """This Blender's environment without `CORRAL_...` variables: the job is what the panel
    says, not what a variable set for the command line would change. The farm's token goes
    in `CORRAL_TOKEN` (read by `corral`), not on the command line, where other users of
    the machine could read it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    if token:
        env["CORRAL_TOKEN"] = token
    return env


def _submit_with_corral(prefs, farm, scene, settings, start, end):
    """Writes a hidden copy beside the open file (so its relative paths name the same
    files), runs `corral submit COPY --upload ... --json`, deletes the copy, and returns
    the job `corral` printed."""
    corral = _corral_executable(prefs)
    engine = scene.render.engine
    if engine not in ENGINES:
        raise SubmitError("The farm renders with Cycles, Eevee or Workbench; this scene "
                          "uses %s" % engine)
    stem = os.path.splitext(scene_name())[0]
    name = ".corral-submit-%s-%s.blend" % (stem, uuid.uuid4().hex[:12])
    folder = os.path.dirname(bpy.data.filepath) if bpy.data.filepath else None
    temp = None
    if folder is None:
        # Never saved: there is no folder, and so no relative path to keep.
        temp = folder = tempfile.mkdtemp(prefix="corral-submit-")
    copy = os.path.join(folder, name)
    args = [corral, "submit", copy, "--upload", "--server", farm.server,
            "--frames", "%d-%d" % (start, end), "--priority", str(settings.priority),
            "--engine", engine, "--blender", bpy.app.binary_path, "--json"]
    if settings.batch_size > 0:
        args += ["--batch-size", str(settings.batch_size)]
    if settings.submit_anyway:
        args.append("--allow-missing")
    try:
        save_copy(copy)
        try:
            done = subprocess.run(
                args, shell=False, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, timeout=CORRAL_SUBMIT_TIMEOUT,
                env=_corral_env(farm.token))
        except subprocess.TimeoutExpired:
            raise SubmitError("corral submit did not finish in %d s; the farm may be "
                              "unreachable or the upload too slow"
                              % CORRAL_SUBMIT_TIMEOUT) from None
        except OSError as e:
            raise SubmitError("Cannot run %s: %s" % (corral, e.strerror or e)) from None
    finally:
        # `copy@` is where Blender writes before renaming, left behind if that failed.
        for leftover in (copy, copy + "@"):
            try:
                os.remove(leftover)
            except OSError:
                pass
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    stderr = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        raise SubmitError("corral submit failed: %s" % _corral_failure(stderr))
    try:
        job = json.loads(done.stdout.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        job = None
    if not isinstance(job, dict) or not isinstance(job.get("id"), str):
        raise SubmitError("corral submit printed no job; is %s Corral's program?" % corral)
    return job


# ---- the job followed after a submit ------------------------------------------------------

# The last submitted job, kept in memory only: writing it into the scene would change the
# artist's file.
_followed = {"farm": None, "job": None, "note": ""}


def followed():
    """(job dict or None, Farm or None, note): what the panel shows."""
    return _followed["job"], _followed["farm"], _followed["note"]


def follow(farm, job):
    _followed.update(farm=farm, job=job, note="")
    if not bpy.app.timers.is_registered(_poll_timer):
        bpy.app.timers.register(_poll_timer, first_interval=POLL_EVERY)


def terminal(job):
    return bool(job) and job.get("state") in ("completed", "failed", "cancelled")


def poll_once():
    """Reads the followed job's progress once (a short timeout: this runs on the UI thread).
    Returns True while there is more to follow."""
    job, farm, _ = followed()
    if job is None or farm is None or terminal(job):
        return False
    try:
        _followed["job"] = farm.job(job["id"])
        _followed["note"] = ""
    except farm_api.FarmError as e:
        # The farm may be restarting; say so and keep trying.
        _followed["note"] = str(e)
    _redraw()
    return not terminal(_followed["job"])


def _poll_timer():
    try:
        more = poll_once()
    except Exception as e:  # a timer that raises is dropped for good; say why instead
        _followed["note"] = "Progress stopped: %s" % " ".join(str(e).split())
        return None
    return POLL_EVERY if more else None


def _redraw():
    """Asks the Properties editors to redraw, so the panel shows the new progress."""
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


def stop_following():
    if bpy.app.timers.is_registered(_poll_timer):
        bpy.app.timers.unregister(_poll_timer)
