//! The scene a user submits: its path as the farm's nodes will name it (relative to the
//! scenes folder they are confined to), and its own frame range and rate, read by Blender.

use anyhow::{bail, Context};
use corral_blender::{BlenderProcess, ExitOutcome};
use corral_core::frames::FrameRange;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The marker the range-reading expression prints before the numbers, so no other line
/// of Blender's output can be mistaken for the answer.
const RANGE_MARKER: &str = "CORRAL_RANGE";
/// The same for the frame rate.
const FPS_MARKER: &str = "CORRAL_FPS";

/// How long Blender may take to open a scene and print its range.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A scene file checked to exist, with the path the server is sent.
#[derive(Debug, Clone)]
pub struct SceneFile {
    /// Canonical path on this machine.
    pub path: PathBuf,
    /// Path relative to the scenes folder, `/`-separated: what the nodes resolve.
    pub relative: String,
}

/// Checks that `scene` is a file inside `root` (both resolved, symbolic links included, as
/// the nodes resolve them) and returns its path relative to `root`.
pub fn locate(scene: &Path, root: &Path, root_origin: &str) -> anyhow::Result<SceneFile> {
    if !scene.exists() {
        bail!("scene file `{}` not found", scene.display());
    }
    if !scene.is_file() {
        bail!("`{}` is not a file", scene.display());
    }
    let path = scene
        .canonicalize()
        .with_context(|| format!("cannot open the scene file `{}`", scene.display()))?;
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot open the scenes folder `{}`", root.display()))?;
    let Ok(relative) = path.strip_prefix(&root) else {
        bail!(
            "scene `{}` is outside the scenes folder `{}` ({root_origin}); \
             the farm renders only scenes inside it",
            path.display(),
            root.display()
        );
    };
    let relative = relative
        .to_str()
        .with_context(|| format!("scene path `{}` is not UTF-8", relative.display()))?
        .to_string();
    Ok(SceneFile { path, relative })
}

/// What Blender says about a scene: its frame range and frame rate.
#[derive(Debug, Clone, Copy)]
pub struct SceneInfo {
    pub range: FrameRange,
    /// `fps / fps_base`; `None` if Blender printed none that makes sense.
    pub fps: Option<f64>,
}

/// Opens `scene` in Blender (background, factory settings, scripts in the file not run)
/// and returns its frame range, `frame_start`-`frame_end`, and its frame rate.
pub async fn read_scene(blender: &Path, scene: &Path) -> anyhow::Result<SceneInfo> {
    let expr = format!(
        "import bpy; s = bpy.context.scene; print('{RANGE_MARKER}', s.frame_start, s.frame_end); \
         print('{FPS_MARKER}', s.render.fps / s.render.fps_base)"
    );
    // An absolute scene path cannot be read as an option; `-Y` keeps scripts stored in the
    // file from running just because someone asked for its frame range.
    let args: Vec<OsString> = vec![
        "-b".into(),
        "--factory-startup".into(),
        "-Y".into(),
        scene.as_os_str().to_owned(),
        "--python-expr".into(),
        expr.into(),
    ];
    let process = BlenderProcess::spawn(blender, &args)
        .map_err(|e| anyhow::anyhow!("{e}; or pass --frames A-B"))?;
    let mut range = None;
    let mut fps = None;
    let mut error = None;
    let run = process.run(std::future::pending(), |line| {
        if let Some(rest) = line.trim().strip_prefix(RANGE_MARKER) {
            range = Some(parse_range_line(rest));
        } else if let Some(rest) = line.trim().strip_prefix(FPS_MARKER) {
            fps = rest
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| corral_core::orchestrator_api::FPS_RANGE.contains(f));
        } else if error.is_none() && line.trim_start().starts_with("Error:") {
            error = Some(line.trim().to_string());
        }
    });
    let outcome = tokio::time::timeout(READ_TIMEOUT, run)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "Blender did not open `{}` within {} s; pass --frames A-B",
                scene.display(),
                READ_TIMEOUT.as_secs()
            )
        })?
        .context("Blender's output could not be read")?;
    let cannot = || format!("cannot read the frame range of `{}`", scene.display());
    match (range, outcome) {
        (Some(Ok(range)), ExitOutcome::Exited(0)) => Ok(SceneInfo { range, fps }),
        (Some(Err(e)), _) => Err(anyhow::anyhow!("{e}")).with_context(cannot),
        (_, outcome) => {
            let why = error.unwrap_or_else(|| format!("Blender ended with {outcome:?}"));
            Err(anyhow::anyhow!("Blender said `{why}`")).with_context(cannot)
        }
    }
}

/// Parses `" 1 250"` (what follows the marker) into a frame range.
fn parse_range_line(rest: &str) -> anyhow::Result<FrameRange> {
    let mut numbers = rest.split_whitespace().map(str::parse::<i64>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(from)), Some(Ok(to)), None) => FrameRange::new(from, to)
            .map_err(|e| anyhow::anyhow!("the scene's range {from}-{to} cannot be rendered: {e}")),
        _ => bail!("Blender printed an unexpected range `{}`", rest.trim()),
    }
}

/// Parses `--frames`: `A-B` or a single frame `N`.
pub fn parse_frames(s: &str) -> Result<FrameRange, String> {
    let s = s.trim();
    let (from, to) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s, s),
    };
    let number = |t: &str| {
        t.parse::<i64>()
            .map_err(|_| format!("`{s}` is not a frame range like 1-250 or a frame number"))
    };
    let (from, to) = (number(from)?, number(to)?);
    if from > to {
        return Err(format!("the first frame ({from}) is after the last ({to})"));
    }
    FrameRange::new(from, to).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_flag() {
        let r = parse_frames("1-250").unwrap();
        assert_eq!((r.from(), r.to()), (1, 250));
        let r = parse_frames("7").unwrap();
        assert_eq!((r.from(), r.to()), (7, 7));
        assert!(parse_frames("9-3").is_err());
        assert!(parse_frames("a-b").is_err());
        assert!(parse_frames("-3").is_err());
        assert!(parse_frames("1-2-3").is_err());
        assert!(parse_frames("").is_err());
    }

    #[test]
    fn range_lines() {
        let r = parse_range_line(" 5 9").unwrap();
        assert_eq!((r.from(), r.to()), (5, 9));
        assert!(parse_range_line(" 5").is_err());
        assert!(parse_range_line(" 5 x").is_err());
        assert!(parse_range_line(" 5 9 1").is_err());
    }

    #[test]
    fn scenes_must_be_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("shots")).unwrap();
        std::fs::write(root.join("shots/a.blend"), b"x").unwrap();
        std::fs::write(dir.path().join("outside.blend"), b"x").unwrap();
        let found = locate(&root.join("shots/a.blend"), &root, "test").unwrap();
        assert_eq!(found.relative, "shots/a.blend");
        let err = locate(&dir.path().join("outside.blend"), &root, "test").unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        // A link inside the root that leads out of it is outside too.
        std::os::unix::fs::symlink(dir.path().join("outside.blend"), root.join("link.blend"))
            .unwrap();
        assert!(locate(&root.join("link.blend"), &root, "test").is_err());
        let err = locate(&root.join("missing.blend"), &root, "test").unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
