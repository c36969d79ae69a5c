//! A CronJob's schedule: parsing (with `croner`, in Kubernetes' standard 5-field form and the
//! `@hourly`-style descriptors), its time zone (IANA, through jiff), and the pure scheduling
//! decision of the CronJob controller: which scheduled time is due now, and when to look again.

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Kubernetes stops counting missed start times after this many (it then only starts the latest).
pub const MAX_MISSED: usize = 100;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

/// Why a schedule or time zone is refused; the text is what Kubernetes prints after
/// `Invalid value: "<value>": `.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("{0}")]
    Schedule(String),
    #[error("unknown time zone {0}")]
    TimeZone(String),
}

/// Parses a schedule as Kubernetes' `cron.ParseStandard` does (5 fields or a descriptor).
pub fn parse_cron(schedule: &str) -> Result<Cron, ScheduleError> {
    let trimmed = schedule.trim();
    if trimmed.contains("TZ=") {
        return Err(ScheduleError::Schedule("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into()));
    }
    if !trimmed.starts_with('@') {
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::Schedule(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            )));
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| ScheduleError::Schedule(e.to_string()))
}

/// The IANA time zone of `spec.timeZone` (UTC when unset, as the controller's local zone is here).
pub fn parse_time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) if n.is_empty() || n.trim() != n || n.eq_ignore_ascii_case("local") => {
            Err(ScheduleError::TimeZone(n.to_string()))
        }
        Some(n) => TimeZone::get(n).map_err(|_| ScheduleError::TimeZone(n.to_string())),
    }
}

impl Schedule {
    /// A schedule and its time zone.
    pub fn new(schedule: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        Ok(Self { cron: parse_cron(schedule)?, tz: parse_time_zone(time_zone)? })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron.find_next_occurrence::<Zoned>(&zoned, false).ok().map(|z| z.timestamp())
    }
}

/// What the controller should do now about a CronJob's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The most recent scheduled time in `(earliest, now]` not yet started, if any.
    pub scheduled: Option<Timestamp>,
    /// How many scheduled times were missed (more than [`MAX_MISSED`] is reported as such).
    pub missed: usize,
    /// When to look again: the next scheduled time after `now`.
    pub next: Option<Timestamp>,
}

/// The scheduling decision (Kubernetes' `mostRecentScheduleTime` and `nextScheduleTime`):
/// counting from the last schedule time (or the CronJob's creation), but no earlier than
/// `startingDeadlineSeconds` before `now`, the latest scheduled time up to `now`.
pub fn due(
    schedule: &Schedule,
    created: Timestamp,
    last_scheduled: Option<Timestamp>,
    starting_deadline_seconds: Option<i64>,
    now: Timestamp,
) -> Due {
    let mut earliest = last_scheduled.unwrap_or(created);
    if let Some(deadline) = starting_deadline_seconds {
        if let Ok(limit) = now.checked_sub(jiff::SignedDuration::from_secs(deadline.max(0))) {
            earliest = earliest.max(limit);
        }
    }
    let mut scheduled = None;
    let mut missed = 0usize;
    let mut cursor = earliest;
    while let Some(t) = schedule.next_after(cursor) {
        if t > now {
            break;
        }
        scheduled = Some(t);
        missed = missed.saturating_add(1);
        cursor = t;
        if missed > MAX_MISSED {
            // Too many to walk: jump to the latest one before now.
            scheduled = latest_before(schedule, now).or(scheduled);
            break;
        }
    }
    Due { scheduled, missed, next: schedule.next_after(now) }
}

/// The latest scheduled time at or before `now`.
fn latest_before(schedule: &Schedule, now: Timestamp) -> Option<Timestamp> {
    let zoned = now.to_zoned(schedule.tz.clone());
    schedule.cron.find_previous_occurrence::<Zoned>(&zoned, true).ok().map(|z| z.timestamp())
}

/// The name of the Job started for `scheduled`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// Whether a scheduled time is too late to start (`startingDeadlineSeconds` passed).
pub fn past_deadline(scheduled: Timestamp, starting_deadline_seconds: Option<i64>, now: Timestamp) -> bool {
    starting_deadline_seconds
        .is_some_and(|d| scheduled.checked_add(jiff::SignedDuration::from_secs(d.max(0))).is_ok_and(|end| end < now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn parses_like_kubernetes() {
        assert!(parse_cron("*/1 * * * *").is_ok());
        assert!(parse_cron("0 0 * * MON-FRI").is_ok());
        assert!(parse_cron("@hourly").is_ok());
        assert!(parse_cron("@daily").is_ok());
        assert_eq!(parse_cron("bad"), Err(ScheduleError::Schedule("expected exactly 5 fields, found 1: [bad]".into())));
        assert!(parse_cron("0 0 * * * *").is_err(), "no seconds field");
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("TZ=UTC 0 * * * *").is_err());
        assert!(parse_time_zone(Some("Europe/Berlin")).is_ok());
        assert_eq!(parse_time_zone(Some("Mars/Base")).err(), Some(ScheduleError::TimeZone("Mars/Base".into())));
        assert!(parse_time_zone(Some("")).is_err());
    }

    #[test]
    fn every_minute_is_due_on_the_minute() {
        let s = Schedule::new("*/1 * * * *", None).expect("schedule");
        let created = ts("2026-12-05T10:00:30Z");
        let d = due(&s, created, None, None, ts("2026-12-05T10:00:59Z"));
        assert_eq!(d.scheduled, None, "nothing due before the first minute");
        assert_eq!(d.next, Some(ts("2026-12-05T10:01:00Z")));
        let d = due(&s, created, None, None, ts("2026-12-05T10:01:02Z"));
        assert_eq!(d.scheduled, Some(ts("2026-12-05T10:01:00Z")));
        assert_eq!(d.next, Some(ts("2026-12-05T10:02:00Z")));
        assert_eq!(
            job_name("tick", ts("2026-12-05T10:01:00Z")),
            format!("tick-{}", ts("2026-12-05T10:01:00Z").as_second() / 60)
        );
        // Once started, the same time is not due again.
        let d = due(&s, created, Some(ts("2026-12-05T10:01:00Z")), None, ts("2026-12-05T10:01:30Z"));
        assert_eq!(d.scheduled, None);
    }

    #[test]
    fn missed_times_start_only_the_latest_and_the_deadline_bounds_them() {
        let s = Schedule::new("0 * * * *", None).expect("schedule");
        let created = ts("2026-12-05T00:30:00Z");
        let now = ts("2026-12-05T05:10:00Z");
        let d = due(&s, created, None, None, now);
        assert_eq!(d.scheduled, Some(ts("2026-12-05T05:00:00Z")));
        assert_eq!(d.missed, 5);
        // A deadline of 5 minutes: 05:00 is 10 minutes late.
        assert!(past_deadline(ts("2026-12-05T05:00:00Z"), Some(300), now));
        let d = due(&s, created, None, Some(300), now);
        assert_eq!(d.scheduled, None, "only times within the deadline are considered");
        assert!(!past_deadline(ts("2026-12-05T05:00:00Z"), Some(900), now));
        // Hundreds missed: still the latest.
        let d = due(&s, ts("2026-01-01T00:30:00Z"), None, None, now);
        assert_eq!(d.scheduled, Some(ts("2026-12-05T05:00:00Z")));
        assert!(d.missed > MAX_MISSED);
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let s = Schedule::new("0 9 * * *", Some("Europe/Berlin")).expect("schedule");
        // 09:00 in Berlin in December (UTC+1) is 08:00 UTC.
        assert_eq!(s.next_after(ts("2026-12-05T00:00:00Z")), Some(ts("2026-12-05T08:00:00Z")));
        let utc = Schedule::new("0 9 * * *", None).expect("schedule");
        assert_eq!(utc.next_after(ts("2026-12-05T00:00:00Z")), Some(ts("2026-12-05T09:00:00Z")));
    }
}
