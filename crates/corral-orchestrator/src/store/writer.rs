//! The store's write connection: SQLite's one connection, held for the store's life, or
//! PostgreSQL's pool; and [`Tx`], a write transaction on either.
//!
//! SQLite's connection is not pooled. A sqlx pool checks every connection given back to it
//! with a ping, on a task it spawns on the caller's runtime, and the next writer waits for
//! that task. On an orchestrator following a thousand renders, the runtime's queue made
//! each such hand-over take milliseconds, and the one writer spent most of its time
//! between transactions (measured with `corral bench sim --nodes 1000`).

use sqlx::pool::PoolConnection;
use sqlx::AnyConnection;
use sqlx::{Any, AnyPool, Transaction};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Where writes go.
pub(super) enum Writer {
    /// PostgreSQL: a pool; transactions run side by side and lock rows.
    Pool(AnyPool),
    /// SQLite: the one connection, taken by one writer at a time.
    Held(Arc<Mutex<Held>>),
}

/// SQLite's write connection and what a writer that did not finish left on it.
pub(super) struct Held {
    conn: AnyConnection,
    /// A transaction was begun and neither committed nor rolled back (its future was
    /// dropped, or it failed): the next writer rolls it back first.
    open: bool,
    /// The connection runs with `synchronous = FULL` for one transaction and goes back to
    /// `NORMAL` when that ends.
    durable: bool,
}

impl Held {
    pub(super) fn new(conn: AnyConnection) -> Held {
        Held {
            conn,
            open: false,
            durable: false,
        }
    }

    /// Ends what an earlier writer left unfinished.
    async fn tidy(&mut self) -> Result<(), sqlx::Error> {
        if self.open {
            // An error here means no transaction was active any more (SQLite rolled it
            // back by itself): what matters is that none is.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
            self.open = false;
        }
        if self.durable {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut self.conn)
                .await?;
            self.durable = false;
        }
        Ok(())
    }
}

/// The write connection, outside a transaction.
pub(super) enum WriteConn {
    Pooled(PoolConnection<Any>),
    Held(OwnedMutexGuard<Held>),
}

impl Deref for WriteConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            WriteConn::Pooled(c) => c,
            WriteConn::Held(h) => &h.conn,
        }
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteConn::Pooled(c) => c,
            WriteConn::Held(h) => &mut h.conn,
        }
    }
}

/// A write transaction. Dropped without [`Tx::commit`], it is rolled back (on SQLite by
/// the next writer, before it begins).
pub(super) enum Tx {
    Pooled(Transaction<'static, Any>),
    Held(OwnedMutexGuard<Held>),
}

impl Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Tx::Pooled(t) => t,
            Tx::Held(h) => &h.conn,
        }
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Tx::Pooled(t) => t,
            Tx::Held(h) => &mut h.conn,
        }
    }
}

impl Tx {
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.end("COMMIT").await
    }

    pub(super) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.end("ROLLBACK").await
    }

    async fn end(self, how: &'static str) -> Result<(), sqlx::Error> {
        match self {
            Tx::Pooled(t) if how == "COMMIT" => t.commit().await,
            Tx::Pooled(t) => t.rollback().await,
            Tx::Held(mut h) => {
                sqlx::query(how).execute(&mut h.conn).await?;
                h.open = false;
                // Done: a failure to set the connection back to `NORMAL` is the next
                // writer's to retry (`durable` stays set), not this transaction's failure.
                if let Err(e) = h.tidy().await {
                    tracing::warn!(error = %e, "could not reset the write connection");
                }
                Ok(())
            }
        }
    }
}

/// A thread of its own that runs SQLite's busiest writes (a task's reports, a round's
/// leases), each whole transaction on it. A transaction is a dozen hand-offs between sqlx's
/// SQLite thread and the task that awaits it; on the orchestrator's runtime, busy with a
/// thousand watchers, each hand-off waited in its queue, and the one writer was held for
/// that long. Here nothing else waits in line.
pub(super) struct WriteThread {
    handle: tokio::runtime::Handle,
    /// Dropped with the store: the thread then ends its runtime and exits.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl WriteThread {
    pub(super) fn start() -> std::io::Result<WriteThread> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (started, handle) = std::sync::mpsc::channel();
        // The runtime is built, run and dropped on its own thread: a runtime dropped on
        // the caller's (async) task would panic.
        std::thread::Builder::new()
            .name("corral-db-write".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = started.send(Ok(runtime.handle().clone()));
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                    }
                }
            })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("the write thread ended before it started"))??;
        Ok(WriteThread {
            handle,
            _stop: stop,
        })
    }

    /// Starts `work` on the thread, now, and does not wait for it.
    pub(super) fn spawn<W>(&self, work: W)
    where
        W: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(work);
    }

    /// Runs `work` on the thread and answers what it answers. It runs to its end even if
    /// the caller stops waiting, so a transaction is never cut off halfway by a caller.
    pub(super) async fn run<T, W>(&self, work: W) -> Result<T, tokio::task::JoinError>
    where
        T: Send + 'static,
        W: Future<Output = T> + Send + 'static,
    {
        self.handle.spawn(work).await
    }
}

impl Writer {
    /// The write connection, for a statement of its own.
    pub(super) async fn conn(&self) -> Result<WriteConn, sqlx::Error> {
        match self {
            Writer::Pool(pool) => Ok(WriteConn::Pooled(pool.acquire().await?)),
            Writer::Held(held) => {
                let mut h = held.clone().lock_owned().await;
                h.tidy().await?;
                Ok(WriteConn::Held(h))
            }
        }
    }

    /// Begins a write transaction. On SQLite it takes the database's write lock at once
    /// (`BEGIN IMMEDIATE`), so another process writing the same file is waited for here
    /// (`busy_timeout`) rather than failing the transaction halfway.
    pub(super) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.begin_with(false).await
    }

    /// Begins a write transaction whose commit survives a power loss: on SQLite it commits
    /// with `synchronous = FULL` (which must be set before the transaction begins), then
    /// the connection goes back to `NORMAL`.
    pub(super) async fn begin_durable(&self) -> Result<Tx, sqlx::Error> {
        self.begin_with(true).await
    }

    async fn begin_with(&self, durable: bool) -> Result<Tx, sqlx::Error> {
        match self {
            Writer::Pool(pool) => Ok(Tx::Pooled(pool.begin().await?)),
            Writer::Held(held) => {
                let mut h = held.clone().lock_owned().await;
                h.tidy().await?;
                // Marked before each statement is sent: a caller that stops waiting after
                // sending it leaves the statement to run, and the next writer to undo it.
                if durable {
                    h.durable = true;
                    sqlx::query("PRAGMA synchronous = FULL")
                        .execute(&mut h.conn)
                        .await?;
                }
                h.open = true;
                sqlx::query("BEGIN IMMEDIATE").execute(&mut h.conn).await?;
                Ok(Tx::Held(h))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    async fn writer(dir: &tempfile::TempDir) -> Writer {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let mut conn = AnyConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        Writer::Held(Arc::new(Mutex::new(Held::new(conn))))
    }

    async fn rows(w: &Writer) -> i64 {
        let mut conn = w.conn().await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
    }

    async fn insert(tx: &mut Tx) {
        sqlx::query("INSERT INTO t (x) VALUES (1)")
            .execute(&mut **tx)
            .await
            .unwrap();
    }

    /// A writer dropped halfway (its request cancelled, an error returned early) leaves
    /// nothing: the next writer rolls its transaction back and begins its own.
    #[tokio::test]
    async fn a_transaction_dropped_unfinished_is_rolled_back_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        let mut tx = w.begin_durable().await.unwrap();
        insert(&mut tx).await;
        drop(tx);
        assert_eq!(rows(&w).await, 0);
        let mut tx = w.begin().await.unwrap();
        insert(&mut tx).await;
        tx.commit().await.unwrap();
        let mut tx = w.begin().await.unwrap();
        insert(&mut tx).await;
        tx.rollback().await.unwrap();
        assert_eq!(rows(&w).await, 1);
        // The durable transaction's setting did not outlive it.
        let mut conn = w.conn().await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(synchronous, 1, "NORMAL");
    }

    /// A writer that stops waiting right after sending `BEGIN` (its future dropped) leaves
    /// the connection inside a transaction the next writer must end, or every later
    /// `BEGIN` would fail.
    #[tokio::test]
    async fn a_begin_dropped_in_flight_does_not_wedge_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        for i in 0..50 {
            let begin = if i % 2 == 0 {
                futures_util::FutureExt::boxed(w.begin())
            } else {
                futures_util::FutureExt::boxed(w.begin_durable())
            };
            // Polled once: the statement is sent, then the future is dropped.
            let _ = tokio::time::timeout(std::time::Duration::ZERO, begin).await;
            let mut tx = w.begin().await.unwrap();
            insert(&mut tx).await;
            tx.commit().await.unwrap();
        }
        assert_eq!(rows(&w).await, 50);
    }

    /// A durable transaction commits with `synchronous = FULL` (2).
    #[tokio::test]
    async fn a_durable_transaction_runs_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        let mut conn = w.conn().await.unwrap();
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        let mut tx = w.begin_durable().await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        tx.commit().await.unwrap();
    }
}
