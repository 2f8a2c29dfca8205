//! Atomic file writes: a reader (or a rerun after a kill) sees either the old file or the new
//! one, never a partial one; temporaries a killed writer left behind are never read and are
//! removed by [`remove_stale_tmp`].

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::fault;

/// Suffix of the temporary a file is written under before its rename.
pub const TMP_SUFFIX: &str = ".tmp";

/// The temporary name `path` is written under before the rename: `NAME.tmp` beside it.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: creates the parent directory, writes `NAME.tmp`,
/// fsyncs it, renames it over `path` and fsyncs the directory so the rename survives a crash.
/// On error (a full disk, a read-only directory) the temporary file is removed and `path` is
/// untouched. Fault points `write-tmp:NAME` and `write-done:NAME` ([`crate::fault`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = tmp_path(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let written = (|| {
        let mut f = File::create(&tmp)?;
        if fault::disk_full(&name) {
            // A full disk: part of the file reaches the temporary, then the write fails.
            f.write_all(&bytes[..bytes.len() / 2])?;
            return Err(io::Error::from_raw_os_error(28));
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        fault::point(|| format!("write-tmp:{name}"));
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Persist the rename itself; best effort (not every platform can open a directory).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    fault::point(|| format!("write-done:{name}"));
    Ok(())
}

/// Removes every `*.tmp` file under `dir` (recursively): temporaries of writes a kill
/// interrupted. They are never read; the file they were to replace is intact. Returns what it
/// removed. Call it only while no other process writes into `dir`.
pub fn remove_stale_tmp(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            removed.extend(remove_stale_tmp(&path)?);
        } else if kind.is_file() && path.to_string_lossy().ends_with(TMP_SUFFIX) {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Whether `path` is a temporary of [`write_atomic`] (named `*.tmp`).
pub fn is_tmp(path: &Path) -> bool {
    path.to_string_lossy().ends_with(TMP_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        // A directory where the temporary file should go makes the write fail.
        fs::create_dir(tmp_path(&path)).unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_read_only_directory_is_an_error_and_the_old_file_stays() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).unwrap();
        let r = write_atomic(&path, b"new");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        // Root ignores permissions; the rest of the assertions hold either way.
        if let Err(e) = r {
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            assert_eq!(fs::read(&path).unwrap(), b"old");
        }
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("run.toml");
        write_atomic(&keep, b"x").unwrap();
        let stale = [
            dir.path().join("run.toml.tmp"),
            dir.path().join("eval").join("eval_rl.json.tmp"),
        ];
        fs::create_dir_all(dir.path().join("eval")).unwrap();
        for s in &stale {
            fs::write(s, b"torn").unwrap();
        }
        let mut removed = remove_stale_tmp(dir.path()).unwrap();
        removed.sort();
        let mut want = stale.to_vec();
        want.sort();
        assert_eq!(removed, want);
        assert!(keep.exists() && stale.iter().all(|s| !s.exists()));
        assert!(is_tmp(&stale[0]) && !is_tmp(&keep));
    }
}
