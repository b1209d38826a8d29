//! Admission: accepts under the global and per-address limits, the
//! unconfirmed-eviction policy, the handshake (§2.2) and confirmation.

use super::conn::{Conn, State};
use super::{CloseReason, ConnId, Server};
use crate::crypto::{KeyPair, Nonce, PublicKey};
use crate::relay_queue::FrameQueue;
use crate::wire::relay::{HandshakePayload, HandshakeRequest, HandshakeResponse, SecureChannel};
use rand_core::CryptoRngCore;
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

/// The address as counted for the per-address limits: IPv4 (also when
/// IPv4-mapped), or the /64 prefix of an IPv6 address (a subscriber gets a
/// whole /64, so counting single IPv6 addresses would limit nothing).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

/// A distinct loopback address per connection id, for tests that stand for
/// many clients (127.x.y.z from the id's low 24 bits).
#[cfg(test)]
pub(crate) fn test_ip(conn: ConnId) -> IpAddr {
    let [_, _, _, _, _, a, b, c] = conn.0.to_be_bytes();
    IpAddr::V4(std::net::Ipv4Addr::new(127, a, b, c))
}

/// Connections from one address.
#[derive(Debug, Default)]
pub(super) struct IpState {
    /// Connections in any state.
    pub(super) conns: usize,
    /// Unconfirmed ones, oldest first: (accept order, id).
    pub(super) unconfirmed: VecDeque<(u64, ConnId)>,
}

impl IpState {
    /// Its key in the eviction order: most unconfirmed last, and among
    /// equals the one whose oldest is oldest last.
    pub(super) fn rank(&self, ip: IpAddr) -> Option<(usize, Reverse<u64>, IpAddr)> {
        let &(seq, _) = self.unconfirmed.front()?;
        Some((self.unconfirmed.len(), Reverse(seq), ip))
    }
}

/// A fresh temporary key pair and its shared key with the client's
/// temporary key; refuses a low-order client key.
pub(super) fn temp_session(
    rng: &mut impl CryptoRngCore,
    theirs: &PublicKey,
) -> Result<(PublicKey, crate::crypto::SharedKey), crate::crypto::CryptoError> {
    let temp = KeyPair::generate(rng);
    let key = temp.try_precompute(theirs)?;
    Ok((temp.public, key))
}

impl<R: CryptoRngCore> Server<R> {
    /// A new TCP connection from `peer` (its IP address) was accepted.
    /// Refused (a close is queued) past `max_clients`, or past the
    /// per-address limits; past `max_unconfirmed` an unconfirmed connection
    /// is evicted by the policy of the module documentation.
    pub fn handle_accept(&mut self, now: Instant, conn: ConnId, peer: IpAddr) {
        self.settle(now);
        self.counters.accepted += 1;
        if self.clients.len() >= self.cfg.max_clients || self.clients.contains_key(&conn) {
            self.counters.closes.bump(CloseReason::TooManyClients);
            self.closes.push_back((conn, CloseReason::TooManyClients));
            return;
        }
        let ip = ip_key(peer);
        if let Some(st) = self.ips.get(&ip) {
            if st.conns >= self.cfg.max_conns_per_ip.max(1)
                || st.unconfirmed.len() >= self.cfg.max_unconfirmed_per_ip.max(1)
            {
                tracing::debug!(?conn, %ip, conns = st.conns, "relay: too many connections from one address");
                self.counters.closes.bump(CloseReason::TooManyFromIp);
                self.closes.push_back((conn, CloseReason::TooManyFromIp));
                return;
            }
        }
        // Bounded: each round closes one unconfirmed connection (or stops).
        for _ in 0..=self.unconfirmed_count {
            if self.unconfirmed_count < self.cfg.max_unconfirmed.max(1) {
                break;
            }
            let victim = self
                .unconfirmed_rank
                .last()
                .and_then(|&(_, _, vip)| self.ips.get(&vip)?.unconfirmed.front())
                .map(|&(_, id)| id);
            let Some(old) = victim else {
                break;
            };
            if !self.close(old, CloseReason::Evicted) {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.clients.insert(
            conn,
            Conn {
                state: State::AwaitHello,
                pk: PublicKey([0; 32]),
                chan: None,
                rx: Vec::new(),
                out: FrameQueue::default(),
                slots: Vec::new(),
                accepted_at: now,
                next_ping: now,
                ping: None,
                woken: false,
                ip,
                seq,
                stalled_since: None,
                restart_pending: false,
                oob_tokens: self.cfg.oob_bytes_per_sec as u64,
                oob_at: now,
                paused: None,
                blocked: Vec::new(),
            },
        );
        let st = self.ips.entry(ip).or_default();
        if let Some(r) = st.rank(ip) {
            self.unconfirmed_rank.remove(&r);
        }
        st.conns += 1;
        st.unconfirmed.push_back((seq, conn));
        if let Some(r) = st.rank(ip) {
            self.unconfirmed_rank.insert(r);
        }
        self.unconfirmed_count += 1;
        self.arm(now + self.cfg.handshake_timeout);
    }

    /// The runtime saw the connection end (EOF, reset, error). Its routes are
    /// torn down at once and its peers notified.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.settle(now);
        if self.remove(conn, CloseReason::PeerClosed) {
            tracing::debug!(?conn, "relay client closed its connection");
        }
    }

    /// §2.2: open the hello, reply, become unconfirmed. False if closed.
    pub(super) fn handshake(&mut self, conn: ConnId, hello: &[u8]) -> bool {
        let Ok(req) = HandshakeRequest::parse(hello) else {
            self.close(conn, CloseReason::BadHandshake);
            return false;
        };
        // A low-order client key is refused as libsodium does.
        let Ok(key) = self.keypair.try_precompute(&req.client_pk) else {
            self.close(conn, CloseReason::BadHandshake);
            return false;
        };
        let Ok(theirs) = req.open(&key) else {
            // A hello for another key or garbage: closed without a reply.
            self.close(conn, CloseReason::BadHandshake);
            return false;
        };
        // So is a low-order temporary key (the session key would be the
        // all-zero X25519 output, known to anyone).
        let Ok(session) = temp_session(&mut self.rng, &theirs.temp_pk) else {
            self.close(conn, CloseReason::BadHandshake);
            return false;
        };
        let (temp_pk, session) = session;
        let ours = HandshakePayload {
            temp_pk,
            base_nonce: Nonce::random(&mut self.rng),
        };
        let reply = HandshakeResponse::seal(&key, Nonce::random(&mut self.rng), &ours);
        let Some(c) = self.clients.get_mut(&conn) else {
            return false;
        };
        c.pk = req.client_pk;
        c.chan = Some(SecureChannel::new(
            session,
            ours.base_nonce,
            theirs.base_nonce,
        ));
        c.state = State::Unconfirmed;
        c.out.push_raw(&reply.to_bytes());
        self.counters.handshakes += 1;
        self.wake(conn);
        true
    }

    /// §2.2: the first frame confirms; an older confirmed link with the same
    /// key is killed first.
    pub(super) fn confirm(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        c.state = State::Confirmed;
        c.next_ping = now + self.cfg.ping_interval;
        let pk = c.pk;
        let (ip, seq) = (c.ip, c.seq);
        tracing::trace!(?conn, client = ?pk, "relay: link confirmed");
        self.forget_unconfirmed(ip, seq, conn);
        if let Some(old) = self.by_key.insert(pk, conn) {
            if old != conn {
                // Restore the mapping after removal of the old link.
                self.close(old, CloseReason::Replaced);
                self.by_key.insert(pk, conn);
            }
        }
        self.arm(now + self.cfg.ping_interval);
    }

    /// Takes an unconfirmed connection out of its address's list.
    pub(super) fn forget_unconfirmed(&mut self, ip: IpAddr, seq: u64, conn: ConnId) {
        let Some(st) = self.ips.get_mut(&ip) else {
            return;
        };
        if let Some(r) = st.rank(ip) {
            self.unconfirmed_rank.remove(&r);
        }
        // At most max_unconfirmed_per_ip entries.
        if let Some(i) = st.unconfirmed.iter().position(|&e| e == (seq, conn)) {
            st.unconfirmed.remove(i);
            self.unconfirmed_count = self.unconfirmed_count.saturating_sub(1);
        }
        if let Some(r) = st.rank(ip) {
            self.unconfirmed_rank.insert(r);
        }
    }
}
