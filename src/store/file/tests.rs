//! Unit tests of the directory store: records, names and liveness.

use super::*;
use crate::store::LockStore;

#[test]
fn file_names_are_safe_and_distinct() {
    assert_eq!(file_name("deploy-prod_1"), "deploy-prod_1");
    assert_eq!(file_name("a/b c"), "a%2Fb%20c");
    assert_eq!(file_name(".."), "%2E.");
    assert_eq!(file_name("x.y"), "x.y");
    let long_a = "é".repeat(300);
    let long_b = format!("{}x", "é".repeat(300));
    assert!(file_name(&long_a).len() <= 200);
    assert_ne!(file_name(&long_a), file_name(&long_b));
}

/// The file name of a long lock name is on disk: every release must
/// compute the same one (FNV-1a 64 of the name's bytes).
#[test]
fn long_file_names_keep_their_hash_across_releases() {
    let name = "x".repeat(250);
    let f = file_name(&name);
    assert_eq!(f, format!("{}~3b5ad17216035bad", "x".repeat(180)));
}

/// A renewal whose write landed but whose answer was lost is retried
/// with the same next id: the retry finds its own id and must report the
/// expiry that is stored, not one stamped afresh (which would be later).
#[tokio::test(flavor = "current_thread")]
async fn a_retried_renewal_reports_the_stored_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path().to_path_buf()).unwrap();
    store.create().await.unwrap();
    let req = AcquireRequest {
        name: "deploy".into(),
        lease: Duration::from_secs(10),
        wait: Some(Duration::ZERO),
        owner: "alice".into(),
        reason: None,
        on_wait: None,
        supervised: false,
        max_holders: None,
        shared: false,
    };
    let lease = store
        .acquire(&req, Box::pin(std::future::pending()))
        .await
        .unwrap();
    let next = uuid::Uuid::new_v4().to_string();
    let landed = store.renew(&lease, req.lease, &next).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let retried = store.renew(&lease, req.lease, &next).await.unwrap();
    assert_eq!(retried.lease_id, next);
    assert!(
        retried.deadline <= landed.deadline,
        "the retry's deadline {:?} is past the stored lease's {:?}",
        retried.deadline,
        landed.deadline
    );
}

/// A `run` holder seen exited is not taken over at once: its watchdog
/// first gets [`EXITED_HOLDER_GRACE`] to kill the rest of its command's
/// group. `status` shows it free at once.
#[test]
fn an_exited_holder_frees_the_lock_after_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path().to_path_buf()).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    child.wait().unwrap();
    let req = AcquireRequest {
        name: "deploy".into(),
        lease: Duration::from_secs(60),
        wait: None,
        owner: "alice".into(),
        reason: None,
        on_wait: None,
        supervised: true,
        max_holders: None,
        shared: false,
    };
    let st = Stamp::now(&store.inner.clock, req.lease);
    let mut lease = LeaseRecord::grant(&req, "L1", &st, Some(1), None);
    lease.pid = Some(pid);
    let holder = ProcId {
        pid_ns: crate::sys::host::me().unwrap().pid_ns.clone(),
        start,
    };
    let rec = FileRecord {
        lease,
        boot: stamp_boot::<LocalHost>(req.lease, Some(holder)),
    };
    assert!(!store.info("deploy", Some(&rec)).held, "status: free");
    assert!(!store.holder_gone(&rec), "taken over without the grace");
    std::thread::sleep(EXITED_HOLDER_GRACE);
    assert!(store.holder_gone(&rec), "not free after the grace");
}

/// Only files the store wrote are read: a hard link to a file elsewhere,
/// a FIFO or a directory where a record or a fence mark belongs is
/// refused in one line that names it and says to remove it, never read
/// (or waited on, for a FIFO). Links are refused as well: see
/// `tests/file_store.rs`, `a_planted_link_is_refused_not_followed`.
#[test]
fn strangers_in_the_directory_are_refused_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("locks");
    std::fs::create_dir_all(path.join(".fence")).unwrap();
    let elsewhere = tmp.path().join("secret");
    std::fs::write(&elsewhere, "not the store's\n").unwrap();
    std::fs::hard_link(&elsewhere, path.join("linked.json")).unwrap();
    std::fs::hard_link(&elsewhere, path.join(".fence/linked")).unwrap();
    let fifo = nix::sys::stat::Mode::from_bits_truncate(0o600);
    nix::unistd::mkfifo(&path.join("fifo.json"), fifo).unwrap();
    nix::unistd::mkfifo(&path.join(".fence/fifo"), fifo).unwrap();
    std::fs::create_dir(path.join("dir.json")).unwrap();
    let d = LocalDir::new(path.clone());
    let refused = |what: &str, got: Result<String>, file: &str| {
        let e = got.expect_err(&format!("{what} of {file} was not refused"));
        let msg = e.to_string();
        let shown = path.join(file).display().to_string();
        assert!(
            msg.contains(&shown) && msg.contains("remove it") && !msg.contains('\n'),
            "{what} of {file}: {msg}"
        );
    };
    for name in ["linked", "fifo", "dir"] {
        let file = format!("{name}.json");
        refused("read", d.read_record(name).map(|b| format!("{b:?}")), &file);
        let mark = format!(".fence/{name}");
        if name != "dir" {
            refused("read", d.read_mark(name).map(|m| m.to_string()), &mark);
        }
    }
    assert!(d.list_records().is_err(), "list read the strangers");
}

/// A temporary file must never have the name of another lock's file.
/// The mark of `x.y` was once written through `.fence/x.tmp.PID`, which
/// is the mark of the lock `x.tmp.PID`: that mark was overwritten and
/// renamed away, and a later grant of `x.tmp.PID` reused a token.
#[tokio::test(flavor = "current_thread")]
async fn writing_one_lock_never_touches_another_locks_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path().to_path_buf()).unwrap();
    store.create().await.unwrap();
    let req = |name: &str| AcquireRequest {
        name: name.into(),
        lease: Duration::from_secs(60),
        wait: Some(Duration::ZERO),
        owner: "alice".into(),
        reason: None,
        on_wait: None,
        supervised: false,
        max_holders: None,
        shared: false,
    };
    let victim = format!("x.tmp.{}", std::process::id());
    let first = store
        .acquire(&req(&victim), Box::pin(std::future::pending()))
        .await
        .unwrap();
    store.release(&victim, &first.lease_id).await.unwrap();
    let other = store
        .acquire(&req("x.y"), Box::pin(std::future::pending()))
        .await
        .unwrap();
    store.release("x.y", &other.lease_id).await.unwrap();
    // The record is moved away, as an operator resetting the lock would.
    std::fs::remove_file(store.dir().record_path(&victim)).unwrap();
    let second = store
        .acquire(&req(&victim), Box::pin(std::future::pending()))
        .await
        .unwrap();
    assert!(
        second.fence > first.fence,
        "token {:?} after {:?}",
        second.fence,
        first.fence
    );
}
