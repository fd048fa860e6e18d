//! Headless Chromium, driven over its DevTools protocol on a pipe (`--remote-debugging-pipe`: commands
//! go in on the browser's fd 3, answers and events come out of its fd 4, each message ended by a NUL):
//! no WebSocket, no port, nothing on the network. Used by the report's browser test and the report
//! benchmark.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The Chromium to use: `AITBC_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
/// `google-chrome` on the PATH.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AITBC_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next: u64,
    session: String,
    /// Every event received so far (console messages, exceptions, requests, …).
    pub events: Vec<Value>,
    _profile: tempfile::TempDir,
}

/// A pipe whose two ends are above fd 10 and closed on exec, so that the child's `dup2` onto 3 and 4
/// always makes new, inheritable descriptors.
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [-1; 2];
    // SAFETY: pipe writes two new descriptors; fcntl duplicates them and the originals are closed.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe");
        let r = libc::fcntl(fds[0], libc::F_DUPFD_CLOEXEC, 10);
        let w = libc::fcntl(fds[1], libc::F_DUPFD_CLOEXEC, 10);
        libc::close(fds[0]);
        libc::close(fds[1]);
        assert!(r >= 10 && w >= 10, "fcntl");
        (r, w)
    }
}

impl Browser {
    /// Starts `exe` headless with a new empty profile and attaches to a new page of `width`×`height`.
    pub fn start(exe: &Path, width: u32, height: u32) -> Result<Browser, String> {
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (cmd_r, cmd_w) = pipe();
        let (out_r, out_w) = pipe();
        let mut command = Command::new(exe);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only dup2 between fork and exec, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cmd_r, 3) < 0 || libc::dup2(out_w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // SAFETY: the child has its copies; the parent closes the ends it does not use.
        unsafe {
            libc::close(cmd_r);
            libc::close(out_w);
        }
        let child = spawned.map_err(|e| {
            // SAFETY: closing the parent's own ends after a failed spawn.
            unsafe {
                libc::close(cmd_w);
                libc::close(out_r);
            }
            format!("cannot start {}: {e}", exe.display())
        })?;
        // SAFETY: the descriptors are the parent's own, owned by the files from now on.
        let to = unsafe { std::fs::File::from_raw_fd(cmd_w) };
        let from = unsafe { std::fs::File::from_raw_fd(out_r) };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        msg.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&msg)
                            && tx.send(v).is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from: rx,
            next: 0,
            session: String::new(),
            events: Vec::new(),
            _profile: profile,
        };
        let target = b.browser_call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = b.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        b.session = attached["sessionId"]
            .as_str()
            .ok_or("no session")?
            .to_string();
        for m in [
            "Runtime.enable",
            "Page.enable",
            "Log.enable",
            "Network.enable",
        ] {
            b.call(m, json!({}))?;
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(b)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Result<u64, String> {
        self.next += 1;
        let mut msg = json!({"id": self.next, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .map_err(|e| format!("the browser went away: {e}"))?;
        Ok(self.next)
    }

    fn answer(&mut self, id: u64, method: &str) -> Result<Value, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    if let Some(e) = v.get("error") {
                        return Err(format!("{method}: {e}"));
                    }
                    return Ok(v["result"].clone());
                }
                Ok(v) => self.events.push(v),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no answer in 60 s"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: the browser went away"));
                }
            }
        }
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.send(method, params, None)?;
        self.answer(id, method)
    }

    /// Calls a method on the page.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        let id = self.send(method, params, Some(&session))?;
        self.answer(id, method)
    }

    /// Waits for an event of the page (or one already received).
    pub fn wait_event(&mut self, method: &str, limit: Duration) -> Result<Value, String> {
        if let Some(e) = self.events.iter().find(|e| e["method"] == method) {
            return Ok(e.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) => {
                    let hit = v["method"] == method;
                    self.events.push(v.clone());
                    if hit {
                        return Ok(v);
                    }
                }
                Err(_) => return Err(format!("no {method} within {limit:?}")),
            }
        }
    }

    /// Opens `url` and waits for its load event.
    pub fn open(&mut self, url: &str) -> Result<(), String> {
        self.events.retain(|e| e["method"] != "Page.loadEventFired");
        self.call("Page.navigate", json!({"url": url}))?;
        self.wait_event("Page.loadEventFired", Duration::from_secs(60))?;
        Ok(())
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// A PNG screenshot of the page as base64.
    pub fn screenshot(&mut self) -> Result<String, String> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        r["data"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "no screenshot".to_string())
    }

    /// The JavaScript errors so far: uncaught exceptions, `console.error`, and errors the browser
    /// logged (a resource that failed to load, a blocked request).
    pub fn js_errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(e["params"]["exceptionDetails"].to_string()),
                "Runtime.consoleAPICalled"
                    if matches!(e["params"]["type"].as_str(), Some("error" | "assert")) =>
                {
                    Some(e["params"]["args"].to_string())
                }
                "Log.entryAdded" if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// The URLs the page asked for.
    pub fn requests(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.send("Browser.close", json!({}), None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
