//! End-to-end tests of the messages for a store that cannot be used: nothing
//! listening, something that is not the store answering, a missing table, a
//! table of another shape, a profile that does not exist. Each is one line
//! that names the cause and what to do next, with exit code 1.

use crate::common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

fn assert_store_error(out: &Out, needles: &[&str]) {
    out.assert_exit_as(1, "expected exit 1:");
    assert_clean_error(out);
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "expected {n:?} in the message:\n{}",
            out.describe()
        );
    }
}

#[test]
fn closed_port_says_nothing_listens_at_the_endpoint() {
    let ep = dead_endpoint();
    let out = run(awsflock_at(&ep).args(["status", "x"]));
    assert_store_error(&out, &["connection refused", &ep, "nothing listens"]);
    let out = run(awsflock_at(&ep).args(["--backend", "s3://b/p", "status", "x"]));
    assert_store_error(&out, &["connection refused", &ep, "nothing listens"]);
}

/// A server that answers every request with `status` (e.g. "200 OK"), the
/// given content type (none if empty) and body, a `Date` (as web servers
/// send), and `Connection: close`.
fn answering(status: &'static str, content_type: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = conn.read(&mut buf);
                let ctype = match content_type {
                    "" => String::new(),
                    t => format!("Content-Type: {t}\r\n"),
                };
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nDate: {}\r\n{ctype}Content-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        common::proxy::http_date(std::time::SystemTime::now()),
                        body.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    ep
}

/// A server that answers every request `HTTP/1.1 200 OK` with a text body.
fn hello_server() -> String {
    answering("200 OK", "text/plain", "hello")
}

#[test]
fn a_server_that_is_not_the_store_is_named_as_such() {
    let ep = hello_server();
    let out = run(awsflock_at(&ep).args(["status", "x"]));
    assert_store_error(&out, &["not DynamoDB", "HTTP 200", "text/plain", &ep]);
    let out = run(awsflock_at(&ep).args(["list"]));
    assert_store_error(&out, &["not DynamoDB", "HTTP 200"]);
    let out = run(awsflock_at(&ep).args(["--backend", "s3://b/p", "list"]));
    assert_store_error(&out, &["not S3", "HTTP 200", "text/plain", &ep]);
    let out = run(awsflock_at(&ep).args(["--backend", "s3://b/p", "status", "x"]));
    assert_store_error(&out, &["not S3", &ep]);
}

#[test]
fn tls_to_a_plain_server_and_an_unresolvable_host_are_named() {
    let ep = hello_server().replace("http://", "https://");
    let out = run(awsflock_at(&ep).args(["status", "x"]));
    assert_store_error(&out, &["TLS handshake failed", &ep, "http://"]);
    let out = run(awsflock_at(&ep).args(["--backend", "s3://b/p", "status", "x"]));
    assert_store_error(&out, &["TLS handshake failed", &ep, "http://"]);
    let out = run(awsflock_at("http://awsflock-test.invalid").args(["status", "x"]));
    assert_store_error(
        &out,
        &["host name does not resolve", "awsflock-test.invalid"],
    );
}

/// The HTTPS client the AWS stores build (its TLS crypto, its trust in the
/// system's roots) completes a handshake: moto serving HTTPS with a
/// certificate for 127.0.0.1 takes a lock through DynamoDB and S3 once the
/// certificate's CA is trusted (`SSL_CERT_FILE`, read as the system's roots
/// are), and the same endpoint without that CA is a failed handshake.
#[test]
fn https_endpoint_with_a_trusted_certificate_takes_a_lock() {
    if which("openssl").is_none() {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let certs = tempfile::tempdir().expect("temp dir");
    let tls = common::etcd::Tls::make(certs.path());
    let moto = Moto::private_tls(&tls.server_cert, &tls.server_key);
    assert!(moto.endpoint.starts_with("https://127.0.0.1:"));
    let trusting = |args: &[&str]| run(awsflock(&moto).env("SSL_CERT_FILE", &tls.ca).args(args));
    let name = lock();
    for backend in [
        format!("dynamodb://{}", unique_name("tbl")),
        format!("s3://{}/p/", unique_name("bkt")),
    ] {
        trusting(&["--backend", &backend, "table-create"])
            .assert_exit_as(0, &format!("table-create over HTTPS ({backend}):"));
        trusting(&["--backend", &backend, "run", &name, "--", "true"])
            .assert_exit_as(0, &format!("run over HTTPS ({backend}):"));
    }
    let out = run(awsflock(&moto).args(["status", &name]));
    assert_store_error(&out, &["TLS handshake failed", &moto.endpoint]);
}

#[test]
fn a_server_that_never_answers_is_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn); // accepted, never answered
        }
    });
    let out = run(awsflock_at(&ep).args(["status", "x"]));
    assert_store_error(&out, &["did not answer in time", &ep]);
}

#[test]
fn missing_table_names_region_and_endpoint_and_suggests_table_create() {
    let moto = Moto::start();
    for args in [
        vec!["status", "x", "--table", "nope"],
        vec!["list", "--table", "nope"],
        vec!["acquire", "x", "--table", "nope"],
    ] {
        let out = run(awsflock(&moto).args(&args));
        assert_store_error(
            &out,
            &[
                "'nope' does not exist",
                "us-east-1",
                &moto.endpoint,
                "awsflock table-create --table nope",
            ],
        );
    }
}

#[test]
fn missing_bucket_names_region_and_endpoint_and_suggests_table_create() {
    let moto = Moto::start();
    let out = run(awsflock(&moto).args(["--backend", "s3://no-such-bucket/p", "status", "x"]));
    assert_store_error(
        &out,
        &[
            "bucket no-such-bucket does not exist",
            "us-east-1",
            &moto.endpoint,
            "awsflock table-create --backend s3://no-such-bucket/p/",
        ],
    );
}

#[test]
fn a_table_with_another_key_schema_is_recognised_by_every_command() {
    let moto = Moto::start();
    let t = foreign_table(&moto);
    boto(
        &moto,
        &format!(r#"c.put_item(TableName={t:?}, Item={{"id": {{"S": "a"}}}})"#),
    );
    for args in [
        vec!["status", "x"],
        vec!["list"],
        vec!["acquire", "x"],
        vec!["release", "x", "--force", "-y"],
        vec!["renew", "x", "00000000-0000-0000-0000-000000000000"],
        vec!["table-create"],
    ] {
        let out = run(awsflock(&moto).args(&args).args(["--table", &t]));
        assert_store_error(&out, &["key schema [id (HASH, S)]", "lock_id (S)"]);
    }
    // A release by lease id is one conditional write: it says the schema is
    // wrong and where to see it.
    let out = run(awsflock(&moto)
        .args(["release", "x", "00000000-0000-0000-0000-000000000000"])
        .args(["--table", &t]));
    assert_store_error(&out, &["key schema", "lock_id (S)", "table-create"]);
}

#[test]
fn a_profile_that_does_not_exist_is_named() {
    let moto = Moto::start();
    let out = run(awsflock(&moto)
        .env("AWS_PROFILE", "no-such-profile")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["status", "x"]));
    assert_store_error(&out, &["profile 'no-such-profile'", "does not exist"]);

    // A profile that exists but has no credentials is not called missing.
    let dir = scratch();
    let config = dir.path().join("config");
    std::fs::write(&config, "[profile other]\nregion = us-east-1\n").unwrap();
    let out = run(awsflock(&moto)
        .env("AWS_PROFILE", "other")
        .env("AWS_CONFIG_FILE", &config)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["status", "x"]));
    assert_store_error(&out, &["no AWS credentials"]);
    assert!(!out.stderr.contains("does not exist"), "{}", out.describe());
}

/// What a proxy or load balancer says when what is behind it fails.
const BAD_GATEWAY_PAGE: &str = "<html><head><title>502 Bad Gateway</title></head>\
    <body><center><h1>502 Bad Gateway</h1></center></body></html>";

#[test]
fn a_proxy_answering_502_with_a_page_is_named_at_once() {
    let ep = answering("502 Bad Gateway", "text/html", BAD_GATEWAY_PAGE);
    for args in [
        vec!["acquire", "x"],
        vec!["run", "x", "--", "true"],
        vec!["status", "x"],
        vec!["--backend", "s3://bucket/p", "acquire", "x"],
        vec!["--backend", "s3://bucket/p", "run", "x", "--", "true"],
        vec!["--backend", "s3://bucket/p", "status", "x"],
    ] {
        let out = run_timeout(
            awsflock_at(&ep).args(&args),
            std::time::Duration::from_secs(90),
        );
        assert_store_error(&out, &[&ep, "HTTP 502", "text/html"]);
        assert!(
            out.elapsed < std::time::Duration::from_secs(6),
            "{args:?}: not at once:\n{}",
            out.describe()
        );
    }
    // No content type and no AWS request id: not the service either.
    let ep = answering("503 Service Unavailable", "", "");
    let out = run(awsflock_at(&ep).args(["acquire", "x", "-q"]));
    assert_store_error(&out, &[&ep, "HTTP 503"]);
    assert!(
        out.elapsed < std::time::Duration::from_secs(6),
        "{}",
        out.describe()
    );
}

/// The WARN lines of a command's stderr.
fn warnings(out: &Out) -> Vec<&str> {
    out.stderr.lines().filter(|l| l.contains("WARN")).collect()
}

#[test]
fn the_services_own_5xx_is_retried_with_one_warning_and_none_under_q() {
    let moto = Moto::start();
    let t = table(&moto);
    let bucket = format!("s3://{}/p", unique_name("bkt"));
    let out = run(awsflock(&moto).args(["--backend", &bucket, "table-create"]));
    out.assert_ok();
    let proxy = common::proxy::Proxy::start(&moto.endpoint);
    for (store, quiet) in [(&t, false), (&t, true), (&bucket, false), (&bucket, true)] {
        // Several calls' worth of the service's own 500s (a request id, an
        // AWS error body; the SDK tries each call 3 times), then the store
        // answers again.
        proxy.fault(None, common::proxy::Fault::Status(500), Some(12));
        let mut cmd = awsflock_at(&proxy.endpoint);
        match store.strip_prefix("s3://") {
            Some(_) => cmd.args(["--backend", store]),
            None => cmd.args(["--table", store]),
        };
        cmd.args(["acquire", &lock(), "-w", "60"]);
        if quiet {
            cmd.arg("-q");
        }
        let out = run(&mut cmd);
        out.assert_exit_as(0, &format!("{store}: not ridden out:"));
        assert!(
            !proxy.pending(),
            "{store}: the 500s were not all sent:\n{}",
            out.describe()
        );
        let most = if quiet { 0 } else { 1 };
        let warned = warnings(&out);
        assert!(
            warned.len() <= most,
            "{store}: quiet={quiet}:\n{}",
            out.describe()
        );
        // The warning says where and what.
        for w in warned {
            assert!(
                w.contains(&proxy.endpoint) && w.contains("HTTP 500"),
                "{store}: {w}"
            );
        }
        proxy.clear();
    }
}

#[test]
fn a_named_profile_that_does_not_exist_is_refused_even_with_credentials_in_the_environment() {
    let moto = Moto::start();
    let t = table(&moto);
    let dir = scratch();
    let (config, credentials) = (dir.path().join("config"), dir.path().join("credentials"));
    std::fs::write(&config, "[profile in-config]\nregion = us-east-1\n").unwrap();
    std::fs::write(
        &credentials,
        "[in-credentials]\naws_access_key_id = test\naws_secret_access_key = test\n",
    )
    .unwrap();
    // awsflock(&moto) has AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set.
    let with_files = |cmd: &mut std::process::Command| {
        cmd.env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .args(["status", "x", "--table", &t]);
    };
    for named in [["--profile", "nosuch"], ["--profile", "in-confg"]] {
        let mut cmd = awsflock(&moto);
        with_files(&mut cmd);
        let out = run(cmd.args(named));
        assert_store_error(
            &out,
            &[&format!("profile '{}'", named[1]), "does not exist"],
        );
    }
    let mut cmd = awsflock(&moto);
    with_files(&mut cmd);
    let out = run(cmd.env("AWS_PROFILE", "nosuch"));
    assert_store_error(&out, &["profile 'nosuch'", "does not exist"]);

    // AWS_PROFILE is below the environment's keys, as in the AWS CLI: a
    // profile in either file works with them; so does `default` (as in the
    // AWS CLI, it may be absent) and no profile at all.
    for profile in ["in-config", "in-credentials", "default"] {
        let mut cmd = awsflock(&moto);
        with_files(&mut cmd);
        let out = run(cmd.env("AWS_PROFILE", profile));
        out.assert_exit_as(0, &format!("{profile}:"));
    }
    // --profile beats the environment's keys, as `aws --profile` does: its
    // credentials come from the profile alone, so a profile without keys
    // (or the absent `default`) has none, whatever the environment holds.
    let mut cmd = awsflock(&moto);
    with_files(&mut cmd);
    let out = run(cmd.args(["--profile", "in-credentials"]));
    out.assert_ok();
    for profile in ["in-config", "default"] {
        let mut cmd = awsflock(&moto);
        with_files(&mut cmd);
        let out = run(cmd.args(["--profile", profile]));
        assert_store_error(
            &out,
            &[&format!("no AWS credentials found (profile \"{profile}\")")],
        );
    }
    let mut cmd = awsflock(&moto);
    with_files(&mut cmd);
    let out = run(cmd
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["--profile", "in-credentials"]));
    out.assert_ok();
    let mut cmd = awsflock(&moto);
    with_files(&mut cmd);
    assert_eq!(run(&mut cmd).code, 0);
}

/// `--profile` takes its credentials from the profile, not from keys in
/// the environment (they would act on whatever account they belong to);
/// `AWS_PROFILE` yields to the keys, as in the AWS CLI.
#[test]
fn the_named_profiles_credentials_beat_keys_in_the_environment() {
    let moto = Moto::start();
    let t = table(&moto);
    let dir = scratch();
    let marker = dir.path().join("profile-credentials-used");
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile lab]\nregion = us-east-1\ncredential_process = sh -c 'touch {}; echo {{\\\"Version\\\":1,\\\"AccessKeyId\\\":\\\"lab\\\",\\\"SecretAccessKey\\\":\\\"lab\\\"}}'\n",
            marker.display()
        ),
    )
    .unwrap();
    let status = |profile: &[&str], env_profile: Option<&str>| {
        let _ = std::fs::remove_file(&marker);
        // awsflock(&moto) has AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set.
        let mut cmd = awsflock(&moto);
        cmd.env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
            .args(["status", "x", "--table", &t])
            .args(profile);
        if let Some(p) = env_profile {
            cmd.env("AWS_PROFILE", p);
        }
        let out = run(&mut cmd);
        out.assert_ok();
        marker.exists()
    };
    assert!(
        status(&["--profile", "lab"], None),
        "--profile lab used the environment's keys"
    );
    assert!(
        !status(&[], Some("lab")),
        "AWS_PROFILE=lab beat the environment's keys"
    );
    assert!(!status(&[], None));
}
