//! End-to-end tests of the awsflock command line against a local moto
//! DynamoDB server. Every test starts its own server and uses its own table
//! and lock names.

use crate::common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- table-create

#[test]
fn table_create_makes_lock_id_hash_key_with_ttl_and_is_idempotent() {
    let moto = Moto::start();
    let t = table(&moto);

    let again = run(awsflock(&moto).args(["table-create", "--table", &t]));
    again.assert_exit_as(0, "second table-create:");
    let alias = run(awsflock(&moto).args(["create-table", "--table", &t]));
    alias.assert_exit_as(0, "create-table alias:");

    let desc = boto(
        &moto,
        &format!(
            r#"
d = c.describe_table(TableName={t:?})["Table"]
ttl = c.describe_time_to_live(TableName={t:?})["TimeToLiveDescription"]
print(json.dumps({{
    "keys": d["KeySchema"],
    "attrs": d["AttributeDefinitions"],
    "status": d["TableStatus"],
    "billing": d.get("BillingModeSummary", {{}}).get("BillingMode"),
    "ttl_status": ttl.get("TimeToLiveStatus"),
    "ttl_attr": ttl.get("AttributeName"),
}}))
"#
        ),
    );
    let d: serde_json::Value = serde_json::from_str(desc.trim()).unwrap();
    assert_eq!(
        d["keys"],
        serde_json::json!([{"AttributeName": "lock_id", "KeyType": "HASH"}]),
        "{d}"
    );
    assert_eq!(
        d["attrs"],
        serde_json::json!([{"AttributeName": "lock_id", "AttributeType": "S"}]),
        "{d}"
    );
    assert_eq!(d["status"], "ACTIVE", "{d}");
    assert_eq!(d["billing"], "PAY_PER_REQUEST", "{d}");
    assert_eq!(d["ttl_status"], "ENABLED", "{d}");
    assert_eq!(d["ttl_attr"], "expiration_time", "{d}");
}

#[test]
fn table_create_on_table_with_other_key_schema_exits_1_and_says_so() {
    let moto = Moto::start();
    let t = foreign_table(&moto);
    let out = run(awsflock(&moto).args(["table-create", "--table", &t]));
    out.assert_exit(1);
    assert_clean_error(&out);
    let lower = out.stderr.to_lowercase();
    assert!(
        lower.contains("key") || lower.contains("schema"),
        "the message should say the key schema is wrong:\n{}",
        out.describe()
    );
}

// ------------------------------------------------------- acquire/renew/release

#[test]
fn acquire_prints_only_a_uuid_lease_id_and_exits_0() {
    let moto = Moto::start();
    let t = table(&moto);
    let out = run(awsflock(&moto).args(["acquire", &lock(), "--table", &t]));
    out.assert_ok();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.describe());
    assert_uuid(out.line());
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
}

#[test]
fn acquire_of_held_lock_exits_3_with_no_wait_and_after_wait_time() {
    let (moto, t, name) = fresh_lock();
    let _held = acquire(&moto, &t, &name, &[]);

    let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    out.assert_exit(3);
    assert_eq!(out.line(), "", "nothing on stdout:\n{}", out.describe());
    assert!(out.elapsed < Duration::from_secs(10), "{}", out.describe());

    let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--wait-time", "2"]));
    out.assert_exit(3);
    assert!(
        out.elapsed >= Duration::from_millis(1500),
        "gave up before the wait time:\n{}",
        out.describe()
    );
    assert!(out.elapsed < Duration::from_secs(15), "{}", out.describe());
}

#[test]
fn release_frees_the_lock_and_the_previous_holders_id_cannot_release_the_next() {
    let (moto, t, name) = fresh_lock();
    let l1 = acquire(&moto, &t, &name, &[]);
    release(&moto, &t, &name, &l1);

    let l2 = acquire(&moto, &t, &name, &["--no-wait"]);
    assert_ne!(l1, l2);
    let stale = run(awsflock(&moto).args(["release", &name, &l1, "--table", &t]));
    stale.assert_exit_as(3, "an old lease must not release the new holder:");
    let blocked = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    blocked.assert_exit(3);
    release(&moto, &t, &name, &l2);
}

#[test]
fn second_release_of_the_same_lease_exits_3() {
    // As in awsflock 0.2.0: once released, the lease is not held, so
    // releasing it again reports 3.
    let (moto, t, name) = fresh_lock();
    let l1 = acquire(&moto, &t, &name, &[]);
    release(&moto, &t, &name, &l1);
    let again = run(awsflock(&moto).args(["release", &name, &l1, "--table", &t]));
    again.assert_exit(3);
    let renew = run(awsflock(&moto).args(["renew", &name, &l1, "--table", &t]));
    renew.assert_exit_as(3, "renew of a released lease:");
}

#[test]
fn release_and_renew_of_a_never_acquired_lock_exit_3() {
    let (moto, t, name) = fresh_lock();
    let fake = "00000000-0000-4000-8000-000000000000";
    let out = run(awsflock(&moto).args(["release", &name, fake, "--table", &t]));
    out.assert_exit(3);
    let out = run(awsflock(&moto).args(["renew", &name, fake, "--table", &t]));
    out.assert_exit(3);
}

#[test]
fn renew_prints_new_lease_id_and_old_id_is_no_longer_held() {
    let (moto, t, name) = fresh_lock();
    let old = acquire(&moto, &t, &name, &[]);

    let out = run(awsflock(&moto).args(["renew", &name, &old, "--table", &t]));
    out.assert_ok();
    let new = out.line().to_string();
    assert_uuid(&new);
    assert_ne!(new, old);

    let out = run(awsflock(&moto).args(["renew", &name, &old, "--table", &t]));
    out.assert_exit_as(3, "renew with the replaced id:");
    let out = run(awsflock(&moto).args(["release", &name, &old, "--table", &t]));
    out.assert_exit_as(3, "release with the replaced id:");

    let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    out.assert_exit_as(3, "still held after renew:");
    release(&moto, &t, &name, &new);
}

#[test]
fn renew_extends_a_short_lease() {
    let (moto, t, name) = fresh_lock();
    let old = acquire(&moto, &t, &name, &["--lease-duration", "2"]);
    let out = run(awsflock(&moto).args([
        "renew",
        &name,
        &old,
        "--table",
        &t,
        "--lease-duration",
        "5m",
        "--json",
    ]));
    out.assert_ok();
    let new = out.json()["lease_id"]
        .as_str()
        .unwrap_or_else(|| panic!("renew --json without lease_id:\n{}", out.describe()))
        .to_string();
    assert_uuid(&new);
    thread::sleep(Duration::from_secs(4));
    let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    out.assert_exit_as(3, "the renewed lease expired with the old duration:");
    release(&moto, &t, &name, &new);
}

#[test]
fn acquire_json_has_string_lease_id_and_integer_fence() {
    let (moto, t, name) = fresh_lock();
    let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--json"]));
    out.assert_ok();
    let v = out.json();
    assert!(v.is_object(), "{}", out.describe());
    assert_uuid(v["lease_id"].as_str().expect("lease_id string"));
    assert!(
        v["fence"].is_i64() || v["fence"].is_u64(),
        "{}",
        out.describe()
    );
}

#[test]
fn status_json_reports_holder_and_then_not_held() {
    let (moto, t, name) = fresh_lock();
    let (lease, fence) = acquire_json(
        &moto,
        &t,
        &name,
        &["--owner", "alice", "--reason", "nightly deploy"],
    );

    let out = run(awsflock(&moto).args(["status", &name, "--table", &t, "--json"]));
    out.assert_ok();
    let v = out.json();
    assert_eq!(v["name"], name.as_str(), "{v}");
    assert_eq!(v["held"], true, "{v}");
    assert_eq!(v["owner"], "alice", "{v}");
    assert_eq!(v["reason"], "nightly deploy", "{v}");
    assert_eq!(v["fence"].as_i64(), Some(fence), "{v}");
    assert_eq!(v["lease_id"], lease.as_str(), "{v}");
    for key in ["acquired_at", "expires_at"] {
        assert!(
            v.get(key).is_some_and(|x| !x.is_null()),
            "{key} missing while held: {v}"
        );
    }

    release(&moto, &t, &name, &lease);
    let out = run(awsflock(&moto).args(["status", &name, "--table", &t, "--json"]));
    assert!(
        out.code == 0 || out.code == 3,
        "status of a free lock:\n{}",
        out.describe()
    );
    let v = out.json();
    assert_eq!(v["name"], name.as_str(), "{v}");
    assert_eq!(v["held"], false, "{v}");

    let never = lock();
    let out = run(awsflock(&moto).args(["status", &never, "--table", &t, "--json"]));
    assert!(
        out.code == 0 || out.code == 3,
        "status of an unknown lock:\n{}",
        out.describe()
    );
    assert_eq!(out.json()["held"], false, "{}", out.describe());
}

#[test]
fn wait_time_zero_waits_until_the_lock_is_released() {
    let (moto, t, name) = fresh_lock();
    let held = acquire(&moto, &t, &name, &[]);
    let mut waiter =
        spawn(awsflock(&moto).args(["acquire", &name, "--table", &t, "--wait-time", "0"]));
    thread::sleep(Duration::from_secs(3));
    assert!(!waiter.finished(), "--wait-time 0 gave up while held");
    release(&moto, &t, &name, &held);
    let out = waiter.wait(Duration::from_secs(20));
    out.assert_ok();
    assert_uuid(out.line());
}

// ------------------------------------------------------------------ options

#[test]
fn global_options_work_before_or_after_the_subcommand_and_from_env() {
    let moto = Moto::start();
    let t = table(&moto);

    // (arguments, environment changes: None removes the variable)
    type Form = (Vec<String>, Vec<(&'static str, Option<String>)>);
    let forms: Vec<Form> = vec![
        (vec!["--table".into(), t.clone(), "acquire".into()], vec![]),
        (vec!["acquire".into(), "--table".into(), t.clone()], vec![]),
        (
            vec!["--tablename".into(), t.clone(), "acquire".into()],
            vec![],
        ),
        (
            vec!["acquire".into(), "--tablename".into(), t.clone()],
            vec![],
        ),
        (
            vec!["acquire".into()],
            vec![("AWSFLOCK_TABLE", Some(t.clone()))],
        ),
        (
            vec![
                "--backend".into(),
                format!("dynamodb://{t}"),
                "acquire".into(),
            ],
            vec![],
        ),
        (
            vec![
                "acquire".into(),
                "--backend".into(),
                format!("dynamodb://{t}"),
            ],
            vec![],
        ),
        (
            vec!["acquire".into()],
            vec![("AWSFLOCK_BACKEND", Some(format!("dynamodb://{t}")))],
        ),
        (
            vec![
                "--endpoint-url".into(),
                moto.endpoint.clone(),
                "-v".into(),
                "acquire".into(),
                "--table".into(),
                t.clone(),
            ],
            vec![("AWS_ENDPOINT_URL", Some(dead_endpoint()))],
        ),
        (
            vec!["acquire".into(), "--table".into(), t.clone(), "-q".into()],
            vec![
                ("AWS_ENDPOINT_URL", None),
                ("DYNAMO_ENDPOINT_URL", Some(moto.endpoint.clone())),
            ],
        ),
    ];
    for (args, envs) in forms {
        let name = lock();
        let mut cmd = awsflock(&moto);
        // The lock name goes right after the subcommand.
        let pos = args.iter().position(|a| a == "acquire").unwrap() + 1;
        let mut args = args.clone();
        args.insert(pos, name.clone());
        cmd.args(&args);
        for (k, v) in &envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = run(&mut cmd);
        out.assert_exit_as(0, &format!("args {args:?} env {envs:?}:"));
        if !args.iter().any(|a| a == "-q") {
            assert_uuid(out.line());
        }
        // The lock really went to table t.
        let item = raw_item(&moto, &t, &name);
        assert!(
            !item.is_null(),
            "args {args:?} env {envs:?}: no item in {t}"
        );
    }
}

#[test]
fn unknown_backend_scheme_is_a_usage_error() {
    let moto = Moto::start();
    let out = run(awsflock(&moto).args(["--backend", "redis://x", "acquire", &lock()]));
    out.assert_exit(2);
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
}

#[test]
fn durations_in_all_documented_forms_set_the_expiration() {
    let moto = Moto::start();
    let t = table(&moto);
    let cases: &[(&str, &str, i64)] = &[
        ("--lease-duration", "900", 900),
        ("--lease-duration", "300s", 300),
        ("--lease-duration", "15m", 900),
        ("--lease-duration", "3 minutes", 180),
        ("--lease-duration", "100hrs", 360_000),
        ("--lease-duration", "1 day", 86_400),
        ("--lease-duration", "2 hours", 7_200),
        ("--lease-duration", "1h 30m", 5_400),
        ("--expiration", "10m", 600),
    ];
    for &(flag, value, secs) in cases {
        let name = lock();
        let before = now_epoch();
        acquire(&moto, &t, &name, &[flag, value]);
        let after = now_epoch();
        let item = raw_item(&moto, &t, &name);
        let exp: i64 = item["expiration_time"]["N"]
            .as_str()
            .unwrap_or_else(|| panic!("{flag} {value:?}: no expiration_time N in {item}"))
            .parse()
            .unwrap_or_else(|e| {
                panic!("{flag} {value:?}: expiration_time not an integer ({e}): {item}")
            });
        assert!(
            exp >= before + secs - 60 && exp <= after + secs + 60,
            "{flag} {value:?}: expiration_time {exp} is not about now + {secs} (now {before})"
        );
    }
    // The default lease is two hours.
    let name = lock();
    let now = now_epoch();
    acquire(&moto, &t, &name, &[]);
    let item = raw_item(&moto, &t, &name);
    let exp: i64 = item["expiration_time"]["N"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((exp - (now + 7200)).abs() <= 60, "default lease: {item}");
}

#[test]
fn invalid_durations_are_usage_errors_on_one_line() {
    let endpoint = dead_endpoint();
    for value in ["0", "-5", "abc", "", "500ms"] {
        for sub in [
            vec!["acquire", "some-lock", "--table", "t"],
            vec![
                "renew",
                "some-lock",
                "00000000-0000-4000-8000-000000000000",
                "--table",
                "t",
            ],
        ] {
            let arg = format!("--lease-duration={value}");
            let out = run(awsflock_at(&endpoint).args(&sub).arg(&arg));
            out.assert_exit_as(2, &format!("{sub:?} {arg}:"));
            assert_clean_error(&out);
        }
    }
}

#[test]
fn invalid_lock_names_are_usage_errors_and_1024_bytes_is_fine() {
    let endpoint = dead_endpoint();
    let too_long = "x".repeat(1025);
    for name in ["", too_long.as_str()] {
        let out = run(awsflock_at(&endpoint).args(["acquire", name, "--table", "t"]));
        assert_eq!(
            out.code,
            2,
            "name of {} bytes:\n{}",
            name.len(),
            out.describe()
        );
        assert!(!out.stderr.trim().is_empty(), "{}", out.describe());
        assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    }
    let moto = Moto::start();
    let t = table(&moto);
    let mut longest = format!("{}-", lock());
    longest.push_str(&"y".repeat(1024 - longest.len()));
    assert_eq!(longest.len(), 1024);
    let lease = acquire(&moto, &t, &longest, &["--no-wait"]);
    release(&moto, &t, &longest, &lease);
}

// ------------------------------------------------------------------ failures

#[test]
fn missing_table_exits_1_and_points_to_table_create() {
    let moto = Moto::start();
    let t = unique_name("absent");
    let out = run(awsflock(&moto).args(["acquire", &lock(), "--table", &t, "--no-wait"]));
    out.assert_exit(1);
    assert_clean_error(&out);
    assert!(
        out.stderr.contains("awsflock table-create"),
        "{}",
        out.describe()
    );
}

#[test]
fn unreachable_endpoint_exits_1_within_seconds() {
    let endpoint = dead_endpoint();
    for args in [
        vec!["acquire", "some-lock", "--table", "t"],
        vec![
            "release",
            "some-lock",
            "00000000-0000-4000-8000-000000000000",
            "--table",
            "t",
        ],
    ] {
        let out = run(awsflock_at(&endpoint).args(&args));
        out.assert_exit_as(1, &format!("{args:?}:"));
        assert!(
            out.elapsed < Duration::from_secs(20),
            "{args:?} took too long:\n{}",
            out.describe()
        );
        assert_clean_error(&out);
    }
}

#[test]
fn missing_credentials_exit_1_with_a_message_about_credentials() {
    let moto = Moto::start();
    let t = table(&moto);
    let mut cmd = awsflock(&moto);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["acquire", &lock(), "--table", &t, "--no-wait"]);
    let out = run(&mut cmd);
    out.assert_exit(1);
    assert!(out.elapsed < Duration::from_secs(20), "{}", out.describe());
    assert_clean_error(&out);
    assert!(
        out.stderr.to_lowercase().contains("credential"),
        "{}",
        out.describe()
    );
}

// ------------------------------------------------------------ request costs

/// The store requests `out` logged for its lock operation: all but the one
/// DescribeTable each process sends first, to check that the table is not a
/// global table (asserted to be at most one).
fn lock_requests(out: &Out) -> Vec<&str> {
    let (describes, rest): (Vec<&str>, Vec<&str>) = store_requests(&out.stderr)
        .into_iter()
        .partition(|l| l.contains("op=DescribeTable"));
    assert!(
        describes.len() <= 1,
        "more than one DescribeTable:\n{}",
        out.describe()
    );
    rest
}

#[test]
fn verbose_logs_each_store_request_and_warm_calls_cost_one_request() {
    let (moto, t, name) = fresh_lock();

    // First use of the name may cost more; it must still be logged.
    let out = run(awsflock(&moto).args(["-v", "acquire", &name, "--table", &t]));
    out.assert_ok();
    let first = lock_requests(&out);
    assert!(
        !first.is_empty() && first.len() <= 2,
        "first acquire should log 1 or 2 store requests:\n{}",
        out.describe()
    );
    for line in &first {
        assert!(line.contains("op="), "no op= in {line:?}");
    }
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "logging went to stdout:\n{}",
        out.describe()
    );
    release(&moto, &t, &name, out.line());

    let expect_one = |out: &Out, what: &str| -> String {
        out.assert_exit_as(0, &format!("{what}:"));
        let reqs = lock_requests(out);
        assert_eq!(
            reqs.len(),
            1,
            "{what} should cost exactly one store request:\n{}",
            out.describe()
        );
        let op = reqs[0]
            .split_whitespace()
            .find_map(|w| w.strip_prefix("op="))
            .unwrap_or_else(|| panic!("{what}: no op= token in {:?}", reqs[0]));
        let op = op.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        assert!(
            !op.is_empty() && op.chars().next().unwrap().is_ascii_uppercase(),
            "{what}: op should be a DynamoDB operation name, got {op:?}"
        );
        op.to_string()
    };

    let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "-v"]));
    expect_one(&out, "warm acquire");
    let lease = out.line().to_string();
    assert_uuid(&lease);

    let out = run(awsflock(&moto).args(["renew", &name, &lease, "--table", &t, "--verbose"]));
    expect_one(&out, "renew");
    let lease = out.line().to_string();
    assert_uuid(&lease);

    let out = run(awsflock(&moto).args(["release", &name, &lease, "--table", &t, "-v"]));
    expect_one(&out, "release");
}

#[test]
fn verbose_store_request_names_the_operation() {
    let moto = Moto::start();
    let t = table(&moto);
    let out = run(awsflock(&moto).args(["-v", "status", &lock(), "--table", &t, "--json"]));
    let reqs = store_requests(&out.stderr);
    assert!(
        !reqs.is_empty(),
        "status -v logged no request:\n{}",
        out.describe()
    );
    let known = [
        "GetItem",
        "UpdateItem",
        "PutItem",
        "DeleteItem",
        "Query",
        "DescribeTable",
        "TransactWriteItems",
        "TransactGetItems",
        "BatchGetItem",
    ];
    for line in reqs {
        assert!(
            known.iter().any(|op| line.contains(&format!("op={op}"))),
            "unexpected op in {line:?}"
        );
    }
}

// ---------------------------------------------------------------- clock skew

#[test]
fn client_clock_ahead_does_not_steal_a_live_lock() {
    let moto = Moto::start();
    let Some(mut skewed) = awsflock_faketime(&moto, "+1h") else {
        skip("libfaketime is not installed (clock skew test)");
        return;
    };
    let t = table(&moto);
    let name = lock();
    let held = acquire(&moto, &t, &name, &["--lease-duration", "10m"]);
    let out = run(skewed.args(["acquire", &name, "--table", &t, "--no-wait"]));
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    out.assert_exit_as(3, "a client an hour ahead took a live lock:");
    release(&moto, &t, &name, &held);
}

#[test]
fn lock_taken_by_a_client_with_clock_behind_still_looks_held() {
    let moto = Moto::start();
    let Some(mut skewed) = awsflock_faketime(&moto, "-1h") else {
        skip("libfaketime is not installed (clock skew test)");
        return;
    };
    let t = table(&moto);
    let name = lock();
    let out = run(skewed.args(["acquire", &name, "--table", &t, "--lease-duration", "10m"]));
    out.assert_exit_as(0, "skewed acquire:");
    let held = out.line().to_string();
    assert_uuid(&held);
    let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    out.assert_exit_as(3, "a lock taken by a client an hour behind looked expired:");
    release(&moto, &t, &name, &held);
}

// ------------------------------------------------------- expiry and waiting

#[test]
fn crashed_holder_is_reclaimed_soon_after_its_lease_expires() {
    let (moto, t, name) = fresh_lock();
    let start = Instant::now();
    let _crashed = acquire(&moto, &t, &name, &["--lease-duration", "2"]);
    let out = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--wait-time", "30"]));
    out.assert_ok();
    assert_uuid(out.line());
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "reclaiming a 2 s lease took {:?}:\n{}",
        start.elapsed(),
        out.describe()
    );
}

#[test]
fn waiter_gets_the_lock_soon_after_release() {
    let (moto, t, name) = fresh_lock();
    let held = acquire(&moto, &t, &name, &[]);
    let mut waiter =
        spawn(awsflock(&moto).args(["acquire", &name, "--table", &t, "--wait-time", "30"]));
    thread::sleep(Duration::from_secs(5));
    assert!(
        !waiter.finished(),
        "waiter finished while the lock was held"
    );
    release(&moto, &t, &name, &held);
    let released = Instant::now();
    let out = waiter.wait(Duration::from_secs(40));
    let lag = released.elapsed();
    out.assert_ok();
    assert_uuid(out.line());
    assert!(
        lag < Duration::from_secs(3),
        "waiter took {lag:?} to notice the release:\n{}",
        out.describe()
    );
}

// ------------------------------------------------------------------ fencing

#[test]
fn fence_strictly_increases_across_acquire_release_cycles() {
    let (moto, t, name) = fresh_lock();
    let mut last = None;
    for _ in 0..4 {
        let (lease, fence) = acquire_json(&moto, &t, &name, &[]);
        if let Some(prev) = last {
            assert!(fence > prev, "fence went from {prev} to {fence}");
        }
        last = Some(fence);
        release(&moto, &t, &name, &lease);
    }
}

#[test]
fn fence_increases_when_an_expired_lease_is_taken_over() {
    let (moto, t, name) = fresh_lock();
    let (_, f1) = acquire_json(&moto, &t, &name, &["--lease-duration", "1"]);
    let (lease, f2) = acquire_json(&moto, &t, &name, &["--wait-time", "30"]);
    assert!(f2 > f1, "fence went from {f1} to {f2} across expiry");
    release(&moto, &t, &name, &lease);
}

#[test]
fn fence_increases_after_the_lock_item_is_deleted_by_ttl() {
    let (moto, t, name) = fresh_lock();
    let (lease, f1) = acquire_json(&moto, &t, &name, &[]);
    release(&moto, &t, &name, &lease);
    let (_, f2) = acquire_json(&moto, &t, &name, &["--lease-duration", "1"]);
    assert!(f2 > f1, "fence went from {f1} to {f2}");
    thread::sleep(Duration::from_secs(2));
    delete_item(&moto, &t, &name);
    assert!(raw_item(&moto, &t, &name).is_null());
    let (lease, f3) = acquire_json(&moto, &t, &name, &["--no-wait"]);
    assert!(
        f3 > f2,
        "fence went from {f2} to {f3} after the item was deleted"
    );
    release(&moto, &t, &name, &lease);
}

#[test]
fn fence_increases_after_old_client_overwrote_the_lock() {
    let (moto, t, name) = fresh_lock();
    let (lease, f1) = acquire_json(&moto, &t, &name, &[]);
    release(&moto, &t, &name, &lease);

    let out = run(peer(&moto).args(["acquire", &name, "--tablename", &t, "--no-wait"]));
    out.assert_exit_as(0, "old client acquire:");
    let old_lease = out.line().to_string();
    let out = run(peer(&moto).args(["release", &name, &old_lease, "--tablename", &t]));
    out.assert_exit_as(0, "old client release:");

    let (lease, f2) = acquire_json(&moto, &t, &name, &["--no-wait"]);
    assert!(
        f2 > f1,
        "fence went from {f1} to {f2} after the old client used the lock"
    );
    release(&moto, &t, &name, &lease);
}
