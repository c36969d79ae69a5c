//! The scheduling queue: pending pods in three places, as kube-scheduler keeps them.
//!
//! - **active**: ready to be tried, highest priority first, then in the order they were queued;
//! - **backoff**: failed recently, waiting 1 s doubling to 10 s per attempt before going active;
//! - **unschedulable**: no node fit; they wait for a cluster change that may help
//!   ([`SchedulingQueue::wake_all`]: a node added or changed, a pod deleted or finished), and at
//!   most [`UNSCHEDULABLE_MAX`] in any case.
//!
//! An unschedulable pod keeps no [`PodInfo`], only its uid, key and place (about 300 bytes): a
//! cluster with 100,000 pods and no room for them would otherwise hold every pod parsed twice,
//! once in the informer and once here. [`SchedulingQueue::pop`] hands it out without one, and the
//! scheduler reads the pod again from the informer, as it is now.
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

/// A pod as [`SchedulingQueue::pop`] hands it out.
#[derive(Clone, Debug)]
pub struct Popped {
    /// `metadata.uid`.
    pub uid: Arc<str>,
    /// `namespace/name`.
    pub key: Arc<str>,
    /// The pod as last queued; `None` when it waited as unschedulable (read it again).
    pub info: Option<Arc<PodInfo>>,
}

struct Queued {
    key: Arc<str>,
    /// Dropped while the pod waits as unschedulable.
    info: Option<Arc<PodInfo>>,
    priority: i32,
    /// When the pod was first queued (the queue's own counter): the order among equal priorities.
    queued: u64,
    attempts: u32,
    place: Place,
    /// Bumped whenever the pod is pushed on a heap, so stale heap entries are skipped.
    seq: u64,
    /// A fingerprint of the last FailedScheduling message reported for it.
    reported: Option<u64>,
}

#[derive(PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    queued: u64,
    seq: u64,
    uid: Arc<str>,
}

impl Ord for ActiveEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority, then queued earlier, then pushed earlier first.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.queued.cmp(&self.queued))
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
    pods: HashMap<Arc<str>, Queued>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    /// Unschedulable pods by the time they are retried anyway.
    stale: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    unschedulable: HashSet<Arc<str>>,
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

    /// The queue's own handle of `uid` (one allocation shared by the map, heaps and set).
    fn handle(&self, uid: &str) -> Option<Arc<str>> {
        self.pods.get_key_value(uid).map(|(k, _)| Arc::clone(k))
    }

    fn push_active(&mut self, uid: &str) {
        let Some(uid) = self.handle(uid) else { return };
        self.unschedulable.remove(&uid);
        self.seq += 1;
        let seq = self.seq;
        if let Some(q) = self.pods.get_mut(&uid) {
            q.place = Place::Active;
            q.seq = seq;
            self.active.push(ActiveEntry { priority: q.priority, queued: q.queued, seq, uid });
        }
    }

    fn push_backoff(&mut self, uid: &str, now: Instant) {
        let Some(uid) = self.handle(uid) else { return };
        self.unschedulable.remove(&uid);
        self.seq += 1;
        let seq = self.seq;
        if let Some(q) = self.pods.get_mut(&uid) {
            let until = now + backoff_for(q.attempts);
            q.place = Place::Backoff(until);
            q.seq = seq;
            self.backoff.push(Reverse((until, seq, uid)));
        }
    }

    /// Adds a new pending pod (active at once), or updates a queued one. `moved` says whether
    /// the update can change its fit (spec or labels changed): an unschedulable pod then goes
    /// active again.
    pub fn upsert(&mut self, info: Arc<PodInfo>, priority: i32, moved: bool) {
        let uid = info.uid.as_str();
        if let Some(q) = self.pods.get_mut(uid) {
            q.priority = priority;
            let parked = matches!(q.place, Place::Unschedulable(_));
            if parked && moved {
                q.info = Some(info.clone());
                self.push_active(&info.uid);
            } else if !parked {
                q.info = Some(info);
            }
            return;
        }
        let uid: Arc<str> = Arc::from(uid);
        let key: Arc<str> = Arc::from(info.key.as_str());
        self.seq += 1;
        let queued = self.seq;
        let entry = Queued {
            key,
            info: Some(info),
            priority,
            queued,
            attempts: 0,
            place: Place::Active,
            seq: 0,
            reported: None,
        };
        self.pods.insert(Arc::clone(&uid), entry);
        self.push_active(&uid);
    }

    /// Forgets a pod (deleted, bound, or no longer ours).
    pub fn remove(&mut self, uid: &str) {
        self.unschedulable.remove(uid);
        self.pods.remove(uid);
    }

    /// The next pod to try, if one is active; it stays queued, in flight, until
    /// [`done`](Self::done), [`unschedulable`](Self::unschedulable) or [`failed`](Self::failed).
    pub fn pop(&mut self) -> Option<Popped> {
        while let Some(entry) = self.active.pop() {
            let Some(q) = self.pods.get_mut(&entry.uid) else { continue };
            if q.seq != entry.seq || q.place != Place::Active {
                continue;
            }
            q.place = Place::InFlight(self.wakes);
            return Some(Popped { uid: entry.uid, key: Arc::clone(&q.key), info: q.info.clone() });
        }
        None
    }

    /// The pod was bound: it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.remove(uid);
    }

    /// No node fit: the pod waits for a wake-up (keeping no [`PodInfo`]), or backs off if the
    /// cluster changed while it was being tried.
    pub fn unschedulable(&mut self, uid: &str, now: Instant) {
        let wakes = self.wakes;
        let Some(handle) = self.handle(uid) else { return };
        let Some(q) = self.pods.get_mut(uid) else { return };
        q.attempts = q.attempts.saturating_add(1);
        if matches!(q.place, Place::InFlight(seen) if seen != wakes) {
            self.push_backoff(uid, now);
            return;
        }
        self.seq += 1;
        q.place = Place::Unschedulable(now);
        q.seq = self.seq;
        q.info = None;
        self.stale.push(Reverse((now + UNSCHEDULABLE_MAX, self.seq, Arc::clone(&handle))));
        self.unschedulable.insert(handle);
    }

    /// The attempt failed (the bind was refused): back off and retry.
    pub fn failed(&mut self, uid: &str, now: Instant) {
        let Some(q) = self.pods.get_mut(uid) else { return };
        q.attempts = q.attempts.saturating_add(1);
        self.push_backoff(uid, now);
    }

    /// Records that `message` is being reported as the pod's FailedScheduling reason; false when
    /// it is the reason last reported for it (one event per new reason), or the pod is not queued.
    pub fn report(&mut self, uid: &str, message: &str) -> bool {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let fingerprint = BuildHasherDefault::<DefaultHasher>::default().hash_one(message);
        match self.pods.get_mut(uid) {
            Some(q) if q.reported != Some(fingerprint) => {
                q.reported = Some(fingerprint);
                true
            }
            _ => false,
        }
    }

    /// A cluster change that may help: every unschedulable pod moves on (to back-off, or active
    /// if its back-off already passed).
    pub fn wake_all(&mut self, now: Instant) {
        self.wakes += 1;
        let waiting: Vec<Arc<str>> = self.unschedulable.drain().collect();
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

    fn pod(uid: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo { uid: uid.into(), key: format!("ns/{uid}"), ..Default::default() })
    }

    fn drain(q: &mut SchedulingQueue) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(p) = q.pop() {
            out.push(p.uid.to_string());
        }
        out
    }

    #[test]
    fn priority_first_then_queue_order() {
        let mut q = SchedulingQueue::new();
        q.upsert(pod("first"), 0, false);
        q.upsert(pod("second"), 0, false);
        q.upsert(pod("vip"), 1000, false);
        // An update does not move a pod back in the line.
        q.upsert(pod("first"), 0, true);
        assert_eq!(drain(&mut q), ["vip", "first", "second"]);
        assert_eq!(q.len(), 3, "popped pods stay queued while in flight");
    }

    #[test]
    fn unschedulable_waits_for_a_wake_then_backs_off() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.upsert(pod("a"), 0, false);
        q.upsert(pod("b"), 0, false);
        let a = q.pop().map(|p| p.uid.to_string());
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
        q.upsert(pod("a"), 0, false);
        assert!(q.pop().is_some());
        q.wake_all(t0);
        q.unschedulable("a", t0);
        assert!(matches!(q.place("a"), Some(Place::Backoff(_))));
    }

    #[test]
    fn stale_unschedulable_pods_are_retried() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.upsert(pod("a"), 0, false);
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
        q.upsert(pod("a"), 0, false);
        assert!(q.pop().is_some());
        q.unschedulable("a", t0);
        q.upsert(pod("a"), 0, false);
        assert!(q.pop().is_none(), "a status update does not retry");
        q.upsert(pod("a"), 0, true);
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
        q.upsert(pod("a"), 0, false);
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

    #[test]
    fn a_parked_pod_keeps_no_info_until_its_spec_changes() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.upsert(pod("a"), 0, false);
        let popped = q.pop();
        assert!(popped.as_ref().is_some_and(|p| p.info.is_some() && &*p.key == "ns/a"));
        q.unschedulable("a", t0);
        q.upsert(pod("a"), 0, false);
        q.wake_all(t0);
        q.flush(t0 + BACKOFF_INITIAL);
        let popped = q.pop();
        assert!(popped.as_ref().is_some_and(|p| p.info.is_none() && &*p.key == "ns/a"), "read again by the caller");
        q.unschedulable("a", t0);
        q.upsert(pod("a"), 0, true);
        assert!(q.pop().is_some_and(|p| p.info.is_some()), "a changed spec is queued with its info");
    }

    #[test]
    fn each_reason_is_reported_once_until_it_changes() {
        let mut q = SchedulingQueue::new();
        assert!(!q.report("a", "0/1 nodes are available"), "not queued");
        q.upsert(pod("a"), 0, false);
        assert!(q.report("a", "0/1 nodes are available"));
        assert!(!q.report("a", "0/1 nodes are available"));
        assert!(q.report("a", "0/2 nodes are available"));
        q.remove("a");
        q.upsert(pod("a"), 0, false);
        assert!(q.report("a", "0/2 nodes are available"), "a pod queued again reports again");
    }
}
