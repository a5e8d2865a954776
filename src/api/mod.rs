//! The API listener: health, readiness and Prometheus metrics now; the storage API
//! (SPEC §2) lives here too as it is built.

pub mod auth;

use std::sync::atomic::Ordering;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::app::App;
use crate::server::{Body, full};

pub async fn handle<B>(app: &App, req: Request<B>, _request_id: &str) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => readiness(app).await,
        (&Method::GET, "/metrics") => {
            let (variants, originals) = app.caches.weighted_sizes();
            let gauge = |cache| {
                app.metrics
                    .cache_bytes
                    .get_or_create(&crate::telemetry::CacheName { cache })
                    .clone()
            };
            gauge("variant").set(variants as i64);
            gauge("original").set(originals as i64);
            let mut resp = text(StatusCode::OK, app.metrics.render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Ready when not draining and both the metadata store and object storage answer.
async fn readiness(app: &App) -> Response<Body> {
    if app.draining.load(Ordering::Relaxed) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    if let Err(e) = app.db.ping().await {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n"));
    }
    if let Err(e) = app.storage.check().await {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}\n"));
    }
    text(StatusCode::OK, "ready\n")
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
