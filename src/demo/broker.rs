//! The demo's embedded MQTT broker (rumqttd) on a loopback port, for the sensors the
//! demo feeds over MQTT.
//!
//! rumqttd runs its router and listener on threads of its own and has no shutdown:
//! the broker lives until the process ends, which for `hazgate demo` is when the demo
//! ends. It cannot report the port it bound, so a free loopback port is picked first
//! (bound and released) and the broker is told to listen on it; [`start`] returns once
//! the port accepts connections.

use super::DemoError;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Start a broker on a free 127.0.0.1 port; returns its address.
pub fn start() -> Result<SocketAddr, DemoError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| DemoError::Io { what, source }
    };
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("picking a port for the embedded MQTT broker"))?;
    let text = format!(
        r#"
id = 0

[router]
max_connections = 64
max_outgoing_packet_count = 200
max_segment_size = 1048576
max_segment_count = 10

[v4.1]
name = "hazgate-demo"
listen = "{addr}"
next_connection_delay_ms = 1
  [v4.1.connections]
  connection_timeout_ms = 60000
  max_payload_size = 20480
  max_inflight_count = 100
  dynamic_filters = true
"#
    );
    let config: rumqttd::Config =
        toml::from_str(&text).map_err(|e| DemoError::Broker(e.to_string()))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(io("starting the embedded MQTT broker"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(addr) {
        if Instant::now() > deadline {
            return Err(DemoError::Broker(format!(
                "the embedded MQTT broker does not answer on {addr}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(addr)
}

/// Whether a broker on `addr` accepts an MQTT 3.1.1 session: CONNECT and a CONNACK
/// that accepts it (a bare TCP probe would be logged as a broken connect).
fn answers(addr: SocketAddr) -> bool {
    const CONNECT: [u8; 19] = [
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 5, b'p', b'r', b'o', b'b', b'e',
    ];
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut connack = [0u8; 4];
    s.write_all(&CONNECT).is_ok()
        && s.read_exact(&mut connack).is_ok()
        && connack == [0x20, 2, 0, 0]
}
