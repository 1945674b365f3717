//! A lock as people read it (`status`, a waiter's line, a forced
//! release's summary): every text from the store made printable.

use std::time::Duration;

use crate::info::LockInfo;

use super::facts::{clock_time, pid_alive, renewed_at_ms, rfc3339};

/// `text` with every control character escaped (`\n`, `\u{1b}`): what a
/// store holds is untrusted, and a newline or an escape sequence in an
/// owner or reason must not forge lines or colours on a terminal.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `info` with every text field [`printable`], for people.
pub(super) fn shown(info: &LockInfo) -> LockInfo {
    let p = |t: &Option<String>| t.as_deref().map(printable);
    LockInfo {
        name: printable(&info.name),
        owner: p(&info.owner),
        reason: p(&info.reason),
        host: p(&info.host),
        client: p(&info.client),
        problem: p(&info.problem),
        lease_id: p(&info.lease_id),
        holders: info
            .holders
            .iter()
            .map(|h| crate::info::HolderInfo {
                owner: printable(&h.owner),
                reason: p(&h.reason),
                host: p(&h.host),
                ..h.clone()
            })
            .collect(),
        ..info.clone()
    }
}

/// "alice", or "alice and 2 more" for a name with several holders.
pub(super) fn holders_text(info: &LockInfo) -> String {
    let owner = info.owner.clone().unwrap_or_else(|| "unknown".into());
    match info.holders.len() {
        0 | 1 => owner,
        n => format!("{owner} and {} more", n - 1),
    }
}

/// `waiting for Deploy: held by alice@ci-7 since 10:02 UTC (terraform apply), expires in 1h58m`
pub(super) fn waiting_line(name: &str, info: &LockInfo) -> String {
    let place = match info.position {
        Some(1) => ", next in line".to_string(),
        Some(p) => format!(", {} ahead of us", p - 1),
        None => String::new(),
    };
    format!(
        "waiting for {}: {}{place}",
        printable(name),
        holder_line(info)
    )
}

/// `held by alice@ci-7 since 10:02 UTC (terraform apply), expires in 1h58m`
pub(super) fn holder_line(info: &LockInfo) -> String {
    let info = &shown(info);
    if !info.held {
        // Free, with waiters ahead of us in the queue.
        return format!("free, {} waiting in turn", info.waiting);
    }
    let mut s = format!("held by {}", holders_text(info));
    if let Some(t) = info.acquired_at_ms {
        s.push_str(&format!(" since {}", clock_time(t)));
    }
    if let Some(r) = &info.reason {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(p) = &info.problem {
        s.push_str(&format!(" (unreadable record: {p})"));
    }
    if let Some(left) = info.expires_in_ms {
        if left > 0 {
            s.push_str(&format!(
                ", expires in {}",
                crate::duration::short(Duration::from_millis(left as u64))
            ));
        } else {
            s.push_str(", lease expired");
        }
    }
    s
}

/// `status` for people: the same lines whether or not anyone waited.
pub(super) fn describe_info(info: &LockInfo) -> String {
    let info = &shown(info);
    let unreadable = info.problem.as_ref().map(|p| {
        format!(
            "\n  unreadable record: {p}\n  it counts as held until `awsflock release {} --force` frees it",
            info.name
        )
    });
    let waiting = format!("\n  waiting:  {}{}", info.waiting, in_line(info));
    if !info.held {
        let queue = if info.waiting > 0 {
            waiting
        } else {
            String::new()
        };
        return format!(
            "{}: free{}{queue}",
            info.name,
            unreadable.unwrap_or_default()
        );
    }
    let several = info.max_holders.is_some()
        || info.holders.len() > 1
        || info.holders.iter().any(|h| h.shared);
    let mut s = if several {
        describe_holders(info)
    } else {
        describe_holder(info)
    };
    s.push_str(&unreadable.unwrap_or_default());
    s.push_str(&waiting);
    s
}

/// ` (1. exclusive 5f0c2a91, 2. shared 77ab01cd, …)`: the first few waiters
/// in line, by place, kind and the start of their waiter id (their LEASE_ID
/// once admitted), on the `waiting` line itself, so that `status` has the
/// same lines whether or not anyone waits.
fn in_line(info: &LockInfo) -> String {
    const SHOWN: usize = 5;
    if info.queue.is_empty() {
        return String::new();
    }
    let mut parts: Vec<String> = info
        .queue
        .iter()
        .take(SHOWN)
        .map(|w| {
            let kind = if w.shared { "shared" } else { "exclusive" };
            format!(
                "{}. {kind} {}",
                w.position,
                w.waiter.get(..8).unwrap_or(&w.waiter)
            )
        })
        .collect();
    if info.queue.len() > SHOWN {
        parts.push("…".to_string());
    }
    format!(" ({})", parts.join(", "))
}

/// A semaphore's or shared lock's holders, one line each.
fn describe_holders(info: &LockInfo) -> String {
    let mut s = match info.max_holders {
        Some(n) => format!(
            "{}: held by {} of {n} (semaphore, --max-holders {n})",
            info.name,
            info.holders.len()
        ),
        None if info.holders.iter().all(|h| h.shared) => {
            format!("{}: held shared by {}", info.name, info.holders.len())
        }
        None => format!("{}: held exclusively", info.name),
    };
    for h in &info.holders {
        s.push_str(&format!("\n  {} (fence {})", h.owner, h.fence));
        if let Some(host) = &h.host {
            s.push_str(&format!(" on {host}"));
        }
        if let Some(p) = h.pid {
            s.push_str(&format!(" pid {p}"));
            match pid_alive(h.host.as_deref(), h.pid) {
                Some(true) => s.push_str(" (running)"),
                Some(false) => s.push_str(" (not running)"),
                None => {}
            }
        }
        s.push_str(&format!(", expires {}", rfc3339(h.expires_at_ms)));
        if let Some(r) = &h.reason {
            s.push_str(&format!(": {r}"));
        }
    }
    s
}

/// A lock's one holder: who, where, since when, until when.
fn describe_holder(info: &LockInfo) -> String {
    let mut holder = info.owner.as_deref().unwrap_or("unknown").to_string();
    if let Some(h) = &info.host {
        holder.push_str(&format!(" on {h}"));
    }
    holder.push_str(&pid_text(info.host.as_deref(), info.pid));
    let mut s = match expired_note(info) {
        Some(note) => format!("{}: {note} (held by {holder})", info.name),
        None => format!("{}: held by {holder}", info.name),
    };
    let mut line = |label: &str, value: String| s.push_str(&format!("\n  {label:<9} {value}"));
    if let Some(r) = &info.reason {
        line("reason:", r.clone());
    }
    if let Some(f) = info.fence {
        line("fence:", f.to_string());
    }
    if let Some(a) = info.acquired_at_ms {
        line("acquired:", rfc3339(a));
    }
    if let Some(r) = renewed_at_ms(info) {
        line("renewed:", rfc3339(r));
    }
    if let Some(e) = info.expires_at_ms {
        line("expires:", rfc3339(e));
    }
    if let Some(d) = info.lease_duration_s {
        line("lease:", crate::duration::short(Duration::from_secs(d)));
    }
    s
}

/// " (pid 2976, running)", " (pid 2976, not running)" on this host, or
/// " (pid 2976)" elsewhere.
fn pid_text(host: Option<&str>, pid: Option<u32>) -> String {
    match (pid, pid_alive(host, pid)) {
        (Some(p), Some(true)) => format!(" (pid {p}, running)"),
        (Some(p), Some(false)) => format!(" (pid {p}, not running)"),
        (Some(p), None) => format!(" (pid {p})"),
        (None, _) => String::new(),
    }
}

/// "expired 3s ago; free in 2s" for a lease past its expiry but inside the
/// store's takeover margin, when it still counts as held.
pub(super) fn expired_note(info: &LockInfo) -> Option<String> {
    let left = info.expires_in_ms.filter(|l| *l < 0 && info.held)?;
    let margin = info.takeover_margin_ms?;
    let secs =
        |ms: i64| crate::duration::short(Duration::from_secs((ms.max(0) as u64).div_ceil(1000)));
    Some(format!(
        "expired {} ago; free in {}",
        secs(left.saturating_neg()),
        secs(margin.saturating_add(left))
    ))
}
