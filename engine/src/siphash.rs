//! SipHash-2-4 with a secret key: the hash of the node index, whose keys are guest-chosen paths.
//!
//! A hash table keyed by guest input must not let a guest pick keys that collide (a guest
//! that fills one bucket chain makes every lookup linear). SipHash is a keyed PRF built for
//! exactly this (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012); without
//! the 128-bit key, which the front end draws at start-up, colliding paths cannot be
//! computed. Written from the paper's description; checked against its test vectors.

/// A streaming SipHash-2-4 state: `write` may be called with any split of the input.
#[derive(Clone, Debug)]
pub struct SipHasher {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
    /// Bytes not yet absorbed (fewer than 8), little-endian in the low bits.
    tail: u64,
    tail_length: u32,
    /// Total input length (only its low byte is used, as the paper specifies).
    length: u64,
}

impl SipHasher {
    /// A state keyed with `key` (`k0`, `k1` as the paper names them).
    pub fn new(key: [u64; 2]) -> SipHasher {
        let [k0, k1] = key;
        SipHasher {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
            tail: 0,
            tail_length: 0,
            length: 0,
        }
    }

    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    fn absorb(&mut self, word: u64) {
        self.v3 ^= word;
        self.round();
        self.round();
        self.v0 ^= word;
    }

    /// Absorbs `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len() as u64);
        for byte in bytes {
            self.tail |= u64::from(*byte) << (8 * self.tail_length);
            self.tail_length += 1;
            if self.tail_length == 8 {
                let word = self.tail;
                self.absorb(word);
                self.tail = 0;
                self.tail_length = 0;
            }
        }
    }

    /// The 64-bit hash of everything written.
    pub fn finish(mut self) -> u64 {
        let last = self.tail | ((self.length & 0xff) << 56);
        self.absorb(last);
        self.v2 ^= 0xff;
        for _ in 0..4 {
            self.round();
        }
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// The paper's key: bytes 00 01 … 0f.
    const KEY: [u64; 2] = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];

    fn hash(bytes: &[u8]) -> u64 {
        let mut hasher = SipHasher::new(KEY);
        hasher.write(bytes);
        hasher.finish()
    }

    #[test]
    fn matches_the_papers_vectors() {
        // Appendix A: the 15-byte message 00 01 … 0e.
        let message: Vec<u8> = (0..15).collect();
        assert_eq!(hash(&message), 0xa129_ca61_49be_45e5);
        // The reference implementation's vectors for the empty and 8-byte messages.
        assert_eq!(hash(&[]), 0x726f_db47_dd0e_0e31);
        let eight: Vec<u8> = (0..8).collect();
        assert_eq!(hash(&eight), 0x93f5_f579_9a93_2462);
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_hash() {
        let message: Vec<u8> = (0..40).collect();
        let whole = hash(&message);
        for split in 0..message.len() {
            let (first, second) = message.split_at(split);
            let mut hasher = SipHasher::new(KEY);
            hasher.write(first);
            hasher.write(second);
            assert_eq!(hasher.finish(), whole, "split at {split}");
        }
    }

    #[test]
    fn the_key_changes_the_hash() {
        let mut other = SipHasher::new([1, 2]);
        other.write(b"/local/domain/1");
        assert_ne!(other.finish(), hash(b"/local/domain/1"));
    }
}
