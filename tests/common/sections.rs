//! Critical sections the tests' commands run, and the checks of what they
//! logged: in turn, never more at once than allowed.

use super::{Out, Running, lines};
use std::path::Path;
use std::time::{Duration, Instant};

/// A shell script for a critical section: logs "begin TAG", sleeps, logs
/// "end TAG". Lines are appended, so their order is the order of events
/// whatever each process's wall clock says.
pub fn section(log: &Path, tag: &str, secs: f64) -> String {
    format!(
        "echo 'begin {tag}' >> '{log}'; sleep {secs}; echo 'end {tag}' >> '{log}'",
        log = log.display()
    )
}

/// Waits up to `within` for `log` to hold the line `line` (a [`section`]'s
/// "begin TAG"); panics with the log otherwise.
pub fn wait_logged(log: &Path, line: &str, within: Duration) {
    let start = Instant::now();
    while !lines(log).iter().any(|l| l == line) {
        assert!(
            start.elapsed() < within,
            "{line:?} not logged within {within:?}: {:?}",
            lines(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts the log shows the holder's whole section before the waiter's.
#[track_caller]
pub fn assert_in_turn(log: &Path) {
    assert_eq!(
        lines(log),
        ["begin holder", "end holder", "begin waiter", "end waiter"],
        "the two critical sections overlapped"
    );
}

/// Waits (30 s each) for a `holder` and a `waiter` that ran the
/// [`section`]s "holder" and "waiter" to `log`: both must exit 0, the
/// sections in turn. Returns their outputs.
#[track_caller]
pub fn assert_both_in_turn(holder: Running, waiter: Running, log: &Path) -> (Out, Out) {
    let h = holder.wait(Duration::from_secs(30));
    let w = waiter.wait(Duration::from_secs(30));
    assert_eq!(h.code, 0, "holder:\n{}", h.describe());
    assert_eq!(w.code, 0, "waiter:\n{}", w.describe());
    assert_in_turn(log);
    (h, w)
}

/// `sh -c` that records its start and end (ns) as `dir/TAG.start` and
/// `dir/TAG.end`, sleeping `secs` between.
pub fn timed(dir: &Path, tag: &str, secs: f64) -> String {
    let d = dir.display();
    format!("date +%s%N > {d}/{tag}.start; sleep {secs}; date +%s%N > {d}/{tag}.end")
}

/// The ns stamp `date +%s%N` wrote to `path`; panics if there is none.
pub fn read_ns(path: &Path) -> i128 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{} holds no stamp ({e}): {s:?}", path.display()))
}

/// (start, end) in ns of the command recorded by [`timed`] as `tag`.
pub fn span(dir: &Path, tag: &str) -> (i128, i128) {
    (
        read_ns(&dir.join(format!("{tag}.start"))),
        read_ns(&dir.join(format!("{tag}.end"))),
    )
}

/// The largest number of spans running at one instant.
pub fn max_overlap(spans: &[(i128, i128)]) -> usize {
    spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}
