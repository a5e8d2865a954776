//! Progressive JPEG scans that a decode can do without.
//!
//! Two rules, both applied by rewriting the stream before libjpeg-turbo sees it:
//!
//! - `for_eighth_scale`: scans a 1/8-scale decode cannot see at all (same pixels).
//! - `without_last_bit`: the refinement scans that add the last bit of a high-quality
//!   file's AC coefficients, for decodes whose result is downscaled and re-encoded lossily
//!   (pixels within a fraction of a level; see that function).
//!
//! At 1/8 scale libjpeg-turbo reconstructs a component whose sampling factors are the
//! frame's maximum (luma, and every component of a 4:4:4 or 4:2:2 file) with a 1x1 inverse
//! DCT, which reads the DC coefficient and nothing else. Yet a progressive file spends most
//! of its decode time on those components' AC scans, the refinement scans above all (45% of
//! the CPU of W1 from the original, measured with `perf`). Leaving them out gives the same
//! pixels for less work, if libjpeg-turbo's block smoothing stays away: it runs whenever one
//! of a component's first nine AC coefficients is not known to full precision, costs about
//! as much as the scans saved, and rewrites the DC coefficient itself when none of the nine
//! has arrived (`smoothing_ok` and `change_dc` in `jdcoefct.c`). So, for such components:
//!
//! - first-pass AC scans that start at or below coefficient 9 stay, with their successive
//!   approximation shift (Al) rewritten to 0, which declares their coefficients exact. Al
//!   only scales the decoded values, which the 1x1 IDCT never reads, so the entropy
//!   decoding is unchanged;
//! - every other AC scan (refinements, first passes of higher coefficients) goes;
//! - a component without such a first pass keeps all its scans.
//!
//! Components decoded with a larger IDCT (the chroma of a 4:2:0 file gets 2x2) keep all
//! their scans, and so do DC scans. The rule for which IDCT a component gets mirrors
//! `jpeg_core_output_dimensions`, and the tests check the claim where it matters: decoded
//! pixels identical, byte for byte, with and without the dropped scans.

/// One scan of the file: where its SOS marker starts and its entropy-coded data ends.
#[derive(Debug, Clone, Copy)]
struct Scan {
    start: usize,
    end: usize,
    /// The component's index in the frame; `None` for interleaved (DC) scans.
    component: Option<usize>,
    spectral_start: u8,
    approx_high: u8,
    approx_low: u8,
    /// Where the scan header's Ah/Al byte is, in the file.
    approx_at: usize,
}

/// What happens to a scan of a component the 1/8 decode sees only the DC of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    /// A first pass over low coefficients: kept, declared exact (Al = 0).
    Exact,
    Drop,
}

/// The file without the AC scans a 1/8-scale decode ignores, or `None` when nothing can be
/// dropped (not a Huffman progressive JPEG, no such scans, or a stream this walk does not
/// understand: the decoder then gets the file as it is and judges it).
pub(crate) fn for_eighth_scale(jpeg: &[u8]) -> Option<Vec<u8>> {
    let Walk { dc_only, scans, .. } = walk(jpeg)?;
    let low_first_pass = |s: &Scan| s.approx_high == 0 && (1..=9).contains(&s.spectral_start);
    // Components whose scans may change: 1x1 IDCT, and a low first pass to keep.
    let mut slim = dc_only.clone();
    for (c, slim) in slim.iter_mut().enumerate() {
        *slim &= scans
            .iter()
            .any(|s| s.component == Some(c) && low_first_pass(s));
    }
    let fate = |scan: &Scan| match scan.component {
        Some(c) if slim[c] && scan.spectral_start > 0 => {
            if low_first_pass(scan) {
                Fate::Exact
            } else {
                Fate::Drop
            }
        }
        _ => Fate::Keep,
    };
    splice(jpeg, &scans, fate)
}

/// The largest quantizer for which `without_last_bit` drops a component's last-bit
/// refinement: every entry of the component's table must be at most this. IJG quality 95
/// tables top out at 12; quality 90 ones at 24.
pub(crate) const LAST_BIT_MAX_QUANTIZER: u16 = 12;

/// The file without the scans that refine the last bit of AC coefficients (Ah = 1, Al = 0)
/// of the components quantized finely enough (every quantizer at most
/// `LAST_BIT_MAX_QUANTIZER`), or `None` when there is nothing to drop.
///
/// Not the same pixels: each such coefficient then arrives with its last bit cleared, one
/// quantizer step or less from its value, and libjpeg-turbo's block smoothing estimates the
/// small low-frequency ones from their neighbours. Only for a decode that is downscaled and
/// re-encoded lossily (the caller decides): on the bench photos recompressed progressive at
/// quality 95 to 99 (4:4:4 and 4:2:0), the difference after the resize to a W3-sized output
/// is 43.5 to 53 dB PSNR, while a WebP q80 encode of that output differs from it by 31 to
/// 42 dB, so it stays 6 to 20 dB under what the encoder discards anyway. At quality 85 to 90
/// the difference grows to 38 dB on some photos, which is why the quantizers are checked.
/// Hard-edged synthetic noise is the worst case seen (33.5 dB at 1/2 in 4:2:0). Those scans
/// carry a third to a half of a high-quality file's bytes and as much of its decode time
/// (brushes.jpg at 1/2: 41 → 26 ms).
pub(crate) fn without_last_bit(jpeg: &[u8]) -> Option<Vec<u8>> {
    let Walk {
        max_quantizer,
        scans,
        ..
    } = walk(jpeg)?;
    splice(jpeg, &scans, |scan| match scan.component {
        Some(c)
            if scan.spectral_start > 0
                && scan.approx_high == 1
                && scan.approx_low == 0
                && max_quantizer[c] <= LAST_BIT_MAX_QUANTIZER =>
        {
            Fate::Drop
        }
        _ => Fate::Keep,
    })
}

/// `jpeg` with each scan's `fate` applied; `None` when no scan is dropped.
fn splice(jpeg: &[u8], scans: &[Scan], fate: impl Fn(&Scan) -> Fate) -> Option<Vec<u8>> {
    if !scans.iter().any(|s| fate(s) == Fate::Drop) {
        return None;
    }
    let mut out = Vec::with_capacity(jpeg.len());
    let mut from = 0;
    for scan in scans {
        match fate(scan) {
            Fate::Keep => {}
            Fate::Exact => {
                out.extend_from_slice(&jpeg[from..scan.approx_at]);
                out.push(0); // Ah = 0 (a first pass), Al = 0 (full precision).
                from = scan.approx_at + 1;
            }
            Fate::Drop => {
                out.extend_from_slice(&jpeg[from..scan.start]);
                from = scan.end;
            }
        }
    }
    out.extend_from_slice(&jpeg[from..]);
    Some(out)
}

/// What `walk` reads off a Huffman progressive JPEG.
struct Walk {
    /// Per component: whether 1/8 scale decodes it with a 1x1 IDCT.
    dc_only: Vec<bool>,
    /// Per component: its quantization table's largest entry (the largest over every
    /// definition of that table in the file; 0xFFFF when the table is never defined).
    max_quantizer: Vec<u16>,
    /// Every scan up to EOI, in file order.
    scans: Vec<Scan>,
}

/// Walks a Huffman progressive JPEG. `None` for anything else.
fn walk(b: &[u8]) -> Option<Walk> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut ids: Vec<u8> = Vec::new();
    let mut dc_only: Vec<bool> = Vec::new();
    let mut table_of: Vec<u8> = Vec::new();
    // The largest entry of each of the four table slots, over all their definitions.
    let mut table_max: [Option<u16>; 4] = [None; 4];
    let mut scans = Vec::new();
    let mut pos = 2;
    loop {
        let start = pos;
        if *b.get(pos)? != 0xFF {
            return None;
        }
        while b.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *b.get(pos)?;
        pos += 1;
        match marker {
            0xD9 => break,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*b.get(pos)?, *b.get(pos + 1)?]));
        let seg = b.get(pos + 2..pos + len.max(2))?;
        pos += len;
        match marker {
            // A second frame header would re-number the components under earlier scans.
            0xC2 if !ids.is_empty() => return None,
            0xC2 => (ids, dc_only, table_of) = frame(seg)?,
            0xDB => {
                for (slot, max) in quant_tables(seg)? {
                    let seen = &mut table_max[usize::from(slot)];
                    *seen = Some(seen.map_or(max, |s| s.max(max)));
                }
            }
            // Any other frame type (baseline, extended, lossless, arithmetic): not ours.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => return None,
            0xDA => {
                if ids.is_empty() {
                    return None;
                }
                let (component, spectral_start, approx, approx_in_seg) = scan_header(seg, &ids)?;
                let approx_at = pos - len + 2 + approx_in_seg;
                pos = entropy_end(b, pos)?;
                scans.push(Scan {
                    start,
                    end: pos,
                    component,
                    spectral_start,
                    approx_high: approx >> 4,
                    approx_low: approx & 0x0F,
                    approx_at,
                });
            }
            _ => {}
        }
    }
    let max_quantizer = table_of
        .iter()
        .map(|&t| table_max[usize::from(t)].unwrap_or(u16::MAX))
        .collect();
    Some(Walk {
        dc_only,
        max_quantizer,
        scans,
    })
}

/// DQT: each table's slot (0..=3) and largest entry. `None` when malformed.
fn quant_tables(mut seg: &[u8]) -> Option<Vec<(u8, u16)>> {
    let mut tables = Vec::new();
    while let Some((&pq_tq, rest)) = seg.split_first() {
        let (precision, slot) = (pq_tq >> 4, pq_tq & 0x0F);
        if slot > 3 || precision > 1 {
            return None;
        }
        let width = usize::from(precision) + 1;
        let entries = rest.get(..64 * width)?;
        let max = entries
            .chunks_exact(width)
            .map(|e| e.iter().fold(0u16, |v, &b| (v << 8) | u16::from(b)))
            .max()?;
        tables.push((slot, max));
        seg = &rest[64 * width..];
    }
    Some(tables)
}

/// SOF2: the component ids, for each whether 1/8 scale decodes it with a 1x1 IDCT, and
/// each one's quantization table slot.
/// libjpeg-turbo doubles a component's IDCT size while both the horizontal and the vertical
/// maximum sampling factor are multiples of twice the component's; at 1/8 scale a
/// component stays at 1x1 exactly when that fails at once.
fn frame(seg: &[u8]) -> Option<(Vec<u8>, Vec<bool>, Vec<u8>)> {
    let count = usize::from(*seg.get(5)?);
    let comps = seg.get(6..6 + 3 * count)?;
    if count == 0 {
        return None;
    }
    let factors: Vec<(u8, u8, u8)> = comps
        .chunks_exact(3)
        .map(|c| (c[0], c[1] >> 4, c[1] & 0x0F))
        .collect();
    if factors.iter().any(|&(_, h, v)| h == 0 || v == 0) {
        return None;
    }
    let tables: Vec<u8> = comps.chunks_exact(3).map(|c| c[2]).collect();
    if tables.iter().any(|&t| t > 3) {
        return None;
    }
    let max_h = factors.iter().map(|f| f.1).max()?;
    let max_v = factors.iter().map(|f| f.2).max()?;
    let dc_only = factors
        .iter()
        .map(|&(_, h, v)| !(max_h % (2 * h) == 0 && max_v % (2 * v) == 0))
        .collect();
    Some((factors.iter().map(|f| f.0).collect(), dc_only, tables))
}

/// SOS header: the single component of an AC scan (`None` when interleaved), Ss, the Ah/Al
/// byte, and where that byte is in the segment.
fn scan_header(seg: &[u8], ids: &[u8]) -> Option<(Option<usize>, u8, u8, usize)> {
    let count = usize::from(*seg.first()?);
    let at = 1 + 2 * count;
    let rest = seg.get(at..at + 3)?;
    let (spectral_start, approx) = (rest[0], rest[2]);
    let component = if count == 1 {
        Some(ids.iter().position(|&id| id == seg[1])?)
    } else {
        None
    };
    Some((component, spectral_start, approx, at + 2))
}

/// Where a scan's entropy-coded data ends: at the first marker that is neither a stuffed
/// byte (FF 00) nor a restart marker (FF D0..D7).
fn entropy_end(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let ff = pos + memchr::memchr(0xFF, b.get(pos..)?)?;
        match *b.get(ff + 1)? {
            0x00 | 0xD0..=0xD7 => pos = ff + 2,
            // A fill byte: the marker starts at the next one.
            0xFF => pos = ff + 1,
            _ => return Some(ff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbojpeg::{Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

    /// A textured RGB image: smooth gradients with a sharp-edged pattern, so every scan
    /// carries real coefficients.
    fn photo(w: usize, h: usize) -> Vec<u8> {
        let mut px = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let edge = if (x / 7 + y / 5) % 3 == 0 { 90 } else { 0 };
                let noise = ((x * 7919 + y * 104_729) % 61) as u8;
                px.push(((x * 255 / w) as u8).wrapping_add(edge) ^ noise);
                px.push(((y * 255 / h) as u8).saturating_add(noise));
                px.push((((x + y) * 3) % 256) as u8 ^ edge);
            }
        }
        px
    }

    fn rgb(px: &[u8], w: usize, h: usize) -> Image<&[u8]> {
        Image {
            pixels: px,
            width: w,
            pitch: w * 3,
            height: h,
            format: PixelFormat::RGB,
        }
    }

    fn progressive(subsamp: Subsamp, w: usize, h: usize) -> Vec<u8> {
        progressive_at(88, subsamp, w, h)
    }

    fn progressive_at(quality: i32, subsamp: Subsamp, w: usize, h: usize) -> Vec<u8> {
        let px = photo(w, h);
        let mut c = Compressor::new().unwrap();
        c.set_quality(quality).unwrap();
        c.set_subsamp(subsamp).unwrap();
        c.set_progressive(true).unwrap();
        c.compress_to_vec(rgb(&px, w, h)).unwrap()
    }

    fn decode_eighth(jpeg: &[u8]) -> Vec<u8> {
        decode_scaled(jpeg, 8)
    }

    fn decode_scaled(jpeg: &[u8], denominator: usize) -> Vec<u8> {
        let mut d = Decompressor::new().unwrap();
        let header = d.read_header(jpeg).unwrap();
        let factor = ScalingFactor::new(1, denominator);
        d.set_scaling_factor(factor).unwrap();
        let s = header.scaled(factor);
        let mut px = vec![0u8; s.width * s.height * 3];
        let image = Image {
            pixels: px.as_mut_slice(),
            width: s.width,
            pitch: s.width * 3,
            height: s.height,
            format: PixelFormat::RGB,
        };
        d.decompress(jpeg, image).unwrap();
        px
    }

    #[test]
    fn same_pixels_at_one_eighth_for_every_subsampling() {
        for subsamp in [
            Subsamp::None,
            Subsamp::Sub2x1,
            Subsamp::Sub2x2,
            Subsamp::Sub1x2,
            Subsamp::Gray,
        ] {
            let jpeg = progressive(subsamp, 333, 201);
            let slim =
                for_eighth_scale(&jpeg).unwrap_or_else(|| panic!("{subsamp:?}: nothing dropped"));
            assert!(
                slim.len() < jpeg.len() * 9 / 10,
                "{subsamp:?}: {} of {} bytes left",
                slim.len(),
                jpeg.len()
            );
            assert_eq!(decode_eighth(&slim), decode_eighth(&jpeg), "{subsamp:?}");
        }
    }

    #[test]
    fn chroma_of_420_keeps_its_scans() {
        let jpeg = progressive(Subsamp::Sub2x2, 160, 96);
        let Walk { dc_only, scans, .. } = walk(&jpeg).unwrap();
        assert_eq!(dc_only, [true, false, false]);
        let slim = for_eighth_scale(&jpeg).unwrap();
        let kept = walk(&slim).unwrap().scans;
        let chroma = |s: &[Scan]| {
            s.iter()
                .filter(|s| s.component.is_some_and(|c| c > 0))
                .count()
        };
        assert_eq!(chroma(&kept), chroma(&scans));
        assert!(kept.len() < scans.len());
        // Luma keeps its first passes over low coefficients only, declared exact.
        let luma: Vec<_> = kept.iter().filter(|s| s.component == Some(0)).collect();
        assert!(!luma.is_empty());
        for s in luma {
            assert_eq!(s.approx_high, 0);
            assert!(s.spectral_start <= 9);
            assert_eq!(slim[s.approx_at], 0, "Al rewritten to 0");
        }
    }

    #[test]
    fn leaves_baseline_and_odd_streams_alone() {
        let px = photo(64, 64);
        let baseline = turbojpeg::compress(rgb(&px, 64, 64), 85, Subsamp::Sub2x2).unwrap();
        assert!(for_eighth_scale(&baseline).is_none());
        let jpeg = progressive(Subsamp::Sub2x1, 64, 64);
        for cut in [0, 1, 2, 3, 20, jpeg.len() / 2, jpeg.len() - 2] {
            assert!(for_eighth_scale(&jpeg[..cut]).is_none(), "cut at {cut}");
        }
        assert!(for_eighth_scale(b"not a jpeg at all").is_none());
    }

    /// Peak signal-to-noise ratio of `b` against `a`, in dB.
    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let se: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        10.0 * (255.0f64.powi(2) / (se / a.len() as f64)).log10()
    }

    /// The last-bit refinement scans of `jpeg`'s components, by component.
    fn last_bit_scans(jpeg: &[u8]) -> Vec<usize> {
        walk(jpeg)
            .unwrap()
            .scans
            .iter()
            .filter(|s| s.spectral_start > 0 && s.approx_high == 1 && s.approx_low == 0)
            .map(|s| s.component.unwrap())
            .collect()
    }

    /// A real photograph (`fixtures/demo/sunset.jpg`, 800x533) re-encoded progressive.
    fn progressive_photo(quality: i32, subsamp: Subsamp) -> Vec<u8> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo/sunset.jpg");
        let photo: Image<Vec<u8>> =
            turbojpeg::decompress(&std::fs::read(path).unwrap(), PixelFormat::RGB).unwrap();
        let mut c = Compressor::new().unwrap();
        c.set_quality(quality).unwrap();
        c.set_subsamp(subsamp).unwrap();
        c.set_progressive(true).unwrap();
        c.compress_to_vec(photo.as_deref()).unwrap()
    }

    #[test]
    fn without_the_last_bit_a_fine_file_decodes_within_a_fraction_of_a_level() {
        for subsamp in [
            Subsamp::None,
            Subsamp::Sub2x1,
            Subsamp::Sub2x2,
            Subsamp::Gray,
        ] {
            let jpeg = progressive_photo(97, subsamp);
            assert!(
                !last_bit_scans(&jpeg).is_empty(),
                "{subsamp:?}: the script has them"
            );
            let slim = without_last_bit(&jpeg).unwrap();
            assert!(
                last_bit_scans(&slim).is_empty(),
                "{subsamp:?}: all of them went"
            );
            assert!(slim.len() < jpeg.len() * 9 / 10, "{subsamp:?}");
            // Everything else is kept, byte for byte, in order.
            let kept = |j: &[u8]| {
                let w = walk(j).unwrap();
                w.scans
                    .iter()
                    .filter(|s| !(s.spectral_start > 0 && s.approx_high == 1 && s.approx_low == 0))
                    .map(|s| j[s.start..s.end].to_vec())
                    .collect::<Vec<_>>()
            };
            assert_eq!(kept(&slim), kept(&jpeg), "{subsamp:?}");
            for denominator in [2, 4] {
                let (full, part) = (
                    decode_scaled(&jpeg, denominator),
                    decode_scaled(&slim, denominator),
                );
                assert_ne!(full, part, "{subsamp:?} 1/{denominator}: the bit mattered");
                let db = psnr(&full, &part);
                assert!(db > 45.0, "{subsamp:?} 1/{denominator}: {db:.1} dB");
            }
        }
    }

    #[test]
    fn coarsely_quantized_files_keep_their_last_bit() {
        // Quality 90 tables top out at 24, over the limit of 12.
        let jpeg = progressive_at(90, Subsamp::Sub2x1, 160, 96);
        assert!(!last_bit_scans(&jpeg).is_empty());
        assert!(
            walk(&jpeg)
                .unwrap()
                .max_quantizer
                .iter()
                .all(|&q| q > LAST_BIT_MAX_QUANTIZER)
        );
        assert!(without_last_bit(&jpeg).is_none());
        // Quality 95 is the coarsest that qualifies.
        let jpeg = progressive_at(95, Subsamp::Sub2x1, 160, 96);
        let max = walk(&jpeg).unwrap().max_quantizer;
        assert!(max.iter().all(|&q| q <= LAST_BIT_MAX_QUANTIZER), "{max:?}");
        assert!(without_last_bit(&jpeg).is_some());
        // Baseline files have no refinement scans at all.
        let px = photo(64, 64);
        let baseline = turbojpeg::compress(rgb(&px, 64, 64), 98, Subsamp::None).unwrap();
        assert!(without_last_bit(&baseline).is_none());
    }

    #[test]
    fn quantization_tables_are_read_in_both_precisions() {
        let mut seg = vec![0x00];
        seg.extend((1..=64).map(|v| v as u8));
        seg.push(0x13); // 16-bit entries, slot 3
        seg.extend((0..64).flat_map(|v: u16| (v * 300).to_be_bytes()));
        assert_eq!(quant_tables(&seg), Some(vec![(0, 64), (3, 63 * 300)]));
        assert_eq!(quant_tables(&seg[..100]), None, "short table");
        assert_eq!(quant_tables(&[0x04]), None, "slot 4");
        assert_eq!(quant_tables(&[0x20]), None, "precision 2");
    }

    proptest::proptest! {
        /// Hostile bytes: a damaged stream never panics, and never grows.
        #[test]
        fn damaged_streams_never_panic(
            edits in proptest::collection::vec((0usize..4000, proptest::num::u8::ANY), 1..12),
            cut in 0usize..4000,
        ) {
            let mut jpeg = progressive_at(97, Subsamp::Sub2x1, 48, 40);
            for (at, byte) in edits {
                let i = at % jpeg.len();
                jpeg[i] = byte;
            }
            jpeg.truncate(cut.max(2));
            if let Some(slim) = for_eighth_scale(&jpeg) {
                proptest::prop_assert!(slim.len() < jpeg.len());
            }
            if let Some(slim) = without_last_bit(&jpeg) {
                proptest::prop_assert!(slim.len() < jpeg.len());
            }
        }
    }

    /// The real photographs (4:2:0 and 4:2:2 progressive): byte-identical 1/8 decodes.
    /// `cargo test --lib scans -- --ignored` (needs ../shared/bench-images).
    #[test]
    #[ignore = "needs ../shared/bench-images"]
    fn same_pixels_on_the_bench_photos() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench-images");
        for name in ["seeding.jpg", "dragonfly.jpg", "sunset.jpg"] {
            let jpeg = std::fs::read(dir.join(name)).unwrap();
            let slim = for_eighth_scale(&jpeg).unwrap();
            eprintln!("{name}: {} of {} bytes decoded", slim.len(), jpeg.len());
            assert_eq!(decode_eighth(&slim), decode_eighth(&jpeg), "{name}");
        }
    }

    /// brushes.jpg (progressive 4:4:4, quality 99): what the W3 render decodes, at 1/2.
    /// `cargo test --lib scans -- --ignored` (needs ../shared/bench-images).
    #[test]
    #[ignore = "needs ../shared/bench-images"]
    fn the_last_bit_of_brushes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench-images");
        let jpeg = std::fs::read(dir.join("brushes.jpg")).unwrap();
        let slim = without_last_bit(&jpeg).unwrap();
        let db = psnr(&decode_scaled(&jpeg, 2), &decode_scaled(&slim, 2));
        eprintln!(
            "brushes.jpg: {} of {} bytes decoded, {db:.1} dB",
            slim.len(),
            jpeg.len()
        );
        assert!(db > 45.0, "{db:.1} dB");
    }
}
