//! End-to-end tests of input awsflock must survive: durations past their
//! documented bounds, lock names with control characters, wide characters in
//! `list`, and records in the store that another client (or a person) wrote
//! wrongly. None of it may panic, break `list` for the other locks, or leave
//! a lock that `release --force` cannot free.

use crate::common;

use common::*;

fn assert_usage(out: &Out, needle: &str) {
    out.assert_exit_as(2, "expected exit 2:");
    assert_clean_error(out);
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in the message:\n{}",
        out.describe()
    );
}

// ------------------------------------------------------------- durations

#[test]
fn a_reason_or_owner_past_its_limit_is_refused_before_anything_is_taken() {
    let (moto, t, name) = fresh_lock();
    let long_reason = "r".repeat(513);
    let long_owner = "o".repeat(257);
    for (opt, value, what) in [
        (
            "--reason",
            long_reason.as_str(),
            "--reason is 513 bytes long",
        ),
        ("--owner", long_owner.as_str(), "--owner is 257 bytes long"),
    ] {
        let out =
            run(awsflock(&moto).args(["run", &name, "--table", &t, opt, value, "--", "true"]));
        assert_usage(&out, what);
    }
    assert_eq!(status_json(&moto, &t, &name)["held"], false);
    // At the limit: accepted.
    let reason = "r".repeat(512);
    let out = run(awsflock(&moto).args([
        "run", &name, "--table", &t, "--reason", &reason, "--", "true",
    ]));
    out.assert_ok();
}

#[test]
fn lease_and_wait_beyond_their_bounds_are_refused_before_anything_is_taken() {
    let (moto, t, name) = fresh_lock();
    for (opt, value) in [
        ("--lease-duration", "1000000 years"),
        ("--lease-duration", "9000 years"),
        ("--lease-duration", "18446744073709551615"),
        ("--lease-duration", "367 days"),
        ("--wait-time", "18446744073709551615"),
        ("--wait-time", "1000000 years"),
    ] {
        let out =
            run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--json", opt, value]));
        assert_usage(&out, "at most 366 days");
    }
    // Nothing was taken by any of them.
    assert_eq!(status_json(&moto, &t, &name)["held"], false);
    // The bounds themselves are accepted.
    let out = run(awsflock(&moto).args([
        "acquire",
        &name,
        "--table",
        &t,
        "--json",
        "--lease-duration",
        "366 days",
        "--wait-time",
        "366 days",
    ]));
    out.assert_ok();
    let st = run(awsflock(&moto).args(["status", &name, "--table", &t]));
    st.assert_ok();
    let ls = run(awsflock(&moto).args(["list", "--json", "--table", &t]));
    ls.assert_ok();
    let rel = run(awsflock(&moto).args(["release", &name, "--force", "-y", "--table", &t]));
    rel.assert_ok();
}

#[test]
fn capital_m_is_refused_as_ambiguous() {
    let moto = Moto::start();
    let t = table(&moto);
    let out =
        run(awsflock(&moto).args(["acquire", &lock(), "--table", &t, "--lease-duration", "5M"]));
    assert_usage(&out, "'5m'");
    assert!(out.stderr.contains("5 months"), "{}", out.describe());
}

// ------------------------------------------------------------- lock names

#[test]
fn names_with_control_characters_are_refused() {
    let moto = Moto::start();
    let t = table(&moto);
    for name in ["a\nb", "a\x7fb", "tab\there", "esc\x1b[31m", "nul\u{85}x"] {
        for cmd in ["acquire", "status"] {
            let out = run(awsflock(&moto).args([cmd, name, "--table", &t]));
            assert_usage(&out, "control character");
        }
    }
}

#[test]
fn list_aligns_wide_characters() {
    let moto = Moto::start();
    let t = table(&moto);
    acquire(&moto, &t, "锁锁锁", &["--owner", "张三"]);
    acquire(&moto, &t, "lock🔒", &["--owner", "bob"]);
    acquire(&moto, &t, "plain-name", &["--owner", "carol"]);
    let out = run(awsflock(&moto).args(["list", "--table", &t]));
    out.assert_ok();
    // Every OWNER cell starts at the same display column.
    let cols: Vec<usize> = out
        .stdout
        .lines()
        .map(|l| {
            let owner_at = ["OWNER", "张三", "bob", "carol"]
                .iter()
                .find_map(|o| l.find(o))
                .unwrap_or_else(|| panic!("no owner in {l:?}:\n{}", out.describe()));
            display_width(&l[..owner_at])
        })
        .collect();
    assert!(
        cols.windows(2).all(|w| w[0] == w[1]),
        "columns misaligned ({cols:?}):\n{}",
        out.stdout
    );
}

/// Terminal columns of `s`: 2 for CJK and emoji, 1 otherwise (enough here).
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| if (c as u32) >= 0x1100 { 2 } else { 1 })
        .sum()
}

// ------------------------------------------------------------- planted records

/// Puts a raw DynamoDB item (attribute-value JSON) with boto3.
fn plant(moto: &Moto, t: &str, item: serde_json::Value) {
    boto(
        moto,
        &format!(
            "c.put_item(TableName={t:?}, Item=json.loads({:?}))",
            item.to_string()
        ),
    );
}

fn bad_items(now: i64) -> Vec<(&'static str, serde_json::Value, &'static str)> {
    let far = (now + 3600).to_string();
    vec![
        (
            "exp-string",
            serde_json::json!({"lock_id": {"S": "exp-string"}, "lease_id": {"S": "L1"},
                "owner": {"S": "hand"}, "lease_duration": {"N": "60"},
                "expiration_time": {"S": "soon"}}),
            "expiration_time",
        ),
        (
            "exp-missing",
            serde_json::json!({"lock_id": {"S": "exp-missing"}, "lease_id": {"S": "L2"},
                "owner": {"S": "hand"}}),
            "expiration_time",
        ),
        (
            "exp-negative",
            serde_json::json!({"lock_id": {"S": "exp-negative"}, "lease_id": {"S": "L3"},
                "owner": {"S": "hand"}, "expiration_time": {"N": "-1"}}),
            "expiration_time",
        ),
        (
            "exp-huge",
            serde_json::json!({"lock_id": {"S": "exp-huge"}, "lease_id": {"S": "L4"},
                "owner": {"S": "hand"}, "expiration_time": {"N": "9e125"}}),
            "expiration_time",
        ),
        (
            "dur-huge",
            serde_json::json!({"lock_id": {"S": "dur-huge"}, "lease_id": {"S": "L5"},
                "owner": {"S": "hand"}, "expiration_time": {"N": far},
                "lease_duration": {"N": "1000000000000000000000000000000"}}),
            "lease_duration",
        ),
        (
            "ms-huge",
            serde_json::json!({"lock_id": {"S": "ms-huge"}, "lease_id": {"S": "L6"},
                "owner": {"S": "hand"}, "expiration_time": {"N": far},
                "expires_ms": {"N": "9223372036854775807"},
                "acquired_ms": {"N": "-9223372036854775808"}}),
            "expires_ms",
        ),
        (
            "no-lease-id",
            serde_json::json!({"lock_id": {"S": "no-lease-id"}, "owner": {"N": "7"},
                "expiration_time": {"N": far}}),
            "lease_id",
        ),
    ]
}

#[test]
fn unreadable_dynamodb_records_are_listed_marked_and_never_break_list() {
    let moto = Moto::start();
    let t = table(&moto);
    acquire(&moto, &t, "good", &["--owner", "alice"]);
    let items = bad_items(now_epoch());
    for (_, item, _) in &items {
        plant(&moto, &t, item.clone());
    }
    let out = run(awsflock(&moto).args(["list", "--json", "--table", &t]));
    out.assert_ok();
    let all = out.json();
    let all = all.as_array().expect("an array");
    let by_name = |n: &str| all.iter().find(|v| v["name"] == n).cloned();
    assert_eq!(by_name("good").expect("good is listed")["owner"], "alice");
    for (name, _, attr) in &items {
        let v = by_name(name).unwrap_or_else(|| panic!("{name} not listed:\n{}", out.stdout));
        let problem = v["problem"].as_str().unwrap_or_default();
        assert!(
            problem.contains(attr),
            "{name}: problem {problem:?} should name {attr}:\n{}",
            out.stdout
        );
    }
    let text = run(awsflock(&moto).args(["list", "--table", &t]));
    text.assert_ok();
    assert!(
        text.stdout.contains("unreadable record"),
        "{}",
        text.describe()
    );
    for (name, _, attr) in &items {
        for json in [false, true] {
            let mut c = awsflock(&moto);
            c.args(["status", name, "--table", &t]);
            if json {
                c.arg("--json");
            }
            let st = run(&mut c);
            st.assert_exit_as(0, &format!("status {name}:"));
            let says = if json {
                st.json()["problem"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            } else {
                st.stdout.clone()
            };
            assert!(
                says.contains(attr) && (json || says.contains("unreadable record")),
                "status {name} should say what is wrong:\n{}",
                st.describe()
            );
        }
    }
}

#[test]
fn an_unreadable_expiry_is_not_taken_over_but_release_force_frees_it() {
    let moto = Moto::start();
    let t = table(&moto);
    let items: Vec<_> = bad_items(now_epoch())
        .into_iter()
        .filter(|(name, _, _)| name.starts_with("exp-") || *name == "no-lease-id")
        .collect();
    // Each record has a name of its own: they wait out their 7 s side by
    // side.
    std::thread::scope(|scope| {
        for (name, item, _) in items {
            let (moto, t) = (&moto, &t);
            scope.spawn(move || {
                plant(moto, t, item);
                let out = run(awsflock(moto).args([
                    "-q",
                    "acquire",
                    name,
                    "--table",
                    t,
                    "--wait-time",
                    "7s",
                ]));
                out.assert_exit_as(3, &format!("{name} must not be taken over:"));
                assert_clean_error(&out);
                assert!(out.stderr.contains("unreadable"), "{}", out.describe());
                let rel =
                    run(awsflock(moto).args(["release", name, "--force", "-y", "--table", t]));
                rel.assert_exit_as(0, &format!("release --force {name}:"));
                assert!(!rel.stderr.contains("panicked"), "{}", rel.describe());
                let got = run(awsflock(moto).args(["acquire", name, "--table", t, "--no-wait"]));
                got.assert_exit_as(0, &format!("acquire {name} after --force:"));
            });
        }
    });
}

// ------------------------------------------------------------- S3

#[test]
fn unreadable_s3_objects_are_listed_marked_and_release_force_frees_them() {
    let moto = Moto::start();
    let bucket = unique_name("bkt");
    let url = format!("s3://{bucket}/locks/");
    let out = run(awsflock(&moto).args(["table-create", "--backend", &url]));
    out.assert_ok();
    let out = run(awsflock(&moto).args(["--backend", &url, "acquire", "good"]));
    out.assert_ok();
    let mut bodies = unreadable_records();
    bodies.push((
        "exp-string",
        r#"{"name":"exp-string","lease_id":"L","state":"held","owner":"x","acquired_ms":0,
                "expires_ms":"soon","lease_duration":60}"#
            .to_string(),
    ));
    for (name, body) in &bodies {
        s3py(
            &moto,
            &format!("s3.put_object(Bucket={bucket:?}, Key=\"locks/{name}\", Body={body:?})"),
        );
    }
    let cmd = |args: &[&str]| run(awsflock(&moto).args(["--backend", &url]).args(args));
    let names: Vec<&str> = bodies.iter().map(|(n, _)| *n).collect();
    assert_listed_marked_and_freed_by_force(cmd, &names, "unreadable");
}

#[test]
fn unreadable_files_in_a_directory_store_are_listed_marked_and_release_force_frees_them() {
    let dir = scratch();
    let url = format!("file://{}", p(dir.path()));
    let cmd = |args: &[&str]| {
        let mut c = awsflock_at(&dead_endpoint());
        c.args(["--backend", &url]).args(args);
        run(&mut c)
    };
    let out = cmd(&["acquire", "good"]);
    out.assert_ok();
    let bodies = unreadable_records();
    for (name, body) in &bodies {
        std::fs::write(dir.path().join(format!("{name}.json")), body).unwrap();
    }
    let names: Vec<&str> = bodies.iter().map(|(n, _)| *n).collect();
    assert_listed_marked_and_freed_by_force(cmd, &names, "unreadable record");
}

/// Records a store cannot read: not JSON, and an expiry past any clock.
fn unreadable_records() -> Vec<(&'static str, String)> {
    vec![
        ("not-json", "hello".to_string()),
        (
            "huge-expiry",
            r#"{"name":"huge-expiry","lease_id":"L","state":"held","owner":"x","acquired_ms":0,
                "expires_ms":9223372036854775807,"lease_duration":60}"#
                .to_string(),
        ),
    ]
}

/// With the readable lock "good" held and the unreadable records `names`
/// planted, through `cmd` (awsflock on one store): `list` shows them all,
/// the unreadable ones marked; `status` says `marked`; an acquire is
/// refused (3, one clean line) until `release --force` frees them.
fn assert_listed_marked_and_freed_by_force(
    cmd: impl Fn(&[&str]) -> Out,
    names: &[&str],
    marked: &str,
) {
    let ls = cmd(&["list", "--json"]);
    ls.assert_ok();
    let all = ls.json();
    let all = all.as_array().expect("array").clone();
    assert!(all.iter().any(|v| v["name"] == "good"), "{}", ls.stdout);
    for &name in names {
        let v = all
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed:\n{}", ls.stdout));
        assert!(v["problem"].is_string(), "{name}: {v}");
        let st = cmd(&["status", name]);
        st.assert_ok();
        assert!(st.stdout.contains(marked), "{}", st.describe());
        let got = cmd(&["acquire", name, "--no-wait"]);
        got.assert_exit_as(3, &format!("{name} must not be taken over:"));
        assert_clean_error(&got);
        let rel = cmd(&["release", name, "--force", "-y"]);
        rel.assert_exit_as(0, &format!("release --force {name}:"));
        let got = cmd(&["acquire", name, "--no-wait"]);
        got.assert_exit_as(0, &format!("acquire {name} after --force:"));
    }
}

#[test]
fn an_expired_item_without_a_lease_id_is_waited_on_not_written_over_and_over() {
    let moto = Moto::start();
    let t = table(&moto);
    let old = (now_epoch() - 3600).to_string();
    plant(
        &moto,
        &t,
        serde_json::json!({"lock_id": {"S": "nolid"}, "owner": {"S": "hand"},
            "expiration_time": {"N": old}}),
    );
    let out =
        run(awsflock(&moto).args(["-v", "acquire", "nolid", "--table", &t, "--wait-time", "7s"]));
    out.assert_exit(3);
    let writes = store_requests(&out.stderr)
        .into_iter()
        .filter(|l| !l.contains("GetItem") && !l.contains("DescribeTable"))
        .count();
    // The blind grant only: no takeover can be conditioned on a missing
    // lease id, so none is tried.
    assert!(writes <= 2, "{writes} writes:\n{}", out.stderr);
    let rel = run(awsflock(&moto).args(["release", "nolid", "--force", "-y", "--table", &t]));
    rel.assert_ok();
    let got = run(awsflock(&moto).args(["acquire", "nolid", "--table", &t, "--no-wait"]));
    got.assert_ok();
}

#[test]
fn control_characters_in_stored_owner_and_reason_are_escaped_on_the_terminal() {
    let moto = Moto::start();
    let t = table(&moto);
    let far = (now_epoch() + 3600).to_string();
    plant(
        &moto,
        &t,
        serde_json::json!({"lock_id": {"S": "ctl"}, "lease_id": {"S": "L"},
            "owner": {"S": "mallory\nfake-lock  root  1  1h"}, "reason": {"S": "\u{1b}[2Jcleared"},
            "expiration_time": {"N": far}, "lease_duration": {"N": "60"}}),
    );
    let ls = run(awsflock(&moto).args(["list", "--table", &t]));
    ls.assert_ok();
    assert_eq!(
        ls.stdout.lines().count(),
        2,
        "one header, one lock:\n{}",
        ls.stdout
    );
    assert!(!ls.stdout.contains('\u{1b}'), "{:?}", ls.stdout);
    assert!(ls.stdout.contains("mallory\\nfake-lock"), "{}", ls.stdout);
    let st = run(awsflock(&moto).args(["status", "ctl", "--table", &t]));
    assert!(!st.stdout.contains('\u{1b}'), "{:?}", st.stdout);
    assert!(st.stdout.contains("mallory\\nfake-lock"), "{}", st.stdout);
    // JSON keeps the value as stored (escaped by JSON itself).
    let js = run(awsflock(&moto).args(["status", "ctl", "--json", "--table", &t]));
    assert_eq!(js.json()["owner"], "mallory\nfake-lock  root  1  1h");
}

#[test]
fn help_states_the_duration_bounds_and_exit_codes() {
    let top = run(awsflock_at(&dead_endpoint()).arg("--help"));
    top.assert_ok();
    for needle in ["366 days", "0 waits forever", "5M", "2 bad"] {
        assert!(
            top.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            top.stdout
        );
    }
    for cmd in ["acquire", "run", "renew"] {
        let h = run(awsflock_at(&dead_endpoint()).args([cmd, "--help"]));
        assert!(h.stdout.contains("366 days"), "{cmd} --help:\n{}", h.stdout);
    }
}
