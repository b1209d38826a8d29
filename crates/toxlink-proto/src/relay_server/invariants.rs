//! The structural invariants of the module documentation, checked by tests.

use super::conn::State;
use super::Server;
use crate::wire::relay::{HANDSHAKE_REQUEST_SIZE, MAX_FRAME_BOX, NUM_CLIENT_CONNECTIONS};
use rand_core::CryptoRngCore;
use std::collections::HashMap;
use std::net::IpAddr;

impl<R: CryptoRngCore> Server<R> {
    /// Checks the structural invariants of the module documentation
    /// (tests only).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut linked = 0;
        let mut queued = 0;
        let mut unconfirmed = 0;
        for (&id, c) in &self.clients {
            queued += c.out.data_len();
            assert!(c.rx.len() <= 2 + MAX_FRAME_BOX.max(HANDSHAKE_REQUEST_SIZE));
            assert!(c.slots.windows(2).all(|w| w[0].index < w[1].index));
            assert!(c.slots.len() <= NUM_CLIENT_CONNECTIONS);
            for s in &c.slots {
                if let Some((o, j)) = s.link {
                    linked += 1;
                    let oc = &self.clients[&o];
                    let os = &oc.slots[oc.slot_pos(j).expect("partner slot exists")];
                    assert_eq!(os.link, Some((id, s.index)), "links agree");
                    assert_eq!((os.peer, s.peer), (c.pk, oc.pk), "slots name each other");
                }
            }
            match c.state {
                State::Confirmed => assert_eq!(self.by_key.get(&c.pk), Some(&id)),
                _ => unconfirmed += 1,
            }
        }
        for (pk, id) in &self.by_key {
            let c = &self.clients[id];
            assert_eq!((c.pk, c.state), (*pk, State::Confirmed));
        }
        assert_eq!(self.counters.routes * 2, linked, "route gauge");
        assert_eq!(self.queued_total, queued, "queued bytes gauge");
        assert_eq!(self.unconfirmed_count, unconfirmed, "unconfirmed count");
        let mut per_ip: HashMap<IpAddr, (usize, usize)> = HashMap::new();
        let mut stalled = 0;
        for (&id, c) in &self.clients {
            let e = per_ip.entry(c.ip).or_default();
            e.0 += 1;
            if c.state != State::Confirmed {
                e.1 += 1;
                assert!(self.ips[&c.ip].unconfirmed.contains(&(c.seq, id)));
            }
            if let Some(since) = c.stalled_since {
                stalled += 1;
                assert!(self.stalled.contains(&(since, id)));
            }
        }
        assert_eq!(self.stalled.len(), stalled, "stalled set");
        let mut paused = 0;
        for (&id, c) in &self.clients {
            if let Some((since, to)) = c.paused {
                paused += 1;
                assert!(self.paused.contains(&(since, id)), "pause listed");
                let r = &self.clients[&to];
                assert_eq!(r.blocked.iter().filter(|&&s| s == id).count(), 1);
            }
            for s in &c.blocked {
                assert_eq!(self.clients[s].paused.map(|p| p.1), Some(id), "waits here");
            }
        }
        assert_eq!(self.paused.len(), paused, "paused set");
        assert_eq!(self.ips.len(), per_ip.len(), "no empty address entries");
        for (ip, st) in &self.ips {
            assert_eq!((st.conns, st.unconfirmed.len()), per_ip[ip], "{ip}");
            assert!(st.conns <= self.cfg.max_conns_per_ip.max(1));
            assert!(st.unconfirmed.len() <= self.cfg.max_unconfirmed_per_ip.max(1));
            if let Some(r) = st.rank(*ip) {
                assert!(self.unconfirmed_rank.contains(&r));
            }
        }
        assert_eq!(
            self.unconfirmed_rank.len(),
            self.ips
                .values()
                .filter(|s| !s.unconfirmed.is_empty())
                .count()
        );
    }
}
