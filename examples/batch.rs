//! A batch job that takes a lock, does its work, and passes the lock's
//! fencing token to what it writes, so that the storage can refuse a write
//! from a holder whose lease was lost in the meantime (a paused process, a
//! slow network) once a newer holder has written.
//!
//! ```text
//! AWSFLOCK_BACKEND=dynamodb://awsflock cargo run --example batch -- nightly /tmp/out.log
//! ```
//!
//! The "storage" here is a local file whose lines each start with the fence
//! they were written under; a write under a fence lower than the highest in
//! the file is refused, as a database would with a conditional write on a
//! fence column. Arguments: the lock's name and the file. Exits 0 when the
//! work was written and the lock released, 1 when a write was refused or
//! the lease lost, 2 on other errors.

use std::io::Write;
use std::time::Duration;

use awsflock::{AcquireRequest, Store, StoreOptions};

/// Appends `line` under `fence`, unless a newer holder has written already.
fn fenced_append(path: &str, fence: u64, line: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let highest = text
        .lines()
        .filter_map(|l| l.split_once(' ')?.0.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    if fence < highest {
        return Err(format!(
            "refused: fence {fence} is older than {highest}, written by a newer holder"
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    writeln!(f, "{fence} {line}").map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, path] = args.as_slice() else {
        eprintln!("usage: batch LOCK FILE");
        std::process::exit(2);
    };
    let fail = |msg: String, code: i32| -> ! {
        eprintln!("batch: {msg}");
        std::process::exit(code)
    };
    let store = Store::open_with(&StoreOptions::from_env())
        .await
        .unwrap_or_else(|e| fail(format!("cannot open the store: {e}"), 2));
    let mut req = AcquireRequest::new(name.clone(), Duration::from_secs(30));
    req.wait = Some(Duration::from_secs(60));
    req.reason = Some("batch example".into());
    let guard = store
        .acquire(&req)
        .await
        .unwrap_or_else(|e| fail(e.to_string(), 2));
    let fence = guard
        .fence()
        .unwrap_or_else(|| fail("the lease carries no fencing token".into(), 2));

    let work = async {
        for item in 1..=3 {
            fenced_append(path, fence, &format!("item {item}"))?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<(), String>(())
    };
    let outcome = guard.run_while_held(work).await;
    // Release in every case: a refused write or a lost lease must not keep
    // others waiting for the lease to expire.
    let released = guard.release().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => fail(refused, 1),
        Err(lost) => fail(format!("stopped: {lost}"), 1),
    }
    released.unwrap_or_else(|e| fail(e.to_string(), 1));
    println!("batch: wrote 3 items to {path} with fence {fence}");
}
