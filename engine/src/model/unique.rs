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

/// Who a worker is in the log: `host:pid:random`, unique per process.
pub fn owner_id() -> String {
    format!("{}:{}:{}", host_name(), std::process::id(), unique_suffix())
}

/// This machine's host name, as owner ids and commit records show it.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// This process's worker id, the same for all it runs: what commit
/// records and `sluice status` name it by.
pub fn process_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(owner_id)
}
