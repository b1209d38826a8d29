//! The one error type of this crate.
//!
//! Every fallible function of `toxlink_interop` returns [`InteropError`]. The
//! variants carry enough text (paths, the tail of a log, the offending line)
//! to diagnose a failed interop test from the test output alone.

use std::path::PathBuf;
use std::time::Duration;

/// Errors of the interop helpers.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// A required external program or library is not installed.
    #[error("not available: {0}")]
    Unavailable(String),
    /// An I/O operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A bounded wait ran out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// A child process exited (or closed its output) when it should not have.
    #[error("{what} exited unexpectedly ({status}); log tail:\n{log_tail}")]
    ChildExited {
        /// Which child.
        what: String,
        /// Exit status as text (or "unknown").
        status: String,
        /// Last lines of its output, for diagnostics.
        log_tail: String,
    },
    /// Compiling the C harness failed.
    #[error("compiling {source_path:?} failed ({status}):\n{stderr}")]
    Compile {
        /// The C source file.
        source_path: PathBuf,
        /// Exit status of the compiler as text.
        status: String,
        /// The compiler's diagnostics.
        stderr: String,
    },
    /// A child printed something that does not follow the documented protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An argument cannot be passed to the harness (e.g. a line break in a
    /// message, a packet size out of range).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A command sent to the harness was answered with `ERR ...`.
    #[error("harness refused {command:?}: {reply}")]
    Refused {
        /// The command line that was sent.
        command: String,
        /// The harness's `ERR` line.
        reply: String,
    },
}

impl InteropError {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        InteropError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = InteropError> = std::result::Result<T, E>;
