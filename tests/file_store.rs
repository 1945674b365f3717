//! The local-directory store (`file:///DIR`) against what one host can do to
//! it: holders and waiters in other pid namespaces, wall clocks that step,
//! a directory lock held by someone else. Each test runs the real binary as
//! real processes and checks that two critical sections never overlap.
//!
//! The namespace tests need `unshare` and `flock` (util-linux, part of every
//! Debian system) and root, as CI runs; the clock tests need `faketime`,
//! which `scripts/setup.sh` installs.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

struct Dir {
    tmp: tempfile::TempDir,
    path: PathBuf,
    url: String,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("locks");
    let url = format!("file://{}", path.display());
    let d = Dir { tmp, path, url };
    let out = run(cmd(&d).arg("table-create"));
    out.assert_ok();
    d
}

impl Dir {
    /// A file beside the lock directory (not in it).
    fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// Our binary aimed at the directory.
fn cmd(d: &Dir) -> Command {
    let mut c = awsflock_at(&dead_endpoint());
    c.env("AWSFLOCK_BACKEND", &d.url);
    c
}

/// `prog args...` with the same clean environment, for wrappers (unshare,
/// faketime) that then start our binary: `$BIN` names it.
fn wrapped(d: &Dir, prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    scrub_env(&mut c);
    c.env("AWSFLOCK_BACKEND", &d.url)
        .env("BIN", bin_path())
        .env("RUST_BACKTRACE", "1")
        .args(args);
    c
}

/// Our binary under libfaketime with its wall clock moved by `offset`
/// ("+40s", "-1h"); the boot-time and monotonic clocks stay real, as they
/// do when an administrator or NTP steps the wall clock.
fn faked(d: &Dir, offset: &str) -> Command {
    clock_offset(cmd(d), offset).expect("libfaketime is installed (scripts/setup.sh)")
}

/// A `run` holder of `name` (lease 3 s) by `c`, in the [`section`]
/// "holder" (4 s) once it has begun.
fn holding(mut c: Command, name: &str, log: &Path) -> Running {
    let holder = spawn(
        c.args(["run", name, "--lease-duration", "3", "--", "sh", "-c"])
            .arg(section(log, "holder", 4.0)),
    );
    wait_logged(log, "begin holder", Duration::from_secs(20));
    holder
}

/// A `run` waiter for `name` (30 s) by `c`, its [`section`] "waiter".
fn waiting(mut c: Command, name: &str, log: &Path) -> Running {
    spawn(
        c.args(["run", name, "--wait-time", "30", "--", "sh", "-c"])
            .arg(section(log, "waiter", 0.0)),
    )
}

/// [`waiting`] inside `unshare UNSHARE sh -c …` (new namespaces).
fn waiting_unshared(d: &Dir, unshare: &[&str], name: &str, log: &Path) -> Running {
    spawn(
        wrapped(d, "unshare", unshare)
            .args(["sh", "-c"])
            .arg("\"$BIN\" run \"$NAME\" --wait-time 30 -- sh -c \"$SECTION\"; exit $?")
            .env("NAME", name)
            .env("SECTION", section(log, "waiter", 0.0)),
    )
}

/// Asserts an `acquire` of `name` (waiting up to 20 s) gets it within
/// 10 s: a dead holder's 60 s lease was not waited out.
#[track_caller]
fn assert_taken_soon(d: &Dir, name: &str) {
    let out = run(cmd(d).args(["acquire", name, "--wait-time", "20"]));
    out.assert_ok();
    assert!(
        out.elapsed < Duration::from_secs(10),
        "a dead holder's 60 s lease was waited out: {}",
        out.describe()
    );
}

fn record(d: &Dir, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(d.path.join(format!("{name}.json"))).expect("the record");
    serde_json::from_str(&text).expect("the record is JSON")
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A pid that no process here has, to be handed to a holder in a new pid
/// namespace: on the old rule ("pid not alive here, so dead") that holder
/// would look dead to everyone outside.
fn pid_free_here() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (max / 2..max - 10)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid")
}

#[test]
fn a_holder_in_another_pid_namespace_is_not_taken_for_dead() {
    let d = dir();
    let name = lock();
    let log = d.file("sections");
    let pid = pid_free_here();
    // Inside: the next pid is set so that `run` gets `pid`, which no process
    // outside has.
    let inner = format!(
        "echo {} > /proc/sys/kernel/ns_last_pid; \"$BIN\" run \"$NAME\" --lease-duration 3 -- sh -c \"$SECTION\"; exit $?",
        pid - 1
    );
    let holder = spawn(
        wrapped(
            &d,
            "unshare",
            &["--pid", "--fork", "--mount-proc", "sh", "-c", &inner],
        )
        .env("NAME", &name)
        .env("SECTION", section(&log, "holder", 4.0)),
    );
    wait_logged(&log, "begin holder", Duration::from_secs(20));
    assert_eq!(
        record(&d, &name)["pid"].as_u64(),
        Some(u64::from(pid)),
        "the holder did not get the planned pid; the test proves nothing"
    );
    let waiter = waiting(cmd(&d), &name, &log);
    assert_both_in_turn(holder, waiter, &log);
}

#[test]
fn a_waiter_in_another_pid_namespace_does_not_take_a_live_lease() {
    let d = dir();
    let name = lock();
    let log = d.file("sections");
    let holder = holding(cmd(&d), &name, &log);
    // Inside the new namespace the holder's pid names no process.
    let waiter = waiting_unshared(&d, &["--pid", "--fork", "--mount-proc"], &name, &log);
    assert_both_in_turn(holder, waiter, &log);
}

#[test]
fn a_dead_run_frees_the_lock_at_once() {
    let d = dir();
    let name = lock();
    let log = d.file("sections");
    let holder = spawn(
        cmd(&d)
            .args(["run", &name, "--lease-duration", "60", "--", "sh", "-c"])
            .arg(section(&log, "holder", 60.0)),
    );
    wait_logged(&log, "begin holder", Duration::from_secs(20));
    signal(holder.pid(), nix::sys::signal::Signal::SIGKILL);
    let h = holder.wait(Duration::from_secs(10));
    h.assert_exit(137);
    assert_taken_soon(&d, &name);
}

#[test]
fn a_waiter_whose_wall_clock_is_ahead_does_not_take_a_live_lease() {
    let d = dir();
    let name = lock();
    let log = d.file("sections");
    let holder = holding(cmd(&d), &name, &log);
    let waiter = waiting(faked(&d, "+40s"), &name, &log);
    assert_both_in_turn(holder, waiter, &log);
}

#[test]
fn a_holder_whose_wall_clock_is_behind_keeps_its_lease() {
    let d = dir();
    let name = lock();
    let log = d.file("sections");
    let holder = holding(faked(&d, "-1h"), &name, &log);
    let waiter = waiting(cmd(&d), &name, &log);
    assert_both_in_turn(holder, waiter, &log);
}

#[test]
fn an_abandoned_lease_is_reclaimed_on_time_whatever_the_wall_clock() {
    let d = dir();
    let ahead = lock();
    let behind = lock();
    for name in [&ahead, &behind] {
        let out = run(cmd(&d).args(["acquire", name, "--lease-duration", "2"]));
        out.assert_ok();
    }
    // Both leases were granted before this instant; neither may be taken
    // before it expires (2 s, plus the 1 s margin), nor long after.
    let granted = Instant::now();
    let mut waiters = vec![
        (
            "+1h",
            spawn(faked(&d, "+1h").args(["acquire", &ahead, "--wait-time", "20"])),
            None,
        ),
        (
            "-1h",
            spawn(faked(&d, "-1h").args(["acquire", &behind, "--wait-time", "20"])),
            None,
        ),
    ];
    // When each waiter exited, which is within moments of its takeover.
    while waiters.iter().any(|w| w.2.is_none()) {
        assert!(granted.elapsed() < Duration::from_secs(40), "waiters hang");
        for w in waiters.iter_mut().filter(|w| w.2.is_none()) {
            if w.1.finished() {
                w.2 = Some(granted.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (offset, w, after) in waiters {
        let after = after.unwrap();
        let out = w.wait(Duration::from_secs(5));
        out.assert_exit_as(0, &format!("waiter {offset} did not reclaim:"));
        assert!(
            after >= Duration::from_secs(2),
            "waiter {offset} took a live lease {after:?} after it was granted:\n{}",
            out.describe()
        );
        assert!(
            after < Duration::from_secs(12),
            "waiter {offset} took {after:?}"
        );
    }
}

#[test]
fn a_stalled_directory_lock_does_not_delay_the_kill() {
    let d = dir();
    let name = lock();
    let beat = d.file("heartbeat");
    let holder = spawn(
        cmd(&d)
            .args(["run", &name, "--lease-duration", "3", "--", "sh", "-c"])
            .arg(format!(
                "while :; do date +%s%N > '{b}.new'; mv '{b}.new' '{b}'; sleep 0.05; done",
                b = beat.display()
            )),
    );
    let start = Instant::now();
    while !beat.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another process takes the directory's lock and keeps it for longer
    // than the lease: no renewal can get through.
    let got = d.file("flocked");
    let stall = spawn(Command::new("flock").args([
        "-o",
        p(&d.path.join(".awsflock.lock")),
        "sh",
        "-c",
        &format!("touch '{}'; sleep 12", got.display()),
    ]));
    while !got.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "flock never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stalled_at = wall_ns();
    let out = holder.wait(Duration::from_secs(30));
    out.assert_exit_as(4, "the holder must report the lost lease:");
    let last: u128 = std::fs::read_to_string(&beat)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The last renewal was before the stall, so the deadline is at most a
    // lease (3 s) after it, and the command must be dead before then.
    let outlived = Duration::from_nanos((last.saturating_sub(stalled_at)) as u64);
    eprintln!(
        "the command's last heartbeat came {outlived:?} after the stall began; run exited after {:?}",
        out.elapsed
    );
    assert!(
        outlived < Duration::from_millis(3300),
        "the command ran on for {outlived:?} after renewals stopped getting through:\n{}",
        out.describe()
    );
    drop(stall);
}

#[test]
fn a_waiter_in_a_time_namespace_does_not_take_a_live_lease() {
    let d = dir();
    let name = lock();
    let log = d.file("sections");
    let holder = holding(cmd(&d), &name, &log);
    // Its boot-time clock reads a day ahead of the host's.
    let waiter = waiting_unshared(
        &d,
        &["--time", "--boottime", "86400", "--fork"],
        &name,
        &log,
    );
    assert_both_in_turn(holder, waiter, &log);
}

/// A subreaper (PR_SET_CHILD_SUBREAPER, as `systemd --user`, tini or a
/// container's init are) that runs `argv` and then adopts its orphans and
/// keeps them: a stopped orphan stays stopped (its group is not orphaned,
/// so the kernel does not continue it with SIGHUP+SIGCONT).
fn under_subreaper(c: &Command) -> Command {
    let mut s = Command::new("/usr/bin/python3");
    s.arg("-c")
        .arg(
            "import ctypes,subprocess,sys,time\n\
             ctypes.CDLL(None).prctl(36,1,0,0,0)\n\
             p=subprocess.Popen(sys.argv[1:])\n\
             p.wait()\n\
             time.sleep(120)\n",
        )
        .arg(c.get_program())
        .args(c.get_args());
    s.env_clear();
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            s.env(k, v);
        }
    }
    s
}

/// A `run` holder of `name` (lease 60 s) under [`under_subreaper`], its
/// command a shell waiting on a grandchild `sleep 300`.
struct Subreaped {
    reaper: Running,
    gc_pid: i32,
    holder: u32,
    wd: i32,
}

fn subreaped_holder(d: &Dir, name: &str) -> Subreaped {
    let gc = d.file("grandchild");
    let mut holder_cmd = cmd(d);
    holder_cmd
        .args(["run", name, "--lease-duration", "60", "--", "sh", "-c"])
        .arg(format!("sleep 300 & echo $! > {}; wait", gc.display()));
    let reaper = spawn(&mut under_subreaper(&holder_cmd));
    let gc_pid = await_pid(&gc, Duration::from_secs(20), "grandchild");
    let holder = child_with(reaper.pid(), "run").expect("the holder") as u32;
    let wd = child_with(holder, "__watchdog").expect("the holder's watchdog");
    Subreaped {
        reaper,
        gc_pid,
        holder,
        wd,
    }
}

/// A dead `run` holder frees the lock after a short grace only because its
/// watchdog kills the command's group in the meantime. A watchdog that has
/// not done so yet (stopped by its pid here, under a subreaper; on a loaded
/// host, not yet scheduled) must keep the lock held: a grandchild of the
/// command still runs in the critical section.
#[test]
fn a_dead_run_whose_watchdog_has_not_fired_keeps_the_lock() {
    let d = dir();
    let name = lock();
    let Subreaped {
        reaper,
        gc_pid,
        holder,
        wd,
    } = subreaped_holder(&d, &name);
    // The holder first, or it would continue its stopped watchdog.
    signal(holder, nix::sys::signal::Signal::SIGSTOP);
    signal(wd as u32, nix::sys::signal::Signal::SIGSTOP);
    signal(holder, nix::sys::signal::Signal::SIGKILL);
    assert!(gone_within(holder as i32, Duration::from_secs(10)));
    // The waiter must not get the lock while the grandchild runs.
    let out = run(cmd(&d).args(["acquire", &name, "--wait-time", "4"]));
    let gc_ran = alive(gc_pid);
    signal(wd as u32, nix::sys::signal::Signal::SIGCONT);
    signal(reaper.pid(), nix::sys::signal::Signal::SIGKILL);
    assert!(
        out.code != 0 || !gc_ran,
        "granted while the dead holder's grandchild {gc_pid} still ran: {}",
        out.describe()
    );
    assert!(gc_ran, "the stopped watchdog's group was killed anyway");
    // Once continued, the watchdog kills the group (it saw end of file) and
    // the lock is free.
    assert!(
        gone_within(gc_pid, Duration::from_secs(10)),
        "the continued watchdog did not kill the grandchild"
    );
    assert_taken_soon(&d, &name);
}

/// A watchdog stopped by its pid while its `run` holder goes on is
/// continued by the holder: when the holder is then killed (under a
/// subreaper, where the kernel does not continue the orphaned watchdog
/// itself), the watchdog still kills the command's group at once, instead
/// of leaving a grandchild running past the lease.
#[test]
fn a_stopped_watchdog_is_continued_by_its_holder() {
    let d = dir();
    let name = lock();
    let Subreaped {
        reaper,
        gc_pid,
        holder,
        wd,
    } = subreaped_holder(&d, &name);
    signal(wd as u32, nix::sys::signal::Signal::SIGSTOP);
    // The holder's loop wakes at least every 0.5 s.
    std::thread::sleep(Duration::from_millis(1500));
    signal(holder, nix::sys::signal::Signal::SIGKILL);
    let survived = !gone_within(gc_pid, Duration::from_secs(8));
    // Clean up whatever the outcome.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wd),
        nix::sys::signal::Signal::SIGCONT,
    );
    signal(reaper.pid(), nix::sys::signal::Signal::SIGKILL);
    assert!(
        !survived,
        "the command's grandchild {gc_pid} outlived its killed holder by 8 s: its watchdog stayed stopped"
    );
}

/// stderr is a full pipe nobody reads (a stalled log collector): the
/// message awsflock writes when the lease is lost blocks. The command must
/// still get its SIGKILL `--kill-after` after the SIGTERM, not only at the
/// lease's own kill time.
#[test]
fn a_full_stderr_pipe_does_not_delay_the_kill_after_a_lost_lease() {
    use std::os::fd::AsRawFd;
    let d = dir();
    let name = lock();
    let alive = d.file("alive");
    let ready = d.file("ready");
    // Close-on-exec, so that only awsflock (as its stderr) holds it.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    // Fill the pipe, then make it blocking again for awsflock.
    let fl = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let fl = nix::fcntl::OFlag::from_bits_truncate(fl);
    nix::fcntl::fcntl(
        &w,
        nix::fcntl::FcntlArg::F_SETFL(fl | nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let block = [b'x'; 4096];
    while nix::unistd::write(&w, &block).is_ok() {}
    nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(fl)).unwrap();
    let _ = r.as_raw_fd();
    let script = format!(
        "exec 2>/dev/null; trap '' TERM; echo $$ > {ready}; \
         while :; do date +%s.%N > {alive}; sleep 0.1; done",
        ready = ready.display(),
        alive = alive.display()
    );
    // Not `spawn`, which would give awsflock a pipe that is read.
    let mut holder = cmd(&d)
        .args(["run", &name, "--lease-duration", "30", "--kill-after", "2"])
        .args(["--renew-every", "1", "--", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(w))
        .spawn()
        .expect("spawn awsflock");
    let cmd_pid = await_pid(&ready, Duration::from_secs(20), "command");
    let out = run(cmd(&d).args(["release", &name, "--force", "--yes"]));
    out.assert_ok();
    let released = Instant::now();
    let gone = gone_within(cmd_pid, Duration::from_secs(8));
    let after = released.elapsed();
    // Let awsflock write and exit.
    drop(r);
    let waited = Instant::now();
    let status = loop {
        if let Some(st) = holder.try_wait().unwrap() {
            break st;
        }
        if waited.elapsed() > Duration::from_secs(40) {
            let _ = holder.kill();
            break holder.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        gone,
        "the command (ignoring SIGTERM) still ran {after:?} after the forced release with --kill-after 2"
    );
    assert_eq!(status.code(), Some(4), "awsflock ended with {status:?}");
}

/// Someone pauses the command by its pid and resumes it (`kill -STOP`,
/// `kill -CONT`, as an operator or a debugger does). awsflock stopped
/// itself when the command stopped, as a job does; nobody continues
/// awsflock, so its watchdog does once the command runs again: the command
/// is renewed for and finishes, instead of being killed at the lease's end
/// with awsflock left stopped for good.
#[test]
fn a_command_paused_and_resumed_by_its_pid_runs_on_under_its_lease() {
    let d = dir();
    let name = lock();
    let ready = d.file("ready");
    let mut holder = spawn(
        cmd(&d)
            .args(["run", &name, "--lease-duration", "4", "--", "sh", "-c"])
            .arg(format!("echo $$ > {}; sleep 7; exit 3", ready.display())),
    );
    let start = Instant::now();
    let cmd_pid = loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            if let Ok(p) = s.trim().parse::<u32>() {
                break p;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no command");
        std::thread::sleep(Duration::from_millis(50));
    };
    signal(cmd_pid, nix::sys::signal::Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    signal(cmd_pid, nix::sys::signal::Signal::SIGCONT);
    let resumed = Instant::now();
    while !holder.finished() && resumed.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = std::fs::read_to_string(format!("/proc/{}/stat", holder.pid()))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('T'))
        })
        == Some(true);
    if stopped {
        signal(holder.pid(), nix::sys::signal::Signal::SIGCONT);
    }
    let h = holder.wait(Duration::from_secs(10));
    assert!(!stopped, "awsflock was left stopped: {}", h.describe());
    assert_eq!(
        h.code,
        3,
        "the command did not run to its end: {}",
        h.describe()
    );
}

/// A machine where awsflock cannot start another thread (a user at its
/// process limit): a one-line error and exit 1, never a panic.
#[test]
fn no_thread_to_spare_is_a_one_line_error_not_a_panic() {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::geteuid() } != 0 {
        println!("note: needs root to run as another user under a process limit; skipped");
        return;
    }
    let d = dir();
    for p in [d.tmp.path(), d.path.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let out = run(&mut wrapped(
        &d,
        "prlimit",
        &[
            "--nproc=1:1",
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            bin_path(),
            "status",
            "x",
        ],
    ));
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    out.assert_exit(1);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.describe());
    assert!(
        out.stderr.contains("cannot start a thread"),
        "{}",
        out.describe()
    );
}

/// On a stderr it shares with the command, awsflock's own messages come
/// before the command's: they are written by a thread of their own, and
/// the command starts only once what was said before it is written.
#[test]
fn awsflock_messages_come_before_the_commands_own() {
    let d = dir();
    for i in 0..50 {
        let out = run(cmd(&d).args([
            "-v",
            "run",
            "ordered",
            "--",
            "sh",
            "-c",
            "echo child-says >&2",
        ]));
        out.assert_ok();
        let granted = out.stderr.find("lease granted");
        let child = out.stderr.find("child-says");
        assert!(
            granted.is_some() && child.is_some() && granted < child,
            "run {i}: the command's line came first:\n{}",
            out.stderr
        );
    }
}

// Links, FIFOs and directories shared by several users. These tests run
// commands as other users (uid 65533 and 65534, which need no account), so
// they need root and `setpriv` (util-linux); elsewhere they say why they
// skip.

/// True when this test may run commands as other users; else prints why not.
fn can_switch_users(what: &str) -> bool {
    if unsafe { libc::geteuid() } != 0 {
        println!("note: needs root to {what}; skipped");
        return false;
    }
    if which("setpriv").is_none() {
        println!("note: needs setpriv (util-linux) to {what}; skipped");
        return false;
    }
    true
}

/// `prog args...` as `uid`, with primary group `uid` as well, the
/// supplementary `groups` and umask `umask`, in a clean environment aimed
/// at the store `url`.
fn as_user(uid: u32, groups: &[u32], umask: u32, url: &str, prog: &str, args: &[&str]) -> Command {
    let groups = groups.iter().map(u32::to_string).collect::<Vec<_>>();
    let mut c = Command::new("setpriv");
    scrub_env(&mut c);
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        c.arg(format!("--groups={}", groups.join(",")));
    }
    c.args([
        "sh",
        "-c",
        &format!("umask {umask:03o}; exec \"$@\""),
        "sh",
        prog,
    ])
    .args(args)
    .env("AWSFLOCK_BACKEND", url)
    .env("RUST_BACKTRACE", "1");
    c
}

/// Our binary as `uid` (see [`as_user`]).
fn awsflock_as(uid: u32, groups: &[u32], umask: u32, url: &str, args: &[&str]) -> Command {
    as_user(uid, groups, umask, url, bin_path(), args)
}

/// A scratch directory that every user may enter, holding the store
/// directory `locks` (mode `mode`, group `gid`, created here and not by
/// awsflock).
fn shared_dir(mode: u32, gid: u32) -> (tempfile::TempDir, PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = tmp.path().join("locks");
    std::fs::create_dir(&path).unwrap();
    std::os::unix::fs::chown(&path, None, Some(gid)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let url = format!("file://{}", path.display());
    (tmp, path, url)
}

/// The names and contents of the files in `dir`, to show that nothing
/// there changed.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap_or_default())
        })
        .collect();
    out.sort();
    out
}

/// A link planted in the store directory by a user who may write there
/// (uid 65534) is never followed by a `run` as root: it is refused in one
/// line that names it and says to remove it, the command does not run,
/// and nothing appears or changes where the link points. `status` and
/// `list`, which only read, refuse it too (root would otherwise read any
/// file the planter names). A FIFO planted as the directory lock is
/// refused, not waited on forever.
#[test]
fn a_planted_link_is_refused_not_followed() {
    const PLANTER: u32 = 65534;
    if !can_switch_users("plant links as another user") {
        return;
    }
    let long = "x".repeat(250);
    let long_file = format!("{}~3b5ad17216035bad.json", "x".repeat(180));
    // (lock name, what is planted in the store directory, where it points)
    let cases = [
        ("x", ".awsflock.lock", "victim/nologin"),
        ("x", ".fence", "victim"),
        ("x", "x.json", "victim/secret"),
        ("x", "x.json", "victim/new.json"),
        ("x", ".fence/x", "victim/fence"),
        (long.as_str(), long_file.as_str(), "victim/long"),
        ("x", ".awsflock.lock", "FIFO"),
    ];
    for (name, planted, target) in cases {
        let (tmp, path, url) = shared_dir(0o777, 0);
        let victim = tmp.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("secret"), "root's own file\n").unwrap();
        if planted != ".fence" {
            std::fs::create_dir(path.join(".fence")).unwrap();
            std::os::unix::fs::chown(path.join(".fence"), Some(PLANTER), None).unwrap();
        }
        let link = path.join(planted);
        let plant = if target == "FIFO" {
            as_user(PLANTER, &[], 0o022, &url, "mkfifo", &[p(&link)])
        } else {
            let to = tmp.path().join(target);
            as_user(PLANTER, &[], 0o022, &url, "ln", &["-s", p(&to), p(&link)])
        };
        let out = run(&mut { plant });
        assert_eq!(out.code, 0, "planting {planted}: {}", out.describe());
        let before = snapshot(&victim);
        let ran = tmp.path().join("ran");
        let mut commands = vec![vec!["run", name, "--", "touch", p(&ran)]];
        if planted.ends_with(".json") {
            commands.push(vec!["status", name]);
            commands.push(vec!["list"]);
        }
        for args in commands {
            let mut c = awsflock_at(&dead_endpoint());
            c.env("AWSFLOCK_BACKEND", &url).args(&args);
            let out = run_timeout(&mut c, Duration::from_secs(20));
            let what = format!("{planted} -> {target}, `{}`", args.join(" "));
            assert_eq!(out.code, 1, "{what}: {}", out.describe());
            assert_clean_error(&out);
            assert!(
                out.stderr.contains(p(&link)) && out.stderr.contains("remove"),
                "{what}: the error does not name {} and say to remove it: {}",
                link.display(),
                out.describe()
            );
            assert!(!ran.exists(), "{what}: the command ran");
            assert_eq!(
                snapshot(&victim),
                before,
                "{what}: written through the link"
            );
        }
    }
}

/// A group-owned directory (setgid or not) works for every member of the
/// group, whatever their umask: each user's files (the directory lock, the
/// records, `.fence` and its marks) take the directory's group and
/// permissions, so the next user can lock, read, and replace them.
#[test]
fn a_group_directory_works_for_every_member_whatever_their_umask() {
    const GROUP: u32 = 4242;
    if !can_switch_users("run as two users of one group") {
        return;
    }
    for mode in [0o2770, 0o0770] {
        let (_tmp, path, url) = shared_dir(mode, GROUP);
        let steps: [(u32, &[&str]); 6] = [
            (65534, &["run", "x", "--", "true"]),
            (65533, &["run", "x", "--", "true"]),
            (65534, &["run", "x", "--", "true"]),
            (65533, &["status", "x"]),
            (65534, &["list"]),
            (65533, &["run", "y", "--", "true"]),
        ];
        for (uid, args) in steps {
            let out = run(&mut awsflock_as(uid, &[GROUP], 0o077, &url, args));
            assert_eq!(
                out.code,
                0,
                "mode {mode:o}: `{}` as uid {uid}: {}",
                args.join(" "),
                out.describe()
            );
        }
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.join("x.json")).unwrap()).unwrap();
        assert_eq!(rec["fence"], 3, "mode {mode:o}: a token was reused: {rec}");
    }
}

/// A sticky directory that others may write to (as /tmp) cannot be shared
/// (a user may not replace another's record there), so it is refused for
/// everyone, in one line that says what to use instead.
#[test]
fn a_sticky_shared_directory_is_refused_with_advice() {
    if !can_switch_users("run as another user") {
        return;
    }
    let (tmp, _path, url) = shared_dir(0o1777, 0);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let ran = out.join("ran");
    for uid in [65534, 0] {
        let out = run(&mut awsflock_as(
            uid,
            &[],
            0o022,
            &url,
            &["run", "x", "--", "touch", p(&ran)],
        ));
        assert_eq!(out.code, 1, "uid {uid}: {}", out.describe());
        assert_clean_error(&out);
        assert!(
            out.stderr.contains("sticky") && out.stderr.contains("install -d -m 2775"),
            "uid {uid}: no advice: {}",
            out.describe()
        );
        assert!(!ran.exists(), "uid {uid}: the command ran");
    }
}
