//! Downloading a file into the cache once, verified.
//!
//! A download goes to `<cache>/<file>.part`, resuming with an HTTP `Range`
//! request where an earlier attempt stopped, and is moved to `<cache>/<file>`
//! (an atomic rename) only after its size and SHA-256 match. A file that does
//! not match is deleted. `<cache>/<file>.lock`, held while downloading, keeps
//! two processes from downloading the same file at once; it is removed when
//! done, so the cache holds only verified files (and the `.part` of an
//! interrupted download, which the next run resumes).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::app::cache::{self, describe_size, MIRROR_ENV};

/// A file to download: where from and what it must be.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// What the user calls it ("vgg16", or the file name).
    pub name: String,
    /// File name in the cache.
    pub file: String,
    /// URLs, tried in order.
    pub urls: Vec<String>,
    /// Expected size in bytes, if known.
    pub size: Option<u64>,
    /// Expected SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// The command that fetches it, quoted in messages.
    pub fetch_command: String,
}

impl Target {
    /// A download given by URL and checksum (`lrp-heatmap fetch URL --sha256 HEX`);
    /// the file name is `name`, else the last segment of the URL's path.
    pub fn from_url(
        url: &str,
        sha256: &str,
        name: Option<&str>,
        size: Option<u64>,
    ) -> Result<Self> {
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!("'{url}' is not a URL");
        };
        if !matches!(scheme, "http" | "https") {
            bail!("'{url}': only http and https URLs can be fetched");
        }
        let sha256 = parse_sha256(sha256)?;
        let file = match name {
            Some(n) => n.to_string(),
            None => {
                let path = rest.split(['?', '#']).next().unwrap_or("");
                let last = path.split_once('/').map_or("", |(_, p)| p);
                last.rsplit('/').next().unwrap_or("").to_string()
            }
        };
        check_file_name(&file).with_context(|| {
            format!("cannot name the cached file after '{url}': pass --name NAME")
        })?;
        let fetch_command = format!("lrp-heatmap fetch {url} --sha256 {sha256} --name {file}");
        Ok(Target {
            name: file.clone(),
            file,
            urls: vec![url.to_string()],
            size,
            sha256,
            fetch_command,
        })
    }

    /// Size and checksum for messages: `553437328 bytes, 527.8 MiB, sha256 f208...`.
    pub fn describe(&self) -> String {
        match self.size {
            Some(s) => format!("{}, sha256 {}", describe_size(s), self.sha256),
            None => format!("size unknown, sha256 {}", self.sha256),
        }
    }
}

/// Checks a SHA-256 given as 64 hex digits; returns it in lowercase.
pub fn parse_sha256(hex: &str) -> Result<String> {
    let h = hex.trim();
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("'{hex}' is not a SHA-256 (64 hexadecimal digits)");
    }
    Ok(h.to_ascii_lowercase())
}

/// Checks that `name` can be a file name directly in the cache folder.
pub fn check_file_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', ':', '\0'])
        || name.ends_with(".part")
        || name.ends_with(".lock")
    {
        bail!("'{name}' cannot be a file name in the cache (plain name, no folders, not hidden, not .part/.lock)");
    }
    Ok(())
}

/// How downloads run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The cache folder.
    pub cache_dir: PathBuf,
    /// `Some(why)` forbids any network access (`--offline`, `LRP_HEATMAP_OFFLINE=1`).
    pub offline: Option<String>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Attempts per URL; a lost connection is resumed where it stopped.
    pub attempts: u32,
    /// Timeout to connect to a server.
    pub connect_timeout: Duration,
    /// Timeout for the response to start and for each read of the body.
    pub read_timeout: Duration,
}

impl Options {
    /// Options from the environment (`LRP_HEATMAP_CACHE`, `LRP_HEATMAP_OFFLINE`)
    /// and the `--offline` flag.
    pub fn from_env(offline_flag: bool, progress: bool) -> Result<Self> {
        let offline = if offline_flag {
            Some("--offline".to_string())
        } else if cache::offline_from_env() {
            Some(format!("{}=1", cache::OFFLINE_ENV))
        } else {
            None
        };
        Ok(Options {
            cache_dir: cache::cache_dir()?,
            offline,
            progress,
            attempts: 3,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        })
    }
}

/// What the cache holds of a target (without reading it through).
#[derive(Clone, Debug, PartialEq)]
pub enum CacheState {
    /// The file is there with the right size.
    Cached(PathBuf),
    /// An interrupted download of so many bytes waits to be resumed.
    Partial(u64),
    /// A file of the wrong size is there (it is downloaded again on use).
    Damaged(u64),
    /// Nothing.
    Missing,
}

/// Where `target` lives in `cache_dir`.
pub fn cached_path(target: &Target, cache_dir: &Path) -> PathBuf {
    cache_dir.join(&target.file)
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn file_len(p: &Path) -> Option<u64> {
    fs::metadata(p)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// The cache state of `target`, from file sizes only.
pub fn cache_state(target: &Target, cache_dir: &Path) -> CacheState {
    let dest = cached_path(target, cache_dir);
    match (file_len(&dest), target.size) {
        (Some(n), Some(s)) if n != s => CacheState::Damaged(n),
        (Some(_), _) => CacheState::Cached(dest),
        (None, _) => match file_len(&part_path(&dest)) {
            Some(n) => CacheState::Partial(n),
            None => CacheState::Missing,
        },
    }
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    hash_prefix(&mut f, u64::MAX, &mut h)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&h.finalize()))
}

/// Feeds up to `limit` bytes of `r` into `h`.
fn hash_prefix(r: &mut impl Read, limit: u64, h: &mut Sha256) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut r = r.take(limit);
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Is the cached file good? `Ok(None)`: absent; `Ok(Some(Err(why)))`: present but bad.
fn check_cached(target: &Target, dest: &Path, verify: bool) -> Result<Option<Result<(), String>>> {
    let Some(len) = file_len(dest) else {
        return Ok(None);
    };
    if let Some(size) = target.size {
        if len != size {
            return Ok(Some(Err(format!("has {len} bytes, expected {size}"))));
        }
    }
    if verify {
        let got = sha256_file(dest)?;
        if got != target.sha256 {
            return Ok(Some(Err(format!(
                "has SHA-256 {got}, expected {}",
                target.sha256
            ))));
        }
    }
    Ok(Some(Ok(())))
}

/// The one-line error when the file is not cached and may not be downloaded.
fn missing_error(target: &Target, opts: &Options, why: &str) -> anyhow::Error {
    anyhow!(
        "model {} is not in the cache and {why}: missing file {} ({}) in {}; fetch it with `{}` \
         where there is network (then copy {} into that folder), or set {MIRROR_ENV} to a mirror that has it",
        target.name,
        target.file,
        target.describe(),
        opts.cache_dir.display(),
        target.fetch_command,
        target.file,
    )
}

/// The cached file of `target`, downloading it first if needed.
///
/// A cached file of the right size is used as it is unless `verify_cached`
/// asks to check its SHA-256 as well (`lrp-heatmap fetch` does); a bad one is
/// downloaded again. Messages go to `log`.
pub fn ensure(
    target: &Target,
    opts: &Options,
    verify_cached: bool,
    log: &mut dyn Write,
) -> Result<PathBuf> {
    let dest = cached_path(target, &opts.cache_dir);
    let bad = match check_cached(target, &dest, verify_cached)? {
        Some(Ok(())) => {
            if verify_cached {
                writeln!(
                    log,
                    "{} is cached and verified (sha256 {})",
                    target.name, target.sha256
                )?;
            }
            return Ok(dest);
        }
        Some(Err(why)) => Some(why),
        None => None,
    };
    if let Some(reason) = &opts.offline {
        let why = match bad {
            Some(b) => format!("the cached copy {b}, and downloading is off ({reason})"),
            None => format!("downloading is off ({reason})"),
        };
        return Err(missing_error(target, opts, &why));
    }
    fs::create_dir_all(&opts.cache_dir).with_context(|| {
        format!(
            "cannot create the cache folder {}",
            opts.cache_dir.display()
        )
    })?;
    let lock_path = opts.cache_dir.join(format!("{}.lock", target.file));
    let _lock = Lock::acquire(&lock_path, &target.file, log)?;
    // someone else may have finished (or damaged) it while we waited
    match check_cached(target, &dest, verify_cached)? {
        Some(Ok(())) => return Ok(dest),
        Some(Err(why)) => {
            writeln!(log, "{} {why}: downloading it again", dest.display())?;
            fs::remove_file(&dest).with_context(|| format!("cannot remove {}", dest.display()))?;
        }
        None => {}
    }
    download(target, opts, &dest, log)
}

/// An exclusive lock on `<file>.lock`, removed when dropped.
struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    fn acquire(path: &Path, what: &str, log: &mut dyn Write) -> Result<Lock> {
        let mut told = false;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .with_context(|| format!("cannot create lock file {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    if !told {
                        writeln!(
                            log,
                            "waiting for another lrp-heatmap process downloading {what}"
                        )?;
                        told = true;
                    }
                    file.lock()
                        .with_context(|| format!("cannot lock {}", path.display()))?;
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
            // The holder before us removes the lock file when done: a lock on
            // that removed file guards nothing, so lock the current one.
            if same_file(&file, path) {
                return Ok(Lock {
                    file,
                    path: path.to_path_buf(),
                });
            }
        }
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, _path: &Path) -> bool {
    true
}

impl Drop for Lock {
    fn drop(&mut self) {
        // remove while still holding the lock (see `acquire`), then unlock
        if cfg!(unix) {
            let _ = fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// Why one attempt failed.
enum Failure {
    /// The connection broke or timed out: worth another attempt, which
    /// resumes where this one stopped.
    Transient(anyhow::Error),
    /// This URL will not give the file (HTTP status, wrong size or checksum).
    Permanent(anyhow::Error),
}

fn agent(opts: &Options) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_recv_response(Some(opts.read_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        .http_status_as_error(false)
        .max_redirects(10)
        .user_agent(concat!("lrp-heatmap/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn download(target: &Target, opts: &Options, dest: &Path, log: &mut dyn Write) -> Result<PathBuf> {
    let part = part_path(dest);
    let agent = agent(opts);
    // drawn (on a terminal) once the body starts coming, within 80 columns
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:20} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .expect("valid template"),
    );
    bar.set_message(target.file.clone());
    let mut errors = Vec::new();
    'urls: for url in &target.urls {
        for attempt in 1..=opts.attempts.max(1) {
            let before = file_len(&part).unwrap_or(0);
            let r = download_from(&agent, url, target, &part, &bar, opts.progress, log);
            let failure = match r.and_then(|(len, hash)| install(target, &part, dest, len, &hash)) {
                Ok(()) => {
                    bar.finish_and_clear();
                    writeln!(
                        log,
                        "verified {} (sha256 {}) -> {}",
                        target.file,
                        target.sha256,
                        dest.display()
                    )?;
                    return Ok(dest.to_path_buf());
                }
                Err(f) => f,
            };
            match failure {
                Failure::Permanent(e) => {
                    errors.push(format!("{url}: {e:#}"));
                    continue 'urls;
                }
                Failure::Transient(e) if attempt < opts.attempts => {
                    let now = file_len(&part).unwrap_or(0);
                    say(
                        &bar,
                        log,
                        &format!(
                            "{url}: {e:#}; trying again (attempt {} of {})",
                            attempt + 1,
                            opts.attempts
                        ),
                    );
                    if now <= before {
                        std::thread::sleep(Duration::from_millis(500 * attempt as u64));
                    }
                }
                Failure::Transient(e) => errors.push(format!("{url}: {e:#}")),
            }
        }
    }
    bar.finish_and_clear();
    let kept = match file_len(&part) {
        Some(0) => {
            let _ = fs::remove_file(&part);
            String::new()
        }
        Some(n) => format!(
            "; {n} bytes are kept in {} and the next attempt resumes from there",
            part.display()
        ),
        None => String::new(),
    };
    let tried = errors.join("; ");
    Err(missing_error(
        target,
        opts,
        &format!("cannot be downloaded ({tried}{kept})"),
    ))
}

/// Verifies the finished `.part` and moves it into place; a mismatch deletes it.
fn install(target: &Target, part: &Path, dest: &Path, len: u64, hash: &str) -> Result<(), Failure> {
    let mismatch = |what: String| {
        let _ = fs::remove_file(part);
        Failure::Permanent(anyhow!("{what}; the download was deleted"))
    };
    if let Some(size) = target.size {
        if len != size {
            return Err(mismatch(format!("got {len} bytes, expected {size}")));
        }
    }
    if hash != target.sha256 {
        return Err(mismatch(format!(
            "SHA-256 mismatch: expected {}, got {hash} ({len} bytes)",
            target.sha256
        )));
    }
    fs::rename(part, dest)
        .with_context(|| format!("cannot move {} to {}", part.display(), dest.display()))
        .map_err(Failure::Permanent)?;
    if let Some(dir) = dest.parent() {
        // make the rename durable (best effort; not possible everywhere)
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A message on `log` that does not tear the progress bar.
fn say(bar: &ProgressBar, log: &mut dyn Write, msg: &str) {
    bar.suspend(|| {
        let _ = writeln!(log, "{msg}");
    });
}

fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    match e {
        E::Io(_) | E::Timeout(_) | E::HostNotFound | E::ConnectionFailed => {
            Failure::Transient(anyhow!(e))
        }
        other => Failure::Permanent(anyhow!(other)),
    }
}

/// `bytes START-END/TOTAL` -> (START, TOTAL if given).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// One attempt at one URL: fills `part` (resuming it) and returns its length and SHA-256.
fn download_from(
    agent: &ureq::Agent,
    url: &str,
    target: &Target,
    part: &Path,
    bar: &ProgressBar,
    progress: bool,
    log: &mut dyn Write,
) -> Result<(u64, String), Failure> {
    let io = |e: std::io::Error, what: &str| {
        Failure::Permanent(anyhow!(e).context(format!("{what} {}", part.display())))
    };
    let mut offset = file_len(part).unwrap_or(0);
    if let Some(size) = target.size {
        if offset > size {
            offset = 0;
        } else if offset == size && size > 0 {
            // complete but not verified yet (stopped before the rename)
            return sha256_file(part)
                .map(|h| (size, h))
                .map_err(Failure::Transient);
        }
    }
    let mut req = agent.get(url);
    if offset > 0 {
        req = req.header("Range", format!("bytes={offset}-"));
    }
    let resp = req.call().map_err(classify)?;
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let total = match status.as_u16() {
        206 if offset > 0 => {
            let cr = header("content-range").and_then(|v| parse_content_range(&v));
            match cr {
                Some((start, total)) if start == offset => {
                    total.or(content_length.map(|c| c + offset))
                }
                _ => {
                    let _ = fs::remove_file(part);
                    return Err(Failure::Transient(anyhow!(
                        "the server did not resume at byte {offset}: starting over"
                    )));
                }
            }
        }
        200 | 206 => {
            if offset > 0 {
                say(
                    bar,
                    log,
                    &format!(
                        "{url} does not resume downloads: starting {} over",
                        target.file
                    ),
                );
                offset = 0;
            }
            content_length
        }
        416 if offset > 0 => {
            let _ = fs::remove_file(part);
            return Err(Failure::Transient(anyhow!(
                "the server cannot resume at byte {offset} (HTTP 416): starting over"
            )));
        }
        _ => {
            return Err(Failure::Permanent(anyhow!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )))
        }
    };
    if let (Some(size), Some(t)) = (target.size, total) {
        if t != size {
            let _ = fs::remove_file(part);
            return Err(Failure::Permanent(anyhow!(
                "the server has {t} bytes, expected {size}: not the right file"
            )));
        }
    }
    let expected = total.or(target.size);
    if offset > 0 {
        let of = expected.map_or("?".to_string(), |e| e.to_string());
        say(
            bar,
            log,
            &format!(
                "resuming {} at byte {offset} of {of} from {url}",
                target.file
            ),
        );
    } else {
        let size = expected.map_or("size unknown".to_string(), describe_size);
        say(
            bar,
            log,
            &format!("downloading {} ({size}) from {url}", target.file),
        );
    }

    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .map_err(|e| io(e, "cannot open"))?;
    file.set_len(offset).map_err(|e| io(e, "cannot truncate"))?;
    let mut hasher = Sha256::new();
    if offset > 0 {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io(e, "cannot read"))?;
        let n = hash_prefix(&mut file, offset, &mut hasher).map_err(|e| io(e, "cannot read"))?;
        if n != offset {
            return Err(Failure::Transient(anyhow!(
                "{} changed while reading it",
                part.display()
            )));
        }
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io(e, "cannot seek in"))?;
    if let Some(e) = expected {
        bar.set_length(e);
    }
    bar.set_position(offset);
    if progress && bar.is_hidden() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }

    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 256 << 10];
    let mut received = offset;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.sync_all();
                let of = expected.map_or(String::new(), |t| format!(" of {t}"));
                return Err(Failure::Transient(
                    anyhow!(e).context(format!("connection lost at byte {received}{of}")),
                ));
            }
        };
        if let Some(t) = expected {
            if received + n as u64 > t {
                drop(file);
                let _ = fs::remove_file(part);
                return Err(Failure::Permanent(anyhow!(
                    "the server sent more than the {t} bytes expected; the download was deleted"
                )));
            }
        }
        file.write_all(&buf[..n])
            .map_err(|e| io(e, "cannot write"))?;
        hasher.update(&buf[..n]);
        received += n as u64;
        bar.set_position(received);
    }
    file.sync_all().map_err(|e| io(e, "cannot write"))?;
    if let Some(t) = expected {
        if received < t {
            return Err(Failure::Transient(anyhow!(
                "connection closed at byte {received} of {t}"
            )));
        }
    }
    Ok((received, hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_strings() {
        // FIPS 180-2 example: SHA-256("abc")
        let mut h = Sha256::new();
        h.update(b"abc");
        assert_eq!(
            hex(&h.finalize()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_checksums_and_names() {
        let up = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(parse_sha256(up).unwrap(), up.to_ascii_lowercase());
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "x.part", "x.lock"] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
        check_file_name("vgg16-7.onnx").unwrap();
    }

    #[test]
    fn targets_from_urls_take_the_last_path_segment() {
        let sha = "0".repeat(64);
        let t = Target::from_url(
            "https://example.org/a/b/net.onnx?download=1",
            &sha,
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.file, "net.onnx");
        assert_eq!(t.urls, ["https://example.org/a/b/net.onnx?download=1"]);
        assert!(t.fetch_command.contains("--sha256 0000"));
        let named = Target::from_url("http://h/x", &sha, Some("mine.onnx"), Some(3)).unwrap();
        assert_eq!((named.file.as_str(), named.size), ("mine.onnx", Some(3)));
        assert!(Target::from_url("http://h/", &sha, None, None).is_err());
        assert!(Target::from_url("ftp://h/x.onnx", &sha, None, None).is_err());
        assert!(Target::from_url("x.onnx", &sha, None, None).is_err());
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    use lrp_testkit::http::{file_names, tiny_model, Route, Server};

    // the download itself, against a local server that stalls (the binary's
    // downloads are tested end to end in tests/it/fetch.rs)
    fn options(cache: &Path) -> Options {
        Options {
            cache_dir: cache.to_path_buf(),
            offline: None,
            progress: false,
            attempts: 2,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn ensure_times_out_a_stalled_server_resumes_and_then_uses_the_cache() {
        let model = tiny_model();
        let server = Server::start(vec![(
            "/stall.onnx",
            Route::Stalling {
                data: model.clone(),
                cut: 5000,
                stall: Duration::from_secs(3),
            },
        )]);
        let dir = tempfile::tempdir().unwrap();
        let target = Target {
            name: "stall".into(),
            file: "stall.onnx".into(),
            urls: vec![server.url("/stall.onnx")],
            size: Some(model.len() as u64),
            sha256: hex(&Sha256::digest(&model[..])),
            fetch_command: "lrp-heatmap fetch stall".into(),
        };
        let opts = options(dir.path());
        let mut log = Vec::new();
        let t0 = std::time::Instant::now();
        let path = ensure(&target, &opts, false, &mut log).unwrap();
        let log = String::from_utf8(log).unwrap();
        // the 300 ms read timeout, not the 3 s stall, ended the first attempt
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(log.contains("resuming stall.onnx at byte 5000"), "{log}");
        assert_eq!(path, dir.path().join("stall.onnx"));
        assert_eq!(std::fs::read(&path).unwrap(), *model);
        assert_eq!(
            cache_state(&target, dir.path()),
            CacheState::Cached(path.clone())
        );
        // cached: no request, also offline
        let offline = Options {
            offline: Some("--offline".into()),
            ..options(dir.path())
        };
        assert_eq!(
            ensure(&target, &offline, true, &mut Vec::new()).unwrap(),
            path
        );
        assert_eq!(server.count("/stall.onnx"), 2);
        assert_eq!(file_names(dir.path()), ["stall.onnx"]);
    }
}
