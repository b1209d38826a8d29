//! `toxlink send`/`recv`, `chat` and their error cases as processes on
//! loopback: keygen → two peers → a 4 MiB generated file arrives verified
//! (and no part file is left); an existing name is refused without
//! `--overwrite` and replaced with it; chat lines go both ways; bad
//! arguments, missing or corrupt keys files, a bad config and an unreachable
//! peer or relay each end with one `toxlink: ...` line and a non-zero exit.
//! Every wait is bounded; children are killed (by their own handle) on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::toxlink;

const WAIT: Duration = Duration::from_secs(30);

/// A running child with its stdout and stderr lines on channels.
struct Proc {
    child: std::process::Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    seen_err: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    fn spawn(mut c: Command) -> Proc {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn toxlink");
        let out = lines(child.stdout.take().expect("stdout"));
        let err = lines(child.stderr.take().expect("stderr"));
        Proc {
            child,
            out,
            err,
            seen_err: Vec::new(),
        }
    }

    /// The first stdout line starting with `prefix` (others skipped).
    fn expect_out(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "no stdout line {prefix:?} within {WAIT:?}; stderr {:?}",
                    self.drain_err()
                ),
            }
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn expect_err(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(l) => {
                    self.seen_err.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no stderr line with {needle:?}: {:?}", self.seen_err),
            }
        }
    }

    fn drain_err(&mut self) -> Vec<String> {
        while let Ok(l) = self.err.recv_timeout(Duration::from_millis(200)) {
            self.seen_err.push(l);
        }
        self.seen_err.clone()
    }

    fn listening(&mut self) -> String {
        self.expect_out("listening on ")
            .trim_start_matches("listening on ")
            .to_string()
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("still running after {WAIT:?}: {:?}", self.drain_err());
    }
}

/// Creates a keys file with `toxlink keygen`; returns its public key (hex).
fn keygen(path: &Path) -> String {
    common::keygen_with(env!("CARGO_BIN_EXE_toxlink"), path)
}

fn one_line_error(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err:?}");
    assert!(lines[0].starts_with("toxlink: "), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"));
    lines[0].to_string()
}

struct Peers {
    dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    a_pk: String,
    b_pk: String,
}

fn peers() -> Peers {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.keys");
    let b = dir.path().join("b.keys");
    let a_pk = keygen(&a);
    let b_pk = keygen(&b);
    Peers {
        dir,
        a,
        b,
        a_pk,
        b_pk,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Peers {
    /// `toxlink CMD [TARGET] --keys-file K --bind 127.0.0.1 --peer PK EXTRA..`
    /// as A (talking to B) or as B (talking to A), not started.
    fn command(&self, cmd: &str, target: Option<&Path>, as_a: bool, extra: &[&str]) -> Command {
        let (keys, peer) = if as_a {
            (&self.a, &self.b_pk)
        } else {
            (&self.b, &self.a_pk)
        };
        let mut args = vec![cmd];
        args.extend(target.map(s));
        args.extend([
            "--keys-file",
            s(keys),
            "--bind",
            "127.0.0.1",
            "--peer",
            peer,
        ]);
        args.extend_from_slice(extra);
        toxlink(&args)
    }

    /// [`Peers::command`], spawned.
    fn spawn(&self, cmd: &str, target: Option<&Path>, as_a: bool, extra: &[&str]) -> Proc {
        Proc::spawn(self.command(cmd, target, as_a, extra))
    }

    /// The one-line error of [`Peers::command`] as A, its stdout discarded.
    fn error_as_a(&self, cmd: &str, target: Option<&Path>, extra: &[&str]) -> String {
        one_line_error(
            &self
                .command(cmd, target, true, extra)
                .stdout(Stdio::null())
                .output()
                .expect("run"),
        )
    }

    /// B receives into `out` from A.
    fn recv(&self, out: &Path, extra: &[&str]) -> Proc {
        self.spawn("recv", Some(out), false, extra)
    }

    /// A sends `file` to B.
    fn send(&self, file: &Path, extra: &[&str]) -> Proc {
        self.spawn("send", Some(file), true, extra)
    }

    /// `chat` as A (`as_a`) or as B.
    fn chat(&self, as_a: bool, extra: &[&str]) -> Proc {
        self.spawn("chat", None, as_a, extra)
    }

    /// A new empty directory `name` in the temporary directory.
    fn out_dir(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        std::fs::create_dir(&out).expect("mkdir");
        out
    }

    /// A sparse file `name` of `len` zero bytes (instant to create).
    fn sparse_file(&self, name: &str, len: u64) -> PathBuf {
        let file = self.dir.path().join(name);
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(len))
            .expect("sparse file");
        file
    }

    /// A `toxlink relay` on loopback with its own keys file: the process,
    /// its public key and its address.
    fn relay(&self) -> (Proc, String, String) {
        let mut relay = Proc::spawn(toxlink(&[
            "relay",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--no-ipv6",
            "--keys-file",
            s(&self.dir.path().join("relay.keys")),
        ]));
        let rpk = relay
            .expect_out("public key ")
            .trim_start_matches("public key ")
            .to_string();
        let raddr = relay.listening();
        (relay, rpk, raddr)
    }
}

/// One transfer: `recv` listens, `send` connects. Returns both processes,
/// exited.
fn transfer(p: &Peers, file: &Path, out: &Path, recv_extra: &[&str]) -> (Proc, Proc) {
    let mut extra = vec!["--quiet"];
    extra.extend_from_slice(recv_extra);
    let mut r = p.recv(out, &extra);
    let addr = r.listening();
    let mut snd = p.send(file, &["--peer-addr", &addr, "--timeout", "10"]);
    snd.wait();
    r.wait();
    (snd, r)
}

/// [`transfer`], and both exited with success (their stderr if not).
fn transfer_ok(p: &Peers, file: &Path, out: &Path, recv_extra: &[&str]) -> (Proc, Proc) {
    let (mut snd, mut r) = transfer(p, file, out, recv_extra);
    exits_ok(&mut snd);
    exits_ok(&mut r);
    (snd, r)
}

/// Waits for `p` to exit and asserts it succeeded (its stderr if not).
fn exits_ok(p: &mut Proc) {
    assert!(p.wait().success(), "{:?}", p.drain_err());
}

/// Polls `done` every 5 ms until it holds; fails with "`what` within
/// WAIT" when WAIT has passed first.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends SIGTERM to our own child `p`.
fn interrupt(p: &Proc) {
    // SAFETY: signalling our own child by its PID.
    unsafe {
        libc::kill(p.child.id() as i32, libc::SIGTERM);
    }
}

/// The one-line error of `toxlink ARGS` (which must fail).
fn error_of(args: &[&str]) -> String {
    one_line_error(&toxlink(args).output().expect("run"))
}

/// `dir` holds `name` (no part file or other) and its bytes are `data`.
fn assert_only_file(dir: &Path, name: &str, data: &[u8]) {
    assert_eq!(std::fs::read(dir.join(name)).expect("read"), data);
    assert_eq!(dir_entries(dir), vec![name.to_string()], "no part file");
}

fn dir_entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn send_recv_a_4_mib_file_verified_then_refuse_and_overwrite() {
    let p = peers();
    let file = p.dir.path().join("data.bin");
    // Generated content (xorshift), not compressible, not all the same.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..4 * 1024 * 1024 + 123)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &data).expect("write");
    let out = p.out_dir("out");

    let (mut snd, mut r) = transfer_ok(&p, &file, &out, &[]);
    let line = r.expect_out("received ");
    assert!(
        line.contains("data.bin") && line.contains(&data.len().to_string()),
        "{line}"
    );
    snd.expect_out("sent data.bin");
    assert_only_file(&out, "data.bin", &data);

    // Again: the name exists, both sides fail with the reason.
    std::fs::write(&file, b"second version").expect("write");
    let (mut snd, mut r) = transfer(&p, &file, &out, &[]);
    assert!(!snd.child.wait().expect("status").success());
    assert!(!r.child.wait().expect("status").success());
    r.expect_err("toxlink: refused");
    snd.expect_err("exists (use --overwrite)");
    assert_only_file(&out, "data.bin", &data);

    // With --overwrite it is replaced.
    transfer_ok(&p, &file, &out, &["--overwrite"]);
    assert_only_file(&out, "data.bin", b"second version");
}

#[test]
fn chat_lines_go_both_ways() {
    let p = peers();
    let mut b = p.chat(false, &[]);
    let addr = b.listening();
    // A takes everything but the keys file from a config file.
    let cfg = p.dir.path().join("a.toml");
    std::fs::write(
        &cfg,
        format!(
            "bind = \"127.0.0.1\"\npeer = \"{}\"\npeer_addr = \"{addr}\"\ntimeout_secs = 10\n",
            p.b_pk
        ),
    )
    .expect("write config");
    let mut a = Proc::spawn(toxlink(&[
        "chat",
        "--keys-file",
        s(&p.a),
        "--config",
        s(&cfg),
    ]));
    a.expect_err(&format!("* {} online", &p.b_pk[..8]));
    b.expect_err(&format!("* {} online", &p.a_pk[..8]));
    let mut a_in = a.child.stdin.take().expect("stdin");
    let mut b_in = b.child.stdin.take().expect("stdin");
    writeln!(a_in, "hello from a").expect("write");
    writeln!(a_in, "second line").expect("write");
    assert_eq!(
        b.expect_out(&p.a_pk[..8]),
        format!("{}: hello from a", &p.a_pk[..8])
    );
    assert_eq!(
        b.expect_out(&p.a_pk[..8]),
        format!("{}: second line", &p.a_pk[..8])
    );
    writeln!(b_in, "hi from b").expect("write");
    assert_eq!(
        a.expect_out(&p.b_pk[..8]),
        format!("{}: hi from b", &p.b_pk[..8])
    );
    // End of A's input: A exits 0, B sees the connection close and exits 0.
    drop(a_in);
    exits_ok(&mut a);
    b.expect_err("closed");
    exits_ok(&mut b);
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let p = peers();
    let file = p.dir.path().join("f");
    std::fs::write(&file, b"x").expect("write");

    // Bad arguments.
    let e = error_of(&["chat", "--peer", "nothex"]);
    assert!(e.contains("peer"), "{e}");
    let e = error_of(&["chat", "--relay", "bad"]);
    assert!(e.contains("KEY@HOST:PORT"), "{e}");
    let e = error_of(&["send"]);
    assert!(e.contains("FILE"), "{e}");
    let e = error_of(&["chat", "--keys-file", s(&p.a)]);
    assert!(e.contains("no peer"), "{e}");

    // Missing and corrupt keys files.
    let missing = p.dir.path().join("missing.keys");
    let e = error_of(&["chat", "--keys-file", s(&missing), "--peer", &p.b_pk]);
    assert!(e.contains("not found") && e.contains("keygen"), "{e}");
    assert!(!missing.exists(), "never created by chat");
    let corrupt = p.dir.path().join("corrupt.keys");
    std::fs::write(&corrupt, [1u8; 63]).expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&corrupt, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let e = error_of(&[
        "send",
        s(&file),
        "--keys-file",
        s(&corrupt),
        "--peer",
        &p.b_pk,
        "--peer-addr",
        "127.0.0.1:9",
    ]);
    assert!(e.contains("63 bytes"), "{e}");

    // Bad config: unknown key, and a bad relay inside.
    let cfg = p.dir.path().join("bad.toml");
    std::fs::write(&cfg, "peer_adr = \"127.0.0.1:1\"\n").expect("write");
    let e = error_of(&["chat", "--keys-file", s(&p.a), "--config", s(&cfg)]);
    assert!(e.contains("config") && e.contains("peer_adr"), "{e}");
    std::fs::write(
        &cfg,
        format!("peer = \"{}\"\nrelays = [\"nope\"]\n", p.b_pk),
    )
    .expect("write");
    let e = error_of(&["chat", "--keys-file", s(&p.a), "--config", s(&cfg)]);
    assert!(e.contains("config") && e.contains("relay"), "{e}");

    // Unreachable peer: a UDP port nobody answers on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let t = Instant::now();
    let e = p.error_as_a(
        "send",
        Some(&file),
        &["--peer-addr", &addr, "--timeout", "2", "--quiet"],
    );
    assert!(e.contains("unreachable") && e.contains(&addr), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "bounded by --timeout"
    );

    // Unreachable relay: a closed TCP port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let relay = format!("{}@127.0.0.1:{port}", p.b_pk);
    let e = p.error_as_a("chat", None, &["--relay", &relay, "--timeout", "2"]);
    assert!(e.contains("relay") && e.contains("unreachable"), "{e}");

    // A receive directory that does not exist.
    let e = error_of(&[
        "recv",
        s(&p.dir.path().join("nodir")),
        "--keys-file",
        s(&p.a),
        "--peer",
        &p.b_pk,
    ]);
    assert!(e.contains("not a directory"), "{e}");
}

#[test]
fn peer_chats_with_a_c_toxcore_friend_over_udp() {
    use toxlink_interop::harness::{require_harness, ConnKind};
    use toxlink_interop::{Harness, HarnessOptions};
    require_harness();
    let p = peers();
    let mut h = Harness::start(&HarnessOptions::new().name("ctox")).expect("harness");
    let mut our_pk = [0u8; 32];
    for (i, b) in our_pk.iter_mut().enumerate() {
        *b = u8::from_str_radix(&p.a_pk[2 * i..2 * i + 2], 16).expect("hex");
    }
    let friend = h.add_friend(&our_pk).expect("add friend");
    let hex = |k: [u8; 32]| k.iter().map(|b| format!("{b:02X}")).collect::<String>();
    let their_pk = hex(h.public_key());
    let addr = format!("127.0.0.1:{}", h.udp_port());
    let tox_id = h.tox_id().to_string();
    let dht = hex(h.dht_key());
    let mut a = Proc::spawn(toxlink(&[
        "peer",
        "--keys-file",
        s(&p.a),
        "--bind",
        "127.0.0.1",
        "--peer",
        &tox_id,
        "--peer-dht",
        &dht,
        "--peer-addr",
        &addr,
        "--timeout",
        "20",
    ]));
    let id_line = a.expect_out("tox id ");
    assert!(
        id_line.contains(&p.a_pk),
        "our Tox ID is printed: {id_line}"
    );
    a.expect_err(&format!("* {} online", &their_pk[..8]));
    assert_eq!(
        h.wait_connected(friend, Duration::from_secs(10))
            .expect("c-toxcore sees us"),
        ConnKind::Udp
    );
    h.send_message(friend, "hello from c-toxcore").expect("MSG");
    assert_eq!(
        a.expect_out(&their_pk[..8]),
        format!("{}: hello from c-toxcore", &their_pk[..8])
    );
    let mut a_in = a.child.stdin.take().expect("stdin");
    writeln!(a_in, "hello from toxlink").expect("write");
    assert_eq!(
        h.expect_message(friend, Duration::from_secs(10))
            .expect("c-toxcore gets our message"),
        "hello from toxlink"
    );
    drop(a_in);
    exits_ok(&mut a);
    h.quit().expect("harness quits");
}

#[test]
fn bench_json_prints_one_object_with_both_rates() {
    let o = toxlink(&["bench", "--json", "--mib", "4", "--seconds", "1"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
    for key in ["udp_lossless_mb_s", "relay_lossless_mb_s"] {
        let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"));
        assert!(x > 0.0, "{key} = {x}");
    }
    assert_eq!(v["udp_mib"], 4);
}

#[test]
fn an_interrupted_receive_leaves_no_part_file_and_fails_the_sender() {
    let p = peers();
    // 64 MiB of zeros (sparse: instant to create; moving it takes far longer
    // than the moment we need to catch the part file).
    let file = p.sparse_file("big.bin", 64 << 20);
    let out = p.out_dir("out");
    let mut r = p.recv(&out, &["--quiet"]);
    let addr = r.listening();
    let mut snd = p.send(&file, &["--peer-addr", &addr, "--quiet"]);
    // Data in the part file: the sender had the receiver's ACCEPT, so its
    // failure is the connection closing mid-transfer (not while waiting for
    // an answer to its offer, as when the file was merely created).
    wait_until("a part file with data", || {
        let entries = dir_entries(&out);
        if let Some(e) = entries.iter().find(|e| e.starts_with(".big.bin.part-")) {
            return std::fs::metadata(out.join(e)).is_ok_and(|m| m.len() > 0);
        }
        assert!(entries.is_empty(), "{entries:?}");
        false
    });
    interrupt(&r);
    assert!(!r.wait().success());
    r.expect_err("toxlink: interrupted");
    assert!(dir_entries(&out).is_empty(), "part file removed");
    assert!(!snd.wait().success());
    snd.expect_err("connection closed after");
}

#[test]
fn through_a_relay_only_files_and_chat_arrive() {
    let p = peers();
    let (_relay, rpk, raddr) = p.relay();
    let spec = format!("{rpk}@{raddr}");

    // A file, with neither side given the other's address.
    let file = p.dir.path().join("r.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let out = p.out_dir("out");
    let mut r = p.recv(&out, &["--relay", &spec, "--quiet"]);
    r.listening();
    let mut snd = p.send(&file, &["--relay", &spec, "--quiet", "--timeout", "10"]);
    exits_ok(&mut snd);
    exits_ok(&mut r);
    assert_only_file(&out, "r.bin", &data);

    // Chat: the status line names the relay as the path (both told not to
    // look for a direct path, which they would find on one host, at times
    // before the peer is online).
    let mut b = p.chat(false, &["--relay", &spec, "--no-discovery"]);
    b.listening();
    let mut a = p.chat(true, &["--relay", &spec, "--no-discovery"]);
    let line = a.expect_err(&format!("* {} online", &p.b_pk[..8]));
    assert!(line.contains(&format!("relay {}", &rpk[..8])), "{line}");
    b.expect_err(&format!("* {} online", &p.a_pk[..8]));
    let mut a_in = a.child.stdin.take().expect("stdin");
    writeln!(a_in, "via the relay").expect("write");
    assert_eq!(
        b.expect_out(&p.a_pk[..8]),
        format!("{}: via the relay", &p.a_pk[..8])
    );
    // Both inputs end: both exit 0. (A KILL sent through a relay does not
    // reach the peer yet, so B is not expected to notice A's close early.)
    drop(a_in);
    drop(b.child.stdin.take());
    exits_ok(&mut a);
    exits_ok(&mut b);
}

#[test]
fn a_file_name_of_255_bytes_is_received() {
    let p = peers();
    // 255 bytes; the part file name shortens it inside a 2-byte character.
    let name = format!("x{}", "ü".repeat(127));
    assert_eq!(name.len(), 255);
    let file = p.dir.path().join(&name);
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let out = p.out_dir("out");
    let (_snd, mut r) = transfer_ok(&p, &file, &out, &[]);
    let line = r.expect_out("received ");
    assert!(
        line.starts_with(&format!("received {name} from ")),
        "{line}"
    );
    assert_only_file(&out, &name, &data);
}

#[test]
fn a_file_over_max_size_is_refused_with_a_reason_before_any_byte_is_written() {
    let p = peers();
    let file = p.dir.path().join("big.bin");
    std::fs::write(&file, vec![7u8; 4000]).expect("write");
    let out = p.out_dir("out");
    let (mut snd, mut r) = transfer(&p, &file, &out, &["--max-size", "1KiB"]);
    assert!(!snd.wait().success());
    assert!(!r.wait().success());
    let why = "file of 4000 bytes is larger than the receiver's --max-size of 1024 bytes";
    assert_eq!(r.expect_err("toxlink: "), format!("toxlink: refused {why}"));
    assert_eq!(
        snd.expect_err("toxlink: "),
        format!("toxlink: refused by the peer: refused {why}")
    );
    assert!(dir_entries(&out).is_empty(), "{:?}", dir_entries(&out));
    // Within the limit it arrives.
    transfer_ok(&p, &file, &out, &["--max-size", "4000"]);
    assert_only_file(&out, "big.bin", &[7u8; 4000]);
}

#[test]
fn terminal_escapes_from_the_peer_are_shown_escaped() {
    let p = peers();
    // Chat: a nickname and a message with escape sequences.
    let mut b = p.chat(false, &[]);
    let addr = b.listening();
    let mut a = p.chat(
        true,
        &["--peer-addr", &addr, "--name", "mallory\x1b[2J\x07"],
    );
    a.expect_err(&format!("* {} online", &p.b_pk[..8]));
    let who = &p.a_pk[..8];
    let nick = b.expect_err("is called");
    assert_eq!(nick, format!("* {who} is called mallory\\x1b[2J\\x07"));
    let mut a_in = a.child.stdin.take().expect("stdin");
    writeln!(a_in, "\x1b]0;owned\x07hi \x1b[31mred\u{202e} é\r").expect("write");
    assert_eq!(
        b.expect_out(who),
        format!("{who}: \\x1b]0;owned\\x07hi \\x1b[31mred\\u{{202e}} é")
    );
    drop(a_in);
    exits_ok(&mut a);
    drop(b);

    // A file name with an escape sequence: saved under its name, shown
    // escaped.
    let name = "a\x1b[31mb.txt";
    let file = p.dir.path().join(name);
    std::fs::write(&file, b"data").expect("write");
    let out = p.out_dir("out");
    let (_snd, mut r) = transfer_ok(&p, &file, &out, &[]);
    let line = r.expect_out("received ");
    assert!(line.starts_with("received a\\x1b[31mb.txt from "), "{line}");
    assert!(!line.contains('\x1b'), "{line:?}");
    assert_eq!(std::fs::read(out.join(name)).expect("read"), b"data");
    // Refused because it exists: the receiver's reason quotes the name.
    let (mut snd, _r) = transfer(&p, &file, &out, &[]);
    assert!(!snd.wait().success());
    let e = snd.expect_err("toxlink: ");
    assert!(e.contains("a\\x1b[31mb.txt: file exists"), "{e}");
    assert!(!e.contains('\x1b'), "{e:?}");
}

impl Proc {
    /// Every stdout line until the process closes stdout (bounded by WAIT).
    fn all_out(&mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut v = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) => v.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => return v,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stdout still open after {WAIT:?}"),
            }
        }
    }

    /// The process's stdout is exactly one line of JSON: that object.
    fn json(&mut self) -> serde_json::Value {
        let out = self.all_out();
        assert_eq!(out.len(), 1, "exactly one stdout line with --json: {out:?}");
        serde_json::from_str(&out[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out[0]))
    }

    /// `listening on` printed on stderr (where it goes with --json).
    fn listening_on_stderr(&mut self) -> String {
        self.expect_err("listening on ")
            .trim_start_matches("listening on ")
            .to_string()
    }
}

/// The fields every `--json` report has, checked for a successful transfer
/// of `size` bytes.
fn check_ok_report(v: &serde_json::Value, role: &str, size: u64) {
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["role"], role, "{v}");
    assert_eq!(v["error"], serde_json::Value::Null, "{v}");
    assert_eq!(v["bytes"].as_u64(), Some(size), "{v}");
    assert_eq!(v["size"].as_u64(), Some(size), "{v}");
    let secs = v["seconds"].as_f64().expect("seconds");
    assert!(secs > 0.0 && secs < WAIT.as_secs_f64(), "{v}");
    let gap = v["max_gap_ms"].as_f64().expect("max_gap_ms");
    assert!(gap >= 0.0 && gap < secs * 1e3, "{v}");
    assert!(v["deliveries"].as_u64().expect("deliveries") >= 2, "{v}");
    assert!(v["path_switches"].as_u64().is_some(), "{v}");
    assert!(!v["paths"].as_array().expect("paths").is_empty(), "{v}");
}

#[test]
fn send_recv_json_reports_bytes_gap_and_the_real_paths() {
    let p = peers();
    let file = p.dir.path().join("j.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let size = data.len() as u64;

    // Direct UDP: the sender's path is the receiver's real address.
    let out = p.out_dir("udp");
    let mut r = p.recv(&out, &["--quiet", "--json"]);
    let addr = r.listening_on_stderr();
    let mut snd = p.send(&file, &["--peer-addr", &addr, "--timeout", "10", "--json"]);
    exits_ok(&mut snd);
    exits_ok(&mut r);
    let vs = snd.json();
    let vr = r.json();
    check_ok_report(&vs, "send", size);
    check_ok_report(&vr, "recv", size);
    assert_eq!(vs["bytes_queued"].as_u64(), Some(size), "{vs}");
    assert_eq!(vs["name"], "j.bin");
    let sha = vs["sha256"].as_str().expect("sha256").to_string();
    assert_eq!(vr["sha256"].as_str(), Some(sha.as_str()));
    let paths = vs["paths"].as_array().expect("paths");
    assert!(
        paths
            .iter()
            .any(|p| p["kind"] == "udp" && p["addr"] == addr.as_str()),
        "the sender's path is the receiver's address {addr}: {vs}"
    );
    // The human lines went to stderr.
    snd.expect_err("sent j.bin");
    r.expect_err("received j.bin");
    assert_eq!(std::fs::read(out.join("j.bin")).expect("read"), data);

    // Relay only (both sides told not to look for a direct path, which
    // they would find on one host): both paths are the relay, by key and
    // address.
    let (_relay, rpk, raddr) = p.relay();
    let spec = format!("{rpk}@{raddr}");
    let out = p.out_dir("relay");
    let mut r = p.recv(
        &out,
        &["--relay", &spec, "--no-discovery", "--quiet", "--json"],
    );
    r.listening_on_stderr();
    let mut snd = p.send(
        &file,
        &[
            "--relay",
            &spec,
            "--no-discovery",
            "--quiet",
            "--timeout",
            "10",
            "--json",
        ],
    );
    exits_ok(&mut snd);
    exits_ok(&mut r);
    for v in [snd.json(), r.json()] {
        check_ok_report(&v, v["role"].as_str().unwrap_or("?"), size);
        let paths = v["paths"].as_array().expect("paths");
        assert_eq!(paths.len(), 1, "{v}");
        assert_eq!(paths[0]["kind"], "relay", "{v}");
        assert_eq!(
            paths[0]["relay"].as_str().map(str::to_uppercase),
            Some(rpk.to_uppercase()),
            "{v}"
        );
        assert_eq!(paths[0]["addr"], raddr.as_str(), "{v}");
        assert_eq!(v["path_switches"], 0, "{v}");
        assert!(v["relay_links_up"].as_u64().expect("links up") >= 1, "{v}");
    }
    assert_eq!(std::fs::read(out.join("j.bin")).expect("read"), data);
}

#[test]
fn send_recv_json_report_a_failure_once() {
    let p = peers();
    let file = p.sparse_file("big.bin", 64 << 20);
    let out = p.out_dir("out");
    let mut r = p.recv(&out, &["--quiet", "--json"]);
    let addr = r.listening_on_stderr();
    let mut snd = p.send(&file, &["--peer-addr", &addr, "--quiet", "--json"]);
    // Wait until some data arrived, then interrupt the receiver.
    wait_until("no data arrived", || {
        let part = std::fs::read_dir(&out)
            .expect("read_dir")
            .filter_map(Result::ok)
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".big.bin.part-")
            });
        part.and_then(|e| e.metadata().ok())
            .is_some_and(|m| m.len() > 1 << 20)
    });
    interrupt(&r);
    assert!(!r.wait().success());
    assert!(!snd.wait().success());
    let vr = r.json();
    assert_eq!(vr["ok"], false, "{vr}");
    assert_eq!(vr["error"], "interrupted", "{vr}");
    assert!(vr["bytes"].as_u64().expect("bytes") > 1 << 20, "{vr}");
    let vs = snd.json();
    assert_eq!(vs["ok"], false, "{vs}");
    let err = vs["error"].as_str().expect("error");
    assert!(err.contains("connection closed"), "{vs}");
    let acked = vs["bytes"].as_u64().expect("bytes");
    let queued = vs["bytes_queued"].as_u64().expect("bytes_queued");
    assert!(acked > 0 && acked <= queued && queued < 64 << 20, "{vs}");
    // The one-line error on stderr is still there.
    snd.expect_err("toxlink: connection closed");
}
