//! What the `toxlink` binary shares with the fuzz targets (fuzz/): the relay
//! config parsers, the keys file rules and the escaping of peer-supplied
//! text. The binary uses these very functions, so what is fuzzed is what
//! runs.

pub mod keys_file;
pub mod relay_config;
pub mod text;
