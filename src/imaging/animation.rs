//! Animated sources and outputs: the frames of a GIF or animated WebP, decoded one at a
//! time as whole canvases (each frame already composed over the ones before it, by its
//! disposal method), and an animated GIF or WebP written one frame at a time. Neither side
//! holds more than a frame or two, so an animation costs the memory of its largest frames,
//! not of all of them.
//!
//! What an animation keeps: every frame, each frame's delay and the loop count. Disposal
//! is applied while decoding (the frames are whole pictures), so the output needs none of
//! its own: GIF frames are written to replace the previous one, WebP frames are chosen by
//! libwebp (a changed rectangle blended or not over the previous frame) to look the same.

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::codecs::webp::WebPDecoder;
use image::{AnimationDecoder, DynamicImage, Frame, Frames};

use super::decode::normalize;
use super::probe::{SourceFormat, SourceInfo};
use super::recipe::Format;
use super::webp_anim::AnimatedWebp;
use super::{ImagingError, encode};

/// One whole frame and how long it shows.
pub struct Still {
    /// RGB8 when every pixel is opaque, else RGBA8 (as `decode::decode` gives).
    pub image: DynamicImage,
    pub delay_ms: u32,
}

/// The frames of an animated GIF or WebP, in order, decoded lazily.
pub struct Reader<'a> {
    frames: Frames<'a>,
    /// Whether a frame has been read (after the first, a broken frame ends the animation
    /// instead of failing it, as browsers show what they could decode).
    started: bool,
}

impl<'a> Reader<'a> {
    /// Opens `bytes` (probed as `info`). `max_alloc` bounds each decoder allocation.
    pub fn new(bytes: &'a [u8], info: &SourceInfo, max_alloc: u64) -> Result<Self, ImagingError> {
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(max_alloc);
        let undecodable = |e: image::ImageError| ImagingError::Undecodable(e.to_string());
        let frames = match info.format {
            SourceFormat::Gif => {
                let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(undecodable)?;
                image::ImageDecoder::set_limits(&mut decoder, limits).map_err(undecodable)?;
                decoder.into_frames()
            }
            SourceFormat::Webp => {
                let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(undecodable)?;
                image::ImageDecoder::set_limits(&mut decoder, limits).map_err(undecodable)?;
                // Disposal clears to transparent, as browsers do (the ANIM chunk's colour is
                // only a hint); without a colour set, image-webp does not dispose at all.
                decoder
                    .set_background_color(image::Rgba([0, 0, 0, 0]))
                    .map_err(undecodable)?;
                decoder.into_frames()
            }
            other => {
                return Err(ImagingError::Undecodable(format!(
                    "{} animations are not decoded",
                    other.name()
                )));
            }
        };
        Ok(Reader {
            frames,
            started: false,
        })
    }

    /// The next frame; `None` after the last one.
    pub fn next_frame(&mut self) -> Option<Result<Still, ImagingError>> {
        match self.frames.next()? {
            Ok(frame) => {
                self.started = true;
                Some(Ok(still(frame)))
            }
            Err(_) if self.started => None,
            Err(e) => Some(Err(ImagingError::Undecodable(e.to_string()))),
        }
    }
}

fn still(frame: Frame) -> Still {
    let (numer, denom) = frame.delay().numer_denom_ms();
    Still {
        delay_ms: numer / denom.max(1),
        image: normalize(DynamicImage::ImageRgba8(frame.into_buffer())),
    }
}

/// An animated output being written.
pub enum Writer {
    /// The encoder starts with the first frame (GIF's logical screen is written first).
    Gif {
        encoder: Option<gif::Encoder<Vec<u8>>>,
        width: u16,
        height: u16,
        plays: u16,
    },
    Webp(AnimatedWebp),
}

impl Writer {
    /// An animation of `width` x `height` frames in `format` (GIF or WebP) that plays
    /// `plays` times (0: forever). `quality` applies to WebP.
    pub fn new(
        format: Format,
        width: u32,
        height: u32,
        plays: u16,
        quality: u8,
    ) -> Result<Self, ImagingError> {
        let failed = |e: String| ImagingError::Encode(format!("{}: {e}", format.name()));
        match format {
            Format::Gif => {
                let side = |v: u32| u16::try_from(v).ok().filter(|&v| v > 0);
                match (side(width), side(height)) {
                    (Some(width), Some(height)) => Ok(Writer::Gif {
                        encoder: None,
                        width,
                        height,
                        plays,
                    }),
                    _ => Err(failed(format!(
                        "{width}x{height} is outside GIF's size limits"
                    ))),
                }
            }
            Format::Webp => Ok(Writer::Webp(
                AnimatedWebp::new(width, height, plays, quality).map_err(failed)?,
            )),
            other => Err(failed(format!("{} cannot animate", other.name()))),
        }
    }

    pub fn format(&self) -> Format {
        match self {
            Writer::Gif { .. } => Format::Gif,
            Writer::Webp(_) => Format::Webp,
        }
    }

    /// Appends a frame shown for `delay_ms`.
    pub fn add(&mut self, image: &DynamicImage, delay_ms: u32) -> Result<(), ImagingError> {
        let format = self.format();
        let failed = |e: String| ImagingError::Encode(format!("{}: {e}", format.name()));
        match self {
            Writer::Gif {
                encoder,
                width,
                height,
                plays,
            } => {
                if (image.width(), image.height()) != (u32::from(*width), u32::from(*height)) {
                    return Err(failed(format!(
                        "a {}x{} frame in a {width}x{height} animation",
                        image.width(),
                        image.height()
                    )));
                }
                let encoder = match encoder {
                    Some(encoder) => encoder,
                    None => encoder.insert(gif_encoder(*width, *height, *plays).map_err(failed)?),
                };
                let mut pixels = image.to_rgba8().into_raw();
                let mut frame =
                    gif::Frame::from_rgba_speed(*width, *height, &mut pixels, encode::GIF_SPEED);
                // GIF counts hundredths of a second.
                frame.delay = u16::try_from(delay_ms / 10).unwrap_or(u16::MAX);
                // Each frame is a whole picture: clear it before the next one is drawn, so
                // transparent pixels never show the frame before.
                frame.dispose = gif::DisposalMethod::Background;
                encoder
                    .write_frame(&frame)
                    .map_err(|e| failed(e.to_string()))
            }
            Writer::Webp(webp) => webp.add(image, delay_ms).map_err(failed),
        }
    }

    /// The finished file.
    pub fn finish(self) -> Result<Vec<u8>, ImagingError> {
        let format = self.format();
        let failed = |e: String| ImagingError::Encode(format!("{}: {e}", format.name()));
        match self {
            Writer::Gif { encoder: None, .. } => Err(failed("no frames".to_owned())),
            Writer::Gif {
                encoder: Some(encoder),
                ..
            } => encoder.into_inner().map_err(|e| failed(e.to_string())),
            Writer::Webp(webp) => webp.finish().map_err(failed),
        }
    }
}

fn gif_encoder(width: u16, height: u16, plays: u16) -> Result<gif::Encoder<Vec<u8>>, String> {
    let mut encoder =
        gif::Encoder::new(Vec::new(), width, height, &[]).map_err(|e| e.to_string())?;
    // GIF counts repeats after the first play; without the extension a GIF plays once.
    let repeat = match plays {
        0 => Some(gif::Repeat::Infinite),
        1 => None,
        n => Some(gif::Repeat::Finite(n - 1)),
    };
    if let Some(repeat) = repeat {
        encoder.set_repeat(repeat).map_err(|e| e.to_string())?;
    }
    Ok(encoder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::conformance_image;
    use crate::imaging::probe::probe;
    use image::{Rgba, RgbaImage};

    fn read_all(bytes: &[u8]) -> Vec<Still> {
        let info = probe(bytes).unwrap();
        let mut reader = Reader::new(bytes, &info, 1 << 30).unwrap();
        std::iter::from_fn(|| reader.next_frame())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn frames_come_whole_with_their_delays() {
        // 200x120, four frames of 100, 200, 300 and 400 ms (conformance/make_images.py).
        let frames = read_all(&conformance_image("animated.gif"));
        let delays: Vec<u32> = frames.iter().map(|f| f.delay_ms).collect();
        assert_eq!(delays, [100, 200, 300, 400]);
        for f in &frames {
            assert_eq!((f.image.width(), f.image.height()), (200, 120));
        }
        // Three frames of 100, 200 and 300 ms.
        let frames = read_all(&conformance_image("animated.webp"));
        let delays: Vec<u32> = frames.iter().map(|f| f.delay_ms).collect();
        assert_eq!(delays, [100, 200, 300]);
    }

    #[test]
    fn a_frame_cut_short_ends_the_animation() {
        let gif = conformance_image("animated.gif");
        let cut = &gif[..gif.len() - 200];
        let frames = read_all(cut);
        assert!((1..4).contains(&frames.len()), "{}", frames.len());
    }

    #[test]
    fn gif_and_webp_writers_keep_frames_delays_and_plays() {
        for format in [Format::Gif, Format::Webp] {
            for plays in [0u16, 1, 4] {
                let mut writer = Writer::new(format, 16, 8, plays, 80).unwrap();
                for (i, c) in [[250, 0, 0, 255], [0, 0, 250, 255], [0, 0, 0, 0]]
                    .iter()
                    .enumerate()
                {
                    let image = DynamicImage::ImageRgba8(RgbaImage::from_pixel(16, 8, Rgba(*c)));
                    writer.add(&image, 100 + 50 * i as u32).unwrap();
                }
                let bytes = writer.finish().unwrap();
                let info = probe(&bytes).unwrap();
                assert_eq!((info.frames, info.plays), (3, plays), "{format:?} {plays}");
                let frames = read_all(&bytes);
                let delays: Vec<u32> = frames.iter().map(|f| f.delay_ms).collect();
                assert_eq!(delays, [100, 150, 200], "{format:?}");
                let first = frames[0].image.to_rgba8();
                assert!(first.get_pixel(3, 3).0[0] > 200, "{format:?}");
                // The last frame is transparent: nothing of the earlier ones shows through.
                let last = frames[2].image.to_rgba8();
                assert!(last.pixels().all(|p| p.0[3] < 16), "{format:?}");
            }
        }
        assert!(Writer::new(Format::Png, 4, 4, 0, 80).is_err());
    }
}
