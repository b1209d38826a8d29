/*
 * toxlink-interop harness: one c-toxcore (libtoxcore, public API only) peer
 * driven line by line over stdin/stdout. Built and run by the Rust crate
 * toxlink-interop (module `harness`), which documents the same protocol.
 *
 * Build: cc -O2 -Wall -Wextra -o harness harness.c $(pkg-config --cflags --libs toxcore)
 *
 * ARGUMENTS
 *   --udp-port N          UDP port (0 = a free one: probed by binding port 0). Default 0.
 *   --no-udp              disable UDP (TCP relays only).
 *   --ipv6 0|1            enable IPv6 (default 0).
 *   --local-discovery 0|1 LAN discovery (default 0).
 *   --secret-key HEX      64 hex digits: long-term secret key (savedata type SECRET_KEY).
 *   --name NAME           self name.
 *   --echo                echo every received custom lossless packet back to its sender.
 *   --log                 write libtoxcore's log to stderr.
 *
 * OUTPUT AT START (in this order, one per line)
 *   ID <76 hex>  PK <64 hex>  DHTPK <64 hex>  UDPPORT <port, 0 without UDP>  READY
 *   or "ERR START <reason>" and exit status 1.
 *
 * COMMANDS (one per line on stdin; each gets exactly one reply line;
 *           a refused command gets "ERR <COMMAND> <reason>")
 *   BOOTSTRAP <ip> <port> <pkhex>   -> OK BOOTSTRAP            (tox_bootstrap)
 *   RELAY <ip> <port> <pkhex>       -> OK RELAY                (tox_add_tcp_relay)
 *   ADDFRIEND <pkhex>               -> FRIEND <n>              (tox_friend_add_norequest)
 *   MSG <friend> <text>             -> OK MSG <message id>     (normal message, text = rest of line)
 *   SENDCUSTOM <friend> <count> <size> <id>  (lossless, id 160..191)
 *   SENDLOSSY <friend> <count> <size> <id>   (lossy, id 200..254)
 *       -> OK SENDCUSTOM / OK SENDLOSSY at once; the send runs in the main loop
 *          (retrying while the send queue is full, i.e. paced by c-toxcore's
 *          congestion control) and ends with
 *          SENT <accepted> <ms> friend=<n> kind=<lossless|lossy> start_us=<mono> err=<none|reason>
 *          One lossless and one lossy send may run at a time ("ERR ... busy").
 *          size = whole packet incl. the id byte, 17..1373.
 *   STATS [<friend>]                -> STATS friend=<n> key=value ... (see stats_line()); besides
 *          the stream counters: custom_ids= / lossy_ids= (every packet the
 *          lossless / lossy custom packet callback delivered from that friend,
 *          counted by its first byte: "<id>:<n>,<id>:<n>" ascending, or "-"),
 *          conn_changes=<n> (friend connection status callbacks for that
 *          friend, the first going-online included) and conn_offline=<n>
 *          (those that reported "none").
 *   QUIT                            -> BYE, then exit 0.   Stdin EOF also exits.
 *
 * EVENTS (asynchronous, any time)
 *   CONN <friend> <none|udp|tcp> <ms since start> <mono_us>   friend connection status change
 *   SELFCONN <none|udp|tcp> <ms since start> <mono_us>
 *   MSGRX <friend> <text>    (bytes < 0x20 replaced by spaces)
 *   PKTID <friend> <lossless|lossy> <id> <len> <mono_us>
 *       the first packet with this id the lossless / lossy custom packet
 *       callback delivered from this friend (later ones are only counted,
 *       see STATS custom_ids / lossy_ids). These two callbacks are the only
 *       way libtoxcore hands an application a packet it does not itself
 *       handle; a packet it drops (e.g. a lossy one in the AV range 192..199
 *       without a toxav handler) shows up nowhere.
 *
 * CUSTOM PACKET LAYOUT (both kinds)
 *   [0] id | [1..5) seq BE32 | [5..9) checksum BE32 | [9..17) send time BE64 (CLOCK_MONOTONIC us)
 *   | [17..size) filler derived from seq
 *   checksum = FNV-1a 32 over the whole packet with the checksum field zeroed.
 *   Sequence numbers continue per friend and kind across sends. The receiver
 *   keeps per friend and kind: packets, bad (short or checksum), dup,
 *   reordered (an earlier unseen seq after a later one), lost (seqs below
 *   the highest seen that never arrived), bytes, the longest gap between two
 *   good packets, the one-way latency (same host, same monotonic clock) and
 *   the time of the last good packet. In --echo mode an echoed packet is
 *   byte-identical, so its latency field gives the round-trip time.
 *
 * Times ending in _us are CLOCK_MONOTONIC microseconds, comparable between
 * processes on the same host.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <tox/tox.h>

#define MAX_FRIENDS 64
#define LINE_MAX_LEN 4096
#define SEEN_MAX_BITS (1u << 24)      /* dup tracking for the first 16M seqs */
#define ECHO_QUEUE_LEN 2048
#define STALL_LIMIT_US (20ull * 1000000ull) /* a send with no progress for 20 s ends */
#define MIN_PACKET 17
#define SEND_BURST 512                /* max packets handed to toxcore per loop turn */

/* ---------- utilities ---------- */

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000ull;
}

static uint64_t g_start_us;

static uint64_t since_start_ms(void)
{
    return (mono_us() - g_start_us) / 1000ull;
}

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static void to_hex(const uint8_t *b, size_t n, char *dst)
{
    static const char digits[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = digits[b[i] >> 4];
        dst[2 * i + 1] = digits[b[i] & 15];
    }
    dst[2 * n] = 0;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Exactly 2*n hex digits -> n bytes. Returns 0 on success. */
static int from_hex(const char *s, uint8_t *dst, size_t n)
{
    if (s == NULL || strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        dst[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int parse_u32(const char *s, uint32_t *v)
{
    if (s == NULL || *s == 0) return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || *end != 0 || x > 0xffffffffull || s[0] == '-') return -1;
    *v = (uint32_t)x;
    return 0;
}

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

static uint32_t packet_checksum(const uint8_t *p, size_t n)
{
    uint8_t tmp[TOX_MAX_CUSTOM_PACKET_SIZE];
    memcpy(tmp, p, n);
    memset(tmp + 5, 0, 4);
    return fnv1a(tmp, n);
}

static void build_packet(uint8_t *p, size_t size, uint8_t id, uint32_t seq)
{
    p[0] = id;
    put_be32(p + 1, seq);
    memset(p + 5, 0, 4);
    put_be64(p + 9, mono_us());
    uint32_t x = seq * 2654435761u + 1u;
    for (size_t i = MIN_PACKET; i < size; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    put_be32(p + 5, packet_checksum(p, size));
}

static const char *conn_name(Tox_Connection c)
{
    switch (c) {
        case TOX_CONNECTION_UDP: return "udp";
        case TOX_CONNECTION_TCP: return "tcp";
        default: return "none";
    }
}

/* ---------- receive statistics ---------- */

typedef struct {
    uint64_t rx, bad, dup, reordered, bytes;
    uint32_t next_expected;  /* highest good seq + 1 */
    uint64_t unique;         /* distinct good seqs */
    uint8_t *seen;
    size_t seen_bits;
    uint64_t last_rx_us, max_gap_us;
    uint64_t lat_sum_us, lat_max_us, lat_n;
} Stream;

typedef struct {
    Stream lossless, lossy;
    uint64_t ids[2][256];    /* packets delivered per first byte: [0] lossless, [1] lossy */
    uint64_t conn_changes, conn_offline;
    uint64_t msgs_rx;
    uint32_t tx_seq[2];      /* next seq to send: [0] lossless, [1] lossy */
    uint64_t tx[2];
} FriendState;

static FriendState g_friends[MAX_FRIENDS];

static int seen_test_and_set(Stream *s, uint32_t seq)
{
    if (seq >= SEEN_MAX_BITS) return 0;  /* not tracked: never a dup */
    if ((size_t)seq >= s->seen_bits) {
        size_t bits = s->seen_bits ? s->seen_bits : 4096;
        while (bits <= seq) bits *= 2;
        if (bits > SEEN_MAX_BITS) bits = SEEN_MAX_BITS;
        uint8_t *n = realloc(s->seen, bits / 8);
        if (n == NULL) return 0;
        memset(n + s->seen_bits / 8, 0, (bits - s->seen_bits) / 8);
        s->seen = n;
        s->seen_bits = bits;
    }
    uint8_t mask = (uint8_t)(1u << (seq & 7));
    int was = (s->seen[seq / 8] & mask) != 0;
    s->seen[seq / 8] |= mask;
    return was;
}

static void account(Stream *s, const uint8_t *data, size_t len)
{
    uint64_t now = mono_us();
    s->rx++;
    if (len < MIN_PACKET || get_be32(data + 5) != packet_checksum(data, len)) {
        s->bad++;
        return;
    }
    uint32_t seq = get_be32(data + 1);
    if (seen_test_and_set(s, seq)) {
        s->dup++;
        return;
    }
    s->unique++;
    s->bytes += len;
    if (seq >= s->next_expected) {
        s->next_expected = seq + 1;
    } else {
        s->reordered++;
    }
    if (s->last_rx_us != 0 && now - s->last_rx_us > s->max_gap_us) s->max_gap_us = now - s->last_rx_us;
    s->last_rx_us = now;
    uint64_t sent = get_be64(data + 9);
    uint64_t lat = now >= sent ? now - sent : 0;
    s->lat_sum_us += lat;
    s->lat_n++;
    if (lat > s->lat_max_us) s->lat_max_us = lat;
}

/* ---------- echo queue ---------- */

typedef struct {
    uint32_t friend_number;
    uint16_t len;
    uint8_t data[TOX_MAX_CUSTOM_PACKET_SIZE];
} EchoItem;

static EchoItem *g_echo;  /* ring, allocated on first use */
static size_t g_echo_head, g_echo_count;
static uint64_t g_echo_tx, g_echo_dropped;
static int g_echo_enabled;

static int echo_try_send(Tox *tox, uint32_t f, const uint8_t *d, size_t len)
{
    Tox_Err_Friend_Custom_Packet err;
    if (tox_friend_send_lossless_packet(tox, f, d, len, &err)) {
        g_echo_tx++;
        return 1;
    }
    if (err == TOX_ERR_FRIEND_CUSTOM_PACKET_SENDQ) return 0;
    g_echo_dropped++;  /* not connected etc.: give up on this one */
    return 1;
}

static void echo_packet(Tox *tox, uint32_t f, const uint8_t *d, size_t len)
{
    if (g_echo_count == 0 && echo_try_send(tox, f, d, len)) return;
    if (g_echo == NULL) g_echo = calloc(ECHO_QUEUE_LEN, sizeof(EchoItem));
    if (g_echo == NULL || g_echo_count == ECHO_QUEUE_LEN) {
        g_echo_dropped++;
        return;
    }
    EchoItem *it = &g_echo[(g_echo_head + g_echo_count) % ECHO_QUEUE_LEN];
    it->friend_number = f;
    it->len = (uint16_t)len;
    memcpy(it->data, d, len);
    g_echo_count++;
}

static void echo_pump(Tox *tox)
{
    while (g_echo_count > 0) {
        EchoItem *it = &g_echo[g_echo_head];
        if (!echo_try_send(tox, it->friend_number, it->data, it->len)) return;
        g_echo_head = (g_echo_head + 1) % ECHO_QUEUE_LEN;
        g_echo_count--;
    }
}

/* ---------- callbacks ---------- */

static void on_self_conn(Tox *tox, Tox_Connection c, void *ud)
{
    (void)tox; (void)ud;
    out("SELFCONN %s %llu %llu", conn_name(c), (unsigned long long)since_start_ms(),
        (unsigned long long)mono_us());
}

static void on_friend_conn(Tox *tox, uint32_t f, Tox_Connection c, void *ud)
{
    (void)tox; (void)ud;
    if (f < MAX_FRIENDS) {
        g_friends[f].conn_changes++;
        if (c == TOX_CONNECTION_NONE) g_friends[f].conn_offline++;
    }
    out("CONN %u %s %llu %llu", f, conn_name(c), (unsigned long long)since_start_ms(),
        (unsigned long long)mono_us());
}

static void on_message(Tox *tox, uint32_t f, Tox_Message_Type type, const uint8_t *msg, size_t len, void *ud)
{
    (void)tox; (void)type; (void)ud;
    char text[TOX_MAX_MESSAGE_LENGTH + 1];
    if (len > TOX_MAX_MESSAGE_LENGTH) len = TOX_MAX_MESSAGE_LENGTH;
    for (size_t i = 0; i < len; i++) text[i] = msg[i] < 0x20 ? ' ' : (char)msg[i];
    text[len] = 0;
    if (f < MAX_FRIENDS) g_friends[f].msgs_rx++;
    out("MSGRX %u %s", f, text);
}

/* Counts a delivered custom packet by its id; the first of an id from a
 * friend is also reported at once (PKTID). */
static void count_id(uint32_t f, int lossy, const uint8_t *d, size_t len)
{
    if (f >= MAX_FRIENDS || len == 0) return;
    if (g_friends[f].ids[lossy][d[0]]++ == 0)
        out("PKTID %u %s %u %zu %llu", f, lossy ? "lossy" : "lossless", (unsigned)d[0], len,
            (unsigned long long)mono_us());
}

static void on_lossless(Tox *tox, uint32_t f, const uint8_t *d, size_t len, void *ud)
{
    (void)ud;
    count_id(f, 0, d, len);
    if (f < MAX_FRIENDS) account(&g_friends[f].lossless, d, len);
    if (g_echo_enabled) echo_packet(tox, f, d, len);
}

static void on_lossy(Tox *tox, uint32_t f, const uint8_t *d, size_t len, void *ud)
{
    (void)tox; (void)ud;
    count_id(f, 1, d, len);
    if (f < MAX_FRIENDS) account(&g_friends[f].lossy, d, len);
}

static void on_log(Tox *tox, Tox_Log_Level level, const char *file, uint32_t line, const char *func,
                   const char *message, void *ud)
{
    (void)tox; (void)ud;
    fprintf(stderr, "%llu L%d %s:%u %s: %s\n", (unsigned long long)since_start_ms(), (int)level, file, line,
            func, message);
}

/* ---------- send jobs ---------- */

typedef struct {
    int active;
    int lossy;
    uint32_t friend_number, count, done, size;
    uint8_t id;
    uint64_t start_us, last_progress_us;
    int blocked;  /* last attempt hit SENDQ */
} Job;

static Job g_jobs[2];  /* [0] lossless, [1] lossy */

static void job_finish(Job *j, const char *err)
{
    uint64_t ms = (mono_us() - j->start_us) / 1000ull;
    out("SENT %u %llu friend=%u kind=%s start_us=%llu err=%s", j->done, (unsigned long long)ms, j->friend_number,
        j->lossy ? "lossy" : "lossless", (unsigned long long)j->start_us, err);
    j->active = 0;
    j->blocked = 0;
}

static const char *custom_err_name(Tox_Err_Friend_Custom_Packet e)
{
    switch (e) {
        case TOX_ERR_FRIEND_CUSTOM_PACKET_FRIEND_NOT_FOUND: return "friend_not_found";
        case TOX_ERR_FRIEND_CUSTOM_PACKET_FRIEND_NOT_CONNECTED: return "friend_not_connected";
        case TOX_ERR_FRIEND_CUSTOM_PACKET_INVALID: return "invalid";
        case TOX_ERR_FRIEND_CUSTOM_PACKET_EMPTY: return "empty";
        case TOX_ERR_FRIEND_CUSTOM_PACKET_TOO_LONG: return "too_long";
        case TOX_ERR_FRIEND_CUSTOM_PACKET_SENDQ: return "sendq";
        default: return "other";
    }
}

static void job_pump(Tox *tox, Job *j)
{
    if (!j->active) return;
    uint8_t pkt[TOX_MAX_CUSTOM_PACKET_SIZE];
    FriendState *fs = &g_friends[j->friend_number];
    int kind = j->lossy ? 1 : 0;
    j->blocked = 0;
    for (int burst = 0; burst < SEND_BURST && j->done < j->count; burst++) {
        build_packet(pkt, j->size, j->id, fs->tx_seq[kind]);
        Tox_Err_Friend_Custom_Packet err;
        bool ok = j->lossy ? tox_friend_send_lossy_packet(tox, j->friend_number, pkt, j->size, &err)
                           : tox_friend_send_lossless_packet(tox, j->friend_number, pkt, j->size, &err);
        if (ok) {
            fs->tx_seq[kind]++;
            fs->tx[kind]++;
            j->done++;
            j->last_progress_us = mono_us();
            continue;
        }
        if (err == TOX_ERR_FRIEND_CUSTOM_PACKET_SENDQ) {
            j->blocked = 1;
            if (mono_us() - j->last_progress_us > STALL_LIMIT_US) job_finish(j, "stalled");
            return;
        }
        job_finish(j, custom_err_name(err));
        return;
    }
    if (j->done >= j->count) job_finish(j, "none");
}

/* ---------- commands ---------- */

static int g_quit;

static void stream_fields(char *buf, size_t cap, const char *prefix, const Stream *s)
{
    uint64_t lost = (uint64_t)s->next_expected > s->unique ? (uint64_t)s->next_expected - s->unique : 0;
    snprintf(buf, cap,
             "%srx=%llu %sbad=%llu %sdup=%llu %sreordered=%llu %slost=%llu %sbytes_rx=%llu %smax_gap_ms=%llu "
             "%smax_gap_us=%llu %slast_rx_us=%llu %slat_avg_us=%llu %slat_max_us=%llu",
             prefix, (unsigned long long)s->rx, prefix, (unsigned long long)s->bad, prefix,
             (unsigned long long)s->dup, prefix, (unsigned long long)s->reordered, prefix,
             (unsigned long long)lost, prefix, (unsigned long long)s->bytes, prefix,
             (unsigned long long)(s->max_gap_us / 1000), prefix, (unsigned long long)s->max_gap_us, prefix,
             (unsigned long long)s->last_rx_us, prefix,
             (unsigned long long)(s->lat_n ? s->lat_sum_us / s->lat_n : 0), prefix,
             (unsigned long long)s->lat_max_us);
}

/* "<id>:<n>,..." for every id with a count, ascending; "-" for none. */
static void id_counts(char *buf, size_t cap, const uint64_t ids[256])
{
    size_t used = 0;
    buf[0] = 0;
    for (int id = 0; id < 256 && used < cap; id++) {
        if (ids[id] == 0) continue;
        int w = snprintf(buf + used, cap - used, "%s%d:%llu", used ? "," : "", id, (unsigned long long)ids[id]);
        if (w < 0) break;
        used += (size_t)w;
    }
    if (used == 0) snprintf(buf, cap, "-");
}

static void stats_line(Tox *tox, uint32_t f)
{
    FriendState *fs = &g_friends[f];
    Tox_Err_Friend_Query qerr;
    Tox_Connection c = tox_friend_get_connection_status(tox, f, &qerr);
    char a[1024], b[1024];
    static char ids_lossless[256 * 26], ids_lossy[256 * 26]; /* "255:<20 digits>," each at most */
    stream_fields(a, sizeof a, "custom_", &fs->lossless);
    stream_fields(b, sizeof b, "lossy_", &fs->lossy);
    id_counts(ids_lossless, sizeof ids_lossless, fs->ids[0]);
    id_counts(ids_lossy, sizeof ids_lossy, fs->ids[1]);
    out("STATS friend=%u status=%s %s %s msgs_rx=%llu custom_tx=%llu lossy_tx=%llu echo_tx=%llu "
        "echo_dropped=%llu custom_ids=%s lossy_ids=%s conn_changes=%llu conn_offline=%llu now_us=%llu",
        f, qerr == TOX_ERR_FRIEND_QUERY_OK ? conn_name(c) : "none", a, b, (unsigned long long)fs->msgs_rx,
        (unsigned long long)fs->tx[0], (unsigned long long)fs->tx[1], (unsigned long long)g_echo_tx,
        (unsigned long long)g_echo_dropped, ids_lossless, ids_lossy, (unsigned long long)fs->conn_changes,
        (unsigned long long)fs->conn_offline, (unsigned long long)mono_us());
}

static int parse_friend(const char *s, uint32_t *f)
{
    return parse_u32(s, f) != 0 || *f >= MAX_FRIENDS ? -1 : 0;
}

static void handle_line(Tox *tox, char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = 0;
    if (n == 0) return;

    /* MSG keeps the rest of the line as text. */
    if (strncmp(line, "MSG ", 4) == 0) {
        char *p = line + 4;
        char *sp = strchr(p, ' ');
        uint32_t f;
        if (sp == NULL) { out("ERR MSG usage: MSG <friend> <text>"); return; }
        *sp = 0;
        if (parse_friend(p, &f) != 0) { out("ERR MSG bad friend number"); return; }
        const char *text = sp + 1;
        Tox_Err_Friend_Send_Message err;
        uint32_t id = tox_friend_send_message(tox, f, TOX_MESSAGE_TYPE_NORMAL, (const uint8_t *)text, strlen(text),
                                              &err);
        if (err != TOX_ERR_FRIEND_SEND_MESSAGE_OK) { out("ERR MSG tox error %d", (int)err); return; }
        out("OK MSG %u", id);
        return;
    }

    char *argv[8];
    int argc = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " ", &save); t != NULL && argc < 8; t = strtok_r(NULL, " ", &save)) argv[argc++] = t;
    if (argc == 0) return;
    const char *cmd = argv[0];

    if (strcmp(cmd, "BOOTSTRAP") == 0 || strcmp(cmd, "RELAY") == 0) {
        uint8_t pk[TOX_PUBLIC_KEY_SIZE];
        uint32_t port;
        if (argc != 4 || parse_u32(argv[2], &port) != 0 || port == 0 || port > 65535 ||
            from_hex(argv[3], pk, sizeof pk) != 0) {
            out("ERR %s usage: %s <ip> <port> <pkhex>", cmd, cmd);
            return;
        }
        Tox_Err_Bootstrap err;
        bool ok = cmd[0] == 'B' ? tox_bootstrap(tox, argv[1], (uint16_t)port, pk, &err)
                                : tox_add_tcp_relay(tox, argv[1], (uint16_t)port, pk, &err);
        if (!ok) { out("ERR %s tox error %d", cmd, (int)err); return; }
        out("OK %s", cmd);
    } else if (strcmp(cmd, "ADDFRIEND") == 0) {
        uint8_t pk[TOX_PUBLIC_KEY_SIZE];
        if (argc != 2 || from_hex(argv[1], pk, sizeof pk) != 0) { out("ERR ADDFRIEND usage: ADDFRIEND <pkhex>"); return; }
        Tox_Err_Friend_Add err;
        uint32_t f = tox_friend_add_norequest(tox, pk, &err);
        if (err != TOX_ERR_FRIEND_ADD_OK) { out("ERR ADDFRIEND tox error %d", (int)err); return; }
        if (f >= MAX_FRIENDS) { out("ERR ADDFRIEND friend number %u beyond harness limit", f); return; }
        out("FRIEND %u", f);
    } else if (strcmp(cmd, "SENDCUSTOM") == 0 || strcmp(cmd, "SENDLOSSY") == 0) {
        int lossy = cmd[4] == 'L';
        uint32_t f, count, size, id;
        if (argc != 5 || parse_friend(argv[1], &f) != 0 || parse_u32(argv[2], &count) != 0 ||
            parse_u32(argv[3], &size) != 0 || parse_u32(argv[4], &id) != 0) {
            out("ERR %s usage: %s <friend> <count> <size> <id>", cmd, cmd);
            return;
        }
        if (size < MIN_PACKET || size > TOX_MAX_CUSTOM_PACKET_SIZE) {
            out("ERR %s size must be %d..%d", cmd, MIN_PACKET, TOX_MAX_CUSTOM_PACKET_SIZE);
            return;
        }
        if (lossy ? (id < 200 || id > 254) : (id < 160 || id > 191)) {
            out("ERR %s id out of range (%s)", cmd, lossy ? "200..254" : "160..191");
            return;
        }
        Job *j = &g_jobs[lossy];
        if (j->active) { out("ERR %s busy", cmd); return; }
        memset(j, 0, sizeof *j);
        j->active = 1;
        j->lossy = lossy;
        j->friend_number = f;
        j->count = count;
        j->size = size;
        j->id = (uint8_t)id;
        j->start_us = j->last_progress_us = mono_us();
        out("OK %s", cmd);
        job_pump(tox, j);
    } else if (strcmp(cmd, "STATS") == 0) {
        uint32_t f = 0;
        if (argc > 2 || (argc == 2 && parse_friend(argv[1], &f) != 0)) { out("ERR STATS usage: STATS [<friend>]"); return; }
        stats_line(tox, f);
    } else if (strcmp(cmd, "QUIT") == 0) {
        out("BYE");
        g_quit = 1;
    } else {
        out("ERR %s unknown command", cmd);
    }
}

/* ---------- start-up ---------- */

static uint16_t probe_udp_port(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void usage_fail(const char *msg)
{
    out("ERR START %s", msg);
    exit(1);
}

int main(int argc, char **argv)
{
    g_start_us = mono_us();
    uint32_t udp_port = 0;
    int udp = 1, ipv6 = 0, lan = 0, log = 0, have_sk = 0;
    uint8_t sk[TOX_SECRET_KEY_SIZE];
    const char *name = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--udp-port") == 0) {
            if (parse_u32(v, &udp_port) != 0 || udp_port > 65535) usage_fail("bad --udp-port");
            i++;
        } else if (strcmp(a, "--no-udp") == 0) {
            udp = 0;
        } else if (strcmp(a, "--ipv6") == 0 || strcmp(a, "--local-discovery") == 0) {
            uint32_t b;
            if (parse_u32(v, &b) != 0 || b > 1) usage_fail("expected 0 or 1");
            if (a[2] == 'i') ipv6 = (int)b; else lan = (int)b;
            i++;
        } else if (strcmp(a, "--secret-key") == 0) {
            if (from_hex(v, sk, sizeof sk) != 0) usage_fail("bad --secret-key (64 hex digits)");
            have_sk = 1;
            i++;
        } else if (strcmp(a, "--name") == 0) {
            if (v == NULL) usage_fail("missing --name value");
            name = v;
            i++;
        } else if (strcmp(a, "--echo") == 0) {
            g_echo_enabled = 1;
        } else if (strcmp(a, "--log") == 0) {
            log = 1;
        } else {
            usage_fail("unknown argument");
        }
    }

    Tox *tox = NULL;
    /* A probed free port can be taken before toxcore binds it: retry a few times. */
    for (int attempt = 0; attempt < 5 && tox == NULL; attempt++) {
        struct Tox_Options *opts = tox_options_new(NULL);
        if (opts == NULL) usage_fail("tox_options_new failed");
        tox_options_set_ipv6_enabled(opts, ipv6);
        tox_options_set_udp_enabled(opts, udp);
        tox_options_set_local_discovery_enabled(opts, lan);
        tox_options_set_tcp_port(opts, 0);
        if (udp) {
            uint16_t p = udp_port != 0 ? (uint16_t)udp_port : probe_udp_port();
            if (p == 0) usage_fail("no free UDP port");
            tox_options_set_start_port(opts, p);
            tox_options_set_end_port(opts, p);
        }
        if (have_sk) {
            tox_options_set_savedata_type(opts, TOX_SAVEDATA_TYPE_SECRET_KEY);
            tox_options_set_savedata_data(opts, sk, sizeof sk);
        }
        if (log) tox_options_set_log_callback(opts, on_log);
        Tox_Err_New err;
        tox = tox_new(opts, &err);
        tox_options_free(opts);
        if (tox == NULL && !(err == TOX_ERR_NEW_PORT_ALLOC && udp_port == 0)) {
            out("ERR START tox_new error %d", (int)err);
            return 1;
        }
    }
    if (tox == NULL) usage_fail("tox_new: no UDP port could be bound");

    if (name != NULL) tox_self_set_name(tox, (const uint8_t *)name, strlen(name), NULL);
    tox_callback_self_connection_status(tox, on_self_conn);
    tox_callback_friend_connection_status(tox, on_friend_conn);
    tox_callback_friend_message(tox, on_message);
    tox_callback_friend_lossless_packet(tox, on_lossless);
    tox_callback_friend_lossy_packet(tox, on_lossy);

    uint8_t addr[TOX_ADDRESS_SIZE], pk[TOX_PUBLIC_KEY_SIZE], dht[TOX_PUBLIC_KEY_SIZE];
    char hex[2 * TOX_ADDRESS_SIZE + 1];
    tox_self_get_address(tox, addr);
    tox_self_get_public_key(tox, pk);
    tox_self_get_dht_id(tox, dht);
    to_hex(addr, sizeof addr, hex);
    out("ID %s", hex);
    to_hex(pk, sizeof pk, hex);
    out("PK %s", hex);
    to_hex(dht, sizeof dht, hex);
    out("DHTPK %s", hex);
    Tox_Err_Get_Port perr;
    uint16_t bound = tox_self_get_udp_port(tox, &perr);
    out("UDPPORT %u", perr == TOX_ERR_GET_PORT_OK ? bound : 0);
    out("READY");

    char buf[LINE_MAX_LEN];
    size_t used = 0;
    while (!g_quit) {
        tox_iterate(tox, NULL);
        job_pump(tox, &g_jobs[0]);
        job_pump(tox, &g_jobs[1]);
        echo_pump(tox);

        int timeout = (int)tox_iteration_interval(tox);
        for (int k = 0; k < 2; k++) {
            if (g_jobs[k].active) timeout = g_jobs[k].blocked ? 1 : 0;
        }
        if (g_echo_count > 0 && timeout > 1) timeout = 1;

        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        int r = poll(&pfd, 1, timeout);
        if (r < 0 && errno != EINTR) break;
        if (r > 0) {
            if (used == sizeof buf) used = 0;  /* overlong line: drop it */
            ssize_t got = read(STDIN_FILENO, buf + used, sizeof buf - used);
            if (got == 0) break;  /* EOF: our driver is gone */
            if (got < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                break;
            }
            used += (size_t)got;
            char *start = buf;
            char *nl;
            while (!g_quit && (nl = memchr(start, '\n', used - (size_t)(start - buf))) != NULL) {
                *nl = 0;
                handle_line(tox, start);
                start = nl + 1;
            }
            used -= (size_t)(start - buf);
            memmove(buf, start, used);
        }
    }
    tox_kill(tox);
    for (int i = 0; i < MAX_FRIENDS; i++) {
        free(g_friends[i].lossless.seen);
        free(g_friends[i].lossy.seen);
    }
    free(g_echo);
    return 0;
}
