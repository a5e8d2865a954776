//! What a page can paint before an image arrives (`meta/`): a BlurHash of the output and
//! its dominant colour, both from a copy at most `SAMPLE_SIDE` pixels wide, with
//! transparent parts seen over white (as a page's default background shows them).

use image::{DynamicImage, RgbaImage, imageops::FilterType};
use serde::Serialize;

/// The long edge of the sample both are computed from.
const SAMPLE_SIDE: u32 = 32;

/// A placeholder for one output image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placeholder {
    /// BlurHash (https://blurha.sh) with 4 components along the long edge and 3 along
    /// the short one.
    pub blurhash: String,
    /// The most common colour, `#rrggbb`: the centre of the fullest of 4096 colour bins.
    pub dominant_color: String,
}

/// Computes the placeholder of `image` (the output, after every operation).
pub fn placeholder(image: &DynamicImage) -> Placeholder {
    let sample = sample(image);
    let (w, h) = sample.dimensions();
    let (x, y) = if w >= h { (4, 3) } else { (3, 4) };
    let blurhash = blurhash::encode(x, y, w, h, sample.as_raw())
        .expect("invariant: 3..=4 components are within BlurHash's 1..=9");
    Placeholder {
        blurhash,
        dominant_color: dominant_color(&sample),
    }
}

/// A copy at most `SAMPLE_SIDE` on its long edge, opaque over white.
fn sample(image: &DynamicImage) -> RgbaImage {
    let (w, h) = (image.width().max(1), image.height().max(1));
    let scale = f64::from(SAMPLE_SIDE) / f64::from(w.max(h));
    let (sw, sh) = if scale < 1.0 {
        (
            ((f64::from(w) * scale).round() as u32).max(1),
            ((f64::from(h) * scale).round() as u32).max(1),
        )
    } else {
        (w, h)
    };
    let mut sample = image.resize_exact(sw, sh, FilterType::Triangle).to_rgba8();
    for pixel in sample.pixels_mut() {
        let alpha = u32::from(pixel[3]);
        for channel in 0..3 {
            let over_white = (u32::from(pixel[channel]) * alpha + 255 * (255 - alpha) + 127) / 255;
            pixel[channel] = over_white as u8;
        }
        pixel[3] = 255;
    }
    sample
}

/// The fullest bin of a 16x16x16 colour histogram, as the mean of its pixels (ties: the
/// lowest bin, so the answer is deterministic).
fn dominant_color(sample: &RgbaImage) -> String {
    let mut bins = vec![(0u32, [0u64; 3]); 4096];
    for pixel in sample.pixels() {
        let bin = (usize::from(pixel[0] >> 4) << 8)
            | (usize::from(pixel[1] >> 4) << 4)
            | usize::from(pixel[2] >> 4);
        bins[bin].0 += 1;
        for channel in 0..3 {
            bins[bin].1[channel] += u64::from(pixel[channel]);
        }
    }
    let (count, sums) = bins
        .iter()
        .rev()
        .max_by_key(|(count, _)| *count)
        .copied()
        .unwrap_or((0, [0; 3]));
    let mean = |sum: u64| (sum + u64::from(count) / 2) / u64::from(count.max(1));
    format!(
        "#{:02x}{:02x}{:02x}",
        mean(sums[0]),
        mean(sums[1]),
        mean(sums[2])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    /// The DC (mean colour) of a BlurHash: characters 2..6, base 83, 0xRRGGBB.
    fn dc(hash: &str) -> [u8; 3] {
        const DIGITS: &str =
            "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
        let value = hash[2..6]
            .chars()
            .fold(0u32, |acc, c| acc * 83 + DIGITS.find(c).unwrap() as u32);
        [(value >> 16) as u8, (value >> 8) as u8, value as u8]
    }

    #[test]
    fn a_flat_image_has_its_own_colour_in_both() {
        let red =
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(300, 200, Rgba([200, 30, 40, 255])));
        let p = placeholder(&red);
        assert_eq!(p.dominant_color, "#c81e28");
        // BlurHash: size flag, max AC, then the DC (mean) colour as sRGB in base 83.
        // (BlurHash's own sRGB rounding may move a channel by one.)
        let mean = dc(&p.blurhash);
        let expected = [200u8, 30, 40];
        assert!(
            mean.iter().zip(expected).all(|(a, b)| a.abs_diff(b) <= 1),
            "{mean:?} {}",
            p.blurhash
        );
        // 4x3 components for a landscape image, 3x4 for a portrait one.
        assert_eq!(&p.blurhash[..1], "L");
        let tall = DynamicImage::ImageRgba8(RgbaImage::from_pixel(20, 90, Rgba([0, 0, 255, 255])));
        assert_eq!(&placeholder(&tall).blurhash[..1], "T");
    }

    #[test]
    fn the_dominant_colour_is_the_commonest_not_the_mean() {
        // Two thirds green, one third blue: the mean would be teal.
        let mut image = RgbaImage::from_pixel(90, 30, Rgba([20, 180, 40, 255]));
        for x in 60..90 {
            for y in 0..30 {
                image.put_pixel(x, y, Rgba([10, 20, 220, 255]));
            }
        }
        let p = placeholder(&DynamicImage::ImageRgba8(image));
        let green = u32::from_str_radix(&p.dominant_color[3..5], 16).unwrap();
        assert!(green > 150, "{}", p.dominant_color);
        // The hash keeps the split: left decodes green, right blue.
        let decoded = blurhash::decode(&p.blurhash, 9, 3, 1.0).unwrap();
        let at = |x: usize| &decoded[(9 + x) * 4..(9 + x) * 4 + 3];
        assert!(
            at(0)[1] > at(0)[2] && at(8)[2] > at(8)[1],
            "{:?} {:?}",
            at(0),
            at(8)
        );
    }

    #[test]
    fn transparent_parts_count_as_white() {
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(10, 10, Rgba([0, 0, 0, 0])));
        assert_eq!(placeholder(&clear).dominant_color, "#ffffff");
    }

    #[test]
    fn placeholders_are_deterministic() {
        let image = DynamicImage::ImageRgba8(RgbaImage::from_fn(64, 48, |x, y| {
            Rgba([(x * 4) as u8, (y * 5) as u8, 90, 255])
        }));
        assert_eq!(placeholder(&image), placeholder(&image));
    }
}
