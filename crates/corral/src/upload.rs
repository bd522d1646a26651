//! Sending a packed scene to the farm: every file hashed (SHA-256, streamed), only the
//! blobs the farm lacks uploaded, each resumably (from `HEAD`'s `Upload-Offset` after a
//! lost connection or a refused offset) and streamed from its file, then the manifest.

use crate::client_cmds::explain;
use crate::pack::Packed;
use anyhow::{anyhow, bail, Context};
use corral_client::{BlobState, ClientError, OrchestratorClient, UploadStep};
use corral_core::manifest::ManifestFile;
use corral_core::{BlobHash, Manifest};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Attempts at one blob after a lost connection or a refused offset, with waits between.
const ATTEMPTS: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// What was sent.
pub struct Uploaded {
    pub manifest: BlobHash,
    pub uploaded_blobs: usize,
    pub uploaded_bytes: u64,
}

/// `1.5 MiB`, `320 B`.
pub fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The SHA-256 and size of a file, read in pieces (never whole in memory).
pub fn hash_file(path: &Path) -> std::io::Result<(BlobHash, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((BlobHash::from_digest(&hasher.finalize()), size))
}

/// The rewritten copies uploaded before, by [`crate::pack::copy_key`]: their hash and size.
/// A small JSON file in the user's cache folder; losing it only costs an upload.
struct CopyCache {
    path: Option<PathBuf>,
    entries: BTreeMap<String, (BlobHash, u64)>,
}

/// Most copies remembered; the file stays small.
const MAX_CACHED_COPIES: usize = 10_000;

impl CopyCache {
    fn load() -> CopyCache {
        let dir = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        let path = dir.map(|d| d.join("corral").join("uploaded-copies.json"));
        // A missing or unreadable cache is an empty one.
        let entries = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        CopyCache { path, entries }
    }

    fn save(&mut self) {
        let Some(path) = &self.path else { return };
        while self.entries.len() > MAX_CACHED_COPIES {
            self.entries.pop_first();
        }
        let Some(dir) = path.parent() else { return };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let mut file = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut file, &serde_json::to_vec(&self.entries)?)?;
            file.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(
                "cannot remember the uploaded copies in {}: {e}",
                path.display()
            );
        }
    }
}

/// Hashes every file of `packed` (a rewritten copy uploaded before, and still on the farm,
/// by the hash it had then) and builds its manifest; also answers which file holds each
/// blob.
async fn manifest_of(
    client: &OrchestratorClient,
    packed: &Packed,
    cache: &mut CopyCache,
) -> anyhow::Result<(Manifest, BTreeMap<BlobHash, PathBuf>)> {
    let reused: BTreeMap<&String, (BlobHash, u64)> = packed
        .copy_keys
        .iter()
        .filter_map(|(ws, key)| cache.entries.get(key).map(|e| (ws, e.clone())))
        .collect();
    let reused_hashes: Vec<BlobHash> = reused.values().map(|(h, _)| h.clone()).collect();
    let gone = if reused_hashes.is_empty() {
        Vec::new()
    } else {
        client
            .missing_blobs(&reused_hashes)
            .await
            .map_err(|e| explain(e, client.base()))?
    };
    let reused: BTreeMap<&String, (BlobHash, u64)> = reused
        .into_iter()
        .filter(|(_, (h, _))| !gone.contains(h))
        .collect();
    let entries: Vec<(String, PathBuf)> = packed
        .files
        .iter()
        .filter(|(ws, _)| !reused.contains_key(ws))
        .map(|(ws, path)| (ws.clone(), path.clone()))
        .collect();
    // Hashing is blocking file I/O: off the async threads.
    let hashed = tokio::task::spawn_blocking(move || {
        entries
            .into_iter()
            .map(|(ws, path)| {
                let (hash, size) = hash_file(&path)
                    .with_context(|| format!("cannot read `{}`", path.display()))?;
                Ok((ws, path, hash, size))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("hashing stopped")??;
    let mut sources = BTreeMap::new();
    let mut files = Vec::new();
    for (ws, (hash, size)) in reused {
        files.push(ManifestFile {
            path: ws.clone(),
            hash,
            size,
        });
    }
    for (path, source, hash, size) in hashed {
        if let Some(key) = packed.copy_keys.get(&path) {
            cache.entries.insert(key.clone(), (hash.clone(), size));
        }
        sources.entry(hash.clone()).or_insert(source);
        files.push(ManifestFile { path, hash, size });
    }
    let manifest = Manifest {
        root: packed.root.clone(),
        files,
    };
    manifest.validate().map_err(|e| {
        anyhow!(
            "the scene's manifest is not valid: `{}` {}",
            e.field,
            e.message
        )
    })?;
    Ok((manifest, sources))
}

/// Uploads what the farm lacks of `packed` and posts its manifest. `quiet`: no progress
/// bar (also when stderr is not a terminal); the summary lines are printed regardless,
/// on stderr, unless `quiet`.
pub async fn upload(
    client: &OrchestratorClient,
    packed: &Packed,
    quiet: bool,
) -> anyhow::Result<Uploaded> {
    let mut cache = CopyCache::load();
    let (manifest, sources) = manifest_of(client, packed, &mut cache).await?;
    let total_bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    let hashes: Vec<BlobHash> = sources.keys().cloned().collect();
    let missing = client
        .missing_blobs(&hashes)
        .await
        .map_err(|e| explain(e, client.base()))?;
    let sizes: BTreeMap<&BlobHash, u64> =
        manifest.files.iter().map(|f| (&f.hash, f.size)).collect();
    let to_send: u64 = missing.iter().filter_map(|h| sizes.get(h)).sum();
    if !quiet {
        eprintln!(
            "Scene: {} file{} ({}); {} to upload ({} blob{} the farm lacks)",
            manifest.files.len(),
            crate::table::plural(manifest.files.len() as u64),
            bytes_text(total_bytes),
            bytes_text(to_send),
            missing.len(),
            crate::table::plural(missing.len() as u64),
        );
    }
    let bar = if quiet || !std::io::stderr().is_terminal() || missing.is_empty() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(to_send), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.cyan} uploading {wide_bar:.cyan/blue} {bytes}/{total_bytes} · {bytes_per_sec} · ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let mut done = 0u64;
    for hash in &missing {
        let (Some(path), Some(size)) = (sources.get(hash), sizes.get(hash)) else {
            bail!("the farm asked about blob {hash}, which is not one of the scene's");
        };
        send_blob(client, hash, path, *size, done, &bar).await?;
        done += size;
        bar.set_position(done);
    }
    bar.finish_and_clear();
    let id = client
        .create_manifest(&manifest)
        .await
        .map_err(|e| explain(e, client.base()))?;
    if id != manifest.id() {
        bail!(
            "the farm stored the manifest as {id}, not {}",
            manifest.id()
        );
    }
    cache.save();
    Ok(Uploaded {
        manifest: id,
        uploaded_blobs: missing.len(),
        uploaded_bytes: to_send,
    })
}

/// Uploads one blob from where the farm's copy ends, resuming after lost connections and
/// refused offsets.
async fn send_blob(
    client: &OrchestratorClient,
    hash: &BlobHash,
    path: &Path,
    size: u64,
    before: u64,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut failures = 0u32;
    let mut wait = FIRST_WAIT;
    let mut offset = match client.blob_state(hash).await {
        Ok(BlobState::Complete(_)) => return Ok(()),
        Ok(BlobState::Partial(offset)) => offset,
        Err(e) => return Err(explain(e, client.base())),
    };
    loop {
        bar.set_position(before + offset.min(size));
        let counter = bar.clone();
        let step = client
            .upload_blob(hash, path, offset, size, move |n| counter.inc(n))
            .await;
        let retry = match step {
            Ok(UploadStep::Complete) => return Ok(()),
            Ok(UploadStep::Partial(next)) if next > offset => {
                offset = next;
                continue;
            }
            Ok(UploadStep::Partial(_)) => true,
            Err(ClientError::Unreachable { .. }) => true,
            Err(ClientError::Status { status: 409, .. }) => true,
            Err(ClientError::Status { status: 422, .. }) => bail!(
                "`{}` changed while it was being uploaded; submit again",
                path.display()
            ),
            Err(e) => return Err(explain(e, client.base())),
        };
        if retry {
            failures += 1;
            if failures >= ATTEMPTS {
                bail!(
                    "could not upload `{}` after {ATTEMPTS} attempts; submit again to resume",
                    path.display()
                );
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
            // Go on from what the farm holds now.
            offset = match client.blob_state(hash).await {
                Ok(BlobState::Complete(_)) => return Ok(()),
                Ok(BlobState::Partial(offset)) => offset,
                Err(ClientError::Unreachable { .. }) => offset,
                Err(e) => return Err(explain(e, client.base())),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(1023), "1023 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn files_hash_as_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"hello").unwrap();
        let (hash, size) = hash_file(&path).unwrap();
        assert_eq!((hash, size), (BlobHash::of(b"hello"), 5));
    }
}
