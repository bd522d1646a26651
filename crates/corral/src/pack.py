# Corral's scene packer, run by `corral submit --upload` inside Blender:
#   blender -b --factory-startup -Y FILE.blend --python-exit-code 2 --python-expr THIS -- CONFIG
# CONFIG is JSON: {"root": the scene's folder (resolved), "self": this file's path in the
# workspace, "copy": where to save the rewritten copy, or null to only list}.
# It prints one line per external file, `CORRAL-DEP {json}`, with the file's absolute path
# (its folder resolved), its workspace path, its kind and whether it exists, then saves a
# copy of the open file whose every external path names the file's place in the workspace
# (`//` relative to this file's own place there) and prints `CORRAL-SAVED`. The open file
# is never saved over. Blender's own prints cannot be mistaken for these lines.
import json
import os
import posixpath
import re
import sys

import bpy

config = json.loads(sys.argv[sys.argv.index("--") + 1])
ROOT = config["root"]
SELF = config["self"]


def norm(path):
    """Absolute, with its folder resolved (as the Rust side lays files out)."""
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    if not name:
        return os.path.realpath(folder)
    return os.path.join(os.path.realpath(folder), name)


def workspace(path):
    """The path's place in the workspace: relative inside the scene's folder, else
    under `_external/` + the absolute path."""
    rel = os.path.relpath(path, ROOT)
    if rel == ".":
        return ""
    if rel != ".." and not rel.startswith("../"):
        return rel.replace(os.sep, "/")
    return "_external/" + path.lstrip("/")


def reference(path, is_dir=False):
    """`//...`: the path as this file names it once both are in the workspace."""
    target = workspace(path) or "."
    here = posixpath.dirname(SELF) or "."
    rel = posixpath.relpath(target, here)
    if is_dir and not rel.endswith("/"):
        rel += "/"
    return "//" + rel


def emit(kind, path, exists):
    print("CORRAL-DEP " + json.dumps(
        {"kind": kind, "path": path, "workspace": workspace(path), "exists": exists}),
        flush=True)


TOKEN = re.compile(r"<UDIM>|<UVTILE>|#+")


def pattern_files(path):
    """The files a tiled (`<UDIM>`) or numbered (`###`) path stands for."""
    folder, name = os.path.split(path)
    m = TOKEN.search(name)
    regex = re.compile(re.escape(name[:m.start()]) + r"(\d+|u\d+_v\d+)"
                       + re.escape(name[m.end():]) + "$")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(os.path.join(folder, n) for n in names
                  if regex.match(n) and os.path.isfile(os.path.join(folder, n)))


def sequence_files(path):
    """The frames of an image sequence named by one of them (`img_0001.png`)."""
    folder, name = os.path.split(path)
    m = re.match(r"^(.*?)(\d+)(\.[^.]*)?$", name)
    if not m:
        return [path] if os.path.isfile(path) else []
    regex = re.compile(re.escape(m.group(1)) + r"\d+" + re.escape(m.group(3) or "") + "$")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(os.path.join(folder, n) for n in names
                  if regex.match(n) and os.path.isfile(os.path.join(folder, n)))


def folder_files(path):
    found = []
    for top, _dirs, names in os.walk(path):
        found.extend(os.path.join(top, n) for n in names)
    return sorted(found)


def local(ids):
    return [i for i in ids if i.library is None]


# Paths that name folders of caches (baked or not) and image sequences, by kind.
cache_dirs = set()
sequences = set()
for image in local(bpy.data.images):
    if image.source == "SEQUENCE" and image.filepath:
        sequences.add(norm(bpy.path.abspath(image.filepath)))
for clip in local(bpy.data.movieclips):
    if clip.source == "SEQUENCE" and clip.filepath:
        sequences.add(norm(bpy.path.abspath(clip.filepath)))

blend_name = os.path.splitext(os.path.basename(bpy.data.filepath))[0]


def point_caches(obj):
    """Every point cache of an object's modifiers and particle systems."""
    for mod in obj.modifiers:
        for attr in ("point_cache",):
            cache = getattr(mod, attr, None)
            if cache is not None:
                yield cache
        if mod.type == "DYNAMIC_PAINT" and mod.canvas_settings:
            for surface in mod.canvas_settings.canvas_surfaces:
                yield surface.point_cache
    for system in obj.particle_systems:
        yield system.point_cache


for obj in local(bpy.data.objects):
    for mod in obj.modifiers:
        if mod.type == "FLUID" and mod.fluid_type == "DOMAIN" and mod.domain_settings:
            if mod.domain_settings.cache_directory:
                cache_dirs.add(norm(bpy.path.abspath(mod.domain_settings.cache_directory)))
    for cache in point_caches(obj):
        if cache.use_external and cache.filepath:
            cache_dirs.add(norm(bpy.path.abspath(cache.filepath)))
        elif cache.use_disk_cache:
            cache_dirs.add(norm(bpy.path.abspath("//blendcache_" + blend_name)))

libraries = {norm(bpy.path.abspath(lib.filepath))
             for lib in bpy.data.libraries
             if lib.filepath and lib.packed_file is None and lib.parent is None}

named = set(norm(p) for p in bpy.utils.blend_paths(absolute=True, packed=False, local=True))
named |= cache_dirs | libraries
seen = set()
for path in sorted(named):
    if path in libraries:
        kind = "library"
        files = [path] if os.path.isfile(path) else []
    elif os.path.isdir(path):
        kind = "folder"
        files = folder_files(path)
    elif TOKEN.search(os.path.basename(path)):
        kind = "tiles"
        files = pattern_files(path)
    elif path in sequences:
        kind = "sequence"
        files = sequence_files(path)
    else:
        kind = "file"
        files = [path] if os.path.isfile(path) else []
    if not files:
        # A cache folder that was never baked is not a missing file.
        if path not in cache_dirs:
            emit(kind, path, False)
        continue
    for f in files:
        f = norm(f)
        if f not in seen:
            seen.add(f)
            emit(kind, f, True)

if config.get("copy"):
    def rewrite(owner, attr, is_dir=False):
        value = getattr(owner, attr)
        if not value or value.startswith("<"):  # `<builtin>` fonts
            return
        setattr(owner, attr, reference(norm(bpy.path.abspath(value)), is_dir))

    for image in local(bpy.data.images):
        if image.packed_file is None and image.source in ("FILE", "SEQUENCE", "MOVIE", "TILED"):
            # `filepath_raw`: renaming without reloading the image.
            rewrite(image, "filepath_raw")
    for lib in bpy.data.libraries:
        if lib.packed_file is None and lib.filepath:
            # An indirect library's path is relative to the library that links it.
            lib.filepath = reference(norm(bpy.path.abspath(lib.filepath, library=lib.parent)))
    for collection, packable in ((bpy.data.sounds, True), (bpy.data.movieclips, False),
                                 (bpy.data.fonts, True), (bpy.data.cache_files, False),
                                 (bpy.data.volumes, True)):
        for item in local(collection):
            if packable and item.packed_file is not None:
                continue
            rewrite(item, "filepath")
    for text in local(bpy.data.texts):
        if not text.is_in_memory and text.filepath:
            rewrite(text, "filepath")
    for obj in local(bpy.data.objects):
        for mod in obj.modifiers:
            if mod.type == "FLUID" and mod.fluid_type == "DOMAIN" and mod.domain_settings:
                rewrite(mod.domain_settings, "cache_directory", True)
            if mod.type == "MESH_CACHE":
                rewrite(mod, "filepath")
        for cache in point_caches(obj):
            if cache.use_external:
                rewrite(cache, "filepath", True)
    for scene in local(bpy.data.scenes):
        if scene.sequence_editor:
            for strip in scene.sequence_editor.sequences_all:
                if strip.type == "MOVIE":
                    rewrite(strip, "filepath")
                elif strip.type == "IMAGE":
                    rewrite(strip, "directory", True)
    bpy.ops.wm.save_as_mainfile(filepath=config["copy"], copy=True, relative_remap=False)
    print("CORRAL-SAVED", flush=True)
