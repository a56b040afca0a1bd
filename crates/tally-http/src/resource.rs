//! How a handler reaches an existing resource, once: find the target in the current view and
//! check the caller's right to it, answering a refusal with the resource's own not-found error;
//! a write then submits its command (`decide` checks the same rule again against the table it
//! commits on) and hands back the view that holds its result for presenting.

use std::sync::Arc;

use tally_domain::access::{Denial, Subject, Visible};
use tally_domain::{Command, Guid, State};
use tally_engine::View;

use crate::auth::Caller;
use crate::{deny, ApiError, AppState};

/// The resource `resolve` finds in `table`, if `rule` lets the caller reach it.
pub(crate) fn target(
    table: &State,
    caller: &Caller,
    resolve: impl FnOnce(&State) -> Option<Guid>,
    rule: impl FnOnce(Subject<'_>, &State, Option<Guid>) -> Result<(), Denial>,
    not_found: impl Fn() -> ApiError,
) -> Result<Guid, ApiError> {
    let target = resolve(table);
    rule(caller.subject(), table, target).map_err(|d| deny(d, &not_found))?;
    target.ok_or_else(not_found)
}

/// One write against an existing resource.
pub(crate) struct Write<'a, R, Q, N> {
    caller: &'a Caller,
    resolve: R,
    rule: Q,
    not_found: N,
}

impl<'a, R, Q, N> Write<'a, R, Q, N>
where
    R: FnOnce(&State) -> Option<Guid>,
    Q: FnOnce(Subject<'_>, &State, Option<Guid>) -> Result<(), Denial>,
    N: Fn() -> ApiError,
{
    /// A write by `caller` to the resource `resolve` finds (`None`: no such resource), if the
    /// permission `rule` (`tally_domain::access`) lets it; `not_found` is the resource's error.
    pub(crate) fn new(caller: &'a Caller, resolve: R, rule: Q, not_found: N) -> Self {
        Self {
            caller,
            resolve,
            rule,
            not_found,
        }
    }

    /// Checks, then submits what `command` makes of the target in the view it was found in
    /// (`None`: nothing to change; an error: refused before anything is submitted); the target
    /// and the view after the commit.
    pub(crate) async fn run(
        self,
        state: &AppState,
        command: impl FnOnce(&State, Guid) -> Result<Option<Command>, ApiError>,
    ) -> Result<(Guid, Arc<View>), ApiError> {
        let (target, command) = {
            let view = state.engine.view();
            let target = target(
                &view.state,
                self.caller,
                self.resolve,
                self.rule,
                self.not_found,
            )?;
            (target, command(&view.state, target)?)
        };
        if let Some(command) = command {
            state.engine.submit(self.caller.envelope(command)).await?;
        }
        Ok((target, state.engine.view()))
    }
}

/// A create: `check` decides against the current view whether the caller may (in CC's order
/// of errors) and finds what the command needs, then the command for a fresh guid is submitted
/// (`decide` checks the rights again against the table it commits on); the new guid.
pub(crate) async fn create<T>(
    state: &AppState,
    caller: &Caller,
    check: impl FnOnce(&State) -> Result<T, ApiError>,
    command: impl FnOnce(Guid, T) -> Command,
) -> Result<Guid, ApiError> {
    let checked = check(&state.engine.view().state)?;
    let guid = crate::fresh_guid();
    state
        .engine
        .submit(caller.envelope(command(guid, checked)))
        .await?;
    Ok(guid)
}

/// What every list starts from: one view, what the caller may see in it, and the list's
/// parameters (`v2::paging::Paging` or `v3::list::ListQuery`), which the handler turns into
/// a query, a page and its envelope.
pub(crate) type Listing<P> = (Arc<View>, Visible, P);

/// A list's opening, in CC's order: the caller's right to list (`rule`; a refusal is answered
/// with the list's `not_found`), then the parameters (`parse`, with the list's own errors).
pub(crate) fn open_list<P>(
    state: &AppState,
    caller: &Caller,
    rule: impl FnOnce(Subject<'_>, &State) -> Result<Visible, Denial>,
    not_found: fn() -> ApiError,
    parse: impl FnOnce() -> Result<P, ApiError>,
) -> Result<Listing<P>, ApiError> {
    let view = state.engine.view();
    let visible = rule(caller.subject(), &view.state).map_err(|d| deny(d, not_found))?;
    Ok((view, visible, parse()?))
}
