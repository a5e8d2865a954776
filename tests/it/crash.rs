//! Crashes lose nothing: the real binary, on the embedded defaults (local store + SQLite),
//! is killed with SIGKILL in the middle of a local upload, of a multipart complete and of
//! a derivative build. After a restart there is no partial object, no temporary file left
//! once the store has swept, no file registered without its object, and `imgedge check`
//! (the database's integrity check plus files against objects) passes. The interrupted
//! work can then be finished.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{free_addr, imgedge};
use crate::support::{JWT_SECRET, PK, temporary_files};

/// One `imgedge serve` process over a data directory.
struct Node {
    child: Child,
    api: SocketAddr,
    cdn: SocketAddr,
    data: PathBuf,
    token: String,
}

impl Node {
    fn start(data: &Path, env: &[(&str, &str)]) -> Node {
        let (cdn, api) = (free_addr(), free_addr());
        let mut cmd = imgedge();
        cmd.args(serve_args(data, cdn, api));
        Node::launch(cmd, data, cdn, api, env)
    }

    /// Runs `cmd` (an `imgedge serve` with `serve_args`, possibly wrapped) until it answers.
    fn launch(
        mut cmd: std::process::Command,
        data: &Path,
        cdn: SocketAddr,
        api: SocketAddr,
        env: &[(&str, &str)],
    ) -> Node {
        cmd.env(
            "IMGEDGE_API_KEYS",
            format!("default:{}", imgedge::auth::sha256_hex(PK)),
        )
        .env("IMGEDGE_JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let token = imgedge::auth::JwtVerifier::from_settings(JWT_SECRET, "")
            .unwrap()
            .unwrap()
            .mint("alice", Duration::from_secs(3600))
            .unwrap();
        let mut node = Node {
            child,
            api,
            cdn,
            data: data.to_owned(),
            token,
        };
        let give_up = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(api).is_err() || TcpStream::connect(cdn).is_err() {
            assert!(Instant::now() < give_up, "the server did not start");
            assert!(
                node.child.try_wait().unwrap().is_none(),
                "the server exited at start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The listeners are bound before the store is opened: an answer means it is.
        assert_eq!(http(api, "GET", "/healthz", &[], &[]).0, 200);
        node
    }

    /// SIGKILL: no shutdown, no clean-up.
    fn kill(self) {
        // `Drop` does it.
    }

    /// A storage API call as alice; (status, JSON body or Null).
    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("x-api-key", PK), ("authorization", auth.as_str())];
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        if !bytes.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        let (status, body) = http(self.api, method, path, &headers, bytes.as_bytes());
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// PUTs `body` to a presigned URL of this node (as a JPEG when it is a whole upload,
    /// whose content type is signed); (status, ETag header).
    fn put(&self, url: &str, body: &[u8]) -> (u16, String) {
        let path = path_of(url);
        let headers: &[(&str, &str)] = if path.starts_with("/storage/part") {
            &[]
        } else {
            &[("content-type", "image/jpeg")]
        };
        let (status, head, _) = http_full(self.api, "PUT", &path, headers, body);
        let etag = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("etag: ")
                    .or_else(|| l.strip_prefix("ETag: "))
            })
            .unwrap_or("")
            .trim()
            .to_owned();
        (status, etag)
    }

    /// Starts a multipart upload of `body` as a PDF and uploads its 5 MiB parts; the key,
    /// the upload id and the parts list for `complete`.
    fn upload_parts(&self, body: &[u8]) -> (String, String, Vec<Value>) {
        let (status, init) = self.api(
            "POST",
            "/v1/files/multipart/init",
            Some(json!({ "filename": "big.pdf", "contentType": "application/pdf", "fileSize": body.len() })),
        );
        assert_eq!(status, 200, "{init}");
        let (key, upload_id) = (
            init["key"].as_str().unwrap().to_owned(),
            init["uploadId"].as_str().unwrap().to_owned(),
        );
        let mut parts = Vec::new();
        for (i, chunk) in body.chunks(5 << 20).enumerate() {
            let n = i + 1;
            let (status, part) = self.api(
                "POST",
                "/v1/files/multipart/presigned-url",
                Some(json!({ "key": key, "uploadId": upload_id, "partNumber": n })),
            );
            assert_eq!(status, 200, "{part}");
            let (status, etag) = self.put(part["url"].as_str().unwrap(), chunk);
            assert_eq!(status, 200, "part {n}");
            parts.push(json!({ "partNumber": n, "etag": etag }));
        }
        (key, upload_id, parts)
    }

    /// Registers an uploaded key as alice's file; (status, answer).
    fn register(&self, key: &str, name: &str, mime: &str, size: usize) -> (u16, Value) {
        self.api(
            "POST",
            "/v1/files",
            Some(json!({ "s3Key": key, "originalName": name, "mimeType": mime, "size": size })),
        )
    }

    fn object_path(&self, key: &str) -> PathBuf {
        self.data.join("objects").join(key)
    }
}

fn serve_args(data: &Path, cdn: SocketAddr, api: SocketAddr) -> Vec<String> {
    vec![
        "serve".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--cdn-addr".into(),
        cdn.to_string(),
        "--api-addr".into(),
        api.to_string(),
    ]
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path and query of an absolute URL.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/".into(), |i| rest[i..].to_owned())
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

/// One HTTP/1.1 request on its own connection: (status, head, body).
fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(request_head(method, path, headers, body.len()).as_bytes())
        .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, response[split + 4..].to_vec())
}

fn request_head(method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {len}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Bytes that look like nothing in particular, different for each `seed`.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ seed.wrapping_mul(0x85eb_ca6b);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The temporary area holds exactly one live process's (empty) directory and lock.
fn assert_swept(data: &Path) {
    let tmp = data.join("objects.work").join("tmp");
    let names: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "one directory and one lock (the running node's): {names:?}"
    );
    assert!(
        temporary_files(data).is_empty(),
        "leftovers: {:?}",
        temporary_files(data)
    );
}

/// `imgedge check` on the data directory passes; its report.
fn assert_check_passes(data: &Path) -> String {
    let out = imgedge()
        .arg("check")
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "imgedge check failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("sound"), "{report}");
    report
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_node_killed_mid_upload_leaves_no_partial_object_or_temporary_file() {
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(data.path(), &[]);
    let body = noise(4 << 20, 1);
    let (status, presigned) = node.api(
        "POST",
        "/v1/files/presigned-url",
        Some(json!({ "filename": "big.bin", "contentType": "image/jpeg", "fileSize": body.len() })),
    );
    assert_eq!(status, 200, "{presigned}");
    let url = presigned["url"].as_str().unwrap().to_owned();
    let key = presigned["key"].as_str().unwrap().to_owned();

    // Send the head and the first megabyte, wait until the node is writing it to its
    // temporary file, and kill it there.
    let mut stream = TcpStream::connect(node.api).unwrap();
    let head = request_head(
        "PUT",
        &path_of(&url),
        &[("content-type", "image/jpeg")],
        body.len(),
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..1 << 20]).unwrap();
    wait_for("the upload's temporary file", || {
        temporary_files(data.path())
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    });
    node.kill();
    drop(stream);

    let node = Node::start(data.path(), &[]);
    assert_swept(data.path());
    assert!(!node.object_path(&key).exists(), "no partial object");
    assert_check_passes(data.path());

    // The same presigned URL still works: the upload can simply be made again.
    let (status, _) = node.put(&url, &body);
    assert_eq!(status, 200);
    assert_eq!(std::fs::read(node.object_path(&key)).unwrap(), body);
    let (status, file) = node.register(&key, "big.bin", "image/jpeg", body.len());
    assert_eq!(status, 201, "{file}");
    let report = assert_check_passes(data.path());
    assert!(report.contains("files: 1 checked"), "{report}");
    node.kill();
}

#[test]
fn a_node_killed_mid_multipart_complete_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut node = Node::start(data.path(), &[]);
    // Killed right away, a little later, and later still: wherever the kill lands (before
    // the join, during it, between the rename and the clean-up), the outcome is whole.
    for (round, delay_ms) in [0u64, 2, 8, 25, 80].into_iter().enumerate() {
        let body = noise(11 << 20, 10 + round as u32);
        let (key, upload_id, parts) = node.upload_parts(&body);
        let complete = json!({ "key": key, "uploadId": upload_id, "parts": parts }).to_string();
        let auth = format!("Bearer {}", node.token);
        let mut stream = TcpStream::connect(node.api).unwrap();
        let head = request_head(
            "POST",
            "/v1/files/multipart/complete",
            &[
                ("x-api-key", PK),
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            complete.len(),
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(complete.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        node.kill();
        drop(stream);

        node = Node::start(data.path(), &[]);
        assert_swept(data.path());
        let object = node.object_path(&key);
        if object.exists() {
            assert_eq!(
                std::fs::read(&object).unwrap(),
                body,
                "round {round}: a visible object is whole"
            );
        }
        assert_check_passes(data.path());
        // Finish the upload: complete again (the parts are still there unless the first
        // complete had already finished), then register.
        let (status, answer) = node.api(
            "POST",
            "/v1/files/multipart/complete",
            Some(json!({ "key": key, "uploadId": upload_id, "parts": parts })),
        );
        assert!(
            status == 200 || object.exists(),
            "round {round}: the object is there or completing again makes it: {status} {answer}"
        );
        assert_eq!(std::fs::read(&object).unwrap(), body, "round {round}");
        let (status, file) = node.register(&key, "big.pdf", "application/pdf", body.len());
        assert_eq!(status, 201, "round {round}: {file}");
    }
    let report = assert_check_passes(data.path());
    assert!(report.contains("files: 5 checked"), "{report}");
    node.kill();
}

#[test]
fn a_node_killed_mid_derivative_build_builds_them_after_restart() {
    // A 24 MP photo-like JPEG: its reduced copies take long enough to build that the kill
    // lands in the middle.
    let tree = tempfile::tempdir().unwrap();
    let (w, h) = (6000u32, 4000u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let n = x.wrapping_mul(2_654_435_761).rotate_left(y % 31) ^ y.wrapping_mul(40_503);
        image::Rgb([(x / 24) as u8, (y / 16) as u8, (n >> 24) as u8])
    });
    img.save(tree.path().join("big.jpg")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = imgedge()
        .arg("import")
        .arg(tree.path())
        .args(["--visibility", "public", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db_url = format!(
        "sqlite://{}?mode=ro",
        data.path().join("imgedge.db").display()
    );
    let derivatives = || -> Option<String> {
        runtime.block_on(async {
            use sqlx::Connection;
            let mut db = sqlx::SqliteConnection::connect(&db_url).await.unwrap();
            let value: Option<String> =
                sqlx::query_scalar("SELECT derivatives FROM files WHERE s3_key = 'big.jpg'")
                    .fetch_one(&mut db)
                    .await
                    .unwrap();
            value
        })
    };
    let env = [("IMGEDGE_MEMORY_BUDGET_BYTES", "1073741824")];
    let node = Node::start(data.path(), &env);
    wait_for("the build to start", || {
        derivatives().is_some_and(|d| d.starts_with('#'))
    });
    node.kill();
    assert!(
        derivatives().is_some_and(|d| d.starts_with('#')),
        "killed while the build held its claim"
    );

    let node = Node::start(data.path(), &env);
    assert_swept(data.path());
    // The claim of the dead node is given back at once, and the build done again.
    wait_for("the build to be done", || {
        derivatives().is_some_and(|d| !d.starts_with('#'))
    });
    let pyramid = derivatives().unwrap();
    assert!(pyramid.starts_with("jpeg 6000x4000 "), "{pyramid}");
    let report = assert_check_passes(data.path());
    assert!(report.contains("reduced copies: 3 checked"), "{report}");
    for long_edge in [640u32, 1800, 2560] {
        let copy = node.object_path(&format!(".imgedge/d{long_edge}/big.jpg"));
        let decoded = image::open(&copy).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
        assert_eq!(decoded.width(), long_edge, "the {long_edge} copy is whole");
    }
    let (status, _) = http(node.cdn, "GET", "/fit-in/300x300/big.jpg", &[], &[]);
    assert_eq!(status, 200);
    node.kill();
}

/// A full disk answers 507 `common/insufficient-storage`, removes what it had started to
/// write and corrupts nothing: earlier files are served, the database passes its check,
/// and the same work succeeds once space is freed. The store is a 24 MiB tmpfs mounted in
/// a private mount namespace (`unshare`), so the disk really fills.
#[test]
fn a_full_disk_answers_507_and_corrupts_nothing() {
    let namespaces = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status();
    if !namespaces.is_ok_and(|s| s.success()) {
        eprintln!("a_full_disk_answers_507_and_corrupts_nothing: skipped, needs unshare");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (cdn, api) = (free_addr(), free_addr());
    let mut cmd = std::process::Command::new("unshare");
    for (k, _) in std::env::vars() {
        if k.starts_with("IMGEDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("mount -t tmpfs -o size=24m tmpfs \"$0\" && exec \"$@\"")
        .arg(data.path())
        .arg(env!("CARGO_BIN_EXE_imgedge"))
        .args(serve_args(data.path(), cdn, api));
    let node = Node::launch(
        cmd,
        data.path(),
        cdn,
        api,
        &[("IMGEDGE_DERIVATIVE_SIZES", "")],
    );
    // `imgedge check` inside the server's namespace, where the tmpfs is.
    let check = || {
        let out = std::process::Command::new("nsenter")
            .args([
                "--target",
                &node.child.id().to_string(),
                "--user",
                "--mount",
                "--preserve-credentials",
            ])
            .arg(env!("CARGO_BIN_EXE_imgedge"))
            .args(["check", "--data-dir"])
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        report
    };

    // A photo and a 6 MiB file first, while there is room.
    let mut ids = Vec::new();
    let mut photo_key = String::new();
    for (name, bytes) in [
        ("a.jpg", crate::support::fixture("landscape.jpg")),
        ("filler.bin", noise(6 << 20, 3)),
    ] {
        let (status, presigned) = node.api(
            "POST",
            "/v1/files/presigned-url",
            Some(json!({ "filename": name, "contentType": "image/jpeg", "fileSize": bytes.len() })),
        );
        assert_eq!(status, 200, "{presigned}");
        assert_eq!(node.put(presigned["url"].as_str().unwrap(), &bytes).0, 200);
        let key = presigned["key"].as_str().unwrap().to_owned();
        let (status, file) = node.api(
            "POST",
            "/v1/files",
            Some(json!({ "s3Key": key, "originalName": name, "mimeType": "image/jpeg", "size": bytes.len(), "visibility": "public" })),
        );
        assert_eq!(status, 201, "{file}");
        ids.push(file["id"].as_str().unwrap().to_owned());
        if photo_key.is_empty() {
            photo_key = key;
        }
    }

    // 10 MiB of parts fit; joining them needs 10 MiB more, which the disk has not.
    let body = noise(10 << 20, 7);
    let (key, upload_id, parts) = node.upload_parts(&body);
    let complete = json!({ "key": key, "uploadId": upload_id, "parts": parts });
    let (status, answer) = node.api(
        "POST",
        "/v1/files/multipart/complete",
        Some(complete.clone()),
    );
    assert_eq!(status, 507, "{answer}");
    assert_eq!(answer["error"]["code"], "common/insufficient-storage");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"),
        "{answer}"
    );

    // A single upload that does not fit is refused the same way, while its body is still
    // arriving (the answer is read while the rest is sent).
    let big = noise(9 << 20, 8);
    let (status, presigned) = node.api(
        "POST",
        "/v1/files/presigned-url",
        Some(json!({ "filename": "big2.pdf", "contentType": "application/pdf", "fileSize": big.len() })),
    );
    assert_eq!(status, 200, "{presigned}");
    let mut stream = TcpStream::connect(node.api).unwrap();
    let head = request_head(
        "PUT",
        &path_of(presigned["url"].as_str().unwrap()),
        &[("content-type", "application/pdf")],
        big.len(),
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&big);
    });
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    drop(stream);
    sender.join().unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 507"), "{text}");
    assert!(text.contains("common/insufficient-storage"), "{text}");
    let big2 = presigned["key"].as_str().unwrap();
    assert_eq!(
        node.api("POST", "/v1/files", Some(json!({ "s3Key": big2, "originalName": "big2.pdf", "mimeType": "application/pdf", "size": 9 << 20 }))).0,
        404,
        "nothing was stored to register"
    );

    // Nothing half-written is left, and what was there is intact.
    let (status, image) = http(
        node.cdn,
        "GET",
        &format!("/fit-in/64x64/{photo_key}"),
        &[],
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(image::load_from_memory(&image).unwrap().width(), 64);
    let (status, listing) = node.api("GET", "/v1/files", None);
    assert_eq!(status, 200);
    assert_eq!(
        listing["items"].as_array().map(Vec::len),
        Some(2),
        "{listing}"
    );
    let report = check();
    assert!(report.contains("files: 2 checked"), "{report}");

    // Space freed (the 6 MiB file deleted), the same complete succeeds.
    let filler = &ids[1];
    assert_eq!(
        node.api("DELETE", &format!("/v1/files/{filler}"), None).0,
        200
    );
    let (status, answer) = node.api("POST", "/v1/files/multipart/complete", Some(complete));
    assert_eq!(status, 200, "{answer}");
    let (status, file) = node.register(&key, "big.pdf", "application/pdf", body.len());
    assert_eq!(status, 201, "{file}");
    let report = check();
    assert!(report.contains("files: 2 checked"), "{report}");
    node.kill();
}
