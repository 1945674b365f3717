//! `release`: by lease id, or `--force` with its prompt, its revocation of
//! a supervised holder and its wait for the lock to be handed on.

use std::io::IsTerminal;
use std::time::Duration;

use crate::cli::{Global, ReleaseArgs};
use crate::error::Result;
use crate::exit;
use crate::info::LockInfo;
use crate::output::{say, say_prompt, stderr_is_terminal};
use crate::store::LockStore;

use super::options::open;
use super::show::{describe_info, printable};

/// `release`: by lease id, or `--force` without one.
pub(super) async fn release(g: &Global, r: ReleaseArgs) -> Result<i32> {
    crate::request::validate_name(&r.name)?;
    let store = open(g).await?;
    match (&r.lease_id, r.force) {
        (Some(id), _) => store.release(&r.name, id).await?,
        (None, _) => return force_release(store.as_ref(), &r).await,
    }
    Ok(exit::OK)
}

/// `release --force`: a holder supervised by `run` is revoked and the
/// lock handed on once it stopped its command and confirmed, or its lease
/// ended (waited for unless `--no-wait`); a lease nothing supervises, or
/// any with `--immediately`, is released at once (DESIGN.md, "Forced
/// release").
async fn force_release(store: &dyn LockStore, r: &ReleaseArgs) -> Result<i32> {
    use crate::protocol::revoke::{Force, ForceMode, Forced};
    let name = r.name.as_str();
    let info = store.inspect(name).await?;
    if !info.held {
        say!("awsflock: {name} is not held; nothing to release");
        return Ok(exit::NOT_HELD);
    }
    say!(
        "awsflock: {}",
        describe_info(&info).replace('\n', "\nawsflock: ")
    );
    let mode = if r.immediately {
        ForceMode::Immediately
    } else {
        ForceMode::Revoke
    };
    let (question, warning) = force_prompt(&info, mode);
    if let Some(w) = &warning {
        say!("awsflock: {w}");
    }
    if !r.yes && std::io::stdin().is_terminal() && stderr_is_terminal() {
        say_prompt!("awsflock: {question} [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            say!("awsflock: not released");
            return Ok(exit::NOT_HELD);
        }
    }
    let holder = |was: &LockInfo| {
        format!(
            "{}{}",
            was.owner
                .as_deref()
                .map(printable)
                .unwrap_or("unknown".into()),
            was.fence
                .map(|f| format!(" (fence {f})"))
                .unwrap_or_default()
        )
    };
    match store.force_release(name, &Force::here(mode)).await? {
        Forced::Released(was) => {
            say!(
                "awsflock: released {name}, which was held by {}",
                holder(&was)
            );
            Ok(exit::OK)
        }
        Forced::Revoked(was) if r.no_wait => {
            say!(
                "awsflock: asked {} to stop; {name} is handed on once it confirms, \
                 or when its lease ends{}",
                holder(&was),
                lease_ends_in(&was)
            );
            Ok(exit::OK)
        }
        Forced::Revoked(was) => wait_handed_on(store, name, &was, &holder(&was)).await,
        Forced::NotHeld => {
            say!("awsflock: {name} was released meanwhile; nothing to do");
            Ok(exit::NOT_HELD)
        }
    }
}

/// The confirmation question of a forced release, and a warning said
/// whether or not it is asked: what happens to the holder's work.
fn force_prompt(
    info: &LockInfo,
    mode: crate::protocol::revoke::ForceMode,
) -> (String, Option<String>) {
    use crate::protocol::revoke::ForceMode;
    let name = printable(&info.name);
    let owner = info
        .owner
        .as_deref()
        .map(printable)
        .unwrap_or("its holder".into());
    match (mode, info.supervised) {
        (ForceMode::Revoke, true) => (
            format!(
                "release {name} from {owner}? Its `run` stops its command at its next \
                 renewal and the lock is handed on after that"
            ),
            None,
        ),
        (ForceMode::Revoke, false) => (
            format!("release {name} from {owner} at once?"),
            Some(
                "nothing supervises this lease (acquire, awsflock 0.2.0, etcdctl): \
                 its holder may still be working when the next one starts"
                    .to_string(),
            ),
        ),
        (ForceMode::Immediately, _) => (
            format!("release {name} from {owner} at once?"),
            Some(format!(
                "breaking glass: if {owner} still runs, its work may overlap with the \
                 next holder's until its next renewal"
            )),
        ),
    }
}

/// " (in 12s)": how long the revoked lease still lasts, when known.
fn lease_ends_in(info: &LockInfo) -> String {
    info.expires_in_ms
        .map(|ms| format!(" (in {:.0}s)", (ms.max(0) as f64 / 1000.0).ceil()))
        .unwrap_or_default()
}

/// Waits until a revoked holder confirmed (released) or its lease ended,
/// with a progress line; the lock is then free or handed on.
async fn wait_handed_on(
    store: &dyn LockStore,
    name: &str,
    was: &LockInfo,
    holder: &str,
) -> Result<i32> {
    say!(
        "awsflock: asked {holder} to stop; waiting for it to confirm, \
         at most until its lease ends{}",
        lease_ends_in(was)
    );
    let started = std::time::Instant::now();
    // The lease ends by its expiry on the store's clock; give the holder a
    // generous bound beyond, then stop waiting (the lock frees by itself).
    let limit = Duration::from_millis(was.expires_in_ms.unwrap_or(0).max(0) as u64)
        + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = match store.inspect(name).await {
            Ok(now) => now,
            Err(e) if started.elapsed() < limit => {
                tracing::warn!("{e}; still waiting");
                continue;
            }
            Err(e) => return Err(e),
        };
        if crate::protocol::revoke::handed_on(&now) {
            let how = match was.expires_in_ms {
                Some(ms) if (started.elapsed().as_millis() as i64) < ms => {
                    "its holder stopped and confirmed"
                }
                _ => "its lease ended",
            };
            say!("awsflock: released {name}: {how}");
            return Ok(exit::OK);
        }
        if started.elapsed() > limit {
            say!(
                "awsflock: {name} is still held by its revoked holder; \
                 it frees itself when the lease expires"
            );
            return Ok(exit::OK);
        }
    }
}
