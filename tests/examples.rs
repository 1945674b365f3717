//! The examples in examples/ run as a user would run them, against a private
//! moto server: `service` holds its lock until it is released by force and
//! then stops its work; `batch` writes under fencing tokens that grow from
//! one run to the next. Both find the store through
//! `StoreOptions::from_env`, so this also shows that a library user reads
//! the same variables as the command line.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Moto, scrub_env, unique_name};

/// The example binary `name`, built by cargo next to this test's binary
/// (target/debug/examples/), with the features this test was built with.
fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        // `cargo test` builds the examples, but `cargo test --tests` (as
        // scripts/test.sh runs it) does not: build them (a no-op when they
        // are fresh).
        // Exactly this test's features, `default` among them when it is on:
        // another set (even the same stores named one by one) is another
        // build of the whole library.
        let mut features = vec!["dynamodb"];
        for (on, f) in [
            (cfg!(feature = "default"), "default"),
            (cfg!(feature = "cli"), "cli"),
            (cfg!(feature = "s3"), "s3"),
            (cfg!(feature = "file"), "file"),
            (cfg!(feature = "etcd"), "etcd"),
        ] {
            if on {
                features.push(f);
            }
        }
        let mut cargo = Command::new(env!("CARGO"));
        // Cargo sets CARGO_MANIFEST_DIR and friends for this test; build
        // scripts that track them (ring's) would see a change and rebuild
        // half the tree, twice, each time this runs.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if key.starts_with("CARGO_")
                && !matches!(
                    key,
                    "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_INCREMENTAL" | "CARGO_BUILD_JOBS"
                )
            {
                cargo.env_remove(key);
            }
        }
        let status = cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--examples", "--no-default-features", "--features"])
            .arg(features.join(","))
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build --examples failed");
    });
    let deps = std::env::current_exe().unwrap();
    let dir = deps.parent().unwrap().parent().unwrap().join("examples");
    dir.join(name)
}

/// An example aimed at `moto`'s table `table` through the environment only.
fn run_example(name: &str, moto: &Moto, table: &str) -> Command {
    let mut cmd = Command::new(example(name));
    scrub_env(&mut cmd);
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWSFLOCK_TABLE", table)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn service_stops_its_work_when_its_lock_is_released_by_force() {
    let moto = Moto::start();
    let table = common::table(&moto);
    let lock = unique_name("leader");
    let mut child = run_example("service", &moto, &table)
        .args([&lock, "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the service example");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    assert!(
        first.starts_with(&format!("service: holding {lock} with fence ")),
        "{first}"
    );
    let tick = lines.next().expect("a tick").unwrap();
    assert_eq!(tick, "service: tick 1");

    // Break glass with the command line, as an operator would.
    let out = common::run(
        common::awsflock(&moto).args(["release", &lock, "--force", "--yes", "--table", &table]),
    );
    out.assert_ok();
    let released = Instant::now();

    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let took = released.elapsed();
    let last = rest.last().cloned().unwrap_or_default();
    eprintln!("stopped {took:?} after the forced release: {last}");
    assert!(
        last.starts_with("service: stopped working: the lease is no longer held"),
        "{rest:?}"
    );
    assert_eq!(status.code(), Some(1));
    // The guard renews every second and notices at its next renewal.
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn service_releases_its_lock_when_done() {
    let moto = Moto::start();
    let table = common::table(&moto);
    let lock = unique_name("leader");
    let out = common::run(run_example("service", &moto, &table).args([&lock, "3", "1"]));
    out.assert_ok();
    assert!(
        out.stdout.contains(&format!("service: released {lock}")),
        "{}",
        out.describe()
    );
    let status = common::status_json(&moto, &table, &lock);
    assert_eq!(status["held"], false, "{status}");
}

#[test]
fn batch_writes_under_growing_fencing_tokens() {
    let moto = Moto::start();
    let table = common::table(&moto);
    let lock = unique_name("nightly");
    let dir = common::scratch();
    let file = dir.path().join("out.log");
    let file = file.to_str().unwrap();
    let mut fences = Vec::new();
    for run in 0..3 {
        // The store as each variable the command line reads names it:
        // AWSFLOCK_TABLE, then AWSFLOCK_BACKEND, then awsflock 0.2.0's
        // DYNAMO_ENDPOINT_URL instead of the SDK's AWS_ENDPOINT_URL.
        let mut cmd = run_example("batch", &moto, &table);
        if run == 1 {
            cmd.env_remove("AWSFLOCK_TABLE")
                .env("AWSFLOCK_BACKEND", format!("dynamodb://{table}"));
        }
        if run == 2 {
            cmd.env_remove("AWS_ENDPOINT_URL")
                .env("DYNAMO_ENDPOINT_URL", &moto.endpoint);
        }
        let out = common::run(cmd.args([&lock, file]));
        out.assert_ok();
        let fence: u64 = out
            .stdout
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("no fence in {}", out.describe()));
        fences.push(fence);
    }
    assert!(fences[1] > fences[0] && fences[2] > fences[1], "{fences:?}");
    let written = std::fs::read_to_string(file).unwrap();
    assert_eq!(written.lines().count(), 9, "{written}");
    // A write under the older token is refused by the fenced storage.
    std::fs::write(
        file,
        format!(
            "{written}{} item from a newer holder\n",
            fences[2] + 1_000_000_000
        ),
    )
    .unwrap();
    let out = common::run(run_example("batch", &moto, &table).args([&lock, file]));
    out.assert_exit(1);
    assert!(out.stderr.contains("refused: fence"), "{}", out.describe());
    // It released its lock all the same.
    let status = common::status_json(&moto, &table, &lock);
    assert_eq!(status["held"], false, "{status}");
}
