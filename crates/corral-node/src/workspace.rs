//! A render's workspace for an uploaded scene (`DATA/workspaces/{job}/`): the manifest's
//! files laid out at their paths, hard-linked from the blob cache where the file system
//! allows (copied otherwise), and removed when the render ends.
//!
//! Architecture invariant: nothing is written outside the workspace. Every path is checked
//! again by the protocol's rules on the node (relative, plain names, no `..`, no
//! backslash), each folder is made by the node itself inside a folder it just made (an
//! existing entry that is not a real folder, a symbolic link included, is refused), and
//! each file is created new (`O_EXCL`: never through a link that is already there).

use crate::cache::{BlobCache, FetchStats, Pinned};
use corral_core::manifest::{workspace_path, Manifest};
use corral_core::BlobHash;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A laid-out workspace. Dropping it removes the folder and lets the cache evict its
/// blobs again.
pub struct Workspace {
    dir: PathBuf,
    /// The scene Blender renders: the manifest's root in the workspace.
    pub scene: PathBuf,
    /// What the cache had and what was fetched.
    pub stats: FetchStats,
    /// Files copied because a hard link was not possible.
    pub copied: usize,
    _pinned: Pinned,
}

impl Workspace {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        remove(&self.dir);
    }
}

/// Removes a workspace folder (once the render ended, or what a failed layout left).
pub fn remove(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a workspace"),
    }
}

/// Reads manifest `id` from the orchestrator, fetches the blobs the cache lacks and lays
/// the workspace out in `dir`, which must not exist yet. On any failure nothing is left in
/// `dir`.
pub async fn prepare(
    cache: &Arc<BlobCache>,
    id: &BlobHash,
    dir: PathBuf,
    cancel: &CancellationToken,
) -> Result<Workspace, String> {
    let manifest = tokio::select! {
        () = cancel.cancelled() => return Err("cancelled while fetching the scene".into()),
        manifest = cache.client().manifest(id) => manifest.map_err(|e| match e {
            corral_client::ClientError::NotFound { .. } => format!("manifest {id} is not on the orchestrator (404)"),
            other => format!("cannot read manifest {id}: {other}"),
        })?,
    };
    let blobs = sizes(&manifest)?;
    let (pinned, stats) = cache.pin_all(&blobs, cancel).await?;
    let laid_out = {
        let cache = Arc::clone(cache);
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || lay_out(&cache, &dir, &manifest))
            .await
            .map_err(|e| format!("laying out the workspace failed: {e}"))
    };
    match laid_out {
        Ok(Ok((scene, copied))) => Ok(Workspace {
            dir,
            scene,
            stats,
            copied,
            _pinned: pinned,
        }),
        Ok(Err(why)) | Err(why) => {
            remove(&dir);
            Err(why)
        }
    }
}

/// Each distinct blob with its size; a blob listed with two sizes is refused.
fn sizes(manifest: &Manifest) -> Result<Vec<(BlobHash, u64)>, String> {
    let mut seen: std::collections::HashMap<&BlobHash, u64> = std::collections::HashMap::new();
    let mut blobs = Vec::new();
    for file in &manifest.files {
        match seen.get(&file.hash) {
            Some(size) if *size != file.size => {
                return Err(format!(
                    "the manifest lists blob {} with two sizes ({size} and {})",
                    file.hash, file.size
                ))
            }
            Some(_) => {}
            None => {
                seen.insert(&file.hash, file.size);
                blobs.push((file.hash.clone(), file.size));
            }
        }
    }
    Ok(blobs)
}

/// Lays out `manifest` in `dir` from the cache; returns the scene's path and how many
/// files were copied rather than linked.
fn lay_out(cache: &BlobCache, dir: &Path, manifest: &Manifest) -> Result<(PathBuf, usize), String> {
    // The orchestrator checked the manifest; the node checks it again before writing.
    manifest
        .validate()
        .map_err(|e| format!("the manifest is refused: `{}` {}", e.field, e.message))?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
    }
    std::fs::create_dir(dir).map_err(|e| format!("cannot create the workspace: {e}"))?;
    let mut copied = 0;
    for (i, file) in manifest.files.iter().enumerate() {
        workspace_path(&format!("files[{i}].path"), &file.path)
            .map_err(|e| format!("the manifest is refused: `{}` {}", e.field, e.message))?;
        let target = make_parents(dir, &file.path)?;
        if place(&cache.path(&file.hash), &target)
            .map_err(|e| format!("cannot place `{}` in the workspace: {e}", file.path))?
        {
            copied += 1;
        }
    }
    let scene = dir.join(&manifest.root);
    crate::blend::check_blend_file(&scene)
        .map_err(|why| format!("the manifest's root `{}` {why}", manifest.root))?;
    Ok((scene, copied))
}

/// Makes the folders of `relative` inside `dir` (each a real folder, never a link) and
/// returns the file's path.
fn make_parents(dir: &Path, relative: &str) -> Result<PathBuf, String> {
    let mut names: Vec<&str> = relative.split('/').collect();
    let file = names.pop().unwrap_or_default();
    let mut path = dir.to_path_buf();
    for name in names {
        path.push(name);
        match path.symlink_metadata() {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "`{relative}`: `{name}` in the workspace is not a folder"
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => std::fs::create_dir(&path)
                .map_err(|e| format!("cannot create a folder for `{relative}`: {e}"))?,
            Err(e) => return Err(format!("`{relative}`: {e}")),
        }
    }
    path.push(file);
    Ok(path)
}

/// Hard-links the cached blob `from` at `to`, or copies it when the file system cannot
/// link it (another file system, a link count at its limit). True when it copied.
fn place(from: &Path, to: &Path) -> std::io::Result<bool> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            let mut source = std::fs::File::open(from)?;
            let mut target = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(to)?;
            std::io::copy(&mut source, &mut target)?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::manifest::ManifestFile;

    #[test]
    fn folders_are_made_and_links_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let target = make_parents(&ws, "a/b/c.png").unwrap();
        assert_eq!(target, ws.join("a/b/c.png"));
        assert!(ws.join("a/b").is_dir());
        // A folder that is a link (to anywhere) is refused, not followed.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.join("escape")).unwrap();
        let err = make_parents(&ws, "escape/x.png").unwrap_err();
        assert!(err.contains("not a folder"), "{err}");
        // A file where a folder should be is refused too.
        std::fs::write(ws.join("file"), b"x").unwrap();
        assert!(make_parents(&ws, "file/x.png").is_err());
        // Files are created new: a link already at the name is not written through.
        let src = dir.path().join("src");
        std::fs::write(&src, b"content").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), ws.join("x.png")).unwrap();
        assert!(place(&src, &ws.join("x.png")).is_err());
        assert!(!outside.path().join("victim").exists());
        assert!(!place(&src, &ws.join("y.png")).unwrap(), "linked");
        assert_eq!(std::fs::read(ws.join("y.png")).unwrap(), b"content");
    }

    #[test]
    fn a_blob_listed_with_two_sizes_is_refused() {
        let h = BlobHash::of(b"x");
        let manifest = Manifest {
            root: "a.blend".into(),
            files: vec![
                ManifestFile {
                    path: "a.blend".into(),
                    hash: h.clone(),
                    size: 1,
                },
                ManifestFile {
                    path: "b.png".into(),
                    hash: h,
                    size: 2,
                },
            ],
        };
        assert!(sizes(&manifest).unwrap_err().contains("two sizes"));
    }
}
