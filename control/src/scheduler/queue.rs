//! The scheduling queue: pending pods in three places, as kube-scheduler keeps them.
//!
//! - **active**: ready to be tried, highest priority first, then oldest;
//! - **backoff**: failed recently, waiting 1 s doubling to 10 s per attempt before going active;
//! - **unschedulable**: no node fit; they wait for a cluster change that may help
//!   ([`SchedulingQueue::wake_all`]: a node added or changed, a pod deleted or finished), and at
//!   most [`UNSCHEDULABLE_MAX`] in any case.
//!
//! Owned by the scheduler's one task: no locks. Time is passed in, so it is tested without
//! sleeping.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pod_info::PodInfo;

/// First back-off after a failed attempt.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Longest stay in the unschedulable set without a wake-up.
pub const UNSCHEDULABLE_MAX: Duration = Duration::from_secs(300);

/// Where a queued pod is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the active heap.
    Active,
    /// Waiting for its back-off to pass.
    Backoff(Instant),
    /// Waiting for a cluster change (since when).
    Unschedulable(Instant),
    /// Handed out by [`SchedulingQueue::pop`]; the wake count when it was.
    InFlight(u64),
}

struct Queued {
    info: Arc<PodInfo>,
    priority: i32,
    attempts: u32,
    place: Place,
    /// Bumped whenever the pod is pushed on a heap, so stale heap entries are skipped.
    seq: u64,
}

#[derive(PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    created: String,
    seq: u64,
    uid: String,
}

impl Ord for ActiveEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority, then earlier creation, then earlier push first.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.created.cmp(&self.created))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, Queued>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Unschedulable pods by the time they are retried anyway.
    stale: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: HashSet<String>,
    seq: u64,
    wakes: u64,
}

/// The back-off after `attempts` failed attempts.
pub fn backoff_for(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    BACKOFF_INITIAL.checked_mul(1u32 << exp).map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pods queued anywhere (in flight included).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// True when no pod is queued.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Where the pod `uid` is.
    pub fn place(&self, uid: &str) -> Option<Place> {
        self.pods.get(uid).map(|q| q.place)
    }

    /// True when a pod is ready to be popped.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    fn push_active(&mut self, uid: &str) {
        self.unschedulable.remove(uid);
        self.seq += 1;
        let seq = self.seq;
        if let Some(q) = self.pods.get_mut(uid) {
            q.place = Place::Active;
            q.seq = seq;
            self.active.push(ActiveEntry {
                priority: q.priority,
                created: q.info.created.clone(),
                seq,
                uid: uid.to_string(),
            });
        }
    }

    fn push_backoff(&mut self, uid: &str, now: Instant) {
        self.unschedulable.remove(uid);
        self.seq += 1;
        let seq = self.seq;
        if let Some(q) = self.pods.get_mut(uid) {
            let until = now + backoff_for(q.attempts);
            q.place = Place::Backoff(until);
            q.seq = seq;
            self.backoff.push(Reverse((until, seq, uid.to_string())));
        }
    }

    /// Adds a new pending pod (active at once), or updates a queued one. `moved` says whether
    /// the update can change its fit (spec or labels changed): an unschedulable pod then goes
    /// active again.
    pub fn upsert(&mut self, info: Arc<PodInfo>, priority: i32, moved: bool) {
        let uid = info.uid.clone();
        match self.pods.get_mut(&uid) {
            Some(q) => {
                q.info = info;
                q.priority = priority;
                if moved && matches!(q.place, Place::Unschedulable(_)) {
                    self.push_active(&uid);
                }
            }
            None => {
                self.pods.insert(uid.clone(), Queued { info, priority, attempts: 0, place: Place::Active, seq: 0 });
                self.push_active(&uid);
            }
        }
    }

    /// Forgets a pod (deleted, bound, or no longer ours).
    pub fn remove(&mut self, uid: &str) {
        self.unschedulable.remove(uid);
        self.pods.remove(uid);
    }

    /// The next pod to try, if one is active; it stays queued, in flight, until
    /// [`done`](Self::done), [`unschedulable`](Self::unschedulable) or [`failed`](Self::failed).
    pub fn pop(&mut self) -> Option<Arc<PodInfo>> {
        while let Some(entry) = self.active.pop() {
            let Some(q) = self.pods.get_mut(&entry.uid) else { continue };
            if q.seq != entry.seq || q.place != Place::Active {
                continue;
            }
            q.place = Place::InFlight(self.wakes);
            return Some(Arc::clone(&q.info));
        }
        None
    }

    /// The pod was bound: it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.remove(uid);
    }

    /// No node fit: the pod waits for a wake-up, or backs off if the cluster changed while it
    /// was being tried.
    pub fn unschedulable(&mut self, uid: &str, now: Instant) {
        let wakes = self.wakes;
        let Some(q) = self.pods.get_mut(uid) else { return };
        q.attempts = q.attempts.saturating_add(1);
        if matches!(q.place, Place::InFlight(seen) if seen != wakes) {
            self.push_backoff(uid, now);
            return;
        }
        self.seq += 1;
        q.place = Place::Unschedulable(now);
        q.seq = self.seq;
        self.stale.push(Reverse((now + UNSCHEDULABLE_MAX, self.seq, uid.to_string())));
        self.unschedulable.insert(uid.to_string());
    }

    /// The attempt failed (the bind was refused): back off and retry.
    pub fn failed(&mut self, uid: &str, now: Instant) {
        let Some(q) = self.pods.get_mut(uid) else { return };
        q.attempts = q.attempts.saturating_add(1);
        self.push_backoff(uid, now);
    }

    /// A cluster change that may help: every unschedulable pod moves on (to back-off, or active
    /// if its back-off already passed).
    pub fn wake_all(&mut self, now: Instant) {
        self.wakes += 1;
        let waiting: Vec<String> = self.unschedulable.drain().collect();
        for uid in waiting {
            self.push_backoff(&uid, now);
        }
        self.flush(now);
    }

    /// Moves pods whose back-off passed to active, and pods unschedulable for longer than
    /// [`UNSCHEDULABLE_MAX`] to back-off.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((until, seq, uid))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            if self.pods.get(&uid).is_some_and(|q| q.seq == seq && matches!(q.place, Place::Backoff(_))) {
                self.push_active(&uid);
            }
        }
        while let Some(Reverse((until, seq, uid))) = self.stale.peek().cloned() {
            if until > now {
                break;
            }
            self.stale.pop();
            if self.pods.get(&uid).is_some_and(|q| q.seq == seq && matches!(q.place, Place::Unschedulable(_))) {
                self.push_active(&uid);
            }
        }
    }

    /// When [`flush`](Self::flush) next has something to do.
    pub fn next_timer(&self) -> Option<Instant> {
        let backoff = self.backoff.peek().map(|Reverse((t, _, _))| *t);
        let stale = self.stale.peek().map(|Reverse((t, _, _))| *t);
        match (backoff, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, created: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo { uid: uid.into(), key: format!("ns/{uid}"), created: created.into(), ..Default::default() })
    }

    fn drain(q: &mut SchedulingQueue) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(p) = q.pop() {
            out.push(p.uid.clone());
        }
        out
    }

    #[test]
    fn priority_first_then_age() {
        let mut q = SchedulingQueue::new();
        q.upsert(pod("young", "2026-01-02T00:00:00Z"), 0, false);
        q.upsert(pod("old", "2026-01-01T00:00:00Z"), 0, false);
        q.upsert(pod("vip", "2026-01-03T00:00:00Z"), 1000, false);
        assert_eq!(drain(&mut q), ["vip", "old", "young"]);
        assert_eq!(q.len(), 3, "popped pods stay queued while in flight");
    }

    #[test]
    fn unschedulable_waits_for_a_wake_then_backs_off() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.upsert(pod("a", "1"), 0, false);
        q.upsert(pod("b", "2"), 0, false);
        let a = q.pop().map(|p| p.uid.clone());
        assert_eq!(a.as_deref(), Some("a"));
        q.unschedulable("a", t0);
        assert_eq!(q.place("a"), Some(Place::Unschedulable(t0)));
        // An unsatisfiable pod never blocks the queue: b comes next.
        assert_eq!(drain(&mut q), ["b"]);
        q.flush(t0 + Duration::from_secs(30));
        assert!(q.pop().is_none(), "no wake, no retry before the five-minute flush");
        q.wake_all(t0);
        assert!(q.pop().is_none(), "backs off first");
        q.flush(t0 + BACKOFF_INITIAL);
        assert_eq!(drain(&mut q), ["a"]);
        q.flush(t0 + UNSCHEDULABLE_MAX);
    }

    #[test]
    fn a_wake_during_the_attempt_is_not_lost() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.upsert(pod("a", "1"), 0, false);
        assert!(q.pop().is_some());
        q.wake_all(t0);
        q.unschedulable("a", t0);
        assert!(matches!(q.place("a"), Some(Place::Backoff(_))));
    }

    #[test]
    fn stale_unschedulable_pods_are_retried() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.upsert(pod("a", "1"), 0, false);
        assert!(q.pop().is_some());
        q.unschedulable("a", t0);
        assert_eq!(q.next_timer(), Some(t0 + UNSCHEDULABLE_MAX));
        q.flush(t0 + UNSCHEDULABLE_MAX);
        assert_eq!(drain(&mut q), ["a"]);
    }

    #[test]
    fn an_update_that_changes_the_spec_retries_at_once() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.upsert(pod("a", "1"), 0, false);
        assert!(q.pop().is_some());
        q.unschedulable("a", t0);
        q.upsert(pod("a", "1"), 0, false);
        assert!(q.pop().is_none(), "a status update does not retry");
        q.upsert(pod("a", "1"), 0, true);
        assert_eq!(drain(&mut q), ["a"]);
    }

    #[test]
    fn failures_back_off_doubling_to_the_cap() {
        assert_eq!(backoff_for(1), BACKOFF_INITIAL);
        assert_eq!(backoff_for(2), BACKOFF_INITIAL * 2);
        assert_eq!(backoff_for(5), BACKOFF_MAX);
        assert_eq!(backoff_for(u32::MAX), BACKOFF_MAX);
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.upsert(pod("a", "1"), 0, false);
        assert!(q.pop().is_some());
        q.failed("a", t0);
        assert_eq!(q.next_timer(), Some(t0 + BACKOFF_INITIAL));
        q.flush(t0 + BACKOFF_INITIAL);
        assert!(q.pop().is_some());
        q.failed("a", t0);
        assert_eq!(q.next_timer(), Some(t0 + BACKOFF_INITIAL * 2));
        q.remove("a");
        q.flush(t0 + BACKOFF_MAX);
        assert!(q.pop().is_none());
    }
}
