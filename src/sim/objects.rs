//! The simulated S3: an in-memory bucket, and one client's object requests
//! to it ([`SimObjects`], the simulation's side of the seam
//! [`crate::store::s3::Objects`]), so that the real S3 record logic
//! (`S3Store`: its grants, the fence high-water object, renew, release,
//! and what it does when a condition fails or an answer is lost) runs
//! unchanged against it.
//!
//! Each request goes through the same simulated network as DynamoDB's
//! ([`super::net`]: lost requests, lost answers, duplicates, throttling,
//! delays, the `Date` header calibrating the client's [`ServerClock`]), and
//! is applied to the bucket atomically at one instant of true time.

use super::clock::true_now;
use super::counts::Op;
use super::model::{RecState, table_state};
use super::net::SimStore;
use super::state::{Bucket, LineEntry, Table, check_line_turn, line_name};
use crate::clock::ServerClock;
use crate::error::Result;
use crate::protocol::line::WAIT_LIFE_MS;
use crate::protocol::record::{LeaseRecord, RecordState};
use crate::request::RESERVED_PREFIX;
use crate::store::s3::{Cond, Objects, S3Store};

/// An owned [`Cond`], for a request in flight.
#[derive(Clone)]
enum Want {
    Absent,
    Is(String),
    Any,
}

impl Bucket {
    /// GetObject.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, String)> {
        self.objects.get(key).cloned()
    }

    /// PutObject on `If-None-Match: *` / `If-Match: ETAG`: the new ETag, or
    /// `None` (412) when the object is not as required.
    fn put(&mut self, key: &str, body: &[u8], want: &Want) -> Option<String> {
        let cur = self.objects.get(key).map(|(_, e)| e.as_str());
        let ok = match want {
            Want::Absent => cur.is_none(),
            Want::Is(e) => cur == Some(e.as_str()),
            Want::Any => true,
        };
        if !ok {
            return None;
        }
        self.writes += 1;
        let etag = format!("\"{:032x}\"", self.writes);
        self.objects
            .insert(key.to_string(), (body.to_vec(), etag.clone()));
        Some(etag)
    }

    /// ListObjectsV2, one page of at most `max` keys after `start_after`,
    /// with their `LastModified`.
    fn page(&self, prefix: &str, start_after: &str, max: usize) -> Vec<(String, i64)> {
        self.objects
            .keys()
            .filter(|k| k.starts_with(prefix) && k.as_str() > start_after)
            .take(max)
            .map(|k| (k.clone(), self.modified.get(k).map_or(0, |m| m.0)))
            .collect()
    }

    /// ListObjectsV2 (all pages).
    fn keys(&self, prefix: &str) -> Vec<String> {
        self.objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A PUT applied to the table's bucket, with the invariants' bookkeeping
/// for a lock record that landed: (b) a grant's fencing token, read from
/// the written record, is above every token written before for the lock;
/// (c) the expiry first written for each lease id.
fn put(
    t: &mut Table,
    key: &str,
    body: &[u8],
    want: &Want,
    now_ms: i64,
    v: &mut Vec<String>,
) -> Option<String> {
    t.counts.size(key, body.len());
    let new = !t.objects.objects.contains_key(key);
    let Some(etag) = put_uncounted(t, key, body, want, now_ms, v) else {
        t.counts.note(Op::S3Put, false);
        return None;
    };
    t.counts.note(Op::S3Put, true);
    if new && line_name(key).is_some() {
        t.counts.joined(key, true);
    }
    Some(etag)
}

fn put_uncounted(
    t: &mut Table,
    key: &str,
    body: &[u8],
    want: &Want,
    now_ms: i64,
    v: &mut Vec<String>,
) -> Option<String> {
    let before = lock_record(t, key);
    let lapsed = t.objects.modified.get(key).is_none_or(|&(m, _)| {
        now_ms > m + WAIT_LIFE_MS + 1000 + crate::protocol::expiry::EXPIRY_MARGIN_MS
    });
    // Join order in true time: the store's clock may step back.
    let true_ms = t.start.map(true_now).unwrap_or_default().as_millis() as i64;
    let joined = match t.objects.modified.get(key) {
        Some(&(_, j)) if !lapsed => j,
        _ => true_ms,
    };
    let etag = t.objects.put(key, body, want)?;
    t.objects.modified.insert(key.to_string(), (now_ms, joined));
    if let Some(name) = line_name(key) {
        note_line(t, &name);
    }
    if let Some(new) = lock_record(t, key) {
        note_line(t, &new.name);
        if let (Some(b), Some(a)) = (
            before
                .as_ref()
                .and_then(|b| b.current_slots().cloned().or_else(|| b.as_table())),
            new.current_slots(),
        ) {
            let entries = line_entries(t, &new.name);
            check_line_turn(&b, a, &entries, now_ms, t.back_ms, v);
        }
        if let Some(table) = new.current_slots() {
            // A plain lease of ours moved into a table keeps its token.
            let old = before
                .as_ref()
                .and_then(|b| b.current_slots().cloned().or_else(|| b.as_table()));
            t.note_table(&new.name.clone(), old.as_ref(), Some(table), v);
        } else if new.state == RecordState::Held {
            t.written_expiry
                .entry(new.lease_id.clone())
                .or_insert(new.expires_ms);
            // A renewal keeps the grant's token and time; anything else
            // held with a token is a grant (or a fresh grant's finish).
            let renewal = before.is_some_and(|b| {
                b.state == RecordState::Held
                    && b.fence == new.fence
                    && b.acquired_ms == new.acquired_ms
            });
            if let (Some(f), false) = (new.fence, renewal) {
                let max = t.max_fence.entry(new.name.clone()).or_insert(0);
                if f <= *max {
                    v.push(format!(
                        "fencing token {f} granted after token {} (invariant b)",
                        *max
                    ));
                }
                *max = (*max).max(f);
            }
        }
    }
    Some(etag)
}

/// The lock record's state now, and the latest lapse of its line's
/// entries after its mark, for the liveness invariants.
fn note_line(t: &mut Table, name: &str) {
    let at = t.start.map(true_now).unwrap_or_default();
    let rec = lock_record(t, name);
    let st = rec.as_ref().map_or(RecState::Absent, state_of);
    let served = rec
        .as_ref()
        .and_then(|r| r.current_slots().map(|s| s.line.served.clone()))
        .unwrap_or_default();
    let last = line_entries(t, name)
        .into_iter()
        .filter(|e| e.place > served)
        .map(|e| e.expires_ms)
        .max();
    if let Some(exp) = last {
        t.lines.insert(t.writes.len(), exp);
    }
    t.writes.push((at, st));
}

/// `name`'s line entries as S3's line reads them (kind from the key,
/// expiry from `LastModified`).
fn line_entries(t: &Table, name: &str) -> Vec<LineEntry> {
    let prefix = crate::protocol::line::prefix(name);
    t.objects
        .modified
        .iter()
        .filter_map(|(k, &(m, joined))| {
            let place = k.strip_prefix(&prefix)?.to_string();
            Some(LineEntry {
                kind: crate::protocol::line::kind_of_timed(&place)?,
                expires_ms: m + WAIT_LIFE_MS + 1000,
                joined_ms: joined,
                place,
            })
        })
        .collect()
}

/// The record as a waiter of the S3 store judges it (for the liveness
/// invariants), with the store's own `is_released`, `expiry_ms` and
/// `takeover_margin_ms`.
fn state_of(rec: &LeaseRecord) -> RecState {
    use crate::store::cas::CasStore;
    type S3 = S3Store<SimObjects>;
    let judged = (rec.clone(), String::new());
    if let Some(t) = rec.current_slots() {
        return table_state(t);
    }
    if S3::is_released(&judged) {
        return RecState::Released;
    }
    RecState::Held {
        // No expiry the waiter can read: it never judges it expired.
        exp_ms: S3::expiry_ms(&judged).unwrap_or(i64::MAX / 4),
        margin_ms: S3::takeover_margin_ms(&judged),
        owner: rec.owner.strip_prefix('c').and_then(|n| n.parse().ok()),
        lease: {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            rec.lease_id.hash(&mut h);
            h.finish()
        },
    }
}

/// The lock record stored at `key`, if `key` is a lock's and it parses.
fn lock_record(t: &Table, key: &str) -> Option<LeaseRecord> {
    if key.contains(RESERVED_PREFIX) {
        return None;
    }
    let (body, _) = t.objects.objects.get(key)?;
    LeaseRecord::from_json(body).ok()
}

/// One simulated client's object requests.
pub struct SimObjects {
    net: SimStore,
}

#[async_trait::async_trait]
impl Objects for SimObjects {
    fn clock(&self) -> &ServerClock {
        &self.net.clock
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        let key = key.to_string();
        self.net
            .call(move |t, _, _| {
                let got = t.objects.get(&key);
                t.counts.note(Op::S3Get, true);
                t.counts
                    .size(&key, got.as_ref().map_or(0, |(b, _)| b.len()));
                got
            })
            .await
    }

    async fn put(&self, key: &str, body: Vec<u8>, cond: Cond<'_>) -> Result<Option<String>> {
        let key = key.to_string();
        let want = match cond {
            Cond::Absent => Want::Absent,
            Cond::Is(e) => Want::Is(e.to_string()),
            Cond::Any => Want::Any,
        };
        self.net
            .call(move |t, now, v| put(t, &key, &body, &want, now, v))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_string();
        self.net
            .call(move |t, _, _| {
                t.counts.note(Op::S3List, true);
                t.objects.keys(&prefix)
            })
            .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: &str,
        max: usize,
    ) -> Result<Vec<(String, i64)>> {
        let (prefix, start) = (prefix.to_string(), start_after.to_string());
        self.net
            .call(move |t, _, _| {
                t.counts.note(Op::S3List, true);
                t.objects.page(&prefix, &start, max)
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.net
            .call(move |t, _, _| {
                t.counts.note(Op::S3Delete, true);
                t.objects.objects.remove(&key);
                t.objects.modified.remove(&key);
                if let Some(name) = line_name(&key) {
                    note_line(t, &name);
                }
            })
            .await
    }

    async fn create_bucket(&self) -> Result<()> {
        Ok(())
    }
}

/// The real S3 store of one simulated client, over the simulated bucket.
pub fn s3_store(net: SimStore) -> S3Store<SimObjects> {
    S3Store::over(SimObjects { net }, "sim".into(), String::new())
}

#[cfg(test)]
mod tests {
    use super::super::{env_u64, run_seed_on, run_seed_traced};

    /// How many S3 schedules `schedules_s3` runs by default: 14 s on the
    /// shared 2-core machine at a load of 3.5 (711 schedules/s), up to a
    /// minute under heavy load; `AWSFLOCK_SIM_SEEDS` runs more.
    const DEFAULT_SEEDS: u64 = 4_000;

    /// Schedules with our clients on the S3 store, from seed
    /// `AWSFLOCK_SIM_SEED` (0), `AWSFLOCK_SIM_SEEDS` of them (10,000), on
    /// two threads (each schedule runs on its own runtime, so a seed runs
    /// the same on either); panics with the first failure's seed, trace
    /// and how to rerun it.
    #[test]
    fn schedules_s3() {
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        let count = env_u64("AWSFLOCK_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
        let t0 = std::time::Instant::now();
        let half = count / 2;
        let run = |from: u64, to: u64| {
            (from..to).find_map(|seed| {
                let r = run_seed_on(seed, true);
                (!r.violations.is_empty()).then_some(r)
            })
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| run(first, first + half));
            let b = s.spawn(|| run(first + half, first + count));
            (a.join().unwrap(), b.join().unwrap())
        });
        if let Some(r) = a.or(b) {
            // The same seed again, keeping its trace.
            let r = run_seed_traced(r.seed, true);
            // Not `Report::explain`: its rerun command is DynamoDB's.
            panic!(
                "S3 simulation seed {} failed:\n  {}\ntrace (true time, store time, client, event):\n{}\n\
                 rerun: AWSFLOCK_SIM_SEED={} AWSFLOCK_SIM_SEEDS=1 \
                 cargo test --lib sim::objects::tests::schedules_s3 -- --nocapture",
                r.seed,
                r.violations.join("\n  "),
                r.trace.join("\n"),
                r.seed
            );
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "simulation (S3 store): {count} schedules from seed {first} in {secs:.1}s ({:.0}/s)",
            count as f64 / secs.max(1e-9)
        );
        if count == 1 {
            eprintln!("{}", run_seed_traced(first, true).trace.join("\n"));
        }
    }

    /// An S3 schedule is reproducible from its seed, and does use S3.
    #[test]
    fn an_s3_seed_reproduces_its_run_exactly() {
        for seed in [1u64, 7, 42, 1234] {
            let a = run_seed_traced(seed, true);
            let b = run_seed_traced(seed, true);
            assert!(a.trace.len() > 5, "seed {seed}: {:?}", a.trace);
            assert_eq!(a.trace, b.trace, "seed {seed} ran differently twice");
        }
    }

    /// Two waiters that join within the same second of the store's clock,
    /// neither seeing the other's entry, take places at the same
    /// millisecond; the waiter ids (random v4 UUIDs, not drawn from the
    /// seed) then order them, so the seed runs one way or the other: here
    /// c1 and c2, waiting from 28.9 s, are admitted in either order. The
    /// S3 crowd's figures vary from run to run for the same reason.
    #[test]
    #[ignore = "a known defect: S3 places tied on the store's time are ordered by unseeded ids"]
    fn an_s3_seed_whose_places_tie_reproduces_its_run_exactly() {
        let first = run_seed_traced(900_118, true).trace;
        for _ in 0..8 {
            let again = run_seed_traced(900_118, true).trace;
            assert_eq!(first, again, "seed 900118 ran differently twice");
        }
    }

    /// For measuring a deliberately broken S3 store (DESIGN.md,
    /// "Simulation"): runs `AWSFLOCK_SIM_SEEDS` (2,000) S3 schedules and
    /// counts those that fail, by invariant, without stopping at the first.
    #[test]
    #[ignore = "a measurement: run with --ignored --nocapture"]
    fn s3_failure_census() {
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        let count = env_u64("AWSFLOCK_SIM_SEEDS").unwrap_or(2_000);
        let mut failed = 0u64;
        let mut first_failure = None;
        let mut by_kind = std::collections::BTreeMap::<String, u64>::new();
        for seed in first..first + count {
            let r = run_seed_on(seed, true);
            if r.violations.is_empty() {
                continue;
            }
            failed += 1;
            first_failure.get_or_insert((seed, r.violations[0].clone()));
            for v in &r.violations {
                let kind = v
                    .find("(invariant")
                    .map(|i| v[i..].chars().take(13).collect())
                    .unwrap_or_else(|| v.chars().take(40).collect());
                *by_kind.entry(kind).or_default() += 1;
            }
        }
        eprintln!(
            "S3 census: {failed} of {count} schedules from seed {first} failed; first: {first_failure:?}; violations: {by_kind:?}"
        );
    }
}
