"""Corral: submit the open scene to a Corral render farm from Blender's Render properties.

Supported: Blender 3.4 and later (3.x and 4.x; tested on 3.4.1). It uses only Blender
APIs present since 2.8 (`save_as_mainfile(copy=True)`, `bpy.app.timers`, `wm.url_open`) and
Python's standard library, so nothing is installed besides the add-on itself.
"""

bl_info = {
    "name": "Corral render farm",
    "author": "Corral",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Properties > Render > Corral render farm",
    "description": "Submit the open scene to a Corral render farm and follow its progress "
                   "(Blender 3.4 or later, 3.x and 4.x)",
    "category": "Render",
}

import shutil

import bpy
from bpy.props import BoolProperty, IntProperty, PointerProperty, StringProperty

from . import farm as farm_api
from . import submit as submitting

DEFAULT_FARM = "http://127.0.0.1:4000"  # `corral up`'s and `corral orchestrator`'s port


class CorralPreferences(bpy.types.AddonPreferences):
    """Per-machine settings, kept in Blender's preferences and never in a .blend: the
    token must not travel to the farm inside the scene it renders."""
    bl_idname = __package__

    farm_url: StringProperty(
        name="Farm",
        description="Address of the farm's server: `corral up` or `corral orchestrator` "
                    "(http://HOST:PORT), or the corral://... join string a farm prints, "
                    "which carries its token and certificate fingerprint",
        default=DEFAULT_FARM,
    )
    token: StringProperty(
        name="Token",
        description="Sent as `Authorization: Bearer TOKEN` when set",
        default="",
        subtype="PASSWORD",
    )
    shared_folder: StringProperty(
        name="Shared folder",
        description="For a farm that takes no uploads: its scenes folder (the nodes' "
                    "--scenes) as this computer sees it; the copy is written inside it",
        default="",
        subtype="DIR_PATH",
    )

    corral_executable: StringProperty(
        name="Corral executable",
        description="The `corral` program, used for a farm that takes no uploads from "
                    "Blender and shares no folder: `corral submit --upload` packs the "
                    "scene with every file it uses and uploads it",
        default=shutil.which("corral") or "",
        subtype="FILE_PATH",
    )

    def draw(self, context):
        draw_farm_settings(self.layout, self)


class CorralSceneSettings(bpy.types.PropertyGroup):
    """What to render of this scene; saved with the scene."""
    use_scene_range: BoolProperty(
        name="Use scene range",
        description="Render the scene's own frame range",
        default=True,
    )
    frame_start: IntProperty(name="Start", default=1, min=0, max=submitting.MAX_FRAME)
    frame_end: IntProperty(name="End", default=250, min=0, max=submitting.MAX_FRAME)
    batch_size: IntProperty(
        name="Batch size",
        description="Frames per task; 0 lets the farm size tasks from the time frames take",
        default=0, min=0, max=submitting.MAX_BATCH,
    )
    priority: IntProperty(
        name="Priority",
        description="Higher runs first",
        default=0, min=submitting.PRIORITY_RANGE[0], max=submitting.PRIORITY_RANGE[1],
    )
    submit_anyway: BoolProperty(
        name="Submit anyway",
        description="Submit even when files the scene uses (images, sounds, libraries) are "
                    "missing on this computer",
        default=False,
    )


def draw_farm_settings(layout, prefs):
    layout.prop(prefs, "farm_url")
    layout.prop(prefs, "token")
    layout.prop(prefs, "shared_folder")
    layout.prop(prefs, "corral_executable")


class CORRAL_OT_submit(bpy.types.Operator):
    """Save a copy of the scene as it is now and render it on the Corral farm"""
    bl_idname = "corral.submit"
    bl_label = "Submit to Corral"
    # No UNDO: submitting changes nothing in the file.
    bl_options = {"REGISTER"}

    def execute(self, context):
        try:
            job = submitting.submit(context)
        except (submitting.SubmitError, farm_api.FarmError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, "Submitted to Corral: job %s, frames %s-%s"
                    % (job["id"], job.get("from"), job.get("to")))
        return {"FINISHED"}


class CORRAL_OT_open_job(bpy.types.Operator):
    """Open the submitted job's page on the farm's dashboard"""
    bl_idname = "corral.open_job"
    bl_label = "Open in browser"

    @classmethod
    def poll(cls, context):
        job, farm, _ = submitting.followed()
        return job is not None and farm is not None

    def execute(self, context):
        job, farm, _ = submitting.followed()
        bpy.ops.wm.url_open(url=farm.dashboard_url(job["id"]))
        return {"FINISHED"}


class RENDER_PT_corral(bpy.types.Panel):
    bl_label = "Corral render farm"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.corral
        draw_farm_settings(layout, submitting.preferences(context))

        layout.prop(settings, "use_scene_range")
        col = layout.column(align=True)
        if settings.use_scene_range:
            col.enabled = False
            col.label(text="Frames %d-%d" % (context.scene.frame_start,
                                             context.scene.frame_end))
        else:
            col.prop(settings, "frame_start")
            col.prop(settings, "frame_end")
        layout.prop(settings, "batch_size")
        layout.prop(settings, "priority")
        layout.prop(settings, "submit_anyway")
        layout.operator(CORRAL_OT_submit.bl_idname, icon="RENDER_ANIMATION")

        job, _, note = submitting.followed()
        if job is not None:
            box = layout.box()
            box.label(text="Job %s" % job["id"])
            box.label(text=progress_text(job))
            if job.get("failure"):
                box.label(text=str(job["failure"]), icon="ERROR")
            if note:
                box.label(text=note, icon="ERROR")
            box.operator(CORRAL_OT_open_job.bl_idname, icon="URL")


def progress_text(job):
    """`running · 12/48 frames (25%)`."""
    done, total = job.get("frames_done") or 0, job.get("frames_total") or 0
    percent = " (%d%%)" % (100 * done // total) if total else ""
    return "%s · %d/%d frames%s" % (job.get("state", "?"), done, total, percent)


CLASSES = (
    CorralPreferences,
    CorralSceneSettings,
    CORRAL_OT_submit,
    CORRAL_OT_open_job,
    RENDER_PT_corral,
)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.corral = PointerProperty(type=CorralSceneSettings)


def unregister():
    submitting.stop_following()
    del bpy.types.Scene.corral
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
