//! The rule every server-side store applies when a stored session is used, written once: a
//! session ends at `expires_at` or after `idle_timeout` unused; a use records itself
//! (`last_seen`) at most every `touch_interval`, so most reads stay reads. Pure: `now` is an
//! argument.

use crate::clock::UnixTime;

/// What using a stored session at some moment comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Past its lifetime or idle too long: it ends.
    Ended,
    /// Valid, and its last recorded use is old enough to record this one.
    Touch,
    /// Valid; nothing to write.
    Read,
}

/// The idle timeout a store applies, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    idle_timeout: i64,
}

impl Lifetime {
    /// The rule for sessions that end after `idle_timeout` seconds unused.
    pub fn new(idle_timeout: i64) -> Self {
        Self { idle_timeout }
    }

    /// The idle timeout, in seconds.
    pub fn idle_timeout(self) -> i64 {
        self.idle_timeout
    }

    /// What using a session that expires at `expires_at` and was last seen at `last_seen`
    /// comes to at `now`.
    pub fn judge(self, expires_at: UnixTime, last_seen: UnixTime, now: UnixTime) -> Use {
        if now >= expires_at || now - last_seen > self.idle_timeout {
            Use::Ended
        } else if now - last_seen >= self.touch_interval() {
            Use::Touch
        } else {
            Use::Read
        }
    }

    /// Touch a session's `last_seen` at most every 30 s, so reads stay reads; more often for
    /// a short `idle_timeout` (a tenth of it), so a session in use never looks idle.
    fn touch_interval(self) -> i64 {
        (self.idle_timeout / 10).clamp(1, 30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(
        idle_timeout: i64,
        expires_at: UnixTime,
        last_seen: UnixTime,
        now: UnixTime,
        expected: Use,
    ) {
        assert_eq!(
            Lifetime::new(idle_timeout).judge(expires_at, last_seen, now),
            expected
        );
    }

    #[test]
    fn a_session_ends_at_its_lifetime_or_when_idle_too_long() {
        check(3600, 1_000, 900, 1_000, Use::Ended);
        check(3600, 10_000, 100, 100 + 3601, Use::Ended);
        check(3600, 10_000, 100, 100 + 3600, Use::Touch);
    }

    #[test]
    fn a_use_is_recorded_every_30_seconds_at_most() {
        check(3600, 10_000, 100, 129, Use::Read);
        check(3600, 10_000, 100, 130, Use::Touch);
    }

    #[test]
    fn a_short_idle_timeout_is_touched_often_enough_to_never_look_idle() {
        // idle 20 s: touched every 2 s, so a session used every few seconds lives on.
        check(20, 10_000, 100, 101, Use::Read);
        check(20, 10_000, 100, 102, Use::Touch);
        // idle 5 s: every second.
        check(5, 10_000, 100, 101, Use::Touch);
    }
}
