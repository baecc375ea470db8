//! `ulm serve` as a process: it prints its URL, serves with the tiny golden model, requires the
//! API key from `ULM_API_KEY`, and exits cleanly on SIGTERM, with batched decoding and without.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::Served;

fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_answers_then_stops_on_sigterm() {
    answers_then_stops(&[]); // batched decoding, the default
}

#[test]
fn serve_without_batching_answers_then_stops_on_sigterm() {
    answers_then_stops(&["--batch", "0"]);
}

fn answers_then_stops(extra: &[&str]) {
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/tests/data/golden");
    let mut args = vec!["--model", golden, "--cloud-model", golden, "--ctx", "256"];
    args.extend_from_slice(extra);
    let mut server = Served::start(&args, Some("t0ken"));
    let addr = server.addr().to_string();
    let child = &mut server.child;
    assert!(addr.starts_with("127.0.0.1:"), "binds loopback by default: {addr}");

    let health = http(&addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let denied = http(&addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    let body = r#"{"messages":[{"role":"user","content":"Hello"}],"max_tokens":4,"temperature":0}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let reply = http(&addr, &req);
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains(r#""content":"ffff""#), "{reply}");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "exit status after SIGTERM: {s}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "ulm serve did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
