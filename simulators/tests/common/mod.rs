//! Test helpers: a raw Modbus client (TCP and RTU over TCP), scenario loading, polling.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hazgate_sim::frame::crc16;
use hazgate_sim::Scenario;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

pub fn load(name: &str) -> Scenario {
    Scenario::load(&scenario_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Poll `cond` every 10 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Normal response PDU (function code first).
    Pdu(Vec<u8>),
    /// Exception code.
    Exception(u8),
}

/// A minimal Modbus TCP client.
pub struct TcpClient {
    pub stream: TcpStream,
    txn: u16,
}

impl TcpClient {
    pub async fn connect(addr: SocketAddr) -> TcpClient {
        TcpClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            txn: 0,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Read one MBAP response; `None` on EOF.
    pub async fn recv(&mut self) -> Option<(u16, u8, Vec<u8>)> {
        let mut head = [0u8; 7];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = u16::from_be_bytes([head[4], head[5]]) as usize;
        let mut pdu = vec![0u8; len - 1];
        self.stream.read_exact(&mut pdu).await.ok()?;
        Some((u16::from_be_bytes([head[0], head[1]]), head[6], pdu))
    }

    pub async fn request(&mut self, unit: u8, pdu: &[u8]) -> Reply {
        self.txn = self.txn.wrapping_add(1);
        let mut f = Vec::new();
        f.extend_from_slice(&self.txn.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
        f.push(unit);
        f.extend_from_slice(pdu);
        self.send_raw(&f).await;
        let (txn, u, resp) = tokio::time::timeout(Duration::from_secs(5), self.recv())
            .await
            .expect("no answer within 5 s")
            .expect("connection closed");
        assert_eq!(txn, self.txn);
        assert_eq!(u, unit);
        to_reply(resp)
    }

    pub async fn read_holding(&mut self, unit: u8, addr: u16, n: u16) -> Result<Vec<u16>, u8> {
        regs(self.request(unit, &read_pdu(3, addr, n)).await)
    }

    pub async fn read_input(&mut self, unit: u8, addr: u16, n: u16) -> Result<Vec<u16>, u8> {
        regs(self.request(unit, &read_pdu(4, addr, n)).await)
    }

    pub async fn read_bits(
        &mut self,
        unit: u8,
        fc: u8,
        addr: u16,
        n: u16,
    ) -> Result<Vec<bool>, u8> {
        match self.request(unit, &read_pdu(fc, addr, n)).await {
            Reply::Pdu(p) => Ok((0..n as usize)
                .map(|i| p[2 + i / 8] & (1 << (i % 8)) != 0)
                .collect()),
            Reply::Exception(c) => Err(c),
        }
    }

    pub async fn write_coil(&mut self, unit: u8, addr: u16, on: bool) -> Reply {
        let v: u16 = if on { 0xFF00 } else { 0 };
        let mut p = vec![5];
        p.extend_from_slice(&addr.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
        self.request(unit, &p).await
    }
}

pub fn to_reply(resp: Vec<u8>) -> Reply {
    if resp[0] & 0x80 != 0 {
        Reply::Exception(resp[1])
    } else {
        Reply::Pdu(resp)
    }
}

pub fn regs(r: Reply) -> Result<Vec<u16>, u8> {
    match r {
        Reply::Pdu(p) => Ok(p[2..]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()),
        Reply::Exception(c) => Err(c),
    }
}

pub fn read_pdu(fc: u8, addr: u16, n: u16) -> Vec<u8> {
    let mut p = vec![fc];
    p.extend_from_slice(&addr.to_be_bytes());
    p.extend_from_slice(&n.to_be_bytes());
    p
}

pub fn rtu_frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = vec![unit];
    f.extend_from_slice(pdu);
    let crc = crc16(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// Send an RTU request and read the response (by expected length); `None` on timeout.
pub async fn rtu_request(
    stream: &mut TcpStream,
    unit: u8,
    pdu: &[u8],
    timeout: Duration,
) -> Option<Vec<u8>> {
    stream.write_all(&rtu_frame(unit, pdu)).await.unwrap();
    tokio::time::timeout(timeout, async {
        let mut head = [0u8; 3];
        stream.read_exact(&mut head).await.ok()?;
        let rest = if head[1] & 0x80 != 0 {
            2
        } else if head[1] <= 4 {
            head[2] as usize + 2
        } else {
            5
        };
        let mut tail = vec![0u8; rest];
        stream.read_exact(&mut tail).await.ok()?;
        let mut all = head.to_vec();
        all.extend_from_slice(&tail);
        let n = all.len();
        assert_eq!(
            crc16(&all[..n - 2]).to_le_bytes(),
            [all[n - 2], all[n - 1]],
            "bad CRC from the farm"
        );
        Some(all)
    })
    .await
    .ok()
    .flatten()
}

/// Locate an executable on PATH (and sbin dirs, where Debian puts mosquitto).
pub fn find_tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: this test needs it (apt-get install {package})")
        })
}
