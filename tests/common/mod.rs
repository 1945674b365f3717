//! Shared harness for the integration tests: moto servers (the test run's
//! shared one, or a private one per test), commands for our binary, the
//! awsflock 0.2.0 Python client and boto3, and helpers to run them with a
//! time bound.
//!
//! The Python tools live in `$AWSFLOCK_TOOLS` (default `~/.cache/awsflock`)
//! and are installed by `scripts/setup.sh`.
#![allow(dead_code)]

pub mod etcd;
pub mod procs;
pub mod proxy;
pub mod pty;
pub mod sections;

#[allow(unused_imports)]
pub use procs::*;
#[allow(unused_imports)]
pub use sections::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for any single command run through [`run`].
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Where `scripts/setup.sh` puts the Python tools.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AWSFLOCK_TOOLS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set");
    PathBuf::from(home).join(".cache").join("awsflock")
}

fn tool(rel: &str) -> PathBuf {
    let path = tools_dir().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh first",
        path.display()
    );
    path
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test (or earlier run) uses: prefix, pid, counter and a
/// few clock digits. Valid as a DynamoDB table name and as a lock name.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{n}-{:06}",
        std::process::id(),
        nanos % 1_000_000
    )
}

/// A per-process scratch directory (created on demand).
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("awsflock-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// An endpoint URL on which nothing listens.
pub fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops a child: SIGTERM (plus SIGCONT in case it is stopped), a short
/// wait, then SIGKILL; always reaps it.
fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    send_signal(child.id(), "TERM");
    send_signal(child.id(), "CONT");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A moto server on a loopback port: the test run's shared server, or a
/// private one that is killed when dropped.
pub struct Moto {
    pub endpoint: String,
    pub port: u16,
    /// The private server's process and log; `None` for the shared one.
    own: Option<(Child, PathBuf)>,
}

/// The variable through which the test command (`scripts/test.sh`) hands
/// every test process the loopback endpoint of the one moto server it
/// started for the run, and stops by pid after the last test.
pub const SHARED_MOTO_VAR: &str = "AWSFLOCK_TEST_MOTO";

impl Moto {
    /// A moto server for a test that only talks to it: the run's shared
    /// server when the test command started one (tests keep apart by
    /// unique table, bucket and lock names), else a private one. A test
    /// that stops, kills or reads the log of its server uses
    /// [`Moto::private`].
    pub fn start() -> Moto {
        if let Some(endpoint) = std::env::var(SHARED_MOTO_VAR)
            .ok()
            .filter(|e| !e.is_empty())
        {
            let port = endpoint
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok())
                .unwrap_or_else(|| panic!("{SHARED_MOTO_VAR}={endpoint}: no port"));
            assert!(
                endpoint.starts_with("http://127.0.0.1:"),
                "{SHARED_MOTO_VAR}={endpoint}: only a loopback endpoint is used"
            );
            return Moto {
                endpoint,
                port,
                own: None,
            };
        }
        Moto::private()
    }

    /// A moto server of this test's own on a free loopback port, killed
    /// when dropped.
    pub fn private() -> Moto {
        Moto::spawn(None)
    }

    /// A private moto server that speaks HTTPS with the PEM certificate and
    /// key `(cert, key)` (e.g. [`etcd::Tls::make`]'s server pair, made for
    /// 127.0.0.1): its endpoint is `https://127.0.0.1:PORT`.
    pub fn private_tls(cert: &Path, key: &Path) -> Moto {
        Moto::spawn(Some((cert, key)))
    }

    fn spawn(tls: Option<(&Path, &Path)>) -> Moto {
        // moto behind scripts/moto-server.py, which makes its conditional
        // writes atomic as the real services' are.
        let server = tool("moto/bin/python");
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto-server.py");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut last_log = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let log = scratch_dir().join(format!("moto-{}.log", unique_name("m")));
            let log_file = std::fs::File::create(&log).expect("create moto log");
            let mut cmd = Command::new(&server);
            cmd.env("AWSFLOCK_MOTO_EXIT_WITH_PARENT", "1")
                .arg(&launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            if let Some((cert, key)) = tls {
                cmd.arg("--ssl-cert").arg(cert).arg("--ssl-key").arg(key);
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", server.display()));
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut died = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    died = true;
                    break;
                }
                // Over TLS, a listening port is enough: a connection made
                // before the server serves waits in its backlog.
                let up = match tls {
                    None => http_answers(port),
                    Some(_) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
                };
                if up {
                    return Moto {
                        endpoint: format!("{scheme}://127.0.0.1:{port}"),
                        port,
                        own: Some((child, log)),
                    };
                }
                thread::sleep(Duration::from_millis(100));
            }
            terminate(&mut child);
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            if !died {
                panic!("moto_server did not answer on port {port} within 30 s:\n{last_log}");
            }
            eprintln!("moto_server exited during start-up (attempt {attempt}), retrying");
        }
        panic!("moto_server failed to start three times:\n{last_log}");
    }

    pub fn pid(&self) -> u32 {
        match &self.own {
            Some((child, _)) => child.id(),
            None => {
                panic!("the shared moto server is not this test's to signal: use Moto::private()")
            }
        }
    }

    /// SIGSTOP the server: connections are accepted by the kernel but never
    /// answered.
    pub fn pause(&self) {
        send_signal(self.pid(), "STOP");
    }

    pub fn resume(&self) {
        send_signal(self.pid(), "CONT");
    }

    pub fn log(&self) -> String {
        match &self.own {
            Some((_, log)) => std::fs::read_to_string(log).unwrap_or_default(),
            None => panic!("the shared moto server's log is not this test's: use Moto::private()"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some((child, log)) = &mut self.own {
            terminate(child);
            let _ = std::fs::remove_file(log);
        }
    }
}

/// True once something on `port` answers an HTTP request with a status line.
fn http_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 5 {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got >= 5 && &buf[..5] == b"HTTP/"
}

/// Nonexistent AWS config and credential files, so that nothing on the
/// machine leaks into a test.
fn no_aws_files(cmd: &mut Command) {
    let dir =
        std::env::temp_dir().join(format!("awsflock-tests-nonexistent-{}", std::process::id()));
    cmd.env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"));
}

/// Removes every variable that could change how a client finds the store.
pub fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("AWS_")
            || key.starts_with("AWSFLOCK_")
            || key == "DYNAMO_ENDPOINT_URL"
            || key == "RUST_LOG"
            || key == "FAKETIME"
            || key == "LD_PRELOAD"
            || key == "HTTP_PROXY"
            || key == "HTTPS_PROXY"
            || key == "http_proxy"
            || key == "https_proxy"
            || key == "ALL_PROXY"
        {
            cmd.env_remove(key);
        }
    }
    no_aws_files(cmd);
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    default_signals(cmd);
}

/// Starts `cmd` with SIGINT, SIGQUIT and SIGHUP at their default action.
/// A test run from a background job of a non-interactive shell (`cmd &`,
/// `nohup`) inherits them ignored, and awsflock by design leaves a signal
/// its caller ignores ignored, for itself and its command: the tests of
/// how signals reach a command would then see none. A test that wants one
/// ignored sets that after this, in its own `pre_exec`.
pub fn default_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: signal() with SIG_DFL in the forked child before exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

fn fake_creds(cmd: &mut Command) {
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1");
}

pub fn bin_path() -> &'static str {
    // Built only with the `cli` feature; the library's own tests do without.
    match option_env!("CARGO_BIN_EXE_awsflock") {
        Some(path) => path,
        None => panic!("the awsflock binary is built only with the cli feature"),
    }
}

/// Our binary with a clean environment aimed at `endpoint`.
pub fn awsflock_at(endpoint: &str) -> Command {
    let mut cmd = Command::new(bin_path());
    scrub_env(&mut cmd);
    fake_creds(&mut cmd);
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("RUST_BACKTRACE", "1");
    cmd
}

/// Our binary with a clean environment aimed at `moto`.
pub fn awsflock(moto: &Moto) -> Command {
    awsflock_at(&moto.endpoint)
}

/// `awsflock run NAME --table T` followed by `args`, aimed at `endpoint`.
pub fn run_at(endpoint: &str, table: &str, name: &str, args: &[&str]) -> Command {
    let mut cmd = awsflock_at(endpoint);
    cmd.args(["run", name, "--table", table]).args(args);
    cmd
}

/// `awsflock run NAME --table T` followed by `args`, aimed at `moto`.
pub fn run_cmd(moto: &Moto, table: &str, name: &str, args: &[&str]) -> Command {
    run_at(&moto.endpoint, table, name, args)
}

/// Our binary aimed at `moto`, its wall clock moved by `offset` (e.g.
/// "+1h"), or None when libfaketime is not installed.
pub fn awsflock_faketime(moto: &Moto, offset: &str) -> Option<Command> {
    clock_offset(awsflock(moto), offset)
}

/// `cmd` with its wall clock moved by `offset` ("+1h", "-40s") by
/// libfaketime, or None when libfaketime is not installed. The boot-time
/// and monotonic clocks stay real, as they do when an administrator or NTP
/// steps the wall clock.
///
/// libfaketime is preloaded directly, not through the `faketime` wrapper:
/// the wrapper names a semaphore after its own pid and leaves it in
/// /dev/shm when it is killed, so a later wrapper given the same pid fails
/// with "sem_open: File exists" before our binary starts.
pub fn clock_offset(mut cmd: Command, offset: &str) -> Option<Command> {
    cmd.env("LD_PRELOAD", libfaketime()?)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    Some(cmd)
}

pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(prog))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The awsflock 0.2.0 Python client aimed at `moto`.
pub fn peer(moto: &Moto) -> Command {
    let mut cmd = Command::new(tool("peer/bin/awsflock"));
    scrub_env(&mut cmd);
    fake_creds(&mut cmd);
    cmd.env("DYNAMO_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

const BOTO_PRELUDE: &str = r#"
import os, sys, json, time, textwrap
import boto3
_conn = dict(
    endpoint_url=os.environ["AWSFLOCK_TEST_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
c = boto3.client("dynamodb", **_conn)
exec(textwrap.dedent(sys.argv[1]))
"#;

/// Runs a Python snippet with `c` bound to a boto3 DynamoDB client for
/// `moto` (also imported: os, sys, json, time; `_conn` holds the client's
/// connection arguments). Returns its stdout and
/// panics, showing stderr, when it fails.
pub fn boto(moto: &Moto, script: &str) -> String {
    let mut cmd = Command::new(tool("moto/bin/python"));
    scrub_env(&mut cmd);
    cmd.env("AWSFLOCK_TEST_ENDPOINT", &moto.endpoint)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", BOTO_PRELUDE, script]);
    let out = run(&mut cmd);
    assert_eq!(
        out.code, 0,
        "boto script failed:\n{script}\n--- stderr:\n{}",
        out.stderr
    );
    out.stdout
}

/// Runs a Python snippet with `s3` bound to a boto3 S3 client for `moto`
/// (and `c`, os, sys, json, time as for [`boto`]).
pub fn s3py(moto: &Moto, script: &str) -> String {
    let full = format!(
        r#"
s3 = boto3.client("s3", **_conn)
{script}
"#
    );
    boto(moto, &full)
}

/// Creates a table that is not awsflock's (its key is `id`, not
/// `lock_id`) and returns its name.
pub fn foreign_table(moto: &Moto) -> String {
    let t = unique_name("wrong");
    boto(
        moto,
        &format!(
            r#"
c.create_table(TableName={t:?}, KeySchema=[{{"AttributeName": "id", "KeyType": "HASH"}}],
    AttributeDefinitions=[{{"AttributeName": "id", "AttributeType": "S"}}], BillingMode="PAY_PER_REQUEST")
"#
        ),
    );
    t
}

/// Result of a finished command.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    /// stdout without surrounding white space.
    pub fn line(&self) -> &str {
        self.stdout.trim()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", self.describe()))
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {} after {:.2?}\n--- stdout:\n{}--- stderr:\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Asserts the command exited with `code`, showing its output if not.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &Out {
        assert_eq!(self.code, code, "{}", self.describe());
        self
    }

    /// Asserts the command exited with `code`; if not, says `why` (e.g.
    /// "the waiter") and shows its output.
    #[track_caller]
    pub fn assert_exit_as(&self, code: i32, why: &str) -> &Out {
        assert_eq!(self.code, code, "{why}\n{}", self.describe());
        self
    }

    /// Asserts the command exited 0, showing its output if not.
    #[track_caller]
    pub fn assert_ok(&self) -> &Out {
        self.assert_exit(0)
    }

    /// Asserts stderr contains `needle`, showing the output if not.
    #[track_caller]
    pub fn assert_stderr_has(&self, needle: &str) -> &Out {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.describe()
        );
        self
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A command running in the background; killed if dropped unfinished.
pub struct Running {
    child: Option<Child>,
    started: Instant,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    what: String,
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> Option<thread::JoinHandle<String>> {
    let mut r = r?;
    Some(thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }))
}

pub fn spawn(cmd: &mut Command) -> Running {
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    Running {
        child: Some(child),
        started,
        stdout,
        stderr,
        what,
    }
}

impl Running {
    /// True once the process has exited.
    pub fn finished(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits up to `timeout`; kills the process and panics if it is still
    /// running then.
    pub fn wait(mut self, timeout: Duration) -> Out {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        let status = match status {
            Some(s) => s,
            None => {
                terminate(&mut child);
                let stdout = self
                    .stdout
                    .take()
                    .map(|h| h.join().unwrap())
                    .unwrap_or_default();
                let stderr = self
                    .stderr
                    .take()
                    .map(|h| h.join().unwrap())
                    .unwrap_or_default();
                panic!(
                    "command still running after {timeout:?}, killed: {}\n--- stdout:\n{stdout}--- stderr:\n{stderr}",
                    self.what
                );
            }
        };
        Out {
            code: exit_code(status),
            stdout: self
                .stdout
                .take()
                .map(|h| h.join().unwrap())
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|h| h.join().unwrap())
                .unwrap_or_default(),
            elapsed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// Runs a command to completion (stdin closed), bounded by [`RUN_TIMEOUT`].
pub fn run(cmd: &mut Command) -> Out {
    run_timeout(cmd, RUN_TIMEOUT)
}

pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Out {
    spawn(cmd).wait(timeout)
}

/// Creates a fresh table with `awsflock table-create` and returns its name.
pub fn table(moto: &Moto) -> String {
    let name = unique_name("tbl");
    let out = run(awsflock(moto).args(["table-create", "--table", &name]));
    assert_eq!(out.code, 0, "table-create failed:\n{}", out.describe());
    name
}

/// The test run's moto server, a fresh table on it and a fresh lock name:
/// what most end-to-end tests start with.
pub fn fresh_lock() -> (Moto, String, String) {
    let moto = Moto::start();
    let t = table(&moto);
    (moto, t, lock())
}

/// Asserts a failure was reported as one clean line: no panic, no
/// backtrace.
pub fn assert_clean_error(out: &Out) {
    let stderr = &out.stderr;
    assert!(
        !stderr.trim().is_empty(),
        "expected an error message on stderr:\n{}",
        out.describe()
    );
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked:\n{}",
        out.describe()
    );
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("backtrace"),
        "stderr shows a backtrace:\n{}",
        out.describe()
    );
    let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        lines,
        1,
        "expected the error on a single line:\n{}",
        out.describe()
    );
}

/// Asserts `s` looks like a UUID (8-4-4-4-12 hex digits).
pub fn assert_uuid(s: &str) {
    let groups: Vec<&str> = s.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(ok, "not a UUID: {s:?}");
}

/// Seconds since the epoch on this machine.
pub fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Acquires `name` with our binary (extra args appended) and returns the
/// lease id; panics unless it exits 0.
pub fn acquire(moto: &Moto, table: &str, name: &str, extra: &[&str]) -> String {
    let out = run(awsflock(moto)
        .args(["acquire", name, "--table", table])
        .args(extra));
    assert_eq!(out.code, 0, "acquire {name} failed:\n{}", out.describe());
    let id = out.line().to_string();
    assert_uuid(&id);
    id
}

/// Acquires with `--json` and returns (lease_id, fence).
pub fn acquire_json(moto: &Moto, table: &str, name: &str, extra: &[&str]) -> (String, i64) {
    let out = run(awsflock(moto)
        .args(["acquire", name, "--table", table, "--json"])
        .args(extra));
    assert_eq!(
        out.code,
        0,
        "acquire --json {name} failed:\n{}",
        out.describe()
    );
    let v = out.json();
    let lease = v["lease_id"]
        .as_str()
        .unwrap_or_else(|| panic!("lease_id is not a string:\n{}", out.describe()))
        .to_string();
    let fence = v["fence"]
        .as_i64()
        .unwrap_or_else(|| panic!("fence is not an integer:\n{}", out.describe()));
    (lease, fence)
}

/// Releases with our binary; panics unless it exits 0.
pub fn release(moto: &Moto, table: &str, name: &str, lease: &str) {
    let out = run(awsflock(moto).args(["release", name, lease, "--table", table]));
    assert_eq!(out.code, 0, "release {name} failed:\n{}", out.describe());
}

/// The raw lock item `lock_id = name` as JSON in DynamoDB's attribute-value
/// form, or Null when absent.
pub fn raw_item(moto: &Moto, table: &str, name: &str) -> serde_json::Value {
    let script = format!(
        r#"
r = c.get_item(TableName={table:?}, Key={{"lock_id": {{"S": {name:?}}}}}, ConsistentRead=True)
print(json.dumps(r.get("Item")))
"#,
        table = table,
        name = name
    );
    let out = boto(moto, &script);
    serde_json::from_str(out.trim()).expect("boto printed JSON")
}

/// Deletes the lock item as DynamoDB's TTL sweeper would.
pub fn delete_item(moto: &Moto, table: &str, name: &str) {
    let script = format!(
        r#"
c.delete_item(TableName={table:?}, Key={{"lock_id": {{"S": {name:?}}}}})
"#
    );
    boto(moto, &script);
}

// Process and file helpers shared by the supervisor and fault tests.

pub fn lock() -> String {
    unique_name("lock")
}

pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
        .unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself contain spaces or parentheses.
    match stat.rfind(')') {
        Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
        None => false,
    }
}

/// Waits up to `timeout` for `pid` to be gone; true if it is.
pub fn gone_within(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn status_json(moto: &Moto, table: &str, name: &str) -> serde_json::Value {
    let out = run(awsflock(moto).args(["status", name, "--table", table, "--json"]));
    assert_eq!(out.code, 0, "status {name}:\n{}", out.describe());
    out.json()
}

/// Asserts nobody holds `name`: `status` says so and a `--no-wait` acquire
/// succeeds (and is released again).
pub fn assert_free(moto: &Moto, table: &str, name: &str, after: &str) {
    let st = status_json(moto, table, name);
    assert_eq!(
        st["held"],
        serde_json::Value::Bool(false),
        "lock still held after {after}: {st}"
    );
    let lease = acquire(moto, table, name, &["--no-wait"]);
    release(moto, table, name, &lease);
}

/// The `-v` log lines of a run that each record one request to the store.
pub fn store_requests(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("store_request"))
        .collect()
}

/// A test that needs a tool `scripts/setup.sh` installs (faketime,
/// `script`) and does not find it: a note and a skip when run by hand, a
/// failure in the full run (`scripts/test.sh` sets `AWSFLOCK_TEST_ALL`), so
/// that no test passes there without having run.
pub fn skip(why: &str) {
    if std::env::var_os("AWSFLOCK_TEST_ALL").is_some() {
        panic!("{why}: install it with scripts/setup.sh");
    }
    println!("note: {why}; skipped");
}

/// Now on the wall clock, in ns since the epoch: the unit of the stamps the
/// tests' commands write with `date +%s%N`.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// Seconds, for messages, from ns.
pub fn secs(ns: i128) -> f64 {
    ns as f64 / 1e9
}

/// A measured figure, printed where `--nocapture` shows it.
pub fn figures(line: String) {
    println!("figures: {line}");
}

/// Fills the pipe `w` writes to with 256 KiB of dots, on a thread that
/// blocks once the pipe is full (64 KiB) and ends once its reader has
/// drained the rest: a stderr nobody reads, for the process given a clone
/// of `w`. The reader sees dots before whatever that process writes.
pub fn fill_pipe(mut w: std::io::PipeWriter) {
    std::thread::spawn(move || {
        let block = [b'.'; 4096];
        for _ in 0..64 {
            if w.write_all(&block).is_err() {
                break;
            }
        }
    });
}

/// Where Debian's faketime package puts libfaketime, if it is installed.
pub fn libfaketime() -> Option<&'static str> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|l| std::path::Path::new(l).exists())
}

/// Process groups (workers started in groups of their own) that are
/// continued and SIGKILLed when this is dropped, so that a failing test
/// leaves nothing running, stopped or not.
#[derive(Default)]
pub struct Groups(pub Vec<i32>);

impl Drop for Groups {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        for g in &self.0 {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGCONT);
            let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
        }
    }
}

/// A fresh directory store (`file://…/locks`, created with `table-create`)
/// in a scratch directory that lives as long as the returned guard: for a
/// test where a server is not the point.
pub fn dir_store() -> (tempfile::TempDir, String) {
    let tmp = scratch();
    let backend = format!("file://{}", tmp.path().join("locks").display());
    let out = run(awsflock_at(&dead_endpoint()).args(["--backend", &backend, "table-create"]));
    assert_eq!(out.code, 0, "{}", out.describe());
    (tmp, backend)
}

/// A shell command that appends `TAG <ns since the epoch>` to `log` every
/// 50 ms for as long as it runs (`rounds` times, or forever when 0): a
/// critical section whose activity [`stamps`] reads back.
pub fn ticking(log: &Path, tag: &str, rounds: u32) -> String {
    let log = log.display();
    let tick = format!("echo \"{tag} $(date +%s%N)\" >> {log}; sleep 0.05");
    if rounds == 0 {
        format!("while :; do {tick}; done")
    } else {
        format!("i=0; while [ $i -lt {rounds} ]; do {tick}; i=$((i+1)); done")
    }
}

/// The times (ns since the epoch) that [`ticking`] wrote with `tag`.
pub fn stamps(log: &Path, tag: &str) -> Vec<u128> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{tag} ")))
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}
