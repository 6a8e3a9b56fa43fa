//! Where downloaded models live, and the environment that steers downloads.
//!
//! - `LRP_HEATMAP_CACHE`: the cache folder; else the platform's cache folder
//!   (`$XDG_CACHE_HOME/lrp-heatmap` or `~/.cache/lrp-heatmap` on Linux,
//!   `~/Library/Caches/lrp-heatmap` on macOS, `%LOCALAPPDATA%\lrp-heatmap` on Windows).
//! - `LRP_HEATMAP_MIRROR`: base URL replacing the registry's download URLs.
//! - `LRP_HEATMAP_OFFLINE=1`: never touch the network.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Environment variable naming the cache folder.
pub const CACHE_ENV: &str = "LRP_HEATMAP_CACHE";
/// Environment variable with the base URL of a mirror of the registry's files.
pub const MIRROR_ENV: &str = "LRP_HEATMAP_MIRROR";
/// Environment variable that, set to 1 (or true, yes, on), forbids downloads.
pub const OFFLINE_ENV: &str = "LRP_HEATMAP_OFFLINE";

/// The value of `var` unless unset or blank (`models` also reads it to say
/// where the cache folder came from).
pub fn non_empty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// The platform's cache folder of this tool (without `LRP_HEATMAP_CACHE`):
/// [`dirs::cache_dir`] (an absolute `XDG_CACHE_HOME`, else `$HOME/.cache`,
/// on Linux) joined with `lrp-heatmap`. A relative result (a relative `HOME`)
/// counts as none.
pub fn platform_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir()
        .filter(|p| p.is_absolute())
        .map(|b| b.join("lrp-heatmap"))
}

/// The cache folder: `$LRP_HEATMAP_CACHE`, else [`platform_cache_dir`].
/// The folder is not created here.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = non_empty(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    match platform_cache_dir() {
        Some(dir) => Ok(dir),
        None => bail!("no cache folder: set {CACHE_ENV} (no home folder found)"),
    }
}

/// Whether `LRP_HEATMAP_OFFLINE` asks for no network (1, true, yes, on).
pub fn offline_from_env() -> bool {
    non_empty(OFFLINE_ENV).is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// `LRP_HEATMAP_MIRROR` without trailing slashes, if set.
pub fn mirror_from_env() -> Option<String> {
    non_empty(MIRROR_ENV).map(|m| m.trim().trim_end_matches('/').to_string())
}

/// `553437328 bytes, 527.8 MiB`.
pub fn describe_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{bytes} bytes, {v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_and_human() {
        assert_eq!(describe_size(12), "12 bytes");
        assert_eq!(describe_size(2048), "2048 bytes, 2.0 KiB");
        // 553437328 / 2^20 = 527.80
        assert_eq!(describe_size(553437328), "553437328 bytes, 527.8 MiB");
    }
}
