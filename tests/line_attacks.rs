//! Attacks on the waiting line of the DynamoDB and S3 stores (DESIGN.md,
//! "The waiting line") and on how a waiter judges expiry when the store's
//! clock jumps ("the store's clock jumps" in the failure table).
//!
//! Each test runs the real binary against a local moto server, most of them
//! with one client behind the fault proxy (`common/proxy.rs`): a request
//! held back is a slow network, a dropped answer a lost one, a shifted
//! `Date` a store whose clock jumps. Critical sections log "begin TAG" and
//! "end TAG" lines to one file, so their order is the order of events.
//!
//! Tests marked `#[ignore]` show a defect: their comment gives the sequence.

use crate::common;

use common::proxy::{Fault, Proxy};
use common::sections::{section, wait_logged};
use common::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A store (a DynamoDB table or an S3 bucket prefix) on a moto server.
struct Store {
    moto: Moto,
    backend: String,
    /// The operation that writes the lock record (and, on S3, an entry):
    /// what a rule of the proxy holds back to slow a waiter's admission.
    record_write: &'static str,
}

impl Store {
    fn dynamodb() -> Store {
        let moto = Moto::start();
        let t = table(&moto);
        Store {
            moto,
            backend: format!("dynamodb://{t}"),
            record_write: "UpdateItem",
        }
    }

    fn s3() -> Store {
        let moto = Moto::start();
        let backend = format!(
            "s3://{}/locks/",
            unique_name("bkt").to_lowercase().replace('_', "-")
        );
        let out = run(awsflock(&moto).args(["table-create", "--backend", &backend]));
        out.assert_exit_as(0, "creating the bucket failed:");
        Store {
            moto,
            backend,
            record_write: "PUT",
        }
    }

    /// The binary aimed at `endpoint` (the server or a proxy in front of it).
    fn cmd_at(&self, endpoint: &str) -> Command {
        let mut c = awsflock_at(endpoint);
        c.env("AWSFLOCK_BACKEND", &self.backend);
        c
    }

    fn cmd(&self) -> Command {
        self.cmd_at(&self.moto.endpoint)
    }

    /// `run NAME [extra] --wait-time 40 -- sh -c SECTION(tag, secs)` at `endpoint`.
    fn run_section(
        &self,
        endpoint: &str,
        name: &str,
        extra: &[&str],
        log: &Path,
        tag: &str,
        secs: f64,
    ) -> Running {
        spawn(
            self.cmd_at(endpoint)
                .args(["run", name, "--wait-time", "40"])
                .args(extra)
                .args(["--", "sh", "-c", &section(log, tag, secs)]),
        )
    }

    /// `acquire NAME [extra]`: the lease id.
    fn acquire(&self, name: &str, extra: &[&str]) -> String {
        let out = run(self.cmd().args(["acquire", name]).args(extra));
        out.assert_exit_as(0, &format!("acquire {name}:"));
        out.line().to_string()
    }

    fn release(&self, name: &str, lease: &str) {
        let out = run(self.cmd().args(["release", name, lease]));
        out.assert_exit_as(0, &format!("release {name}:"));
    }

    fn status(&self, name: &str) -> serde_json::Value {
        let out = run(self.cmd().args(["status", name, "--json"]));
        out.assert_exit_as(0, &format!("status {name}:"));
        out.json()
    }

    /// `status --json`'s `queue`.
    fn queue(&self, name: &str) -> Vec<serde_json::Value> {
        self.status(name)["queue"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `status` shows `n` waiters in line; returns the queue.
    fn wait_queue(&self, name: &str, n: usize) -> Vec<serde_json::Value> {
        self.wait_queue_by(name, n, |len| len == n)
    }

    /// Waits until `status` shows at least `n` waiters in line.
    fn wait_queue_least(&self, name: &str, n: usize) -> Vec<serde_json::Value> {
        self.wait_queue_by(name, n, |len| len >= n)
    }

    fn wait_queue_by(
        &self,
        name: &str,
        n: usize,
        done: impl Fn(usize) -> bool,
    ) -> Vec<serde_json::Value> {
        let t = Instant::now();
        loop {
            let q = self.queue(name);
            if done(q.len()) {
                return q;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "{n} waiters never showed in line: {q:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The tags of the sections begun, in order.
fn begun(log: &Path) -> Vec<String> {
    lines(log)
        .iter()
        .filter_map(|l| l.strip_prefix("begin ").map(str::to_string))
        .collect()
}

/// Waits up to `within` until `n` sections have begun.
fn wait_begun(log: &Path, n: usize, within: Duration) -> Vec<String> {
    let t = Instant::now();
    loop {
        let b = begun(log);
        if b.len() >= n {
            return b;
        }
        assert!(
            t.elapsed() < within,
            "{n} sections not begun within {within:?}: {:?}",
            lines(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for every command; each must exit 0.
fn all_ok(runs: Vec<(&str, Running)>) {
    for (tag, r) in runs {
        let out = r.wait(Duration::from_secs(60));
        assert_eq!(out.code, 0, "{tag}:\n{}", out.describe());
    }
}

// ------------------------------------------------------------ line order

/// A semaphore of 2 whose two slots free at once: the first two waiters
/// are admitted, the third waits for one of them.
///
/// W1, W2 and W3 wait in that order behind holders A and B. W1's writes of
/// the lock record are slow (held back 2.5 s by the proxy). A is released:
/// only W1 fits (W2 counts W1 ahead of it) and W1 sends its admission.
/// B is released: W2 fits beside W1 and is admitted first, which moves the
/// line's mark (`served`) to W2's place, past W1's. W1's place is now
/// behind the mark: W3 reads the line after the mark, sees nobody ahead,
/// and takes the slot that was W1's; W1's admission fails its condition,
/// and W1 waits for W2 or W3 to leave. Order only (never 3 holders), but
/// W3 passes a live waiter that joined before it.
fn two_slots_free_at_once(store: Store) {
    let name = unique_name("semline");
    let dir = scratch();
    let log = dir.path().join("log");
    let sem = ["--max-holders", "2"];
    let a = store.acquire(&name, &["--max-holders", "2", "--lease-duration", "60"]);
    let b = store.acquire(&name, &["--max-holders", "2", "--lease-duration", "60"]);
    let slow = Proxy::start(&store.moto.endpoint);
    let w1 = store.run_section(&slow.endpoint, &name, &sem, &log, "W1", 2.0);
    store.wait_queue(&name, 1);
    let w2 = store.run_section(&store.moto.endpoint, &name, &sem, &log, "W2", 2.0);
    store.wait_queue(&name, 2);
    let w3 = store.run_section(&store.moto.endpoint, &name, &sem, &log, "W3", 2.0);
    store.wait_queue(&name, 3);
    slow.fault(
        Some(store.record_write),
        Fault::Hold(Duration::from_millis(2500)),
        None,
    );
    store.release(&name, &a);
    store.release(&name, &b);
    let first_two = wait_begun(&log, 2, Duration::from_secs(20));
    slow.clear();
    all_ok(vec![("W1", w1), ("W2", w2), ("W3", w3)]);
    let order = begun(&log);
    assert!(
        first_two.contains(&"W1".to_string()) && first_two.contains(&"W2".to_string()),
        "W3 took a slot before W1, who was ahead of it in line: {:?}",
        lines(&log)
    );
    assert_eq!(order.len(), 3, "{order:?}");
}

#[test]
#[ignore = "defect: a waiter admitted out of order (two slots free at once) moves the mark past a live waiter ahead of it, which a later waiter then passes"]
fn dynamodb_semaphore_a_later_waiter_does_not_pass_one_the_mark_moved_past() {
    two_slots_free_at_once(Store::dynamodb());
}

#[test]
#[ignore = "defect: a waiter admitted out of order (two slots free at once) moves the mark past a live waiter ahead of it, which a later waiter then passes"]
fn s3_semaphore_a_later_waiter_does_not_pass_one_the_mark_moved_past() {
    two_slots_free_at_once(Store::s3());
}

/// A plain lock. W1 takes its ticket, its entry's PutItem is slow (held
/// 2.8 s: the "ticket taken, entry not yet written" case of DESIGN.md).
/// Meanwhile the holder releases and W2, who joined after W1, reads no
/// entry for W1's ticket and is admitted: the mark moves past W1's place
/// (documented: order within one instant is lost). W1's entry lands, but
/// behind the mark, where nobody reads. W3 joins seconds later, while W2
/// holds. When W2 ends, W3 reads nobody ahead of it and races W1 as an
/// equal; with W1's record write slow (held 2.5 s), W3 is admitted first,
/// and W1, who joined before W2 and W3, goes last. (Without the slow write
/// W3 wins about half of the time.) `status` does not show W1 in line
/// either, while it waits there.
#[test]
#[ignore = "defect: a waiter whose entry landed behind the mark is invisible to later joiners, who pass it (and status does not list it)"]
fn dynamodb_a_waiter_whose_entry_landed_late_is_not_passed_by_later_joiners() {
    let store = Store::dynamodb();
    let name = unique_name("late");
    let dir = scratch();
    let log = dir.path().join("log");
    let h = store.acquire(&name, &["--lease-duration", "60"]);
    let slow = Proxy::start(&store.moto.endpoint);
    slow.fault(
        Some("PutItem"),
        Fault::Hold(Duration::from_millis(2800)),
        Some(1),
    );
    let held_at = Instant::now();
    let w1 = store.run_section(&slow.endpoint, &name, &[], &log, "W1", 1.0);
    assert!(
        slow.wait_count(Some("PutItem"), 1, Duration::from_secs(10)),
        "W1 never wrote its entry"
    );
    store.release(&name, &h);
    let w2 = store.run_section(&store.moto.endpoint, &name, &[], &log, "W2", 4.0);
    wait_logged(&log, "begin W2", Duration::from_secs(10));
    let w2_begun = held_at.elapsed();
    // W1's entry has landed (behind the mark); W3 joins well after it.
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(held_at.elapsed()));
    let w3 = store.run_section(&store.moto.endpoint, &name, &[], &log, "W3", 0.5);
    let queue = store.wait_queue_least(&name, 1);
    slow.fault(
        Some("UpdateItem"),
        Fault::Hold(Duration::from_millis(2500)),
        None,
    );
    wait_begun(&log, 2, Duration::from_secs(20));
    slow.clear();
    all_ok(vec![("W1", w1), ("W2", w2), ("W3", w3)]);
    let order = begun(&log);
    assert!(
        w2_begun < Duration::from_millis(2800),
        "premise: W2 was admitted before W1's entry landed ({w2_begun:?})"
    );
    assert_eq!(
        order,
        ["W2", "W1", "W3"],
        "W3 passed W1 (status showed {queue:?})"
    );
}

/// A released lock with a waiter in line whose admission is slow (its
/// record write held back 2.5 s): a newcomer, blind grant first, then
/// `--no-wait`, must not take it past the waiter, nor may a newcomer that
/// waits be admitted before it.
fn newcomers_do_not_pass_a_slow_front(store: Store) {
    let name = unique_name("pass");
    let dir = scratch();
    let log = dir.path().join("log");
    let h = store.acquire(&name, &["--lease-duration", "60"]);
    let slow = Proxy::start(&store.moto.endpoint);
    let w = store.run_section(&slow.endpoint, &name, &[], &log, "W", 0.5);
    store.wait_queue(&name, 1);
    slow.fault(
        Some(store.record_write),
        Fault::Hold(Duration::from_millis(2500)),
        None,
    );
    store.release(&name, &h);
    let out = run(store.cmd().args(["acquire", &name, "--no-wait"]));
    out.assert_exit_as(3, "a newcomer took a released lock past the line:");
    let late = store.run_section(&store.moto.endpoint, &name, &[], &log, "LATE", 0.1);
    wait_begun(&log, 1, Duration::from_secs(20));
    slow.clear();
    all_ok(vec![("W", w), ("LATE", late)]);
    assert_eq!(begun(&log), ["W", "LATE"]);
}

#[test]
fn dynamodb_newcomers_do_not_pass_a_slow_front_of_a_released_lock() {
    newcomers_do_not_pass_a_slow_front(Store::dynamodb());
}

#[test]
fn s3_newcomers_do_not_pass_a_slow_front_of_a_released_lock() {
    newcomers_do_not_pass_a_slow_front(Store::s3());
}

/// A newcomer that cannot read the line (every BatchGetItem answered 500)
/// while the front's admission is slow does not try its own admission
/// blind: it waits, and is admitted after the front.
#[test]
fn dynamodb_a_newcomer_that_cannot_read_the_line_does_not_pass_it() {
    let store = Store::dynamodb();
    let name = unique_name("blind");
    let dir = scratch();
    let log = dir.path().join("log");
    let h = store.acquire(&name, &["--lease-duration", "60"]);
    let slow = Proxy::start(&store.moto.endpoint);
    let w = store.run_section(&slow.endpoint, &name, &[], &log, "W", 0.5);
    store.wait_queue(&name, 1);
    slow.fault(
        Some("UpdateItem"),
        Fault::Hold(Duration::from_millis(2500)),
        None,
    );
    let blind = Proxy::start(&store.moto.endpoint);
    blind.fault(Some("BatchGetItem"), Fault::Status(500), None);
    store.release(&name, &h);
    let n = store.run_section(&blind.endpoint, &name, &[], &log, "N", 0.1);
    assert!(
        blind.wait_count(Some("BatchGetItem"), 1, Duration::from_secs(10)),
        "the newcomer never read the line"
    );
    wait_begun(&log, 1, Duration::from_secs(20));
    slow.clear();
    blind.clear();
    all_ok(vec![("W", w), ("N", n)]);
    assert_eq!(begun(&log), ["W", "N"]);
}

/// `status --json` `queue` lists the waiters in the order they came, with
/// their kinds; one interrupted (SIGTERM) is gone from it at once, and the
/// others are admitted in order (the readers at once, beside each other
/// once the writer ahead of the second is gone).
fn status_lists_the_line_in_order(store: Store) {
    let name = unique_name("show");
    let dir = scratch();
    let log = dir.path().join("log");
    let h = store.acquire(&name, &["--lease-duration", "60"]);
    let ep = store.moto.endpoint.clone();
    let r1 = store.run_section(&ep, &name, &["--shared"], &log, "R1", 0.5);
    store.wait_queue(&name, 1);
    let w = store.run_section(&ep, &name, &[], &log, "W", 0.5);
    store.wait_queue(&name, 2);
    let r2 = store.run_section(&ep, &name, &["--shared"], &log, "R2", 0.5);
    let q = store.wait_queue(&name, 3);
    let positions: Vec<_> = q.iter().map(|e| e["position"].as_u64()).collect();
    assert_eq!(positions, [Some(1), Some(2), Some(3)], "{q:?}");
    let shared: Vec<_> = q.iter().map(|e| e["shared"].as_bool()).collect();
    assert_eq!(shared, [Some(true), Some(false), Some(true)], "{q:?}");
    let ids: std::collections::HashSet<_> = q.iter().map(|e| e["waiter"].to_string()).collect();
    assert_eq!(ids.len(), 3, "{q:?}");
    // The writer in the middle stops waiting.
    let t = Instant::now();
    signal(w.pid(), Signal::SIGTERM);
    let out = w.wait(Duration::from_secs(10));
    assert_ne!(out.code, 0, "{}", out.describe());
    let q = store.queue(&name);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "slow to leave: {:?}",
        t.elapsed()
    );
    let shared: Vec<_> = q.iter().map(|e| e["shared"].as_bool()).collect();
    assert_eq!(
        shared,
        [Some(true), Some(true)],
        "the writer is still shown: {q:?}"
    );
    store.release(&name, &h);
    all_ok(vec![("R1", r1), ("R2", r2)]);
    let order = begun(&log);
    assert_eq!(order.len(), 2, "{:?}", lines(&log));
    assert!(store.queue(&name).is_empty(), "{:?}", store.status(&name));
}

#[test]
fn dynamodb_status_lists_the_line_in_order_and_a_leaver_goes_at_once() {
    status_lists_the_line_in_order(Store::dynamodb());
}

#[test]
fn s3_status_lists_the_line_in_order_and_a_leaver_goes_at_once() {
    status_lists_the_line_in_order(Store::s3());
}

// ------------------------------------------------------- entries left behind

/// A waiter SIGKILLed between its ticket (UpdateItem) and its entry
/// (PutItem, held back until after the test): the waiter behind it reads
/// no entry for that ticket and is admitted as soon as the lock is free.
#[test]
fn dynamodb_a_waiter_killed_between_ticket_and_entry_does_not_hold_the_line() {
    let store = Store::dynamodb();
    let name = unique_name("gap");
    let dir = scratch();
    let log = dir.path().join("log");
    let h = store.acquire(&name, &["--lease-duration", "60"]);
    let slow = Proxy::start(&store.moto.endpoint);
    slow.fault(Some("PutItem"), Fault::Hold(Duration::from_secs(60)), None);
    let doomed = store.run_section(&slow.endpoint, &name, &[], &log, "DEAD", 0.1);
    assert!(
        slow.wait_count(Some("PutItem"), 1, Duration::from_secs(10)),
        "the doomed waiter never wrote its entry"
    );
    signal(doomed.pid(), Signal::SIGKILL);
    assert_eq!(doomed.wait(Duration::from_secs(10)).code, 137);
    let next = store.run_section(&store.moto.endpoint, &name, &[], &log, "NEXT", 0.1);
    store.wait_queue(&name, 1);
    let t = Instant::now();
    store.release(&name, &h);
    wait_logged(&log, "begin NEXT", Duration::from_secs(10));
    let waited = t.elapsed();
    all_ok(vec![("NEXT", next)]);
    assert!(
        waited < Duration::from_secs(3),
        "the dead waiter's ticket held the line for {waited:?}"
    );
    assert_eq!(begun(&log), ["NEXT"]);
}

/// A waiter whose entry write (PutItem) lands but whose answers are lost
/// (dropped three times: every attempt of the SDK) writes the same place
/// again: one entry in line, and the waiter takes the lock as soon as it
/// is freed. (It used to join again with a new ticket; the first entry
/// lived on unrefreshed for 20 s + 1 s ahead of its new place, and the
/// waiter, alone in line, waited behind its own lost entry.)
#[test]
fn dynamodb_a_lost_answer_of_an_entry_write_does_not_hold_the_line() {
    let store = Store::dynamodb();
    let name = unique_name("lostput");
    let dir = scratch();
    let log = dir.path().join("log");
    let h = store.acquire(&name, &["--lease-duration", "60"]);
    let lossy = Proxy::start(&store.moto.endpoint);
    lossy.fault(Some("PutItem"), Fault::DropResponse, Some(3));
    let w = spawn(
        store
            .cmd_at(&lossy.endpoint)
            .args(["run", &name, "--wait-time", "20", "--"])
            .args(["sh", "-c", &section(&log, "W", 0.1)]),
    );
    // The three lost answers, then a join that worked.
    assert!(
        lossy.wait_count(Some("PutItem"), 4, Duration::from_secs(30)),
        "the waiter never joined again: {:?}",
        lossy.injected()
    );
    let queue = store.wait_queue_least(&name, 1);
    assert_eq!(queue.len(), 1, "one waiter, one place: {queue:?}");
    let t = Instant::now();
    store.release(&name, &h);
    let out = w.wait(Duration::from_secs(40));
    let waited = t.elapsed();
    assert_eq!(out.code, 0, "{}", out.describe());
    assert!(
        waited < Duration::from_secs(4),
        "the waiter, alone in line, waited {waited:?} for the lock (line: {queue:?})"
    );
}

/// Waiters that left (SIGTERM) leave their tickets' places empty: the one
/// behind them must take a freed lock within one of its polls. Nine leave
/// from in front of the tenth; the tenth counts its distance from ticket
/// numbers (nine ahead, more than the 8 that read the line whenever there
/// is room, so it polls every 2.7–4.5 s). The first poll that sees room
/// only notes it, and looks again at the front's pace (100–300 ms), reading
/// the line then: the lock stays free for at most one slow poll and a fast
/// one. (It used to look again at its slow pace: two slow polls, at least
/// 5.4 s.)
#[test]
fn dynamodb_waiters_that_left_do_not_leave_a_free_lock_idle() {
    let store = Store::dynamodb();
    let name = unique_name("left");
    let dir = scratch();
    let log = dir.path().join("log");
    let h = store.acquire(&name, &["--lease-duration", "60"]);
    let ep = store.moto.endpoint.clone();
    let mut leavers = Vec::new();
    for i in 0..9 {
        leavers.push(store.run_section(&ep, &name, &[], &log, &format!("L{i}"), 0.1));
        store.wait_queue(&name, i + 1);
    }
    let last = store.run_section(&ep, &name, &[], &log, "LAST", 0.1);
    store.wait_queue(&name, 10);
    for l in &leavers {
        signal(l.pid(), Signal::SIGTERM);
    }
    for l in leavers {
        assert_ne!(l.wait(Duration::from_secs(10)).code, 0);
    }
    store.wait_queue(&name, 1);
    // Let the last waiter settle into its slow pace.
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    store.release(&name, &h);
    wait_logged(&log, "begin LAST", Duration::from_secs(20));
    let idle = t.elapsed();
    all_ok(vec![("LAST", last)]);
    assert!(
        idle < Duration::from_millis(5200),
        "the lock stayed free for {idle:?} while a waiter waited"
    );
}

// ------------------------------------------------------ the store's clock

/// One store clock (every client behind one proxy) steps back 40 s, stays
/// back 10 s, then steps forward to the true time.
///
/// The holder (lease 6 s, renewed every 3 s) renews while the clock is
/// back: its holder table keeps the later of the stored and the new expiry
/// (`Slots::renew`), so the stored expiry stays where the last renewal
/// before the step put it, true time T0 + ~6 s; the holder takes the
/// renewal as a success (deadline: send + lease + 1 s). The waiter's own
/// view of the clock (`Anchor`) kept the true time through the step back
/// (it never goes back to a lower bound), so the forward step is no jump
/// ahead of its view: believed at once. At T0 + 10 s the waiter finds the
/// lease expired and takes the lock while the holder's command runs; the
/// holder learns of it at its next renewal (exit 4).
fn clock_steps_back_then_forward(store: Store) {
    let name = unique_name("step");
    let dir = scratch();
    let log = dir.path().join("log");
    let pid_file = dir.path().join("holder.pid");
    let clock = Proxy::start(&store.moto.endpoint);
    let script = format!(
        "echo $$ > '{}'; {}",
        p(&pid_file),
        section(&log, "holder", 16.0)
    );
    let holder = spawn(
        store
            .cmd_at(&clock.endpoint)
            .args(["run", &name, "--lease-duration", "6", "--renew-every", "3"])
            .args(["--", "sh", "-c", &script]),
    );
    wait_logged(&log, "begin holder", Duration::from_secs(20));
    let command = common::procs::read_pid(&pid_file);
    let waiter = store.run_section(&clock.endpoint, &name, &[], &log, "waiter", 0.1);
    store.wait_queue(&name, 1);
    std::thread::sleep(Duration::from_millis(1000));
    clock.shift_date(-40);
    std::thread::sleep(Duration::from_secs(8));
    // Step forward again about 1 s after one of the holder's renewals (the
    // only record writes while the waiter waits), so that the waiter sees
    // the step before the holder does.
    // (The holder may have given its lease up by now: its renewals while
    // the clock was back did not move the stored expiry, so they did not
    // move its deadline either; that is the safe outcome.)
    let n = clock.count(Some(store.record_write));
    let _ = clock.wait_count(Some(store.record_write), n + 1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1000));
    clock.shift_date(0);
    let t = Instant::now();
    let mut both = None;
    while t.elapsed() < Duration::from_secs(20) {
        if begun(&log).contains(&"waiter".to_string()) {
            // The holder's command: still running (not stopped, not gone)?
            both = common::procs::state_of(command).filter(|s| matches!(s, 'S' | 'R' | 'D'));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let h = holder.wait(Duration::from_secs(30));
    let w = waiter.wait(Duration::from_secs(30));
    assert!(
        both.is_none(),
        "the waiter's command began while the holder's ran (state {both:?}): {:?}\nholder:\n{}",
        lines(&log),
        h.describe()
    );
    // The holder ends well, or stops its command for a lease it could not
    // confirm (exit 4); the waiter gets the lock after it either way.
    assert!(matches!(h.code, 0 | 4), "holder:\n{}", h.describe());
    assert_eq!(w.code, 0, "waiter:\n{}", w.describe());
    assert_eq!(
        lines(&log).first().map(String::as_str),
        Some("begin holder")
    );
}

#[test]
fn dynamodb_a_clock_stepping_back_then_forward_lets_no_waiter_take_a_renewed_lease() {
    clock_steps_back_then_forward(Store::dynamodb());
}

#[test]
fn s3_a_clock_stepping_back_then_forward_lets_no_waiter_take_a_renewed_lease() {
    clock_steps_back_then_forward(Store::s3());
}

/// The whole store's clock (every client behind one proxy) jumps 40 s
/// ahead while a waiter waits in line behind a renewing holder: the waiter
/// holds the jump back by its own time, the holder renews at once on the
/// new clock; the sections stay in turn.
fn clock_jumps_ahead_for_everyone(store: Store) {
    let name = unique_name("jump");
    let dir = scratch();
    let log = dir.path().join("log");
    let clock = Proxy::start(&store.moto.endpoint);
    let holder = spawn(
        store
            .cmd_at(&clock.endpoint)
            .args(["run", &name, "--lease-duration", "6", "--"])
            .args(["sh", "-c", &section(&log, "holder", 6.0)]),
    );
    wait_logged(&log, "begin holder", Duration::from_secs(20));
    let waiter = store.run_section(&clock.endpoint, &name, &[], &log, "waiter", 0.1);
    store.wait_queue(&name, 1);
    std::thread::sleep(Duration::from_millis(500));
    clock.shift_date(40);
    common::sections::assert_both_in_turn(holder, waiter, &log);
}

#[test]
fn dynamodb_a_clock_jumping_ahead_for_everyone_keeps_the_line_in_turn() {
    clock_jumps_ahead_for_everyone(Store::dynamodb());
}

#[test]
fn s3_a_clock_jumping_ahead_for_everyone_keeps_the_line_in_turn() {
    clock_jumps_ahead_for_everyone(Store::s3());
}
