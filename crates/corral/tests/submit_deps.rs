//! `corral submit --upload` with dependencies that are not images, end to end: a scene
//! that links a collection from a library which itself links from another library
//! (recursively, by relative paths), sets its text in a TrueType font Debian ships (copied
//! beside the project), reads a mesh cache (`.pc2`, a Mesh Cache modifier) and has a
//! speaker playing a sound. A real orchestrator and one real node that share no folder
//! with the artist; the node renders from the uploaded files alone, and its frames must be
//! a plain local render's pixels (a missing font, cache or library changes them). The
//! sound is large, and the first submission is killed part way through its upload: the
//! second one resumes it from what the farm holds. Run with a cold node and with a warm
//! one.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::uploads::{job_of, pixels, plain_render, text};

use common::farm::Farm;
use common::{scene, NodeProcess, Scene, CORRAL};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The sound's size: large enough that its upload is still running when the test looks.
const SOUND_BYTES: u64 = 96 << 20;

/// `BASE/libs/inner/inner.blend` (a green plane), `BASE/libs/outer.blend` (collection
/// `OuterSet`: a yellow plane and `Inner` linked from `//inner/inner.blend`),
/// `BASE/fonts/serif.ttf`, and `BASE/artist/shot/deps.blend` (frames 1-2) linking
/// `OuterSet` by `//../../libs/outer.blend`, with a text in `//../../fonts/serif.ttf`, a
/// plane shaped by `//cache/wave.pc2` and a speaker playing `//audio/room.wav`.
const MAKE_FILES: &str = r#"
import bpy, os, sys, glob, shutil, struct, wave
argv = sys.argv[sys.argv.index("--") + 1:]
base, big = argv[0], int(argv[1])
def empty():
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.context.preferences.filepaths.save_version = 0
def emission(name, rgba):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    em = nodes.new("ShaderNodeEmission")
    em.inputs["Color"].default_value = rgba
    mat.node_tree.links.new(em.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
    return mat
def plane(name, mat, loc, size):
    bpy.ops.mesh.primitive_plane_add(size=size, location=loc)
    ob = bpy.context.object
    ob.name = name
    ob.data.materials.append(mat)
    return ob
def save(path):
    bpy.ops.wm.save_as_mainfile(filepath=path, compress=False)
# A library that links from another library: libs/outer.blend links Inner from
# libs/inner/inner.blend (relative), and both sit in its collection OuterSet.
libs = os.path.join(base, "libs")
inner = os.path.join(libs, "inner", "inner.blend")
os.makedirs(os.path.dirname(inner), exist_ok=True)
empty(); save(inner)
plane("Inner", emission("InnerMat", (0.1, 0.9, 0.2, 1.0)), (0.55, 0.4, 0), 0.5)
save(inner)
outer = os.path.join(libs, "outer.blend")
empty(); save(outer)
coll = bpy.data.collections.new("OuterSet")
bpy.context.scene.collection.children.link(coll)
with bpy.data.libraries.load(inner, link=True, relative=True) as (src, dst):
    dst.objects = ["Inner"]
for ob in dst.objects:
    coll.objects.link(ob)
ob = plane("Outer", emission("OuterMat", (0.9, 0.8, 0.1, 1.0)), (0.55, -0.4, 0), 0.5)
bpy.context.scene.collection.objects.unlink(ob)
coll.objects.link(ob)
save(outer)
# A font Debian ships, copied beside the project; a sound; a mesh cache (.pc2).
fonts = os.path.join(base, "fonts")
os.makedirs(fonts, exist_ok=True)
ttf = os.path.join(fonts, "serif.ttf")
shutil.copyfile(sorted(glob.glob("/usr/share/fonts/**/DejaVuSerif-Bold.ttf", recursive=True)
                       or glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))[0], ttf)
shot_dir = os.path.join(base, "artist", "shot")
audio = os.path.join(shot_dir, "audio", "room.wav")
os.makedirs(os.path.dirname(audio), exist_ok=True)
with wave.open(audio, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
    w.writeframes(bytes(max(big, 16000)))
pc2 = os.path.join(shot_dir, "cache", "wave.pc2")
os.makedirs(os.path.dirname(pc2), exist_ok=True)
with open(pc2, "wb") as f:
    samples = 3
    f.write(b"POINTCACHE2\0" + struct.pack("<iiffi", 1, 4, 1.0, 1.0, samples))
    for s in range(samples):
        k = 0.2 + 0.15 * s
        for x, y in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
            f.write(struct.pack("<fff", x * k + (0.25 if (x, y) == (1, 1) else 0.0), y * k, 0.0))
shot = os.path.join(shot_dir, "deps.blend")
empty(); save(shot)
with bpy.data.libraries.load(outer, link=True, relative=True) as (src, dst):
    dst.collections = ["OuterSet"]
for c in dst.collections:
    bpy.context.scene.collection.children.link(c)
bpy.ops.object.text_add(location=(-0.95, 0.1, 0))
text = bpy.context.object
text.data.body = "Ag"
text.data.size = 0.7
font = bpy.data.fonts.load(ttf)
font.filepath = "//../../fonts/serif.ttf"
text.data.font = font
text.data.materials.append(emission("TextMat", (0.9, 0.2, 0.2, 1.0)))
cached = plane("Cached", emission("CacheMat", (0.2, 0.4, 0.95, 1.0)), (-0.5, -0.45, 0), 1.0)
mod = cached.modifiers.new("Cache", "MESH_CACHE")
mod.cache_format = "PC2"
mod.filepath = "//cache/wave.pc2"
mod.frame_start = 1
bpy.ops.object.speaker_add(location=(0, 0, -1))
bpy.context.object.data.sound = bpy.data.sounds.load("//audio/room.wav")
bpy.ops.object.camera_add(location=(0, 0, 3))
bpy.context.scene.camera = bpy.context.object
s = bpy.context.scene
s.render.engine = "CYCLES"
s.render.resolution_x, s.render.resolution_y = 64, 48
s.render.resolution_percentage = 100
s.render.image_settings.file_format = "PNG"
s.frame_start, s.frame_end = 1, 2
s.cycles.device = "CPU"
s.cycles.samples = 2
s.cycles.use_adaptive_sampling = False
s.cycles.use_denoising = False
for layer in s.view_layers:
    layer.cycles.use_denoising = False
save(shot)
"#;

/// The largest unfinished upload the orchestrator holds, in bytes.
fn largest_partial(data: &Path) -> u64 {
    std::fs::read_dir(data.join("blobs/partial"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn fonts_sounds_caches_and_nested_libraries_travel_and_an_interrupted_upload_resumes() {
    dependencies_travel("cold");
}

/// The same with a warm node, which renders frame 2 in a new workspace after the node
/// removed frame 1's. It used to fail: the worker left the first scene tagged for
/// evaluation, which ran when the next file was opened, after its mesh cache was gone,
/// and printed `Modifier: "Cache", No such file or directory` into the second task's log.
#[test]
fn dependencies_travel_to_a_warm_node() {
    dependencies_travel("warm");
}

fn dependencies_travel(mode: &str) {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    let script = work.path().join("make_files.py");
    std::fs::write(&script, MAKE_FILES).unwrap();
    let out = Command::new("blender")
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(&base)
        .arg(SOUND_BYTES.to_string())
        .output()
        .unwrap();
    let shot = base.join("artist/shot/deps.blend");
    assert!(out.status.success() && shot.is_file(), "{}", text(&out));

    let farm = Farm::builder().nodes(0).start();
    let tiny = scene(Scene::Tiny);
    let _node = NodeProcess::start(&[
        "--blend",
        tiny.to_str().unwrap(),
        "--orchestrator",
        &farm.orchestrator().url,
        "--render-mode",
        mode,
    ]);
    farm.wait_nodes_up(1);
    let data = farm.root.path().join("data");
    let server = farm.orchestrator().url.clone();
    let corral = |args: &[&str]| -> Command {
        let mut cmd = Command::new(CORRAL);
        cmd.args(args)
            .args(["--server", &server])
            .current_dir(work.path())
            .env_remove("CORRAL_SERVER")
            .env("XDG_CACHE_HOME", work.path().join("cache"));
        cmd
    };
    let shot_arg = shot.to_str().unwrap();

    // The first submission is killed while the sound is on its way.
    let mut first = corral(&["submit", shot_arg, "--upload"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        let held = largest_partial(&data);
        if held >= 1 << 20 {
            first.kill().unwrap();
            first.wait().unwrap();
            break largest_partial(&data);
        }
        if let Some(status) = first.try_wait().unwrap() {
            panic!("the upload ended ({status}) before the test could interrupt it");
        }
        assert!(Instant::now() < deadline, "no upload started");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(held > 0 && held < SOUND_BYTES, "{held} bytes held");

    // The second goes on from there, renders, and downloads every frame.
    let out = corral(&["submit", shot_arg, "--upload", "--wait", "--download", "dl"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log = farm.orchestrator().stderr();
    let resumed: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("blob upload resumed"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("offset="))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    assert!(
        resumed.iter().any(|&offset| offset >= held),
        "the sound's upload resumed from {held} bytes or more: {resumed:?}\n{log}"
    );

    // Every kind of file is in the manifest the node rendered.
    let job = job_of(&out);
    let view = farm.job(&job);
    let manifest = view["manifest"].as_str().unwrap();
    let (status, listed) = farm.get(&format!("/api/v1/manifests/{manifest}"));
    assert_eq!(status, reqwest::StatusCode::OK, "{listed}");
    let paths: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for end in [
        "deps.blend",
        "/libs/outer.blend",
        "/libs/inner/inner.blend",
        "/fonts/serif.ttf",
        "audio/room.wav",
        "cache/wave.pc2",
    ] {
        assert!(
            paths.iter().any(|p| p.ends_with(end)),
            "no `{end}` in {paths:?}"
        );
    }
    let sound = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("room.wav"))
        .unwrap();
    assert!(sound["size"].as_u64().unwrap() > SOUND_BYTES);

    // The node's frames are what Blender renders on the artist's machine.
    let dl = work.path().join("dl");
    for n in 1..=2 {
        let got = std::fs::read(dl.join(format!("frame_{n:04}.png"))).unwrap();
        let want = plain_render(&shot, n, work.path());
        assert!(
            pixels(&got) == pixels(&want),
            "frame {n} differs from a plain render"
        );
    }
    eprintln!("dependencies test took {:?}", started.elapsed());
}
