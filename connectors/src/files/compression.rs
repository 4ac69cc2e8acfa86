//! `[sink] compression` and `compression_level` of Parquet output: the
//! codecs by name, each codec's levels, and what `explain` shows.

use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};

/// The compressions a Parquet sink accepts.
pub(super) const COMPRESSIONS: &str = "zstd, snappy, gzip, lz4, brotli, none";

/// The codec `[sink] compression` names, at its default level.
pub(super) fn parse_compression(name: &str) -> Option<Compression> {
    Some(match name {
        "zstd" => Compression::ZSTD(ZstdLevel::default()),
        "snappy" => Compression::SNAPPY,
        "gzip" => Compression::GZIP(GzipLevel::default()),
        "lz4" => Compression::LZ4_RAW,
        "brotli" => Compression::BROTLI(BrotliLevel::default()),
        "none" | "uncompressed" => Compression::UNCOMPRESSED,
        _ => return None,
    })
}

/// `compression` at `level`, or why it cannot be: each codec's range, and
/// no level for a codec without levels.
pub(super) fn with_level(compression: Compression, level: i64) -> Result<Compression, String> {
    let out_of_range = |codec: &str, range: &str| format!("is {level}; {codec} levels are {range}");
    match compression {
        Compression::ZSTD(_) => i32::try_from(level)
            .ok()
            .and_then(|level| ZstdLevel::try_new(level).ok())
            .map(Compression::ZSTD)
            .ok_or_else(|| out_of_range("zstd", "1 to 22")),
        Compression::GZIP(_) => u32::try_from(level)
            .ok()
            .and_then(|level| GzipLevel::try_new(level).ok())
            .map(Compression::GZIP)
            .ok_or_else(|| out_of_range("gzip", "0 to 9")),
        Compression::BROTLI(_) => u32::try_from(level)
            .ok()
            .and_then(|level| BrotliLevel::try_new(level).ok())
            .map(Compression::BROTLI)
            .ok_or_else(|| out_of_range("brotli", "0 to 11")),
        other => Err(format!(
            "is given, but compression \"{}\" has no levels; levels are for zstd, gzip and brotli",
            compression_name(other)
        )),
    }
}

/// The level `compression` writes at, for `explain`.
pub(super) fn level_of(compression: Compression) -> Option<i64> {
    match compression {
        Compression::ZSTD(level) => Some(level.compression_level().into()),
        Compression::GZIP(level) => Some(level.compression_level().into()),
        Compression::BROTLI(level) => Some(level.compression_level().into()),
        _ => None,
    }
}

/// The name `[sink] compression` gives `compression`.
pub(super) fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::ZSTD(_) => "zstd",
        Compression::SNAPPY => "snappy",
        Compression::GZIP(_) => "gzip",
        Compression::LZ4_RAW => "lz4",
        Compression::BROTLI(_) => "brotli",
        _ => "none",
    }
}
