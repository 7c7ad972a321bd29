//! Options of the InfluxDB sink. The `[sinks.influxdb]` config section maps onto
//! [`InfluxOptions`].

use std::path::PathBuf;

/// Which write API the server speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum InfluxApi {
    /// InfluxDB 2.x / 3.x (and VictoriaMetrics): `POST /api/v2/write?org=&bucket=&precision=ms`
    /// with `Authorization: Token <token>`.
    V2 {
        org: String,
        bucket: String,
        /// API token; empty sends no `Authorization` header.
        token: String,
    },
    /// InfluxDB 1.x: `POST /write?db=&rp=&precision=ms` with `u`/`p` credentials.
    V1 {
        database: String,
        /// Retention policy; `None` uses the database default.
        retention_policy: Option<String>,
        username: Option<String>,
        password: Option<String>,
    },
}

/// How the InfluxDB sink ships readings.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxOptions {
    /// The sink's name: its cursor and quarantine rows in the store are kept under it.
    pub name: String,
    /// The store file to read from (the same as `StoreOptions::path`).
    pub store_path: PathBuf,
    /// Base URL of the server, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    pub api: InfluxApi,
    /// Measurement every reading is written to.
    pub measurement: String,
    /// Compress request bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Most lines per request.
    pub batch_max_lines: usize,
    /// Send a partial batch once the oldest unsent row waited this long (ms).
    pub flush_interval_ms: u64,
    /// How often to look for new rows in the store when idle (ms).
    pub poll_interval_ms: u64,
    /// Timeout of one HTTP request (ms).
    pub request_timeout_ms: u64,
    /// First retry delay (ms); doubles per failed attempt, with ±50 % jitter.
    pub retry_initial_ms: u64,
    /// Longest retry delay (ms), also the cap for a server's `Retry-After`.
    pub retry_max_ms: u64,
    /// How often progress (backlog, rate, time left) is logged while catching up (s).
    pub progress_log_interval_s: u64,
}

impl Default for InfluxOptions {
    fn default() -> InfluxOptions {
        InfluxOptions {
            name: "influxdb".into(),
            store_path: PathBuf::from("hazgate.db"),
            url: "http://127.0.0.1:8086".into(),
            api: InfluxApi::V2 {
                org: "hazgate".into(),
                bucket: "hazgate".into(),
                token: String::new(),
            },
            measurement: "reading".into(),
            gzip: true,
            batch_max_lines: 5_000,
            flush_interval_ms: 1_000,
            poll_interval_ms: 200,
            request_timeout_ms: 10_000,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
            progress_log_interval_s: 10,
        }
    }
}
