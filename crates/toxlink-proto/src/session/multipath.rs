//! The multipath hooks of a session: what an owner that spreads one
//! connection over several paths tells it and asks of it (docs/DESIGN.md §3).

use super::{congestion, PathId, Session};

impl Session {
    /// Caps the lossless packets in flight at `packets` (`None`: no cap),
    /// e.g. while the connection runs on a relay.
    pub fn set_inflight_cap(&mut self, packets: Option<u32>) {
        self.c
            .cc
            .set_cap(packets.map(|n| f64::from(n) * congestion::FULL_PACKET));
    }

    /// The owner sent lossless packet `number` on `path` (optional; enables
    /// [`resend_in_flight`](Self::resend_in_flight)).
    pub fn on_sent(&mut self, number: u32, path: PathId) {
        if let Some(link) = self.phase.link_mut() {
            link.on_sent(number, path);
        }
    }

    /// Marks every packet in flight whose last path matches `filter` as lost,
    /// so it is retransmitted at once (a path died). Returns how many.
    pub fn resend_in_flight(&mut self, filter: impl FnMut(PathId) -> bool) -> usize {
        match self.phase.link_mut() {
            Some(link) => link.resend_in_flight(&mut self.c, filter),
            None => 0,
        }
    }

    /// Starts recording the numbers of acknowledged lossless packets (by
    /// `buffer_start` or by a request packet, §4.7, §4.9) for
    /// [`drain_acked`](Self::drain_acked). Off by default: one `u32` push per
    /// acknowledged packet when on.
    pub fn record_acks(&mut self) {
        self.c.acked_log.get_or_insert_with(Vec::new);
    }

    /// Calls `f` with every lossless packet number acknowledged since the
    /// last call, in the order the acknowledgements were processed.
    pub fn drain_acked(&mut self, mut f: impl FnMut(u32)) {
        if let Some(l) = self.c.acked_log.as_mut() {
            for n in l.drain(..) {
                f(n);
            }
        }
    }

    /// Marks the given lossless packets as lost (retransmitted at once).
    pub fn mark_lost(&mut self, numbers: &[u32]) {
        if let Some(link) = self.phase.link_mut() {
            link.mark_lost(&mut self.c, numbers);
        }
    }
}
