//! The render node's side of the remote-farm protocol (`docs/remote-farm-protocol.md`),
//! with a real `corral node`, real Blender and real files: a job names its scene by a
//! manifest, the node fetches the manifest and blobs from the orchestrator, lays out a
//! workspace, renders it (a texture at a relative path included), and uploads each frame.
//!
//! The orchestrator here is a test double of its storage API only (manifests, blobs,
//! frame uploads, in `Double`), served in this process: the node is what is tested.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use common::{eventually, NodeProcess};
use corral_core::manifest::{Manifest, ManifestFile};
use corral_core::BlobHash;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A frame the double received.
#[derive(Debug, Clone)]
struct Received {
    job: String,
    frame: i64,
    tag: String,
    sha256: String,
    content_type: String,
    body: Vec<u8>,
}

/// What the orchestrator double holds and how it misbehaves.
#[derive(Default)]
struct Double {
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<String, Vec<u8>>,
    blob_gets: HashMap<String, usize>,
    frames: Vec<Received>,
    /// Answers to give a frame's uploads before storing it (e.g. `[503, 503]`, or `[409]`
    /// forever when the status is 409).
    refuse: HashMap<i64, VecDeque<u16>>,
}

type Shared = Arc<Mutex<Double>>;

async fn get_manifest(State(d): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    match d.lock().unwrap().manifests.get(&id) {
        Some(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.clone(),
        )
            .into_response(),
        None => AxumStatus::NOT_FOUND.into_response(),
    }
}

async fn get_blob(State(d): State<Shared>, UrlPath(hash): UrlPath<String>) -> Response {
    let mut d = d.lock().unwrap();
    *d.blob_gets.entry(hash.clone()).or_default() += 1;
    match d.blobs.get(&hash) {
        Some(body) => ([("X-Content-SHA256", hash)], body.clone()).into_response(),
        None => AxumStatus::NOT_FOUND.into_response(),
    }
}

async fn put_frame(
    State(d): State<Shared>,
    UrlPath((job, frame)): UrlPath<(String, i64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut d = d.lock().unwrap();
    if let Some(answers) = d.refuse.get_mut(&frame) {
        let status = match answers.front() {
            Some(409) => Some(409),
            Some(_) => answers.pop_front(),
            None => None,
        };
        if let Some(status) = status {
            let problem = json!({"type": "about:blank", "title": "refused", "status": status,
                                 "detail": format!("the double refuses frame {frame}")});
            return (AxumStatus::from_u16(status).unwrap(), axum::Json(problem)).into_response();
        }
    }
    let sha256 = header("x-content-sha256");
    if BlobHash::of(&body).as_str() != sha256 {
        return AxumStatus::UNPROCESSABLE_ENTITY.into_response();
    }
    d.frames.push(Received {
        job,
        frame,
        tag: header("x-corral-render"),
        sha256,
        content_type: header("content-type"),
        body: body.to_vec(),
    });
    AxumStatus::CREATED.into_response()
}

/// The double, served on a port of its own from a runtime of its own.
struct Orchestrator {
    url: String,
    state: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl Orchestrator {
    fn start() -> Orchestrator {
        let state = Shared::default();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = axum::Router::new()
            .route("/api/v1/manifests/{id}", get(get_manifest))
            .route("/api/v1/blobs/{hash}", get(get_blob))
            .route("/api/v1/jobs/{job}/frames/{frame}", put(put_frame))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(Arc::clone(&state));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Orchestrator {
            url,
            state,
            _runtime: runtime,
        }
    }

    fn double(&self) -> std::sync::MutexGuard<'_, Double> {
        self.state.lock().unwrap()
    }

    /// Stores `files` (workspace path, bytes) as blobs and their manifest; returns its id.
    fn publish(&self, root: &str, files: &[(&str, Vec<u8>)]) -> String {
        let mut d = self.double();
        let manifest = Manifest {
            root: root.into(),
            files: files
                .iter()
                .map(|(path, bytes)| {
                    let hash = BlobHash::of(bytes);
                    d.blobs.insert(hash.to_string(), bytes.clone());
                    ManifestFile {
                        path: (*path).into(),
                        hash,
                        size: bytes.len() as u64,
                    }
                })
                .collect(),
        };
        let id = manifest.id().to_string();
        d.manifests.insert(id.clone(), manifest.canonical_json());
        id
    }
}

/// Writes a project with a textured, moving plane: `shots/shot.blend` reads its texture
/// at `//../textures/wood.png` (a relative path that climbs out of the scene's folder,
/// into the workspace); `other/wood.png` is a second texture of another pattern.
const MAKE_PROJECT: &str = r#"
import bpy, os, sys
out = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
bpy.context.preferences.filepaths.save_version = 0

def image(path, a, b):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = bpy.data.images.new(os.path.basename(path), 16, 16, alpha=False)
    px = []
    for y in range(16):
        for x in range(16):
            px.extend((*(a if ((x // 4) + (y // 4)) % 2 == 0 else b), 1.0))
    img.pixels = px
    img.filepath_raw = path
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)

image(os.path.join(out, "textures", "wood.png"), (0.9, 0.5, 0.1), (0.1, 0.2, 0.8))
image(os.path.join(out, "other", "wood.png"), (0.1, 0.9, 0.2), (0.8, 0.1, 0.6))
blend = os.path.join(out, "shots", "shot.blend")
os.makedirs(os.path.dirname(blend), exist_ok=True)
bpy.ops.wm.save_as_mainfile(filepath=blend, compress=False)

mat = bpy.data.materials.new("Wood")
mat.use_nodes = True
nodes = mat.node_tree.nodes
tex = nodes.new("ShaderNodeTexImage")
tex.interpolation = "Closest"
img = bpy.data.images.load(os.path.join(out, "textures", "wood.png"))
img.filepath = "//../textures/wood.png"
tex.image = img
emission = nodes.new("ShaderNodeEmission")
mat.node_tree.links.new(tex.outputs["Color"], emission.inputs["Color"])
mat.node_tree.links.new(emission.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
bpy.ops.mesh.primitive_plane_add(size=2)
plane = bpy.context.object
plane.data.materials.append(mat)
for frame, angle in ((1, 0.0), (10, 1.5)):
    plane.rotation_euler = (0, 0, angle)
    plane.keyframe_insert("rotation_euler", frame=frame)
bpy.ops.object.camera_add(location=(0, 0, 3))
bpy.context.scene.camera = bpy.context.object

scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.render.resolution_x, scene.render.resolution_y = 64, 48
scene.render.resolution_percentage = 100
scene.render.image_settings.file_format = "PNG"
scene.frame_start, scene.frame_end = 1, 10
scene.cycles.device = "CPU"
scene.cycles.samples = 4
scene.cycles.use_adaptive_sampling = False
scene.cycles.use_denoising = False
for layer in scene.view_layers:
    layer.cycles.use_denoising = False
bpy.ops.wm.save_as_mainfile(filepath=blend, compress=False)
"#;

/// The generated project (made once per test binary).
fn project() -> PathBuf {
    static MADE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = made.as_ref() {
        return dir.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("remote-project-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("make_project.py");
    std::fs::write(&script, MAKE_PROJECT).unwrap();
    let out = std::process::Command::new("blender")
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(dir.join("project"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && dir.join("project/shots/shot.blend").is_file(),
        "project generation failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.join("project");
    *made = Some(project.clone());
    project
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Renders frames `from`-`to` of `blend` with plain Blender (what a cold node runs), into
/// `out`; returns the frames' files.
fn plain_render(blend: &Path, (from, to): (i64, i64), out: &Path) -> Vec<PathBuf> {
    let status = std::process::Command::new("blender")
        .arg("-b")
        .arg(blend)
        .arg("-o")
        .arg(out.join("ref_####"))
        .args([
            "-E",
            "CYCLES",
            "-s",
            &from.to_string(),
            "-e",
            &to.to_string(),
        ])
        .args(["-j", "1", "-t", "1", "-a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    (from..=to)
        .map(|f| out.join(format!("ref_{f:04}.png")))
        .collect()
}

fn pixels(png: &[u8]) -> Vec<u8> {
    image::load_from_memory(png).unwrap().to_rgba8().into_raw()
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn post_job(node: &NodeProcess, body: &Value) -> (StatusCode, Value) {
    let resp = client()
        .post(format!("{}/job", node.url))
        .json(body)
        .send()
        .unwrap();
    (resp.status(), resp.json().unwrap())
}

fn wait_done(node: &NodeProcess, id: &str) -> Value {
    let http = client();
    let mut since = 0u64;
    for _ in 0..600 {
        let resp = http
            .get(format!("{}/job/{id}?wait=20&since={since}", node.url))
            .send()
            .unwrap();
        let status = resp.status();
        let view: Value = resp.json().unwrap();
        if status == StatusCode::OK {
            return view;
        }
        since = view["version"].as_u64().unwrap();
    }
    panic!("job {id} did not end");
}

/// Starts a node joined to `orchestrator`, in `mode`.
fn node(orchestrator: &Orchestrator, mode: &str) -> NodeProcess {
    NodeProcess::start(&["--orchestrator", &orchestrator.url, "--render-mode", mode])
}

/// A job on manifest `manifest`, frames delivered by upload under `job` and `tag`.
fn upload_job(manifest: &str, job: &str, tag: &str, (from, to): (i64, i64)) -> Value {
    json!({"from": from, "to": to, "manifest": manifest, "deliver": "upload",
           "job": job, "tag": tag, "output": format!("{job}/frame_####")})
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Renders an uploaded scene with its texture, then a second manifest sharing its scene
/// file but with another texture, and checks what reached the orchestrator.
fn uploaded_scene_renders_and_its_frames_arrive(mode: &str) {
    let project = project();
    let orchestrator = Orchestrator::start();
    let shot = read(&project.join("shots/shot.blend"));
    let wood = read(&project.join("textures/wood.png"));
    let other = read(&project.join("other/wood.png"));
    let first = orchestrator.publish(
        "shots/shot.blend",
        &[
            ("shots/shot.blend", shot.clone()),
            ("textures/wood.png", wood),
        ],
    );
    let second = orchestrator.publish(
        "shots/shot.blend",
        &[
            ("shots/shot.blend", shot.clone()),
            ("textures/wood.png", other.clone()),
        ],
    );
    let node = node(&orchestrator, mode);
    let job = "01a2202f-24a9-70e4-8413-dcefffffc63e";
    let tag = "corral:17:3";

    let (status, accepted) = post_job(&node, &upload_job(&first, job, tag, (1, 3)));
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["scene"], format!("manifest:{first}"));
    let done = wait_done(&node, accepted["id"].as_str().unwrap());
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["frames_done"], 3);
    let outputs: Vec<(i64, String)> = done["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["frame"].as_i64().unwrap(),
                o["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outputs,
        [
            (1, "frame_0001.png"),
            (2, "frame_0002.png"),
            (3, "frame_0003.png")
        ]
        .map(|(f, p)| (f, p.to_string()))
    );

    // What the orchestrator received: each frame once, under the job and the render's
    // tag, its hash right, and the pixels of a plain render of the project as the artist
    // has it (so the texture was found at its relative path in the workspace).
    let reference = tempfile::tempdir().unwrap();
    let expected = plain_render(&project.join("shots/shot.blend"), (1, 3), reference.path());
    {
        let d = orchestrator.double();
        let mut frames = d.frames.clone();
        frames.sort_by_key(|f| f.frame);
        assert_eq!(
            frames.iter().map(|f| f.frame).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        for (received, expected) in frames.iter().zip(&expected) {
            assert_eq!(received.job, job);
            assert_eq!(received.tag, tag);
            assert_eq!(received.content_type, "image/png");
            assert_eq!(received.sha256, BlobHash::of(&received.body).as_str());
            assert!(
                pixels(&received.body) == pixels(&read(expected)),
                "frame {} differs from a plain render",
                received.frame
            );
        }
    }
    // The texture matters: without it the scene renders otherwise.
    let bare = tempfile::tempdir().unwrap();
    std::fs::create_dir(bare.path().join("shots")).unwrap();
    std::fs::write(bare.path().join("shots/shot.blend"), &shot).unwrap();
    let untextured = plain_render(&bare.path().join("shots/shot.blend"), (1, 1), bare.path());
    assert!(pixels(&read(&untextured[0])) != pixels(&read(&expected[0])));

    // Nothing stays behind: no workspace, no undelivered frame, nothing under --output;
    // the two blobs stay cached.
    let data = node.dir.path().join("data");
    assert_eq!(entries(&data.join("workspaces")), Vec::<String>::new());
    assert_eq!(entries(&data.join("outbox")), Vec::<String>::new());
    assert_eq!(entries(&node.out_dir()), Vec::<String>::new());
    assert_eq!(entries(&data.join("cache/partial")), Vec::<String>::new());
    let log = client()
        .get(format!(
            "{}/job/{}/log",
            node.url,
            done["id"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(log.contains("0 blob(s) from the cache, 2 fetched"), "{log}");

    // Another manifest: the same scene file (cached, so not fetched again) with another
    // texture. In warm mode the worker must open the new workspace's scene, not keep the
    // first one loaded with its texture.
    let (status, accepted) = post_job(&node, &upload_job(&second, job, "corral:18:1", (2, 2)));
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let done = wait_done(&node, accepted["id"].as_str().unwrap());
    assert_eq!(done["state"], "completed", "{done}");
    let recoloured = tempfile::tempdir().unwrap();
    for (path, bytes) in [("shots/shot.blend", &shot), ("textures/wood.png", &other)] {
        let target = recoloured.path().join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let expected2 = plain_render(
        &recoloured.path().join("shots/shot.blend"),
        (2, 2),
        recoloured.path(),
    );
    let d = orchestrator.double();
    let received = d.frames.iter().find(|f| f.tag == "corral:18:1").unwrap();
    assert_eq!(received.frame, 2);
    assert!(pixels(&received.body) == pixels(&read(&expected2[0])));
    assert!(pixels(&received.body) != pixels(&read(&expected[1])));
    assert_eq!(
        d.blob_gets.get(BlobHash::of(&shot).as_str()),
        Some(&1),
        "the scene file was fetched again: {:?}",
        d.blob_gets
    );
    assert_eq!(entries(&data.join("workspaces")), Vec::<String>::new());
}

#[test]
fn an_uploaded_scene_renders_cold_and_its_frames_are_uploaded() {
    uploaded_scene_renders_and_its_frames_arrive("cold");
}

#[test]
fn an_uploaded_scene_renders_warm_and_its_frames_are_uploaded() {
    uploaded_scene_renders_and_its_frames_arrive("warm");
}

/// A fetch that fails (the blob's bytes are not its hash, a blob or manifest the
/// orchestrator lacks, a blob larger than the manifest says) fails the job with the reason
/// and leaves no workspace and no partial download.
#[test]
fn a_failed_fetch_fails_the_job_and_leaves_nothing() {
    let orchestrator = Orchestrator::start();
    let shot = read(&project().join("shots/shot.blend"));
    let node = node(&orchestrator, "cold");
    let job = "01a2202f-24a9-70e4-8413-dcefffffc63e";

    let tampered = orchestrator.publish(
        "a.blend",
        &[("a.blend", shot.clone()), ("t.png", b"texture".to_vec())],
    );
    let lacking = orchestrator.publish(
        "a.blend",
        &[("a.blend", shot.clone()), ("t.png", b"lost".to_vec())],
    );
    let oversized = orchestrator.publish(
        "a.blend",
        &[("a.blend", shot.clone()), ("t.png", b"short".to_vec())],
    );
    {
        let mut d = orchestrator.double();
        let texture = BlobHash::of(b"texture").to_string();
        // The same length, other bytes.
        d.blobs.insert(texture, b"textur3".to_vec());
        d.blobs.remove(BlobHash::of(b"lost").as_str());
        d.blobs.insert(
            BlobHash::of(b"short").to_string(),
            b"short and then some".to_vec(),
        );
    }
    let cases = [
        (tampered, "came with other content"),
        (lacking, "is not on the orchestrator (404)"),
        (oversized, "larger than the manifest's 5 bytes"),
        ("ab".repeat(32), "manifest abab"),
    ];
    for (manifest, expected) in cases {
        let (status, accepted) = post_job(&node, &upload_job(&manifest, job, "corral:1:1", (1, 1)));
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let done = wait_done(&node, accepted["id"].as_str().unwrap());
        assert_eq!(done["state"], "failed", "{done}");
        let failure = done["failure"].as_str().unwrap();
        assert!(failure.starts_with("cannot fetch the scene: "), "{failure}");
        assert!(failure.contains(expected), "{failure}");
        let data = node.dir.path().join("data");
        assert_eq!(entries(&data.join("workspaces")), Vec::<String>::new());
        assert_eq!(entries(&data.join("cache/partial")), Vec::<String>::new());
    }
    assert!(orchestrator.double().frames.is_empty());
    // The scene's own blob, fetched intact for the first job, stayed cached: fetched once.
    assert_eq!(
        orchestrator
            .double()
            .blob_gets
            .get(BlobHash::of(&shot).as_str()),
        Some(&1)
    );
}

/// Frames that cannot be delivered: a transient refusal is retried and the render
/// completes; a `409` (the lease moved on) stops the render; a lasting refusal fails it.
#[test]
fn frame_uploads_are_retried_and_refusals_stop_the_render() {
    let orchestrator = Orchestrator::start();
    let project = project();
    let files = [
        ("shots/shot.blend", read(&project.join("shots/shot.blend"))),
        (
            "textures/wood.png",
            read(&project.join("textures/wood.png")),
        ),
    ];
    let manifest = orchestrator.publish("shots/shot.blend", &files);
    let node = node(&orchestrator, "warm");
    let job = "01a2202f-24a9-70e4-8413-dcefffffc63e";

    orchestrator
        .double()
        .refuse
        .insert(1, VecDeque::from([503, 502]));
    let (_, accepted) = post_job(&node, &upload_job(&manifest, job, "corral:1:1", (1, 2)));
    let done = wait_done(&node, accepted["id"].as_str().unwrap());
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["frames_done"], 2);
    let tail = done["log_tail"].to_string();
    assert!(tail.contains("upload attempt 2 failed"), "{tail}");

    orchestrator.double().frames.clear();
    orchestrator
        .double()
        .refuse
        .insert(4, VecDeque::from([409]));
    let (_, accepted) = post_job(&node, &upload_job(&manifest, job, "corral:2:1", (4, 30)));
    let done = wait_done(&node, accepted["id"].as_str().unwrap());
    assert_eq!(done["state"], "cancelled", "{done}");
    let failure = done["failure"].as_str().unwrap();
    assert!(
        failure.contains("409") && failure.contains("lease moved on"),
        "{failure}"
    );
    assert_eq!(done["frames_done"], 0, "{done}");
    assert!(
        done["current_frame"].as_i64().unwrap() < 30,
        "the render was not stopped: {done}"
    );

    orchestrator
        .double()
        .refuse
        .insert(5, VecDeque::from([403]));
    let (_, accepted) = post_job(&node, &upload_job(&manifest, job, "corral:3:1", (5, 5)));
    let done = wait_done(&node, accepted["id"].as_str().unwrap());
    assert_eq!(done["state"], "failed", "{done}");
    let failure = done["failure"].as_str().unwrap();
    assert!(
        failure.contains("frame 5 could not be delivered after 1 attempt(s)"),
        "{failure}"
    );
    let data = node.dir.path().join("data");
    assert!(eventually(Duration::from_secs(5), || entries(
        &data.join("outbox")
    )
    .is_empty()));
    assert_eq!(entries(&data.join("workspaces")), Vec::<String>::new());
}

/// Jobs a node cannot take are refused at once, naming the field: an uploaded scene or
/// frame upload on a node with no orchestrator, an upload without its job or tag.
#[test]
fn uploaded_scene_requests_are_validated() {
    let blend = common::scene(common::Scene::Small);
    let lone = NodeProcess::start(&["--blend", blend.to_str().unwrap(), "--render-mode", "cold"]);
    let manifest = "ab".repeat(32);
    let job = "01a2202f-24a9-70e4-8413-dcefffffc63e";
    let cases = [
        (
            json!({"from": 1, "to": 1, "manifest": manifest}),
            "manifest",
        ),
        (
            json!({"from": 1, "to": 1, "deliver": "upload", "job": job, "tag": "t"}),
            "deliver",
        ),
        (json!({"from": 1, "to": 1, "manifest": "AB"}), "manifest"),
        (json!({"from": 1, "to": 1, "deliver": "upload"}), "job"),
        (
            json!({"from": 1, "to": 1, "deliver": "carrier-pigeon"}),
            "deliver",
        ),
    ];
    for (body, field) in &cases {
        let (status, problem) = post_job(&lone, body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["field"], *field, "{body}: {problem}");
    }
    let orchestrator = Orchestrator::start();
    let joined = node(&orchestrator, "cold");
    let (status, problem) = post_job(
        &joined,
        &json!({"from": 1, "to": 1, "manifest": manifest, "deliver": "upload", "job": job}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "tag", "{problem}");
    let (_, jobs) = {
        let resp = client().get(format!("{}/jobs", joined.url)).send().unwrap();
        (resp.status(), resp.json::<Value>().unwrap())
    };
    assert_eq!(jobs, json!([]));
}
