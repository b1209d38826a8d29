//! Deterministic network simulator for toxlink (filled by the session issue).
