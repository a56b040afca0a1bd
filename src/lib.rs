//! The `tally` binary's library: configuration, telemetry and the composition root. Everything
//! else lives in the crates under `crates/` (see ARCHITECTURE.md).

pub mod auth;
pub mod backup;
pub mod config;
pub mod progress;
pub mod startup;
pub mod tail;
pub mod telemetry;
pub mod verify;
