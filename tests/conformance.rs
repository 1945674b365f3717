//! The behaviour every store must have, written once and run against each.
//!
//! A store joins by implementing [`Fixture`] (start what it needs, give a
//! command aimed at it) and adding one `conformance!` line at the bottom.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A running store and how to aim the binary at it.
trait Fixture {
    /// Starts the store (server, bucket, table, directory) from nothing.
    fn start() -> Self;
    /// The binary with a clean environment and `AWSFLOCK_BACKEND` set.
    fn cmd(&self) -> Command;
    /// Whether lease ids are UUIDs replaced at each renewal. etcd's are etcd
    /// lease ids (hex), kept by a renewal (a keep-alive of the same lease).
    fn rotates_lease_ids(&self) -> bool {
        true
    }
}

struct DynamoDb {
    moto: Moto,
    table: String,
}

impl Fixture for DynamoDb {
    fn start() -> Self {
        let moto = Moto::start();
        let table = table(&moto);
        DynamoDb { moto, table }
    }
    fn cmd(&self) -> Command {
        let mut c = awsflock(&self.moto);
        c.env("AWSFLOCK_BACKEND", format!("dynamodb://{}", self.table));
        c
    }
}

struct S3 {
    moto: Moto,
    url: String,
}

impl Fixture for S3 {
    fn start() -> Self {
        let moto = Moto::start();
        let url = format!(
            "s3://{}/locks/",
            unique_name("bkt").to_lowercase().replace('_', "-")
        );
        let out = run(awsflock(&moto).args(["table-create", "--backend", &url]));
        out.assert_exit_as(0, "creating the bucket failed:");
        S3 { moto, url }
    }
    fn cmd(&self) -> Command {
        let mut c = awsflock(&self.moto);
        c.env("AWSFLOCK_BACKEND", &self.url);
        c
    }
}

struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture for File {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("locks");
        let f = File { _dir: dir, path };
        let out = run(f.cmd().arg("table-create"));
        out.assert_exit_as(0, "creating the directory failed:");
        f
    }
    fn cmd(&self) -> Command {
        // No server: the endpoint points nowhere, to prove it is not used.
        let mut c = awsflock_at(&dead_endpoint());
        c.env(
            "AWSFLOCK_BACKEND",
            format!("file://{}", self.path.display()),
        );
        c
    }
}

#[cfg(feature = "etcd")]
struct Etcd {
    _etcd: common::etcd::Etcd,
    url: String,
}

#[cfg(feature = "etcd")]
impl Fixture for Etcd {
    fn start() -> Self {
        let etcd = common::etcd::Etcd::start()
            .expect("the etcd conformance tests need /usr/bin/etcd: run scripts/setup.sh");
        let url = format!("etcd://{}/{}/", etcd.endpoint(), unique_name("locks"));
        Etcd { _etcd: etcd, url }
    }
    fn cmd(&self) -> Command {
        // The AWS endpoint points nowhere, to prove it is not used.
        let mut c = awsflock_at(&dead_endpoint());
        c.env("AWSFLOCK_BACKEND", &self.url);
        c
    }
    fn rotates_lease_ids(&self) -> bool {
        false
    }
}

/// The tests, generic over the store.
mod cases {
    use super::*;

    fn acquire_json(f: &impl Fixture, name: &str, extra: &[&str]) -> (String, i64) {
        let out = run(f.cmd().args(["acquire", name, "--json"]).args(extra));
        out.assert_exit_as(0, "acquire failed:");
        let v = out.json();
        (
            v["lease_id"].as_str().expect("lease_id").to_string(),
            v["fence"].as_i64().expect("fence"),
        )
    }

    fn fence_of_run(f: &impl Fixture, name: &str) -> i64 {
        let out = run(f
            .cmd()
            .args(["run", name, "--", "sh", "-c", "echo $AWSFLOCK_FENCE"]));
        out.assert_exit_as(0, "run failed:");
        out.line()
            .parse()
            .unwrap_or_else(|_| panic!("AWSFLOCK_FENCE not an integer:\n{}", out.describe()))
    }

    fn held(f: &impl Fixture, name: &str) -> bool {
        let out = run(f.cmd().args(["status", name, "--json"]));
        out.assert_exit_as(0, "status failed:");
        out.json()["held"].as_bool().expect("held is a bool")
    }

    pub fn lease_cycle_and_exit_codes(f: &impl Fixture) {
        let name = unique_name("cycle");
        let out = run(f.cmd().args(["acquire", &name]));
        out.assert_ok();
        let first = out.line().to_string();
        if f.rotates_lease_ids() {
            assert_uuid(&first);
        }
        assert_eq!(run(f.cmd().args(["acquire", &name, "--no-wait"])).code, 3);
        let out = run(f
            .cmd()
            .args(["renew", &name, &first, "--lease-duration", "90"]));
        out.assert_ok();
        let second = out.line().to_string();
        if f.rotates_lease_ids() {
            assert_uuid(&second);
            assert_ne!(first, second, "renew must hand out a new lease id");
            assert_eq!(
                run(f.cmd().args(["renew", &name, &first])).code,
                3,
                "the old id is not held"
            );
            assert_eq!(
                run(f.cmd().args(["release", &name, &first])).code,
                3,
                "the old id is not held"
            );
        } else {
            assert_eq!(first, second, "renew keeps the lease id");
        }
        assert!(held(f, &name));
        assert_eq!(run(f.cmd().args(["release", &name, &second])).code, 0);
        assert!(!held(f, &name));
        assert_eq!(
            run(f.cmd().args(["release", &name, &second])).code,
            3,
            "released twice"
        );
        let out = run(f.cmd().args(["acquire", &name, "--no-wait"]));
        out.assert_exit_as(0, "free again after release:");
        // A lock nobody ever took has no lease to renew or release.
        let never = unique_name("never");
        let id = "00000000-0000-4000-8000-000000000000";
        for verb in ["renew", "release"] {
            let out = run(f.cmd().args([verb, &never, id]));
            out.assert_exit_as(3, &format!("{verb} of a never-acquired lock:"));
            assert_clean_error(&out);
        }
    }

    pub fn run_passes_exit_codes_through_and_releases(f: &impl Fixture) {
        let name = unique_name("codes");
        for (args, want) in [
            (vec!["sh", "-c", "exit 0"], 0),
            (vec!["sh", "-c", "exit 7"], 7),
            (vec!["sh", "-c", "kill -TERM $$"], 143),
            (vec!["/nonexistent/awsflock-test-cmd"], 127),
        ] {
            let out = run(f.cmd().args(["run", &name, "--"]).args(&args));
            assert_eq!(out.code, want, "{args:?}:\n{}", out.describe());
            assert!(!held(f, &name), "{args:?} left the lock held");
        }
    }

    pub fn fencing_tokens_strictly_increase(f: &impl Fixture) {
        let name = unique_name("fence");
        let mut last = 0;
        for _ in 0..3 {
            let fence = fence_of_run(f, &name);
            assert!(fence > last, "fence {fence} after {last}");
            last = fence;
        }
        let (id, fence) = acquire_json(f, &name, &[]);
        assert!(fence > last, "acquire fence {fence} after {last}");
        let out = run(f.cmd().args(["status", &name, "--json"]));
        assert_eq!(
            out.json()["fence"].as_i64(),
            Some(fence),
            "status shows the holder's fence"
        );
        assert_eq!(run(f.cmd().args(["release", &name, &id])).code, 0);
        // A lease left to expire is taken over with a higher token.
        let (_, expiring) = acquire_json(f, &name, &["--lease-duration", "1"]);
        let (_, taken) = acquire_json(f, &name, &["--wait-time", "30"]);
        assert!(taken > expiring, "takeover fence {taken} after {expiring}");
    }

    pub fn contention_never_overlaps(f: &impl Fixture) {
        let name = unique_name("contend");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let script = format!(
            "echo \"begin $(date +%s%N)\" >> {log}; sleep 0.05; echo \"end $(date +%s%N)\" >> {log}",
            log = log.display()
        );
        // Twelve runs start at once and queue for the lock.
        let workers: Vec<_> = (0..12)
            .map(|_| {
                spawn(f.cmd().args([
                    "-q",
                    "run",
                    &name,
                    "--wait-time",
                    "60",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ]))
            })
            .collect();
        for w in workers {
            let out = w.wait(Duration::from_secs(90));
            out.assert_ok();
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let events: Vec<(&str, u128)> = text
            .lines()
            .map(|l| {
                let (k, t) = l.split_once(' ').expect("log line");
                (k, t.parse().expect("timestamp"))
            })
            .collect();
        assert_eq!(events.len(), 24, "12 sections, begin and end each:\n{text}");
        let mut open = false;
        let mut last = 0;
        for (k, t) in events {
            assert!(t >= last, "log out of order:\n{text}");
            last = t;
            match k {
                "begin" => {
                    assert!(!open, "two sections overlapped:\n{text}");
                    open = true;
                }
                _ => {
                    assert!(open, "end without begin:\n{text}");
                    open = false;
                }
            }
        }
    }

    pub fn renewal_keeps_a_long_run_exclusive(f: &impl Fixture) {
        let name = unique_name("renew");
        let long = spawn(
            f.cmd()
                .args(["run", &name, "--lease-duration", "2", "--", "sleep", "4"]),
        );
        let started = Instant::now();
        while !held(f, &name) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the long run never took the lock"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        while started.elapsed() < Duration::from_millis(3500) {
            let out = run(f.cmd().args(["acquire", &name, "--no-wait"]));
            out.assert_exit_as(3, "taken while renewed:");
            std::thread::sleep(Duration::from_millis(300));
        }
        let out = long.wait(Duration::from_secs(20));
        out.assert_ok();
        assert!(!held(f, &name));
    }

    pub fn losing_the_lease_stops_the_command(f: &impl Fixture) {
        let name = unique_name("lost");
        let holder = spawn(f.cmd().args([
            "run",
            &name,
            "--lease-duration",
            "3",
            "--",
            "sh",
            "-c",
            "trap 'exit 9' TERM; while :; do sleep 0.1; done",
        ]));
        let started = Instant::now();
        while !held(f, &name) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never took the lock"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = run(f.cmd().args(["release", &name, "--force", "--yes"]));
        out.assert_exit_as(0, "force release:");
        let out = holder.wait(Duration::from_secs(10));
        out.assert_exit_as(4, "the holder must report the lost lease:");
        assert!(out.stderr.contains("lost"), "{}", out.describe());
    }

    pub fn bad_input_is_a_usage_error(f: &impl Fixture) {
        for args in [
            vec!["acquire".to_string(), String::new()],
            vec!["acquire".to_string(), "x".repeat(1025)],
            vec![
                "acquire".to_string(),
                "ok".to_string(),
                "--lease-duration".to_string(),
                "0".to_string(),
            ],
            vec![
                "acquire".to_string(),
                "ok".to_string(),
                "--lease-duration".to_string(),
                "soon".to_string(),
            ],
            vec!["run".to_string(), "ok".to_string()],
        ] {
            let out = run(f.cmd().args(&args));
            out.assert_exit_as(2, &format!("{args:?}:"));
            assert_clean_error(&out);
        }
    }

    pub fn status_and_list_show_who_and_why(f: &impl Fixture) {
        let name = unique_name("who");
        let out = run(f.cmd().args([
            "acquire",
            &name,
            "--owner",
            "alice@ci-7",
            "--reason",
            "terraform apply prod",
        ]));
        out.assert_ok();
        let v = run(f.cmd().args(["status", &name, "--json"])).json();
        assert_eq!(v["name"], name.as_str());
        assert_eq!(v["held"], true);
        assert_eq!(v["owner"], "alice@ci-7");
        assert_eq!(v["reason"], "terraform apply prod");
        assert!(v["fence"].as_i64().is_some());
        for k in ["acquired_at", "expires_at"] {
            let t = v[k].as_str().unwrap_or_else(|| panic!("{k} missing: {v}"));
            assert!(
                t.ends_with('Z') && t.contains('T'),
                "{k} is not RFC 3339: {t}"
            );
        }
        let list = run(f.cmd().args(["list", "--json"])).json();
        let found: Vec<_> = list
            .as_array()
            .expect("array")
            .iter()
            .filter(|l| l["name"] == name.as_str())
            .collect();
        assert_eq!(found.len(), 1, "{list}");
        assert_eq!(found[0]["reason"], "terraform apply prod");
        let free = unique_name("free");
        let v = run(f.cmd().args(["status", &free, "--json"])).json();
        assert_eq!(v["held"], false);
    }
}

/// Semaphores (`--max-holders N`) and shared locks (`--shared`): the stores
/// that keep them.
mod slot_cases {
    use super::*;

    /// Runs `n` workers at once, each `run NAME ARGS -- sh -c` logging
    /// `begin KIND t` and `end KIND t`; returns the log's events in order.
    fn logged_runs(
        f: &impl Fixture,
        name: &str,
        workers: &[(&str, Vec<&str>, f64, Duration)],
    ) -> Vec<(String, String, u128)> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut running = Vec::new();
        for (kind, args, hold, delay) in workers {
            std::thread::sleep(*delay);
            let script = format!(
                "echo \"begin {kind} $(date +%s%N)\" >> {log}; sleep {hold}; echo \"end {kind} $(date +%s%N)\" >> {log}",
                log = log.display()
            );
            running.push(spawn(
                f.cmd()
                    .args(["-q", "run", name, "--wait-time", "60"])
                    .args(args)
                    .args(["--", "sh", "-c", &script]),
            ));
        }
        for w in running {
            let out = w.wait(Duration::from_secs(120));
            out.assert_ok();
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let mut events: Vec<(String, String, u128)> = text
            .lines()
            .map(|l| {
                let mut p = l.split(' ');
                (
                    p.next().unwrap().to_string(),
                    p.next().unwrap().to_string(),
                    p.next().unwrap().parse().expect("timestamp"),
                )
            })
            .collect();
        events.sort_by_key(|e| e.2);
        assert_eq!(
            events.len(),
            workers.len() * 2,
            "every section ran:\n{text}"
        );
        events
    }

    /// The most sections of `kinds` open at once.
    fn most_at_once(events: &[(String, String, u128)], kinds: &[&str]) -> usize {
        let (mut open, mut most) = (0usize, 0usize);
        for (e, k, _) in events {
            if !kinds.contains(&k.as_str()) {
                continue;
            }
            if e == "begin" {
                open += 1;
                most = most.max(open);
            } else {
                open -= 1;
            }
        }
        most
    }

    pub fn a_semaphore_admits_n_at_once_and_no_more(f: &impl Fixture) {
        let name = unique_name("sem");
        let w: Vec<_> = (0..7)
            .map(|_| ("s", vec!["--max-holders", "3"], 1.0, Duration::ZERO))
            .collect();
        let events = logged_runs(f, &name, &w);
        let most = most_at_once(&events, &["s"]);
        assert_eq!(most, 3, "at most 3 at once, and 3 reached: {events:?}");
    }

    pub fn readers_share_and_a_writer_excludes_everyone(f: &impl Fixture) {
        let name = unique_name("rw");
        let ms = Duration::from_millis;
        let w = vec![
            ("r", vec!["--shared"], 2.0, Duration::ZERO),
            ("r", vec!["--shared"], 2.0, Duration::ZERO),
            ("r", vec!["--shared"], 2.0, Duration::ZERO),
            // A writer asks while the readers hold, then a later reader.
            ("w", vec![], 0.5, ms(1000)),
            ("late", vec!["--shared"], 0.2, ms(700)),
        ];
        let events = logged_runs(f, &name, &w);
        assert!(
            most_at_once(&events, &["r"]) >= 2,
            "readers must share: {events:?}"
        );
        let at = |e: &str, k: &str| events.iter().find(|x| x.0 == e && x.1 == k).unwrap().2;
        let (wb, we) = (at("begin", "w"), at("end", "w"));
        for (e, k, t) in &events {
            if k != "w" {
                assert!(
                    *t <= wb || *t >= we,
                    "{e} {k} inside the writer's section: {events:?}"
                );
            }
        }
        assert!(
            at("begin", "late") >= we,
            "a reader that came after a waiting writer goes after it: {events:?}"
        );
    }

    pub fn holders_of_a_semaphore_are_shown_renewed_and_released_by_lease_id(f: &impl Fixture) {
        let name = unique_name("semid");
        let take = |extra: &[&str]| {
            run(f
                .cmd()
                .args(["acquire", &name, "--max-holders", "2", "--json"])
                .args(extra))
        };
        let a = take(&["--owner", "alice"]);
        a.assert_ok();
        let b = take(&["--owner", "bob"]);
        b.assert_ok();
        let (a, b) = (a.json(), b.json());
        assert!(b["fence"].as_i64() > a["fence"].as_i64(), "{a} {b}");
        let third = take(&["--no-wait"]);
        third.assert_exit_as(3, "a third holder of 2:");
        let v = run(f.cmd().args(["status", &name, "--json"])).json();
        assert_eq!(v["held"], true, "{v}");
        assert_eq!(v["max_holders"], 2, "{v}");
        let owners: Vec<&str> = v["holders"]
            .as_array()
            .unwrap_or_else(|| panic!("holders: {v}"))
            .iter()
            .map(|h| h["owner"].as_str().unwrap())
            .collect();
        assert_eq!(owners.len(), 2, "{v}");
        assert!(owners.contains(&"alice") && owners.contains(&"bob"), "{v}");
        let text = run(f.cmd().args(["status", &name])).stdout;
        assert!(text.contains("2 of 2"), "{text}");
        let a_id = a["lease_id"].as_str().unwrap();
        let out = run(f.cmd().args(["renew", &name, a_id]));
        out.assert_exit_as(0, "renew one holder:");
        let a2 = out.line().to_string();
        if f.rotates_lease_ids() {
            assert_ne!(a2, a_id);
            assert_eq!(run(f.cmd().args(["release", &name, a_id])).code, 3);
        }
        assert_eq!(run(f.cmd().args(["release", &name, &a2])).code, 0);
        let out = take(&["--no-wait"]);
        out.assert_exit_as(0, "a freed slot is free:");
        let c_id = out.json()["lease_id"].as_str().unwrap().to_string();
        for id in [b["lease_id"].as_str().unwrap(), &c_id] {
            assert_eq!(run(f.cmd().args(["release", &name, id])).code, 0);
        }
        let v = run(f.cmd().args(["status", &name, "--json"])).json();
        assert_eq!(v["held"], false, "{v}");
        // Free again: a plain lock may take the name.
        assert_eq!(run(f.cmd().args(["acquire", &name, "--no-wait"])).code, 0);
    }

    pub fn a_different_max_holders_is_a_usage_error(f: &impl Fixture) {
        let name = unique_name("mismatch");
        let out = run(f
            .cmd()
            .args(["acquire", &name, "--max-holders", "2", "--json"]));
        out.assert_ok();
        let id = out.json()["lease_id"].as_str().unwrap().to_string();
        for extra in [
            vec!["--max-holders", "3"],
            vec![],
            vec!["--shared"],
            vec!["--max-holders", "1"],
        ] {
            let out = run(f
                .cmd()
                .args(["acquire", &name, "--wait-time", "5"])
                .args(&extra));
            out.assert_exit_as(2, &format!("{extra:?}:"));
            assert_clean_error(&out);
            assert!(
                out.stderr.contains("--max-holders 2"),
                "names the holders' N:\n{}",
                out.describe()
            );
        }
        assert_eq!(run(f.cmd().args(["release", &name, &id])).code, 0);
        let out = run(f
            .cmd()
            .args(["acquire", &name, "--max-holders", "3", "--no-wait"]));
        out.assert_exit_as(0, "N may change once nobody holds:");
        for bad in [
            vec!["--max-holders", "0"],
            vec!["--max-holders", "x"],
            vec!["--max-holders", "2", "--shared"],
        ] {
            let out = run(f.cmd().args(["acquire", &name]).args(&bad));
            out.assert_exit_as(2, &format!("{bad:?}:"));
            assert_clean_error(&out);
        }
    }

    pub fn a_dead_holders_slot_is_taken_after_its_lease(f: &impl Fixture) {
        let name = unique_name("semdead");
        for _ in 0..2 {
            // `acquire` does not renew: these two leases just run out.
            let out = run(f.cmd().args([
                "acquire",
                &name,
                "--max-holders",
                "2",
                "--lease-duration",
                "2",
            ]));
            out.assert_ok();
        }
        let started = Instant::now();
        let out = run(f
            .cmd()
            .args(["acquire", &name, "--max-holders", "2", "--wait-time", "30"]));
        out.assert_ok();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1000) && waited < Duration::from_secs(20),
            "waited {waited:?} for a slot whose lease ran out"
        );
    }
}

/// First come, first served for plain locks: the stores where waiters
/// queue (DynamoDB and S3; etcd by its own recipe).
mod fifo_cases {
    use super::*;

    /// Starts `run NAME -- sh -c 'echo TAG >> log; sleep HOLD'`.
    fn section(
        f: &impl Fixture,
        name: &str,
        log: &std::path::Path,
        tag: &str,
        hold: f64,
    ) -> Running {
        spawn(f.cmd().args([
            "-q",
            "run",
            name,
            "--wait-time",
            "90",
            "--",
            "sh",
            "-c",
            &format!("echo {tag} >> {}; sleep {hold}", log.display()),
        ]))
    }

    fn wait_for_holder(f: &impl Fixture, name: &str) {
        let t = Instant::now();
        loop {
            let out = run(f.cmd().args(["status", name, "--json"]));
            if out.json()["held"] == true {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "nobody took {name}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn waiters_are_served_in_order_and_a_returning_holder_goes_last(f: &impl Fixture) {
        let name = unique_name("fifo");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("order");
        let first = section(f, &name, &log, "A1", 2.0);
        wait_for_holder(f, &name);
        let mut waiters = Vec::new();
        for tag in ["W1", "W2", "W3"] {
            waiters.push(section(f, &name, &log, tag, 0.3));
            // Each is queued before the next asks.
            std::thread::sleep(Duration::from_millis(400));
        }
        let out = first.wait(Duration::from_secs(30));
        out.assert_ok();
        // The worker that just released asks again at once.
        let again = section(f, &name, &log, "A2", 0.1);
        for w in waiters.into_iter().chain([again]) {
            let out = w.wait(Duration::from_secs(60));
            out.assert_ok();
        }
        let order = std::fs::read_to_string(&log).unwrap();
        let order: Vec<&str> = order.lines().collect();
        assert_eq!(order, ["A1", "W1", "W2", "W3", "A2"], "served out of turn");
    }

    /// `status --json` lists the waiters in line, in the order they came,
    /// while the holder runs.
    pub fn status_shows_each_waiter_in_line(f: &impl Fixture) {
        let name = unique_name("line");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("order");
        let holder = section(f, &name, &log, "H", 4.0);
        wait_for_holder(f, &name);
        let first = section(f, &name, &log, "W1", 0.1);
        std::thread::sleep(Duration::from_millis(500));
        let second = section(f, &name, &log, "W2", 0.1);
        let t = Instant::now();
        let queue = loop {
            let out = run(f.cmd().args(["status", &name, "--json"]));
            let json = out.json();
            let queue = json["queue"].as_array().cloned().unwrap_or_default();
            if queue.len() == 2 || t.elapsed() > Duration::from_secs(3) {
                assert_eq!(json["waiting"], 2, "{json}");
                break queue;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let positions: Vec<_> = queue.iter().map(|w| w["position"].as_u64()).collect();
        assert_eq!(positions, [Some(1), Some(2)], "{queue:?}");
        assert!(queue.iter().all(|w| w["shared"] == false), "{queue:?}");
        for p in [holder, first, second] {
            p.wait(Duration::from_secs(30)).assert_ok();
        }
        let order = std::fs::read_to_string(&log).unwrap();
        assert_eq!(order.lines().collect::<Vec<_>>(), ["H", "W1", "W2"]);
    }

    pub fn a_dead_waiter_leaves_the_queue(f: &impl Fixture) {
        let name = unique_name("fifodead");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("order");
        let holder = section(f, &name, &log, "H", 1.0);
        wait_for_holder(f, &name);
        let doomed = section(f, &name, &log, "DEAD", 0.1);
        std::thread::sleep(Duration::from_millis(600));
        signal(doomed.pid(), nix::sys::signal::Signal::SIGKILL);
        let out = doomed.wait(Duration::from_secs(10));
        out.assert_exit(137);
        let started = Instant::now();
        let next = section(f, &name, &log, "NEXT", 0.1);
        assert_eq!(holder.wait(Duration::from_secs(30)).code, 0);
        let out = next.wait(Duration::from_secs(60));
        out.assert_ok();
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(30),
            "the dead waiter's place held the queue for {waited:?}"
        );
        let order = std::fs::read_to_string(&log).unwrap();
        assert_eq!(order.lines().collect::<Vec<_>>(), ["H", "NEXT"]);
    }
}

/// `release --force` per kind of holder: a `run` is asked to stop and the
/// lock handed on after it confirmed (or its lease ended), a lease nothing
/// supervises is freed at once, and `--immediately` breaks glass.
mod force_cases {
    use super::*;

    fn held(f: &impl Fixture, name: &str) -> bool {
        let out = run(f.cmd().args(["status", name, "--json"]));
        out.assert_exit_as(0, "status failed:");
        out.json()["held"].as_bool().expect("held is a bool")
    }

    fn wait_held(f: &impl Fixture, name: &str) {
        let started = Instant::now();
        while !held(f, name) {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{name} was never taken"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `run` holder ticking, a `run` waiter queued behind it, and
    /// `release --force --yes` (with `extra`): the release's outcome and
    /// how long it took, the holder's and the waiter's, and the ticks of
    /// each.
    fn holder_waiter_force(f: &impl Fixture, extra: &[&str]) -> Forced {
        let name = unique_name("revoke");
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("ticks");
        let holder = spawn(
            f.cmd()
                .args(["run", &name, "--lease-duration", "5", "--"])
                .args(["sh", "-c", &ticking(&log, "H", 0)]),
        );
        wait_held(f, &name);
        let waiter = spawn(
            f.cmd()
                .args(["run", &name, "--lease-duration", "5", "--"])
                .args(["sh", "-c", &ticking(&log, "W", 5)]),
        );
        // Let the waiter queue behind the holder, and the holder tick.
        std::thread::sleep(Duration::from_millis(800));
        let started = Instant::now();
        let release = run_timeout(
            f.cmd()
                .args(["release", &name, "--force", "--yes"])
                .args(extra),
            Duration::from_secs(30),
        );
        let took = started.elapsed();
        let holder = holder.wait(Duration::from_secs(30));
        let waiter = waiter.wait(Duration::from_secs(30));
        Forced {
            release,
            took,
            holder,
            waiter,
            h: stamps(&log, "H"),
            w: stamps(&log, "W"),
        }
    }

    struct Forced {
        release: Out,
        took: Duration,
        holder: Out,
        waiter: Out,
        h: Vec<u128>,
        w: Vec<u128>,
    }

    impl Forced {
        fn assert_no_overlap(&self) {
            let (Some(last_h), Some(first_w)) = (self.h.iter().max(), self.w.iter().min()) else {
                panic!(
                    "both commands must have run: {} and {} ticks\nholder:\n{}\nwaiter:\n{}",
                    self.h.len(),
                    self.w.len(),
                    self.holder.describe(),
                    self.waiter.describe()
                );
            };
            assert!(
                last_h < first_w,
                "the waiter's command started {:.3}s before the holder's stopped\nrelease:\n{}\nholder:\n{}",
                (*last_h as f64 - *first_w as f64) / 1e9,
                self.release.describe(),
                self.holder.describe()
            );
        }

        fn assert_holder_stopped_by_force(&self) {
            assert_eq!(self.holder.code, 4, "holder:\n{}", self.holder.describe());
            assert!(
                self.holder.stderr.contains("released by force"),
                "the holder must say why it stopped:\n{}",
                self.holder.describe()
            );
            assert_eq!(self.waiter.code, 0, "waiter:\n{}", self.waiter.describe());
        }
    }

    pub fn a_run_holder_stops_before_the_lock_is_handed_on(f: &impl Fixture) {
        let r = holder_waiter_force(f, &[]);
        eprintln!(
            "the forced release returned after {:?}; the holder's last tick came {:.3}s before the waiter's first",
            r.took,
            (*r.w.iter().min().unwrap_or(&0) as f64 - *r.h.iter().max().unwrap_or(&0) as f64) / 1e9
        );
        assert_eq!(r.release.code, 0, "release:\n{}", r.release.describe());
        r.assert_holder_stopped_by_force();
        r.assert_no_overlap();
        assert!(
            r.took < Duration::from_secs(10),
            "the release waited {:?}",
            r.took
        );
    }

    pub fn no_wait_returns_at_once_and_still_hands_on_safely(f: &impl Fixture) {
        let r = holder_waiter_force(f, &["--no-wait"]);
        assert_eq!(r.release.code, 0, "release:\n{}", r.release.describe());
        assert!(
            r.took < Duration::from_secs(3),
            "--no-wait took {:?}:\n{}",
            r.took,
            r.release.describe()
        );
        r.assert_holder_stopped_by_force();
        r.assert_no_overlap();
    }

    pub fn an_unsupervised_lease_is_freed_at_once(f: &impl Fixture) {
        let name = unique_name("unsup");
        let out = run(f.cmd().args(["acquire", &name, "--lease-duration", "60"]));
        out.assert_ok();
        let started = Instant::now();
        let out = run(f.cmd().args(["release", &name, "--force", "--yes"]));
        out.assert_ok();
        assert!(
            out.stderr.contains("may still be working"),
            "the release must warn that the holder may go on:\n{}",
            out.describe()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let out = run(f.cmd().args(["acquire", &name, "--no-wait"]));
        out.assert_exit_as(0, "free at once:");
    }

    pub fn immediately_breaks_glass_for_a_run_holder(f: &impl Fixture) {
        let name = unique_name("glass");
        let holder = spawn(f.cmd().args([
            "run",
            &name,
            "--lease-duration",
            "30",
            "--",
            "sh",
            "-c",
            "while :; do sleep 0.1; done",
        ]));
        wait_held(f, &name);
        let out = run(f
            .cmd()
            .args(["release", &name, "--force", "--immediately", "--yes"]));
        out.assert_ok();
        assert!(
            out.stderr.contains("overlap"),
            "the break-glass release must name the overlap:\n{}",
            out.describe()
        );
        let out = run(f.cmd().args(["acquire", &name, "--no-wait"]));
        out.assert_exit_as(0, "free at once:");
        let out = holder.wait(Duration::from_secs(30));
        out.assert_exit(4);
    }
}

/// Waiters that stop waiting, on the stores where waiters queue in the
/// lock's record: one interrupted (SIGTERM, Ctrl-C) leaves the queue at
/// once, so the lock passes straight to the next; one killed (SIGKILL)
/// holds its place only until its ticket lapses.
mod leave_cases {
    use super::*;
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    use std::os::unix::process::CommandExt;
    use std::path::Path;

    /// `run NAME` in a process group of its own (as a shell job), whose
    /// command logs `TAG <ns>` and then, if `stop` is given, runs until
    /// that file exists.
    fn runner(
        f: &impl Fixture,
        name: &str,
        args: &[&str],
        log: &Path,
        tag: &str,
        stop: Option<&Path>,
    ) -> Running {
        let mut script = format!("echo \"{tag} $(date +%s%N)\" >> {}", log.display());
        if let Some(stop) = stop {
            let wait = format!("; while [ ! -e {} ]; do sleep 0.05; done", stop.display());
            script.push_str(&wait);
        }
        spawn(
            f.cmd()
                .process_group(0)
                .args(["-q", "run", name, "--lease-duration", "5"])
                .args(args)
                .args(["--", "sh", "-c", &script]),
        )
    }

    fn status(f: &impl Fixture, name: &str) -> serde_json::Value {
        let out = run(f.cmd().args(["status", name, "--json"]));
        out.assert_exit_as(0, "status failed:");
        out.json()
    }

    /// Polls `status` until `waiting` is `want`: how long that took.
    fn waiting_becomes(f: &impl Fixture, name: &str, want: u64, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let v = status(f, name);
            if v["waiting"].as_u64() == Some(want) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "waiting is not {want} after {within:?}: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn held_by_anyone(f: &impl Fixture, name: &str) {
        let started = Instant::now();
        while status(f, name)["held"] != true {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{name} never taken"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The stamp (ns since the epoch) `tag` logged, if it ran.
    fn stamp(log: &Path, tag: &str) -> Option<i128> {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{tag} "))?.parse().ok())
    }

    /// Interrupts a queued waiter with `sig` (to its process group, as a
    /// terminal's Ctrl-C does): it ends by that signal and its ticket is
    /// gone within about a second.
    fn interrupt(f: &impl Fixture, name: &str, waiter: Running, sig: Signal) {
        let started = Instant::now();
        killpg(Pid::from_raw(waiter.pid() as i32), sig).expect("killpg");
        let out = waiter.wait(Duration::from_secs(10));
        let exited = started.elapsed();
        out.assert_exit_as(
            128 + sig as i32,
            &format!("the waiter interrupted by {sig}:"),
        );
        let left = waiting_becomes(f, name, 1, Duration::from_secs(10));
        let gone = started.elapsed();
        figures(format!(
            "{sig}: the waiter exited after {exited:.2?}, the queue showed it gone after {gone:.2?} ({left:.2?} polling)"
        ));
        assert!(
            exited < Duration::from_secs(3) && gone < Duration::from_secs(3),
            "{sig}: exited after {exited:?}, left the queue after {gone:?}"
        );
    }

    /// A holder, two waiters queued; SIGTERM one, queue another, Ctrl-C
    /// the one before it; the holder ends and the last waiter gets the
    /// lock at once, not after the tickets of the two that left lapse.
    fn interrupted_waiters_leave(f: &impl Fixture, holder_args: &[&str]) {
        let name = unique_name("leave");
        let dir = tempfile::tempdir().unwrap();
        let (log, stop) = (dir.path().join("log"), dir.path().join("stop"));
        let holder = runner(f, &name, holder_args, &log, "H", Some(&stop));
        held_by_anyone(f, &name);
        let w1 = runner(f, &name, &[], &log, "W1", None);
        waiting_becomes(f, &name, 1, Duration::from_secs(10));
        let w2 = runner(f, &name, &[], &log, "W2", None);
        waiting_becomes(f, &name, 2, Duration::from_secs(10));
        interrupt(f, &name, w1, Signal::SIGTERM);
        let w3 = runner(f, &name, &[], &log, "W3", None);
        waiting_becomes(f, &name, 2, Duration::from_secs(10));
        interrupt(f, &name, w2, Signal::SIGINT);
        // W3 learns that it is first at its next read (those behind the
        // first read every 1–2 s); then it reads every 100–300 ms.
        std::thread::sleep(Duration::from_millis(2500));
        let ended = now_ns();
        std::fs::write(&stop, "").unwrap();
        holder.wait(Duration::from_secs(10)).assert_ok();
        w3.wait(Duration::from_secs(30)).assert_ok();
        let got = stamp(&log, "W3").expect("W3 ran");
        let hand_off = secs(got - ended);
        figures(format!(
            "the holder ended; the waiter behind two interrupted ones ran after {hand_off:.2}s"
        ));
        assert!(
            hand_off < 2.0,
            "the lock took {hand_off:.2}s to pass to the waiter behind the interrupted ones"
        );
        assert_eq!(stamp(&log, "W1"), None, "an interrupted waiter ran");
        assert_eq!(stamp(&log, "W2"), None, "an interrupted waiter ran");
        assert_eq!(status(f, &name)["waiting"], 0);
    }

    pub fn an_interrupted_waiter_leaves_the_queue_at_once(f: &impl Fixture) {
        interrupted_waiters_leave(f, &[]);
    }

    /// The directory store queues writers behind readers (its plain locks
    /// do not queue): the same, behind a `--shared` holder.
    pub fn an_interrupted_writer_leaves_the_readers_queue_at_once(f: &impl Fixture) {
        interrupted_waiters_leave(f, &["--shared"]);
    }

    /// A plain `run` waiting behind a lease of `acquire` (a holder that is
    /// no `run`): where plain locks queue, it queues (the lease is moved
    /// into a holder table); on the directory store it polls. Interrupted,
    /// it leaves the lease as it was: held, and released by its LEASE_ID.
    fn behind_an_acquired_lease(f: &impl Fixture, queues: bool) {
        let name = unique_name("behindacq");
        let out = run(f.cmd().args(["acquire", &name, "--lease-duration", "60"]));
        out.assert_ok();
        let lease = out.line().to_string();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let waiter = runner(f, &name, &[], &log, "W", None);
        if queues {
            waiting_becomes(f, &name, 1, Duration::from_secs(10));
        } else {
            std::thread::sleep(Duration::from_millis(1000));
            assert_eq!(status(f, &name)["waiting"], 0, "a plain lock here polls");
        }
        interrupt_alone(waiter, Signal::SIGTERM);
        let v = status(f, &name);
        assert_eq!(
            (v["held"].clone(), v["waiting"].clone()),
            (true.into(), 0.into()),
            "{v}"
        );
        let out = run(f.cmd().args(["release", &name, &lease]));
        out.assert_exit_as(0, "the acquired lease, released by its id:");
        let out = run(f.cmd().args(["acquire", &name, "--no-wait"]));
        out.assert_exit_as(0, "free once released:");
        assert_eq!(stamp(&log, "W"), None);
    }

    /// Signals the only waiter: it ends by the signal within a second or so,
    /// saying nothing (the runner is `-q`: the exit code says it).
    fn interrupt_alone(waiter: Running, sig: Signal) {
        signal(waiter.pid(), sig);
        let out = waiter.wait(Duration::from_secs(10));
        out.assert_exit_as(
            128 + sig as i32,
            &format!("the waiter interrupted by {sig}:"),
        );
        assert_eq!(out.stderr, "", "-q: the exit code says it");
        assert!(out.elapsed < Duration::from_secs(10));
    }

    pub fn a_waiter_queued_behind_an_acquired_lease_leaves_it_held(f: &impl Fixture) {
        behind_an_acquired_lease(f, true);
    }

    pub fn a_waiter_polling_an_acquired_lease_leaves_it_held(f: &impl Fixture) {
        behind_an_acquired_lease(f, false);
    }
}

/// `mod STORE { #[test] fn CASE() { CASES::CASE(&FIXTURE::start()) } … }`
/// for one store and a bracketed list of cases.
macro_rules! store_tests {
    ($cases:ident, $store:ident, $fixture:ty, [$($case:ident),* $(,)?]) => {
        mod $store {
            use super::*;
            $(
                #[test]
                fn $case() {
                    $cases::$case(&<$fixture>::start());
                }
            )*
        }
    };
}

/// The same cases of `$cases` for each store named: one module a store,
/// one test a case (`conformance::force::s3::…`).
macro_rules! per_store {
    ($cases:ident, $list:tt, $($(#[$m:meta])* $store:ident => $fixture:ty),* $(,)?) => {
        $( $(#[$m])* store_tests!($cases, $store, $fixture, $list); )*
    };
}

mod force {
    use super::*;
    per_store!(
        force_cases,
        [
            a_run_holder_stops_before_the_lock_is_handed_on,
            no_wait_returns_at_once_and_still_hands_on_safely,
            an_unsupervised_lease_is_freed_at_once,
            immediately_breaks_glass_for_a_run_holder,
        ],
        dynamodb => DynamoDb,
        s3 => S3,
        file => File,
        #[cfg(feature = "etcd")]
        etcd => Etcd,
    );
}

mod fifo {
    use super::*;
    per_store!(
        fifo_cases,
        [
            waiters_are_served_in_order_and_a_returning_holder_goes_last,
            a_dead_waiter_leaves_the_queue,
        ],
        dynamodb => DynamoDb,
        s3 => S3,
        #[cfg(feature = "etcd")]
        etcd => Etcd,
    );
}

mod line {
    use super::*;
    per_store!(
        fifo_cases,
        [status_shows_each_waiter_in_line],
        dynamodb => DynamoDb,
        s3 => S3,
    );
}

mod leave {
    use super::*;
    per_store!(
        leave_cases,
        [
            an_interrupted_waiter_leaves_the_queue_at_once,
            a_waiter_queued_behind_an_acquired_lease_leaves_it_held,
        ],
        dynamodb => DynamoDb,
        s3 => S3,
    );
    mod behind_readers {
        use super::*;
        per_store!(
            leave_cases,
            [
                an_interrupted_writer_leaves_the_readers_queue_at_once,
                a_waiter_polling_an_acquired_lease_leaves_it_held,
            ],
            file => File,
        );
    }
}

mod slots {
    use super::*;
    per_store!(
        slot_cases,
        [
            a_semaphore_admits_n_at_once_and_no_more,
            readers_share_and_a_writer_excludes_everyone,
            holders_of_a_semaphore_are_shown_renewed_and_released_by_lease_id,
            a_different_max_holders_is_a_usage_error,
            a_dead_holders_slot_is_taken_after_its_lease,
        ],
        dynamodb => DynamoDb,
        s3 => S3,
        file => File,
        #[cfg(feature = "etcd")]
        etcd => Etcd,
    );
}

per_store!(
    cases,
    [
        lease_cycle_and_exit_codes,
        run_passes_exit_codes_through_and_releases,
        fencing_tokens_strictly_increase,
        contention_never_overlaps,
        renewal_keeps_a_long_run_exclusive,
        losing_the_lease_stops_the_command,
        bad_input_is_a_usage_error,
        status_and_list_show_who_and_why,
    ],
    dynamodb => DynamoDb,
    s3 => S3,
    file => File,
    #[cfg(feature = "etcd")]
    etcd => Etcd,
);
