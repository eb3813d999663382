//! In-process hashes of alb's own values: the identities and digests the caches keep instead of the strings they
//! stand for (at 10,000 objects). Deterministic within a build, never persisted or sent, and no defence against
//! crafted collisions.

use std::hash::{BuildHasher, Hash};

pub fn hash_of<T: Hash>(v: T) -> u64 {
    foldhash::fast::FixedState::default().hash_one(v)
}
