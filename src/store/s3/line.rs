//! S3's waiting line ([`crate::protocol::line`]). S3 has no atomic
//! increment (a conditional counter would bring back one write that every
//! waiter fights over), so places are ordered by key: each waiter puts one
//! object of its own, named by the store's time, its kind and a random id,
//! and learns what is ahead of it from one page of ListObjectsV2, whose
//! `LastModified` tells each entry's age without a GET. A joiner reads the
//! line first and takes a time after the last place it saw, so that places
//! follow arrivals even where the store's clock (known to a second) would
//! not tell them apart.
//!
//! ```text
//! PREFIX __awsflock__/wait/LEN:NAME/<ms, 13 digits>-<x|s>-<uuid>   {"waiter":…,"kind":…,"expires_ms":…}
//! ```
//!
//! An entry lives [`WAIT_LIFE_MS`] after its last write (a refresh is one
//! unconditional PUT); a lifecycle rule on the prefix may delete dead ones.

use super::{Cond, Objects, S3Store};
use crate::error::Result;
use crate::protocol::line::{self, Entry, Mark, WAIT_LIFE_MS};
use crate::protocol::slots::Kind;
use crate::store::cas::Line;

/// How far before the store's time a new mark is put: more than any two
/// clients' views of the store's clock differ (each is known to about a
/// second from whole-second `Date`s).
const END_MARGIN_MS: i64 = 3_000;

/// How many entries the join's one LIST counts, at most.
const COUNT_AT_JOIN: usize = 1000;

/// `LastModified` is given in whole seconds by some servers: an entry is
/// taken to live this much longer than its life, so that it is never
/// judged lapsed before its waiter's own view.
const MODIFIED_GRAIN_MS: i64 = 1000;

impl<O: Objects> S3Store<O> {
    fn line_prefix(&self, name: &str) -> String {
        format!("{}{}", self.prefix, line::prefix(name))
    }

    async fn put_entry(&self, key: &str, id: &str, kind: Kind, expires_ms: i64) -> Result<()> {
        let body = serde_json::json!({
            "waiter": id,
            "kind": line::kind_word(kind),
            "expires_ms": expires_ms,
        });
        self.objects
            .put(key, body.to_string().into_bytes(), Cond::Any)
            .await?;
        Ok(())
    }
}

/// The waiter id a place carries (after its time and kind).
fn waiter_of(place: &str) -> &str {
    place.splitn(3, '-').nth(2).unwrap_or_default()
}

#[async_trait::async_trait]
impl<O: Objects> Line for S3Store<O> {
    async fn take_place(&self, name: &str, id: &str, kind: Kind, mark: &Mark) -> Result<String> {
        // After every place already taken: the store's time orders
        // arrivals only to about a second (its `Date` has whole seconds),
        // so a waiter that sees another's entry goes after it.
        let ahead = self
            .entries(name, &mark.served, None, COUNT_AT_JOIN)
            .await?;
        let last_ms = ahead.last().and_then(|e| line::ms_of_timed(&e.place));
        let ms = last_ms.map_or(i64::MIN, |m| m + 1);
        Ok(line::timed_place(
            self.objects.clock().upper_ms().max(ms),
            kind,
            id,
        ))
    }

    async fn enter(
        &self,
        name: &str,
        place: &str,
        id: &str,
        kind: Kind,
        expires_ms: i64,
        mark: &Mark,
    ) -> Result<u64> {
        let key = format!("{}{place}", self.line_prefix(name));
        self.put_entry(&key, id, kind, expires_ms).await?;
        // Counted again once our entry is in: waiters who joined with us,
        // unseen by the first listing, are ahead of us or behind us now.
        let ahead = self
            .entries(name, &mark.served, Some(place), COUNT_AT_JOIN)
            .await?
            .len();
        Ok(ahead as u64)
    }

    async fn refresh(
        &self,
        name: &str,
        place: &str,
        id: &str,
        kind: Kind,
        expires_ms: i64,
    ) -> Result<()> {
        let key = format!("{}{place}", self.line_prefix(name));
        self.put_entry(&key, id, kind, expires_ms).await
    }

    async fn leave(&self, name: &str, place: &str) -> Result<()> {
        let key = format!("{}{place}", self.line_prefix(name));
        self.objects.delete(&key).await
    }

    async fn entries(
        &self,
        name: &str,
        after: &str,
        before: Option<&str>,
        max: usize,
    ) -> Result<Vec<Entry>> {
        let prefix = self.line_prefix(name);
        let start = if after.is_empty() {
            String::new()
        } else {
            format!("{prefix}{after}")
        };
        let page = self.objects.list_page(&prefix, &start, max).await?;
        Ok(page
            .into_iter()
            .filter_map(|(key, modified_ms)| {
                let place = key.strip_prefix(&prefix)?.to_string();
                if before.is_some_and(|b| place.as_str() >= b) {
                    return None;
                }
                Some(Entry {
                    kind: line::kind_of_timed(&place)?,
                    expires_ms: modified_ms + WAIT_LIFE_MS + MODIFIED_GRAIN_MS,
                    waiter: waiter_of(&place).to_string(),
                    place,
                })
            })
            .collect())
    }

    /// The store's time, less the uncertainty of every client's view of
    /// it: a place taken from now on carries a later time.
    async fn end(&self, _name: &str) -> Result<String> {
        let ms = self.objects.clock().lower_ms() - END_MARGIN_MS;
        Ok(format!("{:013}", ms.max(0)))
    }

    fn floor(&self, _place: &str) -> String {
        String::new()
    }
}
