//! PLACEHOLDER until the imaging branch merges (API shape only).
#![allow(dead_code, unused_variables)]
pub mod recipe;
pub use recipe::Format;
use recipe::Recipe;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_source_pixels: u64,
    pub max_output_side: u32,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    Explicit(Format),
    Auto { webp: bool, avif: bool },
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
}
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub format: SourceFormat,
    pub width: u32,
    pub height: u32,
    pub orientation: u8,
    pub has_alpha: bool,
    pub animated: bool,
    pub has_icc: bool,
}
pub fn probe(bytes: &[u8]) -> Result<SourceInfo, ImagingError> {
    unimplemented!()
}
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub timings: StageTimings,
}
pub struct StageTimings {
    pub decode: Duration,
    pub transform: Duration,
    pub encode: Duration,
}
pub struct Job<'a> {
    pub bytes: &'a [u8],
    pub recipe: &'a Recipe,
    pub output: FormatChoice,
    pub default_quality: u8,
    pub limits: &'a Limits,
    pub cancel: &'a AtomicBool,
}
pub fn render(job: &Job) -> Result<Encoded, ImagingError> {
    unimplemented!()
}
pub fn describe(job: &Job) -> Result<serde_json::Value, ImagingError> {
    unimplemented!()
}
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImagingError {
    #[error("unsupported")]
    UnsupportedFormat,
    #[error("too many")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("undecodable {0}")]
    Undecodable(String),
    #[error("too large")]
    OutputTooLarge { width: u32, height: u32, limit: u32 },
    #[error("cancelled")]
    Cancelled,
    #[error("encode {0}")]
    Encode(String),
}
