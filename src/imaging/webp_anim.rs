//! Animated WebP, written frame by frame through libwebp's `WebPAnimEncoder`.
//!
//! The `webp` crate's `AnimEncoder` is not used: it holds every frame until the end, and it
//! closes the animation with timestamp 0, which libwebp refuses ("timestamps must be
//! non-decreasing"), so the last frame silently gets the average duration of the others
//! instead of its own. Here each frame goes to libwebp as soon as it is made (libwebp keeps
//! only the previous canvas and its candidate sub-frames), the animation ends at the true
//! timestamp, and the loop count is set through the encoder's options.
//!
//! The only `unsafe` code of the library, kept to this file: every pointer is checked for
//! null, every libwebp object is freed on every path (the encoder in `Drop`, each picture
//! right after it is added, the assembled bytes after they are copied).

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use image::DynamicImage;
use libwebp_sys as sys;

/// An animated WebP being written.
pub struct AnimatedWebp {
    encoder: NonNull<sys::WebPAnimEncoder>,
    width: u32,
    height: u32,
    config: sys::WebPConfig,
    /// Where the next frame starts, in milliseconds from the first.
    timestamp: i32,
    /// Whether some frame has transparent pixels.
    alpha: bool,
}

impl AnimatedWebp {
    /// A `width` x `height` animation that plays `plays` times (0: forever), each frame
    /// encoded lossily at `quality` with libwebp's method 4 (as stills are).
    pub fn new(width: u32, height: u32, plays: u16, quality: u8) -> Result<Self, String> {
        let side = |v: u32| i32::try_from(v).ok().filter(|&v| (1..=16383).contains(&v));
        let (Some(w), Some(h)) = (side(width), side(height)) else {
            return Err(format!("{width}x{height} is outside WebP's size limits"));
        };
        let abi = sys::WEBP_MUX_ABI_VERSION as i32;
        let mut options = MaybeUninit::<sys::WebPAnimEncoderOptions>::uninit();
        // SAFETY: the init function fills the whole struct, or returns 0 (ABI mismatch).
        let mut options = unsafe {
            if sys::WebPAnimEncoderOptionsInitInternal(options.as_mut_ptr(), abi) == 0 {
                return Err("libwebp's animation ABI does not match".to_owned());
            }
            options.assume_init()
        };
        options.anim_params.loop_count = i32::from(plays);
        // SAFETY: `options` is initialised and only read during the call.
        let encoder = unsafe { sys::WebPAnimEncoderNewInternal(w, h, &options, abi) };
        let encoder =
            NonNull::new(encoder).ok_or_else(|| "libwebp could not allocate".to_owned())?;
        let mut config = match sys::WebPConfig::new() {
            Ok(config) => config,
            Err(()) => {
                // SAFETY: created just above and not shared.
                unsafe { sys::WebPAnimEncoderDelete(encoder.as_ptr()) };
                return Err("libwebp's encoder ABI does not match".to_owned());
            }
        };
        config.quality = f32::from(quality.clamp(1, 100));
        config.method = 4;
        Ok(AnimatedWebp {
            encoder,
            width,
            height,
            config,
            timestamp: 0,
            alpha: false,
        })
    }

    /// Adds the next frame, shown for `delay_ms`. It must have the animation's size and be
    /// RGB8 or RGBA8.
    pub fn add(&mut self, frame: &DynamicImage, delay_ms: u32) -> Result<(), String> {
        if (frame.width(), frame.height()) != (self.width, self.height) {
            return Err(format!(
                "a {}x{} frame in a {}x{} animation",
                frame.width(),
                frame.height(),
                self.width,
                self.height
            ));
        }
        let (pixels, stride, alpha) = match frame {
            DynamicImage::ImageRgba8(img) => (img.as_raw(), self.width * 4, true),
            DynamicImage::ImageRgb8(img) => (img.as_raw(), self.width * 3, false),
            _ => return Err("frames are RGB8 or RGBA8".to_owned()),
        };
        let mut picture = MaybeUninit::<sys::WebPPicture>::uninit();
        // SAFETY: the init function fills the whole struct, or returns 0 (ABI mismatch).
        let mut picture = unsafe {
            if sys::WebPPictureInitInternal(
                picture.as_mut_ptr(),
                sys::WEBP_ENCODER_ABI_VERSION as i32,
            ) == 0
            {
                return Err("libwebp's encoder ABI does not match".to_owned());
            }
            picture.assume_init()
        };
        picture.use_argb = 1;
        picture.width = self.width as i32;
        picture.height = self.height as i32;
        // SAFETY: `pixels` holds `height` rows of `stride` bytes (checked sizes above); the
        // import copies them into memory the picture owns, freed right after the add.
        let ok = unsafe {
            let imported = if alpha {
                sys::WebPPictureImportRGBA(&mut picture, pixels.as_ptr(), stride as i32)
            } else {
                sys::WebPPictureImportRGB(&mut picture, pixels.as_ptr(), stride as i32)
            };
            let added = imported != 0
                && sys::WebPAnimEncoderAdd(
                    self.encoder.as_ptr(),
                    &mut picture,
                    self.timestamp,
                    &self.config,
                ) != 0;
            sys::WebPPictureFree(&mut picture);
            added
        };
        if !ok {
            return Err(self.error("adding a frame"));
        }
        self.alpha |= alpha;
        let delay = i32::try_from(delay_ms).unwrap_or(i32::MAX);
        self.timestamp = self.timestamp.saturating_add(delay);
        Ok(())
    }

    /// Ends the animation after the last frame's delay and returns the file.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        let mut data = sys::WebPData::default();
        // SAFETY: a null frame marks the end; `data` receives memory that libwebp
        // allocated, copied out and then freed with `WebPDataClear`.
        unsafe {
            if sys::WebPAnimEncoderAdd(
                self.encoder.as_ptr(),
                ptr::null_mut(),
                self.timestamp,
                ptr::null(),
            ) == 0
            {
                return Err(self.error("ending the animation"));
            }
            if sys::WebPAnimEncoderAssemble(self.encoder.as_ptr(), &mut data) == 0 {
                return Err(self.error("assembling the file"));
            }
            let mut bytes = if data.bytes.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data.bytes, data.size).to_vec()
            };
            sys::WebPDataClear(&mut data);
            if self.alpha {
                mark_alpha(&mut bytes);
            }
            Ok(bytes)
        }
    }

    fn error(&self, doing: &str) -> String {
        // SAFETY: the encoder is alive; the message is a C string it owns, copied at once.
        let message = unsafe {
            let text = sys::WebPAnimEncoderGetError(self.encoder.as_ptr());
            if text.is_null() {
                String::new()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        };
        format!("animated WebP, {doing}: {message}")
    }
}

/// Sets the alpha flag of the VP8X header. libwebp sets it only when a stored sub-frame has
/// an alpha channel, but it crops frames to what changed, and a first frame whose opaque
/// part is smaller than the canvas leaves the rest transparent with no frame saying so:
/// browsers show it transparent, decoders that trust the flag (image-webp) paint it black.
/// The flag says "the image may contain transparency", which is then true.
fn mark_alpha(bytes: &mut [u8]) {
    const ALPHA: u8 = 0x10;
    if bytes.get(12..16) == Some(b"VP8X")
        && let Some(flags) = bytes.get_mut(20)
    {
        *flags |= ALPHA;
    }
}

impl Drop for AnimatedWebp {
    fn drop(&mut self) {
        // SAFETY: created in `new`, deleted exactly once, here.
        unsafe { sys::WebPAnimEncoderDelete(self.encoder.as_ptr()) };
    }
}

// The encoder is used by one thread at a time; libwebp keeps no thread-local state in it.
// SAFETY: `AnimatedWebp` owns its encoder exclusively (no aliasing pointers escape).
unsafe impl Send for AnimatedWebp {}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{AnimationDecoder, Rgb, RgbImage, Rgba, RgbaImage};

    #[test]
    fn frames_delays_and_loop_count_survive() {
        let mut webp = AnimatedWebp::new(20, 10, 3, 80).unwrap();
        let colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255]];
        for (i, c) in colours.iter().enumerate() {
            let frame = DynamicImage::ImageRgb8(RgbImage::from_pixel(20, 10, Rgb(*c)));
            webp.add(&frame, 100 * (i as u32 + 1)).unwrap();
        }
        let bytes = webp.finish().unwrap();
        let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
        assert!(decoder.has_animation());
        assert!(matches!(
            decoder.loop_count(),
            image::metadata::LoopCount::Finite(n) if n.get() == 3
        ));
        let frames: Vec<_> = decoder.into_frames().collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 3);
        for (i, (frame, c)) in frames.iter().zip(colours).enumerate() {
            // Each frame's own delay, the last one included.
            assert_eq!(frame.delay().numer_denom_ms(), (100 * (i as u32 + 1), 1));
            let p = frame.buffer().get_pixel(10, 5).0;
            for k in 0..3 {
                assert!(p[k].abs_diff(c[k]) < 16, "frame {i}: {p:?} vs {c:?}");
            }
        }
    }

    #[test]
    fn transparency_is_kept_and_bad_frames_are_refused() {
        let mut webp = AnimatedWebp::new(8, 8, 0, 90).unwrap();
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_fn(8, 8, |x, _| {
            Rgba([0, 0, 255, if x < 4 { 0 } else { 255 }])
        }));
        webp.add(&clear, 50).unwrap();
        let red = DynamicImage::ImageRgba8(RgbaImage::from_pixel(8, 8, Rgba([255, 0, 0, 255])));
        webp.add(&red, 50).unwrap();
        assert!(webp.add(&DynamicImage::new_rgb8(4, 4), 50).is_err());
        let bytes = webp.finish().unwrap();
        let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
        assert!(matches!(
            decoder.loop_count(),
            image::metadata::LoopCount::Infinite
        ));
        let first = decoder.into_frames().next().unwrap().unwrap();
        assert!(first.buffer().get_pixel(1, 1).0[3] < 16);
        assert!(first.buffer().get_pixel(6, 1).0[3] > 240);
        assert!(AnimatedWebp::new(0, 8, 0, 80).is_err());
        assert!(AnimatedWebp::new(20_000, 8, 0, 80).is_err());
    }
}
