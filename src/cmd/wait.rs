//! What a waiter shows on stderr while the lock is held by another.

use std::sync::Arc;
use std::time::Duration;

use crate::info::LockInfo;
use crate::output::{say, stderr_is_terminal};
use crate::request::OnWait;

use super::show::{holder_line, waiting_line};

/// When a waiter off a terminal first says it is still waiting, and how
/// often after that: often enough for a CI system that kills a step silent
/// for ten minutes, rarely enough not to flood a log.
const STILL_WAITING_FIRST: Duration = Duration::from_secs(60);

const STILL_WAITING_EVERY: Duration = Duration::from_secs(300);

/// For tests only (not documented to users): a duration that replaces
/// both intervals above, so that a test need not wait minutes.
const STILL_WAITING_TEST_ENV: &str = "AWSFLOCK_TEST_STILL_WAITING_EVERY";

/// What a waiter shows on stderr: on a terminal, one live line redrawn in
/// place, drawn only once the lock was found held (a free lock draws
/// nothing); otherwise one line, another each time the holder changes, and
/// a "still waiting" line now and then ([`WaitLog`]).
pub(super) fn waiting_display(name: &str) -> OnWait {
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
pub(super) fn waiting_done() {
    let bar = WAIT_BAR.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
