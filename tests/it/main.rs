//! The one integration-test binary: the real server on port 0, and the `tally` binary itself.

// A panic in a test helper is a test failure; children spawned by helpers are waited for by
// the tests that receive them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::zombie_processes)]

mod apps;
mod architecture;
mod backup;
mod cli;
mod crash;
mod discovery;
mod edge;
mod events;
mod failover;
mod helpers;
mod nodes;
mod operations;
mod orgs;
mod postgres;
mod python_client;
mod roles;
mod schemathesis;
mod usage;
mod v3_apps;
