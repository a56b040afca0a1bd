//! How a handler reaches an existing resource, once: find the target in the current view and
//! check the caller's right to it, answering a refusal with the resource's own not-found error;
//! a write then submits its command (`decide` checks the same rule again against the table it
//! commits on) and hands back the view that holds its result for presenting.

use std::sync::Arc;

use tally_domain::access::{Denial, Subject};
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
pub(crate) struct Write<'a, R, N> {
    /// The target's guid in the view, from the path's text (`None`: no such resource).
    pub resolve: R,
    /// The permission rule (`tally_domain::access`) for the target.
    pub rule: fn(Subject<'_>, &State, Option<Guid>) -> Result<(), Denial>,
    /// The resource's not-found error.
    pub not_found: N,
    /// The caller.
    pub caller: &'a Caller,
}

impl<R, N> Write<'_, R, N>
where
    R: FnOnce(&State) -> Option<Guid>,
    N: Fn() -> ApiError,
{
    /// Checks, then submits `command(target)` (`None`: nothing to change); the target and the
    /// view after the commit.
    pub(crate) async fn run(
        self,
        state: &AppState,
        command: impl FnOnce(Guid) -> Option<Command>,
    ) -> Result<(Guid, Arc<View>), ApiError> {
        let view = state.engine.view();
        let target = target(
            &view.state,
            self.caller,
            self.resolve,
            self.rule,
            self.not_found,
        )?;
        if let Some(command) = command(target) {
            state.engine.submit(self.caller.envelope(command)).await?;
        }
        Ok((target, state.engine.view()))
    }
}
