//! A fixed-size bitmap of taken slots, the storage behind both allocators.

/// `len` slots, each free or taken.
#[derive(Clone, Debug)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u32,
    used: u32,
}

impl Bitmap {
    /// `len` free slots.
    pub fn new(len: u32) -> Self {
        let words = usize::try_from(len.div_ceil(64)).unwrap_or(0);
        Bitmap { words: vec![0; words], len, used: 0 }
    }

    /// How many slots there are.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether there are no slots at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many slots are taken.
    pub fn used(&self) -> u32 {
        self.used
    }

    fn word_bit(i: u32) -> (usize, u64) {
        (usize::try_from(i / 64).unwrap_or(usize::MAX), 1u64 << (i % 64))
    }

    /// Whether slot `i` is taken (slots past the end count as taken).
    pub fn is_set(&self, i: u32) -> bool {
        let (w, bit) = Self::word_bit(i);
        i >= self.len || self.words.get(w).is_none_or(|word| word & bit != 0)
    }

    /// Takes slot `i`; false if it was taken already or is past the end.
    pub fn set(&mut self, i: u32) -> bool {
        if self.is_set(i) {
            return false;
        }
        let (w, bit) = Self::word_bit(i);
        if let Some(word) = self.words.get_mut(w) {
            *word |= bit;
            self.used = self.used.saturating_add(1);
            return true;
        }
        false
    }

    /// Frees slot `i`; false if it was free.
    pub fn clear(&mut self, i: u32) -> bool {
        if i >= self.len || !self.is_set(i) {
            return false;
        }
        let (w, bit) = Self::word_bit(i);
        if let Some(word) = self.words.get_mut(w) {
            *word &= !bit;
            self.used = self.used.saturating_sub(1);
            return true;
        }
        false
    }

    /// The first free slot at or after `start`, wrapping around, that `skip` does not refuse.
    pub fn first_free_from(&self, start: u32, skip: impl Fn(u32) -> bool) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let start = start % self.len;
        let scan = |from: u32, to: u32| -> Option<u32> {
            let mut i = from;
            while i < to {
                let (w, _) = Self::word_bit(i);
                if i.is_multiple_of(64) && self.words.get(w) == Some(&u64::MAX) {
                    i = i.saturating_add(64);
                    continue;
                }
                if !self.is_set(i) && !skip(i) {
                    return Some(i);
                }
                i = i.saturating_add(1);
            }
            None
        };
        scan(start, self.len).or_else(|| scan(0, start))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_and_search_wrap() {
        let mut b = Bitmap::new(130);
        assert!(b.set(0) && !b.set(0) && !b.set(130));
        for i in 1..128 {
            assert!(b.set(i));
        }
        assert_eq!(b.first_free_from(5, |_| false), Some(128));
        assert_eq!(b.first_free_from(5, |i| i == 128), Some(129));
        assert!(b.set(128) && b.set(129));
        assert_eq!(b.first_free_from(0, |_| false), None);
        assert!(b.clear(3) && !b.clear(3));
        assert_eq!(b.first_free_from(100, |_| false), Some(3));
        assert_eq!(b.used(), 129);
    }
}
