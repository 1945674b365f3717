//! The local-directory store: `--backend file:///DIR`, for one host with no
//! server and no credentials (cron jobs on one box, containers sharing a
//! volume, trying awsflock out).
//!
//! ```text
//! DIR/.awsflock.lock        flock(2)ed exclusively around every change
//! DIR/NAME.json             the lock's record: a LeaseRecord plus "boot"
//! DIR/.fence/NAME           the FenceMark: every token issued is <= it
//! ```
//!
//! Every change happens under an exclusive `flock` of `DIR/.awsflock.lock`,
//! and is written to a temporary file, synced, renamed over the record and
//! the directory synced, so a reader sees the old record or the new one,
//! never half of one, and no two processes can both see the lock free and
//! both take it. A crash with the lock taken leaves nothing half-done: the
//! kernel drops the flock.
//!
//! Leases are stamped and judged on the host's boot-time clock
//! (see `host.rs`), which every process on the kernel reads alike and which no
//! wall-clock step moves; wall-clock times are kept in the record for people
//! only. A lease held by `run` whose process is provably gone (same boot,
//! same pid namespace, and that pid exited or now names another process) is
//! free once a waiter has seen it so for [`EXITED_HOLDER_GRACE`]; any other
//! lease is free when it expires. DESIGN.md has the record format, the
//! rules and why each is safe.
//!
//! No file operation runs on the async runtime, whose timers keep the
//! holder's deadlines: each runs on a thread of its own, and the directory
//! lock is taken without blocking, retried every few ms and given up when
//! the caller stops waiting (a renewal at its deadline) or after
//! [`LOCK_WAIT`]. Names are stored percent-encoded, so any lock name is a
//! safe file name.
//!
//! Nothing in the directory is reached through a link, nor is anything
//! but what the store writes there read (`nofollow.rs`): whoever may write
//! to the directory could otherwise make a root `run` write or read a file
//! anywhere. Files take the directory's group and permissions, so a
//! group-owned directory works for every member.
//!
//! The record logic here reaches the files only through [`Dir`] (in
//! `dir.rs`; [`LocalDir`] is the real directory) and the host only through
//! [`Host`] (`sys::host`; [`LocalHost`] is this host), so that the
//! deterministic simulation (`src/sim/dir.rs`) runs it unchanged over an
//! in-memory directory on a simulated host.

pub(crate) mod dir;
mod nofollow;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::boottime::BootInstant;
use crate::clock::{ServerClock, local_wall_ms};
use crate::error::{Error, Result};
use crate::info::LockInfo;
use crate::protocol::expiry::{EXPIRY_MARGIN_MS, Stamp};
use crate::protocol::record::{LeaseRecord, RecordState};
use crate::protocol::slots::{Now, Slots};
use crate::request::{AcquireRequest, Lease};
use crate::store::cas::{self, CasStore, Outcome};

pub use crate::sys::host::{Host, Liveness, LocalHost, ProcId};
pub use dir::{Cancel, Dir, LocalDir};

/// How long an operation waits for another process to let go of the
/// directory lock before it reports the store unavailable. Every change
/// holds it for a few milliseconds; a wait this long means a process is
/// stopped or stuck while holding it.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long a waiter must have seen a `run` holder dead before it takes the
/// lock: the time its watchdog has to kill what is left of the command's
/// process group (the parent-death signal reaches only the command itself).
pub const EXITED_HOLDER_GRACE: Duration = Duration::from_secs(1);

/// One lock's file: the JSON lease record shared with S3, plus the
/// boot-time stamp that the directory store judges by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The record as on S3; its `acquired_ms`/`expires_ms` are wall-clock
    /// times for people (and for records written without a boot stamp).
    #[serde(flatten)]
    pub lease: LeaseRecord,
    /// The lease on the host's boot-time clock, and its holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootStamp>,
}

/// A lease on the host's boot-time clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootStamp {
    /// The boot the times below belong to.
    pub boot_id: String,
    /// When this stamp was written: the grant or the last renewal (host
    /// boot-time clock, ms).
    pub stamped_ms: i64,
    /// When the lease expires (host boot-time clock, ms).
    pub expires_ms: i64,
    /// The granting process, when `/proc` could say who it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<ProcId>,
}

impl FileRecord {
    fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads a lock file, never failing: as [`LeaseRecord::decode`], a file
    /// that is not a readable record (nor its boot stamp) becomes a held
    /// stand-in that says what is wrong (DESIGN.md, "Unreadable records"),
    /// whose lease id is derived from the file's content, so that
    /// `release --force` can free it and nobody takes it over.
    fn decode(bytes: &[u8], name: &str) -> Self {
        let tag = content_tag(bytes);
        let lease = LeaseRecord::decode(bytes, name, &tag);
        if lease.problem.is_some() {
            return FileRecord { lease, boot: None };
        }
        let boot = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("boot").cloned())
            .filter(|b| !b.is_null());
        match boot.map(serde_json::from_value::<BootStamp>) {
            None => FileRecord { lease, boot: None },
            Some(Ok(b)) => FileRecord {
                lease,
                boot: Some(b),
            },
            Some(Err(e)) => {
                let mut lease = LeaseRecord::decode(b"", name, &tag);
                lease.problem = Some(format!("not an awsflock lease record: boot: {e}"));
                FileRecord { lease, boot: None }
            }
        }
    }

    /// The boot-time stamp, if it belongs to this boot (and so can be
    /// compared with this host's boot-time clock).
    fn this_boot<H: Host>(&self) -> Option<&BootStamp> {
        self.boot
            .as_ref()
            .filter(|b| Some(b.boot_id.as_str()) == H::boot_id())
    }

    fn held(&self) -> bool {
        self.lease.state == RecordState::Held
    }
}

/// A boot-time stamp for a lease of `lease` from now, or `None` where the
/// boot id cannot be read (the wall clock is then all there is).
fn stamp_boot<H: Host>(lease: Duration, holder: Option<ProcId>) -> Option<BootStamp> {
    let now = H::host_ms_now_ceil();
    Some(BootStamp {
        boot_id: H::boot_id()?.to_string(),
        stamped_ms: now,
        expires_ms: now.saturating_add(lease.as_millis() as i64),
        holder,
    })
}

/// The file store: its record logic over the files of `D` ([`LocalDir`],
/// a real directory, but for the simulation), judged by the facts of the
/// host `H` ([`LocalHost`], but for the simulation). Cloning is cheap and
/// shares everything.
pub struct FileStore<D: Dir = LocalDir, H: Host = LocalHost> {
    inner: Arc<Inner<D, H>>,
}

impl<D: Dir, H: Host> Clone for FileStore<D, H> {
    fn clone(&self) -> Self {
        FileStore {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<D, H> {
    dir: D,
    /// This host and process.
    facts: H,
    host: String,
    clock: ServerClock,
    /// Leases whose `run` holder was seen dead, and when first.
    exits: std::sync::Mutex<std::collections::HashMap<String, BootInstant>>,
}

/// Encodes a lock name as a file name: bytes outside `[A-Za-z0-9_-]` (and a
/// leading `.`) become `%XX`; a result over 200 bytes is cut and suffixed
/// with a hash of the whole name, so distinct names stay distinct. No name
/// starts with `.`, so the store's own files (`.awsflock.lock`, `.fence`,
/// `.tmp-*`) never collide with a lock's.
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
        // FNV-1a 64 of the name's bytes: stable across releases, unlike
        // std's hasher (`write`, not `write_str`, which appends a byte).
        let mut hasher = fnv::FnvHasher::default();
        std::hash::Hasher::write(&mut hasher, name.as_bytes());
        let h = std::hash::Hasher::finish(&hasher);
        let mut cut = 180;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out = format!("{}~{h:016x}", &out[..cut]);
    }
    out
}

/// One `-v` line per change, in the same shape as the network stores'.
fn log_op(op: &str, outcome: &str, started: BootInstant) {
    let ms = started.elapsed().as_millis() as u64;
    tracing::debug!(target: "awsflock::store", %op, %outcome, ms, "store_request");
}

fn not_held(name: &str, lease_id: &str) -> Error {
    Error::NotHeld {
        name: name.to_string(),
        lease_id: lease_id.to_string(),
        detail: String::new(),
    }
}

impl FileStore {
    /// Opens the store in `dir` (which `table-create` creates).
    pub fn open(dir: PathBuf) -> Result<Self> {
        Ok(Self::over(LocalDir::new(dir), LocalHost))
    }
}

impl<D: Dir, H: Host> FileStore<D, H> {
    /// The store over the files of `dir`, on the host `facts`.
    pub fn over(dir: D, facts: H) -> Self {
        FileStore {
            inner: Arc::new(Inner {
                dir,
                facts,
                host: gethostname::gethostname().to_string_lossy().into_owned(),
                clock: ServerClock::new(),
                exits: Default::default(),
            }),
        }
    }

    fn dir(&self) -> &D {
        &self.inner.dir
    }

    /// Runs `f` as one operation of the directory ([`Dir::run`]: in the real
    /// store, on a thread of its own, so that nothing it waits for (the
    /// directory lock, the disk) holds up the runtime and its timers). If
    /// this future is dropped, `f` is told through its [`Cancel`].
    async fn off_runtime<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Self, &Cancel) -> Result<T> + Send + 'static,
    {
        let me = self.clone();
        self.dir().run(move |cancel| f(&me, cancel)).await
    }

    /// Takes the directory's exclusive lock; released when the guard drops.
    fn lock_dir(&self, cancel: &Cancel) -> Result<D::Guard> {
        self.dir().lock(cancel)
    }

    fn read_record(&self, name: &str) -> Result<Option<FileRecord>> {
        // An unreadable file is a held stand-in that says what is wrong.
        Ok(self
            .dir()
            .read_record(name)?
            .map(|bytes| FileRecord::decode(&bytes, name)))
    }

    fn read_mark(&self, name: &str) -> Result<u64> {
        self.dir().read_mark(name)
    }

    /// Past its expiry (plus the margin) on the host's boot-time clock. A
    /// stamp from another boot is not judged here (see [`Self::expiry_ms`]).
    fn boot_expired(rec: &FileRecord) -> bool {
        rec.this_boot::<H>()
            .is_some_and(|b| H::host_ms(BootInstant::now()) > b.expires_ms + EXPIRY_MARGIN_MS)
    }

    /// A `run` holder that provably no longer runs: same host, same boot,
    /// same pid namespace, and its pid exited or names another process.
    fn holder_exited(&self, rec: &FileRecord) -> bool {
        let (Some(b), Some(pid)) = (rec.this_boot::<H>(), rec.lease.pid) else {
            return false;
        };
        rec.lease.supervised
            && rec.lease.host.as_deref() == Some(self.inner.host.as_str())
            && b.holder.as_ref().is_some_and(|id| {
                self.inner.facts.liveness(pid, id) == Liveness::Dead
                    // Its watchdog kills what is left of the command's group
                    // when it sees the holder die, then exits: until it has,
                    // a grandchild of the command may still be running.
                    && !self.inner.facts.watchdog_running(pid, id.start)
            })
    }

    /// A `run` holder seen exited for [`EXITED_HOLDER_GRACE`] by this process.
    fn holder_dead(&self, rec: &FileRecord) -> bool {
        if !self.holder_exited(rec) {
            return false;
        }
        let mut exits = self.inner.exits.lock().unwrap_or_else(|e| e.into_inner());
        let first = *exits
            .entry(rec.lease.lease_id.clone())
            .or_insert_with(BootInstant::now);
        first.elapsed() >= EXITED_HOLDER_GRACE
    }

    /// The lease a holder may act on for `rec`: its deadline is the expiry
    /// stored in the record (never a fresh stamp), on the boot-time clock.
    fn lease_of(rec: &FileRecord, duration: Duration) -> Lease {
        let wall = local_wall_ms();
        let now = BootInstant::now();
        let (deadline, expires_at_ms) = match rec.this_boot::<H>() {
            Some(b) => {
                let left = b.expires_ms - H::host_ms(now);
                (H::instant_at(b.expires_ms), wall + left)
            }
            // No boot id on this system: the wall clock is all there is.
            None => {
                let left = (rec.lease.expires_ms - wall).clamp(0, duration.as_millis() as i64);
                (
                    now + Duration::from_millis(left as u64),
                    rec.lease.expires_ms,
                )
            }
        };
        Lease {
            name: rec.lease.name.clone(),
            lease_id: rec.lease.lease_id.clone(),
            fence: rec.lease.fence,
            duration,
            acquired_at_ms: Some(rec.lease.acquired_ms),
            expires_at_ms,
            deadline,
            slotted: false,
        }
    }
}

impl<D: Dir, H: Host> FileStore<D, H> {
    fn grant_locked(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        st: &Stamp,
        cancel: &Cancel,
    ) -> Result<Outcome<FileRecord>> {
        let started = BootInstant::now();
        let _guard = self.lock_dir(cancel)?;
        let cur = self.read_record(&req.name)?;
        if let Some(rec) = &cur {
            // A holder table (even one with only waiters left) is granted
            // from only through the table, in turn.
            if cas::judge(self, Some(rec)) == crate::protocol::expiry::Judged::Held
                || Self::slots_of(rec).is_some()
            {
                log_op("grant", "condition_failed", started);
                return Ok(Outcome::Lost(cur));
            }
        }
        if cancel.is_set() {
            // Nobody waits for this grant any more: take nothing.
            return Err(Error::Unavailable("gave up granting".into()));
        }
        let fence = self
            .read_mark(&req.name)?
            .max(cur.as_ref().and_then(|r| r.lease.fence).unwrap_or(0))
            + 1;
        self.dir().write_mark(&req.name, fence)?;
        let mut lease = LeaseRecord::grant(req, lease_id, st, Some(fence), None);
        lease.pid = Some(self.inner.facts.pid());
        let rec = FileRecord {
            lease,
            boot: stamp_boot::<H>(req.lease, self.inner.facts.me()),
        };
        self.dir().write_record(&req.name, &rec.to_json())?;
        log_op("grant", "ok", started);
        Ok(Outcome::Granted(Some(fence)))
    }

    /// Renews under the directory lock; returns the record as stored.
    fn renew_locked(
        &self,
        lease: &Lease,
        duration: Duration,
        next_id: &str,
        cancel: &Cancel,
    ) -> Result<FileRecord> {
        let started = BootInstant::now();
        let _guard = self.lock_dir(cancel)?;
        let Some(cur) = self.read_record(&lease.name)? else {
            log_op("renew", "condition_failed", started);
            return Err(not_held(&lease.name, &lease.lease_id));
        };
        if cur.lease.lease_id == next_id {
            // An earlier attempt of this renewal landed: what it stored is
            // the lease, with the expiry it stamped then.
            log_op("renew", "ok", started);
            return Ok(cur);
        }
        if cur.lease.lease_id != lease.lease_id || !cur.held() {
            log_op("renew", "condition_failed", started);
            return Err(not_held(&lease.name, &lease.lease_id));
        }
        if let Some(by) = &cur.lease.revoked_by {
            log_op("renew", "revoked", started);
            return Err(Error::NotHeld {
                name: lease.name.clone(),
                lease_id: lease.lease_id.clone(),
                detail: crate::protocol::revoke::refusal_detail(by),
            });
        }
        if cancel.is_set() {
            return Err(Error::Unavailable("gave up renewing".into()));
        }
        let st = Stamp::now(&self.inner.clock, duration);
        let renewed = FileRecord {
            lease: cur.lease.renewed(next_id, &st, duration.as_secs()),
            boot: stamp_boot::<H>(
                duration,
                cur.this_boot::<H>().and_then(|b| b.holder.clone()),
            ),
        };
        self.dir().write_record(&lease.name, &renewed.to_json())?;
        log_op("renew", "ok", started);
        Ok(renewed)
    }

    fn release_locked(&self, name: &str, lease_id: &str, cancel: &Cancel) -> Result<()> {
        let started = BootInstant::now();
        let _guard = self.lock_dir(cancel)?;
        match self.read_record(name)? {
            Some(cur) if cur.lease.lease_id == lease_id && cur.held() => {
                let nonce = uuid::Uuid::new_v4().to_string();
                let released = FileRecord {
                    lease: cur.lease.released(&nonce, local_wall_ms()),
                    boot: cur.boot,
                };
                self.dir().write_record(name, &released.to_json())?;
                log_op("release", "ok", started);
                Ok(())
            }
            _ => {
                log_op("release", "condition_failed", started);
                Err(not_held(name, lease_id))
            }
        }
    }

    /// Marks the lease `lease_id` revoked under the directory lock, if the
    /// record still holds it.
    fn revoke_locked(&self, name: &str, lease_id: &str, by: &str, cancel: &Cancel) -> Result<()> {
        let started = BootInstant::now();
        let _guard = self.lock_dir(cancel)?;
        match self.read_record(name)? {
            Some(cur) if cur.lease.lease_id == lease_id && cur.held() => {
                let revoked = FileRecord {
                    lease: cur.lease.revoked(by),
                    boot: cur.boot,
                };
                self.dir().write_record(name, &revoked.to_json())?;
                log_op("revoke", "ok", started);
                Ok(())
            }
            _ => {
                log_op("revoke", "condition_failed", started);
                Err(not_held(name, lease_id))
            }
        }
    }

    fn list_records(&self) -> Result<Vec<FileRecord>> {
        Ok(self
            .dir()
            .list_records()?
            .into_iter()
            .map(|(stem, bytes)| FileRecord::decode(&bytes, &stem))
            .collect())
    }
}

#[async_trait::async_trait]
impl<D: Dir, H: Host> CasStore for FileStore<D, H> {
    type Record = FileRecord;

    fn describe_store(&self) -> String {
        self.dir().describe()
    }

    fn clock(&self) -> &ServerClock {
        &self.inner.clock
    }

    /// Under the directory lock the record is judged afresh, so the grant is
    /// a true compare-and-swap whatever the caller saw. The token is one more
    /// than both the record's and the high-water mark's, and both are written.
    async fn grant(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        _seen: Option<&Option<FileRecord>>,
        st: &Stamp,
    ) -> Result<Outcome<FileRecord>> {
        let (req, lease_id, st) = (req.clone(), lease_id.to_string(), *st);
        self.off_runtime(move |s, cancel| s.grant_locked(&req, &lease_id, &st, cancel))
            .await
    }

    async fn read(&self, name: &str) -> Result<Option<FileRecord>> {
        let name = name.to_string();
        self.off_runtime(move |s, _| s.read_record(&name)).await
    }

    fn lease_id_of(rec: &FileRecord) -> Option<String> {
        Some(rec.lease.lease_id.clone())
    }

    fn is_released(rec: &FileRecord) -> bool {
        rec.lease.state == RecordState::Released
    }

    /// The wall-clock expiry, only for a record that the boot-time clock
    /// cannot judge: written without a boot stamp, or in another boot (an
    /// earlier boot of this host, or another host sharing the directory).
    /// The rest expire through [`CasStore::holder_gone`].
    fn expiry_ms(rec: &FileRecord) -> Option<i64> {
        match rec.this_boot::<H>() {
            Some(_) => None,
            None => Some(rec.lease.expires_ms),
        }
    }

    /// Gone: expired on the host's boot-time clock, or a `run` holder that
    /// provably no longer runs.
    fn holder_gone(&self, rec: &FileRecord) -> bool {
        rec.held() && (Self::boot_expired(rec) || self.holder_dead(rec))
    }

    fn info(&self, name: &str, rec: Option<&FileRecord>) -> LockInfo {
        let Some(r) = rec else {
            return crate::protocol::expiry::absent_info(name);
        };
        // For people, a holder that exited holds nothing (no grace).
        let held = !Self::is_released(r)
            && !cas::is_expired(self, r)
            && !Self::boot_expired(r)
            && !self.holder_exited(r);
        match r.this_boot::<H>() {
            Some(b) => {
                // "Acquired" is the wall-clock time written at the grant;
                // the expiry is shown on today's wall clock, from the time
                // left on the boot-time clock.
                let now = H::host_ms(BootInstant::now());
                let wall = local_wall_ms();
                let mut info = r.lease.info(held, Some(b.expires_ms - now));
                if info.expires_at_ms.is_some() {
                    info.expires_at_ms = Some(wall + (b.expires_ms - now));
                }
                info
            }
            None => r
                .lease
                .info(held, Some(r.lease.expires_ms - self.inner.clock.lower_ms())),
        }
    }

    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        let (held, next) = (lease.clone(), next_id.to_string());
        let rec = self
            .off_runtime(move |s, cancel| s.renew_locked(&held, duration, &next, cancel))
            .await?;
        Ok(Self::lease_of(&rec, duration))
    }

    async fn release_id(&self, name: &str, lease_id: &str) -> Result<()> {
        let (name, id) = (name.to_string(), lease_id.to_string());
        self.off_runtime(move |s, cancel| s.release_locked(&name, &id, cancel))
            .await
    }

    fn supervised(rec: &FileRecord) -> bool {
        rec.lease.supervised
    }

    fn revoked_by(rec: &FileRecord) -> Option<String> {
        rec.lease.revoked_by.clone()
    }

    /// In place: the record is the lease (holder tables are for semaphores
    /// and shared locks here; waiters poll a single holder's record).
    async fn revoke_record(&self, name: &str, rec: &FileRecord, by: &str) -> Result<bool> {
        let (name, id, by) = (name.to_string(), rec.lease.lease_id.clone(), by.to_string());
        self.off_runtime(move |s, cancel| s.revoke_locked(&name, &id, &by, cancel))
            .await?;
        Ok(true)
    }

    async fn records(&self) -> Result<Vec<(String, FileRecord)>> {
        let records = self.off_runtime(|s, _| s.list_records()).await?;
        Ok(records
            .into_iter()
            .map(|r| (r.lease.name.clone(), r))
            .collect())
    }

    async fn create_store(&self) -> Result<()> {
        self.off_runtime(|s, _| s.dir().create()).await
    }

    /// A table written in another boot of the host holds nobody: every
    /// process of that boot is gone (the directory store is for one host).
    fn slots_of(rec: &FileRecord) -> Option<Slots> {
        let mut t = rec.lease.current_slots()?.clone();
        if t.boot_id.as_deref() != H::boot_id() {
            t.holders.clear();
            t.queue.clear();
        }
        Some(t)
    }

    async fn fence_floor(&self, name: &str) -> Result<(u64, Option<u64>)> {
        let name = name.to_string();
        let mark = self.off_runtime(move |s, _| s.read_mark(&name)).await?;
        Ok((mark + 1, None))
    }

    /// Tables are judged on the host's boot-time clock, as leases are.
    fn table_now(&self) -> Now {
        let lo = H::host_ms(BootInstant::now());
        Now {
            lo,
            hi: H::host_ms_now_ceil().max(lo),
        }
    }

    fn table_wall_ms(&self, ms: i64) -> i64 {
        local_wall_ms() + (ms - H::host_ms(BootInstant::now()))
    }

    fn table_deadline(&self, expires_ms: i64, _sent: BootInstant, _lease: Duration) -> BootInstant {
        H::instant_at(expires_ms)
    }

    async fn write_slots(
        &self,
        name: &str,
        seen: Option<&FileRecord>,
        table: &Slots,
    ) -> Result<std::result::Result<(), Option<FileRecord>>> {
        let (name, seen_id, table) = (
            name.to_string(),
            seen.map(|r| r.lease.lease_id.clone()),
            table.clone(),
        );
        self.off_runtime(move |s, cancel| s.write_slots_locked(&name, seen_id, table, cancel))
            .await
    }
}

impl<D: Dir, H: Host> FileStore<D, H> {
    /// Writes a holder table under the directory lock, if the record is
    /// still the one seen (by lease id; `None`: absent).
    fn write_slots_locked(
        &self,
        name: &str,
        seen_id: Option<String>,
        mut table: Slots,
        cancel: &Cancel,
    ) -> Result<std::result::Result<(), Option<FileRecord>>> {
        let started = BootInstant::now();
        let _guard = self.lock_dir(cancel)?;
        let cur = self.read_record(name)?;
        if cur.as_ref().map(|r| r.lease.lease_id.clone()) != seen_id {
            log_op("write_slots", "condition_failed", started);
            return Ok(Err(cur));
        }
        if cancel.is_set() {
            return Err(Error::Unavailable("gave up writing".into()));
        }
        let Some(boot_id) = H::boot_id() else {
            return Err(Error::usage(
                "this system has no boot id (/proc/sys/kernel/random/boot_id), which the \
                 directory store's semaphores and shared locks are judged by; use a plain lock",
            ));
        };
        table.boot_id = Some(boot_id.to_string());
        let last = table.next_fence.saturating_sub(1);
        if last > self.read_mark(name)? {
            self.dir().write_mark(name, last)?;
        }
        let host_now = H::host_ms(BootInstant::now());
        let wall = local_wall_ms();
        let expires = table
            .holders
            .iter()
            .map(|h| h.expires_ms)
            .max()
            .unwrap_or(host_now);
        let rec = FileRecord {
            lease: LeaseRecord::of_table(name, &table, wall, wall + (expires - host_now).max(0)),
            boot: Some(BootStamp {
                boot_id: boot_id.to_string(),
                stamped_ms: host_now,
                expires_ms: expires,
                holder: None,
            }),
        };
        self.dir().write_record(name, &rec.to_json())?;
        log_op("write_slots", "ok", started);
        Ok(Ok(()))
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
mod tests;
