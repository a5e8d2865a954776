//! The memory budget over real HTTP (issue 18, section 1): a render larger than the whole
//! budget is refused from the header, one that does not fit waits for memory to come back
//! or is shed with 503, and every reservation is given back.

use std::time::Duration;

use imgedge::config::AutoBytes;
use imgedge::db::Visibility;

use crate::support::{TestServer, eventually};

const BUDGET: u64 = 16 << 20;

/// A GIF whose logical screen is `side` x `side` with `frames` frames of one pixel: a few
/// bytes per frame, but every frame is composed on the whole screen when decoded.
fn gif_with_screen(side: u16, frames: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend(side.to_le_bytes());
    out.extend(side.to_le_bytes());
    out.extend([0xF0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
    out.extend(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00");
    for i in 0..frames {
        out.extend(b"\x21\xf9\x04\x04\x02\x00\x00\x00");
        out.push(0x2C);
        for v in [i % side, (i * 7) % side, 1, 1] {
            out.extend(v.to_le_bytes());
        }
        out.extend(b"\x00\x02\x02\x4c\x01\x00");
    }
    out.push(0x3B);
    out
}

async fn budget_server() -> TestServer {
    let s = TestServer::start_with(|c| {
        c.memory_budget_bytes = AutoBytes::Bytes(BUDGET);
        // No reduced copies: their builder would take from the same budget meanwhile.
        c.derivative_sizes = String::new();
    })
    .await;
    assert_eq!(s.app.edge.memory.total(), BUDGET);
    s
}

#[tokio::test]
async fn a_render_over_the_whole_budget_is_refused_from_the_header_with_422() {
    let s = budget_server().await;
    // 46 bytes per frame; the 4000x4000 screen decodes to 64 MB of RGBA and more.
    s.add_bytes("screen.gif", gif_with_screen(4000, 200), Visibility::Public)
        .await;
    s.add("small.jpg", "landscape.jpg", Visibility::Public)
        .await;

    let r = s.get("/fit-in/100x100/screen.gif").await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let error = &r.json()["error"];
    assert_eq!(error["code"], "image/over-memory-budget");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("memory_budget_bytes") && message.contains("16 MiB"),
        "{message}"
    );
    // The same file described instead of rendered is refused the same way, and a 1x1
    // crop of it too: the decode is what costs, not the output.
    assert_eq!(s.get("/meta/fit-in/100x100/screen.gif").await.status, 422);
    assert_eq!(s.get("/0x0:1x1/screen.gif").await.status, 422);
    // As a watermark over a small photo it is decoded whole as well: refused the same way.
    let marked = s
        .get("/fit-in/100x100/filters:watermark(screen.gif,0,0,0)/small.jpg")
        .await;
    assert_eq!(
        marked.status,
        422,
        "{}",
        String::from_utf8_lossy(&marked.body)
    );
    assert_eq!(marked.json()["error"]["code"], "image/over-memory-budget");

    // Small images still render beside it, and nothing stays reserved.
    let ok = s.get("/fit-in/100x100/small.jpg").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.image().width(), 100);
    eventually(|| s.app.edge.memory.reserved() == 0).await;
    let metrics = String::from_utf8_lossy(&s.api_get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains("imgedge_memory_refused_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("imgedge_memory_budget_bytes {BUDGET}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_render_waits_for_memory_to_come_back_or_is_shed_with_503() {
    let s = budget_server().await;
    s.add("a.jpg", "landscape.jpg", Visibility::Public).await;
    // Everything but 1 MiB held elsewhere: a 640x427 render needs more than that.
    let held = s.app.edge.memory.try_reserve(BUDGET - (1 << 20)).unwrap();
    let shed = s.get("/fit-in/300x300/a.jpg").await;
    assert_eq!(shed.status, 503, "{}", String::from_utf8_lossy(&shed.body));
    assert_eq!(shed.header("retry-after"), "1");
    assert_eq!(shed.json()["error"]["code"], "server/overloaded");

    // Given back while a render waits: the render goes ahead.
    let (waited, ()) = tokio::join!(s.get("/fit-in/301x301/a.jpg"), async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
    });
    assert_eq!(waited.status, 200);
    assert_eq!(waited.image().width(), 301);
    eventually(|| s.app.edge.memory.reserved() == 0).await;
}
