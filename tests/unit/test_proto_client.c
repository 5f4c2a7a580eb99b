/*
** test_proto_client.c: the sync client's protocol engine (transport/
** proto_client.c), driven without sockets or clocks.  A fake relay encodes
** messages with the real codec and feeds them in; what the engine sends is
** decoded and checked; fake replica callbacks record what it asked for.
*/
#include "test.h"

#include "alloc.h"
#include "codec.h"
#include "frame.h"
#include "proto_client.h"

/* ---------------------------------------------------------------------- */
/* Fixture                                                                  */

#define MAXREC 256

typedef struct fake_s {
    char ready_principal[128];                     /* last io.ready */
    int nready;                                    /* calls */
    uint64_t cursor;                               /* what io.cursor answers */
    int napply;                                    /* io.apply calls */
    uint64_t apply_from[MAXREC], apply_to[MAXREC]; /* their ranges */
    size_t apply_n[MAXREC];                        /* their change counts */
    int apply_rc;                                  /* what io.apply returns */
    int nacked;                                    /* io.acked calls */
    uint64_t acked[MAXREC];                        /* their versions */
    int nev;                                       /* events */
    knit_client_event_t ev[MAXREC];                /* copies (message pointers dropped) */
    int nsynced;                                   /* SYNCED events */
    knit_client_t *c;       /* the engine, for checks made inside callbacks */
    char order[16];         /* replica calls in order: R ready, M claimed (move), C cursor */
    int norder;             /* length of order */
    int nclaimed;           /* io.claimed calls */
    int claimed_rc;         /* what io.claimed returns */
    char claimed_from[128]; /* its last `from` */
    char claimed_to[128];   /* and `to` */
    int claimed_state;      /* the engine's state during io.claimed */
    int claimed_could_read; /* push_room said yes during io.claimed */
    char err_claim[128];    /* claim of the last EV_ERROR ("" when NULL) */
    int nrejected;          /* io.rejected calls */
    size_t rejected_n;      /* the last one's refusals */
    size_t rejected_first;  /* its first refused change */
    int rejected_rc;        /* what io.rejected returns */
    int busy_acks;          /* io.acked answers KNIT_EBUSY this many more times */
    int nbusy_acks;         /* and did */
    int busy_saves;         /* io.save_cursor answers KNIT_EBUSY this many more times */
    int nsave;              /* io.save_cursor calls */
    uint64_t saved_to;      /* the last cursor it saved */
} fake_t;

static int g_with_rejected; /* make_with installs io.rejected */
static int g_with_save;     /* make_with installs io.save_cursor */

static void note(fake_t *f, char what)
{
    if (f->norder < (int)sizeof f->order - 1)
        f->order[f->norder++] = what;
}

static int f_rejected(void *d, const char *ns, const knit_batch_t *b, const knit_reason_t *r,
                      size_t n, const knit_batch_t *state)
{
    fake_t *f = d;
    (void)ns;
    (void)b;
    (void)state;
    f->nrejected++;
    f->rejected_n = n;
    f->rejected_first = n ? (size_t)r[0].change : SIZE_MAX;
    return f->rejected_rc;
}

static int f_cursor(void *d, const char *ns, uint64_t *seq)
{
    fake_t *f = d;
    (void)ns;
    note(f, 'C');
    *seq = f->cursor;
    return 0;
}

static int f_ready(void *d, const knit_welcome_t *w)
{
    fake_t *f = d;
    snprintf(f->ready_principal, sizeof f->ready_principal, "%s", w->principal);
    f->nready++;
    note(f, 'R');
    return 0;
}

static int f_claimed(void *d, const char *from, const char *to)
{
    fake_t *f = d;
    uint64_t after;
    size_t max;
    note(f, 'M');
    f->nclaimed++;
    snprintf(f->claimed_from, sizeof f->claimed_from, "%s", from);
    snprintf(f->claimed_to, sizeof f->claimed_to, "%s", to);
    f->claimed_state = knit_client_state(f->c);
    f->claimed_could_read = knit_client_push_room(f->c, &after, &max);
    return f->claimed_rc;
}

static int f_apply(void *d, const char *ns, uint64_t from, uint64_t to, const knit_batch_t *b)
{
    fake_t *f = d;
    (void)ns;
    if (f->apply_rc)
        return f->apply_rc;
    CHECK(f->napply < MAXREC);
    f->apply_from[f->napply] = from;
    f->apply_to[f->napply] = to;
    f->apply_n[f->napply] = b->nchanges;
    f->napply++;
    return 0;
}

static int f_save_cursor(void *d, const char *ns, uint64_t from, uint64_t to)
{
    fake_t *f = d;
    (void)ns;
    (void)from;
    f->nsave++;
    if (f->busy_saves > 0) {
        f->busy_saves--;
        return KNIT_EBUSY;
    }
    f->saved_to = to;
    return 0;
}

static int f_acked(void *d, uint64_t v)
{
    fake_t *f = d;
    if (f->busy_acks > 0) {
        f->busy_acks--;
        f->nbusy_acks++;
        return KNIT_EBUSY;
    }
    CHECK(f->nacked < MAXREC);
    if (f->nacked)
        CHECK(v > f->acked[f->nacked - 1]); /* the watermark only moves forward */
    f->acked[f->nacked++] = v;
    return 0;
}

static void f_event(void *d, const knit_client_event_t *ev)
{
    fake_t *f = d;
    if (f->nev < MAXREC) {
        f->ev[f->nev] = *ev;
        f->ev[f->nev].message = NULL;
        f->nev++;
    }
    if (ev->type == KNIT_CLIENT_EV_SYNCED)
        f->nsynced++;
    if (ev->type == KNIT_CLIENT_EV_ERROR)
        snprintf(f->err_claim, sizeof f->err_claim, "%s", ev->claim ? ev->claim : "");
}

static const knit_site_t SITE = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}};

static const knit_cred_t ANON_CRED = {KNIT_CRED_ANON, "device1", "0123456789abcdef0123", NULL};
static const knit_cred_t JWT_CRED = {KNIT_CRED_JWT, NULL, NULL, "aaa.bbb.ccc"};
static const knit_cred_t CLAIM = {KNIT_CRED_ANON, "device9", "secret-of-device9-xyz", NULL};

/* An engine with credential cred and claim (NULL: none). */
static knit_client_t *make_with(fake_t *f, uint64_t acked, uint64_t seed, const knit_cred_t *cred,
                                const knit_cred_t *claim)
{
    knit_client_config_t cfg;
    knit_client_io_t io;
    knit_client_t *c = NULL;
    memset(f, 0, sizeof *f);
    memset(&cfg, 0, sizeof cfg);
    cfg.site = SITE;
    cfg.cred = *cred;
    if (claim)
        cfg.claim = *claim;
    cfg.agent = "test";
    cfg.acked = acked;
    cfg.seed = seed;
    cfg.max_inflight = 4;
    cfg.log_level = 0;
    memset(&io, 0, sizeof io);
    io.cursor = f_cursor;
    io.ready = f_ready;
    io.claimed = f_claimed;
    io.apply = f_apply;
    io.acked = f_acked;
    io.event = f_event;
    io.rejected = g_with_rejected ? f_rejected : NULL;
    io.save_cursor = g_with_save ? f_save_cursor : NULL;
    io.data = f;
    CHECK_OK(knit_client_new(&cfg, &io, &c));
    f->c = c;
    return c;
}

static knit_client_t *make(fake_t *f, uint64_t acked, uint64_t seed)
{
    return make_with(f, acked, seed, &ANON_CRED, NULL);
}

/* Feeds one message as the relay would send it. */
static void feed(knit_client_t *c, const knit_msg_t *m, uint64_t now)
{
    knit_buf_t b = {NULL, 0, 0};
    CHECK_OK(knit_msg_encode(m, NULL, &b));
    knit_client_input(c, b.p, b.len, now);
    knit_buf_free(&b);
}

/* Decodes everything the engine queued; returns the count. */
static size_t take(knit_client_t *c, knit_msg_t *out, size_t max)
{
    knit_buf_t b = {NULL, 0, 0};
    size_t n = 0, off = 0;
    knit_client_take_output(c, &b);
    while (off < b.len) {
        uint32_t len;
        CHECK(b.len - off >= 4);
        len = knit_frame_length(b.p + off);
        CHECK(b.len - off - 4 >= len);
        CHECK(n < max);
        CHECK_OK(knit_msg_decode(b.p + off + 4, len, NULL, &out[n], NULL));
        n++;
        off += 4 + len;
    }
    knit_buf_free(&b);
    return n;
}

static void free_msgs(knit_msg_t *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        knit_msg_free(&m[i]);
}

static void welcome(knit_client_t *c, const char *principal, uint64_t max_changes, uint64_t now)
{
    knit_msg_t m;
    const char *granted[1] = {principal};
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_WELCOME;
    m.u.welcome.version = 1;
    m.u.welcome.principal = principal;
    m.u.welcome.granted = granted;
    m.u.welcome.ngranted = 1;
    m.u.welcome.clock = (uint64_t)1700000000000 << 16;
    m.u.welcome.limits.max_frame = 1 << 24;
    m.u.welcome.limits.max_changes = max_changes;
    m.u.welcome.limits.idle_ms = 60000;
    m.u.welcome.limits.max_drift_ms = 300000;
    feed(c, &m, now);
}

/* Start, connect, HELLO, WELCOME: a READY engine with its SUBSCRIBE taken. */
static knit_client_t *ready(fake_t *f, uint64_t acked, uint64_t max_changes)
{
    knit_client_t *c = make(f, acked, 42);
    knit_msg_t m[8];
    CHECK_OK(knit_client_start(c, 0));
    CHECK(knit_client_want_connect(c, 0));
    CHECK_OK(knit_client_connected(c, 0));
    CHECK_EQ_INT(take(c, m, 8), 1);
    free_msgs(m, 1);
    welcome(c, "user:alice", max_changes, 1);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_SUBSCRIBE);
    free_msgs(m, 1);
    return c;
}

static void deltas(knit_client_t *c, uint64_t from, uint64_t to, size_t nchanges, int caught_up,
                   uint64_t now);

/* Marks the one subscription caught up (an empty catch-up DELTAS). */
static void catch_up(knit_client_t *c, fake_t *f, uint64_t now)
{
    deltas(c, f->cursor, f->cursor, 0, 1, now);
}

/* A batch of `units` units of `per` changes each in namespace ns (and, if
** ns2 is not NULL, every third change of each unit in ns2), versions
** first, first+1, ... */
static knit_batch_t *mkbatch(const char *ns, const char *ns2, size_t units, size_t per,
                             uint64_t first)
{
    knit_batch_t *b = NULL;
    uint32_t nsi, ns2i = 0, site, tab;
    const char *cols[1] = {"v"};
    uint8_t kinds[1] = {0};
    static int64_t key = 0;
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, ns, &nsi));
    if (ns2)
        CHECK_OK(knit_batch_ns(b, ns2, &ns2i));
    CHECK_OK(knit_batch_site(b, &SITE, &site));
    CHECK_OK(knit_batch_table(b, "t", 1, 1, cols, kinds, &tab));
    for (size_t u = 0; u < units; u++) {
        CHECK_OK(knit_batch_begin(b, first + u));
        for (size_t i = 0; i < per; i++) {
            knit_change_t ch;
            knit_value_t pk;
            memset(&ch, 0, sizeof ch);
            memset(&pk, 0, sizeof pk);
            pk.type = KNIT_INTEGER;
            pk.u.i = ++key;
            ch.ns = ns2 && i % 3 == 2 ? ns2i : nsi;
            ch.table = tab;
            ch.col = 1;
            ch.site = site;
            ch.pk = &pk;
            ch.cl = 1;
            ch.hlc = ((uint64_t)1700000000000 << 16) + (uint64_t)key;
            ch.value.type = KNIT_INTEGER;
            ch.value.u.i = (int64_t)i;
            CHECK_OK(knit_batch_add(b, &ch));
        }
    }
    return b;
}

static void deltas(knit_client_t *c, uint64_t from, uint64_t to, size_t nchanges, int caught_up,
                   uint64_t now)
{
    knit_msg_t m;
    knit_batch_t *b = nchanges ? mkbatch("user:alice", NULL, 1, nchanges, to) : NULL;
    if (!b)
        CHECK_OK(knit_batch_new(&b));
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_DELTAS;
    m.u.deltas.ns = "user:alice";
    m.u.deltas.from = from;
    m.u.deltas.to = to;
    m.u.deltas.caught_up = caught_up;
    m.u.deltas.batch = b;
    feed(c, &m, now);
    knit_batch_free(b);
}

/* An ACK naming its sequences: the push took first..last. */
static void ack_seqs(knit_client_t *c, uint64_t id, uint64_t first, uint64_t last, uint64_t now)
{
    knit_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_ACK;
    m.u.ack.id = id;
    m.u.ack.durable = 1;
    m.u.ack.first_seq = first;
    m.u.ack.last_seq = last;
    feed(c, &m, now);
}

/* An ACK without sequences (an older relay's). */
static void ack(knit_client_t *c, uint64_t id, uint64_t now)
{
    ack_seqs(c, id, 0, 0, now);
}

static void reject(knit_client_t *c, uint64_t id, int code, uint64_t now)
{
    knit_msg_t m;
    knit_reason_t r = {-1, code, "no"};
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_REJECT;
    m.u.reject.id = id;
    m.u.reject.reasons = &r;
    m.u.reject.nreasons = 1;
    feed(c, &m, now);
}

/* Hands the engine a batch when it asks; returns 1 if it asked. */
static int offer(knit_client_t *c, knit_batch_t *b, uint64_t covers, uint64_t now)
{
    uint64_t after;
    size_t max;
    if (!knit_client_push_room(c, &after, &max)) {
        knit_batch_free(b);
        return 0;
    }
    CHECK_OK(knit_client_push(c, b, covers, now));
    return 1;
}

static int last_event(const fake_t *f, knit_client_event_type_t type)
{
    for (int i = f->nev - 1; i >= 0; i--)
        if (f->ev[i].type == type)
            return i;
    return -1;
}

/* ---------------------------------------------------------------------- */
/* Tests                                                                    */

static void handshake(void)
{
    fake_t f;
    knit_client_t *c = make(&f, 0, 1);
    knit_msg_t m[8];

    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_IDLE);
    CHECK(!knit_client_want_connect(c, 0));
    CHECK_OK(knit_client_start(c, 100));
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_WAITING);
    CHECK(knit_client_want_connect(c, 100));
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CONNECTING);
    CHECK_OK(knit_client_connected(c, 101));
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_HELLO);
    CHECK_EQ_INT(m[0].u.hello.min_version, KNIT_PROTO_VERSION_MIN);
    CHECK_EQ_INT(m[0].u.hello.cred.kind, KNIT_CRED_ANON);
    CHECK_STR(m[0].u.hello.cred.id, "device1");
    CHECK_STR(m[0].u.hello.agent, "test");
    CHECK(memcmp(m[0].u.hello.site.b, SITE.b, 16) == 0);
    CHECK_EQ_INT(m[0].u.hello.nsubs, 0);
    free_msgs(m, 1);

    /* Nothing is pushed or applied before WELCOME. */
    uint64_t after;
    size_t max;
    CHECK(!knit_client_push_room(c, &after, &max));
    f.cursor = 17;
    welcome(c, "user:alice", 1000, 102);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    CHECK_EQ_INT(f.nready, 1);
    CHECK_STR(f.ready_principal, "user:alice");
    CHECK_STR(knit_client_principal(c), "user:alice");
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_SUBSCRIBE);
    CHECK_EQ_INT(m[0].u.subscribe.nsubs, 1);
    CHECK_STR(m[0].u.subscribe.subs[0].ns, "user:alice");
    CHECK_EQ_INT(m[0].u.subscribe.subs[0].cursor, 17);
    free_msgs(m, 1);
    /* The session starts by looking for local changes, at most the
    ** relay's limit of them. */
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 0);
    CHECK_EQ_INT(max, 4 * 1000); /* a push for each slot of the window */
    knit_client_free(c);
}

static void push_and_ack(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 5, 1000);
    knit_msg_t m[8];
    uint64_t after;
    size_t max;

    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 5);
    CHECK_OK(knit_client_push(c, mkbatch("user:alice", NULL, 3, 2, 6), 9, 10));
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_PUSH);
    CHECK_STR(m[0].u.push.ns, "user:alice");
    CHECK_EQ_INT(m[0].u.push.batch->nchanges, 6);
    /* Its three units travel as one (design note 11), the last version. */
    CHECK_EQ_INT(m[0].u.push.batch->ntxns, 1);
    CHECK_EQ_INT(m[0].u.push.batch->txns[0].version, 8);
    uint64_t id = m[0].u.push.id;
    free_msgs(m, 1);
    CHECK_EQ_INT(f.nacked, 0);
    /* The next read starts after what is in flight. */
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 9);
    knit_client_push_none(c, 9, 11);
    catch_up(c, &f, 11);
    CHECK_EQ_INT(f.nsynced, 0); /* the push is not acknowledged yet */
    ack(c, id, 12);
    CHECK_EQ_INT(f.nacked, 1);
    CHECK_EQ_INT(f.acked[0], 9);
    CHECK_EQ_INT(f.nsynced, 1);
    /* A local change un-syncs; reading it and finding nothing re-syncs. */
    knit_client_local_changed(c);
    CHECK(knit_client_push_room(c, &after, &max));
    knit_client_push_none(c, 12, 13);
    CHECK_EQ_INT(f.nsynced, 2);
    knit_client_free(c);
}

static void ack_in_order(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 1000);
    knit_msg_t m[8];
    uint64_t id1, id2;

    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 3, 1), 1, 10));
    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 3, 2), 2, 10));
    CHECK_EQ_INT(take(c, m, 8), 2);
    id1 = m[0].u.push.id;
    id2 = m[1].u.push.id;
    CHECK(id2 > id1);
    free_msgs(m, 2);
    /* The first is refused for now, the second acknowledged: nothing may
    ** be marked acknowledged, since version 1 is not durable. */
    reject(c, id1, KNIT_EBUSY, 20);
    ack(c, id2, 21);
    CHECK_EQ_INT(f.nacked, 0);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    /* The refused push goes again after its retry delay. */
    CHECK_EQ_INT(take(c, m, 8), 0);
    uint64_t next = knit_client_tick(c, 22);
    CHECK(next > 22 && next <= 20 + 500);
    knit_client_tick(c, next);
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_PUSH);
    CHECK_EQ_INT(m[0].u.push.batch->nchanges, 3);
    uint64_t id3 = m[0].u.push.id;
    CHECK(id3 > id2);
    free_msgs(m, 1);
    ack(c, id3, next + 1);
    CHECK_EQ_INT(f.nacked, 1);
    CHECK_EQ_INT(f.acked[0], 2); /* both are durable now */
    knit_client_free(c);
}

static void answers_out_of_order(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 1000);
    knit_msg_t m[8];

    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 1, 1), 1, 10));
    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 1, 2), 2, 10));
    CHECK_EQ_INT(take(c, m, 8), 2);
    uint64_t id2 = m[1].u.push.id;
    free_msgs(m, 2);
    /* A relay answers in order; an ACK for the second first is a
    ** protocol violation. */
    ack(c, id2, 11);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    CHECK_EQ_INT(f.nacked, 0);
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m[0].u.error.code, KNIT_EPROTO);
    free_msgs(m, 1);
    knit_client_free(c);
}

static void reject_permanent(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 3, 1000);
    knit_msg_t m[8];
    uint64_t after;
    size_t max;
    int e;

    CHECK(offer(c, mkbatch("user:alice", NULL, 2, 2, 4), 5, 10));
    CHECK_EQ_INT(take(c, m, 8), 1);
    uint64_t id = m[0].u.push.id;
    free_msgs(m, 1);
    reject(c, id, KNIT_ESCHEMA, 11);
    e = last_event(&f, KNIT_CLIENT_EV_ERROR);
    CHECK(e >= 0);
    CHECK_EQ_INT(f.ev[e].code, KNIT_ESCHEMA);
    CHECK(f.ev[e].push);
    CHECK(f.ev[e].fatal);
    /* Pulling goes on; pushing stops; nothing is acknowledged. */
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    knit_client_local_changed(c);
    CHECK(!knit_client_push_room(c, &after, &max));
    knit_client_tick(c, 40000);
    CHECK_EQ_INT(take(c, m, 8), 1); /* only a PING */
    CHECK_EQ_INT(m[0].type, KNIT_MSG_PING);
    free_msgs(m, 1);
    CHECK_EQ_INT(f.nacked, 0);
    catch_up(c, &f, 40001);
    CHECK_EQ_INT(f.nsynced, 0);
    /* The next session reads them again from the durable watermark. */
    knit_client_lost(c, 40002, KNIT_ECLOSED, NULL);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_WAITING);
    knit_client_tick(c, 200000);
    CHECK(knit_client_want_connect(c, 200000));
    CHECK_OK(knit_client_connected(c, 200000));
    CHECK_EQ_INT(take(c, m, 8), 1);
    free_msgs(m, 1);
    welcome(c, "user:alice", 1000, 200001);
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 3);
    knit_client_free(c);
}

/* A clock-skew refusal is retried, and reaches the user as an error
** event (not only a log line at info). */
static void reject_clock_skew_reported(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 3, 1000);
    knit_msg_t m[8];
    int e, pushed = 0;
    size_t k;

    CHECK(offer(c, mkbatch("user:alice", NULL, 2, 2, 4), 5, 10));
    CHECK_EQ_INT(take(c, m, 8), 1);
    uint64_t id = m[0].u.push.id;
    free_msgs(m, 1);
    reject(c, id, KNIT_ECLOCKSKEW, 11);
    e = last_event(&f, KNIT_CLIENT_EV_ERROR);
    CHECK(e >= 0);
    CHECK_EQ_INT(f.ev[e].code, KNIT_ECLOCKSKEW);
    CHECK(f.ev[e].push);
    CHECK(!f.ev[e].fatal);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    /* Retried later, not dropped. */
    knit_client_tick(c, 60000);
    k = take(c, m, 8);
    for (size_t i = 0; i < k; i++)
        pushed += m[i].type == KNIT_MSG_PUSH;
    free_msgs(m, k);
    CHECK_EQ_INT(pushed, 1);
    CHECK_EQ_INT(f.nacked, 0);
    knit_client_free(c);
}

static void reject_too_big_splits(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 1000);
    knit_msg_t m[16];
    size_t n, total = 0;
    uint64_t after;
    size_t max;

    CHECK(offer(c, mkbatch("user:alice", NULL, 4, 3, 1), 4, 10));
    CHECK_EQ_INT(take(c, m, 16), 1);
    uint64_t id = m[0].u.push.id;
    free_msgs(m, 1);
    reject(c, id, KNIT_ETOOBIG, 11);
    n = take(c, m, 16);
    CHECK(n >= 2);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(m[i].type, KNIT_MSG_PUSH);
        CHECK(m[i].u.push.batch->nchanges <= 6);
        total += m[i].u.push.batch->nchanges;
    }
    CHECK_EQ_INT(total, 12);
    for (size_t i = 0; i < n; i++)
        ack(c, m[i].u.push.id, 12 + i);
    free_msgs(m, n);
    CHECK(f.nacked >= 1);
    CHECK_EQ_INT(f.acked[f.nacked - 1], 4);
    /* Later reads ask for smaller pushes. */
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK(max <= 4 * 6);
    knit_client_free(c);
}

static void big_unit_pieces(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 10, 4); /* the relay takes 4 changes per push */
    knit_msg_t m[16];
    size_t n;

    /* Unit 11 has 3 changes, unit 12 has 10: more than one push holds. */
    knit_batch_t *b = mkbatch("user:alice", NULL, 1, 3, 11);
    knit_batch_t *b2 = mkbatch("user:alice", NULL, 1, 10, 12);
    CHECK_OK(knit_batch_begin(b, 12));
    for (size_t i = 0; i < b2->nchanges; i++)
        CHECK_OK(knit_batch_add(b, &b2->changes[i]));
    knit_batch_free(b2);
    CHECK(offer(c, b, 12, 10));
    /* The window (4) holds all four pushes: 3, then 4 + 4 + 2 of unit 12. */
    n = take(c, m, 16);
    CHECK_EQ_INT(n, 4);
    CHECK_EQ_INT(m[0].u.push.batch->nchanges, 3);
    CHECK_EQ_INT(m[1].u.push.batch->nchanges, 4);
    CHECK_EQ_INT(m[2].u.push.batch->nchanges, 4);
    CHECK_EQ_INT(m[3].u.push.batch->nchanges, 2);
    /* Acknowledging pieces of unit 12 does not cover it... */
    ack(c, m[0].u.push.id, 11);
    ack(c, m[1].u.push.id, 12);
    ack(c, m[2].u.push.id, 13);
    CHECK_EQ_INT(f.nacked, 1);
    CHECK_EQ_INT(f.acked[0], 11);
    /* ...until its last piece. */
    ack(c, m[3].u.push.id, 14);
    CHECK_EQ_INT(f.nacked, 2);
    CHECK_EQ_INT(f.acked[1], 12);
    free_msgs(m, n);
    knit_client_free(c);
}

static void window_bounds_inflight(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 2); /* 2 changes per push */
    knit_msg_t m[16];
    uint64_t after;
    size_t max;

    /* 10 units of 2: five pushes, at most four in flight. */
    CHECK(offer(c, mkbatch("user:alice", NULL, 5, 2, 1), 5, 10));
    CHECK_EQ_INT(take(c, m, 16), 4);
    CHECK(!knit_client_push_room(c, &after, &max)); /* one still queued */
    ack(c, m[0].u.push.id, 11);
    uint64_t id2 = m[1].u.push.id;
    free_msgs(m, 4);
    CHECK_EQ_INT(take(c, m, 16), 1); /* the fifth goes out */
    free_msgs(m, 1);
    CHECK(!knit_client_push_room(c, &after, &max)); /* four in flight again */
    ack(c, id2, 12);
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 5);
    knit_client_free(c);
}

static void ungranted_ceiling(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 1000);
    knit_msg_t m[8];

    /* Units 1..3; in each, every third change is in anon:old, which this
    ** session may not write. */
    CHECK(offer(c, mkbatch("user:alice", "anon:old", 3, 3, 1), 3, 10));
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_STR(m[0].u.push.ns, "user:alice");
    CHECK_EQ_INT(m[0].u.push.batch->nchanges, 6);
    ack(c, m[0].u.push.id, 11);
    free_msgs(m, 1);
    /* The watermark stops before unit 1, the first with such a change. */
    CHECK_EQ_INT(f.nacked, 0);
    uint64_t after;
    size_t max;
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 3); /* but this session does not read them again */
    knit_client_free(c);
}

static void deltas_and_gaps(void)
{
    fake_t f;
    knit_client_t *c;
    knit_msg_t m[8];

    memset(&f, 0, sizeof f);
    c = ready(&f, 0, 1000);
    /* The engine's cursor is what io.cursor said at WELCOME: 0. */
    deltas(c, 0, 3, 5, 0, 10);
    CHECK_EQ_INT(f.napply, 1);
    CHECK_EQ_INT(f.apply_from[0], 0);
    CHECK_EQ_INT(f.apply_to[0], 3);
    CHECK_EQ_INT(f.apply_n[0], 5);
    /* A gap: 5 > 3.  Not applied; SUBSCRIBE from 3, once. */
    deltas(c, 5, 6, 1, 0, 11);
    deltas(c, 6, 7, 1, 0, 12);
    CHECK_EQ_INT(f.napply, 1);
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_SUBSCRIBE);
    CHECK_EQ_INT(m[0].u.subscribe.subs[0].cursor, 3);
    free_msgs(m, 1);
    /* The relay restarts from 3; a replay from before the cursor is
    ** applied too (merges are idempotent). */
    deltas(c, 3, 7, 2, 1, 13);
    deltas(c, 2, 7, 2, 0, 14);
    CHECK_EQ_INT(f.napply, 3);
    /* An empty DELTAS at the cursor needs no transaction. */
    deltas(c, 7, 7, 0, 0, 15);
    CHECK_EQ_INT(f.napply, 3);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    knit_client_free(c);
}

static void apply_failure_reconnects(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 1000);
    int e;
    f.apply_rc = KNIT_EBUSY;
    deltas(c, 0, 1, 1, 0, 10);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    CHECK(knit_client_want_close(c));
    e = last_event(&f, KNIT_CLIENT_EV_ERROR);
    CHECK(e >= 0);
    CHECK_EQ_INT(f.ev[e].code, KNIT_EBUSY);
    CHECK(!f.ev[e].fatal);
    knit_client_lost(c, 11, 0, NULL);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_WAITING);
    e = last_event(&f, KNIT_CLIENT_EV_STATE);
    CHECK(f.ev[e].delay_ms <= 200);
    knit_client_free(c);
}

static void ping_pong_idle(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 1000);
    knit_msg_t m[8], p;
    /* The relay's PING is answered with its nonce. */
    memset(&p, 0, sizeof p);
    p.type = KNIT_MSG_PING;
    p.u.ping.nonce = 77;
    feed(c, &p, 1000);
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_PONG);
    CHECK_EQ_INT(m[0].u.ping.nonce, 77);
    free_msgs(m, 1);
    /* Silent for idle/2: a PING goes out. */
    uint64_t next = knit_client_tick(c, 1001);
    CHECK(next <= 1000 + 30000);
    knit_client_tick(c, 1000 + 30000);
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_PING);
    free_msgs(m, 1);
    /* The relay answering keeps the session... */
    p.type = KNIT_MSG_PONG;
    feed(c, &p, 1000 + 30001);
    knit_client_tick(c, 1000 + 60000);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    free_msgs(m, take(c, m, 8));
    /* ...and its silence for idle_ms ends it. */
    knit_client_tick(c, 1000 + 30001 + 60000);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    CHECK_EQ_INT(f.ev[last_event(&f, KNIT_CLIENT_EV_ERROR)].code, KNIT_ETIMEDOUT);
    knit_client_free(c);
}

static void handshake_timeout(void)
{
    fake_t f;
    knit_client_t *c = make(&f, 0, 3);
    knit_msg_t m[4];
    CHECK_OK(knit_client_start(c, 0));
    CHECK(knit_client_want_connect(c, 0));
    CHECK_OK(knit_client_connected(c, 5));
    free_msgs(m, take(c, m, 4));
    CHECK_EQ_INT(knit_client_tick(c, 5000), 10000);
    knit_client_tick(c, 10000);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    CHECK_EQ_INT(f.ev[last_event(&f, KNIT_CLIENT_EV_ERROR)].code, KNIT_ETIMEDOUT);
    knit_client_free(c);
}

static void backoff_full_jitter(void)
{
    for (uint64_t seed = 1; seed <= 200; seed++) {
        fake_t f;
        knit_client_t *c = make(&f, 0, seed);
        uint64_t now = 0, bound = 200, maxseen = 0;
        CHECK_OK(knit_client_start(c, 0));
        for (int attempt = 0; attempt < 12; attempt++) {
            CHECK(knit_client_want_connect(c, now));
            knit_client_lost(c, now, KNIT_EIO, "refused");
            int e = last_event(&f, KNIT_CLIENT_EV_STATE);
            uint64_t d = f.ev[e].delay_ms;
            CHECK_EQ_INT(f.ev[e].state, KNIT_CLIENT_WAITING);
            CHECK(d <= bound); /* uniform in [0, min(cap, base * 2^attempt)] */
            if (d > maxseen)
                maxseen = d;
            if (d > 0)
                CHECK(!knit_client_want_connect(c, now + d - 1)); /* not early */
            now += d;
            bound = bound * 2 > 15000 ? 15000 : bound * 2;
        }
        CHECK(maxseen > 1000); /* the delays do grow */
        knit_client_free(c);
    }
    /* A session that catches up resets the growth. */
    {
        fake_t f;
        knit_client_t *c = make(&f, 0, 9);
        knit_msg_t m[4];
        uint64_t now = 0;
        CHECK_OK(knit_client_start(c, 0));
        for (int i = 0; i < 8; i++) {
            CHECK(knit_client_want_connect(c, now));
            knit_client_lost(c, now, KNIT_EIO, "refused");
            now += 20000;
        }
        CHECK(knit_client_want_connect(c, now));
        CHECK_OK(knit_client_connected(c, now));
        free_msgs(m, take(c, m, 4));
        welcome(c, "user:alice", 100, now);
        free_msgs(m, take(c, m, 4));
        catch_up(c, &f, now);
        knit_client_lost(c, now, KNIT_ECLOSED, NULL);
        CHECK(f.ev[last_event(&f, KNIT_CLIENT_EV_STATE)].delay_ms <= 200);
        knit_client_free(c);
    }
}

static void relay_error_fatal(void)
{
    fake_t f;
    knit_client_t *c = make(&f, 0, 5);
    knit_msg_t m[4], e;
    int i;
    CHECK_OK(knit_client_start(c, 0));
    CHECK(knit_client_want_connect(c, 0));
    CHECK_OK(knit_client_connected(c, 0));
    free_msgs(m, take(c, m, 4));
    memset(&e, 0, sizeof e);
    e.type = KNIT_MSG_ERROR;
    e.u.error.code = KNIT_EAUTH;
    e.u.error.message = "wrong secret";
    feed(c, &e, 1);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    i = last_event(&f, KNIT_CLIENT_EV_ERROR);
    CHECK_EQ_INT(f.ev[i].code, KNIT_EAUTH);
    CHECK(f.ev[i].fatal);
    CHECK_EQ_INT(take(c, m, 4), 0); /* no ERROR is sent back */
    CHECK_EQ_INT(f.nready, 0);
    knit_client_lost(c, 2, 0, NULL);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_WAITING);
    knit_client_free(c);

    /* During a session, KNIT_EAUTH means the token expired: not fatal, the
    ** next connection may bring a new token. */
    c = ready(&f, 0, 100);
    e.u.error.message = "token expired";
    feed(c, &e, 10);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    i = last_event(&f, KNIT_CLIENT_EV_ERROR);
    CHECK_EQ_INT(f.ev[i].code, KNIT_EAUTH);
    CHECK(!f.ev[i].fatal);
    knit_client_lost(c, 11, 0, NULL);
    CHECK(f.ev[last_event(&f, KNIT_CLIENT_EV_STATE)].delay_ms <= 200);
    knit_client_free(c);
}

static void protocol_violations(void)
{
    static const uint8_t junk[] = {0, 0, 0, 3, 0xff, 0xff, 0xff};
    fake_t f;
    knit_client_t *c;
    knit_msg_t m[4];

    /* DELTAS before WELCOME. */
    c = make(&f, 0, 6);
    CHECK_OK(knit_client_start(c, 0));
    CHECK(knit_client_want_connect(c, 0));
    CHECK_OK(knit_client_connected(c, 0));
    free_msgs(m, take(c, m, 4));
    deltas(c, 0, 1, 1, 0, 1);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    CHECK_EQ_INT(f.napply, 0);
    CHECK_EQ_INT(take(c, m, 4), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_ERROR);
    CHECK_EQ_INT(m[0].u.error.code, KNIT_EPROTO);
    free_msgs(m, 1);
    CHECK_EQ_INT(knit_client_input(c, junk, sizeof junk, 2), KNIT_ECLOSED);
    knit_client_free(c);

    /* Garbage CBOR after WELCOME. */
    c = ready(&f, 0, 100);
    CHECK_EQ_INT(knit_client_input(c, junk, sizeof junk, 2), KNIT_ECLOSED);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    free_msgs(m, take(c, m, 4));
    knit_client_free(c);

    /* A frame longer than we accept. */
    c = ready(&f, 0, 100);
    {
        uint8_t hdr[4] = {0x7f, 0xff, 0xff, 0xff};
        CHECK_EQ_INT(knit_client_input(c, hdr, 4, 3), KNIT_ECLOSED);
        CHECK_EQ_INT(f.ev[last_event(&f, KNIT_CLIENT_EV_ERROR)].code, KNIT_ETOOBIG);
    }
    free_msgs(m, take(c, m, 4));
    knit_client_free(c);
}

static void stop_drains(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 1000);
    knit_msg_t m[4];
    uint64_t after;
    size_t max;

    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 2, 1), 1, 10));
    CHECK_EQ_INT(take(c, m, 4), 1);
    uint64_t id = m[0].u.push.id;
    free_msgs(m, 1);
    knit_client_stop(c, 20, 3000);
    /* It first looks for anything else pending... */
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    CHECK(knit_client_push_room(c, &after, &max));
    knit_client_push_none(c, 1, 21);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    /* ...waits for the ACK... */
    ack(c, id, 22);
    CHECK_EQ_INT(f.acked[f.nacked - 1], 1);
    /* ...and then closes for good. */
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    knit_client_lost(c, 23, 0, NULL);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_STOPPED);
    CHECK(!knit_client_want_connect(c, 100000));
    knit_client_free(c);

    /* Without an ACK, the grace time ends it. */
    c = ready(&f, 0, 1000);
    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 2, 1), 1, 10));
    free_msgs(m, take(c, m, 4));
    knit_client_stop(c, 20, 3000);
    knit_client_push_none(c, 1, 21);
    knit_client_tick(c, 3019);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    knit_client_tick(c, 3020);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    knit_client_lost(c, 3021, 0, NULL);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_STOPPED);
    CHECK_EQ_INT(f.nacked, 0);
    knit_client_free(c);

    /* Stopping while offline is immediate. */
    c = make(&f, 0, 1);
    CHECK_OK(knit_client_start(c, 0));
    knit_client_stop(c, 1, 3000);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_STOPPED);
    knit_client_free(c);
}

static void watermark_saved_lazily(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 0, 1000);
    uint64_t after;
    size_t max;
    CHECK(knit_client_push_room(c, &after, &max));
    knit_client_push_none(c, 40, 100);
    /* Nothing was pushed up to 40: saved within ack_flush_ms, not at once. */
    CHECK_EQ_INT(f.nacked, 0);
    uint64_t next = knit_client_tick(c, 100);
    CHECK(next <= 100 + 1000);
    knit_client_tick(c, 100 + 1000);
    CHECK_EQ_INT(f.nacked, 1);
    CHECK_EQ_INT(f.acked[0], 40);
    /* And when the connection goes. */
    knit_client_local_changed(c);
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 40);
    knit_client_push_none(c, 50, 1200);
    knit_client_lost(c, 1201, KNIT_ECLOSED, NULL);
    CHECK_EQ_INT(f.acked[f.nacked - 1], 50);
    knit_client_free(c);
}

static void reconnect_rereads(void)
{
    fake_t f;
    knit_client_t *c = ready(&f, 7, 1000);
    knit_msg_t m[4];
    uint64_t after;
    size_t max;
    CHECK(offer(c, mkbatch("user:alice", NULL, 2, 1, 8), 9, 10));
    free_msgs(m, take(c, m, 4));
    knit_client_lost(c, 11, KNIT_ECLOSED, NULL);
    /* The unacknowledged push is forgotten; it is read again. */
    uint64_t t = knit_client_tick(c, 12);
    CHECK(knit_client_want_connect(c, t));
    CHECK_OK(knit_client_connected(c, t));
    free_msgs(m, take(c, m, 4));
    welcome(c, "user:alice", 1000, t);
    free_msgs(m, take(c, m, 4));
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 7);
    CHECK_EQ_INT(f.nready, 2);
    knit_client_free(c);
}

static void alloc_failures(void)
{
    /* Fail each allocation of a push, then of applying a DELTAS: every
    ** failure leaves the engine usable, and the same step then succeeds. */
    for (long nth = 1; nth < 400; nth++) {
        fake_t f;
        knit_client_t *c = ready(&f, 0, 1000);
        knit_batch_t *b = mkbatch("user:alice", "anon:x", 3, 4, 1);
        knit_msg_t m[8];
        uint64_t after;
        size_t max;
        int rc;
        CHECK(knit_client_push_room(c, &after, &max));
        knit__alloc_fail_at(nth, 0);
        rc = knit_client_push(c, b, 3, 10);
        long used = knit__alloc_fail_at(0, 0);
        CHECK(rc == 0 || rc == KNIT_ENOMEM);
        if (rc == KNIT_ENOMEM) {
            /* Still wants the changes; give them again. */
            CHECK(knit_client_push_room(c, &after, &max));
            CHECK_EQ_INT(after, 0);
            CHECK_OK(knit_client_push(c, mkbatch("user:alice", "anon:x", 3, 4, 1), 3, 11));
        }
        size_t n = take(c, m, 8);
        CHECK(n >= 1 || rc == 0);
        for (size_t i = 0; i < n; i++)
            if (m[i].type == KNIT_MSG_PUSH)
                ack(c, m[i].u.push.id, 12);
        free_msgs(m, n);
        CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
        knit_client_free(c);
        if (rc == 0 && used < nth)
            break; /* every allocation was exercised */
    }
}

/* ---------------------------------------------------------------------- */
/* Claiming an anonymous namespace when signing in (design note 6)          */

/* Connects and returns the HELLO the engine sent (free with free_msgs). */
static void hello_of(knit_client_t *c, uint64_t now, knit_msg_t *hello)
{
    knit_msg_t m[4];
    if (knit_client_state(c) == KNIT_CLIENT_IDLE)
        CHECK_OK(knit_client_start(c, now));
    CHECK(knit_client_want_connect(c, now));
    CHECK_OK(knit_client_connected(c, now));
    CHECK_EQ_INT(take(c, m, 4), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_HELLO);
    *hello = m[0];
}

static void claim_in_hello(void)
{
    fake_t f;
    knit_msg_t h;
    knit_client_t *c;

    /* A JWT with a claim: HELLO carries the anonymous credential. */
    c = make_with(&f, 0, 1, &JWT_CRED, &CLAIM);
    CHECK_STR(knit_client_claim(c), "anon:device9");
    hello_of(c, 0, &h);
    CHECK_EQ_INT(h.u.hello.cred.kind, KNIT_CRED_JWT);
    CHECK_EQ_INT(h.u.hello.claim.kind, KNIT_CRED_ANON);
    CHECK_STR(h.u.hello.claim.id, "device9");
    CHECK_STR(h.u.hello.claim.secret, "secret-of-device9-xyz");
    free_msgs(&h, 1);
    knit_client_free(c);

    /* No claim configured: none sent. */
    c = make_with(&f, 0, 1, &JWT_CRED, NULL);
    CHECK_STR(knit_client_claim(c), "");
    hello_of(c, 0, &h);
    CHECK_EQ_INT(h.u.hello.claim.kind, 0);
    free_msgs(&h, 1);
    knit_client_free(c);

    /* A claim goes only with a JWT (PROTOCOL §7): an anonymous session
    ** keeps it for later and does not send it. */
    c = make_with(&f, 0, 1, &ANON_CRED, &CLAIM);
    hello_of(c, 0, &h);
    CHECK_EQ_INT(h.u.hello.cred.kind, KNIT_CRED_ANON);
    CHECK_EQ_INT(h.u.hello.claim.kind, 0);
    free_msgs(&h, 1);
    /* ...until the credential becomes a JWT. */
    CHECK_OK(knit_client_set_cred(c, &JWT_CRED));
    knit_client_lost(c, 1, KNIT_ECLOSED, NULL);
    hello_of(c, knit_client_tick(c, 2), &h);
    CHECK_EQ_INT(h.u.hello.claim.kind, KNIT_CRED_ANON);
    free_msgs(&h, 1);
    /* Clearing it: nothing is claimed from the next HELLO on. */
    CHECK_OK(knit_client_set_claim(c, NULL));
    CHECK_STR(knit_client_claim(c), "");
    knit_client_lost(c, 3, KNIT_ECLOSED, NULL);
    hello_of(c, knit_client_tick(c, 4), &h);
    CHECK_EQ_INT(h.u.hello.claim.kind, 0);
    free_msgs(&h, 1);

    /* Only an acceptable anonymous credential can be claimed. */
    knit_cred_t bad = CLAIM;
    bad.kind = KNIT_CRED_JWT;
    CHECK_EQ_INT(knit_client_set_claim(c, &bad), KNIT_EINVAL);
    bad = CLAIM;
    bad.id = "not an id";
    CHECK_EQ_INT(knit_client_set_claim(c, &bad), KNIT_EINVAL);
    bad = CLAIM;
    bad.secret = NULL;
    CHECK_EQ_INT(knit_client_set_claim(c, &bad), KNIT_EINVAL);
    CHECK_STR(knit_client_claim(c), "");
    knit_client_free(c);

    /* A failed allocation while copying the claim leaves nothing behind. */
    for (long nth = 1; nth < 50; nth++) {
        knit_client_config_t cfg;
        knit_client_io_t io;
        memset(&cfg, 0, sizeof cfg);
        memset(&io, 0, sizeof io);
        cfg.cred = JWT_CRED;
        cfg.claim = CLAIM;
        knit__alloc_fail_at(nth, 0);
        int rc = knit_client_new(&cfg, &io, &c);
        long used = knit__alloc_fail_at(0, 0);
        CHECK(rc == 0 || rc == KNIT_ENOMEM);
        if (rc == 0) {
            CHECK_STR(knit_client_claim(c), "anon:device9");
            knit_client_free(c);
            if (used < nth)
                break;
        } else {
            CHECK(c == NULL);
        }
    }
}

static void claim_moves_before_reads(void)
{
    fake_t f;
    knit_client_t *c = make_with(&f, 7, 1, &JWT_CRED, &CLAIM);
    knit_msg_t h, m[4];
    knit_client_stats_t st;
    uint64_t after;
    size_t max;

    hello_of(c, 0, &h);
    free_msgs(&h, 1);
    f.cursor = 3;
    welcome(c, "user:alice", 1000, 1);
    /* The write namespace is named, then the rows move, then cursors are
    ** read; the move happens while the engine may not read local changes. */
    CHECK_STR(f.order, "RMC");
    CHECK_EQ_INT(f.nclaimed, 1);
    CHECK_STR(f.claimed_from, "anon:device9");
    CHECK_STR(f.claimed_to, "user:alice");
    CHECK_EQ_INT(f.claimed_state, KNIT_CLIENT_HELLO_SENT);
    CHECK_EQ_INT(f.claimed_could_read, 0);
    /* Then the session starts as usual: SUBSCRIBE, the first local read. */
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    CHECK_EQ_INT(take(c, m, 4), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_SUBSCRIBE);
    free_msgs(m, 1);
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_EQ_INT(after, 7);
    knit_client_stats(c, &st);
    CHECK_EQ_INT(st.claims, 1);
    CHECK_STR(knit_client_claim(c), ""); /* done: not claimed again */

    /* The next session does not claim. */
    knit_client_lost(c, 2, KNIT_ECLOSED, NULL);
    hello_of(c, knit_client_tick(c, 3), &h);
    CHECK_EQ_INT(h.u.hello.claim.kind, 0);
    free_msgs(&h, 1);
    f.norder = 0;
    memset(f.order, 0, sizeof f.order);
    welcome(c, "user:alice", 1000, 4);
    CHECK_STR(f.order, "RC");
    CHECK_EQ_INT(f.nclaimed, 1);
    knit_client_free(c);
}

static void claim_move_failure_claims_again(void)
{
    fake_t f;
    knit_client_t *c = make_with(&f, 0, 1, &JWT_CRED, &CLAIM);
    knit_msg_t h, m[4];
    knit_client_stats_t st;
    uint64_t after;
    size_t max;
    int e;

    hello_of(c, 0, &h);
    free_msgs(&h, 1);
    /* The relay merged, but the replica could not move the rows (a crash
    ** there is the same as far as the engine can tell). */
    f.claimed_rc = KNIT_EBUSY;
    welcome(c, "user:alice", 1000, 1);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    e = last_event(&f, KNIT_CLIENT_EV_ERROR);
    CHECK(e >= 0);
    CHECK_EQ_INT(f.ev[e].code, KNIT_EBUSY);
    CHECK(!f.ev[e].fatal);
    CHECK_STR(f.err_claim, ""); /* not a refusal by the relay */
    CHECK_STR(f.order, "RM");   /* no cursor read, no SUBSCRIBE, no local read */
    CHECK_EQ_INT(take(c, m, 4), 0);
    CHECK(!knit_client_push_room(c, &after, &max));
    knit_client_stats(c, &st);
    CHECK_EQ_INT(st.claims, 0);
    CHECK_EQ_INT(st.sessions, 0);
    CHECK_STR(knit_client_claim(c), "anon:device9");

    /* The next session claims again; the relay's merge is idempotent. */
    knit_client_lost(c, 2, 0, NULL);
    hello_of(c, knit_client_tick(c, 3), &h);
    CHECK_EQ_INT(h.u.hello.claim.kind, KNIT_CRED_ANON);
    CHECK_STR(h.u.hello.claim.id, "device9");
    free_msgs(&h, 1);
    f.claimed_rc = 0;
    welcome(c, "user:alice", 1000, 4);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    CHECK_EQ_INT(f.nclaimed, 2);
    knit_client_stats(c, &st);
    CHECK_EQ_INT(st.claims, 1);
    knit_client_free(c);
}

static void claim_refused(void)
{
    fake_t f;
    knit_client_t *c = make_with(&f, 0, 1, &JWT_CRED, &CLAIM);
    knit_msg_t h, e;
    int i;

    hello_of(c, 0, &h);
    free_msgs(&h, 1);
    memset(&e, 0, sizeof e);
    e.type = KNIT_MSG_ERROR;
    e.u.error.code = KNIT_EAUTH;
    e.u.error.message = "claim refused: wrong secret for this anonymous id";
    feed(c, &e, 1);
    /* A fatal credential error that names the claim; nothing moved. */
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
    i = last_event(&f, KNIT_CLIENT_EV_ERROR);
    CHECK(i >= 0);
    CHECK_EQ_INT(f.ev[i].code, KNIT_EAUTH);
    CHECK(f.ev[i].fatal);
    CHECK_STR(f.err_claim, "anon:device9");
    CHECK_EQ_INT(f.nready, 0);
    CHECK_EQ_INT(f.nclaimed, 0);
    CHECK_EQ_INT(f.norder, 0);
    knit_client_lost(c, 2, 0, NULL);
    /* Retried (at the longest delay), still claiming: giving up the claim
    ** silently would leave the anonymous data behind. */
    hello_of(c, knit_client_tick(c, 3), &h);
    CHECK_EQ_INT(h.u.hello.claim.kind, KNIT_CRED_ANON);
    free_msgs(&h, 1);
    knit_client_free(c);

    /* A refused HELLO without a claim names none. */
    c = make_with(&f, 0, 1, &JWT_CRED, NULL);
    hello_of(c, 0, &h);
    free_msgs(&h, 1);
    e.u.error.message = "authentication failed: bad signature";
    feed(c, &e, 1);
    CHECK_EQ_INT(f.ev[last_event(&f, KNIT_CLIENT_EV_ERROR)].code, KNIT_EAUTH);
    CHECK_STR(f.err_claim, "");
    knit_client_free(c);
}

/* Sends a REJECT refusing changes idx[0..n) with code. */
static void reject_changes(knit_client_t *c, uint64_t id, const size_t *idx, size_t n, int code,
                           uint64_t now)
{
    knit_msg_t m;
    knit_reason_t r[8];
    for (size_t i = 0; i < n; i++) {
        r[i].change = (int64_t)idx[i];
        r[i].code = code;
        r[i].message = "no";
    }
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_REJECT;
    m.u.reject.id = id;
    m.u.reject.reasons = r;
    m.u.reject.nreasons = n;
    feed(c, &m, now);
}

/* Design note 9: refused changes are rolled back (io.rejected) and the rest
** of the push goes again at once; a later ACK moves the watermark. */
static void reject_changes_rolled_back(void)
{
    fake_t f;
    knit_msg_t m[8];
    g_with_rejected = 1;
    knit_client_t *c = ready(&f, 3, 1000);
    g_with_rejected = 0;
    CHECK(offer(c, mkbatch("user:alice", NULL, 2, 2, 4), 5, 10));
    CHECK_EQ_INT(take(c, m, 8), 1);
    uint64_t id = m[0].u.push.id;
    free_msgs(m, 1);
    size_t idx[2] = {1, 2};
    reject_changes(c, id, idx, 2, KNIT_ECLOCKSKEW, 11);
    CHECK_EQ_INT(f.nrejected, 1);
    CHECK_EQ_INT(f.rejected_n, 2);
    CHECK_EQ_INT(f.rejected_first, 1);
    CHECK_EQ_INT(take(c, m, 8), 1); /* the other two, at once */
    CHECK_EQ_INT(m[0].type, KNIT_MSG_PUSH);
    CHECK_EQ_INT(m[0].u.push.batch->nchanges, 2);
    CHECK(m[0].u.push.batch->changes[0].pk[0].u.i + 3 == m[0].u.push.batch->changes[1].pk[0].u.i);
    id = m[0].u.push.id;
    free_msgs(m, 1);
    ack(c, id, 12);
    CHECK(f.nacked >= 1);
    CHECK_EQ_INT(f.acked[f.nacked - 1], 5);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    /* A push refused whole: nothing is sent again, the watermark moves. */
    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 1, 6), 6, 20));
    CHECK_EQ_INT(take(c, m, 8), 1);
    id = m[0].u.push.id;
    free_msgs(m, 1);
    idx[0] = 0;
    reject_changes(c, id, idx, 1, KNIT_EINVAL, 21);
    CHECK_EQ_INT(f.nrejected, 2);
    CHECK_EQ_INT(take(c, m, 8), 0);
    CHECK_EQ_INT(f.acked[f.nacked - 1], 6);
    /* Later writes are pushed as usual. */
    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 1, 7), 7, 30));
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_PUSH);
    free_msgs(m, 1);
    knit_client_free(c);
}

/* Pushes one unit of version v; returns the PUSH's id. */
static uint64_t push_one(knit_client_t *c, uint64_t v, uint64_t now)
{
    knit_msg_t m[8];
    knit_client_local_changed(c);
    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 2, v), v, now));
    CHECK_EQ_INT(take(c, m, 8), 1);
    CHECK_EQ_INT(m[0].type, KNIT_MSG_PUSH);
    uint64_t id = m[0].u.push.id;
    free_msgs(m, 1);
    return id;
}

/* Design note 12: a replica in an app's transaction refuses the watermark
** and the cursor past own pushes at once; the engine goes on and saves them
** SAVE_RETRY_MS (5 ms) later, not at the next flush a second later; a
** DELTAS continues from the cursor in memory and saves it; the end of the
** session saves what is left, through io.apply. */
static void busy_replica_never_blocks(void)
{
    fake_t f;
    g_with_save = 1;
    knit_client_t *c = ready(&f, 0, 1000);
    g_with_save = 0;
    catch_up(c, &f, 2);

    uint64_t id = push_one(c, 1, 10);
    f.busy_acks = 1;
    f.busy_saves = 1;
    ack_seqs(c, id, 1, 1, 20);
    CHECK_EQ_INT(f.nsave, 1);      /* tried at once */
    CHECK_EQ_INT(f.nbusy_acks, 1); /* likewise */
    CHECK_EQ_INT(f.nacked, 0);
    CHECK(knit_client_tick(c, 21) <= 25); /* wake me in 5 ms */
    CHECK_EQ_INT(f.nsave, 1);
    knit_client_tick(c, 25);
    CHECK_EQ_INT(f.nsave, 2);
    CHECK_EQ_INT(f.saved_to, 1);
    CHECK_EQ_INT(f.nacked, 1);
    CHECK_EQ_INT(f.acked[0], 1);
    CHECK_EQ_INT(f.napply, 0); /* nothing was applied for our own unit */

    /* Busy for good: another device's unit after ours applies from the
    ** cursor in memory, and saves it. */
    id = push_one(c, 2, 30);
    f.busy_saves = 1000;
    ack_seqs(c, id, 2, 2, 31);
    int tries = f.nsave;
    deltas(c, 2, 3, 2, 0, 32);
    CHECK_EQ_INT(f.napply, 1);
    CHECK_EQ_INT(f.apply_from[0], 2);
    CHECK_EQ_INT(f.apply_to[0], 3);
    knit_client_tick(c, 100);
    CHECK_EQ_INT(f.nsave, tries); /* nothing left to save */

    /* Still busy: the session's end saves through io.apply, which waits. */
    id = push_one(c, 3, 110);
    ack_seqs(c, id, 4, 4, 111);
    CHECK(f.nsave > tries);
    CHECK_EQ_INT(f.napply, 1);
    knit_client_lost(c, 120, KNIT_ECLOSED, NULL);
    CHECK_EQ_INT(f.napply, 2);
    CHECK_EQ_INT(f.apply_from[1], 3);
    CHECK_EQ_INT(f.apply_to[1], 4);
    CHECK_EQ_INT(f.apply_n[1], 0);
    knit_client_free(c);
}

/* When the rollback fails the changes stay pending and pushing stops. */
static void reject_rollback_failure_halts(void)
{
    fake_t f;
    knit_msg_t m[8];
    g_with_rejected = 1;
    knit_client_t *c = ready(&f, 3, 1000);
    g_with_rejected = 0;
    f.rejected_rc = KNIT_EDB;
    CHECK(offer(c, mkbatch("user:alice", NULL, 1, 2, 4), 4, 10));
    CHECK_EQ_INT(take(c, m, 8), 1);
    uint64_t id = m[0].u.push.id;
    free_msgs(m, 1);
    size_t idx[1] = {0};
    reject_changes(c, id, idx, 1, KNIT_EINVAL, 11);
    CHECK_EQ_INT(f.nrejected, 1);
    CHECK_EQ_INT(take(c, m, 8), 0);
    CHECK_EQ_INT(f.nacked, 0);
    CHECK(last_event(&f, KNIT_CLIENT_EV_ERROR) >= 0);
    knit_client_free(c);
}

KNIT_TESTS(T(handshake), T(push_and_ack), T(ack_in_order), T(answers_out_of_order),
           T(reject_permanent), T(reject_clock_skew_reported), T(reject_too_big_splits),
           T(big_unit_pieces), T(window_bounds_inflight), T(ungranted_ceiling), T(deltas_and_gaps),
           T(apply_failure_reconnects), T(ping_pong_idle), T(handshake_timeout),
           T(backoff_full_jitter), T(relay_error_fatal), T(protocol_violations), T(stop_drains),
           T(watermark_saved_lazily), T(reconnect_rereads), T(alloc_failures), T(claim_in_hello),
           T(claim_moves_before_reads), T(claim_move_failure_claims_again), T(claim_refused),
           T(reject_changes_rolled_back), T(reject_rollback_failure_halts),
           T(busy_replica_never_blocks))
