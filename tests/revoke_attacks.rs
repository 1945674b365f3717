//! Attacks on the forced release (revoke and confirm): a `run` holder that
//! `release --force` would rather free at once than revoke.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

fn n_of(item: &serde_json::Value, attr: &str) -> u64 {
    item[attr]["N"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{attr} is not a number in {item}"))
}

fn held(cmd: &dyn Fn() -> std::process::Command, name: &str) -> bool {
    let out = run(cmd().args(["status", name, "--json"]));
    out.assert_exit_as(0, "status:");
    out.json()["held"] == serde_json::Value::Bool(true)
}

/// A `run` holder ticking, a `run` waiter behind it, and `release --force
/// --yes` 0.8 s later; `took_last` (run while the holder holds) checks
/// that the holder took its block's last token. The holder's last tick
/// must come before the waiter's first, and the holder must say it was
/// released by force.
fn revoke_after(
    cmd: &dyn Fn() -> std::process::Command,
    name: &str,
    holder_args: &[&str],
    took_last: &dyn Fn(),
) {
    let dir = scratch();
    let log = dir.path().join("ticks");
    // A 12 s lease is renewed every 4 s: a holder freed under its command
    // keeps running for seconds, while a waiter polls several times a
    // second.
    let run_cmd = |tag: &str, rounds: u32, extra: &[&str]| {
        let mut c = cmd();
        c.args(["run", name, "--lease-duration", "12"])
            .args(extra)
            .args(["--", "sh", "-c", &ticking(&log, tag, rounds)]);
        c
    };
    let holder = spawn(&mut run_cmd("H", 0, holder_args));
    let started = Instant::now();
    while !held(cmd, name) {
        assert!(started.elapsed() < Duration::from_secs(15), "never taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    took_last();
    let waiter = spawn(&mut run_cmd("W", 5, &[]));
    std::thread::sleep(Duration::from_millis(800));
    let release = run_timeout(
        cmd().args(["release", name, "--force", "--yes"]),
        Duration::from_secs(30),
    );
    let holder = holder.wait(Duration::from_secs(40));
    let waiter = waiter.wait(Duration::from_secs(40));
    let (h, w) = (stamps(&log, "H"), stamps(&log, "W"));
    let (Some(last_h), Some(first_w)) = (h.iter().max(), w.iter().min()) else {
        panic!(
            "both commands must have run\nholder:\n{}\nwaiter:\n{}",
            holder.describe(),
            waiter.describe()
        );
    };
    assert!(
        last_h < first_w,
        "the waiter's command started {:.3}s before the holder's stopped\nrelease:\n{}\nholder:\n{}",
        (*last_h as f64 - *first_w as f64) / 1e9,
        release.describe(),
        holder.describe()
    );
    release.assert_exit_as(0, "release:");
    holder.assert_exit_as(4, "holder:");
    assert!(
        holder.stderr.contains("released by force"),
        "{}",
        holder.describe()
    );
    waiter.assert_exit_as(0, "waiter:");
}

/// A `run` holder that got the last token of its item's block of fencing
/// tokens (fence = fence_limit: the item cannot grant from its counter
/// any more) is still a supervised `run`: `release --force` must revoke it
/// and hand the lock on only once it stopped, not free the lock under its
/// running command.
#[test]
fn dynamodb_a_run_holding_the_last_token_of_its_block_is_revoked_not_released() {
    let moto = Moto::start();
    let table = table(&moto);
    let name = unique_name("lasttoken");
    // An item of ours, released, one token left in its block.
    let lease = acquire(&moto, &table, &name, &[]);
    release(&moto, &table, &name, &lease);
    boto(
        &moto,
        &format!(
            r#"
k = {{"lock_id": {{"S": {name:?}}}}}
i = c.get_item(TableName={table:?}, Key=k, ConsistentRead=True)["Item"]
lim = int(i["fence_limit"]["N"])
c.update_item(TableName={table:?}, Key=k, UpdateExpression="SET fence = :f",
              ExpressionAttributeValues={{":f": {{"N": str(lim - 1)}}}})
"#
        ),
    );
    let cmd = || {
        let mut c = awsflock(&moto);
        c.env("AWSFLOCK_BACKEND", format!("dynamodb://{table}"));
        c
    };
    revoke_after(&cmd, &name, &[], &|| {
        let item = raw_item(&moto, &table, &name);
        assert_eq!(n_of(&item, "fence"), n_of(&item, "fence_limit"), "{item}");
    });
}

/// The same on S3: the record's last token.
#[test]
fn s3_a_run_holding_the_last_token_of_its_block_is_revoked_not_released() {
    let moto = Moto::start();
    let bucket = unique_name("bkt").to_lowercase().replace('_', "-");
    let url = format!("s3://{bucket}/locks/");
    let cmd = || {
        let mut c = awsflock(&moto);
        c.env("AWSFLOCK_BACKEND", &url);
        c
    };
    let out = run(cmd().args(["table-create", "--backend", &url]));
    out.assert_ok();
    let name = unique_name("lasttoken");
    let out = run(cmd().args(["acquire", &name]));
    out.assert_ok();
    let out = run(cmd().args(["release", &name, out.line()]));
    out.assert_ok();
    let s3 = format!(
        r#"
s3 = boto3.client("s3", endpoint_url=os.environ["AWSFLOCK_TEST_ENDPOINT"],
                  region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test")
key = "locks/" + {name:?}
"#
    );
    boto(
        &moto,
        &format!(
            r#"{s3}
r = json.loads(s3.get_object(Bucket={bucket:?}, Key=key)["Body"].read())
r["fence"] = r["fence_limit"] - 1
s3.put_object(Bucket={bucket:?}, Key=key, Body=json.dumps(r).encode())
"#
        ),
    );
    revoke_after(&cmd, &name, &[], &|| {
        let out = boto(
            &moto,
            &format!(
                r#"{s3}
r = json.loads(s3.get_object(Bucket={bucket:?}, Key=key)["Body"].read())
print(r["fence"] == r["fence_limit"])
"#
            ),
        );
        assert_eq!(out.trim(), "True", "the holder must hold the last token");
    });
}

/// On etcd, a `run --shared` holder (a reader) is as supervised as an
/// exclusive one: `release --force` must revoke it, not free the name under
/// its running command while a writer waits.
#[cfg(feature = "etcd")]
#[test]
fn etcd_a_shared_run_holder_is_revoked_not_released() {
    let etcd =
        common::etcd::Etcd::start().expect("this test needs /usr/bin/etcd: run scripts/setup.sh");
    let url = format!("etcd://{}/{}/", etcd.endpoint(), unique_name("locks"));
    let cmd = || {
        let mut c = awsflock_at(&dead_endpoint());
        c.env("AWSFLOCK_BACKEND", &url);
        c
    };
    let name = unique_name("reader");
    revoke_after(&cmd, &name, &["--shared"], &|| {});
}
