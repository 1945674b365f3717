//! Carries out each command: turns parsed options into library calls, and
//! results into output and an exit code.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::cli::{
    AcquireArgs, Cli, Command, Global, ListArgs, LockArgs, ReleaseArgs, RenewArgs, StatusArgs,
};
use crate::error::{Error, Result};
use crate::exit;
use crate::lease::LockGuard;
use crate::output::{say, say_prompt};
use crate::store::{self, AcquireRequest, Lease, LockInfo, LockStore, OnWait, StoreOptions};
use crate::supervise;

/// Default lease for `acquire` and `renew`, as in awsflock 0.2.0.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(2 * 3600);
/// Default lease for `run`: short, because it is renewed while the command runs.
pub(crate) const DEFAULT_RUN_LEASE: Duration = Duration::from_secs(60);
/// Default wait of `acquire` for a held lock, as in awsflock 0.2.0. `run`
/// waits until it gets the lock, as flock(1), `consul lock` and `etcdctl
/// lock` do (a CI system has its own job timeout).
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// When a waiter off a terminal first says it is still waiting, and how
/// often after that: often enough for a CI system that kills a step silent
/// for ten minutes, rarely enough not to flood a log.
const STILL_WAITING_FIRST: Duration = Duration::from_secs(60);
const STILL_WAITING_EVERY: Duration = Duration::from_secs(300);
/// For tests only (not documented to users): a duration that replaces
/// both intervals above, so that a test need not wait minutes.
const STILL_WAITING_TEST_ENV: &str = "AWSFLOCK_TEST_STILL_WAITING_EVERY";

/// Runs the parsed command line and returns the exit code.
pub(crate) async fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::TableCreate => table_create(g).await,
        Command::Acquire(a) => acquire(g, a).await,
        Command::Renew(r) => renew(g, r).await,
        Command::Release(r) => release(g, r).await,
        Command::List(l) => list(g, l).await,
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
        Command::Run(r) => run_command(g, r).await,
        Command::Status(s) => status(g, s).await,
    }
}

/// `table-create`: makes the store ready (a table, a bucket, a directory).
async fn table_create(g: &Global) -> Result<i32> {
    let store = open(g).await?;
    store.create().await?;
    say!("awsflock: {} is ready", store.describe());
    Ok(exit::OK)
}

/// `acquire`: takes the lock and prints the lease (0.2.0's LEASE_ID).
async fn acquire(g: &Global, a: AcquireArgs) -> Result<i32> {
    let store = open(g).await?;
    let req = request(&a.name, &a.lock, DEFAULT_LEASE, Some(DEFAULT_WAIT), g)?;
    // A signal ends the wait holding nothing (a queued etcd key is
    // revoked, a grant that raced with it is released), exit 128+N.
    let mut signals = supervise::unix::signals()
        .map_err(|e| Error::store(format!("cannot handle signals: {e}")))?;
    let lease = store.acquire(&req, next_signal(&mut signals)).await;
    waiting_done();
    match lease {
        Ok(lease) => print_lease(&lease, a.json, &req.owner, req.reason.as_deref())?,
        // -E/--conflict-exit-code, as flock(1)'s; -q: the exit code says it.
        Err(e @ Error::NotAcquired { .. }) => {
            if !quiet_conflict(g, &e) {
                say!("awsflock: error: {}", exit::message(&e));
            }
            return Ok(a.conflict_exit_code);
        }
        Err(e) => return Err(e),
    }
    Ok(exit::OK)
}

/// `renew`: extends a lease by its id, as 0.2.0 does.
async fn renew(g: &Global, r: RenewArgs) -> Result<i32> {
    store::validate_name(&r.name)?;
    let store = open(g).await?;
    let lease = store.lease_from_id(&r.name, &r.lease_id);
    let next = uuid::Uuid::new_v4().to_string();
    let renewed = store
        .renew(&lease, r.lease_duration.unwrap_or(DEFAULT_LEASE), &next)
        .await?;
    // The lease keeps its owner and reason; read them back for
    // --json (as `status` shows them) and to answer 0.2.0's --owner.
    let (mut owner, mut reason) = (None, None);
    if r.json || r.owner.is_some() {
        match store.inspect(&r.name).await {
            Ok(info) if info.lease_id.as_deref() == Some(renewed.lease_id.as_str()) => {
                (owner, reason) = (info.owner, info.reason);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the renewed lease back"),
        }
    }
    if let (Some(asked), Some(kept)) = (r.owner.as_deref(), owner.as_deref()) {
        if asked != kept && !g.quiet {
            say!(
                "awsflock: note: the lease keeps its owner {kept:?}; --owner {asked:?} is not applied on renew"
            );
        }
    }
    print_lease(
        &renewed,
        r.json,
        owner.as_deref().unwrap_or(""),
        reason.as_deref(),
    )?;
    Ok(exit::OK)
}

/// `release`: by lease id, or `--force` without one.
async fn release(g: &Global, r: ReleaseArgs) -> Result<i32> {
    store::validate_name(&r.name)?;
    let store = open(g).await?;
    match (&r.lease_id, r.force) {
        (Some(id), _) => store.release(&r.name, id).await?,
        (None, _) => return force_release(store.as_ref(), &r).await,
    }
    Ok(exit::OK)
}

/// `list`: every held lock.
async fn list(g: &Global, l: ListArgs) -> Result<i32> {
    let store = open(g).await?;
    let locks = store.list().await?;
    if l.json {
        let all: Vec<_> = locks.iter().map(info_json).collect();
        out(&serde_json::Value::Array(all).to_string())?;
    } else if locks.is_empty() {
        say!("awsflock: no lock is held in {}", store.describe());
    } else {
        out(&list_table(&locks))?;
    }
    Ok(exit::OK)
}

/// `completions SHELL`.
fn completions(shell: clap_complete::Shell) -> Result<i32> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "awsflock", &mut buf);
    out(String::from_utf8_lossy(&buf).trim_end())?;
    Ok(exit::OK)
}

/// `man`: the man page.
fn man() -> Result<i32> {
    let page = man_page().map_err(|e| Error::store(format!("cannot render the man page: {e}")))?;
    out(page.trim_end())?;
    Ok(exit::OK)
}

/// `status NAME`: one lock, for people or as JSON.
async fn status(g: &Global, s: StatusArgs) -> Result<i32> {
    store::validate_name(&s.name)?;
    let store = open(g).await?;
    let info = store.inspect(&s.name).await?;
    if s.json {
        out(&serde_json::to_string(&info_json(&info)).unwrap_or_default())?;
    } else {
        out(&describe_info(&info))?;
    }
    Ok(exit::OK)
}

async fn run_command(g: &Global, r: crate::cli::RunArgs) -> Result<i32> {
    let (program, args) = match (&r.shell, r.cmd.split_first()) {
        (Some(script), _) => ("sh".into(), vec!["-c".into(), script.into()]),
        (None, Some((p, rest))) => (p.clone(), rest.to_vec()),
        (None, None) => {
            let name = shell_word(&r.name);
            return Err(Error::usage(format!(
                "no command given; give one: `awsflock run {name} -- CMD ARGS...` or `awsflock run {name} -c 'shell command'`"
            )));
        }
    };
    // From here on awsflock may hold a lock: a write to the terminal from
    // the background (`stty tostop`: the waiting line, a message) must not
    // stop it with SIGTTOU. The command gets the caller's disposition back.
    supervise::unix::ignore_ttou();
    let mut req = request(&r.name, &r.lock, DEFAULT_RUN_LEASE, None, g)?;
    req.supervised = true;
    let renew_every = r.renew_every.unwrap_or(req.lease / 3);
    if renew_every >= req.lease {
        return Err(Error::usage(format!(
            "--renew-every ({}s) must be shorter than the lease ({}s)",
            renew_every.as_secs_f64(),
            req.lease.as_secs()
        )));
    }
    // Signals are caught from here on: one arriving while we wait ends the
    // wait, holding nothing; one arriving later goes to the command.
    let mut signals = supervise::unix::signals()
        .map_err(|e| Error::store(format!("cannot handle signals: {e}")))?;
    let store = open(g).await?;
    let acquired = LockGuard::acquire(store, &req, renew_every, next_signal(&mut signals)).await;
    waiting_done();
    let guard = match acquired {
        Ok(guard) => guard,
        // -q: silent, as `flock -n -E 0` is (cron mails every line).
        Err(e @ Error::NotAcquired { .. }) => {
            if !quiet_conflict(g, &e) {
                say!(
                    "awsflock: {}; the command was not started",
                    exit::message(&e)
                );
            }
            return Ok(r.conflict_exit_code);
        }
        Err(e) => return Err(e),
    };
    let opts = supervise::RunOptions {
        program,
        args,
        kill_after: r.kill_after,
        renew_every,
        lost_exit_code: r.lost_exit_code,
        leave_leftovers: r.leave_leftovers,
    };
    Ok(supervise::run(guard, opts, &mut signals).await)
}

/// `word` as a shell reads it back: as is when plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-/:@+=,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Whether a lock not acquired goes unsaid: with `-q`, unless the record
/// cannot be read (that one needs `release --force`, and no wait will end it).
fn quiet_conflict(g: &Global, e: &Error) -> bool {
    let unreadable = matches!(e, Error::NotAcquired { holder: Some(h), .. } if h.problem.is_some());
    g.quiet && !unreadable
}

/// The next forwarded signal, as the cancellation of a wait.
fn next_signal(signals: &mut signal_hook_tokio::Signals) -> store::BoxFuture<'_, i32> {
    use futures_util::StreamExt;
    Box::pin(async move { signals.next().await.unwrap_or(libc::SIGTERM) })
}

/// The store options: [`StoreOptions::from_env`], which a library user
/// calls too, with the global flags on top (clap reads the same variables
/// for the flags that have one; `cli::tests` checks that the lists agree).
pub(crate) fn store_options(g: &Global) -> StoreOptions {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let mut o = StoreOptions::from_env();
    let or = |flag: &Option<String>, env: Option<String>| flag.clone().or(env);
    o.url = or(&g.backend, o.url);
    o.table = or(&g.table, o.table);
    o.endpoint_url = nonempty(&g.endpoint_url).or(o.endpoint_url);
    o.region = nonempty(&g.region);
    o.profile = nonempty(&g.profile);
    o.etcd.user = or(&g.etcd_user, o.etcd.user);
    o.etcd.password = or(&g.etcd_password, o.etcd.password);
    o.etcd.cacert = g.etcd_cacert.clone().or(o.etcd.cacert);
    o.etcd.cert = g.etcd_cert.clone().or(o.etcd.cert);
    o.etcd.key = g.etcd_key.clone().or(o.etcd.key);
    o
}

async fn open(g: &Global) -> Result<Arc<dyn LockStore>> {
    store::open(&store_options(g)).await
}

/// Builds an acquire request from `acquire`/`run` options; `default_wait`
/// applies when no wait option is given (`None`: forever).
pub(crate) fn request(
    name: &str,
    a: &LockArgs,
    default_lease: Duration,
    default_wait: Option<Duration>,
    g: &Global,
) -> Result<AcquireRequest> {
    store::validate_name(name)?;
    let wait = if a.no_wait {
        Some(Duration::ZERO)
    } else if let Some(t) = a.timeout {
        Some(t) // flock(1)'s -w: 0 does not wait
    } else {
        a.wait_time.map_or(default_wait, |w| w.0)
    };
    let on_wait: Option<OnWait> = if g.quiet {
        None
    } else {
        Some(waiting_display(name))
    };
    Ok(AcquireRequest {
        name: name.to_string(),
        lease: a.lease_duration.unwrap_or(default_lease),
        wait,
        owner: a
            .owner
            .clone()
            .filter(|o| !o.is_empty())
            .unwrap_or_else(default_owner),
        reason: a.reason.clone().filter(|r| !r.is_empty()),
        on_wait,
        supervised: false,
        max_holders: a.max_holders,
        shared: a.shared,
    })
}

/// What a waiter shows on stderr: on a terminal, one live line redrawn in
/// place, drawn only once the lock was found held (a free lock draws
/// nothing); otherwise one line, another each time the holder changes, and
/// a "still waiting" line now and then ([`WaitLog`]).
fn waiting_display(name: &str) -> OnWait {
    let name = name.to_string();
    if stderr_is_terminal() {
        Arc::new(move |info: &LockInfo| {
            let mut slot = WAIT_BAR.lock().unwrap_or_else(|e| e.into_inner());
            let bar = slot.get_or_insert_with(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_message(waiting_line(&name, info));
                bar.enable_steady_tick(Duration::from_millis(250));
                bar
            });
            bar.set_message(waiting_line(&name, info));
        })
    } else {
        let log = std::sync::Mutex::new(WaitLog::new(still_waiting_intervals()));
        Arc::new(move |info: &LockInfo| {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.seen(&name, info);
        })
    }
}

/// The "still waiting" intervals: [`STILL_WAITING_FIRST`] and
/// [`STILL_WAITING_EVERY`], or both [`STILL_WAITING_TEST_ENV`] in tests.
fn still_waiting_intervals() -> (Duration, Duration) {
    std::env::var(STILL_WAITING_TEST_ENV)
        .ok()
        .and_then(|v| crate::duration::parse_positive(&v).ok())
        .map_or((STILL_WAITING_FIRST, STILL_WAITING_EVERY), |d| (d, d))
}

/// A waiter's lines in a log: one when the holder changes, and one after
/// the first interval, then every second interval, while it stays the same
/// (a CI system kills a step that prints nothing for ten minutes).
struct WaitLog {
    intervals: (Duration, Duration),
    /// When the first poll found the lock held.
    started: Option<std::time::Instant>,
    next_notice: Option<std::time::Instant>,
    last: Option<(Option<String>, Option<i64>)>,
}

impl WaitLog {
    fn new(intervals: (Duration, Duration)) -> Self {
        WaitLog {
            intervals,
            started: None,
            next_notice: None,
            last: None,
        }
    }

    fn seen(&mut self, name: &str, info: &LockInfo) {
        let now = std::time::Instant::now();
        let started = *self.started.get_or_insert(now);
        let key = Some((info.owner.clone(), info.acquired_at_ms));
        if self.last != key {
            say!("awsflock: {}", waiting_line(name, info));
            self.last = key;
            self.next_notice.get_or_insert(started + self.intervals.0);
        } else if self.next_notice.is_some_and(|t| now >= t) {
            let waited = crate::duration::short(Duration::from_secs(
                now.duration_since(started).as_secs().max(1),
            ));
            say!(
                "awsflock: still waiting for {name} after {waited}: {}",
                holder_line(info)
            );
            self.next_notice = Some(now + self.intervals.1);
        }
    }
}

/// The live waiting line on a terminal, once one is drawn.
static WAIT_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Clears the live waiting line, if one was drawn.
pub(crate) fn waiting_done() {
    let bar = WAIT_BAR.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// `release --force`: a holder supervised by `run` is revoked and the
/// lock handed on once it stopped its command and confirmed, or its lease
/// ended (waited for unless `--no-wait`); a lease nothing supervises, or
/// any with `--immediately`, is released at once (DESIGN.md, "Forced
/// release").
async fn force_release(store: &dyn LockStore, r: &ReleaseArgs) -> Result<i32> {
    use store::revoke::{Force, ForceMode, Forced};
    let name = r.name.as_str();
    let info = store.inspect(name).await?;
    if !info.held {
        say!("awsflock: {name} is not held; nothing to release");
        return Ok(exit::NOT_HELD);
    }
    say!(
        "awsflock: {}",
        describe_info(&info).replace('\n', "\nawsflock: ")
    );
    let mode = if r.immediately {
        ForceMode::Immediately
    } else {
        ForceMode::Revoke
    };
    let (question, warning) = force_prompt(&info, mode);
    if let Some(w) = &warning {
        say!("awsflock: {w}");
    }
    if !r.yes && std::io::stdin().is_terminal() && stderr_is_terminal() {
        say_prompt!("awsflock: {question} [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            say!("awsflock: not released");
            return Ok(exit::NOT_HELD);
        }
    }
    let holder = |was: &LockInfo| {
        format!(
            "{}{}",
            was.owner
                .as_deref()
                .map(printable)
                .unwrap_or("unknown".into()),
            was.fence
                .map(|f| format!(" (fence {f})"))
                .unwrap_or_default()
        )
    };
    match store.force_release(name, &Force::here(mode)).await? {
        Forced::Released(was) => {
            say!(
                "awsflock: released {name}, which was held by {}",
                holder(&was)
            );
            Ok(exit::OK)
        }
        Forced::Revoked(was) if r.no_wait => {
            say!(
                "awsflock: asked {} to stop; {name} is handed on once it confirms, \
                 or when its lease ends{}",
                holder(&was),
                lease_ends_in(&was)
            );
            Ok(exit::OK)
        }
        Forced::Revoked(was) => wait_handed_on(store, name, &was, &holder(&was)).await,
        Forced::NotHeld => {
            say!("awsflock: {name} was released meanwhile; nothing to do");
            Ok(exit::NOT_HELD)
        }
    }
}

/// The confirmation question of a forced release, and a warning said
/// whether or not it is asked: what happens to the holder's work.
fn force_prompt(info: &LockInfo, mode: store::revoke::ForceMode) -> (String, Option<String>) {
    use store::revoke::ForceMode;
    let name = printable(&info.name);
    let owner = info
        .owner
        .as_deref()
        .map(printable)
        .unwrap_or("its holder".into());
    match (mode, info.supervised) {
        (ForceMode::Revoke, true) => (
            format!(
                "release {name} from {owner}? Its `run` stops its command at its next \
                 renewal and the lock is handed on after that"
            ),
            None,
        ),
        (ForceMode::Revoke, false) => (
            format!("release {name} from {owner} at once?"),
            Some(
                "nothing supervises this lease (acquire, awsflock 0.2.0, etcdctl): \
                 its holder may still be working when the next one starts"
                    .to_string(),
            ),
        ),
        (ForceMode::Immediately, _) => (
            format!("release {name} from {owner} at once?"),
            Some(format!(
                "breaking glass: if {owner} still runs, its work may overlap with the \
                 next holder's until its next renewal"
            )),
        ),
    }
}

/// " (in 12s)": how long the revoked lease still lasts, when known.
fn lease_ends_in(info: &LockInfo) -> String {
    info.expires_in_ms
        .map(|ms| format!(" (in {:.0}s)", (ms.max(0) as f64 / 1000.0).ceil()))
        .unwrap_or_default()
}

/// Waits until a revoked holder confirmed (released) or its lease ended,
/// with a progress line; the lock is then free or handed on.
async fn wait_handed_on(
    store: &dyn LockStore,
    name: &str,
    was: &LockInfo,
    holder: &str,
) -> Result<i32> {
    say!(
        "awsflock: asked {holder} to stop; waiting for it to confirm, \
         at most until its lease ends{}",
        lease_ends_in(was)
    );
    let started = std::time::Instant::now();
    // The lease ends by its expiry on the store's clock; give the holder a
    // generous bound beyond, then stop waiting (the lock frees by itself).
    let limit = Duration::from_millis(was.expires_in_ms.unwrap_or(0).max(0) as u64)
        + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = match store.inspect(name).await {
            Ok(now) => now,
            Err(e) if started.elapsed() < limit => {
                tracing::warn!("{e}; still waiting");
                continue;
            }
            Err(e) => return Err(e),
        };
        if store::revoke::handed_on(&now) {
            let how = match was.expires_in_ms {
                Some(ms) if (started.elapsed().as_millis() as i64) < ms => {
                    "its holder stopped and confirmed"
                }
                _ => "its lease ended",
            };
            say!("awsflock: released {name}: {how}");
            return Ok(exit::OK);
        }
        if started.elapsed() > limit {
            say!(
                "awsflock: {name} is still held by its revoked holder; \
                 it frees itself when the lease expires"
            );
            return Ok(exit::OK);
        }
    }
}

/// `text` with every control character escaped (`\n`, `\u{1b}`): what a
/// store holds is untrusted, and a newline or an escape sequence in an
/// owner or reason must not forge lines or colours on a terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `info` with every text field [`printable`], for people.
fn shown(info: &LockInfo) -> LockInfo {
    let p = |t: &Option<String>| t.as_deref().map(printable);
    LockInfo {
        name: printable(&info.name),
        owner: p(&info.owner),
        reason: p(&info.reason),
        host: p(&info.host),
        client: p(&info.client),
        problem: p(&info.problem),
        lease_id: p(&info.lease_id),
        holders: info
            .holders
            .iter()
            .map(|h| store::HolderInfo {
                owner: printable(&h.owner),
                reason: p(&h.reason),
                host: p(&h.host),
                ..h.clone()
            })
            .collect(),
        ..info.clone()
    }
}

/// "alice", or "alice and 2 more" for a name with several holders.
fn holders_text(info: &LockInfo) -> String {
    let owner = info.owner.clone().unwrap_or_else(|| "unknown".into());
    match info.holders.len() {
        0 | 1 => owner,
        n => format!("{owner} and {} more", n - 1),
    }
}

fn list_table(locks: &[LockInfo]) -> String {
    let locks: Vec<LockInfo> = locks.iter().map(shown).collect();
    let rows: Vec<[String; 8]> = locks
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                if l.holders.len() > 1 {
                    holders_text(l)
                } else {
                    l.owner.clone().unwrap_or_default()
                },
                l.host.clone().unwrap_or_default(),
                match (l.pid, pid_alive(l.host.as_deref(), l.pid)) {
                    (Some(p), Some(false)) => format!("{p} (gone)"),
                    (Some(p), _) => p.to_string(),
                    (None, _) => String::new(),
                },
                l.fence.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                match (expired_note(l), l.expires_in_ms) {
                    (Some(_), _) => "expired".into(),
                    (None, Some(ms)) => {
                        crate::duration::short(Duration::from_millis(ms.max(0) as u64))
                    }
                    (None, None) => String::new(),
                },
                l.waiting.to_string(),
                match (&l.problem, &l.reason) {
                    (Some(p), _) => format!("unreadable record: {p}"),
                    (None, r) => r.clone().unwrap_or_default(),
                },
            ]
        })
        .collect();
    let header = [
        "NAME",
        "OWNER",
        "HOST",
        "PID",
        "FENCE",
        "EXPIRES IN",
        "WAITING",
        "REASON",
    ]
    .map(String::from);
    // Terminal columns, not chars: CJK and emoji take two.
    let cols = |c: &str| unicode_width::UnicodeWidthStr::width(c);
    let mut widths = header.clone().map(|h| cols(&h));
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(cols(c));
        }
    }
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|r| {
            r.iter()
                .zip(widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(cols(c)))))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The host name, as awsflock 0.2.0 defaults `--owner`.
pub(crate) fn default_owner() -> String {
    store::default_owner()
}

/// `waiting for Deploy: held by alice@ci-7 since 10:02 UTC (terraform apply), expires in 1h58m`
pub(crate) fn waiting_line(name: &str, info: &LockInfo) -> String {
    format!("waiting for {}: {}", printable(name), holder_line(info))
}

/// `held by alice@ci-7 since 10:02 UTC (terraform apply), expires in 1h58m`
fn holder_line(info: &LockInfo) -> String {
    let info = &shown(info);
    if !info.held {
        // Free, with waiters ahead of us in the queue.
        return format!("free, {} waiting in turn", info.waiting);
    }
    let mut s = format!("held by {}", holders_text(info));
    if let Some(t) = info.acquired_at_ms {
        s.push_str(&format!(" since {}", clock_time(t)));
    }
    if let Some(r) = &info.reason {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(p) = &info.problem {
        s.push_str(&format!(" (unreadable record: {p})"));
    }
    if let Some(left) = info.expires_in_ms {
        if left > 0 {
            s.push_str(&format!(
                ", expires in {}",
                crate::duration::short(Duration::from_millis(left as u64))
            ));
        } else {
            s.push_str(", lease expired");
        }
    }
    s
}

/// "10:02 UTC" in the local time zone with its abbreviation (what people
/// read on a terminal), or "2026-12-06 10:02 UTC" when that is not today,
/// from ms since the epoch; falls back to UTC when the zone is unknown.
///
/// libc's localtime_r rather than a crate: it is the C library's own answer
/// (TZ, /etc/localtime), the same as date(1) shows. The `time` crate,
/// already in the tree, refuses the local offset in a process with more
/// than one thread (awsflock has the runtime's blocking threads, for DNS),
/// so it would print UTC at random; `jiff` reads the zone itself, but
/// would add its crates for these few characters.
fn clock_time(ms: i64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    match (local_time(ms), local_time(now_ms)) {
        (Some((date, hm, zone)), Some((today, _, _))) if date == today => format!("{hm} {zone}"),
        (Some((date, hm, zone)), _) => format!("{date} {hm} {zone}"),
        (None, _) => {
            let t = rfc3339(ms);
            let same_day = rfc3339(now_ms).get(..10) == t.get(..10);
            match (t.get(..10), t.get(11..16)) {
                (Some(_), Some(hm)) if same_day => format!("{hm} UTC"),
                (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
                _ => t,
            }
        }
    }
}

/// ("2026-12-07", "10:52", "UTC") for ms since the epoch, in the local zone.
fn local_time(ms: i64) -> Option<(String, String, String)> {
    let secs = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return None;
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: glibc points tm_zone at a NUL-terminated static string.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    let zone = match (zone.is_empty(), tm.tm_gmtoff) {
        (false, _) => zone,
        (true, 0) => "UTC".into(),
        (true, off) => format!("{:+03}{:02}", off / 3600, (off.abs() % 3600) / 60),
    };
    Some((
        format!(
            "{:04}-{:02}-{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday
        ),
        format!("{:02}:{:02}", tm.tm_hour, tm.tm_min),
        zone,
    ))
}

/// RFC 3339 (UTC, milliseconds) for a time in ms since the epoch.
pub(crate) fn rfc3339(ms: i64) -> String {
    // Stores check their times against this range already; clamp anyway, as
    // humantime cannot show a year past 9999.
    let ms = ms.clamp(0, store::record::MAX_TIME_MS);
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The JSON shape shared by `status`, `list` and waiters: the same keys
/// whether or not anyone waited, and whatever the store keeps the holder in.
pub(crate) fn info_json(info: &LockInfo) -> serde_json::Value {
    serde_json::json!({
        "name": info.name,
        "held": info.held,
        "owner": info.owner,
        "reason": info.reason,
        "fence": info.fence,
        "lease_id": info.lease_id,
        "acquired_at": info.acquired_at_ms.map(rfc3339),
        "renewed_at": renewed_at_ms(info).map(rfc3339),
        "expires_at": info.expires_at_ms.map(rfc3339),
        "lease_duration": info.lease_duration_s,
        "pid": info.pid,
        "pid_alive": pid_alive(info.host.as_deref(), info.pid),
        "host": info.host,
        "client": info.client,
        "problem": info.problem,
        "max_holders": info.max_holders,
        "waiting": info.waiting,
        "holders": holders_of(info)
            .iter()
            .map(|h| {
                serde_json::json!({
                    "owner": h.owner,
                    "reason": h.reason,
                    "fence": h.fence,
                    "shared": h.shared,
                    "acquired_at": rfc3339(h.acquired_at_ms),
                    "expires_at": rfc3339(h.expires_at_ms),
                    "host": h.host,
                    "pid": h.pid,
                    "pid_alive": pid_alive(h.host.as_deref(), h.pid),
                })
            })
            .collect::<Vec<_>>(),
    })
}

/// Every holder: those of a holder table, or the one the record names.
fn holders_of(info: &LockInfo) -> Vec<store::HolderInfo> {
    if !info.holders.is_empty() || !info.held || info.problem.is_some() {
        return info.holders.clone();
    }
    vec![store::HolderInfo {
        owner: info.owner.clone().unwrap_or_default(),
        reason: info.reason.clone(),
        fence: info.fence.unwrap_or(0),
        shared: false,
        acquired_at_ms: info.acquired_at_ms.unwrap_or(0),
        expires_at_ms: info.expires_at_ms.unwrap_or(0),
        host: info.host.clone(),
        pid: info.pid,
    }]
}

/// When the lease was last granted or renewed: its expiry less its length.
fn renewed_at_ms(info: &LockInfo) -> Option<i64> {
    let lease = i64::try_from(info.lease_duration_s.filter(|d| *d > 0)?).ok()?;
    Some(
        info.expires_at_ms?
            .saturating_sub(lease.saturating_mul(1000)),
    )
}

/// Whether the holder's process still runs, when it runs on this host
/// (`None` elsewhere: a pid means nothing on another machine).
fn pid_alive(host: Option<&str>, pid: Option<u32>) -> Option<bool> {
    let (host, pid) = (host?, pid?);
    let here = gethostname::gethostname();
    if here.is_empty() || here.to_string_lossy() != host {
        return None;
    }
    Some(process_runs(pid))
}

/// A process that exists and is not a zombie.
fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) if std::path::Path::new("/proc/self").exists() => false,
        // No /proc: ask the kernel (EPERM means it exists).
        Err(_) => {
            let Ok(pid) = i32::try_from(pid) else {
                return false;
            };
            // SAFETY: signal 0 only checks that the process exists.
            let exists = unsafe { libc::kill(pid, 0) } == 0;
            exists || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
    }
}

/// " (pid 2976, running)", " (pid 2976, not running)" on this host, or
/// " (pid 2976)" elsewhere.
fn pid_text(host: Option<&str>, pid: Option<u32>) -> String {
    match (pid, pid_alive(host, pid)) {
        (Some(p), Some(true)) => format!(" (pid {p}, running)"),
        (Some(p), Some(false)) => format!(" (pid {p}, not running)"),
        (Some(p), None) => format!(" (pid {p})"),
        (None, _) => String::new(),
    }
}

/// "expired 3s ago; free in 2s" for a lease past its expiry but inside the
/// store's takeover margin, when it still counts as held.
fn expired_note(info: &LockInfo) -> Option<String> {
    let left = info.expires_in_ms.filter(|l| *l < 0 && info.held)?;
    let margin = info.takeover_margin_ms?;
    let secs =
        |ms: i64| crate::duration::short(Duration::from_secs((ms.max(0) as u64).div_ceil(1000)));
    Some(format!(
        "expired {} ago; free in {}",
        secs(left.saturating_neg()),
        secs(margin.saturating_add(left))
    ))
}

/// `status` for people: the same lines whether or not anyone waited.
fn describe_info(info: &LockInfo) -> String {
    let info = &shown(info);
    let unreadable = info.problem.as_ref().map(|p| {
        format!(
            "\n  unreadable record: {p}\n  it counts as held until `awsflock release {} --force` frees it",
            info.name
        )
    });
    let waiting = format!("\n  waiting:  {}", info.waiting);
    if !info.held {
        let queue = if info.waiting > 0 {
            waiting
        } else {
            String::new()
        };
        return format!(
            "{}: free{}{queue}",
            info.name,
            unreadable.unwrap_or_default()
        );
    }
    let several = info.max_holders.is_some()
        || info.holders.len() > 1
        || info.holders.iter().any(|h| h.shared);
    let mut s = if several {
        describe_holders(info)
    } else {
        describe_holder(info)
    };
    s.push_str(&unreadable.unwrap_or_default());
    s.push_str(&waiting);
    s
}

/// A semaphore's or shared lock's holders, one line each.
fn describe_holders(info: &LockInfo) -> String {
    let mut s = match info.max_holders {
        Some(n) => format!(
            "{}: held by {} of {n} (semaphore, --max-holders {n})",
            info.name,
            info.holders.len()
        ),
        None if info.holders.iter().all(|h| h.shared) => {
            format!("{}: held shared by {}", info.name, info.holders.len())
        }
        None => format!("{}: held exclusively", info.name),
    };
    for h in &info.holders {
        s.push_str(&format!("\n  {} (fence {})", h.owner, h.fence));
        if let Some(host) = &h.host {
            s.push_str(&format!(" on {host}"));
        }
        if let Some(p) = h.pid {
            s.push_str(&format!(" pid {p}"));
            match pid_alive(h.host.as_deref(), h.pid) {
                Some(true) => s.push_str(" (running)"),
                Some(false) => s.push_str(" (not running)"),
                None => {}
            }
        }
        s.push_str(&format!(", expires {}", rfc3339(h.expires_at_ms)));
        if let Some(r) = &h.reason {
            s.push_str(&format!(": {r}"));
        }
    }
    s
}

/// A lock's one holder: who, where, since when, until when.
fn describe_holder(info: &LockInfo) -> String {
    let mut holder = info.owner.as_deref().unwrap_or("unknown").to_string();
    if let Some(h) = &info.host {
        holder.push_str(&format!(" on {h}"));
    }
    holder.push_str(&pid_text(info.host.as_deref(), info.pid));
    let mut s = match expired_note(info) {
        Some(note) => format!("{}: {note} (held by {holder})", info.name),
        None => format!("{}: held by {holder}", info.name),
    };
    let mut line = |label: &str, value: String| s.push_str(&format!("\n  {label:<9} {value}"));
    if let Some(r) = &info.reason {
        line("reason:", r.clone());
    }
    if let Some(f) = info.fence {
        line("fence:", f.to_string());
    }
    if let Some(a) = info.acquired_at_ms {
        line("acquired:", rfc3339(a));
    }
    if let Some(r) = renewed_at_ms(info) {
        line("renewed:", rfc3339(r));
    }
    if let Some(e) = info.expires_at_ms {
        line("expires:", rfc3339(e));
    }
    if let Some(d) = info.lease_duration_s {
        line("lease:", crate::duration::short(Duration::from_secs(d)));
    }
    s
}

fn print_lease(lease: &Lease, json: bool, owner: &str, reason: Option<&str>) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "name": lease.name,
            "lease_id": lease.lease_id,
            "fence": lease.fence,
            "owner": if owner.is_empty() { None } else { Some(owner) },
            "reason": reason,
            "acquired_at": lease.acquired_at_ms.map(rfc3339),
            "expires_at": rfc3339(lease.expires_at_ms),
            "lease_duration": lease.duration.as_secs(),
        });
        out(&v.to_string())
    } else {
        out(&lease.lease_id)
    }
}

/// Writes a line to stdout; a closed pipe (`| head`) is not an error worth a panic.
pub(crate) fn out(line: &str) -> Result<()> {
    // What awsflock said on stderr comes first (`2>&1`).
    crate::output::flush(std::time::Duration::from_millis(100));
    let mut o = std::io::stdout().lock();
    match writeln!(o, "{line}").and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::store(format!("cannot write to stdout: {e}"))),
    }
}

/// Whether stderr is a terminal (live progress) or a log (one line per change).
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// The `awsflock` program: the internal commands, or parse the command
/// line and run it. Returns the exit code. Kept here so `main.rs` stays a
/// single call; not part of the library's API.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = internal_command(&args) {
        return code;
    }
    main_with(<Cli as clap::Parser>::try_parse())
}

/// The whole program after argument parsing: sets up logging and the async
/// runtime, runs the command, prints any error as one line, and returns the
/// exit code.
pub(crate) fn main_with(parsed: std::result::Result<Cli, clap::Error>) -> i32 {
    crate::error::use_cli_words();
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("awsflock: error: cannot start: {e}");
            return exit::ERROR;
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            say!("awsflock: error: {}", exit::message(&e));
            supervise::end_by_signal_if_interrupted(&e);
            exit::code(&e)
        }
    };
    drop(rt);
    // What is still queued for stderr is written before awsflock exits
    // (waiting at most a second for a stderr that does not drain).
    crate::output::flush(std::time::Duration::from_secs(1));
    // `run` whose command was killed by a signal ends by the same signal,
    // now that the lock is released, so that the caller sees it.
    match supervise::take_exit_signal() {
        Some(sig) => supervise::unix::die_by_signal(sig),
        None => code,
    }
}

/// Prints a clap error as one line (help and version as clap formats them).
fn clap_exit(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                exit::USAGE
            } else {
                exit::OK
            }
        }
        _ => {
            // clap says what is wrong in the lines before "Usage:"; join them.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let first = what.join(" ");
            let first = first.trim_start_matches("error: ");
            say!("awsflock: error: {first} (see 'awsflock --help')");
            exit::USAGE
        }
    }
}

/// Sets up stderr's writer thread ([`crate::output`]) and the log. `-q`
/// silences warnings (a store retried, a renewal that failed): errors still
/// end the command with their one line.
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if quiet => "awsflock=error",
        0 => "awsflock=warn",
        1 => "awsflock=debug",
        _ => "debug",
    };
    let filter = if verbose == 0 {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
    } else {
        EnvFilter::new(default)
    };
    crate::output::detach();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::output::Stderr)
        .with_target(false)
        .with_ansi(colour())
        .try_init();
}

/// Whether to colour stderr: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub(crate) fn colour() -> bool {
    stderr_is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The man page: the top level as clap_mangen renders it, then one section
/// per subcommand (synopsis, description, options, examples), which
/// clap_mangen leaves to separate pages that `awsflock man` could not print.
pub(crate) fn man_page() -> std::io::Result<String> {
    let top = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(top.clone()).render(&mut buf)?;
    let page = String::from_utf8_lossy(&buf).into_owned();
    let mut subs = String::new();
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let full = format!("awsflock {}", sub.get_name());
        let man = clap_mangen::Man::new(sub.clone().bin_name(&full).display_name(&full));
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        man.render_options_section(&mut part)?;
        if sub.get_after_help().is_some() {
            man.render_extra_section(&mut part)?;
        }
        let part = String::from_utf8_lossy(&part)
            .replace(".SH SYNOPSIS", &format!(".SH \"{}\"", full.to_uppercase()))
            .replace(".SH DESCRIPTION\n", ".PP\n")
            .replace(".SH OPTIONS", ".SS Options");
        subs.push_str(&verbatim_examples(&part, ".SS Examples"));
    }
    // The subcommand list points at pages of their own; they are below.
    let mut page = verbatim_examples(&page, ".SH EXAMPLES");
    for sub in top.get_subcommands().map(|s| s.get_name()).chain(["help"]) {
        let name = sub.replace('-', "\\-");
        page = page.replace(
            &format!("awsflock\\-{name}(1)"),
            &format!("awsflock {name}"),
        );
    }
    Ok(match page.find(".SH VERSION") {
        Some(at) => format!("{}{subs}{}", &page[..at], &page[at..]),
        None => page + &subs,
    })
}

/// Turns clap_mangen's EXTRA section (our `after_help`) into `heading`,
/// printed as written (no refilling: it holds command lines).
fn verbatim_examples(roff: &str, heading: &str) -> String {
    let Some(at) = roff.find(".SH EXTRA\n") else {
        return roff.to_string();
    };
    let body_start = at + ".SH EXTRA\n".len();
    let body_end = roff[body_start..]
        .find("\n.SH ")
        .map(|i| body_start + i + 1)
        .unwrap_or(roff.len());
    let body: Vec<&str> = roff[body_start..body_end]
        .lines()
        .filter(|l| !matches!(*l, "Examples:" | "Example:"))
        .collect();
    format!(
        "{}{heading}\n.nf\n{}\n.fi\n{}",
        &roff[..at],
        body.join("\n"),
        &roff[body_end..]
    )
}

/// The internal commands that are not part of the command line people use:
/// `awsflock __watchdog PGID`, the dead man's switch that `run` starts to
/// kill its command's process group when the latest kill time passes
/// without a newer one, or awsflock dies (see `supervise::unix`). Returns the exit code when `args`
/// (without the program name) is one of them.
pub(crate) fn internal_command(args: &[std::ffi::OsString]) -> Option<i32> {
    match args {
        [cmd, pgid] if cmd == "__watchdog" => {
            let pgid = pgid.to_str()?.parse::<i32>().ok()?;
            Some(supervise::unix::watchdog_main(pgid))
        }
        _ => None,
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_info() -> impl Strategy<Value = LockInfo> {
        (
            (
                "\\PC{0,12}",
                any::<bool>(),
                proptest::option::of("\\PC{0,12}"),
            ),
            (
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>()),
                proptest::option::of("\\PC{0,30}"),
            ),
        )
            .prop_map(
                |((name, held, owner), (acq, exp, left, dur, fence, problem))| LockInfo {
                    name,
                    held,
                    owner: owner.clone(),
                    reason: owner,
                    fence,
                    lease_id: Some("L".into()),
                    acquired_at_ms: acq,
                    expires_at_ms: exp,
                    lease_duration_s: dur,
                    expires_in_ms: left,
                    pid: None,
                    host: None,
                    client: None,
                    problem,
                    takeover_margin_ms: acq,
                    ..Default::default()
                },
            )
    }

    proptest! {
        /// Whatever a store reports, every rendering of it succeeds.
        #[test]
        fn any_lock_info_renders(infos in proptest::collection::vec(any_info(), 1..4)) {
            let table = list_table(&infos);
            prop_assert_eq!(table.lines().count(), infos.len() + 1);
            for i in &infos {
                let _ = describe_info(i);
                let _ = info_json(i).to_string();
                let _ = waiting_line(&i.name, i);
            }
        }
    }

    #[test]
    fn control_characters_from_the_store_are_escaped() {
        let mut a = crate::store::cas::absent_info("x");
        a.held = true;
        a.owner = Some("evil\n\x1b[31mroot".into());
        a.reason = Some("a\rb".into());
        for text in [list_table(std::slice::from_ref(&a)), describe_info(&a)] {
            assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
            assert!(text.contains("evil\\n\\u{1b}[31mroot"), "{text:?}");
        }
        assert_eq!(list_table(&[a]).lines().count(), 2);
    }

    #[test]
    fn wide_characters_are_padded_by_columns() {
        let mut a = crate::store::cas::absent_info("锁");
        a.owner = Some("x".into());
        let mut b = crate::store::cas::absent_info("ab");
        b.owner = Some("y".into());
        let t = list_table(&[a, b]);
        let cols: Vec<usize> = t
            .lines()
            .map(|l| {
                let at = l.find(['x', 'y', 'O']).unwrap();
                unicode_width::UnicodeWidthStr::width(&l[..at])
            })
            .collect();
        assert!(cols.windows(2).all(|w| w[0] == w[1]), "{t}");
    }
}
