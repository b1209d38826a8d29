#!/usr/bin/env bash
# All of toxlink's tests: formatting, lints, then every test of the workspace
# (unit, property, vector, simulator, loopback and c-toxcore interop tests).
# First installs the Debian packages the tests use when they are missing
# (scripts/deps.sh says which and why; as root or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The c-toxcore rows of `toxlink bench` (feature `c-toxcore-bench`, off in
# the default build): linted and run against the real c-toxcore.
cargo clippy -p toxlink-cli --all-targets --locked --features c-toxcore-bench -- -D warnings
cargo test -p toxlink-cli --locked --features c-toxcore-bench --test bench_c_toxcore
# The packagers' build: the system libsodium through pkg-config instead of the
# bundled source, checked against the same crypto vectors.
cargo test -p toxlink-proto --locked --features system-libsodium --lib crypto
