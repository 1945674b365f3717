//! A private single-member etcd cluster per test: Debian's `etcd` on free
//! loopback ports with its own data directory, stopped by pid when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{free_port, scrub_env, send_signal, terminate};

/// Where Debian installs the server and its client.
pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// A running etcd (or one member of a cluster), killed when dropped.
pub struct Etcd {
    port: u16,
    /// The member's name in its cluster.
    name: String,
    child: Child,
    dir: tempfile::TempDir,
    tls: Option<Tls>,
}

/// Certificates for an etcd that speaks TLS and requires client certificates.
#[derive(Clone)]
pub struct Tls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// The server's pair, for 127.0.0.1 (also served by `Moto::private_tls`).
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
}

impl Tls {
    /// The (CA, client certificate, client key) paths that [`Tls::make`]
    /// wrote into `dir`.
    pub fn make_paths(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        (
            dir.join("ca.pem"),
            dir.join("client.pem"),
            dir.join("client.key"),
        )
    }

    /// A fresh CA, a server certificate for 127.0.0.1 and a client
    /// certificate, made with openssl in `dir`.
    pub fn make(dir: &Path) -> Tls {
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("san.cnf"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=awsflock-test-ca 2>/dev/null",
        );
        for who in ["server", "client"] {
            sh(&format!(
                "openssl req -newkey rsa:2048 -nodes -keyout {who}.key -out {who}.csr -subj /CN={who} 2>/dev/null && \
                 openssl x509 -req -in {who}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {who}.pem -days 2 -extfile san.cnf 2>/dev/null"
            ));
        }
        Tls {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// Whether etcd and etcdctl are installed; prints why a test is skipped when not.
pub fn available() -> bool {
    let ok = Path::new(ETCD).exists() && Path::new(ETCDCTL).exists();
    if !ok {
        eprintln!("skipped: {ETCD} or {ETCDCTL} is not installed (see scripts/setup.sh)");
    }
    ok
}

impl Etcd {
    /// Starts etcd, or returns `None` (after saying so) when it is not installed.
    pub fn start() -> Option<Etcd> {
        Self::start_with(None)
    }

    /// Starts etcd serving clients over TLS with `tls`, requiring client
    /// certificates, or `None` when etcd or openssl is not installed.
    pub fn start_tls() -> Option<(Etcd, tempfile::TempDir)> {
        if super::which("openssl").is_none() {
            eprintln!("skipped: openssl is not installed");
            return None;
        }
        let certs = tempfile::tempdir().expect("temp dir");
        let tls = Tls::make(certs.path());
        Self::start_with(Some(tls)).map(|e| (e, certs))
    }

    fn start_with(tls: Option<Tls>) -> Option<Etcd> {
        if !available() {
            return None;
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut last_log = String::new();
        for attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let mut peer = free_port();
            while peer == port {
                peer = free_port();
            }
            let client_url = format!("{scheme}://127.0.0.1:{port}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let initial = format!("default={peer_url}");
            let mut cmd = member("default", dir.path(), &client_url, &peer_url, &initial);
            if let Some(t) = &tls {
                cmd.arg("--cert-file").arg(&t.server_cert);
                cmd.arg("--key-file").arg(&t.server_key);
                cmd.arg("--trusted-ca-file").arg(&t.ca);
                cmd.arg("--client-cert-auth");
            }
            let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {ETCD}: {e}"));
            let mut etcd = Etcd {
                port,
                name: "default".into(),
                child,
                dir,
                tls: tls.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut died = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = etcd.child.try_wait() {
                    died = true;
                    break;
                }
                let healthy = etcd
                    .etcdctl()
                    .args(["endpoint", "health", "--command-timeout", "2s"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if healthy {
                    return Some(etcd);
                }
                thread::sleep(Duration::from_millis(100));
            }
            last_log = etcd.log();
            drop(etcd);
            if !died {
                panic!("etcd did not become healthy on port {port} within 30 s:\n{last_log}");
            }
            // Most likely a port taken between choosing and binding it.
            eprintln!("etcd exited during start-up (attempt {attempt}), retrying");
        }
        panic!("etcd failed to start three times:\n{last_log}");
    }

    /// A cluster of `n` members on free loopback ports, with a short
    /// heartbeat (50 ms) and election timeout (500 ms) so that a frozen
    /// leader is replaced within about a second. `None` when etcd is not
    /// installed. Every member is stopped by pid when dropped.
    pub fn cluster(n: usize) -> Option<Vec<Etcd>> {
        if !available() {
            return None;
        }
        let mut last_log = String::new();
        'attempt: for attempt in 0..3 {
            let mut ports = Vec::new();
            while ports.len() < 2 * n {
                let p = free_port();
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[n + i]);
            let initial: Vec<String> = (0..n).map(|i| format!("m{i}={}", peer_url(i))).collect();
            let initial = initial.join(",");
            let token = format!("awsflock-test-{}-{attempt}", std::process::id());
            let mut members: Vec<Etcd> = Vec::new();
            for (i, &port) in ports[..n].iter().enumerate() {
                let dir = tempfile::tempdir().expect("temp dir");
                let client_url = format!("http://127.0.0.1:{port}");
                let name = format!("m{i}");
                let child = member(&name, dir.path(), &client_url, &peer_url(i), &initial)
                    .args(["--initial-cluster-token", &token])
                    .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .spawn()
                    .unwrap_or_else(|e| panic!("spawn {ETCD}: {e}"));
                members.push(Etcd {
                    port,
                    name: format!("m{i}"),
                    child,
                    dir,
                    tls: None,
                });
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                for m in members.iter_mut() {
                    if let Ok(Some(_)) = m.child.try_wait() {
                        last_log = m.log();
                        eprintln!(
                            "etcd member exited during start-up (attempt {attempt}), retrying"
                        );
                        continue 'attempt;
                    }
                }
                if members.iter().all(|m| m.healthy()) && leader(&members).is_some() {
                    return Some(members);
                }
                thread::sleep(Duration::from_millis(100));
            }
            let logs: Vec<String> = members.iter().map(|m| m.log()).collect();
            panic!(
                "etcd cluster not healthy within 30 s:\n{}",
                logs.join("\n---\n")
            );
        }
        panic!("etcd cluster failed to start three times:\n{last_log}");
    }

    fn healthy(&self) -> bool {
        self.etcdctl()
            .args(["endpoint", "health", "--command-timeout", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The member's name in its cluster (`default` for a single member).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of watch streams this member serves now, from its
    /// Prometheus metrics (`etcd_debugging_mvcc_watch_stream_total`).
    pub fn watch_streams(&self) -> u64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watch_stream_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("no watch stream gauge in the metrics of {}", self.name))
    }

    /// `127.0.0.1:PORT`, as etcdctl's --endpoints and our etcd:// URLs take it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP the server: connections stay open but nothing is answered.
    pub fn pause(&self) {
        send_signal(self.pid(), "STOP");
    }

    pub fn resume(&self) {
        send_signal(self.pid(), "CONT");
    }

    /// etcdctl (API v3) aimed at this server, with a clean environment.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new(ETCDCTL);
        scrub_env(&mut cmd);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("ETCDCTL_")) {
                cmd.env_remove(key);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint()]);
        if let Some(t) = &self.tls {
            cmd.arg("--cacert").arg(&t.ca);
            cmd.arg("--cert").arg(&t.cert);
            cmd.arg("--key").arg(&t.key);
        }
        cmd
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

/// The member id of `m` and of the leader it follows, when it answers.
pub fn member_and_leader(m: &Etcd) -> Option<(u64, u64)> {
    let out = m
        .etcdctl()
        .args([
            "endpoint",
            "status",
            "-w",
            "json",
            "--command-timeout",
            "2s",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let s = &v[0]["Status"];
    Some((s["header"]["member_id"].as_u64()?, s["leader"].as_u64()?))
}

/// The index of the member that leads the cluster now, as every member
/// reports it (`None` while they disagree or one does not answer).
pub fn leader(members: &[Etcd]) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leaders = Vec::new();
    for m in members {
        let (id, l) = member_and_leader(m)?;
        ids.push(id);
        leaders.push(l);
    }
    let first = *leaders.first()?;
    if leaders.iter().any(|&l| l != first) {
        return None;
    }
    ids.iter().position(|&id| id == first)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// A TCP relay on a free loopback port in front of an etcd member, which
/// loses one answer: the first request (on any relay sharing `armed`) whose
/// bytes contain `marker` is passed on to etcd, which applies it, but
/// nothing etcd sends back on that connection reaches the client any more.
/// This is a write whose answer was lost in transit (a member that froze or
/// a link that broke right after applying it). Relay threads end with the
/// test process.
pub struct LosingRelay {
    port: u16,
}

impl LosingRelay {
    pub fn start(
        target: String,
        marker: Vec<u8>,
        armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> LosingRelay {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a relay port");
        let port = listener.local_addr().expect("relay address").port();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mute = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mute_up, armed, marker) = (mute.clone(), armed.clone(), marker.clone());
                thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if buf[..n].windows(marker.len()).any(|w| w == marker)
                            && armed.swap(false, SeqCst)
                        {
                            mute_up.store(true, SeqCst);
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if mute.load(SeqCst) {
                            continue;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Write);
                });
            }
        });
        LosingRelay { port }
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// `etcd` as the member `name` of the new cluster `initial_cluster`, its
/// data and its log (`etcd.log`) in `dir`, serving clients at
/// `client_url` and peers at `peer_url`; the caller adds options (TLS,
/// timing) and spawns it.
fn member(name: &str, dir: &Path, client_url: &str, peer_url: &str, initial: &str) -> Command {
    let log_file = std::fs::File::create(dir.join("etcd.log")).expect("create etcd log");
    let mut cmd = Command::new(ETCD);
    cmd.args(["--name", name])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", initial])
        .args(["--initial-cluster-state", "new"])
        .env_remove("ETCD_UNSUPPORTED_ARCH")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    cmd
}
