//! Random streams keyed by what they are for, so that no draw depends on arrival order.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// A request (or question) identity: the SHA-256 of its canonical JSON.
pub type Digest32 = [u8; 32];

/// What a stream is drawn for; each purpose gets an independent stream, so changing how one
/// is used (say, the latency distribution) leaves the others (the faults) as they were.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// Which fault, if any, a request meets.
    Fault,
    /// How long a request waits before its reply.
    Latency,
    /// Whether a question is answered right, and how it is got wrong.
    Answer,
    /// The completion id.
    Id,
}

/// The stream for `purpose` of the request `key` seen for the `attempt`-th time, under `seed`.
pub fn rng(seed: u64, purpose: Purpose, key: &Digest32, attempt: u64) -> ChaCha8Rng {
    let mut hasher = Sha256::new();
    hasher.update(b"tandem cloud-sim\0");
    hasher.update([purpose as u8]);
    hasher.update(seed.to_le_bytes());
    hasher.update(key);
    hasher.update(attempt.to_le_bytes());
    ChaCha8Rng::from_seed(hasher.finalize().into())
}
