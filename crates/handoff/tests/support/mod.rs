//! Test support: a real HTTP/1.1 server on loopback that misbehaves on purpose, and the llama.cpp
//! server started from the assets.
#![allow(dead_code)]

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- Fault-injecting server ---------------------------------------------------------------------

/// How a streamed response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The terminating chunk is sent.
    Clean,
    /// The connection is dropped in the middle of the chunked body.
    Cut,
}

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// 200 with an SSE body: wait `head_delay`, send the headers, then each chunk after its delay.
    Stream { head_delay: Duration, chunks: Vec<(Duration, String)>, end: End },
    /// Any status with a body and extra headers.
    Status { status: u16, headers: Vec<(String, String)>, body: String },
}

impl Step {
    /// A clean OpenAI chat stream of `pieces`, finish reason `stop`, then `[DONE]`.
    pub fn chat(pieces: &[&str]) -> Step {
        Step::Stream { head_delay: Duration::ZERO, chunks: chat_chunks(pieces, true), end: End::Clean }
    }

    /// Like [`Step::chat`] with the first piece delayed.
    pub fn chat_after(delay: Duration, pieces: &[&str]) -> Step {
        let mut chunks = chat_chunks(pieces, true);
        chunks[0].0 = delay;
        Step::Stream { head_delay: Duration::ZERO, chunks, end: End::Clean }
    }

    /// Raw SSE text chunks, sent as they are.
    pub fn raw(chunks: &[&str], end: End) -> Step {
        Step::Stream { head_delay: Duration::ZERO, chunks: chunks.iter().map(|c| (Duration::ZERO, c.to_string())).collect(), end }
    }

    /// An error status with the OpenAI error body.
    pub fn error(status: u16, message: &str) -> Step {
        let body = json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}}).to_string();
        Step::Status { status, headers: vec![], body }
    }

    /// 429 with a `Retry-After` in seconds.
    pub fn rate_limited(retry_after_s: u64) -> Step {
        let body = json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}).to_string();
        Step::Status { status: 429, headers: vec![("Retry-After".into(), retry_after_s.to_string())], body }
    }

    /// 429 with a `Retry-After` HTTP date and, when given, the server's own `Date` header.
    pub fn rate_limited_until(retry_after: String, date: Option<String>) -> Step {
        let body = json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}).to_string();
        let mut headers = vec![("Retry-After".to_string(), retry_after)];
        headers.extend(date.map(|d| ("Date".to_string(), d)));
        Step::Status { status: 429, headers, body }
    }

    /// 200 with a JSON body (a non-streamed reply).
    pub fn json(body: Value) -> Step {
        Step::Status { status: 200, headers: vec![], body: body.to_string() }
    }
}

/// SSE chunks of an OpenAI chat stream.
pub fn chat_chunks(pieces: &[&str], done: bool) -> Vec<(Duration, String)> {
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        (Duration::ZERO, format!("data: {c}\n\n"))
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": null}), Value::Null)];
    out.extend(pieces.iter().map(|p| chunk(json!({"content": p}), Value::Null)));
    if done {
        out.push(chunk(json!({}), json!("stop")));
        out.push((Duration::ZERO, "data: [DONE]\n\n".into()));
    }
    // The role chunk goes out with the first piece so that a delay on it delays the first token.
    let first = out.remove(0);
    if let Some(c) = out.first_mut() {
        c.1 = first.1 + &c.1;
    }
    out
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The fault server. Request `i` gets `steps[i]`, or the last step once they run out.
pub struct FaultServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    pub async fn start(steps: Vec<Step>) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let steps = Arc::new(steps);
        let count = Arc::new(AtomicUsize::new(0));
        let recs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let (steps, count, recs) = (steps.clone(), count.clone(), recs.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, &steps, &count, &recs).await;
                });
            }
        });
        FaultServer { url, requests, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback URL where nothing listens.
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

async fn serve(mut sock: TcpStream, steps: &[Step], count: &AtomicUsize, recs: &Mutex<Vec<Recorded>>) -> std::io::Result<()> {
    // Read the head, then Content-Length bytes of body.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    let i = count.fetch_add(1, Ordering::SeqCst);
    recs.lock().unwrap().push(Recorded { path, headers, body, at: Instant::now() });
    let step = steps[i.min(steps.len() - 1)].clone();
    match step {
        Step::Status { status, headers, body } => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (n, v) in headers {
                head += &format!("{n}: {v}\r\n");
            }
            head += "\r\n";
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(body.as_bytes()).await?;
            sock.flush().await?;
        }
        Step::Stream { head_delay, chunks, end } => {
            tokio::time::sleep(head_delay).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            sock.write_all(head.as_bytes()).await?;
            sock.flush().await?;
            for (delay, text) in chunks {
                tokio::time::sleep(delay).await;
                let mut chunk = Vec::new();
                write!(chunk, "{:x}\r\n", text.len()).unwrap();
                chunk.extend_from_slice(text.as_bytes());
                chunk.extend_from_slice(b"\r\n");
                sock.write_all(&chunk).await?;
                sock.flush().await?;
            }
            if end == End::Clean {
                sock.write_all(b"0\r\n\r\n").await?;
                sock.flush().await?;
            }
        }
    }
    // Give the client a moment to read before the socket closes (a cut closes it mid-body).
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

// ---- llama.cpp's server from the assets -----------------------------------------------------

/// A llama.cpp server started by a test, stopped (by its own pid) on drop.
pub struct LlamaServer {
    pub url: String,
    child: std::process::Child,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Starts `scripts/llama_server.py` with SmolLM2 on a free port, or says why it cannot.
pub fn start_llama_server() -> Result<LlamaServer, String> {
    use std::io::BufRead as _;
    let root = workspace_root();
    let python = root.join("assets/venv/bin/python");
    let model = root.join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let script = root.join("scripts/llama_server.py");
    for p in [&python, &model, &script] {
        if !p.exists() {
            return Err(format!("{} is missing; run scripts/fetch-assets.sh", p.display()));
        }
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .args(["--model", model.to_str().unwrap(), "--port", &port.to_string(), "--threads", "1", "--parallel", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(url) => Ok(LlamaServer { url, child }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err("llama.cpp server did not print `listening` within 120 s".into())
        }
    }
}

/// Writes straight to stderr, past the test harness's capture, so a skip is never silent.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}
