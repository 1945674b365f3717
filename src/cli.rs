//! The command line: clap types, help text and examples. No behaviour lives
//! here; [`crate::cmd`] carries the commands out.

use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::duration;

/// How the wait options relate; shown under `acquire --help` and `run --help`.
macro_rules! wait_rules {
    () => {
        "\
Waiting: run waits until it gets the lock; acquire waits 60 seconds (as
awsflock 0.2.0). --wait-time 0 waits forever (awsflock 0.2.0's meaning);
-w/--timeout is flock(1)'s, where 0 does not wait; -n/--no-wait does not wait.
Both take seconds (2.5) or durations (90s, 2m). -n beats -w, which beats
--wait-time and AWSFLOCK_WAIT_TIME. A run waiting with stderr not a terminal
says it is still waiting after a minute, then every 5 minutes; -q silences
that and the conflict message."
    };
}

const ABOUT: &str = "A distributed flock(1): lease-based locks shared by a fleet, kept in DynamoDB, S3, etcd or a local directory";

const LONG_ABOUT: &str = "\
A distributed flock(1): lease-based locks shared by every machine that can reach
the store. Four stores: DynamoDB (the default, awsflock 0.2.0's table format),
S3, etcd, or a local directory (one host); see --backend.

`awsflock run NAME -- CMD` takes the lock, runs CMD, renews the lease while CMD
runs, stops CMD before the lease could expire if renewal fails, and releases the
lock when CMD ends. acquire, renew and release work as in awsflock 0.2.0, on the
same table, so a fleet can move over one machine at a time.

Durations: seconds (900) or 15m, '3 minutes', '1h 30m'; a lease is 1s to 366
days, a wait at most 366 days (0 waits forever). '5M' is refused as ambiguous:
write 5m (minutes) or '5 months'.

Exit codes: 0 ok; 1 error (store unreachable, no table, no credentials); 2 bad
usage (unknown option, out-of-range duration, lock name with control
characters); 3 lock not acquired or lease not held; 4 (run) lease lost; 126
(run) the command could not be executed; 127 (run) the command was not found;
128+N a signal N ended the wait, or (run) killed the command.

AWS settings come from the usual places, as in the AWS CLI: --region and
--profile, else AWS_REGION and AWS_PROFILE, else ~/.aws/config. The endpoint is
--endpoint-url, else (DynamoDB) DYNAMO_ENDPOINT_URL, else
AWS_ENDPOINT_URL_DYNAMODB or AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else
the profile's endpoint_url, else AWS itself.

Boolean variables (AWSFLOCK_NO_WAIT, AWSFLOCK_QUIET, AWSFLOCK_JSON, AWSFLOCK_YES)
take 1/0, true/false, yes/no or on/off (empty: false). NO_COLOR turns colour
off.";

const EXAMPLES: &str = "\
Examples:
  awsflock table-create                          # once per table
  awsflock run deploy-prod -- terraform apply    # the usual way
  LEASE_ID=$(awsflock acquire LockFoo --lease-duration 15m)
  LEASE_ID=$(awsflock renew LockFoo \"$LEASE_ID\" --lease-duration 300s)
  awsflock release LockFoo \"$LEASE_ID\"";

/// The `awsflock` command line.
#[derive(Debug, Parser)]
#[command(name = "awsflock", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    /// Options that apply to every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after any subcommand.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Where the locks live: dynamodb://TABLE, s3://BUCKET/PREFIX, etcd://HOST:PORT[,...]/PREFIX or file:///DIR (default dynamodb://awsflock)
    #[arg(long, global = true, env = "AWSFLOCK_BACKEND", value_name = "URL")]
    pub backend: Option<String>,

    /// DynamoDB table name (default: awsflock)
    #[arg(
        long,
        visible_alias = "tablename",
        global = true,
        env = "AWSFLOCK_TABLE",
        value_name = "NAME"
    )]
    pub table: Option<String>,

    /// Store endpoint, e.g. http://127.0.0.1:8000; beats DYNAMO_ENDPOINT_URL, AWS_ENDPOINT_URL_DYNAMODB/_S3 and AWS_ENDPOINT_URL
    #[arg(long, global = true, env = "AWSFLOCK_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// AWS region (beats AWS_REGION and the profile's region)
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// AWS profile from ~/.aws/config and ~/.aws/credentials (beats AWS_PROFILE)
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

    /// etcd: user name, or USER:PASSWORD
    #[arg(
        long,
        global = true,
        env = "AWSFLOCK_ETCD_USER",
        value_name = "USER[:PASSWORD]",
        hide_env_values = true
    )]
    pub etcd_user: Option<String>,

    /// etcd: password (when not in --etcd-user)
    #[arg(
        long,
        global = true,
        env = "AWSFLOCK_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,

    /// etcd: CA bundle to verify the servers (enables TLS)
    #[arg(long, global = true, env = "AWSFLOCK_ETCD_CACERT", value_name = "FILE")]
    pub etcd_cacert: Option<std::path::PathBuf>,

    /// etcd: client certificate for TLS
    #[arg(long, global = true, env = "AWSFLOCK_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<std::path::PathBuf>,

    /// etcd: client key for TLS
    #[arg(long, global = true, env = "AWSFLOCK_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<std::path::PathBuf>,

    /// Log every store request (repeat for more; RUST_LOG also works)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Say nothing on stderr while waiting, nor when the lock is not acquired (for cron)
    #[arg(short, long, global = true, env = "AWSFLOCK_QUIET", value_parser = boolish)]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the lock table (hash key lock_id, on-demand, TTL on expiration_time); for s3:// the bucket, for file:// the directory
    #[command(
        visible_alias = "create-table",
        after_help = "Example:\n  awsflock table-create --table awsflock"
    )]
    TableCreate,

    /// Acquire a lock and print its LEASE_ID
    #[command(after_help = ACQUIRE_EXAMPLES)]
    Acquire(AcquireArgs),

    /// Renew a lease; prints the LEASE_ID to use from now on
    #[command(
        after_help = "Example:\n  LEASE_ID=$(awsflock renew LockFoo \"$LEASE_ID\" --lease-duration 15m)"
    )]
    Renew(RenewArgs),

    /// Release a lease so others can take the lock at once
    #[command(
        after_help = "Examples:\n  awsflock release LockFoo \"$LEASE_ID\"\n  awsflock release LockFoo --force     # ask whoever holds it to stop, then free it\n  awsflock release LockFoo --force --immediately   # break glass: free it now"
    )]
    Release(ReleaseArgs),

    /// List every held lock
    #[command(after_help = "Example:\n  awsflock list --json | jq -r '.[].name'")]
    List(ListArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Example:\n  awsflock completions bash > /etc/bash_completion.d/awsflock"
    )]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) on stdout
    #[command(after_help = "Example:\n  awsflock man > /usr/local/share/man/man1/awsflock.1")]
    Man,

    /// Show whether a lock is held, by whom and why
    #[command(after_help = "Example:\n  awsflock status deploy-prod --json")]
    Status(StatusArgs),

    /// Run a command while holding the lock; release it when the command ends
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
}

const RUN_EXAMPLES: &str = concat!(
    "\
The command runs with AWSFLOCK_LOCK and AWSFLOCK_FENCE in its environment, and
awsflock exits with its exit code, or ends by the same signal if a signal
killed it.

Examples:
  # CI step: one deploy at a time, waiting for the lock as long as it takes
  awsflock run deploy-prod --reason \"$CI_JOB_URL\" -- terraform apply
  # cron: skip this run if the previous one is still going
  */5 * * * * awsflock run report --no-wait --conflict-exit-code 0 --quiet -- /usr/local/bin/report
  # the same in flock(1)'s words
  */5 * * * * awsflock run report -n -E 0 -q -- /usr/local/bin/report
  # flock(1)'s order works too: the command right after the lock's name
  awsflock run deploy-prod terraform apply
  # a shell pipeline
  awsflock run backup -c 'pg_dump db | gzip > /backup/db.gz'

",
    wait_rules!()
);

/// A flag's value from its environment variable, as people write them:
/// 1/0, true/false, yes/no, on/off (any case); empty is false.
fn boolish(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "n" | "off" => Ok(false),
        _ => Err("give 1/0, true/false, yes/no or on/off".to_string()),
    }
}

/// A positive duration, possibly under a second.
fn positive(s: &str) -> Result<Duration, String> {
    duration::parse_positive(s)
}

/// `awsflock run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The lock's name
    pub name: String,

    #[command(flatten)]
    pub lock: LockArgs,

    /// How often to renew the lease [default: a third of the lease]
    #[arg(long, value_parser = positive, env = "AWSFLOCK_RENEW_EVERY", value_name = "D")]
    pub renew_every: Option<Duration>,

    /// Grace between SIGTERM and SIGKILL when the lease is being lost (shortened to fit the lease)
    #[arg(long, value_parser = positive, default_value = "10s", env = "AWSFLOCK_KILL_AFTER", value_name = "D")]
    pub kill_after: Duration,

    /// Exit code when the lock is not acquired (the command is not started)
    #[arg(short = 'E', long, default_value_t = crate::exit::NOT_HELD, value_parser = clap::value_parser!(i32).range(0..=255), env = "AWSFLOCK_CONFLICT_EXIT_CODE", value_name = "N")]
    pub conflict_exit_code: i32,

    /// Exit code when the lease is lost while the command runs
    #[arg(long, default_value_t = crate::exit::LOST, value_parser = clap::value_parser!(i32).range(0..=255), env = "AWSFLOCK_LOST_EXIT_CODE", value_name = "N")]
    pub lost_exit_code: i32,

    /// Let processes the command left running in its process group go on after it exits, without the lock [default: stop them before releasing]
    #[arg(long, env = "AWSFLOCK_LEAVE_LEFTOVERS")]
    pub leave_leftovers: bool,

    /// Run this through `sh -c` instead of CMD
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SHELL_COMMAND",
        conflicts_with = "cmd"
    )]
    pub shell: Option<String>,

    /// The command and its arguments, run as given (no shell): after `--`, or
    /// right after NAME as in flock(1) (everything from CMD on is CMD's)
    #[arg(
        trailing_var_arg = true,
        num_args = 1..,
        value_name = "CMD"
    )]
    pub cmd: Vec<std::ffi::OsString>,
}

const ACQUIRE_EXAMPLES: &str = concat!(
    "\
Examples:
  LEASE_ID=$(awsflock acquire LockFoo --lease-duration 15m --reason 'nightly backup')
  awsflock acquire LockBar --no-wait || echo 'busy'
  awsflock acquire LockBaz --wait-time 0 --json    # wait forever; print lease_id and fence
  awsflock acquire LockQux -w 10                   # flock(1) style: wait up to 10 seconds

",
    wait_rules!()
);

/// A lease duration of at least one whole second.
fn lease_duration(s: &str) -> Result<Duration, String> {
    duration::parse_seconds(s)
}

/// A wait time; 0 means forever.
#[derive(Debug, Clone, Copy)]
pub struct Wait(pub Option<Duration>);

fn wait_time(s: &str) -> Result<Wait, String> {
    duration::parse_wait(s).map(Wait)
}

/// flock(1)'s `-w`: seconds, possibly fractional, where 0 means "do not
/// wait"; or any duration form `--wait-time` takes.
fn timeout(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::try_from_secs_f64(secs).map_err(|_| format!("wait time {s:?} is too large"))
        }
        Ok(_) => Err(format!(
            "wait time {s:?} is negative; give seconds such as 30, or 0 not to wait"
        )),
        Err(_) => duration::parse_positive(s),
    }
}

/// Options shared by `acquire` and `run`: how long, how patiently, and who.
#[derive(Debug, Args, Clone)]
pub struct LockArgs {
    /// Lease duration, 1s to 366 days: 900, 300s, 15m, '3 minutes', '1h 30m' (acquire: 2 hours; run: 60s)
    #[arg(long, visible_alias = "expiration", value_parser = lease_duration, env = "AWSFLOCK_LEASE_DURATION", value_name = "D")]
    pub lease_duration: Option<Duration>,

    /// How long to wait for a held lock: seconds (2.5) or a duration (15m), at most 366 days; 0 waits forever, as in awsflock 0.2.0 [default: run forever, acquire 60s]
    #[arg(long, value_parser = wait_time, env = "AWSFLOCK_WAIT_TIME", value_name = "D")]
    pub wait_time: Option<Wait>,

    /// flock(1)'s wait: seconds (2.5) or a duration (15m); 0 does not wait, as in flock(1)
    #[arg(short = 'w', long, value_parser = timeout, value_name = "D")]
    pub timeout: Option<Duration>,

    /// Give up at once if the lock is held (exit 3)
    #[arg(short = 'n', long, visible_alias = "nonblock", env = "AWSFLOCK_NO_WAIT", value_parser = boolish)]
    pub no_wait: bool,

    /// Who holds the lock, shown to others [default: host name]
    #[arg(long, env = "AWSFLOCK_OWNER", value_name = "S")]
    pub owner: Option<String>,

    /// Why the lock is held, shown to others
    #[arg(long, env = "AWSFLOCK_REASON", value_name = "S")]
    pub reason: Option<String>,

    /// A semaphore: at most N holders at once, 1 to 256 (every holder of the name must give the same N)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256), env = "AWSFLOCK_MAX_HOLDERS", value_name = "N")]
    pub max_holders: Option<u32>,

    /// Take the lock exclusively, as flock -x/-e: the default, accepted for flock(1)'s habit
    #[arg(
        short = 'x',
        visible_short_alias = 'e',
        long,
        conflicts_with = "shared"
    )]
    pub exclusive: bool,

    /// Take the lock shared, as flock -s: any number of shared holders, or one exclusive holder
    #[arg(short = 's', long, conflicts_with = "max_holders", env = "AWSFLOCK_SHARED", value_parser = boolish)]
    pub shared: bool,
}

/// `awsflock acquire`.
#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// The lock's name
    pub name: String,

    #[command(flatten)]
    pub lock: LockArgs,

    /// Print a JSON object (lease_id, fence, expires_at, ...) instead of the LEASE_ID
    #[arg(long, env = "AWSFLOCK_JSON", value_parser = boolish)]
    pub json: bool,

    /// Exit code when the lock is not acquired
    #[arg(short = 'E', long, default_value_t = crate::exit::NOT_HELD, value_parser = clap::value_parser!(i32).range(0..=255), env = "AWSFLOCK_CONFLICT_EXIT_CODE", value_name = "N")]
    pub conflict_exit_code: i32,
}

/// `awsflock renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The lock's name
    pub name: String,
    /// The LEASE_ID from acquire or the last renew
    pub lease_id: String,
    /// New lease duration, from now, 1s to 366 days [default: 2 hours]
    #[arg(long, visible_alias = "expiration", value_parser = lease_duration, env = "AWSFLOCK_LEASE_DURATION", value_name = "D")]
    pub lease_duration: Option<Duration>,
    /// Accepted as in awsflock 0.2.0; the lease keeps the owner it was acquired with
    #[arg(long, value_name = "S")]
    pub owner: Option<String>,
    /// Print a JSON object instead of the LEASE_ID
    #[arg(long, env = "AWSFLOCK_JSON", value_parser = boolish)]
    pub json: bool,
}

/// `awsflock release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The lock's name
    pub name: String,
    /// The LEASE_ID from acquire or the last renew
    #[arg(required_unless_present = "force")]
    pub lease_id: Option<String>,
    /// Break glass: release whoever holds the lock, without its LEASE_ID
    #[arg(long, conflicts_with = "lease_id")]
    pub force: bool,
    /// With --force: do not ask for confirmation on a terminal
    #[arg(long, short = 'y', requires = "force", env = "AWSFLOCK_YES", value_parser = boolish)]
    pub yes: bool,
    /// With --force: return once a `run` holder was asked to stop, without
    /// waiting for it to confirm (the lock is handed on when it does, or
    /// when its lease ends)
    #[arg(long, short = 'n', requires = "force")]
    pub no_wait: bool,
    /// With --force: break glass, free the lock at once even from a `run`
    /// holder, which goes on until its next renewal (for a holder known to be gone)
    #[arg(long, visible_alias = "break", requires = "force")]
    pub immediately: bool,
}

/// `awsflock list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array of the same objects as `status --json`
    #[arg(long, env = "AWSFLOCK_JSON", value_parser = boolish)]
    pub json: bool,
}

/// `awsflock status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The lock's name
    pub name: String,
    /// Print one JSON object
    #[arg(long, env = "AWSFLOCK_JSON", value_parser = boolish)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    /// Every variable a global store flag reads is one that
    /// `StoreOptions::from_env` reads too, and the other way round (apart
    /// from DYNAMO_ENDPOINT_URL, which has no flag), so that a service and
    /// the command line find the same store.
    #[test]
    fn store_variables_agree_with_the_library() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let store_flags = [
            "backend",
            "table",
            "endpoint_url",
            "etcd_user",
            "etcd_password",
            "etcd_cacert",
            "etcd_cert",
            "etcd_key",
        ];
        let mut from_cli: Vec<String> = cmd
            .get_arguments()
            .filter(|a| store_flags.contains(&a.get_id().as_str()))
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(from_cli.len(), store_flags.len(), "{from_cli:?}");
        from_cli.push("DYNAMO_ENDPOINT_URL".into());
        from_cli.sort();
        let mut from_lib: Vec<String> = StoreOptions::ENV
            .iter()
            .map(|(v, _)| v.to_string())
            .collect();
        from_lib.sort();
        assert_eq!(from_cli, from_lib);
    }
}
