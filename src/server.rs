//! The hyper accept loops: one per listener, HTTP/1.1 keep-alive and HTTP/2 (h2c) on the
//! same port, a bound on open connections, header-read timeouts, request ids, access logs
//! and metrics, and graceful shutdown (stop accepting, drain in-flight requests, give up
//! after the grace period).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Which face of the service a listener shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Cdn,
    Api,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Cdn => "cdn",
            Role::Api => "api",
        }
    }
}

/// Accepts connections until `shutdown` is cancelled, then drains for at most `grace`.
pub async fn serve(listener: TcpListener, role: Role, app: Arc<App>, shutdown: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Runs from the moment hyper waits for a request head: on a new connection, and on
        // a keep-alive one after each response, so it is also the idle timeout.
        .header_read_timeout(Duration::from_millis(app.config.header_timeout_ms))
        // A head that does not fit the read buffer is answered 431.
        .max_buf_size(app.config.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(app.config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(app.config.max_connections));
    loop {
        // Wait for a connection slot first: when full, stop accepting (backpressure).
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = connections.clone().acquire_owned() => {
                slot.expect("invariant: the connection semaphore is never closed")
            }
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(dispatch(role, &app, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let grace = Duration::from_millis(app.config.shutdown_grace_ms);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = role.label(), "drained"),
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(listener = role.label(), "grace period over, closing remaining connections");
        }
    }
}

async fn dispatch(
    role: Role,
    app: &App,
    req: Request<Incoming>,
) -> Response<crate::http_body::Body> {
    let started = Instant::now();
    let request_id = app.metrics.next_request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = match role {
        Role::Cdn => crate::edge::handle(&app.edge, req, &request_id).await,
        Role::Api => crate::api::handle(&app.api, req, &request_id).await,
    };
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    app.metrics.observe_request(role.label(), status, elapsed);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if app.draining.load(Ordering::Relaxed) {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    tracing::info!(
        request_id,
        listener = role.label(),
        %method,
        path,
        status,
        ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    resp
}
