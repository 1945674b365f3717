//! The directory store's file operations, behind one seam ([`Dir`]):
//! [`LocalDir`] does them in a real directory, each on a thread of its own;
//! the simulation (`src/sim/dir.rs`) does them in an in-memory directory.
//! Everything that decides (what to write, when a record is free) is
//! [`super::FileStore`]'s, over whichever `Dir` it has.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::{LOCK_WAIT, file_name};
use crate::boottime::BootInstant;
use crate::error::{Error, Result};
use crate::store::record::FenceMark;

/// Set when the caller of a file operation stops waiting for it (its future
/// was dropped): the operation then gives up instead of waiting on for the
/// directory lock, or writing a change nobody will use.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Sets its [`Cancel`] when dropped (with the caller's future).
pub struct CancelOnDrop(pub Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.0.store(true, Ordering::SeqCst);
    }
}

/// The files of one store directory. An operation ([`Dir::run`]) runs a
/// closure that takes the directory lock ([`Dir::lock`]) if it changes
/// anything, and reads and writes records and fence marks by lock name.
#[async_trait::async_trait]
pub trait Dir: Send + Sync + 'static {
    /// Held while the directory is locked.
    type Guard;

    /// The directory, for messages ("directory /var/lock/x").
    fn describe(&self) -> String;

    /// Runs one operation, `f`, so that nothing it waits for holds up the
    /// caller's runtime; if the caller stops waiting, `f` is told through
    /// its [`Cancel`].
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel) -> Result<T> + Send + 'static;

    /// Takes the directory's exclusive lock until the guard drops.
    fn lock(&self, cancel: &Cancel) -> Result<Self::Guard>;

    /// The bytes of lock `name`'s record, `None` when it has none.
    fn read_record(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Replaces lock `name`'s record atomically.
    fn write_record(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// Lock `name`'s fence mark (0 when it has none).
    fn read_mark(&self, name: &str) -> Result<u64>;

    /// Replaces lock `name`'s fence mark atomically.
    fn write_mark(&self, name: &str, fence: u64) -> Result<()>;

    /// Every record: (its file name's stem, its bytes).
    fn list_records(&self) -> Result<Vec<(String, Vec<u8>)>>;

    /// Creates the directory and what it needs.
    fn create(&self) -> Result<()>;
}

/// A real directory.
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    pub fn new(dir: PathBuf) -> Self {
        LocalDir { dir }
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn record_path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{}.json", file_name(name)))
    }

    fn mark_path(&self, name: &str) -> PathBuf {
        self.dir().join(".fence").join(file_name(name))
    }

    fn io_error(&self, what: &str, path: &Path, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound && !self.dir().is_dir() {
            let create = crate::error::words(
                &format!(
                    "`awsflock table-create --backend file://{}`",
                    self.dir().display()
                ),
                "`Store::create`",
            )
            .to_string();
            return Error::store(format!(
                "directory {} does not exist; create it with {create}",
                self.dir().display()
            ));
        }
        Error::store(format!("cannot {what} {}: {e}", path.display()))
    }

    /// Writes `bytes` to `path` atomically: a temporary file in the same
    /// directory (named `.tmp-*`, which no lock's file is), synced, renamed
    /// over `path`, and the directory synced so the rename survives a crash.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let parent = path.parent().unwrap_or(self.dir());
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .permissions(fs::Permissions::from_mode(0o666))
                .tempfile_in(parent)?;
            tmp.write_all(bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(path).map_err(|e| e.error)?;
            File::open(parent)?.sync_all()
        };
        write().map_err(|e| self.io_error("write", path, e))
    }
}

#[async_trait::async_trait]
impl Dir for LocalDir {
    type Guard = Flock<File>;

    fn describe(&self) -> String {
        format!("directory {}", self.dir().display())
    }

    /// Runs `f` on a thread of its own, so that nothing it waits for (the
    /// directory lock, the disk) holds up the runtime and its timers. If
    /// this future is dropped, `f` is told through its [`Cancel`].
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel) -> Result<T> + Send + 'static,
    {
        let cancel = Cancel::default();
        let theirs = cancel.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("awsflock-file".into())
            .spawn(move || {
                let _ = tx.send(f(&theirs));
            })
            .map_err(|e| Error::store(format!("cannot start a thread: {e}")))?;
        let _cancel = CancelOnDrop(cancel);
        rx.await
            .unwrap_or_else(|_| Err(Error::store("a directory operation stopped unexpectedly")))
    }

    /// Never blocks in the kernel: tries every few ms until it succeeds, the
    /// caller gives up, or [`LOCK_WAIT`] has passed.
    fn lock(&self, cancel: &Cancel) -> Result<Flock<File>> {
        use std::os::unix::fs::MetadataExt;
        let path = self.dir().join(".awsflock.lock");
        let started = BootInstant::now();
        let mut nap = Duration::from_millis(1);
        loop {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| self.io_error("open", &path, e))?;
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(guard) => {
                    // The file locked must still be the one at the path: if
                    // it was deleted or replaced meanwhile, another process
                    // may be locking the new one. Lock that one instead.
                    let same = match (guard.metadata(), fs::metadata(&path)) {
                        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                        _ => false,
                    };
                    if same {
                        return Ok(guard);
                    }
                    continue;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
                Err((_, e)) => {
                    return Err(Error::store(format!("cannot lock {}: {e}", path.display())));
                }
            }
            if cancel.is_set() {
                return Err(Error::Unavailable(format!(
                    "gave up waiting for {}",
                    path.display()
                )));
            }
            if started.elapsed() >= LOCK_WAIT {
                return Err(Error::Unavailable(format!(
                    "{} has been locked by another process for over {}s; if one is stuck, `fuser -v {}` shows it",
                    path.display(),
                    LOCK_WAIT.as_secs(),
                    path.display()
                )));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }

    fn read_record(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.record_path(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.dir().is_dir() => Ok(None),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    fn write_record(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_atomic(&self.record_path(name), bytes)
    }

    fn read_mark(&self, name: &str) -> Result<u64> {
        let path = self.mark_path(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<FenceMark>(&bytes)
                .map(|m| m.fence_hw)
                .map_err(|e| Error::store(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    fn write_mark(&self, name: &str, fence: u64) -> Result<()> {
        let mark = self.mark_path(name);
        if let Some(parent) = mark.parent() {
            if !parent.is_dir() {
                fs::create_dir_all(parent).map_err(|e| self.io_error("create", parent, e))?;
                File::open(self.dir())
                    .and_then(|d| d.sync_all())
                    .map_err(|e| self.io_error("sync", self.dir(), e))?;
            }
        }
        let mut bytes = serde_json::to_vec(&FenceMark { fence_hw: fence }).unwrap_or_default();
        bytes.push(b'\n');
        self.write_atomic(&mark, &bytes)
    }

    fn list_records(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let entries = fs::read_dir(self.dir()).map_err(|e| self.io_error("list", self.dir(), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            out.push((stem.into_owned(), bytes));
        }
        Ok(out)
    }

    fn create(&self) -> Result<()> {
        let fence_dir = self.dir().join(".fence");
        fs::create_dir_all(&fence_dir)
            .map_err(|e| Error::store(format!("cannot create {}: {e}", fence_dir.display())))
    }
}
