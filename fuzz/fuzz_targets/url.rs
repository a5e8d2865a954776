//! The Thumbor-style URL parser and the canonical printer: any path is parsed or refused
//! without panicking, and a parsed path prints to a canonical form that parses back to the
//! same recipe, key and meta flag and prints the same again.
#![no_main]

use imgedge::edge::url::{canonical, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    let Ok(parsed) = parse(path) else { return };
    let printed = canonical(&parsed.recipe, parsed.meta, &parsed.key);
    let again = parse(&printed)
        .unwrap_or_else(|e| panic!("canonical form {printed:?} of {path:?} refused: {e:?}"));
    assert_eq!(again.recipe, parsed.recipe, "{path:?} -> {printed:?}");
    assert_eq!(again.key, parsed.key, "{path:?} -> {printed:?}");
    assert_eq!(again.meta, parsed.meta, "{path:?} -> {printed:?}");
    assert_eq!(canonical(&again.recipe, again.meta, &again.key), printed);
});
