//! Operating behaviour over HTTP: health, metrics, load shedding, coalescing, cancellation,
//! graceful shutdown, HTTP/2.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use imgedge::db::Visibility;

use crate::support::{TestServer, eventually, occupy_cpu};

#[tokio::test]
async fn health_readiness_and_metrics() {
    // No reduced copies: a build finishing between the two requests purges the variant
    // (on purpose, so that renders move to the copy), which would make the hit a miss.
    let s = TestServer::start_with(|c| c.derivative_sizes = String::new()).await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    assert_eq!(s.api_get("/healthz").await.status, 200);
    assert_eq!(s.api_get("/readyz").await.status, 200);
    s.get("/fit-in/40x40/a.jpg").await;
    s.get("/fit-in/40x40/a.jpg").await;
    let m = s.api_get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    for needle in [
        "imgedge_http_requests_total{listener=\"cdn\",status=\"200\"} 2",
        "imgedge_http_request_duration_seconds_bucket",
        "imgedge_cache_lookups_total{cache=\"variant\",result=\"hit\"} 1",
        "imgedge_cache_lookups_total{cache=\"variant\",result=\"miss\"} 1",
        "imgedge_transform_stage_seconds_count{stage=\"decode\"} 1",
        "imgedge_transform_stage_seconds_count{stage=\"encode\"} 1",
        "imgedge_transform_queue_depth 0",
        "imgedge_renders_total 1",
        "imgedge_cache_bytes{cache=\"variant\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn full_queue_sheds_with_503_and_retry_after() {
    let s = TestServer::start_with(|c| {
        c.transform_concurrency = 1;
        c.queue_length = 0;
    })
    .await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let release = occupy_cpu(&s.app, 1).await;
    let r = s.get("/fit-in/41x41/a.jpg").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.json()["error"]["code"], "server/overloaded");
    // The server timed its 503, for operators to see that refusals stay fast.
    let m = s.api_get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("imgedge_shed_answer_seconds_count 1"),
        "no timed 503 in\n{text}"
    );
    drop(release);
    // Once the slot frees, the same request succeeds.
    eventually(|| s.app.metrics.transforms_running.get() == 0).await;
    assert_eq!(s.get("/fit-in/41x41/a.jpg").await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn an_overflowing_queue_sheds_its_oldest_waiter_and_serves_the_newest() {
    let s = TestServer::start_with(|c| {
        c.transform_concurrency = 1;
        c.queue_length = 1;
    })
    .await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let release = occupy_cpu(&s.app, 1).await;
    let metrics = &s.app.metrics;
    let (older, newer) = tokio::join!(s.get("/fit-in/43x43/a.jpg"), async {
        eventually(|| metrics.queue_depth.get() == 1).await;
        let newer = s.get("/fit-in/44x44/a.jpg");
        let release_when_shed = async {
            eventually(|| metrics.shed.get() == 1).await;
            drop(release);
        };
        tokio::join!(newer, release_when_shed).0
    });
    assert_eq!(older.status, 503);
    assert_eq!(older.header("retry-after"), "1");
    assert_eq!(older.json()["error"]["code"], "server/overloaded");
    assert_eq!(newer.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_transform_past_its_deadline_is_504() {
    let s = TestServer::start_with(|c| {
        c.transform_concurrency = 1;
        c.request_deadline_ms = 200;
    })
    .await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let release = occupy_cpu(&s.app, 1).await;
    let r = s.get("/fit-in/42x42/a.jpg").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "image/deadline");
    drop(release);
    s.stop().await;
}

#[tokio::test]
async fn identical_concurrent_misses_fetch_and_render_once() {
    let s = TestServer::start_with(|c| c.transform_concurrency = 1).await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let release = occupy_cpu(&s.app, 1).await;
    let path = "/fit-in/77x77/a.jpg";
    let cdn = s.cdn;
    let tasks: Vec<_> = (0..12)
        .map(|_| tokio::spawn(get_status(cdn, path)))
        .collect();
    // The first render waits in the queue; the others wait on it.
    eventually(|| s.app.metrics.queue_depth.get() == 1).await;
    release.send(()).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(s.app.metrics.renders.get(), 1);
    assert_eq!(s.app.metrics.storage_fetches.get(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_cancelled_first_waiter_does_not_hang_the_others() {
    let s = TestServer::start_with(|c| c.transform_concurrency = 1).await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let release = occupy_cpu(&s.app, 1).await;
    let path = "/fit-in/78x78/a.jpg";
    let first = tokio::spawn(get_status(s.cdn, path));
    eventually(|| s.app.metrics.queue_depth.get() == 1).await;
    let second = tokio::spawn(get_status(s.cdn, path));
    // Wait until the second request has looked the variant up (and so is about to wait on
    // the first one's render), then drop the first.
    let misses = || {
        s.app
            .metrics
            .cache_lookups
            .get_or_create(&imgedge::telemetry::CacheLabels {
                cache: "variant",
                result: "miss",
            })
            .get()
    };
    eventually(|| misses() == 2).await;
    first.abort();
    let _ = first.await;
    release.send(()).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second waiter must not hang")
        .unwrap();
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    let mut s = TestServer::start_with(|c| c.transform_concurrency = 1).await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let release = occupy_cpu(&s.app, 1).await;
    let in_flight = tokio::spawn(get_status(s.cdn, "/fit-in/79x79/a.jpg"));
    eventually(|| s.app.metrics.queue_depth.get() == 1).await;
    s.begin_stop();
    eventually(|| s.app.draining.load(std::sync::atomic::Ordering::Relaxed)).await;
    release.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap(), 200);
    s.stopped().await;
    // After draining, the listener is closed.
    assert!(tokio::net::TcpStream::connect(s.cdn).await.is_err());
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let s = TestServer::start().await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let resp = client
        .request(
            Request::get(format!("http://{}/fit-in/30x30/a.jpg", s.cdn))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(image::load_from_memory(&body).is_ok());
    s.stop().await;
}

async fn get_status(addr: std::net::SocketAddr, path: &'static str) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let resp = client
        .request(
            Request::get(format!("http://{addr}{path}"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}
