//! Running a command on a fresh pseudo-terminal (Python's `pty` module),
//! typing keys once something appears, and reading back the screen.

use super::{run, scrub_env};
use std::process::Command;

/// The driver: forks `argv` (JSON, `sys.argv[1]`) onto a new terminal,
/// writes `keys` (Python escapes) `delay` s after `after` appears, gives up
/// after 40 s (killing it), and prints the exit code (or minus the signal)
/// on a line of its own, then the screen.
const DRIVER: &str = r#"
import os, pty, sys, time, select, json
argv = json.loads(sys.argv[1]); after = sys.argv[2].encode()
keys = sys.argv[3].encode().decode("unicode_escape").encode(); delay = float(sys.argv[4])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
seen = b""; sent = not keys; deadline = time.time() + 40
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    if not sent and after in seen:
        time.sleep(delay)
        os.write(fd, keys); sent = True
else:
    seen += b"\n(driver: still running after 40 s, killed)\n"
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
sys.stdout.write(str(code) + "\n" + seen.decode("utf-8", "replace"))
"#;

/// Runs `cmd` (its program, arguments and environment) on a fresh
/// pseudo-terminal, typing `keys` (a Python bytes-literal body, e.g.
/// `yes\n` or `\x03`) `delay_s` after the screen shows `after`. Returns
/// (how it ended: the exit code, or minus the signal; the screen).
pub fn on_terminal(cmd: &Command, after: &str, keys: &str, delay_s: f64) -> (i32, String) {
    let mut argv = vec![cmd.get_program().to_string_lossy().into_owned()];
    argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let mut c = Command::new("python3");
    scrub_env(&mut c);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.args(["-c", DRIVER, &serde_json::to_string(&argv).unwrap()])
        .args([after, keys, &delay_s.to_string()]);
    let out = run(&mut c);
    assert_eq!(out.code, 0, "pty driver failed:\n{}", out.describe());
    let (code, seen) = out.stdout.split_once('\n').expect("the driver's code line");
    (code.parse().expect("the driver's code"), seen.to_string())
}
