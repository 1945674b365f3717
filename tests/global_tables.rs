//! End-to-end tests of the check of a DynamoDB table's replication: a
//! global table (replicas in other Regions) is refused by every lock
//! operation with one line that says why and what to do; a single-Region
//! table costs one DescribeTable per process; a DescribeTable refused by
//! IAM is warned about once and the lock works.
//!
//! moto (5.2) keeps no replicas and reports neither `Replicas` nor
//! `MultiRegionConsistency`: the test proxy adds both to its real
//! DescribeTable answer ([`Fault::Replicated`]), and answers
//! AccessDeniedException in IAM's place ([`Fault::Refuse`]).

use crate::common;

use common::proxy::{Fault, Proxy};
use common::*;

/// The binary's answer to each lock command on table `t` through `proxy`.
fn every_command(proxy: &Proxy, t: &str, marker: &std::path::Path) -> Vec<(String, Out)> {
    let touch = format!("touch {}", marker.display());
    let commands: Vec<Vec<&str>> = vec![
        vec!["run", "gt", "--", "sh", "-c", &touch],
        vec!["acquire", "gt"],
        vec!["status", "gt"],
        vec!["list"],
        vec!["release", "gt", "--force", "-y"],
        vec!["table-create"],
    ];
    commands
        .into_iter()
        .map(|args| {
            let out = run(awsflock_at(&proxy.endpoint)
                .arg(args[0])
                .args(["--table", t])
                .args(&args[1..]));
            (args.join(" "), out)
        })
        .collect()
}

#[test]
fn a_global_table_is_refused_by_every_command_with_its_regions_and_why() {
    let moto = Moto::start();
    let t = table(&moto);
    let proxy = Proxy::start(&moto.endpoint);
    for (mode, why) in [
        ("EVENTUAL", "last writer wins"),
        ("STRONG", "TransactWriteItems"),
    ] {
        proxy.fault(Some("DescribeTable"), Fault::Replicated(mode), None);
        let dir = scratch();
        let marker = dir.path().join("ran");
        for (cmd, out) in every_command(&proxy, &t, &marker) {
            out.assert_exit_as(1, &format!("{mode}: `{cmd}` was not refused:"));
            assert_clean_error(&out);
            for needle in [
                &format!("DynamoDB table '{t}'"),
                "eu-west-1, us-east-1",
                why,
                "single-Region table",
            ] {
                assert!(
                    out.stderr.contains(needle),
                    "{mode}: `{cmd}`: expected {needle:?}:\n{}",
                    out.describe()
                );
            }
        }
        assert!(!marker.exists(), "{mode}: the command ran");
        proxy.clear();
    }
    // Refused before anything was written or read: each process sent one
    // DescribeTable and nothing else.
    for op in ["GetItem", "UpdateItem", "TransactWriteItems", "Scan"] {
        assert_eq!(proxy.count(Some(op)), 0, "{op} was sent");
    }
    assert_eq!(proxy.count(Some("DescribeTable")), 12);
    // The table itself is fine without the replicas.
    run(awsflock(&moto).args(["run", "gt", "--table", &t, "--", "true"])).assert_ok();
}

#[test]
fn a_single_region_table_costs_one_describe_table_per_process() {
    let moto = Moto::start();
    let t = table(&moto);
    let proxy = Proxy::start(&moto.endpoint);
    let name = lock();
    let requests = || {
        [
            "DescribeTable",
            "GetItem",
            "UpdateItem",
            "TransactWriteItems",
        ]
        .map(|op| proxy.count(Some(op)))
    };
    // A fresh lock: a blind grant (refused: no item), the transaction that
    // grants it with a block of fencing tokens, the release.
    run(&mut run_at(&proxy.endpoint, &t, &name, &["--", "true"])).assert_ok();
    assert_eq!(requests(), [1, 0, 2, 1], "first run");
    assert_eq!(proxy.count(None), 4, "first run");
    // A lock seen before: the grant from its counter, the release.
    run(&mut run_at(&proxy.endpoint, &t, &name, &["--", "true"])).assert_ok();
    assert_eq!(requests(), [2, 0, 4, 1], "second run");
    assert_eq!(proxy.count(None), 7, "second run");
}

#[test]
fn a_describe_table_refused_by_iam_warns_once_and_the_lock_works() {
    let moto = Moto::start();
    let t = table(&moto);
    let proxy = Proxy::start(&moto.endpoint);
    proxy.fault(
        Some("DescribeTable"),
        Fault::Refuse("AccessDeniedException"),
        None,
    );
    let dir = scratch();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = run(&mut run_at(
        &proxy.endpoint,
        &t,
        &lock(),
        &["--", "sh", "-c", &touch],
    ));
    out.assert_ok();
    assert!(marker.exists(), "the command did not run");
    let warned: Vec<&str> = out.stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warned.len(), 1, "expected one warning:\n{}", out.describe());
    for needle in [&format!("'{t}'"), "Regions", "dynamodb:DescribeTable"] {
        assert!(
            warned[0].contains(needle),
            "expected {needle:?} in the warning:\n{}",
            out.describe()
        );
    }
    // Asked once (AccessDeniedException is not retried), not before each
    // request.
    assert_eq!(proxy.count(Some("DescribeTable")), 1);
}
