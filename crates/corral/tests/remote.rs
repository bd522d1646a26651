//! The orchestrator's side of the remote-farm protocol (`docs/remote-farm-protocol.md`),
//! end to end: a real `corral orchestrator` and a real `corral node` that shares no folder
//! with the test (its scenes folder holds only the harness's default scene), real Blender.
//! The test uploads a scene with a texture in a subfolder through the HTTP API (asking
//! what is missing, one blob in two resumed parts, one wrong-hash upload refused), posts
//! its manifest, submits a job on it, and downloads every frame the node uploaded.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::uploads::{entries, header, pixels, plain_render};

use common::farm::{json_of, Farm};
use corral_core::manifest::{Manifest, ManifestFile};
use corral_core::BlobHash;
use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const JOB_DEADLINE: Duration = Duration::from_secs(240);
const WIDTH: u32 = 32;
const HEIGHT: u32 = 24;

/// Writes `shots/shot.blend`, a textured plane that turns, reading its texture at
/// `//../textures/wood.png` (a relative path out of the scene's folder, into the project).
const MAKE_PROJECT: &str = r#"
import bpy, os, sys
out = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
bpy.context.preferences.filepaths.save_version = 0
tex_path = os.path.join(out, "textures", "wood.png")
os.makedirs(os.path.dirname(tex_path), exist_ok=True)
img = bpy.data.images.new("wood.png", 16, 16, alpha=False)
px = []
for y in range(16):
    for x in range(16):
        on = ((x // 4) + (y // 4)) % 2 == 0
        px.extend((0.9, 0.5, 0.1, 1.0) if on else (0.1, 0.2, 0.8, 1.0))
img.pixels = px
img.filepath_raw = tex_path
img.file_format = "PNG"
img.save()
bpy.data.images.remove(img)
blend = os.path.join(out, "shots", "shot.blend")
os.makedirs(os.path.dirname(blend), exist_ok=True)
bpy.ops.wm.save_as_mainfile(filepath=blend, compress=False)
mat = bpy.data.materials.new("Wood")
mat.use_nodes = True
nodes = mat.node_tree.nodes
tex = nodes.new("ShaderNodeTexImage")
tex.interpolation = "Closest"
image = bpy.data.images.load(tex_path)
image.filepath = "//../textures/wood.png"
tex.image = image
emission = nodes.new("ShaderNodeEmission")
mat.node_tree.links.new(tex.outputs["Color"], emission.inputs["Color"])
mat.node_tree.links.new(emission.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
bpy.ops.mesh.primitive_plane_add(size=2)
plane = bpy.context.object
plane.data.materials.append(mat)
for frame, angle in ((1, 0.0), (5, 1.2)):
    plane.rotation_euler = (0, 0, angle)
    plane.keyframe_insert("rotation_euler", frame=frame)
bpy.ops.object.camera_add(location=(0, 0, 3))
bpy.context.scene.camera = bpy.context.object
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.render.resolution_x, scene.render.resolution_y = 32, 24
scene.render.resolution_percentage = 100
scene.render.image_settings.file_format = "PNG"
scene.frame_start, scene.frame_end = 1, 5
scene.cycles.device = "CPU"
scene.cycles.samples = 2
scene.cycles.use_adaptive_sampling = False
scene.cycles.use_denoising = False
for layer in scene.view_layers:
    layer.cycles.use_denoising = False
bpy.ops.wm.save_as_mainfile(filepath=blend, compress=False)
"#;

/// Generates the project in a folder of its own (never one a node reads).
fn make_project(dir: &Path) -> PathBuf {
    let script = dir.join("make_project.py");
    std::fs::write(&script, MAKE_PROJECT).unwrap();
    let project = dir.join("project");
    let out = std::process::Command::new("blender")
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(&project)
        .output()
        .unwrap();
    assert!(
        out.status.success() && project.join("shots/shot.blend").is_file(),
        "project generation failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    project
}

/// A problem answer: its status, and the field it names.
fn problem(resp: Response) -> (StatusCode, String, Value) {
    let ct = header(&resp, "content-type").unwrap_or_default();
    let (status, body) = json_of(resp);
    assert_eq!(ct, "application/problem+json", "{status}: {body}");
    let field = body["field"].as_str().unwrap_or("").to_string();
    (status, field, body)
}

/// The test's side of the blob API.
struct Api<'a> {
    farm: &'a Farm,
}

impl Api<'_> {
    fn blob_url(&self, hash: &str) -> String {
        self.farm.url(&format!("/api/v1/blobs/{hash}"))
    }

    fn missing(&self, hashes: &[&str]) -> Vec<String> {
        let (status, body) = self
            .farm
            .post("/api/v1/blobs/missing", &json!({ "hashes": hashes }));
        assert_eq!(status, StatusCode::OK, "{body}");
        body["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect()
    }

    /// `HEAD`: its status, `Content-Length` and `Upload-Offset`.
    fn head(&self, hash: &str) -> (StatusCode, Option<String>, Option<String>) {
        let resp = self.farm.http().head(self.blob_url(hash)).send().unwrap();
        (
            resp.status(),
            header(&resp, "content-length"),
            header(&resp, "upload-offset"),
        )
    }

    fn put(&self, hash: &str, offset: Option<u64>, total: u64, bytes: &[u8]) -> Response {
        let mut req = self
            .farm
            .http()
            .put(self.blob_url(hash))
            .header("Upload-Length", total.to_string())
            .body(bytes.to_vec());
        if let Some(offset) = offset {
            req = req.header("Upload-Offset", offset.to_string());
        }
        req.send().unwrap()
    }
}

/// Request headers, as (name, value).
type Headers<'a> = Vec<(&'a str, &'a str)>;

fn put_frame(
    farm: &Farm,
    job: &str,
    frame: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = farm
        .http()
        .put(farm.url(&format!("/api/v1/jobs/{job}/frames/{frame}")))
        .body(body.to_vec());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().unwrap()
}

#[test]
fn an_uploaded_scene_renders_on_a_node_and_its_frames_come_back() {
    let work = tempfile::tempdir().unwrap();
    let project = make_project(work.path());
    let shot = std::fs::read(project.join("shots/shot.blend")).unwrap();
    let wood = std::fs::read(project.join("textures/wood.png")).unwrap();
    let (h_shot, h_wood) = (BlobHash::of(&shot), BlobHash::of(&wood));
    let (h_shot, h_wood) = (h_shot.as_str(), h_wood.as_str());

    let farm = Farm::builder().nodes(1).start();
    let api = Api { farm: &farm };
    let data = farm.root.path().join("data");

    // The farm lacks both, and says so in the order asked.
    assert_eq!(api.missing(&[h_wood, h_shot]), [h_wood, h_shot]);
    assert_eq!(api.head(h_wood).0, StatusCode::NOT_FOUND);
    assert_eq!(api.head(h_wood).2.as_deref(), Some("0"));

    // Bytes that are not the texture, sent under its hash: 422 naming `hash`, nothing kept.
    let wrong = b"these bytes are not the texture";
    let (status, field, body) = problem(api.put(h_wood, None, wrong.len() as u64, wrong));
    assert_eq!(
        (status, field.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "hash"),
        "{body}"
    );
    let (status, _, offset) = api.head(h_wood);
    assert_eq!(
        (status, offset.as_deref()),
        (StatusCode::NOT_FOUND, Some("0"))
    );
    assert_eq!(entries(&data.join("blobs/partial")), Vec::<String>::new());

    // The scene in two parts: the first half is held, a part from the wrong offset is
    // refused with where to go on from, the second half completes it.
    let total = shot.len() as u64;
    let half = shot.len() / 2;
    let resp = api.put(h_shot, Some(0), total, &shot[..half]);
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "upload-offset"), Some(half.to_string()));
    assert_eq!(api.head(h_shot).2, Some(half.to_string()));
    assert_eq!(
        api.missing(&[h_shot]),
        [h_shot],
        "a partial blob is still missing"
    );
    let resp = api.put(h_shot, Some(0), total, &shot);
    assert_eq!(header(&resp, "upload-offset"), Some(half.to_string()));
    let (status, field, body) = problem(resp);
    assert_eq!(
        (status, field.as_str()),
        (StatusCode::CONFLICT, "Upload-Offset"),
        "{body}"
    );
    let resp = api.put(h_shot, Some(half as u64), total, &shot[half..]);
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (status, length, _) = api.head(h_shot);
    assert_eq!((status, length), (StatusCode::OK, Some(total.to_string())));
    assert_eq!(
        api.put(h_wood, None, wood.len() as u64, &wood).status(),
        StatusCode::CREATED
    );
    // Uploading a blob the farm holds is harmless.
    assert_eq!(
        api.put(h_wood, None, wood.len() as u64, &wood).status(),
        StatusCode::CREATED
    );
    assert_eq!(api.missing(&[h_shot, h_wood]), Vec::<String>::new());
    let blob = farm.http().get(api.blob_url(h_shot)).send().unwrap();
    assert_eq!(header(&blob, "x-content-sha256").as_deref(), Some(h_shot));
    assert_eq!(blob.bytes().unwrap().as_ref(), shot.as_slice());
    assert!(data.join("blobs").join(&h_shot[..2]).join(h_shot).is_file());
    assert_eq!(entries(&data.join("blobs/partial")), Vec::<String>::new());

    // Bad hashes and paths are 400 problems naming the field, and change nothing.
    let (status, field, _) = problem(api.put("ABC", None, 3, b"abc"));
    assert_eq!((status, field.as_str()), (StatusCode::BAD_REQUEST, "hash"));
    let upper = h_wood.to_uppercase();
    let (status, field, _) = problem(farm.http().get(api.blob_url(&upper)).send().unwrap());
    assert_eq!((status, field.as_str()), (StatusCode::BAD_REQUEST, "hash"));
    let resp = farm
        .http()
        .post(farm.url("/api/v1/blobs/missing"))
        .json(&json!({"hashes": [h_wood, "nope"]}))
        .send()
        .unwrap();
    let (status, field, body) = problem(resp);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(field.starts_with("hashes"), "{body}");
    let resp = api.put(h_wood, None, 0, b"");
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "a complete blob ignores the upload"
    );
    let (status, field, _) = problem(
        farm.http()
            .put(api.blob_url(&"0".repeat(64)))
            .body("x")
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, field.as_str()),
        (StatusCode::BAD_REQUEST, "Upload-Length")
    );

    // Manifests: one naming a blob the farm lacks lists it; a path out of the workspace is
    // refused; the real one is stored under its canonical hash, as often as it is sent.
    let file =
        |path: &str, hash: &str, size: usize| json!({"path": path, "hash": hash, "size": size});
    let absent = "7".repeat(64);
    let resp = farm
        .http()
        .post(farm.url("/api/v1/manifests"))
        .json(&json!({"root": "shots/shot.blend",
                      "files": [file("shots/shot.blend", h_shot, shot.len()),
                                file("textures/wood.png", &absent, 9)]}))
        .send()
        .unwrap();
    let (status, _, body) = problem(resp);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["missing"], json!([absent]));
    let resp = farm
        .http()
        .post(farm.url("/api/v1/manifests"))
        .json(&json!({"root": "shots/shot.blend",
                      "files": [file("shots/shot.blend", h_shot, shot.len()),
                                file("../textures/wood.png", h_wood, wood.len())]}))
        .send()
        .unwrap();
    let (status, field, _) = problem(resp);
    assert_eq!(
        (status, field.as_str()),
        (StatusCode::BAD_REQUEST, "files[1].path")
    );
    let manifest_body = json!({"root": "shots/shot.blend",
                               "files": [file("textures/wood.png", h_wood, wood.len()),
                                         file("shots/shot.blend", h_shot, shot.len())]});
    let expected = Manifest {
        root: "shots/shot.blend".into(),
        files: vec![
            ManifestFile {
                path: "shots/shot.blend".into(),
                hash: BlobHash::of(&shot),
                size: total,
            },
            ManifestFile {
                path: "textures/wood.png".into(),
                hash: BlobHash::of(&wood),
                size: wood.len() as u64,
            },
        ],
    };
    let (status, created) = farm.post("/api/v1/manifests", &manifest_body);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id, expected.id().as_str());
    // A second identical upload: nothing missing, the same manifest.
    assert_eq!(api.missing(&[h_shot, h_wood, &id]), Vec::<String>::new());
    let (status, again) = farm.post("/api/v1/manifests", &manifest_body);
    assert_eq!((status, &again["id"]), (StatusCode::CREATED, &json!(id)));
    let resp = farm
        .http()
        .get(farm.url(&format!("/api/v1/manifests/{id}")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.bytes().unwrap().as_ref(),
        expected.canonical_json().as_slice()
    );
    // A blob that is not a manifest is not served as one.
    assert_eq!(
        farm.http()
            .get(farm.url(&format!("/api/v1/manifests/{h_wood}")))
            .send()
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // A job on a manifest the farm lacks is refused naming `manifest`; one on this one runs.
    let resp = farm
        .http()
        .post(farm.url("/api/v1/jobs"))
        .json(&json!({"from": 1, "to": 5, "manifest": h_wood}))
        .send()
        .unwrap();
    let (status, field, _) = problem(resp);
    assert_eq!(
        (status, field.as_str()),
        (StatusCode::BAD_REQUEST, "manifest")
    );
    let job = farm.submit(&json!({"from": 1, "to": 5, "manifest": id, "chunk_size": 3}));
    let done = farm.wait_job_ended(&job, JOB_DEADLINE);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["manifest"], json!(id));
    assert_eq!(done["scene"], Value::Null);

    // Every frame comes back: its bytes hash to what the answer says, it is a PNG of the
    // scene's size, and frame 1 has the pixels of a plain render of the project as the
    // artist has it (so the texture was found in the node's workspace).
    let reference = plain_render(&project.join("shots/shot.blend"), 1, work.path());
    let mut first = Vec::new();
    for n in 1..=5 {
        let resp = farm
            .http()
            .get(farm.url(&format!("/api/v1/jobs/{job}/frames/{n}")))
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "frame {n}");
        assert_eq!(header(&resp, "content-type").as_deref(), Some("image/png"));
        let sha = header(&resp, "x-content-sha256").unwrap();
        assert_eq!(header(&resp, "etag"), Some(format!("\"{sha}\"")));
        let bytes = resp.bytes().unwrap().to_vec();
        assert_eq!(BlobHash::of(&bytes).as_str(), sha, "frame {n}");
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT), "frame {n}");
        if n == 1 {
            assert!(
                pixels(&bytes) == pixels(&reference),
                "frame 1 differs from a plain render"
            );
            first = bytes;
        }
        assert!(data
            .join(format!("frames/{job}/frame_{n:04}.png"))
            .is_file());
    }
    let resp = farm
        .http()
        .get(farm.url(&format!("/api/v1/jobs/{job}/frames/1")))
        .header("If-None-Match", format!("\"{}\"", BlobHash::of(&first)))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    // The paged list still answers, each frame done at its stored file; the dashboard
    // makes thumbnails of uploaded frames.
    let frames = farm.frames(&job);
    assert_eq!(frames.len(), 5);
    for f in &frames {
        assert_eq!(f["state"], "done", "{f}");
        let path = f["path"].as_str().unwrap();
        assert!(
            path.starts_with(data.join("frames").to_str().unwrap()),
            "{path}"
        );
    }
    let thumb = farm
        .http()
        .get(farm.url(&format!("/api/v1/jobs/{job}/frames/2/thumbnail")))
        .send()
        .unwrap();
    assert_eq!(thumb.status(), StatusCode::OK);
    image::load_from_memory(&thumb.bytes().unwrap()).unwrap();
    // Nothing was written to the farm's shared output folder, nor left on the node.
    assert_eq!(entries(&farm.output_dir()), Vec::<String>::new());
    let node_data = farm.nodes[0].dir.path().join("data");
    assert_eq!(entries(&node_data.join("workspaces")), Vec::<String>::new());
    assert_eq!(entries(&node_data.join("outbox")), Vec::<String>::new());

    // A frame under a stale lease, or under a task that is not the job's, is refused and
    // not stored; bad headers and frame numbers are 400 problems naming them.
    let task = done["tasks"][0]["id"].as_i64().unwrap();
    let intruder = b"not a frame of this render";
    let sha = BlobHash::of(intruder).to_string();
    let stale = format!("corral:{task}:9999");
    for tag in [stale.as_str(), "corral:999999:1"] {
        let headers = [
            ("X-Corral-Render", tag),
            ("X-Content-SHA256", sha.as_str()),
            ("Content-Type", "image/png"),
        ];
        let (status, field, body) = problem(put_frame(&farm, &job, "1", &headers, intruder));
        assert_eq!(
            (status, field.as_str()),
            (StatusCode::CONFLICT, "X-Corral-Render"),
            "{body}"
        );
    }
    let good = |tag: &'static str| {
        [
            ("X-Corral-Render", tag),
            ("X-Content-SHA256", sha.as_str()),
            ("Content-Type", "image/png"),
        ]
    };
    let mut cases: Vec<(&str, Headers, &str)> = vec![
        ("1", good("task-1").to_vec(), "X-Corral-Render"),
        ("1", good("corral:1:1")[1..].to_vec(), "X-Corral-Render"),
        ("x", good("corral:1:1").to_vec(), "frame"),
    ];
    let mut bad_sha = good("corral:1:1").to_vec();
    bad_sha[1].1 = "not-a-sha";
    cases.push(("1", bad_sha, "X-Content-SHA256"));
    let mut bad_type = good("corral:1:1").to_vec();
    bad_type[2].1 = "text/html";
    cases.push(("1", bad_type, "Content-Type"));
    for (frame, headers, named) in cases {
        let (status, field, body) = problem(put_frame(&farm, &job, frame, &headers, intruder));
        assert_eq!(
            (status, field.as_str()),
            (StatusCode::BAD_REQUEST, named),
            "{body}"
        );
    }
    let resp = farm
        .http()
        .get(farm.url(&format!("/api/v1/jobs/{job}/frames/1")))
        .send()
        .unwrap();
    assert_eq!(
        resp.bytes().unwrap().to_vec(),
        first,
        "frame 1 is unchanged"
    );
    assert_eq!(
        entries(&data.join(format!("frames/{job}/partial"))),
        Vec::<String>::new()
    );
}
