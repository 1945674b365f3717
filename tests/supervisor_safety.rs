//! `run` must never let its command outlive the lease, whatever happens to
//! awsflock itself (stopped, killed), and must behave like a transparent
//! wrapper: ignored signals stay ignored, death by a signal is passed on,
//! leftovers of the command do not run on without the lock, orphans are
//! reaped when awsflock is PID 1, a closed stderr changes nothing.
//!
//! Real binary, real processes and signals, a private moto server per test.

use crate::common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn stamps(path: &Path) -> Vec<f64> {
    lines(path)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A command that notes its pid, then stamps the time into `alive` ten
/// times a second until killed (ignoring SIGTERM, so only SIGKILL ends it).
fn stamping_script(ready: &Path, alive: &Path) -> String {
    format!(
        r#"trap '' TERM
echo $$ > {ready}
while :; do date +%s.%N >> {alive}; sleep 0.1; done"#,
        ready = p(ready),
        alive = p(alive)
    )
}

/// Stops awsflock (the first holder, lease 4 s) with `stop`, then starts a
/// second `run` on the same lock. The first command must be dead by the
/// lease's expiry, and the second command must start only after the first
/// one stopped stamping.
fn holder_stopped_by(stop: Signal, whole_group: bool) {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let ready = dir.path().join("ready");
    let alive = dir.path().join("alive");
    let second = dir.path().join("second");

    let mut cmd = run_cmd(
        &moto,
        &t,
        &name,
        &[
            "-v",
            "--lease-duration",
            "4",
            "--kill-after",
            "1",
            "-c",
            &stamping_script(&ready, &alive),
        ],
    );
    if whole_group {
        // awsflock leads a group of its own, as a shell job does.
        cmd.process_group(0);
    }
    let mut first = spawn(&mut cmd);
    wait_for_line(&ready, Duration::from_secs(20), &mut first);
    let child = read_pid(&ready);
    let _guard = KillOnDrop::new(&[child]);
    let awsflock_pid = first.pid();

    if whole_group {
        nix::sys::signal::killpg(Pid::from_raw(awsflock_pid as i32), stop).expect("killpg");
    } else {
        signal(awsflock_pid, stop);
    }
    let stopped_at = epoch_now();
    let stopped = Instant::now();
    let second_run = spawn(&mut run_cmd(
        &moto,
        &t,
        &name,
        &[
            "--wait-time",
            "40",
            "--",
            "sh",
            "-c",
            &format!("date +%s.%N > {}", p(&second)),
        ],
    ));
    let dead = gone_within(child, Duration::from_secs(10));
    let dead_after = stopped.elapsed();
    let out2 = second_run.wait(Duration::from_secs(60));
    // Let the first awsflock go on, so that it can finish.
    signal(awsflock_pid, Signal::SIGCONT);
    let out1 = first.wait(Duration::from_secs(30));

    assert!(
        dead,
        "the command still ran 10 s after awsflock was stopped with {stop} (lease 4 s)\nfirst:\n{}",
        out1.describe()
    );
    assert!(
        dead_after < Duration::from_millis(4000),
        "the command died {dead_after:?} after awsflock was stopped, past the 4 s lease\nfirst:\n{}",
        out1.describe()
    );
    out2.assert_exit_as(0, "the second run:");
    let started2 = stamps(&second);
    println!(
        "figures: stopped_by={stop} group={whole_group} command_dead_after_s={:.2} second_started_after_s={:.2}",
        dead_after.as_secs_f64(),
        started2.first().map_or(-1.0, |s| s - stopped_at)
    );
    assert_eq!(started2.len(), 1, "{}", out2.describe());
    let last_alive = stamps(&alive).into_iter().fold(0.0, f64::max);
    assert!(
        last_alive < started2[0],
        "the first command stamped {last_alive:.3} after the second started at {:.3} \
         (awsflock stopped at {stopped_at:.3})\nfirst:\n{}\nsecond:\n{}",
        started2[0],
        out1.describe(),
        out2.describe()
    );
    out1.assert_exit_as(4, "the stopped holder:");
    assert_free(&moto, &t, &name, "both runs");
}

#[test]
fn sigstop_to_awsflock_kills_the_command_by_the_lease_expiry() {
    holder_stopped_by(Signal::SIGSTOP, false);
}

#[test]
fn sigstop_to_awsflocks_process_group_kills_the_command_by_the_lease_expiry() {
    holder_stopped_by(Signal::SIGSTOP, true);
}

#[test]
fn sigtstp_to_awsflock_without_a_terminal_kills_the_command_by_the_lease_expiry() {
    holder_stopped_by(Signal::SIGTSTP, false);
}

/// awsflock stopped the moment its command is forked (before the command
/// has announced its group to the watchdog, or just after): the watchdog
/// still learns the group, from the command itself, and kills it by the
/// lease's expiry.
#[test]
fn awsflock_stopped_right_after_the_fork_still_has_its_command_killed_in_time() {
    let (moto, t, name) = fresh_lock();

    let mut running = spawn(&mut run_cmd(
        &moto,
        &t,
        &name,
        &[
            "--lease-duration",
            "4",
            "--",
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.1; done",
        ],
    ));
    let awsflock_pid = running.pid();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The watchdog, forked first, carries awsflock's command line until it
    // execs: a child found in that window may be the watchdog. Once
    // awsflock is stopped, a child that turns out to be the watchdog is
    // passed over, and awsflock continued, until the command is caught.
    let mut watchdogs = Vec::new();
    let (child, stopped) = loop {
        if let Some((c, _)) = children_of(awsflock_pid)
            .into_iter()
            .find(|(c, cmdline)| !cmdline.contains("__watchdog") && !watchdogs.contains(c))
        {
            signal(awsflock_pid, Signal::SIGSTOP);
            let stopped = Instant::now();
            thread::sleep(Duration::from_millis(50));
            let now = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&now).contains("__watchdog") {
                break (c, stopped);
            }
            watchdogs.push(c);
            signal(awsflock_pid, Signal::SIGCONT);
        }
        assert!(
            Instant::now() < deadline && !running.finished(),
            "the command was never forked"
        );
        thread::yield_now();
    };
    let _guard = KillOnDrop::new(&[child]);
    let dead = gone_within(child, Duration::from_secs(10));
    let dead_after = stopped.elapsed();
    signal(awsflock_pid, Signal::SIGCONT);
    let out = running.wait(Duration::from_secs(30));
    println!(
        "figures: stopped_right_after_fork command_dead_after_s={:.2}",
        dead_after.as_secs_f64()
    );
    assert!(
        dead,
        "the command still ran 10 s after awsflock was stopped"
    );
    assert!(
        dead_after < Duration::from_millis(4000),
        "the command died {dead_after:?} after awsflock was stopped (lease 4 s)"
    );
    out.assert_exit(4);
    assert_free(&moto, &t, &name, "the stopped run");
}

/// Without its watchdog, nothing would stop the command if awsflock were
/// stopped: the supervisor notices the watchdog's death and stops the
/// command (SIGTERM first), exit 4.
#[test]
fn a_killed_watchdog_stops_the_command() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let ready = dir.path().join("ready");
    let term = dir.path().join("term");

    let script = format!(
        r#"trap 'date +%s.%N >> {term}; exit 3' TERM
echo $$ > {ready}
while :; do sleep 0.1; done"#,
        term = p(&term),
        ready = p(&ready)
    );
    let mut running = spawn(&mut run_cmd(&moto, &t, &name, &["-c", &script]));
    wait_for_line(&ready, Duration::from_secs(20), &mut running);
    let child = read_pid(&ready);
    let _guard = KillOnDrop::new(&[child]);
    let watchdog = child_with(running.pid(), "__watchdog").expect("no watchdog process found");
    kill(Pid::from_raw(watchdog), Signal::SIGKILL).expect("kill the watchdog");
    let out = running.wait(Duration::from_secs(20));
    out.assert_exit(4);
    assert!(
        out.stderr.contains("watchdog"),
        "stderr should say why:\n{}",
        out.describe()
    );
    assert_eq!(stamps(&term).len(), 1, "the command got SIGTERM once");
    assert!(!alive(child), "the command still runs");
    assert_free(&moto, &t, &name, "the run without a watchdog");
}

// ----------------------------------------------------------- never start late

/// The grant's answer arrives 2.5 s late with a 3 s lease: by then the
/// command would already be due its SIGTERM. It must not be started.
#[test]
fn a_grant_that_arrives_past_the_stop_time_does_not_start_the_command() {
    let moto = Moto::start();
    let proxy = proxy::Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let dir = scratch();
    let marker = dir.path().join("started");

    // Every write is answered late: the grant (a TransactWriteItems on a
    // new lock, an UpdateItem after), and the rewrite of the lease on the
    // store's clock that a slow first answer can cause.
    for op in ["TransactWriteItems", "UpdateItem"] {
        proxy.fault(
            Some(op),
            proxy::Fault::Delay(Duration::from_millis(2600)),
            None,
        );
    }
    let mut cmd = awsflock_at(&proxy.endpoint);
    cmd.args([
        "-v",
        "run",
        &name,
        "--table",
        &t,
        "--lease-duration",
        "3",
        "--",
        "touch",
        p(&marker),
    ]);
    let out = run(&mut cmd);
    proxy.clear();
    assert!(
        proxy.injected().values().sum::<usize>() >= 1,
        "no delay was injected: {:?}",
        proxy.injected()
    );
    assert!(
        !marker.exists(),
        "the command was started:\n{}",
        out.describe()
    );
    out.assert_exit(4);
    assert!(
        !out.stderr.contains("stopping the command"),
        "the command was started, then stopped:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("not started"),
        "stderr should say the command was not started:\n{}",
        out.describe()
    );
    assert_free(&moto, &t, &name, "the late grant");
}

// ------------------------------------------------------------------ leftovers

#[test]
fn leftovers_of_the_command_are_stopped_before_the_release() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let left = dir.path().join("left");
    let term = dir.path().join("term");
    let trapped = dir.path().join("trapped");

    // The command leaves a process behind (once its trap is set) and exits 0.
    let script = format!(
        r#"rm -f {trapped}
sh -c 'trap "echo TERM >> {term}; exit 0" TERM; touch {trapped}; while :; do sleep 0.1; done' >/dev/null 2>&1 &
echo $! > {left}
while [ ! -e {trapped} ]; do sleep 0.05; done
exit 0"#,
        term = p(&term),
        left = p(&left),
        trapped = p(&trapped)
    );
    let out = run(&mut run_cmd(&moto, &t, &name, &["-c", &script]));
    let leftover = read_pid(&left);
    let _guard = KillOnDrop::new(&[leftover]);
    let was_alive = alive(leftover);
    out.assert_ok();
    assert!(
        !was_alive,
        "the command's leftover {leftover} still runs after awsflock exited (lock released):\n{}",
        out.describe()
    );
    assert_eq!(lines(&term), ["TERM"], "the leftover got SIGTERM first");
    assert_free(&moto, &t, &name, "the run");

    // Opted out: the leftover runs on (without the lock).
    let out = run(&mut run_cmd(
        &moto,
        &t,
        &name,
        &["--leave-leftovers", "-c", &script],
    ));
    let leftover = read_pid(&left);
    let _guard2 = KillOnDrop::new(&[leftover]);
    out.assert_ok();
    assert!(
        alive(leftover),
        "--leave-leftovers: the leftover was stopped:\n{}",
        out.describe()
    );
    assert_free(&moto, &t, &name, "the --leave-leftovers run");
}

// ------------------------------------------------------------ signal transparency

#[test]
fn a_signal_ignored_by_the_caller_stays_ignored_in_the_command() {
    let (moto, t, name) = fresh_lock();

    let mut cmd = run_cmd(&moto, &t, &name, &["-c", "kill -HUP $$; echo survived"]);
    // As `nohup` does.
    // SAFETY: signal() with SIG_IGN in the forked child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = run(&mut cmd);
    out.assert_ok();
    assert_eq!(out.stdout, "survived\n", "{}", out.describe());
    assert_free(&moto, &t, &name, "the run");
}

#[test]
fn awsflock_dies_by_the_signal_that_killed_the_command() {
    let (moto, t, name) = fresh_lock();

    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut cmd = run_cmd(&moto, &t, &name, &["-c", &format!("kill -{sig} $$")]);
        let out = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run awsflock");
        assert_eq!(
            out.status.signal(),
            Some(sig),
            "awsflock should end by signal {sig} as its command did; status {:?}, stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.core_dumped(), "no core dump");
        assert_free(&moto, &t, &name, &format!("signal {sig}"));
    }
}

// ----------------------------------------------------------------- as PID 1

#[test]
fn as_pid_1_orphans_are_reaped() {
    if which("unshare").is_none() || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root and unshare(1)");
        return;
    }
    let (moto, t, name) = fresh_lock();

    // The inner shell exits at once; its sleep becomes an orphan of PID 1
    // (awsflock) and exits 0.3 s later. A second later the command counts
    // the zombies in the namespace.
    let script = r#"sh -c 'sleep 0.3 & exit 0'
sleep 1.5
z=0
for f in /proc/[0-9]*/stat; do
  s=$(sed 's/.*) //' "$f" 2>/dev/null | cut -c1)
  [ "$s" = Z ] && z=$((z+1))
done
echo "zombies=$z""#;
    let mut cmd = Command::new("unshare");
    scrub_env(&mut cmd);
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .args(["--pid", "--fork", "--mount-proc", bin_path()])
        .args(["run", &name, "--table", &t, "-c", script]);
    let out = run(&mut cmd);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "zombies=0", "{}", out.describe());
    assert_free(&moto, &t, &name, "the run as PID 1");
}

// ------------------------------------------------------------ closed stderr

/// The lease is released by force while stderr is unwritable: awsflock
/// must still give the command its SIGTERM, then SIGKILL, and exit 4.
fn forced_release_with_stderr(setup: impl FnOnce(&mut Command)) {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let ready = dir.path().join("ready");
    let term = dir.path().join("term");

    // The command's own stderr goes elsewhere: a shell writing to a broken
    // pipe dies of SIGPIPE, which is not what this test is about.
    let script = format!(
        r#"exec 2>/dev/null
trap 'date +%s.%N >> {term}' TERM
echo $$ > {ready}
while :; do sleep 0.1; done"#,
        term = p(&term),
        ready = p(&ready)
    );
    let mut cmd = run_cmd(
        &moto,
        &t,
        &name,
        &["--lease-duration", "6", "--kill-after", "2", "-c", &script],
    );
    setup(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn awsflock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&ready).is_ok_and(|s| s.ends_with('\n')) {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the command did not start"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let cmd_pid = read_pid(&ready);
    let _guard = KillOnDrop::new(&[cmd_pid, child.id() as i32]);

    let out = run(awsflock(&moto).args(["release", &name, "--force", "--yes", "--table", &t]));
    out.assert_exit_as(0, "force release:");
    let released = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            released.elapsed() < Duration::from_secs(20),
            "awsflock did not exit after the forced release"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(4), "awsflock ended with {status:?}");
    assert_eq!(
        stamps(&term).len(),
        1,
        "the command should get one SIGTERM before its SIGKILL"
    );
    assert!(
        gone_within(cmd_pid, Duration::from_secs(2)),
        "the command still runs"
    );
}

#[test]
fn forced_release_with_stderr_closed_still_terms_then_kills_and_exits_4() {
    forced_release_with_stderr(|cmd| {
        // SAFETY: close() in the forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::close(2);
                Ok(())
            });
        }
    });
}

#[test]
fn forced_release_with_stderr_a_broken_pipe_still_terms_then_kills_and_exits_4() {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    drop(r);
    forced_release_with_stderr(move |cmd| {
        cmd.stderr(Stdio::from(w));
    });
}

/// Waits up to 20 s for `path` to exist and returns its contents.
fn wait_for_file(path: &Path, running: &mut Running) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline && !running.finished(),
            "{} never appeared",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `awsflock run NAME --lease-duration 4` in a session of its own (no
/// terminal, as under cron or CI) on the directory store `backend`, its
/// command `sh -c 'echo $$ > READY; SCRIPT'`: the run, and the command's
/// pid once it has written it.
fn unattended_run(backend: &str, name: &str, script: &str, ready: &Path) -> (Running, i32) {
    let mut cmd = awsflock_at(&dead_endpoint());
    cmd.args([
        "--backend",
        backend,
        "run",
        name,
        "--lease-duration",
        "4",
        "--",
    ])
    .args(["sh", "-c"])
    .arg(format!("echo $$ > {}; {script}", p(ready)))
    .stdin(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut running = spawn(&mut cmd);
    wait_for_file(ready, &mut running);
    (running, read_pid(ready))
}

/// An unattended run (own session, no terminal: cron, CI) whose command
/// someone stops with SIGSTOP: no job-control shell can continue awsflock,
/// so awsflock does not stop itself; it keeps renewing and says so, the
/// command is not killed, and once continued it runs to its end.
#[test]
fn a_command_stopped_with_no_job_control_shell_keeps_its_lease_and_awsflock_runs_on() {
    let (tmp, backend) = dir_store();
    let ready = tmp.path().join("ready");
    let (running, child) = unattended_run(&backend, "J", "sleep 1; exit 5", &ready);
    let _guard = KillOnDrop::new(&[child]);
    signal(child as u32, Signal::SIGSTOP);
    // Past the lease (4 s) and its kill time.
    thread::sleep(Duration::from_secs(6));
    let awsflock_state = state_of(running.pid() as i32);
    let command_state = state_of(child);
    let held =
        run(awsflock_at(&dead_endpoint()).args(["--backend", &backend, "status", "J", "--json"]))
            .json();
    signal(child as u32, Signal::SIGCONT);
    if awsflock_state == Some('T') {
        signal(running.pid(), Signal::SIGCONT);
    }
    let out = running.wait(Duration::from_secs(20));
    assert_ne!(
        awsflock_state,
        Some('T'),
        "awsflock stopped itself with no shell to continue it:\n{}",
        out.describe()
    );
    assert_eq!(
        command_state,
        Some('T'),
        "the stopped command was killed although its lease was renewed:\n{}",
        out.describe()
    );
    assert_eq!(held["held"], true, "the lease was not kept: {held}");
    out.assert_exit_as(5, "the command ran to its end:");
    assert!(
        out.stderr.contains("was stopped") && out.stderr.contains("kill -CONT"),
        "awsflock should say that it holds the lock for a stopped command:\n{}",
        out.describe()
    );
}

/// The command exits 0 but leaves a process that ignores SIGTERM in its
/// group; awsflock is stopped while it waits for that leftover, past its
/// lease: the watchdog kills the leftover at the lease's kill time, and
/// awsflock, continued, reports the lease lost (exit 4), not a success.
#[test]
fn leftovers_killed_at_the_deadline_while_awsflock_was_stopped_mean_a_lost_lease() {
    let (tmp, backend) = dir_store();
    let left = tmp.path().join("left");
    let done = tmp.path().join("done");
    let mut running = spawn(awsflock_at(&dead_endpoint()).args([
        "--backend",
        &backend,
        "run",
        "L",
        "--lease-duration",
        "4",
        "--kill-after",
        "3",
        "-c",
        &format!(
            "sh -c 'trap \"\" TERM; echo $$ > {left}; while :; do sleep 0.1; done' & \
             while [ ! -s {left} ]; do sleep 0.05; done; echo > {done}; exit 0",
            left = p(&left),
            done = p(&done)
        ),
    ]));
    wait_for_file(&done, &mut running);
    let leftover = read_pid(&left);
    let _guard = KillOnDrop::new(&[leftover]);
    thread::sleep(Duration::from_millis(200));
    signal(running.pid(), Signal::SIGSTOP);
    let dead = gone_within(leftover, Duration::from_secs(10));
    thread::sleep(Duration::from_secs(1));
    signal(running.pid(), Signal::SIGCONT);
    let out = running.wait(Duration::from_secs(30));
    assert!(dead, "the leftover outlived the lease:\n{}", out.describe());
    out.assert_exit_as(4, "the lease was lost:");
    assert!(
        !out.stderr.contains("frees itself"),
        "the lease had already expired:\n{}",
        out.describe()
    );
    assert!(out.stderr.contains("lost"), "{}", out.describe());
}

/// The same unattended run with its command stopped: `kill awsflock`
/// still ends it (the forwarded SIGTERM is followed by SIGCONT), as
/// timeout(1) does, instead of waiting for a command that cannot act on it.
#[test]
fn a_signal_to_awsflock_ends_a_command_held_stopped() {
    let (tmp, backend) = dir_store();
    let ready = tmp.path().join("ready");
    let (running, child) = unattended_run(&backend, "K", "exec sleep 30", &ready);
    let _guard = KillOnDrop::new(&[child]);
    signal(child as u32, Signal::SIGSTOP);
    thread::sleep(Duration::from_secs(1));
    signal(running.pid(), Signal::SIGTERM);
    let start = Instant::now();
    let out = running.wait(Duration::from_secs(20));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "awsflock took {:?} to end after SIGTERM:\n{}",
        start.elapsed(),
        out.describe()
    );
    out.assert_exit(143);
    assert!(
        gone_within(child, Duration::from_secs(2)),
        "{}",
        out.describe()
    );
}
