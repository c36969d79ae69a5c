//! Per-store bounds: the memory cap ([`Limits`]) and the epoch callback that yields the guest to its
//! executor at every tick and throttles it to its CPU share ([`bound_cpu`]).

use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, UpdateDeadline};

/// How often the engine's epoch advances: the granularity of CPU bounds and of yielding.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most table elements a guest may have (a bound against table bombs).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// The memory cap of one store, counting all of its linear memories together.
#[derive(Debug, Default)]
pub(super) struct Limits {
    memory: Option<usize>,
    used: usize,
    /// Set when a growth was refused: a later trap is then reported as out of memory.
    pub(super) exceeded: bool,
}

impl Limits {
    pub(super) fn new(memory: Option<usize>) -> Self {
        Self { memory, used: 0, exceeded: false }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let used = self.used.saturating_add(desired.saturating_sub(current));
        let allowed = self.memory.is_none_or(|limit| used <= limit);
        if allowed {
            self.used = used;
        }
        self.exceeded |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Store data that carries [`Limits`].
pub(super) trait HasLimits: Send + 'static {
    fn limits(&mut self) -> &mut Limits;
}

/// Installs the memory limiter and the epoch callback on `store`. At each epoch tick the guest yields to
/// its executor, so a busy loop shares its thread with the other tasks of the runtime; with `cpu_millis`
/// the guest also sleeps after each slice so that run / (run + sleep) ~= cpu_millis / 1000.
///
/// The run of a slice is the wall time since the guest was last resumed, capped at one tick (a guest is
/// interrupted at least once per tick while it computes; time it spent waiting in host calls is not CPU).
pub(super) fn bound_cpu<T: HasLimits>(store: &mut Store<T>, cpu_millis: Option<u32>) {
    store.limiter(|data| data.limits());
    store.set_epoch_deadline(1);
    let share = cpu_millis.map(|m| m.clamp(1, 1000));
    let mut resumed = Instant::now();
    store.epoch_deadline_callback(move |_| match share {
        Some(share) if share < 1000 => {
            let ran = resumed.elapsed().min(EPOCH_TICK);
            let pause = ran * (1000 - share) / share;
            resumed = Instant::now() + pause;
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(pause))))
        }
        _ => Ok(UpdateDeadline::Yield(1)),
    });
}
