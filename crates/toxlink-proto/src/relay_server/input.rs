//! Input: bytes into frames, frames into packets, packets to their handlers.

use super::conn::State;
use super::{CloseReason, ConnId, ForwardDrop, Server};
use crate::wire::relay::{
    split_frame, take_handshake, FrameSplit, RelayPacket, HANDSHAKE_REQUEST_SIZE, MAX_FRAME_BOX,
};
use rand_core::CryptoRngCore;
use std::time::Instant;

impl<R: CryptoRngCore> Server<R> {
    /// Bytes read from a connection. Frames are decrypted in place in
    /// `bytes` (hence `&mut`); an incomplete tail is kept.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &mut [u8]) {
        self.settle(now);
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        let mut input = bytes;
        if c.state == State::AwaitHello {
            let (hello, rest) = take_handshake(&mut c.rx, input, HANDSHAKE_REQUEST_SIZE);
            input = rest;
            let Some(hello) = hello else {
                return;
            };
            if !self.handshake(conn, &hello) {
                return;
            }
        }
        // Complete a frame left over from an earlier read.
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if !c.rx.is_empty() {
            let mut rx = std::mem::take(&mut c.rx);
            if rx.len() < 2 {
                let take = (2 - rx.len()).min(input.len());
                rx.extend_from_slice(&input[..take]);
                input = &mut input[take..];
                if rx.len() < 2 {
                    self.put_rx(conn, rx);
                    return;
                }
            }
            let box_len = usize::from(u16::from_be_bytes([rx[0], rx[1]]));
            if box_len > MAX_FRAME_BOX {
                self.close(conn, CloseReason::Oversized);
                return;
            }
            let want = 2 + box_len;
            let take = (want - rx.len()).min(input.len());
            rx.extend_from_slice(&input[..take]);
            input = &mut input[take..];
            if rx.len() < want {
                self.put_rx(conn, rx);
                return;
            }
            if box_len > 0 && !self.frame(now, conn, &mut rx[2..]) {
                return;
            }
            rx.clear();
            self.put_rx(conn, rx);
        }
        loop {
            match split_frame(input) {
                Ok(FrameSplit::Incomplete) => {
                    if !input.is_empty() {
                        if let Some(c) = self.clients.get_mut(&conn) {
                            c.rx.extend_from_slice(input);
                        }
                    }
                    return;
                }
                Ok(FrameSplit::Empty) => input = &mut input[2..],
                Ok(FrameSplit::Frame { box_len }) => {
                    let (frame, rest) = input.split_at_mut(2 + box_len);
                    if !self.frame(now, conn, &mut frame[2..]) {
                        return;
                    }
                    input = rest;
                }
                Err(_) => {
                    self.close(conn, CloseReason::Oversized);
                    return;
                }
            }
        }
    }

    pub(super) fn put_rx(&mut self, conn: ConnId, rx: Vec<u8>) {
        if let Some(c) = self.clients.get_mut(&conn) {
            c.rx = rx;
        }
    }

    /// Opens and handles one frame box. False if the connection was closed.
    pub(super) fn frame(&mut self, now: Instant, conn: ConnId, frame_box: &mut [u8]) -> bool {
        let Some(c) = self.clients.get_mut(&conn) else {
            return false;
        };
        let Some(chan) = c.chan.as_mut() else {
            return false;
        };
        let Ok(plain) = chan.open_in_place(frame_box) else {
            self.close(conn, CloseReason::BadTag);
            return false;
        };
        if c.state == State::Unconfirmed {
            self.confirm(now, conn);
        }
        let Ok(packet) = RelayPacket::parse(plain) else {
            self.close(conn, CloseReason::Malformed);
            return false;
        };
        self.packet(now, conn, packet)
    }

    pub(super) fn packet(&mut self, now: Instant, conn: ConnId, packet: RelayPacket<'_>) -> bool {
        match packet {
            RelayPacket::Data {
                connection_id,
                data,
            } => return self.forward(now, conn, connection_id, data),
            RelayPacket::RoutingRequest { peer } => self.routing_request(conn, peer),
            RelayPacket::ConnectNotification { .. } => {}
            RelayPacket::DisconnectNotification { connection_id } => {
                return self.disconnect_notification(conn, connection_id)
            }
            RelayPacket::Ping { ping_id } => {
                self.counters.pongs_sent += 1;
                self.send_prio(conn, &RelayPacket::Pong { ping_id });
            }
            RelayPacket::Pong { ping_id } => {
                if ping_id == [0; 8] {
                    self.close(conn, CloseReason::ProtocolViolation);
                    return false;
                }
                let mut answered = None;
                if let Some(c) = self.clients.get_mut(&conn) {
                    if c.ping.is_some_and(|(id, _)| id == ping_id) {
                        c.ping = None;
                        answered = Some(c.next_ping);
                    }
                }
                if let Some(next_ping) = answered {
                    self.counters.pongs_received += 1;
                    // The timer was armed for the PONG deadline; the next
                    // PING may be due earlier (ping_interval < ping_timeout).
                    self.arm(next_ping);
                }
            }
            RelayPacket::OobSend { destination, data } => self.oob(now, conn, destination, data),
            RelayPacket::OnionRequest { .. } => self.counters.drop(ForwardDrop::OnionIgnored),
            RelayPacket::ForwardRequest { .. } => self.counters.drop(ForwardDrop::ForwardIgnored),
            RelayPacket::RoutingResponse { .. }
            | RelayPacket::OobRecv { .. }
            | RelayPacket::OnionResponse { .. }
            | RelayPacket::Forwarding { .. } => {
                self.close(conn, CloseReason::ProtocolViolation);
                return false;
            }
        }
        self.clients.contains_key(&conn)
    }
}
