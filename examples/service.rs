//! A long-running service that holds a lock for its whole life, the way
//! one leader among several replicas would: it waits for the lock, works
//! while it holds it, and stops its work the moment the lease is lost (or
//! is about to be), instead of carrying on without it.
//!
//! ```text
//! AWSFLOCK_BACKEND=dynamodb://awsflock cargo run --example service -- leader
//! ```
//!
//! The store comes from the environment, as the `awsflock` command line
//! reads it (`AWSFLOCK_BACKEND`, `AWSFLOCK_TABLE`, `AWS_ENDPOINT_URL`, ...).
//! Arguments: the lock's name (default `service-leader`), the lease in
//! seconds (default 15) and, for demonstrations, how many seconds to work
//! before stopping by itself (default: until Ctrl-C or the lease is lost).
//! Exits 0 after a clean release, 1 when the lease was lost, 2 on errors.

use std::time::Duration;

use awsflock::{AcquireRequest, Store, StoreOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "service-leader".into());
    let lease: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    let work_for: Option<u64> = args.next().and_then(|a| a.parse().ok());

    let store = match Store::open_with(&StoreOptions::from_env()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("service: cannot open the store: {e}");
            std::process::exit(2);
        }
    };
    let mut req = AcquireRequest::new(name.clone(), Duration::from_secs(lease));
    req.wait = None; // a standby replica waits for as long as it takes
    req.reason = Some(format!("service pid {}", std::process::id()));
    let guard = match store.acquire(&req).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("service: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "service: holding {name} with fence {}",
        guard.fence().map_or("-".into(), |f| f.to_string())
    );

    // The service's work: here, a tick per 200 ms. It is cancelled (dropped
    // at its next await) when the lease is lost or about to expire.
    let work = async {
        let mut n = 0u64;
        loop {
            n += 1;
            println!("service: tick {n}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            if work_for.is_some_and(|s| n * 200 >= s * 1000) {
                return;
            }
        }
    };
    let outcome = tokio::select! {
        r = guard.run_while_held(work) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    match outcome {
        Ok(()) => match guard.release().await {
            Ok(()) => println!("service: released {name}"),
            Err(e) => {
                eprintln!("service: {e}");
                std::process::exit(1);
            }
        },
        Err(lost) => {
            // Stop everything done under the lock, and say so.
            println!("service: stopped working: {lost}");
            let _ = guard.release().await;
            std::process::exit(1);
        }
    }
}
