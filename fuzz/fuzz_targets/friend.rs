//! A FriendLink (friend_connection + Messenger, docs/PROTOCOL.md §7.3–7.4) fed
//! arbitrary lossless / lossy packets, clock steps and closes: it must never
//! panic, keep its queues bounded, and never report Messenger data while the
//! peer is not online.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use toxlink_proto::friend::{FriendConfig, FriendEvent, FriendLink, MAX_QUEUED};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut l = FriendLink::new(FriendConfig::default());
    l.handle_established(now);
    let mut online = false;
    // Records: kind (1) ‖ len (1) ‖ bytes.
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        match kind % 4 {
            0 => l.handle_lossless(now, body),
            1 => l.handle_lossy(now, body),
            2 => {
                now += Duration::from_millis(u64::from(*len) * 200);
                l.handle_timeout(now);
            }
            _ => l.handle_closed(now),
        }
        let mut queued = 0;
        while l.poll_transmit().is_some() {
            queued += 1;
        }
        assert!(queued <= MAX_QUEUED);
        while let Some(e) = l.poll_event() {
            match e {
                FriendEvent::Online => online = true,
                FriendEvent::Offline(_) => online = false,
                FriendEvent::ShareRelays(n) => assert!(n.len() <= 3),
                other => assert!(online, "{other:?} while not online"),
            }
        }
        assert_eq!(online, l.is_online());
    }
});
