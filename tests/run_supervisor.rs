//! End-to-end tests of `awsflock run`: exit codes, arguments, environment,
//! renewal, signal forwarding, parent death, and what happens when the lease
//! is lost. Every test starts its own moto server and uses its own table and
//! lock names.

use crate::common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Resumes a paused moto server when dropped, so that a failing assertion
/// does not leave it stopped.
struct ResumeOnDrop<'a>(&'a Moto);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

// ------------------------------------------------------------------ exit codes

#[test]
fn exit_codes_pass_through_and_the_lock_is_released_each_time() {
    let (moto, t, name) = fresh_lock();

    for (args, expected) in [
        (vec!["--", "sh", "-c", "exit 0"], 0),
        (vec!["--", "sh", "-c", "exit 7"], 7),
        (vec!["-c", "kill -TERM $$"], 143),
    ] {
        let out = run(&mut run_cmd(&moto, &t, &name, &args));
        assert_eq!(out.code, expected, "run {args:?}:\n{}", out.describe());
        assert_free(&moto, &t, &name, &format!("run {args:?}"));
    }

    let out = run(&mut run_cmd(&moto, &t, &name, &["--", "/nonexistent/cmd"]));
    out.assert_exit_as(127, "missing command:");
    assert_clean_error(&out);
    assert!(
        out.stderr.contains("/nonexistent/cmd"),
        "the message should name the command:\n{}",
        out.describe()
    );
    assert_free(&moto, &t, &name, "a missing command");

    let dir = scratch();
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = run(&mut run_cmd(&moto, &t, &name, &["--", p(&script)]));
    out.assert_exit_as(126, "non-executable command:");
    assert_clean_error(&out);
    assert_free(&moto, &t, &name, "a non-executable command");
}

// ------------------------------------------------------------------- arguments

#[test]
fn arguments_with_spaces_dollars_and_stars_pass_through_untouched() {
    let (moto, t, name) = fresh_lock();

    let out = run(&mut run_cmd(
        &moto,
        &t,
        &name,
        &[
            "--",
            "sh",
            "-c",
            r#"printf '%s\n' "$@""#,
            "sh",
            "a b",
            "$HOME",
            "*",
            "",
            "--table",
        ],
    ));
    out.assert_ok();
    let got: Vec<&str> = out.stdout.split_terminator('\n').collect();
    assert_eq!(
        got,
        ["a b", "$HOME", "*", "", "--table"],
        "{}",
        out.describe()
    );

    let out = run(&mut run_cmd(
        &moto,
        &t,
        &name,
        &["-c", "printf 'b\\na\\nc\\n' | sort | tr a-z A-Z"],
    ));
    out.assert_ok();
    assert_eq!(out.stdout, "A\nB\nC\n", "{}", out.describe());
    assert_free(&moto, &t, &name, "the runs");
}

// ------------------------------------------------------------------ environment

#[test]
fn env_has_lock_name_and_strictly_increasing_fence() {
    let (moto, t, name) = fresh_lock();

    let mut fences = Vec::new();
    for _ in 0..3 {
        let out = run(&mut run_cmd(
            &moto,
            &t,
            &name,
            &[
                "--",
                "sh",
                "-c",
                r#"printf '%s\n%s\n' "$AWSFLOCK_LOCK" "$AWSFLOCK_FENCE""#,
            ],
        ));
        out.assert_ok();
        let got: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(got.len(), 2, "{}", out.describe());
        assert_eq!(got[0], name, "AWSFLOCK_LOCK:\n{}", out.describe());
        let fence: i64 = got[1].parse().unwrap_or_else(|e| {
            panic!(
                "AWSFLOCK_FENCE is not an integer ({e}):\n{}",
                out.describe()
            )
        });
        fences.push(fence);
    }
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens must increase strictly: {fences:?}"
    );
    assert_free(&moto, &t, &name, "the runs");
}

// --------------------------------------------------------------------- renewal

#[test]
fn run_longer_than_its_lease_keeps_the_lock() {
    let (moto, t, name) = fresh_lock();

    let long = spawn(&mut run_cmd(
        &moto,
        &t,
        &name,
        &["--lease-duration", "2", "--", "sleep", "5"],
    ));
    // Wait until the run holds the lock.
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_json(&moto, &t, &name)["held"] != serde_json::Value::Bool(true) {
        assert!(Instant::now() < deadline, "the run never took the lock");
        thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();

    let mut tries = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
        out.assert_exit_as(3, "acquire --no-wait while the run holds the lock:");
        tries += 1;
        if tries == 2 {
            let marker = scratch();
            let m = marker.path().join("started");
            let out = run(&mut run_cmd(
                &moto,
                &t,
                &name,
                &["--no-wait", "--", "touch", p(&m)],
            ));
            out.assert_exit_as(3, "second run --no-wait while held:");
            assert!(!m.exists(), "the second run started its command");
        }
        thread::sleep(Duration::from_millis(300));
    }
    assert!(tries >= 3, "only {tries} acquire attempts were made");

    let out = long.wait(Duration::from_secs(30));
    out.assert_exit_as(0, "the long run:");
    assert_free(&moto, &t, &name, "the long run");
}

// --------------------------------------------------------------------- signals

/// A command that notes its pid in `ready`, waits for `sig` (its trap
/// logs the name to `log`), lingers a second (so that a duplicate would be
/// noticed), then runs `then`.
fn trapping(sig: &str, log: &Path, ready: &Path, then: &str) -> String {
    format!(
        r#"trap 'echo {sig} >> {log}; got=1' {sig}
echo $$ > {ready}
while [ -z "$got" ]; do sleep 0.1; done
i=0; while [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done
{then}"#,
        log = p(log),
        ready = p(ready)
    )
}

/// `awsflock run -c SCRIPT`, sent `sig` once its command wrote `ready`;
/// how it ended (within 20 s).
fn signalled(moto: &Moto, t: &str, name: &str, script: &str, ready: &Path, sig: Signal) -> Out {
    let mut running = spawn(&mut run_cmd(moto, t, name, &["-c", script]));
    wait_for_line(ready, Duration::from_secs(20), &mut running);
    signal(running.pid(), sig);
    running.wait(Duration::from_secs(20))
}

#[test]
fn sigterm_reaches_the_child_exactly_once() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let log = dir.path().join("signals");
    let ready = dir.path().join("ready");

    // The child exits 5 after the signal.
    let script = trapping("TERM", &log, &ready, "exit 5");
    let out = signalled(&moto, &t, &name, &script, &ready, Signal::SIGTERM);
    out.assert_exit_as(5, "awsflock should exit as the child did:");
    assert_eq!(lines(&log), ["TERM"], "{}", out.describe());
    assert_free(&moto, &t, &name, "SIGTERM");
}

#[test]
fn sigusr1_is_forwarded_once_and_the_child_keeps_running() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let log = dir.path().join("signals");
    let ready = dir.path().join("ready");

    let script = trapping("USR1", &log, &ready, "echo done");
    let out = signalled(&moto, &t, &name, &script, &ready, Signal::SIGUSR1);
    out.assert_ok();
    assert_eq!(out.stdout, "done\n", "{}", out.describe());
    assert_eq!(lines(&log), ["USR1"], "{}", out.describe());
    assert_free(&moto, &t, &name, "SIGUSR1");
}

#[test]
fn signals_reach_grandchildren() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let pidfile = dir.path().join("pid");

    let script = format!("sleep 300 & echo $! > {}; wait", p(&pidfile));
    let mut running = spawn(&mut run_cmd(&moto, &t, &name, &["-c", &script]));
    wait_for_line(&pidfile, Duration::from_secs(20), &mut running);
    let grandchild = read_pid(&pidfile);
    assert!(alive(grandchild), "the grandchild is not running");

    signal(running.pid(), Signal::SIGTERM);
    let out = running.wait(Duration::from_secs(20));
    out.assert_exit(143);
    assert!(
        gone_within(grandchild, Duration::from_secs(5)),
        "grandchild {grandchild} still runs after SIGTERM to awsflock"
    );
    assert_free(&moto, &t, &name, "SIGTERM");
}

#[test]
fn sigkill_to_awsflock_leaves_no_child_running() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let f1 = dir.path().join("child");
    let f2 = dir.path().join("grandchild");

    let script = format!(
        "echo $$ > {}; sleep 300 & echo $! > {}; wait",
        p(&f1),
        p(&f2)
    );
    let mut running = spawn(&mut run_cmd(&moto, &t, &name, &["-c", &script]));
    wait_for_line(&f1, Duration::from_secs(20), &mut running);
    wait_for_line(&f2, Duration::from_secs(20), &mut running);
    let child = read_pid(&f1);
    let grandchild = read_pid(&f2);
    assert!(
        alive(child) && alive(grandchild),
        "the command is not running"
    );

    signal(running.pid(), Signal::SIGKILL);
    let child_gone = gone_within(child, Duration::from_secs(5));
    let grandchild_gone = gone_within(grandchild, Duration::from_secs(5));
    if !child_gone || !grandchild_gone {
        // Clean up before failing.
        for pid in [child, grandchild] {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    assert!(
        child_gone,
        "child {child} still runs after SIGKILL to awsflock"
    );
    assert!(
        grandchild_gone,
        "grandchild {grandchild} still runs after SIGKILL to awsflock"
    );
    let out = running.wait(Duration::from_secs(10));
    assert_eq!(out.code, 128 + 9, "{}", out.describe());
}

#[test]
fn sigint_while_waiting_ends_the_wait_holding_nothing() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let marker = dir.path().join("started");

    let held = acquire(&moto, &t, &name, &[]);
    let mut waiter = spawn(&mut run_cmd(
        &moto,
        &t,
        &name,
        &["--wait-time", "60", "--", "touch", p(&marker)],
    ));
    thread::sleep(Duration::from_secs(1));
    assert!(!waiter.finished(), "the waiter did not wait");
    let sent = Instant::now();
    signal(waiter.pid(), Signal::SIGINT);
    let out = waiter.wait(Duration::from_secs(20));
    let took = sent.elapsed();
    out.assert_exit(130);
    assert!(
        took < Duration::from_secs(3),
        "the wait took {took:?} to end after SIGINT:\n{}",
        out.describe()
    );
    assert!(!marker.exists(), "the command was started");
    // The original holder still holds the lock.
    release(&moto, &t, &name, &held);
    assert_free(&moto, &t, &name, "the interrupted wait");
}

// ------------------------------------------------------------------- conflicts

#[test]
fn no_wait_on_a_held_lock_never_starts_the_command() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let marker = dir.path().join("started");
    let touch = format!("touch {}", p(&marker));

    let held = acquire(&moto, &t, &name, &[]);
    let out = run(&mut run_cmd(
        &moto,
        &t,
        &name,
        &["--no-wait", "--", "sh", "-c", &touch],
    ));
    out.assert_exit(3);
    assert!(!marker.exists(), "the command was started");

    let out = run(&mut run_cmd(
        &moto,
        &t,
        &name,
        &[
            "--no-wait",
            "--conflict-exit-code",
            "0",
            "--",
            "sh",
            "-c",
            &touch,
        ],
    ));
    out.assert_ok();
    assert!(!marker.exists(), "the command was started");

    release(&moto, &t, &name, &held);
}

// ------------------------------------------------------------------ lease lost

#[test]
fn frozen_backend_stops_the_child_before_the_lease_expires() {
    let moto = Moto::private();
    let t = table(&moto);
    let name = lock();
    let dir = scratch();
    let term = dir.path().join("term");
    let ready = dir.path().join("ready");

    let script = format!(
        r#"trap 'date +%s.%N >> {term}; exit 1' TERM
echo $$ > {ready}
while :; do sleep 0.1; done"#,
        term = p(&term),
        ready = p(&ready)
    );
    let spawned_at = SystemTime::now();
    let mut running = spawn(&mut run_cmd(
        &moto,
        &t,
        &name,
        &["--lease-duration", "6", "-c", &script],
    ));
    wait_for_line(&ready, Duration::from_secs(20), &mut running);
    let child = read_pid(&ready);

    let paused_at = SystemTime::now();
    let paused = Instant::now();
    let _resume = ResumeOnDrop(&moto);
    moto.pause();

    let out = running.wait(Duration::from_secs(30));
    let exited_after = paused.elapsed();
    moto.resume();

    out.assert_exit(4);
    assert!(
        out.stderr.to_lowercase().contains("lost"),
        "stderr should say the lease was lost:\n{}",
        out.describe()
    );
    assert!(!alive(child), "the child {child} still runs");
    let stamps = lines(&term);
    assert_eq!(
        stamps.len(),
        1,
        "TERM stamps: {stamps:?}\n{}",
        out.describe()
    );
    let term_at: f64 = stamps[0]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad stamp {:?}: {e}", stamps[0]));
    // No renewal can have succeeded after the pause, so the lease expires
    // at most one lease duration after it.
    let since_pause = term_at - epoch_secs(paused_at);
    assert!(
        since_pause < 6.0,
        "SIGTERM came {since_pause:.2} s after the store froze (lease 6 s):\n{}",
        out.describe()
    );
    let since_spawn = term_at - epoch_secs(spawned_at);
    let pause_after_spawn = epoch_secs(paused_at) - epoch_secs(spawned_at);
    if pause_after_spawn < 2.0 {
        // Frozen before the first renewal was due: the only lease is the
        // first one, which started after the spawn.
        assert!(
            since_spawn < 6.0,
            "SIGTERM came {since_spawn:.2} s after the run started (lease 6 s):\n{}",
            out.describe()
        );
    }
    assert!(
        exited_after < Duration::from_secs(9),
        "awsflock exited {exited_after:?} after the store froze:\n{}",
        out.describe()
    );
}

#[test]
fn lease_taken_away_stops_the_child_and_exits_4() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let ready = dir.path().join("ready");

    let script = format!(
        r#"trap 'exit 9' TERM
echo $$ > {ready}
while :; do sleep 0.1; done"#,
        ready = p(&ready)
    );
    let mut running = spawn(&mut run_cmd(
        &moto,
        &t,
        &name,
        &["--lease-duration", "3", "-c", &script],
    ));
    wait_for_line(&ready, Duration::from_secs(20), &mut running);
    let child = read_pid(&ready);

    let st = status_json(&moto, &t, &name);
    assert_eq!(st["held"], serde_json::Value::Bool(true), "{st}");
    let lease = st["lease_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no lease_id in {st}"))
        .to_string();
    release(&moto, &t, &name, &lease);
    let released = Instant::now();

    let out = running.wait(Duration::from_secs(20));
    let took = released.elapsed();
    out.assert_exit(4);
    assert!(
        took < Duration::from_secs(4),
        "awsflock exited {took:?} after the lease was taken away:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.to_lowercase().contains("lost"),
        "stderr should say the lease was lost:\n{}",
        out.describe()
    );
    assert!(!alive(child), "the child {child} still runs");
    assert_free(&moto, &t, &name, "the lost lease");
}

// ---------------------------------------------------------------------- sanity

#[test]
fn uncontended_run_exits_0_quickly() {
    let (moto, t, name) = fresh_lock();

    let out = run(&mut run_cmd(&moto, &t, &name, &["--", "true"]));
    out.assert_ok();
    assert!(
        out.elapsed < Duration::from_secs(5),
        "an uncontended run took {:?}",
        out.elapsed
    );
    assert_free(&moto, &t, &name, "the run");
}

// ---------------------------------------------------------------- spawn errors

/// `awsflock --backend file://DIR run NAME -- ARGS` on a fresh directory store.
fn run_on_dir(args: &[&str]) -> Out {
    let (_tmp, backend) = dir_store();
    let mut c = awsflock_at(&dead_endpoint());
    c.args(["--backend", &backend, "run", "spawn-error", "--"])
        .args(args);
    run(&mut c)
}

#[test]
fn a_directory_as_the_command_is_not_executable_126_as_in_bash() {
    let tmp = scratch();
    let out = run_on_dir(&[p(tmp.path())]);
    out.assert_exit(126);
    assert!(
        out.stderr.contains("is a directory") && !out.stderr.contains("permission denied"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_script_whose_interpreter_is_missing_names_the_interpreter_127() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch();
    let script = tmp.path().join("deploy.sh");
    std::fs::write(&script, "#!/nonexistent/bin/interp -e\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_on_dir(&[p(&script)]);
    out.assert_exit(127);
    assert!(
        out.stderr
            .contains("its interpreter /nonexistent/bin/interp was not found")
            && !out.stderr.contains("command not found"),
        "{}",
        out.describe()
    );
    // A command that does not exist is still "not found".
    let out = run_on_dir(&[p(&tmp.path().join("no-such-command"))]);
    out.assert_exit(127);
    assert!(
        out.stderr.contains("command not found"),
        "{}",
        out.describe()
    );
    // Found through PATH, too.
    let (_tmp2, backend) = dir_store();
    let path = format!(
        "{}:{}",
        p(tmp.path()),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(awsflock_at(&dead_endpoint()).env("PATH", path).args([
        "--backend",
        &backend,
        "run",
        "spawn-error",
        "--",
        "deploy.sh",
    ]));
    out.assert_exit(127);
    assert!(
        out.stderr
            .contains("its interpreter /nonexistent/bin/interp was not found"),
        "{}",
        out.describe()
    );
}
