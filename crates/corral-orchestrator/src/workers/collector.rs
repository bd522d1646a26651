//! The collector: on every orchestrator (each keeps its own data folder), deletes the
//! blobs no job names once unused for `--blob-retention`, and unfinished uploads left
//! untouched (by a client that gave up, a node that died, a crash) for a day or the
//! retention if shorter.
//!
//! Why a blob in use is never taken: a blob's modification time is its last use, set under
//! [`crate::storage::BlobStore::in_use`] by every request that finds it (and by the `PUT`
//! that completes it), and a job is recorded while its submission still holds that. A
//! round first takes the store's exclusive hold, notes the time T and reads every job's
//! manifest: a job recorded before is read; a request after T touches its blobs after T.
//! The round then deletes, each under the exclusive hold again, only blobs not named by
//! what it read whose last use is before T minus the retention (less a margin for file
//! systems whose clocks are coarse). Blobs the jobs name are marked used at every round,
//! so once the last job naming one is gone it ages from then.

use crate::orchestrator::Orchestrator;
use crate::store::StoreError;
use corral_core::manifest::Manifest;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// Taken off every cutoff: file times may lag the clock read a moment before by a tick.
const CLOCK_MARGIN: Duration = Duration::from_secs(2);

/// How often the collector runs for a given retention: a tenth of it, between a second
/// and an hour (so a blob lives at most about 10% past its retention).
pub fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

pub async fn round(o: &Orchestrator) -> Result<(), StoreError> {
    let storage = o.storage();
    let retention = o.config().blob_retention;
    let (start, manifests) = {
        let _exclusive = storage.blobs.exclusive().await;
        (SystemTime::now(), o.store().job_manifests().await?)
    };
    let mut live: HashSet<_> = HashSet::with_capacity(manifests.len());
    for id in manifests {
        match storage
            .blobs
            .read(&id, crate::transfer::MAX_MANIFEST_BYTES as u64)
            .await
        {
            Ok(Some(bytes)) => match Manifest::from_body(&bytes) {
                Ok(m) => live.extend(m.hashes()),
                Err(e) => {
                    tracing::warn!(manifest = %id, error = %e.message, "a job's manifest does not parse")
                }
            },
            // A job on a manifest this data folder lacks (another orchestrator's, sharing
            // the database) keeps nothing here.
            Ok(None) => {}
            Err(e) => {
                // Unread, its files cannot be told apart: keep everything this round.
                tracing::warn!(manifest = %id, error = %e, "cannot read a job's manifest; collecting nothing");
                return Ok(());
            }
        }
        live.insert(id);
    }
    let before = |age: Duration| {
        start
            .checked_sub(age + CLOCK_MARGIN)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let cutoff = before(retention);
    let partial_cutoff = before(retention.min(crate::storage::MAX_PARTIAL_AGE));
    match storage.collect(&live, cutoff, partial_cutoff).await {
        Ok(done) if done != Default::default() => tracing::info!(
            blobs = done.blobs,
            bytes = done.bytes,
            partials = done.partials,
            "collected unused uploads"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "collecting unused uploads failed"),
    }
    Ok(())
}
