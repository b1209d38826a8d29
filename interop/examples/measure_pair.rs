//! Prints c-toxcore ↔ c-toxcore baseline figures (connection set-up time and
//! custom-lossless throughput over UDP and over a TCP relay).
//!
//! `cargo run -p toxlink-interop --example measure_pair [PACKETS] [SIZE] [udp|tcp|both]`
//! (defaults 20000, 1373, both). Set `RUST_LOG=info` for progress.

use toxlink_interop::{measure_pair, PairOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut opts = PairOptions::default();
    let mut args = std::env::args().skip(1);
    if let Some(n) = args.next() {
        opts.packets = n.parse()?;
    }
    if let Some(s) = args.next() {
        opts.packet_size = s.parse()?;
    }
    match args.next().as_deref() {
        None | Some("both") => {}
        Some("udp") => opts.tcp = false,
        Some("tcp") => opts.udp = false,
        Some(other) => return Err(format!("unknown transport {other:?}").into()),
    }
    println!(
        "c-toxcore pair, {} custom lossless packets of {} bytes, a → b:",
        opts.packets, opts.packet_size
    );
    let figures = measure_pair(&opts)?;
    print!("{figures}");
    Ok(())
}
