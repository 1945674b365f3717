//! Time in the simulation: true time (tokio's paused clock since the
//! schedule started), the store's clock at its origin, and each simulated
//! machine's clocks ([`SimClock`]), which pause, lose time and step as the
//! schedule says.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::timebase::TimeSource;

/// The store's clock at true time zero, ms since the epoch.
pub const EPOCH_MS: i64 = 1_800_000_000_000;

/// True time: tokio's virtual clock since the schedule started.
pub fn true_now(start: tokio::time::Instant) -> Duration {
    tokio::time::Instant::now().saturating_duration_since(start)
}

/// How a client is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseKind {
    /// The VM is paused: monotonic and boot-time clocks stand still; the
    /// wall clock is resynchronised afterwards.
    Vm,
    /// Suspend to RAM: the boot-time clock counts it, the monotonic does not.
    Suspend,
    /// One process stopped (SIGSTOP): it runs nothing, and every clock
    /// counts the time.
    Stop,
}

#[derive(Debug, Default)]
struct ClockState {
    /// True time lost to the boot-time clock (VM pauses).
    boot_lost: Duration,
    /// True time lost to the monotonic clock (every pause).
    mono_lost: Duration,
    /// A pause in progress: when it began (true) and its kind.
    paused: Option<(Duration, PauseKind)>,
    /// Wall clock minus true store-less time, ms (skew; jumps change it).
    wall_skew_ms: i64,
}

/// One simulated machine's clocks: the [`TimeSource`] its tasks run under.
pub struct SimClock {
    start: tokio::time::Instant,
    std_base: std::time::Instant,
    boot_origin: Duration,
    mono_origin: Duration,
    st: Mutex<ClockState>,
    jumps: AtomicU64,
    /// Flips on every pause and resume.
    pub pause_tx: tokio::sync::watch::Sender<bool>,
}

impl SimClock {
    pub fn new(
        start: tokio::time::Instant,
        boot_origin: Duration,
        mono_origin: Duration,
        wall_skew_ms: i64,
    ) -> SimClock {
        SimClock {
            start,
            std_base: std::time::Instant::now(),
            boot_origin,
            mono_origin,
            st: Mutex::new(ClockState {
                wall_skew_ms,
                ..ClockState::default()
            }),
            jumps: AtomicU64::new(0),
            pause_tx: tokio::sync::watch::channel(false).0,
        }
    }

    fn t(&self) -> Duration {
        true_now(self.start)
    }

    pub fn paused(&self) -> bool {
        self.st.lock().unwrap().paused.is_some()
    }

    pub fn pause(&self, kind: PauseKind) {
        let t = self.t();
        self.st.lock().unwrap().paused = Some((t, kind));
        self.pause_tx.send_replace(true);
    }

    pub fn resume(&self) {
        let t = self.t();
        {
            let mut st = self.st.lock().unwrap();
            if let Some((p, kind)) = st.paused.take() {
                let d = t.saturating_sub(p);
                if kind != PauseKind::Stop {
                    st.mono_lost += d;
                }
                if kind == PauseKind::Vm {
                    st.boot_lost += d;
                }
            }
        }
        self.pause_tx.send_replace(false);
    }

    pub fn jump_wall(&self, delta_ms: i64) {
        self.st.lock().unwrap().wall_skew_ms += delta_ms;
    }

    /// Waits until the machine is not paused.
    pub async fn awake(&self) {
        let mut rx = self.pause_tx.subscribe();
        while *rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The true instant at which the boot-time clock reads `boot`, if the
    /// machine is not paused until then.
    pub fn true_at_boot(&self, boot: Duration) -> Duration {
        let now_boot = self.boot();
        let t = self.t();
        if boot >= now_boot {
            t + (boot - now_boot)
        } else {
            t.saturating_sub(now_boot - boot)
        }
    }
}

impl TimeSource for SimClock {
    // While paused, the machine runs nothing, so nothing it reads may see
    // time pass: every clock reads what it read when the pause began. On
    // waking, boot-time (after a suspend) and wall time (resynchronised
    // after a VM pause) show the whole gap at the first look.
    fn boot(&self) -> Duration {
        let st = self.st.lock().unwrap();
        let t = match st.paused {
            Some((p, _)) => p,
            None => self.t(),
        };
        self.boot_origin + t.saturating_sub(st.boot_lost)
    }

    fn mono(&self) -> std::time::Instant {
        let st = self.st.lock().unwrap();
        let t = match st.paused {
            Some((p, _)) => p,
            None => self.t(),
        };
        self.std_base + self.mono_origin + t.saturating_sub(st.mono_lost)
    }

    fn wall_ms(&self) -> i64 {
        let st = self.st.lock().unwrap();
        let t = match st.paused {
            Some((p, _)) => p,
            None => self.t(),
        };
        EPOCH_MS + t.as_millis() as i64 + st.wall_skew_ms
    }

    fn note_forward_jump(&self) {
        self.jumps.fetch_add(1, Ordering::SeqCst);
    }

    fn forward_jumps(&self) -> u64 {
        self.jumps.load(Ordering::SeqCst)
    }
}
