//! The resource metrics math, as metrics-server does it: a container's (or node's) CPU usage is the
//! growth of its cumulative CPU time between two readings over the time between them; memory is the
//! working set of the newer reading. Pure, so the edge cases are tested here.

use jiff::{SignedDuration, Timestamp};

/// One reading of a container or node from a kubelet's summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// When the kubelet read the CPU counter.
    pub at: Timestamp,
    /// Cumulative CPU time, nanoseconds.
    pub cpu_nanos: u64,
    /// When this run of the container started (a different start is a new counter).
    pub start: Option<Timestamp>,
    /// Working set, bytes.
    pub memory: u64,
}

/// Usage over a window, ending at `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nano_cores: u64,
    pub memory_bytes: u64,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

/// Usage between `prev` and `cur`: `None` for a first reading, a restarted container (other start or
/// a counter that went back) or readings not apart in time.
pub fn usage(prev: Option<&Point>, cur: &Point) -> Option<Usage> {
    let prev = prev?;
    if prev.start != cur.start {
        return None;
    }
    let window = cur.at.duration_since(prev.at);
    let nanos = window.as_nanos();
    if nanos <= 0 {
        return None;
    }
    let used = cur.cpu_nanos.checked_sub(prev.cpu_nanos)?;
    let rate = i128::from(used).checked_mul(1_000_000_000)?.checked_div(nanos)?;
    Some(Usage { cpu_nano_cores: u64::try_from(rate).ok()?, memory_bytes: cur.memory, timestamp: cur.at, window })
}

/// A window as Go prints a `metav1.Duration` (`1.5s`, `15s`, `1m0.25s`).
pub fn go_duration(d: SignedDuration) -> String {
    let total = d.as_nanos().max(0);
    let minutes = total / 60_000_000_000;
    let rest = total % 60_000_000_000;
    let (secs, frac) = (rest / 1_000_000_000, rest % 1_000_000_000);
    let mut seconds = secs.to_string();
    if frac > 0 {
        let digits = format!("{frac:09}");
        seconds.push('.');
        seconds.push_str(digits.trim_end_matches('0'));
    }
    if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else if total == 0 {
        "0s".into()
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(secs: i64, cpu: u64, start: i64) -> Point {
        Point {
            at: Timestamp::from_second(secs).expect("time"),
            cpu_nanos: cpu,
            start: Timestamp::from_second(start).ok(),
            memory: 4096,
        }
    }

    #[test]
    fn usage_needs_two_readings_of_one_counter() {
        // The first reading has nothing to compare with.
        assert_eq!(usage(None, &point(10, 5, 1)), None);
        let u = usage(Some(&point(10, 1_000_000_000, 1)), &point(12, 2_000_000_000, 1)).expect("usage");
        assert_eq!((u.cpu_nano_cores, u.memory_bytes), (500_000_000, 4096));
        assert_eq!(go_duration(u.window), "2s");
        // A counter reset (restarted container, same start recorded) and a new run are not rates.
        assert_eq!(usage(Some(&point(10, 9_000, 1)), &point(12, 100, 1)), None);
        assert_eq!(usage(Some(&point(10, 100, 1)), &point(12, 900, 11)), None);
        // Readings at the same time give no rate.
        assert_eq!(usage(Some(&point(10, 100, 1)), &point(10, 900, 1)), None);
        // An idle container uses zero.
        assert_eq!(usage(Some(&point(10, 100, 1)), &point(11, 100, 1)).map(|u| u.cpu_nano_cores), Some(0));
    }

    #[test]
    fn windows_print_as_go_durations() {
        assert_eq!(go_duration(SignedDuration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(SignedDuration::from_nanos(1_002_003_000)), "1.002003s");
        assert_eq!(go_duration(SignedDuration::from_secs(75)), "1m15s");
        assert_eq!(go_duration(SignedDuration::ZERO), "0s");
    }
}
