//! A deterministic simulation of the lock protocol, running the real
//! protocol code: only the network, the store and the clocks are simulated
//! (in the style of FoundationDB's simulator and tokio's turmoil).
//!
//! Each schedule is one seed: a fresh current-thread tokio runtime with
//! paused (virtual) time, 2–4 clients (some of them awsflock 0.2.0) taking
//! one lock a few times, under faults drawn from the seed. The safety
//! invariants are checked as the schedule runs, the liveness ones
//! ([`check`]) when it has ended. A schedule runs without
//! its trace; a failing seed is rerun with it (a seed reproduces exactly),
//! and the failure prints the seed, the trace, and how to rerun it.
//! DESIGN.md, "Simulation", lists what is real and what is modelled.
//!
//! Our clients use DynamoDB ([`store`]), S3 ([`objects`]) or the
//! directory store, all of them processes of one host ([`dir`]).
//!
//! The modules, from the top: [`schedule`] draws a schedule from its
//! seed, runs its clients (ours in [`ours`], through the real lock code,
//! and the model of awsflock 0.2.0 in [`v020`]; each a [`client`] with its
//! faults) and judges it ([`check`]); [`store`], [`objects`] and [`dir`]
//! are the simulated stores, the first two over the simulated network
//! ([`net`]); [`world`] is the state one schedule shares, [`state`] what
//! the stores hold, [`model`] and [`clock`] the shared types and the
//! simulated clocks. No module uses one above it.
//!
//! `cargo test --lib sim` runs the default number of schedules;
//! `scripts/sim.sh [--s3|--dir] SEEDS [START]` runs more
//! (`AWSFLOCK_SIM_SEEDS`, `AWSFLOCK_SIM_SEED`).

mod check;
mod client;
mod clock;
mod counts;
mod crowd;
mod dir;
mod model;
mod net;
mod objects;
mod ours;
mod schedule;
mod state;
mod store;
mod v020;
mod world;

pub use model::{Report, Store};

/// Runs the schedule of `seed` on a fresh runtime with virtual time,
/// without keeping its trace.
pub fn run_seed(seed: u64) -> Report {
    run(seed, Store::DynamoDb, false)
}

/// Runs the schedule of `seed` with our clients on `store`, without
/// keeping its trace.
pub fn run_seed_with(seed: u64, store: Store) -> Report {
    run(seed, store, false)
}

/// Runs the schedule of `seed` with our clients on `store`, keeping its
/// trace.
pub fn run_seed_traced_with(seed: u64, store: Store) -> Report {
    run(seed, store, true)
}

/// Runs the schedule of `seed`, with our clients on the S3 store when `s3`,
/// without keeping its trace.
pub fn run_seed_on(seed: u64, s3: bool) -> Report {
    run(seed, if s3 { Store::S3 } else { Store::DynamoDb }, false)
}

/// Runs the schedule of `seed` keeping its trace (for a failure, or to
/// read what a seed does), on the S3 store when `s3`.
pub fn run_seed_traced(seed: u64, s3: bool) -> Report {
    run(seed, if s3 { Store::S3 } else { Store::DynamoDb }, true)
}

fn run(seed: u64, store: Store, tracing: bool) -> Report {
    run_sharing(seed, store, false, tracing)
}

/// Runs the schedule of `seed` on `store` with the name shared through the
/// holder table (a semaphore, or readers and writers), without its trace.
pub fn run_slots_seed(seed: u64, store: Store) -> Report {
    run_sharing(seed, store, true, false)
}

/// [`run_slots_seed`], keeping the trace.
pub fn run_slots_seed_traced(seed: u64, store: Store) -> Report {
    run_sharing(seed, store, true, true)
}

fn run_sharing(seed: u64, store: Store, slots: bool, tracing: bool) -> Report {
    fastrand::seed(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(schedule::schedule(seed, store, slots, tracing))
}

/// A whole number from the environment (`AWSFLOCK_SIM_SEEDS`,
/// `AWSFLOCK_SIM_SEED`), for the tests that run schedules.
fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `count` schedules from `first`, panicking with the first
    /// failure's seed, trace and how to rerun it.
    fn run_range(first: u64, count: u64) -> u64 {
        let t0 = std::time::Instant::now();
        let mut slowest = (0.0f64, 0u64);
        let show = std::env::var_os("AWSFLOCK_SIM_TRACE").is_some();
        for seed in first..first + count {
            if show {
                let r = run_seed_traced(seed, false);
                eprintln!("seed {seed}:\n{}", r.trace.join("\n"));
            }
            let t = std::time::Instant::now();
            let r = run_seed(seed);
            let took = t.elapsed().as_secs_f64();
            if took > slowest.0 {
                slowest = (took, seed);
            }
            if !r.violations.is_empty() {
                // The same seed again, traced: it fails alike.
                let traced = run_seed_traced(seed, false);
                assert_eq!(
                    traced.violations, r.violations,
                    "seed {seed} failed differently when traced"
                );
                panic!("{}", traced.explain());
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "simulation: {count} schedules from seed {first} in {secs:.1}s ({:.0}/s); slowest: seed {} ({:.3}s)",
            count as f64 / secs.max(1e-9),
            slowest.1,
            slowest.0
        );
        count
    }

    /// The default run is split over two tests so that both cores work.
    const DEFAULT_SEEDS: u64 = 24_000;

    #[test]
    fn schedules() {
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        match env_u64("AWSFLOCK_SIM_SEEDS") {
            Some(n) => run_range(first, n),
            None => run_range(first, DEFAULT_SEEDS / 2),
        };
    }

    #[test]
    fn schedules_second_half() {
        if env_u64("AWSFLOCK_SIM_SEEDS").is_some() {
            return; // an explicit range runs in `schedules` alone
        }
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        run_range(first + DEFAULT_SEEDS / 2, DEFAULT_SEEDS / 2);
    }

    #[test]
    fn a_seed_reproduces_its_run_exactly() {
        for seed in [1u64, 7, 42, 1234, 99_999] {
            let a = run_seed_traced(seed, false);
            let b = run_seed_traced(seed, false);
            assert!(a.trace.len() > 5, "seed {seed}: {:?}", a.trace);
            assert_eq!(a.trace, b.trace, "seed {seed} ran differently twice");
            // Untraced (as the soaks run), it is the same run.
            let c = run_seed(seed);
            assert!(c.trace.is_empty());
            assert_eq!(
                (c.events, c.ended, &c.violations),
                (a.events, a.ended, &a.violations),
                "seed {seed} ran differently untraced"
            );
        }
        assert_ne!(
            run_seed_traced(1, false).trace,
            run_seed_traced(2, false).trace
        );
    }
}

/// Schedules whose clients share the name through the holder table: a
/// semaphore of 2 or 3, or readers and writers; on DynamoDB beside
/// awsflock 0.2.0 clients, on S3 and on the directory store.
#[cfg(test)]
mod slot_tests {
    use super::*;

    /// Runs `count` holder-table schedules on `store` from `first`,
    /// panicking with the first failure's seed and trace.
    fn run_range(store: Store, first: u64, count: u64) {
        let t0 = std::time::Instant::now();
        for seed in first..first + count {
            let r = run_slots_seed(seed, store);
            if !r.violations.is_empty() {
                let traced = run_slots_seed_traced(seed, store);
                panic!(
                    "{}\n  (a holder-table schedule: rerun with scripts/sim.sh --slots{} 1 {seed})",
                    traced.explain(),
                    match store {
                        Store::DynamoDb => "",
                        Store::S3 => " --s3",
                        Store::Dir => " --dir",
                    }
                );
            }
        }
        eprintln!(
            "simulation: {count} holder-table schedules on {store:?} from seed {first} in {:.1}s",
            t0.elapsed().as_secs_f64()
        );
    }

    /// `AWSFLOCK_SIM_SEEDS`/`AWSFLOCK_SIM_SEED` pick the range; with one
    /// seed, its trace is printed.
    fn range(store: Store, default: u64) {
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        let count = env_u64("AWSFLOCK_SIM_SEEDS").unwrap_or(default);
        if count == 1 && std::env::var_os("AWSFLOCK_SIM_TRACE").is_some() {
            eprintln!("{}", run_slots_seed_traced(first, store).trace.join("\n"));
        }
        run_range(store, first, count);
    }

    #[test]
    fn slot_schedules_dynamodb() {
        range(Store::DynamoDb, 4_000);
    }

    #[test]
    fn slot_schedules_s3() {
        range(Store::S3, 2_000);
    }

    #[test]
    fn slot_schedules_dir() {
        range(Store::Dir, 2_000);
    }

    #[test]
    fn slot_schedules_use_every_kind_of_sharing() {
        let (mut sem, mut rw) = (0, 0);
        for seed in 0..200 {
            let r = run_slots_seed_traced(seed, Store::DynamoDb);
            let head = r.trace.first().cloned().unwrap_or_default();
            if head.contains("Semaphore") {
                sem += 1;
            }
            if head.contains("ReadWrite") {
                rw += 1;
            }
        }
        assert!(sem > 50 && rw > 50, "semaphores {sem}, read-write {rw}");
    }
}
