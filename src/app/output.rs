//! Atomic file output.
//!
//! Every file the tool produces (heatmap PNGs, `.npy` relevance dumps, ...) is
//! written through [`write_atomic`], so a crash, a full disk or an encoder
//! error never leaves a truncated file at the destination path: readers see
//! either the old file or the complete new one.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{anyhow, Context};

/// Atomically writes a file.
///
/// The closure `write` receives a buffered writer backed by a temporary file
/// ([`tempfile::NamedTempFile`]) created exclusively in the same directory as
/// `path`, with the hidden name `.<filename>.XXXXXX.tmp` (six random
/// characters) and, on Unix, the permissions a plain `File::create` would give
/// (0o666 less the umask). When the closure succeeds the data is flushed and
/// fsynced and the temporary file is persisted (renamed) over `path`
/// (replacing an existing file). On any error (from the closure, while
/// flushing, syncing or renaming) or a panic inside the closure, the temporary
/// file is removed and `path` is left untouched; the error message names
/// `path`.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("cannot write {}: not a file path", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };

    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile's default is 0o600; outputs get the usual 0o666 & !umask.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    // Dropping the NamedTempFile (early return, panic) deletes the file.
    let tmp = builder.tempfile_in(dir).with_context(|| {
        format!(
            "cannot write {}: cannot create a temporary file in {}",
            path.display(),
            dir.display()
        )
    })?;

    let mut writer = BufWriter::new(tmp);
    write(&mut writer).with_context(|| format!("cannot write {}", path.display()))?;
    let tmp = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}: flush failed", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}: fsync failed", path.display()))?;

    let tmp_path = tmp.path().to_path_buf();
    // `e.error` only: the PersistError's file is dropped here, which deletes it.
    tmp.persist(path).map_err(|e| e.error).with_context(|| {
        format!(
            "cannot write {}: cannot rename temporary file {} into place",
            path.display(),
            tmp_path.display()
        )
    })?;

    // Make the rename itself durable (best effort; not supported everywhere).
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Saves `img` as a PNG file at `path`, atomically (via [`write_atomic`]).
/// Errors name `path`.
pub fn save_png(img: &image::RgbImage, path: &Path) -> anyhow::Result<()> {
    write_atomic(path, |w| lrp_heatmap::render::write_png(img, w))
        .with_context(|| format!("cannot save heat map {}", path.display()))
}

/// Saves `array` as a little-endian `f32` `.npy` file at `path` (loads with
/// `numpy.load`), atomically. Errors name `path`.
pub fn save_npy<D: ndarray::Dimension>(
    array: &ndarray::Array<f32, D>,
    path: &Path,
) -> anyhow::Result<()> {
    use ndarray_npy::WriteNpyExt;
    write_atomic(path, |w| {
        array
            .as_standard_layout()
            .write_npy(w)
            .context("NPY encoding failed")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        write_atomic(&p, |w| {
            w.write_all(b"hello")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(dir_entries(dir.path()), vec!["out.bin".to_string()]);
    }

    #[test]
    fn replaces_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        fs::write(&p, b"old contents that are longer").unwrap();
        write_atomic(&p, |w| {
            w.write_all(b"new")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(dir_entries(dir.path()), vec!["out.bin".to_string()]);
    }

    #[test]
    fn error_keeps_old_file_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep.txt");
        fs::write(&p, b"original").unwrap();
        let err = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(anyhow!("encoder exploded"))
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("keep.txt"), "{msg}");
        assert!(msg.contains("encoder exploded"), "{msg}");
        assert_eq!(fs::read(&p).unwrap(), b"original");
        assert_eq!(dir_entries(dir.path()), vec!["keep.txt".to_string()]);
    }

    #[test]
    fn error_on_new_path_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("never.txt");
        assert!(write_atomic(&p, |_| Err(anyhow!("nope"))).is_err());
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[test]
    fn panic_in_writer_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("panic.txt");
        let r = std::panic::catch_unwind(|| {
            let _ = write_atomic(&p, |w| {
                w.write_all(b"x").unwrap();
                panic!("boom");
            });
        });
        assert!(r.is_err());
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[test]
    fn missing_directory_error_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no_such_dir").join("x.png");
        let err = write_atomic(&p, |_| Ok(())).unwrap_err();
        assert!(format!("{err:#}").contains("x.png"));
    }

    #[test]
    fn target_is_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("inner"), b"x").unwrap();
        let err = write_atomic(&sub, |w| {
            w.write_all(b"data")?;
            Ok(())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("sub"));
        assert_eq!(dir_entries(dir.path()), vec!["sub".to_string()]);
    }

    #[cfg(unix)]
    #[test]
    fn output_has_the_permissions_of_a_created_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.bin");
        fs::File::create(&plain).unwrap();
        let p = dir.path().join("atomic.bin");
        write_atomic(&p, |w| {
            w.write_all(b"x")?;
            Ok(())
        })
        .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), mode(&plain));
    }

    #[test]
    fn temp_file_is_hidden_next_to_destination() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.png");
        let mut seen = Vec::new();
        write_atomic(&p, |w| {
            w.write_all(b"x")?;
            seen = dir_entries(dir.path());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with(".out.png.") && seen[0].ends_with(".tmp"),
            "{seen:?}"
        );
        assert_eq!(dir_entries(dir.path()), vec!["out.png".to_string()]);
    }

    #[test]
    fn no_file_name_is_error() {
        assert!(write_atomic(Path::new("/"), |_| Ok(())).is_err());
        assert!(write_atomic(Path::new(".."), |_| Ok(())).is_err());
    }

    #[test]
    fn save_png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("heat.png");
        let img =
            image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 80, 7]));
        save_png(&img, &p).unwrap();
        let back = image::open(&p).unwrap();
        assert_eq!(back.color(), image::ColorType::Rgb8);
        assert_eq!(back.to_rgb8(), img);
        // Only the PNG is left in the directory (no temp files).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Unwritable destination: error names the file.
        let bad = dir.path().join("nope").join("x.png");
        let msg = format!("{:#}", save_png(&img, &bad).unwrap_err());
        assert!(msg.contains("x.png"), "{msg}");
    }
}
