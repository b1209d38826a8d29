//! Interop A: two toxlink relay clients route to each other through
//! c-toxcore 0.2.18's tox-bootstrapd TCP relay (started by the test on a
//! loopback port with a temporary config and keys, stopped by PID on drop)
//! and exchange 10,000 DATA packets each way, intact and in order, plus OOB;
//! pings are answered.

mod common;

use common::*;
use toxlink_interop::bootstrapd::Bootstrapd;
use toxlink_proto::crypto::PublicKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxlink_clients_through_tox_bootstrapd() {
    let d = tokio::task::spawn_blocking(Bootstrapd::start)
        .await
        .unwrap()
        .expect("tox-bootstrapd starts (package toxcore-utils)");
    let relay = PublicKey(d.public_key());
    let (a, b) = two_nodes(relay, d.tcp_addr(), 40).await;
    exchange(&a, &b, relay, 10_000).await;
    a.shutdown().await;
    b.shutdown().await;
    drop(d);
}
