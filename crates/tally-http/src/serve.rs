//! Serving a router on a listener with bounds on what a client may hold: how many connections
//! (accepting pauses at the limit), how long a request head may take to arrive (hyper's
//! header-read timeout), how long a connection may sit idle between requests, and a shutdown
//! that ends.
//!
//! `axum::serve` offers none of these, so this is its accept loop with hyper-util's connection
//! builder (HTTP/1.1 and h2c, as `axum::serve`), plus per-connection bookkeeping: a
//! connection knows whether a request is in flight on it (from the moment hyper hands the
//! request to the router until its response body is dropped) and when its socket last moved a
//! byte.
//!
//! Shutdown: the listener closes; every connection with no request in flight (idle, or still
//! sending a request head) is dropped at once; the others are told to close after their
//! current response (hyper's graceful shutdown) and get `shutdown_grace` to finish, after which
//! whatever is left is dropped. A command a dropped request had submitted still commits or
//! not as one whole (the writer does not depend on the connection).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The edge's bounds (`[server]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request head (request line and headers) must arrive within this, else the connection
    /// is closed (hyper answers nothing: the client has not finished asking).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Connections held at once; at the limit, accepting waits for one to close.
    pub max_connections: usize,
    /// How long requests in flight get to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

/// What `serve` counts (Prometheus handles: clones count into the same metric).
#[derive(Debug, Clone)]
pub struct ServeStats {
    /// Connections open now.
    pub open: prometheus::IntGauge,
    /// Connections closed for idling or for a slow request head.
    pub timed_out: prometheus::IntCounter,
    /// Connections still busy when the shutdown grace ran out, dropped.
    pub dropped_at_shutdown: prometheus::IntCounter,
}

/// Serves `router` on `listener` until `shutdown` resolves, then shuts down as the module
/// says. `on_connection` runs on every accepted socket (e.g. to set `TCP_NODELAY`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stats: ServeStats,
    on_connection: fn(&TcpStream),
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors and the like: wait, as axum::serve and hyper do.
                tracing::warn!(%error, "accept failed; retrying in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        on_connection(&tcp);
        let router = router.clone();
        let stopping = stopping.clone();
        let stats = stats.clone();
        connections.spawn(async move {
            stats.open.inc();
            connection(tcp, router, limits, stopping, &stats).await;
            stats.open.dec();
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let left = connections.len();
        stats.dropped_at_shutdown.inc_by(left as u64);
        tracing::warn!(
            connections = left,
            grace_seconds = limits.shutdown_grace.as_secs_f64(),
            "requests still in flight when the shutdown grace ran out; dropping them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Errors of one connection, not of the listener (as `axum::serve` classifies them).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// No request head has begun since the last request.
const NONE: u64 = u64::MAX;

/// One connection's bookkeeping: requests in flight, and times in milliseconds since it was
/// accepted.
struct Activity {
    started: Instant,
    /// Requests handed to the router whose response body is not yet dropped.
    in_flight: AtomicUsize,
    /// When the socket last moved a byte either way.
    last_byte: AtomicU64,
    /// When the first byte of the next request head arrived, or `NONE`.
    head_begun: AtomicU64,
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_byte.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let _ = self
                .head_begun
                .compare_exchange(NONE, now, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    fn wrote(&self) {
        self.last_byte.store(self.now(), Ordering::Relaxed);
    }

    /// Why an unbusy connection should close now, if it should.
    fn expired(&self, limits: &ServeLimits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let now = self.now();
        let since = |at: u64| Duration::from_millis(now.saturating_sub(at));
        match self.head_begun.load(Ordering::SeqCst) {
            NONE if since(self.last_byte.load(Ordering::Relaxed)) >= limits.idle_timeout => {
                Some("idle")
            }
            NONE => None,
            begun if since(begun) >= limits.header_read_timeout => Some("slow request head"),
            _ => None,
        }
    }
}

/// Counts a request in flight from when the router gets it until its response body is gone.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.head_begun.store(NONE, Ordering::SeqCst);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.wrote();
    }
}

async fn connection(
    tcp: TcpStream,
    router: Router,
    limits: ServeLimits,
    mut stopping: watch::Receiver<bool>,
    stats: &ServeStats,
) {
    let activity = Arc::new(Activity {
        started: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_byte: AtomicU64::new(0),
        head_begun: AtomicU64::new(NONE),
    });
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = InFlight::start(&requests);
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _held = &guard;
                    frame
                }))
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timer starts when it waits for a head, idle keep-alive included, so
    // it is only the backstop here: the ticks below tell a slow head from an idle connection.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.max(limits.idle_timeout) * 2);
    let served = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(served);
    let idle_check = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(idle_check);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut graceful = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    if is_header_timeout(&*error) {
                        stats.timed_out.inc();
                    }
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = stopping.wait_for(|stop| *stop), if !graceful => {
                let _ = changed;
                if activity.in_flight.load(Ordering::SeqCst) == 0 {
                    // Idle or still sending its request head: nothing to finish.
                    return;
                }
                served.as_mut().graceful_shutdown();
                graceful = true;
            }
            _ = ticks.tick() => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(why, "closing a connection");
                    stats.timed_out.inc();
                    return;
                }
            }
        }
    }
}

fn is_header_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// A socket that tells its connection's `Activity` when it moves bytes.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
