//! Early Interop B smoke test (the full harness test belongs to the interop
//! work): two c-toxcore 0.2.18 clients in TCP-only mode are given the toxlink
//! relay first and tox-bootstrapd's relay second (our relay runs no onion
//! service, so they find each other through bootstrapd's); they connect,
//! route to each other on our relay, and 500 custom lossless packets cross it
//! intact and in order.

mod common;

use common::*;
use std::time::Duration;
use toxlink::relay::{RelayServer, RelayServerConfig};
use toxlink_interop::harness::Harness;
use toxlink_interop::{Bootstrapd, HarnessOptions};
use toxlink_proto::relay_server::ServerConfig;

const PACKETS: u32 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_toxcore_clients_forward_through_the_toxlink_relay() {
    let s = RelayServer::bind(RelayServerConfig {
        keypair: keypair(1234),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        server: ServerConfig::default(),
    })
    .await
    .unwrap();
    let (addr, pk) = (s.local_addrs()[0], s.public_key().0);
    let before = s.counters();
    let received = tokio::task::spawn_blocking(move || {
        let bsd = Bootstrapd::start().expect("tox-bootstrapd");
        let o = HarnessOptions::new().no_udp();
        let mut a = Harness::start(&o.clone().name("a")).expect("harness a");
        let mut b = Harness::start(&o.name("b")).expect("harness b");
        for h in [&mut a, &mut b] {
            h.add_tcp_relay(addr, &pk).unwrap();
            h.bootstrap(bsd.udp_addr(), &bsd.public_key()).unwrap();
            h.add_tcp_relay(bsd.tcp_addr(), &bsd.public_key()).unwrap();
        }
        let fa = a.add_friend(&b.public_key()).unwrap();
        let fb = b.add_friend(&a.public_key()).unwrap();
        a.wait_connected_event(fa, Duration::from_secs(60))
            .expect("a connects");
        b.wait_connected_event(fb, Duration::from_secs(60))
            .expect("b connects");
        let r = a
            .send_custom(fa, PACKETS, 1000, 170, Duration::from_secs(30))
            .expect("send");
        assert_eq!((r.accepted, r.error), (PACKETS, None));
        let st = b
            .wait_stats(
                fb,
                Duration::from_secs(30),
                Duration::from_millis(100),
                |s| s.custom.rx >= u64::from(PACKETS),
            )
            .expect("b receives all");
        let _ = a.quit();
        let _ = b.quit();
        drop(bsd);
        st
    })
    .await
    .unwrap();
    let c = &received.custom;
    assert_eq!(
        (c.rx, c.bad, c.dup, c.reordered, c.lost),
        (u64::from(PACKETS), 0, 0, 0, 0)
    );
    let after = s.counters();
    assert_eq!(after.handshakes - before.handshakes, 2);
    assert!(
        after.data_packets >= u64::from(PACKETS),
        "the data crossed our relay: {after:?}"
    );
    assert_eq!(
        after.closes.protocol_violation + after.closes.malformed + after.closes.bad_tag,
        0
    );
    s.shutdown().await;
}
