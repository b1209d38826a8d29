//! What the node's direct-path discovery (`node::discovery`) asks of a
//! session: the path control packets the peer sent (kept from the
//! application's lossy data), sealing one for a path of the node's choice,
//! and checking a datagram from an unknown address without touching state.

use super::*;

impl Session {
    /// The next path control packet (`wire::path_control`) the peer sent and
    /// the path it came on: for the node, never handed out as an event.
    pub fn poll_control(&mut self) -> Option<(PathId, Vec<u8>)> {
        self.phase.live_link_mut()?.control_in.pop_front()
    }

    /// Seals a lossy packet (a path control packet of the node's) into `buf`
    /// at once, for the caller to send on a path of its choice; `None`
    /// unless data may flow, or if `data` is not a lossy packet of
    /// 1..=1373 bytes or `buf` is smaller than a packet.
    pub fn seal_lossy(&mut self, now: Instant, data: &[u8], buf: &mut [u8]) -> Option<usize> {
        self.c.last_now = now;
        if !(packet_id::LOSSY_FIRST..=packet_id::LOSSY_LAST).contains(data.first()?)
            || data.len() > MAX_DATA_SIZE
            || buf.len() < MAX_PACKET_SIZE
            || self.state() != State::Established
        {
            return None;
        }
        let link = self.phase.live_link_mut()?;
        let end = link.send.end();
        let len = link.write_data(buf, end, data);
        (len > 0).then_some(len)
    }

    /// Whether `buf` is a data packet of this session that it has not
    /// processed yet (authenticated under the session key at a fresh nonce):
    /// nothing changes. For a datagram from an address the node does not
    /// know (the peer roamed); the caller bounds how often it asks.
    pub fn authenticates(&self, buf: &[u8]) -> bool {
        let Some(link) = self
            .phase
            .link()
            .filter(|_| matches!(self.state(), State::Established | State::NotConfirmed))
        else {
            return false;
        };
        let Ok(p) = DataPacket::parse(buf) else {
            return false;
        };
        let cand = link.rx.candidate(p.nonce_low);
        let mut copy = [0u8; MAX_PACKET_SIZE];
        let Some(c) = copy.get_mut(..buf.len()) else {
            return false;
        };
        c.copy_from_slice(buf);
        DataPacket::decrypt_in_place(&link.key, &cand.nonce, c).is_ok() && link.rx.is_new(&cand)
    }
}
