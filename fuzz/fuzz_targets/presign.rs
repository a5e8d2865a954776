//! Presigned-URL verification of the local store: any method, path and query string is
//! checked (refused, unless it is a URL this signer issued) without panicking. Input: one
//! byte for the method (`G`, `H`, `P` or anything else), then `path?query`.
#![no_main]

use imgedge::storage::presign::LocalSigner;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let Some((&method, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let method = match method {
        b'G' => http::Method::GET,
        b'H' => http::Method::HEAD,
        b'P' => http::Method::PUT,
        _ => http::Method::POST,
    };
    let signer = LocalSigner::new(
        b"fuzzing-secret-fuzzing-secret-0".to_vec(),
        "http://127.0.0.1:8081",
    );
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let _ = signer.verify(&method, path, query, now);
});
