//! The README's library example: two nodes on loopback, one lossless and one
//! lossy packet. `cargo run -p toxlink --example hello`
use toxlink::toxlink_proto::{crypto::KeyPair, node::NodeConfig};
use toxlink::{Node, Received};

#[tokio::main]
async fn main() -> Result<(), toxlink::Error> {
    let mut rng = rand_core::OsRng;
    let any = "127.0.0.1:0".parse().expect("literal address");
    let alice = Node::bind(any, KeyPair::generate(&mut rng), NodeConfig::default()).await?;
    let bob = Node::bind(any, KeyPair::generate(&mut rng), NodeConfig::default()).await?;
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
    a.close();
    Ok(())
}
