//! Packing a scene for a farm that shares no folder with this machine: Blender itself
//! lists every external file the scene uses (`pack.py`, shipped in the binary), linked
//! libraries are opened in turn, and each `.blend` is saved as a temporary copy whose paths
//! name the files' places in the workspace. The artist's files are only read.
//!
//! The workspace layout (`docs/remote-farm-protocol.md`): files inside the scene's folder
//! keep their path relative to it; files elsewhere go under `_external/` + their absolute
//! path without the leading `/`.

use anyhow::{anyhow, bail, Context};
use corral_blender::{BlenderProcess, ExitOutcome};
use corral_core::BlobHash;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The script Blender runs on each `.blend` (see its header for what it prints).
const PACK_SCRIPT: &str = include_str!("pack.py");
/// What starts a dependency line; no other line of Blender's output can be one.
const DEP_MARKER: &str = "CORRAL-DEP ";
/// Printed once the rewritten copy is saved.
const SAVED_MARKER: &str = "CORRAL-SAVED";
/// How long Blender may take to open one `.blend`, list and save it.
const PACK_TIMEOUT: Duration = Duration::from_secs(300);
/// Most `.blend` files (the scene and its libraries, recursively) one scene may pull in.
const MAX_BLENDS: usize = 1000;

/// One line of `pack.py`'s output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DepLine {
    /// `file`, `library`, `folder` (a cache), `tiles` (UDIM), `sequence`.
    kind: String,
    /// Absolute, its folder resolved.
    path: String,
    /// Where the script put it in the workspace (checked against [`workspace_path`]).
    workspace: String,
    exists: bool,
}

/// A file the scene needs that is not on this machine.
#[derive(Debug, Clone)]
pub struct MissingFile {
    pub path: String,
    pub kind: String,
    /// The `.blend` that names it.
    pub named_by: PathBuf,
}

/// A scene ready to upload: every workspace path with the file to send for it (the
/// rewritten copy for `.blend` files, the artist's file otherwise).
pub struct Packed {
    /// The scene's workspace path (its file name).
    pub root: String,
    pub files: BTreeMap<String, PathBuf>,
    /// For each rewritten `.blend` (by workspace path): what its copy depends on, hashed
    /// (see [`copy_key`]), so an unchanged file is not uploaded again.
    pub copy_keys: BTreeMap<String, String>,
    pub missing: Vec<MissingFile>,
    /// Holds the rewritten copies until they are uploaded.
    _copies: tempfile::TempDir,
}

/// `path`'s place in the workspace of a scene whose folder is `root` (both absolute and
/// resolved): relative inside `root`, else `_external/` + the path without its leading `/`.
pub fn workspace_path(root: &Path, path: &Path) -> anyhow::Result<String> {
    let text = |p: &Path| {
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("`{}` is not UTF-8; rename it", path.display()))
    };
    let ws = match path.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => text(rel)?,
        _ => format!("_external/{}", text(path)?.trim_start_matches('/')),
    };
    corral_core::manifest::workspace_path("path", &ws).map_err(|e| {
        anyhow!(
            "`{}` cannot be sent to the farm: its workspace path `{ws}` {}",
            path.display(),
            e.message
        )
    })?;
    Ok(ws)
}

/// What a rewritten copy is a function of: the original's bytes, the scene's folder, the
/// file's workspace path and the script. Blender writes memory addresses into every saved
/// file, so two copies of one file never have the same bytes; this key lets the client
/// reuse the copy it uploaded before (see `upload`).
pub fn copy_key(original: &BlobHash, root: &Path, ws: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [
        original.as_str().as_bytes(),
        root.as_os_str().as_encoded_bytes(),
        ws.as_bytes(),
        PACK_SCRIPT.as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    BlobHash::from_digest(&hasher.finalize()).to_string()
}

/// Lists, lays out and rewrites `scene` and every library it links, recursively.
pub async fn pack(blender: &Path, scene: &Path) -> anyhow::Result<Packed> {
    let scene = scene
        .canonicalize()
        .with_context(|| format!("cannot open the scene file `{}`", scene.display()))?;
    let root = scene
        .parent()
        .ok_or_else(|| anyhow!("`{}` has no folder", scene.display()))?
        .to_path_buf();
    let root_ws = workspace_path(&root, &scene)?;
    let copies = tempfile::Builder::new()
        .prefix("corral-pack-")
        .tempdir()
        .context("cannot make a temporary folder for the scene's copies")?;
    let mut files = BTreeMap::new();
    let mut copy_keys = BTreeMap::new();
    let mut missing = Vec::new();
    let mut opened = BTreeSet::from([scene.clone()]);
    let mut queue = VecDeque::from([(scene.clone(), root_ws.clone())]);
    while let Some((blend, ws)) = queue.pop_front() {
        let copy = copies.path().join(&ws);
        if let Some(parent) = copy.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot make `{}`", parent.display()))?;
        }
        let deps = run_script(blender, &blend, &root, &ws, &copy).await?;
        let original = blend.clone();
        let (hash, _) = tokio::task::spawn_blocking(move || crate::upload::hash_file(&original))
            .await
            .context("hashing stopped")?
            .with_context(|| format!("cannot read `{}`", blend.display()))?;
        copy_keys.insert(ws.clone(), copy_key(&hash, &root, &ws));
        files.insert(ws, copy);
        for dep in deps {
            let path = PathBuf::from(&dep.path);
            if !path.is_absolute() {
                bail!(
                    "Blender named `{}`, which is not an absolute path",
                    dep.path
                );
            }
            let dep_ws = workspace_path(&root, &path)?;
            if dep_ws != dep.workspace {
                bail!(
                    "the packing script put `{}` at `{}`, not `{dep_ws}`; this is a bug in Corral",
                    dep.path,
                    dep.workspace
                );
            }
            if !dep.exists {
                missing.push(MissingFile {
                    path: dep.path,
                    kind: dep.kind,
                    named_by: blend.clone(),
                });
            } else if dep.kind == "library" {
                // Each library is opened once, however many files link it (no loops).
                if opened.insert(path.clone()) {
                    if opened.len() > MAX_BLENDS {
                        bail!("the scene links more than {MAX_BLENDS} .blend files");
                    }
                    queue.push_back((path, dep_ws));
                }
            } else if !opened.contains(&path) {
                files.entry(dep_ws).or_insert(path);
            }
        }
    }
    Ok(Packed {
        root: root_ws,
        files,
        copy_keys,
        missing,
        _copies: copies,
    })
}

/// Runs `pack.py` on `blend` (autoexec off, factory settings) and returns what it listed,
/// once it has saved the rewritten copy at `copy`.
async fn run_script(
    blender: &Path,
    blend: &Path,
    root: &Path,
    ws: &str,
    copy: &Path,
) -> anyhow::Result<Vec<DepLine>> {
    let config = serde_json::json!({
        "root": root.to_str().ok_or_else(|| anyhow!("`{}` is not UTF-8", root.display()))?,
        "self": ws,
        "copy": copy.to_str().ok_or_else(|| anyhow!("`{}` is not UTF-8", copy.display()))?,
    });
    // The .blend is absolute (canonical), so it cannot be read as an option; `-Y` keeps
    // scripts stored in the file from running; `--python-exit-code` makes a failing
    // script fail Blender, which otherwise exits 0 after a Python error.
    let args: Vec<OsString> = vec![
        "-b".into(),
        "--factory-startup".into(),
        "-Y".into(),
        blend.as_os_str().to_owned(),
        "--python-exit-code".into(),
        "2".into(),
        "--python-expr".into(),
        PACK_SCRIPT.into(),
        "--".into(),
        config.to_string().into(),
    ];
    let process = BlenderProcess::spawn(blender, &args).map_err(|e| anyhow!("{e}"))?;
    let mut deps = Vec::new();
    let mut bad_line = None;
    let mut saved = false;
    let mut tail: VecDeque<String> = VecDeque::new();
    let run = process.run(std::future::pending(), |line| {
        if let Some(json) = line.strip_prefix(DEP_MARKER) {
            match serde_json::from_str::<DepLine>(json) {
                Ok(dep) => deps.push(dep),
                Err(e) => {
                    bad_line.get_or_insert_with(|| e.to_string());
                }
            }
        } else if line.trim() == SAVED_MARKER {
            saved = true;
        } else {
            if tail.len() == 8 {
                tail.pop_front();
            }
            tail.push_back(line.trim_end().to_string());
        }
    });
    let outcome = tokio::time::timeout(PACK_TIMEOUT, run)
        .await
        .map_err(|_| {
            anyhow!(
                "Blender did not list the files of `{}` within {} s",
                blend.display(),
                PACK_TIMEOUT.as_secs()
            )
        })?
        .context("Blender's output could not be read")?;
    if let Some(e) = bad_line {
        bail!(
            "Blender printed a dependency line Corral cannot read ({e}) for `{}`",
            blend.display()
        );
    }
    if outcome != ExitOutcome::Exited(0) || !saved {
        let said: Vec<String> = tail.into_iter().filter(|l| !l.is_empty()).collect();
        bail!(
            "Blender could not pack `{}` ({outcome:?}): {}",
            blend.display(),
            said.join(" | ")
        );
    }
    Ok(deps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_inside_keep_their_path_and_others_go_under_external() {
        let root = Path::new("/home/ann/shot");
        assert_eq!(
            workspace_path(root, Path::new("/home/ann/shot/tex/a.png")).unwrap(),
            "tex/a.png"
        );
        assert_eq!(
            workspace_path(root, Path::new("/home/ann/lib/props.blend")).unwrap(),
            "_external/home/ann/lib/props.blend"
        );
        // A sibling folder whose name starts like the root's is outside it.
        assert_eq!(
            workspace_path(root, Path::new("/home/ann/shot2/x.png")).unwrap(),
            "_external/home/ann/shot2/x.png"
        );
        assert!(workspace_path(root, Path::new("/home/ann/shot/bad\u{202e}.png")).is_err());
    }
}
