//! The store directory's files, reached only relative to the directory's
//! own descriptor and never through a link: whoever may write to the
//! directory may plant a symbolic link, a FIFO or a hard link there, and a
//! `run` as root must neither create nor write nor read a file wherever it
//! points. Every entry is opened with `O_NOFOLLOW` (`.fence` also with
//! `O_DIRECTORY`) and must be what the store wrote there (a regular file of
//! one link, a directory); anything else is refused in one line that names
//! it and says to remove it. Records and marks are replaced by `renameat`
//! within the directory, which replaces a link rather than following it.
//!
//! The directory's own path is followed as given (`/var/lock` is itself a
//! link on many systems): whoever can replace it can replace the locks.
//!
//! Files and `.fence` take the directory's group and permissions (files
//! without execute bits), whatever the umask of whoever wrote them first, so
//! that a directory shared by a group works for every member. A sticky
//! directory others may write to (as /tmp) is refused: there, one user may
//! not replace another's record.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};
use std::os::unix::fs::fchown;

use crate::error::{Error, Result};

/// An open directory of the store (the store directory or its `.fence`),
/// with the facts its files are given.
pub(super) struct OpenDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Its permission bits (with setgid).
    mode: u32,
    uid: u32,
    gid: u32,
}

/// What an entry of the store directory must be.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    File,
    Dir,
}

impl OpenDir {
    /// Opens the store directory `path` (following its path as given).
    /// `missing` is the error for a directory that does not exist.
    pub(super) fn store(path: &Path, missing: impl FnOnce() -> Error) -> Result<OpenDir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(missing()),
            Err(e) => return Err(io_failure("open", path, e)),
        };
        let dir = OpenDir::of(fd, path.to_path_buf())?;
        if dir.mode & 0o1000 != 0 && dir.mode & 0o022 != 0 {
            return Err(Error::store(format!(
                "directory {} is sticky and others may write to it (as /tmp is), so its users could \
                 not replace each other's records; use a directory of its own: \
                 `install -d -m 2775 -g GROUP {}` for the users of GROUP, or one under $HOME for yourself",
                path.display(),
                path.display()
            )));
        }
        Ok(dir)
    }

    fn of(fd: OwnedFd, path: PathBuf) -> Result<OpenDir> {
        let st = fstat(&fd).map_err(|e| io_failure("stat", &path, e))?;
        Ok(OpenDir {
            fd,
            path,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The sub-directory `name` (`.fence`), `None` if there is none and
    /// `create` is false. One this creates takes this directory's owner
    /// (where it may: as root), group and permissions.
    pub(super) fn sub_dir(&self, name: &str, create: bool) -> Result<Option<OpenDir>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let path = self.path.join(name);
        let mut created = false;
        loop {
            match openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => {
                    if created {
                        self.adopt(&fd, self.mode & 0o2777, true)?;
                        fsync(&self.fd).map_err(|e| io_failure("sync", &self.path, e))?;
                    }
                    return OpenDir::of(fd, path).map(Some);
                }
                Err(Errno::ENOENT) if !create => return Ok(None),
                Err(Errno::ENOENT) if !created => {
                    match mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)) {
                        Ok(()) => created = true,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io_failure("create", &path, e)),
                    }
                }
                Err(e) => return Err(self.refusal(name, Kind::Dir, "open", e)),
            }
        }
    }

    /// Gives a file or directory this one created this directory's group
    /// (and owner, when `owner` and we may) and the permissions `mode`.
    fn adopt(&self, fd: &OwnedFd, mode: u32, owner: bool) -> Result<()> {
        let gid = Some(self.gid);
        if !(owner && fchown(fd, Some(self.uid), gid).is_ok()) {
            // Not ours to give away: the group (ours if we are in it) will do.
            let _ = fchown(fd, None, gid);
        }
        fchmod(fd, Mode::from_bits_truncate(mode)).map_err(|e| io_failure("chmod", &self.path, e))
    }

    /// The file `name` opened with `flags` (read-only: `O_RDONLY`), `None`
    /// if there is none. Never follows a link, never waits on a FIFO.
    pub(super) fn open_file(&self, name: &str, flags: OFlag) -> Result<Option<File>> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => {
                self.check_file(name, &fd)?;
                Ok(Some(File::from(fd)))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.refusal(name, Kind::File, "open", e)),
        }
    }

    /// Creates the file `name`, which must not exist (`None` if it does),
    /// with this directory's group and permissions (less execute).
    pub(super) fn create_file(&self, name: &str, flags: OFlag) -> Result<Option<File>> {
        let flags = flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => {
                if let Err(e) = self.adopt(&fd, self.mode & 0o666, false) {
                    let _ = unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir);
                    return Err(e);
                }
                Ok(Some(File::from(fd)))
            }
            Err(Errno::EEXIST) => Ok(None),
            Err(e) => Err(io_failure("create", &self.path.join(name), e)),
        }
    }

    /// Whether `name` is still the file `f` (not deleted or replaced).
    pub(super) fn still_names(&self, name: &str, f: &File) -> bool {
        match (
            fstat(f),
            fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        ) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
            _ => false,
        }
    }

    /// Replaces the file `name` with `bytes` atomically: a new `.tmp-*`
    /// file (which no lock's file is named), synced, renamed over `name`
    /// (a link there is replaced, never followed), and the directory synced
    /// so the rename survives a crash.
    pub(super) fn replace(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path.join(name);
        let (tmp, mut f) = loop {
            let tmp = format!(".tmp-{:016x}", fastrand::u64(..));
            if let Some(f) = self.create_file(&tmp, OFlag::O_WRONLY)? {
                break (tmp, f);
            }
        };
        let written = f
            .write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)))
            .and_then(|()| renameat(&self.fd, tmp.as_str(), &self.fd, name));
        if let Err(e) = written {
            let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(io_failure("write", &path, e));
        }
        fsync(&self.fd).map_err(|e| io_failure("sync", &self.path, e))
    }

    /// A regular file of one link, as the store writes them.
    fn check_file(&self, name: &str, fd: &OwnedFd) -> Result<()> {
        let st = fstat(fd).map_err(|e| io_failure("stat", &self.path.join(name), e))?;
        if kind_of(&st) != "file" {
            return Err(self.refused(name, kind_of(&st), Kind::File));
        }
        if st.st_nlink > 1 {
            let path = self.path.join(name);
            return Err(Error::store(format!(
                "{} has {} hard links, and awsflock uses no file linked elsewhere; remove it (`rm {}`)",
                path.display(),
                st.st_nlink,
                path.display()
            )));
        }
        Ok(())
    }

    /// The error for a failed open of `name`: if it is a link or not what
    /// the store keeps there, says so and to remove it.
    fn refusal(&self, name: &str, want: Kind, what: &str, e: Errno) -> Error {
        if let Ok(st) = fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            let is = kind_of(&st);
            let wanted = if want == Kind::File {
                "file"
            } else {
                "directory"
            };
            if is != wanted {
                return self.refused(name, is, want);
            }
        }
        io_failure(what, &self.path.join(name), e)
    }

    fn refused(&self, name: &str, is: &str, want: Kind) -> Error {
        let path = self.path.join(name);
        let what = match (is, want) {
            ("symbolic link", _) => {
                "is a symbolic link, and awsflock follows no link in its directory".to_string()
            }
            (_, Kind::File) => format!("is a {is}, not a file"),
            (_, Kind::Dir) => format!("is a {is}, not a directory"),
        };
        let rm = if is == "directory" { "rmdir" } else { "rm" };
        Error::store(format!(
            "{} {what}; remove it (`{rm} {}`)",
            path.display(),
            path.display()
        ))
    }
}

fn kind_of(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        _ => "device",
    }
}

/// "cannot open PATH: ERROR", with advice for a directory shared by
/// users who may not write each other's files.
pub(super) fn io_failure(what: &str, path: &Path, e: impl Into<std::io::Error>) -> Error {
    let e: std::io::Error = e.into();
    let mut msg = format!("cannot {what} {}: {e}", path.display());
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        msg.push_str(
            "; a directory shared by several users must let each of them write it and its \
             `.fence`: make both group-owned, group-writable and setgid \
             (`chgrp -R GROUP DIR && chmod -R g=u DIR && chmod g+s DIR DIR/.fence`)",
        );
    }
    Error::store(msg)
}
