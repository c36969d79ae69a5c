//! Per-store bounds: the memory cap ([`Limits`]) and the epoch callback that yields the guest to its
//! executor at every tick and throttles it to its CPU share ([`bound_cpu`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, UpdateDeadline};

use super::usage::Usage;

/// How often the engine's epoch advances: the granularity of CPU bounds and of yielding.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most table elements a guest may have (a bound against table bombs).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// What one table element costs the host (a pointer), for the memory a guest is reported to use.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// The memory cap of one store, counting all of its linear memories together; the store's memories and
/// tables are also counted into its [`Usage`] (and taken out again when the store is dropped).
#[derive(Debug, Default)]
pub(super) struct Limits {
    memory: Option<usize>,
    used: usize,
    /// Bytes of the store's tables.
    tables: usize,
    usage: Option<Arc<Usage>>,
    /// Set when a growth was refused: a later trap is then reported as out of memory.
    pub(super) exceeded: bool,
}

impl Limits {
    pub(super) fn new(memory: Option<usize>, usage: Option<Arc<Usage>>) -> Self {
        Self { memory, used: 0, tables: 0, usage, exceeded: false }
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        if let Some(usage) = &self.usage {
            usage.shrink(self.used.saturating_add(self.tables));
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let used = self.used.saturating_add(desired.saturating_sub(current));
        let allowed = self.memory.is_none_or(|limit| used <= limit);
        if allowed {
            if let Some(usage) = &self.usage {
                usage.grow(used.saturating_sub(self.used));
            }
            self.used = used;
        }
        self.exceeded |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= MAX_TABLE_ELEMENTS;
        if allowed {
            let grown = desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES);
            self.tables = self.tables.saturating_add(grown);
            if let Some(usage) = &self.usage {
                usage.grow(grown);
            }
        }
        Ok(allowed)
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
