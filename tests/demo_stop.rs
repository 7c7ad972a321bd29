//! `hazgate demo` as a user runs it (the README's first command): it prints its
//! tokens, its gateway subscribes to the embedded broker and takes the simulated
//! sensors' messages, and SIGTERM (what Ctrl-C or a service manager sends) stops it
//! with exit status 0 and no ERROR in its log: an operator reads an ERROR line as a
//! fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn the_demo_stops_on_sigterm_with_no_error_in_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hazgate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--speed", "4", "--db"])
        .arg(dir.path().join("demo.db"))
        .env_remove("HAZGATE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let outputs: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    let readers: Vec<_> = outputs
        .into_iter()
        .map(|out| {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            })
        })
        .collect();
    let count = |needle: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };

    // Up: the tokens printed and the MQTT-fed sensors' subscriber connected; then a
    // few of their messages (the simulated wireless gateway publishes every second).
    let deadline = Instant::now() + Duration::from_secs(60);
    while count("operator token:") == 0 || count("connected session_present=false") == 0 {
        assert!(
            Instant::now() < deadline,
            "the demo did not come up: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));

    let status = support::stop_with_sigterm(&mut child, Duration::from_secs(15));
    for r in readers {
        r.join().unwrap();
    }
    let lines = lines.lock().unwrap();
    assert!(status.success(), "exit status {status}: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("shutting down")),
        "no stop logged: {lines:?}"
    );
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "ERROR lines at a clean stop: {errors:?}");
}
