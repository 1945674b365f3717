//! `run LOCK -- CMD`: takes the lock, then hands it and the command to the
//! supervisor ([`crate::supervise`]).

use crate::cli::{Global, RunArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::lease::LockGuard;
use crate::output::say;
use crate::supervise;

use super::options::{DEFAULT_RUN_LEASE, next_signal, open, quiet_conflict, request};
use super::wait::waiting_done;

/// `run LOCK -- CMD`: the command is started once the lock is held.
pub(super) async fn run(g: &Global, r: RunArgs) -> Result<i32> {
    let (program, args) = match (&r.shell, r.cmd.split_first()) {
        (Some(script), _) => ("sh".into(), vec!["-c".into(), script.into()]),
        (None, Some((p, rest))) => (p.clone(), rest.to_vec()),
        (None, None) => {
            let name = shell_word(&r.name);
            return Err(Error::usage(format!(
                "no command given; give one: `awsflock run {name} -- CMD ARGS...` or `awsflock run {name} -c 'shell command'`"
            )));
        }
    };
    // From here on awsflock may hold a lock: a write to the terminal from
    // the background (`stty tostop`: the waiting line, a message) must not
    // stop it with SIGTTOU. The command gets the caller's disposition back.
    supervise::unix::ignore_ttou();
    let mut req = request(&r.name, &r.lock, DEFAULT_RUN_LEASE, None, g)?;
    req.supervised = true;
    let renew_every = r.renew_every.unwrap_or(req.lease / 3);
    if renew_every >= req.lease {
        return Err(Error::usage(format!(
            "--renew-every ({}s) must be shorter than the lease ({}s)",
            renew_every.as_secs_f64(),
            req.lease.as_secs()
        )));
    }
    // Signals are caught from here on: one arriving while we wait ends the
    // wait, holding nothing; one arriving later goes to the command.
    let mut signals = supervise::unix::signals()
        .map_err(|e| Error::store(format!("cannot handle signals: {e}")))?;
    let store = open(g).await?;
    let acquired = LockGuard::acquire(store, &req, renew_every, next_signal(&mut signals)).await;
    waiting_done();
    let guard = match acquired {
        Ok(guard) => guard,
        // -q: silent, as `flock -n -E 0` is (cron mails every line).
        Err(e @ Error::NotAcquired { .. }) => {
            if !quiet_conflict(g, &e) {
                say!(
                    "awsflock: {}; the command was not started",
                    exit::message(&e)
                );
            }
            return Ok(r.conflict_exit_code);
        }
        // -q: a wait ended by a signal says so by its exit code alone.
        Err(e @ Error::Interrupted(_)) if g.quiet => return Ok(exit::code(&e)),
        Err(e) => return Err(e),
    };
    let opts = supervise::RunOptions {
        program,
        args,
        kill_after: r.kill_after,
        renew_every,
        lost_exit_code: r.lost_exit_code,
        leave_leftovers: r.leave_leftovers,
    };
    Ok(supervise::run(guard, opts, &mut signals).await)
}

/// `word` as a shell reads it back: as is when plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-/:@+=,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
