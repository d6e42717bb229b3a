//! The node's randomness: one [`Seed`], from which [`Core`](super::Core) derives every
//! random choice made in it and below it.

use std::fmt;

use rand::rngs::{OsRng, StdRng};
use rand::{RngCore, SeedableRng};

/// 256 bits from which a [`Core`](super::Core) derives all its randomness: its disco
/// key, disco nonces and ping TxIDs, WireGuard session indices and gotatun's retry
/// jitter, the netstack's TCP initial sequence numbers and ports, and the hashers of
/// its maps. Two runs with one seed (and the same inputs) make the same choices.
///
/// Two live nodes must never share a seed: they would have the same disco key, and the
/// nonces of the box they share would repeat. [`Seed::random`] is for real nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed([u8; 32]);

impl Seed {
    /// A fresh seed from the operating system: what a real node uses.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        OsRng.fill_bytes(&mut b);
        Self(b)
    }

    /// The seed with these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A seed expanded from a number, for simulations and tests. 64 bits are too few
    /// for a key that protects anything, so a real node uses [`Seed::random`].
    pub fn from_u64(n: u64) -> Self {
        let mut b = [0u8; 32];
        StdRng::seed_from_u64(n).fill_bytes(&mut b);
        Self(b)
    }

    /// The generator every sub-seed is drawn from, in a fixed order.
    pub(super) fn rng(&self) -> StdRng {
        StdRng::from_seed(self.0)
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The disco private key derives from it: never print it.
        f.write_str("Seed(..)")
    }
}
