//! `corral up`'s help for the dashboard's submit form: the .blend files in the farm's
//! scenes folder (`GET /api/v1/local-farm/scenes`), a scene's own frame range and rate
//! as Blender reads them (`GET /api/v1/local-farm/scene?path=`), and a scene uploaded
//! into its `uploads/` sub-folder (`POST /api/v1/local-farm/scenes?name=`). Only
//! `corral up` has the scenes folder and Blender at hand, so only it answers these.

use crate::scene;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use corral_core::{FieldError, Problem};
use corral_http::ProblemResponse;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most scenes listed, and how deep the folder is searched.
const MAX_SCENES: usize = 500;
const MAX_DEPTH: usize = 4;
/// Largest scene uploaded.
const MAX_UPLOAD: u64 = 4 << 30;
/// Where uploads land, inside the scenes folder.
const UPLOADS: &str = "uploads";

struct Farm {
    scenes: PathBuf,
    blender: PathBuf,
}

#[derive(Serialize)]
struct SceneList {
    folder: String,
    scenes: Vec<String>,
}

#[derive(Serialize)]
struct SceneInfo {
    from: i64,
    to: i64,
    fps: Option<f64>,
}

pub fn router(scenes: PathBuf, blender: PathBuf) -> Router {
    Router::new()
        .route("/api/v1/local-farm/scenes", get(list).post(upload))
        .route("/api/v1/local-farm/scene", get(info))
        .with_state(Arc::new(Farm { scenes, blender }))
}

async fn list(State(farm): State<Arc<Farm>>) -> Json<SceneList> {
    let root = farm.scenes.clone();
    let scenes = tokio::task::spawn_blocking(move || find_scenes(&root))
        .await
        .unwrap_or_default();
    Json(SceneList {
        folder: farm.scenes.display().to_string(),
        scenes,
    })
}

/// The .blend files under `root`, relative and sorted; hidden folders skipped, links not
/// followed (the nodes would refuse a scene reached through one leading out).
fn find_scenes(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() && depth < MAX_DEPTH {
                stack.push((path, depth + 1));
            } else if kind.is_file() && name.ends_with(".blend") {
                if let Ok(rel) = path.strip_prefix(root) {
                    if let Some(rel) = rel.to_str() {
                        found.push(rel.to_string());
                    }
                }
            }
            if found.len() >= MAX_SCENES {
                break;
            }
        }
    }
    found.sort();
    found
}

async fn info(
    State(farm): State<Arc<Farm>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(path) = query.get("path").filter(|p| !p.trim().is_empty()) else {
        return ProblemResponse::from(FieldError::new(
            "scene",
            "name a .blend file to read its frame range",
        ))
        .into_response();
    };
    let located = match scene::locate(&farm.scenes.join(path), &farm.scenes, "the scenes folder") {
        Ok(s) => s,
        Err(e) => {
            return ProblemResponse::from(FieldError::new("scene", e.to_string())).into_response()
        }
    };
    match scene::read_scene(&farm.blender, &located.path).await {
        Ok(info) => Json(SceneInfo {
            from: info.range.from(),
            to: info.range.to(),
            fps: info.fps,
        })
        .into_response(),
        Err(e) => {
            let mut problem = Problem::invalid_field(FieldError::new("scene", format!("{e:#}")));
            problem.status = 422;
            ProblemResponse(problem).into_response()
        }
    }
}

#[derive(Serialize)]
struct Uploaded {
    /// The scene's path to submit, relative to the scenes folder.
    scene: String,
    bytes: u64,
}

fn problem(status: u16, field: &str, message: impl Into<String>) -> Response {
    let mut problem = Problem::invalid_field(FieldError::new(field, message));
    problem.status = status;
    ProblemResponse(problem).into_response()
}

/// A file name fit for the uploads folder: one plain name ending in `.blend`.
fn upload_name(name: &str) -> Result<String, FieldError> {
    let bad = |why: &str| FieldError::new("name", why.to_string());
    if name.is_empty() || name.len() > 200 {
        return Err(bad("must be a file name of 1 to 200 characters"));
    }
    if name.contains(['/', '\\']) || name.starts_with('.') || name.chars().any(char::is_control) {
        return Err(bad("must be a plain file name, without folders"));
    }
    if !name.to_ascii_lowercase().ends_with(".blend") {
        return Err(bad("must end in .blend"));
    }
    Ok(name.to_string())
}

/// True for the first bytes of a .blend: `BLENDER`, or a zstd or gzip compressed one.
fn looks_like_blend(head: &[u8]) -> bool {
    head.starts_with(b"BLENDER")
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(&[0x1f, 0x8b])
}

/// Stores an uploaded scene in `uploads/` under its name (or `name-2.blend` ... when the
/// name is taken: an upload never replaces a scene), written to a hidden temporary file
/// first so no half-uploaded scene is ever listed.
async fn upload(
    State(farm): State<Arc<Farm>>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Body,
) -> Response {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let name = match upload_name(query.get("name").map(String::as_str).unwrap_or("")) {
        Ok(n) => n,
        Err(e) => return ProblemResponse::from(e).into_response(),
    };
    let dir = farm.scenes.join(UPLOADS);
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return problem(
            500,
            "scene",
            format!("cannot create `{}`: {e}", dir.display()),
        );
    }
    let tmp = dir.join(format!(
        ".upload-{}-{}.tmp",
        std::process::id(),
        uuid_like()
    ));
    let result: Result<u64, Response> = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| problem(500, "scene", format!("cannot write the upload: {e}")))?;
        let mut stream = body.into_data_stream();
        let mut written: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| problem(400, "scene", format!("upload broken off: {e}")))?;
            if written == 0 && !looks_like_blend(&chunk) {
                return Err(problem(400, "scene", "this is not a .blend file"));
            }
            written += chunk.len() as u64;
            if written > MAX_UPLOAD {
                return Err(problem(
                    413,
                    "scene",
                    format!("larger than {} GiB", MAX_UPLOAD >> 30),
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| problem(500, "scene", format!("cannot write the upload: {e}")))?;
        }
        if written == 0 {
            return Err(problem(400, "scene", "the upload is empty"));
        }
        file.sync_all()
            .await
            .map_err(|e| problem(500, "scene", format!("cannot write the upload: {e}")))?;
        Ok(written)
    }
    .await;
    let bytes = match result {
        Ok(n) => n,
        Err(response) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return response;
        }
    };
    // A hard link fails when the name exists, so nothing is replaced.
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name.as_str(), "blend"));
    for n in 1..=1000 {
        let candidate = if n == 1 {
            name.clone()
        } else {
            format!("{stem}-{n}.{ext}")
        };
        match tokio::fs::hard_link(&tmp, dir.join(&candidate)).await {
            Ok(()) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Json(Uploaded {
                    scene: format!("{UPLOADS}/{candidate}"),
                    bytes,
                })
                .into_response();
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return problem(500, "scene", format!("cannot store the upload: {e}"));
            }
        }
    }
    let _ = tokio::fs::remove_file(&tmp).await;
    problem(409, "name", "too many scenes of that name")
}

/// A name part unlikely to be taken by a concurrent upload.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_found_below_the_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("shots/a")).expect("folders");
        std::fs::create_dir_all(root.join(".hidden")).expect("folders");
        for f in [
            "one.blend",
            "shots/a/two.blend",
            ".hidden/x.blend",
            "notes.txt",
        ] {
            std::fs::write(root.join(f), b"x").expect("file");
        }
        assert_eq!(find_scenes(root), ["one.blend", "shots/a/two.blend"]);
    }

    #[test]
    fn upload_names_are_plain_blend_files() {
        assert_eq!(upload_name("shot 1.blend").unwrap(), "shot 1.blend");
        for bad in [
            "",
            "a/b.blend",
            "..\\x.blend",
            ".hidden.blend",
            "x.txt",
            "x\n.blend",
        ] {
            assert!(upload_name(bad).is_err(), "{bad:?}");
        }
        assert!(looks_like_blend(b"BLENDER-v304"));
        assert!(!looks_like_blend(b"<html>"));
    }
}
