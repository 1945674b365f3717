//! The directory store's file operations, behind one seam ([`Dir`]):
//! [`LocalDir`] does them in a real directory, each on a thread of its own;
//! the simulation (`src/sim/dir.rs`) does them in an in-memory directory.
//! Everything that decides (what to write, when a record is free) is
//! [`super::FileStore`]'s, over whichever `Dir` it has.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg, OFlag};

use super::nofollow::{OpenDir, io_failure};
use super::{LOCK_WAIT, file_name};
use crate::boottime::BootInstant;
use crate::error::{Error, Result};
use crate::protocol::record::FenceMark;

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

/// A real directory, whose files are reached only relative to it and never
/// through a link (`nofollow.rs`).
pub struct LocalDir {
    dir: PathBuf,
}

/// The directory lock's file.
const LOCK_FILE: &str = ".awsflock.lock";
/// The directory of fence marks.
const FENCE_DIR: &str = ".fence";

impl LocalDir {
    pub fn new(dir: PathBuf) -> Self {
        LocalDir { dir }
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    #[cfg(test)]
    pub(super) fn record_path(&self, name: &str) -> PathBuf {
        self.dir().join(record_file(name))
    }

    /// Opens the store directory, or says how to create it.
    fn open(&self) -> Result<OpenDir> {
        OpenDir::store(self.dir(), || {
            let create = crate::error::words(
                &format!(
                    "`awsflock table-create --backend file://{}`",
                    self.dir().display()
                ),
                "`Store::create`",
            )
            .to_string();
            Error::store(format!(
                "directory {} does not exist; create it with {create}",
                self.dir().display()
            ))
        })
    }

    /// The whole of the file `name` in `dir`, `None` if there is none.
    fn read_in(dir: &OpenDir, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(mut f) = dir.open_file(name, OFlag::O_RDONLY)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .map_err(|e| io_failure("read", &dir.path().join(name), e))?;
        Ok(Some(bytes))
    }

    /// The directory lock's file, opened to be locked (read-only: a lock
    /// needs no more, and a file another user created is readable).
    fn lock_file(dir: &OpenDir) -> Result<File> {
        loop {
            if let Some(f) = dir.open_file(LOCK_FILE, OFlag::O_RDONLY)? {
                return Ok(f);
            }
            if let Some(f) = dir.create_file(LOCK_FILE, OFlag::O_RDONLY)? {
                return Ok(f);
            }
        }
    }
}

/// Lock `name`'s record file.
fn record_file(name: &str) -> String {
    format!("{}.json", file_name(name))
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
        let dir = self.open()?;
        let path = dir.path().join(LOCK_FILE);
        let started = BootInstant::now();
        let mut nap = Duration::from_millis(1);
        loop {
            let f = Self::lock_file(&dir)?;
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(guard) => {
                    // The file locked must still be the one at the path: if
                    // it was deleted or replaced meanwhile, another process
                    // may be locking the new one. Lock that one instead.
                    if dir.still_names(LOCK_FILE, &guard) {
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
        Self::read_in(&self.open()?, &record_file(name))
    }

    fn write_record(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.open()?.replace(&record_file(name), bytes)
    }

    fn read_mark(&self, name: &str) -> Result<u64> {
        let Some(fence) = self.open()?.sub_dir(FENCE_DIR, false)? else {
            return Ok(0);
        };
        let file = file_name(name);
        match Self::read_in(&fence, &file)? {
            Some(bytes) => serde_json::from_slice::<FenceMark>(&bytes)
                .map(|m| m.fence_hw)
                .map_err(|e| Error::store(format!("{}: {e}", fence.path().join(&file).display()))),
            None => Ok(0),
        }
    }

    fn write_mark(&self, name: &str, fence: u64) -> Result<()> {
        let dir = self.open()?.sub_dir(FENCE_DIR, true)?;
        let dir = dir.ok_or_else(|| Error::store("the fence directory vanished"))?;
        let mut bytes = serde_json::to_vec(&FenceMark { fence_hw: fence }).unwrap_or_default();
        bytes.push(b'\n');
        dir.replace(&file_name(name), &bytes)
    }

    /// Every `*.json` file's record; a link or other stranger among them is
    /// refused, as everywhere.
    fn list_records(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let dir = self.open()?;
        let entries = fs::read_dir(self.dir()).map_err(|e| io_failure("list", self.dir(), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name();
            let (Some(file), Some(stem)) = (
                file.to_str(),
                Path::new(&file).file_stem().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if !file.ends_with(".json") || file.starts_with('.') {
                continue;
            }
            // Gone since the listing: released and removed by an operator.
            if let Some(bytes) = Self::read_in(&dir, file)? {
                out.push((stem.to_string(), bytes));
            }
        }
        Ok(out)
    }

    fn create(&self) -> Result<()> {
        fs::create_dir_all(self.dir()).map_err(|e| io_failure("create", self.dir(), e))?;
        self.open()?.sub_dir(FENCE_DIR, true).map(drop)
    }
}
