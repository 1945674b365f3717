//! The library as a service uses it: only the public API, against a private
//! moto server per test, in this process. The store is opened with an AWS
//! configuration the test owns (`Store::open_with_config`), so nothing in the
//! environment is read or changed.

mod common;

use std::time::{Duration, Instant};

use awsflock::{AcquireRequest, Error, Lost, Store};
use common::{Moto, unique_name};

/// An AWS configuration aimed at `moto`, with test credentials.
async fn config(moto: &Moto) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new("test", "test", None, None, "test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(creds)
        .load()
        .await
}

/// A fresh table in `moto`, and a store on it.
async fn store(moto: &Moto) -> Store {
    let url = format!("dynamodb://{}", unique_name("lib"));
    let store = Store::open_with_config(&url, &config(moto).await)
        .await
        .expect("open");
    store.create().await.expect("create the table");
    store
}

fn request(name: &str, lease_s: u64) -> AcquireRequest {
    let mut req = AcquireRequest::new(name, Duration::from_secs(lease_s));
    req.wait = Some(Duration::ZERO);
    req.owner = "library-test".into();
    req.reason = Some("testing".into());
    req
}

#[tokio::test(flavor = "current_thread")]
async fn acquire_renew_release() {
    let moto = Moto::start();
    let store = store(&moto).await;
    let guard = store.acquire(&request("job", 3)).await.expect("acquire");
    let first = guard.lease();
    let fence = guard.fence().expect("a fencing token");
    assert!(first.time_left() > Duration::from_secs(1), "{first:?}");

    // Someone else is told who holds it.
    let err = store.acquire(&request("job", 3)).await.unwrap_err();
    assert!(matches!(err, Error::NotAcquired { .. }), "{err}");
    let holder = err.holder().expect("the holder");
    assert_eq!(holder.owner.as_deref(), Some("library-test"));
    assert_eq!(holder.fence, Some(fence));
    assert!(err.to_string().contains("library-test"), "{err}");

    // The guard renews every second: after 2.5 s the lease id has moved on
    // and the fence has not.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let now = guard.lease();
    assert_ne!(now.lease_id, first.lease_id, "not renewed");
    assert_eq!(guard.fence(), Some(fence));
    assert!(guard.is_lost().is_none());
    let info = store.inspect("job").await.unwrap();
    assert!(info.held);
    assert_eq!(store.list().await.unwrap().len(), 1);

    guard.release().await.expect("release");
    assert!(!store.inspect("job").await.unwrap().held);
    // The next holder's token is greater.
    let next = store.acquire(&request("job", 3)).await.unwrap();
    assert!(next.fence().unwrap() > fence);
    next.release().await.unwrap();
}

/// A frozen store: `expiring()` comes a safety margin before `lost()`; once
/// the store answers again (and the renewal that hung lands), `release()`
/// still says the lease is not held, naming the lease the guard saw.
#[tokio::test(flavor = "current_thread")]
async fn expiring_comes_before_lost_and_release_after_loss_is_not_ok() {
    let moto = Moto::private();
    let store = store(&moto).await;
    let guard = store.acquire(&request("frozen", 4)).await.unwrap();
    let known = guard.lease();
    let start = Instant::now();
    let left = known.time_left();
    moto.pause();
    let expiring = guard.expiring().await;
    let warned = start.elapsed();
    let lost = guard.lost().await;
    let lost_at = start.elapsed();
    moto.resume();
    eprintln!(
        "time left {left:?}, expiring after {warned:?} ({expiring}), lost after {lost_at:?} ({lost})"
    );
    assert!(matches!(expiring, Lost::Expiring(_)), "{expiring:?}");
    assert!(matches!(lost, Lost::Expired(_)), "{lost:?}");
    let margin = awsflock::safety_margin(Duration::from_secs(4));
    assert!(
        lost_at >= warned + margin / 2,
        "expiring {warned:?} is not a margin ({margin:?}) before lost {lost_at:?}"
    );
    assert!(
        warned <= left,
        "warned {warned:?} after the lease ran out {left:?}"
    );
    // Let the hung renewal land, if it will.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let err = guard.release().await.unwrap_err();
    match &err {
        Error::NotHeld { lease_id, .. } => assert_eq!(lease_id, &known.lease_id, "{err}"),
        other => panic!("expected NotHeld, got {other:?}"),
    }
    // Whatever landed was given back: the lock is free for others.
    let next = store
        .acquire(&request("frozen", 4))
        .await
        .expect("free again");
    next.release().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn work_is_cancelled_when_the_lock_is_released_by_force() {
    let moto = Moto::start();
    let store = store(&moto).await;
    let guard = store.acquire(&request("forced", 3)).await.unwrap();
    let known = guard.lease();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = ticks.clone();
    let work = async move {
        loop {
            t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let breaker = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        breaker
            .force_release("forced")
            .await
            .unwrap()
            .expect("was held");
    });
    let start = Instant::now();
    let outcome: Result<(), Lost> = guard.run_while_held(work).await;
    let took = start.elapsed();
    eprintln!("cancelled after {took:?}: {outcome:?}");
    assert!(matches!(outcome, Err(Lost::Taken(_))), "{outcome:?}");
    // Noticed at the next renewal (every second), well before the lease ran out.
    assert!(took < Duration::from_millis(2900), "{took:?}");
    let seen = ticks.load(std::sync::atomic::Ordering::SeqCst);
    assert!(seen > 5, "the work did not run: {seen}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ticks.load(std::sync::atomic::Ordering::SeqCst),
        seen,
        "still running"
    );
    let err = guard.release().await.unwrap_err();
    match &err {
        Error::NotHeld { lease_id, .. } => assert_eq!(lease_id, &known.lease_id),
        other => panic!("expected NotHeld, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn release_is_bounded_in_time() {
    let moto = Moto::private();
    let store = store(&moto).await;
    let guard = store.acquire(&request("slow", 30)).await.unwrap();
    moto.pause();
    let start = Instant::now();
    let r = guard.release_within(Duration::from_secs(1)).await;
    let took = start.elapsed();
    moto.resume();
    eprintln!("release_within(1s) against a frozen store: {took:?}: {r:?}");
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn bad_urls_are_invalid_input() {
    for url in ["ftp://x", "nonsense", "file://relative"] {
        let err = Store::open(url).await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{url}: {err:?}");
        for word in ["--backend", "--endpoint-url", "--table"] {
            assert!(!err.to_string().contains(word), "{url}: {err}");
        }
    }
}

/// A service that depends on awsflock with `default-features = false,
/// features = ["dynamodb"]` builds none of the command line and needs no
/// protoc: `cargo tree` for that feature set names none of those crates.
#[test]
fn a_dependent_without_the_command_line_builds_none_of_it() {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "--no-default-features",
            "--features",
            "dynamodb",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains("aws-sdk-dynamodb"), "{crates:?}");
    for unwanted in [
        "clap",
        "clap_complete",
        "clap_mangen",
        "indicatif",
        "tracing-subscriber",
        "signal-hook-tokio",
        "etcd-client",
        "tonic",
        "tonic-build",
        "prost-build",
        "aws-sdk-s3",
        "tempfile",
    ] {
        assert!(
            !crates.contains(unwanted),
            "{unwanted} is built: {crates:?}"
        );
    }
}
