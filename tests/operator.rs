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
    assert_eq!(out.code, 0, "{}", out.describe());
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
    assert_eq!(out.code, 0, "{}", out.describe());
}

#[test]
fn a_waiter_off_a_terminal_says_once_who_holds_the_lock_why_and_until_when() {
    let d = dir();
    hold(&d, "deploy");
    let out = run(cmd(&d).args(["acquire", "deploy", "--wait-time", "2"]));
    assert_eq!(out.code, 3, "{}", out.describe());
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
    assert_eq!(out.code, 0, "{}", out.describe());
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
    assert_eq!(out.code, 3, "{}", out.describe());
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
    assert_eq!(out.code, 4, "{}", out.describe());
}

#[test]
fn status_of_a_free_lock_exits_0_with_held_false() {
    let d = dir();
    let out = run(cmd(&d).args(["status", "never-used", "--json"]));
    assert_eq!(out.code, 0, "{}", out.describe());
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
    assert_eq!(out.code, 0, "{}", out.describe());
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
    assert_eq!(out.code, 0, "{}", out.describe());
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
