//! The HTTP server both Corral servers run: hyper's HTTP/1 connection driver with a
//! deadline for request headers (which is also the idle keep-alive timeout), a deadline
//! for request bodies, a bound on open connections that evicts idle ones before it
//! refuses anyone, and a graceful shutdown with a bounded grace.
//!
//! `axum::serve` has none of these knobs: a client sending its headers one byte a second,
//! or opening connections and sending nothing, could hold the server's descriptors for
//! ever until new clients were refused.

use crate::ProblemResponse;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use corral_core::Problem;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a connection may take, from the moment it can send a request (just accepted,
/// or its previous response sent) until that request's headers are complete. It is both
/// the header-read timeout (slow clients) and the idle keep-alive timeout: hyper starts it
/// whenever the connection waits for a request. A response in progress (a long-poll, an
/// event stream) is not waiting for a request, so it never hits this. Over TLS the
/// handshake gets this long too, before it: a connection may take up to twice this to
/// send its first request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Most time to read a whole request body once its headers are in. API bodies are a few
/// hundred bytes (at most [`crate::MAX_BODY_BYTES`]); a client still sending after this is
/// answered 408. A total deadline, not a per-chunk one: a client trickling a byte every
/// few seconds must not hold a connection for hours.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most time a write to a client may stay blocked because the client stopped reading
/// before the connection is closed. A response of any length (an event stream included)
/// goes on for as long as the client keeps reading it; one that nobody reads must not
/// hold a connection, its buffers and a descriptor for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most connections open at once. At the bound, the longest-open idle connection is
/// closed to make room; when none is idle (every one is in a request, a long-poll or an
/// event stream), the newcomer is answered 503 and closed. Kept well under the usual
/// 1024-descriptor limit, since the process also needs descriptors for Blender's pipes,
/// logs, the database and its own outgoing connections.
pub const MAX_CONNECTIONS: usize = 512;

/// How long a server waits, once its own shutdown work is done, for open connections to
/// finish before it exits anyway (a client that never completes its request must not keep
/// a stopped server alive).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after an accept error (out of descriptors, most likely) before accepting again,
/// so the loop does not spin while the process is starved and evicted connections have
/// time to close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// When the process runs out of descriptors, the connection bound drops to this many
/// fewer than are open, and idle connections are closed down to it: descriptors are left
/// for the rest of the process (Blender's pipes, logs, the database), and each later
/// newcomer evicts an idle connection instead of failing to be accepted.
const DESCRIPTOR_HEADROOM: usize = 16;

/// The limits a server enforces; [`ServerLimits::default`] holds the constants above.
/// Tests use shorter values.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// See [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// See [`WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

impl ServerLimits {
    /// The defaults, with the connection bound sized to the process's descriptor limit:
    /// half of what the soft limit leaves after 256 for the rest of the process (the other
    /// half is for its own outgoing connections: an orchestrator long-polls every node
    /// that renders), never below [`MAX_CONNECTIONS`] nor above 16384. A farm of a
    /// thousand nodes keeps a connection open per node, which 512 cannot hold.
    pub fn sized_to_descriptors() -> Self {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
            .unwrap_or(1024);
        ServerLimits {
            max_connections: (soft.saturating_sub(256) / 2).clamp(MAX_CONNECTIONS, 16384),
            ..ServerLimits::default()
        }
    }
}

/// The body deadline of the request it is attached to, for the extractors that read
/// bodies ([`crate::JsonBody`]).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Serves `app` with the default [`ServerLimits`] until `shutdown` completes, then lets
/// open requests finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, ServerLimits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
) -> std::io::Result<()> {
    serve_tls(listener, app, shutdown, limits, None).await
}

/// [`serve_with`], over TLS when `tls` is given: each connection's handshake must end
/// within the header deadline, and one that fails is closed without an answer.
pub async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut refuse = http.clone();
    refuse.keep_alive(false);

    let table = Arc::new(ConnectionTable::default());
    // Lowered when the process runs out of descriptors before reaching the bound.
    let mut max_connections = limits.max_connections.max(1);
    let tasks = TaskTracker::new();
    // Dropped (closed) when the server stops: every connection then shuts down gracefully.
    let (stopping_tx, stopping_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Most likely out of descriptors: serve fewer connections from now
                    // on, and close idle ones down to that, so the server stays reachable.
                    let open = table.len();
                    if open > 1 && is_out_of_descriptors(&e) {
                        max_connections =
                            max_connections.min(open.saturating_sub(DESCRIPTOR_HEADROOM).max(1));
                    }
                    let mut evicted = 0;
                    while table.len() >= max_connections && table.evict_oldest_idle() {
                        evicted += 1;
                    }
                    tracing::warn!(
                        error = %e, open, evicted, max_connections,
                        "cannot accept a connection"
                    );
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if table.len() >= max_connections && !table.evict_oldest_idle() {
            tracing::warn!(
                limit = max_connections,
                "every connection is busy; answering 503"
            );
            let (refuse, tls) = (refuse.clone(), tls.clone());
            tasks.spawn(async move {
                let Some(io) = io(stream, &limits, tls.as_ref()).await else {
                    return;
                };
                let conn = refuse.serve_connection(
                    io,
                    hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
                        Ok::<_, Infallible>(overloaded())
                    }),
                );
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "refused connection ended with an error");
                }
            });
            continue;
        }
        let (id, in_flight, evicted) = table.open();
        let mut stopping = stopping_rx.clone();
        let table = table.clone();
        let (http, app, tls) = (http.clone(), app.clone(), tls.clone());
        tasks.spawn(async move {
            let _close = CloseOnDrop { table, id };
            tokio::pin!(evicted);
            // The handshake counts as idle time: an evicted or stopping server does not
            // wait for it.
            let io = tokio::select! {
                io = io(stream, &limits, tls.as_ref()) => io,
                _ = &mut evicted => None,
                _ = stopping.changed() => None,
            };
            let Some(io) = io else {
                return;
            };
            let conn = http.serve_connection(io, service(app, in_flight, limits.body_timeout));
            tokio::pin!(conn);
            let mut graceful = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            // Timeouts and clients that went away: routine, not errors.
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    // Evicted while idle: drop it; nothing is in progress on it.
                    _ = &mut evicted => break,
                    _ = stopping.changed(), if !graceful => {
                        graceful = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    drop(stopping_tx);
    tasks.close();
    // The caller's shutdown work is done; open requests get a bounded grace.
    let _ = tokio::time::timeout(limits.shutdown_grace, tasks.wait()).await;
    Ok(())
}

/// What hyper reads and writes: a TCP stream, or TLS over one.
trait ConnStream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> ConnStream for T {}

type Io = TokioIo<Pin<Box<dyn ConnStream>>>;

/// A connection's stream with the write timeout (boxed, since the timeout wrapper is not
/// `Unpin`), after its TLS handshake when the server speaks TLS. `None` when the
/// handshake failed or took longer than the header deadline (a client that connects and
/// sends nothing must not hold a connection).
async fn io(
    stream: tokio::net::TcpStream,
    limits: &ServerLimits,
    tls: Option<&TlsAcceptor>,
) -> Option<Io> {
    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    stream.set_write_timeout(Some(limits.write_timeout));
    let stream = Box::pin(stream);
    let Some(acceptor) = tls else {
        return Some(TokioIo::new(stream));
    };
    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(TokioIo::new(Box::pin(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake took too long");
            None
        }
    }
}

/// The per-connection service: `app`, with each request's body deadline attached, and the
/// connection counted busy from a request's headers until its response body is dropped
/// (sent, or the client gone).
fn service(
    app: axum::Router,
    in_flight: Arc<AtomicUsize>,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::enter(&in_flight);
        let app = app.clone();
        async move {
            let mut req: Request = req.map(Body::new);
            req.extensions_mut().insert(BodyTimeout(body_timeout));
            let response = match app.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| {
                // The closure owns the guard, so the connection stays busy until hyper
                // drops the body: an event stream keeps it busy for as long as it runs.
                Body::new(body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                }))
            }))
        }
    })
}

/// What a client gets when every connection is busy.
fn overloaded() -> Response {
    ProblemResponse(
        Problem::new(503, "Too many connections")
            .with_detail("every connection this server allows is busy; try again shortly"),
    )
    .into_response()
}

/// Accept errors that concern one connection only (the client gave up before we took it).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// `EMFILE` or `ENFILE`: the process or the system has no descriptor left.
fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    // 24 and 23 on Linux and the BSDs; std has no ErrorKind for them.
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// The open connections, oldest first, with how many requests each has in progress and
/// the means to close it.
#[derive(Default)]
struct ConnectionTable {
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    next_id: u64,
    open: BTreeMap<u64, Open>,
}

struct Open {
    in_flight: Arc<AtomicUsize>,
    evict: oneshot::Sender<()>,
}

impl ConnectionTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        // A panic while holding this lock leaves the map consistent (every change is one
        // insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Registers a new connection: its id, its in-flight counter, and the signal that
    /// evicts it.
    fn open(
        &self,
    ) -> (
        u64,
        Arc<AtomicUsize>,
        impl Future<Output = Result<(), oneshot::error::RecvError>>,
    ) {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (evict, evicted) = oneshot::channel();
        inner.open.insert(
            id,
            Open {
                in_flight: in_flight.clone(),
                evict,
            },
        );
        (id, in_flight, evicted)
    }

    /// Closes the longest-open connection with no request in progress; false when every
    /// connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut inner = self.lock();
        let idle = inner
            .open
            .iter()
            .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match idle.and_then(|id| inner.open.remove(&id)) {
            Some(conn) => {
                let _ = conn.evict.send(());
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct CloseOnDrop {
    table: Arc<ConnectionTable>,
    id: u64,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.table.lock().open.remove(&self.id);
    }
}

/// One request in progress on a connection; the count drops when this is dropped.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(counter: &Arc<AtomicUsize>) -> Busy {
        counter.fetch_add(1, Ordering::AcqRel);
        Busy(counter.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
