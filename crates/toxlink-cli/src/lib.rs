//! What the `toxlink` binary shares with the fuzz targets (fuzz/): the relay
//! config parsers and the keys file rules. The binary uses these very
//! functions, so what is fuzzed is what runs.

pub mod keys_file;
pub mod relay_config;
