//! A crowd of waiters on one name, in one process: N tasks on one runtime
//! each take the lock (or a place in a semaphore), stamp their start and end
//! in a file, and release. `scripts/bench/crowd.sh` runs it for crowds too
//! large to be processes on a small machine; a task waits exactly as an
//! `awsflock run` does (the same library calls), sharing one store client.
//!
//! ```text
//! crowd BACKEND NAME N STAMPS WAIT_SECONDS [MAX_HOLDERS]
//! ```
//!
//! Each task appends `s NANOS wK` when it holds and `e NANOS wK` just
//! before it releases (wall-clock nanoseconds, as `date +%s%N`). Prints
//! how many held and how many gave up; exits 0 when every task held, 3
//! when some did not, 2 on bad arguments or an unusable store.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use awsflock::{AcquireRequest, Store, StoreOptions};

struct Args {
    backend: String,
    name: String,
    n: usize,
    stamps: String,
    wait: Duration,
    max_holders: Option<u32>,
}

fn parse() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 5 || a.len() > 6 {
        return Err("usage: crowd BACKEND NAME N STAMPS WAIT_SECONDS [MAX_HOLDERS]".into());
    }
    let num = |s: &str, what: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("{what}: not a number: {s}"))
    };
    Ok(Args {
        backend: a[0].clone(),
        name: a[1].clone(),
        n: num(&a[2], "N")? as usize,
        stamps: a[3].clone(),
        wait: Duration::from_secs(num(&a[4], "WAIT_SECONDS")?),
        max_holders: a
            .get(5)
            .map(|s| num(s, "MAX_HOLDERS"))
            .transpose()?
            .map(|m| m as u32),
    })
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One waiter: hold, stamp start and end, release. True when it held.
async fn waiter(
    store: Arc<Store>,
    args: Arc<Args>,
    k: usize,
    out: Arc<Mutex<std::fs::File>>,
) -> bool {
    let mut req = AcquireRequest::new(args.name.clone(), Duration::from_secs(60));
    req.wait = Some(args.wait);
    req.max_holders = args.max_holders;
    let Ok(guard) = store.acquire(&req).await else {
        return false;
    };
    let stamp = |kind: &str| {
        let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{kind} {} w{k}", now_ns());
    };
    stamp("s");
    stamp("e");
    let _ = guard.release().await;
    true
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse().unwrap_or_else(|e| {
        eprintln!("crowd: {e}");
        std::process::exit(2)
    });
    let mut opts = StoreOptions::from_env();
    opts.url = Some(args.backend.clone());
    let store = Store::open_with(&opts).await.unwrap_or_else(|e| {
        eprintln!("crowd: cannot open the store: {e}");
        std::process::exit(2)
    });
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.stamps);
    let file = file.unwrap_or_else(|e| {
        eprintln!("crowd: cannot open {}: {e}", args.stamps);
        std::process::exit(2)
    });
    let (store, out, args) = (Arc::new(store), Arc::new(Mutex::new(file)), Arc::new(args));
    let tasks: Vec<_> = (0..args.n)
        .map(|k| tokio::spawn(waiter(store.clone(), args.clone(), k, out.clone())))
        .collect();
    let mut held = 0;
    for t in tasks {
        held += usize::from(t.await.unwrap_or(false));
    }
    println!("crowd: {held} of {} held", args.n);
    std::process::exit(if held == args.n { 0 } else { 3 });
}
