//! ClusterIP allocation over the service CIDR.

use std::net::Ipv4Addr;

use super::bitmap::Bitmap;

/// The most addresses tracked: a /8 (a 2 MiB bitmap); a larger CIDR only hands out its first /8.
const MAX_SLOTS: u64 = 1 << 24;

/// Why an address could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error("provided IP is not in the valid range. The range of valid IPs is {0}")]
    NotInRange(ipnet::Ipv4Net),
    #[error("provided IP is already allocated")]
    Allocated,
    #[error("failed to allocate a serviceIP: range is full")]
    Full,
}

/// Which addresses of a CIDR are taken. The network and broadcast addresses are never handed out;
/// the first usable address is only handed out on request (it is the `kubernetes` Service's).
#[derive(Debug)]
pub struct IpAllocator {
    cidr: ipnet::Ipv4Net,
    base: u32,
    taken: Bitmap,
}

impl IpAllocator {
    /// An allocator over `cidr` with nothing taken.
    pub fn new(cidr: ipnet::Ipv4Net) -> Self {
        let cidr = cidr.trunc();
        let size = 1u64.checked_shl(32u32.saturating_sub(u32::from(cidr.prefix_len()))).unwrap_or(1 << 32);
        let slots = u32::try_from(size.min(MAX_SLOTS)).unwrap_or(0);
        let mut taken = Bitmap::new(slots);
        if slots >= 4 {
            taken.set(0);
            taken.set(slots.saturating_sub(1));
        }
        IpAllocator { cidr, base: u32::from(cidr.network()), taken }
    }

    /// The CIDR addresses come from.
    pub fn cidr(&self) -> ipnet::Ipv4Net {
        self.cidr
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base.saturating_add(u32::from(self.taken.len() >= 4)))
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).checked_sub(self.base)?;
        (off < self.taken.len()).then_some(off)
    }

    /// Whether `ip` is one this allocator can hand out (in range, not network or broadcast).
    pub fn in_range(&self, ip: Ipv4Addr) -> bool {
        let len = self.taken.len();
        self.offset(ip).is_some_and(|o| len < 4 || (o != 0 && o != len.saturating_sub(1)))
    }

    /// Whether `ip` is taken.
    pub fn is_allocated(&self, ip: Ipv4Addr) -> bool {
        self.in_range(ip) && self.offset(ip).is_some_and(|o| self.taken.is_set(o))
    }

    /// Takes `ip`.
    pub fn allocate(&mut self, ip: Ipv4Addr) -> Result<(), IpError> {
        if !self.in_range(ip) {
            return Err(IpError::NotInRange(self.cidr));
        }
        let off = self.offset(ip).ok_or(IpError::NotInRange(self.cidr))?;
        if self.taken.set(off) {
            Ok(())
        } else {
            Err(IpError::Allocated)
        }
    }

    /// Takes a free address, searching from a random point; never the first usable one.
    pub fn allocate_next(&mut self) -> Result<Ipv4Addr, IpError> {
        use rand::Rng;
        let len = self.taken.len();
        let start = if len == 0 { 0 } else { rand::rng().random_range(0..len) };
        let reserved = u32::from(self.first()).wrapping_sub(self.base);
        let off = self.taken.first_free_from(start, |o| o == reserved && len > 2).ok_or(IpError::Full)?;
        self.taken.set(off);
        Ok(Ipv4Addr::from(self.base.saturating_add(off)))
    }

    /// Frees `ip` (nothing when it is outside the range or free).
    pub fn release(&mut self, ip: Ipv4Addr) {
        if self.in_range(ip) {
            if let Some(off) = self.offset(ip) {
                self.taken.clear(off);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(s: &str) -> ipnet::Ipv4Net {
        s.parse().expect("a CIDR")
    }

    #[test]
    fn exhaustion_release_and_reserved_first() {
        // A /29: 8 addresses, network and broadcast excluded, .1 only on request: 5 dynamic.
        let mut a = IpAllocator::new(net("10.9.0.0/29"));
        assert_eq!(a.first(), Ipv4Addr::new(10, 9, 0, 1));
        let mut got: Vec<Ipv4Addr> = (0..5).map(|_| a.allocate_next().unwrap()).collect();
        got.sort();
        assert_eq!(got, (2..=6).map(|i| Ipv4Addr::new(10, 9, 0, i)).collect::<Vec<_>>());
        assert_eq!(a.allocate_next(), Err(IpError::Full));
        a.allocate(Ipv4Addr::new(10, 9, 0, 1)).unwrap();
        assert_eq!(a.allocate(Ipv4Addr::new(10, 9, 0, 3)), Err(IpError::Allocated));
        a.release(Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(a.allocate_next(), Ok(Ipv4Addr::new(10, 9, 0, 3)));
    }

    #[test]
    fn range_checks() {
        let mut a = IpAllocator::new(net("10.43.0.0/16"));
        for bad in ["10.0.0.5", "10.43.0.0", "10.43.255.255", "10.44.0.1"] {
            let err = a.allocate(bad.parse().expect("an address")).unwrap_err();
            assert_eq!(
                err.to_string(),
                "provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16",
                "{bad}"
            );
        }
        a.allocate("10.43.255.254".parse().unwrap()).unwrap();
        assert!(a.is_allocated("10.43.255.254".parse().unwrap()));
        // Releasing outside the range is harmless.
        a.release("192.168.0.1".parse().unwrap());
    }

    #[test]
    fn huge_cidrs_are_capped() {
        let mut a = IpAllocator::new(net("0.0.0.0/0"));
        assert!(a.allocate_next().is_ok());
    }
}
