//! One integration-test binary: every test starts the real server on 127.0.0.1:0 and talks
//! HTTP to it.

mod api;
mod backends;
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
