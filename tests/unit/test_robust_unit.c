/*
** test_robust_unit.c: robustness of the relay and the sync client, without
** sockets: the shared change validator (runtime/validate.h), the relay
** store refusing and skipping what no replica can apply, and the client
** engine's error messages and handling of its own pushes' echoes.
*/
#include "test.h"

#include <sqlite3.h>

#include "alloc.h"
#include "codec.h"
#include "frame.h"
#include "orset.h"
#include "proto_client.h"
#include "relay_store.h"
#include "validate.h"

static const knit_site_t SITE = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}};
#define HLC0 ((uint64_t)1700000000000 << 16)

/* ---------------------------------------------------------------------- */
/* Batches                                                                  */

/* A batch of namespace ns with table items(id; name LWW, tags OR-set). */
static knit_batch_t *items(const char *ns)
{
    knit_batch_t *b = NULL;
    uint32_t idx;
    const char *cols[2] = {"name", "tags"};
    uint8_t kinds[2] = {0, 1};
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, ns, &idx));
    CHECK_OK(knit_batch_site(b, &SITE, &idx));
    CHECK_OK(knit_batch_table(b, "items", 1, 2, cols, kinds, &idx));
    return b;
}

static knit_value_t text(const char *s)
{
    knit_value_t v;
    v.type = KNIT_TEXT;
    v.u.b.p = s;
    v.u.b.n = strlen(s);
    return v;
}

/* Adds row `key` (liveness, name, tags) with the given OR-set element. */
static void add_row(knit_batch_t *b, const char *key, const knit_value_t *elem, uint64_t hlc)
{
    knit_change_t c;
    knit_value_t pk = text(key);
    knit_orset_t s;
    uint8_t *enc = NULL;
    size_t n = 0;
    memset(&c, 0, sizeof c);
    c.pk = &pk;
    c.cl = 1;
    c.hlc = hlc;
    c.value.type = KNIT_NULL;
    CHECK_OK(knit_batch_add(b, &c));
    c.col = 1;
    c.value = text("a name");
    CHECK_OK(knit_batch_add(b, &c));
    knit_orset_init(&s);
    CHECK_OK(knit_orset_add(&s, 0, elem, NULL));
    CHECK_OK(knit_orset_encode(&s, &enc, &n));
    knit_orset_free(&s);
    c.col = 2;
    c.value.type = KNIT_BLOB;
    c.value.u.b.p = enc;
    c.value.u.b.n = n;
    CHECK_OK(knit_batch_add(b, &c));
    knit__free(enc);
}

/* knit_change_check accepts what replicas can apply and names what not. */
static void check_rejects_unapplicable(void)
{
    knit_batch_t *b = items("ns");
    knit_value_t good = text("red"), blob, bad_utf8, nul = {KNIT_NULL, {0}};
    char why[256];
    int rc;
    blob.type = KNIT_BLOB;
    blob.u.b.p = "\x01\x02";
    blob.u.b.n = 2;
    bad_utf8.type = KNIT_TEXT;
    bad_utf8.u.b.p = "\xff\xfe";
    bad_utf8.u.b.n = 2;
    CHECK_OK(knit_batch_begin(b, 1));
    add_row(b, "ok", &good, HLC0 + 1);
    add_row(b, "blob", &blob, HLC0 + 2);
    add_row(b, "utf8", &bad_utf8, HLC0 + 3);
    add_row(b, "null", &nul, HLC0 + 4); /* a NULL element is fine: JSON null */
    for (size_t i = 0; i < 3; i++)
        CHECK_OK(knit_change_check(b, &b->changes[i], why, sizeof why));
    CHECK_OK(knit_change_check(b, &b->changes[3], why, sizeof why));
    CHECK_OK(knit_change_check(b, &b->changes[4], why, sizeof why));
    rc = knit_change_check(b, &b->changes[5], why, sizeof why);
    CHECK_EQ_INT(rc, KNIT_EINVAL);
    CHECK(strstr(why, "items") && strstr(why, "'blob'") && strstr(why, "tags") &&
          strstr(why, "BLOB"));
    rc = knit_change_check(b, &b->changes[8], why, sizeof why);
    CHECK_EQ_INT(rc, KNIT_EINVAL);
    CHECK(strstr(why, "UTF-8") != NULL);
    CHECK_OK(knit_change_check(b, &b->changes[11], why, sizeof why));

    /* Key, column, liveness and state problems. */
    knit_change_t c = b->changes[1];
    knit_value_t pk = nul;
    c.pk = &pk;
    CHECK_EQ_INT(knit_change_check(b, &c, why, sizeof why), KNIT_EINVAL);
    CHECK(strstr(why, "NULL") != NULL);
    c = b->changes[1];
    c.col = 3;
    CHECK_EQ_INT(knit_change_check(b, &c, why, sizeof why), KNIT_EINVAL);
    c = b->changes[0];
    c.value = good;
    CHECK_EQ_INT(knit_change_check(b, &c, why, sizeof why), KNIT_EINVAL);
    CHECK(strstr(why, "liveness") != NULL);
    c = b->changes[0];
    c.cl = 0;
    CHECK_EQ_INT(knit_change_check(b, &c, why, sizeof why), KNIT_EINVAL);
    c = b->changes[2];
    c.value.u.b.n = 1; /* truncated state */
    CHECK_EQ_INT(knit_change_check(b, &c, why, sizeof why), KNIT_ECORRUPT);
    c = b->changes[2];
    c.value = good; /* an OR-set column with a TEXT value */
    CHECK_EQ_INT(knit_change_check(b, &c, why, sizeof why), KNIT_EINVAL);
    c = b->changes[1];
    c.site = 5;
    CHECK_EQ_INT(knit_change_check(b, &c, NULL, 0), KNIT_EINVAL);
    knit_batch_free(b);
}

static char tmp[64];

static const char *store_path(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/knit-robust-%d.db", (int)getpid());
    unlink(tmp);
    return tmp;
}

static void rm_store(const char *p)
{
    char q[96];
    unlink(p);
    snprintf(q, sizeof q, "%s-wal", p);
    unlink(q);
    snprintf(q, sizeof q, "%s-shm", p);
    unlink(q);
}

/* The store refuses a push holding an unapplicable change, whole. */
static void store_never_stores_unapplicable(void)
{
    const char *path = store_path();
    knit_relay_store_t *s = NULL;
    knit_relay_applied_t res;
    knit_batch_t *b = items("user:a");
    knit_value_t good = text("red"), blob;
    uint64_t seq = 9;
    blob.type = KNIT_BLOB;
    blob.u.b.p = "\x00";
    blob.u.b.n = 1;
    CHECK_OK(knit_batch_begin(b, 1));
    add_row(b, "ok", &good, HLC0 + 1);
    add_row(b, "blob", &blob, HLC0 + 2);
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_EQ_INT(knit_relay_store_apply(s, "user:a", b, &res), KNIT_EINVAL);
    CHECK(strstr(knit_relay_store_errmsg(s), "BLOB") != NULL);
    CHECK_OK(knit_relay_store_commit(s));
    CHECK_OK(knit_relay_store_seq(s, "user:a", &seq));
    CHECK_EQ_INT(seq, 0);
    knit_relay_store_close(s);
    knit_batch_free(b);
    rm_store(path);
}

typedef struct dmg_s {
    int n;           /* callbacks */
    char table[64];  /* last table */
    char key[160];   /* last key */
    char column[64]; /* last column */
    char ns[64];     /* last namespace */
} dmg_t;

static void on_dmg(void *data, const knit_relay_damage_t *d)
{
    dmg_t *x = data;
    x->n++;
    snprintf(x->table, sizeof x->table, "%s", d->table);
    snprintf(x->key, sizeof x->key, "%s", d->key);
    snprintf(x->column, sizeof x->column, "%s", d->column);
    snprintf(x->ns, sizeof x->ns, "%s", d->ns);
}

/* One bad stored cell is skipped, reported and counted; the rest is sent;
** quick_check finds page-level damage. */
static void store_catch_up_skips_damaged(void)
{
    const char *path = store_path();
    knit_relay_store_t *s = NULL;
    knit_relay_applied_t res;
    knit_batch_t *b = items("user:a"), *out = NULL;
    knit_value_t e1 = text("red"), e2 = text("blue");
    uint64_t reached;
    int more;
    dmg_t d;
    char finding[512];
    sqlite3 *db;
    CHECK_OK(knit_batch_begin(b, 1));
    add_row(b, "one", &e1, HLC0 + 1);
    CHECK_OK(knit_batch_begin(b, 2));
    add_row(b, "two", &e2, HLC0 + 2);
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_OK(knit_relay_store_apply(s, "user:a", b, &res));
    knit_batch_free(res.fanout);
    CHECK_OK(knit_relay_store_commit(s));
    CHECK_OK(knit_relay_store_check(s, finding, sizeof finding));
    knit_relay_store_close(s);
    knit_batch_free(b);

    /* Plant damage: the OR-set state of row 'one' and the name of 'two'. */
    CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(db,
                              "UPDATE cell SET value = X'05FFFF' WHERE kind = 2 AND seq = 1;"
                              "UPDATE cell SET value = X'09' WHERE kind = 1 AND seq = 2;",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    CHECK_EQ_INT(sqlite3_changes(db), 1);
    sqlite3_close(db);

    memset(&d, 0, sizeof d);
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    knit_relay_store_on_damage(s, on_dmg, &d);
    CHECK_OK(knit_relay_store_catch_up(s, "user:a", 0, 0, &out, &reached, &more));
    CHECK_EQ_INT(reached, 2);
    CHECK_EQ_INT(more, 0);
    CHECK_EQ_INT(out->nchanges, 4); /* 6 cells, 2 damaged */
    CHECK_EQ_INT(d.n, 2);
    CHECK_EQ_INT(knit_relay_store_damaged(s), 2);
    CHECK_STR(d.ns, "user:a");
    CHECK_STR(d.table, "items");
    CHECK_STR(d.key, "'two'");
    CHECK_STR(d.column, "name");
    knit_batch_free(out);
    knit_relay_store_close(s);
    rm_store(path);
}

/* ---------------------------------------------------------------------- */
/* The client engine                                                        */

typedef struct fake_s {
    int napply;            /* io.apply calls */
    uint64_t apply_to[64]; /* their `to` */
    size_t apply_n[64];    /* their change counts */
    int apply_rc;          /* what io.apply returns */
    const char *detail;    /* what io.errmsg answers */
    char errors[8][1024];  /* messages of EV_ERROR */
    int nerrors;           /* count */
    int nsynced;           /* SYNCED events */
} fake_t;

static int f_cursor(void *d, const char *ns, uint64_t *seq)
{
    (void)d;
    (void)ns;
    *seq = 0;
    return 0;
}

static int f_apply(void *d, const char *ns, uint64_t from, uint64_t to, const knit_batch_t *b)
{
    fake_t *f = d;
    (void)ns;
    (void)from;
    if (f->apply_rc)
        return f->apply_rc;
    CHECK(f->napply < 64);
    f->apply_to[f->napply] = to;
    f->apply_n[f->napply] = b->nchanges;
    f->napply++;
    return 0;
}

static int f_acked(void *d, uint64_t v)
{
    (void)d;
    (void)v;
    return 0;
}

static const char *f_errmsg(void *d)
{
    return ((fake_t *)d)->detail;
}

static void f_event(void *d, const knit_client_event_t *ev)
{
    fake_t *f = d;
    if (ev->type == KNIT_CLIENT_EV_SYNCED)
        f->nsynced++;
    if (ev->type == KNIT_CLIENT_EV_ERROR && f->nerrors < 8)
        snprintf(f->errors[f->nerrors++], sizeof f->errors[0], "%s", ev->message);
}

static void feed(knit_client_t *c, const knit_msg_t *m, uint64_t now)
{
    knit_buf_t b = {NULL, 0, 0};
    CHECK_OK(knit_msg_encode(m, NULL, &b));
    knit_client_input(c, b.p, b.len, now);
    knit_buf_free(&b);
}

/* Output taken and dropped; returns the number of PUSHes in it. */
static int drain(knit_client_t *c, uint64_t *push_id)
{
    knit_buf_t b = {NULL, 0, 0};
    size_t off = 0;
    int pushes = 0;
    knit_client_take_output(c, &b);
    while (off + 4 <= b.len) {
        uint32_t len = knit_frame_length(b.p + off);
        knit_msg_t m;
        CHECK_OK(knit_msg_decode(b.p + off + 4, len, NULL, &m, NULL));
        if (m.type == KNIT_MSG_PUSH) {
            pushes++;
            if (push_id)
                *push_id = m.u.push.id;
        }
        knit_msg_free(&m);
        off += 4 + len;
    }
    knit_buf_free(&b);
    return pushes;
}

static knit_client_t *engine(fake_t *f)
{
    static const knit_cred_t cred = {KNIT_CRED_ANON, "device1", "0123456789abcdef0123", NULL};
    knit_client_config_t cfg;
    knit_client_io_t io;
    knit_client_t *c = NULL;
    memset(&cfg, 0, sizeof cfg);
    cfg.site = SITE;
    cfg.cred = cred;
    cfg.seed = 7;
    memset(&io, 0, sizeof io);
    io.cursor = f_cursor;
    io.apply = f_apply;
    io.acked = f_acked;
    io.errmsg = f_errmsg;
    io.event = f_event;
    io.data = f;
    CHECK_OK(knit_client_new(&cfg, &io, &c));
    return c;
}

/* Connects and answers WELCOME; the engine is READY after it. */
static void session(knit_client_t *c, uint64_t now)
{
    knit_msg_t m;
    const char *granted[1] = {"user:alice"};
    while (!knit_client_want_connect(c, now))
        now += 100;
    CHECK_OK(knit_client_connected(c, now));
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_WELCOME;
    m.u.welcome.version = 1;
    m.u.welcome.principal = "user:alice";
    m.u.welcome.granted = granted;
    m.u.welcome.ngranted = 1;
    m.u.welcome.clock = HLC0;
    m.u.welcome.limits.max_frame = 1 << 24;
    m.u.welcome.limits.max_changes = 1000;
    m.u.welcome.limits.idle_ms = 60000;
    m.u.welcome.limits.max_drift_ms = 300000;
    feed(c, &m, now);
    CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_READY);
    drain(c, NULL);
}

static void deltas(knit_client_t *c, uint64_t from, uint64_t to, int nrows, int caught_up,
                   uint64_t now)
{
    knit_msg_t m;
    knit_batch_t *b = items("user:alice");
    knit_value_t e = text("x");
    char key[32];
    if (nrows)
        CHECK_OK(knit_batch_begin(b, to));
    for (int i = 0; i < nrows; i++) {
        snprintf(key, sizeof key, "k%llu-%d", (unsigned long long)to, i);
        add_row(b, key, &e, HLC0 + to * 10 + (uint64_t)i);
    }
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

/* The replica's own detail reaches the error event, and the same failure
** reads the same on every retry (no message built from the last one). */
static void client_error_detail_stable(void)
{
    fake_t f;
    knit_client_t *c;
    uint64_t now = 1000;
    memset(&f, 0, sizeof f);
    c = engine(&f);
    f.apply_rc = KNIT_ECONSTRAINT;
    f.detail = "notes: NOT NULL constraint failed: notes.body";
    CHECK_OK(knit_client_start(c, now));
    for (int attempt = 0; attempt < 3; attempt++) {
        session(c, now);
        deltas(c, 0, 1, 1, 1, now);
        CHECK_EQ_INT(knit_client_state(c), KNIT_CLIENT_CLOSING);
        knit_client_lost(c, now, 0, NULL);
        now += 60000;
    }
    CHECK_EQ_INT(f.nerrors, 3);
    CHECK(strstr(f.errors[0], "NOT NULL constraint failed: notes.body") != NULL);
    CHECK_STR(f.errors[1], f.errors[0]);
    CHECK_STR(f.errors[2], f.errors[0]);
    knit_client_free(c);
}

/* Hands over one local unit of one change when the engine asks. */
static void offer_one(knit_client_t *c, uint64_t version, uint64_t now)
{
    uint64_t after;
    size_t max;
    knit_batch_t *b = items("user:alice");
    knit_value_t e = text("mine");
    CHECK(knit_client_push_room(c, &after, &max));
    CHECK_OK(knit_batch_begin(b, version));
    add_row(b, "local", &e, HLC0 + 999);
    CHECK_OK(knit_client_push(c, b, version, now));
}

static void ack(knit_client_t *c, uint64_t id, uint64_t first, uint64_t last, uint64_t now)
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

/* The cursor moves past our own acknowledged units without downloading
** them, and never over another device's unit between. */
static void client_skips_own_echo(void)
{
    fake_t f;
    knit_client_t *c;
    uint64_t now = 1000, id = 0, after;
    size_t max;
    memset(&f, 0, sizeof f);
    c = engine(&f);
    CHECK_OK(knit_client_start(c, now));
    session(c, now);
    deltas(c, 0, 0, 0, 1, now); /* caught up at 0 */
    offer_one(c, 5, now);
    CHECK_EQ_INT(drain(c, &id), 1);
    /* Our push took sequence 1: the cursor moves there (an empty apply). */
    ack(c, id, 1, 1, now);
    CHECK_EQ_INT(f.napply, 1);
    CHECK_EQ_INT(f.apply_to[0], 1);
    CHECK_EQ_INT(f.apply_n[0], 0);
    /* Its echo is recognised and not applied. */
    deltas(c, 0, 1, 1, 0, now);
    CHECK_EQ_INT(f.napply, 1);
    if (knit_client_push_room(c, &after, &max))
        knit_client_push_none(c, 5, now);
    CHECK(f.nsynced >= 1);

    /* Another device's unit took 2, ours took 3: the cursor waits for 2. */
    f.nsynced = 0;
    knit_client_local_changed(c);
    offer_one(c, 6, now);
    CHECK_EQ_INT(drain(c, &id), 1);
    ack(c, id, 3, 3, now);
    CHECK_EQ_INT(f.napply, 1); /* not past 2 */
    if (knit_client_push_room(c, &after, &max))
        knit_client_push_none(c, 6, now);
    CHECK_EQ_INT(f.nsynced, 0); /* own unit 3 is not behind the cursor yet */
    deltas(c, 1, 2, 1, 0, now); /* the other device's: applied */
    CHECK_EQ_INT(f.napply, 3);
    CHECK_EQ_INT(f.apply_to[1], 2);
    CHECK_EQ_INT(f.apply_n[1], 3);
    CHECK_EQ_INT(f.apply_to[2], 3); /* then straight past our own */
    CHECK_EQ_INT(f.apply_n[2], 0);
    deltas(c, 2, 3, 1, 0, now); /* the echo of 3 */
    CHECK_EQ_INT(f.napply, 3);
    if (knit_client_push_room(c, &after, &max))
        knit_client_push_none(c, 6, now);
    CHECK(f.nsynced >= 1);
    knit_client_free(c);
}

KNIT_TESTS(T(check_rejects_unapplicable), T(store_never_stores_unapplicable),
           T(store_catch_up_skips_damaged), T(client_error_detail_stable), T(client_skips_own_echo))
