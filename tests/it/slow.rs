//! Slow and broken clients (issue 18, section 4): heads that never finish, idle keep-alive
//! connections, oversized heads and trickled upload bodies. Raw TCP, because an HTTP client
//! library would not misbehave on purpose.

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use imgedge::db::Visibility;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, presign};

/// Reads until the server closes the connection (or `limit` passes, which fails the test:
/// the bound only keeps a broken server from hanging the suite).
async fn read_to_close(conn: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(limit, conn.read_to_end(&mut got))
        .await
        .expect("the server closes the connection")
        .ok();
    got
}

fn status_of(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn hundreds_of_slow_and_idle_connections_do_not_stop_normal_requests() {
    let s = TestServer::start_with(|c| c.header_timeout_ms = 1_000).await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    let unfinished = |addr: SocketAddr| async move {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        // A head begun and never finished (slowloris).
        conn.write_all(b"GET /fit-in/100x100/a.jpg HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        conn
    };
    let mut held = Vec::new();
    for i in 0..300 {
        held.push(unfinished(if i % 2 == 0 { s.cdn } else { s.api }).await);
    }
    // An idle keep-alive connection: one request answered, then nothing.
    let mut idle = TcpStream::connect(s.cdn).await.unwrap();
    idle.write_all(b"GET /fit-in/50x50/a.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // Served while all of those are held open.
    for w in [90, 120, 150] {
        let r = s.get(&format!("/fit-in/{w}x{w}/a.jpg")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.image().width(), w);
        assert_eq!(s.api_get("/healthz").await.status, 200);
    }

    // The server lets go of every one of them: the unfinished heads and the idle
    // keep-alive connection are closed after `header_timeout_ms`.
    for mut conn in held {
        let rest = read_to_close(&mut conn, Duration::from_secs(30)).await;
        // hyper answers a timed-out head with nothing or a 408, never with a page.
        assert!(
            rest.is_empty() || status_of(&rest).starts_with("HTTP/1.1 408"),
            "{}",
            status_of(&rest)
        );
    }
    read_to_close(&mut idle, Duration::from_secs(30)).await;
    assert_eq!(s.get("/fit-in/80x80/a.jpg").await.status, 200);
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_with_431() {
    let s = TestServer::start_with(|c| c.max_header_bytes = 16 * 1024).await;
    for addr in [s.cdn, s.api] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 40 * 1024));
        head.extend_from_slice(b"\r\n\r\n");
        // The server may stop reading once the buffer is full: a failed write is expected.
        let _ = conn.write_all(&head).await;
        let got = read_to_close(&mut conn, Duration::from_secs(30)).await;
        assert!(
            status_of(&got).starts_with("HTTP/1.1 431"),
            "{}",
            status_of(&got)
        );
    }
    // A head under the limit is served as usual.
    let r = s
        .request(
            Method::GET,
            s.api,
            "/healthz",
            &[("x-fine", &"b".repeat(8 * 1024))],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_trickled_upload_is_cut_off_with_408_and_leaves_nothing_behind() {
    let s = TestServer::start_with(|c| {
        c.body_timeout_ms = 500;
        c.body_min_rate = 1_000;
    })
    .await;
    if s.is_s3() {
        // Uploads then go to the S3 store directly; its own limits apply.
        return;
    }
    let size = 20_000;
    let presigned = presign(&s, "slow.jpg", size).await;
    let url = presigned["url"].as_str().unwrap();
    let path = url.split_once(&s.api.to_string()).unwrap().1.to_owned();
    let mut conn = TcpStream::connect(s.api).await.unwrap();
    conn.write_all(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: image/jpeg\r\n\
             Content-Length: {size}\r\n\r\n",
            s.api
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // 20 bytes every 100 ms is 200 bytes/s, under the 1000 required; the answer comes
    // while the client is still sending.
    let (mut reader, mut writer) = conn.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..size / 20 {
            if writer.write_all(&[0xAB; 20]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the whole answer is in (the server may keep the connection open).
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&got).contains("common/request-timeout") {
                break;
            }
        }
    })
    .await;
    trickle.abort();
    assert!(answered.is_ok(), "no answer to a trickled body");
    let text = String::from_utf8_lossy(&got);
    assert!(status_of(&got).starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("common/request-timeout"), "{text}");
    assert!(text.contains("1000 bytes/s"), "{text}");

    // Nothing stored, nothing left in the work directory.
    let key = imgedge::key::ObjectKey::parse(presigned["key"].as_str().unwrap()).unwrap();
    assert!(s.app.storage.head(&key).await.is_err());
    let data_dir = s.app.config.data_dir.clone();
    crate::support::eventually(|| crate::support::temporary_files(&data_dir).is_empty()).await;

    // The same upload at full speed still works.
    let put = s
        .send(
            Method::PUT,
            url,
            &[("content-type", "image/jpeg")],
            vec![0xAB; size],
        )
        .await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
}
