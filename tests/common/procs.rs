//! Processes and the files their commands write: waiting for a line, a
//! pid, a child by its command line, a process's state; stopping or
//! killing what a failing test would otherwise leave behind.

use super::Running;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

/// Waits up to `timeout` for `path` to hold at least one complete line and
/// returns its contents; panics (showing whether the run finished) when it
/// does not, or once `running` has finished without writing it.
pub fn wait_for_line(path: &Path, timeout: Duration, running: &mut Running) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        if running.finished() || Instant::now() >= deadline {
            let finished = running.finished();
            panic!(
                "{} has no complete line after {timeout:?} (awsflock finished: {finished})",
                path.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `timeout` for `path` to hold a complete first line and
/// returns it; `None` if it does not, or if `running` (when given)
/// finished first.
pub fn first_line(
    path: &Path,
    timeout: Duration,
    mut running: Option<&mut Running>,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Some((line, _)) = s.split_once('\n') {
                return Some(line.to_string());
            }
        }
        let finished = running.as_deref_mut().is_some_and(Running::finished);
        if finished || Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The pid a command wrote to `path` (`echo $$ > path`); panics if there
/// is none.
pub fn read_pid(path: &Path) -> i32 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{} does not hold a pid ({e}): {s:?}", path.display()))
}

/// The lines of `path` that parse as a `T` (the stamps `date +%s%N` or
/// `date +%s.%N` appended), in order; none if it does not exist.
pub fn numbers<T: FromStr>(path: &Path) -> Vec<T> {
    super::lines(path)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// At most the last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut out = String::new();
    if from > 0 {
        out.push_str(&format!("[{from} earlier lines not shown]\n"));
    }
    for l in &lines[from..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The fields of `/proc/PID/stat` after the command name (which is in
/// parentheses and may itself hold spaces or parentheses): the state
/// first, then the parent's pid, ….
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let i = stat.rfind(')')?;
    Some(
        stat[i + 1..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// The state letter of process `pid` (`/proc/PID/stat`), if it exists.
pub fn state_of(pid: i32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The start time of `pid` (field 22 of /proc/PID/stat), to tell a process
/// from a later one that reuses its pid.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The pids of `parent`'s children, with their command lines.
pub fn children_of(parent: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let ppid = stat_fields(pid)
            .and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
            .unwrap_or(0);
        if ppid == parent {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push((pid, String::from_utf8_lossy(&cmdline).into_owned()));
        }
    }
    out
}

/// The pid of `parent`'s child whose command line contains `needle`.
pub fn child_with(parent: u32, needle: &str) -> Option<i32> {
    children_of(parent)
        .into_iter()
        .find(|(_, cmdline)| cmdline.contains(needle))
        .map(|(pid, _)| pid)
}

/// SIGKILLs the given processes on drop (if they still run and are the same
/// processes), so that a failing assertion leaves nothing running.
pub struct KillOnDrop(Vec<(i32, Option<u64>)>);

impl KillOnDrop {
    pub fn new(pids: &[i32]) -> KillOnDrop {
        KillOnDrop(pids.iter().map(|&p| (p, start_time(p))).collect())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &(pid, started) in &self.0 {
            if started.is_some() && start_time(pid) == started {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Continues a stopped process (a frozen moto, a stopped awsflock) when
/// dropped, so that a failing assertion does not leave it stopped.
pub struct ContOnDrop(pub u32);

impl Drop for ContOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

/// Waits up to `within` for `path` to hold a pid (`echo $$ > path`) and
/// returns it; panics, naming `what`, if it does not.
pub fn await_pid(path: &Path, within: Duration, what: &str) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(p) = s.trim().parse::<i32>() {
                return p;
            }
        }
        assert!(start.elapsed() < within, "no {what} after {within:?}");
        thread::sleep(Duration::from_millis(50));
    }
}
