//! tokio runtime for toxlink.
