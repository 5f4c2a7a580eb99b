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
**   two_relays_fanout   LISTEN/NOTIFY across relays, and the poll after a cut
**   ingest_rate         changes/s through both backends (printed)
**   pg_restart_mid_push PostgreSQL restarted while an agent pushes: the relay
**                       reconnects by itself, logs the outage once, and a
**                       fresh replica gets every row (digests equal)
**   pg_stall            every postgres process SIGSTOPped for 3 s mid-push:
**                       /healthz answers 503 meanwhile (the store's deadline),
**                       the relay logs it, recovers after SIGCONT, loses nothing
**   ident_same_as_sqlite  devices, identify (create, update, relink by email,
**                       a provisional account merged into the email's, an
**                       email conflict, stale events, a tombstone), ident_dirty,
**                       memberships (reordered deliveries) and REJECT's cells,
**                       the same calls on both backends: the same answers;
**                       all of it still there after a server restart
**   schema_upgrade      a schema 1 database is upgraded in place at open, its
**                       cells kept, and identify works on it
**   reject_state        test_reject_it.c's clock-skew refusal with the relay
**                       on PostgreSQL: the rolled-back update gets the
**                       relay's value back (REJECT's state), digests agree
**   identity_restart    sync-relay on PostgreSQL with provider tokens: a second
**                       provider id with the same email after a relay restart
**                       signs in to the first one's account and data; a
**                       membership recorded in the store grants its
**                       organization's rows (read and write) after the restart
**   webhook_profile_pg  signed user.created/updated to a relay on PostgreSQL:
**                       the profile row reaches a device online on a second
**                       relay (NOTIFY); a stale update and a repeated
**                       delivery id change nothing; session.created likewise
**   webhook_erase_pg    user.deleted erases (tokens refused afterwards), its
**                       retry is a duplicate, user.created lets it back in;
**                       organizationMembership.created grants the org's rows
**   erase_cli_pg        sync-relay erase --store postgresql://... by a later
**                       id of the account, the claimed namespace too; exit 3
**                       with nothing left; --undo
**   schema_upgrade_v2   a schema 2 database gets the webhook tables at open;
**                       the webhook seam's record, dedupe and rollback
**   inspect_cli_pg      sync-inspect relay, relay ... schemas and digest on a
**                       PostgreSQL store and a SQLite store fed the same
**                       pushes, ids and devices: the same output; an empty
**                       database is refused and left empty; a bad URI exits 2
**                       naming the cause, its password never printed
**
** Each case exits 77 (skipped) when the PostgreSQL server binaries are absent.
*/
#include "test.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "knit.h"
#include "orset.h"
#include "pg_fixture.h"
#include "relay_store.h"
#include "sset.h"
#include "store.h"
#include "store_pg.h"
#include "webhook.h"
#include "idp_util.h"
#include "sync_util.h"

#ifndef SYNC_INSPECT_PATH
#define SYNC_INSPECT_PATH "sync-inspect"
#endif

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
    {
        char want[128];
        snprintf(want, sizeof want, "schema version 99, newer than this relay's (%d)",
                 KNIT_PG_SCHEMA_VERSION);
        CHECK(strstr(knit_pg_store_errmsg(s), want));
    }
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

/* ---------------------------------------------------------------------- */
/* The database restarted, and stalled, under a relay that is being pushed */
/* to: it reconnects by itself, reports the outage, and loses nothing      */

#define PER_TXN 5 /* rows per replica transaction */

/* Rows [from, to) of items in transactions of PER_TXN, a short pause
** between, so that the agent pushes while they are written. */
static void write_rows(sqlite3 *db, long from, long to)
{
    for (long i = from; i < to; i += PER_TXN) {
        su_exec(db, "BEGIN");
        for (long k = i; k < to && k < i + PER_TXN; k++)
            su_exec(db,
                    "INSERT INTO items(id, name, qty, tags) VALUES ('r%06ld', 'n%ld', %ld,"
                    " '[\"t%ld\"]')",
                    k, k * 7, k, k % 5);
        su_exec(db, "COMMIT");
        su_sleep_ms(1);
    }
}

typedef struct wall_s {
    sqlite3 *a, *b; /* the writer's replica and a fresh one */
    long n;         /* rows expected */
} wall_t;

static int all_rows(void *arg)
{
    wall_t *w = arg;
    if (su_int(w->b, "SELECT count(*) FROM items") != w->n)
        return 0;
    char *da = su_dump(w->a, "items", "id"), *db = su_dump(w->b, "items", "id");
    int eq = strcmp(da, db) == 0;
    free(da);
    free(db);
    return eq;
}

/* The whole file (at most 4 MiB), malloc'd, NUL-terminated. */
static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    char *buf = malloc(4 << 20);
    size_t n = 0;
    CHECK(buf != NULL);
    if (fp) {
        n = fread(buf, 1, (4 << 20) - 1, fp);
        fclose(fp);
    }
    buf[n] = '\0';
    return buf;
}

static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* The number after the last "needle" in text, or -1. */
static long number_after(const char *text, const char *needle)
{
    const char *p, *last = NULL;
    for (p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        last = p;
    return last ? atol(last + strlen(needle)) : -1;
}

/* GET path from 127.0.0.1:port within timeout_ms: the status (body in
** body[0..n)), or -1 when no answer came in time. */
static int http_get(int port, const char *path, int timeout_ms, char *body, size_t n)
{
    struct sockaddr_in a;
    char req[256], buf[4096];
    size_t have = 0;
    uint64_t end = su_now_ms() + (uint64_t)timeout_ms;
    int fd = socket(AF_INET, SOCK_STREAM, 0), status = -1;
    body[0] = '\0';
    CHECK(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int k =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)k) != k) {
        close(fd);
        return -1;
    }
    for (;;) {
        uint64_t now = su_now_ms();
        struct pollfd p = {fd, POLLIN, 0};
        if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
            break;
        ssize_t got = read(fd, buf + have, sizeof buf - 1 - have);
        if (got <= 0) {
            buf[have] = '\0';
            if (have > 12 && strncmp(buf, "HTTP/1.", 7) == 0)
                status = atoi(buf + 9);
            break;
        }
        have += (size_t)got;
        if (have == sizeof buf - 1)
            break;
    }
    close(fd);
    if (status > 0) {
        const char *b = strstr(buf, "\r\n\r\n");
        snprintf(body, n, "%s", b ? b + 4 : "");
    }
    return status;
}

/* The three digests of NS: writer, fresh replica, relay store. */
static void same_digests(const pgfx_t *f, const char *a, const char *b)
{
    char da[65], db[65], dr[65];
    knit_pg_store_t *s = pg_open(f);
    knit_digest_t d;
    CHECK_OK(su_replica_digest(a, NS, da));
    CHECK_OK(su_replica_digest(b, NS, db));
    CHECK_OK(knit_pg_store_digest(s, NS, &d));
    knit_digest_hex(&d, dr);
    printf("digests: writer %s fresh replica %s relay (PostgreSQL) %s\n", da, db, dr);
    CHECK_STR(da, db);
    CHECK_STR(da, dr);
    knit_pg_store_close(s);
}

/* Waits for the fresh replica to hold every row; prints the logs if not. */
static void await_all(wall_t *w, const char *relay_log, const char *alog, const char *blog)
{
    uint64_t t0 = su_now_ms();
    if (!su_wait_until(all_rows, w, 45000)) {
        printf("fresh replica: %lld of %ld rows\n",
               (long long)su_int(w->b, "SELECT count(*) FROM items"), w->n);
        su_print_file(relay_log);
        su_print_file(alog);
        su_print_file(blog);
        CHECK(0);
    }
    printf("fresh replica has all %ld rows (same content) %llu ms after it started\n", w->n,
           (unsigned long long)(su_now_ms() - t0));
}

static void pg_restart_mid_push(void)
{
    pgfx_t f;
    su_relay_t relay;
    su_proc_t ag_a, ag_b;
    char data[600], secret[600], token[600], a[600], b[600], alog[600], blog[600], rlog[700];
    static const char *const FAST[] = {"--backoff-max", "500", NULL};
    long n = su_scale(3000);
    int st;

    pgfx_start(&f);
    su_path(data, sizeof data, "relay");
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(alog, sizeof alog, "agent-a.log");
    su_path(blog, sizeof blog, "agent-b.log");
    snprintf(rlog, sizeof rlog, "%s.log", data);
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    const char *extra[] = {"--store", f.uri, NULL};
    CHECK_OK(su_relay_start(&relay, 0, data, secret, extra));
    make_replica(a);
    make_replica(b);
    sqlite3 *dba = su_db(a), *dbb = su_db(b);
    CHECK_OK(su_agent_start(&ag_a, a, relay.port, token, alog, FAST));
    write_rows(dba, 0, n / 2);
    /* Mid-push: the agent is still sending what was just written. */
    uint64_t t0 = su_now_ms();
    pgfx_restart(&f, 500);
    uint64_t down = su_now_ms() - t0;
    write_rows(dba, n / 2, n);
    /* A second replica, from nothing, through the same relay process. */
    CHECK_OK(su_agent_start(&ag_b, b, relay.port, token, blog, FAST));
    wall_t w = {dba, dbb, n};
    await_all(&w, rlog, alog, blog);
    CHECK(su_wait(&relay.p, 0, &st) != 0); /* never restarted: still running */
    char *log = slurp(rlog);
    int outages = count_of(log, "store: PostgreSQL unreachable: ");
    long back = number_after(log, "store: PostgreSQL back after ");
    printf("PostgreSQL was down %llu ms (stop, 500 ms, start); the relay logged %d outage(s), "
           "back after %ld ms; %d group commits failed meanwhile\n",
           (unsigned long long)down, outages, back, count_of(log, "group commit failed"));
    if (outages != 1 || back < 0)
        su_print_file(rlog);
    CHECK_EQ_INT(outages, 1); /* once per outage, not once per operation */
    CHECK(back >= 0);
    free(log);
    CHECK_OK(su_kill(&ag_a, SIGTERM, 10000, &st));
    CHECK_OK(su_kill(&ag_b, SIGTERM, 10000, &st));
    same_digests(&f, a, b);
    sqlite3_close(dba);
    sqlite3_close(dbb);
    CHECK_OK(su_kill(&relay.p, SIGTERM, 10000, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pgfx_stop(&f);
}

static void pg_stall(void)
{
    pgfx_t f;
    su_relay_t relay;
    su_proc_t ag_a, ag_b;
    char data[600], secret[600], token[600], a[600], b[600], alog[600], blog[600], rlog[700];
    char hl[64], body[512];
    static const char *const FAST[] = {"--backoff-max", "500", NULL};
    long n = su_scale(2000);
    int st, hp = su_free_port();

    pgfx_start(&f);
    su_path(data, sizeof data, "relay");
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(alog, sizeof alog, "agent-a.log");
    su_path(blog, sizeof blog, "agent-b.log");
    snprintf(rlog, sizeof rlog, "%s.log", data);
    snprintf(hl, sizeof hl, "127.0.0.1:%d", hp);
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    const char *extra[] = {"--store", f.uri, "--http-listen", hl, NULL};
    /* The store's deadline (store_pg.c design note 11), shorter than the
    ** default so that the case is quick. */
    setenv("KNIT_PG_TIMEOUT_MS", "1500", 1);
    CHECK_OK(su_relay_start(&relay, 0, data, secret, extra));
    unsetenv("KNIT_PG_TIMEOUT_MS");
    CHECK_EQ_INT(http_get(hp, "/healthz", 10000, body, sizeof body), 200);
    make_replica(a);
    make_replica(b);
    sqlite3 *dba = su_db(a), *dbb = su_db(b);
    CHECK_OK(su_agent_start(&ag_a, a, relay.port, token, alog, FAST));
    write_rows(dba, 0, n / 2);
    /* Mid-push, every server process stops: no answer, no error, no EOF. */
    int nproc = pgfx_signal_all(&f, SIGSTOP);
    uint64_t t0 = su_now_ms();
    CHECK(nproc >= 3); /* the postmaster, its background workers, backends */
    write_rows(dba, n / 2, n * 3 / 4);
    /* The relay answers while the server is still stopped, and says why. */
    uint64_t th = su_now_ms();
    int code = http_get(hp, "/healthz", 30000, body, sizeof body);
    uint64_t health_ms = su_now_ms() - th;
    printf("/healthz during the stall: %d %s(%llu ms)\n", code, body,
           (unsigned long long)health_ms);
    if (code != 503)
        su_print_file(rlog);
    CHECK_EQ_INT(code, 503);
    CHECK(strstr(body, "store unavailable"));
    CHECK(f.stopped);
    while (su_now_ms() - t0 < 3000)
        su_sleep_ms(50);
    CHECK_EQ_INT(pgfx_signal_all(&f, SIGCONT), nproc);
    uint64_t stall = su_now_ms() - t0, t1 = su_now_ms();
    while ((code = http_get(hp, "/healthz", 10000, body, sizeof body)) != 200 &&
           su_now_ms() - t1 < 30000)
        su_sleep_ms(20);
    uint64_t recover = su_now_ms() - t1;
    CHECK_EQ_INT(code, 200);
    write_rows(dba, n * 3 / 4, n);
    CHECK_OK(su_agent_start(&ag_b, b, relay.port, token, blog, FAST));
    wall_t w = {dba, dbb, n};
    await_all(&w, rlog, alog, blog);
    CHECK(su_wait(&relay.p, 0, &st) != 0); /* never restarted: still running */
    char *log = slurp(rlog);
    int outages = count_of(log, "store: PostgreSQL unreachable: ");
    long back = number_after(log, "store: PostgreSQL back after ");
    printf("stall %llu ms (%d processes stopped); /healthz healthy again %llu ms after SIGCONT; "
           "the relay logged %d outage(s), back after %ld ms; %d group commits failed\n",
           (unsigned long long)stall, nproc, (unsigned long long)recover, outages, back,
           count_of(log, "group commit failed"));
    if (outages != 1 || back < 0 || !strstr(log, "no answer"))
        su_print_file(rlog);
    CHECK_EQ_INT(outages, 1);
    CHECK(strstr(log, "no answer")); /* the deadline, not an error from the server */
    CHECK(back >= 0);
    free(log);
    CHECK_OK(su_kill(&ag_a, SIGTERM, 10000, &st));
    CHECK_OK(su_kill(&ag_b, SIGTERM, 10000, &st));
    same_digests(&f, a, b);
    sqlite3_close(dba);
    sqlite3_close(dbb);
    CHECK_OK(su_kill(&relay.p, SIGTERM, 10000, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* Devices, the identity index, memberships and REJECT's state, both       */
/* backends (store_pg.c design note 13)                                     */

/* One integer a query on the server answers (-1 when none). */
static long long pg_int(const pgfx_t *f, const char *sql)
{
    PGconn *c = PQconnectdb(f->conninfo);
    long long v = -1;
    CHECK(PQstatus(c) == CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

/* A schema tracking knit_profile (profile 1) or only items (0). */
static void schema_of(int profile, knit_schema_t *out)
{
    static const char *const pkeys[] = {"user_id"}, *const ikeys[] = {"id"};
    static const knit_schema_col_t pcols[] = {
        {"email", 0}, {"first_name", 0}, {"image_url", 0}, {"last_name", 0}, {"updated_at", 0}};
    static const knit_schema_col_t icols[] = {{"name", 0}, {"tags", 1}};
    static const knit_schema_table_t both[] = {{"items", ikeys, 1, icols, 2},
                                               {"knit_profile", pkeys, 1, pcols, 5}};
    memset(out, 0, sizeof *out);
    out->tables = both;
    out->ntables = profile ? 2 : 1;
    memset(out->fp, profile ? 0xa1 : 0xb2, sizeof out->fp);
}

/* Every output of identify, as text, to compare the backends. */
static char *ident_text(int rc, const knit_ident_result_t *r)
{
    sbuf_t t = {0};
    sb_add(&t,
           "rc=%d account=%s moved_from=%s merged_seq=%llu email=%s action=%d erased=%d "
           "stale=%d conflict=%d tracks=%d,%d new_row=%d changed=%x updated=%llu",
           rc, r->account, r->moved_from, (unsigned long long)r->merged_seq, r->email, r->action,
           r->erased, r->stale, r->email_conflict, r->tracks[0], r->tracks[1], r->new_row,
           r->changed, (unsigned long long)r->updated_ms);
    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
        sb_add(&t, " f%d=%s", f, r->field[f] ? r->field[f] : "(null)");
    return t.p;
}

typedef struct both_s {
    knit_relay_backend_t sq, pg; /* the two backends */
    knit_relay_store_t *sqs;     /* SQLite's store */
    knit_pg_store_t *pgs;        /* PostgreSQL's */
} both_t;

/* identify on both: the same answer, which is returned (SQLite's). */
static void ident_both(both_t *w, const char *id, const char *email, const char *first,
                       uint64_t updated, uint64_t now, char *text, size_t n)
{
    knit_ident_t in;
    knit_ident_result_t ra, rb;
    memset(&in, 0, sizeof in);
    in.id = id;
    in.email = email;
    in.field[KNIT_PROFILE_FIRST_NAME] = first;
    in.updated_ms = updated;
    int ca = w->sq.identify(w->sq.data, &in, now, &ra);
    int cb = w->pg.identify(w->pg.data, &in, now, &rb);
    char *ta = ident_text(ca, &ra), *tb = ident_text(cb, &rb);
    if (strcmp(ta, tb) != 0)
        fprintf(stderr, "identify %s <%s>:\n  SQLite     %s\n  PostgreSQL %s (%s)\n", id,
                email ? email : "", ta, tb, knit_pg_store_errmsg(w->pgs));
    CHECK_STR(ta, tb);
    snprintf(text, n, "%s", ta);
    free(ta);
    free(tb);
    knit_relay_ident_result_clear(&ra);
    knit_relay_ident_result_clear(&rb);
}

static void member_line(void *arg, const char *org, const char *role, int present,
                        uint64_t updated_ms)
{
    sb_add(arg, "%s/%s/%d/%llu;", org, role, present, (unsigned long long)updated_ms);
}

/* The memberships of account on both: the same list. */
static void members_both(both_t *w, const char *account, const char *want)
{
    sbuf_t a = {0}, b = {0};
    sb_add(&a, "%s", "");
    sb_add(&b, "%s", "");
    CHECK_OK(w->sq.memberships(w->sq.data, account, member_line, &a));
    CHECK_OK(w->pg.memberships(w->pg.data, account, member_line, &b));
    printf("memberships of %s: %s\n", account, b.p);
    CHECK_STR(a.p, b.p);
    CHECK_STR(b.p, want);
    free(a.p);
    free(b.p);
}

static void member_both(both_t *w, const char *org, const char *user, const char *account,
                        const char *role, int present, uint64_t updated, int want_stale)
{
    int sa = -1, sb = -1;
    CHECK_OK(knit_relay_store_membership(w->sqs, org, user, account, role, present, updated, &sa));
    CHECK_OK(knit_pg_store_membership(w->pgs, org, user, account, role, present, updated, &sb));
    CHECK_EQ_INT(sa, want_stale);
    CHECK_EQ_INT(sb, want_stale);
}

/* One push to both backends: the same answer (a refused one is refused by
** both, with the same code). */
static int commit_same(both_t *w, const char *ns, const knit_batch_t *b)
{
    knit_relay_push_t pa, pb;
    memset(&pa, 0, sizeof pa);
    memset(&pb, 0, sizeof pb);
    pa.ns = pb.ns = ns;
    pa.batch = pb.batch = b;
    CHECK_OK(w->sq.commit(w->sq.data, &pa, NULL, NULL));
    CHECK_OK(w->pg.commit(w->pg.data, &pb, NULL, NULL));
    if (pa.code || pb.code)
        printf("push to %s refused: SQLite %d %s, PostgreSQL %d %s\n", ns, pa.code, pa.msg, pb.code,
               pb.msg);
    CHECK_EQ_INT(pa.code, pb.code);
    CHECK_EQ_INT(pa.res.last_seq, pb.res.last_seq);
    knit_batch_free(pa.res.fanout);
    knit_batch_free(pb.res.fanout);
    return pa.code;
}

/* One push both backends take. */
static void commit_both(both_t *w, const char *ns, const knit_batch_t *b)
{
    CHECK_OK(commit_same(w, ns, b));
}

/* REJECT's state on both: the same cells, which are returned as text. */
static char *cells_both(both_t *w, const char *ns, const knit_batch_t *b, const size_t *idx,
                        size_t n)
{
    knit_batch_t *ca = NULL, *cb = NULL;
    CHECK_OK(w->sq.cells(w->sq.data, ns, b, idx, n, &ca));
    CHECK_OK(w->pg.cells(w->pg.data, ns, b, idx, n, &cb));
    char *ta = batch_text(ca), *tb = batch_text(cb);
    if (strcmp(ta, tb) != 0)
        fprintf(stderr, "cells differ:\nSQLite:\n%s\nPostgreSQL:\n%s\n", ta, tb);
    CHECK_STR(ta, tb);
    free(tb);
    knit_batch_free(ca);
    knit_batch_free(cb);
    return ta;
}

static void open_both(both_t *w, const pgfx_t *f, const char *path)
{
    CHECK_OK(knit_relay_store_open(path, 0, &w->sqs));
    w->pgs = pg_open(f);
    knit_relay_store_backend(w->sqs, &w->sq);
    knit_pg_store_backend(w->pgs, &w->pg);
    CHECK(w->pg.device_seen && w->pg.identify && w->pg.ident_dirty && w->pg.cells &&
          w->pg.memberships);
}

static void close_both(both_t *w)
{
    knit_relay_store_close(w->sqs);
    knit_pg_store_close(w->pgs);
    memset(w, 0, sizeof *w);
}

static void ident_same_as_sqlite(void)
{
    pgfx_t f;
    char path[600], t[2048];
    both_t w;
    knit_schema_t prof, plain;
    knit_site_t s1 = site_n(1), s2 = site_n(2);

    pgfx_start(&f);
    su_path(path, sizeof path, "relay.db");
    open_both(&w, &f, path);
    schema_of(1, &prof);
    schema_of(0, &plain);

    /* A device of user:p1 tracks knit_profile: the first sign-in makes the
    ** account and asks for its whole profile row. */
    CHECK_OK(w.sq.device_seen(w.sq.data, "user:p1", &s1, &prof, "agent/1", 1000));
    CHECK_OK(w.pg.device_seen(w.pg.data, "user:p1", &s1, &prof, "agent/1", 1000));
    ident_both(&w, "p1", " P1@Example.COM ", "Pat", 0, 2000, t, sizeof t);
    CHECK(strstr(t, "account=user:p1 ") && strstr(t, "action=1 ") && strstr(t, "new_row=1"));
    CHECK(strstr(t, "email=p1@example.com ") && strstr(t, "tracks=1,0"));
    ident_both(&w, "p1", NULL, NULL, 0, 2100, t, sizeof t);
    CHECK(strstr(t, "action=2 ") && strstr(t, "new_row=0"));
    /* The commit carrying the row failed: the next sign-in writes it whole. */
    CHECK_OK(w.sq.ident_dirty(w.sq.data, "user:p1"));
    CHECK_OK(w.pg.ident_dirty(w.pg.data, "user:p1"));
    ident_both(&w, "p1", NULL, NULL, 0, 2200, t, sizeof t);
    CHECK(strstr(t, "new_row=1"));
    /* Another provider id with the email: linked to the account. */
    ident_both(&w, "p2", "p1@example.com", NULL, 0, 2300, t, sizeof t);
    CHECK(strstr(t, "account=user:p1 ") && strstr(t, "action=3 "));
    /* Events: a later one applies, an older one is stale; a sign-in does not
    ** overwrite what an event set. */
    ident_both(&w, "p1", NULL, "Patricia", 5000, 2400, t, sizeof t);
    CHECK(strstr(t, "f1=Patricia") && strstr(t, "stale=0"));
    ident_both(&w, "p1", NULL, "Old", 4000, 2500, t, sizeof t);
    CHECK(strstr(t, "f1=Patricia") && strstr(t, "stale=1"));
    ident_both(&w, "p2", NULL, "FromToken", 0, 2600, t, sizeof t);
    CHECK(strstr(t, "f1=Patricia"));

    /* A provisional account (a sign-in without email) with data, then the
    ** email of another account: the id moves there with its cells. */
    ident_both(&w, "q2", "q@example.com", "Quinn", 0, 3000, t, sizeof t);
    ident_both(&w, "q1", NULL, NULL, 0, 3100, t, sizeof t);
    CHECK(strstr(t, "account=user:q1 ") && strstr(t, "action=1 "));
    {
        knit_batch_t *p = push_new("user:q1");
        CHECK_OK(knit_batch_begin(p, 1));
        add(p, 0, 7, 0, null_v(), 1, 10, 0);
        add(p, 0, 7, 1, ival(70), 1, 11, 0);
        commit_both(&w, "user:q1", p);
        knit_batch_free(p);
        p = push_new("user:q2");
        CHECK_OK(knit_batch_begin(p, 1));
        add(p, 0, 8, 0, null_v(), 1, 12, 1);
        commit_both(&w, "user:q2", p);
        knit_batch_free(p);
    }
    ident_both(&w, "q1", "Q@example.com", NULL, 0, 3200, t, sizeof t);
    CHECK(strstr(t, "account=user:q2 ") && strstr(t, "moved_from=user:q1 ") &&
          strstr(t, "action=3 ") && strstr(t, "merged_seq=2 "));
    {
        knit_digest_t da, db;
        CHECK_OK(knit_relay_store_digest(w.sqs, "user:q2", &da));
        CHECK_OK(knit_pg_store_digest(w.pgs, "user:q2", &db));
        CHECK(knit_digest_equal(&da, &db));
    }
    /* Both accounts real: the id stays, the email is not moved. */
    ident_both(&w, "p1", "q@example.com", NULL, 0, 3300, t, sizeof t);
    CHECK(strstr(t, "account=user:p1 ") && strstr(t, "conflict=1"));
    /* An erased account is not made again. */
    {
        size_t n = 0;
        knit_relay_store_erase_account(w.sqs, "user:gone", &n);
        CHECK(pg_int(&f, "INSERT INTO knit_meta VALUES('erased' || chr(31) || 'user:gone',"
                         " '1') RETURNING 1") == 1);
        ident_both(&w, "gone", "gone@example.com", NULL, 0, 3400, t, sizeof t);
        CHECK(strstr(t, "erased=1"));
    }
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident_id"), 4); /* p1 p2 q1 q2 */
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident"), 2);

    /* Memberships: deliveries out of order change nothing. */
    member_both(&w, "acme", "p1", "user:p1", "org:admin", 1, 100, 0);
    member_both(&w, "beta", "p2", "user:p1", "org:member", 1, 100, 0);
    member_both(&w, "acme", "p1", "user:p1", "org:admin", 0, 50, 1);
    member_both(&w, "beta", "p2", "user:p1", "org:member", 0, 200, 0);
    members_both(&w, "user:p1", "acme/org:admin/1/100;beta/org:member/0/200;");
    members_both(&w, "user:nobody", "");

    /* REJECT's state: the winning cells of refused changes' rows. */
    {
        knit_batch_t *p = push_new("user:p1"), *r;
        knit_orset_t tags;
        uint8_t *enc;
        size_t nenc;
        CHECK_OK(knit_batch_begin(p, 1));
        add(p, 0, 1, 0, null_v(), 1, 20, 0);
        add(p, 0, 1, 1, ival(11), 1, 21, 0);
        add(p, 0, 1, 3, ival(13), 1, 22, 1);
        knit_orset_init(&tags);
        {
            knit_value_t e = ival(5);
            CHECK_OK(knit_orset_add(&tags, 0, &e, NULL)); /* site 0 of push_new's */
        }
        CHECK_OK(knit_orset_encode(&tags, &enc, &nenc));
        {
            knit_value_t v;
            v.type = KNIT_BLOB;
            v.u.b.p = enc;
            v.u.b.n = nenc;
            add(p, 0, 1, 2, v, 1, 23, 0);
        }
        add(p, 0, 2, 0, null_v(), 1, 24, 2);
        add(p, 0, 2, 1, ival(21), 1, 25, 2);
        add(p, 1, 3, 0, null_v(), 1, 26, 3);
        commit_both(&w, "user:p1", p);
        knit_batch_free(p);
        knit__free(enc);
        knit_orset_free(&tags);
        /* The refused push: row 1's column a, row 2 whole (and its a, said
        ** once), a row and a table the relay never saw. */
        r = push_new("user:p1");
        CHECK_OK(knit_batch_begin(r, 1));
        add(r, 0, 1, 1, ival(99), 1, 30, 3); /* [0] */
        add(r, 0, 2, 0, null_v(), 2, 31, 3); /* [1] */
        add(r, 0, 2, 1, ival(98), 2, 32, 3); /* [2] */
        add(r, 0, 9, 1, ival(97), 1, 33, 3); /* [3] */
        add(r, 1, 4, 1, ival(96), 1, 34, 3); /* [4] */
        {
            size_t idx[] = {0, 1, 2, 3, 4};
            char *txt = cells_both(&w, "user:p1", r, idx, 5);
            printf("REJECT state (both):\n%s", txt);
            CHECK(strstr(txt, "unit 1\n"));
            CHECK_EQ_INT(count_of(txt, "user:p1 t "), 3); /* row 1's a; row 2's liveness, a */
            CHECK(strstr(txt, "col=a cl=1 hlc=21 "));
            CHECK(!strstr(txt, "col=b cl=1 hlc=22")); /* not refused */
            free(txt);
        }
        {
            size_t idx[] = {1};
            char *txt = cells_both(&w, "user:nobody", r, idx, 1);
            CHECK_STR(txt, ""); /* a namespace the relay never saw */
            free(txt);
        }
        knit_batch_free(r);
    }

    /* The device moves to a schema without knit_profile: tracks go, and the
    ** old schema, run by no device, is forgotten. */
    CHECK_OK(w.sq.device_seen(w.sq.data, "user:p1", &s1, &plain, "agent/2", 9000));
    CHECK_OK(w.pg.device_seen(w.pg.data, "user:p1", &s1, &plain, "agent/2", 9000));
    ident_both(&w, "p1", NULL, NULL, 0, 9100, t, sizeof t);
    CHECK(strstr(t, "tracks=0,0"));
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_schema_fp"), 1);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_schema_col"), 3);
    /* Seen again within a minute, nothing changed: nothing is written. */
    CHECK_OK(w.pg.device_seen(w.pg.data, "user:p1", &s1, &plain, "agent/2", 9500));
    CHECK_EQ_INT(pg_int(&f, "SELECT last_seen FROM knit_device"), 9000);
    CHECK_OK(w.pg.device_seen(w.pg.data, "user:p1", &s2, NULL, NULL, 9600));
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_device WHERE fp = ''::bytea"), 1);

    /* All of it survives a server restart. */
    knit_pg_store_close(w.pgs);
    pgfx_restart(&f, 200);
    w.pgs = pg_open(&f);
    knit_pg_store_backend(w.pgs, &w.pg);
    members_both(&w, "user:p1", "acme/org:admin/1/100;beta/org:member/0/200;");
    ident_both(&w, "p2", NULL, NULL, 0, 9700, t, sizeof t);
    CHECK(strstr(t, "account=user:p1 ") && strstr(t, "f1=Patricia"));
    ident_both(&w, "q1", NULL, NULL, 0, 9800, t, sizeof t);
    CHECK(strstr(t, "account=user:q2 "));
    /* Erasing a namespace forgets its devices (relay_store.c design note 9). */
    CHECK_OK(w.sq.erase(w.sq.data, "user:p1", NULL, NULL));
    CHECK_OK(w.pg.erase(w.pg.data, "user:p1", NULL, NULL));
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_device"), 0);
    close_both(&w);
    pgfx_stop(&f);
}

/* A database of schema 1 (before devices and the identity index) is
** upgraded in place at open, its cells kept. */
static void schema_upgrade(void)
{
    pgfx_t f;
    knit_pg_store_t *s;
    knit_relay_backend_t be;
    knit_ident_result_t r;
    knit_ident_t in;
    uint64_t seq;
    pgfx_start(&f);
    s = pg_open(&f);
    knit_pg_store_backend(s, &be);
    {
        knit_batch_t *p = push_new(NS);
        knit_relay_push_t g;
        CHECK_OK(knit_batch_begin(p, 1));
        add(p, 0, 1, 0, null_v(), 1, 10, 0);
        memset(&g, 0, sizeof g);
        g.ns = NS;
        g.batch = p;
        CHECK_OK(be.commit(be.data, &g, NULL, NULL));
        knit_batch_free(g.res.fanout);
        knit_batch_free(p);
    }
    knit_pg_store_close(s);
    /* Back to what a schema 1 relay made. */
    pg_int(&f, "DROP TABLE knit_schema_fp, knit_schema_col, knit_device, knit_ident,"
               " knit_ident_id, knit_membership");
    pg_int(&f, "UPDATE knit_meta SET value = '1' WHERE key = 'schema'");
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM pg_tables WHERE tablename = 'knit_ident'"), 0);
    s = pg_open(&f);
    knit_pg_store_backend(s, &be);
    CHECK_EQ_INT(pg_int(&f, "SELECT convert_from(value, 'UTF8')::int FROM knit_meta"
                            " WHERE key = 'schema'"),
                 KNIT_PG_SCHEMA_VERSION);
    CHECK_OK(be.seq(be.data, NS, &seq));
    CHECK_EQ_INT(seq, 1);
    memset(&in, 0, sizeof in);
    in.id = "alice";
    CHECK_OK(be.identify(be.data, &in, 1000, &r));
    CHECK_STR(r.account, NS);
    CHECK_EQ_INT(r.action, KNIT_IDENT_CREATED);
    knit_relay_ident_result_clear(&r);
    knit_pg_store_close(s);
    /* A second open finds the current version: nothing to do. */
    s = pg_open(&f);
    knit_pg_store_close(s);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident"), 1);
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* End to end on PostgreSQL: REJECT's state, identity and memberships     */
/* across a relay restart                                                   */

#define ITEMS "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER);"

typedef struct wv_s {
    const char *path; /* the replica */
    const char *sql;  /* what */
    int64_t want;     /* the value awaited */
} wv_t;

static int value_is(void *arg)
{
    wv_t *q = arg;
    sqlite3 *db = su_db(q->path);
    int64_t v = su_int(db, "%s", q->sql);
    sqlite3_close(db);
    return v == q->want;
}

static void await_value(const char *path, const char *sql, int64_t want, const char *const *logs)
{
    wv_t q = {path, sql, want};
    if (!su_wait_until(value_is, &q, 20000)) {
        sqlite3 *db = su_db(path);
        fprintf(stderr, "timed out waiting for %s == %lld (is %lld)\n", sql, (long long)want,
                (long long)su_int(db, "%s", sql));
        sqlite3_close(db);
        for (size_t i = 0; logs[i]; i++)
            su_print_file(logs[i]);
        CHECK(0);
    }
}

static int64_t rep_int(const char *path, const char *sql)
{
    sqlite3 *db = su_db(path);
    int64_t v = su_int(db, "%s", sql);
    sqlite3_close(db);
    return v;
}

static void rep_exec(const char *path, const char *sql)
{
    sqlite3 *db = su_db(path);
    su_exec(db, "%s", sql);
    sqlite3_close(db);
}

static uint64_t wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t hour_ahead(void *data)
{
    (void)data;
    return wall_now_ms() + 3600 * 1000;
}

static void stop_proc(su_proc_t *p)
{
    int st;
    if (!p->pid)
        return;
    CHECK_OK(su_kill(p, SIGTERM, 10000, &st));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        su_print_file(p->log);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    p->pid = 0;
}

/* test_reject_it.c's case with the relay on PostgreSQL: a write stamped an
** hour ahead is refused, and the replica's rollback restores the relay's
** value, which only REJECT's state (the backend's cells) can tell it. */
static void reject_state(void)
{
    pgfx_t f;
    su_relay_t relay;
    su_proc_t ag_a, ag_b;
    char data[600], secret[600], token[600], a[600], b[600], alog[600], blog[600], rlog[700];
    static const char *const FAST[] = {"--backoff-max", "500", NULL};
    knit_options_t o = {0};
    knit_t *k = NULL;

    pgfx_start(&f);
    su_path(data, sizeof data, "relay");
    su_path(secret, sizeof secret, "secret");
    su_path(token, sizeof token, "alice.jwt");
    su_path(a, sizeof a, "a.db");
    su_path(b, sizeof b, "b.db");
    su_path(alog, sizeof alog, "agent-a.log");
    su_path(blog, sizeof blog, "agent-b.log");
    snprintf(rlog, sizeof rlog, "%s.log", data);
    const char *logs[] = {alog, blog, rlog, NULL};
    CHECK_OK(su_write_secret(secret));
    CHECK_OK(su_write_token(secret, "alice", token));
    const char *extra[] = {"--store", f.uri, NULL};
    CHECK_OK(su_relay_start(&relay, 0, data, secret, extra));
    su_make_replica(a, ITEMS, "items");
    su_make_replica(b, ITEMS, "items");
    rep_exec(a, "INSERT INTO items VALUES ('base', 'base-name', 1)");
    CHECK_OK(su_agent_start(&ag_a, a, relay.port, token, alog, FAST));
    CHECK_OK(su_agent_start(&ag_b, b, relay.port, token, blog, FAST));
    await_value(b, "SELECT count(*) FROM items WHERE id = 'base'", 1, logs);
    stop_proc(&ag_a);
    /* Offline, A's clock an hour ahead: an insert and an update. */
    o.clock = hour_ahead;
    CHECK_OK(knit_open(a, &o, &k));
    CHECK_EQ_INT(sqlite3_exec(knit_db(k),
                              "INSERT INTO items VALUES ('skewed', 'future', 2);"
                              "UPDATE items SET name = 'future-edit' WHERE id = 'base';",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    CHECK(knit_stamp(k) > 0); /* stamped now, by the clock ahead */
    knit_close(k);
    rep_exec(a, "INSERT INTO items VALUES ('after', 'normal', 3)");
    CHECK_OK(su_agent_start(&ag_a, a, relay.port, token, alog, FAST));
    await_value(b, "SELECT count(*) FROM items WHERE id = 'after'", 1, logs);
    await_value(a, "SELECT count(*) FROM _knit_rejected WHERE rolled_back = 1", 4, logs);
    /* The insert is gone; the update reverted to the relay's value, the
    ** state REJECT carried from PostgreSQL. */
    CHECK_EQ_INT(rep_int(a, "SELECT count(*) FROM items WHERE id = 'skewed'"), 0);
    if (rep_int(a, "SELECT count(*) FROM items WHERE id = 'base' AND name = 'base-name'") != 1) {
        sqlite3 *db = su_db(a);
        char *d = su_dump(db, "items", "id");
        fprintf(stderr, "A's items: %s\n", d);
        free(d);
        sqlite3_close(db);
        su_print_file(alog);
    }
    CHECK_EQ_INT(rep_int(a, "SELECT count(*) FROM items WHERE id = 'base' AND name = 'base-name'"),
                 1);
    CHECK(su_file_has(alog, "rejected write rolled back: table items key ('base') column "
                            "name: KNIT_ECLOCKSKEW"));
    /* Later writes sync, and everyone agrees with the relay. */
    rep_exec(a, "UPDATE items SET qty = 9 WHERE id = 'base'");
    await_value(b, "SELECT qty FROM items WHERE id = 'base'", 9, logs);
    stop_proc(&ag_a);
    stop_proc(&ag_b);
    same_digests(&f, a, b);
    stop_proc(&relay.p);
    pgfx_stop(&f);
}

static int run_once(int port, const char *path, const char *token)
{
    char url[64], out[16384];
    snprintf(url, sizeof url, "127.0.0.1:%d", port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",    path,        "--relay", url, "--token-file",
                          token,           "--once", "--timeout", "15",      NULL};
    int rc = su_run(argv, 40000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "sync-agent run --once (%d): %s\n", rc, out);
    return rc;
}

#define DOCS "CREATE TABLE docs(id TEXT PRIMARY KEY, body TEXT, org_id TEXT);"

static void docs_replica(const char *path)
{
    char out[2048];
    sqlite3 *db = su_db(path);
    su_exec(db, "%s", DOCS);
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, "docs", "--ns", "org_id", NULL};
    CHECK_EQ_INT(su_run(argv, 20000, out, sizeof out), 0);
}

static void relay_on_pg(su_relay_t *r, const pgfx_t *f, const char *data, const char *jwks)
{
    const char *extra[] = {"--store", f->uri, "--jwks-file", jwks, "--issuer", IDP_ISS, NULL};
    CHECK_OK(su_relay_start(r, 0, data, NULL, extra));
}

/* One account per person and organization memberships, kept in
** PostgreSQL: a sign-in with an email before a relay restart, another
** provider id with that email after it, lands in the same account; a
** membership recorded in the store grants its organization after the
** restart (the token names none). */
static void identity_restart(void)
{
    pgfx_t f;
    su_relay_t relay;
    char data[600], jwks[700], ta[600], tb[600], tm[600], tw[600], ra[600], rb[600], rm[600],
        rw[600];
    const char *dir = su_tmpdir();
    knit_pg_store_t *s;
    int stale = -1;

    pgfx_start(&f);
    idp_keys(dir, jwks, sizeof jwks);
    su_path(data, sizeof data, "relay");
    su_path(ta, sizeof ta, "a1.jwt");
    su_path(tb, sizeof tb, "b2.jwt");
    su_path(tm, sizeof tm, "m.jwt");
    su_path(tw, sizeof tw, "w.jwt");
    idp_mint(dir, "user_a1", "{\"email\":\"pat@example.test\",\"first_name\":\"Pat\"}", ta);
    idp_mint(dir, "user_b2", "{\"email\":\" Pat@Example.TEST \"}", tb);
    idp_mint(dir, "user_m", "{\"o\":{\"id\":\"acme\",\"rol\":\"admin\"}}", tm);
    idp_mint(dir, "user_w", NULL, tw); /* no organization in the token */
    su_path(ra, sizeof ra, "a.db");
    su_path(rb, sizeof rb, "b.db");
    su_path(rm, sizeof rm, "m.db");
    su_path(rw, sizeof rw, "w.db");
    docs_replica(ra);
    docs_replica(rb);
    docs_replica(rm);
    docs_replica(rw);

    relay_on_pg(&relay, &f, data, jwks);
    rep_exec(ra, "INSERT INTO docs VALUES ('p1', 'personal', NULL)");
    CHECK_OK(run_once(relay.port, ra, ta));
    rep_exec(rm, "INSERT INTO docs VALUES ('s1', 'shared', 'acme')");
    CHECK_OK(run_once(relay.port, rm, tm));
    CHECK_OK(run_once(relay.port, rw, tw));
    CHECK_EQ_INT(rep_int(rw, "SELECT count(*) FROM docs WHERE id = 's1'"), 0); /* not a member */
    /* The identity index and the devices are in PostgreSQL. */
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident WHERE account = 'user:user_a1'"
                            " AND email = 'pat@example.test'"),
                 1);
    CHECK(pg_int(&f, "SELECT count(*) FROM knit_device d JOIN knit_schema_col c ON c.fp = d.fp"
                     " WHERE d.principal = 'user:user_a1' AND c.tbl = 'docs'") >= 1);
    /* A membership, as a webhook would record it (an older removal after
    ** it is stale). */
    s = pg_open(&f);
    CHECK_OK(knit_pg_store_membership(s, "acme", "user_w", "user:user_w", "org:member", 1,
                                      wall_now_ms(), &stale));
    CHECK_EQ_INT(stale, 0);
    CHECK_OK(knit_pg_store_membership(s, "acme", "user_w", "user:user_w", "org:member", 0, 1000,
                                      &stale));
    CHECK_EQ_INT(stale, 1);
    knit_pg_store_close(s);

    stop_proc(&relay.p);
    relay_on_pg(&relay, &f, data, jwks);
    /* Another provider id with the email (in another case): the same
    ** account, whose data it gets. */
    CHECK_OK(run_once(relay.port, rb, tb));
    CHECK_EQ_INT(rep_int(rb, "SELECT count(*) FROM docs WHERE id = 'p1'"), 1);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident_id WHERE account = 'user:user_a1'"),
                 2);
    /* The member by store alone gets and writes acme's rows. */
    CHECK_OK(run_once(relay.port, rw, tw));
    CHECK_EQ_INT(rep_int(rw, "SELECT count(*) FROM docs WHERE id = 's1'"), 1);
    rep_exec(rw, "INSERT INTO docs VALUES ('w1', 'from w', 'acme')");
    CHECK_OK(run_once(relay.port, rw, tw));
    CHECK_EQ_INT(rep_int(rw, "SELECT count(*) FROM _knit_rejected"), 0);
    CHECK_OK(run_once(relay.port, rm, tm));
    CHECK_EQ_INT(rep_int(rm, "SELECT count(*) FROM docs WHERE id = 'w1'"), 1);
    stop_proc(&relay.p);
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* Signed webhooks and erasure on PostgreSQL                                */

#define PROFILE_SCHEMA                                                                             \
    "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"                                          \
    "CREATE TABLE knit_profile(user_id TEXT PRIMARY KEY, email TEXT, first_name TEXT,"             \
    " last_name TEXT, image_url TEXT, updated_at INTEGER);"                                        \
    "CREATE TABLE knit_activity(id TEXT PRIMARY KEY, user TEXT, action TEXT, at INTEGER,"          \
    " source TEXT);"

/* A replica tracking items and the relay's two system tables. */
static void profile_replica(const char *path)
{
    char out[2048];
    su_make_replica(path, PROFILE_SCHEMA, "items");
    const char *t1[] = {SYNC_AGENT_PATH, "track", path, "knit_profile", NULL};
    const char *t2[] = {SYNC_AGENT_PATH, "track", path, "knit_activity", NULL};
    CHECK_EQ_INT(su_run(t1, 20000, out, sizeof out), 0);
    CHECK_EQ_INT(su_run(t2, 20000, out, sizeof out), 0);
}

/* relay_on_pg, plus signed webhooks (idp_util.h's secret) on HTTP port *hp. */
static void relay_pg_webhooks(su_relay_t *r, const pgfx_t *f, const char *data, const char *jwks,
                              int *hp)
{
    char whf[600], hl[64];
    FILE *w;
    su_path(whf, sizeof whf, "whsec");
    CHECK((w = fopen(whf, "w")) != NULL);
    fprintf(w, "%s\n", IDP_WHSEC);
    fclose(w);
    chmod(whf, 0600);
    *hp = su_free_port();
    snprintf(hl, sizeof hl, "127.0.0.1:%d", *hp);
    const char *extra[] = {
        "--store",       f->uri, "--jwks-file",           jwks, "--issuer", IDP_ISS,
        "--http-listen", hl,     "--webhook-secret-file", whf,  NULL};
    CHECK_OK(su_relay_start(r, 0, data, NULL, extra));
}

/* POSTs a signed delivery (idp_util.h); the status, the answer in out. */
static int wh_post(int hp, const char *id, const char *body, char *out, size_t n)
{
    int st = idp_deliver(hp, id, body, out, n);
    fprintf(stderr, "webhook %s: %d %s\n", id, st, out);
    return st;
}

/* user.created then user.updated on a relay on PostgreSQL: the index and
** the knit_profile row follow, and reach a device that is online on a
** second relay on the same database (NOTIFY); a stale update and a
** repeated delivery id (with a newer body) change nothing; session.created
** writes an activity row the same way. */
static void webhook_profile_pg(void)
{
    pgfx_t f;
    su_relay_t ra, rb;
    su_proc_t agent;
    char data[600], datab[600], jwks[700], tok[600], rep[600], alog[700], body[2048], out[1024];
    const char *dir = su_tmpdir();
    int hp, st;

    pgfx_start(&f);
    idp_keys(dir, jwks, sizeof jwks);
    su_path(data, sizeof data, "relay-a");
    su_path(datab, sizeof datab, "relay-b");
    su_path(tok, sizeof tok, "u.jwt");
    su_path(rep, sizeof rep, "a.db");
    snprintf(alog, sizeof alog, "%s/agent.log", dir);
    idp_mint(dir, "user_u", "{\"email\":\"u@x.test\",\"first_name\":\"FromToken\"}", tok);
    profile_replica(rep);
    relay_pg_webhooks(&ra, &f, data, jwks, &hp);
    relay_on_pg(&rb, &f, datab, jwks);
    const char *logs[] = {ra.p.log, rb.p.log, alog, NULL};

    /* The device is online on relay B; the webhooks go to relay A. */
    CHECK_OK(su_agent_start(&agent, rep, rb.port, tok, alog, NULL));
    await_value(rep, "SELECT count(*) FROM knit_profile WHERE first_name = 'FromToken'", 1, logs);
    idp_user_body(body, sizeof body, "user.created", "user_u", "u@x.test", "Ann", 1700000001000);
    CHECK_EQ_INT(wh_post(hp, "msg_c1", body, out, sizeof out), 200);
    CHECK(strstr(out, "recorded for user:user_u") != NULL);
    idp_user_body(body, sizeof body, "user.updated", "user_u", "u.new@x.test", "New",
                  1700000003000);
    CHECK_EQ_INT(wh_post(hp, "msg_u3", body, out, sizeof out), 200);
    CHECK(strstr(out, "rows written") != NULL);
    /* Relay A wrote the row; relay B's subscriber hears of it (NOTIFY). */
    await_value(rep,
                "SELECT count(*) FROM knit_profile WHERE first_name = 'New' AND"
                " email = 'u.new@x.test' AND last_name = 'Doe' AND updated_at = 1700000003000",
                1, logs);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident WHERE account = 'user:user_u'"
                            " AND first_name = 'New' AND email = 'u.new@x.test'"),
                 1);

    /* An older update delivered late changes nothing. */
    idp_user_body(body, sizeof body, "user.updated", "user_u", "u.old@x.test", "Old",
                  1700000002000);
    CHECK_EQ_INT(wh_post(hp, "msg_u2", body, out, sizeof out), 200);
    CHECK(strstr(out, "stale") != NULL);
    /* A retry of a delivery id, even with another body, changes nothing. */
    idp_user_body(body, sizeof body, "user.updated", "user_u", "u.dup@x.test", "Dup",
                  1700000009000);
    CHECK_EQ_INT(wh_post(hp, "msg_u3", body, out, sizeof out), 200);
    CHECK(strstr(out, "duplicate delivery msg_u3: already applied") != NULL);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_webhook"), 3);
    CHECK_EQ_INT(pg_int(&f, "SELECT updated FROM knit_webhook_user WHERE user_id = 'user_u'"),
                 1700000003000LL);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident WHERE account = 'user:user_u'"
                            " AND first_name = 'New' AND email = 'u.new@x.test'"),
                 1);

    /* session.created: an activity row, live on relay B too. */
    static const char session[] =
        "{\"type\":\"session.created\",\"data\":{\"id\":\"sess_1\",\"user_id\":\"user_u\","
        "\"created_at\":1700000004000}}";
    CHECK_EQ_INT(wh_post(hp, "msg_s1", session, out, sizeof out), 200);
    await_value(rep,
                "SELECT count(*) FROM knit_activity WHERE id = 'sess_1' AND user = 'user_u'"
                " AND action = 'session.created' AND source = 'clerk'",
                1, logs);
    su_sleep_ms(500);
    CHECK_EQ_INT(rep_int(rep, "SELECT count(*) FROM knit_profile WHERE first_name = 'New'"
                              " AND email = 'u.new@x.test'"),
                 1);
    CHECK_OK(su_kill(&agent, SIGTERM, 10000, &st));
    stop_proc(&rb.p);

    /* One delivery sent to two relays on the database at once: applied by
    ** one, a duplicate for the other (the id is read under the lock). */
    {
        char ca[4096], cb[4096], oa[700], ob[700], both[8400], codes[256], ta[1024], tb[1024];
        int hpb;
        relay_pg_webhooks(&rb, &f, datab, jwks, &hpb);
        idp_user_body(body, sizeof body, "user.updated", "user_u", "u.new@x.test", "Twice",
                      1700000005000);
        idp_deliver_cmd(hp, "msg_twice", body, ca, sizeof ca, oa, sizeof oa);
        idp_deliver_cmd(hpb, "msg_twice", body, cb, sizeof cb, ob, sizeof ob);
        /* The second curl answers into a file of its own. */
        char *at = strstr(cb, ob);
        CHECK(at != NULL);
        snprintf(both, sizeof both, "(%s) & (%.*s%s.b%s) & wait", ca, (int)(at - cb), cb, ob,
                 at + strlen(ob));
        const char *sh[] = {"/bin/sh", "-c", both, NULL};
        CHECK_EQ_INT(su_run(sh, 30000, codes, sizeof codes), 0);
        CHECK(strncmp(codes, "200", 3) == 0 && strstr(codes + 3, "200") != NULL);
        strcat(ob, ".b");
        FILE *fa = fopen(oa, "r"), *fb = fopen(ob, "r");
        CHECK(fa != NULL && fb != NULL);
        ta[fread(ta, 1, sizeof ta - 1, fa)] = '\0';
        tb[fread(tb, 1, sizeof tb - 1, fb)] = '\0';
        fclose(fa);
        fclose(fb);
        fprintf(stderr, "twice: %s | %s\n", ta, tb);
        CHECK_EQ_INT((strstr(ta, "duplicate") != NULL) + (strstr(tb, "duplicate") != NULL), 1);
        CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_webhook WHERE id = 'msg_twice'"), 1);
        stop_proc(&rb.p);
    }
    stop_proc(&ra.p);
    pgfx_stop(&f);
}

/* user.deleted on PostgreSQL erases the account (its data, identity and
** the tombstone that refuses its tokens, as on SQLite); a retry of it is a
** duplicate; user.created lets the user sign in again.  And an
** organizationMembership.created grants the organization's namespace. */
static void webhook_erase_pg(void)
{
    pgfx_t f;
    su_relay_t relay;
    char data[600], jwks[700], td[600], rd[600], rd2[600], tm[600], tw[600], rm[600], rw[600],
        out[1024];
    const char *dir = su_tmpdir();
    int hp;

    pgfx_start(&f);
    idp_keys(dir, jwks, sizeof jwks);
    su_path(data, sizeof data, "relay");
    su_path(td, sizeof td, "d.jwt");
    su_path(tm, sizeof tm, "m.jwt");
    su_path(tw, sizeof tw, "w.jwt");
    su_path(rd, sizeof rd, "d.db");
    su_path(rd2, sizeof rd2, "d2.db");
    su_path(rm, sizeof rm, "m.db");
    su_path(rw, sizeof rw, "w.db");
    idp_mint(dir, "user_d", "{\"email\":\"d@x.test\"}", td);
    idp_mint(dir, "user_m", "{\"o\":{\"id\":\"acme\",\"rol\":\"admin\"}}", tm);
    idp_mint(dir, "user_w", NULL, tw); /* no organization in the token */
    docs_replica(rd);
    docs_replica(rd2);
    docs_replica(rm);
    docs_replica(rw);
    relay_pg_webhooks(&relay, &f, data, jwks, &hp);

    rep_exec(rd, "INSERT INTO docs VALUES ('d1', 'secret of d', NULL)");
    CHECK_OK(run_once(relay.port, rd, td));
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_cell c JOIN knit_ns n ON n.id = c.ns"
                            " WHERE n.name = 'user:user_d'") > 0,
                 1);
    static const char deleted[] =
        "{\"data\":{\"deleted\":true,\"id\":\"user_d\",\"object\":\"user\"},"
        "\"object\":\"event\",\"type\":\"user.deleted\"}";
    CHECK_EQ_INT(wh_post(hp, "msg_del", deleted, out, sizeof out), 200);
    CHECK(strstr(out, "erased 1 namespace") != NULL);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ns WHERE name = 'user:user_d'"), 0);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident_id WHERE id = 'user_d'"), 0);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident WHERE email = 'd@x.test'"), 0);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_meta"
                            " WHERE key = 'erased' || chr(31) || 'user:user_d'"),
                 1);
    /* Its tokens are refused, as on SQLite (exit 4: erased, final). */
    CHECK_EQ_INT(run_once(relay.port, rd2, td), 4);
    CHECK_EQ_INT(rep_int(rd2, "SELECT count(*) FROM docs"), 0);
    /* The provider makes the user again: it signs in, to an empty account. */
    static const char created[] =
        "{\"data\":{\"id\":\"user_d\",\"object\":\"user\",\"updated_at\":1700000000000},"
        "\"object\":\"event\",\"type\":\"user.created\"}";
    CHECK_EQ_INT(wh_post(hp, "msg_cre", created, out, sizeof out), 200);
    CHECK(strstr(out, "may sign in again") != NULL);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_meta"
                            " WHERE key = 'erased' || chr(31) || 'user:user_d'"),
                 0);
    /* A retry of the deletion is a duplicate: it erases nothing again. */
    CHECK_EQ_INT(wh_post(hp, "msg_del", deleted, out, sizeof out), 200);
    CHECK(strstr(out, "duplicate") != NULL);
    CHECK_OK(run_once(relay.port, rd2, td));
    CHECK_EQ_INT(rep_int(rd2, "SELECT count(*) FROM docs WHERE id = 'd1'"), 0);

    /* organizationMembership.created: user_w (no organization in its
    ** token) gets acme's rows. */
    rep_exec(rm, "INSERT INTO docs VALUES ('s1', 'shared', 'acme')");
    CHECK_OK(run_once(relay.port, rm, tm));
    CHECK_OK(run_once(relay.port, rw, tw));
    CHECK_EQ_INT(rep_int(rw, "SELECT count(*) FROM docs WHERE id = 's1'"), 0);
    static const char member[] =
        "{\"type\":\"organizationMembership.created\",\"data\":{\"id\":\"orgmem_1\","
        "\"object\":\"organization_membership\",\"role\":\"org:member\",\"organization\":{"
        "\"id\":\"acme\",\"name\":\"Acme\"},\"public_user_data\":{\"user_id\":\"user_w\"},"
        "\"created_at\":1700000000000,\"updated_at\":1700000001000}}";
    CHECK_EQ_INT(wh_post(hp, "msg_mem", member, out, sizeof out), 200);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_membership WHERE org = 'acme'"
                            " AND user_id = 'user_w' AND account = 'user:user_w' AND present = 1"),
                 1);
    CHECK_OK(run_once(relay.port, rw, tw));
    CHECK_EQ_INT(rep_int(rw, "SELECT count(*) FROM docs WHERE id = 's1'"), 1);
    stop_proc(&relay.p);
    pgfx_stop(&f);
}

/* sync-relay erase --store postgresql://...: by a later provider id of the
** account, its namespace and the anonymous one it claimed, its identity
** and memberships; the tombstone refuses it; a second erase exits 3;
** --undo removes the tombstone. */
static void erase_cli_pg(void)
{
    pgfx_t f;
    knit_pg_store_t *s;
    knit_relay_backend_t be;
    knit_relay_merged_t m;
    knit_ident_result_t r;
    knit_ident_t in;
    char out[4096];
    int is = -1, stale = -1;

    pgfx_start(&f);
    s = pg_open(&f);
    knit_pg_store_backend(s, &be);
    memset(&in, 0, sizeof in);
    in.id = "sub1";
    in.email = "e@x.test";
    CHECK_OK(be.identify(be.data, &in, 1000, &r));
    CHECK_STR(r.account, "user:sub1");
    knit_relay_ident_result_clear(&r);
    in.id = "sub2"; /* the same person's later id: linked by email */
    CHECK_OK(be.identify(be.data, &in, 2000, &r));
    CHECK_STR(r.account, "user:sub1");
    knit_relay_ident_result_clear(&r);
    CHECK_OK(
        knit_pg_store_membership(s, "acme", "sub1", "user:sub1", "org:member", 1, 1000, &stale));
    for (int k = 0; k < 3; k++) {
        const char *ns = k == 0 ? "user:sub1" : k == 1 ? "anon:z" : "user:other";
        knit_batch_t *p = push_new(ns);
        knit_relay_push_t g;
        CHECK_OK(knit_batch_begin(p, 1));
        add(p, 0, 1, 0, null_v(), 1, 10 + (uint64_t)k, 0);
        memset(&g, 0, sizeof g);
        g.ns = ns;
        g.batch = p;
        CHECK_OK(be.commit(be.data, &g, NULL, NULL));
        knit_batch_free(g.res.fanout);
        knit_batch_free(p);
    }
    CHECK_OK(be.merge(be.data, "anon:z", "user:sub1", 100, &m, NULL, NULL));
    knit_pg_store_close(s);

    const char *erase[] = {SYNC_RELAY_PATH, "erase", "--store", f.uri, "--user", "sub2", NULL};
    CHECK_EQ_INT(su_run(erase, 20000, out, sizeof out), 0);
    fprintf(stderr, "%s", out);
    CHECK(strstr(out, "sub2 belongs to account user:sub1") != NULL);
    CHECK(strstr(out, "erased user:sub1 (2 namespaces") != NULL);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ns WHERE name IN ('user:sub1', 'anon:z')"),
                 0);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ns WHERE name = 'user:other'"), 1);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident_id"), 0);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_ident"), 0);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_membership"), 0);
    s = pg_open(&f);
    knit_pg_store_backend(s, &be);
    CHECK_OK(be.erased(be.data, "user:sub1", &is));
    CHECK_EQ_INT(is, 1);
    in.id = "sub1";
    CHECK_OK(be.identify(be.data, &in, 3000, &r));
    CHECK_EQ_INT(r.erased, 1); /* not made again */
    knit_relay_ident_result_clear(&r);
    knit_pg_store_close(s);
    /* Nothing left to erase: exit 3, the tombstone kept. */
    const char *again[] = {SYNC_RELAY_PATH, "erase", "--store", f.uri, "--user", "sub1", NULL};
    CHECK_EQ_INT(su_run(again, 20000, out, sizeof out), 3);
    const char *undo[] = {SYNC_RELAY_PATH, "erase",  "--undo", "--store",
                          f.uri,           "--user", "sub1",   NULL};
    CHECK_EQ_INT(su_run(undo, 20000, out, sizeof out), 0);
    CHECK(strstr(out, "tombstone removed") != NULL);
    CHECK_EQ_INT(su_run(undo, 20000, out, sizeof out), 0);
    CHECK(strstr(out, "was not erased") != NULL);
    s = pg_open(&f);
    knit_pg_store_backend(s, &be);
    CHECK_OK(be.erased(be.data, "user:sub1", &is));
    CHECK_EQ_INT(is, 0);
    knit_pg_store_close(s);
    const char *help[] = {SYNC_RELAY_PATH, "--help", NULL};
    CHECK_EQ_INT(su_run(help, 20000, out, sizeof out), 0);
    CHECK(strstr(out, "erase [--undo] (--data PATH | --store URI)") != NULL);
    pgfx_stop(&f);
}

/* A schema 2 database gets the webhook tables at open; the seam then
** records deliveries, reads them back, and a rolled-back delivery leaves
** nothing. */
static void schema_upgrade_v2(void)
{
    pgfx_t f;
    knit_pg_store_t *s;
    knit_webhook_store_t w;
    int seen = -1, stale = -1;

    pgfx_start(&f);
    s = pg_open(&f);
    knit_pg_store_close(s);
    pg_int(&f, "DROP TABLE knit_webhook, knit_webhook_user");
    pg_int(&f, "UPDATE knit_meta SET value = '2' WHERE key = 'schema'");
    s = pg_open(&f);
    CHECK_EQ_INT(pg_int(&f, "SELECT convert_from(value, 'UTF8')::int FROM knit_meta"
                            " WHERE key = 'schema'"),
                 KNIT_PG_SCHEMA_VERSION);
    CHECK_EQ_INT(KNIT_PG_SCHEMA_VERSION, 3);
    knit_pg_store_webhooks(s, &w);
    CHECK_EQ_INT(w.erase_in_txn, 1);
    CHECK_OK(w.begin(w.data));
    CHECK_OK(w.seen(w.data, "msg_1", &seen));
    CHECK_EQ_INT(seen, 0);
    CHECK_OK(w.record(w.data, "msg_1", "user_a", 2000, &stale));
    CHECK_EQ_INT(stale, 0);
    CHECK_OK(w.commit(w.data));
    /* Rolled back: not recorded. */
    CHECK_OK(w.begin(w.data));
    CHECK_OK(w.record(w.data, "msg_2", "user_a", 3000, &stale));
    w.rollback(w.data);
    CHECK_OK(w.begin(w.data));
    CHECK_OK(w.seen(w.data, "msg_1", &seen));
    CHECK_EQ_INT(seen, 1);
    CHECK_OK(w.seen(w.data, "msg_2", &seen));
    CHECK_EQ_INT(seen, 0);
    CHECK_OK(w.record(w.data, "msg_0", "user_a", 1000, &stale));
    CHECK_EQ_INT(stale, 1); /* older than msg_1's */
    CHECK_OK(w.commit(w.data));
    CHECK_EQ_INT(pg_int(&f, "SELECT updated FROM knit_webhook_user WHERE user_id = 'user_a'"),
                 2000);
    CHECK_EQ_INT(pg_int(&f, "SELECT count(*) FROM knit_webhook"), 2);
    knit_pg_store_close(s);
    pgfx_stop(&f);
}

/* ---------------------------------------------------------------------- */
/* sync-inspect on PostgreSQL                                               */

/* s with every occurrence of from replaced by to (malloc'd). */
static char *replace_all(const char *s, const char *from, const char *to)
{
    size_t n = strlen(from), len = 0;
    char *out = malloc(strlen(s) * (strlen(to) + 1) + 1); /* enough when n >= 1 */
    CHECK(out != NULL && n > 0);
    for (const char *p; (p = strstr(s, from)) != NULL; s = p + n) {
        memcpy(out + len, s, (size_t)(p - s));
        len += (size_t)(p - s);
        memcpy(out + len, to, strlen(to));
        len += strlen(to);
    }
    memcpy(out + len, s, strlen(s) + 1);
    return out;
}

/* sync-inspect ARGS with STORE replaced by store; the exit code, and the
** output (stdout and stderr) with store replaced by "STORE" (malloc'd). */
static int inspect_on(const char *const *args, const char *store, char **out)
{
    const char *argv[10] = {SYNC_INSPECT_PATH};
    char buf[65536];
    int i, rc;
    for (i = 0; args[i] && i < 8; i++)
        argv[i + 1] = strcmp(args[i], "STORE") == 0 ? store : args[i];
    argv[i + 1] = NULL;
    rc = su_run(argv, 30000, buf, sizeof buf);
    *out = replace_all(buf, store, "STORE");
    return rc;
}

/* A database on f's server: created empty, its URI into uri. */
static void empty_db(const pgfx_t *f, const char *name, char *uri, size_t n)
{
    char sql[128];
    PGconn *c = PQconnectdb(f->conninfo);
    PGresult *r;
    CHECK(PQstatus(c) == CONNECTION_OK);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    r = PQexec(c, sql);
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    snprintf(uri, n, "postgresql://knit@/%s?host=%s&port=5432", name, f->dir);
}

static void inspect_cli_pg(void)
{
    static const char *const listings[][6] = {
        {"relay", "STORE", NULL},
        {"relay", "--json", "STORE", NULL},
        {"relay", "STORE", "schemas", NULL},
        {"relay", "--json", "STORE", "schemas", NULL},
        {"digest", "STORE", NULL},
        {"digest", "--json", "STORE", NULL},
        {"digest", "--ns", NS, "STORE", NULL},
        {"digest", "--json", "--ns", NS2, "STORE", NULL},
        {"digest", "--ns", "user:nobody", "STORE", NULL},
        {"relay", "STORE", "devices", NULL},
    };
    static const int want_rc[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
    pgfx_t f;
    char path[600], empty[700], bad[900], *a, *b;
    uint8_t salt[KNIT_RELAY_SALT_LEN], hash[KNIT_RELAY_HASH_LEN];
    both_t w;
    knit_schema_t prof, plain;
    knit_site_t s1 = site_n(1), s2 = site_n(2), s3 = site_n(3);
    knit_rng_t r = {knit_test_seed()};
    knit_batch_t *batch;

    knit_test_case_seed(r.s);
    pgfx_start(&f);
    su_path(path, sizeof path, "relay.db");
    open_both(&w, &f, path);

    /* The same content in both: random pushes to two namespaces, one more
    ** with a name outside ASCII, anonymous ids registered out of order,
    ** devices on two schemas and one that reported none. */
    rnd_reset();
    for (int i = 0; i < 24; i++) {
        batch = random_push(&r, i % 3 == 0);
        commit_same(&w, i % 3 == 0 ? NS2 : NS, batch);
        knit_batch_free(batch);
    }
    batch = push_new("org:caf\xc3\xa9");
    CHECK_OK(knit_batch_begin(batch, 1));
    add(batch, 0, 7, 0, null_v(), 1, 4242, 1);
    add(batch, 0, 7, 1, ival(9), 1, 4242, 1);
    commit_same(&w, "org:caf\xc3\xa9", batch);
    knit_batch_free(batch);
    memset(salt, 1, sizeof salt);
    memset(hash, 2, sizeof hash);
    CHECK_OK(w.sq.anon_put(w.sq.data, "zed-9", salt, hash, 1700000000000ULL));
    CHECK_OK(w.pg.anon_put(w.pg.data, "zed-9", salt, hash, 1700000000000ULL));
    CHECK_OK(w.sq.anon_put(w.sq.data, "Abe-1", salt, hash, 1700000001000ULL));
    CHECK_OK(w.pg.anon_put(w.pg.data, "Abe-1", salt, hash, 1700000001000ULL));
    schema_of(1, &prof);
    schema_of(0, &plain);
    CHECK_OK(w.sq.device_seen(w.sq.data, NS, &s1, &prof, "agent/1", 1700000002000ULL));
    CHECK_OK(w.pg.device_seen(w.pg.data, NS, &s1, &prof, "agent/1", 1700000002000ULL));
    CHECK_OK(w.sq.device_seen(w.sq.data, NS2, &s2, &plain, NULL, 1700000003000ULL));
    CHECK_OK(w.pg.device_seen(w.pg.data, NS2, &s2, &plain, NULL, 1700000003000ULL));
    CHECK_OK(w.sq.device_seen(w.sq.data, "anon:zed-9", &s3, NULL, "old/0", 1700000004000ULL));
    CHECK_OK(w.pg.device_seen(w.pg.data, "anon:zed-9", &s3, NULL, "old/0", 1700000004000ULL));
    CHECK_OK(w.sq.device_seen(w.sq.data, NS, &s3, &plain, "agent/2", 1700000005000ULL));
    CHECK_OK(w.pg.device_seen(w.pg.data, NS, &s3, &plain, "agent/2", 1700000005000ULL));
    close_both(&w);

    /* The real sync-inspect on the file and on the URI: the same output,
    ** but for the name of the store. */
    for (size_t i = 0; i < sizeof listings / sizeof listings[0]; i++) {
        int ra = inspect_on(listings[i], path, &a), rb = inspect_on(listings[i], f.uri, &b);
        printf("[%s %s %s ...] exit %d:\n%s\n", listings[i][0], listings[i][1],
               listings[i][2] ? listings[i][2] : "", rb, b);
        if (strcmp(a, b) != 0)
            fprintf(stderr, "SQLite (exit %d):\n%s\nPostgreSQL (exit %d):\n%s\n", ra, a, rb, b);
        CHECK_EQ_INT(ra, want_rc[i]);
        CHECK_EQ_INT(rb, want_rc[i]);
        CHECK_STR(a, b);
        free(a);
        free(b);
    }
    /* What was compared is the content itself. */
    {
        const char *const args[] = {"relay", "STORE", NULL};
        CHECK_EQ_INT(inspect_on(args, f.uri, &b), 0);
        CHECK(
            strstr(b,
                   "relay       STORE\nnamespaces\n  org:caf\xc3\xa9: sequence 1, rows 1, cells 2\n"
                   "  user:alice: sequence ") != NULL);
        CHECK(strstr(b, "anonymous ids\n  Abe-1: registered 2023-11-14T22:13:21.000Z\n"
                        "  zed-9: registered 2023-11-14T22:13:20.000Z\n") != NULL);
        free(b);
    }
    {
        const char *const args[] = {"relay", "STORE", "schemas", NULL};
        CHECK_EQ_INT(inspect_on(args, f.uri, &b), 0);
        CHECK(strstr(b, "schema a1a1a1a1a1a1a1a1 (first seen 2023-11-14T22:13:22.000Z, 1 device)\n"
                        "    items: key id; columns name lww, tags orset\n") != NULL);
        CHECK(strstr(b, "no schema reported (older clients, 1 device)\n  devices\n"
                        "    anon:zed-9 site ") != NULL);
        CHECK(strstr(b, "2 devices)") != NULL);
        free(b);
    }

    /* A password in a URI that works is not shown either. */
    {
        const char *const args[] = {"relay", "--json", "STORE", "schemas", NULL};
        char *q = replace_all(f.uri, "knit@", "knit:Hunter2secret@");
        CHECK_EQ_INT(inspect_on(args, q, &a), 0);
        CHECK(strstr(a, "{\"relay\": \"postgresql://knit:***@/postgres?host=") != NULL);
        CHECK(strstr(a, "Hunter2") == NULL);
        free(a);
        free(q);
    }

    /* Read-only: an empty database is refused and stays empty. */
    empty_db(&f, "empty", empty, sizeof empty);
    {
        const char *const args[] = {"relay", "STORE", NULL};
        CHECK_EQ_INT(inspect_on(args, empty, &b), 2);
        printf("empty database: %s\n", b);
        CHECK(strstr(b, "is not a knit relay store") != NULL);
        free(b);
        PGconn *c;
        PGresult *q;
        snprintf(bad, sizeof bad, "dbname=empty host=%s port=5432 user=knit", f.dir);
        c = PQconnectdb(bad);
        CHECK(PQstatus(c) == CONNECTION_OK);
        q = PQexec(c, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'knit%'");
        CHECK(PQresultStatus(q) == PGRES_TUPLES_OK);
        CHECK_STR(PQgetvalue(q, 0, 0), "0");
        PQclear(q);
        PQfinish(c);
    }

    /* A URI that fails: exit 2, a message naming the cause, no password. */
    {
        static const char *const forms[] = {
            "postgresql://knit:Hunter2secret@/nosuchdb?host=%s&port=5432",
            "postgres://knit@/nosuchdb?host=%s&password=Hunter2secret&port=5432",
            "postgresql://knit:Hunter2%%73ecret@/nosuchdb?host=%s&port=5432",
            "postgresql://knit:Hunter2secret@/nosuchdb?host=%s&bogus%%zz=1",
        };
        for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
            const char *const relay[] = {"relay", "STORE", NULL};
            const char *const digest[] = {"digest", "--ns", NS, "STORE", NULL};
            snprintf(bad, sizeof bad, forms[i], f.dir);
            for (int k = 0; k < 2; k++) {
                CHECK_EQ_INT(inspect_on(k ? digest : relay, bad, &b), 2);
                printf("bad URI %zu: %s\n", i, b);
                CHECK(strstr(b, "Hunter2") == NULL);
                CHECK(strstr(b, "sync-inspect: ") != NULL);
                CHECK(strstr(b, i < 3 ? "nosuchdb" : "invalid") != NULL);
                free(b);
            }
        }
    }
    pgfx_stop(&f);
}

KNIT_TESTS(T(same_as_sqlite), T(concurrent_gapless), T(newer_schema_refused), T(backend_ops),
           T(agents_converge), T(two_relays_fanout), T(ingest_rate), T(pg_restart_mid_push),
           T(pg_stall), T(ident_same_as_sqlite), T(schema_upgrade), T(reject_state),
           T(identity_restart), T(webhook_profile_pg), T(webhook_erase_pg), T(erase_cli_pg),
           T(schema_upgrade_v2), T(inspect_cli_pg))
