# Run: BLENDER_USER_SCRIPTS=$(mktemp -d) BLENDER_USER_CONFIG=$(mktemp -d) LIBGL_ALWAYS_SOFTWARE=1 xvfb-run -a -s "-screen 0 640x1140x24" blender --factory-startup --python scripts/addon_screenshot.py -- docs/addon-panel.png
"""Draws docs/addon-panel.png: the add-on's panel in real Blender, in a real (Xvfb) window.

Builds the add-on's zip with scripts/build_addon.py and a small scene with
scripts/make_scene.py, installs and enables the zip into the temporary user folders named by
BLENDER_USER_SCRIPTS / BLENDER_USER_CONFIG (required, so nothing lands in this machine's
Blender config), opens the scene, shows the Render properties with the Corral panel open,
and saves a screenshot of that area (`screen.screenshot_area`), then quits. Blender exits
with status 1 on any failure. The committed PNG then went through `optipng -o2`.

The panel is registered DEFAULT_CLOSED; the script re-registers it open, which draws exactly
what an artist sees after clicking its header. Nothing is submitted: the farm address is a
plausible one, not contacted.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import bpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FARM_URL = "http://render-farm:4000"
FRAMES = (1, 72)
# Redraws before the screenshot: the first draws lay panels out and animate their opening.
REDRAWS = 12
TMP = []  # the temporary folder, once made


def fail(message):
    for folder in TMP:
        shutil.rmtree(folder, ignore_errors=True)
    print("addon_screenshot: " + message, file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)


def parse_out():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    if len(argv) != 1:
        fail("usage: blender --factory-startup --python scripts/addon_screenshot.py -- OUT.png")
    return os.path.abspath(argv[0])


def check_user_folders():
    for var in ("BLENDER_USER_SCRIPTS", "BLENDER_USER_CONFIG"):
        if not os.environ.get(var):
            fail("set %s to a temporary folder, so the add-on is not installed into this "
                 "machine's Blender config" % var)
    if bpy.app.background:
        fail("run Blender with a window (under xvfb-run), not with -b")


def build_inputs(tmp):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import build_addon
    zip_path = os.path.join(tmp, "corral-addon.zip")
    build_addon.build(zip_path)
    blend = os.path.join(tmp, "scene.blend")
    subprocess.run(
        [bpy.app.binary_path, "-b", "--factory-startup",
         "--python", os.path.join(ROOT, "scripts", "make_scene.py"), "--", blend,
         "--width", "32", "--height", "24", "--samples", "2",
         "--start", str(FRAMES[0]), "--end", str(FRAMES[1])],
        check=True, stdout=subprocess.DEVNULL)
    return zip_path, blend


def install_addon(zip_path):
    bpy.ops.preferences.addon_install(filepath=zip_path)
    bpy.ops.preferences.addon_enable(module="corral_submit")
    import corral_submit
    bpy.context.preferences.addons["corral_submit"].preferences.farm_url = FARM_URL
    # Open, as after a click on its header.
    panel = corral_submit.RENDER_PT_corral
    bpy.utils.unregister_class(panel)
    panel.bl_options = set()
    bpy.utils.register_class(panel)


def properties_area():
    window = bpy.context.window_manager.windows[0]
    for area in window.screen.areas:
        if area.type == "PROPERTIES":
            return window, area
    fail("no Properties editor in the window")


def main_region(area):
    return next(r for r in area.regions if r.type == "WINDOW")


def setup_view():
    scene = bpy.context.scene
    scene.corral.use_scene_range = False
    scene.corral.frame_start, scene.corral.frame_end = FRAMES
    window, area = properties_area()
    area.spaces.active.context = "RENDER"
    # The Properties editor alone in the window (as View > Area > Toggle Maximize Area),
    # so as big as the screen xvfb-run makes: 640 pixels wide, a usual width for it (a
    # script cannot drag the edges between areas: screen.area_move and area_split refuse),
    # and 1140 high, enough for every panel of Cycles' Render tab.
    with bpy.context.temp_override(window=window, area=area):
        bpy.ops.screen.screen_full_area()


def scroll_to_end():
    """Scrolls the editor to its end, so Corral's panel shows on a shorter screen."""
    window, area = properties_area()
    with bpy.context.temp_override(window=window, area=area, region=main_region(area)):
        bpy.ops.view2d.scroll_down(deltay=4000)


class Shooter:
    def __init__(self, out):
        self.out, self.ticks = out, 0

    def __call__(self):
        try:
            return self.tick()
        except Exception:
            traceback.print_exc()
            fail("failed")

    def tick(self):
        self.ticks += 1
        if self.ticks == 1:
            setup_view()
        elif self.ticks == REDRAWS // 2:
            scroll_to_end()
        window, area = properties_area()
        area.tag_redraw()
        if self.ticks < REDRAWS:
            return 0.25
        os.makedirs(os.path.dirname(self.out), exist_ok=True)
        with bpy.context.temp_override(window=window, area=area):
            bpy.ops.screen.screenshot_area(filepath=self.out)
        print("addon_screenshot: wrote %s (%dx%d area)" % (self.out, area.width, area.height))
        bpy.ops.wm.quit_blender()
        return None


def main():
    out = parse_out()
    check_user_folders()
    tmp = tempfile.mkdtemp(prefix="corral-shot-")
    TMP.append(tmp)
    # Blender's session recovery file (quit.blend) goes there too; removed when Python
    # ends, after Blender has written it.
    bpy.context.preferences.filepaths.temporary_directory = tmp
    atexit.register(shutil.rmtree, tmp, True)
    try:
        zip_path, blend = build_inputs(tmp)
        install_addon(zip_path)
        bpy.ops.wm.open_mainfile(filepath=blend)
    except Exception:
        traceback.print_exc()
        fail("failed")
    # Persistent: registered after the file is opened, kept whatever loads next.
    bpy.app.timers.register(Shooter(out), first_interval=1.0, persistent=True)


main()
