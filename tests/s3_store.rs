//! End-to-end tests of what is particular to `--backend s3://BUCKET/PREFIX`
//! (the bucket, the objects, request counts, fresh grants racing), against a
//! local moto S3 server; the behaviour every store shares is in
//! tests/conformance.rs. Every test starts its own server and uses its own
//! bucket and lock names.

use crate::common;

use common::*;
use std::process::Command;
use std::thread;
use std::time::Duration;

/// The key prefix every test uses, so that keys outside it are also exercised.
const PREFIX: &str = "locks/";

/// A store in a fresh bucket (made with `table-create`); returns (bucket, backend URL).
fn store(moto: &Moto) -> (String, String) {
    let bucket = unique_name("bkt");
    let url = format!("s3://{bucket}/{PREFIX}");
    let out = run(awsflock(moto).args(["table-create", "--backend", &url]));
    out.assert_exit_as(0, "table-create failed:");
    (bucket, url)
}

fn cmd(moto: &Moto, url: &str, args: &[&str]) -> Command {
    let mut c = awsflock(moto);
    // Before the subcommand, so that it never lands after `run ... --`.
    c.args(["--backend", url]).args(args);
    c
}

fn acquire_s3(moto: &Moto, url: &str, name: &str, extra: &[&str]) -> String {
    let out = run(cmd(moto, url, &["acquire", name]).args(extra));
    out.assert_exit_as(0, &format!("acquire {name} failed:"));
    let id = out.line().to_string();
    assert_uuid(&id);
    id
}

fn acquire_json_s3(moto: &Moto, url: &str, name: &str, extra: &[&str]) -> (String, i64) {
    let out = run(cmd(moto, url, &["acquire", name, "--json"]).args(extra));
    out.assert_exit_as(0, "acquire --json failed:");
    let v = out.json();
    let lease = v["lease_id"].as_str().expect("lease_id").to_string();
    let fence = v["fence"]
        .as_i64()
        .unwrap_or_else(|| panic!("fence is not an integer:\n{}", out.describe()));
    (lease, fence)
}

fn release_s3(moto: &Moto, url: &str, name: &str, lease: &str) {
    let out = run(&mut cmd(moto, url, &["release", name, lease]));
    out.assert_exit_as(0, &format!("release {name} failed:"));
}

fn status_json(moto: &Moto, url: &str, name: &str) -> serde_json::Value {
    let out = run(&mut cmd(moto, url, &["status", name, "--json"]));
    out.assert_exit_as(0, &format!("status {name}:"));
    out.json()
}

/// The object at `key` parsed as JSON, or Null when absent.
fn object_json(moto: &Moto, bucket: &str, key: &str) -> serde_json::Value {
    let out = s3py(
        moto,
        &format!(
            r#"
try:
    body = s3.get_object(Bucket={bucket:?}, Key={key:?})["Body"].read()
    print(json.dumps(json.loads(body)))
except s3.exceptions.NoSuchKey:
    print("null")
"#
        ),
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

// ---------------------------------------------------------------- table-create

#[test]
fn table_create_makes_the_bucket_and_is_idempotent() {
    let moto = Moto::start();
    let (bucket, url) = store(&moto);
    let out = s3py(
        &moto,
        &format!(
            r#"
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
print({bucket:?} in names)
"#
        ),
    );
    assert_eq!(out.trim(), "True", "bucket {bucket} was not created");
    let again = run(&mut cmd(&moto, &url, &["table-create"]));
    again.assert_exit_as(0, "second table-create:");
    // A bucket made by someone else (here: boto) is fine too.
    let other = unique_name("bkt");
    s3py(&moto, &format!("s3.create_bucket(Bucket={other:?})"));
    let out = run(awsflock(&moto).args(["table-create", "--backend", &format!("s3://{other}")]));
    out.assert_exit_as(0, "existing bucket:");
}

#[test]
fn missing_bucket_exits_1_with_one_line_pointing_to_table_create() {
    let moto = Moto::start();
    let bucket = unique_name("nobkt");
    let url = format!("s3://{bucket}/{PREFIX}");
    for args in [
        vec!["acquire", "x", "--no-wait"],
        vec!["status", "x"],
        vec!["list"],
    ] {
        let out = run(&mut cmd(&moto, &url, &args));
        out.assert_exit_as(1, &format!("{args:?}:"));
        assert_clean_error(&out);
        assert!(
            out.stderr.contains(&bucket) && out.stderr.contains("table-create"),
            "{args:?} should name the bucket and table-create:\n{}",
            out.describe()
        );
    }
}

// ------------------------------------------------------- acquire/renew/release

#[test]
fn warm_acquire_costs_two_requests_and_renew_release_two_from_the_cli() {
    let moto = Moto::start();
    let (_, url) = store(&moto);
    let name = lock();
    let first = acquire_s3(&moto, &url, &name, &[]);
    release_s3(&moto, &url, &name, &first);

    let count = |out: &Out, what: &str, n: usize| {
        out.assert_exit_as(0, &format!("{what}:"));
        let reqs = store_requests(&out.stderr);
        assert_eq!(
            reqs.len(),
            n,
            "{what} should cost {n} requests:\n{}",
            out.describe()
        );
        for line in reqs {
            assert!(
                line.contains("op=GetObject") || line.contains("op=PutObject"),
                "{what}: unexpected op in {line:?}"
            );
        }
    };
    let out = run(&mut cmd(&moto, &url, &["-v", "acquire", &name]));
    count(&out, "warm acquire", 2);
    let out = run(&mut cmd(&moto, &url, &["-v", "renew", &name, out.line()]));
    count(&out, "renew", 2);
    let out = run(&mut cmd(&moto, &url, &["-v", "release", &name, out.line()]));
    count(&out, "release", 2);
}

#[test]
fn run_renews_and_releases_with_one_request_each() {
    let moto = Moto::start();
    let (_, url) = store(&moto);
    let name = lock();
    let warm = acquire_s3(&moto, &url, &name, &[]);
    release_s3(&moto, &url, &name, &warm);

    let out = run(&mut cmd(
        &moto,
        &url,
        &[
            "-v",
            "run",
            &name,
            "--lease-duration",
            "3",
            "--renew-every",
            "1",
            "--",
            "sleep",
            "2.5",
        ],
    ));
    out.assert_ok();
    let reqs = store_requests(&out.stderr);
    let puts = reqs.iter().filter(|l| l.contains("op=PutObject")).count();
    let gets = reqs.iter().filter(|l| l.contains("op=GetObject")).count();
    let renewals = out.stderr.matches("renewed").count();
    assert!(renewals >= 1, "no renewal logged:\n{}", out.describe());
    // The acquire's GET and PUT, one PUT per renewal, one PUT for the release.
    assert_eq!(gets, 1, "{}", out.describe());
    assert_eq!(puts, 2 + renewals, "{}", out.describe());
    assert_eq!(status_json(&moto, &url, &name)["held"], false);
}

// ------------------------------------------------------------- the object

#[test]
fn lock_object_is_json_readable_with_boto_and_the_mark_sits_beside_it() {
    let moto = Moto::start();
    let (bucket, url) = store(&moto);
    let name = lock();
    let (lease, fence) = acquire_json_s3(
        &moto,
        &url,
        &name,
        &["--owner", "alice", "--reason", "nightly deploy"],
    );
    let v = object_json(&moto, &bucket, &format!("{PREFIX}{name}"));
    assert_eq!(v["name"], name.as_str(), "{v}");
    assert_eq!(v["owner"], "alice", "{v}");
    assert_eq!(v["reason"], "nightly deploy", "{v}");
    assert_eq!(v["fence"].as_i64(), Some(fence), "{v}");
    assert_eq!(v["lease_id"], lease.as_str(), "{v}");
    assert_eq!(v["state"], "held", "{v}");
    let expires = v["expires_ms"].as_i64().expect("expires_ms");
    let hours2 = (now_epoch() + 7200) * 1000;
    assert!(
        (expires - hours2).abs() < 60_000,
        "expires_ms {expires} is not about two hours from now: {v}"
    );

    let mark = object_json(
        &moto,
        &bucket,
        &format!("{PREFIX}__awsflock__/fence/{name}"),
    );
    let hw = mark["fence_hw"].as_i64().expect("fence_hw");
    assert!(hw >= fence, "mark {hw} is below the token {fence}");

    release_s3(&moto, &url, &name, &lease);
    let v = object_json(&moto, &bucket, &format!("{PREFIX}{name}"));
    assert_eq!(v["state"], "released", "{v}");
    assert_eq!(v["released_lease"], lease.as_str(), "{v}");
}

#[test]
fn an_object_that_is_not_a_lock_record_counts_as_held_and_is_left_alone() {
    let moto = Moto::start();
    let (bucket, url) = store(&moto);
    let name = lock();
    let key = format!("{PREFIX}{name}");
    s3py(
        &moto,
        &format!(r#"s3.put_object(Bucket={bucket:?}, Key={key:?}, Body=b"hello")"#),
    );
    // Unreadable records count as held (DESIGN.md, "Unreadable records").
    let out = run(&mut cmd(&moto, &url, &["acquire", &name, "--no-wait"]));
    out.assert_exit(3);
    assert_clean_error(&out);
    assert!(
        out.stderr.contains(&key) && out.stderr.contains("unreadable record"),
        "should name the key and say it cannot be read:\n{}",
        out.describe()
    );
    let body = s3py(
        &moto,
        &format!(r#"print(s3.get_object(Bucket={bucket:?}, Key={key:?})["Body"].read().decode())"#),
    );
    assert_eq!(body.trim(), "hello", "the object was overwritten");
}

#[test]
fn lock_names_too_long_for_the_key_limit_are_usage_errors() {
    let moto = Moto::start();
    let (_, url) = store(&moto);
    let long = "n".repeat(1010);
    let out = run(&mut cmd(&moto, &url, &["acquire", &long, "--no-wait"]));
    out.assert_exit(2);
    assert_clean_error(&out);
}

// ------------------------------------------------------------------ fencing

#[test]
fn fence_increases_after_the_lock_object_is_deleted() {
    let moto = Moto::start();
    let (bucket, url) = store(&moto);
    let name = lock();
    let key = format!("{PREFIX}{name}");
    let (lease, f1) = acquire_json_s3(&moto, &url, &name, &[]);
    release_s3(&moto, &url, &name, &lease);
    let (_, f2) = acquire_json_s3(&moto, &url, &name, &["--lease-duration", "1"]);
    assert!(f2 > f1, "fence went from {f1} to {f2}");
    thread::sleep(Duration::from_secs(2));
    s3py(
        &moto,
        &format!("s3.delete_object(Bucket={bucket:?}, Key={key:?})"),
    );
    assert!(object_json(&moto, &bucket, &key).is_null());
    let (lease, f3) = acquire_json_s3(&moto, &url, &name, &["--no-wait"]);
    assert!(
        f3 > f2,
        "fence went from {f2} to {f3} after the object was deleted"
    );
    release_s3(&moto, &url, &name, &lease);
    // And again, deleting a released record.
    s3py(
        &moto,
        &format!("s3.delete_object(Bucket={bucket:?}, Key={key:?})"),
    );
    let (lease, f4) = acquire_json_s3(&moto, &url, &name, &["--no-wait"]);
    assert!(f4 > f3, "fence went from {f3} to {f4}");
    release_s3(&moto, &url, &name, &lease);
}

// ---------------------------------------------------------------------- run

#[test]
fn parallel_runs_never_overlap() {
    let moto = Moto::start();
    let (_, url) = store(&moto);
    let name = lock();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        r#"echo "begin $AWSFLOCK_FENCE $(date +%s.%N)" >> '{log}'; sleep 0.4; echo "end $AWSFLOCK_FENCE $(date +%s.%N)" >> '{log}'"#,
        log = log.display()
    );
    let runs: Vec<Running> = (0..4)
        .map(|_| {
            spawn(&mut cmd(
                &moto,
                &url,
                &["run", &name, "--wait-time", "60", "-c", &script],
            ))
        })
        .collect();
    for r in runs {
        let out = r.wait(Duration::from_secs(90));
        out.assert_ok();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 8, "every run should log twice:\n{text}");
    let mut last_time = 0.0f64;
    let mut last_fence = 0i64;
    for pair in lines.chunks(2) {
        assert_eq!(pair[0][0], "begin", "runs overlapped:\n{text}");
        assert_eq!(pair[1][0], "end", "runs overlapped:\n{text}");
        assert_eq!(pair[0][1], pair[1][1], "runs overlapped:\n{text}");
        let fence: i64 = pair[0][1].parse().unwrap();
        assert!(fence > last_fence, "fences not increasing:\n{text}");
        last_fence = fence;
        let (t0, t1): (f64, f64) = (pair[0][2].parse().unwrap(), pair[1][2].parse().unwrap());
        assert!(t0 >= last_time && t1 >= t0, "times interleave:\n{text}");
        last_time = t1;
    }
}

// ------------------------------------------------------------ status and list

#[test]
fn status_and_list_json_report_held_locks_only() {
    let moto = Moto::start();
    let (bucket, url) = store(&moto);
    let (a, b, free) = (lock(), lock(), lock());
    let (la, fa) = acquire_json_s3(&moto, &url, &a, &["--owner", "alice", "--reason", "deploy"]);
    let (lb, _) = acquire_json_s3(&moto, &url, &b, &[]);
    let (lf, _) = acquire_json_s3(&moto, &url, &free, &[]);
    release_s3(&moto, &url, &free, &lf);
    // An object outside the prefix is not a lock of this store.
    s3py(
        &moto,
        &format!(r#"s3.put_object(Bucket={bucket:?}, Key="elsewhere/x", Body=b"{{}}")"#),
    );

    let v = status_json(&moto, &url, &a);
    assert_eq!(v["name"], a.as_str(), "{v}");
    assert_eq!(v["held"], true, "{v}");
    assert_eq!(v["owner"], "alice", "{v}");
    assert_eq!(v["reason"], "deploy", "{v}");
    assert_eq!(v["fence"].as_i64(), Some(fa), "{v}");
    assert_eq!(v["lease_id"], la.as_str(), "{v}");
    for key in ["acquired_at", "expires_at"] {
        assert!(v.get(key).is_some_and(|x| !x.is_null()), "{key}: {v}");
    }
    assert_eq!(status_json(&moto, &url, &free)["held"], false);
    assert_eq!(status_json(&moto, &url, &lock())["held"], false);

    let out = run(&mut cmd(&moto, &url, &["list", "--json"]));
    out.assert_ok();
    let list = out.json();
    let names: Vec<&str> = list
        .as_array()
        .expect("list --json prints an array")
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(names, want, "{list}");
    assert!(list.as_array().unwrap().iter().all(|i| i["held"] == true));

    release_s3(&moto, &url, &a, &la);
    release_s3(&moto, &url, &b, &lb);
    let out = run(&mut cmd(&moto, &url, &["list", "--json"]));
    out.assert_ok();
    assert_eq!(out.json(), serde_json::json!([]), "{}", out.describe());
}
