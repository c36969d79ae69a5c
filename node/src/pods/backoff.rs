//! Restart back-off as the kubelet does it: an immediate first restart, then 10 s doubling to 5 min;
//! reset after 10 min of good running.

use std::time::Duration;

use tokio::time::Instant;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Default, Clone)]
pub struct Backoff {
    next: Option<Duration>,
    until: Option<Instant>,
}

impl Backoff {
    /// Called when a run ends: schedules the next start; `ran` is how long the run lasted.
    pub fn failed(&mut self, ran: Duration, now: Instant) -> Duration {
        if ran >= RESET_AFTER {
            self.next = None;
        }
        // The first restart is immediate; then 10 s, doubling.
        let delay = self.next.unwrap_or(Duration::ZERO);
        self.next = Some((delay * 2).clamp(INITIAL, MAX));
        self.until = Some(now + delay);
        delay
    }

    /// Whether a start must still wait, and until when.
    pub fn waiting(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|u| *u > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_five_minutes_and_resets() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let delays: Vec<u64> = (0..7).map(|_| b.failed(Duration::from_secs(1), now).as_secs()).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300]);
        assert!(b.waiting(now).is_some());
        assert_eq!(b.failed(Duration::from_secs(700), now).as_secs(), 0);
    }
}
