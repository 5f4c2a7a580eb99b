/*
** bench_pg.c: the relay on PostgreSQL, measured end to end (issue 14).
** One throw-away PostgreSQL server (pg_fixture.h) and real sync-relay
** processes on it (`--store <uri>`), driven by real TCP clients speaking
** the wire protocol (wire_client.h):
**
**   a. ingest: 16 pushing clients, round-robin over 1, 2 and 3 relays on
**      the one database, each pushing batches of 100 changes to its own
**      anonymous namespace with a window of pushes in flight; total
**      acknowledged changes/s.  The same with one relay on the SQLite
**      store (--data) as the baseline.
**   b. fan-out latency: a subscriber on relay 2, a pusher on relay 1, one
**      small change at a time: push sent -> DELTAS received, p50 and p99.
**   c. catch-up: a namespace of 1,000,000 cells (written with
**      knit_pg_store_commit directly), read by a fresh client process
**      from cursor 0 until caught up: seconds and the client's peak RSS.
**
** Each figure is the median of 3 runs, printed with its goal beside it.
** A bench, not a test: it never fails on a timing.  Smaller runs:
** KNIT_BENCH_QUICK=1 (shorter ingest windows, 100k cells, 150 pushes), or
** KNIT_BENCH_CELLS=N, KNIT_BENCH_SECS=S, KNIT_BENCH_FANOUT=N.
*/
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hlc.h"
#include "knit.h"
#include "integration/pg_fixture.h"
#include "store_pg.h"
#include "integration/wire_client.h"

#define CLIENTS 16      /* pushing clients */
#define PER_PUSH 100    /* changes per push (50 rows: liveness and body) */
#define PER_UNIT 10     /* changes per unit (a replica transaction) */
#define WINDOW 4        /* pushes in flight per client */
#define RUNS 3          /* each figure is a median of this many */
#define MAX_RELAYS 3    /* PostgreSQL relays started */
#define FILL_UNIT 1000  /* changes per unit when filling the catch-up namespace */
#define FILL_PUSH 20000 /* changes per knit_pg_store_commit when filling */
#define SECRET "bench-secret-0123456789abcdef"

static pgfx_t PG;
static char DIR_[256];
static relay_proc_t RELAYS[MAX_RELAYS + 1]; /* [MAX_RELAYS]: the SQLite relay */
static int run_id;                          /* makes every run's namespaces new */

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_pg: %s\n", what);
    exit(1);
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && atol(v) > 0 ? atol(v) : dflt;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, dcmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---------------------------------------------------------------------- */
/* Pushes                                                                   */

/* An empty batch on notes(id INTEGER PRIMARY KEY, body LWW) for ns. */
static knit_batch_t *notes(const char *ns, const knit_site_t *site)
{
    static const char *cols[] = {"body"};
    static const uint8_t kinds[] = {0};
    knit_batch_t *b;
    uint32_t idx;
    if (knit_batch_new(&b) || knit_batch_ns(b, ns, &idx) || knit_batch_site(b, site, &idx) ||
        knit_batch_table(b, "notes", 1, 1, cols, kinds, &idx))
        die("batch");
    return b;
}

/* Row id's liveness and body, stamped hlc. */
static void note(knit_batch_t *b, int64_t id, uint64_t hlc)
{
    char body[48];
    knit_value_t pk;
    knit_change_t c;
    snprintf(body, sizeof body, "note %lld, some text", (long long)id);
    pk.type = KNIT_INTEGER;
    pk.u.i = id;
    memset(&c, 0, sizeof c);
    c.pk = &pk;
    c.cl = 1;
    c.hlc = hlc;
    c.value.type = KNIT_NULL;
    if (knit_batch_add(b, &c))
        die("batch add");
    c.col = 1;
    c.value.type = KNIT_TEXT;
    c.value.u.b.p = (const uint8_t *)body;
    c.value.u.b.n = strlen(body);
    if (knit_batch_add(b, &c))
        die("batch add");
}

static knit_site_t site_of(int n)
{
    knit_site_t s;
    memset(s.b, 0x42, 16);
    s.b[0] = (uint8_t)n;
    s.b[1] = (uint8_t)(n >> 8);
    return s;
}

/* Connects to port with anonymous id (subscribing to its namespace from
** cursor when sub): 0, or -1 with the reason printed. */
static int connect_anon(wc_t *w, int port, const char *id, int sub, uint64_t cursor)
{
    knit_cred_t cred = wc_anon(id, SECRET);
    char ns[96];
    knit_msg_t m;
    snprintf(ns, sizeof ns, "anon:%s", id);
    if (wc_connect(w, port, 0) != 0)
        return -1;
    if (wc_hello(w, &cred, sub ? ns : NULL, cursor, &m) != 0)
        return -1;
    int ok = m.type == KNIT_MSG_WELCOME;
    if (!ok)
        fprintf(stderr, "bench_pg: HELLO refused: %d %s\n", m.u.error.code,
                m.type == KNIT_MSG_ERROR ? m.u.error.message : "");
    knit_msg_free(&m);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------------- */
/* a. Ingest                                                                */

typedef struct pusher_s {
    pthread_t th;      /* the thread */
    int port;          /* relay to push to */
    char id[48];       /* anonymous id (namespace anon:<id>) */
    knit_site_t site;  /* its site */
    uint64_t start_us; /* counting starts */
    uint64_t end_us;   /* and ends */
    uint64_t acked;    /* changes acknowledged within [start, end) */
    int failed;        /* something went wrong (printed) */
} pusher_t;

static void *pusher_main(void *arg)
{
    pusher_t *p = arg;
    wc_t *w = malloc(sizeof *w);
    char ns[96];
    uint64_t next = 1, done = 0, hlc = knit_hlc_make(wall_ms(), 0);
    int64_t row = 0;
    if (!w || connect_anon(w, p->port, p->id, 0, 0) != 0) {
        p->failed = 1;
        free(w);
        return NULL;
    }
    snprintf(ns, sizeof ns, "anon:%s", p->id);
    for (;;) {
        uint64_t now = mono_us();
        /* Keep WINDOW pushes in flight until the window closes. */
        while (now < p->end_us && next - done - 1 < WINDOW) {
            knit_batch_t *b = notes(ns, &p->site);
            for (int u = 0; u < PER_PUSH / PER_UNIT; u++) {
                if (knit_batch_begin(b, next * 100 + (uint64_t)u))
                    die("batch begin");
                for (int k = 0; k < PER_UNIT / 2; k++)
                    note(b, row++, ++hlc);
            }
            int rc = wc_push(w, next, ns, b);
            knit_batch_free(b);
            if (rc) {
                p->failed = 1;
                goto out;
            }
            next++;
        }
        if (done + 1 == next)
            break; /* every push answered, and the window is closed */
        knit_msg_t m;
        if (wc_recv_type(w, 30000, KNIT_MSG_ACK, &m) != 0) {
            fprintf(stderr, "bench_pg: no ACK within 30 s\n");
            p->failed = 1;
            goto out;
        }
        if (m.type != KNIT_MSG_ACK) {
            fprintf(stderr, "bench_pg: ERROR %d %s\n", m.u.error.code, m.u.error.message);
            knit_msg_free(&m);
            p->failed = 1;
            goto out;
        }
        knit_msg_free(&m);
        done++;
        now = mono_us();
        if (now >= p->start_us && now < p->end_us)
            p->acked += PER_PUSH;
    }
out:
    wc_close(w);
    free(w);
    return NULL;
}

/* Changes/s acknowledged with the clients over relays[0..n), measured for
** secs after a warm-up of a second. */
static double ingest(const relay_proc_t *relays, int n, double secs)
{
    pusher_t P[CLIENTS];
    uint64_t t0 = mono_us() + 1000000, total = 0;
    run_id++;
    memset(P, 0, sizeof P);
    for (int i = 0; i < CLIENTS; i++) {
        P[i].port = relays[i % n].port;
        snprintf(P[i].id, sizeof P[i].id, "in%d-%d-%d", (int)getpid() % 1000, run_id, i);
        P[i].site = site_of(run_id * CLIENTS + i);
        P[i].start_us = t0;
        P[i].end_us = t0 + (uint64_t)(secs * 1e6);
        if (pthread_create(&P[i].th, NULL, pusher_main, &P[i]) != 0)
            die("pthread_create");
    }
    int failed = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(P[i].th, NULL);
        failed |= P[i].failed;
        total += P[i].acked;
    }
    if (failed)
        fprintf(stderr, "bench_pg: a pusher failed (figure is of the rest)\n");
    return (double)total / secs;
}

/* ---------------------------------------------------------------------- */
/* b. Fan-out latency                                                       */

/* p50 and p99 in ms of n pushes through relay `from` to a subscriber on `to`. */
static int fanout(const relay_proc_t *from, const relay_proc_t *to, int n, double *p50, double *p99)
{
    wc_t *pub = malloc(sizeof *pub), *sub = malloc(sizeof *sub);
    char id[48], ns[96];
    double *lat = malloc((size_t)n * sizeof *lat);
    knit_site_t site = site_of(9999);
    uint64_t hlc = knit_hlc_make(wall_ms(), 0);
    knit_msg_t m;
    int got = 0, rc = -1;
    run_id++;
    snprintf(id, sizeof id, "fan%d-%d", (int)getpid() % 1000, run_id);
    snprintf(ns, sizeof ns, "anon:%s", id);
    if (!pub || !sub || !lat)
        die("out of memory");
    if (connect_anon(pub, from->port, id, 0, 0) != 0)
        goto out;
    if (connect_anon(sub, to->port, id, 1, 0) != 0)
        goto out_pub;
    /* The (empty) catch-up first. */
    for (;;) {
        if (wc_recv_type(sub, 10000, KNIT_MSG_DELTAS, &m) != 0 || m.type != KNIT_MSG_DELTAS)
            goto out_sub;
        int done = m.u.deltas.caught_up;
        knit_msg_free(&m);
        if (done)
            break;
    }
    for (int i = 0; i < n; i++) {
        knit_batch_t *b = notes(ns, &site);
        if (knit_batch_begin(b, (uint64_t)i + 1))
            die("batch begin");
        note(b, i, ++hlc);
        uint64_t t0 = mono_us();
        int s = wc_push(pub, (uint64_t)i + 1, ns, b);
        knit_batch_free(b);
        if (s)
            goto out_sub;
        if (wc_recv_type(pub, 10000, KNIT_MSG_ACK, &m) != 0 || m.type != KNIT_MSG_ACK)
            goto out_sub;
        knit_msg_free(&m);
        if (wc_recv_type(sub, 10000, KNIT_MSG_DELTAS, &m) != 0 || m.type != KNIT_MSG_DELTAS)
            goto out_sub;
        knit_msg_free(&m);
        lat[got++] = (double)(mono_us() - t0) / 1000.0;
    }
    qsort(lat, (size_t)got, sizeof *lat, dcmp);
    *p50 = lat[got / 2];
    *p99 = lat[(got * 99) / 100 < got ? (got * 99) / 100 : got - 1];
    rc = 0;
out_sub:
    wc_close(sub);
out_pub:
    wc_close(pub);
out:
    if (rc)
        fprintf(stderr, "bench_pg: fan-out failed after %d pushes\n", got);
    free(pub);
    free(sub);
    free(lat);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* c. Catch-up                                                              */

/* Writes ncells cells (rows of liveness and body) into anon:<id>. */
static double fill(const char *id, long ncells)
{
    knit_pg_store_t *s = NULL;
    knit_site_t site = site_of(7777);
    char ns[96];
    uint64_t hlc = knit_hlc_make(wall_ms(), 0), t0 = mono_us();
    int64_t row = 0;
    snprintf(ns, sizeof ns, "anon:%s", id);
    if (knit_pg_store_open(PG.conninfo, &s) != 0) {
        fprintf(stderr, "bench_pg: open: %s\n", knit_pg_store_errmsg(s));
        exit(1);
    }
    for (long done = 0; done < ncells;) {
        knit_batch_t *b = notes(ns, &site);
        knit_relay_push_t p;
        long in = 0;
        while (in < FILL_PUSH && done + in < ncells) {
            if (knit_batch_begin(b, (uint64_t)row + 1))
                die("batch begin");
            for (int k = 0; k < FILL_UNIT / 2 && in < FILL_PUSH && done + in < ncells; k++) {
                note(b, row++, ++hlc);
                in += 2;
            }
        }
        memset(&p, 0, sizeof p);
        p.ns = ns;
        p.batch = b;
        if (knit_pg_store_commit(s, &p) != 0 || p.code != 0) {
            fprintf(stderr, "bench_pg: fill: %s %s\n", knit_pg_store_errmsg(s), p.msg);
            exit(1);
        }
        knit_batch_free(p.res.fanout);
        knit_batch_free(b);
        done += in;
    }
    knit_pg_store_close(s);
    return (double)(mono_us() - t0) / 1e6;
}

/* A fresh client process reads anon:<id> from cursor 0 until caught up:
** seconds (from connect), changes received and its peak RSS in KiB. */
static int catch_up(int port, const char *id, double *secs, long *changes, long *rss_kb)
{
    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        wc_t *w = malloc(sizeof *w);
        double r[2] = {-1, 0};
        uint64_t t0 = mono_us();
        knit_msg_t m;
        close(fd[0]);
        if (w && connect_anon(w, port, id, 1, 0) == 0) {
            for (;;) {
                if (wc_recv_type(w, 60000, KNIT_MSG_DELTAS, &m) != 0 || m.type != KNIT_MSG_DELTAS)
                    break;
                int done = m.u.deltas.caught_up;
                r[1] += m.u.deltas.batch ? (double)m.u.deltas.batch->nchanges : 0;
                knit_msg_free(&m);
                if (done) {
                    r[0] = (double)(mono_us() - t0) / 1e6;
                    break;
                }
            }
        }
        if (write(fd[1], r, sizeof r) != (ssize_t)sizeof r)
            _exit(2);
        _exit(r[0] < 0);
    }
    close(fd[1]);
    double r[2] = {-1, 0};
    ssize_t k = read(fd[0], r, sizeof r);
    close(fd[0]);
    struct rusage ru;
    int st;
    if (wait4(pid, &st, 0, &ru) != pid || k != (ssize_t)sizeof r || r[0] < 0)
        return -1;
    *secs = r[0];
    *changes = (long)r[1];
    *rss_kb = ru.ru_maxrss;
    return 0;
}

/* ---------------------------------------------------------------------- */

static void start_relays(void)
{
    static const char *const pg_args[] = {"--store", PG.uri, "--max-skew", "3600000", NULL};
    char log[300], data[300];
    for (int i = 0; i < MAX_RELAYS; i++) {
        snprintf(log, sizeof log, "%s/relay%d.log", DIR_, i + 1);
        if (relay_start(&RELAYS[i], SYNC_RELAY_PATH, log, pg_args) != 0)
            die("sync-relay --store did not start");
    }
    snprintf(log, sizeof log, "%s/relay-sqlite.log", DIR_);
    snprintf(data, sizeof data, "%s/relay.db", DIR_);
    const char *sq_args[] = {"--data", data, "--max-skew", "3600000", NULL};
    if (relay_start(&RELAYS[MAX_RELAYS], SYNC_RELAY_PATH, log, sq_args) != 0)
        die("sync-relay --data did not start");
}

static void stop_relays(void)
{
    for (int i = 0; i <= MAX_RELAYS; i++) {
        int st;
        if (RELAYS[i].pid)
            relay_stop(&RELAYS[i], SIGTERM, &st);
    }
}

int main(void)
{
    int quick = getenv("KNIT_BENCH_QUICK") != NULL;
    double secs = (double)env_long("KNIT_BENCH_SECS", quick ? 2 : 5);
    long cells = env_long("KNIT_BENCH_CELLS", quick ? 100000 : 1000000);
    int nfan = (int)env_long("KNIT_BENCH_FANOUT", quick ? 150 : 500);
    double v[RUNS], w[RUNS];

    signal(SIGPIPE, SIG_IGN);
    snprintf(DIR_, sizeof DIR_, "/tmp/bench_pg.XXXXXX");
    if (!mkdtemp(DIR_))
        die("mkdtemp");
    chmod(DIR_, 0755);
    pgfx_start(&PG); /* exits 77 without the server binaries */
    start_relays();
    atexit(stop_relays); /* a run that dies (die, exit) leaves no relay behind */
    printf("bench_pg: %d clients, pushes of %d changes (units of %d), %d in flight each, "
           "%.0f s windows, median of %d\n",
           CLIENTS, PER_PUSH, PER_UNIT, WINDOW, secs, RUNS);
    fflush(stdout);

    /* a. Ingest. */
    for (int r = 0; r < RUNS; r++)
        v[r] = ingest(&RELAYS[MAX_RELAYS], 1, secs);
    double sqlite_rate = median(v, RUNS);
    printf("ingest, 1 relay, SQLite store:      %8.0f changes/s   (baseline)\n", sqlite_rate);
    fflush(stdout);
    for (int n = 1; n <= MAX_RELAYS; n++) {
        for (int r = 0; r < RUNS; r++)
            v[r] = ingest(RELAYS, n, secs);
        double rate = median(v, RUNS);
        printf("ingest, %d relay%s PostgreSQL store: %8.0f changes/s   (goal: %s; %.2fx "
               "SQLite)\n",
               n, n > 1 ? "s," : ", ", rate, n == 1 ? ">= 100000" : "rising with relays",
               rate / sqlite_rate);
        fflush(stdout);
    }

    /* b. Fan-out. */
    int fr = 0;
    for (int r = 0; r < RUNS; r++)
        if (fanout(&RELAYS[0], &RELAYS[1], nfan, &v[fr], &w[fr]) == 0)
            fr++;
    if (fr) {
        double p50 = median(v, fr), p99 = median(w, fr);
        printf("fan-out relay 1 -> relay 2, %d pushes: p50 %.2f ms, p99 %.2f ms   "
               "(goal: p50 < 5 ms)\n",
               nfan, p50, p99);
    }
    fflush(stdout);

    /* c. Catch-up. */
    {
        wc_t *reg = malloc(sizeof *reg);
        char id[48];
        double ft;
        long got = 0, rss[RUNS];
        snprintf(id, sizeof id, "cu%d", (int)getpid() % 1000);
        /* Register the anonymous id through the relay, then fill its namespace. */
        if (!reg || connect_anon(reg, RELAYS[0].port, id, 0, 0) != 0)
            die("catch-up client did not connect");
        wc_close(reg);
        free(reg);
        ft = fill(id, cells);
        printf("filled %ld cells with knit_pg_store_commit in %.1f s (%.0f changes/s, groups of "
               "%d)\n",
               cells, ft, (double)cells / ft, FILL_PUSH);
        fflush(stdout);
        int cr = 0;
        for (int r = 0; r < RUNS; r++)
            if (catch_up(RELAYS[0].port, id, &v[cr], &got, &rss[cr]) == 0) {
                w[cr] = (double)rss[cr];
                cr++;
            }
        if (cr) {
            double t = median(v, cr), m = median(w, cr);
            printf("catch-up of %ld cells from PostgreSQL: %.2f s, client peak RSS %.0f MiB   "
                   "(goal: < 5 s for 1M)\n",
                   got, t, m / 1024.0);
        } else {
            printf("catch-up failed\n");
        }
    }
    stop_relays();
    pgfx_stop(&PG);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", DIR_);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_pg: could not remove %s\n", DIR_);
    return 0;
}
