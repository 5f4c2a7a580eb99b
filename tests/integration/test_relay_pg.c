/*
** test_relay_pg.c: the relay store on PostgreSQL (transport/relay/store_pg.h)
** against a real server started for each case (pg_fixture.h).
**
**   same_as_sqlite      random pushes in random groups through both backends:
**                       the same per-push results, digests and catch-up pages
**   concurrent_gapless  writers on several connections, one namespace, and a
**                       tail reader: sequences never have a gap, and no late
**                       commit is ever skipped
**   newer_schema_refused  a newer schema is refused, by the library and by
**                       sync-relay, with a message that says so
**   backend_ops         credentials, the site id, claim merge and seal, erase
**   agents_converge     sync-relay --store postgresql://... and two agents
**
** Each case exits 77 (skipped) when the PostgreSQL server binaries are absent.
*/
#include "test.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <sys/wait.h>

#include "alloc.h"
#include "knit.h"
#include "orset.h"
#include "pg_fixture.h"
#include "relay_store.h"
#include "sset.h"
#include "store.h"
#include "store_pg.h"
#include "sync_util.h"

#define NS "user:alice"
#define NS2 "user:bob"

static knit_pg_store_t *pg_open(const pgfx_t *f)
{
    knit_pg_store_t *s = NULL;
    int rc = knit_pg_store_open(f->conninfo, &s);
    if (rc)
        fprintf(stderr, "open: %s\n", knit_pg_store_errmsg(s));
    CHECK_OK(rc);
    return s;
}

/* ---------------------------------------------------------------------- */
/* Pushes                                                                   */

static knit_site_t site_n(int n)
{
    knit_site_t s;
    memset(s.b, 0, 16);
    s.b[0] = (uint8_t)(0x10 * (n + 1));
    s.b[15] = (uint8_t)n;
    return s;
}

/* A push to ns on table "t" (key: one INTEGER; a: LWW, tags: OR-set, b: LWW)
** and, with two_tables, "u" (key: TEXT, INTEGER; v: LWW). */
static knit_batch_t *push_new(const char *ns)
{
    static const char *cols[] = {"a", "tags", "b"};
    static const uint8_t orset[] = {0, 1, 0};
    static const char *ucols[] = {"v"};
    static const uint8_t uorset[] = {0};
    knit_batch_t *b;
    uint32_t idx;
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, ns, &idx));
    for (int i = 0; i < 4; i++) {
        knit_site_t s = site_n(i);
        CHECK_OK(knit_batch_site(b, &s, &idx));
    }
    CHECK_OK(knit_batch_table(b, "t", 1, 3, cols, orset, &idx));
    CHECK_OK(knit_batch_table(b, "u", 2, 1, ucols, uorset, &idx));
    return b;
}

static void add(knit_batch_t *b, uint32_t table, int64_t pk, uint32_t col, knit_value_t v,
                uint64_t cl, uint64_t hlc, int site)
{
    knit_value_t key[2];
    knit_change_t c;
    memset(&c, 0, sizeof c);
    if (table == 0) {
        key[0].type = KNIT_INTEGER;
        key[0].u.i = pk;
    } else {
        static const char *names[] = {"x", "y"};
        key[0].type = KNIT_TEXT;
        key[0].u.b.p = (const uint8_t *)names[pk & 1];
        key[0].u.b.n = 1;
        key[1].type = KNIT_INTEGER;
        key[1].u.i = pk;
    }
    c.table = table;
    c.pk = key;
    c.col = col;
    c.cl = cl;
    c.hlc = hlc;
    c.site = (uint32_t)site;
    c.value = v;
    CHECK_OK(knit_batch_add(b, &c));
}

static knit_value_t ival(int64_t i)
{
    knit_value_t v;
    v.type = KNIT_INTEGER;
    v.u.i = i;
    return v;
}

static knit_value_t null_v(void)
{
    knit_value_t v;
    memset(&v, 0, sizeof v);
    v.type = KNIT_NULL;
    return v;
}

/* Random histories as in test_relay_store.c: every write its own stamp,
** each site's OR-set for a row grows from one replica's set. */
static uint64_t rnd_clock;
static knit_orset_t rnd_sets[2][4][4]; /* [ns][pk][site] */

static void rnd_reset(void)
{
    rnd_clock = 100;
    for (int n = 0; n < 2; n++)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                knit_orset_free(&rnd_sets[n][i][j]);
                knit_orset_init(&rnd_sets[n][i][j]);
            }
}

static knit_batch_t *random_push(knit_rng_t *r, int nsi)
{
    knit_batch_t *b = push_new(nsi ? NS2 : NS);
    int units = 1 + (int)knit_rng_below(r, 3);
    for (int u = 0; u < units; u++) {
        CHECK_OK(knit_batch_begin(b, (uint64_t)u + 1));
        int nch = 1 + (int)knit_rng_below(r, 5);
        for (int k = 0; k < nch; k++) {
            int64_t pk = (int64_t)knit_rng_below(r, 4);
            uint64_t cl = 1 + knit_rng_below(r, 4);
            /* Some stamps repeat, so that ties fall to the site. */
            uint64_t hlc = knit_rng_below(r, 5) ? ++rnd_clock : rnd_clock;
            int site = (int)knit_rng_below(r, 4);
            switch (knit_rng_below(r, 6)) {
            case 0:
                add(b, 0, pk, 0, null_v(), cl, hlc, site);
                break;
            case 1:
                add(b, 0, pk, 1, ival((int64_t)knit_rng_below(r, 100)), cl, hlc, site);
                break;
            case 2: {
                knit_value_t t;
                t.type = KNIT_TEXT;
                t.u.b.p = (const uint8_t *)"hello world";
                t.u.b.n = 1 + knit_rng_below(r, 10);
                add(b, 0, pk, 3, t, cl, hlc, site);
                break;
            }
            case 3:
                add(b, 1, pk, knit_rng_below(r, 2) ? 1 : 0,
                    knit_rng_below(r, 2) ? ival((int64_t)knit_rng_below(r, 9)) : null_v(), cl, hlc,
                    site);
                break;
            default: {
                knit_orset_t x = rnd_sets[nsi][pk][site];
                int nadd = 1 + (int)knit_rng_below(r, 3);
                for (int a = 0; a < nadd; a++) {
                    knit_value_t e = ival((int64_t)knit_rng_below(r, 5));
                    CHECK_OK(knit_orset_add(&x, (uint32_t)site, &e, NULL));
                }
                if (knit_rng_below(r, 2)) {
                    knit_value_t e = ival((int64_t)knit_rng_below(r, 5));
                    CHECK_OK(knit_orset_remove(&x, &e, NULL));
                }
                uint8_t *enc;
                size_t n;
                CHECK_OK(knit_orset_encode(&x, &enc, &n));
                knit_value_t v;
                v.type = KNIT_BLOB;
                v.u.b.p = enc;
                v.u.b.n = n;
                add(b, 0, pk, 2, v, cl, hlc, site);
                knit__free(enc);
                rnd_sets[nsi][pk][site] = x;
            }
            }
        }
    }
    return b;
}

/* ---------------------------------------------------------------------- */
/* Batches as comparable text                                               */

typedef struct sbuf_s {
    char *p;
    size_t n, cap;
} sbuf_t;

static void sb_add(sbuf_t *s, const char *fmt, ...)
{
    va_list ap;
    char tmp[512];
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    CHECK(k >= 0 && (size_t)k < sizeof tmp);
    if (s->n + (size_t)k + 1 > s->cap) {
        s->cap = (s->n + (size_t)k + 1) * 2;
        s->p = realloc(s->p, s->cap);
        CHECK(s->p != NULL);
    }
    memcpy(s->p + s->n, tmp, (size_t)k + 1);
    s->n += (size_t)k;
}

static void sb_hex(sbuf_t *s, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sb_add(s, "%02x", p[i]);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One line per change, by name (no ids), the OR-set in stored form;
** within a unit the lines are sorted (the order of cells in a unit is
** not part of the contract). */
static char *batch_text(const knit_batch_t *b)
{
    sbuf_t out = {0};
    sb_add(&out, "%s", "");
    for (size_t u = 0; u < b->ntxns; u++) {
        const knit_txn_t *tx = &b->txns[u];
        char **lines = calloc(tx->count ? tx->count : 1, sizeof *lines);
        CHECK(lines != NULL);
        for (size_t k = 0; k < tx->count; k++) {
            const knit_change_t *c = &b->changes[tx->first + k];
            const knit_batch_table_t *t = &b->tables[c->table];
            sbuf_t l = {0};
            uint8_t enc[256];
            sb_add(&l, "%s %s key=", b->ns[c->ns], t->name);
            for (uint32_t i = 0; i < t->npk; i++) {
                size_t n = knit_value_encode(&c->pk[i], enc);
                sb_hex(&l, enc, n);
            }
            sb_add(&l, " col=%s cl=%llu hlc=%llu site=", c->col ? t->cols[c->col - 1] : "",
                   (unsigned long long)c->cl, (unsigned long long)c->hlc);
            sb_hex(&l, b->sites[c->site].b, 16);
            sb_add(&l, " v=");
            if (c->col && t->orset[c->col - 1]) {
                knit_sset_t x;
                uint8_t *st;
                size_t n;
                knit__sset_init(&x);
                CHECK_OK(knit_orset_decode(c->value.u.b.p, c->value.u.b.n, &x.set));
                CHECK_OK(knit__sset_canon(&x, b->sites, b->nsites));
                CHECK_OK(knit__sset_encode(&x, &st, &n));
                sb_hex(&l, st, n);
                knit__free(st);
                knit__sset_free(&x);
            } else {
                CHECK(knit_value_encoded_size(&c->value) <= sizeof enc);
                size_t n = knit_value_encode(&c->value, enc);
                sb_hex(&l, enc, n);
            }
            lines[k] = l.p;
        }
        qsort(lines, tx->count, sizeof *lines, str_cmp);
        sb_add(&out, "unit %llu\n", (unsigned long long)tx->version);
        for (size_t k = 0; k < tx->count; k++) {
            sb_add(&out, "  %s\n", lines[k]);
            free(lines[k]);
        }
        free(lines);
    }
    return out.p;
}

/* ---------------------------------------------------------------------- */
/* (a) The same pushes, both backends                                       */

static void check_same_read(knit_relay_backend_t *sq, knit_relay_backend_t *pg,
                            knit_relay_store_t *sqs, knit_pg_store_t *pgs, const char *ns,
                            uint64_t after, size_t page)
{
    knit_batch_t *a, *b;
    uint64_t ra, rb;
    int ma, mb;
    CHECK_OK(sq->catch_up(sq->data, ns, after, page, &a, &ra, &ma));
    CHECK_OK(pg->catch_up(pg->data, ns, after, page, &b, &rb, &mb));
    char *ta = batch_text(a), *tb = batch_text(b);
    if (strcmp(ta, tb) != 0 || ra != rb || ma != mb)
        fprintf(stderr,
                "catch-up of %s after %llu page %zu differs:\nSQLite (%llu %d):\n%s\n"
                "PostgreSQL (%llu %d):\n%s\n",
                ns, (unsigned long long)after, page, (unsigned long long)ra, ma, ta,
                (unsigned long long)rb, mb, tb);
    CHECK_STR(ta, tb);
    CHECK_EQ_INT(ra, rb);
    CHECK_EQ_INT(ma, mb);
    free(ta);
    free(tb);
    knit_batch_free(a);
    knit_batch_free(b);
    (void)sqs;
    (void)pgs;
}

static void same_as_sqlite(void)
{
    pgfx_t f;
    char path[600];
    knit_relay_store_t *sqs;
    knit_pg_store_t *pgs;
    knit_relay_backend_t sq, pg;
    uint64_t seed = knit_test_seed();
    knit_rng_t r = {seed};
    long rounds = knit_test_cases(120);

    knit_test_case_seed(seed);
    pgfx_start(&f);
    su_path(path, sizeof path, "relay.db");
    CHECK_OK(knit_relay_store_open(path, 0, &sqs));
    pgs = pg_open(&f);
    knit_relay_store_backend(sqs, &sq);
    knit_pg_store_backend(pgs, &pg);
    rnd_reset();
    for (long g = 0; g < rounds; g++) {
        knit_relay_push_t pa[4], pb[4];
        knit_batch_t *batch[4];
        int n = 1 + (int)knit_rng_below(&r, 4);
        memset(pa, 0, sizeof pa);
        memset(pb, 0, sizeof pb);
        for (int i = 0; i < n; i++) {
            int nsi = (int)knit_rng_below(&r, 3) == 0;
            batch[i] = random_push(&r, nsi);
            if (knit_rng_below(&r, 20) == 0) /* a shape that contradicts the store */
                batch[i]->tables[1].npk = 1;
            pa[i].ns = pb[i].ns = nsi ? NS2 : NS;
            pa[i].batch = pb[i].batch = batch[i];
            pa[i].next = i + 1 < n ? &pa[i + 1] : NULL;
            pb[i].next = i + 1 < n ? &pb[i + 1] : NULL;
        }
        CHECK_OK(sq.commit(sq.data, pa, NULL, NULL));
        CHECK_OK(pg.commit(pg.data, pb, NULL, NULL));
        for (int i = 0; i < n; i++) {
            if (pa[i].code != pb[i].code)
                fprintf(stderr, "push %ld.%d: SQLite %d (%s), PostgreSQL %d (%s)\n", g, i,
                        pa[i].code, pa[i].msg, pb[i].code, pb[i].msg);
            CHECK_EQ_INT(pa[i].code, pb[i].code);
            CHECK_EQ_INT(pa[i].res.applied, pb[i].res.applied);
            CHECK_EQ_INT(pa[i].res.known, pb[i].res.known);
            CHECK_EQ_INT(pa[i].res.first_seq, pb[i].res.first_seq);
            CHECK_EQ_INT(pa[i].res.last_seq, pb[i].res.last_seq);
            if (pa[i].res.fanout || pb[i].res.fanout) {
                CHECK(pa[i].res.fanout && pb[i].res.fanout);
                char *ta = batch_text(pa[i].res.fanout), *tb = batch_text(pb[i].res.fanout);
                CHECK_STR(ta, tb);
                free(ta);
                free(tb);
            }
            knit_batch_free(pa[i].res.fanout);
            knit_batch_free(pb[i].res.fanout);
            knit_batch_free(batch[i]);
        }
        if (g % 10 == 9) {
            const char *ns = knit_rng_below(&r, 2) ? NS : NS2;
            uint64_t cur;
            CHECK_OK(sq.seq(sq.data, ns, &cur));
            check_same_read(&sq, &pg, sqs, pgs, ns, knit_rng_below(&r, cur + 2),
                            (size_t)knit_rng_below(&r, 6));
        }
    }
    for (int k = 0; k < 2; k++) {
        const char *ns = k ? NS2 : NS;
        knit_digest_t da, db;
        char ha[65], hb[65];
        uint64_t sa, sb;
        CHECK_OK(knit_relay_store_digest(sqs, ns, &da));
        CHECK_OK(knit_pg_store_digest(pgs, ns, &db));
        knit_digest_hex(&da, ha);
        knit_digest_hex(&db, hb);
        CHECK_STR(ha, hb);
        CHECK_OK(sq.seq(sq.data, ns, &sa));
        CHECK_OK(pg.seq(pg.data, ns, &sb));
        CHECK_EQ_INT(sa, sb);
        printf("%s: seq %llu digest %s (both)\n", ns, (unsigned long long)sa, ha);
        check_same_read(&sq, &pg, sqs, pgs, ns, 0, 0);
        for (uint64_t after = 0; after <= sa; after += 1 + sa / 7)
            for (size_t page = 1; page < 8; page += 3)
                check_same_read(&sq, &pg, sqs, pgs, ns, after, page);
    }
    rnd_reset();
    knit_relay_store_close(sqs);
    knit_pg_store_close(pgs);
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* (b) Concurrent writers and a tail reader                                 */

#define WRITERS 4
#define COMMITS 60

typedef struct writer_s {
    const pgfx_t *f; /* the server */
    int id;          /* 0..WRITERS-1 */
    size_t units;    /* units it committed */
    int err;         /* 0, or the failure that stopped it */
    char msg[256];   /* its message */
} writer_t;

static volatile int writers_left;
static pthread_mutex_t left_mu = PTHREAD_MUTEX_INITIALIZER;

/* A writer thread.  It never CHECKs (exit from two threads at once would
** race the fixture's cleanup): a failure is recorded for the main thread. */
static void *writer(void *arg)
{
    writer_t *w = arg;
    knit_pg_store_t *s = NULL;
    knit_relay_backend_t be;
    knit_rng_t r = {(uint64_t)w->id * 7919 + 1};
    int64_t next = 0;
    if ((w->err = knit_pg_store_open(w->f->conninfo, &s)) != 0)
        goto out;
    knit_pg_store_backend(s, &be);
    for (int i = 0; i < COMMITS && !w->err; i++) {
        /* Every unit writes a row no other unit writes, so each sequence
        ** keeps its cell and a gap would show. */
        knit_batch_t *b = push_new(NS);
        int units = 1 + (int)knit_rng_below(&r, 3);
        for (int u = 0; u < units; u++) {
            knit_batch_begin(b, (uint64_t)u + 1);
            add(b, 0, (int64_t)w->id * 1000000 + next++, 0, null_v(), 1, 1000 + (uint64_t)i,
                w->id % 4);
        }
        knit_relay_push_t p;
        memset(&p, 0, sizeof p);
        p.ns = NS;
        p.batch = b;
        w->err = be.commit(be.data, &p, NULL, NULL);
        if (!w->err && p.code)
            w->err = p.code;
        if (!w->err && p.res.last_seq - p.res.first_seq + 1 != (uint64_t)units)
            w->err = KNIT_ECORRUPT;
        if (w->err)
            snprintf(w->msg, sizeof w->msg, "%s", knit_pg_store_errmsg(s));
        w->units += (size_t)units;
        knit_batch_free(p.res.fanout);
        knit_batch_free(b);
    }
out:
    knit_pg_store_close(s);
    pthread_mutex_lock(&left_mu);
    writers_left--;
    pthread_mutex_unlock(&left_mu);
    return NULL;
}

static void concurrent_gapless(void)
{
    pgfx_t f;
    pthread_t th[WRITERS];
    writer_t w[WRITERS];
    knit_pg_store_t *rd;
    knit_relay_backend_t be;
    knit_rng_t r = {knit_test_seed()};
    uint64_t cursor = 0, reads = 0, total = 0, t0;
    int done = 0;

    knit_test_case_seed(r.s);
    pgfx_start(&f);
    rd = pg_open(&f); /* creates the schema before the writers race */
    knit_pg_store_backend(rd, &be);
    writers_left = WRITERS;
    t0 = su_now_ms();
    for (int i = 0; i < WRITERS; i++) {
        w[i].f = &f;
        w[i].id = i;
        w[i].units = 0;
        w[i].err = 0;
        CHECK_OK(pthread_create(&th[i], NULL, writer, &w[i]));
    }
    while (!done) {
        int last;
        pthread_mutex_lock(&left_mu);
        last = writers_left == 0;
        pthread_mutex_unlock(&left_mu);
        knit_batch_t *b;
        uint64_t reached;
        int more;
        size_t page = (size_t)knit_rng_below(&r, 4); /* 0: all */
        CHECK_OK(be.catch_up(be.data, NS, cursor, page, &b, &reached, &more));
        /* The units are exactly cursor+1, cursor+2, ...: no gap, nothing
        ** committed late below the cursor. */
        for (size_t u = 0; u < b->ntxns; u++) {
            if (b->txns[u].version != cursor + 1)
                fprintf(stderr, "read %llu: expected unit %llu, got %llu\n",
                        (unsigned long long)reads, (unsigned long long)cursor + 1,
                        (unsigned long long)b->txns[u].version);
            CHECK_EQ_INT(b->txns[u].version, cursor + 1);
            CHECK_EQ_INT(b->txns[u].count, 1);
            cursor++;
        }
        CHECK_EQ_INT(reached, cursor);
        knit_batch_free(b);
        reads++;
        if (last && !more)
            done = 1;
        CHECK(su_now_ms() - t0 < 60000);
    }
    for (int i = 0; i < WRITERS; i++) {
        CHECK_OK(pthread_join(th[i], NULL));
        if (w[i].err)
            fprintf(stderr, "writer %d: %s (%s)\n", i, knit_strerror(w[i].err), w[i].msg);
        CHECK_OK(w[i].err);
        total += w[i].units;
    }
    CHECK_EQ_INT(cursor, total);
    {
        uint64_t seq;
        CHECK_OK(be.seq(be.data, NS, &seq));
        CHECK_EQ_INT(seq, total);
    }
    double s = (double)(su_now_ms() - t0) / 1000.0;
    printf("%llu units by %d writers in %.2f s (%.0f commits/s), %llu tail reads, no gap\n",
           (unsigned long long)total, WRITERS, s, WRITERS * COMMITS / (s > 0 ? s : 1),
           (unsigned long long)reads);
    knit_pg_store_close(rd);
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* (d) A newer schema is refused                                            */

static void newer_schema_refused(void)
{
    pgfx_t f;
    knit_pg_store_t *s;
    char out[2048], data[600];
    pgfx_start(&f);
    s = pg_open(&f);
    knit_pg_store_close(s);
    PGconn *c = PQconnectdb(f.conninfo);
    CHECK(PQstatus(c) == CONNECTION_OK);
    PGresult *r = PQexec(c, "UPDATE knit_meta SET value = '99' WHERE key = 'schema'");
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    s = NULL;
    CHECK_EQ_INT(knit_pg_store_open(f.conninfo, &s), KNIT_EVERSION);
    printf("refused: %s\n", knit_pg_store_errmsg(s));
    CHECK(strstr(knit_pg_store_errmsg(s), "schema version 99, newer than this relay's (1)"));
    knit_pg_store_close(s);
    /* And sync-relay says so and exits 1 before it listens. */
    su_path(data, sizeof data, "unused.db");
    const char *argv[] = {SYNC_RELAY_PATH, "--listen", "127.0.0.1:0", "--store", f.uri, NULL};
    int rc = su_run(argv, 10000, out, sizeof out);
    printf("sync-relay: %s", out);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, "newer than this relay's"));
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* Credentials, site id, claim merge and erase                              */

static void backend_ops(void)
{
    pgfx_t f;
    knit_pg_store_t *s, *s2;
    knit_relay_backend_t be, be2;
    uint8_t salt[16], hash[32], salt2[16], hash2[32];
    knit_site_t a, b;
    pgfx_start(&f);
    s = pg_open(&f);
    s2 = pg_open(&f);
    knit_pg_store_backend(s, &be);
    knit_pg_store_backend(s2, &be2);

    memset(salt, 1, sizeof salt);
    memset(hash, 2, sizeof hash);
    CHECK_EQ_INT(be.anon_get(be.data, "abc", salt2, hash2), 0);
    CHECK_OK(be.anon_put(be.data, "abc", salt, hash, 123));
    CHECK_EQ_INT(be2.anon_put(be2.data, "abc", hash, hash, 124), KNIT_EEXISTS);
    CHECK_EQ_INT(be2.anon_get(be2.data, "abc", salt2, hash2), 1);
    CHECK(memcmp(salt, salt2, 16) == 0 && memcmp(hash, hash2, 32) == 0);

    /* One site id for every relay on the database. */
    CHECK_OK(be.site(be.data, &a));
    CHECK_OK(be2.site(be2.data, &b));
    CHECK(memcmp(a.b, b.b, 16) == 0);

    /* A claim: anon:x's cells merge into user:y, once; the seal holds. */
    {
        knit_batch_t *p = push_new("anon:x");
        knit_relay_push_t g;
        knit_relay_merged_t m;
        int is;
        CHECK_OK(knit_batch_begin(p, 1));
        add(p, 0, 1, 0, null_v(), 1, 10, 0);
        add(p, 0, 1, 1, ival(42), 1, 11, 0);
        memset(&g, 0, sizeof g);
        g.ns = "anon:x";
        g.batch = p;
        CHECK_OK(be.commit(be.data, &g, NULL, NULL));
        CHECK_OK(g.code);
        knit_batch_free(g.res.fanout);
        knit_batch_free(p);
        CHECK_OK(be.sealed(be.data, "anon:x", &is));
        CHECK_EQ_INT(is, 0);
        CHECK_OK(be.merge(be.data, "anon:x", "user:y", 100, &m, NULL, NULL));
        CHECK_EQ_INT(m.cells, 2);
        CHECK_EQ_INT(m.seq, 1);
        CHECK_OK(be.merge(be.data, "anon:x", "user:y", 100, &m, NULL, NULL));
        CHECK_EQ_INT(m.cells, 0); /* nothing new since */
        CHECK_OK(be.sealed(be.data, "anon:x", &is));
        CHECK_EQ_INT(is, 1);
        CHECK_EQ_INT(be2.merge(be2.data, "anon:x", "user:z", 100, &m, NULL, NULL), KNIT_EDENIED);
        knit_digest_t dx, dy;
        CHECK_OK(knit_pg_store_digest(s, "anon:x", &dx));
        knit_batch_t *c;
        uint64_t reached;
        int more;
        CHECK_OK(be.catch_up(be.data, "user:y", 0, 0, &c, &reached, &more));
        CHECK_EQ_INT(c->nchanges, 2);
        CHECK_EQ_INT(reached, 1);
        knit_batch_free(c);
        CHECK_OK(knit_pg_store_digest(s, "user:y", &dy));
        CHECK(!knit_digest_equal(&dx, &dy)); /* other namespace name, other cells */
    }
    /* Erase forgets cells and sequence. */
    {
        uint64_t seq;
        knit_digest_t d, zero;
        CHECK_OK(be.erase(be.data, "user:y", NULL, NULL));
        CHECK_OK(be.seq(be.data, "user:y", &seq));
        CHECK_EQ_INT(seq, 0);
        CHECK_OK(knit_pg_store_digest(s, "user:y", &d));
        knit_digest_zero(&zero);
        CHECK(knit_digest_equal(&d, &zero));
        CHECK_EQ_INT(be.erase(be.data, "user:y", NULL, NULL), KNIT_ENOTFOUND);
    }
    knit_pg_store_close(s);
    knit_pg_store_close(s2);
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* (c) sync-relay --store postgresql:// with two agents                     */

#define SCHEMA                                                                                     \
    "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER,"                              \
    " tags TEXT NOT NULL DEFAULT '[]');"

typedef struct wq_s {
    sqlite3 *a, *b; /* the replicas */
} wq_t;

static int same_rows(void *arg)
{
    wq_t *q = arg;
    char *da = su_dump(q->a, "items", "id"), *db = su_dump(q->b, "items", "id");
    int eq = strcmp(da, db) == 0 && su_int(q->a, "SELECT count(*) FROM items") == 41;
    free(da);
    free(db);
    return eq;
}

static void make_replica(const char *path)
{
    char out[1024];
    sqlite3 *db = su_db(path);
    su_exec(db, "%s", SCHEMA);
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, "items", "--orset", "tags", NULL};
    CHECK_EQ_INT(su_run(argv, 20000, out, sizeof out), 0);
}

static void agents_converge(void)
{
    pgfx_t f;
    su_relay_t relay;
    su_proc_t ag_a, ag_b;
    char data[600], secret[600], token[600], a[600], b[600], alog[600], blog[600];
    static const char *const FAST[] = {"--backoff-max", "500", NULL};
    int st;

    pgfx_start(&f);
    su_path(data, sizeof data, "relay");
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(alog, sizeof alog, "agent-a.log");
    su_path(blog, sizeof blog, "agent-b.log");
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    const char *extra[] = {"--store", f.uri, NULL};
    CHECK_OK(su_relay_start(&relay, 0, data, secret, extra));
    make_replica(a);
    make_replica(b);
    sqlite3 *dba = su_db(a), *dbb = su_db(b);
    su_exec(dba, "INSERT INTO items(id, name, qty, tags) VALUES ('pre-a', 'A', 1, '[\"x\"]')");
    CHECK_OK(su_agent_start(&ag_a, a, relay.port, token, alog, FAST));
    CHECK_OK(su_agent_start(&ag_b, b, relay.port, token, blog, FAST));
    for (int i = 0; i < 40; i++) {
        sqlite3 *src = i % 2 ? dbb : dba;
        su_exec(src,
                "INSERT INTO items(id, name, qty, tags) VALUES ('r%d', 'n%d', %d, '[\"t%d\"]')", i,
                i, i, i % 3);
    }
    su_exec(dba, "UPDATE items SET name = 'renamed' WHERE id = 'r3'");
    su_exec(dbb, "UPDATE items SET tags = '[\"t0\",\"z\"]' WHERE id = 'r0'");
    wq_t q = {dba, dbb};
    if (!su_wait_until(same_rows, &q, 20000)) {
        char lp[700];
        su_print_file(alog);
        su_print_file(blog);
        snprintf(lp, sizeof lp, "%s.log", data);
        su_print_file(lp);
        CHECK(0);
    }
    CHECK_OK(su_kill(&ag_a, SIGTERM, 10000, &st));
    CHECK_OK(su_kill(&ag_b, SIGTERM, 10000, &st));
    {
        char da[65], db[65], dr[65];
        knit_pg_store_t *s = pg_open(&f);
        knit_digest_t d;
        CHECK_OK(su_replica_digest(a, NS, da));
        CHECK_OK(su_replica_digest(b, NS, db));
        CHECK_OK(knit_pg_store_digest(s, NS, &d));
        knit_digest_hex(&d, dr);
        printf("digests: A %s B %s relay (PostgreSQL) %s\n", da, db, dr);
        CHECK_STR(da, db);
        CHECK_STR(da, dr);
        knit_pg_store_close(s);
    }
    sqlite3_close(dba);
    sqlite3_close(dbb);
    CHECK_OK(su_kill(&relay.p, SIGTERM, 10000, &st));
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* Fan-out across two relays on one database (LISTEN/NOTIFY), and the poll */
/* after the listening connections were cut                                */

typedef struct wrow_s {
    sqlite3 *db;    /* where */
    const char *id; /* the row awaited */
} wrow_t;

static int has_row(void *arg)
{
    wrow_t *w = arg;
    return su_int(w->db, "SELECT count(*) FROM items WHERE id = '%s'", w->id) == 1;
}

/* Ends every LISTEN connection on the server (each relay's listener). */
static int cut_listeners(const pgfx_t *f)
{
    PGconn *c = PQconnectdb(f->conninfo);
    CHECK(PQstatus(c) == CONNECTION_OK);
    PGresult *r = PQexec(c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE query = 'LISTEN knit_seq'");
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
    int n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
}

static void two_relays_fanout(void)
{
    pgfx_t f;
    su_relay_t r1, r2;
    su_proc_t ag_a, ag_b;
    char d1[600], d2[600], secret[600], token[600], a[600], b[600], alog[600], blog[600];
    static const char *const FAST[] = {"--backoff-max", "500", NULL};
    uint64_t worst = 0;
    int st;

    pgfx_start(&f);
    su_path(d1, sizeof d1, "relay1");
    su_path(d2, sizeof d2, "relay2");
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(alog, sizeof alog, "agent-a.log");
    su_path(blog, sizeof blog, "agent-b.log");
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    const char *extra[] = {"--store", f.uri, NULL};
    CHECK_OK(su_relay_start(&r1, 0, d1, secret, extra));
    CHECK_OK(su_relay_start(&r2, 0, d2, secret, extra));
    make_replica(a);
    make_replica(b);
    sqlite3 *dba = su_db(a), *dbb = su_db(b);
    /* A pushes through relay 1, B listens on relay 2. */
    CHECK_OK(su_agent_start(&ag_a, a, r1.port, token, alog, FAST));
    CHECK_OK(su_agent_start(&ag_b, b, r2.port, token, blog, FAST));
    su_exec(dba, "INSERT INTO items(id, name, qty) VALUES ('first', 'x', 0)");
    wrow_t w0 = {dbb, "first"};
    CHECK(su_wait_until(has_row, &w0, 10000));
    for (int i = 0; i < 10; i++) {
        char id[32];
        snprintf(id, sizeof id, "live-%d", i);
        uint64_t t0 = su_now_ms();
        su_exec(dba, "INSERT INTO items(id, name, qty) VALUES ('%s', 'n', %d)", id, i);
        wrow_t w = {dbb, id};
        if (!su_wait_until(has_row, &w, 5000)) {
            su_print_file(blog);
            CHECK(0);
        }
        if (su_now_ms() - t0 > worst)
            worst = su_now_ms() - t0;
    }
    printf("relay 1 -> relay 2: every row within %llu ms (write to applied, agents included)\n",
           (unsigned long long)worst);
    /* Cut both relays' listeners, write at once: the notification is lost,
    ** and the poll after the listener's reconnect brings the row. */
    CHECK_EQ_INT(cut_listeners(&f), 2);
    su_exec(dba, "INSERT INTO items(id, name, qty) VALUES ('after-cut', 'n', 99)");
    wrow_t wc = {dbb, "after-cut"};
    if (!su_wait_until(has_row, &wc, 8000)) {
        su_print_file(blog);
        CHECK(0);
    }
    /* And the listener is back: live again. */
    su_sleep_ms(300);
    su_exec(dba, "INSERT INTO items(id, name, qty) VALUES ('after-reconnect', 'n', 100)");
    wrow_t wr = {dbb, "after-reconnect"};
    CHECK(su_wait_until(has_row, &wr, 5000));
    CHECK_OK(su_kill(&ag_a, SIGTERM, 10000, &st));
    CHECK_OK(su_kill(&ag_b, SIGTERM, 10000, &st));
    sqlite3_close(dba);
    sqlite3_close(dbb);
    CHECK_OK(su_kill(&r1.p, SIGTERM, 10000, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_OK(su_kill(&r2.p, SIGTERM, 10000, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* Ingest, measured (not asserted): one connection, groups of pushes of   */
/* 100 LWW changes each, through both backends                             */

static double ingest(knit_relay_backend_t *be, int groups)
{
    uint64_t t0 = su_now_ms();
    int64_t pk = 0;
    for (int g = 0; g < groups; g++) {
        knit_relay_push_t p[4];
        knit_batch_t *b[4];
        memset(p, 0, sizeof p);
        for (int i = 0; i < 4; i++) {
            b[i] = push_new(NS);
            CHECK_OK(knit_batch_begin(b[i], 1));
            for (int k = 0; k < 25; k++, pk++) {
                add(b[i], 0, pk, 0, null_v(), 1, 1000 + (uint64_t)pk, 1);
                add(b[i], 0, pk, 1, ival(pk), 1, 1000 + (uint64_t)pk, 1);
                add(b[i], 0, pk, 3, ival(-pk), 1, 1000 + (uint64_t)pk, 1);
                add(b[i], 1, pk, 1, ival(pk), 1, 1000 + (uint64_t)pk, 1);
            }
            p[i].ns = NS;
            p[i].batch = b[i];
            p[i].next = i < 3 ? &p[i + 1] : NULL;
        }
        CHECK_OK(be->commit(be->data, p, NULL, NULL));
        for (int i = 0; i < 4; i++) {
            CHECK_OK(p[i].code);
            knit_batch_free(p[i].res.fanout);
            knit_batch_free(b[i]);
        }
    }
    double s = (double)(su_now_ms() - t0) / 1000.0;
    return groups * 400.0 / (s > 0 ? s : 0.001);
}

static void ingest_rate(void)
{
    pgfx_t f;
    char path[600];
    knit_relay_store_t *sqs;
    knit_pg_store_t *pgs;
    knit_relay_backend_t sq, pg;
    pgfx_start(&f);
    su_path(path, sizeof path, "relay.db");
    CHECK_OK(knit_relay_store_open(path, 0, &sqs));
    pgs = pg_open(&f);
    knit_relay_store_backend(sqs, &sq);
    knit_pg_store_backend(pgs, &pg);
    double a = ingest(&sq, 50), b = ingest(&pg, 50);
    printf("ingest, one connection, groups of 4 pushes x 100 changes: SQLite %.0f changes/s, "
           "PostgreSQL %.0f changes/s\n",
           a, b);
    knit_relay_store_close(sqs);
    knit_pg_store_close(pgs);
    pgfx_stop(&f);
}

KNIT_TESTS(T(same_as_sqlite), T(concurrent_gapless), T(newer_schema_refused), T(backend_ops),
           T(agents_converge), T(two_relays_fanout), T(ingest_rate))
