//! Fault tests against real local servers: mutual exclusion under contention
//! (with awsflock 0.2.0 workers and holders killed mid-section), clock skew,
//! store outages, injected errors and lost answers (through the proxy in
//! `common/proxy.rs`), and a holder paused past its lease.
//!
//! Each test prints what it measured on one line starting with `figures:`
//! (run with `--nocapture` to see them). `AWSFLOCK_SOAK_SECTIONS=N` makes the
//! contention test run about N critical sections (see `scripts/soak.sh`).

use crate::common;

use common::proxy::{Fault, Proxy};
use common::*;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------- helpers

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("append to log");
}

/// A shell aimed at `moto` with the awsflock 0.2.0 client's environment;
/// the client's path is in `$PEER` and the table in `$AWSFLOCK_TABLE`.
fn peer_shell(moto: &Moto, table: &str, script: &str) -> Command {
    let base = peer(moto);
    let mut cmd = Command::new("sh");
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("PEER", base.get_program())
        .env("AWSFLOCK_TABLE", table)
        .args(["-c", script]);
    cmd
}

fn kinds(proxy: &Proxy) -> String {
    let inj: BTreeMap<String, usize> = proxy.injected().into_iter().collect();
    if inj.is_empty() {
        return "none".to_string();
    }
    inj.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

// --------------------------------------------------- contention: the checker

/// A critical section: the worker's name and its section number.
type SectionId = (String, u64);

#[derive(Debug, Default, Clone)]
struct Section {
    begin: Option<i128>,
    end: Option<i128>,
    kill: Option<i128>,
    gone: Option<i128>,
}

#[derive(Debug, Default)]
struct Verdict {
    sections: usize,
    overlaps: Vec<String>,
    problems: Vec<String>,
    kills: usize,
    /// Next begin minus kill time, per killed section, in seconds.
    reclaims: Vec<f64>,
}

/// Parses the shared log (`begin|end|kill|gone WORKER SECTION NS`, and
/// `relfail|giveup ...` for trouble) and checks that no two critical
/// sections overlapped. A killed holder's section ends when its command was
/// seen gone (or, failing that, at the kill).
fn check_log(text: &str) -> Verdict {
    let mut v = Verdict::default();
    let mut secs_by_id: BTreeMap<SectionId, Section> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 4 {
            v.problems.push(format!("malformed log line {line:?}"));
            continue;
        }
        let (Ok(sec), Ok(ns)) = (f[2].parse::<u64>(), f[3].parse::<i128>()) else {
            v.problems.push(format!("malformed log line {line:?}"));
            continue;
        };
        let s = secs_by_id.entry((f[1].to_string(), sec)).or_default();
        let slot = match f[0] {
            "begin" => &mut s.begin,
            "end" => &mut s.end,
            "kill" => &mut s.kill,
            "gone" => &mut s.gone,
            other => {
                v.problems.push(format!("{other}: {line}"));
                continue;
            }
        };
        if slot.replace(ns).is_some() {
            v.problems.push(format!("duplicate line {line:?}"));
        }
    }
    // (worker and section, begin, end, kill time)
    let mut list: Vec<(SectionId, i128, i128, Option<i128>)> = Vec::new();
    for (id, s) in &secs_by_id {
        let Some(begin) = s.begin else {
            v.problems
                .push(format!("section {id:?} has no begin: {s:?}"));
            continue;
        };
        let end = match (s.kill, s.end) {
            (Some(k), None) => s.gone.unwrap_or(k),
            (Some(_), Some(_)) => {
                v.problems.push(format!(
                    "section {id:?} was killed but its command wrote its end line: it outlived awsflock"
                ));
                s.end.unwrap()
            }
            (None, Some(e)) => e,
            (None, None) => {
                v.problems
                    .push(format!("section {id:?} never ended: {s:?}"));
                continue;
            }
        };
        if end < begin {
            v.problems
                .push(format!("section {id:?} ends before it begins: {s:?}"));
        }
        list.push((id.clone(), begin, end, s.kill));
    }
    list.sort_by_key(|x| x.1);
    v.sections = list.len();
    let mut latest: Option<(&SectionId, i128)> = None;
    for (i, (id, begin, end, killed)) in list.iter().enumerate() {
        if let Some((prev, prev_end)) = latest {
            if *begin <= prev_end {
                v.overlaps.push(format!(
                    "{id:?} began {:.3} s before {prev:?} ended",
                    secs(prev_end - begin)
                ));
            }
        }
        if latest.is_none_or(|(_, e)| *end > e) {
            latest = Some((id, *end));
        }
        if let Some(k) = killed {
            v.kills += 1;
            if let Some((next, next_begin, _, _)) = list.get(i + 1) {
                if *next_begin <= *k {
                    v.overlaps
                        .push(format!("{next:?} began before the kill of {id:?}"));
                }
                v.reclaims.push(secs(next_begin - k));
            }
        }
    }
    v
}

#[test]
fn checker_finds_overlaps_unfinished_sections_and_outliving_commands() {
    let good = "begin a 0 100\nend a 0 200\nbegin b 0 300\nkill b 0 350\ngone b 0 360\nbegin a 1 5000\nend a 1 5100\n";
    let v = check_log(good);
    assert!(v.overlaps.is_empty() && v.problems.is_empty(), "{v:?}");
    assert_eq!((v.sections, v.kills), (3, 1));
    assert_eq!(v.reclaims.len(), 1);
    assert!((v.reclaims[0] - 4650e-9).abs() < 1e-12, "{v:?}");

    let overlap = "begin a 0 100\nbegin b 0 150\nend a 0 200\nend b 0 250\n";
    assert_eq!(check_log(overlap).overlaps.len(), 1);
    // A long section overlapping a later, short one that begins after the
    // section in between ended.
    let nested =
        "begin a 0 100\nbegin b 0 110\nend b 0 120\nbegin c 0 130\nend c 0 140\nend a 0 500\n";
    assert_eq!(check_log(nested).overlaps.len(), 2);
    // Taken over between the kill and the command's death.
    let early = "begin a 0 100\nkill a 0 200\nbegin b 0 250\nend b 0 260\ngone a 0 300\n";
    assert!(!check_log(early).overlaps.is_empty());
    let outlived = "begin a 0 100\nkill a 0 200\ngone a 0 210\nend a 0 900\n";
    assert!(!check_log(outlived).problems.is_empty());
    let unfinished = "begin a 0 100\n";
    assert!(!check_log(unfinished).problems.is_empty());
}

// ------------------------------------------------- contention: the workers

struct Plan<'a> {
    endpoint: &'a str,
    table: &'a str,
    name: &'a str,
    log: &'a Path,
    dir: &'a Path,
    per_worker: usize,
    run_timeout: Duration,
}

/// One of our workers: `sections` runs of `awsflock run`, each a short
/// critical section logged with `date +%s%N`; in the sections listed in
/// `kills` the holder is SIGKILLed while its command is inside.
fn our_worker(plan: &Plan, id: &str, kills: &[usize]) -> Vec<String> {
    let mut errors = Vec::new();
    let log = p(plan.log);
    for s in 0..plan.per_worker {
        let killed = kills.contains(&s);
        let pidfile = plan.dir.join(format!("{id}-{s}.pid"));
        let script = if killed {
            format!(
                r#"echo "begin {id} {s} $(date +%s%N)" >> {log}; echo $$ > {pf}; sleep 30; echo "end {id} {s} $(date +%s%N)" >> {log}"#,
                pf = p(&pidfile)
            )
        } else {
            format!(
                r#"echo "begin {id} {s} $(date +%s%N)" >> {log}; sleep 0.0{d}; echo "end {id} {s} $(date +%s%N)" >> {log}"#,
                d = 2 + s % 6
            )
        };
        let mut running = spawn(&mut run_at(
            plan.endpoint,
            plan.table,
            plan.name,
            &[
                "--wait-time",
                "0",
                "--lease-duration",
                "3",
                "--",
                "sh",
                "-c",
                &script,
            ],
        ));
        if !killed {
            let out = running.wait(plan.run_timeout);
            if out.code != 0 {
                errors.push(format!("{id} section {s}: {}", out.describe()));
            }
            continue;
        }
        let Some(child) = first_line(&pidfile, plan.run_timeout, Some(&mut running)) else {
            let out = running.wait(Duration::from_secs(5));
            errors.push(format!(
                "{id} section {s}: the command never started:\n{}",
                out.describe()
            ));
            continue;
        };
        let child: i32 = child.trim().parse().expect("child pid");
        let kill_ns = now_ns();
        signal(running.pid(), Signal::SIGKILL);
        append(plan.log, &format!("kill {id} {s} {kill_ns}"));
        if gone_within(child, Duration::from_secs(5)) {
            append(plan.log, &format!("gone {id} {s} {}", now_ns()));
        } else {
            let _ = killpg(Pid::from_raw(child), Signal::SIGKILL);
            errors.push(format!(
                "{id} section {s}: the command {child} still ran 5 s after awsflock was SIGKILLed"
            ));
        }
        let out = running.wait(Duration::from_secs(10));
        if out.code != 128 + 9 {
            errors.push(format!(
                "{id} section {s}: expected death by SIGKILL:\n{}",
                out.describe()
            ));
        }
    }
    errors
}

/// A shell loop running awsflock 0.2.0 critical sections. Its acquire waits
/// at most 2 s per call and the loop retries, because 0.2.0's own waiting
/// backs off exponentially (1, 2, 4, ... s) and would starve behind
/// clients that poll every 200 ms.
fn peer_script(plan: &Plan, id: &str, limit: Duration) -> String {
    format!(
        r#"i=0
deadline=$(( $(date +%s) + {limit} ))
while [ $i -lt {n} ]; do
  if [ "$(date +%s)" -gt "$deadline" ]; then echo "giveup {id} $i 0" >> {log}; exit 1; fi
  L=$("$PEER" acquire {name} --wait-time 2 --lease-duration 10) || continue
  echo "begin {id} $i $(date +%s%N)" >> {log}
  sleep 0.05
  echo "end {id} $i $(date +%s%N)" >> {log}
  "$PEER" release {name} "$L" || echo "relfail {id} $i $?" >> {log}
  i=$((i+1))
done"#,
        limit = limit.as_secs(),
        n = plan.per_worker,
        name = plan.name,
        log = p(plan.log),
    )
}

#[test]
fn contention_mutual_exclusion_with_old_clients_and_killed_holders() {
    let total: usize = std::env::var("AWSFLOCK_SOAK_SECTIONS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(36);
    const OURS: usize = 4;
    const PEERS: usize = 2;
    let workers = OURS + PEERS;
    let per_worker = total.div_ceil(workers).max(2);
    let kill_count = (per_worker * workers / 150).max(2);
    // Kills go to two of our workers, evenly spaced over their sections.
    let kills_each = kill_count.div_ceil(2);
    let kill_sections: Vec<usize> = (0..kills_each)
        .map(|j| (j + 1) * per_worker / (kills_each + 1))
        .collect();
    let soak = total > 36;
    let limit = if soak {
        Duration::from_secs(60 + total as u64 * 2)
    } else {
        Duration::from_secs(240)
    };

    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let log = dir.path().join("sections.log");
    std::fs::write(&log, "").unwrap();
    let plan = Plan {
        endpoint: &moto.endpoint,
        table: &t,
        name: &name,
        log: &log,
        dir: dir.path(),
        per_worker,
        run_timeout: limit,
    };

    let started = Instant::now();
    let mut groups = Groups::default();
    let mut peers = Vec::new();
    for i in 0..PEERS {
        let id = format!("p{}", i + 1);
        let mut cmd = peer_shell(&moto, &t, &peer_script(&plan, &id, limit));
        cmd.process_group(0);
        let r = spawn(&mut cmd);
        groups.0.push(r.pid() as i32);
        peers.push((id, r));
    }
    let errors: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..OURS)
            .map(|i| {
                let plan = &plan;
                let kills = if i % 2 == 1 {
                    kill_sections.clone()
                } else {
                    Vec::new()
                };
                s.spawn(move || our_worker(plan, &format!("w{}", i + 1), &kills))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread panicked"))
            .collect()
    });
    let mut errors = errors;
    for (id, r) in peers {
        let out = r.wait(limit + Duration::from_secs(30));
        if out.code != 0 {
            errors.push(format!("peer worker {id}: {}", out.describe()));
        }
    }
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    let v = check_log(&text);
    let reclaims: Vec<String> = v.reclaims.iter().map(|r| format!("{r:.2}")).collect();
    let (rmin, rmax) = v
        .reclaims
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), r| (a.min(*r), b.max(*r)));
    figures(format!(
        "contention workers={workers} (ours={OURS}, awsflock-0.2.0={PEERS}) sections={} overlaps={} kills={} reclaim_s=[{}] reclaim_min={:.2} reclaim_max={:.2} took={:.1}s",
        v.sections,
        v.overlaps.len(),
        v.kills,
        reclaims.join(","),
        rmin,
        rmax,
        took.as_secs_f64()
    ));
    assert!(
        v.overlaps.is_empty(),
        "critical sections overlapped: {:#?}\n--- log:\n{}",
        v.overlaps,
        tail(&text, 300)
    );
    assert!(
        errors.is_empty() && v.problems.is_empty(),
        "worker errors: {errors:#?}\nlog problems: {:#?}\n--- log:\n{}",
        v.problems,
        tail(&text, 300)
    );
    let shown = tail(&text, 300);
    assert_eq!(v.sections, per_worker * workers, "log:\n{shown}");
    assert_eq!(v.kills, kill_count.div_ceil(2) * 2, "log:\n{shown}");
    // A killed holder's lease ran for at least lease - renewal interval
    // (3 s - 1 s) after its last renewal, so nobody may begin within a second
    // of the kill.
    for r in &v.reclaims {
        assert!(
            *r >= 1.0,
            "a killed holder's lock was taken {r:.2} s after the kill (lease 3 s)"
        );
    }
    assert_free(&moto, &t, &name, "the contention run");
}

// ------------------------------------------------------------------ clock skew

#[test]
fn clock_skew_neither_steals_a_live_lock_nor_delays_a_dead_one_forever() {
    let moto = Moto::start();
    let t = table(&moto);
    let Some(_) = awsflock_faketime(&moto, "+1h") else {
        skip("faketime is not installed (clock skew test)");
        return;
    };
    let ahead = || awsflock_faketime(&moto, "+1h").unwrap();
    let behind = || awsflock_faketime(&moto, "-1h").unwrap();

    // (a) a waiter an hour ahead does not take a live lock.
    let live = lock();
    let held = acquire(&moto, &t, &live, &["--lease-duration", "30"]);
    let mut a_wait = ahead();
    a_wait.args(["acquire", &live, "--table", &t, "--wait-time", "8"]);
    let a_waiter = spawn(&mut a_wait);

    // (b) a holder an hour behind does not make its lock look expired.
    let slow = lock();
    let mut b_hold = behind();
    b_hold.args([
        "acquire",
        &slow,
        "--table",
        &t,
        "--lease-duration",
        "30",
        "--json",
    ]);
    let out = run(&mut b_hold);
    out.assert_exit_as(0, "acquire under faketime -1h:");
    let b_lease = out.json()["lease_id"].as_str().unwrap().to_string();
    let item = raw_item(&moto, &t, &slow);
    let exp: i64 = item["expiration_time"]["N"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no expiration_time: {item}"));
    let b_skew = exp - now_epoch();
    assert!(
        (20..=34).contains(&b_skew),
        "the lease of a holder an hour behind expires in {b_skew} s on the store's clock (30 s asked): {item}"
    );
    let out = run(awsflock(&moto).args(["acquire", &slow, "--table", &t, "--no-wait"]));
    out.assert_exit_as(
        3,
        "acquire --no-wait of a lock held by a client an hour behind:",
    );
    // For the next 8 s, a patient waiter and a waiter an hour ahead still
    // see it held: the lease was rewritten on the store's clock.
    let b_waiter =
        spawn(awsflock(&moto).args(["acquire", &slow, "--table", &t, "--wait-time", "8"]));
    let mut b_ahead = ahead();
    b_ahead.args(["acquire", &slow, "--table", &t, "--wait-time", "8"]);
    let b_ahead = spawn(&mut b_ahead);

    let out = a_waiter.wait(Duration::from_secs(40));
    out.assert_exit_as(3, "a waiter an hour ahead on a live 30 s lease:");
    for (what, r) in [("a waiter", b_waiter), ("a waiter an hour ahead", b_ahead)] {
        let out = r.wait(Duration::from_secs(40));
        out.assert_exit_as(
            3,
            &format!("{what} on the lock of a holder an hour behind:"),
        );
    }
    release(&moto, &t, &live, &held);
    release(&moto, &t, &slow, &b_lease);

    // (c) a crashed holder's lock is reclaimed by a waiter an hour ahead,
    // not before the lease ran out and not much later.
    let dead = lock();
    let _crashed = acquire(&moto, &t, &dead, &["--lease-duration", "3"]);
    let acquired = Instant::now();
    let mut c_wait = ahead();
    c_wait.args(["acquire", &dead, "--table", &t, "--wait-time", "30"]);
    let out = run_timeout(&mut c_wait, Duration::from_secs(60));
    let reclaim = acquired.elapsed();
    out.assert_exit_as(0, "a waiter an hour ahead on a crashed holder's lock:");
    figures(format!(
        "clock_skew ahead_waiter_on_live_lock=exit3 behind_holder_lease_on_store_clock_s={b_skew} reclaim_by_ahead_waiter_s={:.2} (lease 3 s)",
        reclaim.as_secs_f64()
    ));
    assert!(
        reclaim >= Duration::from_secs(3),
        "reclaimed {reclaim:.2?} after the holder's acquire, before its 3 s lease ran out"
    );
    assert!(
        reclaim < Duration::from_secs(20),
        "reclaim took {reclaim:.2?} (lease 3 s)"
    );
    release(&moto, &t, &dead, out.line());
}

// ---------------------------------------------------------------- outages

/// The child for the holder tests: notes its pid, stamps SIGTERM, loops.
fn term_child(ready: &Path, term: &Path) -> String {
    format!(
        r#"trap 'date +%s%N >> {term}; exit 1' TERM
echo $$ > {ready}
while :; do sleep 0.1; done"#,
        term = p(term),
        ready = p(ready)
    )
}

/// A private moto and a `run` holder (lease 6 s) of a fresh lock whose
/// command is [`term_child`], started: the scene of the outage tests, as
/// (moto, table, lock, scratch dir, the file the command stamps its
/// SIGTERM to, the holder, the command's pid).
fn outage() -> (
    Moto,
    String,
    String,
    tempfile::TempDir,
    PathBuf,
    Running,
    i32,
) {
    let moto = Moto::private();
    let t = table(&moto);
    let name = lock();
    let dir = scratch();
    let (ready, term) = (dir.path().join("ready"), dir.path().join("term"));
    let mut running = spawn(&mut run_at(
        &moto.endpoint,
        &t,
        &name,
        &["--lease-duration", "6", "-c", &term_child(&ready, &term)],
    ));
    let child = first_line(&ready, Duration::from_secs(30), Some(&mut running))
        .expect("the command never started");
    let child: i32 = child.trim().parse().unwrap();
    (moto, t, name, dir, term, running, child)
}

#[test]
fn outage_frozen_store_while_holding_stops_the_child_in_time() {
    let (moto, _, _, _dir, term, running, child) = outage();
    let paused_ns = now_ns();
    let _cont = ContOnDrop(moto.pid());
    moto.pause();
    let out = running.wait(Duration::from_secs(30));
    moto.resume();

    let stamps = lines(&term);
    let term_after = stamps
        .first()
        .and_then(|s| s.trim().parse::<i128>().ok())
        .map(|ns| secs(ns - paused_ns));
    figures(format!(
        "outage_frozen_holding exit={} term_after_pause_s={} lease_s=6",
        out.code,
        term_after.map_or("none".to_string(), |s| format!("{s:.2}"))
    ));
    out.assert_exit(4);
    assert!(!alive(child), "the command {child} still runs");
    let term_after = term_after.unwrap_or_else(|| {
        panic!(
            "the command got no SIGTERM (stamps {stamps:?}):\n{}",
            out.describe()
        )
    });
    assert!(
        term_after < 6.0,
        "SIGTERM came {term_after:.2} s after the store froze (lease 6 s):\n{}",
        out.describe()
    );
}

#[test]
fn outage_frozen_store_while_waiting_then_the_waiter_gets_the_lock() {
    let moto = Moto::private();
    let t = table(&moto);
    let name = lock();

    let held = acquire(&moto, &t, &name, &["--lease-duration", "60"]);
    let mut waiter = spawn(awsflock(&moto).args([
        "acquire",
        &name,
        "--table",
        &t,
        "--wait-time",
        "60",
        "--json",
    ]));
    thread::sleep(Duration::from_secs(1));
    let _cont = ContOnDrop(moto.pid());
    moto.pause();
    thread::sleep(Duration::from_secs(5));
    let still_waiting = !waiter.finished();
    moto.resume();
    assert!(
        still_waiting,
        "the waiter gave up while the store was frozen"
    );
    thread::sleep(Duration::from_millis(500));
    let released = Instant::now();
    release(&moto, &t, &name, &held);
    let out = waiter.wait(Duration::from_secs(60));
    let took = released.elapsed();
    figures(format!(
        "outage_frozen_waiting freeze_s=5 waiter_exit={} acquired_after_release_s={:.2}",
        out.code,
        took.as_secs_f64()
    ));
    out.assert_ok();
    let lease = out.json()["lease_id"].as_str().unwrap().to_string();
    release(&moto, &t, &name, &lease);
}

/// moto behind the launcher that serialises its requests, as the harness
/// starts it (see scripts/moto-server.py).
fn moto_server() -> Command {
    let mut c = Command::new(tools_dir().join("moto/bin/python"));
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto-server.py"));
    c
}

fn answers(port: u16) -> bool {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/"
}

/// A moto server started on a given port (after another one died there).
struct Restarted(Child);

impl Restarted {
    fn start(port: u16, log: &Path) -> Option<Restarted> {
        for _ in 0..5 {
            let f = std::fs::File::create(log).ok()?;
            let mut child = moto_server()
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(f.try_clone().ok()?)
                .stderr(f)
                .spawn()
                .ok()?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port may not be free yet: try again
                }
                if answers(port) {
                    return Some(Restarted(child));
                }
                thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            thread::sleep(Duration::from_millis(500));
        }
        None
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn outage_store_killed_and_restarted_empty_holder_fails_safe() {
    let (moto, t, name, dir, term, running, child) = outage();

    // moto keeps everything in memory: a restart comes back empty. The new
    // server gets the same port (so the running holder reaches it), but the
    // table is only created again once the holder has given up, so that
    // every renewal fails (connection refused, then "no such table").
    let killed_ns = now_ns();
    signal(moto.pid(), Signal::SIGKILL);
    let restarted = Restarted::start(moto.port, &dir.path().join("moto2.log"));
    let restarted_after = secs(now_ns() - killed_ns);
    let out = running.wait(Duration::from_secs(30));
    let Some(_server) = restarted else {
        panic!(
            "could not start moto again on port {} (holder: {})",
            moto.port,
            out.describe()
        );
    };
    let term_after = lines(&term)
        .first()
        .and_then(|s| s.trim().parse::<i128>().ok())
        .map(|ns| secs(ns - killed_ns));
    figures(format!(
        "outage_killed_restarted exit={} term_after_kill_s={} restart_took_s={restarted_after:.2} lease_s=6",
        out.code,
        term_after.map_or("none".to_string(), |s| format!("{s:.2}"))
    ));
    out.assert_exit(4);
    assert!(!alive(child), "the command {child} still runs");
    let term_after = term_after.unwrap_or_else(|| panic!("no SIGTERM:\n{}", out.describe()));
    assert!(
        term_after < 6.0,
        "SIGTERM came {term_after:.2} s after the store died (lease 6 s):\n{}",
        out.describe()
    );

    // The new server works once the table is there again.
    let out = run(awsflock(&moto).args(["table-create", "--table", &t]));
    out.assert_exit_as(0, "table-create again:");
    let lease = acquire(&moto, &t, &name, &["--no-wait"]);
    release(&moto, &t, &name, &lease);
}

/// The store comes back empty (moto restarted on the same port) and its
/// table is created again at once: the holder's next renewal finds no lease
/// and the command is stopped. A store that loses its data breaks the first
/// assumption of DESIGN.md, so a newcomer can take the lock while the old
/// command still runs, until that renewal; the test measures that window.
#[test]
fn outage_store_restarted_empty_holder_notices_at_its_next_renewal() {
    let (moto, t, name, dir, term, running, child) = outage();

    let killed_ns = now_ns();
    signal(moto.pid(), Signal::SIGKILL);
    let Some(_server) = Restarted::start(moto.port, &dir.path().join("moto2.log")) else {
        panic!("could not start moto again on port {}", moto.port);
    };
    let out = run(awsflock(&moto).args(["table-create", "--table", &t]));
    out.assert_exit_as(0, "table-create again:");
    let back_ns = now_ns();
    // A newcomer gets the lock from the empty store at once.
    let newcomer = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    let old_child_alive = alive(child);
    let out = running.wait(Duration::from_secs(30));
    let term_ns = lines(&term)
        .first()
        .and_then(|s| s.trim().parse::<i128>().ok());
    let window = term_ns.map(|ns| secs(ns - back_ns));
    figures(format!(
        "outage_restarted_empty exit={} store_back_after_kill_s={:.2} newcomer_exit={} old_command_alive_at_newcomer={old_child_alive} term_after_store_back_s={} lease_s=6",
        out.code,
        secs(back_ns - killed_ns),
        newcomer.code,
        window.map_or("none".to_string(), |s| format!("{s:.2}"))
    ));
    out.assert_exit(4);
    assert!(!alive(child), "the command {child} still runs");
    let term_ns = term_ns.unwrap_or_else(|| panic!("no SIGTERM:\n{}", out.describe()));
    assert!(
        secs(term_ns - killed_ns) < 6.0,
        "SIGTERM came {:.2} s after the store died (lease 6 s):\n{}",
        secs(term_ns - killed_ns),
        out.describe()
    );
    newcomer.assert_ok();
    release(&moto, &t, &name, newcomer.line());
}

// ------------------------------------------------- injected errors and lost answers

/// A `run --lease-duration LEASE` holder through `proxy`, whose command
/// writes `ready`, sleeps `child_secs` and writes `done`. `during` runs once the
/// command has started; meanwhile a second worker (straight to moto) probes
/// with `acquire --no-wait` every 400 ms. Returns the run's result, the
/// number of probes refused (3) and the probes that got the lock while the
/// command was still inside.
fn holder_through_proxy(
    moto: &Moto,
    proxy: &Proxy,
    table: &str,
    name: &str,
    lease: u32,
    child_secs: u32,
    during: impl FnOnce(),
) -> (Out, usize, Vec<String>) {
    let dir = scratch();
    let (ready, done) = (dir.path().join("ready"), dir.path().join("done"));
    let script = format!(
        "echo $$ > {r}; sleep {child_secs}; echo done > {d}",
        r = p(&ready),
        d = p(&done)
    );
    let mut running = spawn(&mut run_at(
        &proxy.endpoint,
        table,
        name,
        &["-v", "--lease-duration", &lease.to_string(), "-c", &script],
    ));
    let Some(child) = first_line(&ready, Duration::from_secs(30), Some(&mut running)) else {
        let out = running.wait(Duration::from_secs(10));
        panic!("the command never started:\n{}", out.describe());
    };
    let child: i32 = child.trim().parse().expect("child pid");
    let (refused, overlaps) = thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut refused = 0;
            let mut overlaps = Vec::new();
            while alive(child) {
                let out =
                    run(awsflock(moto).args(["acquire", name, "--table", table, "--no-wait"]));
                match out.code {
                    3 => refused += 1,
                    0 => {
                        if alive(child) {
                            overlaps.push(format!(
                                "a second worker got the lock while the holder's command ran:\n{}",
                                out.describe()
                            ));
                        }
                        let _ = run(awsflock(moto).args([
                            "release",
                            name,
                            out.line(),
                            "--table",
                            table,
                        ]));
                        break;
                    }
                    _ => overlaps.push(format!("probe failed:\n{}", out.describe())),
                }
                thread::sleep(Duration::from_millis(400));
            }
            (refused, overlaps)
        });
        during();
        prober.join().expect("prober panicked")
    });
    let out = running.wait(Duration::from_secs(40));
    let _ = std::fs::remove_file(&ready);
    (out, refused, overlaps)
}

/// Waits until `proxy` has seen `n` more `op` requests than `from`.
fn await_more(proxy: &Proxy, op: &str, from: usize, n: usize) -> bool {
    proxy.wait_count(Some(op), from + n, Duration::from_secs(15))
}

#[test]
fn injected_throttling_on_renewals_is_retried() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let (out, refused, overlaps) = holder_through_proxy(&moto, &proxy, &t, &name, 3, 6, || {
        // Throttle one attempt of each of two renewals, a couple of
        // seconds apart.
        for _ in 0..2 {
            let base = proxy.count(Some("UpdateItem"));
            proxy.fault(Some("UpdateItem"), Fault::Throttle, Some(1));
            await_more(&proxy, "UpdateItem", base, 2);
            thread::sleep(Duration::from_millis(1200));
        }
    });
    figures(format!(
        "fault_throttle_renewals exit={} probes_refused={refused} overlaps={} injected={} updateitem_requests={}",
        out.code,
        overlaps.len(),
        kinds(&proxy),
        proxy.count(Some("UpdateItem"))
    ));
    assert!(overlaps.is_empty(), "{overlaps:#?}\n{}", out.describe());
    out.assert_exit_as(
        0,
        "the holder should ride out two throttled renewal attempts:",
    );
    assert_eq!(
        proxy.injected().get("throttle"),
        Some(&2),
        "throttles injected: {}",
        kinds(&proxy)
    );
    assert!(refused >= 1, "no probe was made during the run");
    assert_free(&moto, &t, &name, "the throttled run");
}

#[test]
fn injected_503_window_on_all_operations_is_ridden_out() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let (out, refused, overlaps) = holder_through_proxy(&moto, &proxy, &t, &name, 3, 6, || {
        // Open the window just after a renewal went through, so that the
        // next renewal (due 1 s later) runs into it.
        let base = proxy.count(Some("UpdateItem"));
        await_more(&proxy, "UpdateItem", base, 1);
        thread::sleep(Duration::from_millis(700));
        proxy.fault(None, Fault::Status(503), None);
        thread::sleep(Duration::from_millis(600));
        proxy.clear();
    });
    figures(format!(
        "fault_503_window window_ms=600 exit={} probes_refused={refused} overlaps={} injected={}",
        out.code,
        overlaps.len(),
        kinds(&proxy)
    ));
    assert!(overlaps.is_empty(), "{overlaps:#?}\n{}", out.describe());
    assert!(
        proxy.injected().get("status503").copied().unwrap_or(0) >= 1,
        "no 503 was injected: {}",
        kinds(&proxy)
    );
    out.assert_exit_as(0, "the holder should ride out a 600 ms window of 503s:");
    assert_free(&moto, &t, &name, "the 503 window");
}

/// One renewal answered 1.5 s late. With a 9 s lease (renewal every 3 s)
/// that is well within the slack and the lock is kept. With a 3 s lease it
/// cannot be: the command must be warned (SIGTERM) at deadline - margin -
/// grace, 1.73 s after the last renewal was sent, before the late answer
/// can arrive; so there the holder must fail safe (exit 4, the command
/// stopped, nobody else inside meanwhile) or keep the lock.
#[test]
fn injected_slow_renewal_answer_keeps_the_lock_or_fails_safe() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let mut results = Vec::new();
    for (lease, child) in [(9, 7), (3, 6)] {
        let name = lock();
        let (out, refused, overlaps) =
            holder_through_proxy(&moto, &proxy, &t, &name, lease, child, || {
                let base = proxy.count(Some("UpdateItem"));
                proxy.fault(
                    Some("UpdateItem"),
                    Fault::Delay(Duration::from_millis(1500)),
                    Some(1),
                );
                await_more(&proxy, "UpdateItem", base, 1);
            });
        results.push(format!(
            "lease{lease}s:exit={},probes_refused={refused},overlaps={}",
            out.code,
            overlaps.len()
        ));
        assert!(overlaps.is_empty(), "{overlaps:#?}\n{}", out.describe());
        if lease == 9 {
            out.assert_exit_as(
                0,
                "one renewal answered after 1.5 s (lease 9 s) should not cost the lock:",
            );
        } else {
            assert!(
                out.code == 0 || out.code == 4,
                "lease 3 s, one renewal answered after 1.5 s: expected exit 0 or 4:\n{}",
                out.describe()
            );
        }
        assert_free(&moto, &t, &name, "the slow renewal");
    }
    figures(format!(
        "fault_delay_renewal delay_ms=1500 {} injected={}",
        results.join(" "),
        kinds(&proxy)
    ));
    assert_eq!(proxy.injected().get("delay"), Some(&2), "{}", kinds(&proxy));
}

#[test]
fn injected_lost_renewal_answer_keeps_the_lock() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let (out, refused, overlaps) = holder_through_proxy(&moto, &proxy, &t, &name, 3, 6, || {
        let base = proxy.count(Some("UpdateItem"));
        proxy.fault(Some("UpdateItem"), Fault::DropResponse, Some(1));
        // The dropped renewal and its retry.
        await_more(&proxy, "UpdateItem", base, 2);
    });
    figures(format!(
        "fault_drop_renewal exit={} probes_refused={refused} overlaps={} injected={}",
        out.code,
        overlaps.len(),
        kinds(&proxy)
    ));
    assert!(overlaps.is_empty(), "{overlaps:#?}\n{}", out.describe());
    assert_eq!(proxy.injected().get("drop"), Some(&1), "{}", kinds(&proxy));
    out.assert_exit_as(
        0,
        "a renewal that landed but whose answer was lost must not cost the lock:",
    );
    assert!(refused >= 1, "no probe was made during the run");
    assert_free(&moto, &t, &name, "the lost renewal answer");
}

#[test]
fn injected_lost_acquire_answer_still_grants() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let mut results = Vec::new();

    // A never-used name: the grant is the TransactWriteItems; a released
    // name: the grant is the blind UpdateItem.
    for (case, op) in [("fresh", "TransactWriteItems"), ("released", "UpdateItem")] {
        let name = lock();
        if case == "released" {
            let lease = acquire(&moto, &t, &name, &[]);
            release(&moto, &t, &name, &lease);
        }
        let before = proxy.injected().get("drop").copied().unwrap_or(0);
        proxy.fault(Some(op), Fault::DropResponse, Some(1));
        let out = run(awsflock_at(&proxy.endpoint).args([
            "acquire",
            &name,
            "--table",
            &t,
            "--json",
            "--no-wait",
        ]));
        proxy.clear();
        let dropped = proxy.injected().get("drop").copied().unwrap_or(0) - before;
        assert_eq!(
            dropped,
            1,
            "{case}: the {op} answer was not dropped (wrong request targeted?):\n{}",
            out.describe()
        );
        out.assert_exit_as(
            0,
            &format!("{case}: an acquire whose {op} landed but whose answer was lost:"),
        );
        let v = out.json();
        let lease = v["lease_id"].as_str().unwrap().to_string();
        assert!(v["fence"].as_i64().is_some(), "{case}: no fence: {v}");
        let st = status_json(&moto, &t, &name);
        assert_eq!(st["held"], serde_json::Value::Bool(true), "{case}: {st}");
        let other = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
        assert_eq!(other.code, 3, "{case}: {}", other.describe());
        let rel = run(awsflock(&moto).args(["release", &name, &lease, "--table", &t]));
        rel.assert_exit_as(
            0,
            &format!("{case}: releasing with the lease id from --json:"),
        );
        assert_free(&moto, &t, &name, "the release");
        results.push(format!("{case}:{op}=exit{}", out.code));
    }
    figures(format!(
        "fault_drop_acquire {} injected={}",
        results.join(" "),
        kinds(&proxy)
    ));
}

#[test]
fn injected_lost_release_answer_still_releases() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let lease = acquire(&moto, &t, &name, &[]);
    proxy.fault(Some("UpdateItem"), Fault::DropResponse, Some(1));
    let out = run(awsflock_at(&proxy.endpoint).args(["release", &name, &lease, "--table", &t]));
    proxy.clear();
    figures(format!(
        "fault_drop_release exit={} injected={}",
        out.code,
        kinds(&proxy)
    ));
    assert_eq!(proxy.injected().get("drop"), Some(&1), "{}", kinds(&proxy));
    out.assert_exit_as(0, "a release that landed but whose answer was lost:");
    assert_free(&moto, &t, &name, "the release");
}

/// A break-glass release whose write landed but whose answer was lost: it
/// must still say it released the holder's lease (exit 0), not that the
/// lock is free with nothing to break (exit 3), and leave the lock free.
#[test]
fn injected_lost_force_release_answer_still_reports_the_release() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let _lease = acquire(&moto, &t, &name, &["--lease-duration", "60"]);
    proxy.fault(Some("UpdateItem"), Fault::DropResponse, Some(1));
    let out = run(awsflock_at(&proxy.endpoint)
        .args(["release", &name, "--force", "--yes", "--table", &t])
        .stdin(Stdio::null()));
    proxy.clear();
    figures(format!(
        "fault_drop_force_release exit={} injected={}",
        out.code,
        kinds(&proxy)
    ));
    assert_eq!(proxy.injected().get("drop"), Some(&1), "{}", kinds(&proxy));
    out.assert_exit_as(0, "a force-release that landed but whose answer was lost:");
    assert_free(&moto, &t, &name, "the force-release");
}

// ------------------------------------------------------------ a paused holder

#[test]
fn paused_holder_is_stopped_on_wake_after_losing_the_lock() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let (fence_file, stamps) = (dir.path().join("fence"), dir.path().join("stamps"));
    let script = format!(
        r#"echo "$AWSFLOCK_FENCE" > {f}
while :; do date +%s%N >> {s}; sleep 0.1; done"#,
        f = p(&fence_file),
        s = p(&stamps)
    );
    let mut running = spawn(&mut run_at(
        &moto.endpoint,
        &t,
        &name,
        &["--lease-duration", "3", "-c", &script],
    ));
    let fence = first_line(&fence_file, Duration::from_secs(30), Some(&mut running))
        .expect("the command never started");
    let held_fence: i64 = fence
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("AWSFLOCK_FENCE {fence:?}: {e}"));

    let stopped = Instant::now();
    let _cont = ContOnDrop(running.pid());
    signal(running.pid(), Signal::SIGSTOP);
    let taken = run_timeout(
        awsflock(&moto).args([
            "acquire",
            &name,
            "--table",
            &t,
            "--wait-time",
            "20",
            "--json",
        ]),
        Duration::from_secs(40),
    );
    let taken_after = stopped.elapsed();
    let taken_ns = now_ns();
    if let Some(rest) = Duration::from_secs(6).checked_sub(stopped.elapsed()) {
        thread::sleep(rest);
    }
    let cont_ns = now_ns();
    let stopped_for = stopped.elapsed();
    signal(running.pid(), Signal::SIGCONT);
    let out = running.wait(Duration::from_secs(20));
    let exited_after = secs(now_ns() - cont_ns);

    taken.assert_exit_as(0, "a waiter on a paused holder's lock:");
    let v = taken.json();
    let new_fence = v["fence"].as_i64().unwrap_or_else(|| panic!("{v}"));
    let stamps: Vec<i128> = lines(&stamps)
        .iter()
        .filter_map(|l| l.trim().parse::<i128>().ok())
        .collect();
    let last = stamps.iter().copied().max().unwrap_or(0);
    let last_after_cont = secs(last - cont_ns);
    // What fencing is for: the paused holder's command went on writing
    // while the new holder held the lock.
    let stale = stamps.iter().filter(|&&t| t > taken_ns).count();
    figures(format!(
        "paused_holder stopped_s={:.2} taken_after_stop_s={:.2} fence_paused={held_fence} fence_new={new_fence} stale_writes_after_takeover={stale} exit={} exit_after_cont_s={exited_after:.2} last_stamp_after_cont_s={last_after_cont:.2}",
        stopped_for.as_secs_f64(),
        taken_after.as_secs_f64(),
        out.code
    ));
    assert!(
        new_fence > held_fence,
        "the new holder's fence {new_fence} is not above the paused holder's {held_fence}"
    );
    out.assert_exit(4);
    assert!(
        last_after_cont < 1.5,
        "the paused holder's command wrote {last_after_cont:.2} s after SIGCONT"
    );
    let lease = v["lease_id"].as_str().unwrap().to_string();
    release(&moto, &t, &name, &lease);
}

// ------------------------------------------- the protocol's double-holder edges

/// The store a protocol test runs against: a DynamoDB table or an S3 prefix,
/// both on the same moto server.
enum Store {
    Dynamo(String),
    S3(String),
}

impl Store {
    fn create(moto: &Moto, s3: bool) -> Store {
        if !s3 {
            return Store::Dynamo(table(moto));
        }
        let url = format!(
            "s3://{}/locks/",
            unique_name("bkt").to_lowercase().replace('_', "-")
        );
        let out = run(awsflock(moto).args(["table-create", "--backend", &url]));
        out.assert_exit_as(0, "creating the bucket:");
        Store::S3(url)
    }

    fn args(&self) -> [&str; 2] {
        match self {
            Store::Dynamo(t) => ["--table", t],
            Store::S3(u) => ["--backend", u],
        }
    }

    /// The request a renewal is (as the proxy counts it).
    fn renew_op(&self) -> &'static str {
        match self {
            Store::Dynamo(_) => "UpdateItem",
            Store::S3(_) => "PUT",
        }
    }

    /// Requests of a renewal retry that finds its own lease id on the record.
    fn own_id_requests(&self) -> usize {
        match self {
            Store::Dynamo(_) => 1, // UpdateItem, condition fails, ALL_OLD
            Store::S3(_) => 2,     // PUT If-Match (412), GET
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Store::Dynamo(_) => "dynamodb",
            Store::S3(_) => "s3",
        }
    }
}

/// The last `date +%s%N` stamp in a file, if any.
fn last_stamp(path: &Path) -> Option<i128> {
    lines(path)
        .iter()
        .filter_map(|l| l.trim().parse::<i128>().ok())
        .max()
}

/// A renewal lands but its answer is lost; its retries meet 500s for 6 s;
/// one retry then gets through and finds its own next lease id on the
/// record; then the holder is cut off from the store. The record still
/// carries the expiry of the first attempt, so the holder must stop its
/// command (which ignores SIGTERM) by that expiry, before a competing
/// worker's command starts.
fn lost_renewal_answer_then_cut_off(s3: bool) -> String {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let store = Store::create(&moto, s3);
    let name = lock();
    let dir = scratch();
    let (ready, stamps, started) = (
        dir.path().join("ready"),
        dir.path().join("stamps"),
        dir.path().join("started"),
    );
    let script = format!(
        r#"trap '' TERM; echo $$ > {ready}; while :; do date +%s%N >> {stamps}; sleep 0.05; done"#,
        ready = p(&ready),
        stamps = p(&stamps)
    );
    let mut holder = spawn(
        awsflock_at(&proxy.endpoint)
            .args(["run", &name])
            .args(store.args())
            .args(["-v", "--lease-duration", "30", "-c", &script]),
    );
    let Some(child) = first_line(&ready, Duration::from_secs(30), Some(&mut holder)) else {
        let out = holder.wait(Duration::from_secs(10));
        panic!("the command never started:\n{}", out.describe());
    };
    let child: i32 = child.trim().parse().expect("child pid");
    let waiter = spawn(
        awsflock(&moto)
            .args(["run", &name])
            .args(store.args())
            .args([
                "--wait-time",
                "120",
                "--",
                "sh",
                "-c",
                &format!("date +%s%N > {}", p(&started)),
            ]),
    );
    let op = store.renew_op();
    let base = proxy.count(Some(op));
    proxy.fault(Some(op), Fault::DropResponse, Some(1));
    proxy.fault(None, Fault::Status(500), None);
    assert!(
        proxy.wait_count(Some(op), base + 1, Duration::from_secs(20)),
        "no renewal within 20 s"
    );
    thread::sleep(Duration::from_secs(6));
    let through = proxy.count(None);
    proxy.clear();
    let passed = proxy.wait_count(
        None,
        through + store.own_id_requests(),
        Duration::from_secs(5),
    );
    proxy.fault(None, Fault::Status(500), None);
    assert!(passed, "no renewal retry came after the 500s");
    let out = holder.wait(Duration::from_secs(60));
    let w = waiter.wait(Duration::from_secs(120));
    proxy.clear();
    let _ = killpg(Pid::from_raw(child), Signal::SIGKILL);
    w.assert_exit_as(0, "the competing worker:");
    let last = last_stamp(&stamps).expect("the holder's command wrote no stamp");
    let begun = last_stamp(&started).expect("the competing worker's command never ran");
    let overlap = secs(last - begun);
    let line = format!(
        "{}:holder_exit={},last_holder_stamp_minus_next_start_s={overlap:.2},injected={}",
        store.label(),
        out.code,
        kinds(&proxy)
    );
    assert!(
        last < begun,
        "{line}: the first command still worked {overlap:.2} s into the next holder's lease\n--- holder:\n{}",
        tail(&out.stderr, 40)
    );
    out.assert_exit_as(4, &line);
    line
}

#[test]
fn lost_renewal_answer_does_not_move_the_deadline_past_the_stored_expiry() {
    let results: Vec<String> = thread::scope(|s| {
        let hs: Vec<_> = [false, true]
            .into_iter()
            .map(|s3| s.spawn(move || lost_renewal_answer_then_cut_off(s3)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    figures(format!("lost_renewal_then_cut_off {}", results.join(" ")));
}

/// `faketime` aimed at `endpoint`: our binary with its wall clock read
/// from `stamp_file` (e.g. "+0s", changed while it runs), its monotonic
/// and boot-time clocks untouched. `None` when libfaketime is missing.
fn faketime_file_at(endpoint: &str, stamp_file: &Path) -> Option<Command> {
    let lib = libfaketime()?;
    let mut cmd = awsflock_at(endpoint);
    cmd.env("LD_PRELOAD", lib)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_TIMESTAMP_FILE", stamp_file)
        .env("FAKETIME_NO_CACHE", "1");
    Some(cmd)
}

/// Seconds from the first `op` request after `after` to the one following it.
fn gap_after(proxy: &Proxy, op: &str, after: Instant) -> Option<f64> {
    let times: Vec<Instant> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.at >= after && s.op.ends_with(op))
        .map(|s| s.at)
        .collect();
    (times.len() >= 2).then(|| (times[1] - times[0]).as_secs_f64())
}

#[test]
fn store_clock_jumping_ahead_makes_the_holder_renew_at_once() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let dir = scratch();
    let ready = dir.path().join("ready");
    let script = format!("trap '' TERM; echo $$ > {}; sleep 16", p(&ready));
    // Lease 30 s: renewals every 10 s.
    let mut holder = spawn(&mut run_at(
        &proxy.endpoint,
        &t,
        &name,
        &[
            "-v",
            "--lease-duration",
            "30",
            "--kill-after",
            "1",
            "-c",
            &script,
        ],
    ));
    first_line(&ready, Duration::from_secs(30), Some(&mut holder))
        .expect("the command never started");
    // From now on the store's clock reads 20 s later than before.
    let jumped = Instant::now();
    proxy.shift_date(20);
    let base = proxy.count(Some("UpdateItem"));
    let seen_jump = proxy.wait_count(Some("UpdateItem"), base + 1, Duration::from_secs(15));
    let renewed_again = proxy.wait_count(Some("UpdateItem"), base + 2, Duration::from_secs(3));
    let gap = gap_after(&proxy, "UpdateItem", jumped);
    let out = holder.wait(Duration::from_secs(60));
    figures(format!(
        "store_clock_jump jump_s=20 renewal_after_first_jumped_answer_s={} exit={}",
        gap.map_or("none".into(), |g| format!("{g:.2}")),
        out.code
    ));
    assert!(seen_jump, "no renewal within 15 s:\n{}", out.describe());
    assert!(
        renewed_again,
        "after the store's clock was seen 20 s ahead, the holder did not renew at once (next renewal after {gap:?} s):\n{}",
        tail(&out.stderr, 40)
    );
    assert!(
        gap.is_some_and(|g| g < 2.0),
        "renewal came {gap:?} s after the jump was seen"
    );
    out.assert_ok();
}

/// A waiter that sees the store's clock jump 40 s ahead must not take over
/// a lease it judged live before the jump: the holder (which talks to the
/// store directly and has not seen the jump) goes on renewing on the old
/// clock, and its command still runs. The waiter gets the lock when the
/// holder releases it, not before.
#[test]
fn a_waiter_seeing_the_store_s_clock_jump_ahead_does_not_take_over_early() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let dir = scratch();
    let log = dir.path().join("log");
    // Lease 6 s, renewed every 2 s, held 8 s.
    let holder = spawn(&mut run_at(
        &moto.endpoint,
        &t,
        &name,
        &[
            "--lease-duration",
            "6",
            "--",
            "sh",
            "-c",
            &section(&log, "holder", 8.0),
        ],
    ));
    wait_logged(&log, "begin holder", Duration::from_secs(20));
    let waiter = spawn(&mut run_at(
        &proxy.endpoint,
        &t,
        &name,
        &[
            "--wait-time",
            "40",
            "--",
            "sh",
            "-c",
            &section(&log, "waiter", 0.1),
        ],
    ));
    // The waiter has judged the holder's lease live; then the store's clock
    // reads 40 s later, for the waiter only.
    std::thread::sleep(Duration::from_millis(1500));
    proxy.shift_date(40);
    assert_both_in_turn(holder, waiter, &log);
}

/// awsflock runs on one thread, so a message written to a stderr nobody
/// reads (a full pipe) must not hold it up: here the warning about the
/// store's clock jumping ahead is written while the renewal that saw the
/// jump is answered. The holder must still renew at once, and the warning
/// must come out once stderr is read again.
#[test]
fn store_clock_jump_seen_while_stderr_is_full_still_renews_at_once() {
    use std::io::Read;
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let dir = scratch();
    let ready = dir.path().join("ready");
    let script = format!("echo $$ > {}; sleep 14", p(&ready));
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let filler = writer.try_clone().expect("dup");
    // Lease 30 s: renewals every 10 s; the jump leaves about 10 s of the
    // lease, time enough for a renewal to confirm it before the command's
    // 1 s grace. No -v: stderr stays empty until the warning.
    let mut holder = run_at(
        &proxy.endpoint,
        &t,
        &name,
        &["--lease-duration", "30", "--kill-after", "1", "-c", &script],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(writer)
    .process_group(0)
    .spawn()
    .expect("spawn awsflock");
    let group = holder.id() as i32;
    let _groups = Groups(vec![group]);
    let started = Instant::now();
    while std::fs::read_to_string(&ready).map_or(true, |s| !s.contains('\n')) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the command never started"
        );
        thread::sleep(Duration::from_millis(10));
    }
    fill_pipe(filler);
    thread::sleep(Duration::from_millis(300));
    proxy.shift_date(20);
    let base = proxy.count(Some("UpdateItem"));
    let seen_jump = proxy.wait_count(Some("UpdateItem"), base + 1, Duration::from_secs(15));
    let renewed_again = proxy.wait_count(Some("UpdateItem"), base + 2, Duration::from_secs(3));
    let drained = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = reader.read_to_end(&mut text);
        String::from_utf8_lossy(&text).replace('.', "")
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = holder.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "the holder never ended");
        thread::sleep(Duration::from_millis(20));
    };
    let stderr = drained.join().expect("drain");
    assert!(seen_jump, "no renewal within 15 s:\n{stderr}");
    assert!(
        renewed_again,
        "with stderr full, the holder did not renew at once after the store's clock was seen 20 s ahead:\n{stderr}"
    );
    assert!(
        stderr.contains("store clock jumped ahead"),
        "the warning was lost:\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn wall_clock_jumping_ahead_of_the_boot_clock_makes_the_holder_renew_at_once() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let dir = scratch();
    let (ready, stamp_file) = (dir.path().join("ready"), dir.path().join("faketime"));
    std::fs::write(&stamp_file, "+0s\n").unwrap();
    let Some(mut cmd) = faketime_file_at(&proxy.endpoint, &stamp_file) else {
        skip("libfaketime is not installed (wall-clock jump test)");
        return;
    };
    let script = format!("echo $$ > {}; sleep 8", p(&ready));
    cmd.args([
        "run",
        &name,
        "--table",
        &t,
        "-v",
        "--lease-duration",
        "30",
        "-c",
        &script,
    ]);
    let mut holder = spawn(&mut cmd);
    first_line(&ready, Duration::from_secs(30), Some(&mut holder))
        .expect("the command never started");
    thread::sleep(Duration::from_secs(1));
    let base = proxy.count(Some("UpdateItem"));
    // What a VM paused for two minutes sees when NTP resyncs it: the wall
    // clock jumps, the boot-time clock did not count the pause.
    let jumped = Instant::now();
    std::fs::write(&stamp_file, "+120s\n").unwrap();
    let renewed = proxy.wait_count(Some("UpdateItem"), base + 1, Duration::from_secs(3));
    let took = proxy
        .seen()
        .into_iter()
        .find(|s| s.at >= jumped && s.op.ends_with("UpdateItem"))
        .map(|s| (s.at - jumped).as_secs_f64());
    let out = holder.wait(Duration::from_secs(60));
    figures(format!(
        "wall_clock_jump jump_s=120 renewal_after_jump_s={} exit={}",
        took.map_or("none".into(), |g| format!("{g:.2}")),
        out.code
    ));
    assert!(
        renewed,
        "the wall clock jumped 120 s ahead of the boot-time clock and the holder did not renew within 3 s (renewals every 10 s):\n{}",
        tail(&out.stderr, 40)
    );
    out.assert_ok();
}

/// An administrator or NTP steps the holder's wall clock back an hour
/// while it holds (renewals every 2 s): expiry is judged on the store's
/// clock and the boot-time clock, so the holder keeps its lease, renews on
/// time and exits 0, and a waiter with a true clock gets the lock only
/// after the holder's command ended, and soon after.
#[test]
fn wall_clock_stepped_back_while_holding_neither_loses_nor_frees_the_lock() {
    let (moto, t, name) = fresh_lock();
    let dir = scratch();
    let (ready, stamps, stamp_file) = (
        dir.path().join("ready"),
        dir.path().join("stamps"),
        dir.path().join("faketime"),
    );
    std::fs::write(&stamp_file, "+0s\n").unwrap();
    let Some(mut cmd) = faketime_file_at(&moto.endpoint, &stamp_file) else {
        skip("libfaketime is not installed (wall-clock step test)");
        return;
    };
    // The command's own clock is the true one: its stamps are compared
    // with the waiter's.
    let script = format!(
        "unset LD_PRELOAD; echo $$ > {r}; i=0; while [ $i -lt 80 ]; do date +%s%N >> {s}; sleep 0.1; i=$((i+1)); done",
        r = p(&ready),
        s = p(&stamps)
    );
    cmd.args([
        "run",
        &name,
        "--table",
        &t,
        "--lease-duration",
        "6",
        "-c",
        &script,
    ]);
    let mut holder = spawn(&mut cmd);
    first_line(&ready, Duration::from_secs(30), Some(&mut holder))
        .expect("the command never started");
    thread::sleep(Duration::from_secs(1));
    std::fs::write(&stamp_file, "-3600s\n").unwrap();
    let got = dir.path().join("got");
    let waiter = spawn(
        awsflock(&moto)
            .args(["run", &name, "--table", &t, "--wait-time", "40", "--"])
            .args(["sh", "-c", &format!("date +%s%N > {}", p(&got))]),
    );
    let out = holder.wait(Duration::from_secs(60));
    let w = waiter.wait(Duration::from_secs(60));
    let all = stamps_of(&stamps);
    let last = *all.last().expect("no stamps");
    let got_ns = stamps_of(&got).first().copied();
    figures(format!(
        "wall_clock_step_back step_s=-3600 holder_exit={} waiter_exit={} stamps={} handover_ms={}",
        out.code,
        w.code,
        all.len(),
        got_ns.map_or("none".into(), |g| ((g - last) / 1_000_000).to_string())
    ));
    out.assert_exit_as(
        0,
        "the holder lost its lease after its wall clock stepped back:",
    );
    assert_eq!(all.len(), 80, "the holder's command was cut short");
    w.assert_exit_as(0, "the waiter never ran:");
    let got_ns = got_ns.expect("the waiter's command wrote no stamp");
    assert!(
        got_ns > last,
        "the waiter's command ran {} ms before the holder's last write",
        (last - got_ns) / 1_000_000
    );
    assert!(
        got_ns - last < 5_000_000_000,
        "the lock reached the waiter {} ms after the holder's command ended",
        (got_ns - last) / 1_000_000
    );
}

/// The stamps (ns since the epoch) the command wrote, one per line.
fn stamps_of(path: &Path) -> Vec<i128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `awsflock ARGS` under an optional clock offset.
fn ours(moto: &Moto, skew: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = match skew {
        Some(o) => awsflock_faketime(moto, o).expect("libfaketime"),
        None => awsflock(moto),
    };
    run(cmd.args(args))
}

#[test]
fn no_wait_reclaims_a_dead_holders_lock_within_seconds_under_skew() {
    if which("faketime").is_none() {
        skip("faketime is not installed (skew test)");
        return;
    }
    let moto = Moto::start();
    let t = table(&moto);
    let mut results = Vec::new();
    // (holder's clock, waiter's clock)
    let cases = [
        (None, None),
        (Some("-1h"), Some("+1h")),
        (Some("+1h"), Some("-1h")),
        (Some("-1h"), None),
        (None, Some("+1h")),
    ];
    for (hs, ws) in cases {
        let label = format!("holder{}/waiter{}", hs.unwrap_or("0"), ws.unwrap_or("0"));
        let name = lock();
        // The holder takes a 3 s lease and dies (acquire exits; nobody renews).
        let out = ours(
            &moto,
            hs,
            &["acquire", &name, "--table", &t, "--lease-duration", "3"],
        );
        out.assert_exit_as(0, &format!("{label}: holder:"));
        let acquired = Instant::now();
        let mut reclaimed = None;
        let mut refused = 0;
        while acquired.elapsed() < Duration::from_secs(20) {
            let st = ours(&moto, ws, &["status", &name, "--table", &t, "--json"]);
            st.assert_exit_as(0, &format!("{label}: status:"));
            let held = st.json()["held"] == serde_json::Value::Bool(true);
            let out = ours(&moto, ws, &["acquire", &name, "--table", &t, "--no-wait"]);
            match out.code {
                0 => {
                    reclaimed = Some(acquired.elapsed());
                    release(&moto, &t, &name, out.line());
                    break;
                }
                3 => {
                    refused += 1;
                    assert!(
                        held,
                        "{label}: status said the lock is free, then `acquire --no-wait` said it is held:\n{}",
                        out.describe()
                    );
                }
                _ => panic!("{label}: acquire --no-wait:\n{}", out.describe()),
            }
            thread::sleep(Duration::from_millis(250));
        }
        let reclaimed = reclaimed.unwrap_or_else(|| {
            panic!("{label}: `acquire --no-wait` never took the dead holder's lock in 20 s ({refused} refusals)")
        });
        results.push(format!("{label}:{:.2}s", reclaimed.as_secs_f64()));
        assert!(
            reclaimed >= Duration::from_secs(3),
            "{label}: taken {reclaimed:.2?} after the grant of a 3 s lease"
        );
        assert!(
            reclaimed < Duration::from_secs(8),
            "{label}: took {reclaimed:.2?} to reclaim a 3 s lease"
        );
    }
    figures(format!("no_wait_reclaim lease_s=3 {}", results.join(" ")));
}

/// A holder whose clock is an hour behind writes its first grant stamped an
/// hour in the past; until its rewrite on the store's clock lands, the
/// record looks long expired and another worker may take it. The holder must
/// then not report the grant, and must go on waiting.
#[test]
fn a_grant_taken_over_before_its_rewrite_is_not_reported_and_the_wait_goes_on() {
    if which("faketime").is_none() {
        skip("faketime is not installed (skew test)");
        return;
    }
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    // A released item: the holder's first request is the blind grant.
    let first = acquire(&moto, &t, &name, &[]);
    release(&moto, &t, &name, &first);

    let base = proxy.count(Some("UpdateItem"));
    // The rewrite (the holder's second UpdateItem) reaches the store 3 s late.
    proxy.fault_after(
        Some("UpdateItem"),
        1,
        Fault::Hold(Duration::from_secs(3)),
        Some(1),
    );
    let mut cmd = clock_offset(awsflock_at(&proxy.endpoint), "-1h").expect("libfaketime");
    cmd.args([
        "acquire",
        &name,
        "--table",
        &t,
        "--wait-time",
        "20",
        "--lease-duration",
        "60",
        "--json",
    ]);
    let holder = spawn(&mut cmd);
    assert!(
        proxy.wait_count(Some("UpdateItem"), base + 2, Duration::from_secs(20)),
        "the holder sent no rewrite"
    );
    let taker = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait", "--json"]));
    taker.assert_exit_as(
        0,
        "a record stamped an hour in the past, not yet rewritten, was not taken:",
    );
    let tv = taker.json();
    thread::sleep(Duration::from_millis(500));
    let released = Instant::now();
    release(&moto, &t, &name, tv["lease_id"].as_str().unwrap());
    let out = holder.wait(Duration::from_secs(40));
    let after_release = released.elapsed();
    figures(format!(
        "grant_taken_before_rewrite holder_exit={} taker_fence={} holder_answered_after_release_s={:.2}",
        out.code,
        tv["fence"],
        after_release.as_secs_f64()
    ));
    out.assert_exit_as(
        0,
        "the holder should have kept waiting and taken the lock once released:",
    );
    let hv = out.json();
    assert!(
        hv["fence"].as_i64() > tv["fence"].as_i64(),
        "holder {hv} vs taker {tv}"
    );
    let item = raw_item(&moto, &t, &name);
    assert_eq!(item["lease_id"]["S"], hv["lease_id"], "{item}");
    release(&moto, &t, &name, hv["lease_id"].as_str().unwrap());
}

/// `awsflock renew` from a machine an hour behind must never leave a record
/// that looks expired: the lease it renews was valid, and waiters take an
/// expired-looking record at once.
#[test]
fn renew_from_a_clock_an_hour_behind_never_writes_an_expired_looking_lease() {
    if which("faketime").is_none() {
        skip("faketime is not installed (skew test)");
        return;
    }
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let lease = acquire(&moto, &t, &name, &["--lease-duration", "30"]);
    let base = proxy.count(Some("UpdateItem"));
    // Should the renewal be written twice (stamped on the local clock, then
    // rewritten), the rewrite arrives 3 s late.
    proxy.fault_after(
        Some("UpdateItem"),
        1,
        Fault::Hold(Duration::from_secs(3)),
        Some(1),
    );
    let mut cmd = clock_offset(awsflock_at(&proxy.endpoint), "-1h").expect("libfaketime");
    cmd.args([
        "renew",
        &name,
        &lease,
        "--table",
        &t,
        "--lease-duration",
        "30",
    ]);
    let renewer = spawn(&mut cmd);
    assert!(
        proxy.wait_count(Some("UpdateItem"), base + 1, Duration::from_secs(20)),
        "no renewal"
    );
    thread::sleep(Duration::from_millis(300));
    let exp: i64 = raw_item(&moto, &t, &name)["expiration_time"]["N"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("expiration_time");
    let left = exp - now_epoch();
    let other = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    let out = renewer.wait(Duration::from_secs(30));
    proxy.clear();
    figures(format!(
        "renew_behind_1h expiry_left_after_first_write_s={left} other_no_wait_exit={} renew_exit={} updateitems={}",
        other.code,
        out.code,
        proxy.count(Some("UpdateItem")) - base
    ));
    assert!(
        (20..=35).contains(&left),
        "after the renewal's first write the lease expires in {left} s on the store's clock (30 s asked)"
    );
    other.assert_exit(3);
    out.assert_ok();
    release(&moto, &t, &name, out.line());
}

/// A grant that lands, whose answer is lost and whose SDK retries then meet
/// 500s, fails as a call although the lock is now ours. The acquire must not
/// leave that grant behind as a lock held by nobody for a whole lease: a
/// waiting acquire recognises and reuses it, one that cannot wait gives it
/// back.
#[test]
fn a_grant_that_landed_but_failed_leaves_no_ghost_lock() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let mut results = Vec::new();
    for (case, extra) in [
        ("wait", ["--wait-time", "10"]),
        ("no-wait", ["--no-wait", "-v"]),
    ] {
        let name = lock();
        // A released item: the blind grant (one UpdateItem) takes it.
        let first = acquire(&moto, &t, &name, &[]);
        release(&moto, &t, &name, &first);
        let before = proxy.injected();
        proxy.fault(Some("UpdateItem"), Fault::DropResponse, Some(1));
        proxy.fault(Some("UpdateItem"), Fault::Status(500), Some(2));
        let out = run(awsflock_at(&proxy.endpoint)
            .args(["acquire", &name, "--table", &t, "--json"])
            .args(extra));
        proxy.clear();
        let after = proxy.injected();
        let n =
            |m: &std::collections::HashMap<String, usize>, k: &str| m.get(k).copied().unwrap_or(0);
        assert_eq!(
            (
                n(&after, "drop") - n(&before, "drop"),
                n(&after, "status500") - n(&before, "status500")
            ),
            (1, 2),
            "{case}: faults not injected as planned: {}\n{}",
            kinds(&proxy),
            out.describe()
        );
        let st = status_json(&moto, &t, &name);
        results.push(format!(
            "{case}:exit={},held_after={}",
            out.code, st["held"]
        ));
        if case == "wait" {
            assert_eq!(out.code, 0, "{case}: {}", out.describe());
            let lease = out.json()["lease_id"].as_str().unwrap().to_string();
            assert_eq!(st["held"], serde_json::Value::Bool(true), "{st}");
            assert_eq!(st["lease_id"], lease.as_str(), "{st}");
            release(&moto, &t, &name, &lease);
        } else if out.code == 0 {
            let lease = out.json()["lease_id"].as_str().unwrap().to_string();
            release(&moto, &t, &name, &lease);
        } else {
            assert_eq!(
                st["held"],
                serde_json::Value::Bool(false),
                "{case}: acquire failed ({}) but left the lock held: {st}\n{}",
                out.code,
                out.describe()
            );
        }
        assert_free(&moto, &t, &name, case);
    }
    figures(format!("ghost_grant {}", results.join(" ")));
}

/// `run`'s release lands, its answer is lost and the SDK's retries meet
/// 500s; the next attempt (a new call) finds the lease gone. The lock is
/// free, as asked: no warning, and nothing left held.
#[test]
fn a_release_that_landed_but_failed_is_not_reported_as_a_failure() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let t = table(&moto);
    let name = lock();
    let dir = scratch();
    let ready = dir.path().join("ready");
    let script = format!("echo $$ > {}; sleep 1", p(&ready));
    let mut running = spawn(&mut run_at(
        &proxy.endpoint,
        &t,
        &name,
        &["-v", "--lease-duration", "30", "-c", &script],
    ));
    first_line(&ready, Duration::from_secs(30), Some(&mut running))
        .expect("the command never started");
    // The next UpdateItem is the release (renewals come every 10 s).
    proxy.fault(Some("UpdateItem"), Fault::DropResponse, Some(1));
    proxy.fault(Some("UpdateItem"), Fault::Status(500), Some(2));
    let out = running.wait(Duration::from_secs(60));
    proxy.clear();
    figures(format!(
        "release_landed_then_failed exit={} injected={}",
        out.code,
        kinds(&proxy)
    ));
    assert_eq!(proxy.injected().get("drop"), Some(&1), "{}", kinds(&proxy));
    out.assert_ok();
    assert!(
        !out.stderr.contains("could not release"),
        "a release that landed was reported as failed:\n{}",
        out.describe()
    );
    assert_free(&moto, &t, &name, "the release");
}
