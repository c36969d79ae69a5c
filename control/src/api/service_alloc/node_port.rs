//! NodePort allocation over `--service-node-port-range`.

use std::ops::RangeInclusive;

use super::bitmap::Bitmap;

/// Why a port could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("provided port is not in the valid range. The range of valid ports is {}-{}", .0.start(), .0.end())]
    NotInRange(RangeInclusive<u16>),
    #[error("provided port is already allocated")]
    Allocated,
    #[error("failed to allocate a nodePort: range is full")]
    Full,
}

/// Which ports of the range are taken.
#[derive(Debug)]
pub struct PortAllocator {
    range: RangeInclusive<u16>,
    taken: Bitmap,
}

impl PortAllocator {
    /// An allocator over `range` with nothing taken.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let len = u32::from(*range.end()).saturating_sub(u32::from(*range.start())).saturating_add(1);
        let len = if range.is_empty() { 0 } else { len };
        PortAllocator { range, taken: Bitmap::new(len) }
    }

    fn offset(&self, port: u16) -> Result<u32, PortError> {
        if self.range.contains(&port) {
            Ok(u32::from(port).saturating_sub(u32::from(*self.range.start())))
        } else {
            Err(PortError::NotInRange(self.range.clone()))
        }
    }

    /// Whether `port` is taken.
    pub fn is_allocated(&self, port: u16) -> bool {
        self.offset(port).is_ok_and(|o| self.taken.is_set(o))
    }

    /// Takes `port`.
    pub fn allocate(&mut self, port: u16) -> Result<(), PortError> {
        let off = self.offset(port)?;
        if self.taken.set(off) {
            Ok(())
        } else {
            Err(PortError::Allocated)
        }
    }

    /// Takes a free port, searching from a random point.
    pub fn allocate_next(&mut self) -> Result<u16, PortError> {
        use rand::Rng;
        let len = self.taken.len();
        let start = if len == 0 { 0 } else { rand::rng().random_range(0..len) };
        let off = self.taken.first_free_from(start, |_| false).ok_or(PortError::Full)?;
        self.taken.set(off);
        let port = u32::from(*self.range.start()).saturating_add(off);
        u16::try_from(port).map_err(|_| PortError::Full)
    }

    /// Frees `port` (nothing when outside the range or free).
    pub fn release(&mut self, port: u16) {
        if let Ok(off) = self.offset(port) {
            self.taken.clear(off);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_release_and_messages() {
        let mut a = PortAllocator::new(30000..=30002);
        let mut got: Vec<u16> = (0..3).map(|_| a.allocate_next().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![30000, 30001, 30002]);
        assert_eq!(a.allocate_next(), Err(PortError::Full));
        assert_eq!(a.allocate(30001).unwrap_err().to_string(), "provided port is already allocated");
        assert_eq!(
            a.allocate(80).unwrap_err().to_string(),
            "provided port is not in the valid range. The range of valid ports is 30000-30002"
        );
        a.release(30001);
        assert_eq!(a.allocate_next(), Ok(30001));
        a.release(65535);
    }
}
