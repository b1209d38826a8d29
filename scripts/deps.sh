#!/usr/bin/env bash
# Installs the Debian packages that toxlink's tests use, when they are missing.
# Sourced or run by scripts/test.sh (and .ci/run through it); safe to run again.
#
#   scripts/deps.sh           # the packages the test command needs
#   scripts/deps.sh fuzz      # also cargo-fuzz (for scripts/fuzz.sh)
#
# Why each package is needed:
#   libtoxcore-dev, libsodium-dev, pkg-config, build-essential
#                  the c-toxcore interop harness (a small C program on
#                  libtoxcore, built by the tests with cc and pkg-config)
#   toxcore-utils  tox-bootstrapd, the c-toxcore relay the interop tests use
#   iproute2, nftables, conntrack
#                  the network-namespace lab (NATs emulated with nftables
#                  masquerade; NAT state flushed with conntrack)
#   coturn         a STUN server we did not write (`turnserver --stun-only`)
#                  for the STUN client's test (tests/stun_servers.rs) and the
#                  lab's NAT-traversal scenarios (tests/nat_traversal.rs)
# Nothing here is needed to build or run `toxlink` itself: libsodium is built
# from the source the libsodium-sys-stable crate ships.
set -euo pipefail

PACKAGES=(libtoxcore-dev libsodium-dev pkg-config build-essential toxcore-utils
  iproute2 nftables conntrack coturn)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "toxlink tests: missing packages ${missing[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO="sudo"
    else
      echo "toxlink tests: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "toxlink tests: installing ${missing[*]} (c-toxcore interop harness and tox-bootstrapd for the interop tests, iproute2/nftables/conntrack/coturn for the network-namespace lab)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "fuzz" ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "toxlink fuzzing: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi
