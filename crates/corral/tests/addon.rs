//! The Blender add-on (`addon/corral_submit`) in real Blender against real farms: built into
//! its zip by the script `make addon` runs, installed and enabled as an artist would, then
//! driven by `tests/addon_driver.py`. A `corral up` farm gets the scene uploaded; a farm of
//! separate processes gets it through the shared folder. Each job must complete with every
//! frame on disk, rendered from the scene as it was open (an unsaved change included), and
//! the open file must be left exactly as it was. The error cases must each end in one
//! ERROR line and `CANCELLED`, never a traceback.

mod common;

use common::farm::Farm;
use common::up::Up;
use common::{assert_png, repo_root, scene, Scene};
use serde_json::{json, Value};
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
    fn new() -> Artist {
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
        std::fs::copy(scene(Scene::Tiny), &scene_path).expect("copy the scene");
        Artist {
            dir,
            zip,
            scene: scene_path,
        }
    }

    /// The open file's bytes and modification time.
    fn open_file(&self) -> (Vec<u8>, SystemTime) {
        let bytes = std::fs::read(&self.scene).expect("read the open file");
        let mtime = std::fs::metadata(&self.scene)
            .and_then(|m| m.modified())
            .expect("mtime of the open file");
        (bytes, mtime)
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
fn assert_open_file_untouched(artist: &Artist, before: &(Vec<u8>, SystemTime), result: &Value) {
    let after = artist.open_file();
    assert!(after.0 == before.0, "the open file's bytes changed");
    assert_eq!(after.1, before.1, "the open file's mtime changed");
    assert_eq!(result["before"], result["after"], "{result}");
    assert_eq!(result["after"]["filepath"], json!(artist.scene), "{result}");
    let beside: Vec<_> = std::fs::read_dir(artist.scene.parent().expect("work folder"))
        .expect("list the work folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(beside, ["shot.blend"], "files beside the open file");
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
        "This farm takes no uploads: set Shared folder",
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
