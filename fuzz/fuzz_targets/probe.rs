//! The header probes of every source format: any bytes are probed or refused without
//! panicking, and a probed header gives a size the pixel limit can check and a memory
//! estimate that does not overflow; registration's read of a prefix never panics either.
#![no_main]

use imgedge::imaging::{oriented_size_from_prefix, probe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(info) = probe(bytes) {
        assert!(info.width > 0 && info.height > 0);
        assert!((1..=8).contains(&info.orientation));
        for shrink in [1, 2, 4, 8] {
            let _ = info.decode_bytes(shrink);
        }
    }
    let total = bytes.len() as u64;
    let _ = oriented_size_from_prefix(&bytes[..bytes.len() / 2], total);
    let _ = oriented_size_from_prefix(bytes, total);
});
