//! What a guest uses, measured by the engine ([`Usage`]): the CPU time of the thread while it polls the
//! guest's future ([`Metered`]), and the bytes of its linear memories and tables (kept by the store's
//! limiter, `limits.rs`). A container's kubelet reads these for `/stats/summary`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// A guest's (or an HTTP server's requests') resource use, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Usage {
    cpu_nanos: AtomicU64,
    memory_bytes: AtomicU64,
}

impl Usage {
    /// CPU time spent running the guest (and the host calls it made while being polled), nanoseconds.
    pub fn cpu_nanos(&self) -> u64 {
        self.cpu_nanos.load(Ordering::Relaxed)
    }

    /// Bytes of the linear memories and tables of the guest's live instances.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    pub(super) fn add_cpu(&self, nanos: u64) {
        self.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(super) fn grow(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let _ = self.memory_bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| Some(m.saturating_add(bytes)));
    }

    pub(super) fn shrink(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let _ = self.memory_bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| Some(m.saturating_sub(bytes)));
    }
}

/// The CPU time this thread has used so far (`CLOCK_THREAD_CPUTIME_ID`), nanoseconds.
pub(super) fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// A future whose every poll's thread CPU time is added to a [`Usage`] (nothing is measured without one).
pub(super) struct Metered<'a, T> {
    inner: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
    usage: Option<Arc<Usage>>,
}

impl<'a, T> Metered<'a, T> {
    pub(super) fn new(inner: impl Future<Output = T> + Send + 'a, usage: Option<Arc<Usage>>) -> Self {
        Self { inner: Box::pin(inner), usage }
    }
}

impl<T> Future for Metered<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(usage) = self.usage.clone() else { return self.inner.as_mut().poll(cx) };
        let before = thread_cpu_nanos();
        let polled = self.inner.as_mut().poll(cx);
        usage.add_cpu(thread_cpu_nanos().saturating_sub(before));
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metered_futures_count_the_cpu_they_burn_and_memory_never_goes_negative() {
        let usage = Arc::new(Usage::default());
        // Spins until this thread has used 30 ms of CPU (however loaded the machine is).
        let busy = async {
            let start = thread_cpu_nanos();
            let mut x = 0u64;
            while thread_cpu_nanos().saturating_sub(start) < 30_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            x
        };
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(Metered::new(busy, Some(Arc::clone(&usage))));
        assert!(usage.cpu_nanos() >= 30_000_000, "cpu {}", usage.cpu_nanos());
        usage.grow(100);
        usage.shrink(300);
        assert_eq!(usage.memory_bytes(), 0);
    }
}
