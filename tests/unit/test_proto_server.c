/*
** test_proto_server.c: the relay's protocol engine without sockets.
**
** The engine is driven directly (transport/proto_server.h) with a fake
** glue that records every frame sent and reports writes as done only when
** the test says so, and with the time passed in, so ordering, timeouts,
** token expiry and the slow-consumer bound are checked deterministically.
*/
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "codec.h"
#include "frame.h"
#include "proto_server.h"
#include "test.h"

static const char KEY[] = "proto-server-test-key-0123456789abcdef";
#define T0 UINT64_C(1800000000000) /* wall ms */

typedef struct fconn_s {
    knit_relay_conn_t *ec; /* engine side */
    uint8_t *out;          /* every byte sent */
    size_t nout;           /* count */
    size_t rd;             /* bytes of out already decoded by the test */
    size_t inflight;       /* bytes sent, not yet reported written */
    size_t max_inflight;   /* the most ever outstanding */
    int closed;            /* the engine asked to close */
    int paused;            /* reading paused */
} fconn_t;

static int f_send(void *data, void *user, uint8_t *p, size_t n)
{
    fconn_t *f = user;
    (void)data;
    f->out = realloc(f->out, f->nout + n);
    CHECK(f->out != NULL);
    memcpy(f->out + f->nout, p, n);
    f->nout += n;
    f->inflight += n;
    if (f->inflight > f->max_inflight)
        f->max_inflight = f->inflight;
    knit__free(p);
    return 0;
}

static void f_close(void *data, void *user)
{
    fconn_t *f = user;
    (void)data;
    CHECK(!f->closed); /* at most once */
    f->closed = 1;
}

static void f_pause(void *data, void *user, int paused)
{
    ((fconn_t *)user)->paused = paused;
    (void)data;
}

static int f_random(void *data, void *buf, size_t n)
{
    static uint8_t x;
    (void)data;
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)buf)[i] = x++;
    return 0;
}

static void f_log(void *data, int level, const char *line)
{
    (void)data;
    if (getenv("KNIT_TEST_VERBOSE"))
        fprintf(stderr, "[%d] %s\n", level, line);
}

static char tmpdir[64];
static knit_relay_store_t *store;
static knit_relay_engine_t *eng;

/* A failing CHECK exits; the directory goes with it. */
static void tmp_atexit(void)
{
    char cmd[160];
    if (!tmpdir[0])
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void start(const knit_relay_limits_t *lim, int readonly)
{
    static int registered;
    if (!registered) {
        atexit(tmp_atexit);
        registered = 1;
    }
    char path[128];
    knit_relay_config_t cfg;
    knit_relay_io_t io = {f_send, f_close, f_pause, f_random, f_log, NULL};
    strcpy(tmpdir, "/tmp/knit-proto-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    snprintf(path, sizeof path, "%s/relay.db", tmpdir);
    CHECK_OK(knit_relay_store_open(path, 0, &store));
    if (readonly) {
        knit_relay_store_close(store);
        CHECK_OK(knit_relay_store_open(path, KNIT_RELAY_STORE_READONLY, &store));
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.store = store;
    if (lim)
        cfg.limits = *lim;
    cfg.jwt_key = (const uint8_t *)KEY;
    cfg.jwt_key_len = strlen(KEY);
    cfg.log_level = KNIT_LOG_DEBUG;
    CHECK_OK(knit_relay_engine_new(&cfg, &io, &eng));
}

static void stop(fconn_t *const *conns, size_t n)
{
    char cmd[160];
    for (size_t i = 0; i < n; i++) {
        knit_relay_conn_free(conns[i]->ec);
        free(conns[i]->out);
        memset(conns[i], 0, sizeof *conns[i]);
    }
    knit_relay_engine_free(eng);
    knit_relay_store_close(store);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0);
    tmpdir[0] = '\0';
}

static void feed(fconn_t *f, const knit_msg_t *m, uint64_t wall, uint64_t mono)
{
    knit_buf_t b = {NULL, 0, 0};
    CHECK_OK(knit_msg_encode(m, NULL, &b));
    knit_relay_conn_input(f->ec, b.p, b.len, wall, mono);
    knit_buf_free(&b);
}

/* Next message the engine sent on f: 1 and *m, or 0 when there is none. */
static int next(fconn_t *f, knit_msg_t *m)
{
    knit_frame_reader_t r;
    const uint8_t *payload;
    size_t used, len;
    if (f->rd >= f->nout)
        return 0;
    knit_frame_reader_init(&r, 0);
    CHECK_EQ_INT(knit_frame_read(&r, f->out + f->rd, f->nout - f->rd, &used, &payload, &len), 1);
    CHECK_OK(knit_msg_decode(payload, len, NULL, m, NULL));
    knit_frame_reader_free(&r);
    f->rd += used;
    return 1;
}

/* Reports every outstanding byte written (which may make the engine send
** more) until nothing is outstanding. */
static void drain(fconn_t *f)
{
    while (f->inflight) {
        size_t n = f->inflight;
        f->inflight = 0;
        knit_relay_conn_sent(f->ec, n);
    }
}

static void open_conn(fconn_t *f, uint64_t mono)
{
    memset(f, 0, sizeof *f);
    CHECK_OK(knit_relay_conn_open(eng, f, T0, mono, &f->ec));
}

static void hello_f(fconn_t *f, knit_cred_t cred, const char *ns, uint64_t features, uint64_t wall,
                    uint64_t mono)
{
    knit_msg_t m;
    knit_sub_t sub = {ns, 0};
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = 1;
    m.u.hello.max_version = 1;
    m.u.hello.cred = cred;
    m.u.hello.features = features;
    if (ns) {
        m.u.hello.subs = &sub;
        m.u.hello.nsubs = 1;
    }
    feed(f, &m, wall, mono);
    CHECK(next(f, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    if (ns) {
        CHECK(next(f, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
        CHECK_EQ_INT(m.u.deltas.caught_up, 1);
        knit_msg_free(&m);
    }
}

static void hello(fconn_t *f, knit_cred_t cred, const char *ns, uint64_t wall, uint64_t mono)
{
    hello_f(f, cred, ns, 0, wall, mono);
}

static knit_cred_t anon(const char *id)
{
    knit_cred_t c;
    memset(&c, 0, sizeof c);
    c.kind = KNIT_CRED_ANON;
    c.id = id;
    c.secret = "0123456789abcdef-secret";
    return c;
}

static knit_cred_t jwt_for(const char *sub, uint64_t now, uint64_t ttl_s)
{
    static char buf[4][512];
    static int slot;
    knit_cred_t c;
    char *t;
    CHECK_OK(knit_jwt_mint((const uint8_t *)KEY, strlen(KEY), sub, now, ttl_s, &t));
    char *b = buf[slot++ % 4];
    snprintf(b, sizeof buf[0], "%s", t);
    knit__free(t);
    memset(&c, 0, sizeof c);
    c.kind = KNIT_CRED_JWT;
    c.token = b;
    return c;
}

static void push(fconn_t *f, uint64_t id, const char *ns, int64_t key, size_t vlen, uint64_t hlc,
                 uint64_t wall)
{
    static const char *cols[] = {"v"};
    static const uint8_t kinds[] = {0};
    static char big[1 << 16];
    knit_batch_t *b;
    knit_msg_t m;
    knit_value_t pk = {KNIT_INTEGER, {.i = key}};
    knit_change_t c;
    uint32_t idx;
    knit_site_t site;
    memset(site.b, 7, 16);
    memset(big, 'x', sizeof big);
    CHECK(vlen <= sizeof big);
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, ns, &idx));
    CHECK_OK(knit_batch_site(b, &site, &idx));
    CHECK_OK(knit_batch_table(b, "t", 1, 1, cols, kinds, &idx));
    CHECK_OK(knit_batch_begin(b, id));
    memset(&c, 0, sizeof c);
    c.pk = &pk;
    c.cl = 1;
    c.hlc = hlc;
    c.value.type = KNIT_NULL;
    CHECK_OK(knit_batch_add(b, &c));
    c.col = 1;
    c.value.type = KNIT_BLOB;
    c.value.u.b.p = big;
    c.value.u.b.n = vlen;
    CHECK_OK(knit_batch_add(b, &c));
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PUSH;
    m.u.push.id = id;
    m.u.push.ns = ns;
    m.u.push.batch = b;
    feed(f, &m, wall, 0);
    knit_batch_free(b);
}

/* Answers in push order, and none before the commit. */
static void answers_in_order(void)
{
    fconn_t a;
    knit_msg_t m;
    uint64_t now = T0, h = knit_hlc_make(T0, 0);
    start(NULL, 0);
    open_conn(&a, 0);
    hello(&a, anon("dev"), NULL, now, 0);
    push(&a, 1, "anon:dev", 1, 4, h + 1, now);
    push(&a, 2, "anon:other", 1, 4, h + 2, now); /* not granted */
    push(&a, 3, "anon:dev", 2, 4, h + 3, now);
    push(&a, 4, "anon:dev", 3, 4, knit_hlc_make(T0 + 3600000, 0), now); /* future */
    CHECK(knit_relay_engine_pending(eng));
    CHECK_EQ_INT(next(&a, &m), 0); /* design note 1: nothing before commit */
    CHECK_OK(knit_relay_engine_flush(eng, now, 0));
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    CHECK_EQ_INT(m.u.ack.id, 1);
    knit_msg_free(&m);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_REJECT);
    CHECK_EQ_INT(m.u.reject.id, 2);
    CHECK_EQ_INT(m.u.reject.reasons[0].code, KNIT_EDENIED);
    knit_msg_free(&m);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    CHECK_EQ_INT(m.u.ack.id, 3);
    knit_msg_free(&m);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_REJECT);
    CHECK_EQ_INT(m.u.reject.id, 4);
    CHECK_EQ_INT(m.u.reject.nreasons, 2);
    CHECK_EQ_INT(m.u.reject.reasons[0].change, 0);
    CHECK_EQ_INT(m.u.reject.reasons[1].change, 1);
    CHECK_EQ_INT(m.u.reject.reasons[1].code, KNIT_ECLOCKSKEW);
    knit_msg_free(&m);
    CHECK_EQ_INT(next(&a, &m), 0);
    uint64_t seq;
    CHECK_OK(knit_relay_store_seq(store, "anon:dev", &seq));
    CHECK_EQ_INT(seq, 2);
    fconn_t *all[] = {&a};
    stop(all, 1);
}

/* A group that cannot commit is never acknowledged. */
static void commit_failure(void)
{
    fconn_t a;
    knit_msg_t m;
    start(NULL, 1); /* read-only store: every group fails */
    open_conn(&a, 0);
    hello(&a, jwt_for("zed", T0, 600), NULL, T0, 0);
    push(&a, 9, "user:zed", 1, 4, knit_hlc_make(T0, 1), T0);
    knit_relay_engine_flush(eng, T0, 0);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_REJECT);
    CHECK_EQ_INT(m.u.reject.id, 9);
    CHECK_EQ_INT(m.u.reject.reasons[0].code, KNIT_EIO);
    knit_msg_free(&m);
    CHECK(!a.closed);
    fconn_t *all[] = {&a};
    stop(all, 1);
}

/* The credential is checked on every message: an expired token ends the
** session, on the next message or on the next tick. */
static void token_expiry(void)
{
    fconn_t a, b;
    knit_msg_t m;
    start(NULL, 0);
    open_conn(&a, 0);
    open_conn(&b, 0);
    hello(&a, jwt_for("amy", T0, 10), "user:amy", T0, 0);
    hello(&b, jwt_for("amy", T0, 10), "user:amy", T0, 0);
    /* Within exp + skew: fine. */
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PING;
    m.u.ping.nonce = 1;
    feed(&a, &m, T0 + 10000 + KNIT_JWT_SKEW_MS - 1, 1);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_PONG);
    knit_msg_free(&m);
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PING;
    feed(&a, &m, T0 + 10000 + KNIT_JWT_SKEW_MS, 2);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EAUTH);
    knit_msg_free(&m);
    CHECK(a.closed);
    /* b says nothing; the tick closes it. */
    knit_relay_engine_tick(eng, T0 + 10000 + KNIT_JWT_SKEW_MS, 3);
    CHECK(next(&b, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EAUTH);
    knit_msg_free(&m);
    fconn_t *all[] = {&a, &b};
    stop(all, 2);
}

static void timeouts(void)
{
    fconn_t a, b;
    knit_msg_t m;
    knit_relay_limits_t lim;
    memset(&lim, 0, sizeof lim);
    lim.idle_ms = 1000;
    lim.handshake_ms = 500;
    start(&lim, 0);
    open_conn(&a, 0);
    open_conn(&b, 0);
    hello(&b, anon("b"), NULL, T0, 100);
    knit_relay_engine_tick(eng, T0, 499);
    CHECK(!a.closed);
    knit_relay_engine_tick(eng, T0, 500);
    CHECK(a.closed);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.u.error.code, KNIT_ETIMEDOUT);
    knit_msg_free(&m);
    CHECK(!b.closed);
    knit_relay_engine_tick(eng, T0, 1100);
    CHECK(b.closed);
    CHECK(next(&b, &m));
    CHECK_EQ_INT(m.u.error.code, KNIT_ETIMEDOUT);
    knit_msg_free(&m);
    fconn_t *all[] = {&a, &b};
    stop(all, 2);
}

/* Design note 5: a consumer that never reads costs at most max_queue plus
** one frame; when it reads again it gets a gapless chain to the end. */
static void slow_consumer_bounded(void)
{
    fconn_t a, b;
    knit_msg_t m;
    knit_relay_limits_t lim;
    uint64_t cursor = 0, h = knit_hlc_make(T0, 0);
    const int N = 200;
    const size_t V = 10000;
    int got[200] = {0};
    memset(&lim, 0, sizeof lim);
    lim.max_queue = 50000;
    lim.max_changes = 16;
    start(&lim, 0);
    open_conn(&a, 0);
    open_conn(&b, 0);
    hello(&a, anon("s"), NULL, T0, 0);
    hello(&b, anon("s"), "anon:s", T0, 0);
    drain(&b);
    for (int i = 0; i < N; i++) {
        push(&a, (uint64_t)i + 1, "anon:s", i, V, h + (uint64_t)i + 1, T0);
        CHECK_OK(knit_relay_engine_flush(eng, T0, 0));
        drain(&a);
    }
    fprintf(stderr, "most bytes ever queued for the stalled consumer: %zu\n", b.max_inflight);
    CHECK(b.max_inflight <= lim.max_queue + V + 1024);
    /* Now it reads. */
    drain(&b);
    while (next(&b, &m)) {
        CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
        CHECK_EQ_INT(m.u.deltas.from, cursor);
        cursor = m.u.deltas.to;
        for (size_t k = 0; k < m.u.deltas.batch->nchanges; k++) {
            const knit_change_t *c = &m.u.deltas.batch->changes[k];
            if (c->col == 1) {
                CHECK_EQ_INT(c->value.u.b.n, V);
                got[c->pk[0].u.i]++;
            }
        }
        knit_msg_free(&m);
    }
    CHECK_EQ_INT(cursor, N);
    for (int i = 0; i < N; i++)
        CHECK(got[i] >= 1);
    /* And it is live again. */
    push(&a, 999, "anon:s", 0, 8, h + 5000, T0);
    CHECK_OK(knit_relay_engine_flush(eng, T0, 0));
    CHECK(next(&b, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
    CHECK_EQ_INT(m.u.deltas.from, N);
    CHECK_EQ_INT(m.u.deltas.to, N + 1);
    knit_msg_free(&m);
    fconn_t *all[] = {&a, &b};
    stop(all, 2);
}

/* Bad input closes that connection only; before HELLO nothing but ERROR
** is ever sent. */
static void malformed_isolated(void)
{
    fconn_t a, b;
    knit_msg_t m;
    static const uint8_t junk[] = {0, 0, 0, 3, 0xff, 0xff, 0xff};
    start(NULL, 0);
    open_conn(&a, 0);
    open_conn(&b, 0);
    hello(&a, anon("ok"), "anon:ok", T0, 0);
    CHECK_EQ_INT(knit_relay_conn_input(b.ec, junk, sizeof junk, T0, 0), KNIT_ECLOSED);
    CHECK(b.closed);
    CHECK(next(&b, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EPROTO);
    knit_msg_free(&m);
    CHECK_EQ_INT(next(&b, &m), 0);
    /* More input after the ERROR is ignored. */
    CHECK_EQ_INT(knit_relay_conn_input(b.ec, junk, sizeof junk, T0, 0), KNIT_ECLOSED);
    CHECK_EQ_INT(next(&b, &m), 0);
    /* a is unaffected. */
    push(&a, 1, "anon:ok", 1, 4, knit_hlc_make(T0, 1), T0);
    CHECK_OK(knit_relay_engine_flush(eng, T0, 0));
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    knit_msg_free(&m);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
    knit_msg_free(&m);
    /* A second HELLO is a protocol error. */
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = 1;
    m.u.hello.max_version = 1;
    m.u.hello.cred = anon("ok");
    feed(&a, &m, T0, 0);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EPROTO);
    knit_msg_free(&m);
    /* Versions the relay does not speak: EVERSION with its range. */
    fconn_t c;
    open_conn(&c, 0);
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = 7;
    m.u.hello.max_version = 9;
    m.u.hello.cred = anon("ok");
    feed(&c, &m, T0, 0);
    CHECK(next(&c, &m));
    CHECK_EQ_INT(m.u.error.code, KNIT_EVERSION);
    CHECK_EQ_INT(m.u.error.max_version, KNIT_PROTO_VERSION_MAX);
    knit_msg_free(&m);
    fconn_t *all[] = {&a, &b, &c};
    stop(all, 3);
}

/* Shutdown commits and answers what was received, then says goodbye. */
static void shutdown_commits(void)
{
    fconn_t a;
    knit_msg_t m;
    start(NULL, 0);
    open_conn(&a, 0);
    hello(&a, anon("sd"), NULL, T0, 0);
    push(&a, 5, "anon:sd", 1, 4, knit_hlc_make(T0, 1), T0);
    knit_relay_engine_shutdown(eng, T0, 0);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    knit_msg_free(&m);
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_ECLOSED);
    knit_msg_free(&m);
    CHECK(a.closed);
    fconn_t *all[] = {&a};
    stop(all, 1);
}

/* A HELLO of cred claiming claim (kind 0: none); the engine's first answer. */
static void hello_claim(fconn_t *f, knit_cred_t cred, knit_cred_t claim, knit_msg_t *out)
{
    knit_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = 1;
    m.u.hello.max_version = 1;
    m.u.hello.cred = cred;
    m.u.hello.claim = claim;
    feed(f, &m, T0, 0);
    CHECK(next(f, out));
}

static void expect_error(fconn_t *f, int code, const char *needle)
{
    knit_msg_t m;
    CHECK(next(f, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, code);
    if (!strstr(m.u.error.message, needle))
        fprintf(stderr, "ERROR message \"%s\" lacks \"%s\"\n", m.u.error.message, needle);
    CHECK(strstr(m.u.error.message, needle) != NULL);
    knit_msg_free(&m);
    CHECK(f->closed);
}

/* A claim seals the anonymous id (design note 14): its open anonymous
** session ends, its credential no longer opens one, another account's
** claim is refused, and the same account may claim again. */
static void claim_seals(void)
{
    fconn_t a, b, c, d, e;
    knit_cred_t none;
    knit_msg_t m;
    memset(&none, 0, sizeof none);
    start(NULL, 0);
    open_conn(&a, 0);
    hello(&a, anon("phone"), "anon:phone", T0, 0);
    push(&a, 1, "anon:phone", 1, 4, knit_hlc_make(T0, 1), T0);
    CHECK_OK(knit_relay_engine_flush(eng, T0, 0));
    CHECK(next(&a, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    knit_msg_free(&m);
    while (next(&a, &m)) /* its own unit, live */
        knit_msg_free(&m);

    open_conn(&b, 0);
    hello_claim(&b, jwt_for("alice", T0, 600), anon("phone"), &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    expect_error(&a, KNIT_EAUTH, "sealed"); /* the anonymous session ended */

    open_conn(&c, 0);
    hello_claim(&c, jwt_for("bob", T0, 600), anon("phone"), &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EAUTH);
    CHECK(strstr(m.u.error.message, "claim refused") != NULL);
    CHECK(strstr(m.u.error.message, "another account") != NULL);
    knit_msg_free(&m);
    uint64_t seq;
    CHECK_OK(knit_relay_store_seq(store, "user:bob", &seq));
    CHECK_EQ_INT(seq, 0); /* nothing merged */

    open_conn(&d, 0);
    hello_claim(&d, anon("phone"), none, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EAUTH);
    CHECK(strstr(m.u.error.message, "sealed") != NULL);
    knit_msg_free(&m);

    open_conn(&e, 0);
    hello_claim(&e, jwt_for("alice", T0, 600), anon("phone"), &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME); /* the same account again: fine */
    knit_msg_free(&m);
    CHECK_OK(knit_relay_store_seq(store, "user:alice", &seq));
    CHECK_EQ_INT(seq, 1); /* and it added nothing */
    fconn_t *all[] = {&a, &b, &c, &d, &e};
    stop(all, 5);
}

/* An erased account (design note 14): its open session ends and its
** waiting push is dropped, its tokens are refused until the tombstone
** goes (the provider's user.created). */
static void erased_refused(void)
{
    fconn_t a, b, c;
    knit_cred_t none;
    knit_msg_t m;
    size_t erased;
    uint64_t seq;
    int cleared;
    memset(&none, 0, sizeof none);
    start(NULL, 0);
    open_conn(&a, 0);
    hello(&a, jwt_for("erin", T0, 600), "user:erin", T0, 0);
    push(&a, 1, "user:erin", 1, 4, knit_hlc_make(T0, 1), T0);
    CHECK_OK(knit_relay_engine_flush(eng, T0, 0));
    while (next(&a, &m))
        knit_msg_free(&m);
    push(&a, 2, "user:erin", 2, 4, knit_hlc_make(T0, 2), T0); /* waits for a group */
    CHECK_OK(knit_relay_store_erase_account(store, "user:erin", &erased));
    CHECK_EQ_INT(erased, 1);
    CHECK_EQ_INT(knit_relay_engine_end_principal(eng, "user:erin", KNIT_EERASED, "account erased"),
                 1);
    expect_error(&a, KNIT_EERASED, "account erased");
    CHECK_OK(knit_relay_engine_flush(eng, T0, 0));
    CHECK_OK(knit_relay_store_seq(store, "user:erin", &seq));
    CHECK_EQ_INT(seq, 0); /* the waiting push was not written back */

    open_conn(&b, 0);
    hello_claim(&b, jwt_for("erin", T0, 600), none, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EERASED); /* final: the client erases its rows */
    CHECK(strstr(m.u.error.message, "erased") != NULL);
    knit_msg_free(&m);

    CHECK_OK(knit_relay_store_unerase(store, "user:erin", &cleared));
    CHECK_EQ_INT(cleared, 1);
    open_conn(&c, 0);
    hello_claim(&c, jwt_for("erin", T0, 600), none, &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    /* Erased by another process (sync-relay erase): the tick finds it. */
    CHECK_EQ_INT(knit_relay_store_erase_account(store, "user:erin", &erased), KNIT_ENOTFOUND);
    knit_relay_engine_tick(eng, T0, 1000); /* not yet: checked every 2 s */
    CHECK(!c.closed);
    knit_relay_engine_tick(eng, T0, 2500);
    expect_error(&c, KNIT_EERASED, "account erased");
    fconn_t *all[] = {&a, &b, &c};
    stop(all, 3);
}

/* The next message on f is an ACK of push id naming seq..seq. */
static void expect_ack(fconn_t *f, uint64_t id, uint64_t seq)
{
    knit_msg_t m;
    CHECK(next(f, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    CHECK_EQ_INT(m.u.ack.id, id);
    CHECK_EQ_INT(m.u.ack.first_seq, seq);
    CHECK_EQ_INT(m.u.ack.last_seq, seq);
    knit_msg_free(&m);
}

/* The next message on f is DELTAS from..to with one unit. */
static void expect_deltas(fconn_t *f, uint64_t from, uint64_t to)
{
    knit_msg_t m;
    CHECK(next(f, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
    CHECK_EQ_INT(m.u.deltas.from, from);
    CHECK_EQ_INT(m.u.deltas.to, to);
    CHECK_EQ_INT(m.u.deltas.batch->ntxns, 1);
    knit_msg_free(&m);
}

/* Design note 18: a connection that announced KNIT_HELLO_NO_ECHO gets no
** DELTAS of its own ACKed units, and the next unit continues from its
** ACK; one that did not still gets every unit, its own included. */
static void no_echo(void)
{
    fconn_t a, b;
    knit_msg_t m;
    uint64_t now = T0, h = knit_hlc_make(T0, 0);
    start(NULL, 0);
    open_conn(&a, 0);
    open_conn(&b, 0);
    hello_f(&a, anon("dev"), "anon:dev", KNIT_HELLO_NO_ECHO, now, 0);
    hello(&b, anon("dev"), "anon:dev", now, 0);
    push(&a, 1, "anon:dev", 1, 4, h + 1, now);
    CHECK_OK(knit_relay_engine_flush(eng, now, 0));
    expect_ack(&a, 1, 1);
    CHECK_EQ_INT(next(&a, &m), 0); /* no echo */
    expect_deltas(&b, 0, 1);
    push(&b, 1, "anon:dev", 2, 4, h + 2, now);
    CHECK_OK(knit_relay_engine_flush(eng, now, 0));
    expect_ack(&b, 1, 2);
    expect_deltas(&b, 1, 2); /* b's echo: it did not announce the bit */
    expect_deltas(&a, 1, 2);
    /* One group with both: a's ACK comes before b's unit, which continues
    ** from a's own sequence. */
    push(&a, 2, "anon:dev", 3, 4, h + 3, now);
    push(&b, 2, "anon:dev", 4, 4, h + 4, now);
    CHECK_OK(knit_relay_engine_flush(eng, now, 0));
    expect_ack(&a, 2, 3);
    expect_deltas(&a, 3, 4);
    CHECK_EQ_INT(next(&a, &m), 0);
    expect_ack(&b, 2, 4);
    expect_deltas(&b, 2, 3);
    expect_deltas(&b, 3, 4);
    CHECK_EQ_INT(next(&b, &m), 0);
    fconn_t *all[] = {&a, &b};
    stop(all, 2);
}

KNIT_TESTS(T(no_echo), T(answers_in_order), T(commit_failure), T(token_expiry), T(timeouts),
           T(slow_consumer_bounded), T(malformed_isolated), T(shutdown_commits), T(claim_seals),
           T(erased_refused))
