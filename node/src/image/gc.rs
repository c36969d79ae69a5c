//! Image garbage collection by disk use, as the kubelet does it (`--image-gc-high-threshold`,
//! `--image-gc-low-threshold`, `--image-minimum-gc-age`): once the filesystem holding the node's
//! images is fuller than the high mark, images no pod on the node uses are removed, least recently
//! used first, until the use is back under the low mark. An image younger than the minimum age
//! (since the node first had it) is kept. [`choose`] is the decision, a pure function.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// The thresholds (the kubelet's defaults: 85 %, 80 %, 2 minutes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Percent of the filesystem in use above which images are collected (100 disables it).
    pub high_percent: u8,
    /// Percent of the filesystem in use collection brings the use down to.
    pub low_percent: u8,
    /// How long the node must have had an image before it may be removed.
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self { high_percent: 85, low_percent: 80, min_age: Duration::from_secs(120) }
    }
}

impl GcPolicy {
    /// A policy from the flags' values; the low mark may not be above the high mark, nor either
    /// above 100.
    pub fn new(high_percent: u8, low_percent: u8, min_age: Duration) -> Result<Self, String> {
        if high_percent > 100 || low_percent > high_percent {
            return Err(format!(
                "--image-gc-low-threshold ({low_percent}) must not exceed --image-gc-high-threshold ({high_percent}), \
                 which must not exceed 100"
            ));
        }
        Ok(Self { high_percent, low_percent, min_age })
    }
}

/// A duration as Go writes it (`--image-minimum-gc-age=2m`): numbers with units `h`, `m`, `s`,
/// `ms`, one after the other (`1h30m`, `90s`), or `0`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (e.g. 2m, 90s, 1h30m)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, millis) = [("ms", 1), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        let part = n.checked_mul(millis).ok_or_else(bad)?;
        total = total.checked_add(Duration::from_millis(part)).ok_or_else(bad)?;
    }
    if text.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// The filesystem holding the images: its size and what is in use, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUse {
    pub capacity: u64,
    pub used: u64,
}

/// An image on the node, as collection sees it: one image however many references name it
/// (two tags of one manifest, as the kubelet counts images by ID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUse {
    /// The normalized references naming it (the store's keys), sorted.
    pub references: Vec<String>,
    /// Bytes its removal frees (its files, once).
    pub size: u64,
    /// When the node first had it (pulled, or found at start).
    pub first_seen: SystemTime,
    /// When a container last asked for it.
    pub last_used: SystemTime,
}

/// What to remove (references, in removal order; every reference of a chosen image) so that
/// `disk` falls under the low mark: nothing while it is at or under the high mark; never an image
/// one of whose references is in `in_use`, or younger than the minimum age; least recently used
/// first (then the longest known). It may not reach the mark when too little can go.
pub fn choose(
    images: &[ImageUse],
    in_use: &HashSet<String>,
    disk: DiskUse,
    policy: &GcPolicy,
    now: SystemTime,
) -> Vec<String> {
    let percent = |p: u8| u128::from(disk.capacity) * u128::from(p) / 100;
    if disk.capacity == 0 || policy.high_percent >= 100 || u128::from(disk.used) <= percent(policy.high_percent) {
        return Vec::new();
    }
    let mut to_free = u128::from(disk.used).saturating_sub(percent(policy.low_percent));
    let old_enough = |i: &ImageUse| now.duration_since(i.first_seen).is_ok_and(|age| age >= policy.min_age);
    let used = |i: &ImageUse| i.references.iter().any(|r| in_use.contains(r));
    let mut candidates: Vec<&ImageUse> = images.iter().filter(|i| !used(i) && old_enough(i)).collect();
    candidates
        .sort_by(|a, b| (a.last_used, a.first_seen, &a.references).cmp(&(b.last_used, b.first_seen, &b.references)));
    let mut chosen = Vec::new();
    for image in candidates {
        if to_free == 0 {
            break;
        }
        to_free = to_free.saturating_sub(u128::from(image.size));
        chosen.extend(image.references.iter().cloned());
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn image(reference: &str, size_gib: u64, seen_min_ago: u64, used_min_ago: u64, now: SystemTime) -> ImageUse {
        let ago = |m: u64| now - Duration::from_secs(m * 60);
        ImageUse {
            references: vec![reference.into()],
            size: size_gib * GIB,
            first_seen: ago(seen_min_ago),
            last_used: ago(used_min_ago),
        }
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "2", "m", "2x", "-1s", "1.5m", "99999999999999999999h", "18446744073709551615h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_goes_under_the_high_mark() {
        let now = SystemTime::now();
        let images = [image("a", 5, 60, 60, now)];
        let disk = DiskUse { capacity: 100 * GIB, used: 85 * GIB };
        assert!(choose(&images, &HashSet::new(), disk, &GcPolicy::default(), now).is_empty());
        let off = GcPolicy { high_percent: 100, ..GcPolicy::default() };
        let full = DiskUse { capacity: 100 * GIB, used: 100 * GIB };
        assert!(choose(&images, &HashSet::new(), full, &off, now).is_empty(), "100 % disables collection");
    }

    #[test]
    fn least_recently_used_unused_old_images_go_down_to_the_low_mark() {
        let now = SystemTime::now();
        let images = [
            image("recent", 4, 60, 1, now),
            image("oldest-use", 3, 60, 50, now),
            image("in-use", 10, 60, 59, now),
            image("young", 10, 1, 30, now),
            image("older-use", 2, 60, 40, now),
            image("never-needed", 4, 60, 5, now),
        ];
        let in_use = HashSet::from(["in-use".to_string()]);
        // 90 % used: 10 GiB to free to reach 80 %.
        let disk = DiskUse { capacity: 100 * GIB, used: 90 * GIB };
        let chosen = choose(&images, &in_use, disk, &GcPolicy::default(), now);
        assert_eq!(chosen, ["oldest-use", "older-use", "never-needed", "recent"]);
        // 87 %: 7 GiB; the two least recently used (5 GiB) are not enough, the third is taken.
        let disk = DiskUse { capacity: 100 * GIB, used: 87 * GIB };
        assert_eq!(
            choose(&images, &in_use, disk, &GcPolicy::default(), now),
            ["oldest-use", "older-use", "never-needed"]
        );
        // Everything that may go is not enough: it all goes, the rest stays.
        let disk = DiskUse { capacity: 100 * GIB, used: 99 * GIB };
        assert_eq!(choose(&images, &in_use, disk, &GcPolicy::default(), now).len(), 4);
    }

    #[test]
    fn an_image_with_two_references_counts_once_and_goes_whole() {
        let now = SystemTime::now();
        let mut tagged = image("app:1", 4, 60, 50, now);
        tagged.references.push("app:latest".into());
        let images = [tagged, image("other", 4, 60, 40, now)];
        // 84 %: 4 GiB to free. The two-tag image frees its 4 GiB once, and both tags go.
        let disk = DiskUse { capacity: 100 * GIB, used: 84 * GIB };
        let high = GcPolicy { high_percent: 83, ..GcPolicy::default() };
        assert_eq!(choose(&images, &HashSet::new(), disk, &high, now), ["app:1", "app:latest"]);
        // One tag in use keeps the image (and so its other tag).
        let in_use = HashSet::from(["app:latest".to_string()]);
        assert_eq!(choose(&images, &in_use, disk, &high, now), ["other"]);
    }

    #[test]
    fn a_policy_of_zero_takes_every_unused_image_and_bad_flags_are_refused() {
        let now = SystemTime::now();
        let images = [image("a", 1, 3, 3, now), image("b", 1, 3, 2, now), image("c", 1, 3, 1, now)];
        let zero = GcPolicy::new(0, 0, Duration::ZERO).expect("policy");
        let disk = DiskUse { capacity: 100 * GIB, used: 10 * GIB };
        let in_use = HashSet::from(["b".to_string()]);
        assert_eq!(choose(&images, &in_use, disk, &zero, now), ["a", "c"]);
        assert!(GcPolicy::new(80, 85, Duration::ZERO).is_err());
        assert!(GcPolicy::new(101, 80, Duration::ZERO).is_err());
        let empty = DiskUse { capacity: 0, used: 0 };
        assert!(choose(&images, &in_use, empty, &zero, now).is_empty());
    }
}
