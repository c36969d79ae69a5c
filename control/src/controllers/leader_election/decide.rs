//! Leader election's decisions as pure functions of the Lease and the local clock, with
//! client-go's semantics: another holder's lease is trusted for its `leaseDurationSeconds`
//! counted from when this server *saw* the record change (never from the `renewTime` written
//! by another machine's clock); a free (released) lease is taken at once; a leader that could
//! not renew for the renew deadline has lost.

use std::time::Duration;

use tokio::time::Instant;

/// The state of a Lease as this server observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `spec.holderIdentity`; `None` when empty or absent (released).
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds` of the record (the holder's promise).
    pub lease_duration: Duration,
    /// `spec.leaseTransitions`.
    pub transitions: i64,
    /// When this server first saw this version of the record.
    pub seen_at: Instant,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// Free or expired: take it over, counting one more transition.
    Acquire { transitions: i64 },
    /// Ours: renew it.
    Renew,
    /// Another's, still valid: look again at `until` (or when the record changes).
    Wait { until: Instant },
}

/// The step for candidate `me` given the lease it observed.
pub fn decide(me: &str, lease: Option<&Observed>, now: Instant) -> Step {
    let Some(lease) = lease else { return Step::Create };
    match lease.holder.as_deref() {
        Some(holder) if holder == me => Step::Renew,
        None => Step::Acquire { transitions: lease.transitions.saturating_add(1) },
        Some(_) => {
            let expiry = expiry(lease);
            if now >= expiry {
                Step::Acquire { transitions: lease.transitions.saturating_add(1) }
            } else {
                Step::Wait { until: expiry }
            }
        }
    }
}

/// When another holder's lease runs out, as seen from here (saturating far in the future).
fn expiry(lease: &Observed) -> Instant {
    lease
        .seen_at
        .checked_add(lease.lease_duration)
        .or_else(|| lease.seen_at.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(lease.seen_at)
}

/// Whether a leader whose last successful renewal was at `renewed` has lost at `now`.
pub fn lost(renewed: Instant, now: Instant, renew_deadline: Duration) -> bool {
    now.saturating_duration_since(renewed) >= renew_deadline
}

/// The timing of an election (kube's `--leader-elect-*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a holder's lease is valid without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often a leader renews.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// kube-controller-manager's and kube-scheduler's defaults.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// Checks the ordering client-go requires: the lease outlives the renew deadline, which
    /// leaves room for more than one renewal.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err("the leader election lease duration must be greater than its renew deadline".into());
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err("the leader election renew deadline must be greater than 1.2 times its retry period".into());
        }
        if self.retry_period.is_zero() {
            return Err("the leader election retry period must be positive".into());
        }
        Ok(())
    }

    /// `leaseDurationSeconds` as written into the Lease (at least 1).
    pub fn lease_seconds(&self) -> i64 {
        i64::try_from(self.lease_duration.as_secs()).unwrap_or(i64::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, seen_at: Instant) -> Observed {
        Observed {
            holder: holder.map(str::to_string),
            lease_duration: Duration::from_secs(15),
            transitions: 3,
            seen_at,
        }
    }

    #[test]
    fn no_lease_is_created_and_our_own_is_renewed() {
        let now = Instant::now();
        assert_eq!(decide("a", None, now), Step::Create);
        assert_eq!(decide("a", Some(&held_by(Some("a"), now)), now), Step::Renew);
    }

    #[test]
    fn another_holder_is_trusted_for_the_lease_duration_from_when_we_saw_it() {
        let seen = Instant::now();
        let lease = held_by(Some("b"), seen);
        let until = seen + Duration::from_secs(15);
        assert_eq!(decide("a", Some(&lease), seen), Step::Wait { until });
        assert_eq!(decide("a", Some(&lease), seen + Duration::from_secs(14)), Step::Wait { until });
        assert_eq!(decide("a", Some(&lease), until), Step::Acquire { transitions: 4 });
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let now = Instant::now();
        assert_eq!(decide("a", Some(&held_by(None, now)), now), Step::Acquire { transitions: 4 });
    }

    #[test]
    fn huge_durations_and_transition_counts_saturate() {
        let now = Instant::now();
        let lease =
            Observed { holder: Some("b".into()), lease_duration: Duration::MAX, transitions: i64::MAX, seen_at: now };
        assert!(matches!(decide("a", Some(&lease), now), Step::Wait { until } if until > now));
        let released = Observed { holder: None, ..lease };
        assert_eq!(decide("a", Some(&released), now), Step::Acquire { transitions: i64::MAX });
    }

    #[test]
    fn a_leader_loses_after_the_renew_deadline_without_renewal() {
        let t = Instant::now();
        let deadline = Duration::from_secs(10);
        assert!(!lost(t, t + Duration::from_secs(9), deadline));
        assert!(lost(t, t + deadline, deadline));
        assert!(!lost(t + Duration::from_secs(1), t, deadline), "a clock read before the renewal");
    }

    #[test]
    fn timings_are_checked_as_client_go_does() {
        assert_eq!(Timing::default().validate(), Ok(()));
        let secs = Duration::from_secs;
        let t = |l, r, p| Timing { lease_duration: secs(l), renew_deadline: secs(r), retry_period: secs(p) };
        assert!(t(10, 10, 2).validate().is_err());
        assert!(t(15, 2, 2).validate().is_err());
        assert!(t(4, 3, 1).validate().is_ok());
        assert!(Timing { retry_period: Duration::ZERO, ..Timing::default() }.validate().is_err());
        assert_eq!(t(0, 0, 0).lease_seconds(), 1);
    }
}
