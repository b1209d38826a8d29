//! Many seeds, one replay command.
//!
//! [`run_seeds`] runs a scenario for a range of seeds (on a few threads; each
//! seed's run is deterministic on its own), collects the failures and panics
//! with a message that names the smallest failing seed and the exact command
//! that replays it:
//!
//! ```text
//! TOXLINK_SEED=1234 cargo test -p toxlink-sim --test scenarios stop_and_wait
//! ```
//!
//! Environment: `TOXLINK_SEED=N` runs only seed `N`; `TOXLINK_SEEDS=N` runs
//! `N` seeds starting at the range's start (CI raises it, developers lower it).

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The seeds to run: `TOXLINK_SEED` (one seed) beats `TOXLINK_SEEDS` (a
/// count from `default.start`) beats `default`.
pub fn seeds_from_env(default: Range<u64>) -> Range<u64> {
    seeds_from(
        default,
        std::env::var("TOXLINK_SEED").ok().as_deref(),
        std::env::var("TOXLINK_SEEDS").ok().as_deref(),
    )
}

/// [`seeds_from_env`] with the variables passed in (unparsable values are
/// ignored).
fn seeds_from(default: Range<u64>, seed: Option<&str>, count: Option<&str>) -> Range<u64> {
    if let Some(s) = seed.and_then(|v| v.trim().parse::<u64>().ok()) {
        return s..s.saturating_add(1);
    }
    if let Some(n) = count.and_then(|v| v.trim().parse::<u64>().ok()) {
        return default.start..default.start.saturating_add(n);
    }
    default
}

/// The command that re-runs test `name` with only `seed`, for the test binary
/// this is running in (`--lib` for unit tests, `--test <file>` otherwise).
pub fn replay_command(name: &str, seed: u64) -> String {
    let pkg = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "<package>".to_string());
    let exe_stem = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // Cargo names test binaries `<target>-<16 hex digits>`.
    let target = match exe_stem.rsplit_once('-') {
        Some((t, h)) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) => t.to_string(),
        _ => exe_stem,
    };
    let target_arg = if target.is_empty() || target == pkg.replace('-', "_") {
        "--lib".to_string()
    } else {
        format!("--test {target}")
    };
    format!("TOXLINK_SEED={seed} cargo test -p {pkg} {target_arg} {name}")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs `f(seed)` for every seed of `seeds` (adjusted by the environment, see
/// [`seeds_from_env`]) and panics, naming the failing seeds and the replay
/// command, if any returned `Err` or panicked. `name` is the test's name (the
/// filter used in the replay command).
pub fn run_seeds<F>(name: &str, seeds: Range<u64>, f: F)
where
    F: Fn(u64) -> Result<(), String> + Sync,
{
    let seeds = seeds_from_env(seeds);
    let total = seeds.end.saturating_sub(seeds.start);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(usize::try_from(total).unwrap_or(usize::MAX).max(1));
    let next = AtomicU64::new(seeds.start);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                let r = catch_unwind(AssertUnwindSafe(|| f(seed)))
                    .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))));
                if let Err(msg) = r {
                    eprintln!(
                        "{name}: seed {seed} failed: {msg}\n  replay: {}",
                        replay_command(name, seed)
                    );
                    if let Ok(mut v) = failures.lock() {
                        v.push((seed, msg));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    if failures.is_empty() {
        return;
    }
    failures.sort_by_key(|(s, _)| *s);
    let (seed, msg) = &failures[0];
    let mut report = format!(
        "{name}: {} of {total} seeds failed; first: seed {seed}: {msg}\nreplay with:\n    {}\n",
        failures.len(),
        replay_command(name, *seed)
    );
    for (s, m) in failures.iter().skip(1).take(9) {
        report.push_str(&format!("  also seed {s}: {m}\n"));
    }
    panic!("{report}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_selects_seeds() {
        assert_eq!(seeds_from(0..100, None, None), 0..100);
        assert_eq!(seeds_from(10..100, None, Some("1000")), 10..1010);
        assert_eq!(seeds_from(10..100, Some("1234"), Some("5")), 1234..1235);
        assert_eq!(seeds_from(0..8, Some("x"), Some(" 3 ")), 0..3);
        assert_eq!(seeds_from(0..8, Some(""), Some("-1")), 0..8);
    }

    #[test]
    fn replay_command_names_seed_and_test() {
        let c = replay_command("my_test", 77);
        assert!(c.starts_with("TOXLINK_SEED=77 cargo test -p "), "{c}");
        assert!(c.ends_with(" my_test"), "{c}");
        // Unit tests of this crate run from the lib test binary.
        if std::env::var("CARGO_PKG_NAME").is_ok() {
            assert!(c.contains("-p toxlink-sim --lib"), "{c}");
        }
    }

    #[test]
    fn failing_seed_panics_with_replay_command() {
        if std::env::var("TOXLINK_SEED").is_ok() {
            return; // the environment picks the seed; the test needs its own
        }
        let r = catch_unwind(|| {
            run_seeds("fails_on_seven", 0..10, |s| {
                if s == 7 || s == 9 {
                    Err(format!("bad seed {s}"))
                } else {
                    Ok(())
                }
            })
        });
        let msg = panic_message(&*r.expect_err("must panic"));
        assert!(msg.contains("2 of"), "{msg}");
        assert!(msg.contains("TOXLINK_SEED=7 "), "{msg}");
        assert!(msg.contains("fails_on_seven"), "{msg}");
    }

    #[test]
    fn all_seeds_run() {
        if std::env::var("TOXLINK_SEED").is_ok() || std::env::var("TOXLINK_SEEDS").is_ok() {
            return;
        }
        let seen = Mutex::new(Vec::new());
        run_seeds("all", 3..13, |s| {
            seen.lock().map_err(|e| e.to_string())?.push(s);
            Ok(())
        });
        let mut v = seen.into_inner().unwrap_or_default();
        v.sort_unstable();
        assert_eq!(v, (3..13).collect::<Vec<_>>());
    }
}
