//! Routes (§2.5): ROUTING_REQUEST pairing and DISCONNECT_NOTIFICATION.

use super::conn::Slot;
use super::{CloseReason, ConnId, Server};
use crate::crypto::PublicKey;
use crate::wire::relay::{RelayPacket, NUM_CLIENT_CONNECTIONS, NUM_RESERVED_PORTS};
use rand_core::CryptoRngCore;

impl<R: CryptoRngCore> Server<R> {
    /// §2.5 ROUTING_REQUEST.
    pub(super) fn routing_request(&mut self, conn: ConnId, peer: PublicKey) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        let own = c.pk;
        tracing::trace!(?conn, client = ?own, ?peer, "relay: routing request");
        let refuse = RelayPacket::RoutingResponse {
            connection_id: 0,
            peer,
        };
        if peer == own {
            self.send_prio(conn, &refuse);
            return;
        }
        if let Some(i) = c.slot_by_peer(&peer) {
            let connection_id = NUM_RESERVED_PORTS + c.slots[i].index;
            self.send_prio(
                conn,
                &RelayPacket::RoutingResponse {
                    connection_id,
                    peer,
                },
            );
            return;
        }
        // Lowest free index: slots are sorted, so the first gap.
        let mut index = 0u8;
        for s in &c.slots {
            if s.index != index {
                break;
            }
            index += 1;
        }
        if usize::from(index) >= NUM_CLIENT_CONNECTIONS {
            self.send_prio(conn, &refuse);
            return;
        }
        let pos = c.slot_pos(index).unwrap_or_else(|p| p);
        c.slots.insert(
            pos,
            Slot {
                index,
                peer,
                link: None,
            },
        );
        self.send_prio(
            conn,
            &RelayPacket::RoutingResponse {
                connection_id: NUM_RESERVED_PORTS + index,
                peer,
            },
        );
        // Pair if the peer is here and has asked for us.
        let Some(&other) = self.by_key.get(&peer) else {
            return;
        };
        let Some(o) = self.clients.get_mut(&other) else {
            return;
        };
        let Some(j) = o.slot_by_peer(&own) else {
            return;
        };
        if o.slots[j].link.is_some() {
            return;
        }
        let other_index = o.slots[j].index;
        o.slots[j].link = Some((conn, index));
        if let Some(c) = self.clients.get_mut(&conn) {
            if let Ok(p) = c.slot_pos(index) {
                c.slots[p].link = Some((other, other_index));
            }
        }
        self.counters.routes += 1;
        self.send_prio(
            conn,
            &RelayPacket::ConnectNotification {
                connection_id: NUM_RESERVED_PORTS + index,
            },
        );
        self.send_prio(
            other,
            &RelayPacket::ConnectNotification {
                connection_id: NUM_RESERVED_PORTS + other_index,
            },
        );
    }

    /// §2.5 DISCONNECT_NOTIFICATION from a client. False if closed.
    pub(super) fn disconnect_notification(&mut self, conn: ConnId, connection_id: u8) -> bool {
        let pos = connection_id
            .checked_sub(NUM_RESERVED_PORTS)
            .and_then(|index| self.clients.get(&conn)?.slot_pos(index).ok());
        let Some(pos) = pos else {
            self.close(conn, CloseReason::ProtocolViolation);
            return false;
        };
        let Some(c) = self.clients.get_mut(&conn) else {
            return false;
        };
        let slot = c.slots.remove(pos);
        if let Some((other, j)) = slot.link {
            self.unlink(other, j);
        }
        true
    }

    /// The other end of a connected slot lost its partner: back to
    /// "requested" and told so.
    pub(super) fn unlink(&mut self, other: ConnId, index: u8) {
        let Some(o) = self.clients.get_mut(&other) else {
            return;
        };
        if let Ok(p) = o.slot_pos(index) {
            o.slots[p].link = None;
            self.counters.routes = self.counters.routes.saturating_sub(1);
            self.send_prio(
                other,
                &RelayPacket::DisconnectNotification {
                    connection_id: NUM_RESERVED_PORTS + index,
                },
            );
        }
    }
}
