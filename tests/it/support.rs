//! The test harness: a real server on ephemeral ports, fixtures registered with a chosen
//! visibility, and a small HTTP client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use imgedge::db::{NewFile, OwnerType, Visibility};
use imgedge::key::ObjectKey;
use imgedge::{App, Config, Listeners};

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// Reads a whole response.
    pub async fn read(resp: http::Response<hyper::body::Incoming>) -> Resp {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Decodes the body as an image, asserting the format it claims.
    pub fn image(&self) -> image::DynamicImage {
        assert_eq!(
            self.status,
            200,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        image::load_from_memory(&self.body).expect("body decodes as an image")
    }

    pub fn format(&self) -> image::ImageFormat {
        image::guess_format(&self.body).expect("body is a known image format")
    }
}

pub struct TestServer {
    pub cdn: SocketAddr,
    pub api: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    client: Client<HttpConnector, Empty<Bytes>>,
    body_client: Client<HttpConnector, Full<Bytes>>,
    _dir: tempfile::TempDir,
}

/// API keys every test server accepts: project `default` (publishable and secret) and a
/// publishable key of project `other`.
pub const PK: &str = "pk_1111111111111111111111111111111111111111111111111111111111111111";
pub const SK: &str = "sk_2222222222222222222222222222222222222222222222222222222222222222";
pub const OTHER_PK: &str = "pk_3333333333333333333333333333333333333333333333333333333333333333";
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub fn test_config(dir: &std::path::Path) -> Config {
    let no_env: Vec<(String, String)> = Vec::new();
    let mut config = Config::load(None, no_env, []).unwrap();
    config.data_dir = dir.to_owned();
    config.transform_concurrency = 2;
    config.shutdown_grace_ms = 5_000;
    let hash = imgedge::auth::sha256_hex;
    config.api_keys = format!(
        "default:{},default:{},other:{}",
        hash(PK),
        hash(SK),
        hash(OTHER_PK)
    );
    config.jwt_secret = JWT_SECRET.into();
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server on the backends the environment names (see `Backends`), each with a new
    /// bucket and database of its own, after `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        Backends::from_env().apply_fresh(&mut config).await;
        tweak(&mut config);
        TestServer::start_in(dir, config).await
    }

    /// Whether this server stores objects in S3 (else the local store).
    pub fn is_s3(&self) -> bool {
        self.app.config.storage == imgedge::config::StorageKind::S3
    }

    pub async fn start_in(dir: tempfile::TempDir, mut config: Config) -> TestServer {
        let listeners = Listeners {
            cdn: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            api: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let cdn = listeners.cdn.local_addr().unwrap();
        let api = listeners.api.local_addr().unwrap();
        // Links the service prints must point at the ephemeral ports.
        config.public_api_url = format!("http://{api}");
        config.public_cdn_url = format!("http://{cdn}");
        let app = Arc::new(App::build(config).await.unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(imgedge::serve(app.clone(), listeners, async {
            let _ = stopped.await;
        }));
        TestServer {
            cdn,
            api,
            app,
            stop: Some(stop),
            task: Some(task),
            client: Client::builder(TokioExecutor::new()).build_http(),
            body_client: Client::builder(TokioExecutor::new()).build_http(),
            _dir: dir,
        }
    }

    /// Stores fixture `name` under `key` and registers it with `visibility`.
    pub async fn add(&self, key: &str, name: &str, visibility: Visibility) {
        self.add_bytes(key, fixture(name), visibility).await;
    }

    pub async fn add_bytes(&self, key: &str, bytes: Vec<u8>, visibility: Visibility) {
        let key = ObjectKey::parse(key).unwrap();
        let size = bytes.len() as u64;
        // As registration records it: the sniffed image type, else a generic one.
        let mime_type = image::guess_format(&bytes)
            .map_or("application/octet-stream", |f| f.to_mime_type())
            .to_owned();
        self.app
            .storage
            .put(&key, Bytes::from(bytes))
            .await
            .unwrap();
        self.app
            .db
            .insert_file(NewFile {
                project: "default".into(),
                key,
                original_name: "fixture".into(),
                mime_type,
                size,
                width: None,
                height: None,
                visibility,
                owner_id: "test".into(),
                owner_type: OwnerType::Service,
            })
            .await
            .unwrap();
    }

    pub async fn set_visibility(&self, key: &str, visibility: Visibility) {
        let key = ObjectKey::parse(key).unwrap();
        assert!(self.app.db.set_visibility(&key, visibility).await.unwrap());
        self.app.caches.purge(&key).await;
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, self.cdn, path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, self.cdn, path, headers).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.request(Method::HEAD, self.cdn, path, &[]).await
    }

    pub async fn api_get(&self, path: &str) -> Resp {
        self.request(Method::GET, self.api, path, &[]).await
    }

    pub async fn request(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("request {path}: {e}"));
        Resp::read(resp).await
    }

    /// A development token for `user`, as `imgedge token` mints it.
    pub fn token(&self, user: &str) -> String {
        self.app
            .api
            .jwt
            .as_ref()
            .expect("tests configure a JWT secret")
            .mint(user, std::time::Duration::from_secs(3600))
            .unwrap()
    }

    /// Calls the storage API with a JSON body (or none), an API key and an optional user.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        key: &str,
        user: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Resp {
        let token = user.map(|u| format!("Bearer {}", self.token(u)));
        let mut headers: Vec<(&str, &str)> = vec![("x-api-key", key)];
        if let Some(t) = &token {
            headers.push(("authorization", t));
        }
        let (bytes, has_body) = match body {
            Some(b) => (Bytes::from(b.to_string()), true),
            None => (Bytes::new(), false),
        };
        if has_body {
            headers.push(("content-type", "application/json"));
        }
        self.send(
            method,
            &format!("http://{}{path}", self.api),
            &headers,
            bytes,
        )
        .await
    }

    /// Sends `body` to an absolute URL (for presigned URLs).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .body_client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap_or_else(|e| panic!("request {url}: {e}"));
        Resp::read(resp).await
    }

    /// Triggers graceful shutdown and waits for the server to finish draining.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn stopped(&mut self) {
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// Occupies every CPU slot of the server until the returned sender is dropped or sent to.
pub async fn occupy_cpu(app: &App, slots: usize) -> std::sync::mpsc::Sender<()> {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    for _ in 0..slots {
        let (started_tx, started_rx) = oneshot::channel();
        let cpu = app.edge.cpu.clone();
        let rx = release_rx.clone();
        tokio::spawn(async move {
            let _ = cpu
                .submit(far, move |_| {
                    let _ = started_tx.send(());
                    let _ = rx.lock().unwrap().recv();
                })
                .await;
        });
        started_rx.await.unwrap();
    }
    release_tx
}

/// Polls the async `cond` until it holds, failing after `within`.
pub async fn eventually_async<F, Fut>(within: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition did not hold within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits (without sleeping a fixed time) until `cond` holds, polling on the runtime.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..200_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("condition never held");
}

/// The backends the suite runs on, chosen by the environment so that one suite covers
/// every combination (`scripts/test.sh` runs it three times):
/// - `TEST_S3_ENDPOINT` (with `TEST_S3_ACCESS_KEY` / `TEST_S3_SECRET_KEY`): S3 storage on
///   that server, a new bucket per test server;
/// - `TEST_POSTGRES_URL` (an administrative URL): PostgreSQL, a new database per test
///   server.
///
/// Neither set: the embedded defaults (local store, SQLite).
#[derive(Debug, Clone, Default)]
pub struct Backends {
    pub s3: Option<S3Access>,
    pub postgres: Option<String>,
}

#[derive(Debug, Clone)]
pub struct S3Access {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Backends {
    pub fn from_env() -> Backends {
        Backends {
            s3: env_value("TEST_S3_ENDPOINT").map(|endpoint| S3Access {
                endpoint,
                access_key: env_value("TEST_S3_ACCESS_KEY").unwrap_or_else(|| "imgedge".into()),
                secret_key: env_value("TEST_S3_SECRET_KEY")
                    .unwrap_or_else(|| "imgedge-secret".into()),
            }),
            postgres: env_value("TEST_POSTGRES_URL"),
        }
    }

    /// Points `config` at a new bucket and a new database on the configured servers.
    pub async fn apply_fresh(&self, config: &mut Config) {
        if let Some(s3) = &self.s3 {
            let bucket = s3.new_bucket().await;
            s3.apply(config, &bucket);
        }
        if let Some(admin) = &self.postgres {
            config.database_url = new_database(admin).await;
        }
    }
}

impl S3Access {
    pub fn apply(&self, config: &mut Config, bucket: &str) {
        config.storage = imgedge::config::StorageKind::S3;
        config.s3_endpoint = self.endpoint.clone();
        config.s3_bucket = bucket.to_owned();
        config.s3_region = "us-east-1".into();
        config.s3_path_style = true;
        config.s3_access_key_id = self.access_key.clone();
        config.s3_secret_access_key = self.secret_key.as_str().into();
    }

    /// A plain SDK client for the test server (creating buckets, looking behind the API).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "tests",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn new_bucket(&self) -> String {
        let name = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
        self.client()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name} at {}: {e:?}", self.endpoint));
        name
    }
}

/// Creates an empty database on the server of `admin_url`; returns its URL.
pub async fn new_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connect {admin_url}: {e}"));
    // The name is ours (a UUID), not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let (server, _) = base.rsplit_once('/').expect("a URL with a database path");
    if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    }
}

/// A TCP relay in front of a real server, for fault injection: it passes traffic, refuses
/// it (connections are closed at once, existing ones cut), stalls it (connections are
/// accepted and held without an answer), or throttles it as S3 does (each new connection's
/// request is answered `503 SlowDown` and closed, for as many connections as `throttle`
/// allows; existing connections are cut when throttling starts).
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<std::sync::atomic::AtomicU8>,
    /// Connections still to throttle in `Fault::Throttle`.
    throttle_left: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests answered with 503 so far.
    pub throttled: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    Pass = 0,
    Refuse = 1,
    Stall = 2,
    Throttle = 3,
}

/// S3's answer when it sheds load.
const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
<Message>Please reduce your request rate.</Message></Error>";

/// Reads one request head, answers it `503 SlowDown` and closes.
async fn slow_down(mut client: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let answer = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{SLOW_DOWN}",
        SLOW_DOWN.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> FaultProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(std::sync::atomic::AtomicU8::new(Fault::Pass as u8));
        let throttle_left = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let throttled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shared = mode.clone();
        let (left, count) = (throttle_left.clone(), throttled.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mode = shared.clone();
                let (left, count) = (left.clone(), count.clone());
                tokio::spawn(async move {
                    match mode.load(Ordering::SeqCst) {
                        0 => {}
                        1 => return,
                        3 => {
                            let take = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                n.checked_sub(1)
                            });
                            if take.is_ok() {
                                count.fetch_add(1, Ordering::SeqCst);
                                slow_down(client).await;
                                return;
                            }
                            // The allowance is spent: pass from now on.
                            mode.store(Fault::Pass as u8, Ordering::SeqCst);
                        }
                        _ => {
                            // Hold the connection, answer nothing.
                            let _keep = client;
                            tokio::time::sleep(std::time::Duration::from_secs(300)).await;
                            return;
                        }
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    relay(client, server, mode).await;
                });
            }
        });
        FaultProxy {
            addr,
            mode,
            throttle_left,
            throttled,
            task,
        }
    }

    pub fn set(&self, fault: Fault) {
        self.mode
            .store(fault as u8, std::sync::atomic::Ordering::SeqCst);
    }

    /// Throttles the next `connections` new connections (`usize::MAX`: all), then passes.
    pub fn throttle(&self, connections: usize) {
        use std::sync::atomic::Ordering;
        self.throttled.store(0, Ordering::SeqCst);
        self.throttle_left.store(connections, Ordering::SeqCst);
        self.set(Fault::Throttle);
    }

    pub fn throttled(&self) -> usize {
        self.throttled.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways chunk by chunk, obeying the current fault mode for every chunk.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mode: Arc<std::sync::atomic::AtomicU8>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mode: Arc<std::sync::atomic::AtomicU8>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Looks at the mode every 10 ms even while idle, so pooled connections are cut
            // as soon as the proxy refuses or throttles.
            let read = tokio::select! {
                read = from.read(&mut buf) => read,
                () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {
                    if matches!(mode.load(std::sync::atomic::Ordering::SeqCst), 1 | 3) {
                        return;
                    }
                    continue;
                }
            };
            let n = match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match mode.load(std::sync::atomic::Ordering::SeqCst) {
                0 => {}
                1 | 3 => return,
                _ => {
                    tokio::time::sleep(std::time::Duration::from_secs(300)).await;
                    return;
                }
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        () = pump(cr, sw, mode.clone()) => {}
        () = pump(sr, cw, mode) => {}
    }
}

/// A presigned upload URL for a JPEG of `size` bytes, asked for by user `alice` (answer 200).
pub async fn presign(s: &TestServer, name: &str, size: usize) -> serde_json::Value {
    let r = s
        .api(
            Method::POST,
            "/v1/files/presigned-url",
            PK,
            Some("alice"),
            Some(serde_json::json!({ "filename": name, "contentType": "image/jpeg", "fileSize": size })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Every file (not directory or lock) under the store's temporary area.
pub fn temporary_files(data: &std::path::Path) -> Vec<PathBuf> {
    let tmp = data.join("objects.work").join("tmp");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&tmp).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if !path.to_string_lossy().ends_with(".lock") {
            found.push(path);
        }
    }
    found
}
