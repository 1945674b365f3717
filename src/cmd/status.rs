//! `status` and `list`: what a store says about its locks, as text for
//! people and as JSON for programs.

use std::time::Duration;

use crate::cli::{Global, ListArgs, StatusArgs};
use crate::error::Result;
use crate::exit;
use crate::info::LockInfo;
use crate::output::{out, say};

use super::facts::{pid_alive, renewed_at_ms, rfc3339};
use super::options::open;
use super::show::{describe_info, expired_note, holders_text, shown};

/// `status NAME`: one lock, for people or as JSON.
pub(super) async fn status(g: &Global, s: StatusArgs) -> Result<i32> {
    crate::request::validate_name(&s.name)?;
    let store = open(g).await?;
    let info = store.inspect(&s.name).await?;
    if s.json {
        out(&serde_json::to_string(&info_json(&info)).unwrap_or_default())?;
    } else {
        out(&describe_info(&info))?;
    }
    Ok(exit::OK)
}

/// `list`: every held lock.
pub(super) async fn list(g: &Global, l: ListArgs) -> Result<i32> {
    let store = open(g).await?;
    let locks = store.list().await?;
    if l.json {
        let all: Vec<_> = locks.iter().map(info_json).collect();
        out(&serde_json::Value::Array(all).to_string())?;
    } else if locks.is_empty() {
        say!("awsflock: no lock is held in {}", store.describe());
    } else {
        out(&list_table(&locks))?;
    }
    Ok(exit::OK)
}

fn list_table(locks: &[LockInfo]) -> String {
    let locks: Vec<LockInfo> = locks.iter().map(shown).collect();
    let rows: Vec<[String; 8]> = locks
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                if l.holders.len() > 1 {
                    holders_text(l)
                } else {
                    l.owner.clone().unwrap_or_default()
                },
                l.host.clone().unwrap_or_default(),
                match (l.pid, pid_alive(l.host.as_deref(), l.pid)) {
                    (Some(p), Some(false)) => format!("{p} (gone)"),
                    (Some(p), _) => p.to_string(),
                    (None, _) => String::new(),
                },
                l.fence.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                match (expired_note(l), l.expires_in_ms) {
                    (Some(_), _) => "expired".into(),
                    (None, Some(ms)) => {
                        crate::duration::short(Duration::from_millis(ms.max(0) as u64))
                    }
                    (None, None) => String::new(),
                },
                l.waiting.to_string(),
                match (&l.problem, &l.reason) {
                    (Some(p), _) => format!("unreadable record: {p}"),
                    (None, r) => r.clone().unwrap_or_default(),
                },
            ]
        })
        .collect();
    let header = [
        "NAME",
        "OWNER",
        "HOST",
        "PID",
        "FENCE",
        "EXPIRES IN",
        "WAITING",
        "REASON",
    ]
    .map(String::from);
    // Terminal columns, not chars: CJK and emoji take two.
    let cols = |c: &str| unicode_width::UnicodeWidthStr::width(c);
    let mut widths = header.clone().map(|h| cols(&h));
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(cols(c));
        }
    }
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|r| {
            r.iter()
                .zip(widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(cols(c)))))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON shape shared by `status`, `list` and waiters: the same keys
/// whether or not anyone waited, and whatever the store keeps the holder in.
pub(super) fn info_json(info: &LockInfo) -> serde_json::Value {
    serde_json::json!({
        "name": info.name,
        "held": info.held,
        "owner": info.owner,
        "reason": info.reason,
        "fence": info.fence,
        "lease_id": info.lease_id,
        "acquired_at": info.acquired_at_ms.map(rfc3339),
        "renewed_at": renewed_at_ms(info).map(rfc3339),
        "expires_at": info.expires_at_ms.map(rfc3339),
        "lease_duration": info.lease_duration_s,
        "pid": info.pid,
        "pid_alive": pid_alive(info.host.as_deref(), info.pid),
        "host": info.host,
        "client": info.client,
        "problem": info.problem,
        "max_holders": info.max_holders,
        "waiting": info.waiting,
        "queue": info
            .queue
            .iter()
            .map(|w| {
                serde_json::json!({
                    "position": w.position,
                    "shared": w.shared,
                    "waiter": w.waiter,
                    "expires_at": rfc3339(w.expires_at_ms),
                })
            })
            .collect::<Vec<_>>(),
        "holders": holders_of(info)
            .iter()
            .map(|h| {
                serde_json::json!({
                    "owner": h.owner,
                    "reason": h.reason,
                    "fence": h.fence,
                    "shared": h.shared,
                    "acquired_at": rfc3339(h.acquired_at_ms),
                    "expires_at": rfc3339(h.expires_at_ms),
                    "host": h.host,
                    "pid": h.pid,
                    "pid_alive": pid_alive(h.host.as_deref(), h.pid),
                })
            })
            .collect::<Vec<_>>(),
    })
}

/// Every holder: those of a holder table, or the one the record names.
fn holders_of(info: &LockInfo) -> Vec<crate::info::HolderInfo> {
    if !info.holders.is_empty() || !info.held || info.problem.is_some() {
        return info.holders.clone();
    }
    vec![crate::info::HolderInfo {
        owner: info.owner.clone().unwrap_or_default(),
        reason: info.reason.clone(),
        fence: info.fence.unwrap_or(0),
        shared: false,
        acquired_at_ms: info.acquired_at_ms.unwrap_or(0),
        expires_at_ms: info.expires_at_ms.unwrap_or(0),
        host: info.host.clone(),
        pid: info.pid,
    }]
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::cmd::show::waiting_line;
    use proptest::prelude::*;

    fn any_info() -> impl Strategy<Value = LockInfo> {
        (
            (
                "\\PC{0,12}",
                any::<bool>(),
                proptest::option::of("\\PC{0,12}"),
            ),
            (
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>()),
                proptest::option::of("\\PC{0,30}"),
            ),
        )
            .prop_map(
                |((name, held, owner), (acq, exp, left, dur, fence, problem))| LockInfo {
                    name,
                    held,
                    owner: owner.clone(),
                    reason: owner,
                    fence,
                    lease_id: Some("L".into()),
                    acquired_at_ms: acq,
                    expires_at_ms: exp,
                    lease_duration_s: dur,
                    expires_in_ms: left,
                    pid: None,
                    host: None,
                    client: None,
                    problem,
                    takeover_margin_ms: acq,
                    ..Default::default()
                },
            )
    }

    proptest! {
        /// Whatever a store reports, every rendering of it succeeds.
        #[test]
        fn any_lock_info_renders(infos in proptest::collection::vec(any_info(), 1..4)) {
            let table = list_table(&infos);
            prop_assert_eq!(table.lines().count(), infos.len() + 1);
            for i in &infos {
                let _ = describe_info(i);
                let _ = info_json(i).to_string();
                let _ = waiting_line(&i.name, i);
            }
        }
    }

    #[test]
    fn control_characters_from_the_store_are_escaped() {
        let mut a = crate::protocol::expiry::absent_info("x");
        a.held = true;
        a.owner = Some("evil\n\x1b[31mroot".into());
        a.reason = Some("a\rb".into());
        for text in [list_table(std::slice::from_ref(&a)), describe_info(&a)] {
            assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
            assert!(text.contains("evil\\n\\u{1b}[31mroot"), "{text:?}");
        }
        assert_eq!(list_table(&[a]).lines().count(), 2);
    }

    #[test]
    fn wide_characters_are_padded_by_columns() {
        let mut a = crate::protocol::expiry::absent_info("锁");
        a.owner = Some("x".into());
        let mut b = crate::protocol::expiry::absent_info("ab");
        b.owner = Some("y".into());
        let t = list_table(&[a, b]);
        let cols: Vec<usize> = t
            .lines()
            .map(|l| {
                let at = l.find(['x', 'y', 'O']).unwrap();
                unicode_width::UnicodeWidthStr::width(&l[..at])
            })
            .collect();
        assert!(cols.windows(2).all(|w| w[0] == w[1]), "{t}");
    }
}
