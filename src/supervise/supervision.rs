//! A command running under its lease: the supervisor's loop, which
//! forwards signals, pauses and continues the command, stops it (SIGTERM,
//! grace, SIGKILL) when the lease is being lost, and, once it ended,
//! settles its process group and releases the lock.

use std::time::Duration;

use futures_util::{Stream, StreamExt};

use crate::boottime::{self, BootInstant as Instant};
use crate::lease::{LockGuard, Lost};
use crate::output::say;

use super::decide::{
    Answer, Facts, Pause, Phase, Step, bit, ended_past_its_lease, interrupted_at_the_terminal,
    kill_by, next_step, on_continued, on_stopped, stop_times, wake_at,
};
use super::{EXIT_SIGNAL, RunOptions, finish_release, platform};

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

/// A running command under its lease: what the supervisor knows and holds.
pub(super) struct Supervision {
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
    /// The supervision of a command just spawned, with the watchdog armed
    /// at `first_kill`.
    pub(super) fn new(
        guard: LockGuard,
        opts: RunOptions,
        spawned: platform::Spawned,
        watchdog: platform::Watchdog,
        first_kill: Instant,
    ) -> Self {
        Supervision {
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
        }
    }

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
    pub(super) async fn supervise(
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
    pub(super) async fn finish(mut self) -> i32 {
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
