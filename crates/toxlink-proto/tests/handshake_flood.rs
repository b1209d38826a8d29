//! A handshake flood from strangers (issue: the node did an X25519 for the
//! key any cookie named before checking the allow-list, 36 µs per packet, and
//! gave every new source address a path id that was never freed): a valid
//! handshake of a peer that is not allowed, replayed from 20,000 source
//! addresses, costs no public-key operation, leaves no memory behind, and a
//! friend connects normally in the middle of it.
//!
//! Live heap bytes are counted by this test binary's global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};
use toxlink_proto::node::{Input, Node};
use toxlink_proto::session::Event;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[path = "support/flood.rs"]
mod flood;
use flood::{exchange, node, FRIEND, STRANGER, VICTIM};

#[test]
fn a_handshake_flood_from_20000_sources_costs_no_key_work_and_leaves_no_memory() {
    let now = Instant::now();
    let mut victim = node(1, now);
    let mut friend = node(2, now);
    let mut stranger = node(3, now);
    victim.allow(friend.real_pk());
    // The stranger gets a genuine cookie and sends a genuine handshake.
    stranger.connect(now, victim.real_pk(), victim.dht_pk(), VICTIM);
    let hs = exchange(
        &mut [(VICTIM, &mut victim), (STRANGER, &mut stranger)],
        now,
        STRANGER,
    );
    let hs = hs.first().expect("the stranger sent a handshake").clone();
    let refused = victim.stats().handshakes_refused;
    assert!(refused >= 1);
    // Replays from 20,000 addresses, then from 20,000 others: the second
    // round must leave nothing behind (the first may grow buffers that are
    // then reused, but nothing may be kept per source).
    let flood = |victim: &mut Node<u32>, first: u32| {
        for src in first..first + 20_000 {
            let mut d = hs.clone();
            assert!(victim
                .handle(
                    now,
                    Input::Datagram {
                        from: src,
                        data: &mut d
                    }
                )
                .is_err());
        }
    };
    flood(&mut victim, 1_000);
    let before = LIVE.load(Ordering::Relaxed);
    flood(&mut victim, 100_000);
    let grown = LIVE.load(Ordering::Relaxed) - before;
    assert!(grown <= 0, "the flood left {grown} bytes behind");
    assert_eq!(victim.stats().handshakes_refused, refused + 40_000);
    assert_eq!(victim.stats().handshake_key_ops, 0, "no public-key work");
    // A friend connects normally in the middle of the flood.
    friend.connect(now, victim.real_pk(), victim.dht_pk(), VICTIM);
    exchange(&mut [(VICTIM, &mut victim), (FRIEND, &mut friend)], now, 0);
    flood(&mut victim, 200_000);
    let later = now + Duration::from_millis(10);
    exchange(
        &mut [(VICTIM, &mut victim), (FRIEND, &mut friend)],
        later,
        0,
    );
    assert!(victim
        .session(&friend.real_pk())
        .is_some_and(|s| s.is_established()));
    let est = std::iter::from_fn(|| victim.poll_event(later))
        .any(|e| e.event == Event::Established && e.peer == friend.real_pk());
    assert!(est);
}
