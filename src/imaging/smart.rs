//! Content-aware placement of a crop window (`smart/`), deterministic and dependency-free.
//!
//! In the spirit of smartcrop.js: on a copy downsampled to about 256 px, each pixel scores
//! for detail (Laplacian of luma), skin tone and saturation; an integral image then gives the
//! score of every window position in O(1), and a mild centre bias breaks near-ties towards
//! the middle. When no position stands out (a flat or evenly textured image) the answer is
//! `None` and the caller falls back to the URL's alignment.

use image::DynamicImage;

use super::ImagingError;
use super::geometry::Size;
use super::resize::{CropBox, resize};

/// Longest side of the analysed copy.
const ANALYSIS_SIDE: f64 = 256.0;
/// Weights of the three per-pixel signals.
const DETAIL_WEIGHT: f32 = 1.0;
const SKIN_WEIGHT: f32 = 1.2;
const SATURATION_WEIGHT: f32 = 0.3;
/// A window must hold this much more of the total score than the worst one to count as
/// standing out (relative difference).
const MIN_SPREAD: f64 = 0.15;
/// How much a window at the far edge is penalised against one in the centre.
const CENTRE_BIAS: f64 = 0.05;

/// Finds where to put a window of `window` size (in pixels of `image`) inside `region`.
/// Returns its offset from the region's top-left corner, or `None` if nothing stands out.
pub fn place(
    image: &DynamicImage,
    region: CropBox,
    window: (f64, f64),
) -> Result<Option<(f64, f64)>, ImagingError> {
    let scale = (ANALYSIS_SIDE / region.width.max(region.height)).min(1.0);
    let small_size = Size::new(
        (region.width * scale).round().max(1.0) as u32,
        (region.height * scale).round().max(1.0) as u32,
    );
    let small = resize(image, region, small_size)?;
    let scores = score_map(&small);
    let (sw, sh) = (small_size.width as usize, small_size.height as usize);
    let ww = ((window.0 * scale).round() as usize).clamp(1, sw);
    let wh = ((window.1 * scale).round() as usize).clamp(1, sh);
    if ww == sw && wh == sh {
        return Ok(None);
    }
    let integral = Integral::new(&scores, sw, sh);
    let total = integral.sum(0, 0, sw, sh);
    // Practically featureless: less than 1% of the strongest possible signal on average.
    if total / (sw * sh) as f64 <= 0.01 {
        return Ok(None);
    }
    let (cx, cy) = ((sw - ww) as f64 / 2.0, (sh - wh) as f64 / 2.0);
    let mut best = (f64::MIN, 0, 0);
    let (mut lowest, mut highest) = (f64::MAX, f64::MIN);
    for y in 0..=sh - wh {
        for x in 0..=sw - ww {
            let share = integral.sum(x, y, ww, wh) / total;
            lowest = lowest.min(share);
            highest = highest.max(share);
            let off_centre =
                ((x as f64 - cx) / cx.max(1.0)).hypot((y as f64 - cy) / cy.max(1.0)) / 2f64.sqrt();
            let biased = share * (1.0 - CENTRE_BIAS * off_centre);
            if biased > best.0 {
                best = (biased, x, y);
            }
        }
    }
    if highest - lowest < MIN_SPREAD * highest {
        return Ok(None);
    }
    Ok(Some((best.1 as f64 / scale, best.2 as f64 / scale)))
}

/// Per-pixel interest in 0..~3: detail + skin + saturation, scaled by opacity.
fn score_map(image: &DynamicImage) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let ch = usize::from(image.color().channel_count());
    let bytes = image.as_bytes();
    let px = |x: usize, y: usize| &bytes[(y * w + x) * ch..(y * w + x) * ch + ch];
    let luma: Vec<f32> = bytes
        .chunks_exact(ch)
        .map(|p| {
            (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])) / 255.0
        })
        .collect();
    let l = |x: usize, y: usize| luma[y * w + x];
    let mut scores = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let around = l(x.saturating_sub(1), y)
                + l((x + 1).min(w - 1), y)
                + l(x, y.saturating_sub(1))
                + l(x, (y + 1).min(h - 1));
            let detail = (4.0 * l(x, y) - around).abs().min(1.0);
            let p = px(x, y);
            let (skin, saturation) = colour_scores(p, l(x, y));
            let opacity = if ch == 4 {
                f32::from(p[3]) / 255.0
            } else {
                1.0
            };
            scores.push(
                opacity
                    * (DETAIL_WEIGHT * detail
                        + SKIN_WEIGHT * skin
                        + SATURATION_WEIGHT * saturation),
            );
        }
    }
    scores
}

/// Skin-tone likeness (smartcrop.js's normalised-colour distance to a reference skin colour)
/// and HSV saturation, both gated to mid brightness where they are meaningful.
fn colour_scores(p: &[u8], luma: f32) -> (f32, f32) {
    let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
    let mag = (r * r + g * g + b * b).sqrt();
    let skin = if mag > 0.0 && (0.2..=0.95).contains(&luma) {
        let (dr, dg, db) = (r / mag - 0.78, g / mag - 0.57, b / mag - 0.44);
        let likeness = 1.0 - (dr * dr + dg * dg + db * db).sqrt();
        ((likeness - 0.8) / 0.2).max(0.0)
    } else {
        0.0
    };
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    let saturation = if max > 0.0 && (0.05..=0.9).contains(&luma) {
        (max - min) / max
    } else {
        0.0
    };
    (skin, saturation)
}

/// Summed-area table: the sum of any rectangle in four lookups.
struct Integral {
    width: usize,
    sums: Vec<f64>,
}

impl Integral {
    fn new(values: &[f32], w: usize, h: usize) -> Integral {
        let stride = w + 1;
        let mut sums = vec![0.0; stride * (h + 1)];
        for y in 0..h {
            let mut row = 0.0;
            for x in 0..w {
                row += f64::from(values[y * w + x]);
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
            }
        }
        Integral {
            width: stride,
            sums,
        }
    }

    fn sum(&self, x: usize, y: usize, w: usize, h: usize) -> f64 {
        let at = |x: usize, y: usize| self.sums[y * self.width + x];
        at(x + w, y + h) - at(x, y + h) - at(x + w, y) + at(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    /// A flat grey 400x200 picture with a detailed, colourful 40x40 object at `object`.
    fn scene(object: (u32, u32)) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(400, 200, |x, y| {
            let inside =
                (object.0..object.0 + 40).contains(&x) && (object.1..object.1 + 40).contains(&y);
            if inside {
                Rgb(if (x + y) % 4 < 2 {
                    [230, 40, 40]
                } else {
                    [40, 40, 200]
                })
            } else {
                Rgb([128, 128, 128])
            }
        }))
    }

    #[test]
    fn finds_the_object() {
        for object in [(20, 80), (180, 80), (340, 80)] {
            let img = scene(object);
            let (left, top) = place(&img, CropBox::whole(&img), (200.0, 200.0))
                .unwrap()
                .expect("object stands out");
            assert_eq!(top, 0.0);
            assert!(
                left <= f64::from(object.0) && left + 200.0 >= f64::from(object.0 + 40),
                "{object:?} → {left}"
            );
        }
    }

    #[test]
    fn flat_image_has_no_answer() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(400, 200, Rgb([90, 120, 200])));
        assert_eq!(
            place(&img, CropBox::whole(&img), (200.0, 200.0)).unwrap(),
            None
        );
        // Even texture everywhere: nothing stands out either.
        let checks = DynamicImage::ImageRgb8(RgbImage::from_fn(400, 200, |x, y| {
            Rgb(if (x / 10 + y / 10) % 2 == 0 {
                [20; 3]
            } else {
                [230; 3]
            })
        }));
        assert_eq!(
            place(&checks, CropBox::whole(&checks), (200.0, 200.0)).unwrap(),
            None
        );
    }

    #[test]
    fn deterministic() {
        let img = scene((250, 30));
        let region = CropBox {
            left: 10.0,
            top: 0.0,
            width: 380.0,
            height: 200.0,
        };
        let a = place(&img, region, (150.0, 200.0)).unwrap();
        let b = place(&img, region, (150.0, 200.0)).unwrap();
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn integral_sums() {
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let integral = Integral::new(&values, 4, 3);
        assert_eq!(integral.sum(0, 0, 4, 3), 66.0);
        assert_eq!(integral.sum(1, 1, 2, 2), 5.0 + 6.0 + 9.0 + 10.0);
    }
}
