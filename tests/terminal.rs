//! `run` at an interactive terminal: the command gets the terminal (prompts
//! work, like `terraform apply` asking "yes"), and Ctrl-C typed there reaches
//! it exactly once. A real pseudo-terminal is made with Python's `pty`
//! module; the lock lives in a local directory.

use crate::common;

use std::process::Command;

use common::*;

/// Runs `awsflock ARGS` on a fresh pseudo-terminal, typing `keys` (a Python
/// bytes literal body, e.g. `yes\n`) once the output contains `after`.
/// Returns (exit code of awsflock, everything the terminal showed).
fn on_terminal(args: &[&str], after: &str, keys: &str) -> (i32, String) {
    let mut c = Command::new(bin_path());
    scrub_env(&mut c);
    c.args(args);
    common::pty::on_terminal(&c, after, keys, 0.3)
}

#[test]
fn ctrl_c_at_a_terminal_reaches_the_command_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = format!("file://{}", tmp.path().join("locks").display());
    let log = tmp.path().join("ints");
    assert_eq!(
        run(awsflock_at(&dead_endpoint()).args(["--backend", &backend, "table-create"])).code,
        0
    );
    let child = format!(
        "trap 'echo INT >> {log}' INT; echo ready; sleep 5 & wait; sleep 0.5; echo finished",
        log = log.display()
    );
    let (code, seen) = on_terminal(
        &[
            "--backend",
            &backend,
            "run",
            "tty-lock",
            "--",
            "sh",
            "-c",
            &child,
        ],
        "ready",
        "\\x03",
    );
    let ints = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        ints.lines().count(),
        1,
        "SIGINT reached the command {} times; terminal:\n{seen}",
        ints.lines().count()
    );
    assert!(
        seen.contains("finished"),
        "the command went on after its trap:\n{seen}"
    );
    assert_eq!(code, 0, "awsflock exits as the command did:\n{seen}");
    let v = run(awsflock_at(&dead_endpoint()).args([
        "--backend",
        &backend,
        "status",
        "tty-lock",
        "--json",
    ]))
    .json();
    assert_eq!(v["held"], false, "released after the command ended");
}

#[test]
fn an_interactive_prompt_reads_from_the_terminal() {
    let (_tmp, backend) = dir_store();
    let child = "printf 'Do you want to perform these actions? '; read answer; echo \"answer=$answer\"; [ \"$answer\" = yes ]";
    let (code, seen) = on_terminal(
        &[
            "--backend",
            &backend,
            "run",
            "prompt",
            "--",
            "sh",
            "-c",
            child,
        ],
        "actions?",
        "yes\\n",
    );
    assert!(
        seen.contains("answer=yes"),
        "the prompt did not get the typed answer:\n{seen}"
    );
    assert_eq!(code, 0, "{seen}");
}

/// Drives an interactive bash on a fresh pseudo-terminal through `steps`:
/// `["send", TEXT]` types TEXT (Python escapes, e.g. `\x1a` for Ctrl-Z),
/// `["expect", TEXT]` waits up to 20 s for TEXT to appear on the screen
/// after everything expected so far. Returns (all steps done, the screen).
fn interactive_bash(steps: &[[&str; 2]]) -> (bool, String) {
    let script = r#"
import os, pty, sys, time, json, signal
steps = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.environ["PS1"] = "$ "
    os.environ["TERM"] = "dumb"
    os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
seen = b""; pos = 0; ok = True
def pump(t):
    global seen
    end = time.time() + t
    while time.time() < end:
        import select
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen += chunk
for kind, text in steps:
    if kind == "send":
        time.sleep(0.3)
        os.write(fd, text.encode().decode("unicode_escape").encode())
    else:
        want = text.encode(); deadline = time.time() + 20
        while time.time() < deadline and want not in seen[pos:]:
            pump(0.1)
        i = seen.find(want, pos)
        if i < 0:
            ok = False
            break
        pos = i + len(want)
pump(0.3)
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
sys.stdout.write(json.dumps({"ok": ok, "seen": seen.decode("utf-8", "replace")}))
"#;
    let mut c = Command::new("python3");
    scrub_env(&mut c);
    c.args(["-c", script, &serde_json::to_string(steps).unwrap()]);
    let out = run(&mut c);
    out.assert_exit_as(0, "pty driver failed:");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("driver JSON");
    (
        v["ok"].as_bool().unwrap(),
        v["seen"].as_str().unwrap().to_string(),
    )
}

/// Ctrl-Z stops the job as the shell knows it (awsflock and the command),
/// `fg` continues it with the terminal, and Ctrl-C after `fg` reaches the
/// command; awsflock then ends by SIGINT as its command did.
#[test]
fn job_control_ctrl_z_fg_and_ctrl_c_work_as_for_any_command() {
    let (_tmp, backend) = dir_store();
    let bin = bin_path();
    let read_cmd = format!(
        "{bin} --backend {backend} run jc -- sh -c 'echo STARTED; read x; echo \"GOT=$x\"'\\n"
    );
    let sleep_cmd = format!(
        "{bin} --backend {backend} run jc -- sh -c 'echo READY2; sleep 30; echo TOO\"\"LATE'\\n"
    );
    let bg_cmd = format!(
        "{bin} --backend {backend} run jc -- sh -c 'echo BG; read y; echo \"BGGOT=$y\"' &\\n"
    );
    let (ok, seen) = interactive_bash(&[
        ["expect", "$ "],
        // Ctrl-Z, then fg: the command gets the terminal back and reads.
        ["send", &read_cmd],
        ["expect", "STARTED"],
        ["send", "\\x1a"],
        ["expect", "Stopped"],
        ["expect", "$ "],
        ["send", "echo SHELL-IS-BACK\\n"],
        ["expect", "SHELL-IS-BACK"],
        ["send", "fg\\n"],
        ["send", "hello\\n"],
        ["expect", "GOT=hello"],
        ["send", "echo rc=$?\\n"],
        ["expect", "rc=0"],
        // Ctrl-Z, fg, Ctrl-C: the command gets SIGINT, awsflock ends by it.
        ["send", &sleep_cmd],
        ["expect", "READY2"],
        ["send", "\\x1a"],
        ["expect", "Stopped"],
        ["send", "fg\\n"],
        ["send", "\\x03"],
        ["send", "echo rc=$?\\n"],
        ["expect", "rc=130"],
        // Started in the background, the command stops reading the
        // terminal; fg brings it back with the terminal.
        ["send", &bg_cmd],
        ["expect", "BG"],
        // bash reports a job's stop at its next prompt.
        ["send", "\\n"],
        ["expect", "Stopped"],
        ["send", "fg\\n"],
        ["send", "there\\n"],
        ["expect", "BGGOT=there"],
        ["send", "echo rc=$?\\n"],
        ["expect", "rc=0"],
    ]);
    assert!(ok, "the session did not go as expected; screen:\n{seen}");
    assert!(
        !seen.contains("TOOLATE"),
        "Ctrl-C did not stop the command:\n{seen}"
    );
    let v =
        run(awsflock_at(&dead_endpoint()).args(["--backend", &backend, "status", "jc", "--json"]))
            .json();
    assert_eq!(v["held"], false, "released after the jobs ended");
}

/// Runs `bash -c SCRIPT` on a fresh pseudo-terminal, typing nothing, and
/// returns everything the terminal showed ([`script_on_terminal`]).
fn bash_on_terminal(script: &str) -> String {
    script_on_terminal(script, "", "").1
}

/// With `stty tostop`, a background job that writes to the terminal gets
/// SIGTTOU, which stops it by default. awsflock's message about stopping the
/// command must neither stop awsflock nor come before the signal: the
/// command is stopped, awsflock exits 4.
#[test]
fn a_message_written_from_the_background_with_tostop_does_not_stop_the_supervisor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let backend = format!("file://{}", dir.join("locks").display());
    assert_eq!(
        run(awsflock_at(&dead_endpoint()).args(["--backend", &backend, "table-create"])).code,
        0
    );
    let bin = bin_path();
    let ready = dir.join("ready");
    let script = format!(
        r#"alive() {{ [ -r /proc/$1/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/$1/status; }}
stty tostop
set -m
{bin} --backend {backend} run tostop --lease-duration 3 --kill-after 1 -c 'exec 2>/dev/null; echo $$ > {ready}; while :; do sleep 0.1; done' &
job=$!
while [ ! -s {ready} ]; do sleep 0.1; done
cmd=$(cat {ready})
{bin} --backend {backend} release tostop --force --yes >/dev/null 2>&1
i=0; while alive $job && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
grep '^State' /proc/$job/status 2>/dev/null | tr -s '\t ' ' ' | sed 's/^/AWSFLOCK_/'
if alive $cmd; then echo COMMAND_STILL_RUNS; kill -9 $cmd $job; kill -CONT $job; else echo COMMAND_STOPPED; fi
if ! alive $job; then wait $job; echo "EXIT=$?"; fi
"#,
        ready = ready.display()
    );
    let seen = bash_on_terminal(&script);
    assert!(
        seen.contains("COMMAND_STOPPED"),
        "the command was not stopped after the lease was lost:\n{seen}"
    );
    assert!(seen.contains("EXIT=4"), "awsflock should exit 4:\n{seen}");
    assert!(
        seen.contains("stopping the command"),
        "the message should still be written:\n{seen}"
    );
}

/// A job left stopped (Ctrl-Z) past its lease: the watchdog kills the
/// command at the lease's kill time although awsflock is stopped too, and
/// `fg` then finds the lease lost (exit 4) instead of continuing it.
#[test]
fn a_job_left_stopped_past_its_lease_is_killed_and_fg_reports_the_loss() {
    let (tmp, backend) = dir_store();
    let pidfile = tmp.path().join("pid");
    let bin = bin_path();
    let cmd = format!(
        "{bin} --backend {backend} run jobstop --lease-duration 3 -- sh -c 'echo $$ > {pid}; echo R3; sleep 30'\\n",
        pid = pidfile.display()
    );
    let check = format!(
        "sleep 5; s=$(grep '^State' /proc/$(cat {pid})/status 2>/dev/null | tr -d '[:space:]'); echo \"CMD_${{s:-State:gone}}\"\\n",
        pid = pidfile.display()
    );
    let (ok, seen) = interactive_bash(&[
        ["expect", "$ "],
        ["send", &cmd],
        ["expect", "R3"],
        ["send", "\\x1a"],
        ["expect", "Stopped"],
        ["send", &check],
        ["expect", "CMD_State:"],
        ["send", "fg\\n"],
        ["send", "echo rc=$?\\n"],
        ["expect", "rc="],
        ["expect", "$ "],
    ]);
    assert!(ok, "the session did not go as expected; screen:\n{seen}");
    assert!(
        seen.contains("CMD_State:Z") || seen.contains("CMD_State:gone"),
        "the stopped job's command was not killed at its lease's deadline:\n{seen}"
    );
    assert!(
        seen.contains("rc=4"),
        "fg should report the loss (4):\n{seen}"
    );
    let v = run(awsflock_at(&dead_endpoint()).args([
        "--backend",
        &backend,
        "status",
        "jobstop",
        "--json",
    ]))
    .json();
    assert_eq!(v["held"], false, "free after the lost job");
}

/// Runs `bash -c SCRIPT` on a fresh pseudo-terminal, types `keys` (Python
/// escapes) 0.5 s after `after` appears, and returns (how bash ended: the
/// exit code, or minus the signal, and the screen).
fn script_on_terminal(script: &str, after: &str, keys: &str) -> (i32, String) {
    let mut c = Command::new("bash");
    scrub_env(&mut c);
    c.args(["-c", script]);
    common::pty::on_terminal(&c, after, keys, 0.5)
}

/// A deploy script's loop (`for env in staging prod; do awsflock run ...;
/// done`) typed at a terminal: Ctrl-C during the first command stops the
/// script, as it does with flock(1); the second command never starts.
#[test]
fn ctrl_c_during_the_command_stops_the_calling_scripts_loop() {
    ctrl_c_stops_the_loop("sleep 10");
}

/// The same with a command that cleans up on Ctrl-C and exits 130 rather
/// than dying of SIGINT.
#[test]
fn ctrl_c_during_a_command_that_exits_130_stops_the_calling_scripts_loop() {
    ctrl_c_stops_the_loop("trap 'echo cleaning-up; exit 130' INT; sleep 10 & wait");
}

/// Runs a loop of two `run`s of `sh -c "echo start-$env; BODY; echo
/// end-$env"` on a terminal, types Ctrl-C during the first: the loop stops.
fn ctrl_c_stops_the_loop(body: &str) {
    let (_tmp, backend) = dir_store();
    let bin = bin_path();
    let script = format!(
        "for env in staging prod; do {bin} --backend {backend} run tf --lease-duration 5 -- sh -c \"echo start-$env; {body}; echo end-$env\"; echo \"rc-$env=$?\"; done; echo LOOP-WENT-ON"
    );
    let (code, seen) = script_on_terminal(&script, "start-staging", "\\x03");
    assert!(
        !seen.contains("start-prod") && !seen.contains("LOOP-WENT-ON"),
        "the loop went on after Ctrl-C:\n{seen}"
    );
    assert!(
        !seen.contains("end-staging"),
        "Ctrl-C did not stop the command:\n{seen}"
    );
    assert_eq!(
        code, -2,
        "bash should end by SIGINT, as with flock(1):\n{seen}"
    );
    let v =
        run(awsflock_at(&dead_endpoint()).args(["--backend", &backend, "status", "tf", "--json"]))
            .json();
    assert_eq!(v["held"], false, "released after Ctrl-C");
}

/// The same loop, with Ctrl-C typed while the first `run` waits for the lock
/// (held by another): the script stops too.
#[test]
fn ctrl_c_while_waiting_for_the_lock_stops_the_calling_scripts_loop() {
    let (tmp, backend) = dir_store();
    let ready = tmp.path().join("held");
    let holder = spawn(awsflock_at(&dead_endpoint()).args([
        "--backend",
        &backend,
        "run",
        "tf",
        "--",
        "sh",
        "-c",
        &format!("touch {}; sleep 30", ready.display()),
    ]));
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(start.elapsed().as_secs() < 20, "the holder never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let bin = bin_path();
    let script = format!(
        "for env in staging prod; do echo waiting-$env; {bin} --backend {backend} run tf -- echo ran-$env; echo \"rc-$env=$?\"; done; echo LOOP-WENT-ON"
    );
    let (code, seen) = script_on_terminal(&script, "waiting-staging", "\\x03");
    signal(holder.pid(), nix::sys::signal::Signal::SIGTERM);
    let _ = holder.wait(std::time::Duration::from_secs(20));
    assert!(
        !seen.contains("waiting-prod") && !seen.contains("LOOP-WENT-ON"),
        "the loop went on after Ctrl-C:\n{seen}"
    );
    assert_eq!(
        code, -2,
        "bash should end by SIGINT, as with flock(1):\n{seen}"
    );
}
