//! Support shared by the CLI's real-process tests.

pub mod netlab;
