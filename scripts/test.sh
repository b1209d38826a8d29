#!/usr/bin/env bash
# All of toxlink's tests: formatting, lints, then every test of the workspace
# (unit, property, vector, simulator, loopback and c-toxcore interop tests).
# Needs the Debian packages that .ci/run installs (libsodium-dev, pkg-config,
# libtoxcore-dev, toxcore-utils).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
