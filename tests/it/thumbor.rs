//! The differential suite: every case Thumbor 7.8.0 answered in `conformance/recordings.json`
//! is replayed against imgedge over HTTP and compared, as a user would see it: the status,
//! the content type, the output size, the frame count and an 8x8 colour fingerprint that
//! tells a left crop from a centre crop. No Thumbor is needed; re-recording is documented in
//! `conformance/README.md`.
//!
//! Where imgedge deliberately answers otherwise, `conformance/differences.toml` lists the
//! case with the reason and the answer we give instead, and this test asserts that answer.
//! Cases listed there as `gap` are parity work not done yet: the test asserts they still
//! differ, so fixing one fails the test until it leaves the list.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use image::{AnimationDecoder, DynamicImage, ImageFormat};
use imgedge::db::Visibility;
use serde::Deserialize;

use crate::support::TestServer;

/// Mean absolute difference per channel over the 8x8 fingerprint (0-255) still counted as
/// the same picture. Codecs differ (Pillow's libjpeg vs ours) by 1-4; a wrong crop, flip or
/// colour differs by 30 and more.
const TOLERANCE: f64 = 12.0;

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

#[derive(Deserialize)]
struct Recordings {
    cases: Vec<Recorded>,
}

#[derive(Deserialize)]
struct Recorded {
    id: String,
    group: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    status: u16,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    image: Option<RecordedImage>,
}

#[derive(Deserialize)]
struct RecordedImage {
    width: u32,
    height: u32,
    n_frames: u32,
    fingerprint: Vec<[u8; 4]>,
}

/// `conformance/differences.toml`.
#[derive(Deserialize)]
struct Differences {
    differ: Vec<Difference>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// We answer otherwise on purpose (the spec says so); `status` (and a size, if given)
    /// is what we answer.
    Spec,
    /// Compared without the fingerprint: the same status, type and size, a different
    /// (documented) choice of pixels.
    Loose,
    /// Not at parity yet: the case must still differ.
    Gap,
}

#[derive(Deserialize)]
struct Difference {
    kind: Kind,
    why: String,
    cases: Vec<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    size: Option<[u32; 2]>,
    /// The frame count we answer, when it is the difference.
    #[serde(default)]
    frames: Option<u32>,
}

/// What imgedge answered, reduced to what is compared.
struct Answer {
    status: u16,
    content_type: String,
    image: Option<Seen>,
    body: String,
}

struct Seen {
    width: u32,
    height: u32,
    frames: u32,
    /// `None` for AVIF: the test build has no AVIF decoder (only the size is read).
    fingerprint: Option<Vec<[u8; 4]>>,
}

/// Every file under `conformance/images/`, as (key, path), keys being relative paths.
fn fixture_images(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            fixture_images(&path, root, out);
        } else {
            let key = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            out.push((key, path));
        }
    }
}

#[tokio::test]
async fn thumbor_recordings_replay() {
    let dir = conformance_dir();
    let recordings: Recordings =
        serde_json::from_slice(&std::fs::read(dir.join("recordings.json")).unwrap()).unwrap();
    let differences: Differences =
        toml::from_str(&std::fs::read_to_string(dir.join("differences.toml")).unwrap()).unwrap();
    let mut listed: HashMap<&str, &Difference> = HashMap::new();
    for difference in &differences.differ {
        assert!(
            !difference.why.trim().is_empty(),
            "every difference says why"
        );
        if difference.kind == Kind::Spec {
            assert!(
                difference.status.is_some(),
                "a spec difference gives our status"
            );
        }
        for id in &difference.cases {
            assert!(
                listed.insert(id.as_str(), difference).is_none(),
                "{id} is listed twice in differences.toml"
            );
            assert!(
                recordings.cases.iter().any(|c| &c.id == id),
                "differences.toml lists {id}, which is not a recorded case"
            );
        }
    }

    let s = TestServer::start_with(|config| {
        config.security_key = "conformance-key".into();
        config.derivative_sizes = String::new();
    })
    .await;
    let images = dir.join("images");
    let mut files = Vec::new();
    fixture_images(&images, &images, &mut files);
    for (key, path) in files {
        s.add_bytes(&key, std::fs::read(path).unwrap(), Visibility::Public)
            .await;
    }

    let mut failures = Vec::new();
    let mut tally: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for case in &recordings.cases {
        let answer = ask(&s, case).await;
        let difference = listed.get(case.id.as_str());
        let counts = tally.entry(case.group.as_str()).or_default();
        let outcome = match difference.map(|d| d.kind) {
            None => differs(case, &answer, true).map(|why| format!("differs from Thumbor: {why}")),
            Some(Kind::Loose) => differs(case, &answer, false)
                .map(|why| format!("differs from Thumbor (fingerprint not compared): {why}")),
            Some(Kind::Spec) => {
                let d = difference.unwrap();
                expected_difference(d, &answer)
            }
            Some(Kind::Gap) => match differs(case, &answer, true) {
                Some(_) => None,
                None => Some("now agrees with Thumbor: remove it from the gaps".to_owned()),
            },
        };
        match (outcome, difference.map(|d| d.kind)) {
            (Some(why), _) => failures.push(format!("{:34} {}\n    {why}", case.id, case.path)),
            (None, None | Some(Kind::Loose)) => counts[0] += 1,
            (None, Some(Kind::Spec)) => counts[1] += 1,
            (None, Some(Kind::Gap)) => counts[2] += 1,
        }
    }

    let mut summary = String::from("group          agree  differ on purpose  gap\n");
    for (group, [agree, spec, gap]) in &tally {
        summary.push_str(&format!("{group:14} {agree:5}  {spec:17}  {gap:3}\n"));
    }
    let [agree, spec, gap] = tally
        .values()
        .fold([0; 3], |t, c| [t[0] + c[0], t[1] + c[1], t[2] + c[2]]);
    summary.push_str(&format!("{:14} {agree:5}  {spec:17}  {gap:3}\n", "all"));
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}\n\n{summary}",
        failures.len(),
        recordings.cases.len(),
        failures.join("\n")
    );
}

async fn ask(s: &TestServer, case: &Recorded) -> Answer {
    let path = if case.path.starts_with('/') {
        case.path.clone()
    } else {
        format!("/{}", case.path)
    };
    // Bytes outside printable ASCII travel percent-encoded, as a browser sends them.
    let path: String = path
        .bytes()
        .map(|b| {
            if (33..127).contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let headers: Vec<(&str, &str)> = case
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = s.get_with(&path, &headers).await;
    let content_type = resp.header("content-type").to_owned();
    let image = (resp.status == 200 && content_type.starts_with("image/"))
        .then(|| look(&resp.body))
        .flatten();
    Answer {
        status: resp.status.as_u16(),
        content_type,
        image,
        body: String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]).into_owned(),
    }
}

/// Why our answer differs from Thumbor's, or `None` when it agrees.
fn differs(case: &Recorded, answer: &Answer, compare_pixels: bool) -> Option<String> {
    if answer.status != case.status {
        return Some(format!(
            "status {} vs Thumbor's {}: {}",
            answer.status, case.status, answer.body
        ));
    }
    let Some(want) = &case.image else {
        return None;
    };
    let wanted_type = case.content_type.as_deref().unwrap_or("");
    if answer.content_type != wanted_type {
        return Some(format!(
            "type {} vs Thumbor's {wanted_type}",
            answer.content_type
        ));
    }
    let Some(seen) = &answer.image else {
        return Some("the body does not decode as an image".into());
    };
    if (seen.width, seen.height) != (want.width, want.height) {
        return Some(format!(
            "size {}x{} vs Thumbor's {}x{}",
            seen.width, seen.height, want.width, want.height
        ));
    }
    if seen.frames != want.n_frames {
        return Some(format!(
            "{} frames vs Thumbor's {}",
            seen.frames, want.n_frames
        ));
    }
    if compare_pixels {
        let Some(fingerprint) = &seen.fingerprint else {
            return Some("no decoder for this output here: list the case as loose".into());
        };
        let d = distance(fingerprint, &want.fingerprint);
        if d > TOLERANCE {
            return Some(format!("pixels differ by {d:.1} (tolerance {TOLERANCE})"));
        }
    }
    None
}

/// Checks our answer to a case where we deliberately differ.
fn expected_difference(d: &Difference, answer: &Answer) -> Option<String> {
    let status = d.status.expect("checked when loading");
    if answer.status != status {
        return Some(format!(
            "status {} where differences.toml says we answer {status} ({}): {}",
            answer.status, d.why, answer.body
        ));
    }
    if let Some([w, h]) = d.size {
        match &answer.image {
            Some(seen) if (seen.width, seen.height) == (w, h) => {}
            Some(seen) => {
                return Some(format!(
                    "size {}x{} where differences.toml says {w}x{h}",
                    seen.width, seen.height
                ));
            }
            None => return Some("no image where differences.toml gives a size".into()),
        }
    }
    if let Some(frames) = d.frames {
        match &answer.image {
            Some(seen) if seen.frames == frames => {}
            Some(seen) => {
                return Some(format!(
                    "{} frames where differences.toml says {frames}",
                    seen.frames
                ));
            }
            None => return Some("no image where differences.toml gives frames".into()),
        }
    }
    None
}

/// Decodes an answer: size and fingerprint of the first frame, and the frame count.
fn look(body: &[u8]) -> Option<Seen> {
    let format = image::guess_format(body).ok()?;
    if format == ImageFormat::Avif {
        let (width, height) = avif_size(body)?;
        return Some(Seen {
            width,
            height,
            frames: 1,
            fingerprint: None,
        });
    }
    let first = image::load_from_memory_with_format(body, format).ok()?;
    let frames = match format {
        ImageFormat::Gif => {
            let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(body)).ok()?;
            decoder.into_frames().count() as u32
        }
        ImageFormat::WebP => {
            let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(body)).ok()?;
            if decoder.has_animation() {
                decoder.into_frames().count() as u32
            } else {
                1
            }
        }
        _ => 1,
    };
    Some(Seen {
        width: first.width(),
        height: first.height(),
        frames,
        fingerprint: Some(fingerprint(&first)),
    })
}

/// An AVIF's size from its `ispe` property (version/flags, then width and height).
fn avif_size(body: &[u8]) -> Option<(u32, u32)> {
    let at = body.windows(4).position(|w| w == b"ispe")?;
    let field = |i: usize| -> Option<u32> {
        let bytes = body.get(at + 8 + 4 * i..at + 12 + 4 * i)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    };
    Some((field(0)?, field(1)?))
}

/// The recorder's fingerprint, computed as Pillow computes it: RGBA converted to 8-bit
/// premultiplied `RGBa`, resized to 8x8 with the BOX filter in two passes (columns, then
/// rows; each rounds to 8 bits), then un-premultiplied with integer division. The 8-bit
/// premultiplied steps matter where alpha is low: a cell of alpha 7 can only show colours
/// in steps of 36, and a straight average would differ from the recording by that much.
fn fingerprint(image: &DynamicImage) -> Vec<[u8; 4]> {
    let rgba = image.to_rgba8();
    let (w, h) = (rgba.width() as usize, rgba.height() as usize);
    // RGBA -> RGBa: Pillow's MULDIV255 (c * a + 128, folded).
    let premultiplied: Vec<[u32; 4]> = rgba
        .pixels()
        .map(|p| {
            let [r, g, b, a] = p.0.map(u32::from);
            let mul = |c: u32| {
                let t = c * a + 128;
                (t + (t >> 8)) >> 8
            };
            [mul(r), mul(g), mul(b), a]
        })
        .collect();
    // Pillow's BOX spans: a source pixel counts for a cell when its centre falls in the
    // cell's span; when enlarging, each cell takes the one pixel under its centre.
    let spans = |size: usize| -> Vec<(usize, usize)> {
        let scale = size as f64 / 8.0;
        (0..8)
            .map(|i| {
                let centre = (i as f64 + 0.5) * scale;
                let (lo, hi) = if scale <= 1.0 {
                    let lo = centre.floor() as usize;
                    (lo, lo + 1)
                } else {
                    let lo = (centre - scale / 2.0 + 0.5).floor() as usize;
                    (lo, (centre + scale / 2.0 + 0.5).floor() as usize)
                };
                let lo = lo.min(size - 1);
                (lo, hi.clamp(lo + 1, size))
            })
            .collect()
    };
    // One pass in Pillow's 8-bit fixed point (22 fractional bits, rounded, clipped).
    const BITS: u32 = 22;
    let mean = |values: &mut dyn Iterator<Item = u32>, n: usize| -> u32 {
        let k = (0.5 + (1.0 / n as f64) * f64::from(1u32 << BITS)) as u64;
        let sum: u64 = (1u64 << (BITS - 1)) + values.map(|v| u64::from(v) * k).sum::<u64>();
        ((sum >> BITS) as u32).min(255)
    };
    let (columns, rows) = (spans(w), spans(h));
    // Columns first: w x h -> 8 x h.
    let mut narrow = vec![[0u32; 4]; 8 * h];
    for y in 0..h {
        for (cx, &(left, right)) in columns.iter().enumerate() {
            for c in 0..4 {
                narrow[y * 8 + cx][c] = mean(
                    &mut (left..right).map(|x| premultiplied[y * w + x][c]),
                    right - left,
                );
            }
        }
    }
    // Then rows: 8 x h -> 8 x 8, and RGBa -> RGBA.
    let mut cells = Vec::with_capacity(64);
    for &(top, bottom) in &rows {
        for cx in 0..8 {
            let mut cell = [0u32; 4];
            for (c, value) in cell.iter_mut().enumerate() {
                *value = mean(
                    &mut (top..bottom).map(|y| narrow[y * 8 + cx][c]),
                    bottom - top,
                );
            }
            let alpha = cell[3];
            let straight = |v: u32| match alpha {
                0 | 255 => v as u8,
                _ => (255 * v / alpha).min(255) as u8,
            };
            cells.push([
                straight(cell[0]),
                straight(cell[1]),
                straight(cell[2]),
                alpha as u8,
            ]);
        }
    }
    cells
}

/// Mean absolute difference per channel (0-255).
fn distance(a: &[[u8; 4]], b: &[[u8; 4]]) -> f64 {
    let total: u32 = a
        .iter()
        .zip(b)
        .flat_map(|(pa, pb)| pa.iter().zip(pb).map(|(x, y)| u32::from(x.abs_diff(*y))))
        .sum();
    f64::from(total) / (64.0 * 4.0)
}
