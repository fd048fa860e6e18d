//! The binary on a pseudo-terminal: what a person at a terminal sees (colours, the live view redrawn in
//! place, questions asked on a TTY), with what to type.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the terminal showed, and how the command ended.
#[derive(Debug)]
pub struct PtyOutput {
    /// The exit code.
    pub code: Option<i32>,
    /// Everything written to the terminal (stdout and stderr together), escape codes included.
    pub screen: String,
}

/// Runs `cmd` with stdin, stdout and stderr on a new pseudo-terminal 80 columns wide, types `input`,
/// and returns what it printed; panics when it takes longer than `limit`.
pub fn run(mut cmd: Command, input: &[u8], limit: Duration) -> PtyOutput {
    let (mut master, slave) = open();
    let stdin = slave.try_clone().expect("dup");
    let stdout = slave.try_clone().expect("dup");
    let mut child = cmd
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(slave))
        // The width is the terminal's own (80 columns), as a program reads it.
        .env_remove("COLUMNS")
        .spawn()
        .expect("spawn on the pty");
    // The child holds the terminal now; the parent's copies went into the command.
    drop(cmd);
    let mut reader = master.try_clone().expect("dup master");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                // EIO once every copy of the terminal's other end is closed: the child is gone.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    if !input.is_empty() {
        master.write_all(input).expect("type");
    }
    let deadline = Instant::now() + limit;
    let mut screen = Vec::new();
    let code = loop {
        while let Ok(chunk) = rx.try_recv() {
            screen.extend(chunk);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "command on the pty did not finish within {limit:?}; it showed:\n{}",
                String::from_utf8_lossy(&screen)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // What it wrote just before it ended.
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(300)) {
        screen.extend(chunk);
    }
    PtyOutput {
        code,
        screen: String::from_utf8_lossy(&screen).into_owned(),
    }
}

fn open() -> (std::fs::File, OwnedFd) {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new descriptors into `master` and `slave`; nothing else is touched.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    }
}
