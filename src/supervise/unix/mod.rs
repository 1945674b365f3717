//! The Unix half of the supervisor: process groups, the terminal, signals,
//! reaping (with job-control stops), the dead man's switch (`watchdog`),
//! and turning a wait status into an exit code.
//!
//! The command runs in a process group of its own, so that one `killpg`
//! reaches it and everything it started (`sh -c` grandchildren included).
//! Because that group is not ours, a terminal would no longer send Ctrl-C to
//! it; so when we own the terminal we hand it to the command's group, and the
//! terminal's signals reach the command directly and exactly once, while
//! signals sent to awsflock itself are forwarded by us.

use std::ffi::OsString;
use std::io::{self, IsTerminal};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp, tcgetpgrp};

use crate::exit;

mod watchdog;
pub use watchdog::{Watchdog, watchdog_main};

/// The signals awsflock forwards to the command (and that end a wait),
/// unless the caller ignored them (see [`signals`]).
pub const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Whether `sig` is ignored (SIG_IGN) right now. Called before awsflock
/// installs anything for `sig`, it tells what the caller set (`nohup`, a
/// shell's background job).
pub fn ignored(sig: i32) -> bool {
    // SAFETY: a null new action only reads the current disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The forwarded signals the caller did not ignore. A signal that was
/// ignored at start gets no handler, so it stays ignored for awsflock and,
/// through exec, for the command (`nohup awsflock run ...`).
pub fn forwarded() -> Vec<i32> {
    FORWARDED.into_iter().filter(|&s| !ignored(s)).collect()
}

/// A stream of the forwarded signals, installed before the wait begins so
/// that none is missed (and none kills awsflock while it holds a lock).
pub fn signals() -> io::Result<signal_hook_tokio::Signals> {
    signal_hook_tokio::Signals::new(forwarded())
}

/// Signals the supervisor handles itself once the command may run: SIGTSTP
/// (`kill -TSTP awsflock`) is forwarded to the command's group, whose stop
/// then stops awsflock as a job; SIGCHLD drives the reaping. SIGTSTP is left
/// alone when the caller ignored it.
pub fn supervisor_signals() -> io::Result<signal_hook_tokio::Signals> {
    let mut sigs = vec![libc::SIGCHLD];
    if !ignored(libc::SIGTSTP) {
        sigs.push(libc::SIGTSTP);
    }
    signal_hook_tokio::Signals::new(sigs)
}

static TTOU_WAS_DEFAULT: AtomicBool = AtomicBool::new(false);

/// Makes writes to the terminal unable to stop awsflock: with `stty tostop`
/// a background process that writes gets SIGTTOU, whose default action
/// stops it, and a stopped supervisor renews nothing. The caller's
/// disposition is remembered and restored in the command ([`spawn`]).
pub fn ignore_ttou() {
    if !ignored(libc::SIGTTOU) {
        TTOU_WAS_DEFAULT.store(true, Ordering::SeqCst);
        // SAFETY: SIG_IGN installs no handler code.
        unsafe {
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        }
    }
}

/// Whether stdin is a terminal whose foreground group is ours: then the
/// command gets the terminal, for prompts and Ctrl-C.
fn own_terminal() -> bool {
    io::stdin().is_terminal() && tcgetpgrp(io::stdin()).is_ok_and(|pg| pg == getpgrp())
}

/// Whether the process runs as PID 1 (a container's init): then it also
/// reaps orphans, and cannot stop itself.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// Whether a job-control shell can continue awsflock if it stops itself as
/// a job: awsflock has a controlling terminal and its process group is not
/// orphaned (a member's parent is in another group of the same session: the
/// shell that made the job). It is the kernel's own rule, which discards
/// the terminal's stop signals for an orphaned group since nobody would
/// continue it. Run from cron, CI, `setsid` or a service: no. Assumed
/// elsewhere than Linux.
pub fn job_control_shell() -> bool {
    #[cfg(target_os = "linux")]
    {
        let Some(me) = proc_ids("self") else {
            return false;
        };
        if me.tty == 0 {
            return false;
        }
        let Some(pids) = crate::sys::host::pids() else {
            return true;
        };
        let procs: Vec<ProcIds> = pids.filter_map(|p| proc_ids(&p)).collect();
        procs.iter().filter(|p| p.pgrp == me.pgrp).any(|member| {
            procs.iter().any(|parent| {
                parent.pid == member.ppid && parent.pgrp != me.pgrp && parent.session == me.session
            })
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

/// The ids of a process, from `/proc/PID/stat`.
#[cfg(target_os = "linux")]
struct ProcIds {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    session: i32,
    tty: i32,
}

#[cfg(target_os = "linux")]
fn proc_ids(pid: &str) -> Option<ProcIds> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let own: i32 = stat.split_whitespace().next()?.parse().ok()?;
    let i = stat.rfind(')')?;
    let f: Vec<i32> = stat[i + 1..]
        .split_whitespace()
        .skip(1)
        .take(5)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.len() == 5).then(|| ProcIds {
        pid: own,
        ppid: f[0],
        pgrp: f[1],
        session: f[2],
        tty: f[3],
    })
}

/// A spawned command: its process (and group) id.
pub struct Spawned {
    /// The child's pid, which is also its process group id.
    pub pgid: Pid,
}

/// Formats `n` in decimal into `buf` without allocating (for use between
/// fork and exec); returns the used tail of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 24]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Starts `program args` in a new process group, with the given extra
/// environment, stdin/stdout/stderr inherited, and a parent-death signal so
/// that it does not outlive a killed awsflock. Before exec the child
/// announces its pid (its group) to the watchdog on `announce` (the
/// watchdog's pipe, close-on-exec), so that the watchdog knows the group
/// even if awsflock is stopped right after the fork.
pub fn spawn(
    program: &OsString,
    args: &[OsString],
    env: &[(&str, String)],
    announce: Option<i32>,
) -> io::Result<Spawned> {
    let terminal = own_terminal();
    let parent = std::process::id() as libc::pid_t;
    let ttou_default = TTOU_WAS_DEFAULT.load(Ordering::SeqCst);
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid, signal, write, tcsetpgrp,
    // getpid) on stack buffers.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::other(
                        "awsflock exited before the command started",
                    ));
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = parent;
            if let Some(fd) = announce {
                let mut line = [0u8; 32];
                line[0] = b'G';
                line[1] = b' ';
                let mut num = [0u8; 24];
                let digits = decimal(libc::getpid() as u64, &mut num);
                line[2..2 + digits.len()].copy_from_slice(digits);
                let len = 2 + digits.len() + 1;
                line[len - 1] = b'\n';
                // A dead watchdog must fail the spawn, not kill us with SIGPIPE.
                let old = libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                let n = libc::write(fd, line.as_ptr().cast(), len);
                libc::signal(libc::SIGPIPE, old);
                if n != len as isize {
                    return Err(io::Error::other(
                        "the watchdog is gone; the command was not started",
                    ));
                }
            }
            if terminal {
                // We are a background group until this call succeeds, so a
                // tcsetpgrp would stop us with SIGTTOU: ignore it meanwhile.
                libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpid());
            }
            if ttou_default || terminal {
                libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The child is reaped with waitpid (see `reap`); the handle is only
    // needed for its pid, and dropping it neither waits nor kills.
    let pgid = Pid::from_raw(child.id() as i32);
    Ok(Spawned { pgid })
}

impl Spawned {
    /// Sends `sig` to the command's whole process group.
    pub fn signal_group(&self, sig: i32) {
        if let Ok(s) = Signal::try_from(sig) {
            let _ = killpg(self.pgid, s);
        }
    }

    /// Whether the command's group has the terminal now (also once the
    /// command is gone, until the terminal is taken back).
    pub fn has_terminal(&self) -> bool {
        io::stdin().is_terminal() && tcgetpgrp(io::stdin()).is_ok_and(|pg| pg == self.pgid)
    }

    /// Takes the terminal back from the command's group, if it has it.
    /// SIGTTOU is ignored by the supervisor, so this cannot stop us.
    pub fn take_terminal(&self) {
        if self.has_terminal() {
            // SAFETY: plain libc calls on our own stdin.
            unsafe {
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpgrp());
                libc::signal(libc::SIGTTOU, old);
            }
        }
    }

    /// Gives the terminal to the command's group when awsflock is in the
    /// foreground of it now: after `fg` (also of a job started with `&`,
    /// whose command stopped on reading the terminal), not after `bg`.
    pub fn give_terminal(&self) {
        if own_terminal() {
            // SAFETY: plain libc calls on our own stdin.
            unsafe {
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, self.pgid.as_raw());
                libc::signal(libc::SIGTTOU, old);
            }
        }
    }

    /// Whether a live (not zombie) process is still in the command's group.
    pub fn group_alive(&self) -> bool {
        group_alive(self.pgid)
    }
}

/// Whether any live (not zombie) process has process group `pgid`.
fn group_alive(pgid: Pid) -> bool {
    #[cfg(target_os = "linux")]
    {
        // Zombies count for kill(2), and a zombie reparented to a slow init
        // may linger: look at the states.
        let Some(pids) = crate::sys::host::pids() else {
            return killpg(pgid, None).is_ok();
        };
        for name in pids {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
                continue;
            };
            let Some(i) = stat.rfind(')') else { continue };
            let mut fields = stat[i + 1..].split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let _ppid = fields.next();
            let pgrp: i32 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
            if pgrp == pgid.as_raw() && !matches!(state, "Z" | "X") {
                return true;
            }
        }
        false
    }
    #[cfg(not(target_os = "linux"))]
    {
        killpg(pgid, None).is_ok()
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// What waitpid reported about the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The command ended.
    Ended(Ended),
    /// The command was stopped by this signal (Ctrl-Z, SIGTTIN, SIGSTOP).
    Stopped(i32),
    /// The command was continued.
    Continued,
    /// The watchdog exited.
    WatchdogGone,
}

fn event_of(ws: WaitStatus) -> Option<Event> {
    match ws {
        WaitStatus::Exited(_, code) => Some(Event::Ended(Ended::Code(code))),
        WaitStatus::Signaled(_, sig, _) => Some(Event::Ended(Ended::Signal(sig as i32))),
        WaitStatus::Stopped(_, sig) => Some(Event::Stopped(sig as i32)),
        WaitStatus::Continued(_) => Some(Event::Continued),
        _ => None,
    }
}

/// Collects whatever the command and the watchdog reported, without
/// blocking. As PID 1, reaps every other child (orphans reparented to us)
/// too, so that none stays a zombie.
pub fn reap(cmd: Pid, watchdog: Option<Pid>) -> Vec<Event> {
    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED | WaitPidFlag::WCONTINUED;
    let mut events = Vec::new();
    if is_init() {
        loop {
            match waitpid(None::<Pid>, Some(flags)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(ws) => {
                    let pid = ws.pid();
                    if pid == Some(cmd) {
                        events.extend(event_of(ws));
                    } else if pid.is_some() && pid == watchdog {
                        match ws {
                            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                                events.push(Event::WatchdogGone)
                            }
                            WaitStatus::Stopped(w, _) => continue_watchdog(w),
                            _ => {}
                        }
                    }
                }
            }
        }
        return events;
    }
    loop {
        match waitpid(cmd, Some(flags)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => break,
            Err(e) => {
                // Not our child any more (reaped elsewhere): it has ended,
                // how is unknown.
                tracing::warn!("lost track of the command: {e}");
                events.push(Event::Ended(Ended::Code(exit::ERROR)));
                break;
            }
            Ok(ws) => {
                let ended = matches!(ws, WaitStatus::Exited(..) | WaitStatus::Signaled(..));
                events.extend(event_of(ws));
                if ended {
                    break;
                }
            }
        }
    }
    if let Some(w) = watchdog {
        match waitpid(w, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                events.push(Event::WatchdogGone)
            }
            Ok(WaitStatus::Stopped(..)) => continue_watchdog(w),
            _ => {}
        }
    }
    events
}

/// Continues a watchdog that someone stopped by its pid (it cannot ignore
/// SIGSTOP). A stopped watchdog fires nothing: if awsflock were stopped or
/// killed meanwhile, the command's group would outlive the lease (a killed
/// awsflock's stopped watchdog is continued by the kernel only when its
/// group becomes orphaned, not under a subreaper). The supervisor notices
/// the stop within its loop's period (SIGCHLD, or 0.5 s).
fn continue_watchdog(w: Pid) {
    tracing::warn!("the watchdog was stopped; continuing it");
    let _ = nix::sys::signal::kill(w, Signal::SIGCONT);
}

/// Reaps any children left (as PID 1: orphans), without blocking.
pub fn reap_orphans() {
    if is_init() {
        while let Ok(ws) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            if ws == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// Whether `pid` is stopped right now (and not dead). Checked just before
/// awsflock stops itself for a stopped command: the command may have been
/// continued or killed (by the watchdog) since its stop was reported.
pub fn still_stopped(pid: Pid) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        matches!(state, Some("T" | "t"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        true
    }
}

/// The state letter of process `pid` (`/proc/PID/stat`), if it exists.
fn state_of(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let i = stat.rfind(')')?;
    stat[i + 1..].split_whitespace().next().map(str::to_string)
}

/// Whether the command (the leader of group `pgid`) exists and is neither
/// stopped nor a zombie (Linux; elsewhere never, so nothing is woken).
fn leader_running(pgid: i32) -> bool {
    matches!(state_of(pgid).as_deref(), Some(s) if !matches!(s, "T" | "t" | "Z" | "X"))
}

/// Whether process `pid` is stopped.
fn stopped(pid: i32) -> bool {
    matches!(state_of(pid).as_deref(), Some("T" | "t"))
}

/// Stops awsflock itself with SIGSTOP, so that the shell sees the job
/// stopped; returns once awsflock is continued (`fg`, `bg`, SIGCONT).
pub fn stop_self() {
    let _ = nix::sys::signal::raise(Signal::SIGSTOP);
}

/// The exit code a shell would report for a finished command: its code, or
/// 128+N when killed by signal N.
pub fn exit_code(ended: Ended) -> i32 {
    match ended {
        Ended::Code(code) => code,
        Ended::Signal(sig) => exit::SIGNAL_BASE + sig,
    }
}

static REPLAY: AtomicBool = AtomicBool::new(false);

/// Asks [`die_by_signal`] to send its signal to awsflock's whole process
/// group (the caller's job: the script's shell, a pipeline's other
/// members), as the terminal would have sent the Ctrl-C (or Ctrl-\\) that
/// ended the command had the command been in that group (see DESIGN.md,
/// "the terminal").
pub fn replay_to_own_group() {
    REPLAY.store(true, Ordering::SeqCst);
}

/// Ends awsflock by signal `sig`, as its command ended (so that a shell
/// loop or script that got Ctrl-C stops too), the way timeout(1) does: no
/// core dump, default action, unblocked, raised; to awsflock's whole
/// process group first when [`replay_to_own_group`] asked for it (the
/// kernel queues it to every member before awsflock itself dies of it).
/// Returns 128+N if the signal did not end the process (PID 1 ignores it),
/// for the caller to exit with.
pub fn die_by_signal(sig: i32) -> i32 {
    // SAFETY: plain libc calls with valid arguments.
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let _ = libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        if REPLAY.load(Ordering::SeqCst) && !is_init() {
            libc::killpg(libc::getpgrp(), sig);
        }
        libc::raise(sig);
    }
    exit::SIGNAL_BASE + sig
}

/// The exit code and message for a command that could not be started,
/// told as a shell would tell it: a directory is "not executable" (126),
/// and a file that exists but whose `#!` interpreter does not (the kernel's
/// ENOENT) is named with that interpreter (127), not as a command not found.
pub fn spawn_failure(program: &OsString, err: &io::Error) -> (i32, String) {
    let name = program.to_string_lossy();
    let found = resolve(program);
    match err.kind() {
        io::ErrorKind::NotFound => match &found {
            Some(path) => {
                let why = match interpreter(path) {
                    Some(i) => format!("its interpreter {i} was not found"),
                    None => "its interpreter (the program loader it names) was not found".into(),
                };
                (exit::NOT_FOUND, format!("cannot execute {name}: {why}"))
            }
            None => (exit::NOT_FOUND, format!("command not found: {name}")),
        },
        _ if found.as_ref().is_some_and(|p| p.is_dir()) => (
            exit::CANNOT_EXECUTE,
            format!("cannot execute {name}: it is a directory"),
        ),
        io::ErrorKind::PermissionDenied => (
            exit::CANNOT_EXECUTE,
            format!("cannot execute {name}: permission denied"),
        ),
        _ => (
            exit::CANNOT_EXECUTE,
            format!("cannot execute {name}: {err}"),
        ),
    }
}

/// Where `program` is, as exec would look for it: the path itself when it
/// names a directory (contains `/`), else the first `PATH` entry holding a
/// file of that name.
fn resolve(program: &OsString) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::path::Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return p.symlink_metadata().is_ok().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(p))
        .find(|c| c.is_file())
}

/// The interpreter named on the `#!` line of the file at `path`, if any.
fn interpreter(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_decimals_without_allocating() {
        let mut b = [0u8; 24];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(4_194_304, &mut b), b"4194304");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
