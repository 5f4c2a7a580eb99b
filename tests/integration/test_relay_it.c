/*
** test_relay_it.c: the real sync-relay program on 127.0.0.1, driven over
** plain sockets with the real codec (wire_client.h).
**
** Each case starts its own relay (ephemeral port, store in a fresh mkdtemp
** directory), is bounded by alarm(), and stops the relay and removes the
** directory at the end.  The relay's stderr log is kept in that directory
** and printed when a check fails.
*/
#include <bearssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "auth.h"
#include "test.h"
#include "wire_client.h"
#ifdef KNIT_TEST_PG
#include "test_store.h"
#endif

static const char KEY[] = "integration-test-key-0123456789abcdef-xyz";
static char dir[64], db[128], logpath[128], keyfile[128];
static relay_proc_t R;

/* On failure (exit(1) from CHECK) print the relay's log tail. */
static void dump_log(void)
{
    char cmd[300];
    if (!dir[0])
        return;
    snprintf(cmd, sizeof cmd, "echo '--- relay log:'; tail -n 40 '%s' 1>&2", logpath);
    if (system(cmd) != 0)
        fprintf(stderr, "(no relay log)\n");
    if (R.pid)
        kill(R.pid, SIGKILL);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static void fail_exit(void)
{
    if (dir[0])
        dump_log();
}

/* The time bound: kill the relay, remove what it made, fail.  Only
** async-signal-safe calls. */
static void on_alarm(int sig)
{
    static const char msg[] = "test timed out\n";
    char p[160];
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0)
        _exit(3);
    if (R.pid)
        kill(R.pid, SIGKILL);
    static const char *const names[] = {"relay.db", "relay.db-wal", "relay.db-shm", "relay.log",
                                        "key"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t k = 0;
        for (const char *q = dir; *q && k < sizeof p - 1; q++)
            p[k++] = *q;
        p[k++] = '/';
        for (const char *q = names[i]; *q && k < sizeof p - 1; q++)
            p[k++] = *q;
        p[k] = '\0';
        unlink(p);
    }
    rmdir(dir);
    _exit(2);
}

static void start_relay(const char *const *extra)
{
    const char *args[24];
    size_t n = 0;
    args[n++] = "--data";
    args[n++] = db;
    args[n++] = "--jwt-secret-file";
    args[n++] = keyfile;
    args[n++] = "--log-level";
    args[n++] = "debug";
    for (size_t i = 0; extra && extra[i] && n < 20; i++)
        args[n++] = extra[i];
#ifdef KNIT_TEST_PG
    {
        const char *uri = ts_store_arg(db, extra); /* last, so it wins */
        if (uri) {
            args[n++] = "--store";
            args[n++] = uri;
        }
    }
#endif
    args[n] = NULL;
    CHECK(relay_start(&R, SYNC_RELAY_PATH, logpath, args) == 0);
}

static void setup(const char *const *extra)
{
    static int registered;
    signal(SIGALRM, on_alarm);
    alarm(110);
    if (!registered) {
        atexit(fail_exit);
        registered = 1;
    }
    srand((unsigned)getpid());
    strcpy(dir, "/tmp/knit-relay-it-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(db, sizeof db, "%s/relay.db", dir);
    snprintf(logpath, sizeof logpath, "%s/relay.log", dir);
    snprintf(keyfile, sizeof keyfile, "%s/key", dir);
    FILE *f = fopen(keyfile, "w");
    CHECK(f != NULL);
    fprintf(f, "%s\n", KEY);
    fclose(f);
    chmod(keyfile, 0600);
    start_relay(extra);
}

static void teardown(void)
{
    int st;
    char cmd[128];
    if (R.pid) {
        CHECK(relay_stop(&R, SIGTERM, &st) == 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    dir[0] = '\0';
    alarm(0);
}

/* ---------------------------------------------------------------------- */
/* Helpers                                                                  */

static uint64_t wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t last_hlc;
static uint64_t next_hlc(void)
{
    uint64_t h = knit_hlc_make(wall(), 0);
    last_hlc = h > last_hlc ? h : last_hlc + 1;
    return last_hlc;
}

static char tokbuf[8][1024];
static int tokslot;

static knit_cred_t jwt(const char *token)
{
    knit_cred_t c;
    memset(&c, 0, sizeof c);
    c.kind = KNIT_CRED_JWT;
    c.token = token;
    return c;
}

static const char *mint(const char *sub, uint64_t now_ms, uint64_t ttl)
{
    char *t;
    CHECK_OK(knit_jwt_mint((const uint8_t *)KEY, strlen(KEY), sub, now_ms, ttl, &t));
    char *slot = tokbuf[tokslot++ % 8];
    snprintf(slot, sizeof tokbuf[0], "%s", t);
    knit__free(t);
    return slot;
}

/* A token from raw JSON, signed with key. */
static const char *craft(const char *header, const char *payload, const char *key)
{
    char *out = tokbuf[tokslot++ % 8];
    size_t k = knit_b64url_encode((const uint8_t *)header, strlen(header), out);
    out[k++] = '.';
    k += knit_b64url_encode((const uint8_t *)payload, strlen(payload), out + k);
    br_hmac_key_context kc;
    br_hmac_context hc;
    uint8_t mac[32];
    br_hmac_key_init(&kc, &br_sha256_vtable, key, strlen(key));
    br_hmac_init(&hc, &kc, 0);
    br_hmac_update(&hc, out, k);
    br_hmac_out(&hc, mac);
    out[k++] = '.';
    knit_b64url_encode(mac, 32, out + k);
    return out;
}

/* A push batch on table notes(id INTEGER PRIMARY KEY, body LWW). */
static knit_batch_t *notes(const char *ns)
{
    static const char *cols[] = {"body"};
    static const uint8_t kinds[] = {0};
    knit_batch_t *b;
    uint32_t idx;
    knit_site_t me;
    memset(me.b, 0x5a, 16);
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, ns, &idx));
    CHECK_OK(knit_batch_site(b, &me, &idx));
    CHECK_OK(knit_batch_table(b, "notes", 1, 1, cols, kinds, &idx));
    return b;
}

/* Adds the liveness and body of note id (in the open unit). */
static void note(knit_batch_t *b, int64_t id, const char *body, size_t blen, uint64_t hlc,
                 int with_live)
{
    knit_value_t pk;
    knit_change_t c;
    pk.type = KNIT_INTEGER;
    pk.u.i = id;
    memset(&c, 0, sizeof c);
    c.pk = &pk;
    c.cl = 1;
    c.hlc = hlc;
    if (with_live) {
        c.col = 0;
        c.value.type = KNIT_NULL;
        CHECK_OK(knit_batch_add(b, &c));
    }
    c.col = 1;
    c.value.type = KNIT_TEXT;
    c.value.u.b.p = body;
    c.value.u.b.n = blen ? blen : strlen(body);
    CHECK_OK(knit_batch_add(b, &c));
}

static void push(wc_t *w, uint64_t id, const char *ns, knit_batch_t *b)
{
    CHECK_OK(wc_push(w, id, ns, b));
}

/* Pushes one note in one unit and waits for its ACK. */
static void push_note(wc_t *w, uint64_t id, const char *ns, int64_t note_id, const char *body)
{
    knit_msg_t m;
    knit_batch_t *b = notes(ns);
    CHECK_OK(knit_batch_begin(b, id));
    note(b, note_id, body, 0, next_hlc(), 1);
    push(w, id, ns, b);
    knit_batch_free(b);
    CHECK_OK(wc_recv_type(w, 10000, KNIT_MSG_ACK, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    CHECK_EQ_INT(m.u.ack.id, id);
    CHECK_EQ_INT(m.u.ack.durable, 1);
    knit_msg_free(&m);
}

/* Connects and says HELLO; the reply must be WELCOME. */
static void connect_ok(wc_t *w, knit_cred_t cred, const char *ns, uint64_t cursor)
{
    knit_msg_t m;
    CHECK(wc_connect(w, R.port, 0) == 0);
    CHECK_OK(wc_hello(w, &cred, ns, cursor, &m));
    if (m.type == KNIT_MSG_ERROR)
        fprintf(stderr, "ERROR %d %s\n", m.u.error.code, m.u.error.message);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
}

/* Reads DELTAS of ns until caught_up; returns the number of messages and
** checks the from/to chain.  *cursor in: where the chain starts; out: end.
** Calls fn for every change, if fn is set. */
typedef void (*change_fn)(void *data, const knit_batch_t *b, const knit_change_t *c, uint64_t seq);
static int read_catch_up(wc_t *w, uint64_t *cursor, change_fn fn, void *data)
{
    int n = 0;
    for (;;) {
        knit_msg_t m;
        CHECK_OK(wc_recv_type(w, 20000, KNIT_MSG_DELTAS, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
        CHECK(m.u.deltas.from <= *cursor);
        const knit_batch_t *b = m.u.deltas.batch;
        for (size_t u = 0; u < b->ntxns; u++)
            for (size_t k = 0; k < b->txns[u].count; k++)
                if (fn)
                    fn(data, b, &b->changes[b->txns[u].first + k], b->txns[u].version);
        *cursor = m.u.deltas.to;
        n++;
        int done = m.u.deltas.caught_up;
        knit_msg_free(&m);
        if (done)
            return n;
    }
}

static void expect_error_closed(wc_t *w, knit_cred_t cred, const char *ns, int code)
{
    knit_msg_t m;
    CHECK(wc_connect(w, R.port, 0) == 0);
    CHECK_OK(wc_hello(w, &cred, ns, 0, &m));
    if (m.type != KNIT_MSG_ERROR || m.u.error.code != code)
        fprintf(stderr, "wanted ERROR %d, got type %d code %d\n", code, m.type,
                m.type == KNIT_MSG_ERROR ? m.u.error.code : 0);
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, code);
    knit_msg_free(&m);
    /* Nothing else (no WELCOME, no DELTAS): the next thing is the close. */
    CHECK_EQ_INT(wc_recv(w, 5000, &m), KNIT_ECLOSED);
    wc_close(w);
}

/* ---------------------------------------------------------------------- */
/* Cases                                                                    */

static void auth_refusals(void)
{
    wc_t a, b, x;
    knit_msg_t m;
    char hdr[64], pl[256];
    const char *S1 = "first-secret-0123456789", *S2 = "other-secret-0123456789";

    setup(NULL);
    /* Data that must not leak: in anon:dev1 and user:bob. */
    connect_ok(&a, wc_anon("dev1", S1), NULL, 0);
    push_note(&a, 1, "anon:dev1", 1, "dev1's secret note");
    connect_ok(&b, jwt(mint("bob", wall(), 600)), NULL, 0);
    push_note(&b, 1, "user:bob", 1, "bob's secret note");

    expect_error_closed(&x, wc_anon("dev1", S2), "anon:dev1", KNIT_EAUTH); /* wrong secret */
    expect_error_closed(&x, wc_anon("dev1", "short"), NULL, KNIT_EAUTH);   /* weak secret */
    expect_error_closed(&x, wc_anon("dev2", S2), "anon:dev1", KNIT_EDENIED);
    expect_error_closed(&x, jwt(mint("alice", wall(), 600)), "user:bob", KNIT_EDENIED);
    expect_error_closed(&x, jwt(mint("alice", wall(), 600)), "anon:dev1", KNIT_EDENIED);
    /* Expired, not yet valid, forged, alg none, wrong algorithm. */
    expect_error_closed(&x, jwt(mint("bob", wall() - 7200000, 60)), "user:bob", KNIT_EAUTH);
    snprintf(pl, sizeof pl, "{\"sub\":\"bob\",\"nbf\":%llu,\"exp\":%llu}",
             (unsigned long long)(wall() / 1000 + 3600),
             (unsigned long long)(wall() / 1000 + 7200));
    expect_error_closed(&x, jwt(craft("{\"alg\":\"HS256\"}", pl, KEY)), "user:bob", KNIT_EAUTH);
    snprintf(pl, sizeof pl, "{\"sub\":\"bob\",\"exp\":%llu}",
             (unsigned long long)(wall() / 1000 + 3600));
    expect_error_closed(&x,
                        jwt(craft("{\"alg\":\"HS256\"}", pl, "some-other-key-of-enough-length!!")),
                        "user:bob", KNIT_EAUTH);
    {
        /* alg none: unsigned. */
        char *t = tokbuf[tokslot++ % 8];
        size_t k = knit_b64url_encode((const uint8_t *)"{\"alg\":\"none\"}", 14, t);
        t[k++] = '.';
        k += knit_b64url_encode((const uint8_t *)pl, strlen(pl), t + k);
        t[k++] = '.';
        t[k] = '\0';
        expect_error_closed(&x, jwt(t), "user:bob", KNIT_EAUTH);
    }
    snprintf(hdr, sizeof hdr, "{\"alg\":\"HS512\"}");
    expect_error_closed(&x, jwt(craft(hdr, pl, KEY)), "user:bob", KNIT_EAUTH);
    snprintf(hdr, sizeof hdr, "{\"alg\":\"RS256\"}");
    expect_error_closed(&x, jwt(craft(hdr, pl, KEY)), "user:bob", KNIT_EAUTH);
    expect_error_closed(&x, jwt("not.a.token"), "user:bob", KNIT_EAUTH);
    {
        knit_cred_t odd;
        memset(&odd, 0, sizeof odd);
        odd.kind = 9;
        expect_error_closed(&x, odd, NULL, KNIT_EAUTH);
    }

    /* A PUSH to someone else's namespace is refused, the session goes on. */
    connect_ok(&x, jwt(mint("alice", wall(), 600)), NULL, 0);
    knit_batch_t *bt = notes("user:bob");
    CHECK_OK(knit_batch_begin(bt, 1));
    note(bt, 2, "mallory was here", 0, next_hlc(), 1);
    push(&x, 5, "user:bob", bt);
    knit_batch_free(bt);
    CHECK_OK(wc_recv(&x, 5000, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_REJECT);
    CHECK_EQ_INT(m.u.reject.id, 5);
    CHECK_EQ_INT(m.u.reject.reasons[0].code, KNIT_EDENIED);
    CHECK_EQ_INT(m.u.reject.reasons[0].change, -1);
    knit_msg_free(&m);
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PING;
    m.u.ping.nonce = 77;
    CHECK_OK(wc_send(&x, &m));
    CHECK_OK(wc_recv(&x, 5000, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_PONG);
    CHECK_EQ_INT(m.u.ping.nonce, 77);
    knit_msg_free(&m);
    wc_close(&x);

    /* And the right secret still works; bob's data was not touched. */
    connect_ok(&x, wc_anon("dev1", S1), "anon:dev1", 0);
    uint64_t cur = 0;
    read_catch_up(&x, &cur, NULL, NULL);
    CHECK_EQ_INT(cur, 1);
    wc_close(&x);
    connect_ok(&x, jwt(mint("bob", wall(), 600)), "user:bob", 0);
    cur = 0;
    read_catch_up(&x, &cur, NULL, NULL);
    CHECK_EQ_INT(cur, 1);
    wc_close(&x);
    wc_close(&a);
    wc_close(&b);
    teardown();
}

/* A HELLO encoded, then cut short, with a frame length matching the cut. */
static size_t truncated_hello(uint8_t *out, size_t cap)
{
    knit_msg_t m;
    knit_buf_t b = {NULL, 0, 0};
    knit_cred_t c = wc_anon("trunc", "truncated-secret-0123");
    size_t n;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_HELLO;
    m.u.hello.min_version = 1;
    m.u.hello.max_version = 1;
    m.u.hello.cred = c;
    CHECK_OK(knit_msg_encode(&m, NULL, &b));
    n = b.len - 4 - 7; /* payload minus its last 7 bytes */
    CHECK(n + 4 <= cap);
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    memcpy(out + 4, b.p + 4, n);
    knit_buf_free(&b);
    return n + 4;
}

static void malformed_inputs(void)
{
    wc_t a, bad;
    knit_msg_t m;
    uint64_t cur = 0;
    long rss_warm = 0, rss_end;
    static const uint8_t garbage[] = "\x00\x00\x00\x05hello";
    static const uint8_t http[] = "GET / HTTP/1.1\r\nHost: relay\r\n\r\n";
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t zero[] = {0, 0, 0, 0};
    /* {0: 1 (HELLO), 1: "one", 2: 1, 3: h'00'*16, 4: {1: 1}}: min_version
    ** is a text string. */
    static const uint8_t wrong_types[] = {0x00, 0x00, 0x00, 0x20, 0xa5, 0x00, 0x01, 0x01, 0x63,
                                          'o',  'n',  'e',  0x02, 0x01, 0x03, 0x50, 0,    0,
                                          0,    0,    0,    0,    0,    0,    0,    0,    0,
                                          0,    0,    0,    0,    0,    0x04, 0xa1, 0x01, 0x01};
    /* A valid PING frame before HELLO. */
    static const uint8_t ping_first[] = {0x00, 0x00, 0x00, 0x05, 0xa2, 0x00, 0x08, 0x01, 0x01};
    uint8_t trunc[256];
    size_t ntrunc = truncated_hello(trunc, sizeof trunc);
    struct {
        const uint8_t *p;
        size_t n;
        int code;
    } kinds[] = {
        {garbage, sizeof garbage - 1, KNIT_EPROTO},
        {http, sizeof http - 1, KNIT_ETOOBIG},
        {huge, sizeof huge, KNIT_ETOOBIG},
        {zero, sizeof zero, KNIT_EPROTO},
        {trunc, ntrunc, KNIT_EPROTO},
        {wrong_types, sizeof wrong_types, KNIT_EPROTO},
        {ping_first, sizeof ping_first, KNIT_EPROTO},
    };
    const size_t nkinds = sizeof kinds / sizeof kinds[0];

    setup(NULL);
    connect_ok(&a, wc_anon("good", "good-secret-0123456789"), "anon:good", 0);
    read_catch_up(&a, &cur, NULL, NULL);

    for (int round = 0; round < 40; round++) {
        for (size_t k = 0; k < nkinds; k++) {
            CHECK(wc_connect(&bad, R.port, 0) == 0);
            CHECK(wc_send_raw(&bad, kinds[k].p, kinds[k].n) == 0);
            if (round == 0) {
                CHECK_OK(wc_recv(&bad, 5000, &m));
                if (m.type != KNIT_MSG_ERROR || m.u.error.code != kinds[k].code)
                    fprintf(stderr, "kind %zu: type %d code %d\n", k, m.type,
                            m.type == KNIT_MSG_ERROR ? m.u.error.code : 0);
                CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
                CHECK_EQ_INT(m.u.error.code, kinds[k].code);
                knit_msg_free(&m);
                CHECK_EQ_INT(wc_recv(&bad, 5000, &m), KNIT_ECLOSED);
            } else {
                CHECK(wc_wait_closed(&bad, 5000));
            }
            wc_close(&bad);
        }
        /* The good client keeps syncing through all of it. */
        if (round % 10 == 9) {
            push_note(&a, (uint64_t)round, "anon:good", round, "still here");
            CHECK_OK(wc_recv_type(&a, 5000, KNIT_MSG_DELTAS, &m));
            CHECK_EQ_INT(m.type, KNIT_MSG_DELTAS);
            CHECK_EQ_INT(m.u.deltas.from, cur);
            cur = m.u.deltas.to;
            knit_msg_free(&m);
        }
        if (round == 9)
            rss_warm = relay_rss_kb(&R);
    }
    rss_end = relay_rss_kb(&R);
    fprintf(stderr, "relay RSS after warm-up %ld KiB, after 210 more bad connections %ld KiB\n",
            rss_warm, rss_end);
    CHECK(rss_warm > 0 && rss_end > 0);
    CHECK(rss_end - rss_warm < 8 * 1024);
    wc_close(&a);
    teardown();
}

static void future_stamps(void)
{
    wc_t a, b;
    knit_msg_t m;
    uint64_t cur = 0;
    setup(NULL);
    connect_ok(&a, wc_anon("clocky", "clocky-secret-0123456"), NULL, 0);
    knit_batch_t *bt = notes("anon:clocky");
    CHECK_OK(knit_batch_begin(bt, 1));
    note(bt, 1, "now", 0, next_hlc(), 1);
    note(bt, 2, "next hour", 0, knit_hlc_make(wall() + 3600000, 0), 1);
    push(&a, 7, "anon:clocky", bt);
    knit_batch_free(bt);
    CHECK_OK(wc_recv(&a, 5000, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_REJECT);
    CHECK_EQ_INT(m.u.reject.id, 7);
    CHECK_EQ_INT(m.u.reject.nreasons, 2);
    CHECK_EQ_INT(m.u.reject.reasons[0].change, 2);
    CHECK_EQ_INT(m.u.reject.reasons[1].change, 3);
    CHECK_EQ_INT(m.u.reject.reasons[0].code, KNIT_ECLOCKSKEW);
    CHECK(strstr(m.u.reject.reasons[0].message, "notes") != NULL);
    CHECK(strstr(m.u.reject.reasons[0].message, "ahead") != NULL);
    knit_msg_free(&m);

    /* Nothing of it was applied. */
    connect_ok(&b, wc_anon("clocky", "clocky-secret-0123456"), "anon:clocky", 0);
    CHECK_EQ_INT(read_catch_up(&b, &cur, NULL, NULL), 1);
    CHECK_EQ_INT(cur, 0);
    /* A push within the allowance goes through. */
    push_note(&a, 8, "anon:clocky", 1, "now");
    CHECK_OK(wc_recv_type(&b, 5000, KNIT_MSG_DELTAS, &m));
    CHECK_EQ_INT(m.u.deltas.to, 1);
    knit_msg_free(&m);
    wc_close(&a);
    wc_close(&b);
    teardown();
}

static void live_fanout(void)
{
    wc_t a, b, c;
    knit_msg_t m;
    uint64_t ca = 0, cb = 0, cc = 0;
    const char *S = "shared-secret-0123456789";
    setup(NULL);
    connect_ok(&a, wc_anon("live", S), "anon:live", 0);
    connect_ok(&b, wc_anon("live", S), "anon:live", 0);
    connect_ok(&c, wc_anon("other", S), "anon:other", 0);
    read_catch_up(&a, &ca, NULL, NULL);
    read_catch_up(&b, &cb, NULL, NULL);
    read_catch_up(&c, &cc, NULL, NULL);

    /* One push of two transactions. */
    knit_batch_t *bt = notes("anon:live");
    CHECK_OK(knit_batch_begin(bt, 10));
    uint64_t one_hlc = next_hlc(); /* replayed below */
    note(bt, 1, "one", 0, one_hlc, 1);
    CHECK_OK(knit_batch_begin(bt, 11));
    note(bt, 2, "two", 0, next_hlc(), 1);
    note(bt, 1, "one, again", 0, next_hlc(), 0);
    push(&a, 42, "anon:live", bt);
    knit_batch_free(bt);
    CHECK_OK(wc_recv(&a, 5000, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    CHECK_EQ_INT(m.u.ack.id, 42);
    knit_msg_free(&m);
    /* Both subscribers (the pusher too) get one DELTAS per transaction. */
    wc_t *subs[] = {&b, &a};
    for (int i = 0; i < 2; i++) {
        CHECK_OK(wc_recv_type(subs[i], 5000, KNIT_MSG_DELTAS, &m));
        CHECK_EQ_INT(m.u.deltas.from, 0);
        CHECK_EQ_INT(m.u.deltas.to, 1);
        CHECK_EQ_INT(m.u.deltas.batch->ntxns, 1);
        CHECK_EQ_INT(m.u.deltas.batch->txns[0].version, 1);
        CHECK_EQ_INT(m.u.deltas.batch->nchanges, 2);
        knit_msg_free(&m);
        CHECK_OK(wc_recv_type(subs[i], 5000, KNIT_MSG_DELTAS, &m));
        CHECK_EQ_INT(m.u.deltas.from, 1);
        CHECK_EQ_INT(m.u.deltas.to, 2);
        CHECK_EQ_INT(m.u.deltas.batch->ntxns, 1);
        CHECK_EQ_INT(m.u.deltas.batch->nchanges, 3);
        knit_msg_free(&m);
    }
    /* Another namespace hears nothing. */
    CHECK_EQ_INT(wc_recv(&c, 500, &m), KNIT_ETIMEDOUT);
    /* A replay of the same push is acknowledged and changes nothing. */
    bt = notes("anon:live");
    CHECK_OK(knit_batch_begin(bt, 10));
    /* Its own stamp: last_hlc - 2 was it only when the three stamps above
    ** fell in one millisecond (a slow sanitizer run crossed one). */
    note(bt, 1, "one", 0, one_hlc, 1);
    push(&a, 43, "anon:live", bt);
    knit_batch_free(bt);
    CHECK_OK(wc_recv(&a, 5000, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
    knit_msg_free(&m);
    CHECK_EQ_INT(wc_recv(&b, 500, &m), KNIT_ETIMEDOUT);
    wc_close(&a);
    wc_close(&b);
    wc_close(&c);
    teardown();
}

typedef struct seen_s {
    int body_changes[8]; /* body changes per note id */
    char body[8][32];    /* last body per note id */
    int live[8];         /* liveness changes per note id */
} seen_t;

static void collect(void *data, const knit_batch_t *b, const knit_change_t *c, uint64_t seq)
{
    seen_t *s = data;
    int64_t id = c->pk[0].u.i;
    (void)b;
    (void)seq;
    CHECK(id >= 0 && id < 8);
    if (c->col == 0) {
        s->live[id]++;
    } else {
        s->body_changes[id]++;
        snprintf(s->body[id], sizeof s->body[id], "%.*s", (int)c->value.u.b.n,
                 (const char *)c->value.u.b.p);
    }
}

static void catch_up_once(void)
{
    wc_t a, b;
    uint64_t cur = 0;
    seen_t s;
    const char *S = "catchup-secret-0123456789";
    setup(NULL);
    connect_ok(&a, wc_anon("cu", S), NULL, 0);
    push_note(&a, 1, "anon:cu", 1, "v1");
    knit_batch_t *bt = notes("anon:cu");
    CHECK_OK(knit_batch_begin(bt, 2));
    note(bt, 1, "v2", 0, next_hlc(), 0);
    note(bt, 2, "x", 0, next_hlc(), 1);
    push(&a, 2, "anon:cu", bt);
    knit_batch_free(bt);
    knit_msg_t m;
    CHECK_OK(wc_recv_type(&a, 5000, KNIT_MSG_ACK, &m));
    knit_msg_free(&m);
    push_note(&a, 3, "anon:cu", 1, "v3");

    /* From 0: every cell once, in its latest state. */
    memset(&s, 0, sizeof s);
    connect_ok(&b, wc_anon("cu", S), "anon:cu", 0);
    read_catch_up(&b, &cur, collect, &s);
    wc_close(&b);
    CHECK_EQ_INT(cur, 3);
    CHECK_EQ_INT(s.body_changes[1], 1);
    CHECK_STR(s.body[1], "v3");
    CHECK_EQ_INT(s.body_changes[2], 1);
    CHECK_STR(s.body[2], "x");
    CHECK_EQ_INT(s.live[1], 1);
    CHECK_EQ_INT(s.live[2], 1);

    /* Reconnect at the end: one empty DELTAS, from = to = cursor. */
    memset(&s, 0, sizeof s);
    connect_ok(&b, wc_anon("cu", S), "anon:cu", 3);
    CHECK_OK(wc_recv_type(&b, 5000, KNIT_MSG_DELTAS, &m));
    CHECK_EQ_INT(m.u.deltas.from, 3);
    CHECK_EQ_INT(m.u.deltas.to, 3);
    CHECK_EQ_INT(m.u.deltas.caught_up, 1);
    CHECK_EQ_INT(m.u.deltas.batch->nchanges, 0);
    knit_msg_free(&m);
    wc_close(&b);

    /* From 2: only what changed after it (note 1, rewritten at 3). */
    memset(&s, 0, sizeof s);
    cur = 2;
    connect_ok(&b, wc_anon("cu", S), "anon:cu", 2);
    read_catch_up(&b, &cur, collect, &s);
    wc_close(&b);
    CHECK_EQ_INT(s.body_changes[1], 1);
    CHECK_STR(s.body[1], "v3");
    CHECK_EQ_INT(s.live[2], 0);
    CHECK_EQ_INT(s.body_changes[2], 0);

    /* A cursor from the future (relay restored from a backup): all again. */
    memset(&s, 0, sizeof s);
    cur = 99;
    connect_ok(&b, wc_anon("cu", S), "anon:cu", 99);
    read_catch_up(&b, &cur, collect, &s);
    wc_close(&b);
    CHECK_EQ_INT(cur, 3);
    CHECK_EQ_INT(s.live[1] + s.live[2], 2);
    wc_close(&a);
    teardown();
}

typedef struct big_s {
    size_t len[400]; /* body length per note id, 0 = not seen */
    uint64_t to;     /* the chain's end */
} big_t;

static void collect_big(void *data, const knit_batch_t *b, const knit_change_t *c, uint64_t seq)
{
    big_t *s = data;
    (void)b;
    (void)seq;
    if (c->col == 1 && c->pk[0].u.i >= 0 && c->pk[0].u.i < 400)
        s->len[c->pk[0].u.i] = c->value.u.b.n;
}

static void slow_consumer(void)
{
    static const char *extra[] = {"--max-queue", "65536", NULL};
    static char body[32768];
    const char *S = "slow-secret-0123456789";
    wc_t a, b;
    uint64_t cur = 0, seq_end;
    big_t seen;
    const int N = 300;
    char cmd[300];

    setup(extra);
    memset(body, 'b', sizeof body);
    connect_ok(&a, wc_anon("slow", S), NULL, 0);
    CHECK(wc_connect(&b, R.port, 4096) == 0);
    {
        knit_msg_t m;
        knit_cred_t cr = wc_anon("slow", S);
        CHECK_OK(wc_hello(&b, &cr, "anon:slow", 0, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
        knit_msg_free(&m);
    }
    read_catch_up(&b, &cur, NULL, NULL);
    /* b stops reading; a pushes ~10 MB. */
    for (int i = 0; i < N; i++) {
        knit_batch_t *bt = notes("anon:slow");
        knit_msg_t m;
        CHECK_OK(knit_batch_begin(bt, (uint64_t)i + 1));
        note(bt, i, body, sizeof body - (size_t)i, next_hlc(), 1);
        push(&a, (uint64_t)i + 1, "anon:slow", bt);
        knit_batch_free(bt);
        CHECK_OK(wc_recv_type(&a, 10000, KNIT_MSG_ACK, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_ACK);
        knit_msg_free(&m);
    }
    seq_end = (uint64_t)N;
    long rss = relay_rss_kb(&R);
    fprintf(stderr, "relay RSS with a stalled consumer: %ld KiB\n", rss);
    /* The relay said what it did. */
    snprintf(cmd, sizeof cmd, "grep -q 'slow consumer, anon:slow drops to catch-up' '%s'", logpath);
    CHECK(system(cmd) == 0);
    /* b reads again: a gapless chain to the end, every note in full. */
    memset(&seen, 0, sizeof seen);
    while (cur < seq_end) {
        knit_msg_t m;
        CHECK_OK(wc_recv_type(&b, 20000, KNIT_MSG_DELTAS, &m));
        CHECK_EQ_INT(m.u.deltas.from, cur);
        const knit_batch_t *bt = m.u.deltas.batch;
        for (size_t k = 0; k < bt->nchanges; k++)
            collect_big(&seen, bt, &bt->changes[k], 0);
        cur = m.u.deltas.to;
        knit_msg_free(&m);
    }
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(seen.len[i], sizeof body - (size_t)i);
    wc_close(&a);
    wc_close(&b);
    teardown();
}

typedef struct acked_s {
    uint8_t present[1024]; /* note ids seen */
} acked_t;

static void collect_ids(void *data, const knit_batch_t *b, const knit_change_t *c, uint64_t seq)
{
    acked_t *s = data;
    (void)b;
    (void)seq;
    if (c->col == 1 && c->pk[0].u.i >= 0 && c->pk[0].u.i < 1024)
        s->present[c->pk[0].u.i] = 1;
}

/* Streams pushes (a window of them in flight), stopping the relay with sig
** after `after` ACKs; returns which pushes were acknowledged. */
static int stream_and_stop(int sig, int after, uint8_t *acked, int n, int *exit_status)
{
    wc_t a;
    int sent = 0, nacked = 0, stopped = 0;
    const char *S = "stream-secret-0123456789";
    connect_ok(&a, wc_anon("stream", S), NULL, 0);
    for (;;) {
        while (sent < n && sent - nacked < 16 && !stopped) {
            knit_batch_t *bt = notes("anon:stream");
            CHECK_OK(knit_batch_begin(bt, (uint64_t)sent + 1));
            note(bt, sent, "payload", 0, next_hlc(), 1);
            knit_msg_t m;
            memset(&m, 0, sizeof m);
            m.type = KNIT_MSG_PUSH;
            m.u.push.id = (uint64_t)sent;
            m.u.push.ns = "anon:stream";
            m.u.push.batch = bt;
            int rc = wc_send(&a, &m);
            knit_batch_free(bt);
            if (rc)
                break;
            sent++;
        }
        knit_msg_t m;
        int rc = wc_recv(&a, 5000, &m);
        if (rc)
            break; /* closed (or timed out after the relay died) */
        if (m.type == KNIT_MSG_ACK) {
            CHECK(m.u.ack.id < (uint64_t)n);
            acked[m.u.ack.id] = 1;
            nacked++;
        }
        knit_msg_free(&m);
        if (nacked == after && !stopped) {
            stopped = 1;
            kill(R.pid, sig);
        }
        if (nacked == sent && sent == n)
            break;
    }
    wc_close(&a);
    CHECK(stopped);
    CHECK(relay_stop(&R, 0, exit_status) == 0); /* the signal was sent above */
    return nacked;
}

static void check_acked_present(const uint8_t *acked, int n)
{
    acked_t seen;
    wc_t b;
    uint64_t cur = 0;
    int count = 0;
    start_relay(NULL);
    memset(&seen, 0, sizeof seen);
    connect_ok(&b, wc_anon("stream", "stream-secret-0123456789"), "anon:stream", 0);
    read_catch_up(&b, &cur, collect_ids, &seen);
    wc_close(&b);
    for (int i = 0; i < n; i++) {
        if (acked[i]) {
            if (!seen.present[i])
                fprintf(stderr, "acknowledged push %d is missing\n", i);
            CHECK(seen.present[i]);
            count++;
        }
    }
    fprintf(stderr, "%d acknowledged pushes all present after restart\n", count);
}

static void sigkill_durability(void)
{
    uint8_t acked[1024];
    int st;
    setup(NULL);
    memset(acked, 0, sizeof acked);
    int n = stream_and_stop(SIGKILL, 150, acked, 1000, &st);
    CHECK(n >= 150);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    check_acked_present(acked, 1000);
    teardown();
}

static void sigterm_clean(void)
{
    uint8_t acked[1024];
    int st;
    setup(NULL);
    memset(acked, 0, sizeof acked);
    stream_and_stop(SIGTERM, 100, acked, 1000, &st);
    CHECK(WIFEXITED(st));
    CHECK_EQ_INT(WEXITSTATUS(st), 0);
    check_acked_present(acked, 1000);

    /* SIGTERM with an idle client: it is told, and the relay exits 0. */
    wc_t a;
    knit_msg_t m;
    connect_ok(&a, wc_anon("bye", "bye-secret-0123456789"), NULL, 0);
    kill(R.pid, SIGTERM);
    CHECK_OK(wc_recv(&a, 10000, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_ECLOSED);
    knit_msg_free(&m);
    wc_close(&a);
    CHECK(relay_stop(&R, 0, &st) == 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    teardown();
}

/* Runs sync-relay with args; returns its exit status and stdout. */
static int run_cli(const char *args, char *out, size_t n)
{
    char cmd[512];
    FILE *p;
    size_t k;
    snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", SYNC_RELAY_PATH, args);
    p = popen(cmd, "r");
    CHECK(p != NULL);
    k = fread(out, 1, n - 1, p);
    out[k] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void mint_token(void)
{
    static char out[8192];
    char args[300];
    knit_jwt_claims_t cl;
    wc_t a;
    knit_msg_t m;

    setup(NULL);
    snprintf(args, sizeof args, "mint-token --secret-file '%s' --sub alice --ttl 60", keyfile);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 0);
    char *nl = strchr(out, '\n');
    CHECK(nl != NULL);
    *nl = '\0';
    CHECK_OK(
        knit_jwt_verify(out, strlen(out), (const uint8_t *)KEY, strlen(KEY), wall(), 0, &cl, NULL));
    CHECK_STR(cl.sub, "alice");
    CHECK(cl.exp_ms <= wall() + 61000);
    CHECK(wc_connect(&a, R.port, 0) == 0);
    knit_cred_t cr = jwt(out);
    CHECK_OK(wc_hello(&a, &cr, "user:alice", 0, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    CHECK_STR(m.u.welcome.principal, "user:alice");
    CHECK_EQ_INT(m.u.welcome.ngranted, 1);
    CHECK_STR(m.u.welcome.granted[0], "user:alice");
    CHECK_EQ_INT(m.u.welcome.limits.max_drift_ms, 300000);
    knit_msg_free(&m);
    wc_close(&a);

    /* The other subcommand errors, --help and --version. */
    CHECK_EQ_INT(run_cli("mint-token --sub alice", out, sizeof out), 2);
    snprintf(args, sizeof args, "mint-token --secret-file '%s' --sub 'a:b'", keyfile);
    CHECK_EQ_INT(run_cli(args, out, sizeof out), 2);
    CHECK_EQ_INT(run_cli("--help", out, sizeof out), 0);
    static const char *flags[] = {
        "--listen",      "--data",     "--jwt-secret-file", "--max-frame",    "--max-conns",
        "--max-changes", "--max-skew", "--idle-timeout",    "--max-queue",    "--log-level",
        "--help",        "--version",  "mint-token",        "127.0.0.1:7300", "./relay.db"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        CHECK(strstr(out, flags[i]) != NULL);
    CHECK_EQ_INT(run_cli("--version", out, sizeof out), 0);
    CHECK(strncmp(out, "sync-relay ", 11) == 0);
    CHECK_EQ_INT(run_cli("--bogus 1", out, sizeof out), 2);
    CHECK_EQ_INT(run_cli("--listen nowhere", out, sizeof out), 2);
    teardown();
}

static void idle_timeout(void)
{
    static const char *extra[] = {"--idle-timeout", "400", NULL};
    wc_t a;
    knit_msg_t m;
    setup(extra);
    connect_ok(&a, wc_anon("idle", "idle-secret-0123456789"), NULL, 0);
    CHECK_OK(wc_recv(&a, 5000, &m));
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_ETIMEDOUT);
    knit_msg_free(&m);
    CHECK(wc_wait_closed(&a, 5000));
    wc_close(&a);
    teardown();
}

static void claim_merge(void)
{
    wc_t a, u;
    knit_msg_t m;
    uint64_t cur = 0;
    seen_t s;
    const char *S = "claim-secret-0123456789";
    setup(NULL);
    connect_ok(&a, wc_anon("phone", S), NULL, 0);
    push_note(&a, 1, "anon:phone", 1, "written anonymously");
    wc_close(&a);

    /* Signing in claims the anonymous namespace: merged, idempotently. */
    for (int round = 0; round < 2; round++) {
        knit_msg_t h;
        knit_sub_t sub = {"user:carol", 0};
        memset(&h, 0, sizeof h);
        h.type = KNIT_MSG_HELLO;
        h.u.hello.min_version = 1;
        h.u.hello.max_version = 1;
        h.u.hello.cred = jwt(mint("carol", wall(), 600));
        h.u.hello.claim = wc_anon("phone", S);
        h.u.hello.subs = &sub;
        h.u.hello.nsubs = 1;
        CHECK(wc_connect(&u, R.port, 0) == 0);
        CHECK_OK(wc_send(&u, &h));
        CHECK_OK(wc_recv(&u, 5000, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
        CHECK_STR(m.u.welcome.principal, "user:carol");
        knit_msg_free(&m);
        memset(&s, 0, sizeof s);
        cur = 0;
        read_catch_up(&u, &cur, collect, &s);
        CHECK_STR(s.body[1], "written anonymously");
        CHECK_EQ_INT(cur, 1); /* the second claim added nothing */
        wc_close(&u);
    }
    /* A claim with the wrong anonymous secret is refused. */
    {
        knit_msg_t h;
        memset(&h, 0, sizeof h);
        h.type = KNIT_MSG_HELLO;
        h.u.hello.min_version = 1;
        h.u.hello.max_version = 1;
        h.u.hello.cred = jwt(mint("carol", wall(), 600));
        h.u.hello.claim = wc_anon("phone", "not-the-phone-secret-000");
        CHECK(wc_connect(&u, R.port, 0) == 0);
        CHECK_OK(wc_send(&u, &h));
        CHECK_OK(wc_recv(&u, 5000, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
        CHECK_EQ_INT(m.u.error.code, KNIT_EAUTH);
        knit_msg_free(&m);
        wc_close(&u);
    }
    teardown();
}

static int log_has(const char *needle);

/* HELLO of cred (a JWT) claiming claim, subscribed to ns; the first answer. */
static void hello_claim(wc_t *u, knit_cred_t cred, knit_cred_t claim, const char *ns, knit_msg_t *m)
{
    knit_msg_t h;
    knit_sub_t sub = {ns, 0};
    memset(&h, 0, sizeof h);
    h.type = KNIT_MSG_HELLO;
    h.u.hello.min_version = 1;
    h.u.hello.max_version = 1;
    h.u.hello.cred = cred;
    h.u.hello.claim = claim;
    h.u.hello.subs = ns ? &sub : NULL;
    h.u.hello.nsubs = ns ? 1 : 0;
    CHECK(wc_connect(u, R.port, 0) == 0);
    CHECK_OK(wc_send(u, &h));
    CHECK_OK(wc_recv(u, 5000, m));
}

/* After a claim, the anonymous id is sealed: the anonymous session still
** open is ended, the anonymous credential opens no session, another
** account's claim is refused and merges nothing, and the same account's
** claim again still works. */
static void claim_sealed(void)
{
    wc_t a, u, v;
    knit_msg_t m;
    knit_cred_t none;
    uint64_t cur = 0;
    seen_t s;
    const char *S = "sealed-secret-0123456789";
    memset(&none, 0, sizeof none);
    setup(NULL);
    connect_ok(&a, wc_anon("tablet", S), "anon:tablet", 0);
    push_note(&a, 1, "anon:tablet", 1, "written anonymously");

    hello_claim(&u, jwt(mint("alice", wall(), 600)), wc_anon("tablet", S), "user:alice", &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    memset(&s, 0, sizeof s);
    read_catch_up(&u, &cur, collect, &s);
    CHECK_STR(s.body[1], "written anonymously");
    wc_close(&u);
    /* The anonymous session that was open is told and closed. */
    CHECK_OK(wc_recv_type(&a, 5000, KNIT_MSG_ERROR, &m));
    CHECK_EQ_INT(m.u.error.code, KNIT_EAUTH);
    CHECK(strstr(m.u.error.message, "sealed") != NULL);
    knit_msg_free(&m);
    wc_close(&a);

    /* Bob holds the same anonymous credential: his claim is refused. */
    hello_claim(&v, jwt(mint("bob", wall(), 600)), wc_anon("tablet", S), "user:bob", &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EAUTH);
    CHECK(strstr(m.u.error.message, "claim refused") != NULL);
    CHECK(strstr(m.u.error.message, "another account") != NULL);
    knit_msg_free(&m);
    wc_close(&v);
    /* Bob's account got nothing. */
    connect_ok(&v, jwt(mint("bob", wall(), 600)), "user:bob", 0);
    memset(&s, 0, sizeof s);
    cur = 0;
    read_catch_up(&v, &cur, collect, &s);
    CHECK_EQ_INT(cur, 0);
    wc_close(&v);

    /* The anonymous credential alone can no longer open a session. */
    hello_claim(&a, wc_anon("tablet", S), none, "anon:tablet", &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m.u.error.code, KNIT_EAUTH);
    CHECK(strstr(m.u.error.message, "sealed") != NULL);
    knit_msg_free(&m);
    wc_close(&a);

    /* Alice signs in again with the same claim: fine, nothing new. */
    hello_claim(&u, jwt(mint("alice", wall(), 600)), wc_anon("tablet", S), "user:alice", &m);
    CHECK_EQ_INT(m.type, KNIT_MSG_WELCOME);
    knit_msg_free(&m);
    memset(&s, 0, sizeof s);
    cur = 0;
    read_catch_up(&u, &cur, collect, &s);
    CHECK_EQ_INT(cur, 1);
    wc_close(&u);
    /* The refusal is logged, in the SQLite or the PostgreSQL store's words. */
    CHECK(log_has("refused: anon:tablet is sealed to another account") ||
          log_has("refused: anon:tablet was claimed by another account"));
    teardown();
}

/* ---------------------------------------------------------------------- */
/* Limits found by attack                                                   */

/* 1 if the relay's log holds needle. */
static int log_has(const char *needle)
{
    static char buf[1 << 20];
    FILE *f = fopen(logpath, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* A PING padded with an unknown key to `size` bytes of payload: valid (the
** relay ignores keys it does not know, PROTOCOL section 10). */
static uint8_t *big_ping(size_t size, size_t *n)
{
    size_t pad = size - 12;
    uint8_t *p = malloc(4 + size);
    CHECK(p != NULL);
    p[0] = (uint8_t)(size >> 24), p[1] = (uint8_t)(size >> 16);
    p[2] = (uint8_t)(size >> 8), p[3] = (uint8_t)size;
    /* {0: 8, 1: 7, 100: h'00..'} */
    static const uint8_t head[] = {0xa3, 0x00, 0x08, 0x01, 0x07, 0x18, 0x64, 0x5a};
    memcpy(p + 4, head, sizeof head);
    p[12] = (uint8_t)(pad >> 24), p[13] = (uint8_t)(pad >> 16);
    p[14] = (uint8_t)(pad >> 8), p[15] = (uint8_t)pad;
    memset(p + 16, 0x5a, pad);
    *n = 4 + size;
    return p;
}

/* Each connection sends one 15 MiB PING and stays open: the relay must not
** keep a 15 MiB buffer per connection for the rest of its life. */
static void big_frames_released(void)
{
    enum { NCONN = 10, SIZE = 15 * 1024 * 1024 };
    wc_t w[NCONN];
    knit_msg_t m;
    size_t n;
    uint8_t *ping = big_ping(SIZE, &n);
    long before, after;
#ifdef __SANITIZE_ADDRESS__
    /* ASan keeps freed memory in quarantine; the relay must return it. */
    {
        static char opts[512];
        const char *o = getenv("ASAN_OPTIONS");
        snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0", o ? o : "", o && *o ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
#endif
    setup(NULL);
    for (int i = 0; i < NCONN; i++) {
        char id[32];
        snprintf(id, sizeof id, "big%d", i);
        connect_ok(&w[i], wc_anon(id, "big-secret-0123456789"), NULL, 0);
    }
    before = relay_rss_kb(&R);
    for (int i = 0; i < NCONN; i++) {
        CHECK_OK(wc_send_raw(&w[i], ping, n));
        CHECK_OK(wc_recv_type(&w[i], 20000, KNIT_MSG_PONG, &m));
        CHECK_EQ_INT(m.type, KNIT_MSG_PONG);
        knit_msg_free(&m);
    }
    after = relay_rss_kb(&R);
    fprintf(stderr, "relay RSS %ld KiB before %d big PINGs, %ld KiB after (all still open)\n",
            before, NCONN, after);
    /* Kept, the buffers would be NCONN * 15 MiB = 150 MiB. */
    CHECK(before > 0 && after > 0);
    CHECK(after - before < 64 * 1024);
    for (int i = 0; i < NCONN; i++)
        wc_close(&w[i]);
    free(ping);
    teardown();
}

/* Bytes trickled into a frame that never ends are not activity: the idle
** timeout still ends the session. */
static void trickle_not_activity(void)
{
    static const char *extra[] = {"--idle-timeout", "500", NULL};
    static const uint8_t part[] = {0x00, 0x00, 0x10, 0x00, 0xa2, 0x00, 0x08, 0x01};
    wc_t a;
    knit_msg_t m;
    int got = 0;
    uint64_t t0;
    setup(extra);
    connect_ok(&a, wc_anon("trickle", "trickle-secret-0123456789"), NULL, 0);
    t0 = wall();
    /* One byte every 100 ms for up to 4 s: without the rule, each byte would
    ** restart the 500 ms idle timer and the session would live on. */
    for (size_t i = 0; i < 40 && !got; i++) {
        CHECK_OK(wc_send_raw(&a, &part[i % sizeof part], 1));
        int rc = wc_recv(&a, 100, &m);
        if (rc == 0) {
            if (m.type == KNIT_MSG_ERROR) {
                CHECK_EQ_INT(m.u.error.code, KNIT_ETIMEDOUT);
                got = 1;
            }
            knit_msg_free(&m);
        }
    }
    CHECK(got);
    CHECK(wall() - t0 < 2500);
    wc_close(&a);
    teardown();
}

/* --max-conns-per-addr: the next connection from the address is refused;
** one closing makes room again. */
static void per_address_cap(void)
{
    static const char *extra[] = {"--max-conns-per-addr", "3", NULL};
    wc_t w[3], x;
    setup(extra);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "pa%d", i);
        connect_ok(&w[i], wc_anon(id, "pa-secret-0123456789ab"), NULL, 0);
    }
    expect_error_closed(&x, wc_anon("pa9", "pa-secret-0123456789ab"), NULL, KNIT_EBUSY);
    CHECK(log_has("connections from 127.0.0.1 already"));
    wc_close(&w[0]);
    usleep(200 * 1000);
    connect_ok(&x, wc_anon("pa9", "pa-secret-0123456789ab"), NULL, 0);
    wc_close(&x);
    for (int i = 1; i < 3; i++)
        wc_close(&w[i]);
    teardown();
}

/* --max-anon-sessions: anonymous sessions past the cap are refused, a
** signed-in user still gets in. */
static void anon_session_cap(void)
{
    static const char *extra[] = {"--max-anon-sessions", "2", NULL};
    wc_t a, b, c, u;
    setup(extra);
    connect_ok(&a, wc_anon("as1", "as-secret-0123456789ab"), NULL, 0);
    connect_ok(&b, wc_anon("as2", "as-secret-0123456789ab"), NULL, 0);
    expect_error_closed(&c, wc_anon("as3", "as-secret-0123456789ab"), NULL, KNIT_EBUSY);
    connect_ok(&u, jwt(mint("alice", wall(), 600)), NULL, 0);
    wc_close(&a);
    usleep(200 * 1000);
    connect_ok(&c, wc_anon("as3", "as-secret-0123456789ab"), NULL, 0);
    wc_close(&b);
    wc_close(&c);
    wc_close(&u);
    teardown();
}

/* --anon-registrations-per-min: new ids past the bucket are refused; ids
** already registered are not counted. */
static void anon_registration_rate(void)
{
    static const char *extra[] = {"--anon-registrations-per-min", "3", NULL};
    wc_t w;
    setup(extra);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "ar%d", i);
        connect_ok(&w, wc_anon(id, "ar-secret-0123456789ab"), NULL, 0);
        wc_close(&w);
    }
    expect_error_closed(&w, wc_anon("ar3", "ar-secret-0123456789ab"), NULL, KNIT_EBUSY);
    connect_ok(&w, wc_anon("ar1", "ar-secret-0123456789ab"), NULL, 0); /* known: fine */
    wc_close(&w);
    teardown();
}

KNIT_TESTS(T(auth_refusals), T(malformed_inputs), T(future_stamps), T(live_fanout),
           T(catch_up_once), T(slow_consumer), T(sigkill_durability), T(sigterm_clean),
           T(mint_token), T(idle_timeout), T(claim_merge), T(big_frames_released),
           T(trickle_not_activity), T(per_address_cap), T(anon_session_cap),
           T(anon_registration_rate), T(claim_sealed))
