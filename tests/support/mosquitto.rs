//! A Mosquitto broker started by a test on a free loopback port, with its config,
//! persistence and log in a temp dir; and `mosquitto_pub` as an independent
//! publisher. Needs the Debian packages `mosquitto` and `mosquitto-clients`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Poll `cond` every 5 ms until it holds; panic with `what` after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` not found: install the Debian package `{package}`");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A running (or stopped) broker.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Anonymous broker, persistence on.
    pub async fn start() -> Mosquitto {
        Mosquitto::start_with(|_| "allow_anonymous true\n".into()).await
    }

    /// `extra` gets the temp dir and returns more config lines (after the listener).
    pub async fn start_with(extra: impl FnOnce(&Path) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let more = extra(dir.path());
        // The broker runs as the test's user, so it can use the temp dir.
        let conf = format!(
            "user {}\nlistener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\nlog_type all\n{more}",
            whoami(),
            dir.path().display(),
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Mosquitto {
            port,
            dir,
            child: None,
        };
        m.run().await;
        m
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Start (or restart after `stop`) the broker on the same port and data.
    pub async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new(tool("mosquitto", "mosquitto"))
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited with {status}: {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto not listening: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop with SIGTERM (the broker saves its persistence file) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same config and persistence.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// `mosquitto_pub` aimed at this broker.
    pub fn pub_cmd(&self) -> Command {
        let mut c = Command::new(tool("mosquitto_pub", "mosquitto-clients"));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        c
    }

    /// Publish one payload (any bytes) with `mosquitto_pub -f`.
    pub fn publish(&self, topic: &str, payload: &[u8], qos: u8) {
        self.publish_with(topic, payload, qos, &[]);
    }

    pub fn publish_with(&self, topic: &str, payload: &[u8], qos: u8, extra: &[&str]) {
        let file = tempfile::NamedTempFile::new_in(self.dir()).unwrap();
        std::fs::write(file.path(), payload).unwrap();
        let out = self
            .pub_cmd()
            .args(extra)
            .args(["-q", &qos.to_string(), "-t", topic, "-f"])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publish each line as one message with `mosquitto_pub -l`.
    pub fn publish_lines(&self, topic: &str, lines: &[String], qos: u8) {
        let mut child = self
            .pub_cmd()
            .args(["-q", &qos.to_string(), "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut stdin = child.stdin.take().unwrap();
            for l in lines {
                writeln!(stdin, "{l}").unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_pub -l: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, made with the openssl CLI in `dir`: `ca.crt`, `server.{crt,key}`,
/// `client.{crt,key}`.
pub fn make_certs(dir: &Path) {
    let openssl = tool("openssl", "openssl");
    let p = |f: &str| dir.join(f);
    run(Command::new(&openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=hazgate test CA", "-keyout"])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    for (name, cn, ext) in [
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "hazgate-gateway", "extendedKeyUsage=clientAuth\n"),
    ] {
        run(Command::new(&openssl)
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj"])
            .arg(format!("/CN={cn}"))
            .arg("-keyout")
            .arg(p(&format!("{name}.key")))
            .arg("-out")
            .arg(p(&format!("{name}.csr"))));
        std::fs::write(p(&format!("{name}.ext")), ext).unwrap();
        run(Command::new(&openssl)
            .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
            .arg(p(&format!("{name}.csr")))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p(&format!("{name}.crt")))
            .arg("-extfile")
            .arg(p(&format!("{name}.ext"))));
    }
}
