/*
** bench_sync.c: sync performance, measured with the real programs on
** 127.0.0.1.  Prints one line per figure.
**
**   latency    write on A -> visible on B through agents and the relay,
**              one row per transaction, p50/p99/max over N writes, beside
**              the floor: a durable one-row SQLite commit (WAL,
**              synchronous=FULL, as the relay commits) in the same directory
**   live       the map workload's live figure: A's app makes 50,000 writes
**              to 10,000 keys (21-character values, transactions of
**              1,000) as fast as it can while both agents run; the time
**              from A's last commit until B has A's last write.  Twice:
**              the app stamps after each transaction (it loads knit), then
**              only the agent stamps (line "live-agent")
**   ingest     changes/s the relay commits with 1, 4 and 16 clients
**              pushing pipelined PUSH frames (raw protocol clients)
**   fanout     one write to 100 and 1,000 subscribed clients: time until
**              the last one has the DELTAS
**   catchup    1,000,000 changed cells pushed by A, then B (empty, offline
**              until now) runs `sync-agent run --once`: time to synced
**   rss        relay resident memory per idle, subscribed connection at
**              1,000 and 10,000 connections
**
**   latency-tls  the same over TLS (knits://, certificates made by
**              tests/integration/tls_certs.sh with the openssl tool)
**   latency-lp   the same over HTTP long-polling (--relay http://, the
**              relay's --http-listen), then over TCP in the same run
**   latency-ws   the same over a WebSocket (--relay ws://), then over TCP
**   ingest-transports  the ingest pushes through the client's own
**              streams: TCP, TLS, WebSocket and long-polling, 1 and 4
**              clients, each a ratio to the TCP figure of the same run
**   catchup-lp   catchup over TCP and over long-polling in one run, each
**              with the catching-up agent's peak RSS (wait4 ru_maxrss)
**   rss-tls    relay RSS per idle subscribed connection over TLS, and over
**              TCP through the same client code in the same run
**
** Usage: bench_sync [latency|live|latency-tls|latency-lp|latency-ws|ingest|ingest-transports|
**                    fanout|catchup|catchup-lp|rss|rss-tls]...
** (default: all).
** Environment: KNIT_SYNC_SCALE scales the counts; KNIT_BENCH_DIR puts the
** relay store and replicas in another directory (e.g. /dev/shm, to take
** the disk's fsync out of the figures).  Speed is measured, not asserted.
*/
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "alloc.h"
#include "auth.h"
#include "codec.h"
#include "frame.h"
#include "knit.h"
#include "lp_client.h"
#include "tcp.h"
#include "tls.h"
#include "ws_client.h"
#include "integration/sync_util.h"

#define SCHEMA                                                                                     \
    "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER,"                              \
    " tags TEXT NOT NULL DEFAULT '[]', batch INTEGER);"

static char g_dir[512];    /* where stores and replicas go */
static char g_secret[600]; /* the relay's JWT secret file */
static uint8_t g_key[128]; /* its bytes */
static size_t g_keylen;    /* their count */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static char *bpath(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_sync: %s\n", what);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long rss_kb(pid_t pid)
{
    char p[64], line[256];
    long kb = -1;
    FILE *f;
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    if (!(f = fopen(p, "r")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    fclose(f);
    return kb;
}

static void make_replica(const char *path)
{
    char out[512];
    sqlite3 *db;
    unlink(path);
    db = su_db(path);
    su_exec(db, "%s", SCHEMA);
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, "items", "--orset", "tags", NULL};
    if (su_run(argv, 20000, out, sizeof out) != 0)
        die(out);
}

static void remove_db(const char *path)
{
    char p[700];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    snprintf(p, sizeof p, "%s.log", path);
    unlink(p);
}

static void start_relay(su_relay_t *r, const char *name, const char *const *extra)
{
    char data[600];
    bpath(data, sizeof data, name);
    remove_db(data);
    if (su_relay_start(r, 0, data, g_secret, extra) != 0)
        die("cannot start the relay");
}

static char *mint(const char *sub)
{
    char *tok = NULL;
    if (knit_jwt_mint(g_key, g_keylen, sub, wall_ms(), 3600, &tok) != 0)
        die("cannot mint a token");
    return tok;
}

/* ---------------------------------------------------------------------- */
/* A raw protocol client                                                    */

typedef struct rc_s {
    int fd;                 /* socket */
    knit_frame_reader_t rd; /* frame reassembly */
    int welcomed;           /* WELCOME seen */
    int caught_up;          /* catch-up finished */
    uint64_t deltas;        /* DELTAS received */
    uint64_t acks;          /* ACKs received */
    int failed;             /* ERROR or a decode failure */
} rc_t;

/* A token for user sub in the file path, as sync-agent --token-file reads. */
static void write_token(const char *path, const char *sub)
{
    char *t = mint(sub);
    FILE *f = fopen(path, "w");
    if (!f)
        die(path);
    fprintf(f, "%s\n", t);
    fclose(f);
    knit__free(t);
}

static int rc_connect(rc_t *c, int port)
{
    struct sockaddr_in sa;
    int one = 1;
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(c->fd);
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    knit_frame_reader_init(&c->rd, 0);
    return 0;
}

static void rc_close(rc_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    knit_frame_reader_free(&c->rd);
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            poll(&pfd, 1, 1000);
            continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Encodes HELLO with a JWT, subscribing to ns (if not NULL) from 0, into out. */
static int hello_frame(knit_buf_t *out, const char *token, const char *ns)
{
    knit_msg_t m;
    knit_sub_t sub = {ns, 0};
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = 1;
    m.u.hello.max_version = 1;
    memset(m.u.hello.site.b, 0x42, 16);
    m.u.hello.cred.kind = KNIT_CRED_JWT;
    m.u.hello.cred.token = token;
    m.u.hello.subs = ns ? &sub : NULL;
    m.u.hello.nsubs = ns ? 1 : 0;
    m.u.hello.agent = "bench_sync";
    return knit_msg_encode(&m, NULL, out);
}

/* HELLO with a JWT; subscribes to ns (if not NULL) from 0. */
static int rc_hello(rc_t *c, const char *token, const char *ns)
{
    knit_buf_t b = {NULL, 0, 0};
    int rc = hello_frame(&b, token, ns);
    if (!rc)
        rc = send_all(c->fd, b.p, b.len);
    knit_buf_free(&b);
    return rc;
}

/* Counts the messages in buf[0..n), bytes of c's input stream. */
static int rc_feed(rc_t *c, const uint8_t *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        const uint8_t *payload;
        size_t used, len;
        knit_msg_t m;
        int rc = knit_frame_read(&c->rd, buf + off, n - off, &used, &payload, &len);
        if (rc < 0) {
            c->failed = 1;
            return -1;
        }
        off += used;
        if (rc == 0)
            break;
        if (knit_msg_decode(payload, len, NULL, &m, NULL) != 0) {
            c->failed = 1;
            return -1;
        }
        switch (m.type) {
        case KNIT_MSG_WELCOME:
            c->welcomed = 1;
            break;
        case KNIT_MSG_DELTAS:
            c->deltas++;
            if (m.u.deltas.caught_up)
                c->caught_up = 1;
            break;
        case KNIT_MSG_ACK:
            c->acks++;
            break;
        case KNIT_MSG_ERROR:
        case KNIT_MSG_REJECT:
            c->failed = 1;
            break;
        default:
            break;
        }
        knit_msg_free(&m);
    }
    return 0;
}

/* Reads what is there (non-blocking when nb) and counts messages. */
static int rc_pump(rc_t *c, int nb)
{
    uint8_t buf[65536];
    ssize_t n = recv(c->fd, buf, sizeof buf, nb ? MSG_DONTWAIT : 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0) {
        c->failed = 1;
        return -1;
    }
    return rc_feed(c, buf, (size_t)n);
}

/* Builds a PUSH frame of `rows` new rows (liveness + 3 LWW columns each,
** so 4 changes per row) keyed prefix-<n>. */
static void push_frame(knit_buf_t *out, uint64_t id, const char *ns, const char *prefix, long first,
                       long rows)
{
    knit_batch_t *b = NULL;
    uint32_t nsi, site, tab;
    const char *cols[3] = {"name", "qty", "batch"};
    uint8_t kinds[3] = {0, 0, 0};
    knit_site_t s;
    uint64_t hlc = wall_ms() << 16;
    char key[64];
    knit_msg_t m;
    memset(s.b, 0x17, 16);
    if (knit_batch_new(&b) || knit_batch_ns(b, ns, &nsi) || knit_batch_site(b, &s, &site) ||
        knit_batch_table(b, "items", 1, 3, cols, kinds, &tab))
        die("batch");
    for (long r = first; r < first + rows; r++) {
        knit_change_t ch;
        knit_value_t pk;
        if (knit_batch_begin(b, (uint64_t)r + 1))
            die("batch");
        snprintf(key, sizeof key, "%s-%ld", prefix, r);
        memset(&pk, 0, sizeof pk);
        pk.type = KNIT_TEXT;
        pk.u.b.p = key;
        pk.u.b.n = strlen(key);
        for (uint32_t col = 0; col <= 3; col++) {
            memset(&ch, 0, sizeof ch);
            ch.ns = nsi;
            ch.table = tab;
            ch.col = col;
            ch.site = site;
            ch.pk = &pk;
            ch.cl = 1;
            ch.hlc = hlc + (uint64_t)col;
            if (col == 0) {
                ch.value.type = KNIT_NULL;
            } else if (col == 1) {
                ch.value.type = KNIT_TEXT;
                ch.value.u.b.p = "bench";
                ch.value.u.b.n = 5;
            } else {
                ch.value.type = KNIT_INTEGER;
                ch.value.u.i = r;
            }
            if (knit_batch_add(b, &ch))
                die("batch");
        }
    }
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PUSH;
    m.u.push.id = id;
    m.u.push.ns = ns;
    m.u.push.batch = b;
    if (knit_msg_encode(&m, NULL, out))
        die("encode");
    knit_batch_free(b);
}

/* ---------------------------------------------------------------------- */
/* latency                                                                  */

/* Certificates for the TLS figures (the tests' tls_certs.sh); the
** directory, or NULL when they cannot be made. */
static const char *tls_certs(void)
{
    static char dir[600];
    static int made = -1;
    char cmd[1400], out[2048];
    if (made < 0) {
        bpath(dir, sizeof dir, "certs");
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && sh '%s' '%s'", dir, TLS_CERTS_SH, dir);
        const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
        made = su_run(argv, 120000, out, sizeof out) == 0;
        if (!made)
            fprintf(stderr, "bench_sync: no certificates (%s), no TLS figures\n", out);
    }
    return made ? dir : NULL;
}

/* Write-to-visible latency through agents and the relay, over plain TCP,
** (tls 1) TLS with the test CA, (tls 2) HTTP long-polling or (tls 3) a
** WebSocket, both to the relay's --http-listen port. */
/* The floor of the write-to-visible latency: the relay commits each group
** durably before it acknowledges or fans out.  This is that commit alone:
** one-row transactions on a SQLite file in the relay store's directory,
** WAL and synchronous=FULL as the relay runs it (a WAL append and its
** fsync), n times; p50 and p99 in ms. */
static void fsync_floor(long n, double *p50, double *p99)
{
    char path[600];
    double *t = malloc((size_t)n * sizeof *t);
    sqlite3_stmt *ins;
    remove_db(bpath(path, sizeof path, "floor.db"));
    sqlite3 *db = su_db(path);
    if (!t)
        die("fsync floor");
    su_exec(db, "PRAGMA journal_mode=WAL");
    su_exec(db, "PRAGMA synchronous=FULL");
    su_exec(db, "CREATE TABLE f(i INTEGER PRIMARY KEY, v BLOB)");
    sqlite3_prepare_v2(db, "INSERT INTO f(v) VALUES (randomblob(64))", -1, &ins, NULL);
    for (long i = 0; i < n; i++) {
        double t0 = now_s();
        if (sqlite3_step(ins) != SQLITE_DONE)
            die("fsync floor: insert");
        sqlite3_reset(ins);
        t[i] = (now_s() - t0) * 1000;
    }
    sqlite3_finalize(ins);
    sqlite3_close(db);
    remove_db(path);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    *p50 = t[n / 2];
    *p99 = t[(n * 99) / 100];
    free(t);
}

/* PRAGMA data_version through st. */
static int dv_read(sqlite3_stmt *st)
{
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_reset(st);
    return v;
}

static void bench_latency(int tls)
{
    const int ws = tls == 3;
    const int lp = tls == 2 || ws; /* an --http-listen relay */
    char hl[64], lpurl[80];
    const char *relay_lp[] = {"--http-listen", hl, NULL};
    const char *agent_lp[] = {"--relay", lpurl, NULL};
    su_relay_t r;
    su_proc_t pa, pb;
    char a[600], b[600], tok[600], la[600], lb[600];
    char cert[700], keyf[700], ca[700], url[64];
    const char *certs = tls ? tls_certs() : NULL;
    const char *relay_tls[] = {"--tls-cert", cert, "--tls-key", keyf, NULL};
    const char *agent_tls[] = {"--relay", url, "--ca-file", ca, "--server-name", "localhost", NULL};
    const long n = su_scale(10000);
    double *lat = malloc((size_t)n * sizeof *lat);
    sqlite3 *dba, *dbb, *dbr;
    sqlite3_stmt *ins, *sel, *dv, *dva, *dvr;
    int last_dv;
    /* Stages (plain TCP only): A's agent stamped (A's data_version moved),
    ** the relay committed (its store's moved), B has it. */
    double *st_a = malloc((size_t)n * sizeof *st_a), *st_r = malloc((size_t)n * sizeof *st_r);
    double *st_b = malloc((size_t)n * sizeof *st_b);

    if (lp)
        tls = 0, certs = NULL;
    if (tls && !certs)
        return;
    if (lp) {
        int hp = su_free_port();
        snprintf(hl, sizeof hl, "127.0.0.1:%d", hp);
        snprintf(lpurl, sizeof lpurl, "%s://127.0.0.1:%d", ws ? "ws" : "http", hp);
    }
    if (certs) {
        snprintf(cert, sizeof cert, "%s/chain.pem", certs);
        snprintf(keyf, sizeof keyf, "%s/rsa.key", certs);
        snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    }
    start_relay(&r, "lat-relay.db", tls ? relay_tls : lp ? relay_lp : NULL);
    snprintf(url, sizeof url, "knits://127.0.0.1:%d", r.port);
    bpath(a, sizeof a, "lat-a.db");
    bpath(b, sizeof b, "lat-b.db");
    bpath(tok, sizeof tok, "lat.jwt");
    bpath(la, sizeof la, "lat-a.log");
    bpath(lb, sizeof lb, "lat-b.log");
    remove_db(a);
    remove_db(b);
    make_replica(a);
    make_replica(b);
    write_token(tok, "latency");
    if (su_agent_start(&pa, a, r.port, tok, la,
                       tls  ? agent_tls
                       : lp ? agent_lp
                            : NULL) ||
        su_agent_start(&pb, b, r.port, tok, lb,
                       tls  ? agent_tls
                       : lp ? agent_lp
                            : NULL))
        die("agents");
    dba = su_db(a);
    dbb = su_db(b);
    su_exec(dba, "PRAGMA synchronous=NORMAL");
    /* Warm up: both agents online and synced. */
    su_exec(dba, "INSERT INTO items(id, name, qty) VALUES ('warm', 'x', 0)");
    for (int i = 0; i < 2000 && su_int(dbb, "SELECT count(*) FROM items") < 1; i++)
        su_sleep_ms(5);
    if (su_int(dbb, "SELECT count(*) FROM items") < 1)
        die("latency: the warm-up row never arrived");
    sqlite3_prepare_v2(dba, "INSERT INTO items(id, name, qty) VALUES (?1, 'v', 1)", -1, &ins, NULL);
    sqlite3_prepare_v2(dbb, "SELECT 1 FROM items WHERE id = ?1", -1, &sel, NULL);
    sqlite3_prepare_v2(dbb, "PRAGMA data_version", -1, &dv, NULL);
    last_dv = dv_read(dv);
    dbr = su_db(r.data);
    sqlite3_prepare_v2(dba, "PRAGMA data_version", -1, &dva, NULL);
    sqlite3_prepare_v2(dbr, "PRAGMA data_version", -1, &dvr, NULL);
    for (long i = 0; i < n; i++) {
        char key[32];
        double t0, deadline;
        int seen = 0;
        snprintf(key, sizeof key, "L%ld", i);
        sqlite3_bind_text(ins, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(sel, 1, key, -1, SQLITE_TRANSIENT);
        int va = dv_read(dva), vr = dv_read(dvr);
        double ta = 0, tr = 0;
        t0 = now_s();
        deadline = t0 + 10;
        if (sqlite3_step(ins) != SQLITE_DONE)
            die("latency: insert");
        sqlite3_reset(ins); /* this connection's own commit does not move dva */
        while (!seen && now_s() < deadline) {
            if (!ta && dv_read(dva) != va)
                ta = now_s();
            if (!tr && dv_read(dvr) != vr)
                tr = now_s();
            /* Cheap check first: did any other connection commit to B? */
            int v = dv_read(dv);
            if (v != last_dv) {
                last_dv = v;
                seen = sqlite3_step(sel) == SQLITE_ROW;
                sqlite3_reset(sel);
            }
            if (!seen) {
                struct timespec ts = {0, 20000};
                nanosleep(&ts, NULL);
            }
        }
        if (!seen)
            die("latency: a write did not arrive within 10 s");
        double tb = now_s();
        lat[i] = (tb - t0) * 1000;
        /* A stage not seen before B had the row is counted as ending there. */
        ta = ta ? ta : tb;
        tr = tr ? (tr > ta ? tr : ta) : tb;
        st_a[i] = (ta - t0) * 1000;
        st_r[i] = (tr - ta) * 1000;
        st_b[i] = (tb - tr) * 1000;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    qsort(st_a, (size_t)n, sizeof *st_a, cmp_double);
    qsort(st_r, (size_t)n, sizeof *st_r, cmp_double);
    qsort(st_b, (size_t)n, sizeof *st_b, cmp_double);
    sqlite3_finalize(dva);
    sqlite3_finalize(dvr);
    sqlite3_close(dbr);
    if (!tls && !lp) {
        double f50, f99;
        fsync_floor(n < 2000 ? n : 2000, &f50, &f99);
        printf("floor, a durable one-row commit (WAL, synchronous=FULL) in %s: p50 %.2f ms, p99 "
               "%.2f ms; goal p50 <= "
               "%.2f ms, p99 <= %.2f ms: %s, %s\n",
               g_dir, f50, f99, f50 + 0.3, 2 * f99,
               lat[n / 2] <= f50 + 0.3 ? "p50 met" : "p50 not met",
               lat[(n * 99) / 100] <= 2 * f99 ? "p99 met" : "p99 not met");
    }
    printf(
        "latency%s stages, p50 / p99 ms: A's commit -> A's agent stamped %.2f / %.2f; -> the relay "
        "committed %.2f / %.2f; -> visible on B %.2f / %.2f\n",
        ws    ? "-ws"
        : lp  ? "-lp"
        : tls ? "-tls"
              : "",
        st_a[n / 2], st_a[(n * 99) / 100], st_r[n / 2], st_r[(n * 99) / 100], st_b[n / 2],
        st_b[(n * 99) / 100]);
    free(st_a);
    free(st_r);
    free(st_b);
    printf("latency%s write on A -> visible on B, %ld writes: p50 %.2f ms, p99 %.2f ms, max %.2f ms"
           " (goal p50 < 1 ms, p99 < 2 ms%s)\n",
           ws    ? "-ws"
           : lp  ? "-lp"
           : tls ? "-tls"
                 : "",
           n, lat[n / 2], lat[(n * 99) / 100], lat[n - 1],
           tls  ? "; TLS adds at most 0.2 ms to the TCP p50"
           : ws ? "; WebSocket: within 10% of the TCP line"
           : lp ? "; long-polling: two HTTP requests per change, compare with the TCP line"
                : "");
    sqlite3_finalize(ins);
    sqlite3_finalize(sel);
    sqlite3_finalize(dv);
    sqlite3_close(dba);
    sqlite3_close(dbb);
    su_kill(&pa, SIGTERM, 10000, NULL);
    su_kill(&pb, SIGTERM, 10000, NULL);
    su_kill(&r.p, SIGTERM, 10000, NULL);
    free(lat);
}

/* ---------------------------------------------------------------------- */
/* live: the map workload through agents                                    */

static void make_kv_replica(const char *path)
{
    char out[512];
    sqlite3 *db;
    remove_db(path);
    db = su_db(path);
    su_exec(db, "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)");
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, "kv", NULL};
    if (su_run(argv, 20000, out, sizeof out) != 0)
        die(out);
}

/* CPU seconds (user + system) a process has used so far. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Rounds of 50,000 writes on A; per round, the time from A's last commit
** until B shows A's last write, and B's whole table checked against A's.
** app_stamps: the app loads knit and stamps after each transaction (as in
** bench_map); else only the agent stamps, when its poll gets the write lock
** between the app's transactions. */
static void bench_live(int app_stamps)
{
    enum { KEYS = 10000, TXN = 1000, ROUNDS = 3 };
    const long writes = su_scale(50000);
    su_relay_t r;
    su_proc_t pa, pb;
    char a[600], b[600], tok[600], la[600], lb[600];
    double lag[ROUNDS], wsec[ROUNDS];
    sqlite3_stmt *up, *sel;

    start_relay(&r, "live-relay.db", NULL);
    bpath(a, sizeof a, "live-a.db");
    bpath(b, sizeof b, "live-b.db");
    bpath(tok, sizeof tok, "live.jwt");
    bpath(la, sizeof la, "live-a.log");
    bpath(lb, sizeof lb, "live-b.log");
    make_kv_replica(a);
    make_kv_replica(b);
    write_token(tok, "live");
    if (su_agent_start(&pa, a, r.port, tok, la, NULL) ||
        su_agent_start(&pb, b, r.port, tok, lb, NULL))
        die("agents");
    sqlite3 *dba = su_db(a), *dbb = su_db(b);
    knit_t *ka = NULL;
    if (app_stamps && knit_open(a, NULL, &ka) != 0)
        die("live: knit_open");
    su_exec(dba, "PRAGMA synchronous=NORMAL");
    su_exec(dba, "INSERT INTO kv VALUES ('warm', 'x')");
    for (int i = 0; i < 2000 && su_int(dbb, "SELECT count(*) FROM kv") < 1; i++)
        su_sleep_ms(5);
    if (su_int(dbb, "SELECT count(*) FROM kv") < 1)
        die("live: the warm-up row never arrived");
    sqlite3_prepare_v2(dba,
                       "INSERT INTO kv(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = "
                       "excluded.v",
                       -1, &up, NULL);
    sqlite3_prepare_v2(dbb, "SELECT v FROM kv WHERE k = ?1", -1, &sel, NULL);
    for (int round = 0; round < ROUNDS; round++) {
        char key[32], val[32], last[32];
        double t0 = now_s(), t1, deadline;
        double cpu0[3] = {proc_cpu_s(pa.pid), proc_cpu_s(r.p.pid), proc_cpu_s(pb.pid)};
        int seen = 0;
        for (long i = 0; i < writes; i++) {
            if (i % TXN == 0)
                su_exec(dba, "BEGIN");
            snprintf(key, sizeof key, "key-%05ld", i % KEYS);
            snprintf(val, sizeof val, "r%d-%010ld-abcdefg", round, i); /* 21 characters */
            sqlite3_bind_text(up, 1, key, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(up, 2, val, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(up) != SQLITE_DONE)
                die("live: upsert");
            sqlite3_reset(up);
            if (i % TXN == TXN - 1 || i == writes - 1) {
                su_exec(dba, "COMMIT");
                if (ka && knit_stamp(ka) < 0)
                    die("live: knit_stamp");
            }
        }
        t1 = now_s();
        snprintf(last, sizeof last, "%s", val);
        sqlite3_bind_text(sel, 1, key, -1, SQLITE_TRANSIENT);
        deadline = t1 + 120;
        while (!seen && now_s() < deadline) {
            if (sqlite3_step(sel) == SQLITE_ROW &&
                strcmp((const char *)sqlite3_column_text(sel, 0), last) == 0)
                seen = 1;
            sqlite3_reset(sel);
            if (!seen) {
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
            }
        }
        if (!seen)
            die("live: A's last write did not reach B within 120 s");
        lag[round] = (now_s() - t1) * 1000;
        double cpu[3] = {proc_cpu_s(pa.pid) - cpu0[0], proc_cpu_s(r.p.pid) - cpu0[1],
                         proc_cpu_s(pb.pid) - cpu0[2]};
        wsec[round] = t1 - t0;
        /* Everything else arrived too (A's last write of each key). */
        su_exec(dbb, "ATTACH '%s' AS a", a);
        long differ = 0;
        for (int i = 0; i < 1000; i++) {
            differ = (long)su_int(dbb, "SELECT count(*) FROM a.kv AS x LEFT JOIN main.kv AS y"
                                       " ON x.k = y.k WHERE y.v IS NOT x.v");
            if (!differ)
                break;
            su_sleep_ms(10);
        }
        su_exec(dbb, "DETACH a");
        if (differ)
            die("live: B differs from A 10 s after A's last write arrived");
        printf(
            "live%s round %d: %ld writes in %.3f s (%.0f writes/s on A), A's last commit -> on B: "
            "%.1f ms; CPU until then: agent A %.2f s, relay %.2f s, agent B %.2f s\n",
            app_stamps ? "" : "-agent", round + 1, writes, wsec[round], writes / wsec[round],
            lag[round], cpu[0], cpu[1], cpu[2]);
    }
    qsort(lag, ROUNDS, sizeof *lag, cmp_double);
    printf("live%s: A's last commit -> B has A's last write, median of %d: %.1f ms (goal <= 50 "
           "ms; %s)\n",
           app_stamps ? "" : "-agent", ROUNDS, lag[ROUNDS / 2],
           app_stamps ? "the app stamps after each transaction"
                      : "only the agent stamps, between the app's transactions");
    knit_close(ka);
    sqlite3_finalize(up);
    sqlite3_finalize(sel);
    sqlite3_close(dba);
    sqlite3_close(dbb);
    su_kill(&pa, SIGTERM, 10000, NULL);
    su_kill(&pb, SIGTERM, 10000, NULL);
    su_kill(&r.p, SIGTERM, 10000, NULL);
}

/* ---------------------------------------------------------------------- */
/* ingest                                                                   */

typedef struct ingest_s {
    int port;           /* relay */
    int idx;            /* client number */
    long pushes;        /* PUSH frames to send */
    long rows;          /* rows per push */
    knit_buf_t *frames; /* pre-encoded pushes */
    char *token;        /* its JWT */
    int ok;             /* finished without error */
} ingest_t;

static void *ingest_client(void *arg)
{
    ingest_t *in = arg;
    rc_t c;
    long sent = 0;
    const long window = 16;
    if (rc_connect(&c, in->port) || rc_hello(&c, in->token, NULL))
        return NULL;
    while (!c.welcomed && !c.failed)
        rc_pump(&c, 0);
    while (c.acks < (uint64_t)in->pushes && !c.failed) {
        while (sent < in->pushes && sent - (long)c.acks < window) {
            if (send_all(c.fd, in->frames[sent].p, in->frames[sent].len))
                return NULL;
            sent++;
        }
        rc_pump(&c, 0);
    }
    in->ok = !c.failed;
    rc_close(&c);
    return NULL;
}

static void bench_ingest(void)
{
    static const int clients[] = {1, 4, 16};
    const long total_rows = su_scale(250000); /* 1,000,000 changes per run */
    const long rows_per_push = 1000;          /* 4,000 changes */
    for (size_t k = 0; k < sizeof clients / sizeof clients[0]; k++) {
        int nc = clients[k];
        su_relay_t r;
        ingest_t *in = calloc((size_t)nc, sizeof *in);
        pthread_t *th = calloc((size_t)nc, sizeof *th);
        long pushes = total_rows / rows_per_push / nc;
        double t0, dt;
        int ok = 1;
        char name[64];
        if (pushes < 1)
            pushes = 1;
        snprintf(name, sizeof name, "ingest-%d.db", nc);
        start_relay(&r, name, NULL);
        for (int i = 0; i < nc; i++) {
            char sub[32], ns[64], prefix[32];
            snprintf(sub, sizeof sub, "ingest%d", i);
            snprintf(ns, sizeof ns, "user:%s", sub);
            snprintf(prefix, sizeof prefix, "c%d", i);
            in[i].port = r.port;
            in[i].idx = i;
            in[i].pushes = pushes;
            in[i].rows = rows_per_push;
            in[i].token = mint(sub);
            in[i].frames = calloc((size_t)pushes, sizeof *in[i].frames);
            for (long p = 0; p < pushes; p++)
                push_frame(&in[i].frames[p], (uint64_t)p + 1, ns, prefix, p * rows_per_push,
                           rows_per_push);
        }
        t0 = now_s();
        for (int i = 0; i < nc; i++)
            pthread_create(&th[i], NULL, ingest_client, &in[i]);
        for (int i = 0; i < nc; i++) {
            pthread_join(th[i], NULL);
            ok &= in[i].ok;
        }
        dt = now_s() - t0;
        printf("ingest   %2d pushing client%s: %ld changes in %.2f s = %.0f changes/s%s"
               " (goal >= 200,000/s)\n",
               nc, nc == 1 ? " " : "s", (long)nc * pushes * rows_per_push * 4, dt,
               (double)nc * (double)pushes * (double)rows_per_push * 4 / dt, ok ? "" : " [ERRORS]");
        for (int i = 0; i < nc; i++) {
            for (long p = 0; p < pushes; p++)
                knit_buf_free(&in[i].frames[p]);
            free(in[i].frames);
            knit__free(in[i].token);
        }
        free(in);
        free(th);
        su_kill(&r.p, SIGTERM, 30000, NULL);
    }
}

/* ---------------------------------------------------------------------- */
/* ingest-transports: the same pushes through each client stream            */

/* The client streams, in the order the figures are printed. */
enum { X_TCP, X_TLS, X_WS, X_LP, X_N };
static const char *const X_NAME[X_N] = {"tcp", "tls", "websocket", "longpoll"};

typedef struct sc_s {
    int xport;            /* X_* */
    int port;             /* the relay's binary port (tcp, tls) or --http-listen port */
    const char *ca;       /* tls: the CA file */
    long pushes;          /* PUSH frames to send */
    knit_buf_t *frames;   /* pre-encoded pushes */
    char *token;          /* its JWT */
    uv_loop_t loop;       /* its own loop, in its own thread */
    knit_tls_conf_t *tls; /* tls: the client configuration */
    knit_stream_t *st;    /* the stream */
    rc_t in;              /* counts what arrives (fd unused) */
    long sent;            /* pushes written */
    int window;           /* pushes unacknowledged at most */
    double t_done;        /* when the last ACK arrived */
    int ok;               /* every push acknowledged, no error */
    char err[300];        /* the first failure */
} sc_t;

/* Hands a copy of p[0..n) to the stream (which frees it). */
static int sc_write(sc_t *c, const uint8_t *p, size_t n)
{
    uint8_t *b = knit__malloc(n);
    if (!b)
        return KNIT_ENOMEM;
    memcpy(b, p, n);
    return knit_stream_write(c->st, b, n, NULL, NULL);
}

static void sc_fail(sc_t *c, const char *what, const char *msg)
{
    if (!c->err[0])
        snprintf(c->err, sizeof c->err, "%s: %s", what, msg ? msg : "?");
    c->in.failed = 1;
    knit_stream_close(c->st);
}

/* Writes pushes while the window allows; closes once all are acknowledged. */
static void sc_fill(sc_t *c)
{
    while (c->in.welcomed && !c->in.failed && c->sent < c->pushes &&
           c->sent - (long)c->in.acks < c->window) {
        if (sc_write(c, c->frames[c->sent].p, c->frames[c->sent].len) != 0) {
            sc_fail(c, "write", "refused");
            return;
        }
        c->sent++;
    }
    if (c->in.acks >= (uint64_t)c->pushes && !c->ok && !c->in.failed) {
        c->t_done = now_s();
        c->ok = 1;
        knit_stream_close(c->st);
    }
}

static void sc_on_open(knit_stream_t *st, int status, const char *msg)
{
    sc_t *c = st->data;
    knit_buf_t b = {NULL, 0, 0};
    if (status != 0) {
        sc_fail(c, "open", msg);
        return;
    }
    if (hello_frame(&b, c->token, NULL) != 0 || sc_write(c, b.p, b.len) != 0)
        sc_fail(c, "hello", "cannot write");
    knit_buf_free(&b);
}

static void sc_on_read(knit_stream_t *st, const uint8_t *p, size_t n)
{
    sc_t *c = st->data;
    if (rc_feed(&c->in, p, n) != 0 || c->in.failed)
        sc_fail(c, "read", "ERROR, REJECT or a bad frame from the relay");
    else
        sc_fill(c);
}

static void sc_on_end(knit_stream_t *st, int code, const char *msg)
{
    sc_t *c = st->data;
    if (!c->ok)
        sc_fail(c, "end", msg ? msg : knit_strerror(code));
}

static void sc_on_close(knit_stream_t *st)
{
    (void)st;
}

static void *sc_main(void *arg)
{
    sc_t *c = arg;
    static const knit_stream_cbs_t cbs = {sc_on_open, sc_on_read, sc_on_end, sc_on_close};
    struct sockaddr_in sa;
    char msg[300], host[64], url[96];
    int rc = 0;
    uv_loop_init(&c->loop);
    knit_frame_reader_init(&c->in.rd, 0);
    c->in.fd = -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)c->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    switch (c->xport) {
    case X_TCP:
        rc = knit_tcp_connect(&c->loop, (struct sockaddr *)&sa, &cbs, c, &c->st);
        break;
    case X_TLS:
        rc = knit_tls_conf_client(c->ca, msg, sizeof msg, &c->tls);
        if (!rc)
            rc = knit_tls_connect(&c->loop, (struct sockaddr *)&sa, c->tls, "localhost", &cbs, c,
                                  &c->st);
        break;
    case X_WS: {
        knit_stream_t *inner = NULL;
        uint8_t seed[32];
        /* A benchmark's masking keys need not be secret. */
        for (int i = 0; i < 32; i++)
            seed[i] = (uint8_t)(i * 37 + c->port);
        snprintf(host, sizeof host, "127.0.0.1:%d", c->port);
        rc = knit_tcp_connect(&c->loop, (struct sockaddr *)&sa, &cbs, c, &inner);
        if (!rc && (rc = knit_ws_client(inner, host, NULL, seed, &cbs, c, &c->st)) != 0)
            knit_stream_close(inner);
        break;
    }
    case X_LP: {
        knit_lp_client_conf_t conf;
        memset(&conf, 0, sizeof conf);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/lp", c->port);
        conf.url = url;
        rc = knit_lp_client(&c->loop, &conf, &cbs, c, &c->st);
        break;
    }
    }
    if (rc) {
        snprintf(c->err, sizeof c->err, "cannot start the %s stream: %s", X_NAME[c->xport],
                 knit_strerror(rc));
    } else {
        c->st->data = c;
        uv_run(&c->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&c->loop);
    knit_tls_conf_unref(c->tls);
    knit_frame_reader_free(&c->in.rd);
    return NULL;
}

/* Pushes total_rows rows through nc clients of transport x to a fresh
** relay; changes/s from the first connect to the last ACK. */
static double ingest_over(int x, int nc, long total_rows, const char *certs, long *changes)
{
    const long rows_per_push = 1000; /* 4,000 changes, as in bench_ingest */
    char hl[64], cert[700], keyf[700], ca[700], name[64];
    int hp = su_free_port();
    const char *plain[] = {"--http-listen", hl, NULL};
    const char *tls[] = {"--tls-cert", cert, "--tls-key", keyf, NULL};
    su_relay_t r;
    sc_t *cs = calloc((size_t)nc, sizeof *cs);
    pthread_t *th = calloc((size_t)nc, sizeof *th);
    long pushes = total_rows / rows_per_push / nc;
    double t0, t1 = 0, rate;
    int ok = 1;
    if (pushes < 1)
        pushes = 1;
    snprintf(hl, sizeof hl, "127.0.0.1:%d", hp);
    if (certs) {
        snprintf(cert, sizeof cert, "%s/chain.pem", certs);
        snprintf(keyf, sizeof keyf, "%s/rsa.key", certs);
        snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    }
    snprintf(name, sizeof name, "ingest-%s-%d.db", X_NAME[x], nc);
    start_relay(&r, name, x == X_TLS ? tls : plain);
    for (int i = 0; i < nc; i++) {
        char sub[32], ns[64], prefix[32];
        snprintf(sub, sizeof sub, "ingest%d", i);
        snprintf(ns, sizeof ns, "user:%s", sub);
        snprintf(prefix, sizeof prefix, "c%d", i);
        cs[i].xport = x;
        cs[i].port = x == X_TCP || x == X_TLS ? r.port : hp;
        cs[i].ca = ca;
        cs[i].pushes = pushes;
        cs[i].window = 16;
        cs[i].token = mint(sub);
        cs[i].frames = calloc((size_t)pushes, sizeof *cs[i].frames);
        for (long p = 0; p < pushes; p++)
            push_frame(&cs[i].frames[p], (uint64_t)p + 1, ns, prefix, p * rows_per_push,
                       rows_per_push);
    }
    t0 = now_s();
    for (int i = 0; i < nc; i++)
        pthread_create(&th[i], NULL, sc_main, &cs[i]);
    for (int i = 0; i < nc; i++) {
        pthread_join(th[i], NULL);
        if (!cs[i].ok)
            fprintf(stderr, "bench_sync: ingest over %s, client %d: %s\n", X_NAME[x], i,
                    cs[i].err[0] ? cs[i].err : "did not finish");
        ok &= cs[i].ok;
        if (cs[i].t_done > t1)
            t1 = cs[i].t_done;
    }
    *changes = (long)nc * pushes * rows_per_push * 4;
    rate = ok ? (double)nc * (double)pushes * (double)rows_per_push * 4 / (t1 - t0) : 0;
    for (int i = 0; i < nc; i++) {
        for (long p = 0; p < pushes; p++)
            knit_buf_free(&cs[i].frames[p]);
        free(cs[i].frames);
        knit__free(cs[i].token);
    }
    free(cs);
    free(th);
    su_kill(&r.p, SIGTERM, 30000, NULL);
    return rate;
}

/* Relay ingest through the client's own streams (tcp.c, tls.c,
** ws_client.c, lp_client.c): the pushes, window and relay of bench_ingest,
** TCP first, each other transport as a ratio to the TCP figure of the same
** run.  The raw-socket `ingest` mode is the relay's ceiling; this one
** includes each client stream's cost, which is what an app sees. */
static void bench_ingest_transports(void)
{
    static const int clients[] = {1, 4};
    const long total_rows = su_scale(250000);
    const char *certs = tls_certs();
    /* TCP runs first and again last, and the ratios are to the mean of
    ** the two, so that a load that drifts during the run is not charged
    ** to whichever transport ran at the quiet or the busy end. */
    static const int order[] = {X_TCP, X_TLS, X_WS, X_LP, X_TCP};
    for (size_t k = 0; k < sizeof clients / sizeof clients[0]; k++) {
        double rates[5], tcp;
        long changes[5];
        for (int i = 0; i < 5; i++)
            rates[i] = order[i] == X_TLS && !certs
                           ? -1
                           : ingest_over(order[i], clients[k], total_rows, certs, &changes[i]);
        tcp = (rates[0] + rates[4]) / 2;
        for (int i = 0; i < 5; i++) {
            int x = order[i];
            if (rates[i] < 0)
                continue;
            printf("ingest-%-9s %d pushing client%s: %ld changes, %.0f changes/s%s", X_NAME[x],
                   clients[k], clients[k] == 1 ? " " : "s", changes[i], rates[i],
                   rates[i] > 0 ? "" : " [ERRORS]");
            if (x != X_TCP && tcp > 0)
                printf(" = %.2f of TCP (mean of the two TCP runs)", rates[i] / tcp);
            printf("%s\n", x == X_TLS  ? " (goal >= 250,000/s)"
                           : x == X_WS ? " (goal within 10% of TCP)"
                           : i == 0    ? " (TCP, first)"
                           : i == 4    ? " (TCP, again last)"
                                       : "");
        }
    }
}

/* ---------------------------------------------------------------------- */
/* fanout                                                                   */

/* Connects n subscribers of ns and waits until each caught up. */
static rc_t *subscribers(int port, const char *token, const char *ns, int n)
{
    rc_t *cs = calloc((size_t)n, sizeof *cs);
    struct pollfd *pf = calloc((size_t)n, sizeof *pf);
    int done = 0;
    double deadline;
    for (int i = 0; i < n; i++) {
        if (rc_connect(&cs[i], port) || rc_hello(&cs[i], token, ns)) {
            fprintf(stderr, "subscriber %d: %s\n", i, strerror(errno));
            die("cannot connect subscribers (fd limit?)");
        }
    }
    deadline = now_s() + 120;
    while (done < n && now_s() < deadline) {
        for (int i = 0; i < n; i++) {
            pf[i].fd = cs[i].caught_up ? -1 : cs[i].fd;
            pf[i].events = POLLIN;
        }
        if (poll(pf, (nfds_t)n, 100) <= 0)
            continue;
        for (int i = 0; i < n; i++)
            if (pf[i].fd >= 0 && (pf[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                rc_pump(&cs[i], 1);
                if (cs[i].caught_up)
                    done++;
                if (cs[i].failed)
                    die("a subscriber was refused");
            }
    }
    free(pf);
    if (done < n)
        die("subscribers did not catch up in 120 s");
    return cs;
}

static void bench_fanout(void)
{
    static const int counts[] = {100, 1000};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        int n = counts[k];
        const char *const extra[] = {"--max-conns",
                                     "20000",
                                     "--max-conns-per-addr",
                                     "20000",
                                     "--max-anon-sessions",
                                     "20000",
                                     "--anon-registrations-per-min",
                                     "100000",
                                     NULL};
        su_relay_t r;
        rc_t *cs, pusher;
        char *tok = mint("fan");
        struct pollfd *pf = calloc((size_t)n, sizeof *pf);
        double times[7];
        const int rounds = 7;
        start_relay(&r, "fanout.db", extra);
        cs = subscribers(r.port, tok, "user:fan", n);
        if (rc_connect(&pusher, r.port) || rc_hello(&pusher, tok, NULL))
            die("pusher");
        while (!pusher.welcomed)
            rc_pump(&pusher, 0);
        for (int round = 0; round < rounds; round++) {
            knit_buf_t b = {NULL, 0, 0};
            int have = 0;
            double t0, deadline;
            uint64_t *before = calloc((size_t)n, sizeof *before);
            for (int i = 0; i < n; i++)
                before[i] = cs[i].deltas;
            push_frame(&b, (uint64_t)round + 1, "user:fan", "fan", round, 1);
            t0 = now_s();
            send_all(pusher.fd, b.p, b.len);
            knit_buf_free(&b);
            deadline = t0 + 30;
            while (have < n && now_s() < deadline) {
                int np = 0;
                for (int i = 0; i < n; i++) {
                    pf[i].fd = cs[i].deltas > before[i] ? -1 : cs[i].fd;
                    pf[i].events = POLLIN;
                    np += pf[i].fd >= 0;
                }
                if (poll(pf, (nfds_t)n, 50) <= 0)
                    continue;
                for (int i = 0; i < n; i++)
                    if (pf[i].fd >= 0 && (pf[i].revents & POLLIN)) {
                        rc_pump(&cs[i], 1);
                        if (cs[i].deltas > before[i])
                            have++;
                    }
                (void)np;
            }
            times[round] = (now_s() - t0) * 1000;
            if (have < n)
                die("fan-out: not every subscriber got the write in 30 s");
            rc_pump(&pusher, 1); /* the ACK */
            free(before);
        }
        qsort(times, (size_t)rounds, sizeof times[0], cmp_double);
        printf("fanout   one write to %4d subscribers: last one has it after %.2f ms"
               " (median of %d; best %.2f, worst %.2f)\n",
               n, times[rounds / 2], rounds, times[0], times[rounds - 1]);
        for (int i = 0; i < n; i++)
            rc_close(&cs[i]);
        rc_close(&pusher);
        free(cs);
        free(pf);
        knit__free(tok);
        su_kill(&r.p, SIGTERM, 30000, NULL);
    }
}

/* ---------------------------------------------------------------------- */
/* catchup                                                                  */

/* Runs argv (stdout and stderr into log) to its end: its exit code, and
** its peak resident memory (wait4's ru_maxrss, the kernel's VmHWM of that
** one process) into *peak_kb.  Its own fork, not su_run, so that the
** figure is this child's and not the largest of every child reaped. */
static int run_peak(const char *const *argv, const char *log, long *peak_kb)
{
    struct rusage ru;
    int st = 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR)
        ;
    *peak_kb = ru.ru_maxrss;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `sync-agent run replica --relay relay --once`: seconds taken, peak RSS. */
static double catchup_once(const char *replica, const char *relay, const char *tok, long *peak_kb)
{
    char log[700];
    double t0;
    snprintf(log, sizeof log, "%s.once.log", replica);
    const char *argv[] = {SYNC_AGENT_PATH, "run",  replica,  "--relay",   relay,
                          "--token-file",  tok,    "--once", "--timeout", "600",
                          "--log-level",   "warn", NULL};
    t0 = now_s();
    if (run_peak(argv, log, peak_kb) != 0) {
        su_print_file(log);
        die("catch-up: sync-agent --once failed");
    }
    return now_s() - t0;
}

static long count_items(const char *path)
{
    sqlite3 *db = su_db(path);
    long got = (long)su_int(db, "SELECT count(*) FROM items");
    sqlite3_close(db);
    return got;
}

/* Fills the relay with rows rows of ns (4 cells each: liveness and 3
** columns) pushed by a raw protocol client (bench_ingest's pushes).
** Seconds taken. */
static double fill_relay(int port, const char *sub, const char *ns, long rows)
{
    const long per = 1000;
    ingest_t in;
    double t0;
    memset(&in, 0, sizeof in);
    in.port = port;
    in.pushes = (rows + per - 1) / per;
    in.rows = per;
    in.token = mint(sub);
    in.frames = calloc((size_t)in.pushes, sizeof *in.frames);
    for (long p = 0; p < in.pushes; p++)
        push_frame(&in.frames[p], (uint64_t)p + 1, ns, "row", p * per,
                   p * per + per <= rows ? per : rows - p * per);
    t0 = now_s();
    ingest_client(&in);
    t0 = now_s() - t0;
    if (!in.ok)
        die("catch-up: the relay refused the pushes");
    for (long p = 0; p < in.pushes; p++)
        knit_buf_free(&in.frames[p]);
    free(in.frames);
    knit__free(in.token);
    return t0;
}

/* catchup: 1,000,000 cells written on A and pushed by A's agent over TCP;
** then B (empty) runs `sync-agent run --once` over TCP: the time and its
** peak RSS.  catchup-lp (lp 1): the relay is filled by a raw protocol
** client instead (1,000,000 cells, 250,000 rows of 4), so the figure does
** not wait for A's first stamp; then C (empty) catches up over
** long-polling and B over TCP, in the same run. */
static void bench_catchup(int lp)
{
    su_relay_t r;
    char a[600], b[600], c[600], tok[600], relay[64], lpurl[96], hl[64];
    const long cells = su_scale(1000000);
    const long rows = lp ? cells / 4 : cells / 5; /* liveness + 3 or 4 columns per row */
    const int hp = su_free_port();
    const char *relay_lp[] = {"--http-listen", hl, NULL};
    sqlite3 *db;
    FILE *f;
    char *t;
    double t0, tw, tp, tc, tl = 0;
    long rss_tcp = 0, rss_lp = 0, rss_push = 0;

    snprintf(hl, sizeof hl, "127.0.0.1:%d", hp);
    snprintf(lpurl, sizeof lpurl, "http://127.0.0.1:%d/v1/lp", hp);
    start_relay(&r, "catchup-relay.db", lp ? relay_lp : NULL);
    bpath(a, sizeof a, "catchup-a.db");
    bpath(b, sizeof b, "catchup-b.db");
    bpath(c, sizeof c, "catchup-c.db");
    bpath(tok, sizeof tok, "catchup.jwt");
    remove_db(a);
    remove_db(b);
    remove_db(c);
    make_replica(a);
    make_replica(b);
    if (lp)
        make_replica(c);
    t = mint("catchup");
    f = fopen(tok, "w");
    fprintf(f, "%s\n", t);
    fclose(f);
    knit__free(t);
    snprintf(relay, sizeof relay, "127.0.0.1:%d", r.port);
    if (lp) {
        tp = fill_relay(r.port, "catchup", "user:catchup", rows);
        tl = catchup_once(c, lpurl, tok, &rss_lp);
        tc = catchup_once(b, relay, tok, &rss_tcp);
        printf("catchup-lp %ld cells (%ld rows) pushed by a raw client in %.2f s\n", rows * 4, rows,
               tp);
        printf("catchup-lp B over tcp caught up in %.2f s, agent peak RSS %.1f MiB%s\n", tc,
               rss_tcp / 1024.0, count_items(b) == rows ? "" : " [ROWS MISSING]");
        printf("catchup-lp C over longpoll caught up in %.2f s = %.2f x the TCP time, agent peak"
               " RSS %.1f MiB%s (goal < 10 s)\n",
               tl, tl / tc, rss_lp / 1024.0, count_items(c) == rows ? "" : " [ROWS MISSING]");
        su_kill(&r.p, SIGTERM, 30000, NULL);
        return;
    }
    db = su_db(a);
    su_exec(db, "PRAGMA synchronous=NORMAL");
    t0 = now_s();
    for (long r0 = 0; r0 < rows; r0 += 10000) {
        su_exec(db, "BEGIN");
        su_exec(db,
                "WITH RECURSIVE n(i) AS (SELECT %ld UNION ALL SELECT i + 1 FROM n WHERE i < %ld)"
                " INSERT INTO items(id, name, qty, tags, batch)"
                " SELECT printf('row-%%08d', i), 'name ' || i, i, '[\"t' || (i %% 3) || '\"]', i / "
                "10000"
                " FROM n",
                r0, (r0 + 10000 < rows ? r0 + 10000 : rows) - 1);
        su_exec(db, "COMMIT");
    }
    tw = now_s() - t0;
    sqlite3_close(db);
    tp = catchup_once(a, relay, tok, &rss_push);
    tc = catchup_once(b, relay, tok, &rss_tcp);
    printf("catchup  %ld cells (%ld rows): written on A in %.2f s, pushed by A in %.2f s"
           " (agent peak RSS %.1f MiB)\n",
           rows * 5, rows, tw, tp, rss_push / 1024.0);
    printf("catchup  B over tcp caught up in %.2f s, agent peak RSS %.1f MiB%s (goal < 5 s)\n", tc,
           rss_tcp / 1024.0, count_items(b) == rows ? "" : " [ROWS MISSING]");
    su_kill(&r.p, SIGTERM, 30000, NULL);
}

/* ---------------------------------------------------------------------- */
/* rss                                                                      */

static void bench_rss(void)
{
    static const int counts[] = {1000, 10000};
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        int n = counts[k];
        const char *const extra[] = {"--max-conns",
                                     "30000",
                                     "--max-conns-per-addr",
                                     "30000",
                                     "--max-anon-sessions",
                                     "30000",
                                     "--idle-timeout",
                                     "3600000",
                                     NULL};
        su_relay_t r;
        rc_t *warm, *cs;
        char *tok = mint("idle");
        long before, after;
        if ((rlim_t)n + 64 > rl.rlim_cur) {
            printf("rss      %d connections: skipped, the fd limit is %llu\n", n,
                   (unsigned long long)rl.rlim_cur);
            knit__free(tok);
            continue;
        }
        start_relay(&r, "rss.db", extra);
        /* One connection first, so the baseline has the store warm. */
        warm = subscribers(r.port, tok, "user:idle", 1);
        su_sleep_ms(200);
        before = rss_kb(r.p.pid);
        cs = subscribers(r.port, tok, "user:idle", n);
        su_sleep_ms(500);
        after = rss_kb(r.p.pid);
        printf("rss      %5d idle subscribed connections: relay RSS %ld -> %ld KiB,"
               " %.1f KiB per connection (goal < 16 KiB; fd limit %llu)\n",
               n, before, after, (double)(after - before) / n, (unsigned long long)rl.rlim_cur);
        for (int i = 0; i < n; i++)
            rc_close(&cs[i]);
        rc_close(&warm[0]);
        free(cs);
        free(warm);
        knit__free(tok);
        su_kill(&r.p, SIGTERM, 30000, NULL);
    }
}

/* ---------------------------------------------------------------------- */
/* rss-tls                                                                  */

typedef struct idle_s {
    knit_stream_t *st; /* the stream */
    const char *token; /* its JWT */
    rc_t in;           /* counts what arrives (fd unused) */
    int closed;        /* on_close ran */
} idle_t;

static void idle_on_open(knit_stream_t *st, int status, const char *msg)
{
    idle_t *c = st->data;
    knit_buf_t b = {NULL, 0, 0};
    uint8_t *p;
    if (status != 0) {
        fprintf(stderr, "bench_sync: rss-tls: %s\n", msg ? msg : knit_strerror(status));
        c->in.failed = 1;
        return;
    }
    if (hello_frame(&b, c->token, "user:idle") != 0 || !(p = knit__malloc(b.len)))
        c->in.failed = 1;
    else {
        memcpy(p, b.p, b.len);
        if (knit_stream_write(st, p, b.len, NULL, NULL) != 0)
            c->in.failed = 1;
    }
    knit_buf_free(&b);
}

static void idle_on_read(knit_stream_t *st, const uint8_t *p, size_t n)
{
    idle_t *c = st->data;
    rc_feed(&c->in, p, n);
}

static void idle_on_end(knit_stream_t *st, int code, const char *msg)
{
    idle_t *c = st->data;
    (void)code;
    (void)msg;
    c->in.failed = 1;
}

static void idle_on_close(knit_stream_t *st)
{
    idle_t *c = st->data;
    c->closed = 1;
}

/* n idle subscribed connections through the client streams (tls or tcp)
** to the relay on port; RSS growth of the relay in KiB per connection. */
static double idle_conns(uv_loop_t *loop, su_relay_t *r, int tls, knit_tls_conf_t *conf, int n,
                         const char *token)
{
    static const knit_stream_cbs_t cbs = {idle_on_open, idle_on_read, idle_on_end, idle_on_close};
    idle_t *cs = calloc((size_t)n, sizeof *cs);
    struct sockaddr_in sa;
    long before, after;
    int done = 0;
    double deadline = now_s() + 180;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)r->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    before = rss_kb(r->p.pid);
    for (int i = 0; i < n; i++) {
        int rc;
        cs[i].token = token;
        knit_frame_reader_init(&cs[i].in.rd, 0);
        rc = tls ? knit_tls_connect(loop, (struct sockaddr *)&sa, conf, "localhost", &cbs, &cs[i],
                                    &cs[i].st)
                 : knit_tcp_connect(loop, (struct sockaddr *)&sa, &cbs, &cs[i], &cs[i].st);
        if (rc)
            die("rss-tls: cannot connect (fd limit?)");
        cs[i].st->data = &cs[i];
        /* A few at a time, so the relay's accept backlog never overflows. */
        if (i % 50 == 49)
            for (int k = 0; k < 20; k++)
                uv_run(loop, UV_RUN_NOWAIT);
    }
    while (done < n && now_s() < deadline) {
        uv_run(loop, UV_RUN_ONCE);
        done = 0;
        for (int i = 0; i < n; i++) {
            if (cs[i].in.failed)
                die("rss-tls: a connection failed");
            done += cs[i].in.caught_up;
        }
    }
    if (done < n)
        die("rss-tls: connections did not catch up in 180 s");
    for (int k = 0; k < 50; k++) /* let the relay settle */
        uv_run(loop, UV_RUN_NOWAIT);
    su_sleep_ms(500);
    after = rss_kb(r->p.pid);
    for (int i = 0; i < n; i++)
        knit_stream_close(cs[i].st);
    for (int left = n; left > 0;) {
        uv_run(loop, UV_RUN_ONCE);
        left = 0;
        for (int i = 0; i < n; i++)
            left += !cs[i].closed;
    }
    for (int i = 0; i < n; i++)
        knit_frame_reader_free(&cs[i].in.rd);
    free(cs);
    return (double)(after - before) / n;
}

/* Relay memory per idle subscribed TLS connection, measured from its RSS,
** with plain TCP connections through the same client code in the same
** run: the difference is what TLS costs per connection. */
static void bench_rss_tls(void)
{
    const int n = (int)su_scale(1000);
    const char *certs = tls_certs();
    char cert[700], keyf[700], ca[700], msg[300];
    struct rlimit rl;
    knit_tls_conf_t *conf = NULL;
    uv_loop_t loop;
    double per[2];
    if (!certs)
        return;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)n + 64 > rl.rlim_cur) {
        printf("rss-tls  %d connections: skipped, the fd limit is %llu\n", n,
               (unsigned long long)rl.rlim_cur);
        return;
    }
    snprintf(cert, sizeof cert, "%s/chain.pem", certs);
    snprintf(keyf, sizeof keyf, "%s/rsa.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    if (knit_tls_conf_client(ca, msg, sizeof msg, &conf) != 0)
        die(msg);
    uv_loop_init(&loop);
    for (int tls = 0; tls <= 1; tls++) {
        const char *const extra[] = {"--max-conns",
                                     "30000",
                                     "--max-conns-per-addr",
                                     "30000",
                                     "--idle-timeout",
                                     "3600000",
                                     tls ? "--tls-cert" : NULL,
                                     cert,
                                     "--tls-key",
                                     keyf,
                                     NULL};
        su_relay_t r;
        char *tok = mint("idle");
        start_relay(&r, "rss-tls.db", extra);
        /* One connection first, so the baseline has the store warm. */
        idle_conns(&loop, &r, tls, conf, 1, tok);
        per[tls] = idle_conns(&loop, &r, tls, conf, n, tok);
        knit__free(tok);
        su_kill(&r.p, SIGTERM, 30000, NULL);
    }
    uv_loop_close(&loop);
    knit_tls_conf_unref(conf);
    printf("rss-tls  %d idle subscribed connections: relay RSS grows %.1f KiB per TLS"
           " connection, %.1f KiB per TCP one in the same run: TLS costs %.1f KiB"
           " (goal < 48 KiB)\n",
           n, per[1], per[0], per[1] - per[0]);
}

int main(int argc, char **argv)
{
    const char *dir = getenv("KNIT_BENCH_DIR");
    FILE *f;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_dir, sizeof g_dir, "%s", dir ? dir : su_tmpdir());
    bpath(g_secret, sizeof g_secret, "bench.secret");
    if (su_write_secret(g_secret))
        die("cannot write the secret");
    f = fopen(g_secret, "r");
    g_keylen = fread(g_key, 1, sizeof g_key, f);
    fclose(f);
    while (g_keylen && (g_key[g_keylen - 1] == '\n'))
        g_keylen--;
    printf("bench_sync: stores and replicas in %s\n", g_dir);
    for (int i = 1; i <= (argc > 1 ? argc - 1 : 1); i++) {
        const char *w = argc > 1 ? argv[i] : "all";
        int all = strcmp(w, "all") == 0;
        if (all || strcmp(w, "latency") == 0)
            bench_latency(0);
        if (all || strcmp(w, "latency-tls") == 0)
            bench_latency(1);
        if (all || strcmp(w, "latency-ws") == 0) {
            bench_latency(3);
            if (!all)
                bench_latency(0); /* the TCP figure of the same run */
        }
        if (all || strcmp(w, "latency-lp") == 0) {
            bench_latency(2);
            if (!all)
                bench_latency(0); /* the TCP figure of the same run */
        }
        if (all || strcmp(w, "live") == 0) {
            bench_live(1);
            bench_live(0);
        }
        if (all || strcmp(w, "ingest") == 0)
            bench_ingest();
        if (all || strcmp(w, "fanout") == 0)
            bench_fanout();
        if (all || strcmp(w, "catchup") == 0)
            bench_catchup(0);
        if (all || strcmp(w, "catchup-lp") == 0)
            bench_catchup(1);
        if (all || strcmp(w, "ingest-transports") == 0)
            bench_ingest_transports();
        if (all || strcmp(w, "rss") == 0)
            bench_rss();
        if (all || strcmp(w, "rss-tls") == 0)
            bench_rss_tls();
    }
    return 0;
}
