"""Build Corral's demo animation: the word CORRAL in extruded 3D letters while three
coloured balls bounce around it and the camera swings past. Made for `make demo`: it looks
like something, and renders in a few seconds on two cores (Cycles, CPU, few samples,
direct light only, so a low sample count stays clean without a denoiser, which Debian's
Blender lacks).

Usage:
    blender -b --factory-startup --python scripts/demo_scene.py -- OUT.blend \
        [--width 256] [--height 144] [--samples 10] [--frames 72]
"""

import argparse
import math
import sys
import traceback

import bpy


def parse_args():
    # Blender passes its own arguments too; ours come after "--".
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="demo_scene.py")
    p.add_argument("out", help="path of the .blend file to write")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=144)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--frames", type=int, default=72, help="frames at 24 fps (72 = 3 s)")
    args = p.parse_args(argv)
    if args.frames < 2:
        p.error("--frames must be at least 2")
    return args


def material(name, rgb, roughness=0.35, emission=0.0):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    if emission:
        bsdf.inputs["Emission"].default_value = (*rgb, 1.0)
        bsdf.inputs["Emission Strength"].default_value = emission
    return mat


def smooth_keys(obj):
    """Ease every keyframe in and out (Bezier), for motion that reads as deliberate."""
    if obj.animation_data and obj.animation_data.action:
        for curve in obj.animation_data.action.fcurves:
            for key in curve.keyframe_points:
                key.interpolation = "BEZIER"


def build(args):
    end = args.frames
    scene = bpy.context.scene

    # Floor: a wide, slightly glossy plane to catch shadows and reflections.
    bpy.ops.mesh.primitive_plane_add(size=60, location=(0, 0, 0))
    bpy.context.object.data.materials.append(material("Floor", (0.05, 0.055, 0.07), 0.6))

    # The word, extruded and bevelled, rising and turning to face the camera.
    bpy.ops.object.text_add(location=(0, 0, 0.02))
    text = bpy.context.object
    text.data.body = "CORRAL"
    text.data.align_x = "CENTER"
    text.data.size = 1.6
    text.data.extrude = 0.22
    text.data.bevel_depth = 0.03
    text.data.bevel_resolution = 2
    text.rotation_euler = (math.radians(90), 0, 0)
    text.data.materials.append(material("Letters", (0.95, 0.55, 0.12), 0.3))
    text.location = (0, 0, -1.6)
    text.rotation_euler[2] = math.radians(-35)
    text.keyframe_insert("location", frame=1)
    text.keyframe_insert("rotation_euler", frame=1)
    text.location = (0, 0, 0.05)
    text.rotation_euler[2] = 0
    text.keyframe_insert("location", frame=max(2, end // 2))
    text.keyframe_insert("rotation_euler", frame=max(2, end // 2))
    smooth_keys(text)

    # Three glowing balls bouncing behind and beside the letters, out of phase.
    colours = [(0.15, 0.45, 1.0), (0.2, 0.9, 0.45), (1.0, 0.25, 0.4)]
    for i, rgb in enumerate(colours):
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.32, segments=32, ring_count=16)
        ball = bpy.context.object
        bpy.ops.object.shade_smooth()
        ball.data.materials.append(material(f"Ball{i}", rgb, 0.25))
        x = (i - 1) * 3.6
        bounces = 3
        for f in range(1, end + 1, 3):
            t = (f - 1) / max(1, end - 1)
            phase = t * bounces * math.pi + i * math.pi / 3
            height = 0.32 + 2.4 * abs(math.sin(phase))
            ball.location = (x + 0.5 * math.sin(2 * math.pi * t + i), 1.2, height)
            ball.keyframe_insert("location", frame=f)

    # Camera swinging from left to right, always aimed at the word.
    bpy.ops.object.empty_add(location=(0, 0, 0.8))
    target = bpy.context.object
    bpy.ops.object.camera_add(location=(-4.5, -9.5, 3.2))
    cam = bpy.context.object
    cam.data.lens = 40
    track = cam.constraints.new("TRACK_TO")
    track.target = target
    track.track_axis = "TRACK_NEGATIVE_Z"
    track.up_axis = "UP_Y"
    cam.keyframe_insert("location", frame=1)
    cam.location = (4.5, -9.0, 2.4)
    cam.keyframe_insert("location", frame=end)
    smooth_keys(cam)
    scene.camera = cam

    # A warm key light and a cool rim light: direct light only, cheap and clean.
    bpy.ops.object.light_add(type="SUN", location=(5, -6, 8), rotation=(0.75, 0.15, 0.6))
    key = bpy.context.object.data
    key.energy = 3.5
    key.color = (1.0, 0.93, 0.85)
    key.angle = math.radians(3)
    bpy.ops.object.light_add(type="SUN", location=(-5, 6, 6), rotation=(-0.9, -0.3, 2.6))
    rim = bpy.context.object.data
    rim.energy = 2.0
    rim.color = (0.55, 0.7, 1.0)

    # A dark blue sky that fills the shadows a little.
    world = bpy.data.worlds.new("Sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.02, 0.03, 0.06, 1)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 1.0
    scene.world = world


def configure(args):
    scene = bpy.context.scene
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x, r.resolution_y = args.width, args.height
    r.resolution_percentage = 100
    r.fps = 24
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGB"
    scene.frame_start, scene.frame_end, scene.frame_step = 1, args.frames, 1
    scene.view_settings.view_transform = "Filmic"
    scene.view_settings.look = "Medium High Contrast"

    c = scene.cycles
    c.device = "CPU"
    c.samples = args.samples
    c.use_adaptive_sampling = False
    # Few bounces and clamped indirect light: clean at a low sample count.
    c.max_bounces = 3
    c.diffuse_bounces = 1
    c.glossy_bounces = 1
    c.transmission_bounces = 0
    c.transparent_max_bounces = 0
    c.sample_clamp_indirect = 2.0
    c.blur_glossy = 1.0
    c.use_denoising = False
    c.use_preview_denoising = False
    for vl in scene.view_layers:
        vl.cycles.use_denoising = False


def main():
    args = parse_args()
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    build(args)
    configure(args)
    bpy.ops.wm.save_as_mainfile(filepath=args.out, compress=False)
    print(f"demo_scene: wrote {args.out} ({args.width}x{args.height}, {args.samples} samples, "
          f"frames 1-{args.frames})")


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:  # argparse errors/--help: keep their exit code
        sys.exit(exc.code)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
