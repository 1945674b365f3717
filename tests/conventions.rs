//! The conventions people bring from other tools: the AWS CLI's `--region`,
//! `--profile` and endpoint variables, flock(1)'s short options, the usual
//! spellings of boolean environment variables, every option of awsflock
//! 0.2.0, `NO_COLOR`; and the repository's demo script, which must never
//! reach real AWS. Every test runs the real binary against real local
//! servers (moto on free loopback ports).

use crate::common;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Our binary with a clean environment and fake credentials, but no
/// endpoint and no region: each test says where requests go.
fn bare() -> Command {
    let mut cmd = Command::new(bin_path());
    scrub_env(&mut cmd);
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    cmd
}

/// `awsflock ARGS` (a `table-create`) with `env` and region us-east-1;
/// panics unless it exits 0.
fn create_in_us_east_1(env: &[(&str, &str)], args: &[&str]) {
    let mut c = bare();
    c.env("AWS_REGION", "us-east-1");
    for (k, v) in env {
        c.env(k, v);
    }
    run(c.args(args)).assert_ok();
}

/// True when `awsflock status` finds the DynamoDB table `table` at
/// `endpoint` (region us-east-1), false when the table is missing there.
fn table_at(endpoint: &str, table: &str) -> bool {
    let out = run(awsflock_at(endpoint).args(["status", "probe", "--table", table]));
    match out.code {
        0 => true,
        1 => false,
        _ => panic!("unexpected status outcome:\n{}", out.describe()),
    }
}

/// True when the S3 bucket `bucket` exists at `endpoint`.
fn bucket_at(endpoint: &str, bucket: &str) -> bool {
    let out = run(awsflock_at(endpoint).args([
        "status",
        "probe",
        "--backend",
        &format!("s3://{bucket}/locks"),
    ]));
    match out.code {
        0 => true,
        1 => false,
        _ => panic!("unexpected status outcome:\n{}", out.describe()),
    }
}

#[test]
fn service_specific_endpoint_beats_aws_endpoint_url() {
    let (a, b) = (Moto::start(), Moto::private());
    let t = unique_name("tbl");
    create_in_us_east_1(
        &[
            ("AWS_ENDPOINT_URL", &a.endpoint),
            ("AWS_ENDPOINT_URL_DYNAMODB", &b.endpoint),
        ],
        &["table-create", "--table", &t],
    );
    assert!(
        table_at(&b.endpoint, &t),
        "table not on the DynamoDB endpoint"
    );
    assert!(!table_at(&a.endpoint, &t), "table on the generic endpoint");

    let bucket = unique_name("bkt");
    create_in_us_east_1(
        &[
            ("AWS_ENDPOINT_URL", &a.endpoint),
            ("AWS_ENDPOINT_URL_S3", &b.endpoint),
        ],
        &["table-create", "--backend", &format!("s3://{bucket}/locks")],
    );
    assert!(
        bucket_at(&b.endpoint, &bucket),
        "bucket not on the S3 endpoint"
    );
    assert!(
        !bucket_at(&a.endpoint, &bucket),
        "bucket on the generic endpoint"
    );
}

#[test]
fn endpoint_url_option_beats_every_variable() {
    let (a, b) = (Moto::start(), Moto::private());
    let t = unique_name("tbl");
    create_in_us_east_1(
        &[
            ("AWS_ENDPOINT_URL", &b.endpoint),
            ("AWS_ENDPOINT_URL_DYNAMODB", &b.endpoint),
            ("DYNAMO_ENDPOINT_URL", &b.endpoint),
        ],
        &["table-create", "--table", &t, "--endpoint-url", &a.endpoint],
    );
    assert!(table_at(&a.endpoint, &t));
    assert!(!table_at(&b.endpoint, &t));

    let bucket = unique_name("bkt");
    create_in_us_east_1(
        &[
            ("AWS_ENDPOINT_URL", &b.endpoint),
            ("AWS_ENDPOINT_URL_S3", &b.endpoint),
        ],
        &[
            "--endpoint-url",
            &a.endpoint,
            "table-create",
            "--backend",
            &format!("s3://{bucket}"),
        ],
    );
    assert!(bucket_at(&a.endpoint, &bucket));
    assert!(!bucket_at(&b.endpoint, &bucket));
}

#[test]
fn dynamo_endpoint_url_applies_to_dynamodb_only() {
    let (a, b) = (Moto::start(), Moto::private());
    // awsflock 0.2.0's variable names the DynamoDB endpoint, and beats the
    // SDK's variables as it did there.
    let t = unique_name("tbl");
    create_in_us_east_1(
        &[
            ("AWS_ENDPOINT_URL_DYNAMODB", &b.endpoint),
            ("DYNAMO_ENDPOINT_URL", &a.endpoint),
        ],
        &["table-create", "--table", &t],
    );
    assert!(table_at(&a.endpoint, &t));
    assert!(!table_at(&b.endpoint, &t));

    // ...and does not send S3 requests to the DynamoDB server.
    let bucket = unique_name("bkt");
    create_in_us_east_1(
        &[
            ("AWS_ENDPOINT_URL", &b.endpoint),
            ("DYNAMO_ENDPOINT_URL", &a.endpoint),
        ],
        &["table-create", "--backend", &format!("s3://{bucket}/x")],
    );
    assert!(
        bucket_at(&b.endpoint, &bucket),
        "bucket not on AWS_ENDPOINT_URL"
    );
    assert!(
        !bucket_at(&a.endpoint, &bucket),
        "DYNAMO_ENDPOINT_URL redirected s3://"
    );
}

#[test]
fn a_service_specific_endpoint_alone_needs_no_region() {
    let moto = Moto::start();
    let t = unique_name("tbl");
    let out = run(bare()
        .env("AWS_ENDPOINT_URL_DYNAMODB", &moto.endpoint)
        .args(["table-create", "--table", &t]));
    out.assert_ok();
    assert!(table_at(&moto.endpoint, &t));
}

#[test]
fn region_option_before_or_after_the_subcommand_picks_the_region() {
    let moto = Moto::start();
    let t = unique_name("tbl");
    // moto keeps one set of tables per region, like AWS.
    let out = run(awsflock(&moto).args(["--region", "eu-west-1", "table-create", "--table", &t]));
    out.assert_ok();
    let out = run(awsflock(&moto).args(["status", "x", "--table", &t, "--region", "eu-west-1"]));
    out.assert_ok();
    // The environment says us-east-1, where there is no such table.
    let out = run(awsflock(&moto).args(["status", "x", "--table", &t]));
    out.assert_exit(1);
    assert!(out.stderr.contains("table-create"), "{}", out.describe());
}

/// Writes an AWS config and credentials file with a profile `name` whose
/// region and endpoint_url point at `endpoint`.
fn aws_files(dir: &Path, name: &str, region: &str, endpoint: &str) {
    std::fs::write(
        dir.join("config"),
        format!(
            "[default]\nregion = ap-south-1\n\n[profile {name}]\nregion = {region}\nendpoint_url = {endpoint}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("credentials"),
        format!("[{name}]\naws_access_key_id = testkey\naws_secret_access_key = testsecret\n"),
    )
    .unwrap();
}

#[test]
fn profile_option_reads_region_endpoint_and_credentials_from_the_config_files() {
    let (a, b) = (Moto::start(), Moto::private());
    let home = scratch();
    aws_files(home.path(), "lab", "eu-central-1", &a.endpoint);
    let with_files = |cmd: &mut Command| {
        cmd.env("HOME", home.path())
            .env("AWS_CONFIG_FILE", home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.path().join("credentials"),
            );
    };
    let t = unique_name("tbl");
    let mut cmd = Command::new(bin_path());
    scrub_env(&mut cmd);
    with_files(&mut cmd);
    // --profile beats AWS_PROFILE, as in the AWS CLI.
    cmd.env("AWS_PROFILE", "no-such-profile").args([
        "table-create",
        "--table",
        &t,
        "--profile",
        "lab",
    ]);
    let out = run(&mut cmd);
    out.assert_ok();
    // On a, in the profile's region.
    let out = run(awsflock(&a).args(["status", "x", "--table", &t, "--region", "eu-central-1"]));
    out.assert_ok();
    assert!(!table_at(&b.endpoint, &t));

    // The profile's endpoint is below --endpoint-url and the variables.
    let t2 = unique_name("tbl");
    let mut cmd = Command::new(bin_path());
    scrub_env(&mut cmd);
    with_files(&mut cmd);
    cmd.env("AWS_ENDPOINT_URL_DYNAMODB", &b.endpoint).args([
        "--profile",
        "lab",
        "table-create",
        "--table",
        &t2,
    ]);
    let out = run(&mut cmd);
    out.assert_ok();
    let out = run(awsflock(&b).args(["status", "x", "--table", &t2, "--region", "eu-central-1"]));
    out.assert_ok();

    // AWS_ENDPOINT_URL beats the profile's endpoint_url, and --region the
    // profile's region.
    let t3 = unique_name("tbl");
    let mut cmd = Command::new(bin_path());
    scrub_env(&mut cmd);
    with_files(&mut cmd);
    cmd.env("AWS_ENDPOINT_URL", &b.endpoint).args([
        "table-create",
        "--table",
        &t3,
        "--profile",
        "lab",
        "--region",
        "us-west-2",
    ]);
    let out = run(&mut cmd);
    out.assert_ok();
    let out = run(awsflock(&b).args(["status", "x", "--table", &t3, "--region", "us-west-2"]));
    out.assert_ok();
    let out = run(awsflock(&a).args(["status", "x", "--table", &t3, "--region", "us-west-2"]));
    out.assert_exit(1);

    // An unknown profile is one clean line.
    let mut cmd = Command::new(bin_path());
    scrub_env(&mut cmd);
    with_files(&mut cmd);
    let out = run(cmd.args(["status", "x", "--profile", "nope"]));
    out.assert_exit(1);
    assert_clean_error(&out);
    assert!(
        out.stderr.contains("AWS profile 'nope' does not exist"),
        "{}",
        out.describe()
    );
}

#[test]
fn boolean_variables_accept_the_usual_spellings() {
    let (moto, t, name) = fresh_lock();
    let _lease = acquire(&moto, &t, &name, &[]);
    for yes in ["1", "true", "TRUE", "yes", "Yes", "on", "ON"] {
        let out = run(awsflock(&moto)
            .env("AWSFLOCK_NO_WAIT", yes)
            .env("AWSFLOCK_JSON", yes)
            .args(["acquire", &name, "--table", &t]));
        out.assert_exit_as(3, &format!("AWSFLOCK_NO_WAIT={yes}:"));
        assert!(
            out.elapsed < Duration::from_secs(20),
            "waited with AWSFLOCK_NO_WAIT={yes}"
        );
        let out = run(awsflock(&moto)
            .env("AWSFLOCK_JSON", yes)
            .args(["status", &name, "--table", &t]));
        out.assert_exit_as(0, &format!("AWSFLOCK_JSON={yes}:"));
        assert_eq!(out.json()["held"], true);
    }
    for no in ["0", "false", "False", "no", "NO", "off", ""] {
        let out = run(awsflock(&moto)
            .env("AWSFLOCK_JSON", no)
            .env("AWSFLOCK_NO_WAIT", no)
            .args(["status", &name, "--table", &t]));
        out.assert_exit_as(0, &format!("AWSFLOCK_JSON={no}:"));
        assert!(
            !out.stdout.trim_start().starts_with('{'),
            "JSON with {no}:\n{}",
            out.describe()
        );
    }
    // A cron line: skip the job while the lock is held, run it once free.
    let marker = scratch();
    let ran = marker.path().join("ran");
    let job = format!("touch {}", ran.display());
    let out = run(awsflock(&moto)
        .env("AWSFLOCK_NO_WAIT", "1")
        .env("AWSFLOCK_CONFLICT_EXIT_CODE", "0")
        .args(["run", &name, "--table", &t, "-c", &job]));
    out.assert_ok();
    assert!(!ran.exists());
    let out = run(awsflock(&moto)
        .env("AWSFLOCK_NO_WAIT", "1")
        .args(["run", "another", "--table", &t, "-c", &job]));
    out.assert_ok();
    assert!(ran.exists());
    // Nonsense is a usage error naming the variable's accepted values.
    let out = run(awsflock(&moto)
        .env("AWSFLOCK_NO_WAIT", "maybe")
        .args(["acquire", &name, "--table", &t]));
    out.assert_exit(2);
    assert_clean_error(&out);
    assert!(
        out.stderr.contains("1/0, true/false, yes/no or on/off"),
        "{}",
        out.describe()
    );
}

#[test]
fn flock_short_options_n_w_and_e() {
    let (moto, t, name) = fresh_lock();
    let _lease = acquire(&moto, &t, &name, &[]);
    let tmp = scratch();
    let ran = tmp.path().join("ran");
    let job = format!("touch {}", ran.display());

    // -n -E 0: as `flock -n -E 0`.
    let out = run(awsflock(&moto).args(["run", "-n", "-E", "0", &name, "--table", &t, "-c", &job]));
    out.assert_ok();
    assert!(!ran.exists());
    let out = run(awsflock(&moto).args(["acquire", "-n", "-E", "9", &name, "--table", &t]));
    out.assert_exit(9);
    assert!(
        out.stderr.contains("not acquired") || out.stderr.contains("held"),
        "{}",
        out.describe()
    );

    // -w 0 gives up at once, as in flock(1).
    let out = run(awsflock(&moto).args(["acquire", "-w", "0", &name, "--table", &t]));
    out.assert_exit(3);
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    // -w 2 waits about two seconds (fractions allowed, as in flock(1)).
    let out = run(awsflock(&moto).args(["run", "-w", "2.5", &name, "--table", &t, "-c", &job]));
    out.assert_exit(3);
    assert!(out.elapsed >= Duration::from_secs(2), "{:?}", out.elapsed);
    assert!(!ran.exists());
    // --timeout is flock(1)'s long name.
    let out = run(awsflock(&moto).args(["acquire", "--timeout", "1", &name, "--table", &t]));
    out.assert_exit(3);
    assert!(out.elapsed >= Duration::from_secs(1), "{:?}", out.elapsed);
    // -w beats --wait-time and AWSFLOCK_WAIT_TIME (here: forever).
    let out = run(awsflock(&moto).env("AWSFLOCK_WAIT_TIME", "0").args([
        "acquire",
        "-w",
        "1",
        "--wait-time",
        "0",
        &name,
        "--table",
        &t,
    ]));
    out.assert_exit(3);
    // --wait-time 0 still waits forever (awsflock 0.2.0).
    let mut w =
        spawn(awsflock(&moto).args(["acquire", "--wait-time", "0", &name, "--table", &t, "-q"]));
    std::thread::sleep(Duration::from_secs(3));
    assert!(!w.finished(), "--wait-time 0 gave up");
    drop(w);
    // The help says both rules.
    let help = run(awsflock(&moto).args(["acquire", "--help"]));
    assert!(help.stdout.contains("-w, --timeout"), "{}", help.stdout);
    assert!(help.stdout.contains("0 waits forever"), "{}", help.stdout);
    assert!(help.stdout.contains("0 does not wait"), "{}", help.stdout);
}

/// The `--long` options that awsflock 0.2.0 lists in `awsflock CMD --help`.
fn peer_options(cmd: &str) -> Vec<String> {
    let mut c = Command::new(tools_dir().join("peer/bin/awsflock"));
    scrub_env(&mut c);
    let out = run(c.args([cmd, "--help"]));
    out.assert_ok();
    let mut opts: Vec<String> = out
        .stdout
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').to_string())
        .collect();
    opts.sort();
    opts.dedup();
    opts
}

#[test]
fn every_option_of_awsflock_0_2_0_is_accepted() {
    let moto = Moto::start();
    let t = table(&moto);
    // Every option 0.2.0's help lists is known to our parser.
    for cmd in ["acquire", "renew", "release", "create-table"] {
        let opts = peer_options(cmd);
        assert!(opts.contains(&"--tablename".to_string()), "{cmd}: {opts:?}");
        for opt in opts {
            // A value after each (a flag takes it as the lock's name).
            let out = run(awsflock(&moto).args([cmd, &opt, "60", "--help"]));
            out.assert_exit_as(0, &format!("{cmd} {opt}:"));
        }
    }
    // And each one works, used as 0.2.0's users write them.
    let name = lock();
    let out = run(awsflock(&moto).args(["create-table", "--tablename", &t]));
    out.assert_ok();
    let out = run(awsflock(&moto).args([
        "acquire",
        &name,
        "--tablename",
        &t,
        "--verbose",
        "--wait-time",
        "5",
        "--lease-duration",
        "3 minutes",
        "--owner",
        "alice",
    ]));
    out.assert_ok();
    let lease = out.line().to_string();
    let out = run(awsflock(&moto).args(["acquire", &name, "--tablename", &t, "--no-wait"]));
    out.assert_exit(3);
    let out = run(awsflock(&moto).args([
        "renew",
        &name,
        &lease,
        "--tablename",
        &t,
        "--lease-duration",
        "1 day",
        "--owner",
        "alice",
    ]));
    out.assert_ok();
    let lease = out.line().to_string();
    assert_uuid(&lease);
    let st = status_json(&moto, &t, &name);
    assert_eq!(st["owner"], "alice");
    assert_eq!(st["lease_duration"], 86400);
    let out = run(awsflock(&moto).args(["release", &name, &lease, "--tablename", &t, "-h"]));
    out.assert_ok();
    let out = run(awsflock(&moto).args(["release", &name, &lease, "--tablename", &t]));
    out.assert_ok();
}

#[test]
fn renew_json_shows_the_owner_and_reason_that_status_shows() {
    let (moto, t, name) = fresh_lock();
    let lease = acquire(
        &moto,
        &t,
        &name,
        &["--owner", "alice", "--reason", "nightly backup"],
    );
    let out = run(awsflock(&moto).args(["renew", &name, &lease, "--table", &t, "--json"]));
    out.assert_ok();
    let v = out.json();
    let st = status_json(&moto, &t, &name);
    assert_eq!(v["owner"], "alice", "{v}");
    assert_eq!(v["reason"], "nightly backup", "{v}");
    assert_eq!(v["owner"], st["owner"]);
    assert_eq!(v["reason"], st["reason"]);
    assert_eq!(v["lease_id"], st["lease_id"]);
}

#[test]
fn the_internal_watchdog_is_not_offered_anywhere() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(awsflock_at(&dead_endpoint()).args(["completions", shell]));
        out.assert_ok();
        assert!(
            !out.stdout.contains("__watchdog"),
            "{shell} completion offers __watchdog"
        );
        assert!(out.stdout.contains("table-create"), "{shell}");
    }
    for typo in ["__watchdo", "watchdog", "__watch"] {
        let out = run(awsflock_at(&dead_endpoint()).arg(typo));
        out.assert_exit(2);
        assert!(
            !out.stderr.contains("__watchdog"),
            "suggests __watchdog:\n{}",
            out.describe()
        );
    }
    let help = run(awsflock_at(&dead_endpoint()).arg("--help"));
    assert!(!help.stdout.contains("__watchdog"));
}

#[test]
fn man_page_documents_every_subcommand_and_its_options() {
    let out = run(awsflock_at(&dead_endpoint()).arg("man"));
    out.assert_ok();
    let man = out.stdout.replace("\\-", "-");
    for cmd in [
        "table-create",
        "acquire",
        "renew",
        "release",
        "list",
        "status",
        "run",
        "completions",
    ] {
        assert!(
            man.contains(&format!("awsflock {cmd}")),
            "no section for {cmd}"
        );
    }
    for opt in [
        "--lease-duration",
        "--wait-time",
        "--timeout",
        "--conflict-exit-code",
        "--lost-exit-code",
        "--kill-after",
        "--renew-every",
        "--force",
        "--region",
        "--profile",
    ] {
        assert!(man.contains(opt), "man lacks {opt}");
    }
    assert!(!man.contains("__watchdog"));
    assert!(man.contains("etcd") && man.contains("S3") && man.contains("local directory"));
}

#[test]
fn help_names_all_four_stores() {
    let out = run(awsflock_at(&dead_endpoint()).arg("--help"));
    assert_eq!(out.code, 0);
    assert!(!out.stdout.contains("locks in DynamoDB"), "{}", out.stdout);
    for store in ["DynamoDB", "S3", "etcd", "local directory"] {
        assert!(out.stdout.contains(store), "--help does not name {store}");
    }
    let short = run(awsflock_at(&dead_endpoint()).arg("-h"));
    assert!(short.stdout.contains("etcd"), "{}", short.stdout);
}

/// Runs awsflock on a pseudo-terminal (stdout and stderr) with extra
/// environment; returns (exit code, what the terminal showed).
fn on_pty(cmd_env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut c = Command::new(bin_path());
    scrub_env(&mut c);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("TERM", "xterm-256color");
    for (k, v) in cmd_env {
        c.env(k, v);
    }
    c.args(args);
    common::pty::on_terminal(&c, "", "", 0.0)
}

/// True when `s` holds an SGR (colour or bold) escape sequence.
fn has_colour(s: &str) -> bool {
    s.match_indices("\x1b[").any(|(i, _)| {
        let rest = &s[i + 2..];
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';'));
        end.is_some_and(|e| rest[e..].starts_with('m'))
    })
}

#[test]
fn no_color_turns_off_colour_in_help_and_logs() {
    let moto = Moto::start();
    let t = table(&moto);
    let ep = moto.endpoint.as_str();
    let log_args = ["-v", "status", "x", "--table", &t, "--endpoint-url", ep];
    // On a terminal, without NO_COLOR, there is colour (so the check below
    // can fail).
    let (code, seen) = on_pty(&[], &log_args);
    assert_eq!(code, 0, "{seen}");
    assert!(
        has_colour(&seen),
        "no colour even without NO_COLOR:\n{seen:?}"
    );
    let (_, seen) = on_pty(&[], &["--help"]);
    assert!(
        has_colour(&seen),
        "help has no colour without NO_COLOR:\n{seen:?}"
    );

    // A waiter's live line on a terminal (indicatif).
    let name = lock();
    let _held = acquire(&moto, &t, &name, &[]);
    let wait_args = [
        "acquire",
        &name,
        "-w",
        "2",
        "--table",
        &t,
        "--endpoint-url",
        ep,
    ];
    let (code, seen) = on_pty(&[("NO_COLOR", "1")], &wait_args);
    assert_eq!(code, 3, "{seen}");
    assert!(seen.contains("waiting for"), "no waiting line:\n{seen:?}");
    for args in [
        &wait_args[..],
        &log_args[..],
        &["--help"],
        &["acquire", "--help"],
        &["bogus"],
    ] {
        let (_, seen) = on_pty(&[("NO_COLOR", "1")], args);
        assert!(
            !has_colour(&seen),
            "colour with NO_COLOR for {args:?}:\n{seen:?}"
        );
    }
}

/// A copy of the repository's demo script in a scratch tree whose setup
/// and moto scripts are replaced by `moto_sh`, and whose awsflock records
/// every call and its AWS environment in `calls`.
fn demo_tree(moto_sh: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let root = scratch();
    let scripts = root.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::create_dir_all(root.path().join("target/debug")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("scripts/demo.sh"), scripts.join("demo.sh")).unwrap();
    let calls = root.path().join("calls");
    let write_exe = |path: &Path, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_exe(&scripts.join("setup.sh"), "#!/bin/sh\nexit 0\n");
    write_exe(&scripts.join("moto.sh"), moto_sh);
    write_exe(
        &root.path().join("target/debug/awsflock"),
        &format!(
            "#!/bin/sh\necho \"awsflock $*\" >> {calls}\nenv | grep -E '^(AWS_|AWSFLOCK_|DYNAMO_)' | sort >> {calls}\nexit 0\n",
            calls = calls.display()
        ),
    );
    (root, calls)
}

fn run_demo(root: &Path, env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new("bash");
    scrub_env(&mut cmd);
    cmd.env_remove("CARGO_TARGET_DIR")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .arg(root.join("scripts/demo.sh"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_timeout(&mut cmd, Duration::from_secs(60))
}

#[test]
fn demo_stops_when_the_local_server_does_not_start() {
    let (root, calls) =
        demo_tree("#!/bin/sh\necho 'moto.sh: moto_server exited during start-up' >&2\nexit 1\n");
    let out = run_demo(root.path(), &[("AWS_PROFILE", "prod")]);
    assert_ne!(out.code, 0, "{}", out.describe());
    assert!(
        !calls.exists(),
        "awsflock ran although moto did not start:\n{}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

#[test]
fn demo_refuses_an_endpoint_that_is_not_loopback() {
    let (root, calls) = demo_tree(
        "#!/bin/sh\n[ \"$1\" = stop ] && exit 0\necho 'export AWS_ENDPOINT_URL=https://dynamodb.us-east-1.amazonaws.com'\necho 'export DYNAMO_ENDPOINT_URL=https://dynamodb.us-east-1.amazonaws.com'\n",
    );
    let out = run_demo(root.path(), &[]);
    assert_ne!(out.code, 0, "{}", out.describe());
    assert!(!calls.exists(), "awsflock ran against a remote endpoint");
}

#[test]
fn demo_sends_everything_to_the_local_server_with_fake_credentials() {
    let (root, calls) = demo_tree(
        "#!/bin/sh\n[ \"$1\" = stop ] && exit 0\necho 'export AWS_ENDPOINT_URL=http://127.0.0.1:5999'\necho 'export DYNAMO_ENDPOINT_URL=http://127.0.0.1:5999'\necho 'export AWS_ACCESS_KEY_ID=test'\necho 'export AWS_SECRET_ACCESS_KEY=test'\necho 'export AWS_REGION=us-east-1'\n",
    );
    // What a developer's shell may carry: all of it must be overridden.
    let out = run_demo(
        root.path(),
        &[
            ("AWS_PROFILE", "prod"),
            ("AWS_ACCESS_KEY_ID", "AKIAREALREALREAL"),
            ("AWS_SECRET_ACCESS_KEY", "real"),
            ("AWS_SESSION_TOKEN", "real"),
            (
                "AWS_ENDPOINT_URL_DYNAMODB",
                "https://dynamodb.eu-west-1.amazonaws.com",
            ),
            ("AWS_ENDPOINT_URL_S3", "https://s3.amazonaws.com"),
            (
                "AWSFLOCK_ENDPOINT_URL",
                "https://dynamodb.eu-west-1.amazonaws.com",
            ),
            ("AWSFLOCK_BACKEND", "dynamodb://prod-locks"),
        ],
    );
    out.assert_ok();
    let seen = std::fs::read_to_string(&calls).expect("awsflock was run");
    assert!(seen.contains("awsflock table-create"), "{seen}");
    for bad in [
        "AWS_PROFILE",
        "AKIAREAL",
        "AWS_SESSION_TOKEN",
        "amazonaws.com",
        "prod-locks",
    ] {
        assert!(!seen.contains(bad), "{bad} reached awsflock:\n{seen}");
    }
    assert!(seen.contains("AWS_EC2_METADATA_DISABLED=true"), "{seen}");
    for line in seen.lines().filter(|l| l.contains("ENDPOINT_URL")) {
        assert!(line.contains("=http://127.0.0.1:5999"), "{line}");
    }
}

/// Writes an executable shell script.
fn write_exe(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn setup_without_root_prints_the_apt_get_line_and_builds_without_protoc() {
    // A machine as a non-root user sees it: no faketime, no protoc, an
    // apt-get it may not run, and a moto venv of another version.
    let root = scratch();
    let r = root.path();
    let (bin, tools, log) = (r.join("bin"), r.join("tools"), r.join("log"));
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["bash", "env", "mkdir", "dirname", "rm", "cp", "cat"] {
        let found = which(tool).unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    let log_line = |who: &str| format!("#!/bin/sh\necho \"{who} $*\" >> {}\n", log.display());
    write_exe(&bin.join("id"), "#!/bin/sh\necho 1000\n");
    write_exe(&bin.join("apt-get"), &(log_line("apt-get") + "exit 100\n"));
    write_exe(&bin.join("cargo"), &(log_line("cargo") + "exit 0\n"));
    let good_py = r.join("good-python");
    write_exe(&good_py, &(log_line("venv-python") + "exit 0\n"));
    write_exe(
        &bin.join("python3"),
        &(log_line("python3")
            + &format!(
                "if [ \"$1\" = -m ] && [ \"$2\" = venv ]; then mkdir -p \"$3/bin\"; cp {} \"$3/bin/python\"; fi\nexit 0\n",
                good_py.display()
            )),
    );
    for venv in ["moto", "peer"] {
        std::fs::create_dir_all(tools.join(venv).join("bin")).unwrap();
    }
    // The moto venv fails its check (another moto version).
    write_exe(&tools.join("moto/bin/python"), "#!/bin/sh\nexit 1\n");
    std::fs::copy(&good_py, tools.join("peer/bin/python")).unwrap();

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(bin.join("bash"));
    scrub_env(&mut cmd);
    cmd.env("PATH", &bin)
        .env("AWSFLOCK_TOOLS", &tools)
        .env_remove("PROTOC")
        .env_remove("PYTHON")
        .arg(repo.join("scripts/setup.sh"));
    let out = run(&mut cmd);
    out.assert_ok();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.stderr
            .contains("sudo apt-get update && sudo apt-get install -y faketime protobuf-compiler"),
        "no apt-get line:\n{}",
        out.describe()
    );
    assert!(
        !calls.contains("apt-get"),
        "ran apt-get as non-root:\n{calls}"
    );
    assert!(
        calls.contains("moto[server]==5.2.5"),
        "moto venv not re-made with the pinned version:\n{calls}"
    );
    let cargo: Vec<&str> = calls.lines().filter(|l| l.starts_with("cargo")).collect();
    assert_eq!(cargo, ["cargo build --quiet"], "{calls}");
    assert!(
        out.stderr.contains("protoc not found"),
        "{}",
        out.describe()
    );
}

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_urls_in_a_build_without_etcd_say_how_to_get_it() {
    let out = run(awsflock_at(&dead_endpoint()).args([
        "status",
        "x",
        "--backend",
        "etcd://127.0.0.1:2379/locks",
    ]));
    out.assert_exit(2);
    assert!(
        out.stderr
            .contains("cargo install --path . --features etcd"),
        "{}",
        out.describe()
    );
    assert_clean_error(&out);
}

/// `sh -c line` with awsflock first on PATH and the environment
/// `awsflock(&moto)` gives it, its table `t`: a recipe as a user types it.
fn shell_recipe(moto: &Moto, t: &str, line: &str) -> Command {
    let base = awsflock(moto);
    let mut sh = Command::new("sh");
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    default_signals(&mut sh);
    let bin_dir = Path::new(bin_path()).parent().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    sh.env("PATH", format!("{}:{path}", bin_dir.display()))
        .env("AWSFLOCK_TABLE", t)
        .args(["-c", line]);
    sh
}

/// The README's cron recipe, copied from the README as it stands, is
/// silent when it skips (cron mails every line); -q and AWSFLOCK_QUIET
/// silence a conflict, a wait that timed out too; without them, one line.
#[test]
fn the_readme_cron_recipe_is_silent_on_a_skip() {
    let moto = Moto::start();
    let t = table(&moto);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("*/5 * * * * awsflock run report -n -E 0 -q -- "))
        .expect("README's cron recipe in flock(1)'s words");
    // What cron runs: the line after its five schedule fields.
    let recipe = line.splitn(6, ' ').nth(5).unwrap();
    let _lease = acquire(&moto, &t, "report", &[]);

    let out = run(&mut shell_recipe(&moto, &t, recipe));
    assert_eq!(out.code, 0, "{recipe}: {}", out.describe());
    assert_eq!(out.stderr, "", "{recipe}: {}", out.describe());
    assert_eq!(out.stdout, "", "{recipe}: {}", out.describe());

    // AWSFLOCK_QUIET=1 as -q; acquire as run; a wait that ran out as a conflict.
    for args in [
        vec!["run", "report", "-n", "-E", "0", "--", "true"],
        vec!["run", "report", "-w", "1", "--", "true"],
        vec!["acquire", "report", "-n"],
        vec!["acquire", "report", "-n", "-E", "0"],
    ] {
        let expect = if args.contains(&"-E") { 0 } else { 3 };
        let out = run(awsflock(&moto)
            .env("AWSFLOCK_QUIET", "1")
            .env("AWSFLOCK_TABLE", &t)
            .args(&args));
        assert_eq!(out.code, expect, "{args:?}: {}", out.describe());
        assert_eq!(out.stderr, "", "{args:?}: {}", out.describe());
        let out = run(awsflock(&moto).env("AWSFLOCK_TABLE", &t).args(&args));
        assert_eq!(out.code, expect, "{args:?}: {}", out.describe());
        let said: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.contains("waiting for"))
            .collect();
        assert_eq!(said.len(), 1, "{args:?}: {}", out.describe());
        assert!(
            said[0].contains("not acquired"),
            "{args:?}: {}",
            out.describe()
        );
    }
}

/// `run` waits until it gets the lock, as flock(1) does; `acquire` gives
/// up after awsflock 0.2.0's 60 s. Both clocks of the waiter run 30 times
/// faster (libfaketime), so that minutes pass in seconds.
#[test]
fn run_waits_forever_by_default_and_acquire_60_seconds() {
    let Some(lib) = libfaketime() else {
        skip("libfaketime is not installed");
        return;
    };
    let (moto, t, name) = fresh_lock();
    let _lease = acquire(&moto, &t, &name, &[]);
    let fast = |mut c: Command| {
        c.env("LD_PRELOAD", lib).env("FAKETIME", "+0 x30");
        c
    };
    let out = run_timeout(
        fast(awsflock(&moto)).args(["acquire", &name, "--table", &t, "-q"]),
        Duration::from_secs(60),
    );
    out.assert_exit(3);
    assert!(out.elapsed < Duration::from_secs(20), "{}", out.describe());
    // Six seconds here are three minutes on its clocks.
    let mut w =
        spawn(fast(awsflock(&moto)).args(["run", &name, "--table", &t, "-q", "--", "true"]));
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !w.finished(),
        "run gave up: {}",
        w.wait(Duration::ZERO).describe()
    );
    drop(w);
}

/// One story for the wait options, on every command: --wait-time and -w
/// both take fractions and durations; --wait-time 0 is forever, -w 0 no
/// wait; -n beats -w beats --wait-time and AWSFLOCK_WAIT_TIME.
#[test]
fn wait_options_take_fractions_and_durations_and_rank_as_documented() {
    let (moto, t, name) = fresh_lock();
    let _lease = acquire(&moto, &t, &name, &[]);
    let waited = |cmd: &str, opts: &[&str], env: Option<&str>| {
        let mut c = awsflock(&moto);
        if let Some(w) = env {
            c.env("AWSFLOCK_WAIT_TIME", w);
        }
        c.arg(cmd).args(opts).args([&name, "--table", &t, "-q"]);
        if cmd == "run" {
            c.args(["--", "true"]);
        }
        let out = run_timeout(&mut c, Duration::from_secs(60));
        assert_eq!(out.code, 3, "{cmd} {opts:?}: {}", out.describe());
        out.elapsed
    };
    let secs = Duration::from_secs_f64;
    for cmd in ["run", "acquire"] {
        // --wait-time 2.5 and 1500ms (it refused fractions before).
        let e = waited(cmd, &["--wait-time", "2.5"], None);
        assert!(e >= secs(2.5) && e < secs(15.0), "{cmd} {e:?}");
        let e = waited(cmd, &["--wait-time", "1500ms"], None);
        assert!(e >= secs(1.5) && e < secs(15.0), "{cmd} {e:?}");
        // AWSFLOCK_WAIT_TIME bounds run's wait too; -w 1s beats it.
        let e = waited(cmd, &[], Some("1.5"));
        assert!(e >= secs(1.5) && e < secs(15.0), "{cmd} {e:?}");
        let e = waited(cmd, &["-w", "1s"], Some("0"));
        assert!(e >= secs(1.0) && e < secs(15.0), "{cmd} {e:?}");
        // -w 0 does not wait, even beside --wait-time 0 (forever).
        let e = waited(cmd, &["-w", "0", "--wait-time", "0"], None);
        assert!(e < secs(10.0), "{cmd} {e:?}");
        // -n beats -w.
        let e = waited(cmd, &["-n", "-w", "30"], None);
        assert!(e < secs(10.0), "{cmd} {e:?}");
    }
    for cmd in ["run", "acquire"] {
        let help = run(awsflock(&moto).args([cmd, "--help"]));
        for part in [
            "run waits until it gets the lock",
            "acquire waits 60",
            "2.5",
        ] {
            assert!(
                help.stdout.contains(part),
                "{cmd} --help: {part:?}\n{}",
                help.stdout
            );
        }
    }
}

/// flock(1)'s habits: `run NAME CMD ARGS...` without `--` (everything from
/// CMD on is CMD's), and -x/-e (exclusive, the default) as no-ops.
#[test]
fn run_takes_the_command_right_after_the_name_as_flock_does() {
    let (moto, t, name) = fresh_lock();
    let ok = |args: &[&str]| {
        let out = run(awsflock(&moto).env("AWSFLOCK_TABLE", &t).args(args));
        assert_eq!(out.code, 0, "{args:?}: {}", out.describe());
        out.stdout
    };
    // Options after CMD are CMD's.
    assert_eq!(
        ok(&["run", &name, "echo", "hi", "--table", "x", "-n"]),
        "hi --table x -n\n"
    );
    assert_eq!(
        ok(&["run", "-x", &name, "-w", "5", "printf", "%s", "a b"]),
        "a b"
    );
    assert_eq!(ok(&["run", "-e", &name, "--", "echo", "-e", "ok"]), "ok\n");
    assert_eq!(ok(&["run", &name, "-c", "echo a | tr a b"]), "b\n");
    assert_eq!(
        ok(&[
            "run",
            &name,
            "--exclusive",
            "sh",
            "-c",
            "echo $AWSFLOCK_LOCK"
        ]),
        format!("{name}\n")
    );
    let lease = ok(&["acquire", "-x", &name, "-n"]);
    release(&moto, &t, &name, lease.trim());
    // Shared and exclusive at once is a usage error, one line.
    let out = run(awsflock(&moto)
        .env("AWSFLOCK_TABLE", &t)
        .args(["run", "-x", "-s", &name, "true"]));
    out.assert_exit(2);
    assert_clean_error(&out);
    // No command: says what to type.
    let out = run(awsflock(&moto)
        .env("AWSFLOCK_TABLE", &t)
        .args(["run", &name]));
    out.assert_exit(2);
    assert_clean_error(&out);
    assert!(
        out.stderr
            .contains(&format!("`awsflock run {name} -- CMD ARGS...`")),
        "{}",
        out.describe()
    );
}

/// On a terminal (PTY-based CI logs), a lock that was free draws nothing:
/// no spinner frame, no clearing sequence; only the command's output.
#[test]
fn a_free_lock_draws_nothing_on_a_terminal() {
    let (moto, t, name) = fresh_lock();
    let (code, seen) = on_pty(
        &[("AWS_ENDPOINT_URL", &moto.endpoint), ("AWSFLOCK_TABLE", &t)],
        &["run", &name, "--", "echo", "ran"],
    );
    assert_eq!(code, 0, "{seen:?}");
    assert_eq!(seen.replace("\r\n", "\n"), "ran\n", "{seen:?}");
}

/// The README's code block that follows the paragraph starting with
/// `intro` in its "Three recipes" section.
fn readme_recipe(intro: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Three recipes\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a \"Three recipes\" section");
    let after = section
        .split(intro)
        .nth(1)
        .unwrap_or_else(|| panic!("no recipe after {intro:?} in README's recipes"));
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block");
    block.to_string()
}

/// The README's deploy script and CI step, copied from the README as they
/// stand, with `terraform` and `./deploy.sh` as stand-ins that note when
/// they start and end: the loop deploys each environment in turn, one at a
/// time beside another worker holding the lock; the CI step waits for the
/// lock past any fixed time-out of ours, and shows its job's URL as the
/// reason while it runs.
#[test]
fn the_readme_deploy_and_ci_recipes_work_as_written() {
    let moto = Moto::start();
    let t = table(&moto);
    let dir = scratch();
    let log = dir.path().join("log");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let stand_in = |path: &Path, what: &str| {
        std::fs::write(
            path,
            format!(
                "#!/bin/sh\necho \"start {what} $*\" >> {log}\nsleep 1\necho \"end {what} $*\" >> {log}\n",
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    };
    stand_in(&bin.join("terraform"), "terraform");
    stand_in(&dir.path().join("deploy.sh"), "deploy.sh");
    let with_stand_ins = |cmd: &mut Command| {
        let path = cmd
            .get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
            .unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", bin.display()))
            .current_dir(dir.path());
    };

    // The deploy loop, while the CI step of another worker queues for the
    // same lock behind a holder that keeps it a few seconds.
    let deploy = readme_recipe("A deploy script:");
    assert!(deploy.contains("awsflock run deploy -- "), "{deploy}");
    let ci = readme_recipe("A CI step:").replace("deploy-prod", "deploy");
    assert!(ci.contains("awsflock run deploy"), "{ci}");
    let holder = spawn(
        awsflock(&moto)
            .env("AWSFLOCK_TABLE", &t)
            .args(["run", "deploy", "--reason", "first", "--", "sleep", "3"]),
    );
    thread::sleep(Duration::from_millis(500));
    let mut ci_cmd = shell_recipe(&moto, &t, &ci);
    with_stand_ins(&mut ci_cmd);
    ci_cmd.env("CI_JOB_URL", "https://ci.example/jobs/42");
    let ci_run = spawn(&mut ci_cmd);
    let mut loop_cmd = shell_recipe(&moto, &t, &deploy);
    with_stand_ins(&mut loop_cmd);
    let deploys = spawn(&mut loop_cmd);

    // While the CI step runs, waiters and status show its job's URL.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_reason = false;
    while Instant::now() < deadline && !seen_reason {
        let st = status_json(&moto, &t, "deploy");
        seen_reason = st["reason"] == "https://ci.example/jobs/42";
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_reason,
        "the CI step's URL was never shown as the reason"
    );
    let ci_out = ci_run.wait(Duration::from_secs(60));
    assert_eq!(ci_out.code, 0, "{ci}: {}", ci_out.describe());
    let out = deploys.wait(Duration::from_secs(60));
    assert_eq!(out.code, 0, "{deploy}: {}", out.describe());
    assert_eq!(holder.wait(Duration::from_secs(30)).code, 0);

    // Each ran, and never two at once.
    let lines = lines(&log);
    let mut running = 0;
    for l in &lines {
        if l.starts_with("start") {
            running += 1;
            assert_eq!(running, 1, "two at once: {lines:?}");
        } else {
            running -= 1;
        }
    }
    let starts: Vec<&String> = lines.iter().filter(|l| l.starts_with("start")).collect();
    assert_eq!(starts.len(), 3, "{lines:?}");
    let envs: Vec<&&String> = starts
        .iter()
        .filter(|l| l.starts_with("start terraform"))
        .collect();
    assert_eq!(
        envs.iter().map(|l| l.as_str()).collect::<Vec<_>>(),
        [
            "start terraform apply -var env=staging",
            "start terraform apply -var env=prod"
        ],
        "{lines:?}"
    );
    assert!(
        starts.iter().any(|l| l.starts_with("start deploy.sh")),
        "{lines:?}"
    );
}
