//! The etcd store against a private etcd server per test: the lease cycle,
//! interoperation with `etcdctl lock` both ways, FIFO hand-off, fencing
//! tokens, hand-off latency, a frozen cluster, and an unreachable one.
//!
//! Every test starts its own etcd on free loopback ports and skips (with a
//! note) when /usr/bin/etcd is not installed.

#![cfg(feature = "etcd")]

use crate::common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::*;

/// Our binary aimed at `etcd://ENDPOINT/prefix`.
fn aw(etcd: &Etcd, prefix: &str) -> Command {
    let mut c = awsflock_at(&dead_endpoint());
    c.env(
        "AWSFLOCK_BACKEND",
        format!("etcd://{}/{prefix}", etcd.endpoint()),
    );
    c
}

fn assert_hex_lease(id: &str) {
    assert!(
        !id.is_empty() && id.len() <= 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "not an etcd lease id in hex: {id:?}"
    );
    assert_eq!(id, id.to_lowercase(), "lease ids are lower-case hex");
}

fn status(etcd: &Etcd, prefix: &str, name: &str) -> serde_json::Value {
    let out = run(aw(etcd, prefix).args(["status", name, "--json"]));
    out.assert_exit_as(0, "status failed:");
    out.json()
}

/// Waits until `name` is held (by anyone), up to `within`.
fn wait_held(etcd: &Etcd, prefix: &str, name: &str, within: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = status(etcd, prefix, name);
        if v["held"] == true {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "{name} was not held within {within:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The keys queued under `key_prefix`, with their create revisions, oldest first.
fn queued(etcd: &Etcd, key_prefix: &str) -> Vec<(String, i64)> {
    let out = run(etcd
        .etcdctl()
        .args(["get", "--prefix", key_prefix, "-w", "fields"]));
    out.assert_exit_as(0, "etcdctl get failed:");
    let mut keys = Vec::new();
    let mut key = None;
    for line in out.stdout.lines() {
        let Some((field, value)) = line.split_once(" : ") else {
            continue;
        };
        match field.trim().trim_matches('"') {
            "Key" => key = Some(value.trim().trim_matches('"').to_string()),
            "CreateRevision" => {
                if let Some(k) = key.take() {
                    keys.push((k, value.trim().parse().expect("create revision")));
                }
            }
            _ => {}
        }
    }
    keys.sort_by_key(|(_, rev)| *rev);
    keys
}

/// Waits until `n` contenders are queued under `key_prefix`.
fn wait_queued(etcd: &Etcd, key_prefix: &str, n: usize) {
    let start = Instant::now();
    while queued(etcd, key_prefix).len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{n} contenders never queued under {key_prefix}: {:?}",
            queued(etcd, key_prefix)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn lease_cycle_and_exit_codes() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "cycle/";
    let name = unique_name("cycle");
    let out = run(aw(&etcd, p).args(["acquire", &name, "--lease-duration", "30"]));
    out.assert_ok();
    let id = out.line().to_string();
    assert_hex_lease(&id);
    // The key is etcd's mutex layout: PREFIX NAME / LEASE_ID.
    let keys = queued(&etcd, &format!("{p}{name}/"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].0, format!("{p}{name}/{id}"));

    let out = run(aw(&etcd, p).args(["acquire", &name, "--no-wait"]));
    out.assert_exit(3);
    assert_clean_error(&out);
    assert_eq!(
        queued(&etcd, &format!("{p}{name}/")).len(),
        1,
        "a contender that gave up must leave no key behind"
    );

    // Renewal keeps the etcd lease and its id.
    let out = run(aw(&etcd, p).args(["renew", &name, &id, "--json"]));
    out.assert_ok();
    let v = out.json();
    assert_eq!(v["lease_id"], id.as_str());
    assert_eq!(v["fence"].as_i64(), Some(keys[0].1));
    assert_eq!(v["lease_duration"], 30, "renew keeps the granted TTL: {v}");
    let out = run(aw(&etcd, p).args(["renew", &name, &id]));
    out.assert_ok();
    assert_eq!(out.line(), id);

    // Ids that are not held.
    for bogus in [
        "1234abcd",
        "not-a-lease",
        "6f9619ff-8b86-d011-b42d-00cf4fc964ff",
    ] {
        assert_eq!(run(aw(&etcd, p).args(["renew", &name, bogus])).code, 3);
        assert_eq!(run(aw(&etcd, p).args(["release", &name, bogus])).code, 3);
    }
    // Another lock's lease id does not release this one.
    let other = unique_name("other");
    assert_eq!(run(aw(&etcd, p).args(["release", &other, &id])).code, 3);

    assert_eq!(status(&etcd, p, &name)["held"], true);
    assert_eq!(run(aw(&etcd, p).args(["release", &name, &id])).code, 0);
    assert_eq!(status(&etcd, p, &name)["held"], false);
    assert!(queued(&etcd, &format!("{p}{name}/")).is_empty());
    assert_eq!(
        run(aw(&etcd, p).args(["release", &name, &id])).code,
        3,
        "released twice"
    );
    assert_eq!(
        run(aw(&etcd, p).args(["renew", &name, &id])).code,
        3,
        "renewed after release"
    );
    let out = run(aw(&etcd, p).args(["acquire", &name, "--no-wait"]));
    out.assert_exit_as(0, "free again after release:");
    assert_eq!(run(aw(&etcd, p).args(["table-create"])).code, 0);
}

#[test]
fn etcdctl_holding_excludes_us_and_hands_over() {
    let Some(etcd) = Etcd::start() else { return };
    let name = unique_name("ctl");
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    // No prefix: `etcdctl lock NAME` and ours contend for the same lock.
    let rev = dir.path().join("rev");
    let ctl = spawn(etcd.etcdctl().args([
        "lock",
        &name,
        "--",
        "sh",
        "-c",
        &format!(
            "echo $ETCD_LOCK_REV > {}; sleep 3; date +%s%N > {}",
            rev.display(),
            done.display()
        ),
    ]));
    let v = wait_held(&etcd, "", &name, Duration::from_secs(10));
    assert_eq!(v["owner"], "etcdctl", "{v}");
    // etcdctl's token is stored nowhere: status does not make one up.
    assert!(v["fence"].is_null(), "{v}");

    let out = run(aw(&etcd, "").args(["acquire", &name, "--no-wait"]));
    out.assert_exit(3);
    assert!(out.stderr.contains("etcdctl"), "{}", out.describe());

    let out = run(aw(&etcd, "").args(["acquire", &name, "--wait-time", "30", "--json"]));
    let got_ns = now_ns();
    out.assert_ok();
    let ctl_out = ctl.wait(Duration::from_secs(10));
    ctl_out.assert_ok();
    assert!(
        read_ns(&done) <= got_ns,
        "we got the lock before etcdctl's command ended"
    );
    let fence = out.json()["fence"].as_i64().expect("fence");
    let ctl_rev: i64 = std::fs::read_to_string(&rev)
        .unwrap()
        .trim()
        .parse()
        .expect("ETCD_LOCK_REV");
    assert!(fence > ctl_rev, "ours {fence}, etcdctl's {ctl_rev}");
}

#[test]
fn us_holding_excludes_etcdctl_until_released() {
    let Some(etcd) = Etcd::start() else { return };
    // With a prefix, the etcdctl lock name is PREFIX + NAME.
    let prefix = format!("{}/", unique_name("realm"));
    let name = unique_name("ours");
    let out = run(aw(&etcd, &prefix).args(["acquire", &name, "--reason", "interop"]));
    out.assert_ok();
    let id = out.line().to_string();
    let mut ctl = spawn(
        etcd.etcdctl()
            .args(["lock", &format!("{prefix}{name}"), "echo", "got"]),
    );
    thread::sleep(Duration::from_millis(1500));
    assert!(!ctl.finished(), "etcdctl took a lock we hold");
    let released = Instant::now();
    assert_eq!(
        run(aw(&etcd, &prefix).args(["release", &name, &id])).code,
        0
    );
    let out = ctl.wait(Duration::from_secs(10));
    out.assert_ok();
    assert_eq!(out.line(), "got");
    eprintln!(
        "etcdctl got the lock {:?} after our release",
        released.elapsed()
    );
}

#[test]
fn waiters_are_served_in_arrival_order_with_increasing_fences() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "fifo/";
    let name = unique_name("fifo");
    let mp = format!("{p}{name}/");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order");
    let out = run(aw(&etcd, p).args(["acquire", &name, "--lease-duration", "60"]));
    out.assert_ok();
    let holder = out.line().to_string();
    let mut waiters = Vec::new();
    for i in 0..4 {
        let started = Instant::now();
        waiters.push(spawn(aw(&etcd, p).args([
            "-q",
            "run",
            &name,
            "--wait-time",
            "60",
            "--",
            "sh",
            "-c",
            &format!("echo \"{i} $AWSFLOCK_FENCE\" >> {}", log.display()),
        ])));
        // Each has queued before the next starts (at least 300 ms apart).
        wait_queued(&etcd, &mp, i + 2);
        if let Some(rest) = Duration::from_millis(300).checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
    }
    let revs: Vec<i64> = queued(&etcd, &mp).iter().map(|(_, r)| *r).collect();
    assert_eq!(run(aw(&etcd, p).args(["release", &name, &holder])).code, 0);
    for w in waiters {
        let out = w.wait(Duration::from_secs(60));
        out.assert_ok();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<(usize, i64)> = text
        .lines()
        .map(|l| {
            let (i, f) = l.split_once(' ').expect("index and fence");
            (i.parse().unwrap(), f.parse().expect("AWSFLOCK_FENCE"))
        })
        .collect();
    let order: Vec<usize> = lines.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, vec![0, 1, 2, 3], "served out of order:\n{text}");
    // Each fence is the revision at which the waiter was granted: later
    // than its place in the queue, and increasing in grant order.
    let fences: Vec<i64> = lines.iter().map(|(_, f)| *f).collect();
    assert!(
        fences.iter().zip(&revs[1..]).all(|(f, r)| f > r),
        "fences {fences:?}, queued at {revs:?}"
    );
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

#[test]
fn a_killed_waiter_does_not_block_the_queue_for_its_lease() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "killed/";
    let name = unique_name("killed");
    let mp = format!("{p}{name}/");
    let out = run(aw(&etcd, p).args(["acquire", &name]));
    out.assert_ok();
    let holder = out.line().to_string();
    // A waiter with the default two-hour lease, killed before it can revoke.
    let waiter = spawn(aw(&etcd, p).args(["-q", "acquire", &name, "--wait-time", "600"]));
    wait_queued(&etcd, &mp, 2);
    let _ = Command::new("kill")
        .args(["-KILL", &waiter.pid().to_string()])
        .status();
    let out = waiter.wait(Duration::from_secs(10));
    out.assert_exit(137);
    assert_eq!(run(aw(&etcd, p).args(["release", &name, &holder])).code, 0);
    let out = run(aw(&etcd, p).args(["acquire", &name, "--wait-time", "30"]));
    out.assert_ok();
    assert!(
        out.elapsed < Duration::from_secs(15),
        "the dead waiter blocked the lock for {:?}",
        out.elapsed
    );
    eprintln!("a dead waiter delayed the next holder by {:?}", out.elapsed);
}

#[test]
fn fence_is_the_revision_of_the_grant() {
    let Some(etcd) = Etcd::start() else { return };
    let name = unique_name("rev");
    let out = run(aw(&etcd, "").args(["acquire", &name, "--json"]));
    out.assert_ok();
    let v = out.json();
    // Taken at once: the write that created our key granted it.
    let keys = queued(&etcd, &format!("{name}/"));
    assert_eq!(v["fence"].as_i64(), Some(keys[0].1));
    assert_eq!(status(&etcd, "", &name)["fence"], v["fence"]);
    let id = v["lease_id"].as_str().unwrap().to_string();
    assert_eq!(run(aw(&etcd, "").args(["release", &name, &id])).code, 0);
    // etcdctl's ETCD_LOCK_REV and our AWSFLOCK_FENCE come from one sequence:
    // the store's revision.
    let out = run(etcd
        .etcdctl()
        .args(["lock", &name, "--", "sh", "-c", "echo $ETCD_LOCK_REV"]));
    out.assert_ok();
    let ctl_rev: i64 = out.line().parse().expect("ETCD_LOCK_REV");
    let out = run(aw(&etcd, "").args(["run", &name, "--", "sh", "-c", "echo $AWSFLOCK_FENCE"]));
    out.assert_ok();
    let ours: i64 = out.line().parse().expect("AWSFLOCK_FENCE");
    assert!(
        v["fence"].as_i64().unwrap() < ctl_rev && ctl_rev < ours,
        "{v} {ctl_rev} {ours}"
    );
}

#[test]
fn hand_off_latency() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "handoff/";
    let dir = tempfile::tempdir().unwrap();
    let mut ms = Vec::new();
    for trial in 0..9 {
        let name = unique_name("handoff");
        let end = dir.path().join(format!("end-{trial}"));
        let start = dir.path().join(format!("start-{trial}"));
        let holder = spawn(aw(&etcd, p).args([
            "-q",
            "run",
            &name,
            "--",
            "sh",
            "-c",
            &format!("sleep 1.5; date +%s%N > {}", end.display()),
        ]));
        wait_queued(&etcd, &format!("{p}{name}/"), 1);
        let waiter = spawn(aw(&etcd, p).args([
            "-q",
            "run",
            &name,
            "--wait-time",
            "30",
            "--",
            "sh",
            "-c",
            &format!("date +%s%N > {}", start.display()),
        ]));
        wait_queued(&etcd, &format!("{p}{name}/"), 2);
        let out = holder.wait(Duration::from_secs(30));
        out.assert_ok();
        let out = waiter.wait(Duration::from_secs(30));
        out.assert_ok();
        ms.push((read_ns(&start) - read_ns(&end)) as f64 / 1e6);
    }
    assert!(
        ms.iter().all(|&m| m > 0.0),
        "a waiter ran before the holder's command ended: {ms:?}"
    );
    let mut sorted = ms.clone();
    let med = median(&mut sorted);
    eprintln!(
        "hand-off (holder's command ends -> waiter's command starts): median {med:.1} ms, all {ms:.1?}"
    );
    assert!(med < 200.0, "median hand-off {med:.1} ms: {ms:.1?}");
}

#[test]
fn frozen_cluster_stops_the_command_before_the_lease_ends() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "frozen/";
    let name = unique_name("frozen");
    let dir = tempfile::tempdir().unwrap();
    let beats = dir.path().join("beats");
    let holder = spawn(aw(&etcd, p).args([
        "run",
        &name,
        "--lease-duration",
        "6",
        "--",
        "sh",
        "-c",
        &format!(
            "while :; do date +%s%N >> {}; sleep 0.05; done",
            beats.display()
        ),
    ]));
    wait_held(&etcd, p, &name, Duration::from_secs(10));
    thread::sleep(Duration::from_millis(2500));
    let paused_ns = now_ns();
    etcd.pause();
    let out = holder.wait(Duration::from_secs(30));
    etcd.resume();
    out.assert_exit(4);
    let text = std::fs::read_to_string(&beats).unwrap();
    let last: i128 = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .expect("beats");
    let after = (last - paused_ns) as f64 / 1e9;
    eprintln!("the command's last beat came {after:.2}s after the cluster froze");
    assert!(after < 6.0, "the command ran {after:.2}s into the freeze");
    assert!(out.stderr.contains("lost"), "{}", out.describe());
}

#[test]
fn status_and_list_show_who_and_why() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "who/";
    let name = unique_name("who");
    let out = run(aw(&etcd, p).args([
        "acquire",
        &name,
        "--owner",
        "alice@ci-7",
        "--reason",
        "terraform apply prod",
        "--lease-duration",
        "40",
        "--json",
    ]));
    out.assert_ok();
    let got = out.json();
    let v = status(&etcd, p, &name);
    assert_eq!(v["held"], true);
    assert_eq!(v["owner"], "alice@ci-7");
    assert_eq!(v["reason"], "terraform apply prod");
    assert_eq!(v["fence"], got["fence"]);
    assert_eq!(v["lease_id"], got["lease_id"]);
    assert_eq!(v["lease_duration"], 40);
    assert!(v["pid"].as_u64().is_some(), "{v}");
    assert!(
        v["client"]
            .as_str()
            .unwrap_or("")
            .starts_with("awsflock-rs"),
        "{v}"
    );
    for k in ["acquired_at", "expires_at"] {
        let t = v[k].as_str().unwrap_or_else(|| panic!("{k} missing: {v}"));
        assert!(t.ends_with('Z') && t.contains('T'), "{k}: {t}");
    }
    // A waiter's key is not the holder.
    let out = run(aw(&etcd, p).args(["acquire", &name, "--wait-time", "1"]));
    out.assert_exit(3);
    assert!(out.stderr.contains("alice@ci-7"), "{}", out.describe());

    // An etcdctl holder, shown and released by force.
    let ctl_name = unique_name("ctl");
    let _ctl = spawn(
        etcd.etcdctl()
            .args(["lock", &format!("{p}{ctl_name}"), "sleep", "30"]),
    );
    wait_held(&etcd, p, &ctl_name, Duration::from_secs(10));
    let list = run(aw(&etcd, p).args(["list", "--json"])).json();
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    let mut want = vec![name.as_str(), ctl_name.as_str()];
    want.sort();
    assert_eq!(names, want, "{list}");
    let ctl_info = &list.as_array().unwrap()[names.iter().position(|n| *n == ctl_name).unwrap()];
    assert_eq!(ctl_info["owner"], "etcdctl", "{list}");
    let out = run(aw(&etcd, p).args(["release", &ctl_name, "--force", "--yes"]));
    out.assert_ok();
    assert_eq!(status(&etcd, p, &ctl_name)["held"], false);
    let out = run(aw(&etcd, p).args(["acquire", &ctl_name, "--no-wait"]));
    out.assert_ok();
}

#[test]
fn unreachable_cluster_is_an_error_within_seconds() {
    if !common::etcd::available() {
        return;
    }
    let port = free_port();
    let mut cmd = awsflock_at(&dead_endpoint());
    cmd.env("AWSFLOCK_BACKEND", format!("etcd://127.0.0.1:{port}/x/"));
    let out = run(cmd.args(["acquire", "deploy", "--wait-time", "60"]));
    out.assert_exit(1);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
    assert_clean_error(&out);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.describe()
    );
}

#[test]
fn credentials_are_checked() {
    let Some(etcd) = Etcd::start() else { return };
    for args in [
        vec!["user", "add", "root", "--new-user-password", "s3cret"],
        vec!["user", "grant-role", "root", "root"],
        vec!["auth", "enable"],
    ] {
        let out = run(etcd.etcdctl().args(&args));
        out.assert_exit_as(0, &format!("etcdctl {args:?}:"));
    }
    let name = unique_name("auth");
    let out = run(aw(&etcd, "a/").args(["acquire", &name]));
    out.assert_exit_as(1, "no credentials:");
    assert_clean_error(&out);
    assert!(
        out.stderr.contains("--etcd-user"),
        "no credentials must name the option:\n{}",
        out.describe()
    );
    let out = run(aw(&etcd, "a/").args(["--etcd-user", "root:wrong", "acquire", &name]));
    out.assert_exit(1);
    assert_clean_error(&out);
    assert!(out.stderr.contains("--etcd-user"), "{}", out.describe());
    let out = run(aw(&etcd, "a/").args(["--etcd-user", "root:s3cret", "acquire", &name]));
    out.assert_ok();
    let id = out.line().to_string();
    let out = run(aw(&etcd, "a/")
        .args(["--etcd-user", "root", "--etcd-password", "s3cret"])
        .args(["release", &name, &id]));
    out.assert_ok();

    // A user whose credentials are good but who may not read the prefix is
    // told about permissions, not credentials.
    for args in [
        vec!["--user", "root:s3cret", "user", "add", "reader:rpw"],
        vec!["--user", "root:s3cret", "role", "add", "nothing"],
        vec![
            "--user",
            "root:s3cret",
            "user",
            "grant-role",
            "reader",
            "nothing",
        ],
    ] {
        let out = run(etcd.etcdctl().args(&args));
        out.assert_exit_as(0, &format!("etcdctl {args:?}:"));
    }
    let out = run(aw(&etcd, "a/").args(["--etcd-user", "reader:rpw", "status", &name]));
    out.assert_exit(1);
    assert_clean_error(&out);
    assert!(
        !out.stderr.contains("credentials") && out.stderr.contains("readwrite"),
        "a permission problem must be named as one:\n{}",
        out.describe()
    );
}

#[test]
fn user_and_password_authenticate_as_etcdctl_takes_them() {
    let Some(etcd) = Etcd::start() else { return };
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["role", "add", "root"],
        vec!["user", "grant-role", "root", "root"],
        vec!["auth", "enable"],
    ] {
        let out = run(etcd.etcdctl().args(&args));
        out.assert_exit_as(0, &format!("etcdctl {args:?}:"));
    }
    let name = unique_name("auth");
    // No credentials: refused, one line that says what to give.
    let out = run(aw(&etcd, "auth/").args(["acquire", &name, "--no-wait"]));
    out.assert_exit(1);
    assert_clean_error(&out);
    // USER:PASSWORD in one option, as etcdctl's --user.
    let out = run(aw(&etcd, "auth/").args(["--etcd-user", "root:rootpw", "acquire", &name]));
    out.assert_ok();
    let lease = out.line().to_string();
    // USER and a separate password, from the environment.
    let out = run(aw(&etcd, "auth/")
        .env("AWSFLOCK_ETCD_USER", "root")
        .env("AWSFLOCK_ETCD_PASSWORD", "rootpw")
        .args(["release", &name, &lease]));
    out.assert_ok();
    // A wrong password is an error that points at the options.
    let out = run(aw(&etcd, "auth/").args(["--etcd-user", "root:wrong", "status", &name]));
    out.assert_exit(1);
    assert!(out.stderr.contains("--etcd-user"), "{}", out.stderr);
}

#[test]
fn tls_with_a_client_certificate_as_etcdctl_takes_it() {
    let Some((etcd, certs)) = Etcd::start_tls() else {
        return;
    };
    let tls = common::etcd::Tls::make_paths(certs.path());
    let name = unique_name("tls");
    let with_tls = |c: &mut Command| {
        c.arg("--etcd-cacert")
            .arg(&tls.0)
            .arg("--etcd-cert")
            .arg(&tls.1)
            .arg("--etcd-key")
            .arg(&tls.2);
    };
    let mut c = aw(&etcd, "tls/");
    with_tls(&mut c);
    let out = run(c.args(["run", &name, "--", "sh", "-c", "echo fence=$AWSFLOCK_FENCE"]));
    out.assert_ok();
    assert!(out.stdout.starts_with("fence="), "{}", out.stdout);
    // Without the CA the server's certificate cannot be verified.
    let out = run(aw(&etcd, "tls/").args(["status", &name]));
    out.assert_exit_as(1, "plain text against a TLS server must fail:");
    assert_clean_error(&out);
    assert!(
        out.stderr.contains("--etcd-cacert"),
        "the error must say how to speak TLS:\n{}",
        out.describe()
    );
    eprintln!("without TLS options: {}", out.stderr.trim());
}

/// Our binary aimed at some members of a cluster, in the order given.
fn aw_at(members: &[&Etcd], prefix: &str) -> Command {
    let eps: Vec<String> = members.iter().map(|m| m.endpoint()).collect();
    let mut c = awsflock_at(&dead_endpoint());
    c.env(
        "AWSFLOCK_BACKEND",
        format!("etcd://{}/{prefix}", eps.join(",")),
    );
    c
}

#[test]
fn a_waiter_granted_late_in_its_keep_alive_period_is_not_stopped() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "late/";
    let name = unique_name("late");
    let out = run(aw(&etcd, p).args(["acquire", &name, "--lease-duration", "30"]));
    out.assert_ok();
    let holder = out.line().to_string();
    // A 6 s lease keeps its queued key alive every 2 s; the lock comes to it
    // 1.4 s after it queued, late in that period. It renews every 3.5 s,
    // and its command runs 5 s, through a renewal.
    let waiter = spawn(aw(&etcd, p).args([
        "run",
        &name,
        "--lease-duration",
        "6",
        "--renew-every",
        "3500ms",
        "--wait-time",
        "30",
        "--",
        "sleep",
        "5",
    ]));
    wait_queued(&etcd, &format!("{p}{name}/"), 2);
    thread::sleep(Duration::from_millis(1400));
    assert_eq!(run(aw(&etcd, p).args(["release", &name, &holder])).code, 0);
    let out = waiter.wait(Duration::from_secs(30));
    out.assert_exit_as(0, "a healthy waiter's command was stopped:");
}

#[test]
fn fencing_tokens_increase_across_awsflock_and_etcdctl_holders() {
    let Some(etcd) = Etcd::start() else { return };
    let name = unique_name("mixed");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tokens");
    let ours = |tag: &str| {
        spawn(aw(&etcd, "").args([
            "-q",
            "run",
            &name,
            "--wait-time",
            "60",
            "--",
            "sh",
            "-c",
            &format!(
                "echo \"{tag} $AWSFLOCK_FENCE\" >> {}; sleep 0.3",
                log.display()
            ),
        ]))
    };
    let theirs = |tag: &str| {
        spawn(etcd.etcdctl().args([
            "lock",
            &name,
            "--",
            "sh",
            "-c",
            &format!(
                "echo \"{tag} $ETCD_LOCK_REV\" >> {}; sleep 0.3",
                log.display()
            ),
        ]))
    };
    // Held while the others queue, in this order, each behind the one
    // before: two rounds of awsflock, etcdctl, awsflock, etcdctl.
    let out = run(aw(&etcd, "").args(["acquire", &name, "--json"]));
    out.assert_ok();
    let first = out.json();
    let mut holders = Vec::new();
    let tags = ["a0", "e1", "a2", "e3", "a4", "e5", "a6", "e7"];
    for (i, tag) in tags.iter().enumerate() {
        holders.push(if tag.starts_with('a') {
            ours(tag)
        } else {
            theirs(tag)
        });
        wait_queued(&etcd, &format!("{name}/"), i + 2);
        // Unrelated writes move the store's revision between arrivals.
        let out = run(etcd.etcdctl().args(["put", &format!("other/{i}"), "x"]));
        out.assert_ok();
    }
    let lease = first["lease_id"].as_str().unwrap();
    assert_eq!(run(aw(&etcd, "").args(["release", &name, lease])).code, 0);
    for h in holders {
        h.wait(Duration::from_secs(60));
    }
    let text = format!(
        "first {}\n{}",
        first["fence"],
        std::fs::read_to_string(&log).unwrap()
    );
    let got: Vec<(&str, i64)> = text
        .lines()
        .map(|l| {
            let (tag, t) = l.split_once(' ').expect("tag and token");
            (tag, t.parse().unwrap_or_else(|_| panic!("no token: {l:?}")))
        })
        .collect();
    let order: Vec<&str> = got.iter().skip(1).map(|(t, _)| *t).collect();
    assert_eq!(order, tags, "served out of order:\n{text}");
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "tokens do not increase in grant order:\n{text}"
    );
}

#[test]
fn a_frozen_leader_does_not_kill_a_short_lease() {
    let Some(members) = Etcd::cluster(3) else {
        return;
    };
    let l = common::etcd::leader(&members).expect("a leader");
    let followers: Vec<&Etcd> = (0..3).filter(|&i| i != l).map(|i| &members[i]).collect();
    let p = "failover/";
    let name = unique_name("failover");
    // The holder talks to the followers only; they forward its keep-alives
    // to the leader.
    let holder = spawn(aw_at(&followers, p).args([
        "run",
        &name,
        "--lease-duration",
        "6",
        "--",
        "sleep",
        "10",
    ]));
    wait_queued(followers[0], &format!("{p}{name}/"), 1);
    thread::sleep(Duration::from_millis(1500));
    let (leader_id, _) = common::etcd::member_and_leader(&members[l]).expect("leader's id");
    members[l].pause();
    let frozen = Instant::now();
    // A new leader is elected among the followers.
    let mut elected = None;
    while frozen.elapsed() < Duration::from_secs(6) {
        if let Some((_, new)) = common::etcd::member_and_leader(followers[0])
            && new != leader_id
            && new != 0
        {
            elected = Some(frozen.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(6).saturating_sub(frozen.elapsed()));
    members[l].resume();
    let out = holder.wait(Duration::from_secs(30));
    let elected = elected.expect("no new leader within 6 s of freezing the old one");
    eprintln!("a new leader was elected {elected:?} after the old one froze");
    out.assert_exit_as(0, "the command was stopped during a leader failover:");
}

#[test]
fn a_waiter_keeps_its_place_when_the_member_holding_its_watch_freezes() {
    let Some(members) = Etcd::cluster(3) else {
        return;
    };
    let l = common::etcd::leader(&members).expect("a leader");
    let f: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let p = "watchfreeze/";
    let name = unique_name("watch");
    let mp = format!("{p}{name}/");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order");
    let out = run(aw_at(&[&members[l]], p).args(["acquire", &name, "--lease-duration", "60"]));
    out.assert_ok();
    let holder = out.line().to_string();
    let before: Vec<u64> = members.iter().map(|m| m.watch_streams()).collect();
    // The waiter talks to the two followers; its queued key lives on the
    // 10 s queue lease.
    let w = spawn(aw_at(&[&members[f[0]], &members[f[1]]], p).args([
        "-q",
        "run",
        &name,
        "--lease-duration",
        "60",
        "--wait-time",
        "60",
        "--",
        "sh",
        "-c",
        &format!(
            "date +%s%N > {}.w; echo w >> {}",
            log.display(),
            log.display()
        ),
    ]));
    wait_queued(&members[l], &mp, 2);
    // Freeze the member that serves the waiter's watch.
    let start = Instant::now();
    let x = loop {
        if let Some(&i) = f.iter().find(|&&i| members[i].watch_streams() > before[i]) {
            break i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the waiter never watched"
        );
        thread::sleep(Duration::from_millis(50));
    };
    members[x].pause();
    let healthy: Vec<&Etcd> = (0..3).filter(|&i| i != x).map(|i| &members[i]).collect();
    let w2 = spawn(aw_at(&healthy, p).args([
        "-q",
        "run",
        &name,
        "--wait-time",
        "60",
        "--",
        "sh",
        "-c",
        &format!("echo w2 >> {}", log.display()),
    ]));
    wait_queued(&members[l], &mp, 3);
    // Longer than the queue lease: its keep-alives must reach a healthy
    // member.
    thread::sleep(Duration::from_secs(11));
    let released_ns = now_ns();
    let out = run(aw_at(&[&members[l]], p).args(["release", &name, &holder]));
    out.assert_ok();
    let out = w.wait(Duration::from_secs(40));
    let out2 = w2.wait(Duration::from_secs(40));
    members[x].resume();
    out.assert_ok();
    out2.assert_ok();
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["w", "w2"],
        "the waiter lost its place"
    );
    let hand_off = (read_ns(&dir.path().join("order.w")) - released_ns) as f64 / 1e9;
    eprintln!("hand-off with the watching member frozen: {hand_off:.2}s");
    assert!(
        hand_off < 3.0,
        "the waiter noticed the release {hand_off:.2}s late"
    );
}

#[test]
fn an_etcdctl_holder_that_loses_its_session_is_overtaken_with_a_higher_token() {
    let Some(etcd) = Etcd::start() else { return };
    let name = unique_name("stale");
    let dir = tempfile::tempdir().unwrap();
    let (rev, pid) = (dir.path().join("rev"), dir.path().join("pid"));
    // etcdctl 3.4 never watches its session: frozen, its lease expires and
    // its command runs on.
    let ctl = spawn(etcd.etcdctl().args([
        "lock",
        "--ttl",
        "3",
        &name,
        "--",
        "sh",
        "-c",
        &format!(
            "echo $$ > {}; echo $ETCD_LOCK_REV > {}; exec sleep 60",
            pid.display(),
            rev.display()
        ),
    ]));
    wait_held(&etcd, "", &name, Duration::from_secs(10));
    let start = Instant::now();
    while !pid.exists() || std::fs::read_to_string(&pid).unwrap().trim().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no pid");
        thread::sleep(Duration::from_millis(20));
    }
    let cmd_pid: u32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-STOP", &ctl.pid().to_string()])
        .status();
    let out = run(aw(&etcd, "").args([
        "run",
        &name,
        "--wait-time",
        "20",
        "--",
        "sh",
        "-c",
        "echo $AWSFLOCK_FENCE",
    ]));
    let stale_alive = alive(cmd_pid as i32);
    let _ = Command::new("kill")
        .args(["-KILL", &cmd_pid.to_string()])
        .status();
    drop(ctl);
    out.assert_ok();
    assert!(
        stale_alive,
        "etcdctl's command was expected to outlive its session (etcdctl 3.4)"
    );
    let theirs: i64 = std::fs::read_to_string(&rev)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ours: i64 = out.line().parse().expect("AWSFLOCK_FENCE");
    eprintln!(
        "granted {:?} after etcdctl froze, its command still running; tokens {theirs} -> {ours}",
        out.elapsed
    );
    assert!(
        ours > theirs,
        "a resource checking tokens must refuse the stale etcdctl holder: {theirs} vs {ours}"
    );
}

/// The write that took a free lock is applied but its answer is lost; the
/// retry on another member finds our own key. That key is ours: the lock is
/// held (with the token of the write that created it), not "held by
/// someone", and `--no-wait` must not give up on it. Two relays in front of
/// one member stand for two members; the first request that names the lock
/// gets no answer.
#[test]
fn a_lost_answer_to_the_write_that_took_a_free_lock_still_grants_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(etcd) = Etcd::start() else { return };
    let name = unique_name("lost");
    let armed = Arc::new(AtomicBool::new(true));
    let marker = format!("{name}/").into_bytes();
    let r1 = common::etcd::LosingRelay::start(etcd.endpoint(), marker.clone(), armed.clone());
    let r2 = common::etcd::LosingRelay::start(etcd.endpoint(), marker, armed.clone());
    let mut c = awsflock_at(&dead_endpoint());
    c.env(
        "AWSFLOCK_BACKEND",
        format!("etcd://{},{}/", r1.endpoint(), r2.endpoint()),
    );
    let out = run(c.args([
        "run",
        "--no-wait",
        "--lease-duration",
        "6s",
        &name,
        "--",
        "sh",
        "-c",
        "echo $AWSFLOCK_FENCE",
    ]));
    assert!(
        !armed.load(Ordering::SeqCst),
        "no request named the lock: {}",
        out.describe()
    );
    out.assert_ok();
    let fence: i64 = out.line().parse().expect("AWSFLOCK_FENCE");
    assert!(fence > 0, "{}", out.describe());
    // Released at the end: nothing of ours is left queued.
    assert!(queued(&etcd, &format!("{name}/")).is_empty());
}

/// The revoke that releases the lock is applied but its answer is lost; the
/// retry on another member finds the lease gone, because the first attempt
/// revoked it. That is a release, not "not held" (exit 3 told the caller
/// it had lost a lock it had just released).
#[test]
fn a_lost_answer_to_the_release_still_releases() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(etcd) = Etcd::start() else { return };
    let name = unique_name("lostrel");
    let out = run(aw(&etcd, "").args(["acquire", &name, "--json"]));
    out.assert_ok();
    let id = out.json()["lease_id"].as_str().unwrap().to_string();
    // A LeaseRevokeRequest is field 1, the lease id as a varint.
    let mut marker = vec![0x08u8];
    let mut v = u64::from_str_radix(&id, 16).unwrap();
    while v >= 0x80 {
        marker.push((v as u8) | 0x80);
        v >>= 7;
    }
    marker.push(v as u8);
    let armed = Arc::new(AtomicBool::new(true));
    let r1 = common::etcd::LosingRelay::start(etcd.endpoint(), marker.clone(), armed.clone());
    let r2 = common::etcd::LosingRelay::start(etcd.endpoint(), marker, armed.clone());
    let mut c = awsflock_at(&dead_endpoint());
    c.env(
        "AWSFLOCK_BACKEND",
        format!("etcd://{},{}/", r1.endpoint(), r2.endpoint()),
    );
    let out = run(c.args(["release", &name, &id]));
    assert!(
        !armed.load(Ordering::SeqCst),
        "no request carried the lease id: {}",
        out.describe()
    );
    out.assert_ok();
    assert!(queued(&etcd, &format!("{name}/")).is_empty());
    // Releasing it again is "not held": the lease is gone.
    let out = run(aw(&etcd, "").args(["release", &name, &id]));
    assert_ne!(out.code, 0, "{}", out.describe());
}

/// The holder's key deleted by hand (`etcdctl del`): the next waiter is
/// granted at once, and the holder notices at its next renewal, at most
/// `--renew-every` later, and stops its command (exit 4). The two commands
/// overlap for that long; nothing in the store tells the holder sooner.
#[test]
fn a_holder_whose_key_is_deleted_by_hand_stops_by_its_next_renewal() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "byhand/";
    let name = unique_name("byhand");
    let mp = format!("{p}{name}/");
    let dir = tempfile::tempdir().unwrap();
    let (h_end, w_start) = (dir.path().join("h_end"), dir.path().join("w_start"));
    let holder = spawn(aw(&etcd, p).args([
        "-q",
        "run",
        "--lease-duration",
        "6s",
        &name,
        "--",
        "sh",
        "-c",
        &format!(
            "trap 'date +%s%N > {}; exit 143' TERM; sleep 60 & wait",
            h_end.display()
        ),
    ]));
    wait_queued(&etcd, &mp, 1);
    let waiter = spawn(aw(&etcd, p).args([
        "-q",
        "run",
        "--lease-duration",
        "6s",
        &name,
        "--",
        "sh",
        "-c",
        &format!("date +%s%N > {}", w_start.display()),
    ]));
    wait_queued(&etcd, &mp, 2);
    let first = queued(&etcd, &mp)[0].0.clone();
    let deleted = now_ns();
    let out = run(etcd.etcdctl().args(["del", &first]));
    assert_eq!(out.line(), "1", "{}", out.describe());
    let w = waiter.wait(Duration::from_secs(20));
    w.assert_ok();
    let h = holder.wait(Duration::from_secs(20));
    h.assert_exit(4);
    let granted_after = (read_ns(&w_start) - deleted) as f64 / 1e9;
    let stopped_after = (read_ns(&h_end) - deleted) as f64 / 1e9;
    eprintln!(
        "after the deletion: next holder started in {granted_after:.2}s, old holder's command stopped in {stopped_after:.2}s"
    );
    // Renewals every 2 s; SIGTERM at once when one finds the key gone.
    assert!(
        stopped_after < 2.0 + 2.0,
        "stopped {stopped_after:.2}s after"
    );
}

/// Starting while the leader is frozen: the followers answer "leader
/// changed" until they elect a new leader (0.5–0.8 s here), the frozen
/// member does not answer at all. Connecting must wait for the election
/// within its 5 s, not give up because every member failed once.
#[test]
fn connecting_during_a_leader_election_waits_for_the_new_leader() {
    let Some(members) = Etcd::cluster(3) else {
        return;
    };
    let l = common::etcd::leader(&members).expect("a leader");
    // The frozen leader first in the list.
    let mut order: Vec<&Etcd> = vec![&members[l]];
    order.extend((0..3).filter(|&i| i != l).map(|i| &members[i]));
    let name = unique_name("election");
    members[l].pause();
    let out = run(aw_at(&order, "election/").args([
        "run",
        "--lease-duration",
        "6s",
        &name,
        "--",
        "true",
    ]));
    members[l].resume();
    out.assert_exit_as(0, "could not start while a new leader was elected:");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?} to get going",
        out.elapsed
    );
    eprintln!("granted {:?} after the leader froze", out.elapsed);
}

/// `etcdctl lock` is an exclusive holder: it waits while our shared
/// holders hold, and our shared contenders wait while it holds.
#[test]
fn etcdctl_lock_waits_for_our_shared_holders_and_they_for_it() {
    let Some(etcd) = Etcd::start() else { return };
    let name = unique_name("ctlrw");
    let dir = tempfile::tempdir().unwrap();
    let (readers_done, ctl_start) = (dir.path().join("r"), dir.path().join("c"));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            spawn(aw(&etcd, "").args([
                "run",
                &name,
                "--shared",
                "--",
                "sh",
                "-c",
                &format!("sleep 2; date +%s%N >> {}", readers_done.display()),
            ]))
        })
        .collect();
    let v = wait_held(&etcd, "", &name, Duration::from_secs(10));
    let start = Instant::now();
    while status(&etcd, "", &name)["holders"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "two readers never held: {v}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let ctl = spawn(etcd.etcdctl().args([
        "lock",
        &name,
        "--",
        "sh",
        "-c",
        &format!("date +%s%N > {}; sleep 1", ctl_start.display()),
    ]));
    for r in readers {
        let out = r.wait(Duration::from_secs(20));
        out.assert_ok();
    }
    let out = ctl.wait(Duration::from_secs(20));
    out.assert_ok();
    let last_reader = std::fs::read_to_string(&readers_done)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse::<i128>().unwrap())
        .max()
        .unwrap();
    assert!(
        read_ns(&ctl_start) >= last_reader,
        "etcdctl's command started while our readers held the lock"
    );
    // And a reader waits for etcdctl's holder.
    let ctl = spawn(etcd.etcdctl().args(["lock", &name, "--", "sleep", "2"]));
    let v = wait_held(&etcd, "", &name, Duration::from_secs(10));
    assert_eq!(v["owner"], "etcdctl", "{v}");
    let out = run(aw(&etcd, "").args(["acquire", &name, "--shared", "--no-wait"]));
    out.assert_exit(3);
    assert_eq!(ctl.wait(Duration::from_secs(20)).code, 0);
}

#[test]
fn a_semaphore_of_two_runs_two_commands_at_once_never_three() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "sem/";
    let name = unique_name("sem");
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<_> = (0..3)
        .map(|i| {
            spawn(aw(&etcd, p).args([
                "-q",
                "run",
                &name,
                "--max-holders",
                "2",
                "--wait-time",
                "60",
                "--",
                "sh",
                "-c",
                &timed(dir.path(), &format!("r{i}"), 2.0),
            ]))
        })
        .collect();
    for r in runs {
        let out = r.wait(Duration::from_secs(60));
        out.assert_ok();
    }
    let spans: Vec<_> = (0..3).map(|i| span(dir.path(), &format!("r{i}"))).collect();
    assert_eq!(max_overlap(&spans), 2, "spans {spans:?}");
}

#[test]
fn shared_holders_overlap_and_a_writer_waits_for_all_of_them() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "rw/";
    let name = unique_name("rw");
    let mp = format!("{p}{name}/");
    let dir = tempfile::tempdir().unwrap();
    let reader = |tag: &str, secs: f64| {
        spawn(aw(&etcd, p).args([
            "-q",
            "run",
            &name,
            "--shared",
            "--wait-time",
            "60",
            "--",
            "sh",
            "-c",
            &timed(dir.path(), tag, secs),
        ]))
    };
    let readers: Vec<_> = (0..3).map(|i| reader(&format!("r{i}"), 3.0)).collect();
    // All three readers running before the writer comes.
    let start = Instant::now();
    while !(0..3).all(|i| dir.path().join(format!("r{i}.start")).exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the three readers did not all start: {:?}",
            queued(&etcd, &mp)
        );
        thread::sleep(Duration::from_millis(20));
    }
    let writer = spawn(aw(&etcd, p).args([
        "-q",
        "run",
        &name,
        "--wait-time",
        "60",
        "--",
        "sh",
        "-c",
        &timed(dir.path(), "w", 1.0),
    ]));
    wait_queued(&etcd, &mp, 4);
    let late = reader("late", 0.5);
    let mut outs: Vec<_> = readers
        .into_iter()
        .map(|r| r.wait(Duration::from_secs(60)))
        .collect();
    outs.push(writer.wait(Duration::from_secs(60)));
    outs.push(late.wait(Duration::from_secs(60)));
    for out in &outs {
        out.assert_ok();
    }
    let rs: Vec<_> = (0..3).map(|i| span(dir.path(), &format!("r{i}"))).collect();
    let w = span(dir.path(), "w");
    let late = span(dir.path(), "late");
    assert_eq!(max_overlap(&rs), 3, "readers did not overlap: {rs:?}");
    let last_reader_end = rs.iter().map(|r| r.1).max().unwrap();
    assert!(
        w.0 >= last_reader_end,
        "writer {w:?} overlapped readers {rs:?}"
    );
    assert!(
        late.0 >= w.1,
        "late reader {late:?} overtook the writer {w:?}"
    );
}

#[test]
fn a_different_max_holders_is_a_usage_error_naming_both() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "mm/";
    let name = unique_name("mm");
    for _ in 0..2 {
        let out =
            run(aw(&etcd, p).args(["acquire", &name, "--max-holders", "2", "--wait-time", "10"]));
        out.assert_ok();
    }
    let out = run(aw(&etcd, p).args(["acquire", &name, "--max-holders", "3", "--wait-time", "10"]));
    out.assert_exit(2);
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{}", out.describe());
    assert!(
        err.contains("--max-holders 2") && err.contains("--max-holders 3"),
        "{err}"
    );
    // Our key went with the refusal: two keys remain.
    assert_eq!(queued(&etcd, &format!("{p}{name}/")).len(), 2);
}

#[test]
fn status_shows_every_holder_of_a_semaphore_and_its_waiters() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "st/";
    let name = unique_name("st");
    for who in ["ann", "bob"] {
        let out = run(aw(&etcd, p).args([
            "acquire",
            &name,
            "--max-holders",
            "2",
            "--owner",
            who,
            "--wait-time",
            "10",
        ]));
        out.assert_ok();
    }
    let third =
        spawn(aw(&etcd, p).args(["acquire", &name, "--max-holders", "2", "--wait-time", "3"]));
    wait_queued(&etcd, &format!("{p}{name}/"), 3);
    let v = status(&etcd, p, &name);
    assert_eq!(v["held"], true, "{v}");
    assert_eq!(v["max_holders"], 2, "{v}");
    assert_eq!(v["waiting"], 1, "{v}");
    let owners: Vec<&str> = v["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {v}"))
        .iter()
        .map(|h| h["owner"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(owners, vec!["ann", "bob"], "{v}");
    let text = run(aw(&etcd, p).args(["status", &name]));
    text.assert_ok();
    assert!(
        text.stdout.contains("ann") && text.stdout.contains("bob"),
        "{}",
        text.stdout
    );
    eprintln!("{}", text.stdout);
    // `list` shows the name once, with both holders.
    let ls = run(aw(&etcd, p).args(["list", "--json"]));
    ls.assert_ok();
    let all = ls.json();
    let mine: Vec<_> = all
        .as_array()
        .expect("array")
        .iter()
        .filter(|v| v["name"] == name.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{}", ls.stdout);
    assert_eq!(
        mine[0]["holders"].as_array().map(Vec::len),
        Some(2),
        "{}",
        ls.stdout
    );
    assert_eq!(mine[0]["waiting"], 1, "{}", ls.stdout);
    let out = third.wait(Duration::from_secs(30));
    out.assert_exit(3);
}

#[test]
fn etcdctl_lock_waits_for_our_shared_holders() {
    let Some(etcd) = Etcd::start() else { return };
    let prefix = format!("{}/", unique_name("realm"));
    let name = unique_name("shared");
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let out =
                run(aw(&etcd, &prefix).args(["acquire", &name, "--shared", "--wait-time", "10"]));
            out.assert_ok();
            out.line().to_string()
        })
        .collect();
    let mut ctl = spawn(
        etcd.etcdctl()
            .args(["lock", &format!("{prefix}{name}"), "echo", "got"]),
    );
    thread::sleep(Duration::from_millis(1500));
    assert!(!ctl.finished(), "etcdctl took a lock our readers hold");
    assert_eq!(
        run(aw(&etcd, &prefix).args(["release", &name, &ids[0]])).code,
        0
    );
    thread::sleep(Duration::from_millis(1000));
    assert!(!ctl.finished(), "etcdctl took it with one reader left");
    assert_eq!(
        run(aw(&etcd, &prefix).args(["release", &name, &ids[1]])).code,
        0
    );
    let out = ctl.wait(Duration::from_secs(10));
    out.assert_ok();
    assert_eq!(out.line(), "got");
}

#[test]
fn a_lock_and_a_semaphore_on_one_name_refuse_each_other() {
    let Some(etcd) = Etcd::start() else { return };
    let prefix = format!("{}/", unique_name("realm"));
    let name = unique_name("mix");
    let mp = format!("{prefix}{name}/");
    let out = run(aw(&etcd, &prefix).args(["acquire", &name, "--max-holders", "2"]));
    out.assert_ok();
    let sem = out.line().to_string();
    // Our exclusive contender behind a semaphore holder: exit 2, not a wait.
    let out = run(aw(&etcd, &prefix).args(["acquire", &name, "--wait-time", "10"]));
    out.assert_exit(2);
    assert!(out.stderr.contains("--max-holders 2"), "{}", out.describe());
    assert_eq!(queued(&etcd, &mp).len(), 1);
    assert_eq!(
        run(aw(&etcd, &prefix).args(["release", &name, &sem])).code,
        0
    );
    // A semaphore contender behind etcdctl's (exclusive) key: exit 2.
    let mut ctl = spawn(
        etcd.etcdctl()
            .args(["lock", &format!("{prefix}{name}"), "sleep", "5"]),
    );
    wait_queued(&etcd, &mp, 1);
    let out =
        run(aw(&etcd, &prefix).args(["acquire", &name, "--max-holders", "2", "--wait-time", "10"]));
    out.assert_exit(2);
    assert!(out.stderr.contains("--max-holders 1"), "{}", out.describe());
    assert!(!ctl.finished());
    assert_eq!(queued(&etcd, &mp).len(), 1);
    let out = ctl.wait(Duration::from_secs(20));
    out.assert_ok();
}

#[test]
fn a_semaphore_place_left_by_a_dead_holder_goes_to_a_waiter_when_its_lease_ends() {
    let Some(etcd) = Etcd::start() else { return };
    let p = "dead/";
    let name = unique_name("dead");
    // `acquire` exits without renewing: its holder is as good as dead,
    // and its key goes when its 3 s lease ends.
    for secs in ["3", "60"] {
        let out = run(aw(&etcd, p).args([
            "acquire",
            &name,
            "--max-holders",
            "2",
            "--lease-duration",
            secs,
            "--wait-time",
            "10",
        ]));
        out.assert_ok();
    }
    let out = run(aw(&etcd, p).args(["acquire", &name, "--max-holders", "2", "--wait-time", "30"]));
    out.assert_ok();
    assert!(
        out.elapsed > Duration::from_millis(1000) && out.elapsed < Duration::from_secs(15),
        "granted after {:?}",
        out.elapsed
    );
    eprintln!(
        "the waiter got the dead holder's place after {:?}",
        out.elapsed
    );
}
