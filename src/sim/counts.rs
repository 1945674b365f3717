//! What the simulated stores were asked: requests by kind and outcome,
//! DynamoDB's read and write request units as it bills them, the largest
//! item or object read or written (by what it is), and per client its
//! requests, failed conditional writes and the writes that joined the
//! line. Counted under the world's one lock as each request is applied
//! (a duplicate twice, as the store bills it; a request that never reached
//! the store not at all), so a snapshot ([`Counts`] is `Clone`) at any
//! instant of virtual time is exact, and two snapshots' difference is what
//! a phase cost ([`Counts::since`]).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::store::dynamodb::Item;

/// A request kind of the simulated stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    GetItem,
    UpdateItem,
    PutItem,
    DeleteItem,
    BatchGetItem,
    TransactWriteItems,
    S3Get,
    S3Put,
    S3List,
    S3Delete,
}

const OPS: [Op; 10] = [
    Op::GetItem,
    Op::UpdateItem,
    Op::PutItem,
    Op::DeleteItem,
    Op::BatchGetItem,
    Op::TransactWriteItems,
    Op::S3Get,
    Op::S3Put,
    Op::S3List,
    Op::S3Delete,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::GetItem => "GetItem",
            Op::UpdateItem => "UpdateItem",
            Op::PutItem => "PutItem",
            Op::DeleteItem => "DeleteItem",
            Op::BatchGetItem => "BatchGetItem",
            Op::TransactWriteItems => "TransactWriteItems",
            Op::S3Get => "GET",
            Op::S3Put => "PUT",
            Op::S3List => "LIST",
            Op::S3Delete => "DELETE",
        }
    }
}

/// Requests of one kind: applied, and refused by their condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
}

/// One client's requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTally {
    pub requests: u64,
    /// Conditional writes refused by their condition.
    pub failed_writes: u64,
    /// Writes that joined the line: a ticket taken, an entry written where
    /// there was none.
    pub join_writes: u64,
    /// The key of the first line entry it wrote (its place).
    pub place: Option<String>,
}

/// Everything counted, from the schedule's start.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    ops: [Tally; OPS.len()],
    /// Keys asked for by `BatchGetItem`.
    pub batch_keys: u64,
    /// DynamoDB's read request units (strongly consistent: one per 4 KB of
    /// each item, at least one, per key of a `BatchGetItem` too).
    pub rru: u64,
    /// DynamoDB's write request units (one per KB of the larger of the
    /// item before and after, at least one; a failed condition too; two
    /// per KB of each item of a transaction).
    pub wru: u64,
    /// The largest item or object read or written (bytes: a DynamoDB
    /// item's size as DynamoDB computes it, an S3 body's length), by what
    /// it is ([`what`]).
    pub largest: BTreeMap<&'static str, usize>,
    /// By client (the index the world knows it by).
    pub clients: Vec<ClientTally>,
    /// The client whose request is being applied.
    pub current: Option<usize>,
}

/// What a key is: the lock's record, a line entry, the ticket counter, or
/// another of the store's own objects (the fence mark).
pub fn what(key: &str) -> &'static str {
    let prefix = crate::request::RESERVED_PREFIX;
    match key.find(prefix).map(|i| &key[i + prefix.len()..]) {
        None => "record",
        Some(rest) if rest.starts_with("wait/") => "line entry",
        Some(rest) if rest.starts_with("ticket/") => "ticket counter",
        Some(_) => "other",
    }
}

impl Counts {
    pub fn tally(&self, op: Op) -> Tally {
        self.ops[OPS.iter().position(|o| *o == op).unwrap_or(0)]
    }

    /// Every request counted.
    pub fn requests(&self) -> u64 {
        self.ops.iter().map(|t| t.ok + t.failed).sum()
    }

    /// Conditional writes refused by their condition.
    pub fn failed_writes(&self) -> u64 {
        self.ops.iter().map(|t| t.failed).sum()
    }

    /// The largest item or object read or written.
    pub fn largest_any(&self) -> usize {
        self.largest.values().copied().max().unwrap_or(0)
    }

    fn client(&mut self) -> Option<&mut ClientTally> {
        let c = self.current?;
        if self.clients.len() <= c {
            self.clients.resize(c + 1, ClientTally::default());
        }
        self.clients.get_mut(c)
    }

    /// One request of kind `op` applied, refused by its condition unless
    /// `ok`.
    pub fn note(&mut self, op: Op, ok: bool) {
        let i = OPS.iter().position(|o| *o == op).unwrap_or(0);
        if ok {
            self.ops[i].ok += 1;
        } else {
            self.ops[i].failed += 1;
        }
        if let Some(c) = self.client() {
            c.requests += 1;
            if !ok {
                c.failed_writes += 1;
            }
        }
    }

    /// An item or object of `bytes` read or written at `key`.
    pub fn size(&mut self, key: &str, bytes: usize) {
        let m = self.largest.entry(what(key)).or_insert(0);
        *m = (*m).max(bytes);
    }

    /// A write that joined the line at `key` (a ticket, or a new entry:
    /// its place).
    pub fn joined(&mut self, key: &str, entry: bool) {
        if let Some(c) = self.client() {
            c.join_writes += 1;
            if entry && c.place.is_none() {
                c.place = Some(key.to_string());
            }
        }
    }

    /// A DynamoDB read of the item at `key` (`None`: absent).
    pub fn ddb_read(&mut self, op: Op, key: &str, bytes: Option<usize>) {
        let b = bytes.unwrap_or(0);
        self.size(key, b);
        self.rru += b.div_ceil(4096).max(1) as u64;
        if op != Op::BatchGetItem {
            self.note(op, true);
        }
    }

    /// A DynamoDB write of the item at `key`, `before` and `after` bytes
    /// (`before` also for a failed condition, which is billed alike).
    pub fn ddb_write(&mut self, op: Op, key: &str, ok: bool, before: usize, after: usize) {
        self.size(key, before.max(after));
        let units = before.max(after).div_ceil(1024).max(1) as u64;
        self.wru += if op == Op::TransactWriteItems {
            2 * units
        } else {
            units
        };
        self.note(op, ok);
    }

    /// What happened from `earlier` (a snapshot of these counts) to now.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut d = self.clone();
        for (a, b) in d.ops.iter_mut().zip(earlier.ops.iter()) {
            a.ok -= b.ok;
            a.failed -= b.failed;
        }
        d.batch_keys -= earlier.batch_keys;
        d.rru -= earlier.rru;
        d.wru -= earlier.wru;
        for (a, b) in d.clients.iter_mut().zip(earlier.clients.iter()) {
            a.requests -= b.requests;
            a.failed_writes -= b.failed_writes;
            a.join_writes -= b.join_writes;
        }
        d
    }

    /// The requests by kind, those counted only: `GetItem 12, UpdateItem
    /// 30 (+4 failed), BatchGetItem 7 (21 keys)`.
    pub fn by_kind(&self) -> String {
        OPS.iter()
            .zip(self.ops.iter())
            .filter(|(_, t)| t.ok + t.failed > 0)
            .map(|(op, t)| {
                let mut s = format!("{} {}", op.name(), t.ok + t.failed);
                if t.failed > 0 {
                    s += &format!(" ({} failed)", t.failed);
                }
                if *op == Op::BatchGetItem {
                    s += &format!(" ({} keys)", self.batch_keys);
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An item's size as DynamoDB bills it: each attribute's name and value
/// (a string's or binary's bytes; a number 1 byte per two significant
/// digits plus 1; a map or list 3 bytes plus its elements). The
/// simulation's own attributes (`sim_…`) are not counted.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .filter(|(k, _)| !k.starts_with("sim_"))
        .map(|(k, v)| k.len() + value_size(v))
        .sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        _ => 1,
    }
}

fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let sig = digits.trim_start_matches('0').trim_end_matches('0').len();
    sig.div_ceil(2) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_sizes_count_names_and_values_as_dynamodb_does() {
        let mut i = Item::new();
        i.insert("lock_id".into(), AttributeValue::S("L".into()));
        i.insert("fence".into(), AttributeValue::N("12345".into()));
        i.insert("sim_joined_ms".into(), AttributeValue::N("1".into()));
        // 7 + 1, then 5 + (3 + 1).
        assert_eq!(item_size(&i), 8 + 9);
        assert_eq!(number_size("1000"), 2);
        assert_eq!(number_size("0"), 1);
    }

    #[test]
    fn a_snapshot_s_difference_is_what_happened_between() {
        let mut c = Counts {
            current: Some(2),
            ..Counts::default()
        };
        c.ddb_write(Op::UpdateItem, "L", false, 100, 100);
        let snap = c.clone();
        c.ddb_write(Op::UpdateItem, "L", true, 100, 1500);
        c.ddb_read(Op::GetItem, "__awsflock__/ticket/1:L", Some(40));
        let d = c.since(&snap);
        assert_eq!(d.tally(Op::UpdateItem), Tally { ok: 1, failed: 0 });
        assert_eq!((d.wru, d.rru, d.requests()), (2, 1, 2));
        assert_eq!(c.failed_writes(), 1);
        assert_eq!(c.clients[2].failed_writes, 1);
        assert_eq!(c.largest["record"], 1500);
        assert_eq!(c.largest["ticket counter"], 40);
    }
}
