//! The `Sim` driver: scripted actions, dispatch to address owners, and the
//! bounds that turn livelocks into errors instead of hangs.

use bytes::Bytes;
use std::time::Instant;
use toxlink_sim::{ms, secs, LinkConfig, Output, Sim, SimError, SimNode};

/// Records what it receives; optionally echoes.
#[derive(Default)]
struct Recorder {
    got: Vec<(u8, Vec<u8>)>, // (from, data)
    echo_to: Option<u8>,
    out: Vec<Output<u8>>,
}

impl SimNode<u8> for Recorder {
    fn handle_datagram(&mut self, _now: Instant, from: u8, to: u8, data: Bytes) {
        self.got.push((from, data.to_vec()));
        if let Some(back) = self.echo_to {
            self.out.push(Output::datagram(to, back, data));
        }
    }

    fn poll_output(&mut self, _now: Instant) -> Option<Output<u8>> {
        self.out.pop()
    }
}

#[test]
fn actions_run_at_their_time_before_deliveries_at_that_time() {
    let mut sim: Sim<u8> = Sim::new(1);
    sim.network
        .connect(1, 2, LinkConfig::new().latency(ms(100)));
    let rx = sim.add_node(Recorder::default(), [2]);
    sim.add_node(Recorder::default(), [1]);
    sim.inject(1, 2, &b"a"[..]); // arrives at 100 ms
                                 // At exactly 100 ms the link goes down: the arriving datagram is dropped.
    sim.at(ms(100), |s| s.network.link_mut(1, 2).set_up(false));
    sim.at(ms(150), |s| {
        s.network.set_path_up(1, 2, true);
        s.inject(1, 2, &b"b"[..]);
    });
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for t in [300u64, 200, 250] {
        let log = log.clone();
        sim.at(ms(t), move |s| log.borrow_mut().push(s.elapsed()));
    }
    sim.run_until(secs(1)).expect("run");
    assert_eq!(
        sim.elapsed(),
        secs(1),
        "run_until leaves the clock at the target"
    );
    assert_eq!(*log.borrow(), vec![ms(200), ms(250), ms(300)]);
    let got: Vec<Vec<u8>> = sim
        .node::<Recorder>(rx)
        .map(|r| r.got.iter().map(|g| g.1.clone()).collect())
        .unwrap_or_default();
    assert_eq!(got, vec![b"b".to_vec()]);
    assert_eq!(sim.network.link_stats(1, 2).dropped_down, 1);
    assert_eq!(sim.stats().actions, 5);
}

#[test]
fn deliveries_go_to_the_current_owner_of_the_address() {
    let mut sim: Sim<u8> = Sim::new(1);
    sim.network
        .set_default_link(Some(LinkConfig::new().latency(ms(10))));
    let a = sim.add_node(Recorder::default(), [5]);
    let b = sim.add_node(Recorder::default(), [6]);
    sim.inject(1, 5, &b"x"[..]);
    sim.run_until(ms(50)).expect("run");
    // Address 5 moves to node b (NAT rebinding); 9 belongs to nobody.
    sim.add_address(b, 5);
    sim.inject(1, 5, &b"y"[..]);
    sim.inject(1, 9, &b"z"[..]);
    sim.run_until(ms(100)).expect("run");
    let data = |id| {
        sim.node::<Recorder>(id)
            .map(|r| r.got.iter().map(|g| g.1.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(data(a), vec![b"x".to_vec()]);
    assert_eq!(data(b), vec![b"y".to_vec()]);
    assert_eq!(sim.stats().undeliverable, 1);
    assert_eq!(sim.owner(5), Some(b));
}

#[test]
fn echo_between_two_nodes_runs_until_idle() {
    let mut sim: Sim<u8> = Sim::new(1);
    sim.network
        .connect(1, 2, LinkConfig::new().latency(ms(10)).loss(0.5));
    sim.add_node(
        Recorder {
            echo_to: Some(1),
            ..Default::default()
        },
        [2],
    );
    let a = sim.add_node(Recorder::default(), [1]);
    for i in 0..100u8 {
        sim.inject(1, 2, vec![i]);
    }
    sim.run_until_idle(secs(10)).expect("idle");
    assert_eq!(sim.elapsed(), ms(20));
    let n = sim.node::<Recorder>(a).map_or(0, |r| r.got.len());
    // Each echo survives two 50 % links: about 25 of 100.
    assert!((10..45).contains(&n), "echoes {n}");
}

/// A node whose timeout never moves forward.
struct Stuck(Instant);
impl SimNode<u8> for Stuck {
    fn handle_datagram(&mut self, _: Instant, _: u8, _: u8, _: Bytes) {}
    fn poll_timeout(&mut self) -> Option<Instant> {
        Some(self.0)
    }
    fn poll_output(&mut self, _: Instant) -> Option<Output<u8>> {
        None
    }
}

#[test]
fn a_timeout_that_never_moves_hits_the_step_limit() {
    let mut sim: Sim<u8> = Sim::new(1);
    sim.limits.max_steps = 1000;
    let t = sim.time(ms(5));
    sim.add_node(Stuck(t), [1]);
    assert!(matches!(
        sim.run_until(secs(1)),
        Err(SimError::StepLimit { steps: 1000, .. })
    ));
}

/// A node that never stops talking.
struct Chatty;
impl SimNode<u8> for Chatty {
    fn handle_datagram(&mut self, _: Instant, _: u8, _: u8, _: Bytes) {}
    fn poll_output(&mut self, _: Instant) -> Option<Output<u8>> {
        Some(Output::datagram(1, 2, Vec::new()))
    }
}

#[test]
fn endless_output_hits_the_output_limit() {
    let mut sim: Sim<u8> = Sim::new(1);
    sim.limits.max_outputs_per_drain = 10_000;
    sim.add_node(Chatty, [1]);
    assert!(matches!(
        sim.step(),
        Err(SimError::OutputLimit { limit: 10_000, .. })
    ));
}

/// Wakes every 10 ms forever.
#[derive(Default)]
struct Ticker {
    next: Option<Instant>,
    ticks: u32,
}
impl SimNode<u8> for Ticker {
    fn handle_datagram(&mut self, _: Instant, _: u8, _: u8, _: Bytes) {}
    fn handle_timeout(&mut self, now: Instant) {
        self.ticks += 1;
        self.next = Some(now + ms(10));
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.next
    }
    fn poll_output(&mut self, now: Instant) -> Option<Output<u8>> {
        self.next.get_or_insert(now + ms(10));
        None
    }
}

#[test]
fn run_loops_are_bounded_in_virtual_time() {
    let mut sim: Sim<u8> = Sim::new(1);
    let t = sim.add_node(Ticker::default(), [1]);
    assert!(matches!(
        sim.run_until_idle(secs(1)),
        Err(SimError::TimeLimit { .. })
    ));
    assert_eq!(sim.elapsed(), secs(1));
    assert_eq!(sim.node::<Ticker>(t).map(|t| t.ticks), Some(100));
    // run_while stops as soon as the predicate is false...
    sim.run_while(
        |s| s.node::<Ticker>(t).is_some_and(|t| t.ticks < 150),
        secs(10),
    )
    .expect("reaches 150 ticks");
    assert_eq!(sim.elapsed(), ms(1500));
    // ...and fails at the deadline if it never is.
    assert!(matches!(
        sim.run_while(|_| true, secs(2)),
        Err(SimError::TimeLimit { .. })
    ));
    assert_eq!(sim.elapsed(), ms(3500));
}

#[test]
fn run_while_reports_an_idle_simulation() {
    let mut sim: Sim<u8> = Sim::new(1);
    sim.add_node(Recorder::default(), [1]);
    assert!(matches!(
        sim.run_while(|_| true, secs(5)),
        Err(SimError::Idle { .. })
    ));
}

#[test]
fn an_action_rescheduling_itself_now_forever_hits_the_action_limit() {
    fn again(s: &mut Sim<u8>) {
        let now = s.now();
        s.at_instant(now, again);
    }
    let mut sim: Sim<u8> = Sim::new(1);
    sim.limits.max_actions_per_instant = 500;
    sim.at(ms(1), again);
    assert!(matches!(
        sim.run_until(secs(1)),
        Err(SimError::ActionLimit { limit: 500, .. })
    ));
}

#[test]
fn sim_rng_drives_the_protocol_core_deterministically() {
    use toxlink_proto::crypto::KeyPair;
    let sim: Sim<u8> = Sim::new(9);
    let a1 = KeyPair::generate(&mut sim.rng_for("alice"));
    let a2 = KeyPair::generate(&mut Sim::<u8>::new(9).rng_for("alice"));
    let b = KeyPair::generate(&mut sim.rng_for("bob"));
    let a3 = KeyPair::generate(&mut Sim::<u8>::new(10).rng_for("alice"));
    assert_eq!(a1.public, a2.public);
    assert_ne!(a1.public, b.public);
    assert_ne!(a1.public, a3.public);
}

#[test]
fn intercept_corrupts_and_drops_what_a_node_forwards() {
    use toxlink_sim::Intercept;
    let mut sim: Sim<u8> = Sim::new(3);
    sim.network
        .set_default_link(Some(LinkConfig::new().latency(ms(1))));
    // Node 2 echoes to 1; the wrapper drops every third echo and flips the
    // first byte of the others.
    let mut n = 0u32;
    let relay = Intercept::new(
        Recorder {
            echo_to: Some(1),
            ..Default::default()
        },
        sim.rng_for("tamper"),
    )
    .on_output(move |_now, _rng, out| {
        n += 1;
        if n % 3 == 0 {
            return false;
        }
        if let Output::Datagram { data, .. } = out {
            let mut v = data.to_vec();
            v[0] ^= 0xFF;
            *data = v.into();
        }
        true
    });
    let r = sim.add_node(relay, [2]);
    let a = sim.add_node(Recorder::default(), [1]);
    for i in 0..9u8 {
        sim.inject(1, 2, vec![i]);
    }
    sim.run_until_idle(secs(1)).expect("idle");
    let got: Vec<Vec<u8>> = sim
        .node::<Recorder>(a)
        .map(|r| r.got.iter().map(|g| g.1.clone()).collect())
        .unwrap_or_default();
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|d| d[0] >= 0xF7), "{got:?}");
    let wrapped = sim.node::<Intercept<u8, Recorder>>(r).expect("intercept");
    assert_eq!(wrapped.dropped_outputs, 3);
    assert_eq!(wrapped.inner.got.len(), 9);
}
