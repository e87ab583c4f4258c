//! File-system calls the engine needs beyond std: atomic replacement,
//! space reserved up front, write-back started early.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so `path` holds either the old content or all of the new.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with_mode(path, bytes, 0o666)
}

/// `write_atomically`, readable by the owner alone (0600): for what tells
/// about a release (its torrent's names, sizes and hashes), which hosts and
/// the deployer keep but nobody else on the machine may read.
pub fn write_privately(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with_mode(path, bytes, 0o600)
}

/// `mode` before the umask.
fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{}: not a file path", path.display())))?;
    // A fresh, unguessable name opened with O_EXCL: nothing planted in a
    // shared directory (a link, a file of loose mode) is ever opened.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", file_name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(&dir)
        .map_err(|e| Error::io(path, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(path, e))?;
    // On failure the temporary file is removed when dropped.
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Reserves `len` bytes for `file` so that writes into them cannot run out
/// of space. `Ok(false)` when the file system cannot reserve (the file is
/// then only extended, sparse, and a full disk shows up as a failed write).
pub fn reserve(file: &File, len: u64) -> std::io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    // SAFETY: fallocate(2) on a descriptor we own, mode 0 (allocate and extend).
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(err),
    }
}

/// Bytes an unprivileged writer may still use on the file system that
/// holds `path` (`None` if it cannot be told).
pub fn available_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) fills the struct we pass; `c` is a valid C string.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The process's soft limit on open descriptors (1,024 if unknown).
pub fn descriptor_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    }
}

/// Starts writing back `len` bytes of `file` at `offset` without waiting
/// for them, so that a final sync finds little left to do. A hint: errors
/// are left to the final sync to report.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    // SAFETY: sync_file_range(2) on a descriptor we own; it only schedules I/O.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Makes everything written on the file system that holds `path` durable
/// (syncfs(2): its dirty data and metadata, then one flush of the disk).
/// Linux reports write-back errors from it since 5.8.
pub fn sync_file_system(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: syncfs(2) on a descriptor we own.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        drop(f);
        // SAFETY: sync(2) takes no arguments; it covers every file system.
        unsafe { libc::sync() };
        Ok(())
    }
}

/// Renames `from` to `to` only if nothing is at `to`: an `AlreadyExists`
/// error otherwise, never a replaced file or empty directory (rename(2)
/// replaces both). A file system or kernel without RENAME_NOREPLACE gets a
/// check then a rename. Through syscall(2): glibc has renameat2 only from
/// 2.28, and the hosts' binary is built for glibc 2.17.
pub fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let (cf, ct) = (c(from)?, c(to)?);
        // SAFETY: renameat2(2)'s arguments: two NUL-terminated paths that
        // outlive the call, relative to the working directory, and a flag.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                cf.as_ptr(),
                libc::AT_FDCWD,
                ct.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // EINVAL: the file system lacks the flag; ENOSYS: the kernel (< 3.15).
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
            return Err(e);
        }
    }
    if to.exists() || to.is_symlink() {
        return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
    }
    std::fs::rename(from, to)
}

/// Syncs a directory's entries (after a rename into it).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule P4's rename: an empty directory or a file that appeared at the
    /// destination is refused, not replaced as rename(2) does.
    #[test]
    fn a_rename_into_place_never_replaces_what_appeared_there() {
        let dir = tempfile::tempdir().unwrap();
        let (staged, dest) = (dir.path().join(".rel.part"), dir.path().join("rel"));
        std::fs::create_dir(&staged).unwrap();
        std::fs::create_dir(&dest).unwrap();
        let e = rename_no_replace(&staged, &dest).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(staged.exists());
        std::fs::remove_dir(&dest).unwrap();
        rename_no_replace(&staged, &dest).unwrap();
        assert!(dest.is_dir() && !staged.exists());
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.torrent");
        write_atomically(&path, b"abc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomically(&dir.path().join("missing/x"), b"abc").is_err());
    }

    /// A file planted at a temporary name (a link to something of the
    /// user's, or a file of loose mode) is neither followed nor reused:
    /// the name was predictable and opened without O_EXCL.
    #[test]
    fn an_atomic_write_never_opens_a_file_planted_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("x.torrent");
        let planted = dir
            .path()
            .join(format!(".x.torrent.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_privately(&path, b"abc").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    #[test]
    fn reserving_space_extends_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        reserve(&f, 100_000).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 100_000);
    }
}
