//! [`Outage`]: a failure that repeats while something is out of reach (the database, the
//! disk), logged once when it starts, then at most every [`Outage::LOG_EVERY`] with how many
//! happened meanwhile, and once when it ends: never once per request.

use std::time::{Duration, Instant};

/// The state of one kind of repeating failure.
#[derive(Debug, Default)]
pub struct Outage {
    /// When the last line was logged, and the failures since that were not.
    logged: Option<(Instant, u64)>,
}

impl Outage {
    /// How often an outage is logged again while it lasts.
    pub const LOG_EVERY: Duration = Duration::from_secs(30);

    /// No failure yet.
    pub const fn new() -> Self {
        Self { logged: None }
    }

    /// A failure now: `Some(n)` when it is to be logged (the first of an outage, or the first
    /// [`Self::LOG_EVERY`] after the last line), `n` being the failures not logged since.
    pub fn failed(&mut self) -> Option<u64> {
        self.failed_at(Instant::now())
    }

    /// Whether an outage is on (a failure came after the last success).
    pub fn is_on(&self) -> bool {
        self.logged.is_some()
    }

    /// A success: `Some(n)` when it ends an outage of `n` failures since the last line.
    pub fn ended(&mut self) -> Option<u64> {
        self.logged.take().map(|(_, unlogged)| unlogged)
    }

    fn failed_at(&mut self, now: Instant) -> Option<u64> {
        match &mut self.logged {
            Some((at, unlogged)) if now.duration_since(*at) < Self::LOG_EVERY => {
                *unlogged += 1;
                None
            }
            Some((at, unlogged)) => {
                let since = std::mem::take(unlogged);
                *at = now;
                Some(since)
            }
            None => {
                self.logged = Some((now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_when_it_starts_every_30_s_while_it_lasts_and_when_it_ends() {
        let mut outage = Outage::default();
        let start = Instant::now();
        assert!(!outage.is_on());
        assert_eq!(
            outage.failed_at(start),
            Some(0),
            "the first failure is logged"
        );
        assert!(outage.is_on());
        for second in 1..30 {
            let at = start + Duration::from_secs(second);
            assert_eq!(outage.failed_at(at), None, "second {second} is not");
        }
        assert_eq!(
            outage.failed_at(start + Duration::from_secs(30)),
            Some(29),
            "30 s later: logged, with the 29 failures in between"
        );
        assert_eq!(outage.failed_at(start + Duration::from_secs(31)), None);
        assert_eq!(outage.ended(), Some(1), "the end says what went unlogged");
        assert!(!outage.is_on());
        assert_eq!(
            outage.ended(),
            None,
            "a success outside an outage says nothing"
        );
        assert_eq!(
            outage.failed_at(start + Duration::from_secs(32)),
            Some(0),
            "the next failure starts a new outage"
        );
    }
}
