//! The `run` supervisor: runs a command under a held lock.
//!
//! ```text
//!  grant too late? ──► do not start, release, exit 4
//!  start the watchdog (armed with the kill time), spawn CMD (own group)
//!     ├─ every renewal ───────► tell the watchdog the new kill time
//!     ├─ signal to awsflock ──► forward to the group (SIGTSTP too)
//!     ├─ lease lost ──────────► SIGTERM+SIGCONT, grace, SIGKILL
//!     ├─ term time reached without a renewal ──► SIGTERM+SIGCONT, then
//!     │                                          SIGKILL at the kill time
//!     ├─ lease suspect ───────► SIGSTOP the group until renewed (SIGCONT) or lost
//!     ├─ CMD stops (Ctrl-Z) ──► stop awsflock too if a job-control shell
//!     │                         (or a SIGTSTP sender) can continue it; when
//!     │                         continued: renew, hand back the terminal,
//!     │                         SIGCONT. Nobody to continue it: keep
//!     │                         renewing, say so
//!     ├─ watchdog died ───────► as lease lost
//!     └─ CMD exits ───────────► stop its leftovers, release, exit as CMD did
//!                               (died of the terminal's Ctrl-C: end by
//!                               SIGINT in the caller's whole group)
//!  awsflock stopped, hung or killed ──► the watchdog SIGKILLs the group at
//!                                       the last kill time it was told
//! ```
//!
//! The kill time (`deadline − margin`) comes from the lease's local
//! deadline, which is computed conservatively from the store's clock, so
//! every process in the group is dead before the lease can expire for
//! anyone else, whether awsflock is running or not. The decisions are pure
//! functions ([`stop_times`], [`too_late`], [`next_step`], [`kill_by`],
//! [`wake_at`], [`on_continued`], [`on_stopped`], [`interrupted_at_the_terminal`],
//! [`ended_past_its_lease`]); processes, signals and the terminal are in
//! [`unix`]. DESIGN.md has the argument and its limits.

#[cfg(unix)]
pub mod unix;

use std::ffi::OsString;
use std::time::Duration;

use crate::boottime::{self, BootInstant as Instant};

use futures_util::{Stream, StreamExt};

use crate::error::Error;
use crate::lease::{LockGuard, Lost, safety_margin};
use crate::output::say;

#[cfg(unix)]
use unix as platform;

/// What to run and how to stop it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The program and its arguments, passed as given (no shell).
    pub program: OsString,
    /// The arguments.
    pub args: Vec<OsString>,
    /// Grace between SIGTERM and SIGKILL when the lease is being lost.
    pub kill_after: Duration,
    /// How often the lease is renewed (to size the grace).
    pub renew_every: Duration,
    /// Exit code when the lease was lost.
    pub lost_exit_code: i32,
    /// Let processes the command left in its group run on after it exits
    /// (without the lock) instead of stopping them before the release.
    pub leave_leftovers: bool,
}

/// When to send SIGTERM and SIGKILL for a lease whose local deadline is
/// `deadline`: SIGKILL a safety margin before it, SIGTERM a grace before
/// that. The grace is `kill_after`, shortened when the lease is too short for
/// it, so that renewals always get a chance before the command is warned.
pub fn stop_times(
    deadline: Instant,
    lease: Duration,
    renew_every: Duration,
    kill_after: Duration,
) -> (Instant, Instant) {
    let margin = safety_margin(lease);
    let room = lease.saturating_sub(margin).saturating_sub(renew_every) / 2;
    let grace = kill_after.min(room);
    let kill_at = deadline.checked_sub(margin).unwrap_or(deadline);
    let term_at = kill_at.checked_sub(grace).unwrap_or(kill_at);
    (term_at, kill_at)
}

/// Why the supervisor is stopping the command before it ended by itself.
#[derive(Debug, Clone)]
enum Why {
    /// The lease was lost (taken over, released by force, renewals stopped).
    Lost(Lost),
    /// No renewal succeeded in time: the lease is about to expire.
    Expiring,
    /// Time passed unseen (the lease turned suspect, saying why) and no
    /// renewal confirmed the lease by its SIGTERM time.
    Unconfirmed(String),
    /// The watchdog died: nothing would stop the command if awsflock were
    /// stopped or killed now.
    Unprotected,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Lost(l) => write!(f, "{l}"),
            Why::Expiring => write!(f, "no renewal succeeded in time"),
            Why::Unconfirmed(why) => write!(
                f,
                "the lease may have expired ({why}) and no renewal confirmed it in time"
            ),
            Why::Unprotected => write!(
                f,
                "the watchdog that kills the command if awsflock stops has died"
            ),
        }
    }
}

/// The exit signal to end awsflock with, set by [`run`] when the command
/// was killed by a signal (see [`take_exit_signal`]).
static EXIT_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signal that killed the command of the last [`run`], if any and if
/// awsflock should end by it too (the lease was not lost). The caller ends
/// the process with it once everything is released, as timeout(1) does.
pub fn take_exit_signal() -> Option<i32> {
    match EXIT_SIGNAL.swap(0, std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A signal that ended a wait for the lock ([`Error::Interrupted`]) ends
/// awsflock too, once everything is done (see [`take_exit_signal`]): a
/// shell whose loop got Ctrl-C stops only if its child died of the signal;
/// an exit with 130 reads as a child that handled Ctrl-C and went on.
pub fn end_by_signal_if_interrupted(e: &Error) {
    if let Error::Interrupted(sig) = e {
        EXIT_SIGNAL.store(*sig, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs the command under `guard` and returns awsflock's exit code: the
/// command's, or `lost_exit_code` if the lease was lost. The lock is released
/// (or, if lost, left to the store) before returning. When the command was
/// killed by signal N, the code is 128+N and [`take_exit_signal`] says N.
///
/// `signals` are the signals to forward to the command's group as they come
/// (awsflock's own, from [`unix::signals`]; any stream of signal numbers).
pub async fn run(
    guard: LockGuard,
    opts: RunOptions,
    signals: impl Stream<Item = i32> + Unpin,
) -> i32 {
    platform::ignore_ttou();
    let own_signals = match platform::supervisor_signals() {
        Ok(s) => s,
        Err(e) => {
            say!("awsflock: error: cannot handle signals: {e}; the command was not started");
            finish_release(guard, None).await;
            return crate::exit::ERROR;
        }
    };
    if let Err((code, lost)) = confirm_suspect_grant(&guard, &opts).await {
        finish_release(guard, lost).await;
        return code;
    }
    let (watchdog, spawned, first_kill) = match start(&guard, &opts) {
        Ok(started) => started,
        Err((code, lost)) => {
            finish_release(guard, lost).await;
            return code;
        }
    };
    let mut s = Supervision {
        state: guard.watch(),
        duration: guard.lease().duration,
        guard,
        opts,
        spawned,
        watchdog,
        state_open: true,
        why: None,
        phase: Phase::default(),
        paused_lease: String::new(),
        told: first_kill,
        ended: None,
        forwarded: 0,
        held_stopped: false,
    };
    s.supervise(signals, own_signals).await;
    s.finish().await
}

/// When to send SIGTERM and SIGKILL for `guard`'s lease as it is now (see
/// [`stop_times`]).
fn times_now(guard: &LockGuard, opts: &RunOptions) -> (Instant, Instant) {
    // One read of the lease state: no second borrow while one is held.
    let lease = guard.lease();
    stop_times(
        lease.deadline,
        lease.duration,
        opts.renew_every,
        opts.kill_after,
    )
}

/// A lease that is suspect from the start (time passed unseen while it
/// was granted: a paused VM, a suspend) is renewed at once; the command
/// starts only once that renewal confirms it, and not at all if none does
/// by the SIGTERM time: then the exit code and the loss, if any.
async fn confirm_suspect_grant(
    guard: &LockGuard,
    opts: &RunOptions,
) -> Result<(), (i32, Option<Lost>)> {
    let (term_at, _) = times_now(guard, opts);
    if confirmed_by(guard, term_at).await {
        return Ok(());
    }
    let st = guard.watch().borrow().clone();
    say!(
        "awsflock: {}: the lease may have expired while it was granted ({}) and no renewal confirmed it; the command was not started",
        guard.lease().name,
        st.suspect.as_deref().unwrap_or("it was lost")
    );
    Err((opts.lost_exit_code, st.lost))
}

/// Whether the lease may be acted on by `term_at`: at once when it is not
/// suspect (a loss is the supervisor's to handle), else when a renewal
/// clears the suspicion before `term_at` and before the lease is lost.
pub(crate) async fn confirmed_by(guard: &LockGuard, term_at: Instant) -> bool {
    if guard.watch().borrow().suspect.is_none() {
        return true;
    }
    let mut w = guard.watch();
    let _ = boottime::timeout_at(term_at, async {
        loop {
            {
                let st = w.borrow_and_update();
                if st.lost.is_some() || st.suspect.is_none() {
                    return;
                }
            }
            if w.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let st = guard.watch().borrow().clone();
    st.lost.is_none() && st.suspect.is_none()
}

/// Arms the watchdog, checks the grant is not too late, and spawns the
/// command in its own group: the watchdog, the command and the first kill
/// time; or the exit code (and no loss) when the command was not started.
fn start(
    guard: &LockGuard,
    opts: &RunOptions,
) -> Result<(platform::Watchdog, platform::Spawned, Instant), (i32, Option<Lost>)> {
    let lease = guard.lease();
    let mut env = vec![("AWSFLOCK_LOCK", lease.name.clone())];
    if let Some(f) = lease.fence {
        env.push(("AWSFLOCK_FENCE", f.to_string()));
    }
    let (term_at, first_kill) = times_now(guard, opts);
    // The dead man's switch is armed before the command can run.
    let watchdog = match platform::Watchdog::start(first_kill) {
        Ok(w) => w,
        Err(e) => {
            say!("awsflock: error: cannot start the watchdog: {e}; the command was not started");
            return Err((crate::exit::ERROR, None));
        }
    };
    // A grant that took long to arrive may already be due its SIGTERM:
    // starting the command then would run it past the point where it must
    // be stopping. Checked right before the spawn.
    tracing::debug!(
        term_in = ?term_at.saturating_duration_since(Instant::now()),
        kill_in = ?first_kill.saturating_duration_since(Instant::now()),
        "lease granted"
    );
    // What awsflock said comes before what the command says (bounded: a
    // stderr nobody reads holds up the start by this much at most).
    crate::output::flush(Duration::from_millis(100));
    if too_late(Instant::now(), term_at) {
        watchdog.disarm();
        say!(
            "awsflock: {}: the lease arrived too late to run the command safely (the store was slow to answer); the command was not started",
            lease.name
        );
        return Err((opts.lost_exit_code, None));
    }
    match platform::spawn(&opts.program, &opts.args, &env, watchdog.announce_fd()) {
        Ok(spawned) => Ok((watchdog, spawned, first_kill)),
        Err(e) => {
            watchdog.disarm();
            let (code, msg) = platform::spawn_failure(&opts.program, &e);
            say!("awsflock: error: {msg}");
            Err((code, None))
        }
    }
}

/// A running command under its lease: what the supervisor knows and holds.
struct Supervision {
    guard: LockGuard,
    opts: RunOptions,
    /// The lease's duration (the same at every renewal).
    duration: Duration,
    spawned: platform::Spawned,
    watchdog: platform::Watchdog,
    state: tokio::sync::watch::Receiver<crate::lease::GuardState>,
    state_open: bool,
    /// Why the command is being stopped, once it is.
    why: Option<Why>,
    phase: Phase,
    /// The lease id when the command was paused: a different one is a renewal.
    paused_lease: String,
    /// The kill time the watchdog was last told.
    told: Instant,
    /// How the command ended, once it has.
    ended: Option<platform::Ended>,
    /// The signals awsflock forwarded to the command (bit N: signal N).
    forwarded: u64,
    /// Held stopped by someone else, with no job-control shell to stop
    /// awsflock for (see [`Answer::HoldOn`]): said once per stop.
    held_stopped: bool,
}

impl Supervision {
    /// When to send SIGTERM and SIGKILL for a lease whose local deadline is
    /// `deadline`.
    fn times(&self, deadline: Instant) -> (Instant, Instant) {
        stop_times(
            deadline,
            self.duration,
            self.opts.renew_every,
            self.opts.kill_after,
        )
    }

    fn name(&self) -> String {
        self.guard.lease().name
    }

    /// Tells the watchdog `dead_by` if it changed; false if it could not be told.
    fn tell_watchdog(&mut self, dead_by: Instant) -> bool {
        if dead_by == self.told {
            return true;
        }
        self.told = dead_by;
        self.watchdog.deadline(dead_by).is_ok()
    }

    /// Until the command ends: decide ([`next_step`]), act, wait for the
    /// next event (a signal, a change of the lease, a timer), handle it.
    async fn supervise(
        &mut self,
        mut signals: impl Stream<Item = i32> + Unpin,
        mut own_signals: impl Stream<Item = i32> + Unpin,
    ) {
        while self.ended.is_none() {
            let st = self.state.borrow_and_update().clone();
            if self.why.is_none() {
                self.why = self.guard.is_lost().map(Why::Lost);
            }
            let (term_at, deadline_kill) = self.times(st.lease.deadline);
            // The watchdog always knows the latest instant by which the
            // command must be dead.
            if !self.tell_watchdog(kill_by(&self.phase, deadline_kill)) && self.why.is_none() {
                self.why = Some(Why::Unprotected);
            }
            let facts = Facts {
                now: Instant::now(),
                term_at,
                kill_at: deadline_kill,
                lost: self.why.is_some(),
                suspect: st.suspect.is_some(),
                renewed_since_pause: st.lease.lease_id != self.paused_lease,
            };
            let step = next_step(&facts, &self.phase, self.opts.kill_after);
            if step != Step::Wait {
                self.act(step, &st, deadline_kill);
                continue;
            }
            let wake = wake_at(&self.phase, term_at, Instant::now());
            tokio::select! {
                Some(sig) = signals.next() => self.forward(sig),
                Some(sig) = own_signals.next() => {
                    if sig == libc::SIGTSTP {
                        // Stopping the command stops awsflock too, below:
                        // whoever asked awsflock to stop will continue it.
                        tracing::debug!("forwarding SIGTSTP to the command's group");
                        self.forwarded |= bit(sig);
                        self.spawned.signal_group(sig);
                    }
                }
                changed = self.state.changed(), if self.state_open => {
                    if changed.is_err() {
                        self.state_open = false;
                    }
                }
                _ = boottime::sleep_until(wake) => {}
            }
            let events = platform::reap(self.spawned.pgid, self.watchdog.pid());
            self.on_events(events);
        }
    }

    /// Forwards a signal sent to awsflock to the command's group, once. A
    /// command held stopped by someone else is continued after it, so
    /// that `kill awsflock` ends it, as timeout(1) does.
    fn forward(&mut self, sig: i32) {
        tracing::debug!(sig, "forwarding signal to the command's group");
        self.forwarded |= bit(sig);
        self.spawned.signal_group(sig);
        if self.held_stopped && self.phase.pause.is_none() {
            self.spawned.signal_group(libc::SIGCONT);
        }
    }

    /// Carries out a step other than [`Step::Wait`].
    fn act(&mut self, step: Step, st: &crate::lease::GuardState, deadline_kill: Instant) {
        match step {
            Step::Wait => {}
            Step::Pause => {
                self.spawned.signal_group(libc::SIGSTOP);
                self.phase.pause = Some(Pause::Suspect);
                self.paused_lease = st.lease.lease_id.clone();
                say!(
                    "awsflock: {}: the lease may have expired ({}); command paused until it is renewed",
                    self.name(),
                    st.suspect.as_deref().unwrap_or("unknown")
                );
            }
            Step::Continue => {
                self.spawned.give_terminal();
                self.spawned.signal_group(libc::SIGCONT);
                self.phase.pause = None;
            }
            Step::Stop { kill_at } => self.stop(kill_at, st, deadline_kill),
            Step::Kill => {
                self.spawned.signal_group(libc::SIGKILL);
                self.phase.killed = true;
            }
        }
    }

    /// Stops the command: SIGTERM (and SIGCONT) with SIGKILL at
    /// `kill_at`, or SIGKILL at once when `kill_at` has come.
    fn stop(&mut self, kill_at: Instant, st: &crate::lease::GuardState, deadline_kill: Instant) {
        // Signal first, then say so: a message cannot delay the stop.
        if kill_at <= Instant::now() {
            // No grace (see next_step): a paused command is not continued
            // first.
            self.spawned.signal_group(libc::SIGKILL);
            self.phase.killed = true;
        } else {
            self.spawned.signal_group(libc::SIGTERM);
            self.spawned.signal_group(libc::SIGCONT);
        }
        self.phase.kill_at = Some(kill_at);
        self.phase.pause = None;
        // The watchdog learns the SIGKILL time before any message: a write
        // to a stderr that blocks (a full pipe nobody reads) must not put
        // the kill off until the lease's own kill time.
        let _ = self.tell_watchdog(kill_by(&self.phase, deadline_kill));
        let name = self.name();
        // Not lost: either no renewal came in time, or time passed unseen
        // and none confirmed the lease since.
        let w = self.why.get_or_insert_with(|| match &st.suspect {
            Some(s) => Why::Unconfirmed(s.clone()),
            None => Why::Expiring,
        });
        match w {
            Why::Expiring => say!(
                "awsflock: {name}: the lease could not be renewed and expires soon; stopping the command"
            ),
            other => say!("awsflock: {name}: {other}; stopping the command"),
        }
    }

    /// What [`platform::reap`] saw: the command ended, stopped or was
    /// continued, or the watchdog died.
    fn on_events(&mut self, events: Vec<platform::Event>) {
        let ends = events
            .iter()
            .any(|e| matches!(e, platform::Event::Ended(_)));
        for event in events {
            match event {
                platform::Event::Ended(e) => self.ended = Some(e),
                platform::Event::WatchdogGone => {
                    if self.why.is_none() {
                        self.why = Some(Why::Unprotected);
                    }
                }
                platform::Event::Continued => {
                    self.held_stopped = false;
                    match on_continued(&self.phase) {
                        // Someone else continued it: the lease is still in doubt.
                        Answer::StopAgain => self.spawned.signal_group(libc::SIGSTOP),
                        Answer::Resumed => self.phase.pause = None,
                        _ => {}
                    }
                }
                platform::Event::Stopped(sig) => {
                    tracing::debug!(sig, "the command stopped");
                    // Not if it has ended or been continued meanwhile.
                    let stopped = !ends && platform::still_stopped(self.spawned.pgid);
                    let asked = self.forwarded & bit(libc::SIGTSTP) != 0;
                    let can_stop =
                        || !platform::is_init() && (asked || platform::job_control_shell());
                    match on_stopped(&self.phase, stopped, can_stop) {
                        Answer::StopAsAJob => self.stop_as_a_job(),
                        Answer::HoldOn => self.hold_on(sig),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Job control (Ctrl-Z, SIGTTIN, kill -STOP) stopped the command: stop
    /// as a job ourselves, so that the shell sees it. While we are stopped
    /// the watchdog still fires at the deadline.
    fn stop_as_a_job(&mut self) {
        self.spawned.take_terminal();
        let _ = self.watchdog.job_stop();
        platform::stop_self();
        let _ = self.watchdog.resumed();
        self.forwarded &= !bit(libc::SIGTSTP);
        // Continued (fg, bg): renew before the command goes on.
        self.phase.pause = Some(Pause::Resuming);
        self.paused_lease = self.state.borrow().lease.lease_id.clone();
        self.guard.renew_now();
    }

    /// The command was stopped and no job-control shell could continue
    /// awsflock: keep the lease (renewing, as flock(1) keeps its lock)
    /// until the command is continued or ends, and say so once per stop.
    fn hold_on(&mut self, sig: i32) {
        if std::mem::replace(&mut self.held_stopped, true) {
            return;
        }
        let how = nix::sys::signal::Signal::try_from(sig).map_or("a signal", |s| s.as_str());
        say!(
            "awsflock: {}: the command was stopped ({how}) and no job-control shell can continue awsflock; the lease is kept and renewed until the command is continued (kill -CONT {}) or ends",
            self.name(),
            self.spawned.pgid
        );
    }

    /// The command, in the terminal's foreground, died of the terminal's
    /// SIGINT or SIGQUIT, or exited with the code that says so (130, 131),
    /// and awsflock forwarded no such signal: with the command in the
    /// caller's own group, that signal would have reached the caller (a
    /// script's shell) too, and a shell stops its loop only if it got the
    /// signal itself. So awsflock ends by it in its whole group (`$?` is
    /// 128+N either way).
    fn replay_the_terminals_signal(&self, ended: platform::Ended) {
        if let Some(sig) = interrupted_at_the_terminal(ended, self.forwarded) {
            if self.spawned.has_terminal() {
                platform::replay_to_own_group();
                EXIT_SIGNAL.store(sig, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    /// After the command ended: a loss if the watchdog's kill time passed
    /// (awsflock was stopped, and the watchdog killed the command or what
    /// it left in its group); after a loss, SIGKILL whatever is left in
    /// the group, else stop the leftovers (unless `--leave-leftovers`).
    async fn settle_the_group(&mut self) {
        const KILLED: &str =
            "awsflock could not renew it in time; the command was killed at its deadline";
        const LEFT: &str = "awsflock was held up past it; what the command left running in its process group was killed at the lease's deadline";
        // The watchdog fires at the last kill time it was told: once that
        // has passed, it killed the command's group there, at the end of the
        // lease, whatever a renewal since may say.
        if self.why.is_none() && ended_past_its_lease(Instant::now(), self.told) {
            self.why = Some(Why::Lost(Lost::Expired(KILLED.into())));
        }
        if self.why.is_some() {
            // The command is gone; anything it left in its group must not go
            // on running without the lock.
            self.spawned.signal_group(libc::SIGKILL);
            return;
        }
        if self.opts.leave_leftovers {
            return;
        }
        // The leftovers' grace ends by the kill time the watchdog holds
        // (told afresh: a renewal may have come since the last turn).
        let (_, deadline_kill) = self.times(self.state.borrow().lease.deadline);
        let _ = self.tell_watchdog(deadline_kill);
        let grace = self
            .opts
            .kill_after
            .min(self.told.saturating_duration_since(Instant::now()));
        let had_leftovers = stop_leftovers(&self.spawned, grace, &mut self.state).await;
        // awsflock was held up (stopped) while it waited for them, past that
        // kill time: the watchdog killed them there.
        if had_leftovers && ended_past_its_lease(Instant::now(), self.told) {
            self.why = Some(Why::Lost(Lost::Expired(LEFT.into())));
        }
    }

    /// After the command ended: a loss if it outlived its kill time; stops
    /// its leftovers (or kills them, when lost); releases; the exit code.
    async fn finish(mut self) -> i32 {
        let name = self.name();
        let ended = self
            .ended
            .take()
            .unwrap_or(platform::Ended::Code(crate::exit::ERROR));
        self.settle_the_group().await;
        self.replay_the_terminals_signal(ended);
        self.watchdog.disarm();
        self.spawned.take_terminal();
        platform::reap_orphans();
        match self.why {
            Some(w) => {
                say!("awsflock: error: lease on {name} lost: {w}");
                let l = match w {
                    Why::Lost(l) => l,
                    other => Lost::Expired(other.to_string()),
                };
                finish_release(self.guard, Some(l)).await;
                self.opts.lost_exit_code
            }
            None => {
                finish_release(self.guard, None).await;
                if let platform::Ended::Signal(sig) = ended {
                    EXIT_SIGNAL.store(sig, std::sync::atomic::Ordering::SeqCst);
                }
                platform::exit_code(ended)
            }
        }
    }
}

/// Stops what the command left running in its group (a `cmd &` in a
/// script), before the lock is released: SIGTERM (and SIGCONT), `grace`,
/// SIGKILL. Nothing the command started runs on without the lock. Whether
/// there was anything to stop.
async fn stop_leftovers(
    spawned: &platform::Spawned,
    grace: Duration,
    state: &mut tokio::sync::watch::Receiver<crate::lease::GuardState>,
) -> bool {
    if !spawned.group_alive() {
        return false;
    }
    tracing::info!("stopping what the command left running in its process group");
    spawned.signal_group(libc::SIGTERM);
    spawned.signal_group(libc::SIGCONT);
    let until = Instant::now() + grace;
    while Instant::now() < until && spawned.group_alive() {
        if state.borrow().lost.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        platform::reap_orphans();
    }
    if spawned.group_alive() {
        spawned.signal_group(libc::SIGKILL);
    }
    true
}

/// The bit of signal `sig` in a set of signals.
fn bit(sig: i32) -> u64 {
    1u64.checked_shl(sig as u32).unwrap_or(0)
}

/// The terminal's signal that ended the command, if any: it died of
/// SIGINT (Ctrl-C) or SIGQUIT (Ctrl-\\), or exited 128 + one of them as
/// programs that clean up on Ctrl-C do, and awsflock did not forward that
/// signal itself (`forwarded`, bit N for signal N).
pub fn interrupted_at_the_terminal(ended: platform::Ended, forwarded: u64) -> Option<i32> {
    let sig = match ended {
        platform::Ended::Signal(sig) => sig,
        platform::Ended::Code(code) => code - crate::exit::SIGNAL_BASE,
    };
    (matches!(sig, libc::SIGINT | libc::SIGQUIT) && forwarded & bit(sig) == 0).then_some(sig)
}

/// Whether a command that ended at `now` outlived its lease's kill time
/// `kill_at` (awsflock was stopped and the watchdog killed it, or it ended
/// by itself while nobody could renew): that run lost its lease, whatever
/// the command's own status says.
pub fn ended_past_its_lease(now: Instant, kill_at: Instant) -> bool {
    now >= kill_at
}

/// Whether a lease whose SIGTERM time is `term_at` came too late for the
/// command to be started at `now`.
pub fn too_late(now: Instant, term_at: Instant) -> bool {
    now >= term_at
}

/// Why the supervisor holds the command stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// The lease is suspect (this machine was suspended, the store's clock
    /// jumped): SIGSTOPped by us until a renewal confirms the lease.
    Suspect,
    /// Stopped by job control (Ctrl-Z) and awsflock has been continued: the
    /// command goes on once a renewal confirms the lease.
    Resuming,
}

/// What the supervisor knows at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// Now.
    pub now: Instant,
    /// When SIGTERM is due if no renewal comes (see [`stop_times`]).
    pub term_at: Instant,
    /// When SIGKILL is due if no renewal comes.
    pub kill_at: Instant,
    /// The lease is lost (or the command cannot be protected any more).
    pub lost: bool,
    /// The lease is suspect (`GuardState::suspect`).
    pub suspect: bool,
    /// A renewal succeeded since the command was paused.
    pub renewed_since_pause: bool,
}

/// What the supervisor has done so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    /// Why the command is held stopped, if it is.
    pub pause: Option<Pause>,
    /// Once SIGTERM went out: when SIGKILL follows.
    pub kill_at: Option<Instant>,
    /// SIGKILL went out.
    pub killed: bool,
}

/// The supervisor's next move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do now.
    Wait,
    /// SIGSTOP the command's group (the lease is suspect).
    Pause,
    /// Give the terminal back if it was the command's, SIGCONT its group.
    Continue,
    /// SIGTERM (and SIGCONT) the group now, SIGKILL at `kill_at`.
    Stop {
        /// When SIGKILL follows.
        kill_at: Instant,
    },
    /// SIGKILL the group now.
    Kill,
}

/// Decides the supervisor's next move; `grace` is `--kill-after`. Pure, so
/// that every case is unit-tested.
pub fn next_step(f: &Facts, p: &Phase, grace: Duration) -> Step {
    match decide(f, p, grace) {
        // A stop while time may have passed unseen (a paused VM, a suspend,
        // a jump of the store's clock): the SIGTERM and SIGKILL times were
        // computed on clocks that missed that time, and the next holder may
        // already act. No grace: SIGKILL now, without continuing a paused
        // command.
        Step::Stop { .. } if f.suspect || p.pause == Some(Pause::Suspect) => {
            Step::Stop { kill_at: f.now }
        }
        step => step,
    }
}

fn decide(f: &Facts, p: &Phase, grace: Duration) -> Step {
    if let Some(k) = p.kill_at {
        // Stopping already: time unseen now (a VM paused during the grace)
        // means the SIGKILL time missed it too.
        return if (f.now >= k || f.suspect) && !p.killed {
            Step::Kill
        } else {
            Step::Wait
        };
    }
    if f.lost {
        // The grace never runs past the lease's own kill point.
        let kill_at = (f.now + grace).min(f.kill_at.max(f.now));
        return Step::Stop { kill_at };
    }
    if f.now >= f.term_at {
        return Step::Stop { kill_at: f.kill_at };
    }
    match p.pause {
        None if f.suspect => Step::Pause,
        Some(_) if !f.suspect && f.renewed_since_pause => Step::Continue,
        _ => Step::Wait,
    }
}

/// The latest instant by which the command must be dead, which the
/// watchdog is told: the lease's kill time `deadline_kill`, or the end of
/// the grace once SIGTERM went out, whichever comes first.
pub fn kill_by(p: &Phase, deadline_kill: Instant) -> Instant {
    p.kill_at.map_or(deadline_kill, |k| k.min(deadline_kill))
}

/// When the supervisor looks again at the latest, if nothing wakes it
/// before: at the SIGKILL time once stopping, else at the SIGTERM time
/// `term_at`; at least every half second (to reap, and to see a killed
/// group go).
pub fn wake_at(p: &Phase, term_at: Instant, now: Instant) -> Instant {
    let soon = now + Duration::from_millis(500);
    match p.kill_at {
        Some(k) if !p.killed => k,
        Some(_) => soon,
        None => term_at,
    }
    .min(soon)
}

/// The supervisor's answer to the command's group being continued or
/// stopped by someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Nothing to do.
    Nothing,
    /// Someone else continued a group we hold paused for a suspect lease:
    /// the lease is still in doubt, stop it again.
    StopAgain,
    /// The group went on after a job stop, once renewed: no longer paused.
    Resumed,
    /// Job control (Ctrl-Z, SIGTTIN, kill -STOP) stopped the command: stop
    /// awsflock too, as a job, so that the shell sees it.
    StopAsAJob,
    /// The command was stopped, and nothing would continue a stopped
    /// awsflock (no job-control shell, or PID 1): keep renewing the lease
    /// until the command is continued or ends.
    HoldOn,
}

/// The answer to the group being continued, given what was done so far.
pub fn on_continued(p: &Phase) -> Answer {
    match p.pause {
        Some(Pause::Suspect) => Answer::StopAgain,
        Some(Pause::Resuming) => Answer::Resumed,
        None => Answer::Nothing,
    }
}

/// The answer to the command stopping: `still_stopped` says it has
/// neither ended nor been continued meanwhile; `can_stop` whether someone
/// would continue awsflock if it stopped itself (a job-control shell, or
/// whoever sent awsflock SIGTSTP; never as PID 1; asked only when it
/// matters). A stop we caused (a suspect lease, or SIGTERM's SIGCONT not
/// yet landed) is not job control.
pub fn on_stopped(p: &Phase, still_stopped: bool, can_stop: impl FnOnce() -> bool) -> Answer {
    let ours = p.pause == Some(Pause::Suspect) || p.kill_at.is_some();
    if ours || !still_stopped {
        Answer::Nothing
    } else if can_stop() {
        Answer::StopAsAJob
    } else {
        Answer::HoldOn
    }
}

/// Releases after the command ended, within bounded time. After a loss, the
/// lease is probably not ours, so one short attempt is enough.
async fn finish_release(guard: LockGuard, lost: Option<Lost>) {
    let name = guard.lease().name;
    let limit = if lost.is_some() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(15)
    };
    match tokio::time::timeout(limit, guard.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(Error::NotHeld { .. })) if lost.is_some() => {}
        Ok(Err(e)) => say!(
            "awsflock: warning: could not release {name}: {e}; it frees itself when the lease expires"
        ),
        Err(_) => say!(
            "awsflock: warning: could not release {name} in time; it frees itself when the lease expires"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(now: Instant) -> Facts {
        Facts {
            now,
            term_at: now + Duration::from_secs(20),
            kill_at: now + Duration::from_secs(30),
            lost: false,
            suspect: false,
            renewed_since_pause: false,
        }
    }

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn a_healthy_lease_leaves_the_command_alone() {
        let now = Instant::now();
        assert_eq!(next_step(&facts(now), &Phase::default(), GRACE), Step::Wait);
    }

    #[test]
    fn a_suspect_lease_pauses_the_command_until_a_renewal_confirms_it() {
        let now = Instant::now();
        let f = Facts {
            suspect: true,
            ..facts(now)
        };
        assert_eq!(next_step(&f, &Phase::default(), GRACE), Step::Pause);
        let paused = Phase {
            pause: Some(Pause::Suspect),
            ..Phase::default()
        };
        // Still suspect: stay paused (not paused again).
        assert_eq!(next_step(&f, &paused, GRACE), Step::Wait);
        // Renewed, suspicion cleared: continue.
        let renewed = Facts {
            suspect: false,
            renewed_since_pause: true,
            ..f
        };
        assert_eq!(next_step(&renewed, &paused, GRACE), Step::Continue);
        // Cleared without a renewal seen yet: keep waiting.
        let cleared = Facts {
            suspect: false,
            ..f
        };
        assert_eq!(next_step(&cleared, &paused, GRACE), Step::Wait);
    }

    #[test]
    fn a_suspect_lease_that_is_lost_or_late_kills_the_command_at_once() {
        // Its kill point came from clocks that missed time: no grace.
        let now = Instant::now();
        let f = Facts {
            suspect: true,
            lost: true,
            ..facts(now)
        };
        let paused = Phase {
            pause: Some(Pause::Suspect),
            ..Phase::default()
        };
        assert_eq!(next_step(&f, &paused, GRACE), Step::Stop { kill_at: now });
        // Also when the suspicion was cleared, and when the command had not
        // been paused yet.
        let cleared = Facts {
            suspect: false,
            ..f
        };
        assert_eq!(
            next_step(&cleared, &paused, GRACE),
            Step::Stop { kill_at: now }
        );
        assert_eq!(
            next_step(&f, &Phase::default(), GRACE),
            Step::Stop { kill_at: now }
        );
        // Nor when the lease turns suspect during the grace of a stop.
        let stopping = Phase {
            kill_at: Some(now + GRACE),
            ..Phase::default()
        };
        assert_eq!(next_step(&f, &stopping, GRACE), Step::Kill);
        // Nor when no renewal came by the SIGTERM time while suspect.
        let late = Facts {
            lost: false,
            term_at: now,
            ..f
        };
        assert_eq!(
            next_step(&late, &paused, GRACE),
            Step::Stop { kill_at: now }
        );
        // A lease lost without suspicion keeps its grace, never past the
        // lease's own kill point.
        let plain = Facts {
            suspect: false,
            kill_at: now + Duration::from_secs(3),
            ..f
        };
        assert_eq!(
            next_step(&plain, &Phase::default(), GRACE),
            Step::Stop {
                kill_at: now + Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn a_suspect_lease_that_is_never_renewed_is_killed_at_its_term_time() {
        let now = Instant::now();
        let later = now + Duration::from_secs(21);
        let f = Facts {
            suspect: true,
            ..facts(now)
        };
        let f = Facts { now: later, ..f };
        let paused = Phase {
            pause: Some(Pause::Suspect),
            ..Phase::default()
        };
        // Its stop times missed the unseen time: SIGKILL at once.
        assert_eq!(next_step(&f, &paused, GRACE), Step::Stop { kill_at: later });
    }

    #[test]
    fn after_a_job_stop_the_command_continues_only_after_a_renewal() {
        let now = Instant::now();
        let resuming = Phase {
            pause: Some(Pause::Resuming),
            ..Phase::default()
        };
        assert_eq!(next_step(&facts(now), &resuming, GRACE), Step::Wait);
        let renewed = Facts {
            renewed_since_pause: true,
            ..facts(now)
        };
        assert_eq!(next_step(&renewed, &resuming, GRACE), Step::Continue);
        let lost = Facts {
            lost: true,
            ..facts(now)
        };
        assert!(matches!(
            next_step(&lost, &resuming, GRACE),
            Step::Stop { .. }
        ));
    }

    #[test]
    fn once_stopping_only_the_kill_remains() {
        let now = Instant::now();
        let stopping = Phase {
            kill_at: Some(now + Duration::from_secs(2)),
            ..Phase::default()
        };
        let f = Facts {
            lost: true,
            ..facts(now)
        };
        assert_eq!(next_step(&f, &stopping, GRACE), Step::Wait);
        // Time unseen during the grace brings the SIGKILL forward.
        let unseen = Facts { suspect: true, ..f };
        assert_eq!(next_step(&unseen, &stopping, GRACE), Step::Kill);
        let f = Facts {
            now: now + Duration::from_secs(2),
            ..f
        };
        assert_eq!(next_step(&f, &stopping, GRACE), Step::Kill);
        let killed = Phase {
            killed: true,
            ..stopping
        };
        assert_eq!(next_step(&f, &killed, GRACE), Step::Wait);
    }

    #[test]
    fn the_watchdog_is_told_the_earlier_of_the_grace_and_the_lease_kill_time() {
        let now = Instant::now();
        let lease_kill = now + Duration::from_secs(30);
        assert_eq!(kill_by(&Phase::default(), lease_kill), lease_kill);
        let stopping = |k| Phase {
            kill_at: Some(k),
            ..Phase::default()
        };
        let grace_end = now + Duration::from_secs(10);
        assert_eq!(kill_by(&stopping(grace_end), lease_kill), grace_end);
        let late = now + Duration::from_secs(40);
        assert_eq!(kill_by(&stopping(late), lease_kill), lease_kill);
    }

    #[test]
    fn the_supervisor_looks_again_at_the_next_signal_time_or_within_half_a_second() {
        let now = Instant::now();
        let half = now + Duration::from_millis(500);
        let near = now + Duration::from_millis(200);
        let far = now + Duration::from_secs(20);
        assert_eq!(wake_at(&Phase::default(), far, now), half);
        assert_eq!(wake_at(&Phase::default(), near, now), near);
        let stopping = Phase {
            kill_at: Some(near),
            ..Phase::default()
        };
        assert_eq!(wake_at(&stopping, far, now), near);
        let killed = Phase {
            killed: true,
            ..stopping
        };
        assert_eq!(wake_at(&killed, near, now), half);
    }

    #[test]
    fn a_group_continued_by_someone_else_is_stopped_again_while_suspect() {
        let paused = |p| Phase {
            pause: Some(p),
            ..Phase::default()
        };
        assert_eq!(on_continued(&paused(Pause::Suspect)), Answer::StopAgain);
        assert_eq!(on_continued(&paused(Pause::Resuming)), Answer::Resumed);
        assert_eq!(on_continued(&Phase::default()), Answer::Nothing);
    }

    #[test]
    fn only_a_stop_we_did_not_cause_is_job_control() {
        let free = Phase::default();
        assert_eq!(on_stopped(&free, true, || true), Answer::StopAsAJob);
        // Ended or continued meanwhile.
        assert_eq!(on_stopped(&free, false, || true), Answer::Nothing);
        // Nobody to continue awsflock (no job-control shell, PID 1): it
        // keeps the lease for the stopped command.
        assert_eq!(on_stopped(&free, true, || false), Answer::HoldOn);
        let suspect = Phase {
            pause: Some(Pause::Suspect),
            ..Phase::default()
        };
        assert_eq!(on_stopped(&suspect, true, || true), Answer::Nothing);
        let stopping = Phase {
            kill_at: Some(Instant::now()),
            ..Phase::default()
        };
        assert_eq!(on_stopped(&stopping, true, || true), Answer::Nothing);
    }

    #[test]
    fn only_the_terminals_own_interrupt_is_passed_on_to_the_callers_group() {
        use platform::Ended::{Code, Signal};
        let int = libc::SIGINT;
        assert_eq!(interrupted_at_the_terminal(Signal(int), 0), Some(int));
        assert_eq!(interrupted_at_the_terminal(Code(130), 0), Some(int));
        assert_eq!(
            interrupted_at_the_terminal(Signal(libc::SIGQUIT), bit(libc::SIGTERM)),
            Some(libc::SIGQUIT)
        );
        // Forwarded by awsflock: someone signalled awsflock, not the terminal.
        assert_eq!(interrupted_at_the_terminal(Signal(int), bit(int)), None);
        assert_eq!(interrupted_at_the_terminal(Code(130), bit(int)), None);
        for other in [
            Signal(libc::SIGTERM),
            Signal(libc::SIGKILL),
            Code(0),
            Code(1),
            Code(143),
        ] {
            assert_eq!(interrupted_at_the_terminal(other, 0), None, "{other:?}");
        }
    }

    #[test]
    fn a_command_that_ends_after_its_kill_time_lost_its_lease() {
        let now = Instant::now();
        let kill = now + Duration::from_secs(2);
        assert!(!ended_past_its_lease(now, kill));
        assert!(ended_past_its_lease(kill, kill));
        assert!(ended_past_its_lease(kill + Duration::from_secs(5), kill));
    }

    #[test]
    fn a_grant_past_its_term_time_is_too_late_to_start() {
        let now = Instant::now();
        let lease = Duration::from_secs(3);
        let (term, _) = stop_times(now + lease, lease, lease / 3, GRACE);
        assert!(!too_late(now, term));
        assert!(too_late(now + Duration::from_millis(2600), term));
    }

    #[test]
    fn kill_lands_before_the_deadline_and_term_before_kill() {
        let now = Instant::now();
        let lease = Duration::from_secs(60);
        let (term, kill) = stop_times(now + lease, lease, lease / 3, Duration::from_secs(10));
        assert!(kill < now + lease);
        assert_eq!(kill - term, Duration::from_secs(10));
        // A 6 s lease cannot afford a 10 s grace: it is shortened, and SIGTERM
        // still comes after the first renewal was due.
        let lease = Duration::from_secs(6);
        let (term, kill) = stop_times(now + lease, lease, lease / 3, Duration::from_secs(10));
        assert!(kill < now + lease && term < kill);
        assert!(term > now + lease / 3, "{:?}", term - now);
    }
}
