//! Test support: llama.cpp's real server (from the `xllamacpp` wheel that scripts/fetch-assets.sh
//! installs into assets/venv) on a free loopback port, killed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root (two levels above this crate).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The SmolLM2 GGUF, if fetched.
pub fn smollm2() -> Option<PathBuf> {
    let p = repo().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

/// A running llama.cpp server.
pub struct LlamaServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl LlamaServer {
    /// Starts the server on `model` with `threads` threads; `None` (with a loud message) when the
    /// assets are missing — run scripts/fetch-assets.sh.
    pub fn start(model: &std::path::Path, threads: usize) -> Option<LlamaServer> {
        Self::start_with(model, threads, &[])
    }

    /// Like [`LlamaServer::start`] with extra flags for scripts/llama_server.py (e.g. `--exact`).
    pub fn start_with(model: &std::path::Path, threads: usize, extra: &[&str]) -> Option<LlamaServer> {
        let py = repo().join("assets/venv/bin/python");
        if !py.exists() {
            eprintln!("SKIPPED: assets/venv with xllamacpp is missing; run scripts/fetch-assets.sh");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut child = Command::new(py)
            .arg(repo().join("scripts/llama_server.py"))
            .args(["--model", &model.to_string_lossy(), "--port", &port.to_string(), "--threads", &threads.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scripts/llama_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("listening"), "llama server did not start: {line:?}");
        Some(LlamaServer { child, port })
    }

    /// POSTs JSON and returns the JSON answer.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
        write!(s, "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, json) = resp.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{json}");
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"))
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
