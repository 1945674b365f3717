//! What an operator sees: who holds a lock and why, waiting feedback, break
//! glass, completions, the man page, help and one-line errors. These run on
//! the local-directory store: what they check does not depend on the store.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

struct Dir {
    _tmp: tempfile::TempDir,
    url: String,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("locks").display());
    let d = Dir { _tmp: tmp, url };
    let out = run(cmd(&d).arg("table-create"));
    out.assert_ok();
    d
}

fn cmd(d: &Dir) -> Command {
    let mut c = awsflock_at(&dead_endpoint());
    c.env("AWSFLOCK_BACKEND", &d.url);
    c
}

fn hold(d: &Dir, name: &str) {
    let out = run(cmd(d).args([
        "acquire",
        name,
        "--owner",
        "alice@ci-7",
        "--reason",
        "terraform apply prod",
    ]));
    out.assert_ok();
}

#[test]
fn a_waiter_off_a_terminal_says_once_who_holds_the_lock_why_and_until_when() {
    let d = dir();
    hold(&d, "deploy");
    let out = run(cmd(&d).args(["acquire", "deploy", "--wait-time", "2"]));
    out.assert_exit(3);
    let waiting: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("waiting for deploy"))
        .collect();
    assert_eq!(
        waiting.len(),
        1,
        "one line while the holder stays the same:\n{}",
        out.stderr
    );
    let line = waiting[0];
    for part in [
        "held by alice@ci-7",
        "since ",
        "(terraform apply prod)",
        "expires in 1h59m",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
}

#[test]
fn quiet_silences_the_waiting_line() {
    let d = dir();
    hold(&d, "deploy");
    let out = run(cmd(&d).args(["-q", "acquire", "deploy", "--wait-time", "1"]));
    assert_eq!(out.code, 3);
    assert!(!out.stderr.contains("waiting for"), "{}", out.stderr);
}

#[test]
fn quiet_waiters_ended_by_a_signal_say_nothing_and_exit_128_plus_n() {
    // cron mails every line: a job stopped while it waited (systemd, a
    // timeout(1) around it) says so by its exit code alone with -q.
    let d = dir();
    hold(&d, "deploy");
    for sub in [&["run", "deploy", "--", "true"][..], &["acquire", "deploy"]] {
        let w = spawn(cmd(&d).arg("-q").args(sub));
        std::thread::sleep(Duration::from_millis(500));
        signal(w.pid(), nix::sys::signal::Signal::SIGTERM);
        let out = w.wait(Duration::from_secs(10));
        out.assert_exit_as(143, "a quiet waiter ended by SIGTERM:");
        assert_eq!(out.stderr, "", "{sub:?}: -q says nothing");
    }
}

#[test]
fn a_waiter_on_a_terminal_redraws_one_line_in_place() {
    let Some(script) = which("script") else {
        skip("`script` (util-linux) is not installed");
        return;
    };
    let d = dir();
    hold(&d, "deploy");
    // `script` gives the waiter a pseudo-terminal for stdin, stdout and stderr.
    let line = format!(
        "{} --backend {} acquire deploy --wait-time 2",
        bin_path(),
        d.url
    );
    let mut c = Command::new(script);
    scrub_env(&mut c);
    c.args(["-qec", &line, "/dev/null"]);
    let out = run(&mut c);
    assert!(
        out.stdout
            .contains("waiting for deploy: held by alice@ci-7"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout.contains('\r') || out.stdout.contains("\u{1b}["),
        "expected an in-place redraw on a terminal:\n{:?}",
        out.stdout
    );
}

#[test]
fn force_release_off_a_terminal_does_not_ask_and_names_the_holder() {
    let d = dir();
    hold(&d, "deploy");
    let out = run(cmd(&d)
        .args(["release", "deploy", "--force"])
        .stdin(Stdio::null()));
    out.assert_ok();
    assert!(out.stderr.contains("held by alice@ci-7"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("[y/N]"),
        "asked off a terminal:\n{}",
        out.stderr
    );
    let v = run(cmd(&d).args(["status", "deploy", "--json"])).json();
    assert_eq!(v["held"], false);
    // Nothing to break on a free lock.
    let out = run(cmd(&d).args(["release", "deploy", "--force"]));
    out.assert_exit(3);
}

#[test]
fn force_release_stops_the_holders_run() {
    let d = dir();
    let holder = spawn(cmd(&d).args([
        "run",
        "deploy",
        "--lease-duration",
        "3",
        "--",
        "sleep",
        "30",
    ]));
    let mut tries = 0;
    while run(cmd(&d).args(["status", "deploy", "--json"])).json()["held"] != true {
        tries += 1;
        assert!(tries < 100, "the run never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        run(cmd(&d).args(["release", "deploy", "--force", "--yes"])).code,
        0
    );
    let out = holder.wait(Duration::from_secs(10));
    out.assert_exit(4);
}

#[test]
fn status_of_a_free_lock_exits_0_with_held_false() {
    let d = dir();
    let out = run(cmd(&d).args(["status", "never-used", "--json"]));
    out.assert_ok();
    assert_eq!(out.json()["held"], false);
    let out = run(cmd(&d).args(["status", "never-used"]));
    assert_eq!(out.stdout.trim(), "never-used: free");
}

#[test]
fn list_prints_a_table_and_json_of_held_locks() {
    let d = dir();
    hold(&d, "deploy");
    hold(&d, "backup");
    let out = run(cmd(&d).arg("list"));
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("REASON"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].starts_with("backup") && lines[2].starts_with("deploy"),
        "{}",
        out.stdout
    );
    let v = run(cmd(&d).args(["list", "--json"])).json();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
}

#[test]
fn every_option_can_come_from_the_environment() {
    let d = dir();
    let out = run(cmd(&d)
        .args(["acquire", "envy"])
        .env("AWSFLOCK_OWNER", "cron@box-3")
        .env("AWSFLOCK_REASON", "nightly report")
        .env("AWSFLOCK_LEASE_DURATION", "15m")
        .env("AWSFLOCK_JSON", "true"));
    out.assert_ok();
    assert_eq!(out.json()["lease_duration"], 900, "{}", out.stdout);
    let v = run(cmd(&d).args(["status", "envy", "--json"])).json();
    assert_eq!(v["owner"], "cron@box-3");
    assert_eq!(v["reason"], "nightly report");
    let help = run(cmd(&d).args(["run", "--help"]));
    for var in [
        "AWSFLOCK_LEASE_DURATION",
        "AWSFLOCK_WAIT_TIME",
        "AWSFLOCK_KILL_AFTER",
        "AWSFLOCK_BACKEND",
    ] {
        assert!(help.stdout.contains(var), "{var} not shown in run --help");
    }
}

#[test]
fn help_has_examples_for_cron_ci_and_terraform() {
    let out = run(Command::new(bin_path()).args(["run", "--help"]));
    assert_eq!(out.code, 0);
    for word in ["cron", "CI", "terraform apply", "--no-wait"] {
        assert!(
            out.stdout.contains(word),
            "{word:?} missing from run --help"
        );
    }
    let out = run(Command::new(bin_path()).args(["acquire", "--help"]));
    assert!(out.stdout.contains("Examples:"), "{}", out.stdout);
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(Command::new(bin_path()).args(["completions", shell]));
        assert_eq!(out.code, 0, "{shell}: {}", out.describe());
        assert!(
            out.stdout.contains("awsflock") && out.stdout.contains("acquire"),
            "{shell}"
        );
        // bash and zsh write `--lease-duration`, fish `-l lease-duration`.
        assert!(
            out.stdout.contains("lease-duration"),
            "{shell} lacks options"
        );
    }
    let out = run(Command::new(bin_path()).args(["completions", "tcsh"]));
    assert_eq!(out.code, 2);
    let out = run(Command::new(bin_path()).arg("man"));
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains(".TH awsflock 1"),
        "{}",
        &out.stdout[..out.stdout.len().min(300)]
    );
    assert!(out.stdout.contains("acquire"));
}

#[test]
fn usage_errors_are_one_line_that_say_what_to_do() {
    for args in [
        vec!["aquire", "x"],
        vec!["release", "x"],
        vec!["run", "x"],
        vec!["acquire", "x", "--wait-time", "soon"],
    ] {
        let out = run(Command::new(bin_path()).args(&args));
        assert_eq!(out.code, 2, "{args:?}: {}", out.describe());
        assert_clean_error(&out);
        assert!(
            out.stderr.contains("--help") || out.stderr.contains("give"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// The `run` section's `awsflock` aimed at `moto`, table `t`.
fn on_moto(moto: &Moto, t: &str) -> Command {
    let mut c = awsflock(moto);
    c.env("AWSFLOCK_TABLE", t).env("TZ", "UTC");
    c
}

/// A `run` waiting in a log (stderr a pipe, as in CI) says now and then
/// that it still waits, for which lock, how long, and who holds it; `-q`
/// silences that too. The interval is shortened for the test.
#[test]
fn a_waiting_run_in_a_log_says_now_and_then_that_it_still_waits() {
    let (moto, t, name) = fresh_lock();
    let _lease = acquire(&moto, &t, &name, &["--owner", "alice@ci-7"]);
    let waiter = |quiet: bool| {
        let mut c = on_moto(&moto, &t);
        c.env("AWSFLOCK_TEST_STILL_WAITING_EVERY", "1s").arg("run");
        if quiet {
            c.arg("-q");
        }
        c.args([&name, "--", "true"]);
        let w = spawn(&mut c);
        std::thread::sleep(Duration::from_millis(3800));
        signal(w.pid(), nix::sys::signal::Signal::SIGTERM);
        w.wait(Duration::from_secs(10))
    };
    let out = waiter(false);
    let first: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("awsflock: waiting for"))
        .collect();
    assert_eq!(first.len(), 1, "{}", out.describe());
    let still: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("still waiting for {name} after ")))
        .collect();
    assert!(still.len() >= 2, "{}", out.describe());
    for l in &still {
        assert!(l.contains("held by alice@ci-7 since "), "{l}");
        // The time names its zone.
        assert!(l.contains(" UTC"), "{l}");
    }
    assert!(first[0].contains(" UTC"), "{}", first[0]);
    let out = waiter(true);
    assert!(!out.stderr.contains("waiting for"), "{}", out.describe());
}

/// The waiting line's time: the zone, and the date when not today.
#[test]
fn the_waiting_line_names_the_day_and_zone_of_an_old_grant() {
    let (moto, t, name) = fresh_lock();
    let _lease = acquire(&moto, &t, &name, &["--lease-duration", "3 days"]);
    // Move the grant two days back, as a long-held lock would be.
    let two_days_ago = (now_epoch() - 2 * 86_400) * 1000;
    boto(
        &moto,
        &format!(
            r#"c.update_item(TableName="{t}", Key={{"lock_id": {{"S": "{name}"}}}},
                UpdateExpression="SET acquired_ms = :a", ExpressionAttributeValues={{":a": {{"N": "{two_days_ago}"}}}})"#
        ),
    );
    let out = run(on_moto(&moto, &t).args(["acquire", &name, "--wait-time", "1"]));
    out.assert_exit(3);
    let day = humantime::format_rfc3339(
        std::time::UNIX_EPOCH + Duration::from_millis(two_days_ago as u64),
    )
    .to_string();
    assert!(
        out.stderr.contains(&format!("since {} ", &day[..10])) && out.stderr.contains(" UTC"),
        "{}",
        out.describe()
    );
}

/// The man page lists every exit code the README's table lists.
#[test]
fn the_man_page_lists_every_exit_code() {
    let out = run(Command::new(bin_path()).arg("man"));
    out.assert_ok();
    for code in ["126", "127", "128+N"] {
        assert!(
            out.stdout.contains(code),
            "{code} missing from the man page"
        );
    }
    let help = run(Command::new(bin_path()).arg("--help"));
    assert!(help.stdout.contains("128+N"), "{}", help.stdout);
}

/// The first `status()` for which `ok` holds, within 10 s.
fn status_when(
    status: impl Fn() -> serde_json::Value,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = status();
        if ok(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "not reached: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `status` has the same shape before and after a waiter queued behind the
/// holder (which moves the lease into the record's holder table): holder,
/// host, pid (and whether it runs), acquired, renewed, expires, lease and
/// the number waiting, in text and JSON.
#[test]
fn status_keeps_its_shape_once_someone_has_waited() {
    let (moto, t, name) = fresh_lock();
    let holder = spawn(on_moto(&moto, &t).args([
        "run",
        &name,
        "--owner",
        "alice",
        "--lease-duration",
        "30",
        "--",
        "sleep",
        "30",
    ]));
    let status = || run(on_moto(&moto, &t).args(["status", &name, "--json"])).json();
    let before = status_when(status, |v| v["held"] == true);
    let check = |v: &serde_json::Value, waiting: u64| {
        for key in [
            "lease_id",
            "lease_duration",
            "acquired_at",
            "renewed_at",
            "expires_at",
            "pid",
            "host",
            "owner",
        ] {
            assert!(!v[key].is_null(), "{key} is null: {v}");
        }
        assert_eq!(v["pid_alive"], true, "{v}");
        assert_eq!(v["waiting"], waiting, "{v}");
        assert_eq!(v["lease_duration"], 30, "{v}");
        assert_eq!(v["holders"].as_array().map(Vec::len), Some(1), "{v}");
    };
    check(&before, 0);
    let text = run(on_moto(&moto, &t).args(["status", &name])).stdout;
    let waiter = spawn(on_moto(&moto, &t).args(["acquire", &name, "--wait-time", "20", "-q"]));
    let after = status_when(status, |v| v["waiting"] == 1);
    check(&after, 1);
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&before), keys(&after));
    let text_after = run(on_moto(&moto, &t).args(["status", &name])).stdout;
    let labels = |s: &str| {
        s.lines()
            .map(|l| l.trim_start().split(':').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        labels(&text)[1..],
        labels(&text_after)[1..],
        "{text}\n{text_after}"
    );
    for part in [
        "held by alice on ",
        ", running)",
        "acquired:",
        "renewed:",
        "expires:",
        "lease:",
        "waiting:  1",
    ] {
        assert!(text_after.contains(part), "{part:?} missing:\n{text_after}");
    }
    let list = run(on_moto(&moto, &t).args(["list"])).stdout;
    assert!(list.lines().next().unwrap().contains("WAITING"), "{list}");
    signal(holder.pid(), nix::sys::signal::Signal::SIGTERM);
    let _ = holder.wait(Duration::from_secs(10));
    let _ = waiter.wait(Duration::from_secs(10));
}

/// A lease past its expiry but inside the store's takeover margin (5 s for
/// awsflock 0.2.0's leases) is "expired Ns ago; free in Ms", not "held".
#[test]
fn status_of_a_lease_inside_its_margin_says_expired_and_when_free() {
    let (moto, t, name) = fresh_lock();
    let out = run(peer(&moto).args(["acquire", &name, "--tablename", &t, "--lease-duration", "1"]));
    out.assert_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let out = run(on_moto(&moto, &t).args(["status", &name]));
        let first = out.stdout.lines().next().unwrap_or("").to_string();
        if first.contains("expired") {
            assert!(first.contains("s ago; free in "), "{first}");
            break;
        }
        assert!(!first.contains(": free"), "never shown as expired: {first}");
        assert!(std::time::Instant::now() < deadline, "{}", out.describe());
        std::thread::sleep(Duration::from_millis(200));
    }
}
