//! The supervisor's decisions, as pure functions of what it knows: when to
//! stop the command, what to do next, what to tell the watchdog, how to
//! answer the command being stopped or continued. Every case is
//! unit-tested here, and the protocol simulation drives them.

use std::time::Duration;

use crate::boottime::BootInstant as Instant;
use crate::lease::safety_margin;

use super::platform;

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

/// The bit of signal `sig` in a set of signals.
pub(super) fn bit(sig: i32) -> u64 {
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
