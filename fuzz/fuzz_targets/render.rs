//! The whole decode -> resize -> encode path on small inputs: the first byte picks one of a
//! few recipes and output formats, the rest is the source. Any input renders or fails with
//! an error; the limits keep each run small.
#![no_main]

use imgedge::edge::url::parse;
use imgedge::imaging::{Format, FormatChoice, Job, Limits, Run, preflight, render_planned};
use libfuzzer_sys::fuzz_target;

const RECIPES: [&str; 8] = [
    "fit-in/64x64/k",
    "32x32/smart/k",
    "10x10:50x40/fit-in/40x0/filters:rotate(90):quality(50)/k",
    "trim/-40x30/k",
    "fit-in/48x48/filters:fill(blue):format(png)/k",
    "full-fit-in/30x30/filters:blur(2):sharpen(1,1,true)/k",
    "0x0/filters:grayscale():round_corner(8,255,0,0)/k",
    "adaptive-fit-in/20x60/right/bottom/filters:brightness(20):contrast(-10)/k",
];

const OUTPUTS: [FormatChoice; 4] = [
    FormatChoice::Auto {
        webp: false,
        avif: false,
    },
    FormatChoice::Auto {
        webp: true,
        avif: false,
    },
    FormatChoice::Explicit(Format::Png),
    FormatChoice::Explicit(Format::Gif),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let recipe = parse(RECIPES[usize::from(pick) % RECIPES.len()])
        .expect("valid recipe")
        .recipe;
    let limits = Limits {
        max_source_pixels: 1 << 20,
        max_output_side: 256,
        max_animation_pixels: 1 << 18,
    };
    let job = Job {
        bytes: bytes.to_vec().into(),
        recipe,
        output: OUTPUTS[usize::from(pick >> 4) % OUTPUTS.len()],
        default_quality: imgedge::imaging::Quality::Fixed(70),
        auto_quality_target: imgedge::imaging::auto_quality::AutoTarget::default(),
        tuning: imgedge::imaging::Tuning::default(),
        limits,
        reduced: None,
        overlays: Vec::new(),
    };
    // As the edge runs it: one preflight of the headers, then the render it planned.
    if let Ok(planned) = preflight(&job) {
        let _ = planned.memory_need(&job);
        let _ = planned.decode_need();
        let _ = render_planned(&job, &planned, Run::default());
    }
});
