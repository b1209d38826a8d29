//! Direct paths the peers find by themselves (issue #15, `node::discovery`):
//! peers that start on relays and are told only their own endpoints go
//! direct; a peer whose NAT rebinds (its packets come from a new address)
//! is followed there; a friend advertising another peer's address takes
//! nothing from it. 100 seeds each; replay one with `TOXLINK_SEED=<seed>`.

mod support;

use support::world::*;
use support::PeerNode;
use toxlink_proto::node::{EndpointKind, Input, PathEventKind, Route};
use toxlink_sim::{ms, run_seeds, secs, LinkConfig, Sim};

/// Seeds per scenario.
const SEEDS: u64 = 100;

fn tell_endpoints(w: &mut World, p: u32, list: &[(EndpointKind, u32)]) {
    let id = w.peers[p as usize - 1].1;
    let now = w.sim.now();
    if let Some(n) = w.sim.node_mut::<PeerNode>(id) {
        let _ = n.node.handle(now, Input::Endpoints(list));
    }
}

fn on_udp(
    s: &Sim<u32>,
    w_id: toxlink_sim::NodeId,
    peer: toxlink_proto::crypto::PublicKey,
    addr: u32,
) -> bool {
    s.node::<PeerNode>(w_id)
        .is_some_and(|p| p.node.primary(&peer) == Some(Route::Udp(addr)))
}

/// Both peers start on relays only (no address given to `connect`), each
/// told its own endpoint: A's bulk goes direct within 2 s of the connection
/// being up, and nothing is lost, duplicated or reordered (the friend layer
/// checks every delivery).
fn relay_to_direct(seed: u64, advertise: bool) -> Result<Option<std::time::Duration>, String> {
    let all: Vec<u32> = (1..=RELAYS).collect();
    let mut w = world(seed, 2, |_| all.clone());
    w.sim
        .network
        .connect(1, 2, LinkConfig::new().latency(ms(3)).jitter_uniform(ms(1)));
    if advertise {
        tell_endpoints(&mut w, 1, &[(EndpointKind::Local, 1)]);
        tell_endpoints(&mut w, 2, &[(EndpointKind::Reflexive, 2)]);
    }
    let start = w.sim.now();
    befriend(&mut w, 1, 2, COUNT, CHAT, false);
    run_until_flowing(&mut w, 1, 2, 20)?;
    let up = first_event(&w, 1, 2, start, |k, _| {
        matches!(k, PathEventKind::Primary { .. })
    })
    .ok_or("no primary path once flowing")?;
    let (ida, pb) = (w.peers[0].1, w.pk(2));
    let _ = w.sim.run_while(|s| !on_udp(s, ida, pb, 2), secs(5));
    let direct = first_event(&w, 1, 2, start, |k, a| {
        matches!(k, PathEventKind::Primary { .. }) && *a == Route::Udp(2)
    })
    .map(|t| t.saturating_sub(up));
    run_to_end(&mut w, secs(60))?;
    let f = figures(&w, 1, 2, None);
    if f.corrupt > 0 {
        return Err(format!("{} corrupt deliveries", f.corrupt));
    }
    Ok(direct)
}

#[test]
fn peers_on_relays_told_their_endpoints_go_direct_within_2s_of_connecting_losing_nothing() {
    run_seeds("relay_to_direct", 0..SEEDS, |seed| {
        match relay_to_direct(seed, true)? {
            Some(t) if t <= secs(2) => Ok(()),
            t => Err(format!("direct after {t:?} (bound 2 s)")),
        }
    });
}

/// The control: the same world without endpoints never sends a datagram
/// (so the scenario above proves the discovery, not a shortcut).
#[test]
fn peers_on_relays_without_endpoints_stay_on_relays() {
    run_seeds("relay_only_control", 0..10, |seed| {
        match relay_to_direct(seed, false)? {
            None => Ok(()),
            Some(t) => Err(format!("went direct after {t:?} with no endpoints")),
        }
    });
}

/// A's NAT rebinds mid-transfer: its datagrams now come from a new address
/// and the old one is gone. B follows A there (roaming on the first
/// authenticated packet, validated by a challenge) within 1 s, the relays
/// carrying B's traffic meanwhile; nothing is lost.
fn rebinding(seed: u64) -> Result<std::time::Duration, String> {
    const NEW: u32 = 1001;
    let all: Vec<u32> = (1..=RELAYS).collect();
    let mut w = world(seed, 2, |_| all.clone());
    for a in [1, NEW] {
        w.sim
            .network
            .connect(a, 2, LinkConfig::new().latency(ms(3)).jitter_uniform(ms(1)));
    }
    befriend(&mut w, 1, 2, COUNT, CHAT, true);
    // B sends the bulk here too, so B's direction depends on the new
    // address.
    let (ida, idb, pa) = (w.peers[0].1, w.peers[1].1, w.pk(1));
    if let Some(f) = w
        .sim
        .node_mut::<PeerNode>(idb)
        .and_then(|n| n.friend_mut(&pa))
    {
        f.bulk_total = COUNT;
    }
    run_until_flowing(&mut w, 1, 2, 100)?;
    let _ = w.sim.run_while(|s| !on_udp(s, idb, pa, 1), secs(3));
    if !on_udp(&w.sim, idb, pa, 1) {
        return Err("B was not on A's first address before the rebinding".into());
    }
    if let Some(n) = w.sim.node_mut::<PeerNode>(ida) {
        n.udp_src = Some(NEW);
    }
    w.sim.add_address(ida, NEW);
    w.sim.remove_address(1);
    let at = w.sim.now();
    w.sim
        .run_while(|s| !on_udp(s, idb, pa, NEW), secs(3))
        .map_err(|e| format!("B not on A's new address 3 s after the rebinding: {e}"))?;
    let took = w.sim.now().saturating_duration_since(at);
    run_to_end(&mut w, secs(60))?;
    if w.peer(2).node.stats().roamed == 0 {
        return Err("B never roamed".into());
    }
    let f = figures(&w, 1, 2, None);
    if f.corrupt > 0 {
        return Err(format!("{} corrupt deliveries", f.corrupt));
    }
    Ok(took)
}

#[test]
fn a_peer_whose_nat_rebinds_mid_transfer_is_followed_to_its_new_address_within_1s_losing_nothing() {
    run_seeds("nat_rebinding_roam", 0..SEEDS, |seed| {
        let t = rebinding(seed)?;
        if t <= secs(1) {
            Ok(())
        } else {
            Err(format!("on the new address after {t:?} (bound 1 s)"))
        }
    });
}

/// Peer 3, a friend of B, advertises A's address as its own endpoint: B
/// punches it, but the route stays A's, and A's transfer with B stays
/// direct and complete.
fn poisoned_endpoint(seed: u64) -> Result<(), String> {
    let all: Vec<u32> = (1..=RELAYS).collect();
    let mut w = world(seed, 3, |_| all.clone());
    for (a, b) in [(1, 2), (3, 2)] {
        w.sim
            .network
            .connect(a, b, LinkConfig::new().latency(ms(3)).jitter_uniform(ms(1)));
    }
    tell_endpoints(&mut w, 3, &[(EndpointKind::Local, 1)]);
    befriend(&mut w, 1, 2, COUNT, CHAT, true);
    befriend(&mut w, 3, 2, 200, 0, false);
    run_to_end(&mut w, secs(60))?;
    let (pa, pc) = (w.pk(1), w.pk(3));
    let b = w.peer(2);
    if b.node.primary(&pa) != Some(Route::Udp(1)) {
        return Err(format!("A's primary at B is {:?}", b.node.primary(&pa)));
    }
    if b.node.candidates(&pc).iter().any(|(a, _)| *a == 1) {
        return Err("B took A's address as peer 3's candidate".into());
    }
    let f = figures(&w, 1, 2, None);
    if f.corrupt > 0 {
        return Err(format!("{} corrupt deliveries", f.corrupt));
    }
    Ok(())
}

#[test]
fn a_friend_advertising_another_peers_address_cannot_take_its_route() {
    run_seeds("poisoned_endpoint", 0..SEEDS, poisoned_endpoint);
}
