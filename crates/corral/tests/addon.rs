//! The Blender add-on (`addon/corral_submit`) in real Blender against real farms: built into
//! its zip by the script `make addon` runs, installed and enabled as an artist would, then
//! driven by `tests/addon_driver.py`. A `corral up` farm gets the scene uploaded; a farm of
//! separate processes gets it through the shared folder, or, with no shared folder, from
//! `corral submit --upload` (the real binary) with the texture it uses. Each job must
//! complete with every frame (on disk, or fetched from the farm), rendered from the scene as
//! it was open (an unsaved change included), and the open file and its folder must be left
//! exactly as they were. The error cases must each end in one
//! ERROR line and `CANCELLED`, never a traceback.

mod common;

use common::farm::Farm;
use common::up::Up;
use common::{assert_png, repo_root, scene, Scene};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Longest a Blender session of the driver may take (it waits for the job to end).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest the driver follows a job.
const JOB_TIMEOUT_SECS: u64 = 120;

/// An artist's machine: the add-on's zip, an open scene outside any farm folder, and
/// Blender's user folders and temporary folder, all in one temporary folder (nothing is
/// installed into this machine's Blender configuration).
struct Artist {
    dir: tempfile::TempDir,
    zip: PathBuf,
    scene: PathBuf,
}

impl Artist {
    /// An artist whose open file is a copy of [`Scene::Tiny`].
    fn new() -> Artist {
        Artist::with_scene(|scene_path| {
            std::fs::copy(scene(Scene::Tiny), scene_path).expect("copy the scene");
        })
    }

    /// An artist whose open file `make` writes (at the path it is given, in the artist's
    /// work folder, which `make` may fill further).
    fn with_scene(make: impl FnOnce(&Path)) -> Artist {
        let dir = tempfile::Builder::new()
            .prefix("corral-artist-")
            .tempdir()
            .expect("temp dir");
        let zip = dir.path().join("build/corral-addon.zip");
        // The same script `make addon` runs.
        let out = Command::new("python3")
            .arg(repo_root().join("scripts/build_addon.py"))
            .arg(&zip)
            .output()
            .expect("run python3 scripts/build_addon.py");
        assert!(
            out.status.success(),
            "building the add-on failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let work = dir.path().join("work");
        for sub in ["work", "user-scripts", "user-config", "tmp", "bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("artist folder");
        }
        // The "browser" the add-on's link opens (through Python's webbrowser and $BROWSER):
        // it writes down the address it was given.
        let browser = dir.path().join("bin/browser");
        std::fs::write(
            &browser,
            format!(
                "#!/usr/bin/env python3\nimport sys\nopen({:?}, 'a').write(sys.argv[1] + '\\n')\n",
                dir.path().join("opened.txt")
            ),
        )
        .expect("write the fake browser");
        std::fs::set_permissions(
            &browser,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("make the fake browser executable");
        let scene_path = work.join("shot.blend");
        make(&scene_path);
        Artist {
            dir,
            zip,
            scene: scene_path,
        }
    }

    /// The open file's bytes and modification time, and every file of its folder (hidden
    /// ones included) with its bytes.
    fn open_file(&self) -> OpenFile {
        let bytes = std::fs::read(&self.scene).expect("read the open file");
        let mtime = std::fs::metadata(&self.scene)
            .and_then(|m| m.modified())
            .expect("mtime of the open file");
        let folder = self.scene.parent().expect("work folder");
        let mut files = BTreeMap::new();
        let mut stack = vec![folder.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("list the work folder") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).expect("read a work file");
                    let name = path.strip_prefix(folder).expect("inside").to_path_buf();
                    files.insert(name, bytes);
                }
            }
        }
        OpenFile {
            bytes,
            mtime,
            folder: files,
        }
    }

    /// Runs the driver in Blender on the open file with `config`; returns its result and
    /// Blender's whole output. Fails on a crash, a timeout or a traceback.
    fn drive(&self, config: Value) -> (Value, String) {
        let mut config = config;
        config["zip"] = json!(self.zip);
        let config_path = self.dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).expect("write the driver config");
        let log_path = self.dir.path().join("blender.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/addon_driver.py");
        let mut child = Command::new("blender")
            .args(["-b", "--factory-startup"])
            .arg(&self.scene)
            .arg("--python")
            .arg(&driver)
            .arg("--")
            .arg(&config_path)
            .env("BLENDER_USER_SCRIPTS", self.dir.path().join("user-scripts"))
            .env("BLENDER_USER_CONFIG", self.dir.path().join("user-config"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            // `corral submit --upload` remembers its uploads here, not in the user's cache.
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("BROWSER", self.dir.path().join("bin/browser"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start Blender");
        let deadline = Instant::now() + DRIVER_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for Blender") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Blender did not finish in {DRIVER_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let output = std::fs::read_to_string(&log_path).expect("read Blender's output");
        assert!(status.success(), "Blender exited {status}:\n{output}");
        assert!(
            !output.contains("Traceback"),
            "Blender printed a traceback:\n{output}"
        );
        let result = output
            .lines()
            .find_map(|l| l.strip_prefix("CORRAL_ADDON_RESULT "))
            .unwrap_or_else(|| panic!("the driver printed no result:\n{output}"));
        let result = serde_json::from_str(result).expect("the driver's result is JSON");
        (result, output)
    }
}

/// The open file and its folder, as they were.
struct OpenFile {
    bytes: Vec<u8>,
    mtime: SystemTime,
    folder: BTreeMap<PathBuf, Vec<u8>>,
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("its address").port()
}

/// Asserts that the driver's error case `name` was refused with one ERROR line holding
/// `expected`.
fn assert_refused(result: &Value, name: &str, expected: &str) {
    let case = &result["errors"][name];
    assert_eq!(case[0], json!(["CANCELLED"]), "{name}: {case}");
    let text = case[1].as_str().unwrap_or_default().trim_end();
    assert!(
        text.starts_with("Error: ") && text.contains(expected),
        "{name}: expected an ERROR report with {expected:?}, got {text:?}"
    );
    assert!(!text.contains('\n'), "{name}: more than one line: {text:?}");
}

/// The submitted job completed with exactly `from..=to` on disk under `dir`, each frame
/// `width`x24 (the scene is 32x24 as saved; the driver changed the width without saving).
fn assert_job_rendered(result: &Value, dir: &Path, from: i64, to: i64, width: u32) {
    let job = &result["job"];
    assert_eq!(job["state"], "completed", "{result}");
    let total = (to - from + 1) as u64;
    assert_eq!(job["frames_total"], total, "{job}");
    assert_eq!(job["frames_done"], total, "{job}");
    assert_eq!(
        (job["from"].as_i64(), job["to"].as_i64()),
        (Some(from), Some(to))
    );
    assert_eq!(
        result["progress_text"],
        format!("completed · {total}/{total} frames (100%)")
    );
    for frame in from..=to {
        assert_png(&dir.join(format!("frame_{frame:04}.png")), width, 24);
    }
    for outside in [from - 1, to + 1] {
        let path = dir.join(format!("frame_{outside:04}.png"));
        assert!(!path.exists(), "{} was rendered", path.display());
    }
}

/// The panel shows the settings, the Submit button and the followed job with its link, and
/// the link opened the job's dashboard page.
fn assert_panel_shows(artist: &Artist, result: &Value, id: &str, page: &str) {
    let panel: Vec<&str> = result["panel"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for shown in [
        "prop:farm_url",
        "prop:token",
        "prop:shared_folder",
        "prop:corral_executable",
        "prop:use_scene_range",
        "prop:frame_start",
        "prop:frame_end",
        "prop:batch_size",
        "prop:priority",
        "prop:submit_anyway",
        "operator:corral.submit",
        &format!("label:Job {id}"),
        "label:completed · 3/3 frames (100%)",
        "operator:corral.open_job",
    ] {
        assert!(
            panel.contains(&shown),
            "the panel lacks {shown:?}: {panel:?}"
        );
    }
    assert_eq!(result["open_job"], json!(["FINISHED"]), "{result}");
    let opened = artist.dir.path().join("opened.txt");
    // The browser is started, not waited for.
    assert!(
        common::eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(&opened).unwrap_or_default() == format!("{page}\n")
        }),
        "the browser was given {:?}, not {page}",
        std::fs::read_to_string(&opened).unwrap_or_default()
    );
}

/// The open file is as it was: same bytes, same modification time, same path and unsaved
/// state inside Blender, and nothing written beside it.
fn assert_open_file_untouched(artist: &Artist, before: &OpenFile, result: &Value) {
    let after = artist.open_file();
    assert!(after.bytes == before.bytes, "the open file's bytes changed");
    assert_eq!(after.mtime, before.mtime, "the open file's mtime changed");
    assert_eq!(result["before"], result["after"], "{result}");
    assert_eq!(result["after"]["filepath"], json!(artist.scene), "{result}");
    assert_eq!(
        after.folder.keys().collect::<Vec<_>>(),
        before.folder.keys().collect::<Vec<_>>(),
        "the files in the open file's folder"
    );
    assert!(
        after.folder == before.folder,
        "a file in the open file's folder changed"
    );
}

#[test]
fn submits_to_corral_up_by_upload_follows_progress_and_refuses_bad_input() {
    let up = Up::start(1);
    let artist = Artist::new();
    let before = artist.open_file();
    let unreachable = format!("http://127.0.0.1:{}", closed_port());
    let (result, output) = artist.drive(json!({
        "errors": true,
        "unreachable": unreachable,
        "submit": {
            "farm": up.url, "token": "secret", "frames": [2, 4], "batch_size": 2,
            "priority": 5, "resolution_x": 40, "timeout": JOB_TIMEOUT_SECS,
        },
    }));

    // Installed where the test said, enabled, with the documented defaults.
    assert!(artist
        .dir
        .path()
        .join("user-scripts/addons/corral_submit/__init__.py")
        .is_file());
    assert_eq!(result["bl_info_blender"], json!([3, 4, 0]));
    assert_eq!(
        result["defaults"],
        json!({"farm_url": "http://127.0.0.1:4000", "use_scene_range": true,
               "batch_size": 0, "submit_anyway": false})
    );

    assert_refused(&result, "range", "Start frame 5 is after end frame 2");
    assert_refused(&result, "scheme", "must start with http:// or https://");
    assert_refused(
        &result,
        "unreachable",
        &format!("Cannot reach the farm at {unreachable}"),
    );
    assert_refused(
        &result,
        "missing",
        "1 file is missing: //textures/wood-that-is-not-there.png",
    );
    // Ticking "submit anyway" gets past the missing file, to the next problem.
    assert_refused(&result, "missing_anyway", "Cannot reach the farm");
    assert_refused(&result, "token", "refused the token (401");
    assert_refused(
        &result,
        "field",
        "The farm refused Batch size: must be at most 100000",
    );
    assert_eq!(result["fake_auth"], json!(["Bearer wrong", "Bearer good"]));
    assert_eq!(result["followed_after_errors"], false, "{result}");

    // The real submit.
    assert_eq!(result["submit"], json!([["FINISHED"], ""]), "{output}");
    let id = result["job_id"].as_str().expect("a job id").to_string();
    assert_eq!(result["dashboard_url"], format!("{}/jobs/{id}", up.url));
    let job = &result["job"];
    assert_eq!(job["scene"], "uploads/shot.blend", "{job}");
    assert_eq!(
        (job["chunk_size"].as_u64(), job["priority"].as_i64()),
        (Some(2), Some(5))
    );
    assert!(up.scenes().join("uploads/shot.blend").is_file());
    assert_job_rendered(&result, &up.out().join(&id), 2, 4, 40);
    assert_panel_shows(&artist, &result, &id, &format!("{}/jobs/{id}", up.url));
    assert_open_file_untouched(&artist, &before, &result);
    // The uploaded copy's temporary folder is gone.
    let leftovers: Vec<_> = std::fs::read_dir(artist.dir.path().join("tmp"))
        .expect("list the temporary folder")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("corral-"))
        .collect();
    assert!(leftovers.is_empty(), "left in TMPDIR: {leftovers:?}");
}

#[test]
fn submits_through_the_shared_folder_to_a_farm_without_uploads() {
    let farm = Farm::builder().nodes(1).scene(Scene::Tiny).start();
    let shared = farm.nodes[0].dir.path().join("scenes");
    let artist = Artist::new();
    let before = artist.open_file();
    let (result, output) = artist.drive(json!({
        "shared_errors": true,
        "submit": {
            "farm": farm.url(""), "shared_folder": shared, "frames": [1, 3],
            "batch_size": 0, "priority": 0, "resolution_x": 48, "timeout": JOB_TIMEOUT_SECS,
        },
    }));

    assert_refused(
        &result,
        "no_shared_folder",
        "This farm takes no uploads from Blender: set Corral executable",
    );
    assert_refused(&result, "shared_folder_gone", "does not exist");

    assert_eq!(result["submit"], json!([["FINISHED"], ""]), "{output}");
    let id = result["job_id"].as_str().expect("a job id").to_string();
    let job = &result["job"];
    // Batch size 0: the farm sizes the tasks.
    assert_eq!(job["chunk_size"], Value::Null, "{job}");
    let scene = job["scene"].as_str().expect("the job's scene");
    assert!(
        scene.starts_with("corral/shot-") && scene.ends_with(".blend"),
        "{scene}"
    );
    assert!(
        shared.join(scene).is_file(),
        "the copy is not in the shared folder"
    );
    assert_job_rendered(&result, &farm.output_dir().join(&id), 1, 3, 48);
    assert_open_file_untouched(&artist, &before, &result);
}

/// Writes `SCENE` (Cycles, 32x24, frames 1-5) whose camera sees only a plane textured with
/// `//tex/green.png`, a solid green image beside it in a subfolder (relative path, as in
/// submit_upload.rs), emitted as is (Standard view): a frame is green only when the node
/// found the texture (a missing image renders magenta).
const MAKE_TEXTURED_SCENE: &str = r#"
import bpy, os, sys
blend = sys.argv[sys.argv.index("--") + 1]
folder = os.path.dirname(blend)
png = os.path.join(folder, "tex", "green.png")
os.makedirs(os.path.dirname(png), exist_ok=True)
bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
bpy.context.preferences.filepaths.save_version = 0
img = bpy.data.images.new("green", 8, 8, alpha=False)
img.pixels = [0.05, 0.8, 0.1, 1.0] * 64
img.filepath_raw = png
img.file_format = "PNG"
img.save()
bpy.data.images.remove(img)
bpy.ops.wm.save_as_mainfile(filepath=blend, compress=False)
mat = bpy.data.materials.new("Green")
mat.use_nodes = True
nodes = mat.node_tree.nodes
tex = nodes.new("ShaderNodeTexImage")
tex.image = bpy.data.images.load(png)
tex.image.filepath = "//tex/green.png"
em = nodes.new("ShaderNodeEmission")
mat.node_tree.links.new(tex.outputs["Color"], em.inputs["Color"])
mat.node_tree.links.new(em.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
bpy.ops.mesh.primitive_plane_add(size=20)
bpy.context.object.data.materials.append(mat)
bpy.ops.object.camera_add(location=(0, 0, 3))
s = bpy.context.scene
s.camera = bpy.context.object
s.render.engine = "CYCLES"
s.render.resolution_x, s.render.resolution_y = 32, 24
s.render.resolution_percentage = 100
s.render.image_settings.file_format = "PNG"
s.view_settings.view_transform = "Standard"
s.frame_start, s.frame_end = 1, 5
s.cycles.device = "CPU"
s.cycles.samples = 2
s.cycles.use_denoising = False
bpy.ops.wm.save_as_mainfile(filepath=blend, compress=False)
"#;

fn make_textured_scene(blend: &Path) {
    let script = blend.with_file_name("make.py");
    std::fs::write(&script, MAKE_TEXTURED_SCENE).expect("write the scene script");
    let out = Command::new("blender")
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(blend)
        .output()
        .expect("run Blender to make the scene");
    std::fs::remove_file(&script).expect("remove the scene script");
    assert!(
        out.status.success() && blend.is_file(),
        "making the textured scene failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn uploads_with_corral_submit_to_a_farm_that_shares_no_folder() {
    let artist = Artist::with_scene(make_textured_scene);
    assert!(artist.scene.with_file_name("tex/green.png").is_file());
    let before = artist.open_file();
    // An orchestrator and a node that share no folder with the artist: the node gets the
    // scene's files from the orchestrator.
    let farm = Farm::builder().nodes(1).start();
    // A `corral` that fails as the real one does: reasons on stderr, the last one `error:`
    // (which names the token it was given in CORRAL_TOKEN).
    let failing = artist.dir.path().join("bin/corral-failing");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'missing: /x.png (file, named by a.blend)' >&2\n\
         echo \"error: the farm is full (token $CORRAL_TOKEN)\" >&2\nexit 1\n",
    )
    .expect("write the failing corral");
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("make it executable");
    let gone = artist.dir.path().join("bin/not-corral");
    let started = Instant::now();
    let (result, output) = artist.drive(json!({
        "upload_errors": {"corral_gone": gone, "corral_fails": failing},
        "submit": {
            "farm": farm.url(""), "corral": common::CORRAL, "frames": [1, 3],
            "batch_size": 2, "priority": 3, "resolution_x": 40, "timeout": JOB_TIMEOUT_SECS,
        },
    }));
    eprintln!(
        "Blender session with corral submit --upload: {:?}",
        started.elapsed()
    );

    assert_refused(
        &result,
        "corral_gone",
        &format!("Corral executable {} does not exist", gone.display()),
    );
    assert_refused(
        &result,
        "corral_fails",
        "corral submit failed: the farm is full (token corral_test_token)",
    );

    assert_eq!(result["submit"], json!([["FINISHED"], ""]), "{output}");
    let id = result["job_id"].as_str().expect("a job id").to_string();
    let job = &result["job"];
    assert_eq!(job["state"], "completed", "{result}");
    assert_eq!(
        (job["frames_total"].as_u64(), job["frames_done"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        (job["from"].as_i64(), job["to"].as_i64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        (job["chunk_size"].as_u64(), job["priority"].as_i64()),
        (Some(2), Some(3))
    );
    // Rendered from an uploaded workspace, not a scene path on the farm.
    assert!(job["manifest"].is_string(), "{job}");
    assert_eq!(job["scene"], Value::Null, "{job}");
    assert_eq!(result["progress_text"], "completed · 3/3 frames (100%)");
    assert_eq!(
        result["dashboard_url"],
        format!("{}/jobs/{id}", farm.url(""))
    );

    // Every frame is on the farm: 40 wide (the unsaved change), and green (the texture,
    // found on the node through its relative path).
    for n in 1..=3 {
        let resp = farm
            .http()
            .get(farm.url(&format!("/api/v1/jobs/{id}/frames/{n}")))
            .send()
            .expect("fetch a frame");
        assert_eq!(resp.status(), 200, "frame {n}");
        let bytes = resp.bytes().expect("the frame's bytes");
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .expect("a PNG")
            .to_rgb8();
        assert_eq!((img.width(), img.height()), (40, 24), "frame {n}");
        let [r, g, b] = img.get_pixel(20, 12).0;
        assert!(
            g > 150 && r < 100 && b < 100,
            "frame {n} is not green: {r},{g},{b}"
        );
    }
    for outside in [0, 4] {
        let resp = farm
            .http()
            .get(farm.url(&format!("/api/v1/jobs/{id}/frames/{outside}")))
            .send()
            .expect("ask for a frame");
        assert_eq!(resp.status(), 404, "frame {outside}");
    }
    // No copy left beside the open file (nor anything else changed there).
    assert_open_file_untouched(&artist, &before, &result);
}
