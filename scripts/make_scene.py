"""Build a small animated test scene for Corral and save it as a .blend file.

Usage:
    blender -b --factory-startup --python scripts/make_scene.py -- OUT.blend \
        [--width 64] [--height 48] [--samples 4] [--start 1] [--end 10] \
        [--engine CYCLES] [--motion] [--denoise]

The scene is deterministic and cheap to render: Cycles on CPU, fixed sample
count (adaptive sampling off), denoising off (Debian's Blender is built without
OpenImageDenoise), PNG output. Every frame differs because the objects are
keyframed. --motion builds a slightly nicer demo (several moving objects, 48
frames by default). --denoise turns denoising ON, to reproduce Blender's
"Build without OpenImageDenoiser" error.
"""

import argparse
import math
import sys
import traceback

import bpy


def parse_args():
    # Blender passes its own arguments too; ours come after "--".
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="make_scene.py")
    p.add_argument("out", help="path of the .blend file to write")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--start", type=int, default=1)
    p.add_argument("--end", type=int, default=None,
                   help="last frame (default 10, or 48 with --motion)")
    p.add_argument("--engine", default="CYCLES",
                   choices=["CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH"])
    p.add_argument("--motion", action="store_true",
                   help="several moving objects, a nicer demo")
    p.add_argument("--denoise", action="store_true",
                   help="leave denoising ON (for error fixtures)")
    args = p.parse_args(argv)
    if args.end is None:
        args.end = 48 if args.motion else 10
    if args.end < args.start:
        p.error("--end must be >= --start")
    return args


def make_material(name, rgb):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.4
    return mat


def keyframe(obj, frame, location=None, rotation=None):
    """Insert location/rotation keys on obj at frame."""
    if location is not None:
        obj.location = location
        obj.keyframe_insert("location", frame=frame)
    if rotation is not None:
        obj.rotation_euler = rotation
        obj.keyframe_insert("rotation_euler", frame=frame)


def build_objects(args):
    s, e = args.start, args.end
    # Floor so shadows and motion are visible.
    bpy.ops.mesh.primitive_plane_add(size=20, location=(0, 0, -1))
    bpy.context.object.data.materials.append(make_material("Floor", (0.6, 0.6, 0.6)))

    # Main cube: spins a full turn and slides across the frame.
    bpy.ops.mesh.primitive_cube_add(size=1.5)
    cube = bpy.context.object
    cube.data.materials.append(make_material("Cube", (0.8, 0.2, 0.1)))
    keyframe(cube, s, location=(-1.5, 0, 0), rotation=(0, 0, 0))
    keyframe(cube, e, location=(1.5, 0, 0), rotation=(0.5, 0, 2 * math.pi))

    if args.motion:
        # A few spheres bobbing on staggered phases around the cube.
        for i, rgb in enumerate([(0.1, 0.4, 0.9), (0.1, 0.8, 0.3), (0.9, 0.8, 0.1)]):
            angle = 2 * math.pi * i / 3
            x, y = 3 * math.cos(angle), 3 * math.sin(angle)
            bpy.ops.mesh.primitive_uv_sphere_add(radius=0.6, segments=24, ring_count=12)
            sphere = bpy.context.object
            sphere.data.materials.append(make_material(f"Sphere{i}", rgb))
            bpy.ops.object.shade_smooth()
            for f in range(s, e + 1, 6):
                z = 1.2 * abs(math.sin(math.pi * (f - s) / 24 + angle))
                keyframe(sphere, f, location=(x, y, z - 0.4))

    # Camera aimed at an empty at the origin, and a sun light.
    bpy.ops.object.empty_add(location=(0, 0, 0))
    target = bpy.context.object
    bpy.ops.object.camera_add(location=(0, -9, 5))
    cam = bpy.context.object
    track = cam.constraints.new("TRACK_TO")
    track.target = target
    track.track_axis = "TRACK_NEGATIVE_Z"
    track.up_axis = "UP_Y"
    bpy.context.scene.camera = cam

    bpy.ops.object.light_add(type="SUN", location=(4, -4, 8), rotation=(0.6, 0.3, 0.5))
    bpy.context.object.data.energy = 4.0


def configure_render(args):
    scene = bpy.context.scene
    r = scene.render
    r.engine = args.engine
    r.resolution_x, r.resolution_y = args.width, args.height
    r.resolution_percentage = 100
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    scene.frame_start, scene.frame_end, scene.frame_step = args.start, args.end, 1

    # Cycles settings apply whether or not Cycles is the chosen engine, so
    # `blender -E CYCLES` on this file still behaves deterministically.
    c = scene.cycles
    c.device = "CPU"
    c.samples = args.samples
    c.use_adaptive_sampling = False
    c.use_denoising = args.denoise
    c.use_preview_denoising = False
    # c.denoiser is left untouched: this build has no denoisers, so the enum
    # is empty and assigning "OPENIMAGEDENOISE" raises TypeError.
    for vl in scene.view_layers:
        vl.cycles.use_denoising = args.denoise      # per-view-layer switch
        vl.cycles.denoising_store_passes = False

    # Eevee: keep it cheap too.
    scene.eevee.taa_render_samples = args.samples


def main():
    args = parse_args()
    # Start from an empty factory scene: no default cube/camera/light.
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    build_objects(args)
    configure_render(args)
    bpy.ops.wm.save_as_mainfile(filepath=args.out, compress=False)
    print(f"make_scene: wrote {args.out} ({args.width}x{args.height}, "
          f"{args.samples} samples, frames {args.start}-{args.end}, {args.engine})")


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:  # argparse errors/--help: keep their exit code
        sys.exit(exc.code)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
