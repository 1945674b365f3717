//! The local-directory store: `--backend file:///DIR`, for one host with no
//! server and no credentials (cron jobs on one box, trying awsflock out).
//!
//! ```text
//! DIR/.awsflock.lock        flock(2)ed exclusively around every change
//! DIR/NAME.json             the lock's LeaseRecord (see record.rs)
//! DIR/.fence/NAME           the FenceMark: every token issued is <= it
//! ```
//!
//! Every change happens under an exclusive `flock` of `DIR/.awsflock.lock`
//! and is written to a temporary file, synced and renamed over the record, so
//! a reader sees the old record or the new one, never half of one, and no
//! two processes can both see the lock free and both take it. A crash with
//! the lock taken leaves nothing half-done: the kernel drops the flock.
//!
//! The store's clock is this host's clock, so there is no first-sight grace.
//! A lease held by `run` whose process is gone (same host, pid no longer
//! exists) is free at once; any other lease is free when it expires.
//! Names are stored percent-encoded, so any lock name is a safe file name.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::cas::{self, CasStore, Outcome, Stamp};
use super::record::{FenceMark, LeaseRecord, RecordState};
use super::{AcquireRequest, Backend, BoxFuture, Lease, LockInfo};
use crate::clock::ServerClock;
use crate::error::{Error, Result};

/// The file store.
pub struct FileStore {
    dir: PathBuf,
    host: String,
    clock: ServerClock,
}

/// Encodes a lock name as a file name: bytes outside `[A-Za-z0-9_-]` (and a
/// leading `.`) become `%XX`; a result over 200 bytes is cut and suffixed
/// with a hash of the whole name, so distinct names stay distinct.
pub fn file_name(name: &str) -> String {
    let mut out = String::new();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        // FNV-1a: stable across releases, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut cut = 180;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out = format!("{}~{h:016x}", &out[..cut]);
    }
    out
}

impl FileStore {
    /// Opens the store in `dir` (which `table-create` creates).
    pub fn open(dir: PathBuf) -> Result<Self> {
        Ok(FileStore {
            dir,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            clock: ServerClock::new(),
        })
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.json", file_name(name)))
    }

    fn mark_path(&self, name: &str) -> PathBuf {
        self.dir.join(".fence").join(file_name(name))
    }

    fn io_error(&self, what: &str, path: &Path, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound && !self.dir.is_dir() {
            return Error::store(format!(
                "directory {} does not exist; create it with `awsflock table-create --backend file://{}`",
                self.dir.display(),
                self.dir.display()
            ));
        }
        Error::store(format!("cannot {what} {}: {e}", path.display()))
    }

    /// Takes the directory's exclusive lock; released when the guard drops.
    fn lock_dir(&self) -> Result<Flock<File>> {
        let path = self.dir.join(".awsflock.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io_error("open", &path, e))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::store(format!("cannot lock {}: {e}", path.display())))
    }

    fn read_record(&self, name: &str) -> Result<Option<LeaseRecord>> {
        let path = self.record_path(name);
        match fs::read(&path) {
            // An unreadable file is a held stand-in that says what is wrong
            // (DESIGN.md, "Unreadable records").
            Ok(bytes) => Ok(Some(LeaseRecord::decode(
                &bytes,
                name,
                &content_tag(&bytes),
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.dir.is_dir() => Ok(None),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    /// Writes `bytes` to `path` atomically: temporary file, fsync, rename.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            if let Some(parent) = path.parent() {
                File::open(parent)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io_error("write", path, e)
        })
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

    fn not_held(name: &str, lease_id: &str) -> Error {
        Error::NotHeld {
            name: name.to_string(),
            lease_id: lease_id.to_string(),
            detail: String::new(),
        }
    }
}

/// One `-v` line per change, in the same shape as the network stores'.
fn log_op(op: &str, outcome: &str, started: std::time::Instant) {
    let ms = started.elapsed().as_millis() as u64;
    tracing::debug!(target: "awsflock::store", %op, %outcome, ms, "store_request");
}

/// Whether process `pid` exists on this host.
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[async_trait::async_trait]
impl CasStore for FileStore {
    type Record = LeaseRecord;

    /// One host, one clock: nothing to wait out.
    const FIRST_SIGHT_GRACE: Duration = Duration::ZERO;

    fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// Under the directory lock the record is judged afresh, so the grant is
    /// a true compare-and-swap whatever the caller saw. The token is one more
    /// than both the record's and the high-water mark's, and both are written.
    async fn grant(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        _seen: Option<&Option<LeaseRecord>>,
        st: &Stamp,
    ) -> Result<Outcome<LeaseRecord>> {
        let started = std::time::Instant::now();
        let _guard = self.lock_dir()?;
        let cur = self.read_record(&req.name)?;
        if let Some(rec) = &cur {
            if cas::judge(self, Some(rec), crate::boottime::BootInstant::now()) == cas::Judged::Held
            {
                log_op("grant", "condition_failed", started);
                return Ok(Outcome::Lost(cur));
            }
        }
        let fence = self
            .read_mark(&req.name)?
            .max(cur.as_ref().and_then(|r| r.fence).unwrap_or(0))
            + 1;
        let mark = self.mark_path(&req.name);
        if let Some(parent) = mark.parent() {
            fs::create_dir_all(parent).map_err(|e| self.io_error("create", parent, e))?;
        }
        let mut bytes = serde_json::to_vec(&FenceMark { fence_hw: fence }).unwrap_or_default();
        bytes.push(b'\n');
        self.write_atomic(&mark, &bytes)?;
        let rec = LeaseRecord::grant(req, lease_id, st, Some(fence), None);
        self.write_atomic(&self.record_path(&req.name), &rec.to_json())?;
        log_op("grant", "ok", started);
        Ok(Outcome::Granted(Some(fence)))
    }

    async fn read(&self, name: &str) -> Result<Option<LeaseRecord>> {
        self.read_record(name)
    }

    fn lease_id_of(rec: &LeaseRecord) -> Option<String> {
        Some(rec.lease_id.clone())
    }

    fn is_released(rec: &LeaseRecord) -> bool {
        rec.state == RecordState::Released
    }

    fn expiry_ms(rec: &LeaseRecord) -> Option<i64> {
        Some(rec.expires_ms)
    }

    fn holder_gone(&self, rec: &LeaseRecord) -> bool {
        rec.supervised
            && rec.state == RecordState::Held
            && rec.host.as_deref() == Some(self.host.as_str())
            && rec.pid.is_some_and(|p| !pid_alive(p))
    }

    fn info(&self, name: &str, rec: Option<&LeaseRecord>) -> LockInfo {
        match rec {
            Some(r) => r.info(
                cas::is_held(self, r),
                Some(r.expires_ms - self.clock.lower_ms()),
            ),
            None => cas::absent_info(name),
        }
    }

    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        super::validate_name(&lease.name)?;
        let st = Stamp::now(&self.clock, duration);
        let started = std::time::Instant::now();
        let fence = {
            let _guard = self.lock_dir()?;
            let Some(cur) = self.read_record(&lease.name)? else {
                return Err(Self::not_held(&lease.name, &lease.lease_id));
            };
            if cur.lease_id == next_id {
                cur.fence // renewed already by an earlier attempt
            } else if cur.lease_id != lease.lease_id || cur.state != RecordState::Held {
                return Err(Self::not_held(&lease.name, &lease.lease_id));
            } else {
                let renewed = cur.renewed(next_id, &st, duration.as_secs());
                self.write_atomic(&self.record_path(&lease.name), &renewed.to_json())?;
                renewed.fence
            }
        };
        log_op("renew", "ok", started);
        cas::finish(self, &lease.name, next_id.to_string(), fence, duration, st).await
    }

    async fn release_id(&self, name: &str, lease_id: &str) -> Result<()> {
        super::validate_name(name)?;
        let started = std::time::Instant::now();
        let _guard = self.lock_dir()?;
        match self.read_record(name)? {
            Some(cur) if cur.lease_id == lease_id && cur.state == RecordState::Held => {
                let nonce = uuid::Uuid::new_v4().to_string();
                let released = cur.released(&nonce, self.clock.lower_ms());
                self.write_atomic(&self.record_path(name), &released.to_json())?;
                log_op("release", "ok", started);
                Ok(())
            }
            _ => {
                log_op("release", "condition_failed", started);
                Err(Self::not_held(name, lease_id))
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for FileStore {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    async fn acquire(&self, req: &AcquireRequest, cancel: BoxFuture<'_, i32>) -> Result<Lease> {
        cas::acquire(self, req, cancel).await
    }

    async fn renew(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        self.renew_to(lease, duration, next_id).await
    }

    async fn release(&self, name: &str, lease_id: &str) -> Result<()> {
        self.release_id(name, lease_id).await
    }

    async fn inspect(&self, name: &str) -> Result<LockInfo> {
        super::validate_name(name)?;
        let rec = self.read_record(name)?;
        Ok(self.info(name, rec.as_ref()))
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| self.io_error("list", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let rec = LeaseRecord::decode(&bytes, &stem, &content_tag(&bytes));
            let info = self.info(&rec.name.clone(), Some(&rec));
            if info.held {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create(&self) -> Result<()> {
        let fence_dir = self.dir.join(".fence");
        fs::create_dir_all(&fence_dir)
            .map_err(|e| Error::store(format!("cannot create {}: {e}", fence_dir.display())))
    }
}

/// A version tag for a file's content (the directory store has no ETags):
/// the lease id of the stand-in for an unreadable file.
fn content_tag(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("deploy-prod_1"), "deploy-prod_1");
        assert_eq!(file_name("a/b c"), "a%2Fb%20c");
        assert_eq!(file_name(".."), "%2E.");
        assert_eq!(file_name("x.y"), "x.y");
        let long_a = "é".repeat(300);
        let long_b = format!("{}x", "é".repeat(300));
        assert!(file_name(&long_a).len() <= 200);
        assert_ne!(file_name(&long_a), file_name(&long_b));
    }
}
