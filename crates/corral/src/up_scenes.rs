//! `corral up`'s help for the dashboard's submit form: the .blend files in the farm's
//! scenes folder (`GET /api/v1/local-farm/scenes`) and a scene's own frame range and rate
//! as Blender reads them (`GET /api/v1/local-farm/scene?path=`). Only `corral up` has
//! both the scenes folder and Blender at hand, so only it answers these.

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
        .route("/api/v1/local-farm/scenes", get(list))
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
}
