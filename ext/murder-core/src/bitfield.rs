//! A set of piece indices, as BitTorrent's bitfield message lays it out
//! (piece 0 is the high bit of the first byte).

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    words: Vec<u64>,
    len: usize,
    count: usize,
}

impl Bitfield {
    pub fn new(len: usize) -> Self {
        Bitfield {
            words: vec![0; len.div_ceil(64)],
            len,
            count: 0,
        }
    }

    pub fn full(len: usize) -> Self {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Reads a bitfield message; `None` if its size is wrong or spare bits are set.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        let mut b = Bitfield::new(len);
        for (i, byte) in bytes.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    let index = i * 8 + bit;
                    if index >= len {
                        return None;
                    }
                    b.set(index);
                }
            }
        }
        Some(b)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len.div_ceil(8)];
        for i in self.iter_ones() {
            out[i / 8] |= 0x80 >> (i % 8);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn is_complete(&self) -> bool {
        self.count == self.len
    }

    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns whether it was newly set.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.words[i / 64] |= 1 << (i % 64);
        self.count += 1;
        true
    }

    pub fn clear(&mut self, i: usize) {
        if self.get(i) {
            self.words[i / 64] &= !(1 << (i % 64));
            self.count -= 1;
        }
    }

    /// Bits `64 * w ..` as one word (bit `i` of the word is bit `64 * w + i`);
    /// 0 past the end. For scans that test 64 bits at a time.
    pub fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }

    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        ones(self.words.iter().copied())
    }

    /// The pieces in `self` that `other` lacks.
    pub fn ones_not_in<'a>(&'a self, other: &'a Bitfield) -> impl Iterator<Item = usize> + 'a {
        ones(
            self.words
                .iter()
                .zip(&other.words)
                .map(|(mine, theirs)| mine & !theirs),
        )
    }

    /// Whether `self` has a piece that `other` lacks.
    pub fn has_any_missing_from(&self, other: &Bitfield) -> bool {
        self.words
            .iter()
            .zip(&other.words)
            .any(|(mine, theirs)| mine & !theirs != 0)
    }
}

/// The indices of the set bits of a run of 64-bit words.
fn ones(words: impl Iterator<Item = u64>) -> impl Iterator<Item = usize> {
    words.enumerate().flat_map(|(w, word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let tz = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(w * 64 + tz)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_wire_layout() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.to_bytes(), vec![0x80, 0x40]);
        assert_eq!(Bitfield::from_bytes(&[0x80, 0x40], 10), Some(b.clone()));
        assert_eq!(
            Bitfield::from_bytes(&[0x80, 0x41], 10),
            None,
            "spare bit set"
        );
        assert_eq!(Bitfield::from_bytes(&[0x80], 10), None, "too short");
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 9]);
        assert!(!b.set(9));
        assert_eq!(b.count(), 2);
        let full = Bitfield::full(10);
        assert!(full.has_any_missing_from(&b) && !b.has_any_missing_from(&full));
    }
}
