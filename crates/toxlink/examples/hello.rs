//! The README's library example: a relay and two nodes on loopback; the
//! connection runs over direct UDP and the relay at once; one lossless and
//! one lossy packet; the path events. `cargo run -p toxlink --example hello`
use toxlink::relay::{RelayServer, RelayServerConfig};
use toxlink::toxlink_proto::{crypto::KeyPair, node::NodeConfig};
use toxlink::{Node, Received};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = rand_core::OsRng;
    let any = "127.0.0.1:0".parse()?;
    let relay = RelayServer::bind(RelayServerConfig {
        keypair: KeyPair::generate(&mut rng),
        listen: vec![any],
        stun_listen: Vec::new(),
        server: Default::default(),
    })
    .await?;
    // dht_is_real: peers that know each other's public key meet on a relay.
    let cfg = NodeConfig {
        dht_is_real: true,
        ..NodeConfig::default()
    };
    let alice = Node::bind(any, KeyPair::generate(&mut rng), cfg.clone()).await?;
    let bob = Node::bind(any, KeyPair::generate(&mut rng), cfg).await?;
    for n in [&alice, &bob] {
        n.add_relay(relay.public_key(), relay.local_addrs()[0]); // a path besides UDP
    }
    bob.allow(alice.public_key()); // bob accepts alice's handshake
    let (a, b) = tokio::join!(
        alice.connect(bob.public_key(), bob.dht_key(), bob.local_addr()),
        bob.accept(),
    );
    let (a, b) = (a?, b.ok_or(toxlink::Error::Closed)?);
    a.send_lossless(&[160, b'h', b'i']).await?; // ordered, lossless (ids 16..=191)
    a.send_lossy(&[200, 1, 2, 3])?; // lossy (ids 192..=254)
    for _ in 0..2 {
        match b.recv().await {
            Some(Received::Lossless(d)) => println!("lossless {d:?}"),
            Some(Received::Lossy(d)) => println!("lossy {d:?}"),
            None => break,
        }
    }
    while let Some(e) = alice.poll_path_event() {
        println!("path {:?}: {:?}", e.addr, e.kind); // UDP and relay paths, primary switches
    }
    a.close();
    Ok(())
}
