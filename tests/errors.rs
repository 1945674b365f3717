//! End-to-end tests of the messages for a store that cannot be used: nothing
//! listening, something that is not the store answering, a missing table, a
//! table of another shape, a profile that does not exist. Each is one line
//! that names the cause and what to do next, with exit code 1.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

fn assert_store_error(out: &Out, needles: &[&str]) {
    assert_eq!(out.code, 1, "expected exit 1:\n{}", out.describe());
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

/// A server that answers every request `HTTP/1.1 200 OK` with a text body.
fn hello_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                );
            });
        }
    });
    ep
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
    let t = unique_name("wrong");
    boto(
        &moto,
        &format!(
            r#"
c.create_table(TableName={t:?}, KeySchema=[{{"AttributeName": "id", "KeyType": "HASH"}}],
    AttributeDefinitions=[{{"AttributeName": "id", "AttributeType": "S"}}], BillingMode="PAY_PER_REQUEST")
c.put_item(TableName={t:?}, Item={{"id": {{"S": "a"}}}})
"#
        ),
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
