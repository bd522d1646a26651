//! `corral submit --upload` end to end: a real orchestrator and one real node that share no
//! folder with the artist, a scene in an "artist" folder with (a) a texture in a subfolder
//! (relative path), (b) a texture outside the folder by absolute path and (c) a linked
//! library outside the folder that uses a texture of its own. The real `corral` binary
//! packs, uploads, follows and downloads; the frames must be a plain local render's pixels
//! (so the node found every file), the artist's files must be untouched, a second submit
//! uploads nothing, a missing texture stops the submission before any upload, and
//! `corral fetch` downloads what is missing and nothing more.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::uploads::{job_of, pixels, plain_render, text};

use common::farm::Farm;
use common::CORRAL;
use corral_core::BlobHash;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WIDTH: u32 = 32;
const HEIGHT: u32 = 24;
const FRAMES: i64 = 4;

/// Builds `BASE/libs/prop.blend` (a plane textured with `//ptex/prop.png`),
/// `BASE/elsewhere/abs.png`, and `BASE/artist/shot/shot.blend` (frames 1-4) that uses
/// `//tex/wood.png`, the absolute `BASE/elsewhere/abs.png` and links `Prop` from the
/// library by its absolute path; and `broken.blend` beside it, whose `//tex/gone.png` is
/// missing.
const MAKE_FILES: &str = r#"
import bpy, os, sys
base = sys.argv[sys.argv.index("--") + 1]
def image(path, rgb_a, rgb_b):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = bpy.data.images.new(os.path.basename(path), 8, 8, alpha=False)
    px = []
    for y in range(8):
        for x in range(8):
            px.extend(rgb_a if ((x // 2) + (y // 2)) % 2 == 0 else rgb_b)
    img.pixels = px
    img.filepath_raw = path
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)
def material(name, path, rel):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    tex = nodes.new("ShaderNodeTexImage")
    tex.interpolation = "Closest"
    img = bpy.data.images.load(path)
    img.filepath = rel
    tex.image = img
    em = nodes.new("ShaderNodeEmission")
    mat.node_tree.links.new(tex.outputs["Color"], em.inputs["Color"])
    mat.node_tree.links.new(em.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
    return mat
def plane(name, mat, loc, size=1.0):
    bpy.ops.mesh.primitive_plane_add(size=size, location=loc)
    ob = bpy.context.object
    ob.name = name
    ob.data.materials.append(mat)
    return ob
def empty():
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.context.preferences.filepaths.save_version = 0
# (c) a library outside the artist's folder, with a texture beside it (relative).
libs = os.path.join(base, "libs")
image(os.path.join(libs, "ptex", "prop.png"), (0.1, 0.9, 0.2, 1.0), (0.9, 0.9, 0.9, 1.0))
empty()
lib_blend = os.path.join(libs, "prop.blend")
bpy.ops.wm.save_as_mainfile(filepath=lib_blend, compress=False)
plane("Prop", material("PropMat", os.path.join(libs, "ptex", "prop.png"), "//ptex/prop.png"), (0.6, 0.4, 0.1), 0.8)
bpy.ops.wm.save_as_mainfile(filepath=lib_blend, compress=False)
# (b) a texture outside the folder, by absolute path; (a) one in a subfolder, relative.
outside = os.path.join(base, "elsewhere", "abs.png")
image(outside, (0.9, 0.1, 0.1, 1.0), (0.1, 0.1, 0.9, 1.0))
shot = os.path.join(base, "artist", "shot")
image(os.path.join(shot, "tex", "wood.png"), (0.9, 0.5, 0.1, 1.0), (0.1, 0.2, 0.8, 1.0))
def scene(blend, wood_rel, end):
    empty()
    bpy.ops.wm.save_as_mainfile(filepath=blend, compress=False)
    a = plane("Wood", material("Wood", os.path.join(shot, "tex", "wood.png"), wood_rel), (-0.5, 0, 0))
    plane("Abs", material("Abs", outside, outside), (0.5, -0.3, 0))
    with bpy.data.libraries.load(lib_blend, link=True, relative=False) as (src, dst):
        dst.objects = ["Prop"]
    for ob in dst.objects:
        bpy.context.scene.collection.objects.link(ob)
    for frame, angle in ((1, 0.0), (end, 0.9)):
        a.rotation_euler = (0, 0, angle)
        a.keyframe_insert("rotation_euler", frame=frame)
    bpy.ops.object.camera_add(location=(0, 0, 3))
    bpy.context.scene.camera = bpy.context.object
    s = bpy.context.scene
    s.render.engine = "CYCLES"
    s.render.resolution_x, s.render.resolution_y = 32, 24
    s.render.resolution_percentage = 100
    s.render.image_settings.file_format = "PNG"
    s.frame_start, s.frame_end = 1, end
    s.cycles.device = "CPU"
    s.cycles.samples = 2
    s.cycles.use_adaptive_sampling = False
    s.cycles.use_denoising = False
    for layer in s.view_layers:
        layer.cycles.use_denoising = False
    bpy.ops.wm.save_as_mainfile(filepath=blend, compress=False)
scene(os.path.join(shot, "shot.blend"), "//tex/wood.png", 4)
# A shot whose texture is gone.
image(os.path.join(shot, "tex", "gone.png"), (0.5, 0.5, 0.5, 1.0), (0.2, 0.2, 0.2, 1.0))
scene(os.path.join(shot, "broken.blend"), "//tex/gone.png", 2)
os.remove(os.path.join(shot, "tex", "gone.png"))
"#;

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Complete blobs the orchestrator holds.
fn blobs(data: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(data.join("blobs")) else {
        return 0;
    };
    dirs.map(|d| d.unwrap().path())
        .filter(|d| d.file_name().unwrap() != "partial" && d.is_dir())
        .map(|d| std::fs::read_dir(d).unwrap().count())
        .sum()
}

#[test]
fn submit_uploads_a_scene_with_its_files_and_frames_come_back() {
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    let script = work.path().join("make_files.py");
    std::fs::write(&script, MAKE_FILES).unwrap();
    let out = run(Command::new("blender")
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(&base));
    let shot = base.join("artist/shot/shot.blend");
    assert!(out.status.success() && shot.is_file(), "{}", text(&out));
    let before = snapshot(&base);

    let farm = Farm::builder().nodes(1).start();
    let data = farm.root.path().join("data");
    let server = farm.orchestrator().url.clone();
    let corral = |args: &[&str]| {
        let mut cmd = Command::new(CORRAL);
        cmd.args(args)
            .args(["--server", &server])
            .current_dir(work.path())
            .env_remove("CORRAL_SERVER")
            // Its memory of uploaded copies, kept apart from the user's.
            .env("XDG_CACHE_HOME", work.path().join("cache"));
        run(&mut cmd)
    };
    let shot_arg = shot.to_str().unwrap();

    // Packed, uploaded, rendered, every frame downloaded as it came.
    let started = std::time::Instant::now();
    let out = corral(&["submit", shot_arg, "--upload", "--wait", "--download", "dl"]);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("first submit --upload --wait: {:?}", started.elapsed());
    let all = text(&out);
    assert!(all.contains("Scene: 5 files"), "{all}");
    assert!(
        all.contains(&format!("{FRAMES} frames downloaded")),
        "{all}"
    );
    let job = job_of(&out);
    let dl = work.path().join("dl");
    let reference_1 = plain_render(&shot, 1, work.path());
    let reference_4 = plain_render(&shot, FRAMES, work.path());
    let http = farm.http();
    for n in 1..=FRAMES {
        let bytes = std::fs::read(dl.join(format!("frame_{n:04}.png"))).unwrap();
        let resp = http
            .get(farm.url(&format!("/api/v1/jobs/{job}/frames/{n}")))
            .send()
            .unwrap();
        let sha = resp.headers()["x-content-sha256"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(BlobHash::of(&bytes).as_str(), sha, "frame {n}");
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT), "frame {n}");
        if n == 1 {
            assert!(
                pixels(&bytes) == pixels(&reference_1),
                "frame 1 differs from a plain render"
            );
        }
        if n == FRAMES {
            assert!(
                pixels(&bytes) == pixels(&reference_4),
                "frame {n} differs from a plain render"
            );
        }
    }
    // No temporary file left beside the frames.
    let mut names: Vec<String> = std::fs::read_dir(&dl)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "frame_0001.png",
            "frame_0002.png",
            "frame_0003.png",
            "frame_0004.png"
        ]
    );
    // The artist's files are byte for byte what they were (the plain renders only read).
    let refs: Vec<PathBuf> = (1..=FRAMES)
        .map(|n| work.path().join(format!("ref_{n:04}.png")))
        .collect();
    let _ = refs;
    assert!(snapshot(&base) == before, "the artist's files changed");

    // The same shot again: nothing to upload (Blender never saves a file twice with the
    // same bytes, so this is the client remembering the copies it uploaded).
    let held = blobs(&data);
    let out = corral(&["submit", shot_arg, "--upload", "--frames", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("0 B to upload (0 blobs the farm lacks)"),
        "{all}"
    );
    assert_eq!(blobs(&data), held, "{all}");

    // A missing texture: named, and nothing uploaded; --allow-missing goes through.
    let broken = base.join("artist/shot/broken.blend");
    let broken_arg = broken.to_str().unwrap();
    let out = corral(&["submit", broken_arg, "--upload", "--frames", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("missing: ") && l.contains("tex/gone.png")),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-missing"), "{stderr}");
    assert_eq!(blobs(&data), held, "nothing was uploaded");
    let out = corral(&[
        "submit",
        broken_arg,
        "--upload",
        "--allow-missing",
        "--frames",
        "1",
        "--wait",
        "--download",
        "dl_broken",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        blobs(&data) > held,
        "the broken shot's own file was uploaded"
    );
    assert!(work.path().join("dl_broken/frame_0001.png").is_file());

    // `corral fetch` downloads every frame again into another folder, then nothing.
    let out = corral(&["fetch", &job, "--to", "dl2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{FRAMES} frames downloaded")),
        "{}",
        text(&out)
    );
    for n in 1..=FRAMES {
        let name = format!("frame_{n:04}.png");
        assert_eq!(
            std::fs::read(work.path().join("dl2").join(&name)).unwrap(),
            std::fs::read(dl.join(&name)).unwrap()
        );
    }
    let out = corral(&["fetch", &job, "--to", "dl2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("0 frames downloaded (0 B), {FRAMES} already here")),
        "{}",
        text(&out)
    );
    // A frame changed here is fetched again; a bad job id is one line, no folder made.
    std::fs::write(work.path().join("dl2/frame_0002.png"), b"not the frame").unwrap();
    let out = corral(&["fetch", &job, "--to", "dl2"]);
    assert!(text(&out).contains("1 frame downloaded"), "{}", text(&out));
    let out = corral(&["fetch", "../etc"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!work.path().join("../etc").join("frame_0001.png").exists());
    assert!(snapshot(&base) == before, "the artist's files changed");
}
