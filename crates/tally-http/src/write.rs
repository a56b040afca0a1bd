//! How a write handler runs, once: find the target in the current view, check the caller's
//! right to it (so a refusal is answered before anything is queued, with the resource's own
//! not-found error; `decide` checks the same rule again against the table it commits on),
//! submit the command, and hand back the view that holds its result for presenting.

use std::sync::Arc;

use tally_domain::access::{Denial, Subject};
use tally_domain::{Command, Guid, State};
use tally_engine::View;

use crate::auth::Caller;
use crate::{deny, ApiError, AppState};

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
        let target = {
            let view = state.engine.view();
            let target = (self.resolve)(&view.state);
            (self.rule)(self.caller.subject(), &view.state, target)
                .map_err(|d| deny(d, &self.not_found))?;
            target.ok_or_else(&self.not_found)?
        };
        if let Some(command) = command(target) {
            state.engine.submit(self.caller.envelope(command)).await?;
        }
        Ok((target, state.engine.view()))
    }
}
