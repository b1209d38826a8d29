//! What the `toxlink` binary shares with the fuzz targets (fuzz/): the relay
//! config parsers. The binary uses these very functions, so what is fuzzed
//! is what runs.

pub mod relay_config;
