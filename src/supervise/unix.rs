//! The Unix half of the supervisor: process groups, the terminal, signals,
//! the parent-death watchdog, and turning a wait status into an exit code.
//!
//! The command runs in a process group of its own, so that one `killpg`
//! reaches it and everything it started (`sh -c` grandchildren included).
//! Because that group is not ours, a terminal would no longer send Ctrl-C to
//! it; so when we own the terminal we hand it to the command's group, and the
//! terminal's signals reach the command directly and exactly once, while
//! signals sent to awsflock itself are forwarded by us.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{self, Signal, killpg};
use nix::unistd::{Pid, getpgrp, tcgetpgrp};

use crate::exit;

/// The signals awsflock forwards to the command (and that end a wait).
pub const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// A stream of the forwarded signals, installed before the wait begins so
/// that none is missed (and none kills awsflock while it holds a lock).
pub fn signals() -> io::Result<signal_hook_tokio::Signals> {
    signal_hook_tokio::Signals::new(FORWARDED)
}

/// Whether stdin is a terminal whose foreground group is ours: then the
/// command gets the terminal, for prompts and Ctrl-C.
fn own_terminal() -> bool {
    io::stdin().is_terminal() && tcgetpgrp(io::stdin()).is_ok_and(|pg| pg == getpgrp())
}

/// A spawned command: its process (and group) id, and whether it has the terminal.
pub struct Spawned {
    /// The child, to wait on.
    pub child: tokio::process::Child,
    /// The child's pid, which is also its process group id.
    pub pgid: Pid,
    terminal: bool,
}

/// Starts `program args` in a new process group, with the given extra
/// environment, stdin/stdout/stderr inherited, and a parent-death signal so
/// that it does not outlive a killed awsflock.
pub fn spawn(program: &OsString, args: &[OsString], env: &[(&str, String)]) -> io::Result<Spawned> {
    let terminal = own_terminal();
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid, signal, tcsetpgrp, getpid).
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
            if terminal {
                // We are a background group until this call succeeds, so a
                // tcsetpgrp would stop us with SIGTTOU: ignore it meanwhile.
                libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpid());
                libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(cmd).spawn()?;
    let pgid = Pid::from_raw(child.id().unwrap_or(0) as i32);
    Ok(Spawned {
        child,
        pgid,
        terminal,
    })
}

impl Spawned {
    /// Sends `sig` to the command's whole process group.
    pub fn signal_group(&self, sig: i32) {
        if let Ok(s) = Signal::try_from(sig) {
            let _ = killpg(self.pgid, s);
        }
    }

    /// Takes the terminal back after the command ended.
    pub fn restore_terminal(&self) {
        if self.terminal {
            // SAFETY: plain libc calls on our own stdin; SIGTTOU is ignored
            // for the call because we are a background group right now.
            unsafe {
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpgrp());
                libc::signal(libc::SIGTTOU, old);
            }
        }
    }
}

/// The exit code a shell would report for a finished command: its code, or
/// 128+N when killed by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => exit::SIGNAL_BASE + sig,
        (None, None) => exit::ERROR,
    }
}

/// The exit code and message for a command that could not be started.
pub fn spawn_failure(program: &OsString, err: &io::Error) -> (i32, String) {
    let name = program.to_string_lossy();
    match err.kind() {
        io::ErrorKind::NotFound => (exit::NOT_FOUND, format!("command not found: {name}")),
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

/// A helper process that SIGKILLs the command's process group if awsflock
/// dies without saying goodbye (SIGKILL, OOM killer). The parent-death signal
/// only reaches the direct child; this reaches the grandchildren too.
///
/// It reads a pipe from us: a byte means "all is well, exit", end-of-file
/// means we died. It runs in a group of its own, ignoring the usual
/// termination signals, so that killing awsflock's group does not take it out.
pub struct Watchdog {
    child: Option<std::process::Child>,
}

impl Watchdog {
    /// Starts a watchdog for `pgid`. Failure to start only loses this extra
    /// protection, so it is logged, not fatal.
    pub fn start(pgid: Pid) -> Watchdog {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("no watchdog for the command's group: {e}");
                return Watchdog { child: None };
            }
        };
        let spawned = std::process::Command::new(exe)
            .arg("__watchdog")
            .arg(pgid.as_raw().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => Watchdog { child: Some(child) },
            Err(e) => {
                tracing::warn!("no watchdog for the command's group: {e}");
                Watchdog { child: None }
            }
        }
    }

    /// Tells the watchdog to exit without killing anything, and reaps it.
    pub fn disarm(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"x");
            }
            let _ = child.wait();
        }
    }
}

/// The watchdog process itself (`awsflock __watchdog PGID`).
pub fn watchdog_main(pgid: i32) -> i32 {
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: setting a signal to SIG_IGN installs no handler code.
        unsafe {
            let _ = signal::signal(sig, signal::SigHandler::SigIgn);
        }
    }
    let mut buf = [0u8; 1];
    let n = loop {
        match nix::unistd::read(io::stdin(), &mut buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.unwrap_or(0),
        }
    };
    if n == 0 && pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    0
}
