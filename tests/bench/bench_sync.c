/*
** bench_sync.c: sync performance, measured with the real programs on
** 127.0.0.1.  Prints one line per figure.
**
**   latency    write on A -> visible on B through agents and the relay,
**              one row per transaction, p50/p99/max over N writes
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
**
** Usage: bench_sync [latency|latency-tls|ingest|fanout|catchup|rss]...
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
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "alloc.h"
#include "auth.h"
#include "codec.h"
#include "frame.h"
#include "knit.h"
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

static int rc_send(rc_t *c, const knit_msg_t *m)
{
    knit_buf_t b = {NULL, 0, 0};
    int rc = knit_msg_encode(m, NULL, &b);
    if (!rc)
        rc = send_all(c->fd, b.p, b.len);
    knit_buf_free(&b);
    return rc;
}

/* HELLO with a JWT; subscribes to ns (if not NULL) from 0. */
static int rc_hello(rc_t *c, const char *token, const char *ns)
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
    return rc_send(c, &m);
}

/* Reads what is there (non-blocking when nb) and counts messages. */
static int rc_pump(rc_t *c, int nb)
{
    uint8_t buf[65536];
    ssize_t n = recv(c->fd, buf, sizeof buf, nb ? MSG_DONTWAIT : 0);
    size_t off = 0;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0) {
        c->failed = 1;
        return -1;
    }
    while (off < (size_t)n) {
        const uint8_t *payload;
        size_t used, len;
        knit_msg_t m;
        int rc = knit_frame_read(&c->rd, buf + off, (size_t)n - off, &used, &payload, &len);
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

/* Write-to-visible latency through agents and the relay, over plain TCP or
** (tls) TLS with the test CA. */
static void bench_latency(int tls)
{
    su_relay_t r;
    su_proc_t pa, pb;
    char a[600], b[600], tok[600], la[600], lb[600];
    char cert[700], keyf[700], ca[700], url[64];
    const char *certs = tls ? tls_certs() : NULL;
    const char *relay_tls[] = {"--tls-cert", cert, "--tls-key", keyf, NULL};
    const char *agent_tls[] = {"--relay", url, "--ca-file", ca, "--server-name", "localhost", NULL};
    const long n = su_scale(10000);
    double *lat = malloc((size_t)n * sizeof *lat);
    sqlite3 *dba, *dbb;
    sqlite3_stmt *ins, *sel, *dv;
    int last_dv;
    FILE *f;
    char *t;

    if (tls && !certs)
        return;
    if (certs) {
        snprintf(cert, sizeof cert, "%s/chain.pem", certs);
        snprintf(keyf, sizeof keyf, "%s/rsa.key", certs);
        snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    }
    start_relay(&r, "lat-relay.db", tls ? relay_tls : NULL);
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
    t = mint("latency");
    f = fopen(tok, "w");
    fprintf(f, "%s\n", t);
    fclose(f);
    knit__free(t);
    if (su_agent_start(&pa, a, r.port, tok, la, tls ? agent_tls : NULL) ||
        su_agent_start(&pb, b, r.port, tok, lb, tls ? agent_tls : NULL))
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
    sqlite3_step(dv);
    last_dv = sqlite3_column_int(dv, 0);
    sqlite3_reset(dv);
    for (long i = 0; i < n; i++) {
        char key[32];
        double t0, deadline;
        int seen = 0;
        snprintf(key, sizeof key, "L%ld", i);
        sqlite3_bind_text(ins, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(sel, 1, key, -1, SQLITE_TRANSIENT);
        t0 = now_s();
        deadline = t0 + 10;
        if (sqlite3_step(ins) != SQLITE_DONE)
            die("latency: insert");
        sqlite3_reset(ins);
        while (!seen && now_s() < deadline) {
            /* Cheap check first: did any other connection commit to B? */
            sqlite3_step(dv);
            int v = sqlite3_column_int(dv, 0);
            sqlite3_reset(dv);
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
        lat[i] = (now_s() - t0) * 1000;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    printf("latency%s write on A -> visible on B, %ld writes: p50 %.2f ms, p99 %.2f ms, max %.2f ms"
           " (goal p50 < 1 ms, p99 < 2 ms%s)\n",
           tls ? "-tls" : "", n, lat[n / 2], lat[(n * 99) / 100], lat[n - 1],
           tls ? "; TLS adds at most 0.2 ms to the TCP p50" : "");
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

static void bench_catchup(void)
{
    su_relay_t r;
    char a[600], b[600], tok[600], relay[64], out[2048];
    const long cells = su_scale(1000000);
    const long rows = cells / 5; /* liveness + 4 columns per row */
    sqlite3 *db;
    FILE *f;
    char *t;
    double t0, tw, tp, tc;
    int rc;

    start_relay(&r, "catchup-relay.db", NULL);
    bpath(a, sizeof a, "catchup-a.db");
    bpath(b, sizeof b, "catchup-b.db");
    bpath(tok, sizeof tok, "catchup.jwt");
    remove_db(a);
    remove_db(b);
    make_replica(a);
    make_replica(b);
    t = mint("catchup");
    f = fopen(tok, "w");
    fprintf(f, "%s\n", t);
    fclose(f);
    knit__free(t);
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
    snprintf(relay, sizeof relay, "127.0.0.1:%d", r.port);
    {
        const char *argv[] = {SYNC_AGENT_PATH, "run",  a,        "--relay",   relay,
                              "--token-file",  tok,    "--once", "--timeout", "600",
                              "--log-level",   "warn", NULL};
        t0 = now_s();
        rc = su_run(argv, 900000, out, sizeof out);
        tp = now_s() - t0;
        if (rc != 0)
            die(out);
    }
    {
        const char *argv[] = {SYNC_AGENT_PATH, "run",  b,        "--relay",   relay,
                              "--token-file",  tok,    "--once", "--timeout", "600",
                              "--log-level",   "warn", NULL};
        t0 = now_s();
        rc = su_run(argv, 900000, out, sizeof out);
        tc = now_s() - t0;
        if (rc != 0)
            die(out);
    }
    db = su_db(b);
    long got = (long)su_int(db, "SELECT count(*) FROM items");
    sqlite3_close(db);
    printf("catchup  %ld cells (%ld rows): written on A in %.2f s, pushed by A in %.2f s,"
           " B caught up in %.2f s%s (goal < 5 s)\n",
           rows * 5, rows, tw, tp, tc, got == rows ? "" : " [ROWS MISSING]");
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
        if (all || strcmp(w, "ingest") == 0)
            bench_ingest();
        if (all || strcmp(w, "fanout") == 0)
            bench_fanout();
        if (all || strcmp(w, "catchup") == 0)
            bench_catchup();
        if (all || strcmp(w, "rss") == 0)
            bench_rss();
    }
    return 0;
}
