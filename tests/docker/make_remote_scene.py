"""Build a project for the remote-farm Docker test: a scene whose files are not all in its
folder, so that `corral submit --upload` must pack every kind of external file.

Usage:
    blender -b --factory-startup --python tests/docker/make_remote_scene.py -- \
        PROJECT_DIR ELSEWHERE_DIR [--frames 12] [--width 64] [--height 48] [--samples 8] \
        [--ballast MIB]

Writes:
    PROJECT_DIR/shot.blend            the scene (Cycles, denoising off, PNG, frames 1-N)
    PROJECT_DIR/textures/checker.png  used by the floor at the relative path //textures/checker.png
    ELSEWHERE_DIR/stripes.png         used by the linked prop at its ABSOLUTE path, outside
                                      the project folder
    PROJECT_DIR/lib/props.blend       a library: the scene links its object "Prop" (with its
                                      material) from //lib/props.blend
    PROJECT_DIR/ballast/noise.png     with --ballast: MIB MiB of random bytes, named by an image
                                      datablock with a fake user (packed and uploaded, never
                                      read by a render), to make an upload that takes a while

Everything is emission shading with closest-pixel texture lookups and a fixed sample count,
so a frame's pixels depend only on the scene and Blender's version, not on threads.
"""

import argparse
import os
import sys

import bpy


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="make_remote_scene.py")
    p.add_argument("project")
    p.add_argument("elsewhere")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--ballast", type=int, default=0, help="MiB of random bytes to carry")
    return p.parse_args(argv)


def write_texture(path, size, color_a, color_b, stripes):
    img = bpy.data.images.new(os.path.basename(path), size, size, alpha=False)
    px = []
    for y in range(size):
        for x in range(size):
            on = (x // 2) % 2 == 0 if stripes else ((x // 4) + (y // 4)) % 2 == 0
            px.extend(color_a if on else color_b)
    img.pixels = px
    img.filepath_raw = path
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)


def emission_material(name, image_path, stored_path):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    for n in list(nodes):
        if n.type != "OUTPUT_MATERIAL":
            nodes.remove(n)
    tex = nodes.new("ShaderNodeTexImage")
    tex.interpolation = "Closest"
    image = bpy.data.images.load(image_path)
    image.filepath = stored_path
    tex.image = image
    emission = nodes.new("ShaderNodeEmission")
    mat.node_tree.links.new(tex.outputs["Color"], emission.inputs["Color"])
    out = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
    mat.node_tree.links.new(emission.outputs["Emission"], out.inputs["Surface"])
    return mat


def fresh():
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.context.preferences.filepaths.save_version = 0


def main():
    args = parse_args()
    project = os.path.abspath(args.project)
    elsewhere = os.path.abspath(args.elsewhere)
    for d in (project, os.path.join(project, "textures"), os.path.join(project, "lib"), elsewhere):
        os.makedirs(d, exist_ok=True)
    checker = os.path.join(project, "textures", "checker.png")
    stripes = os.path.join(elsewhere, "stripes.png")
    library = os.path.join(project, "lib", "props.blend")
    shot = os.path.join(project, "shot.blend")

    fresh()
    write_texture(checker, 16, (0.9, 0.5, 0.1, 1.0), (0.1, 0.2, 0.8, 1.0), stripes=False)
    write_texture(stripes, 16, (0.1, 0.8, 0.2, 1.0), (0.9, 0.9, 0.9, 1.0), stripes=True)

    # The library: a collection "Props" of one object whose material reads the texture by
    # its absolute path.
    fresh()
    props = bpy.data.collections.new("Props")
    bpy.context.scene.collection.children.link(props)
    bpy.ops.mesh.primitive_cube_add(size=0.8, location=(0, 0, 0.4))
    prop = bpy.context.object
    prop.name = "Prop"
    prop.data.materials.append(emission_material("Stripes", stripes, stripes))
    for c in list(prop.users_collection):
        c.objects.unlink(prop)
    props.objects.link(prop)
    bpy.ops.wm.save_as_mainfile(filepath=library, compress=False, relative_remap=False)

    # The scene: a floor reading //textures/checker.png, the library's collection instanced
    # by an empty (linked data cannot be animated here; the empty turns), a camera.
    fresh()
    bpy.ops.wm.save_as_mainfile(filepath=shot, compress=False)  # so that // means PROJECT
    bpy.ops.mesh.primitive_plane_add(size=4)
    floor = bpy.context.object
    floor.data.materials.append(emission_material("Checker", checker, "//textures/checker.png"))
    with bpy.data.libraries.load("//lib/props.blend", link=True, relative=True) as (src, dst):
        dst.collections = ["Props"]
    pivot = bpy.data.objects.new("PropsInstance", None)
    pivot.instance_type = "COLLECTION"
    pivot.instance_collection = dst.collections[0]
    bpy.context.scene.collection.objects.link(pivot)
    for frame, angle in ((1, 0.0), (args.frames, 1.5)):
        pivot.rotation_euler = (0, 0, angle)
        pivot.keyframe_insert("rotation_euler", frame=frame)
        floor.rotation_euler = (0, 0, -angle / 2)
        floor.keyframe_insert("rotation_euler", frame=frame)
    bpy.ops.object.camera_add(location=(0, -3.2, 2.6), rotation=(0.9, 0, 0))
    bpy.context.scene.camera = bpy.context.object

    if args.ballast:
        noise = os.path.join(project, "ballast", "noise.png")
        os.makedirs(os.path.dirname(noise), exist_ok=True)
        with open(noise, "wb") as f:
            for _ in range(args.ballast):
                f.write(os.urandom(1 << 20))
        # Loading an image reads no pixels; nothing renders with it.
        ballast = bpy.data.images.load(noise)
        ballast.filepath = "//ballast/noise.png"
        ballast.use_fake_user = True

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.render.resolution_x, scene.render.resolution_y = args.width, args.height
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.use_file_extension = True
    scene.frame_start, scene.frame_end = 1, args.frames
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.cycles.seed = 0
    for layer in scene.view_layers:
        layer.cycles.use_denoising = False
    bpy.ops.wm.save_as_mainfile(filepath=shot, compress=False, relative_remap=False)
    print(f"make_remote_scene: wrote {shot}")


main()
