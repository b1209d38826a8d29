//! Start options of a harness process, as its command-line arguments.

use crate::error::{InteropError, Result};

/// Start options of a harness process (its command-line arguments).
#[derive(Debug, Clone, Default)]
pub struct HarnessOptions {
    /// UDP port; 0 (default) picks a free one.
    pub udp_port: u16,
    /// Disable UDP: TCP relays only (`--no-udp`).
    pub no_udp: bool,
    /// Enable IPv6 (default off).
    pub ipv6: bool,
    /// Enable LAN discovery (default off).
    pub local_discovery: bool,
    /// Fixed long-term secret key, so tests know the keys in advance.
    pub secret_key: Option<[u8; 32]>,
    /// Self name.
    pub name: Option<String>,
    /// Echo every received custom lossless packet back to its sender.
    pub echo: bool,
    /// Write libtoxcore's own log to the stderr log file.
    pub toxcore_log: bool,
}

impl HarnessOptions {
    /// Default options: UDP on a free port, IPv4 only, no LAN discovery.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the UDP port (0 = a free one).
    pub fn udp_port(mut self, port: u16) -> Self {
        self.udp_port = port;
        self
    }
    /// Disables UDP (TCP relays only).
    pub fn no_udp(mut self) -> Self {
        self.no_udp = true;
        self
    }
    /// Enables or disables IPv6.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }
    /// Enables or disables LAN discovery.
    pub fn local_discovery(mut self, on: bool) -> Self {
        self.local_discovery = on;
        self
    }
    /// Uses a fixed long-term secret key.
    pub fn secret_key(mut self, sk: [u8; 32]) -> Self {
        self.secret_key = Some(sk);
        self
    }
    /// Sets the self name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Enables echo of custom lossless packets.
    pub fn echo(mut self, on: bool) -> Self {
        self.echo = on;
        self
    }
    /// Enables libtoxcore's log (to [`super::Harness::log_path`]).
    pub fn toxcore_log(mut self, on: bool) -> Self {
        self.toxcore_log = on;
        self
    }

    pub(super) fn args(&self) -> Result<Vec<String>> {
        let mut a = vec!["--udp-port".to_owned(), self.udp_port.to_string()];
        if self.no_udp {
            a.push("--no-udp".into());
        }
        a.extend(["--ipv6".into(), u8::from(self.ipv6).to_string()]);
        a.extend([
            "--local-discovery".into(),
            u8::from(self.local_discovery).to_string(),
        ]);
        if let Some(sk) = &self.secret_key {
            a.extend(["--secret-key".into(), hex::encode_upper(sk)]);
        }
        if let Some(n) = &self.name {
            if n.is_empty() || n.contains(['\n', '\r', '\0']) {
                return Err(InteropError::InvalidArgument(format!("name {n:?}")));
            }
            a.extend(["--name".into(), n.clone()]);
        }
        if self.echo {
            a.push("--echo".into());
        }
        if self.toxcore_log {
            a.push("--log".into());
        }
        Ok(a)
    }
}
