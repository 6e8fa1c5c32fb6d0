//! File-system helpers shared by the study, the trainer, the data cache and
//! the daemon: atomic writes and "would this output overwrite that input".
//!
//! **Atomic write.** A reader (or a crash) must see either the old file or
//! the new one, never a prefix: write a temporary file in the same
//! directory, fsync it, `rename(2)` it over the target (atomic within one
//! file system), then fsync the directory so the new entry survives a power
//! loss.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("tuned.toml");
//! polytune::fs::write_atomic(&path, b"epsilon = [2.0]\n")?;
//! assert_eq!(std::fs::read(&path)?, b"epsilon = [2.0]\n");
//! assert!(polytune::fs::same_target(&path, &dir.path().join("./tuned.toml")));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Writes a file atomically: a temporary file created exclusively
/// (`O_CREAT | O_EXCL`, random name `.NAME.XXXXXX.tmp`, so a planted file or
/// symlink is never opened) in the target's directory, written and fsynced,
/// renamed over `path` (which replaces a symlink there rather than following
/// it), then the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // On failure the temporary file is removed when `PersistError` drops.
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&dir)
}

/// fsyncs a directory (after a rename in it); file systems that cannot sync
/// directories are not an error.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(libc::EROFS)
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// fsyncs a directory so a new file's entry survives a crash, ignoring
/// failure (best effort: the caller has no better answer than to go on).
/// An empty path is the current directory.
pub fn sync_dir_best_effort(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `path` made absolute, with `.` and `..` applied the way the kernel does
/// (after resolving symlinks where the path exists) and symlinks resolved
/// in the longest prefix that exists.
pub fn resolve(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut cur = PathBuf::new();
    for comp in abs.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                if let Ok(c) = std::fs::canonicalize(&cur) {
                    cur = c;
                }
                cur.pop();
            }
            other => cur.push(other),
        }
    }
    let mut existing = cur;
    let mut rest = Vec::new();
    while std::fs::canonicalize(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for part in rest.iter().rev() {
        out.push(part);
    }
    out
}

/// Whether two paths name the same existing file (same device and inode,
/// which also catches hard links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Whether writing `out` would overwrite `input` (same resolved path, or
/// the same existing file).
pub fn same_target(out: &Path, input: &Path) -> bool {
    resolve(out) == resolve(input) || same_file(out, input)
}
