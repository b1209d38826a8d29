//! What the tokio runtime does around the node, driven through the
//! simulator adapter (`support::PeerNode`) over the same I/O contract
//! (`node::Input`, `poll_transmit`, `poll_link`, `drain_link`): blocked UDP
//! addresses, reaping of closed sessions, the friend layer, and a friend's
//! SHARE_RELAYS reaching the relay pool. Each asserts its bound over
//! several seeds; replay one with `TOXLINK_SEED=<seed>`.

mod support;

use support::world::*;
use support::PeerNode;
use toxlink_proto::friend::FriendEvent;
use toxlink_proto::node::{PathEventKind, Route};
use toxlink_sim::{ms, run_seeds, secs, LinkConfig};

/// Seeds per scenario.
const SEEDS: u64 = 4;

fn set_blocked(w: &mut World, p: u32, addr: u32, blocked: bool) {
    let id = w.peers[p as usize - 1].1;
    let now = w.sim.now();
    if let Some(n) = w.sim.node_mut::<PeerNode>(id) {
        n.node.set_udp_blocked(now, addr, blocked);
    }
}

fn primary(w: &World, p: u32, peer: u32) -> Option<Route<u32>> {
    w.peer(p).node.primary(&w.pk(peer))
}

/// Both peers block each other's UDP address mid-transfer (as the runtime's
/// users do): the connection moves to the relays with nothing lost, A sends
/// nothing to the blocked address while it is blocked, and once unblocked
/// the direct path carries the traffic again. (`Figures::switch` is the move
/// to a relay, `Figures::max_gap` reused for the way back.)
fn blocked_scenario(seed: u64) -> Result<Figures, String> {
    let all: Vec<u32> = (1..=RELAYS).collect();
    let mut w = world(seed, 2, |_| all.clone());
    w.sim
        .network
        .connect(1, 2, LinkConfig::new().latency(ms(3)).jitter_uniform(ms(1)));
    befriend(&mut w, 1, 2, COUNT, CHAT, true);
    run_until_flowing(&mut w, 1, 2, 100)?;
    // B learns A's address (as the direct-path discovery would tell it),
    // so the direct path works both ways.
    let (ida, idb, pa, pb) = (w.peers[0].1, w.peers[1].1, w.pk(1), w.pk(2));
    let now = w.sim.now();
    if let Some(n) = w.sim.node_mut::<PeerNode>(idb) {
        n.node.add_path(now, &pa, 1);
    }
    let on_udp = move |s: &mut toxlink_sim::Sim<u32>| {
        s.node::<PeerNode>(ida)
            .is_some_and(|p| matches!(p.node.primary(&pb), Some(Route::Udp(2))))
    };
    w.sim
        .run_while(|s| !on_udp(s), secs(2))
        .map_err(|e| format!("not on UDP 2 s after both knew the addresses: {e}"))?;
    set_blocked(&mut w, 1, 2, true);
    set_blocked(&mut w, 2, 1, true);
    let blocked_at = w.sim.now();
    let _ = w.sim.run_for(ms(300));
    if let Some(f) = w.failure() {
        return Err(f);
    }
    let moved = match first_event(&w, 1, 2, blocked_at, |k, a| {
        matches!(k, PathEventKind::Primary { .. }) && matches!(a, Route::Relay { .. })
    }) {
        Some(t) => t,
        None => {
            return Err(format!(
                "still on {:?} 300 ms after the block",
                primary(&w, 1, 2)
            ))
        }
    };
    let sent_at_block = w.peer(1).udp_sent.get(&2).copied().unwrap_or(0);
    let _ = w.sim.run_for(ms(700));
    let sent = w.peer(1).udp_sent.get(&2).copied().unwrap_or(0);
    if sent != sent_at_block {
        return Err(format!(
            "{} datagrams went to the blocked address",
            sent - sent_at_block
        ));
    }
    set_blocked(&mut w, 1, 2, false);
    set_blocked(&mut w, 2, 1, false);
    let unblocked_at = w.sim.now();
    w.sim
        .run_while(|s| !on_udp(s), secs(3))
        .map_err(|e| format!("UDP not back 3 s after the unblock: {e}"))?;
    let back = w.sim.now().saturating_duration_since(unblocked_at);
    run_to_end(&mut w, secs(60))?;
    if unblocked_at.saturating_duration_since(blocked_at) < ms(1000) {
        return Err("the block lasted less than 1 s".into());
    }
    let mut f = figures(&w, 1, 2, Some(moved));
    f.max_gap = back;
    Ok(f)
}

#[test]
fn a_blocked_udp_address_moves_the_connection_to_relays_under_50_ms_and_back_under_1_s() {
    run_seeds("blocked_udp", 0..SEEDS, |seed| {
        let f = blocked_scenario(seed)?;
        match f.switch {
            Some(t) if t <= ms(50) && f.max_gap <= secs(1) => Ok(()),
            t => Err(format!(
                "on a relay after {t:?} (bound 50 ms), back on UDP after {:?} (bound 1 s)",
                f.max_gap
            )),
        }
    });
}

/// A closes the connection: its session is removed once the KILL went out
/// (nothing else calls a reaping verb), B sees the connection killed, and
/// nothing the application sent before the close is lost.
fn close_scenario(seed: u64) -> Result<Figures, String> {
    let all: Vec<u32> = (1..=RELAYS).collect();
    let mut w = world(seed, 2, |_| all.clone());
    befriend(&mut w, 1, 2, 200, 0, false);
    let (ida, idb) = (w.peers[0].1, w.peers[1].1);
    let (pa, pb) = (w.pk(1), w.pk(2));
    for (id, pk) in [(ida, pb), (idb, pa)] {
        if let Some(f) = w
            .sim
            .node_mut::<PeerNode>(id)
            .and_then(|n| n.friend_mut(&pk))
        {
            f.expect_kill = true;
        }
    }
    run_to_end(&mut w, secs(20))?;
    let now = w.sim.now();
    if let Some(n) = w.sim.node_mut::<PeerNode>(ida) {
        n.node.close(now, &pb);
    }
    let closed_at = w.sim.now();
    w.sim
        .run_while(
            |s| {
                let a_has = s
                    .node::<PeerNode>(ida)
                    .is_some_and(|n| n.node.session(&pb).is_some());
                let b_killed = s
                    .node::<PeerNode>(idb)
                    .and_then(|n| n.friend(&pa))
                    .is_some_and(|f| f.killed.is_some());
                a_has || !b_killed
            },
            secs(2),
        )
        .map_err(|e| format!("not reaped / not killed 2 s after the close: {e}"))?;
    let mut f = figures(
        &w,
        1,
        2,
        Some(w.sim.now().saturating_duration_since(closed_at)),
    );
    if f.delivered == 0 {
        f.corrupt += 1;
    }
    Ok(f)
}

#[test]
fn a_closed_connection_is_reaped_and_the_peer_sees_it_killed_under_500_ms() {
    run_seeds("close_reap", 0..SEEDS, |seed| {
        let f = close_scenario(seed)?;
        match f.switch {
            Some(t) if t <= ms(500) && f.corrupt == 0 => Ok(()),
            t => Err(format!(
                "reaped after {t:?} (bound 500 ms), corrupt {}",
                f.corrupt
            )),
        }
    });
}

/// The friend layer runs over a relay-only connection: both sides see the
/// other ONLINE, and A's SHARE_RELAYS (A knows all four relays, B only
/// relay 1) gives B more relays for A — A's word, used for A only and
/// never passed on by B.
fn share_relays_scenario(seed: u64) -> Result<Figures, String> {
    let all: Vec<u32> = (1..=RELAYS).collect();
    let mut w = world(seed, 2, |p| if p == 1 { all.clone() } else { vec![1] });
    befriend(&mut w, 1, 2, 0, 0, false);
    let (ida, idb) = (w.peers[0].1, w.peers[1].1);
    let (pa, pb) = (w.pk(1), w.pk(2));
    let now = w.sim.now();
    for (id, pk) in [(ida, pb), (idb, pa)] {
        if let Some(n) = w.sim.node_mut::<PeerNode>(id) {
            n.run_friend_layer(now, &pk);
        }
    }
    let start = w.sim.now();
    let online = |s: &toxlink_sim::Sim<u32>, id, pk: &_| {
        s.node::<PeerNode>(id)
            .and_then(|n| n.friend(pk))
            .is_some_and(|f| f.link_log.iter().any(|(_, e)| *e == FriendEvent::Online))
    };
    w.sim
        .run_while(|s| !(online(s, ida, &pb) && online(s, idb, &pa)), secs(10))
        .map_err(|e| format!("friend layer not online both ways in 10 s: {e}"))?;
    w.sim
        .run_while(
            |s| {
                s.node::<PeerNode>(idb)
                    .is_some_and(|n| n.node.relay_pool().active(&pa).len() < 2)
            },
            secs(5),
        )
        .map_err(|e| format!("B uses no relay of A's list 5 s after ONLINE: {e}"))?;
    let took = w.sim.now().saturating_duration_since(start);
    let b = w.peer(2);
    let shared = b.friend(&pa).map_or(0, |f| {
        f.link_log
            .iter()
            .filter(|(_, e)| matches!(e, FriendEvent::ShareRelays(_)))
            .count()
    });
    if shared == 0 {
        return Err("B's pool grew without a SHARE_RELAYS".into());
    }
    let own: Vec<_> = b
        .node
        .shareable_relays()
        .into_iter()
        .map(|n| n.public_key)
        .collect();
    if own.iter().any(|k| w.relay_no(k) != Some(1)) {
        return Err(format!(
            "B passes on A's word: {} relays of its own",
            own.len()
        ));
    }
    if let Some(f) = w.failure() {
        return Err(f);
    }
    Ok(figures(&w, 1, 2, Some(took)))
}

#[test]
fn a_friends_shared_relays_reach_the_pool_through_the_friend_layer_under_10_s() {
    run_seeds(
        "share_relays",
        0..SEEDS,
        |seed| match share_relays_scenario(seed)?.switch {
            Some(t) if t <= secs(10) => Ok(()),
            t => Err(format!("shared relays in use after {t:?}, bound 10 s")),
        },
    );
}
