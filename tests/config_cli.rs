//! `hazgate check`: output format and exit codes, and environment overrides as the
//! process sees them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn root(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn check(path: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hazgate"));
    command.args(["check", "--config", path]);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn valid_examples_exit_zero_with_a_summary() {
    let path = root("config/coal-mine.toml");
    let (code, stdout, _) = check(&path, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("{path}: ok — 3 devices, 17 points, 3 hazard sources, 2 safety actions")
    );

    let (code, stdout, _) = check(&root("config/chemical-plant.toml"), &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("ok — 3 devices, 13 points, 4 hazard sources"),
        "{stdout}"
    );
}

#[test]
fn invalid_file_exits_two_and_lists_every_error() {
    let path = root("tests/fixtures/config/many-errors.toml");
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, 2);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.last(), Some(&"14 error(s)"));
    assert_eq!(lines.len(), 15);
    assert!(
        lines.contains(&format!(
            "{path}:43:3: points[0].thresholds[1].restore: restore 2 is on the wrong side of trigger 1: a high grade restores at or below its trigger"
        )
        .as_str()),
        "{stderr}"
    );
}

#[test]
fn unreadable_file_exits_two() {
    let (code, _, stderr) = check(&root("tests/fixtures/config/does-not-exist.toml"), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn environment_override_reaches_the_config() {
    // A bad override is reported as coming from the environment, without a file place.
    let path = root("config/coal-mine.toml");
    let (code, _, stderr) = check(&path, &[("HAZGATE__API__LISTEN", "nowhere")]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.lines().next().unwrap(),
        format!(
            "{path}: api.listen: `nowhere` is not a socket address like 127.0.0.1:8080 or [::1]:8080 (value set by environment variable HAZGATE__API__LISTEN)"
        )
    );
    // A good one passes.
    let (code, _, _) = check(&path, &[("HAZGATE__API__LISTEN", "0.0.0.0:9000")]);
    assert_eq!(code, 0);
}
