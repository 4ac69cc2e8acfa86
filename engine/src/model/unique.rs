//! What tells attempts, and workers, apart.

/// 16 hex digits that differ between processes and calls: what tells
/// attempts, and workers, apart.
pub fn unique_suffix() -> String {
    format!("{:016x}", random_u64())
}

fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish()
}
