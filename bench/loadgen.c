/* loadgen: the MQTT 3.1.1 and 5.0 load generator of `ubroker bench`.
 *
 * One single-threaded poll() loop drives every connection with pre-encoded packets written in
 * large batches, so that on a 2-core machine it needs a fraction of one core while the broker
 * under test saturates the other. It verifies what it receives:
 *   - every acknowledged message (PUBACK at QoS 1, PUBREC at QoS 2) reaches every subscriber,
 *   - no message is delivered twice at QoS 2 (and duplicates are counted at QoS 0/1),
 *   - messages of one publisher arrive in the order they were published.
 * Each payload carries (publisher index, sequence number), checked against per-subscriber bitmaps.
 *
 * Modes (the result is one JSON object on stdout):
 *   fanin    --pubs N --subs 1 --qos Q        N publishers -> bench/<run>/<i>, 1 subscriber bench/<run>/#
 *   fanout   --pubs 1 --subs N --qos Q        (the same engine; only the counts differ)
 *   latency  [--pair]                        publish QoS 0 to a topic the client (or its pair) subscribes
 *   connect  --conc C                        CONNECT / CONNACK / DISCONNECT / wait for close, C at a time
 *   idle     --clients N                     N clients, each with one subscription; prints READY, holds
 *                                            them until stdin closes, then disconnects
 * --ws PATH puts every connection of fanin, fanout, latency or idle over WebSockets (RFC 6455): the
 * Upgrade on PATH, then masked binary frames; the verification is the same as over TCP.
 * --v5 (fanin, fanout) speaks MQTT 5.0: every PUBLISH carries one User Property, which must come
 * back unaltered (MQTT-3.3.2-17/18), each delivery must be on its publisher's topic, and an
 * acknowledgement with a reason code of 0x80 or more counts as an error. --alias sends each
 * publisher's topic once with Topic Alias 1 and then the alias alone; --shared GROUP has the
 * subscribers share $share/GROUP/<filter>, so each message must reach exactly one of them (MQTT 5.0
 * section 4.8.2), in order per member; the result gives each member's count.
 *
 * Build: gcc -O2 -o bench/bin/loadgen bench/loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <strings.h>
#include <unistd.h>

/* ------------------------------------------------------------------ options */

static const char *o_host = "127.0.0.1";
static int o_port = 1883;
static const char *o_mode = "fanin";
static int o_pubs = 8, o_subs = 1, o_qos = 0;
static long o_count = 2000000;       /* messages per publisher at most */
static double o_duration = 3.0;      /* seconds of publishing at most */
static int o_window = 20;            /* unacknowledged QoS 1/2 messages per publisher (Mosquitto's
                                        max_inflight_messages: it disconnects a QoS 2 publisher past it) */
static int o_pipe = 2000;            /* QoS 0: messages per publisher ahead of the slowest subscriber */
static int o_payload = 16;           /* bytes, at least 16 */
static double o_drain = 10.0;        /* seconds allowed after publishing for deliveries to finish */
static double o_idle = 1.5;          /* end the drain after this long with no progress */
static int o_persistent = 0;         /* subscribers with a persistent session */
static int o_pair = 0;               /* latency: separate publisher and subscriber connections */
static int o_conc = 8;               /* connect: connections in progress at once */
static int o_clients = 100;          /* idle: clients to hold */
static long o_samples = 20000;       /* latency: round trips at most */
static const char *o_tag = NULL;     /* unique part of topics and client ids */
static int o_watch = 0;              /* pid of the broker, for its CPU use */
static int o_v5 = 0;                 /* protocol level 5 instead of 4 (3.1.1) */
static int o_alias = 0;              /* v5: publishers' topics by Topic Alias after the first PUBLISH */
static const char *o_shared = NULL;  /* subscribers share $share/<this>/<filter> */

static double t0_process;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Still one JSON object, so the driver can report why. */
    printf("{\"mode\":\"%s\",\"fatal\":\"", o_mode);
    for (char *p = msg; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar(*p >= 32 ? *p : ' ');
    }
    printf("\"}\n");
    fflush(stdout);
    exit(2);
}

static void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) die("out of memory (%zu x %zu)", n, sz);
    return p;
}

/* ------------------------------------------------------------------ encoding */

static size_t put_rl(uint8_t *p, size_t rl) {
    size_t n = 0;
    do {
        uint8_t b = rl % 128;
        rl /= 128;
        if (rl) b |= 0x80;
        p[n++] = b;
    } while (rl);
    return n;
}

static size_t put_str(uint8_t *p, const char *s, size_t len) {
    p[0] = len >> 8;
    p[1] = len & 0xff;
    memcpy(p + 2, s, len);
    return len + 2;
}

static size_t enc_connect(uint8_t *out, const char *cid, int keepalive, int clean) {
    uint8_t body[300];
    size_t n = 0;
    n += put_str(body + n, "MQTT", 4);
    body[n++] = o_v5 ? 5 : 4;    /* protocol level 5.0 or 3.1.1 */
    body[n++] = clean ? 0x02 : 0x00; /* clean session, or a persistent one */
    body[n++] = keepalive >> 8;
    body[n++] = keepalive & 0xff;
    if (o_v5 && clean) body[n++] = 0;
    if (o_v5 && !clean) {
        /* At level 5 a session outlives the connection only with a Session Expiry Interval
         * (MQTT-3.1.2-23); 0xFFFFFFFF: it never expires. */
        static const uint8_t expiry[6] = {5, 0x11, 0xff, 0xff, 0xff, 0xff};
        memcpy(body + n, expiry, sizeof expiry);
        n += sizeof expiry;
    }
    n += put_str(body + n, cid, strlen(cid));
    size_t h = 0;
    out[h++] = 0x10;
    h += put_rl(out + h, n);
    memcpy(out + h, body, n);
    return h + n;
}

static size_t enc_subscribe(uint8_t *out, uint16_t pid, const char *filter, int qos) {
    size_t fl = strlen(filter), rl = 2 + o_v5 + 2 + fl + 1, h = 0;
    out[h++] = 0x82;
    h += put_rl(out + h, rl);
    out[h++] = pid >> 8;
    out[h++] = pid & 0xff;
    if (o_v5) out[h++] = 0; /* no properties */
    h += put_str(out + h, filter, fl);
    out[h++] = qos;
    return h;
}

/* A PUBLISH template per publisher: the packet id and the payload head are patched per message. */
typedef struct {
    uint8_t pkt[1024];
    size_t len;
    size_t pid_off;  /* 0 at QoS 0 */
    size_t pay_off;
} tmpl_t;

/* props: a v5 properties section, its length first (NULL at 3.1.1: none). */
static void make_tmpl(tmpl_t *t, const char *topic, int qos, int payload, const uint8_t *props, size_t plen) {
    size_t tl = strlen(topic);
    size_t rl = 2 + tl + (qos ? 2 : 0) + plen + payload;
    size_t h = 0;
    if (rl + 8 > sizeof t->pkt) die("payload too large");
    t->pkt[h++] = 0x30 | (qos << 1);
    h += put_rl(t->pkt + h, rl);
    h += put_str(t->pkt + h, topic, tl);
    t->pid_off = 0;
    if (qos) {
        t->pid_off = h;
        h += 2;
    }
    if (props) {
        memcpy(t->pkt + h, props, plen);
        h += plen;
    }
    t->pay_off = h;
    memset(t->pkt + h, 'x', payload);
    t->len = h + payload;
}

static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static inline uint32_t get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void put64(uint8_t *p, uint64_t v) {
    put32(p, v >> 32);
    put32(p + 4, (uint32_t)v);
}
static inline uint64_t get64(const uint8_t *p) {
    return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

/* Parse one packet at p[0..n): returns its total length, 0 if incomplete, -1 if malformed.
 * hdr = first byte, body and blen = variable header + payload. */
static long parse_pkt(const uint8_t *p, size_t n, uint8_t *hdr, const uint8_t **body, size_t *blen) {
    if (n < 2) return 0;
    size_t rl = 0, mul = 1, i = 1;
    for (;;) {
        if (i >= n) return 0;
        if (i > 4) return -1;
        uint8_t b = p[i++];
        rl += (b & 0x7f) * mul;
        mul *= 128;
        if (!(b & 0x80)) break;
    }
    if (n < i + rl) return 0;
    *hdr = p[0];
    *body = p + i;
    *blen = rl;
    return (long)(i + rl);
}

/* A Variable Byte Integer at p[*pos..n) (MQTT 5.0 section 1.5.5); -1 if malformed or cut. */
static long get_vbi(const uint8_t *p, size_t n, size_t *pos) {
    long v = 0, mul = 1;
    for (int i = 0; i < 4; i++) {
        if (*pos >= n) return -1;
        uint8_t b = p[(*pos)++];
        v += (b & 0x7f) * mul;
        mul *= 128;
        if (!(b & 0x80)) return v;
    }
    return -1;
}

/* The v5 property at p[*pos..end) (MQTT 5.0 section 2.2.2.2): its id, its value as a number
 * (fixed-size integers, VBI) or as val/vlen (strings, binary data; a User Property's name, its
 * value at val2/vlen2). Returns 1, 0 at the end, -1 if malformed or of an id not known. */
typedef struct {
    int id;
    uint32_t num;
    const uint8_t *val, *val2;
    size_t vlen, vlen2;
} prop_t;

static int prop_next(const uint8_t *p, size_t end, size_t *pos, prop_t *pr) {
    if (*pos >= end) return 0;
    int id = p[(*pos)++], size;
    switch (id) {
    case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A: size = 1; break;
    case 0x13: case 0x21: case 0x22: case 0x23: size = 2; break;
    case 0x02: case 0x11: case 0x18: case 0x27: size = 4; break;
    case 0x0B: size = -1; break;                                     /* Variable Byte Integer */
    case 0x26: size = -3; break;                                     /* string pair */
    case 0x03: case 0x08: case 0x09: case 0x12: case 0x15: case 0x16:
    case 0x1A: case 0x1C: case 0x1F: size = -2; break;               /* string, binary data */
    default: return -1;
    }
    pr->id = id;
    pr->num = 0;
    if (size > 0) {
        if (*pos + size > end) return -1;
        for (int i = 0; i < size; i++) pr->num = pr->num << 8 | p[(*pos)++];
        return 1;
    }
    if (size == -1) {
        long v = get_vbi(p, end, pos);
        if (v < 0) return -1;
        pr->num = (uint32_t)v;
        return 1;
    }
    for (int k = 0; k < (size == -3 ? 2 : 1); k++) {
        if (*pos + 2 > end) return -1;
        size_t l = p[*pos] << 8 | p[*pos + 1];
        if (*pos + 2 + l > end) return -1;
        if (k) { pr->val2 = p + *pos + 2; pr->vlen2 = l; }
        else { pr->val = p + *pos + 2; pr->vlen = l; }
        *pos += 2 + l;
    }
    return 1;
}

/* ------------------------------------------------------------------ sockets */

static int tcp_connect(int nonblock) {
    int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(o_port);
    if (inet_pton(AF_INET, o_host, &a.sin_addr) != 1) die("bad host %s", o_host);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && !(nonblock && errno == EINPROGRESS)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* ------------------------------------------------------------------ WebSockets (--ws PATH) */

/* With --ws every connection opens with the HTTP/1.1 Upgrade of RFC 6455 section 4.1 (version
 * 13, subprotocol mqtt as MQTT-6.0.0-3 asks) and then carries its MQTT bytes in binary frames:
 * ours masked (section 5.3), one frame per write of whatever was queued; the broker's unmasked,
 * de-framed here in place so the MQTT parser never sees a frame header and a packet may span
 * frames. Pings are answered with pongs; a close frame ends the connection. */

static const char *o_ws = NULL;      /* request path; NULL: plain TCP */
static long o_ws_frame = 0;          /* at most this many payload bytes per frame; 0: one frame per write */

typedef struct {
    uint8_t h[14];
    int hn;              /* header bytes gathered so far */
    int in_frame, op;    /* inside a frame's payload, and its opcode */
    uint64_t left;       /* payload bytes of the current frame still to come */
    uint8_t ctl[125];    /* a control frame's payload (at most 125 bytes, section 5.5) */
    int cn;
    uint8_t png[125];    /* the latest ping's payload, to send back in a pong (RFC 6455 5.5.3: */
    int pong, pn;        /* answering only the most recent of several is allowed) */
    int close_code;      /* -1 while open; the code of the broker's close frame */
    const char *err;     /* why the broker's frames were refused */
} ws_t;

static ws_t **g_ws;  /* by file descriptor: the WebSocket state of a connection, NULL for TCP */
static int g_ws_cap;

static ws_t *ws_of(int fd) { return fd >= 0 && fd < g_ws_cap ? g_ws[fd] : NULL; }

static uint64_t g_rng;

/* xorshift64*: frame masks need not be secret here (RFC 6455 10.3 guards proxies from scripts),
 * only new per frame; seeded from the kernel. */
static uint32_t rng32(void) {
    if (!g_rng) {
        FILE *f = fopen("/dev/urandom", "rb");
        if (!f || fread(&g_rng, sizeof g_rng, 1, f) != 1) g_rng = (uint64_t)(now() * 1e9) ^ getpid();
        if (f) fclose(f);
        g_rng |= 1;
    }
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 0x2545F4914F6CDD1DULL) >> 32);
}

static uint32_t rol(uint32_t x, int n) { return x << n | x >> (32 - n); }

/* SHA-1 (FIPS 180-4), only for checking Sec-WebSocket-Accept. */
static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = (len + 9 + 63) / 64 * 64;
    uint8_t blk[64];
    for (size_t off = 0; off < total; off += 64) {
        for (int i = 0; i < 64; i++) {
            size_t k = off + i;
            blk[i] = k < len ? msg[k] : k == len ? 0x80 : 0;
        }
        if (off + 64 == total) put64(blk + 56, (uint64_t)len * 8);
        uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 16; i++) w[i] = get32(blk + 4 * i);
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    for (int i = 0; i < 5; i++) put32(out + 4 * i, h[i]);
}

static void base64(const uint8_t *in, size_t n, char *out) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = in[i] << 16 | (i + 1 < n ? in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = i + 1 < n ? al[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? al[v & 63] : '=';
    }
    out[o] = 0;
}

/* The value of header field `name` in the response head (names compared without case). */
static int head_field(const char *head, const char *name, char *val, size_t cap) {
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nl) || p[2 + nl] != ':') continue;
        const char *v = p + 3 + nl, *e = strstr(v, "\r\n");
        while (*v == ' ' || *v == '\t') v++;
        size_t l = e ? (size_t)(e - v) : strlen(v);
        while (l && (v[l - 1] == ' ' || v[l - 1] == '\t')) l--;
        if (l >= cap) l = cap - 1;
        memcpy(val, v, l);
        val[l] = 0;
        return 1;
    }
    return 0;
}

static void write_raw(int fd, const uint8_t *p, size_t n);

/* The opening handshake on a blocking socket; returns NULL or why it failed. The answer's head
 * is read exactly (peeked first), so no frame behind it is consumed here. */
static const char *ws_handshake(int fd) {
    uint8_t nonce[16];
    char key[32], req[512], head[2048], want[32], val[128];
    for (int i = 0; i < 16; i += 4) put32(nonce + i, rng32());
    base64(nonce, 16, key);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                     o_ws, o_host, o_port, key);
    write_raw(fd, (const uint8_t *)req, n);
    double end = now() + 10.0;
    size_t have = 0;
    char *eoh = NULL;
    while (!eoh) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (now() > end) return "no answer to the WebSocket handshake within 10 s";
        if (poll(&pf, 1, 100) <= 0) continue;
        ssize_t r = recv(fd, head, sizeof head - 1, MSG_PEEK);
        if (r <= 0) return "closed during the WebSocket handshake";
        head[r] = 0;
        eoh = strstr(head, "\r\n\r\n");
        if (!eoh && (size_t)r == sizeof head - 1) return "WebSocket handshake answer head too long";
        if (!eoh && (size_t)r == have) usleep(1000); /* nothing new yet */
        have = r;
    }
    size_t hl = eoh + 4 - head;
    if (recv(fd, head, hl, 0) != (ssize_t)hl) return "reading the handshake answer failed";
    head[hl] = 0;
    static char why[200];
    if (strncmp(head, "HTTP/1.1 101", 12)) {
        snprintf(why, sizeof why, "WebSocket handshake refused: %.*s", (int)strcspn(head, "\r\n"), head);
        return why;
    }
    char kg[80];
    uint8_t dig[20];
    snprintf(kg, sizeof kg, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    sha1((const uint8_t *)kg, strlen(kg), dig);
    base64(dig, 20, want);
    if (!head_field(head, "Sec-WebSocket-Accept", val, sizeof val) || strcmp(val, want)) {
        snprintf(why, sizeof why, "wrong Sec-WebSocket-Accept '%s' (expected %s)", val, want);
        return why;
    }
    if (!head_field(head, "Sec-WebSocket-Protocol", val, sizeof val) || strcmp(val, "mqtt"))
        return "the broker did not choose the subprotocol mqtt";
    if (fd >= g_ws_cap) {
        int cap = fd + 1024;
        g_ws = realloc(g_ws, cap * sizeof *g_ws);
        if (!g_ws) die("out of memory");
        memset(g_ws + g_ws_cap, 0, (cap - g_ws_cap) * sizeof *g_ws);
        g_ws_cap = cap;
    }
    ws_t *w = xcalloc(1, sizeof *w);
    w->close_code = -1;
    g_ws[fd] = w;
    return NULL;
}

/* One masked frame of opcode op around p[0..n) into out (room for n + 14); returns its length. */
static size_t ws_frame(uint8_t *out, int op, const uint8_t *p, size_t n) {
    size_t h = 0;
    out[h++] = 0x80 | op;
    if (n < 126) out[h++] = 0x80 | n;
    else if (n < 65536) { out[h++] = 0x80 | 126; out[h++] = n >> 8; out[h++] = n & 0xff; }
    else { out[h++] = 0x80 | 127; put64(out + h, n); h += 8; }
    uint8_t m[4];
    put32(m, rng32());
    memcpy(out + h, m, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) out[h + i] = p[i] ^ m[i & 3];
    return h + n;
}

static void ws_end_frame(ws_t *w) {
    w->in_frame = 0;
    if (w->op == 9) {
        memcpy(w->png, w->ctl, w->cn);
        w->pn = w->cn;
        w->pong = 1;
    }
    else if (w->op == 8) w->close_code = w->cn >= 2 ? w->ctl[0] << 8 | w->ctl[1] : 1005;
}

/* De-frame the n bytes at p in place: returns how many MQTT bytes are now at p, or -1 (w->err).
 * Header bytes split across reads are kept in w->h. */
static long ws_deframe(ws_t *w, uint8_t *p, size_t n) {
    size_t i = 0, o = 0;
    while (i < n) {
        if (!w->in_frame) {
            w->h[w->hn++] = p[i++];
            if (w->hn < 2) continue;
            int l7 = w->h[1] & 0x7f, need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
            if (w->hn < need) continue;
            if (w->h[1] & 0x80) { w->err = "masked frame from the broker (RFC 6455 5.1)"; return -1; }
            if (w->h[0] & 0x70) { w->err = "reserved bits set in a frame from the broker"; return -1; }
            w->op = w->h[0] & 0x0f;
            w->left = l7 == 126 ? (uint64_t)(w->h[2] << 8 | w->h[3]) : l7 == 127 ? get64(w->h + 2) : (uint64_t)l7;
            w->hn = 0;
            w->in_frame = 1;
            w->cn = 0;
            if (w->op == 1) { w->err = "text frame from the broker (MQTT goes in binary frames)"; return -1; }
            if (w->op >= 8 && (w->left > 125 || !(w->h[0] & 0x80))) { w->err = "malformed control frame"; return -1; }
            if (w->op != 0 && w->op != 2 && w->op < 8) { w->err = "reserved opcode from the broker"; return -1; }
            if (!w->left) ws_end_frame(w);
            continue;
        }
        size_t take = n - i < w->left ? n - i : (size_t)w->left;
        if (w->op >= 8) {
            memcpy(w->ctl + w->cn, p + i, take);
            w->cn += take;
        } else {
            memmove(p + o, p + i, take);
            o += take;
        }
        i += take;
        w->left -= take;
        if (!w->left) ws_end_frame(w);
    }
    return (long)o;
}


static void write_raw(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd pf = {fd, POLLOUT, 0};
                poll(&pf, 1, 1000);
                continue;
            }
            die("write: %s", strerror(errno));
        }
        p += w;
        n -= w;
    }
}

/* One packet (or several) on a blocking socket: as one frame over WebSockets. */
static void write_all(int fd, const uint8_t *p, size_t n) {
    ws_t *w = ws_of(fd);
    if (!w) {
        write_raw(fd, p, n);
        return;
    }
    uint8_t stackbuf[4096], *f = n + 14 <= sizeof stackbuf ? stackbuf : xcalloc(n + 14, 1);
    write_raw(fd, f, ws_frame(f, 2, p, n));
    if (f != stackbuf) free(f);
}

/* After de-framing: a ping is answered, a close frame ends the connection (-3, as EOF). */
static long ws_after_read(int fd, ws_t *w, uint8_t *p, size_t r) {
    long m = ws_deframe(w, p, r);
    if (m < 0) return -1;
    if (w->pong) {
        uint8_t f[140];
        w->pong = 0;
        write_raw(fd, f, ws_frame(f, 10, w->png, w->pn));
    }
    return w->close_code >= 0 ? -3 : m;
}

/* Blocking read of one whole packet (set-up phase), within timeout seconds. */
static int read_pkt(int fd, uint8_t *buf, size_t cap, size_t *have, double timeout, uint8_t *hdr,
                    const uint8_t **body, size_t *blen, long *plen) {
    double end = now() + timeout;
    for (;;) {
        long l = parse_pkt(buf, *have, hdr, body, blen);
        if (l < 0) return -1;
        if (l > 0) {
            *plen = l;
            return 0;
        }
        double left = end - now();
        if (left <= 0) return -2;
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) continue;
        ssize_t r = read(fd, buf + *have, cap - *have);
        if (r == 0) return -3;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -4;
        }
        ws_t *w = ws_of(fd);
        if (w) {
            long m = ws_after_read(fd, w, buf + *have, r);
            if (m < 0) return (int)m;
            r = m;
        }
        *have += r;
    }
}

static void consume(uint8_t *buf, size_t *have, long n) {
    memmove(buf, buf + n, *have - n);
    *have -= n;
}

/* What a v5 CONNACK allows (MQTT 5.0 section 3.2.2.3), each absent property at its default. */
typedef struct {
    long receive_max, alias_max, max_packet, max_qos;
} srv_t;

static void v5_connack(const char *cid, const uint8_t *b, size_t blen, srv_t *sv) {
    srv_t d = {65535, 0, 0, 2};
    size_t pos = 2;
    long pl = get_vbi(b, blen, &pos);
    if (pl < 0 || pos + pl != blen) die("client %s: malformed CONNACK properties", cid);
    prop_t pr;
    int rc;
    while ((rc = prop_next(b, blen, &pos, &pr)) > 0) {
        if (pr.id == 0x21) d.receive_max = pr.num;
        else if (pr.id == 0x22) d.alias_max = pr.num;
        else if (pr.id == 0x27) d.max_packet = pr.num;
        else if (pr.id == 0x24) d.max_qos = pr.num;
    }
    if (rc < 0) die("client %s: malformed or unknown CONNACK property", cid);
    if (!d.receive_max) die("client %s: CONNACK with Receive Maximum 0 (a protocol error)", cid);
    if (sv) *sv = d;
}

/* CONNECT (and SUBSCRIBE) on a blocking socket; dies with a clear message on failure. At level 5
 * the CONNACK's limits go to *sv (if not NULL). */
static int mqtt_open(const char *cid, const char *filter, int qos, int keepalive, srv_t *sv) {
    int fd = tcp_connect(0);
    if (fd < 0) die("connect to %s:%d: %s", o_host, o_port, strerror(errno));
    if (o_ws) {
        const char *why = ws_handshake(fd);
        if (why) die("client %s: %s", cid, why);
    }
    uint8_t buf[4096];
    /* --persistent: subscribers keep a persistent session (clean session 0) */
    size_t have = 0, n = enc_connect(buf, cid, keepalive, !(filter && o_persistent));
    write_all(fd, buf, n);
    uint8_t hdr;
    const uint8_t *body;
    size_t blen;
    long plen;
    int rc = read_pkt(fd, buf, sizeof buf, &have, 10.0, &hdr, &body, &blen, &plen);
    if (rc) die("client %s: no CONNACK (%d)", cid, rc);
    if (o_v5) {
        if (hdr != 0x20 || blen < 3) die("client %s: no v5 CONNACK", cid);
        if (body[1]) die("client %s: CONNACK refused (reason code 0x%02x)", cid, body[1]);
        v5_connack(cid, body, blen, sv);
    } else if (hdr != 0x20 || blen != 2 || body[1] != 0) die("client %s: CONNACK refused (code %d)", cid, blen == 2 ? body[1] : -1);
    consume(buf, &have, plen);
    if (filter) {
        n = enc_subscribe(buf + have, 1, filter, qos);
        write_all(fd, buf + have, n);
        for (;;) {
            rc = read_pkt(fd, buf, sizeof buf, &have, 10.0, &hdr, &body, &blen, &plen);
            if (rc) die("client %s: no SUBACK (%d)", cid, rc);
            if ((hdr & 0xf0) == 0x90) break;
            consume(buf, &have, plen); /* e.g. retained messages: not ours */
        }
        if (o_v5) {
            /* packet id, properties, one reason code: the granted QoS, or an error >= 0x80 */
            size_t pos = 2;
            long pl = get_vbi(body, blen, &pos);
            if (pl < 0 || pos + pl + 1 != blen) die("client %s: malformed v5 SUBACK", cid);
            if (body[blen - 1] != qos)
                die("client %s: SUBACK reason code 0x%02x to %s, asked QoS %d", cid, body[blen - 1], filter, qos);
        } else if (blen != 3 || body[2] != qos) die("client %s: SUBACK granted %d, asked %d", cid, blen == 3 ? body[2] : -1, qos);
        consume(buf, &have, plen);
    }
    if (have) die("client %s: unexpected data after set-up", cid);
    return fd;
}

/* ------------------------------------------------------------------ fan-in / fan-out */

typedef struct {
    int fd;
    int is_pub, idx;
    int dead;
    char why[160];
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint8_t *wbuf;
    size_t wlen, woff, wcap;
    ws_t *ws;            /* --ws: wbuf's bytes go out framed, through fbuf */
    uint8_t *fbuf;
    size_t flen, foff, fcap;
    /* publisher */
    tmpl_t t;
    tmpl_t t_first;      /* --alias: the first PUBLISH, naming the topic the alias stands for */
    uint32_t next_seq;
    int inflight;
    uint16_t next_pid;
    uint32_t *pid_seq;   /* [65536] */
    uint8_t *pid_state;  /* [65536] 0 free, 1 awaiting PUBACK/PUBREC, 2 awaiting PUBCOMP */
    uint8_t *acked;      /* bitmap over seq: PUBACK (QoS 1) or PUBREC (QoS 2) received */
    uint64_t n_acked, n_comp, n_proto;
    uint64_t n_refused;  /* v5: PUBACK or PUBREC with a reason code >= 0x80 (not acknowledged) */
    uint64_t n_comp_err; /* v5: PUBCOMP with a reason code >= 0x80 (acknowledged by its PUBREC) */
    /* subscriber */
    uint8_t **seen;      /* [pubs] bitmap over seq */
    int64_t *maxseq;     /* [pubs] highest seq received, -1 none */
    uint8_t *q2wait;     /* [65536] QoS 2 packet ids awaiting PUBREL */
    uint64_t n_recv, n_unique, n_dup, n_ooo, n_bad, n_redeliv, n_qos_mismatch;
    uint64_t n_noprop;   /* v5: delivered without the publisher's User Property */
} conn_t;

static int bit_get(const uint8_t *b, uint32_t i) { return b[i >> 3] >> (i & 7) & 1; }
static void bit_set(uint8_t *b, uint32_t i) { b[i >> 3] |= 1 << (i & 7); }

static void conn_dead(conn_t *c, const char *fmt, ...) {
    if (c->dead) return;
    c->dead = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    close(c->fd);
    c->fd = -1;
}

static void queue_bytes(conn_t *c, const uint8_t *p, size_t n) {
    if (c->wlen + n > c->wcap) {
        if (c->woff) {
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        if (c->wlen + n > c->wcap) {
            c->wcap = (c->wlen + n) * 2;
            c->wbuf = realloc(c->wbuf, c->wcap);
            if (!c->wbuf) die("out of memory");
        }
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

static int pending(const conn_t *c) { return c->woff < c->wlen || c->foff < c->flen; }

static void fbuf_room(conn_t *c, size_t n) {
    if (c->flen + n > c->fcap) {
        c->fcap = (c->flen + n) * 2;
        c->fbuf = realloc(c->fbuf, c->fcap);
        if (!c->fbuf) die("out of memory");
    }
}

/* Write buf[*off..*len) until it is all out or the socket is full; both are reset once it is out. */
static void write_some(conn_t *c, const uint8_t *buf, size_t *off, size_t *len) {
    while (!c->dead && *off < *len) {
        ssize_t w = write(c->fd, buf + *off, *len - *off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) conn_dead(c, "write: %s", strerror(errno));
            return;
        }
        *off += w;
    }
    if (*off == *len) *off = *len = 0;
}

/* Over WebSockets: what was queued becomes one frame (or frames of --ws-frame bytes, cut
 * anywhere, as MQTT-6.0.0-2 allows) once the previous write is all out. */
static void flush(conn_t *c) {
    if (!c->ws) {
        write_some(c, c->wbuf, &c->woff, &c->wlen);
        return;
    }
    if (c->foff == c->flen && c->woff < c->wlen) {
        size_t n = c->wlen - c->woff, step = o_ws_frame > 0 ? (size_t)o_ws_frame : n;
        c->foff = c->flen = 0;
        fbuf_room(c, n + (n / step + 1) * 14);
        for (size_t off = 0; off < n; off += step)
            c->flen += ws_frame(c->fbuf + c->flen, 2, c->wbuf + c->woff + off, n - off < step ? n - off : step);
        c->woff = c->wlen = 0;
    }
    write_some(c, c->fbuf, &c->foff, &c->flen);
}

static int g_subs_n;
static conn_t *g_conns;

/* May this publisher put one more message on the wire? QoS 1/2: within the window of
 * unacknowledged messages. QoS 0: within o_pipe messages of what the slowest subscriber has seen
 * of it (by sequence number, so dropped messages do not block it), so that the broker is always
 * busy but never buries the run under an unbounded backlog. */
static int64_t sub_progress(int p) {
    int64_t m = INT64_MAX;
    if (o_shared) {
        /* Each message goes to one member: the furthest member is where the publisher's
         * messages have got to (a member may never see some publisher at all). */
        m = 0;
        for (int s = 0; s < g_subs_n; s++)
            if (!g_conns[s].dead && g_conns[s].maxseq[p] + 1 > m) m = g_conns[s].maxseq[p] + 1;
        return m;
    }
    for (int s = 0; s < g_subs_n; s++)
        if (!g_conns[s].dead && g_conns[s].maxseq[p] + 1 < m) m = g_conns[s].maxseq[p] + 1;
    return m == INT64_MAX ? 0 : m;
}

static int pub_can_send(conn_t *c, long count) {
    if (c->next_seq >= count) return 0;
    if (o_qos) return c->inflight < o_window;
    return (int64_t)c->next_seq - sub_progress(c->idx) < o_pipe;
}

/* QoS 1/2: a sliding window, as real clients do (waiting for half the window to drain would stall
 * on brokers that leave Nagle on for their small acks). QoS 0: start a burst only when half the
 * pipe is free: fewer, larger writes. */
static int pub_want_send(conn_t *c, long count) {
    if (c->next_seq >= count) return 0;
    if (o_qos) return c->inflight < o_window;
    return (int64_t)c->next_seq - sub_progress(c->idx) <= o_pipe / 2;
}

/* Encode as many messages as fit the window and about 64 KB, then write. */
static void pub_fill(conn_t *c, long count) {
    while (c->wlen - c->woff < 65536 && pub_can_send(c, count)) {
        uint32_t seq = c->next_seq++;
        tmpl_t *t = o_alias && seq == 0 ? &c->t_first : &c->t;
        put32(t->pkt + t->pay_off, c->idx);
        put32(t->pkt + t->pay_off + 4, seq);
        if (o_qos) {
            uint16_t pid;
            do {
                pid = c->next_pid;
                c->next_pid = c->next_pid == 65535 ? 1 : c->next_pid + 1;
            } while (c->pid_state[pid]);
            t->pkt[t->pid_off] = pid >> 8;
            t->pkt[t->pid_off + 1] = pid & 0xff;
            c->pid_state[pid] = 1;
            c->pid_seq[pid] = seq;
            c->inflight++;
        }
        queue_bytes(c, t->pkt, t->len);
    }
}

static void on_packet_pub(conn_t *c, uint8_t hdr, const uint8_t *b, size_t blen) {
    uint8_t type = hdr >> 4;
    /* At level 5 a reason code (and properties) may follow the packet id; none means 0x00. */
    if ((type == 4 || type == 5 || type == 7) && (blen == 2 || (o_v5 && blen > 2))) {
        uint16_t pid = b[0] << 8 | b[1];
        uint8_t st = c->pid_state[pid];
        if (blen > 2 && b[2] >= 0x80 && st) {
            /* Refused: the exchange ends and the packet id is free again (MQTT 5.0 sections
             * 4.3.2 and 4.3.3); the message is not acknowledged, so not expected anywhere. */
            if (type == 7) c->n_comp_err++;
            else c->n_refused++;
            c->pid_state[pid] = 0;
            c->inflight--;
            return;
        }
        if (type == 4 && o_qos == 1 && st == 1) {          /* PUBACK */
            bit_set(c->acked, c->pid_seq[pid]);
            c->n_acked++;
            c->pid_state[pid] = 0;
            c->inflight--;
            return;
        }
        if (type == 5 && o_qos == 2 && st == 1) {          /* PUBREC -> PUBREL */
            bit_set(c->acked, c->pid_seq[pid]);
            c->n_acked++;
            c->pid_state[pid] = 2;
            uint8_t rel[4] = {0x62, 2, pid >> 8, pid & 0xff};
            queue_bytes(c, rel, 4);
            return;
        }
        if (type == 5 && o_qos == 2 && st == 2) {          /* PUBREC again: PUBREL again */
            uint8_t rel[4] = {0x62, 2, pid >> 8, pid & 0xff};
            queue_bytes(c, rel, 4);
            return;
        }
        if (type == 7 && o_qos == 2 && st == 2) {          /* PUBCOMP */
            c->n_comp++;
            c->pid_state[pid] = 0;
            c->inflight--;
            return;
        }
    }
    if (type == 13) return; /* PINGRESP */
    if (type == 14 && o_v5) {
        conn_dead(c, "DISCONNECT from the broker, reason code 0x%02x", blen ? b[0] : 0);
        return;
    }
    c->n_proto++;
}

static int g_pubs;
static long g_count;
static char **g_topic;  /* --v5, --shared: each publisher's topic, checked on every delivery */

/* The User Property every v5 PUBLISH carries. */
#define UP_NAME "bench"
#define UP_VALUE "v5"

/* A v5 PUBLISH's properties at b[*pos..blen): 0 if well-formed (with *user set when the one
 * User Property came back unaltered, MQTT-3.3.2-17/18), -1 if malformed or if it has a Topic
 * Alias: we allow none (no Topic Alias Maximum in our CONNECT), MQTT-3.3.2-11. */
static int v5_publish_props(const uint8_t *b, size_t blen, size_t *pos, int *user) {
    long pl = get_vbi(b, blen, pos);
    if (pl < 0 || *pos + pl > blen) return -1;
    size_t end = *pos + pl;
    prop_t pr;
    int rc, same = 0;
    while ((rc = prop_next(b, end, pos, &pr)) > 0) {
        if (pr.id == 0x23) return -1;
        if (pr.id == 0x26 && pr.vlen == strlen(UP_NAME) && !memcmp(pr.val, UP_NAME, pr.vlen) &&
            pr.vlen2 == strlen(UP_VALUE) && !memcmp(pr.val2, UP_VALUE, pr.vlen2))
            same++;
    }
    *user = same == 1;
    return rc;
}

static void on_packet_sub(conn_t *c, uint8_t hdr, const uint8_t *b, size_t blen) {
    uint8_t type = hdr >> 4;
    if (type == 3) {
        int qos = (hdr >> 1) & 3, dupflag = hdr & 8;
        if (blen < 2) { c->n_bad++; return; }
        size_t tl = b[0] << 8 | b[1], pos = 2 + tl;
        uint16_t pid = 0;
        if (qos) {
            if (pos + 2 > blen) { c->n_bad++; return; }
            pid = b[pos] << 8 | b[pos + 1];
            pos += 2;
        }
        c->n_recv++;
        if (qos != o_qos) c->n_qos_mismatch++;
        int redelivery = 0;
        if (qos == 1) {
            uint8_t a[4] = {0x40, 2, pid >> 8, pid & 0xff};
            queue_bytes(c, a, 4);
        } else if (qos == 2) {
            if (c->q2wait[pid] && dupflag) redelivery = 1; /* allowed resend: PUBREC again, not delivered */
            c->q2wait[pid] = 1;
            uint8_t a[4] = {0x50, 2, pid >> 8, pid & 0xff};
            queue_bytes(c, a, 4);
        }
        if (redelivery) { c->n_redeliv++; return; }
        int user = 1;
        if (o_v5 && v5_publish_props(b, blen, &pos, &user) < 0) { c->n_bad++; return; }
        if (blen - pos < 8) { c->n_bad++; return; }
        uint32_t p = get32(b + pos), seq = get32(b + pos + 4);
        if (p >= (uint32_t)g_pubs || seq >= (uint64_t)g_count) { c->n_bad++; return; }
        /* on its publisher's topic: with --alias, the alias resolved to the right one */
        if (g_topic && (tl != strlen(g_topic[p]) || memcmp(b + 2, g_topic[p], tl))) { c->n_bad++; return; }
        if (!user) c->n_noprop++;
        if (bit_get(c->seen[p], seq)) { c->n_dup++; return; }
        bit_set(c->seen[p], seq);
        c->n_unique++;
        if ((int64_t)seq < c->maxseq[p]) c->n_ooo++;
        else c->maxseq[p] = seq;
        return;
    }
    if (type == 6 && (blen == 2 || (o_v5 && blen > 2))) { /* PUBREL -> PUBCOMP */
        uint16_t pid = b[0] << 8 | b[1];
        c->q2wait[pid] = 0;
        uint8_t a[4] = {0x70, 2, pid >> 8, pid & 0xff};
        queue_bytes(c, a, 4);
        return;
    }
    if (type == 13) return;
    if (type == 14 && o_v5) {
        conn_dead(c, "DISCONNECT from the broker, reason code 0x%02x", blen ? b[0] : 0);
        return;
    }
    c->n_bad++;
}

/* Read what is there and handle every whole packet; returns bytes read (0 if none). */
static size_t conn_read(conn_t *c, double *t_last) {
    size_t total = 0;
    for (int rounds = 0; rounds < 4 && !c->dead; rounds++) {
        if (c->rlen == c->rcap) {
            c->rcap *= 2;
            c->rbuf = realloc(c->rbuf, c->rcap);
            if (!c->rbuf) die("out of memory");
        }
        ssize_t r = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (r == 0) { conn_dead(c, "closed by the broker"); break; }
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) conn_dead(c, "read: %s", strerror(errno));
            break;
        }
        total += r;
        if (c->ws) {
            long m = ws_deframe(c->ws, c->rbuf + c->rlen, r);
            if (m < 0) { conn_dead(c, "%s", c->ws->err); break; }
            if (c->ws->pong) {
                /* after any frame already under way: frames are not interleaved */
                c->ws->pong = 0;
                fbuf_room(c, c->ws->pn + 14);
                c->flen += ws_frame(c->fbuf + c->flen, 10, c->ws->png, c->ws->pn);
            }
            if (c->ws->close_code >= 0) { conn_dead(c, "WebSocket close %d from the broker", c->ws->close_code); break; }
            r = m;
        }
        c->rlen += r;
        size_t off = 0;
        for (;;) {
            uint8_t hdr;
            const uint8_t *body;
            size_t blen;
            long l = parse_pkt(c->rbuf + off, c->rlen - off, &hdr, &body, &blen);
            if (l < 0) { conn_dead(c, "malformed packet from the broker"); break; }
            if (l == 0) break;
            if (c->is_pub) on_packet_pub(c, hdr, body, blen);
            else on_packet_sub(c, hdr, body, blen);
            off += l;
            if (c->dead) break;
        }
        if (off) {
            memmove(c->rbuf, c->rbuf + off, c->rlen - off);
            c->rlen -= off;
        }
        if ((size_t)r < 16384) break;
    }
    if (total && !c->is_pub) *t_last = now();
    return total;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

/* CPU time of the broker process (--watch PID), from /proc; -1 if unknown. */
static double proc_cpu(int pid) {
    if (pid <= 0) return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU use of the load generator and of the broker over the measured span: from start() to the
 * last mark() (progress points), so that waiting at the end does not dilute the figures. */
static struct {
    double t0, own0, brk0, t1, own1, brk1;
} meter;

static void meter_start(void) {
    meter.t0 = meter.t1 = now();
    meter.own0 = meter.own1 = cpu_seconds();
    meter.brk0 = meter.brk1 = proc_cpu(o_watch);
}

static void meter_mark(int force) {
    double t = now();
    if (!force && t - meter.t1 < 0.05) return;
    meter.t1 = t;
    meter.own1 = cpu_seconds();
    meter.brk1 = proc_cpu(o_watch);
}

static void meter_json(void) {
    double span = meter.t1 - meter.t0;
    if (span <= 0) span = 1e-9;
    printf("\"loadgen_cpu_pct\":%.1f,", 100 * (meter.own1 - meter.own0) / span);
    if (meter.brk0 >= 0 && meter.brk1 >= 0) printf("\"broker_cpu_pct\":%.1f,", 100 * (meter.brk1 - meter.brk0) / span);
}

static int run_flow(void) {
    int np = o_pubs, ns = o_subs, n = np + ns;
    g_pubs = np;
    g_count = o_count;
    size_t bm = (o_count + 7) / 8;
    conn_t *cs = xcalloc(n, sizeof *cs);
    g_conns = cs;
    g_subs_n = ns;
    char cid[128], topic[256], filter[320];
    if (o_shared) snprintf(filter, sizeof filter, "$share/%s/bench/%s/#", o_shared, o_tag);
    else snprintf(filter, sizeof filter, "bench/%s/#", o_tag);
    /* Deliveries each message must make: one per subscriber, or one per shared group, whose
     * members see the one bitmap per publisher, so a second copy anywhere is a duplicate. */
    int copies = o_shared ? 1 : ns;
    uint8_t **shared_seen = NULL;
    if (o_shared) {
        shared_seen = xcalloc(np, sizeof(uint8_t *));
        for (int p = 0; p < np; p++) shared_seen[p] = xcalloc(bm, 1);
    }
    if (o_v5 || o_shared) {
        g_topic = xcalloc(np, sizeof(char *));
        for (int p = 0; p < np; p++) {
            g_topic[p] = xcalloc(strlen(o_tag) + 24, 1);
            sprintf(g_topic[p], "bench/%s/%d", o_tag, p);
        }
    }
    /* v5 publishers: one User Property on every message, and with --alias Topic Alias 1. */
    uint8_t props[64];
    size_t plen = 0;
    if (o_v5) {
        plen = 1;
        props[plen++] = 0x26;
        plen += put_str(props + plen, UP_NAME, strlen(UP_NAME));
        plen += put_str(props + plen, UP_VALUE, strlen(UP_VALUE));
        if (o_alias) {
            props[plen++] = 0x23;
            props[plen++] = 0;
            props[plen++] = 1;
        }
        props[0] = plen - 1;
    }
    long min_receive_max = 65535;
    /* Subscribers first, so nothing published is missed. */
    for (int i = 0; i < n; i++) {
        conn_t *c = &cs[i];
        c->is_pub = i >= ns;
        c->idx = c->is_pub ? i - ns : i;
        c->rcap = 262144;
        c->rbuf = xcalloc(c->rcap, 1);
        c->wcap = 131072;
        c->wbuf = xcalloc(c->wcap, 1);
        if (c->is_pub) {
            snprintf(cid, sizeof cid, "lg-%s-p%d", o_tag, c->idx);
            srv_t sv = {0};
            c->fd = mqtt_open(cid, NULL, 0, 600, &sv);
            snprintf(topic, sizeof topic, "bench/%s/%d", o_tag, c->idx);
            if (o_alias) {
                /* MQTT-3.2.2-17/18: without a Topic Alias Maximum (or with 0) the client must
                 * send no alias at all: the scenario cannot run, and says so. */
                if (sv.alias_max < 1)
                    die("the broker's CONNACK Topic Alias Maximum is %ld: no topic alias allowed", sv.alias_max);
                make_tmpl(&c->t_first, topic, o_qos, o_payload, props, plen);
                make_tmpl(&c->t, "", o_qos, o_payload, props, plen);
            } else {
                make_tmpl(&c->t, topic, o_qos, o_payload, o_v5 ? props : NULL, plen);
            }
            if (o_v5) {
                if (sv.max_qos < o_qos) die("the broker's CONNACK Maximum QoS is %ld", sv.max_qos);
                if (sv.max_packet && (c->t.len > (size_t)sv.max_packet || c->t_first.len > (size_t)sv.max_packet))
                    die("the broker's CONNACK Maximum Packet Size is %ld", sv.max_packet);
                if (sv.receive_max < min_receive_max) min_receive_max = sv.receive_max;
            }
            c->next_pid = 1;
            c->pid_seq = xcalloc(65536, sizeof(uint32_t));
            c->pid_state = xcalloc(65536, 1);
            c->acked = xcalloc(bm, 1);
        } else {
            snprintf(cid, sizeof cid, "lg-%s-s%d", o_tag, c->idx);
            c->fd = mqtt_open(cid, filter, o_qos, 600, NULL);
            c->seen = xcalloc(np, sizeof(uint8_t *));
            c->maxseq = xcalloc(np, sizeof(int64_t));
            for (int p = 0; p < np; p++) {
                c->seen[p] = shared_seen ? shared_seen[p] : xcalloc(bm, 1);
                c->maxseq[p] = -1;
            }
            c->q2wait = xcalloc(65536, 1);
        }
        c->ws = ws_of(c->fd);
        set_nonblock(c->fd);
    }
    /* MQTT-3.3.4-7: no more unacknowledged QoS 1/2 messages than the broker's Receive Maximum. */
    if (o_v5 && o_qos && min_receive_max < o_window) o_window = min_receive_max;
    struct pollfd *pf = xcalloc(n, sizeof *pf);
    meter_start();
    double t_start = now(), t_send_end = t_start + o_duration, t_sent = 0, t_last_recv = t_start;
    double t_progress = t_start, t_end;
    int sending = 1;
    uint64_t last_unique = 0;
    const char *end_reason = "complete";
    for (;;) {
        double t = now();
        if (sending) {
            int more = 0;
            for (int i = ns; i < n; i++)
                if (!cs[i].dead && cs[i].next_seq < o_count) more = 1;
            if (t >= t_send_end || !more) {
                sending = 0;
                t_sent = t;
                t_progress = t;
            }
        }
        /* Progress and completion. */
        uint64_t unique = 0, sent = 0;
        int inflight = 0, alive_subs = 0;
        for (int i = 0; i < n; i++) {
            if (cs[i].is_pub) {
                /* a message refused at its PUBACK/PUBREC is expected nowhere */
                sent += cs[i].next_seq - cs[i].n_refused;
                if (!cs[i].dead) inflight += cs[i].inflight;
            } else {
                unique += cs[i].n_unique;
                alive_subs += !cs[i].dead;
            }
        }
        if (unique != last_unique) {
            last_unique = unique;
            t_progress = t;
            meter_mark(0);
        }
        if (!sending) {
            if (alive_subs == 0) { end_reason = "subscribers closed"; break; }
            if (unique >= sent * (uint64_t)copies && inflight == 0) { end_reason = "complete"; break; }
            if (o_qos == 0) {
                /* Order is kept, so once every publisher's last message has arrived everywhere,
                 * whatever is missing was dropped (allowed at QoS 0). */
                int last_in = 1;
                for (int i = ns; i < n && last_in; i++)
                    if (!cs[i].dead && sub_progress(cs[i].idx) < (int64_t)cs[i].next_seq) last_in = 0;
                if (last_in) { end_reason = "complete"; break; }
            }
            if (t - t_progress > o_idle) { end_reason = "no progress"; break; }
            if (t - t_sent > o_drain) { end_reason = "drain timeout"; break; }
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = &cs[i];
            pf[i].fd = c->dead ? -1 : c->fd;
            pf[i].events = POLLIN;
            pf[i].revents = 0;
            if (pending(c)) pf[i].events |= POLLOUT;
        }
        int pr = poll(pf, n, 20);
        if (pr < 0 && errno != EINTR) die("poll: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            conn_t *c = &cs[i];
            if (c->dead || !pf[i].revents) continue;
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) conn_read(c, &t_last_recv);
        }
        /* Acknowledgements produced while reading, and new bursts of messages, go out at once. */
        for (int i = 0; i < n; i++) {
            conn_t *c = &cs[i];
            if (c->dead) continue;
            if (c->is_pub && sending && !pending(c) && pub_want_send(c, o_count)) {
                /* A few rounds per pass so that one publisher cannot starve the rest. */
                for (int k = 0; k < 4 && !c->dead; k++) {
                    pub_fill(c, o_count);
                    flush(c);
                    if (pending(c) || !pub_can_send(c, o_count)) break;
                }
            } else if (pending(c)) {
                flush(c);
            }
        }
    }
    t_end = now();
    /* Verification. */
    uint64_t sent = 0, acked = 0, comp = 0, lost_acked = 0, lost_any = 0, dup = 0, ooo = 0, bad = 0;
    uint64_t recv = 0, unique = 0, redeliv = 0, proto = 0, qosmm = 0, refused = 0, noprop = 0;
    for (int i = ns; i < n; i++) {
        conn_t *p = &cs[i];
        sent += p->next_seq;
        acked += p->n_acked;
        comp += p->n_comp;
        proto += p->n_proto;
        refused += p->n_refused + p->n_comp_err;
        for (int s = 0; s < copies; s++) {
            for (uint32_t q = 0; q < p->next_seq; q++) {
                int got = bit_get(cs[s].seen[p->idx], q);
                if (!got) {
                    lost_any++;
                    if (o_qos && bit_get(p->acked, q)) lost_acked++;
                }
            }
        }
    }
    for (int s = 0; s < ns; s++) {
        recv += cs[s].n_recv;
        unique += cs[s].n_unique;
        dup += cs[s].n_dup;
        ooo += cs[s].n_ooo;
        bad += cs[s].n_bad;
        redeliv += cs[s].n_redeliv;
        qosmm += cs[s].n_qos_mismatch;
        noprop += cs[s].n_noprop;
    }
    double span = t_last_recv - t_start;
    if (span <= 0) span = 1e-9;
    int violations = 0;
    if (lost_acked) violations++;
    if ((o_qos == 2 || o_shared) && dup) violations++; /* a shared message reaches one member only */
    if (ooo) violations++;
    if (bad) violations++;
    if (refused) violations++;
    if (noprop) violations++;
    printf("{\"mode\":\"%s\",\"qos\":%d,\"pubs\":%d,\"subs\":%d,\"window\":%d,\"payload\":%d,", o_mode, o_qos, np,
           ns, o_window, o_payload);
    printf("\"transport\":\"%s\",", o_ws ? "websockets" : "tcp");
    if (o_v5)
        printf("\"protocol\":5,\"topic_alias\":%d,\"puback_errors\":%llu,\"user_property_missing\":%llu,", o_alias,
               (unsigned long long)refused, (unsigned long long)noprop);
    if (o_shared) {
        printf("\"shared\":\"%s\",\"per_member\":[", o_shared);
        for (int s = 0; s < ns; s++) printf("%s%llu", s ? "," : "", (unsigned long long)cs[s].n_unique);
        printf("],");
    }
    printf("\"sent\":%llu,\"acked\":%llu,\"pubcomp\":%llu,\"received\":%llu,\"unique\":%llu,",
           (unsigned long long)sent, (unsigned long long)acked, (unsigned long long)comp, (unsigned long long)recv,
           (unsigned long long)unique);
    printf("\"expected\":%llu,\"lost\":%llu,\"lost_acked\":%llu,\"duplicates\":%llu,\"out_of_order\":%llu,",
           (unsigned long long)(sent * copies), (unsigned long long)lost_any, (unsigned long long)lost_acked,
           (unsigned long long)dup, (unsigned long long)ooo);
    printf("\"malformed\":%llu,\"qos2_redelivered\":%llu,\"qos_mismatch\":%llu,\"unexpected_acks\":%llu,",
           (unsigned long long)bad, (unsigned long long)redeliv, (unsigned long long)qosmm, (unsigned long long)proto);
    printf("\"send_seconds\":%.4f,\"span_seconds\":%.4f,\"total_seconds\":%.4f,", t_sent - t_start, span,
           t_end - t_start);
    printf("\"offered_rate\":%.1f,\"rate\":%.1f,", sent / (t_sent - t_start > 0 ? t_sent - t_start : 1e-9),
           unique / span);
    meter_json();
    printf("\"end\":\"%s\",\"violations\":%d,\"closed\":[", end_reason, violations);
    int first = 1;
    for (int i = 0; i < n; i++)
        if (cs[i].dead) {
            printf("%s\"%s%d: %s\"", first ? "" : ",", cs[i].is_pub ? "pub" : "sub", cs[i].idx, cs[i].why);
            first = 0;
        }
    printf("]}\n");
    return violations ? 1 : 0;
}

/* ------------------------------------------------------------------ latency */

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_latency(void) {
    char cid[128], topic[256];
    snprintf(topic, sizeof topic, "bench/%s/lat", o_tag);
    snprintf(cid, sizeof cid, "lg-%s-ls", o_tag);
    int sfd = mqtt_open(cid, topic, 0, 600, NULL), pfd = sfd;
    if (o_pair) {
        snprintf(cid, sizeof cid, "lg-%s-lp", o_tag);
        pfd = mqtt_open(cid, NULL, 0, 600, NULL);
    }
    tmpl_t t;
    make_tmpl(&t, topic, 0, o_payload, NULL, 0);
    double *rtt = xcalloc(o_samples, sizeof(double));
    static uint8_t buf[65536];
    size_t have = 0;
    long k = 0, warm = 200, lost = 0, other = 0;
    meter_start();
    double t_start = now(), t_stop = t_start + o_duration;
    for (long i = 0; k < o_samples && now() < t_stop; i++) {
        double t1 = now();
        put32(t.pkt + t.pay_off, 0xfeed);
        put32(t.pkt + t.pay_off + 4, (uint32_t)i);
        put64(t.pkt + t.pay_off + 8, (uint64_t)(t1 * 1e9));
        write_all(pfd, t.pkt, t.len);
        for (;;) {
            uint8_t hdr;
            const uint8_t *body;
            size_t blen;
            long plen;
            int rc = read_pkt(sfd, buf, sizeof buf, &have, 2.0, &hdr, &body, &blen, &plen);
            if (rc == -2) { lost++; break; }
            if (rc) die("latency: connection lost (%d) after %ld round trips", rc, i);
            int mine = 0;
            if ((hdr >> 4) == 3 && blen >= 2) {
                size_t pos = 2 + (body[0] << 8 | body[1]);
                if (blen >= pos + 8 && get32(body + pos) == 0xfeed && get32(body + pos + 4) == (uint32_t)i) mine = 1;
            }
            consume(buf, &have, plen);
            if (!mine) { other++; continue; }
            if (i >= warm) rtt[k++] = now() - t1;
            break;
        }
        if (lost > 10) die("latency: more than 10 messages never came back");
    }
    meter_mark(1);
    double wall = now() - t_start;
    if (k == 0) die("latency: no samples");
    qsort(rtt, k, sizeof(double), cmp_dbl);
    double sum = 0;
    for (long i = 0; i < k; i++) sum += rtt[i];
    printf("{\"mode\":\"latency\",\"pair\":%d,\"samples\":%ld,\"lost\":%ld,\"unexpected\":%ld,", o_pair, k, lost, other);
    printf("\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f,", rtt[k / 2] * 1e6,
           rtt[k * 90 / 100] * 1e6, rtt[k * 99 / 100] * 1e6, rtt[k - 1] * 1e6, sum / k * 1e6);
    meter_json();
    printf("\"round_trips_per_s\":%.1f,\"violations\":%d}\n", k / wall, lost ? 1 : 0);
    return lost ? 1 : 0;
}

/* ------------------------------------------------------------------ connects per second */

typedef struct {
    int fd, state; /* 0 idle, 1 connecting, 2 awaiting CONNACK, 3 awaiting close */
    double t_begin;
    uint8_t buf[64];
    size_t have;
} cslot_t;

static int run_connect(void) {
    int C = o_conc;
    cslot_t *sl = xcalloc(C, sizeof *sl);
    struct pollfd *pf = xcalloc(C, sizeof *pf);
    double *lat = xcalloc(1000000, sizeof(double));
    long done = 0, failed = 0, refused = 0, serial = 0, nlat = 0;
    char why[160] = "";
    meter_start();
    double t_start = now(), t_stop = t_start + o_duration, t_last = t_start;
    for (;;) {
        double t = now();
        int busy = 0;
        for (int i = 0; i < C; i++) {
            cslot_t *s = &sl[i];
            if (s->state && t - s->t_begin > 5.0) {
                snprintf(why, sizeof why, "timed out in state %d", s->state);
                close(s->fd);
                s->state = 0;
                failed++;
            }
            if (!s->state && t < t_stop && done + failed < 1000000) {
                s->fd = tcp_connect(1);
                s->t_begin = t;
                s->have = 0;
                if (s->fd < 0) {
                    failed++;
                    snprintf(why, sizeof why, "connect: %s", strerror(errno));
                    continue;
                }
                s->state = 1;
            }
            busy += s->state != 0;
            pf[i].fd = s->state ? s->fd : -1;
            pf[i].events = s->state == 1 ? POLLOUT : POLLIN;
            pf[i].revents = 0;
        }
        if (!busy && t >= t_stop) break;
        if (poll(pf, C, 50) < 0 && errno != EINTR) die("poll: %s", strerror(errno));
        for (int i = 0; i < C; i++) {
            cslot_t *s = &sl[i];
            if (!s->state || !pf[i].revents) continue;
            if (s->state == 1) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    close(s->fd);
                    s->state = 0;
                    failed++;
                    snprintf(why, sizeof why, "connect: %s", strerror(err));
                    continue;
                }
                char cid[96];
                snprintf(cid, sizeof cid, "lg-%s-c%ld", o_tag, serial++);
                uint8_t pkt[160];
                size_t n = enc_connect(pkt, cid, 60, 1);
                if (write(s->fd, pkt, n) != (ssize_t)n) {
                    close(s->fd);
                    s->state = 0;
                    failed++;
                    snprintf(why, sizeof why, "CONNECT write failed");
                    continue;
                }
                s->state = 2;
                continue;
            }
            ssize_t r = read(s->fd, s->buf + s->have, sizeof s->buf - s->have);
            if (r < 0 && errno == EAGAIN) continue;
            if (s->state == 2) {
                if (r <= 0) {
                    close(s->fd);
                    s->state = 0;
                    failed++;
                    snprintf(why, sizeof why, "closed before CONNACK");
                    continue;
                }
                s->have += r;
                if (s->have < 4) continue;
                if (s->buf[0] != 0x20 || s->buf[1] != 2 || s->buf[3] != 0) {
                    close(s->fd);
                    s->state = 0;
                    refused++;
                    snprintf(why, sizeof why, "CONNACK code %d", s->buf[3]);
                    continue;
                }
                lat[nlat++] = now() - s->t_begin;
                static const uint8_t disc[2] = {0xe0, 0};
                if (write(s->fd, disc, 2) != 2) { /* the broker may close first: still a connect */ }
                s->state = 3;
                s->have = 0;
                continue;
            }
            /* state 3: wait for the broker to close, so that TIME_WAIT stays on its side */
            if (r <= 0) {
                close(s->fd);
                s->state = 0;
                done++;
                t_last = now();
                meter_mark(0);
            }
        }
    }
    double wall = t_last - t_start;
    if (wall <= 0) wall = 1e-9;
    qsort(lat, nlat, sizeof(double), cmp_dbl);
    printf("{\"mode\":\"connect\",\"concurrency\":%d,\"connects\":%ld,\"failed\":%ld,\"refused\":%ld,", C, done, failed,
           refused);
    meter_json();
    printf("\"rate\":%.1f,\"connack_p50_us\":%.1f,\"connack_p99_us\":%.1f,\"error\":\"%s\",\"violations\":0}\n",
           done / wall, nlat ? lat[nlat / 2] * 1e6 : 0, nlat ? lat[nlat * 99 / 100] * 1e6 : 0, why);
    return 0;
}

/* ------------------------------------------------------------------ idle clients */

static int run_idle(void) {
    int N = o_clients;
    int *fds = xcalloc(N, sizeof(int));
    char cid[128], filter[256];
    double t0 = now();
    for (int i = 0; i < N; i++) {
        snprintf(cid, sizeof cid, "lg-%s-i%d", o_tag, i);
        snprintf(filter, sizeof filter, "bench/%s/idle/%d", o_tag, i);
        fds[i] = mqtt_open(cid, filter, 1, 0, NULL);
    }
    printf("READY %d %.3f\n", N, now() - t0);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) { /* hold until stdin closes */ }
    int alive = 0;
    static const uint8_t disc[2] = {0xe0, 0};
    for (int i = 0; i < N; i++) {
        struct pollfd p = {fds[i], POLLIN, 0};
        /* A connection the broker closed meanwhile reads as EOF. */
        if (!(poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR)))) alive++;
        if (ws_of(fds[i])) {
            uint8_t f[16];
            if (write(fds[i], f, ws_frame(f, 2, disc, 2)) < 0) { }
        } else if (write(fds[i], disc, 2) != 2) { }
        close(fds[i]);
    }
    printf("{\"mode\":\"idle\",\"clients\":%d,\"still_connected\":%d,\"violations\":%d}\n", N, alive, alive != N);
    return alive == N ? 0 : 1;
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen MODE [options]   (MODE: fanin fanout latency connect idle)\n"
            "  --host H --port P      broker address (127.0.0.1:1883)\n"
            "  --pubs N --subs N      publishers and subscribers (fanin 8/1, fanout 1/16)\n"
            "  --qos Q                0, 1 or 2\n"
            "  --count N              messages per publisher at most (2000000)\n"
            "  --duration S           seconds of publishing / measuring at most (3)\n"
            "  --window W             unacknowledged QoS 1/2 messages per publisher (20)\n"
            "  --pipe N               QoS 0: messages per publisher ahead of the slowest subscriber (2000)\n"
            "  --payload B            payload bytes, at least 16 (16)\n"
            "  --drain S --idle S     after publishing: wait at most S, or S without progress (10, 1.5)\n"
            "  --pair                 latency: separate publisher and subscriber connections\n"
            "  --persistent           subscribers keep a persistent session (clean session 0)\n"
            "  --samples N            latency: round trips at most (20000)\n"
            "  --conc C               connect: connections in progress at once (8)\n"
            "  --clients N            idle: clients to hold (100)\n"
            "  --tag T                unique part of topics and client ids (default: pid)\n"
            "  --watch PID            also report the CPU use of process PID (the broker)\n"
            "  --ws PATH              over WebSockets: Upgrade on PATH (e.g. /mqtt), frames both ways\n"
            "                         (fanin, fanout, latency, idle)\n"
            "  --ws-frame B           over WebSockets: frames of at most B payload bytes (0: one per write)\n"
            "  --v5                   MQTT 5.0 (fanin, fanout): a User Property on every PUBLISH, checked\n"
            "                         on delivery; a PUBACK/PUBREC/PUBCOMP reason code >= 0x80 is an error\n"
            "  --alias                with --v5: each publisher's topic once with Topic Alias 1, then the\n"
            "                         alias only (fails if the CONNACK's Topic Alias Maximum allows none)\n"
            "  --shared GROUP         subscribers share $share/GROUP/bench/<tag>/#: each message to one\n"
            "                         member, in order per member; per_member counts in the result\n"
            "example: loadgen fanin --port 1883 --qos 1 --pubs 8 --duration 3\n"
            "         loadgen fanin --port 1883 --qos 1 --v5 --subs 2 --shared bench\n");
    exit(2);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    t0_process = now();
    if (argc < 2 || argv[1][0] == '-') usage();
    o_mode = argv[1];
    int fanout = !strcmp(o_mode, "fanout");
    if (fanout) { o_pubs = 1; o_subs = 16; }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && ++i)
        if (OPT("--host")) o_host = v;
        else if (OPT("--port")) o_port = atoi(v);
        else if (OPT("--pubs")) o_pubs = atoi(v);
        else if (OPT("--subs")) o_subs = atoi(v);
        else if (OPT("--qos")) o_qos = atoi(v);
        else if (OPT("--count")) o_count = atol(v);
        else if (OPT("--duration")) o_duration = atof(v);
        else if (OPT("--window")) o_window = atoi(v);
        else if (OPT("--payload")) o_payload = atoi(v);
        else if (OPT("--pipe")) o_pipe = atoi(v);
        else if (OPT("--drain")) o_drain = atof(v);
        else if (OPT("--idle")) o_idle = atof(v);
        else if (OPT("--samples")) o_samples = atol(v);
        else if (OPT("--conc")) o_conc = atoi(v);
        else if (OPT("--clients")) o_clients = atoi(v);
        else if (OPT("--tag")) o_tag = v;
        else if (OPT("--watch")) o_watch = atoi(v);
        else if (OPT("--ws")) o_ws = v;
        else if (OPT("--ws-frame")) o_ws_frame = atol(v);
        else if (OPT("--shared")) o_shared = v;
        else if (!strcmp(a, "--v5")) o_v5 = 1;
        else if (!strcmp(a, "--alias")) o_alias = 1;
        else if (!strcmp(a, "--pair")) o_pair = 1;
        else if (!strcmp(a, "--persistent")) o_persistent = 1;
        else usage();
#undef OPT
    }
    if (o_qos < 0 || o_qos > 2 || o_payload < 16 || o_pubs < 1 || o_subs < 1 || o_window < 1 || o_window > 60000 || o_pipe < 2 ||
        o_count < 1 || o_conc < 1 || o_clients < 1 || o_samples < 1)
        usage();
    static char tagbuf[32];
    if (!o_tag) {
        snprintf(tagbuf, sizeof tagbuf, "%d", (int)getpid());
        o_tag = tagbuf;
    }
    if (o_ws && (!strcmp(o_mode, "connect") || o_ws[0] != '/')) usage();
    /* The v5 client and the shared group are the flow's (fanin, fanout) only. The group name
     * is a topic level: no wildcard, no '/' (MQTT 5.0 section 4.8.2). */
    if ((o_v5 || o_shared) && strcmp(o_mode, "fanin") && !fanout) usage();
    if (o_alias && !o_v5) usage();
    if (o_shared && (!*o_shared || strpbrk(o_shared, "/+#") || strlen(o_shared) > 64)) usage();
    int rc;
    if (!strcmp(o_mode, "fanin") || fanout) rc = run_flow();
    else if (!strcmp(o_mode, "latency")) rc = run_latency();
    else if (!strcmp(o_mode, "connect")) rc = run_connect();
    else if (!strcmp(o_mode, "idle")) rc = run_idle();
    else usage();
    fflush(stdout);
    return rc;
}
