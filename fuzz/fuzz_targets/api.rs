//! The storage API's request bodies and query strings: any bytes are parsed into every
//! body type and as the listing's query, or refused with an error, without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imgedge::api::fuzz::bodies(data);
    if let Ok(query) = std::str::from_utf8(data) {
        imgedge::api::fuzz::query(query);
    }
});
