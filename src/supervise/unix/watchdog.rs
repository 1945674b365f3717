//! The dead man's switch: the [`Watchdog`] handle that `run` holds, and
//! the watchdog process itself ([`watchdog_main`]), which kills the
//! command's group when awsflock can no longer vouch for the lease.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::boottime::BootInstant;

use super::{leader_running, stopped};

/// The dead man's switch: a helper process (`awsflock __watchdog`) that
/// SIGKILLs the command's process group when the latest kill deadline it
/// was told passes without a newer one, or when awsflock dies. So the
/// command never outlives its lease, whatever happens to awsflock (stopped,
/// hung, killed): the supervisor tells it every new deadline, and a
/// supervisor that cannot tell it anything lets it fire.
///
/// It reads lines from a pipe: `D NANOS` (a new kill deadline on the
/// boot-time clock, which every process on the host reads alike), `G PGID`
/// (the command's group, written by the command itself between fork and
/// exec), `X` (disarm: exit without killing). End-of-file means awsflock
/// died: it kills the group at once. It runs in a process group of its own
/// (a SIGSTOP or SIGTERM to awsflock's pid or group does not reach it) and
/// ignores the job-control and termination signals.
pub struct Watchdog {
    child: Option<std::process::Child>,
    pipe: Option<std::process::ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog, armed with `deadline` (it fires at that instant
    /// once it knows the group).
    pub fn start(deadline: BootInstant) -> io::Result<Watchdog> {
        let exe = std::env::current_exe()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("__watchdog")
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // Names the holder this watchdog guards, so that the directory
        // store does not take over from a dead holder while its watchdog
        // has yet to kill the command's group (see
        // `sys::host::watchdog_running`).
        #[cfg(target_os = "linux")]
        if let Some(me) = crate::sys::host::me() {
            cmd.env(
                crate::sys::host::WATCHDOG_OF,
                format!("{} {}", std::process::id(), me.start),
            );
        }
        let mut child = cmd.spawn()?;
        let pipe = child.stdin.take();
        let mut w = Watchdog {
            child: Some(child),
            pipe,
        };
        w.deadline(deadline)?;
        Ok(w)
    }

    /// The watchdog's pid.
    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// The pipe's write end, for the command to announce its group on.
    pub fn announce_fd(&self) -> Option<i32> {
        self.pipe.as_ref().map(|p| p.as_raw_fd())
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        match self.pipe.as_mut() {
            Some(p) => p.write_all(line.as_bytes()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    /// Tells the watchdog the new kill deadline. An error means it is gone.
    pub fn deadline(&mut self, at: BootInstant) -> io::Result<()> {
        self.send(&format!("D {}\n", at.since_origin().as_nanos()))
    }

    /// Tells the watchdog that awsflock is about to stop itself because
    /// the command stopped ([`stop_self`](super::stop_self)): if the command runs again while
    /// awsflock is still stopped (someone continued it by its pid), the
    /// watchdog continues awsflock, which then renews for it.
    pub fn job_stop(&mut self) -> io::Result<()> {
        self.send("S\n")
    }

    /// Tells the watchdog that awsflock runs again after [`Self::job_stop`].
    pub fn resumed(&mut self) -> io::Result<()> {
        self.send("R\n")
    }

    /// Tells the watchdog to exit without killing anything, and reaps it
    /// (killing it if it does not exit within a second: stopped by its pid).
    pub fn disarm(mut self) {
        let _ = self.send("X\n");
        self.pipe = None;
        if let Some(child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            // It exits within a millisecond or two of reading the line;
            // a coarser poll would hold up the release that follows (and
            // with it the next holder) by a whole step.
            for _ in 0..1000 {
                match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    _ => return,
                }
            }
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// What the watchdog does with one line of its pipe.
#[derive(Debug, PartialEq, Eq)]
enum Order {
    Deadline(u128),
    Group(i32),
    Disarm,
    /// awsflock stops itself because the command stopped (a job stop).
    JobStop,
    /// awsflock runs again.
    Resumed,
}

fn parse_order(line: &str) -> Option<Order> {
    let line = line.trim();
    match line {
        "X" => return Some(Order::Disarm),
        "S" => return Some(Order::JobStop),
        "R" => return Some(Order::Resumed),
        _ => {}
    }
    let (k, v) = line.split_once(' ')?;
    match k {
        "D" => v.parse().ok().map(Order::Deadline),
        "G" => v.parse().ok().filter(|&g: &i32| g > 1).map(Order::Group),
        _ => None,
    }
}

/// The watchdog process itself (`awsflock __watchdog PGID`; PGID 0 when the
/// command announces it).
pub fn watchdog_main(pgid: i32) -> i32 {
    ignore_signals_for_good();
    let mut dog = Watch::new(pgid);
    let mut chunk = [0u8; 256];
    loop {
        let now = BootInstant::now().since_origin().as_nanos();
        dog.fire_if_due(now);
        dog.wake_awsflock_if_continued();
        match read_pipe(dog.wait_ms(now), &mut chunk) {
            Input::Nothing => {}
            // The pipe is unusable, or closed because awsflock died
            // without disarming us: protection is gone, so is the command.
            Input::Gone => {
                dog.kill_group();
                return 0;
            }
            Input::Read(n) => {
                if dog.take(&chunk[..n]) == Obeyed::Disarmed {
                    return 0;
                }
            }
        }
    }
}

/// The signals a terminal, a shell or a careless `kill` sends a process
/// group: the watchdog ignores them all, so that only its pipe ends it.
fn ignore_signals_for_good() {
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPIPE,
        libc::SIGALRM,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

/// What one wait on the watchdog's pipe gave.
enum Input {
    /// Nothing yet (the wait ran out, or a signal interrupted it).
    Nothing,
    /// This many bytes, at the start of the buffer.
    Read(usize),
    /// The pipe is closed or unusable.
    Gone,
}

/// Waits up to `wait_ms` for the pipe on stdin, and reads what came.
fn read_pipe(wait_ms: i32, chunk: &mut [u8]) -> Input {
    let mut pfd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
    if r <= 0 {
        return Input::Nothing;
    }
    // SAFETY: reading into a buffer of the given size.
    let n = unsafe { libc::read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
    if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
        return Input::Nothing;
    }
    if n <= 0 {
        return Input::Gone;
    }
    Input::Read(n as usize)
}

/// Whether the watchdog goes on after the orders it was given.
#[derive(Debug, PartialEq, Eq)]
enum Obeyed {
    Armed,
    Disarmed,
}

/// The watchdog process's state: the group it guards and when to kill it.
struct Watch {
    group: Option<i32>,
    /// The kill time, in ns on the boot clock.
    deadline: Option<u128>,
    /// Whether the group was killed at its kill time (a new group arms
    /// the watchdog again).
    fired: bool,
    /// awsflock, and whether it has stopped itself for a job stop.
    parent: Pid,
    job_stopped: bool,
    /// What came on the pipe after its last whole line.
    buf: Vec<u8>,
}

impl Watch {
    fn new(pgid: i32) -> Self {
        Watch {
            group: (pgid > 1).then_some(pgid),
            deadline: None,
            fired: false,
            parent: nix::unistd::getppid(),
            job_stopped: false,
            buf: Vec::new(),
        }
    }

    fn kill_group(&self) {
        if let Some(g) = self.group {
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
    }

    /// Kills the group once its kill time has come.
    fn fire_if_due(&mut self, now: u128) {
        if let (Some(_), Some(d)) = (self.group, self.deadline) {
            if now >= d && !self.fired {
                self.kill_group();
                self.fired = true;
            }
        }
    }

    /// The command runs again while awsflock, stopped for its stop, is
    /// not: someone continued the command by its pid, and nobody will
    /// continue awsflock. Wake it, or the command would run unrenewed
    /// until its kill time and awsflock stay stopped for good.
    fn wake_awsflock_if_continued(&mut self) {
        if let (true, false, Some(g)) = (self.job_stopped, self.fired, self.group) {
            // Only once awsflock has stopped: a SIGCONT that came before
            // its SIGSTOP would be lost.
            if leader_running(g) && stopped(self.parent.as_raw()) {
                let _ = nix::sys::signal::kill(self.parent, Signal::SIGCONT);
                self.job_stopped = false;
            }
        }
    }

    /// How long to wait for the pipe: at most a quarter second at a time,
    /// as poll's timeout runs on the monotonic clock, which stands still
    /// during a suspend.
    fn wait_ms(&self, now: u128) -> i32 {
        match self.deadline {
            Some(d) if !self.fired && d > now => ((d - now) / 1_000_000).clamp(1, 250) as i32,
            _ => 250,
        }
    }

    /// Takes bytes from the pipe and obeys each whole line, in order.
    fn take(&mut self, bytes: &[u8]) -> Obeyed {
        self.buf.extend_from_slice(bytes);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            match parse_order(&String::from_utf8_lossy(&line)) {
                Some(Order::Deadline(d)) => self.deadline = Some(d),
                Some(Order::Group(g)) => {
                    self.group = Some(g);
                    self.fired = false;
                }
                Some(Order::Disarm) => return Obeyed::Disarmed,
                Some(Order::JobStop) => self.job_stopped = true,
                Some(Order::Resumed) => self.job_stopped = false,
                None => {}
            }
        }
        Obeyed::Armed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_watchdog_orders() {
        assert_eq!(parse_order("D 123\n"), Some(Order::Deadline(123)));
        assert_eq!(parse_order("G 4242\n"), Some(Order::Group(4242)));
        assert_eq!(parse_order("G 1\n"), None, "never the init group");
        assert_eq!(parse_order("X\n"), Some(Order::Disarm));
        assert_eq!(parse_order("S\n"), Some(Order::JobStop));
        assert_eq!(parse_order("R\n"), Some(Order::Resumed));
        assert_eq!(parse_order("junk\n"), None);
    }
}
