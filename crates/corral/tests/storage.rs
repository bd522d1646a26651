//! The orchestrator's upload storage over time and under pressure
//! (`docs/remote-farm-protocol.md`): blobs no job names are collected after
//! `--blob-retention` since their last use, while blobs jobs name (and blobs clients keep
//! asking about) stay; stale unfinished uploads of blobs and frames are swept; and a disk
//! short of `--min-free-space` refuses blob, manifest and frame uploads with a 507 problem
//! before any byte is stored, while everything accepted before stays served. Real
//! `corral orchestrator` and `corral node` processes, real SQLite, real Blender.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::uploads::{entries, header};

use common::farm::{json_of, Farm};
use common::{eventually, scene, Scene};
use corral_core::BlobHash;
use reqwest::blocking::Response;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn put_blob(farm: &Farm, bytes: &[u8], total: u64) -> Response {
    let hash = BlobHash::of(bytes);
    put_part(farm, hash.as_str(), bytes, 0, total)
}

fn put_part(farm: &Farm, hash: &str, bytes: &[u8], offset: u64, total: u64) -> Response {
    farm.http()
        .put(farm.url(&format!("/api/v1/blobs/{hash}")))
        .header("Upload-Offset", offset.to_string())
        .header("Upload-Length", total.to_string())
        .body(bytes.to_vec())
        .send()
        .unwrap()
}

/// `HEAD`: its status and `Upload-Offset`.
fn head(farm: &Farm, hash: &str) -> (StatusCode, Option<String>) {
    let resp = farm
        .http()
        .head(farm.url(&format!("/api/v1/blobs/{hash}")))
        .send()
        .unwrap();
    (resp.status(), header(&resp, "upload-offset"))
}

fn missing(farm: &Farm, hashes: &[&str]) -> Vec<String> {
    let (status, body) = farm.post("/api/v1/blobs/missing", &json!({ "hashes": hashes }));
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body["missing"].clone()).unwrap()
}

fn get_blob(farm: &Farm, hash: &str) -> (StatusCode, Vec<u8>) {
    let resp = farm
        .http()
        .get(farm.url(&format!("/api/v1/blobs/{hash}")))
        .send()
        .unwrap();
    (resp.status(), resp.bytes().unwrap().to_vec())
}

fn blob_file(data: &Path, hash: &str) -> std::path::PathBuf {
    data.join("blobs").join(&hash[..2]).join(hash)
}

#[test]
fn unused_blobs_and_stale_uploads_are_collected_and_used_ones_kept() {
    let started = Instant::now();
    // A retention of 3 s: the collector runs every second and takes what has been
    // unused for 3 s (plus its 2 s margin).
    let farm = Farm::builder()
        .nodes(0)
        .orchestrator_args(&["--blob-retention", "3s"])
        .start();
    let data = farm.root.path().join("data");

    // Two files of a scene, its manifest and a job on it (no node: it stays queued).
    let (scene_bytes, tex) = (b"scene bytes".to_vec(), b"texture bytes".to_vec());
    let (h_scene, h_tex) = (BlobHash::of(&scene_bytes), BlobHash::of(&tex));
    for bytes in [&scene_bytes, &tex] {
        assert_eq!(
            put_blob(&farm, bytes, bytes.len() as u64).status(),
            StatusCode::CREATED
        );
    }
    let manifest = json!({"root": "shot.blend", "files": [
        {"path": "shot.blend", "hash": h_scene, "size": scene_bytes.len()},
        {"path": "tex/t.png", "hash": h_tex, "size": tex.len()}]});
    let (status, created) = farm.post("/api/v1/manifests", &manifest);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let m = created["id"].as_str().unwrap().to_string();
    let job = farm.submit(&json!({"from": 1, "to": 2, "manifest": m}));

    // A blob no job names, one a client keeps asking about, and an unfinished upload.
    let unused = b"uploaded, never named".to_vec();
    let h_unused = BlobHash::of(&unused);
    assert_eq!(
        put_blob(&farm, &unused, unused.len() as u64).status(),
        StatusCode::CREATED
    );
    let asked = b"asked about, then named".to_vec();
    let h_asked = BlobHash::of(&asked);
    assert_eq!(
        put_blob(&farm, &asked, asked.len() as u64).status(),
        StatusCode::CREATED
    );
    let whole = b"an upload that stops half way".to_vec();
    let h_partial = BlobHash::of(&whole);
    let resp = put_part(
        &farm,
        h_partial.as_str(),
        &whole[..10],
        0,
        whole.len() as u64,
    );
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&farm, h_partial.as_str()).1.as_deref(), Some("10"));
    // A frame upload a crash left behind.
    let frame_partial = data.join(format!("frames/{job}/partial/frame_1.1.0.png"));
    std::fs::create_dir_all(frame_partial.parent().unwrap()).unwrap();
    std::fs::write(&frame_partial, b"half a frame").unwrap();

    // For 9 s the client asks about `asked` each second: it is used, so it stays; the
    // unused blob and the stale uploads go.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        assert_eq!(missing(&farm, &[h_asked.as_str()]), Vec::<String>::new());
        std::thread::sleep(Duration::from_millis(900));
    }
    assert_eq!(
        head(&farm, h_unused.as_str()),
        (StatusCode::NOT_FOUND, Some("0".into())),
        "the unused blob is collected"
    );
    assert!(!blob_file(&data, h_unused.as_str()).exists());
    assert_eq!(
        head(&farm, h_partial.as_str()),
        (StatusCode::NOT_FOUND, Some("0".into())),
        "the stale unfinished upload is swept"
    );
    assert_eq!(entries(&data.join("blobs/partial")), Vec::<String>::new());
    assert!(!frame_partial.exists(), "the stale partial frame is swept");
    // What the job names, and what was kept in use, is all there, byte for byte.
    for (hash, bytes) in [(&h_scene, &scene_bytes), (&h_tex, &tex), (&h_asked, &asked)] {
        assert_eq!(
            get_blob(&farm, hash.as_str()),
            (StatusCode::OK, bytes.clone())
        );
    }
    let resp = farm
        .http()
        .get(farm.url(&format!("/api/v1/manifests/{m}")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The job's manifest still takes jobs.
    let again = farm.submit(&json!({"from": 1, "to": 1, "manifest": m}));
    assert_eq!(farm.job(&again)["state"], "queued");

    // Once nobody asks about it, it goes too (watched on disk: a `HEAD` is a use).
    let asked_file = blob_file(&data, h_asked.as_str());
    assert!(
        eventually(Duration::from_secs(15), || !asked_file.exists()),
        "a blob unused for its retention is collected"
    );
    assert_eq!(get_blob(&farm, h_scene.as_str()).0, StatusCode::OK);
    // A manifest naming a collected blob lists it as missing (the client uploads again).
    let resp = farm
        .http()
        .post(farm.url("/api/v1/manifests"))
        .json(&json!({"root": "a.blend", "files": [
            {"path": "a.blend", "hash": h_asked, "size": asked.len()}]}))
        .send()
        .unwrap();
    let (status, body) = json_of(resp);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["missing"], json!([h_asked]));
    println!("collection test took {:?}", started.elapsed());
}

fn frame_bytes(farm: &Farm, job: &str, n: i64) -> Vec<u8> {
    let resp = farm
        .http()
        .get(farm.url(&format!("/api/v1/jobs/{job}/frames/{n}")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "frame {n} of {job}");
    resp.bytes().unwrap().to_vec()
}

/// A problem answer with its status.
fn problem(resp: Response) -> (StatusCode, Value) {
    let ct = header(&resp, "content-type").unwrap_or_default();
    let (status, body) = json_of(resp);
    assert_eq!(ct, "application/problem+json", "{status}: {body}");
    (status, body)
}

#[test]
fn a_disk_short_of_its_reserve_refuses_uploads_with_507_and_loses_nothing() {
    let started = Instant::now();
    let mut farm = Farm::builder()
        .nodes(1)
        .orchestrator_args(&["--max-attempts", "1"])
        .start();
    let data = farm.root.path().join("data");
    let blend = std::fs::read(scene(Scene::Tiny)).unwrap();
    let h_blend = BlobHash::of(&blend);
    assert_eq!(
        put_blob(&farm, &blend, blend.len() as u64).status(),
        StatusCode::CREATED
    );
    let (status, created) = farm.post(
        "/api/v1/manifests",
        &json!({"root": "scene.blend", "files": [
            {"path": "scene.blend", "hash": h_blend, "size": blend.len()}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let m = created["id"].as_str().unwrap().to_string();
    let first = farm.submit(&json!({"from": 1, "to": 2, "manifest": m}));
    let done = farm.wait_job_ended(&first, Duration::from_secs(120));
    assert_eq!(done["state"], "completed", "{done}");
    let frames_before: Vec<Vec<u8>> = (1..=2).map(|n| frame_bytes(&farm, &first, n)).collect();

    // The same farm, now asked to keep more free space than any disk has.
    farm.set_orchestrator_args(&["--max-attempts", "1", "--min-free-space", "1000000T"]);
    farm.kill_and_restart_orchestrator(Duration::from_millis(100));
    farm.wait_nodes_up(1);

    // A new blob: 507 with a problem body before a byte is stored, nothing held.
    let new = b"a blob that finds no room".to_vec();
    let h_new = BlobHash::of(&new);
    let resp = put_blob(&farm, &new, new.len() as u64);
    assert_eq!(header(&resp, "upload-offset").as_deref(), Some("0"));
    let (status, body) = problem(resp);
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("--min-free-space"),
        "{body}"
    );
    assert_eq!(
        head(&farm, h_new.as_str()),
        (StatusCode::NOT_FOUND, Some("0".into()))
    );
    assert_eq!(entries(&data.join("blobs/partial")), Vec::<String>::new());
    // A blob the farm holds is still "uploaded" at once: nothing needs writing.
    assert_eq!(
        put_blob(&farm, &blend, blend.len() as u64).status(),
        StatusCode::CREATED
    );
    // A new manifest: 507 too.
    let resp = farm
        .http()
        .post(farm.url("/api/v1/manifests"))
        .json(&json!({"root": "other.blend", "files": [
            {"path": "other.blend", "hash": h_blend, "size": blend.len()}]}))
        .send()
        .unwrap();
    let (status, body) = problem(resp);
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");

    // A job on the stored manifest is accepted (the database has its own room), but its
    // frames find none: the node's uploads get 507 until it gives up, and the job fails
    // saying so, with no frame or partial frame stored.
    let second = farm.submit(&json!({"from": 1, "to": 1, "manifest": m}));
    let ended = farm.wait_job_ended(&second, Duration::from_secs(120));
    assert_eq!(ended["state"], "failed", "{ended}");
    let failure = ended.to_string();
    assert!(
        failure.contains("507") || failure.contains("disk"),
        "{ended}"
    );
    let second_dir = data.join(format!("frames/{second}"));
    assert_eq!(
        entries(&second_dir)
            .into_iter()
            .filter(|n| n != "partial")
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
    assert_eq!(entries(&second_dir.join("partial")), Vec::<String>::new());

    // Everything accepted before is untouched: the first job, its frames, the blobs.
    assert_eq!(farm.job(&first)["state"], "completed");
    for (i, before) in frames_before.iter().enumerate() {
        assert_eq!(&frame_bytes(&farm, &first, i as i64 + 1), before);
    }
    assert_eq!(
        get_blob(&farm, h_blend.as_str()),
        (StatusCode::OK, blend.clone())
    );
    println!("disk-full test took {:?}", started.elapsed());
}
