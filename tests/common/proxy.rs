//! A fault-injecting HTTP/1.1 proxy for the store's endpoint.
//!
//! It listens on 127.0.0.1 (a free port) on threads of the test process and
//! forwards each request to the upstream endpoint (a moto server), one
//! upstream connection per request (moto answers `Connection: close`).
//! Clients that keep connections alive are served request after request
//! until they close.
//!
//! Requests are counted by operation (the `X-Amz-Target` header, e.g.
//! `DynamoDB_20120810.UpdateItem`), and a programmable plan decides, per
//! request, whether to answer it with an injected fault:
//!
//! - [`Fault::Throttle`]: HTTP 400 `ProvisionedThroughputExceededException`,
//!   not forwarded;
//! - [`Fault::Status`]: that HTTP status (500, 503), not forwarded;
//! - [`Fault::Delay`]: forwarded, the answer held back for a while;
//! - [`Fault::DropResponse`]: forwarded (so it takes effect), then the client
//!   connection is closed without an answer: the lost-answer case;
//! - [`Fault::Hold`]: held back this long, then forwarded (a request that
//!   is slow to arrive);
//! - [`Fault::Refuse`]: HTTP 400 with that error code (e.g.
//!   `AccessDeniedException`, as IAM refuses), not forwarded;
//! - [`Fault::Replicated`]: forwarded, and a DescribeTable answer given the
//!   fields moto does not report for a global table: `Replicas` (in
//!   eu-west-1) and `MultiRegionConsistency` (the fault's value).
//!
//! Requests without `X-Amz-Target` (S3) are counted under their HTTP method
//! (`PUT`, `GET`, ...). [`Proxy::shift_date`] makes every answer's `Date`
//! header read the proxy's clock plus an offset: a store whose clock jumps.
//!
//! Point a client at [`Proxy::endpoint`] (`AWS_ENDPOINT_URL`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// What to do to a request that matches a rule of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer HTTP 400 ProvisionedThroughputExceededException, not forwarded.
    Throttle,
    /// Answer this HTTP status (e.g. 500 or 503), not forwarded.
    Status(u16),
    /// Forward, then hold the answer back this long.
    Delay(Duration),
    /// Forward (the request takes effect), then close the client connection
    /// without answering.
    DropResponse,
    /// Hold the request this long, then forward it.
    Hold(Duration),
    /// Answer HTTP 400 with this error code, not forwarded.
    Refuse(&'static str),
    /// Forward, then add to the answer's `Table` a replica in eu-west-1 and
    /// this `MultiRegionConsistency` (`EVENTUAL`, `STRONG`).
    Replicated(&'static str),
}

impl Fault {
    /// The name under which [`Proxy::injected`] counts this fault.
    pub fn kind(&self) -> String {
        match self {
            Fault::Throttle => "throttle".to_string(),
            Fault::Status(s) => format!("status{s}"),
            Fault::Delay(_) => "delay".to_string(),
            Fault::DropResponse => "drop".to_string(),
            Fault::Hold(_) => "hold".to_string(),
            Fault::Refuse(code) => format!("refuse{code}"),
            Fault::Replicated(mode) => format!("replicated{mode}"),
        }
    }
}

/// One rule of the plan: a fault for the requests of one operation (or all),
/// for the next `remaining` of them (or until cleared).
#[derive(Debug, Clone)]
struct Rule {
    op: Option<String>,
    fault: Fault,
    remaining: Option<usize>,
    /// Matching requests to let through untouched before the rule applies.
    skip: usize,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived (head and body read).
    pub at: Instant,
    /// The operation (`X-Amz-Target`), or "" when absent.
    pub op: String,
    /// The fault applied to it, if any.
    pub fault: Option<Fault>,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    counts: HashMap<String, usize>,
    injected: HashMap<String, usize>,
    seen: Vec<Seen>,
    /// Seconds added to the `Date` of every answer (0: untouched).
    date_shift: i64,
}

impl State {
    /// Counts the request and picks the fault of the first rule matching it.
    fn admit(&mut self, op: &str) -> Option<Fault> {
        *self.counts.entry(op.to_string()).or_insert(0) += 1;
        let mut fault = None;
        for rule in &mut self.rules {
            let matches = rule.op.as_deref().is_none_or(|want| op_matches(op, want));
            if !matches || rule.remaining == Some(0) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                break;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            fault = Some(rule.fault);
            break;
        }
        self.rules.retain(|r| r.remaining != Some(0));
        if let Some(f) = fault {
            *self.injected.entry(f.kind()).or_insert(0) += 1;
        }
        self.seen.push(Seen {
            at: Instant::now(),
            op: op.to_string(),
            fault,
        });
        fault
    }
}

/// True when the `X-Amz-Target` value `target` names operation `want`, given
/// in full (`DynamoDB_20120810.UpdateItem`) or by its short name.
fn op_matches(target: &str, want: &str) -> bool {
    target == want
        || target
            .rsplit_once('.')
            .is_some_and(|(_, short)| short == want)
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let up = upstream
            .trim_end_matches('/')
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("upstream must be http://HOST:PORT, got {upstream}"));
        let up: SocketAddr = up
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    thread::spawn(move || serve(conn, up, &state));
                }
            })
        };
        Proxy {
            endpoint: format!("http://{addr}"),
            addr,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `fault` to the next `count` requests of operation `op` (all
    /// operations when `None`), or to all of them until [`Proxy::clear`]
    /// when `count` is `None`. Rules added earlier take precedence.
    pub fn fault(&self, op: Option<&str>, fault: Fault, count: Option<usize>) {
        self.fault_after(op, 0, fault, count);
    }

    /// As [`Proxy::fault`], after letting `skip` matching requests through
    /// untouched.
    pub fn fault_after(&self, op: Option<&str>, skip: usize, fault: Fault, count: Option<usize>) {
        if count == Some(0) {
            return;
        }
        self.state().rules.push(Rule {
            op: op.map(str::to_string),
            fault,
            remaining: count,
            skip,
        });
    }

    /// From now on, every answer's `Date` header reads the proxy's clock
    /// plus `secs` (0 restores the store's own `Date`).
    pub fn shift_date(&self, secs: i64) {
        self.state().date_shift = secs;
    }

    /// Removes every rule: requests are forwarded untouched from now on.
    pub fn clear(&self) {
        self.state().rules.clear();
    }

    /// True while some rule still has requests to act on.
    pub fn pending(&self) -> bool {
        !self.state().rules.is_empty()
    }

    /// Requests seen so far for operation `op` (full or short name), or for
    /// all operations when `op` is `None`.
    pub fn count(&self, op: Option<&str>) -> usize {
        self.state()
            .counts
            .iter()
            .filter(|(k, _)| op.is_none_or(|want| op_matches(k, want)))
            .map(|(_, n)| n)
            .sum()
    }

    /// Faults injected so far, by kind (see [`Fault::kind`]).
    pub fn injected(&self) -> HashMap<String, usize> {
        self.state().injected.clone()
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// Waits up to `timeout` until `count(op)` reaches `n`; true if it did.
    pub fn wait_count(&self, op: Option<&str>, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count(op) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

/// An HTTP message head and body, as bytes.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }
}

fn header_of(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Reads from `stream` until `buf` holds a complete head; returns the head
/// (with its final CRLFCRLF) and leaves what follows in `buf`. `None` at a
/// clean end of stream before any byte of a new message.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            let head = std::mem::replace(buf, rest);
            return Ok(Some(head));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of stream inside a message head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads exactly `len` body bytes, starting with what is left in `buf`.
fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
    while buf.len() < len {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of stream inside a body",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let rest = buf.split_off(len);
    Ok(std::mem::replace(buf, rest))
}

fn content_length(head: &[u8]) -> io::Result<Option<usize>> {
    match header_of(head, "content-length") {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")),
    }
}

/// Serves one client connection: request after request until it closes.
fn serve(mut client: TcpStream, upstream: SocketAddr, state: &Mutex<State>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
    let mut buf = Vec::new();
    loop {
        let head = match read_head(&mut client, &mut buf) {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        if header_of(&head, "transfer-encoding").is_some() {
            // The SDKs send Content-Length; chunked requests are not needed.
            let _ = client.write_all(&canned(400, "BadRequest", "chunked requests unsupported"));
            return;
        }
        let len = match content_length(&head) {
            Ok(l) => l.unwrap_or(0),
            Err(_) => return,
        };
        let Ok(body) = read_body(&mut client, &mut buf, len) else {
            return;
        };
        let req = Message { head, body };
        let op = req
            .header("x-amz-target")
            .unwrap_or_else(|| method_of(&req.head));
        let fault = state.lock().unwrap_or_else(|e| e.into_inner()).admit(&op);
        if let Some(Fault::Hold(d)) = fault {
            thread::sleep(d);
        }

        let answer = match fault {
            Some(Fault::Throttle) => canned(
                400,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded \
                 (injected by the test proxy)",
            ),
            Some(Fault::Status(code)) => canned(
                code,
                if code == 503 {
                    "ServiceUnavailable"
                } else {
                    "InternalServerError"
                },
                "injected by the test proxy",
            ),
            Some(Fault::Refuse(code)) => canned(400, code, "refused by the test proxy"),
            Some(Fault::Delay(_))
            | Some(Fault::DropResponse)
            | Some(Fault::Hold(_))
            | Some(Fault::Replicated(_))
            | None => {
                match forward(&req, upstream) {
                    Ok(resp) => match fault {
                        Some(Fault::Replicated(mode)) => replicated(&resp, mode),
                        _ => resp,
                    },
                    Err(_) => {
                        // Upstream down or frozen: the client sees the
                        // connection close, as it would without the proxy.
                        let _ = client.shutdown(Shutdown::Both);
                        return;
                    }
                }
            }
        };
        // The shift in force when the answer leaves (a held request is
        // answered with the `Date` of the time it is let through).
        let shift = state.lock().unwrap_or_else(|e| e.into_inner()).date_shift;
        let answer = if shift != 0 {
            with_date(&answer, SystemTime::now(), shift)
        } else {
            answer
        };
        match fault {
            Some(Fault::DropResponse) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Delay(d)) => thread::sleep(d),
            _ => {}
        }
        if client.write_all(&answer).is_err() || client.flush().is_err() {
            return;
        }
        let close =
            header_of(&answer, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if close {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// A DescribeTable answer made to describe a global table: a replica in
/// eu-west-1 and `mode` as its `MultiRegionConsistency`, with the
/// `Content-Length` to match (and no `x-amz-crc32`). Other answers pass unchanged.
fn replicated(answer: &[u8], mode: &str) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&answer[end + 4..]) else {
        return answer.to_vec();
    };
    let Some(table) = json.get_mut("Table").and_then(|t| t.as_object_mut()) else {
        return answer.to_vec();
    };
    table.insert(
        "Replicas".into(),
        serde_json::json!([{"RegionName": "eu-west-1", "ReplicaStatus": "ACTIVE"}]),
    );
    table.insert("MultiRegionConsistency".into(), mode.into());
    let body = json.to_string();
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| {
            // The body changed: its length, and any checksum of it, go.
            !l.split_once(':').is_some_and(|(k, _)| {
                let k = k.trim();
                k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("x-amz-crc32")
            })
        })
        .map(str::to_string)
        .collect();
    lines.push(format!("Content-Length: {}", body.len()));
    format!("{}\r\n\r\n{body}", lines.join("\r\n")).into_bytes()
}

/// The request line's method (`PUT`, `GET`, ...).
fn method_of(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    text.split(' ').next().unwrap_or_default().to_string()
}

/// `answer` with its `Date` header replaced by `now + shift` seconds.
fn with_date(answer: &[u8], now: SystemTime, shift: i64) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let when = if shift >= 0 {
        now + Duration::from_secs(shift as u64)
    } else {
        now - Duration::from_secs(shift.unsigned_abs())
    };
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("date"))
        })
        .map(str::to_string)
        .collect();
    lines.push(format!("Date: {}", http_date(when)));
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&answer[end..]);
    out
}

/// Sends `req` upstream on a fresh connection and returns the full answer
/// (head and body) as bytes.
fn forward(req: &Message, upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.set_write_timeout(Some(Duration::from_secs(10)))?;
    up.write_all(&req.head)?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut buf = Vec::new();
    let head = read_head(&mut up, &mut buf)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upstream closed without answer",
        )
    })?;
    let body = match content_length(&head)? {
        Some(len) => read_body(&mut up, &mut buf, len)?,
        None => {
            // No length (chunked or close-delimited): moto closes the
            // connection after the answer, so read to the end and pass the
            // bytes through as they came.
            up.read_to_end(&mut buf)?;
            std::mem::take(&mut buf)
        }
    };
    let mut out = head;
    if header_of(&out, "content-length").is_none() && header_of(&out, "connection").is_none() {
        // Close-delimited for the client too.
        let end = out.len() - 2;
        out.splice(end..end, b"Connection: close\r\n".iter().copied());
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// An error answer in DynamoDB's JSON 1.0 form, with a `Date` header.
fn canned(status: u16, code: &str, message: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body =
        format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{message}"}}"#);
    format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Date: {date}\r\n\
         Content-Type: application/x-amz-json-1.0\r\n\
         x-amzn-ErrorType: {code}\r\n\
         x-amzn-RequestId: injected-{nanos}\r\n\
         Content-Length: {len}\r\n\
         \r\n\
         {body}",
        date = http_date(SystemTime::now()),
        nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        len = body.len(),
    )
    .into_bytes()
}

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let (y, mo, d) = civil_from_days(days);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{weekday}, {d:02} {month} {y:04} {h:02}:{m:02}:{s:02} GMT")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}
