//! Interoperability with the awsflock 0.2.0 Python client sharing the same
//! table: each side must respect, renew and release the other's leases.

use crate::common;

use common::*;
use std::thread;
use std::time::Duration;

fn old_acquire(moto: &Moto, t: &str, name: &str, extra: &[&str]) -> Out {
    run(peer(moto)
        .args(["acquire", name, "--tablename", t])
        .args(extra))
}

fn assert_no_traceback(out: &Out) {
    assert!(
        !out.stderr.contains("Traceback"),
        "the old client crashed:\n{}",
        out.describe()
    );
}

#[test]
fn old_client_holding_blocks_our_no_wait_acquire() {
    let (moto, t, name) = fresh_lock();
    let out = old_acquire(&moto, &t, &name, &["--no-wait"]);
    out.assert_exit_as(0, "old acquire:");
    let old_lease = out.line().to_string();

    let ours = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    ours.assert_exit(3);

    let status = run(awsflock(&moto).args(["status", &name, "--table", &t, "--json"]));
    status.assert_ok();
    let v = status.json();
    assert_eq!(v["held"], true, "{v}");
    assert_eq!(v["lease_id"], old_lease.as_str(), "{v}");
}

#[test]
fn our_lock_blocks_old_client_no_wait_acquire_without_traceback() {
    let (moto, t, name) = fresh_lock();
    let lease = acquire(&moto, &t, &name, &[]);
    let out = old_acquire(&moto, &t, &name, &["--no-wait"]);
    assert_no_traceback(&out);
    out.assert_exit(3);
    release(&moto, &t, &name, &lease);
}

#[test]
fn old_lease_renewed_by_us_is_released_by_old_client_with_the_new_id() {
    let (moto, t, name) = fresh_lock();
    let out = old_acquire(&moto, &t, &name, &["--no-wait"]);
    out.assert_exit_as(0, "old acquire:");
    let old_lease = out.line().to_string();

    let out = run(awsflock(&moto).args(["renew", &name, &old_lease, "--table", &t]));
    out.assert_exit_as(0, "our renew of an old lease:");
    let new_lease = out.line().to_string();
    assert_uuid(&new_lease);
    assert_ne!(new_lease, old_lease);

    let out = run(peer(&moto).args(["release", &name, &old_lease, "--tablename", &t]));
    assert_no_traceback(&out);
    out.assert_exit_as(3, "the replaced id still released:");

    let out = run(peer(&moto).args(["release", &name, &new_lease, "--tablename", &t]));
    assert_no_traceback(&out);
    out.assert_exit_as(0, "old release with our new id:");

    let (lease, _) = acquire_json(&moto, &t, &name, &["--no-wait"]);
    release(&moto, &t, &name, &lease);
}

#[test]
fn our_lease_renewed_by_old_client_is_released_by_us_with_its_id() {
    let (moto, t, name) = fresh_lock();
    let lease = acquire(&moto, &t, &name, &[]);

    let out = run(peer(&moto).args(["renew", &name, &lease, "--tablename", &t]));
    assert_no_traceback(&out);
    out.assert_exit_as(0, "old renew of our lease:");
    let renewed = out.line().to_string();
    assert_uuid(&renewed);

    let stale = run(awsflock(&moto).args(["release", &name, &lease, "--table", &t]));
    stale.assert_exit(3);

    let blocked = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    blocked.assert_exit_as(3, "a lease renewed by the old client looked free:");

    release(&moto, &t, &name, &renewed);
    let again = acquire(&moto, &t, &name, &["--no-wait"]);
    release(&moto, &t, &name, &again);
}

#[test]
fn lock_released_by_us_is_taken_by_old_client_at_once() {
    let (moto, t, name) = fresh_lock();
    let lease = acquire(&moto, &t, &name, &[]);
    release(&moto, &t, &name, &lease);

    let out = old_acquire(&moto, &t, &name, &["--no-wait"]);
    assert_no_traceback(&out);
    out.assert_ok();
    let old_lease = out.line().to_string();

    let ours = run(awsflock(&moto).args(["acquire", &name, "--table", &t, "--no-wait"]));
    ours.assert_exit(3);

    let out = run(peer(&moto).args(["release", &name, &old_lease, "--tablename", &t]));
    out.assert_ok();
    let lease = acquire(&moto, &t, &name, &["--no-wait"]);
    release(&moto, &t, &name, &lease);
}

#[test]
fn our_item_carries_lease_id_and_integer_expiration_time() {
    let (moto, t, name) = fresh_lock();
    let before = now_epoch();
    let lease = acquire(&moto, &t, &name, &["--lease-duration", "10m"]);
    let item = raw_item(&moto, &t, &name);
    assert_eq!(item["lock_id"]["S"], name.as_str(), "{item}");
    assert_eq!(item["lease_id"]["S"], lease.as_str(), "{item}");
    let exp = item["expiration_time"]["N"]
        .as_str()
        .unwrap_or_else(|| panic!("expiration_time is not N: {item}"));
    assert!(
        exp.chars().all(|c| c.is_ascii_digit()),
        "expiration_time is not an integer string: {item}"
    );
    let exp: i64 = exp.parse().unwrap();
    assert!(
        (exp - (before + 600)).abs() <= 60,
        "expiration_time {exp} is not within a minute of now + 10m ({})",
        before + 600
    );

    // The same after a renew.
    let out = run(awsflock(&moto).args([
        "renew",
        &name,
        &lease,
        "--table",
        &t,
        "--lease-duration",
        "20m",
    ]));
    out.assert_ok();
    let renewed = out.line().to_string();
    let item = raw_item(&moto, &t, &name);
    assert_eq!(item["lease_id"]["S"], renewed.as_str(), "{item}");
    let exp: i64 = item["expiration_time"]["N"]
        .as_str()
        .unwrap_or_else(|| panic!("expiration_time is not N: {item}"))
        .parse()
        .unwrap_or_else(|e| panic!("expiration_time not an integer ({e}): {item}"));
    assert!(
        (exp - (now_epoch() + 1200)).abs() <= 60,
        "after renew: expiration_time {exp} is not within a minute of now + 20m"
    );
}

#[test]
fn old_client_waiting_gets_the_lock_after_we_release() {
    let (moto, t, name) = fresh_lock();
    let lease = acquire(&moto, &t, &name, &[]);
    let mut waiter =
        spawn(peer(&moto).args(["acquire", &name, "--tablename", &t, "--wait-time", "30"]));
    // The old client polls at 0, 1, 3, 7 and 15 s after start; release
    // between its first polls.
    thread::sleep(Duration::from_millis(1500));
    assert!(
        !waiter.finished(),
        "old client finished while we held the lock"
    );
    release(&moto, &t, &name, &lease);
    let out = waiter.wait(Duration::from_secs(60));
    assert_no_traceback(&out);
    out.assert_ok();
    assert_uuid(out.line());
}

#[test]
fn table_created_by_old_client_is_usable_by_us() {
    let moto = Moto::start();
    let t = unique_name("oldtbl");
    let out = run(peer(&moto).args(["create-table", "--tablename", &t]));
    assert_no_traceback(&out);
    out.assert_exit_as(0, "old create-table:");

    let again = run(awsflock(&moto).args(["table-create", "--table", &t]));
    again.assert_ok();

    let name = lock();
    let lease = acquire(&moto, &t, &name, &[]);
    let out = old_acquire(&moto, &t, &name, &["--no-wait"]);
    out.assert_exit(3);
    release(&moto, &t, &name, &lease);
}

#[test]
fn expired_old_client_lease_is_taken_only_after_its_own_five_second_margin() {
    let (moto, t, name) = fresh_lock();
    let out = old_acquire(&moto, &t, &name, &["--no-wait", "--lease-duration", "2"]);
    out.assert_exit_as(0, "old acquire:");
    let item = raw_item(&moto, &t, &name);
    let exp: i64 = item["expiration_time"]["N"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no expiration_time: {item}"));
    let st = run(awsflock(&moto).args(["status", &name, "--table", &t, "--json"]));
    assert_eq!(st.json()["held"], true, "{}", st.describe());
    let out = run(awsflock(&moto).args([
        "acquire",
        &name,
        "--table",
        &t,
        "--wait-time",
        "30",
        "--json",
    ]));
    out.assert_ok();
    let ours = raw_item(&moto, &t, &name);
    let acquired_ms: i64 = ours["acquired_ms"]["N"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no acquired_ms: {ours}"));
    let after = acquired_ms - exp * 1000;
    println!("figures: old_lease_takeover_after_expiration_time_ms={after}");
    // awsflock 0.2.0 takes over once its clock is more than 5 s past
    // expiration_time; so do we, on the store's clock.
    assert!(
        after >= 5000,
        "an awsflock 0.2.0 lease was taken {after} ms after its expiration_time (0.2.0 waits 5 s)"
    );
    assert!(after < 9000, "taken {after} ms after expiration_time");
}

/// Semaphore and shared holders keep the item "held" for awsflock 0.2.0
/// while any of them holds, and it takes the name once the last has gone.
#[test]
fn old_client_never_joins_our_semaphore_or_shared_holders() {
    let moto = Moto::start();
    let t = table(&moto);
    for flags in [vec!["--max-holders", "2"], vec!["--shared"]] {
        let name = lock();
        let a = acquire(&moto, &t, &name, &flags);
        let b = acquire(&moto, &t, &name, &flags);
        let out = old_acquire(&moto, &t, &name, &["--no-wait"]);
        assert_no_traceback(&out);
        out.assert_exit_as(3, &format!("{flags:?}, two of ours hold:"));
        release(&moto, &t, &name, &a);
        let out = old_acquire(&moto, &t, &name, &["--no-wait"]);
        out.assert_exit_as(3, &format!("{flags:?}, one of ours holds:"));
        release(&moto, &t, &name, &b);
        let out = old_acquire(&moto, &t, &name, &["--no-wait"]);
        assert_no_traceback(&out);
        out.assert_exit_as(0, &format!("{flags:?}, nobody holds:"));
        // And ours see 0.2.0's lease as an exclusive holder: a reader
        // waits for it; a semaphore's holder is told the name is a lock.
        let ours = run(awsflock(&moto)
            .args(["acquire", &name, "--table", &t, "--no-wait"])
            .args(&flags));
        let want = if flags[0] == "--shared" { 3 } else { 2 };
        assert_eq!(
            ours.code,
            want,
            "{flags:?} beside 0.2.0:\n{}",
            ours.describe()
        );
    }
}
