//! A de-duplicated work queue with per-key exponential back-off, like client-go's rate-limited
//! work queue: a key is held at most once while waiting, a key added while it is being processed
//! is processed again after [`WorkQueue::done`], never by two workers at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The first retry delay of a failing key.
pub const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay of a failing key.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

struct State<K> {
    queue: VecDeque<K>,
    /// Keys waiting to be processed (in `queue`, or re-added while processing).
    dirty: HashSet<K>,
    processing: HashSet<K>,
    /// Consecutive failures per key, for back-off.
    failures: HashMap<K, u32>,
    /// The earliest pending delayed add per key.
    waiting: HashMap<K, Instant>,
    shut_down: bool,
}

/// See the module documentation. Cheap to clone (an `Arc`).
pub struct WorkQueue<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    state: Mutex<State<K>>,
    ready: Notify,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        let state = State {
            queue: VecDeque::new(),
            dirty: HashSet::new(),
            processing: HashSet::new(),
            failures: HashMap::new(),
            waiting: HashMap::new(),
            shut_down: false,
        };
        Self { inner: Arc::new(Inner { state: Mutex::new(state), ready: Notify::new() }) }
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: K) {
        Inner::add(&self.inner, key);
    }

    /// Queues `key` after `delay` (an earlier pending delayed add of the same key wins).
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        {
            let mut st = self.inner.state.lock();
            if st.shut_down {
                return;
            }
            match st.waiting.get(&key) {
                Some(earlier) if *earlier <= at => return,
                _ => {
                    st.waiting.insert(key.clone(), at);
                }
            }
        }
        let weak: Weak<Inner<K>> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(inner) = weak.upgrade() {
                {
                    let mut st = inner.state.lock();
                    if st.waiting.get(&key) == Some(&at) {
                        st.waiting.remove(&key);
                    }
                }
                Inner::add(&inner, key);
            }
        });
    }

    /// Queues `key` after its back-off: [`BASE_DELAY`] doubled per consecutive failure, at most
    /// [`MAX_DELAY`]. Returns the delay.
    pub fn add_rate_limited(&self, key: K) -> Duration {
        let failures = {
            let mut st = self.inner.state.lock();
            let n = st.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = backoff(failures);
        self.add_after(key, delay);
        delay
    }

    /// Forgets the failures of `key` (after a success).
    pub fn forget(&self, key: &K) {
        self.inner.state.lock().failures.remove(key);
    }

    /// Consecutive failures recorded for `key`.
    pub fn failures(&self, key: &K) -> u32 {
        self.inner.state.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key and marks it processing; `None` once shut down. Call
    /// [`WorkQueue::done`] when finished with it.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.inner.state.lock();
                if let Some(key) = st.queue.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    if !st.queue.is_empty() {
                        self.inner.ready.notify_one();
                    }
                    return Some(key);
                }
                if st.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let mut st = self.inner.state.lock();
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.queue.push_back(key.clone());
            drop(st);
            self.inner.ready.notify_one();
        }
    }

    /// Keys waiting to be processed now (the queue depth).
    pub fn len(&self) -> usize {
        self.inner.state.lock().queue.len()
    }

    /// True when no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys: [`WorkQueue::next`] returns `None` once the queue is drained.
    pub fn shut_down(&self) {
        self.inner.state.lock().shut_down = true;
        self.inner.ready.notify_waiters();
    }
}

impl<K: Clone + Eq + Hash> Inner<K> {
    fn add(this: &Arc<Self>, key: K) {
        let mut st = this.state.lock();
        if st.shut_down || st.dirty.contains(&key) {
            return;
        }
        st.dirty.insert(key.clone());
        if !st.processing.contains(&key) {
            st.queue.push_back(key);
            drop(st);
            this.ready.notify_one();
        }
    }
}

/// The back-off after `failures` consecutive failures (1 -> [`BASE_DELAY`]).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(31);
    BASE_DELAY.checked_mul(1u32 << exp).map_or(MAX_DELAY, |d| d.min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_waits_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(q.next().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = WorkQueue::new();
        q.add("a");
        let key = q.next().await;
        assert_eq!(key, Some("a"));
        q.add("a");
        q.add("a");
        // Not handed to a second worker while the first holds it.
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, Some("a"));
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), BASE_DELAY);
        assert_eq!(backoff(2), BASE_DELAY * 2);
        assert_eq!(backoff(4), BASE_DELAY * 8);
        assert_eq!(backoff(40), MAX_DELAY);
        assert_eq!(backoff(u32::MAX), MAX_DELAY);
    }

    async fn wait_len(q: &WorkQueue<&'static str>, n: usize) {
        for _ in 0..200 {
            if q.len() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("queue length never became {n}");
    }

    #[tokio::test]
    async fn rate_limited_adds_wait_their_back_off() {
        let q = WorkQueue::new();
        assert_eq!(q.add_rate_limited("a"), BASE_DELAY);
        assert!(q.is_empty(), "added before its back-off");
        wait_len(&q, 1).await;
        let key = q.next().await;
        assert_eq!(key, Some("a"));
        q.done(&"a");
        assert_eq!(q.add_rate_limited("a"), BASE_DELAY * 2, "the second failure waits twice as long");
        assert_eq!(q.failures(&"a"), 2);
        wait_len(&q, 1).await;
        q.forget(&"a");
        assert_eq!(q.failures(&"a"), 0);
        assert_eq!(q.add_rate_limited("a"), BASE_DELAY, "a success resets the back-off");
    }

    #[tokio::test]
    async fn the_earliest_delayed_add_wins() {
        let q = WorkQueue::new();
        q.add_after("a", Duration::from_secs(600));
        q.add_after("a", Duration::from_millis(10));
        wait_len(&q, 1).await;
        assert_eq!(q.next().await, Some("a"));
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn shut_down_ends_next() {
        let q: WorkQueue<&str> = WorkQueue::new();
        q.shut_down();
        assert_eq!(q.next().await, None);
    }
}
