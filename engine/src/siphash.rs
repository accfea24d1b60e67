//! SipHash-2-4 with a secret key: the hash of the node index, whose keys are guest-chosen paths.
//!
//! A hash table keyed by guest input must not let a guest pick keys that collide (a guest
//! that fills one bucket chain makes every lookup linear). SipHash is a keyed PRF built for
//! exactly this (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012); without
//! the 128-bit key, which the front end draws at start-up, colliding paths cannot be
//! computed. The function itself comes from the `siphasher` crate; this wrapper only fixes
//! the variant (2-4) and the keying, so that no caller can build an unkeyed hasher.

use core::hash::Hasher as _;

/// A streaming SipHash-2-4 state: `write` may be called with any split of the input.
#[derive(Clone, Debug)]
pub struct SipHasher(siphasher::sip::SipHasher24);

impl SipHasher {
    /// A state keyed with `key` (`k0`, `k1` as the paper names them).
    pub fn new(key: [u64; 2]) -> SipHasher {
        let [k0, k1] = key;
        SipHasher(siphasher::sip::SipHasher24::new_with_keys(k0, k1))
    }

    /// Absorbs `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    /// The 64-bit hash of everything written.
    pub fn finish(self) -> u64 {
        self.0.finish()
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
