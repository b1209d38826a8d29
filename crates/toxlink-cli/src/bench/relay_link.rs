//! A raw relay link for the load: a sans-IO relay client on a TCP socket
//! from a chosen loopback source address.

use rand_core::OsRng;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use toxlink_proto::crypto::KeyPair;
use toxlink_proto::relay_client::{Client, ClientConfig, ClientEvent, LinkState};

use super::target::Target;

/// A raw relay link: sans-IO client on a socket.
pub(super) struct Link {
    pub(super) c: Client,
    pub(super) s: TcpStream,
    pub(super) buf: Vec<u8>,
}

/// The `i`-th loopback source address of a group (`127.group.x.y`, never
/// ending in 0): distinct clients look like distinct hosts to the relay.
pub(super) fn loopback_src(group: u8, i: usize) -> IpAddr {
    let i = i % (250 * 250);
    IpAddr::from([127, group, (i / 250) as u8, (i % 250) as u8 + 1])
}

/// A TCP connection to `to` from `src` (a loopback address; binding a
/// client socket to any 127.x.y.z works on Linux). A small receive buffer
/// keeps the kernel from soaking up much for a client that never reads.
pub(super) async fn connect_from(
    to: SocketAddr,
    src: IpAddr,
    small_rcvbuf: bool,
) -> Result<TcpStream, String> {
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if small_rcvbuf {
        sock.set_recv_buffer_size(4096).map_err(|e| e.to_string())?;
    }
    sock.bind(SocketAddr::new(src, 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let s = tokio::time::timeout(Duration::from_secs(10), sock.connect(to))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

impl Link {
    pub(super) async fn connect(t: &Target, kp: KeyPair) -> Result<Link, String> {
        Self::connect_from(t, kp, IpAddr::from([127, 0, 0, 1])).await
    }

    pub(super) async fn connect_from(t: &Target, kp: KeyPair, src: IpAddr) -> Result<Link, String> {
        let s = connect_from(t.addr, src, false).await?;
        let c = Client::new(
            Instant::now(),
            kp,
            t.pk,
            &mut OsRng,
            ClientConfig::default(),
        );
        let mut l = Link {
            c,
            s,
            buf: vec![0u8; 1 << 16],
        };
        l.pump_until(|c| c.state() == LinkState::Connected).await?;
        // Flush the confirming PING.
        l.flush().await?;
        Ok(l)
    }

    pub(super) async fn flush(&mut self) -> Result<(), String> {
        let mut out = Vec::new();
        self.c.drain_into(&mut out, usize::MAX);
        self.s.write_all(&out).await.map_err(|e| e.to_string())
    }

    pub(super) async fn pump_until(
        &mut self,
        mut done: impl FnMut(&mut Client) -> bool,
    ) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                self.flush().await?;
                if done(&mut self.c) {
                    return Ok(());
                }
                if let LinkState::Disconnected(r) = self.c.state() {
                    return Err(format!("link died: {r:?}"));
                }
                let n = self
                    .s
                    .read(&mut self.buf)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("relay closed the link".into());
                }
                self.c.handle_bytes(Instant::now(), &mut self.buf[..n]);
            }
        })
        .await
        .map_err(|_| "timed out".to_string())?
    }
}

pub(super) fn online(c: &mut Client) -> bool {
    std::iter::from_fn(|| c.poll_event()).any(|e| matches!(e, ClientEvent::PeerOnline { .. }))
}
