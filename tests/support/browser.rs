//! Headless Chromium, driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ending in a NUL byte, written to
//! its descriptor 3 and read from its 4), so no WebSocket client is needed.
//! One page, whose script a test evaluates until what it waits for shows.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use serde_json::{json, Value};

use super::probe::WAIT;

pub struct Browser {
    child: Child,
    to_browser: File,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Events that came while a call waited for its answer.
    events: std::collections::VecDeque<Value>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts Chromium on `url`; `None` (the test skipped, loudly) without
    /// Chromium, which in CI is a failure.
    pub fn open(url: &str) -> Option<Browser> {
        let bin = super::require_tool("chromium", &["/usr/bin/chromium", "/usr/bin/chromium-browser"])?;
        let profile = tempfile::tempdir().unwrap();
        let (commands_read, commands_write) = pipe();
        let (answers_read, answers_write) = pipe();
        let (theirs_in, theirs_out) = (commands_read.into_raw_fd(), answers_write.into_raw_fd());
        let mut command = Command::new(bin);
        // As root in a container, with this machine's closed network: no
        // sandbox, and none of Chromium's own connections.
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
                "--disable-dev-shm-usage",
                "--window-size=1100,900",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_in, 3) < 0 || libc::dup2(theirs_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        // Our copies of the browser's ends go, so that its exit ends our reads.
        unsafe {
            drop(OwnedFd::from_raw_fd(theirs_in));
            drop(OwnedFd::from_raw_fd(theirs_out));
        }
        let (tx, messages) = mpsc::channel();
        let mut from_browser = BufReader::new(File::from(answers_read));
        std::thread::spawn(move || loop {
            let mut message = Vec::new();
            match from_browser.read_until(0, &mut message) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    message.pop();
                    let Ok(value) = serde_json::from_slice::<Value>(&message) else { continue };
                    if tx.send(value).is_err() {
                        return;
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            to_browser: File::from(commands_write),
            messages,
            next_id: 0,
            session: String::new(),
            events: Default::default(),
            _profile: profile,
        };
        // A blank page first, then the address once we listen to the page's
        // events: the test's first look is at the loaded page, never at one
        // still navigating.
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser.call("Target.attachToTarget", json!({ "targetId": target, "flatten": true }));
        browser.session = attached["sessionId"].as_str().expect("a session id").to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Page.navigate", json!({ "url": url }));
        browser.wait_event("Page.loadEventFired");
        Some(browser)
    }

    /// One DevTools call (on the page, once attached); its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).expect("writing to Chromium");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer =
                self.messages.recv_timeout(left).unwrap_or_else(|_| panic!("Chromium did not answer {method}"));
            if answer["id"].as_u64() == Some(id) {
                if let Some(error) = answer.get("error") {
                    panic!("{method}: {error}");
                }
                return answer["result"].clone();
            }
            if answer.get("method").is_some() {
                self.events.push_back(answer);
            }
        }
    }

    /// Waits for the page's event `method`.
    fn wait_event(&mut self, method: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let event = match self.events.pop_front() {
                Some(e) => e,
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.messages.recv_timeout(left).unwrap_or_else(|_| panic!("Chromium never sent {method}"))
                }
            };
            if event["method"] == method {
                return event;
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting it, if a promise); its value (JSON).
    pub fn eval(&mut self, expression: &str) -> Value {
        let params = json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let result = self.call("Runtime.evaluate", params);
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` (a promise is awaited) until `done` accepts its
    /// value, again each time the page's document changes; the value. Fails after `WAIT`, naming `what` and
    /// the last value.
    pub fn wait_until(&mut self, what: &str, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.eval(expression);
            if done(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}; {expression} is {value}");
            // Ask again once the page has changed.
            self.eval(
                "new Promise(r => new MutationObserver((_, o) => { o.disconnect(); r(0); })
                   .observe(document, { subtree: true, childList: true, attributes: true, characterData: true }))",
            );
        }
    }

    /// A PNG of the page as it is now, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        bits = bits << 6 | u32::from(value(c));
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}
