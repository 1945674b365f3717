//! Our clients: their cycles of acquire, command and release through the
//! real store and the real `LockGuard`, and the `run` supervisor as a model
//! around its real decisions.

use std::sync::Arc;
use std::time::Duration;

use super::client::{LOCK, Params, Spec, Who, check_deadline, ms, short};
use super::clock::EPOCH_MS;
use super::model::{AcqEnd, Attempt, Sharing};
use super::net::SimStore;
use crate::boottime::{self, BootInstant};
use crate::error::Error;
use crate::lease::LockGuard;
use crate::request::AcquireRequest;
use crate::store::LockStore;
use crate::supervise::{Facts, Pause, Phase, Step, confirmed_by, next_step, stop_times, too_late};

/// One of our clients: its cycles of acquire, command and release, through
/// the real store and `LockGuard`.
pub async fn our_client(who: &Arc<Who>, spec: &Spec, p: Params) {
    let net = SimStore::new(who.w.clone(), who.mach.clone(), who.name.clone());
    let shared: Arc<dyn LockStore> = if who.w.dir {
        Arc::new(super::dir::dir_store(who.w.clone(), who.i))
    } else if who.w.s3 {
        Arc::new(super::objects::s3_store(net))
    } else {
        Arc::new(net.into_store())
    };
    for cycle in 0..spec.cycles {
        tokio::time::sleep(spec.think[cycle as usize]).await;
        let Some(guard) = acquire(who, &shared, spec, p).await else {
            continue;
        };
        hold(who, &guard, spec, p, cycle).await;
        release(who, guard).await;
    }
}

/// One acquire, recorded for the liveness invariants; the guard if granted.
async fn acquire(
    who: &Arc<Who>,
    shared: &Arc<dyn LockStore>,
    spec: &Spec,
    p: Params,
) -> Option<LockGuard> {
    let req = AcquireRequest {
        name: LOCK.into(),
        lease: p.lease,
        wait: spec.wait,
        owner: who.name.clone(),
        reason: None,
        on_wait: None,
        supervised: true,
        max_holders: match &who.w.sharing {
            Sharing::Semaphore(n) => Some(*n),
            _ => None,
        },
        shared: matches!(&who.w.sharing, Sharing::ReadWrite(k) if k[who.i]),
    };
    who.log(format_args!("acquire (wait {:?})", spec.wait));
    {
        let mut a = who.act.lock().unwrap();
        a.busy = true;
        a.stale = false;
    }
    let attempt = {
        let mut live = who.w.live.lock().unwrap();
        live.attempts.push(Attempt {
            client: who.i,
            wait: spec.wait,
            start: who.w.t(),
            end: None,
        });
        live.attempts.len() - 1
    };
    let acquired = LockGuard::acquire(
        shared.clone(),
        &req,
        p.renew_every,
        Box::pin(std::future::pending()),
    )
    .await;
    let how = match &acquired {
        Ok(_) => AcqEnd::Granted,
        Err(Error::NotAcquired { .. }) => AcqEnd::NotAcquired,
        Err(_) => AcqEnd::Failed,
    };
    who.w.live.lock().unwrap().attempts[attempt].end = Some((who.w.t(), how));
    match acquired {
        Ok(g) => Some(g),
        Err(e) => {
            not_acquired(who, spec, &e);
            None
        }
    }
}

fn not_acquired(who: &Who, spec: &Spec, e: &Error) {
    who.act.lock().unwrap().busy = false;
    if !matches!(e, Error::NotAcquired { .. }) && spec.skew_ms > 600_000 {
        // Its first grant may have landed, stamped on a clock far
        // ahead, and not been given back: unanswered before any
        // answer calibrated the clock, or its rewrite and its
        // give-back failed.
        *who.w.blocked.lock().unwrap() = Some(format!(
            "{}'s first grant, stamped on its clock {} s ahead, may have landed and not been given back (the acquire failed)",
            who.name,
            spec.skew_ms / 1000
        ));
    }
    who.log(format_args!("not acquired: {}", short(e)));
}

/// From the grant to the command's end: the command starts as `run`
/// starts it, if it does.
async fn hold(who: &Arc<Who>, guard: &LockGuard, spec: &Spec, p: Params, cycle: u32) {
    let lease = guard.lease();
    who.log(format_args!(
        "granted, fence {:?}, deadline in {:.3}s",
        lease.fence,
        lease.deadline.remaining().as_secs_f64()
    ));
    check_deadline(who, &lease);
    let (term_at, kill_at) = stop_times(lease.deadline, p.lease, p.renew_every, p.kill_after);
    who.act.lock().unwrap().kill_true = Some(who.mach.true_at_boot(kill_at.since_origin()));
    if let Some((c, len, kind)) = spec.pause_after_grant {
        if c == cycle {
            who.pause_for(len, kind).await;
        }
    }
    // As `run`: a lease suspect from its grant starts the command only
    // once a renewal confirms it, and the SIGTERM time is that of the
    // lease as it is then.
    let confirmed = confirmed_by(guard, term_at).await;
    let (term_at, _) = stop_times(
        guard.watch().borrow().lease.deadline,
        p.lease,
        p.renew_every,
        p.kill_after,
    );
    if !confirmed {
        who.log(format_args!(
            "suspect from its grant and not confirmed: the command is not started"
        ));
    } else if too_late(BootInstant::now(), term_at) {
        who.log(format_args!("too late to start the command"));
    } else {
        supervise(who, guard, spec, p, spec.work[cycle as usize]).await;
    }
}

/// The release, bounded as `run` bounds it.
async fn release(who: &Who, guard: LockGuard) {
    let lost = guard.watch().borrow().lost.clone();
    let limit = if lost.is_some() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(15)
    };
    match tokio::time::timeout(limit, guard.release()).await {
        Ok(Ok(())) => {
            who.w.live.lock().unwrap().releases.push((who.i, who.w.t()));
            who.log(format_args!("released"))
        }
        Ok(Err(e)) => who.log(format_args!("release: {}", short(&e))),
        Err(_) => who.log(format_args!("release timed out")),
    }
    who.act.lock().unwrap().busy = false;
}

/// The `run` supervisor, as a model around the real pure decisions
/// ([`stop_times`], [`next_step`]): SIGSTOP, SIGTERM and SIGKILL take
/// effect at once; a command that ignores SIGTERM acts until SIGKILL.
async fn supervise(who: &Arc<Who>, guard: &LockGuard, spec: &Spec, p: Params, work: Duration) {
    let mut s = Supervisor::start(who, guard, spec, p, work).await;
    loop {
        if who.mach.paused() {
            who.close();
            who.mach.awake().await;
            continue;
        }
        let st = s.rx.borrow_and_update().clone();
        if st.lease.lease_id != s.cur.lease_id {
            s.renewed(&st);
        }
        let now = BootInstant::now();
        if s.step(&st, now) {
            return; // the command was stopped
        }
        let running = s.phase.pause.is_none();
        s.acts(running, now);
        if s.work_left.is_zero() {
            who.close();
            who.log(format_args!("command exits"));
            return;
        }
        s.wait(running).await;
    }
}

/// The supervisor's state over one command.
struct Supervisor<'a> {
    who: &'a Arc<Who>,
    spec: &'a Spec,
    p: Params,
    rx: tokio::sync::watch::Receiver<crate::lease::GuardState>,
    /// The lease as last seen.
    cur: crate::request::Lease,
    term_at: BootInstant,
    kill_at: BootInstant,
    phase: Phase,
    renewed_since_pause: bool,
    work_left: Duration,
    /// Whether the guard's state can still change.
    state_open: bool,
}

impl<'a> Supervisor<'a> {
    /// Spawns the command, which acts from then on; the supervisor looks a
    /// moment later.
    async fn start(
        who: &'a Arc<Who>,
        guard: &LockGuard,
        spec: &'a Spec,
        p: Params,
        work: Duration,
    ) -> Supervisor<'a> {
        let mut rx = guard.watch();
        let cur = rx.borrow_and_update().lease.clone();
        let (term_at, kill_at) = stop_times(cur.deadline, p.lease, p.renew_every, p.kill_after);
        who.act.lock().unwrap().kill_true = Some(who.mach.true_at_boot(kill_at.since_origin()));
        who.log(format_args!(
            "command starts ({:.3}s of work)",
            work.as_secs_f64()
        ));
        who.open(cur.fence);
        let latency = ms(who.w.rng.lock().unwrap().u64(1..20));
        tokio::time::sleep(latency).await;
        Supervisor {
            who,
            spec,
            p,
            rx,
            cur,
            term_at,
            kill_at,
            phase: Phase::default(),
            renewed_since_pause: false,
            work_left: work.saturating_sub(latency),
            state_open: true,
        }
    }

    /// The guard renewed the lease: new stop times.
    fn renewed(&mut self, st: &crate::lease::GuardState) {
        let (who, p) = (self.who, self.p);
        self.cur = st.lease.clone();
        let cur = &self.cur;
        who.log(format_args!(
            "renewed: expires {:.3}s (store), deadline in {:.3}s",
            (cur.expires_at_ms - EPOCH_MS) as f64 / 1000.0,
            cur.deadline.since_origin().as_secs_f64()
                - BootInstant::now().since_origin().as_secs_f64()
        ));
        (self.term_at, self.kill_at) =
            stop_times(cur.deadline, p.lease, p.renew_every, p.kill_after);
        if self.phase.pause.is_some() {
            self.renewed_since_pause = true;
        }
        check_deadline(who, cur);
        let mut a = who.act.lock().unwrap();
        a.kill_true = Some(who.mach.true_at_boot(self.kill_at.since_origin()));
        // A renewal after a VM pause past the kill time may itself be
        // stamped on bounds that missed the pause: the hold stays in
        // the paused-holder case until it ends.
    }

    /// Takes the real supervisor's next step; true when the command was
    /// stopped.
    fn step(&mut self, st: &crate::lease::GuardState, now: BootInstant) -> bool {
        let who = self.who;
        let f = Facts {
            now,
            term_at: self.term_at,
            kill_at: self.kill_at,
            lost: st.lost.is_some(),
            suspect: st.suspect.is_some(),
            renewed_since_pause: self.renewed_since_pause,
        };
        match next_step(&f, &self.phase, self.p.kill_after) {
            Step::Wait => {}
            Step::Pause => {
                self.phase.pause = Some(Pause::Suspect);
                self.renewed_since_pause = false;
                who.log(format_args!("SIGSTOP: the lease is suspect"));
            }
            Step::Continue => {
                self.phase.pause = None;
                who.log(format_args!("SIGCONT: the lease is confirmed"));
            }
            Step::Stop { kill_at: k } => {
                self.phase.kill_at = Some(k);
                self.phase.pause = None;
                who.log(format_args!(
                    "SIGTERM ({}){}",
                    st.lost
                        .as_ref()
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "no renewal in time".into()),
                    if self.spec.ignores_term {
                        ", ignored"
                    } else {
                        ""
                    }
                ));
                if !self.spec.ignores_term || k <= now {
                    // Stopped at once (or SIGKILLed at once: its kill time
                    // has come).
                    who.close();
                    return true;
                }
            }
            Step::Kill => {
                who.close();
                who.log(format_args!("SIGKILL"));
                return true;
            }
        }
        false
    }

    /// The command acts while it runs: invariant (d).
    fn acts(&self, running: bool, now: BootInstant) {
        let (who, cur) = (self.who, &self.cur);
        if running {
            who.open(cur.fence);
            let stale = who.act.lock().unwrap().stale;
            // (Once SIGTERM went out, the command may act until the kill
            // time fixed then, which the model enforces.)
            if !stale && self.phase.kill_at.is_none() && now > cur.deadline {
                who.w.violation(format!(
                    "{}: the command acts past its own deadline (invariant d), {:.3}s past it",
                    who.name,
                    (now - cur.deadline).as_secs_f64()
                ));
            }
        } else {
            who.close();
        }
    }

    /// Until the next thing to look at: a pause, the guard's state, the
    /// stop time, or the command's end.
    async fn wait(&mut self, running: bool) {
        let who = self.who;
        let wake = self.phase.kill_at.unwrap_or(self.term_at);
        let t0 = who.w.t();
        let mut prx = who.mach.pause_tx.subscribe();
        tokio::select! {
            // Biased: reproducible; every branch leads to the same look.
            biased;
            _ = prx.changed() => {}
            changed = self.rx.changed(), if self.state_open => {
                if changed.is_err() {
                    self.state_open = false;
                }
            }
            _ = boottime::sleep_until(wake) => {}
            _ = tokio::time::sleep(self.work_left), if running => {}
        }
        if running {
            self.work_left = self.work_left.saturating_sub(who.w.t().saturating_sub(t0));
        }
    }
}
