//! One integration-test binary: every test starts the real server on 127.0.0.1:0 and talks
//! HTTP to it.

// The service's own rules (.clippy.toml) are not the harness's: tests read their
// environment (TEST_S3_ENDPOINT, ...) and wait on blocking work off the runtime.
#![allow(clippy::disallowed_methods)]

mod api;
mod backends;
mod browser;
mod cli;
mod clients;
mod crash;
mod derivatives;
mod edge;
mod memory;
mod ops;
mod slow;
mod support;
mod thumbor;
