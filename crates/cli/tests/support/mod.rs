//! Shared by the CLI's integration tests: a real `ulm serve` on a free loopback port.
//!
//! ```ignore
//! mod support;
//! let server = support::Served::start(&["--model", golden, "--ctx", "256"], None);
//! let reply = post(server.addr(), "/v1/completions", ...);
//! ```

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// `ulm serve --port 0 ARGS`, started and ready (its first stdout line holds the URL); stopped
/// with SIGKILL when dropped unless the test has already stopped it.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
}

impl Served {
    /// Starts the server with `args` after `serve --port 0`; `api_key` becomes `ULM_API_KEY`
    /// (removed from the environment when None). The server's stderr is shown with the test's.
    pub fn start(args: &[&str], api_key: Option<&str>) -> Served {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ulm"));
        cmd.args(["serve", "--port", "0"]).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        match api_key {
            Some(k) => cmd.env("ULM_API_KEY", k),
            None => cmd.env_remove("ULM_API_KEY"),
        };
        let mut child = cmd.spawn().expect("start ulm serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("URL line").trim_end_matches('/').to_string();
        Served { child, url }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
