//! Input of a relay link: the handshake reply, frames, and the packets
//! they carry (§2.2, §2.5).

use super::{Client, ClientEvent, LinkDownReason, LinkState, RouteState};
use crate::crypto::PublicKey;
use crate::wire::relay::{
    split_frame, take_handshake, FrameSplit, HandshakeResponse, RelayPacket, SecureChannel,
    HANDSHAKE_RESPONSE_SIZE, MAX_FRAME_BOX, NUM_RESERVED_PORTS,
};
use std::time::Instant;

impl Client {
    /// Bytes received from the relay (decrypted in place).
    pub fn handle_bytes(&mut self, now: Instant, bytes: &mut [u8]) {
        let mut input = bytes;
        if !input.is_empty() {
            self.last_rx = now;
            // Anything from the relay proves the link carries bytes to us.
            self.verify = None;
        }
        if self.state == LinkState::Handshaking {
            let (reply, rest) = take_handshake(&mut self.rx, input, HANDSHAKE_RESPONSE_SIZE);
            input = rest;
            let Some(reply) = reply else {
                return;
            };
            if !self.finish_handshake(now, &reply) {
                return;
            }
        }
        if self.state != LinkState::Connected {
            return;
        }
        let mut rx = std::mem::take(&mut self.rx);
        if !rx.is_empty() {
            if rx.len() < 2 {
                let take = (2 - rx.len()).min(input.len());
                rx.extend_from_slice(&input[..take]);
                input = &mut input[take..];
                if rx.len() < 2 {
                    self.rx = rx;
                    return;
                }
            }
            let box_len = usize::from(u16::from_be_bytes([rx[0], rx[1]]));
            if box_len > MAX_FRAME_BOX {
                self.die(LinkDownReason::Oversized);
                return;
            }
            let want = 2 + box_len;
            let take = (want - rx.len()).min(input.len());
            rx.extend_from_slice(&input[..take]);
            input = &mut input[take..];
            if rx.len() < want {
                self.rx = rx;
                return;
            }
            if box_len > 0 && !self.frame(now, &mut rx[2..]) {
                return;
            }
            rx.clear();
        }
        loop {
            match split_frame(input) {
                Ok(FrameSplit::Incomplete) => {
                    rx.extend_from_slice(input);
                    self.rx = rx;
                    return;
                }
                Ok(FrameSplit::Empty) => input = &mut input[2..],
                Ok(FrameSplit::Frame { box_len }) => {
                    let (frame, rest) = input.split_at_mut(2 + box_len);
                    if !self.frame(now, &mut frame[2..]) {
                        return;
                    }
                    input = rest;
                }
                Err(_) => {
                    self.die(LinkDownReason::Oversized);
                    return;
                }
            }
        }
    }

    fn finish_handshake(&mut self, now: Instant, reply: &[u8]) -> bool {
        let opened = HandshakeResponse::parse(reply)
            .and_then(|r| r.open(&self.keypair.precompute(&self.relay_pk)));
        let (Ok(theirs), Some(temp)) = (opened, self.temp.take()) else {
            self.die(LinkDownReason::HandshakeFailed);
            return false;
        };
        // A low-order temporary key from the relay is refused (the session
        // key would be the all-zero X25519 output, known to anyone).
        let Ok(session) = temp.try_precompute(&theirs.temp_pk) else {
            self.die(LinkDownReason::HandshakeFailed);
            return false;
        };
        self.chan = Some(SecureChannel::new(
            session,
            self.base_nonce,
            theirs.base_nonce,
        ));
        self.state = LinkState::Connected;
        self.events.push_back(ClientEvent::Connected);
        // §2.2: the first PING confirms us on the server.
        self.send_ping(now);
        let peers: Vec<PublicKey> = self.peers.keys().copied().collect();
        for peer in peers {
            self.send_prio(&RelayPacket::RoutingRequest { peer });
        }
        true
    }

    /// One frame box. False if the link died.
    fn frame(&mut self, now: Instant, frame_box: &mut [u8]) -> bool {
        let Some(chan) = self.chan.as_mut() else {
            return false;
        };
        let Ok(plain) = chan.open_in_place(frame_box) else {
            self.die(LinkDownReason::BadTag);
            return false;
        };
        let Ok(packet) = RelayPacket::parse(plain) else {
            self.die(LinkDownReason::ProtocolViolation);
            return false;
        };
        match packet {
            RelayPacket::Data {
                connection_id,
                data,
            } => {
                let peer = self.slot_mut(connection_id).and_then(|s| *s);
                match peer {
                    Some(peer) => {
                        self.counters.data_received += 1;
                        self.counters.data_bytes_received += data.len() as u64;
                        self.events.push_back(ClientEvent::Data {
                            peer,
                            data: data.to_vec(),
                        });
                    }
                    None => self.counters.ignored += 1,
                }
            }
            RelayPacket::RoutingResponse {
                connection_id,
                peer,
            } => self.routing_response(connection_id, peer),
            RelayPacket::ConnectNotification { connection_id } => {
                if connection_id < NUM_RESERVED_PORTS {
                    self.die(LinkDownReason::ProtocolViolation);
                    return false;
                }
                if let Some(peer) = self.slot_mut(connection_id).and_then(|s| *s) {
                    if let Some(st) = self.peers.get_mut(&peer) {
                        if matches!(st, RouteState::Registered { .. }) {
                            *st = RouteState::Online {
                                slot: connection_id,
                            };
                            self.events.push_back(ClientEvent::PeerOnline { peer });
                        }
                    }
                }
            }
            RelayPacket::DisconnectNotification { connection_id } => {
                if connection_id < NUM_RESERVED_PORTS {
                    self.die(LinkDownReason::ProtocolViolation);
                    return false;
                }
                if let Some(peer) = self.slot_mut(connection_id).and_then(|s| *s) {
                    if let Some(st) = self.peers.get_mut(&peer) {
                        if matches!(st, RouteState::Online { .. }) {
                            *st = RouteState::Registered {
                                slot: connection_id,
                            };
                            self.events.push_back(ClientEvent::PeerOffline { peer });
                        }
                    }
                }
            }
            RelayPacket::Ping { ping_id } => self.send_prio(&RelayPacket::Pong { ping_id }),
            RelayPacket::Pong { ping_id } => {
                if ping_id == [0; 8] {
                    self.die(LinkDownReason::ProtocolViolation);
                    return false;
                }
                if let Some((id, sent)) = self.ping {
                    if id == ping_id {
                        self.ping = None;
                        self.counters.pongs += 1;
                        let rtt = now.saturating_duration_since(sent);
                        self.last_rtt = Some(rtt);
                        self.srtt = Some(match self.srtt {
                            None => rtt,
                            Some(s) => (s * 7 + rtt) / 8,
                        });
                        self.events.push_back(ClientEvent::Rtt { rtt });
                    }
                }
            }
            RelayPacket::OobRecv { sender, data } => {
                self.counters.oob_received += 1;
                self.events.push_back(ClientEvent::Oob {
                    from: sender,
                    data: data.to_vec(),
                });
            }
            RelayPacket::OnionResponse { .. } | RelayPacket::Forwarding { .. } => {
                self.counters.ignored += 1;
            }
            RelayPacket::RoutingRequest { .. }
            | RelayPacket::OobSend { .. }
            | RelayPacket::OnionRequest { .. }
            | RelayPacket::ForwardRequest { .. } => {
                self.die(LinkDownReason::ProtocolViolation);
                return false;
            }
        }
        // A reply (PONG, a slot given back) that did not fit: the relay asks
        // without reading.
        if self.overflow {
            self.die(LinkDownReason::NotReading);
            return false;
        }
        true
    }

    /// §2.6 ROUTING_RESPONSE: 0 refused; a slot in use is ignored; else
    /// REGISTERED.
    fn routing_response(&mut self, connection_id: u8, peer: PublicKey) {
        if connection_id == 0 {
            if self.peers.contains_key(&peer) {
                self.events.push_back(ClientEvent::RouteRefused { peer });
            }
            return;
        }
        let Some(slot) = self.slot_mut(connection_id) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        match self.peers.get(&peer) {
            Some(RouteState::Requested) => {}
            Some(_) => return,
            None => {
                // Not asked for (or unrouted meanwhile): give it back.
                self.send_prio(&RelayPacket::DisconnectNotification { connection_id });
                return;
            }
        }
        if let Some(s) = self.slot_mut(connection_id) {
            *s = Some(peer);
        }
        self.peers.insert(
            peer,
            RouteState::Registered {
                slot: connection_id,
            },
        );
        self.events.push_back(ClientEvent::RouteResponse {
            peer,
            slot: connection_id,
        });
    }
}
