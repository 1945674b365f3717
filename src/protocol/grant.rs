//! The single-holder acquire loop's decisions: what to do next from the
//! record last seen. The loop itself (`store::cas`) carries them out.

/// What the acquire loop does next, from what it has seen: a pure decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The record carries one of our grants whose call failed (it landed,
    /// its answer was lost, nobody was told of it): give that one back
    /// first, then take the lock anew.
    GiveBack(String),
    /// Write a grant: blind when nothing was seen yet, else conditioned on
    /// the record seen, which is free.
    Grant,
    /// Somebody holds it: give up if the wait is over, else pause and read
    /// again.
    Wait,
}

/// A record as the acquire loop sees it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The lease id it holds, if any.
    pub lease_id: Option<String>,
    /// The lease ids of its holder table's holders (none when it has none).
    pub table_holders: Vec<String>,
    /// Whether it is held now ([`super::expiry::is_held`]).
    pub held: bool,
}

/// The acquire loop's decision (see [`Next`]). `seen` is `None` before
/// anything is known, `Some(None)` for an absent record; `unconfirmed`
/// holds the lease ids of our grant writes whose call failed.
pub fn next(seen: Option<Option<Seen>>, unconfirmed: &[String]) -> Next {
    let Some(rec) = seen else {
        return Next::Grant;
    };
    let Some(rec) = rec else {
        return Next::Grant;
    };
    if let Some(id) = rec.lease_id.filter(|id| unconfirmed.contains(id)) {
        return Next::GiveBack(id);
    }
    // A grant of ours that nobody was told of, moved into a table by a
    // waiter since: give it back there.
    if let Some(id) = rec
        .table_holders
        .into_iter()
        .find(|id| unconfirmed.contains(id))
    {
        return Next::GiveBack(id);
    }
    if rec.held { Next::Wait } else { Next::Grant }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(lease_id: &str, table: &[&str], held: bool) -> Option<Option<Seen>> {
        Some(Some(Seen {
            lease_id: Some(lease_id.to_string()).filter(|s| !s.is_empty()),
            table_holders: table.iter().map(|s| s.to_string()).collect(),
            held,
        }))
    }

    #[test]
    fn the_first_attempt_is_a_blind_grant_and_an_absent_record_is_free() {
        assert_eq!(next(None, &[]), Next::Grant);
        assert_eq!(next(Some(None), &["a".into()]), Next::Grant);
    }

    #[test]
    fn a_grant_of_ours_whose_answer_was_lost_is_given_back_first() {
        let ours = ["mine".to_string()];
        assert_eq!(
            next(seen("mine", &[], true), &ours),
            Next::GiveBack("mine".into())
        );
        assert_eq!(
            next(seen("", &["x", "mine"], true), &ours),
            Next::GiveBack("mine".into())
        );
    }

    #[test]
    fn someone_elses_record_is_waited_for_while_held_and_taken_when_not() {
        let ours = ["mine".to_string()];
        assert_eq!(next(seen("theirs", &[], true), &ours), Next::Wait);
        assert_eq!(next(seen("theirs", &["x"], false), &ours), Next::Grant);
    }
}
