//! The job detail (`GET /api/v1/jobs/{id}`) kept serialised in memory while nothing of its
//! job changed: a dashboard or a script polling a job is answered without the database.
//!
//! An entry is dropped by the next event of its job (a job, task or frame event, from this
//! orchestrator or, on PostgreSQL, from any sharing the database), which every lookup reads
//! first, and is read again once it is [`FRESH`] old: a few changes publish no event (a
//! running task's tail cut off, a dispatch confirmed), and those show within about that
//! time (one request reads the new copy while the others are answered the old one).

use crate::store::{Store, StoreError};
use crate::views;
use axum::body::Bytes;
use corral_core::orchestrator_api::Event;
use corral_core::JobId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::TryRecvError};

/// How long an entry answers before a request reads a newer copy (the other requests are
/// answered the entry meanwhile, for at most as long again).
pub const FRESH: Duration = Duration::from_millis(250);

/// Jobs kept at most; past it, the cache starts again empty.
const MOST: usize = 1024;

pub struct DetailCache {
    state: Mutex<State>,
}

struct State {
    events: broadcast::Receiver<Event>,
    entries: HashMap<JobId, Entry>,
    /// Events seen per job since `era` began: a detail read from the database is kept
    /// only if no event of its job was seen while it was read.
    seen: HashMap<JobId, u64>,
    era: u64,
}

struct Entry {
    body: Bytes,
    made: Instant,
    /// A request is reading a newer copy; meanwhile this one answers, for at most
    /// another [`FRESH`] (the reader may have been dropped with its client).
    refreshing: bool,
}

/// What a lookup saw of a job's events, to check an insert against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    era: u64,
    seen: u64,
}

impl State {
    /// Reads every event published since the last look, dropping the entries they touch.
    fn catch_up(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(event) => {
                    let job = match &event {
                        Event::Job { id, .. } => *id,
                        Event::Task { job, .. } | Event::Frame { job, .. } => *job,
                        _ => continue,
                    };
                    self.entries.remove(&job);
                    *self.seen.entry(job).or_default() += 1;
                    if self.seen.len() > 4 * MOST {
                        self.restart();
                    }
                }
                // Missed events may have touched any job.
                Err(TryRecvError::Lagged(_)) => self.restart(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn restart(&mut self) {
        self.entries.clear();
        self.seen.clear();
        self.era += 1;
    }

    fn mark(&self, job: JobId) -> Mark {
        Mark {
            era: self.era,
            seen: self.seen.get(&job).copied().unwrap_or(0),
        }
    }
}

impl DetailCache {
    pub fn new(events: broadcast::Receiver<Event>) -> DetailCache {
        DetailCache {
            state: Mutex::new(State {
                events,
                entries: HashMap::new(),
                seen: HashMap::new(),
                era: 0,
            }),
        }
    }

    /// The job's detail as JSON: from memory when it is fresh, else read from the store
    /// (and kept, unless the job changed meanwhile). `None` when there is no such job.
    pub async fn detail(&self, store: &dyn Store, job: JobId) -> Result<Option<Bytes>, StoreError> {
        let mark = {
            let Ok(mut state) = self.state.lock() else {
                return read(store, job).await;
            };
            state.catch_up();
            if let Some(entry) = state.entries.get_mut(&job) {
                let age = entry.made.elapsed();
                // One request reads a newer copy when it is due; the others do not all
                // go to the database at the same moment.
                if age < FRESH || (entry.refreshing && age < 2 * FRESH) {
                    return Ok(Some(entry.body.clone()));
                }
                entry.refreshing = true;
            }
            state.mark(job)
        };
        let Some(body) = read(store, job).await? else {
            return Ok(None);
        };
        if let Ok(mut state) = self.state.lock() {
            state.catch_up();
            if state.mark(job) == mark {
                if state.entries.len() >= MOST {
                    state.restart();
                }
                state.entries.insert(
                    job,
                    Entry {
                        body: body.clone(),
                        made: Instant::now(),
                        refreshing: false,
                    },
                );
            }
        }
        Ok(Some(body))
    }
}

/// The job's detail, serialised, read from the store.
async fn read(store: &dyn Store, job: JobId) -> Result<Option<Bytes>, StoreError> {
    let Some(record) = store.job(job).await? else {
        return Ok(None);
    };
    let detail = views::job_detail(store, &record).await?;
    let body = serde_json::to_vec(&detail).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Some(Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::{Admission, DatabaseUrl, NewJob, SqlStore};
    use corral_core::lifecycle::JobCommand;
    use corral_core::orchestrator_api::{JobSubmission, SubmitLimits};

    fn field(body: &Bytes, name: &str) -> serde_json::Value {
        let detail: serde_json::Value = serde_json::from_slice(body).unwrap();
        detail[name].clone()
    }

    /// Served from memory until its job's next event, or for at most [`FRESH`] when the
    /// change published none here (made by another store on the same database, which on
    /// SQLite tells only its own process).
    #[tokio::test]
    async fn a_detail_is_served_until_its_job_changes() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("corral.db"));
        let store = SqlStore::open(&url).await.unwrap();
        let other = SqlStore::open(&url).await.unwrap();
        let limits = SubmitLimits {
            max_frames: 100,
            default_chunk_size: Some(5),
        };
        let id = JobId::new();
        let job = NewJob {
            id,
            submission: JobSubmission::from_body(br#"{"from":1,"to":10}"#, limits).unwrap(),
            output: "out/f_####".into(),
        };
        assert!(matches!(
            store.insert_job(job, 10).await.unwrap(),
            Admission::Accepted(_)
        ));
        let cache = DetailCache::new(store.subscribe());
        let first = cache.detail(store.as_ref(), id).await.unwrap().unwrap();
        assert_eq!(field(&first, "priority"), 0);

        // A change this process hears nothing of: the kept detail answers...
        other
            .job_command(id, JobCommand::Prioritize(7))
            .await
            .unwrap();
        let kept = cache.detail(store.as_ref(), id).await.unwrap().unwrap();
        assert_eq!(kept, first);
        // ... until it is FRESH old.
        tokio::time::sleep(FRESH).await;
        let read = cache.detail(store.as_ref(), id).await.unwrap().unwrap();
        assert_eq!(field(&read, "priority"), 7);

        // A change with an event is served at once.
        store.job_command(id, JobCommand::Cancel).await.unwrap();
        let now = cache.detail(store.as_ref(), id).await.unwrap().unwrap();
        assert_eq!(field(&now, "state"), "cancelled");
        assert!(cache
            .detail(store.as_ref(), JobId::new())
            .await
            .unwrap()
            .is_none());
    }
}
