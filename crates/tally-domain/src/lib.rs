//! tally's pure core: the Cloud Controller resources tally keeps (orgs, spaces, apps with their
//! web process, packages, builds, droplets), the commands clients send, the events the log
//! stores, and the two functions everything else is built on:
//!
//! - [`decide`]: command + table + inputs (time, ids, actor, settings) → events or [`DomainError`];
//! - [`State::evolve`]: table + event → table.
//!
//! The usage-event rules of Cloud Controller (reference §2) live in [`usage`]: which changes
//! write STARTED, STOPPED, BUILDPACK_SET or STAGING_* events, with which `previous_*` values,
//! and which write nothing. This crate does no I/O, reads no clock and generates no random ids.
//!
//! # Layout
//! - [`ids`]: guids, timestamps, sequence numbers, the [`IdGen`] input.
//! - [`model`]: orgs, spaces, apps, packages, builds, droplets; derived package state.
//! - [`command`], [`event`], [`error`]: what comes in, what is stored, why a command is refused.
//! - [`state`]: the app table and `evolve`.
//! - [`decide`](mod@decide): the rules, and `reseed` for purge-and-reseed (reference §4.1).
//! - [`role`]: org and space roles.
//! - [`access`]: who may do what (reference §8.2, §8.3).
//! - [`limits`]: the most a client may store (string lengths, integer ranges).
//! - [`usage`], [`audit`]: the two streams' records.

pub mod access;
pub mod audit;
pub mod command;
pub mod decide;
pub mod error;
pub mod event;
pub mod ids;
pub mod limits;
pub mod model;
pub mod role;
pub mod state;
pub mod usage;

pub use audit::{Actor, AuditEvent};
pub use command::{
    AppAction, AppAttributes, BuildOutcome, Command, Envelope, Lifecycle, ProcessUpdate, Scale,
    TaskSpec,
};
pub use decide::{decide, reseed, DomainConfig, Inputs, StagingMode};
pub use error::DomainError;
pub use event::Event;
pub use ids::{
    event_guid, event_guid_seq, is_v3_build, v3_build_guid, Guid, IdGen, Seq, SequentialIds,
    Timestamp,
};
pub use role::{Membership, RoleKind};
pub use state::State;
pub use usage::{UsageEvent, UsageState};

#[cfg(test)]
mod tests;
