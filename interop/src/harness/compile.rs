//! Building the harness: `harness.c` compiled once per process (and cached
//! across processes) against the system libtoxcore.

use crate::error::{InteropError, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use tracing::{debug, warn};

/// The C source of the harness.
pub fn harness_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/harness.c")
}

/// Directory the compiled harness is cached in: `$CARGO_TARGET_DIR/interop`
/// if that variable is set when the tests run, else `<workspace>/target/interop`.
pub fn harness_cache_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("interop"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/interop"),
    }
}

/// Serialises builds inside this process and remembers the result.
static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Compiles `harness.c` (once per process) and returns the binary's path.
///
/// Rebuilds only if the binary is missing or older than the source. Safe to
/// call from parallel tests and parallel processes: the compiler writes a
/// unique temporary name that is then renamed into place atomically.
/// Compiler: `$CC` or `cc`; flags from `pkg-config --cflags --libs toxcore`.
pub fn build_harness() -> Result<PathBuf> {
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let src = harness_source();
    let dir = harness_cache_dir();
    let out = dir.join("toxlink-harness");
    if !is_fresh(&out, &src) {
        compile(&src, &dir, &out)?;
    }
    *built = Some(out.clone());
    Ok(out)
}

fn is_fresh(out: &Path, src: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((mtime(out), mtime(src)), (Some(o), Some(s)) if o >= s)
}

fn pkg_config_toxcore() -> Result<Vec<String>> {
    let o = Command::new("pkg-config")
        .args(["--cflags", "--libs", "toxcore"])
        .output()
        .map_err(|e| InteropError::io("running pkg-config", e))?;
    if !o.status.success() {
        return Err(InteropError::Unavailable(format!(
            "pkg-config toxcore failed (install libtoxcore-dev): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn compile(src: &Path, dir: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| InteropError::io(format!("creating {dir:?}"), e))?;
    let flags = pkg_config_toxcore()?;
    let tmp = tempfile::Builder::new()
        .prefix(".toxlink-harness-")
        .tempfile_in(dir)
        .map_err(|e| InteropError::io(format!("creating a temp file in {dir:?}"), e))?
        .into_temp_path();
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    debug!(?src, ?out, "compiling the c-toxcore harness");
    let o = Command::new(&cc)
        .args(["-O2", "-Wall", "-Wextra", "-o"])
        .arg(&tmp)
        .arg(src)
        .args(&flags)
        .output()
        .map_err(|e| InteropError::io(format!("running {cc:?}"), e))?;
    if !o.status.success() {
        return Err(InteropError::Compile {
            source_path: src.to_path_buf(),
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    if !o.stderr.is_empty() {
        warn!(
            "harness.c compiler output:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    tmp.persist(out)
        .map_err(|e| InteropError::io(format!("renaming the harness to {out:?}"), e.error))?;
    Ok(())
}

/// Whether the harness can be built here: pkg-config knows `toxcore`.
pub fn harness_available() -> bool {
    pkg_config_toxcore().is_ok()
}

/// For tests: fails the test (never skips it) when the harness cannot be
/// built here, naming the package to install. The README's test command
/// installs it, so a missing harness is a broken set-up, not a pass.
///
/// # Panics
/// When pkg-config does not know `toxcore`.
pub fn require_harness() {
    if let Err(e) = pkg_config_toxcore() {
        panic!("the c-toxcore interop harness cannot be built: {e} (run ./scripts/test.sh, which installs libtoxcore-dev, or apt-get install libtoxcore-dev pkg-config)");
    }
}
