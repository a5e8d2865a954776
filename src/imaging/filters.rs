//! Pixel operations after (and around) the resize: the `PixelFilter`s, flips, padding onto a
//! canvas (`fill`), flattening alpha onto a background, and finding the box that `trim` keeps.
//!
//! Every function takes and returns the working image, which is RGB8 or RGBA8. The `image`
//! crate's imageops are used where they exist; the rest is written here.

use image::{DynamicImage, GenericImageView, Rgba, RgbaImage, imageops};

use super::ImagingError;
use super::geometry::Size;
use super::recipe::{Color, Fill, PixelFilter, Rect, Rotation, Trim, TrimCorner};
use super::resize::{CropBox, resize};

/// Applies one pixel filter.
pub fn apply(image: DynamicImage, filter: &PixelFilter) -> DynamicImage {
    match *filter {
        PixelFilter::Blur { radius: 0, .. } => image,
        PixelFilter::Blur { radius, sigma } => {
            image.fast_blur(sigma.map_or(radius as f32, |s| s.as_f32()))
        }
        PixelFilter::Sharpen {
            amount,
            radius,
            luminance_only,
        } => sharpen(image, amount.as_f32(), radius.as_f32(), luminance_only),
        PixelFilter::Grayscale => grayscale(image),
        PixelFilter::Brightness(v) => image.brighten(i32::from(v) * 255 / 100),
        PixelFilter::Contrast(v) => image.adjust_contrast(f32::from(v)),
        // Thumbor (after PIL) rotates counter-clockwise.
        PixelFilter::Rotate(Rotation::R90) => image.rotate270(),
        PixelFilter::Rotate(Rotation::R180) => image.rotate180(),
        PixelFilter::Rotate(Rotation::R270) => image.rotate90(),
        PixelFilter::RoundCorner {
            rx,
            ry,
            color,
            transparent,
        } => round_corners(image, rx, ry, color, transparent),
    }
}

/// Mirrors the image as the URL's `-W` / `-H` ask.
pub fn flip(image: DynamicImage, horizontal: bool, vertical: bool) -> DynamicImage {
    let image = if horizontal { image.fliph() } else { image };
    if vertical { image.flipv() } else { image }
}

/// The part of the image that is not border, the border being every pixel within
/// `trim.tolerance` (Euclidean RGB(A) distance) of the chosen corner's colour. `None` when
/// the whole image is border: a uniform image is left untouched.
pub fn trim_box(image: &DynamicImage, trim: Trim) -> Option<Rect> {
    let (w, h) = image.dimensions();
    let ch = channels(image);
    let bytes = image.as_bytes();
    let corner = match trim.corner {
        TrimCorner::TopLeft => 0,
        TrimCorner::BottomRight => (w as usize * h as usize - 1) * ch,
    };
    let reference = &bytes[corner..corner + ch];
    let limit = u32::from(trim.tolerance).pow(2);
    let is_content = |px: &[u8]| {
        let d: u32 = px
            .iter()
            .zip(reference)
            .map(|(&a, &b)| u32::from(a.abs_diff(b)).pow(2))
            .sum();
        d > limit
    };
    let (mut left, mut top, mut right, mut bottom) = (u32::MAX, u32::MAX, 0, 0);
    for (i, px) in bytes.chunks_exact(ch).enumerate() {
        if is_content(px) {
            let (x, y) = ((i % w as usize) as u32, (i / w as usize) as u32);
            left = left.min(x);
            right = right.max(x + 1);
            top = top.min(y);
            bottom = bottom.max(y + 1);
        }
    }
    (left != u32::MAX).then_some(Rect {
        left,
        top,
        right,
        bottom,
    })
}

/// Centres the image on a canvas of `canvas` size filled as `fill` says; transparent parts
/// of the image show the fill too.
pub fn pad(image: DynamicImage, canvas: Size, fill: Fill) -> Result<DynamicImage, ImagingError> {
    let (w, h) = image.dimensions();
    let opaque = !image.color().has_alpha();
    if opaque && (w, h) == (canvas.width, canvas.height) {
        return Ok(image);
    }
    let mut background = match fill {
        Fill::Color(c) => {
            RgbaImage::from_pixel(canvas.width, canvas.height, Rgba([c.r, c.g, c.b, c.a]))
        }
        Fill::Transparent => RgbaImage::new(canvas.width, canvas.height),
        Fill::Auto => {
            let c = edge_color(&image);
            RgbaImage::from_pixel(canvas.width, canvas.height, Rgba([c.r, c.g, c.b, 255]))
        }
        Fill::Blur => blurred_cover(&image, canvas)?,
    };
    let x = i64::from((canvas.width - w.min(canvas.width)) / 2);
    let y = i64::from((canvas.height - h.min(canvas.height)) / 2);
    match &image {
        DynamicImage::ImageRgba8(top) => imageops::overlay(&mut background, top, x, y),
        other => imageops::replace(&mut background, &other.to_rgba8(), x, y),
    }
    Ok(drop_opaque_alpha(DynamicImage::ImageRgba8(background)))
}

/// Composites RGBA onto an opaque background colour, giving RGB8 (for JPEG output).
pub fn flatten(image: DynamicImage, background: Color) -> DynamicImage {
    let DynamicImage::ImageRgba8(rgba) = image else {
        return image;
    };
    let bg = [background.r, background.g, background.b];
    let rgb = image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = u32::from(p[3]);
        image::Rgb(std::array::from_fn(|c| {
            ((u32::from(p[c]) * a + u32::from(bg[c]) * (255 - a) + 127) / 255) as u8
        }))
    });
    DynamicImage::ImageRgb8(rgb)
}

/// RGBA whose every pixel is opaque → RGB8; anything else unchanged.
pub fn drop_opaque_alpha(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgba8(ref rgba) if rgba.pixels().all(|p| p.0[3] == 255) => {
            DynamicImage::ImageRgb8(image.to_rgb8())
        }
        other => other,
    }
}

fn channels(image: &DynamicImage) -> usize {
    usize::from(image.color().channel_count())
}

fn bytes_mut(image: &mut DynamicImage) -> &mut [u8] {
    match image {
        DynamicImage::ImageRgb8(img) => img,
        DynamicImage::ImageRgba8(img) => img,
        _ => unreachable!("the working image is always RGB8 or RGBA8"),
    }
}

/// Rec. 601 luma, as PIL computes it.
fn luma(px: &[u8]) -> f32 {
    0.299 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.114 * f32::from(px[2])
}

/// Grey in all three channels (the image stays RGB so later steps need no special case).
fn grayscale(mut image: DynamicImage) -> DynamicImage {
    let ch = channels(&image);
    for px in bytes_mut(&mut image).chunks_exact_mut(ch) {
        let y = luma(px).round() as u8;
        px[..3].fill(y);
    }
    image
}

/// Unsharp mask: `p + amount * (p - blur(p))`, on each channel or on luma only.
fn sharpen(
    mut image: DynamicImage,
    amount: f32,
    radius: f32,
    luminance_only: bool,
) -> DynamicImage {
    if amount <= 0.0 || radius <= 0.0 {
        return image;
    }
    let blurred = image.blur(radius);
    let ch = channels(&image);
    let soft = blurred.as_bytes();
    for (px, b) in bytes_mut(&mut image)
        .chunks_exact_mut(ch)
        .zip(soft.chunks_exact(ch))
    {
        if luminance_only {
            let delta = amount * (luma(px) - luma(b));
            for c in &mut px[..3] {
                *c = (f32::from(*c) + delta).round().clamp(0.0, 255.0) as u8;
            }
        } else {
            for (c, &s) in px[..3].iter_mut().zip(&b[..3]) {
                *c = (f32::from(*c) + amount * (f32::from(*c) - f32::from(s)))
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
    }
    image
}

/// Paints the outside of elliptical corners (radii `rx`, `ry`) with `color`, or makes it
/// transparent. The edge is anti-aliased over about one pixel.
fn round_corners(
    image: DynamicImage,
    rx: u32,
    ry: u32,
    color: Color,
    transparent: bool,
) -> DynamicImage {
    let (w, h) = image.dimensions();
    let (rx, ry) = (rx.min(w / 2), ry.min(h / 2));
    if rx == 0 || ry == 0 {
        return image;
    }
    let mut image = if transparent {
        DynamicImage::ImageRgba8(image.to_rgba8())
    } else {
        image
    };
    let ch = channels(&image);
    let paint = [color.r, color.g, color.b];
    let bytes = bytes_mut(&mut image);
    let (rxf, ryf) = (rx as f32, ry as f32);
    for y in 0..h {
        // Distance into the corner region, measured from the ellipse centre.
        let dy = if y < ry {
            ry - y
        } else if y >= h - ry {
            y + ry + 1 - h
        } else {
            continue;
        };
        for x in (0..rx).chain(w - rx..w) {
            let dx = if x < rx { rx - x } else { x + rx + 1 - w };
            let (fx, fy) = ((dx as f32 - 0.5) / rxf, (dy as f32 - 0.5) / ryf);
            // Approximate signed distance to the ellipse, in pixels.
            let outside = ((fx * fx + fy * fy).sqrt() - 1.0) * rxf.min(ryf);
            let cover = (outside + 0.5).clamp(0.0, 1.0);
            if cover == 0.0 {
                continue;
            }
            let i = (y as usize * w as usize + x as usize) * ch;
            let px = &mut bytes[i..i + ch];
            if transparent {
                px[3] = (f32::from(px[3]) * (1.0 - cover)).round() as u8;
            } else {
                for (c, &p) in px[..3].iter_mut().zip(&paint) {
                    *c = (f32::from(*c) * (1.0 - cover) + f32::from(p) * cover).round() as u8;
                }
            }
        }
    }
    image
}

/// The most common colour along the image's edges (4-bit buckets, averaged within the
/// winning bucket so the result is a real edge colour, not a bucket corner).
fn edge_color(image: &DynamicImage) -> Color {
    let (w, h) = image.dimensions();
    let mut buckets = vec![(0u32, [0u64; 3]); 4096];
    let mut add = |x: u32, y: u32| {
        let p = image.get_pixel(x, y).0;
        let key =
            (usize::from(p[0] >> 4) << 8) | (usize::from(p[1] >> 4) << 4) | usize::from(p[2] >> 4);
        let (count, sums) = &mut buckets[key];
        *count += 1;
        for (sum, &v) in sums.iter_mut().zip(&p[..3]) {
            *sum += u64::from(v);
        }
    };
    for x in 0..w {
        add(x, 0);
        add(x, h - 1);
    }
    for y in 0..h {
        add(0, y);
        add(w - 1, y);
    }
    let (count, sums) = buckets
        .into_iter()
        .max_by_key(|b| b.0)
        .expect("4096 buckets");
    let avg = |c: usize| (sums[c] / u64::from(count.max(1))) as u8;
    Color {
        r: avg(0),
        g: avg(1),
        b: avg(2),
        a: 255,
    }
}

/// The image scaled to cover the canvas, centred, and blurred heavily.
fn blurred_cover(image: &DynamicImage, canvas: Size) -> Result<RgbaImage, ImagingError> {
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let aspect = f64::from(canvas.width) / f64::from(canvas.height);
    let (cw, ch) = if w / h > aspect {
        (h * aspect, h)
    } else {
        (w, w / aspect)
    };
    let crop = CropBox {
        left: (w - cw) / 2.0,
        top: (h - ch) / 2.0,
        width: cw,
        height: ch,
    };
    let cover = resize(image, crop, canvas)?;
    let sigma = canvas.width.max(canvas.height) as f32 / 25.0;
    Ok(cover.fast_blur(sigma.max(2.0)).to_rgba8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::recipe::Milli;
    use image::{Rgb, RgbImage};

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 8) as u8, (y * 8) as u8, 128])
        }))
    }

    fn mean(image: &DynamicImage) -> f64 {
        let b = image.to_rgb8();
        b.iter().map(|&v| f64::from(v)).sum::<f64>() / b.len() as f64
    }

    fn variance(image: &DynamicImage) -> f64 {
        let m = mean(image);
        let b = image.to_rgb8();
        b.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / b.len() as f64
    }

    fn checkerboard() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(32, 32, |x, y| {
            Rgb(if (x / 2 + y / 2) % 2 == 0 {
                [0; 3]
            } else {
                [255; 3]
            })
        }))
    }

    #[test]
    fn grayscale_equalizes_channels() {
        let out = apply(gradient(20, 20), &PixelFilter::Grayscale);
        assert!(
            out.to_rgb8()
                .pixels()
                .all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2])
        );
    }

    #[test]
    fn brightness_and_contrast() {
        let img = gradient(20, 20);
        assert!(mean(&apply(img.clone(), &PixelFilter::Brightness(50))) > mean(&img) + 50.0);
        assert!(mean(&apply(img.clone(), &PixelFilter::Brightness(-50))) < mean(&img) - 50.0);
        assert!(variance(&apply(img.clone(), &PixelFilter::Contrast(50))) > variance(&img));
        assert!(variance(&apply(img.clone(), &PixelFilter::Contrast(-50))) < variance(&img));
    }

    #[test]
    fn blur_and_sharpen_change_variance() {
        let img = checkerboard();
        let blurred = apply(
            img.clone(),
            &PixelFilter::Blur {
                radius: 3,
                sigma: None,
            },
        );
        assert!(variance(&blurred) < variance(&img) / 2.0);
        let soft = apply(
            img.clone(),
            &PixelFilter::Blur {
                radius: 1,
                sigma: None,
            },
        );
        let sharp = apply(
            soft.clone(),
            &PixelFilter::Sharpen {
                amount: Milli(2000),
                radius: Milli(1000),
                luminance_only: false,
            },
        );
        assert!(variance(&sharp) > variance(&soft));
        let luma = apply(
            soft.clone(),
            &PixelFilter::Sharpen {
                amount: Milli(2000),
                radius: Milli(1000),
                luminance_only: true,
            },
        );
        assert!(variance(&luma) > variance(&soft));
        assert_eq!(
            apply(
                img.clone(),
                &PixelFilter::Blur {
                    radius: 0,
                    sigma: None
                }
            ),
            img
        );
    }

    #[test]
    fn rotate_is_counter_clockwise() {
        // Red top row: after a 90° counter-clockwise turn it is the left column.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(30, 20, |_, y| {
            Rgb(if y == 0 { [255, 0, 0] } else { [0, 0, 255] })
        }));
        let out = apply(img, &PixelFilter::Rotate(Rotation::R90)).to_rgb8();
        assert_eq!(out.dimensions(), (20, 30));
        assert_eq!(out.get_pixel(0, 15).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(19, 15).0, [0, 0, 255]);
    }

    #[test]
    fn flips() {
        let out = flip(gradient(10, 10), true, true).to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [72, 72, 128]);
    }

    #[test]
    fn round_corners_paint_or_clear_the_corners() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(40, 40, Rgb([0, 0, 255])));
        let filter = PixelFilter::RoundCorner {
            rx: 10,
            ry: 10,
            color: Color::WHITE,
            transparent: false,
        };
        let out = apply(img.clone(), &filter).to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(39, 39).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(20, 0).0, [0, 0, 255]);
        assert_eq!(out.get_pixel(5, 5).0, [0, 0, 255]);
        let filter = PixelFilter::RoundCorner {
            rx: 10,
            ry: 10,
            color: Color::WHITE,
            transparent: true,
        };
        let out = apply(img, &filter).to_rgba8();
        assert_eq!(out.get_pixel(0, 39).0[3], 0);
        assert_eq!(out.get_pixel(20, 20).0[3], 255);
    }

    #[test]
    fn trim_finds_the_content() {
        let img = RgbImage::from_fn(50, 40, |x, y| {
            let inside = (10..40).contains(&x) && (10..30).contains(&y);
            Rgb(if inside {
                [200, 30, 30]
            } else {
                [255, 255, 255]
            })
        });
        let img = DynamicImage::ImageRgb8(img);
        let tl = Trim {
            corner: TrimCorner::TopLeft,
            tolerance: 0,
        };
        assert_eq!(
            trim_box(&img, tl),
            Some(Rect {
                left: 10,
                top: 10,
                right: 40,
                bottom: 30
            })
        );
        let br = Trim {
            corner: TrimCorner::BottomRight,
            tolerance: 10,
        };
        assert_eq!(
            trim_box(&img, br),
            Some(Rect {
                left: 10,
                top: 10,
                right: 40,
                bottom: 30
            })
        );
        // A tolerance wider than the colour difference swallows everything: left alone.
        assert_eq!(
            trim_box(
                &img,
                Trim {
                    corner: TrimCorner::TopLeft,
                    tolerance: 442
                }
            ),
            None
        );
        let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 10, Rgb([7, 7, 7])));
        assert_eq!(trim_box(&flat, tl), None);
    }

    #[test]
    fn pad_centres_on_the_fill() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 20, Rgb([0, 0, 255])));
        let red = Color {
            r: 255,
            g: 0,
            b: 0,
            a: 255,
        };
        let out = pad(img.clone(), Size::new(30, 20), Fill::Color(red)).unwrap();
        let rgb = out.as_rgb8().expect("opaque fill stays RGB");
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(rgb.get_pixel(15, 10).0, [0, 0, 255]);
        let out = pad(img.clone(), Size::new(30, 20), Fill::Transparent)
            .unwrap()
            .to_rgba8();
        assert_eq!(out.get_pixel(0, 0).0[3], 0);
        assert_eq!(out.get_pixel(15, 10).0, [0, 0, 255, 255]);
        let framed = RgbImage::from_fn(10, 20, |x, _| {
            Rgb(if x == 0 || x == 9 {
                [0, 200, 0]
            } else {
                [9, 9, 9]
            })
        });
        let out = pad(
            DynamicImage::ImageRgb8(framed),
            Size::new(30, 20),
            Fill::Auto,
        )
        .unwrap()
        .to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [0, 200, 0]);
        let out = pad(gradient(10, 20), Size::new(30, 20), Fill::Blur).unwrap();
        assert_eq!((out.width(), out.height()), (30, 20));
    }

    #[test]
    fn flatten_uses_the_background() {
        let img = RgbaImage::from_fn(2, 1, |x, _| {
            Rgba(if x == 0 {
                [255, 0, 0, 0]
            } else {
                [0, 0, 255, 255]
            })
        });
        let out = flatten(DynamicImage::ImageRgba8(img), Color::WHITE).to_rgb8();
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 0, 255]);
    }
}
