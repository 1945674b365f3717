//! DynamoDB's waiting line ([`crate::protocol::line`]): a ticket counter
//! item per name, taken with an unconditional `ADD` (one write that never
//! fails a condition), and one small entry item per waiter, keyed by its
//! ticket, so that the entries ahead of a waiter are read by key.
//!
//! ```text
//! __awsflock__/ticket/LEN:NAME            next_ticket
//! __awsflock__/wait/LEN:NAME/TICKET(20)   waiter, kind, expires_ms, expiration_time (TTL)
//! ```

use aws_sdk_dynamodb::types::AttributeValue;

use super::{DynamoDb, Item, Requests, attr, get_i64, get_s, n, s};
use crate::error::Result;
use crate::protocol::line::{self, Entry, Mark};
use crate::protocol::slots::Kind;
use crate::store::cas::Line;

/// DynamoDB's TTL deletes a dead waiter's entry this long after it lapsed.
const TTL_AFTER_S: i64 = 3600;

fn entry_attrs(id: &str, kind: Kind, expires_ms: i64) -> Vec<(&'static str, AttributeValue)> {
    vec![
        (attr::WAITER, s(id)),
        (attr::KIND, s(line::kind_word(kind))),
        (attr::EXPIRES_MS, n(expires_ms)),
        (attr::EXPIRATION_TIME, n(expires_ms / 1000 + TTL_AFTER_S)),
    ]
}

/// The entry an item is, when it reads as one.
fn entry_of(prefix: &str, item: &Item) -> Option<Entry> {
    let place = get_s(item, attr::LOCK_ID)?.strip_prefix(prefix)?;
    Some(Entry {
        place: place.to_string(),
        kind: line::kind_of_word(get_s(item, attr::KIND)?)?,
        expires_ms: get_i64(item, attr::EXPIRES_MS)?,
        waiter: get_s(item, attr::WAITER).unwrap_or_default().to_string(),
    })
}

/// The ticket a place of the mark stands for (0: none yet).
fn served(mark: &Mark) -> u64 {
    line::ticket_of(&mark.served).unwrap_or(0)
}

#[async_trait::async_trait]
impl<R: Requests> Line for DynamoDb<R> {
    async fn take_place(&self, name: &str, _: &str, _: Kind, _: &Mark) -> Result<String> {
        let ticket = self.req.take_ticket(&line::counter_key(name)).await?;
        Ok(line::ticket_place(ticket))
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
        let key = format!("{}{place}", line::prefix(name));
        self.req
            .put_entry(&key, entry_attrs(id, kind, expires_ms))
            .await?;
        let from = match mark.served.as_str() {
            "" => line::ticket_of(&self.floor(place)).unwrap_or(0),
            _ => served(mark),
        };
        let ticket = line::ticket_of(place).unwrap_or(0);
        Ok(ticket.saturating_sub(from).saturating_sub(1))
    }

    async fn refresh(
        &self,
        name: &str,
        place: &str,
        id: &str,
        kind: Kind,
        expires_ms: i64,
    ) -> Result<()> {
        let key = format!("{}{place}", line::prefix(name));
        self.req
            .put_entry(&key, entry_attrs(id, kind, expires_ms))
            .await
    }

    async fn leave(&self, name: &str, place: &str) -> Result<()> {
        self.req
            .delete_entry(&format!("{}{place}", line::prefix(name)))
            .await
    }

    async fn entries(
        &self,
        name: &str,
        after: &str,
        before: Option<&str>,
        max: usize,
    ) -> Result<Vec<Entry>> {
        let first = line::ticket_of(after).unwrap_or(0) + 1;
        let end = match before {
            Some(b) => line::ticket_of(b).unwrap_or(0),
            None => self.req.last_ticket(&line::counter_key(name)).await? + 1,
        };
        let last = end.min(first.saturating_add(max as u64));
        if first >= last {
            return Ok(Vec::new());
        }
        let prefix = line::prefix(name);
        let keys = (first..last)
            .map(|t| format!("{prefix}{}", line::ticket_place(t)))
            .collect();
        let mut found: Vec<Entry> = self
            .req
            .get_entries(keys)
            .await?
            .iter()
            .filter_map(|i| entry_of(&prefix, i))
            .collect();
        found.sort_by(|a, b| a.place.cmp(&b.place));
        // Fewer than asked only at the end: stand in for the tickets read
        // and found absent (left, or never written) with lapsed entries.
        if found.len() < max && last < end {
            let have: std::collections::HashSet<String> =
                found.iter().map(|e| e.place.clone()).collect();
            for t in first..last {
                let place = line::ticket_place(t);
                if !have.contains(&place) {
                    found.push(Entry {
                        place,
                        kind: Kind::Shared,
                        expires_ms: i64::MIN / 2,
                        waiter: String::new(),
                    });
                }
            }
            found.sort_by(|a, b| a.place.cmp(&b.place));
        }
        Ok(found)
    }

    async fn end(&self, name: &str) -> Result<String> {
        let last = self.req.last_ticket(&line::counter_key(name)).await?;
        Ok(line::ticket_place(last))
    }

    fn places_ahead(&self, place: &str, mark: &Mark) -> Option<u64> {
        let t = line::ticket_of(place)?;
        let served = line::ticket_of(&mark.served)?;
        Some(t.saturating_sub(served).saturating_sub(1))
    }

    fn floor(&self, place: &str) -> String {
        let t = line::ticket_of(place).unwrap_or(1);
        line::ticket_place(t.saturating_sub(line::READ_AHEAD as u64 + 1))
    }

    async fn anyone_waiting(&self, name: &str, mark: &Mark) -> Result<bool> {
        Ok(self.req.last_ticket(&line::counter_key(name)).await? > served(mark))
    }
}
