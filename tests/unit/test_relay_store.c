/*
** test_relay_store.c: the relay's SQLite store.
**
** Checks the merge rules (causal length first, LWW by (hlc, site), OR-set
** replace/join/ignore), that a replayed push changes nothing and takes no
** sequence, that catch-up sends each cell once grouped by sequence and pages
** on unit boundaries, that the digest equals one computed independently from
** the expected cells, that pushes commute (a property over random pushes),
** group commit and rollback, durability across close and reopen, and the
** anonymous credential table.
*/
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "lww.h"
#include "orset.h"
#include "relay_store.h"
#include "store.h"
#include <sqlite3.h>
#include "test.h"

#define NS "user:alice"

static char tmpdir[64];

/* A failing CHECK exits; the directory goes with it. */
static void tmp_atexit(void)
{
    char cmd[128];
    if (!tmpdir[0])
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void tmp_init(void)
{
    static int registered;
    if (!registered) {
        atexit(tmp_atexit);
        registered = 1;
    }
    strcpy(tmpdir, "/tmp/knit-rstore-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
}

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void tmp_done(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0);
    tmpdir[0] = '\0';
}

static knit_relay_store_t *open_store(const char *name)
{
    char p[128];
    knit_relay_store_t *s = NULL;
    tmp_path(p, sizeof p, name);
    CHECK_OK(knit_relay_store_open(p, 0, &s));
    return s;
}

static knit_site_t site_n(int n)
{
    knit_site_t s;
    memset(s.b, 0, 16);
    s.b[0] = (uint8_t)(0x10 * (n + 1));
    s.b[15] = (uint8_t)n;
    return s;
}

/* A push on table "t" (key: one INTEGER; columns a: LWW, tags: OR-set,
** b: LWW), with sites 0..3 interned so that site index i is site_n(i). */
static knit_batch_t *push_new(void)
{
    static const char *cols[] = {"a", "tags", "b"};
    static const uint8_t orset[] = {0, 1, 0};
    knit_batch_t *b;
    uint32_t idx;
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, NS, &idx));
    for (int i = 0; i < 4; i++) {
        knit_site_t s = site_n(i);
        CHECK_OK(knit_batch_site(b, &s, &idx));
        CHECK_EQ_INT(idx, i);
    }
    CHECK_OK(knit_batch_table(b, "t", 1, 3, cols, orset, &idx));
    return b;
}

static knit_change_t change(int64_t *pk, uint32_t col, uint64_t cl, uint64_t hlc, int site)
{
    knit_change_t c;
    memset(&c, 0, sizeof c);
    c.pk = (knit_value_t *)knit__malloc(sizeof *c.pk);
    c.pk->type = KNIT_INTEGER;
    c.pk->u.i = *pk;
    c.col = col;
    c.cl = cl;
    c.hlc = hlc;
    c.site = (uint32_t)site;
    c.value.type = KNIT_NULL;
    return c;
}

static void add_live(knit_batch_t *b, int64_t pk, uint64_t cl, uint64_t hlc, int site)
{
    knit_change_t c = change(&pk, 0, cl, hlc, site);
    CHECK_OK(knit_batch_add(b, &c));
    knit__free(c.pk);
}

static void add_int(knit_batch_t *b, int64_t pk, uint32_t col, int64_t v, uint64_t cl, uint64_t hlc,
                    int site)
{
    knit_change_t c = change(&pk, col, cl, hlc, site);
    c.value.type = KNIT_INTEGER;
    c.value.u.i = v;
    CHECK_OK(knit_batch_add(b, &c));
    knit__free(c.pk);
}

static void add_set(knit_batch_t *b, int64_t pk, const knit_orset_t *set, uint64_t cl, uint64_t hlc,
                    int site)
{
    knit_change_t c = change(&pk, 2, cl, hlc, site);
    uint8_t *enc;
    size_t n;
    CHECK_OK(knit_orset_encode(set, &enc, &n));
    c.value.type = KNIT_BLOB;
    c.value.u.b.p = enc;
    c.value.u.b.n = n;
    CHECK_OK(knit_batch_add(b, &c));
    knit__free(enc);
    knit__free(c.pk);
}

static knit_value_t ival(int64_t i)
{
    knit_value_t v;
    v.type = KNIT_INTEGER;
    v.u.i = i;
    return v;
}

/* Applies b as one group; returns the result (fan-out owned by caller). */
static knit_relay_applied_t apply1(knit_relay_store_t *s, knit_batch_t *b)
{
    knit_relay_applied_t r;
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_OK(knit_relay_store_apply(s, NS, b, &r));
    CHECK_OK(knit_relay_store_commit(s));
    return r;
}

static void apply_free(knit_batch_t *b, knit_relay_store_t *s, size_t *applied)
{
    knit_relay_applied_t r = apply1(s, b);
    if (applied)
        *applied = r.applied;
    knit_batch_free(r.fanout);
    knit_batch_free(b);
}

/* The change for (pk, column name) in b, or NULL; fails if it is there twice. */
static const knit_change_t *find(const knit_batch_t *b, int64_t pk, const char *col)
{
    const knit_change_t *hit = NULL;
    for (size_t i = 0; i < b->nchanges; i++) {
        const knit_change_t *c = &b->changes[i];
        const knit_batch_table_t *t = &b->tables[c->table];
        const char *name = c->col ? t->cols[c->col - 1] : "";
        if (c->pk[0].type == KNIT_INTEGER && c->pk[0].u.i == pk && strcmp(name, col) == 0) {
            CHECK(hit == NULL);
            hit = c;
        }
    }
    return hit;
}

static knit_batch_t *catch_all(knit_relay_store_t *s, uint64_t after, uint64_t *reached)
{
    knit_batch_t *b;
    uint64_t r;
    int more;
    CHECK_OK(knit_relay_store_catch_up(s, NS, after, 0, &b, &r, &more));
    CHECK_EQ_INT(more, 0);
    if (reached)
        *reached = r;
    return b;
}

static void lww_rules(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_batch_t *b;
    size_t applied;
    uint64_t seq;

    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 1);
    add_int(b, 1, 1, 10, 1, 100, 1);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 2);

    /* Older stamp loses; same hlc with a larger site wins. */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 2));
    add_int(b, 1, 1, 11, 1, 99, 3);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 0);
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 3));
    add_int(b, 1, 1, 12, 1, 100, 2);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 1);
    CHECK_OK(knit_relay_store_seq(s, NS, &seq));
    CHECK_EQ_INT(seq, 2); /* the losing push took no sequence */

    /* A delete (cl 2) beats a concurrent update of life 1 with a later
    ** stamp, whatever the order. */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 4));
    add_live(b, 1, 2, 150, 0);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 1);
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 5));
    add_int(b, 1, 1, 13, 1, 900, 3);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 0);

    knit_batch_t *c = catch_all(s, 0, &seq);
    CHECK_EQ_INT(seq, 3);
    CHECK(find(c, 1, "a") == NULL); /* life 1's cell was deleted */
    CHECK_EQ_INT(find(c, 1, "")->cl, 2);
    knit_batch_free(c);

    /* Re-insert (cl 3) resurrects with its own columns. */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 6));
    add_live(b, 1, 3, 200, 1);
    add_int(b, 1, 1, 14, 3, 200, 1);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 2);
    c = catch_all(s, 3, &seq);
    CHECK_EQ_INT(seq, 4);
    CHECK_EQ_INT(c->ntxns, 1);
    CHECK_EQ_INT(c->txns[0].version, 4);
    CHECK_EQ_INT(find(c, 1, "a")->value.u.i, 14);
    CHECK_EQ_INT(find(c, 1, "")->cl, 3);
    knit_batch_free(c);

    /* Liveness ties at equal cl order by (hlc, site). */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 7));
    add_live(b, 1, 3, 199, 3);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 0);

    knit_relay_store_close(s);
    tmp_done();
}

/* A set state: elements added by `site` (indexes match push_new's table). */
static void set_add(knit_orset_t *s, int site, int64_t e)
{
    knit_value_t v = ival(e);
    CHECK_OK(knit_orset_add(s, (uint32_t)site, &v, NULL));
}

static void orset_rules(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_orset_t x, y, z;
    knit_batch_t *b, *c;
    size_t applied;

    knit_orset_init(&x);
    knit_orset_init(&y);
    knit_orset_init(&z);
    set_add(&x, 1, 5);
    set_add(&x, 1, 6);
    set_add(&y, 2, 7);

    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 1);
    add_set(b, 1, &x, 1, 100, 1);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 2);

    /* Equal cl: join. */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 2));
    add_set(b, 1, &y, 1, 101, 2);
    knit_relay_applied_t r = apply1(s, b);
    CHECK_EQ_INT(r.applied, 1);
    {
        /* The fan-out carries the joined state. */
        const knit_change_t *f = find(r.fanout, 1, "tags");
        knit_orset_t got;
        CHECK(f != NULL);
        CHECK_OK(knit_orset_decode(f->value.u.b.p, f->value.u.b.n, &got));
        CHECK_EQ_INT(got.nelems, 3);
        knit_orset_free(&got);
    }
    knit_batch_free(r.fanout);
    knit_batch_free(b);

    /* Replaying a subset changes nothing. */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 3));
    add_set(b, 1, &x, 1, 100, 1);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 0);

    /* A lower cl is ignored... */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 4));
    add_live(b, 2, 3, 300, 0);
    set_add(&z, 3, 9);
    add_set(b, 2, &z, 3, 300, 3);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 2);
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 5));
    add_set(b, 2, &x, 1, 999, 1);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 0);
    /* ...and a higher one replaces. */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 6));
    add_live(b, 2, 5, 400, 1);
    add_set(b, 2, &y, 5, 400, 2);
    apply_free(b, s, &applied);
    CHECK_EQ_INT(applied, 2);

    c = catch_all(s, 0, NULL);
    {
        const knit_change_t *f = find(c, 1, "tags");
        knit_orset_t got;
        char *json;
        size_t n;
        CHECK_OK(knit_orset_decode(f->value.u.b.p, f->value.u.b.n, &got));
        CHECK_OK(knit_orset_json(&got, &json, &n));
        CHECK_STR(json, "[5,6,7]");
        CHECK_EQ_INT(f->hlc, 101);
        knit__free(json);
        knit_orset_free(&got);
        f = find(c, 2, "tags");
        CHECK_OK(knit_orset_decode(f->value.u.b.p, f->value.u.b.n, &got));
        CHECK_OK(knit_orset_json(&got, &json, &n));
        CHECK_STR(json, "[7]");
        CHECK_EQ_INT(f->cl, 5);
        /* Sites in the catch-up batch are real site ids. */
        {
            knit_site_t want = site_n(2);
            CHECK_EQ_INT(got.vv.len, 1);
            CHECK(knit_site_cmp(&c->sites[got.vv.e[0].site], &want) == 0);
        }
        knit__free(json);
        knit_orset_free(&got);
    }
    knit_batch_free(c);
    knit_orset_free(&x);
    knit_orset_free(&y);
    knit_orset_free(&z);
    knit_relay_store_close(s);
    tmp_done();
}

/* A push replayed after a lost ACK: no change, no sequence, no fan-out. */
static void replay_harmless(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_orset_t x;
    knit_digest_t d1, d2;
    uint64_t seq1, seq2;

    knit_orset_init(&x);
    set_add(&x, 0, 1);
    knit_batch_t *b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 0);
    add_int(b, 1, 1, 10, 1, 100, 0);
    add_set(b, 1, &x, 1, 100, 0);
    CHECK_OK(knit_batch_begin(b, 2));
    add_int(b, 1, 3, 20, 1, 101, 0);

    knit_relay_applied_t r = apply1(s, b);
    CHECK_EQ_INT(r.applied, 4);
    CHECK_EQ_INT(r.first_seq, 1);
    CHECK_EQ_INT(r.last_seq, 2);
    CHECK_EQ_INT(r.fanout->ntxns, 2);
    CHECK_EQ_INT(r.fanout->txns[0].count, 3);
    CHECK_EQ_INT(r.fanout->txns[1].version, 2);
    knit_batch_free(r.fanout);
    CHECK_OK(knit_relay_store_digest(s, NS, &d1));
    CHECK_OK(knit_relay_store_seq(s, NS, &seq1));

    for (int i = 0; i < 3; i++) {
        r = apply1(s, b);
        CHECK_EQ_INT(r.applied, 0);
        CHECK_EQ_INT(r.known, 4);
        CHECK_EQ_INT(r.first_seq, 0);
        CHECK_EQ_INT(r.fanout->ntxns, 0);
        knit_batch_free(r.fanout);
    }
    CHECK_OK(knit_relay_store_digest(s, NS, &d2));
    CHECK_OK(knit_relay_store_seq(s, NS, &seq2));
    CHECK(knit_digest_equal(&d1, &d2));
    CHECK_EQ_INT(seq1, seq2);
    knit_batch_free(b);
    knit_orset_free(&x);
    knit_relay_store_close(s);
    tmp_done();
}

static void catch_up_once(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_batch_t *b, *c;
    uint64_t reached;
    int more;

    /* Seq 1: rows 1..3; seq 2: row 2 again; seq 3: row 4; seq 4: row 1. */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    for (int k = 1; k <= 3; k++) {
        add_live(b, k, 1, 100, 0);
        add_int(b, k, 1, k, 1, 100, 0);
    }
    CHECK_OK(knit_batch_begin(b, 2));
    add_int(b, 2, 1, 22, 1, 110, 0);
    CHECK_OK(knit_batch_begin(b, 3));
    add_live(b, 4, 1, 120, 0);
    add_int(b, 4, 1, 4, 1, 120, 0);
    add_int(b, 4, 3, 44, 1, 120, 0);
    CHECK_OK(knit_batch_begin(b, 4));
    add_int(b, 1, 1, 11, 1, 130, 0);
    apply_free(b, s, NULL);

    c = catch_all(s, 0, &reached);
    CHECK_EQ_INT(reached, 4);
    CHECK_EQ_INT(c->nchanges, 9); /* 4 liveness + 5 column cells, each once */
    CHECK_EQ_INT(c->ntxns, 4);
    for (size_t u = 0; u < c->ntxns; u++)
        CHECK_EQ_INT(c->txns[u].version, u + 1);
    CHECK_EQ_INT(c->txns[0].count, 4); /* lives of 1..3 and row 3's a */
    CHECK_EQ_INT(find(c, 2, "a")->value.u.i, 22);
    CHECK_EQ_INT(find(c, 1, "a")->value.u.i, 11);
    CHECK_EQ_INT(find(c, 4, "b")->value.u.i, 44);
    knit_batch_free(c);

    /* Paging: units are never split, and a page holds at most max_changes
    ** unless its first unit alone is larger. */
    CHECK_OK(knit_relay_store_catch_up(s, NS, 0, 2, &c, &reached, &more));
    CHECK_EQ_INT(more, 1);
    CHECK_EQ_INT(reached, 1);
    CHECK_EQ_INT(c->nchanges, 4);
    knit_batch_free(c);
    CHECK_OK(knit_relay_store_catch_up(s, NS, 1, 2, &c, &reached, &more));
    CHECK_EQ_INT(more, 1);
    CHECK_EQ_INT(reached, 2); /* unit 3 (3 changes) would take it to 4 */
    CHECK_EQ_INT(c->ntxns, 1);
    CHECK_EQ_INT(c->nchanges, 1);
    knit_batch_free(c);
    CHECK_OK(knit_relay_store_catch_up(s, NS, 2, 2, &c, &reached, &more));
    CHECK_EQ_INT(more, 1);
    CHECK_EQ_INT(reached, 3);
    CHECK_EQ_INT(c->ntxns, 1);
    CHECK_EQ_INT(c->nchanges, 3);
    knit_batch_free(c);
    CHECK_OK(knit_relay_store_catch_up(s, NS, 1, 4, &c, &reached, &more));
    CHECK_EQ_INT(more, 1);
    CHECK_EQ_INT(reached, 3); /* 1 + 3 changes: exactly the page */
    CHECK_EQ_INT(c->ntxns, 2);
    knit_batch_free(c);
    CHECK_OK(knit_relay_store_catch_up(s, NS, 3, 2, &c, &reached, &more));
    CHECK_EQ_INT(more, 0);
    CHECK_EQ_INT(reached, 4);
    CHECK_EQ_INT(c->nchanges, 1);
    knit_batch_free(c);
    CHECK_OK(knit_relay_store_catch_up(s, NS, 4, 2, &c, &reached, &more));
    CHECK_EQ_INT(more, 0);
    CHECK_EQ_INT(reached, 4);
    CHECK_EQ_INT(c->nchanges, 0);
    knit_batch_free(c);

    /* An unknown namespace is empty at sequence 0. */
    CHECK_OK(knit_relay_store_catch_up(s, "user:nobody", 0, 0, &c, &reached, &more));
    CHECK_EQ_INT(c->nchanges, 0);
    CHECK_EQ_INT(reached, 0);
    knit_batch_free(c);

    /* A catch-up batch applies to another store and gives the same state. */
    knit_relay_store_t *s2 = open_store("r2.db");
    knit_digest_t d1, d2;
    c = catch_all(s, 0, NULL);
    apply_free(c, s2, NULL);
    CHECK_OK(knit_relay_store_digest(s, NS, &d1));
    CHECK_OK(knit_relay_store_digest(s2, NS, &d2));
    CHECK(knit_digest_equal(&d1, &d2));
    knit_relay_store_close(s2);
    knit_relay_store_close(s);
    tmp_done();
}

static void hash_cell(knit_digest_t *d, int64_t pk, const char *col, const uint8_t *val,
                      size_t vlen, uint64_t cl, uint64_t hlc, knit_site_t site)
{
    uint8_t pkb[16], h[32];
    knit_value_t k = ival(pk);
    knit_cell_t c;
    c.ns = NS;
    c.table = "t";
    c.pk = pkb;
    c.pk_len = knit_value_encode(&k, pkb);
    c.column = col;
    c.val = val;
    c.val_len = vlen;
    c.cl = cl;
    c.hlc = hlc;
    c.site = site;
    knit_cell_hash(&c, h);
    knit_digest_add(d, h);
}

static void digest_independent(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_orset_t x;
    knit_batch_t *b;
    knit_digest_t got, want;
    static const uint8_t null_enc = 0;
    uint8_t v[16], *enc;
    size_t n;
    knit_site_t tab[4];

    for (int i = 0; i < 4; i++)
        tab[i] = site_n(i);
    knit_orset_init(&x);
    set_add(&x, 3, 1);
    set_add(&x, 2, 2);

    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 1); /* live row */
    add_int(b, 1, 1, 7, 1, 100, 1);
    add_set(b, 1, &x, 1, 105, 2);
    add_live(b, 2, 2, 110, 0);      /* deleted row */
    add_int(b, 3, 1, 9, 1, 120, 0); /* column without liveness */
    add_live(b, 4, 3, 130, 0);      /* live, column of a later life */
    add_int(b, 4, 1, 5, 5, 130, 0);
    apply_free(b, s, NULL);
    CHECK_OK(knit_relay_store_digest(s, NS, &got));

    knit_digest_zero(&want);
    hash_cell(&want, 1, "", &null_enc, 1, 1, 100, site_n(1));
    knit_value_t seven = ival(7);
    n = knit_value_encode(&seven, v);
    hash_cell(&want, 1, "a", v, n, 1, 100, site_n(1));
    /* The OR-set cell as crdt/ defines its canonical bytes. */
    CHECK_OK(knit_orset_canonical(&x, tab, 4, &enc, &n));
    hash_cell(&want, 1, "tags", enc, n, 1, 0, (knit_site_t){{0}});
    knit__free(enc);
    hash_cell(&want, 2, "", &null_enc, 1, 2, 110, site_n(0));
    hash_cell(&want, 4, "", &null_enc, 1, 3, 130, site_n(0));
    CHECK(knit_digest_equal(&got, &want));

    /* Unknown namespace: zero digest. */
    knit_digest_t zero;
    knit_digest_zero(&zero);
    CHECK_OK(knit_relay_store_digest(s, "anon:x", &got));
    CHECK(knit_digest_equal(&got, &zero));
    knit_orset_free(&x);
    knit_relay_store_close(s);
    tmp_done();
}

/* The relay's digest of what a replica pushed equals the replica's own
** digest (knit_digest): relay and replica agree on the canonical cells. */
static void digest_matches_replica(void)
{
    char path[128];
    knit_t *k;
    knit_batch_t *b;
    knit_digest_t dk, ds;
    sqlite3 *db;
    tmp_init();
    tmp_path(path, sizeof path, "replica.db");
    CHECK_OK(knit_open(path, NULL, &k));
    db = knit_db(k);
    CHECK(sqlite3_exec(db,
                       "CREATE TABLE notes(id INT PRIMARY KEY, body TEXT, n REAL,"
                       " tags TEXT NOT NULL DEFAULT '[]')",
                       NULL, NULL, NULL) == SQLITE_OK);
    CHECK_OK(knit_set_namespace(k, NS));
    CHECK_OK(knit_track(k, "notes", "tags:orset"));
    CHECK(sqlite3_exec(db,
                       "INSERT INTO notes VALUES(1, 'one', 1.5, '[\"a\",\"b\"]');"
                       "INSERT INTO notes VALUES(2, 'two', NULL, '[]');"
                       "INSERT INTO notes VALUES(3, x'00ff', 3, '[1,2]');",
                       NULL, NULL, NULL) == SQLITE_OK);
    CHECK(knit_stamp(k) >= 0);
    CHECK(sqlite3_exec(db,
                       "UPDATE notes SET body = 'uno', tags = '[\"b\",\"c\"]' WHERE id = 1;"
                       "DELETE FROM notes WHERE id = 2;",
                       NULL, NULL, NULL) == SQLITE_OK);
    CHECK(knit_stamp(k) >= 0);
    CHECK(sqlite3_exec(db, "INSERT INTO notes VALUES(2, 'two again', 2, '[\"z\"]')", NULL, NULL,
                       NULL) == SQLITE_OK);
    CHECK(knit_stamp(k) >= 0);
    CHECK_OK(knit_changes_since(k, 0, NULL, &b));
    CHECK(b->nchanges > 0);

    knit_relay_store_t *s = open_store("r.db");
    apply_free(b, s, NULL);
    CHECK_OK(knit_digest(k, NS, &dk));
    CHECK_OK(knit_relay_store_digest(s, NS, &ds));
    if (!knit_digest_equal(&dk, &ds)) {
        char a[65], c[65];
        knit_digest_hex(&dk, a);
        knit_digest_hex(&ds, c);
        fprintf(stderr, "replica %s\nrelay   %s\n", a, c);
    }
    CHECK(knit_digest_equal(&dk, &ds));

    /* And back: a replica that applies the relay's catch-up agrees too. */
    knit_t *k2;
    tmp_path(path, sizeof path, "replica2.db");
    CHECK_OK(knit_open(path, NULL, &k2));
    CHECK(sqlite3_exec(knit_db(k2),
                       "CREATE TABLE notes(id INT PRIMARY KEY, body TEXT, n REAL,"
                       " tags TEXT NOT NULL DEFAULT '[]')",
                       NULL, NULL, NULL) == SQLITE_OK);
    CHECK_OK(knit_track(k2, "notes", "tags:orset"));
    knit_batch_t *c = catch_all(s, 0, NULL);
    CHECK_OK(knit_apply(k2, c, NULL));
    knit_batch_free(c);
    CHECK_OK(knit_digest(k2, NS, &dk));
    CHECK(knit_digest_equal(&dk, &ds));
    knit_close(k2);
    knit_close(k);
    knit_relay_store_close(s);
    tmp_done();
}

/* Random pushes over a small key space, for the commutativity property.
** Histories stay realistic: every write has its own stamp, and each site's
** OR-set states for a row grow from one replica's set, so dots are never
** reused for different elements. */
static uint64_t rnd_clock;
static knit_orset_t rnd_sets[4][4]; /* [pk][site] */

static void rnd_reset(void)
{
    rnd_clock = 100;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            knit_orset_free(&rnd_sets[i][j]);
            knit_orset_init(&rnd_sets[i][j]);
        }
}

static knit_batch_t *random_push(knit_rng_t *r)
{
    knit_batch_t *b = push_new();
    int units = 1 + (int)knit_rng_below(r, 3);
    for (int u = 0; u < units; u++) {
        CHECK_OK(knit_batch_begin(b, (uint64_t)u + 1));
        int nch = 1 + (int)knit_rng_below(r, 4);
        for (int k = 0; k < nch; k++) {
            int64_t pk = (int64_t)knit_rng_below(r, 4);
            uint64_t cl = 1 + knit_rng_below(r, 4);
            uint64_t hlc = ++rnd_clock;
            int site = (int)knit_rng_below(r, 4);
            switch (knit_rng_below(r, 4)) {
            case 0:
                add_live(b, pk, cl, hlc, site);
                break;
            case 1:
                add_int(b, pk, 1, (int64_t)knit_rng_below(r, 100), cl, hlc, site);
                break;
            case 2:
                add_int(b, pk, 3, (int64_t)knit_rng_below(r, 100), cl, hlc, site);
                break;
            default: {
                /* The site's set grows: adds, then maybe a remove. */
                knit_orset_t x = rnd_sets[pk][site];
                int nadd = 1 + (int)knit_rng_below(r, 3);
                for (int a = 0; a < nadd; a++)
                    set_add(&x, site, (int64_t)knit_rng_below(r, 5));
                if (knit_rng_below(r, 2)) {
                    knit_value_t e = ival((int64_t)knit_rng_below(r, 5));
                    CHECK_OK(knit_orset_remove(&x, &e, NULL));
                }
                add_set(b, pk, &x, cl, hlc, site);
                rnd_sets[pk][site] = x;
            }
            }
        }
    }
    return b;
}

/* Law: stores that saw the same pushes, in any order and any grouping,
** have equal digests and equal catch-up content; replays change nothing. */
static void pushes_commute(void)
{
    tmp_init();
    uint64_t base = knit_test_seed();
    long cases = knit_test_cases(60);
    for (long i = 0; i < cases; i++) {
        uint64_t seed = base + (uint64_t)i;
        knit_rng_t r = {seed};
        knit_test_case_seed(seed);
        char pa[128], pb[128];
        snprintf(pa, sizeof pa, "%s/a%ld.db", tmpdir, i);
        snprintf(pb, sizeof pb, "%s/b%ld.db", tmpdir, i);
        knit_relay_store_t *a, *b;
        rnd_reset();
        CHECK_OK(knit_relay_store_open(pa, 0, &a));
        CHECK_OK(knit_relay_store_open(pb, 0, &b));
        enum { N = 8 };
        knit_batch_t *p[N];
        int order[N];
        for (int k = 0; k < N; k++) {
            p[k] = random_push(&r);
            order[k] = k;
        }
        for (int k = N - 1; k > 0; k--) {
            int j = (int)knit_rng_below(&r, (uint64_t)k + 1), t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
        /* a: one push per group, in order; b: shuffled, all in one group. */
        for (int k = 0; k < N; k++) {
            knit_relay_applied_t res = apply1(a, p[k]);
            knit_batch_free(res.fanout);
        }
        CHECK_OK(knit_relay_store_begin(b));
        for (int k = 0; k < N; k++) {
            knit_relay_applied_t res;
            CHECK_OK(knit_relay_store_apply(b, NS, p[order[k]], &res));
            knit_batch_free(res.fanout);
        }
        CHECK_OK(knit_relay_store_commit(b));
        knit_digest_t da, db, da2;
        CHECK_OK(knit_relay_store_digest(a, NS, &da));
        CHECK_OK(knit_relay_store_digest(b, NS, &db));
        CHECK(knit_digest_equal(&da, &db));

        /* Catch-up of a applied to a fresh store gives the same digest. */
        knit_relay_store_t *c;
        char pc[128];
        snprintf(pc, sizeof pc, "%s/c%ld.db", tmpdir, i);
        CHECK_OK(knit_relay_store_open(pc, 0, &c));
        knit_batch_t *cu = catch_all(a, 0, NULL);
        apply_free(cu, c, NULL);
        CHECK_OK(knit_relay_store_digest(c, NS, &da2));
        CHECK(knit_digest_equal(&da, &da2));

        /* Replaying everything changes nothing. */
        uint64_t s1, s2;
        CHECK_OK(knit_relay_store_seq(a, NS, &s1));
        for (int k = 0; k < N; k++) {
            knit_relay_applied_t res = apply1(a, p[k]);
            CHECK_EQ_INT(res.applied, 0);
            knit_batch_free(res.fanout);
        }
        CHECK_OK(knit_relay_store_seq(a, NS, &s2));
        CHECK_EQ_INT(s1, s2);
        CHECK_OK(knit_relay_store_digest(a, NS, &da2));
        CHECK(knit_digest_equal(&da, &da2));

        for (int k = 0; k < N; k++)
            knit_batch_free(p[k]);
        knit_relay_store_close(a);
        knit_relay_store_close(b);
        knit_relay_store_close(c);
        unlink(pa);
        unlink(pb);
        unlink(pc);
    }
    rnd_reset();
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++)
            knit_orset_free(&rnd_sets[k][j]);
    tmp_done();
}

/* A failing push inside a group undoes only itself; a rolled back group
** leaves nothing; schema contradictions are refused. */
static void group_atomic(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_relay_applied_t r;
    uint64_t seq;

    knit_batch_t *good = push_new();
    CHECK_OK(knit_batch_begin(good, 1));
    add_live(good, 1, 1, 100, 0);
    add_int(good, 1, 1, 1, 1, 100, 0);

    /* Same table, but "tags" declared LWW: refused as a whole. */
    knit_batch_t *bad;
    {
        static const char *cols[] = {"a", "tags", "b"};
        static const uint8_t kinds[] = {0, 0, 0};
        uint32_t idx;
        knit_site_t s0 = site_n(0);
        CHECK_OK(knit_batch_new(&bad));
        CHECK_OK(knit_batch_ns(bad, NS, &idx));
        CHECK_OK(knit_batch_site(bad, &s0, &idx));
        CHECK_OK(knit_batch_table(bad, "t", 1, 3, cols, kinds, &idx));
        CHECK_OK(knit_batch_begin(bad, 1));
        add_live(bad, 9, 1, 100, 0);
        add_int(bad, 9, 2, 5, 1, 100, 0);
    }
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_OK(knit_relay_store_apply(s, NS, good, &r));
    knit_batch_free(r.fanout);
    knit_orset_t x;
    knit_orset_init(&x);
    set_add(&x, 0, 1);
    knit_batch_t *first = push_new();
    CHECK_OK(knit_batch_begin(first, 1));
    add_set(first, 7, &x, 1, 100, 0);
    CHECK_OK(knit_relay_store_apply(s, NS, first, &r)); /* makes "tags" an OR-set */
    knit_batch_free(r.fanout);
    CHECK_EQ_INT(knit_relay_store_apply(s, NS, bad, &r), KNIT_ESCHEMA);
    CHECK(r.fanout == NULL);
    CHECK(strstr(knit_relay_store_errmsg(s), "tags") != NULL);
    /* Wrong namespace. */
    CHECK_EQ_INT(knit_relay_store_apply(s, "user:bob", good, &r), KNIT_EINVAL);
    CHECK_OK(knit_relay_store_commit(s));
    knit_batch_t *c = catch_all(s, 0, &seq);
    CHECK_EQ_INT(seq, 2);
    CHECK(find(c, 9, "") == NULL);
    CHECK(find(c, 1, "a") != NULL);
    knit_batch_free(c);

    /* Rollback of a whole group. */
    knit_batch_t *more = push_new();
    CHECK_OK(knit_batch_begin(more, 1));
    add_int(more, 1, 1, 2, 1, 200, 0);
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_EQ_INT(knit_relay_store_begin(s), KNIT_EINVAL);
    CHECK_OK(knit_relay_store_apply(s, NS, more, &r));
    CHECK_EQ_INT(r.first_seq, 3);
    knit_batch_free(r.fanout);
    knit_relay_store_rollback(s);
    CHECK_OK(knit_relay_store_seq(s, NS, &seq));
    CHECK_EQ_INT(seq, 2);
    CHECK_EQ_INT(knit_relay_store_apply(s, NS, more, &r), KNIT_EINVAL); /* no group */

    /* Malformed OR-set bytes. */
    knit_batch_t *junk = push_new();
    {
        int64_t pk = 5;
        knit_change_t ch = change(&pk, 2, 1, 100, 0);
        ch.value.type = KNIT_BLOB;
        ch.value.u.b.p = "\x05\x01";
        ch.value.u.b.n = 2;
        CHECK_OK(knit_batch_begin(junk, 1));
        CHECK_OK(knit_batch_add(junk, &ch));
        knit__free(ch.pk);
    }
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_EQ_INT(knit_relay_store_apply(s, NS, junk, &r), KNIT_ECORRUPT);
    knit_relay_store_rollback(s);

    knit_batch_free(junk);
    knit_batch_free(more);
    knit_batch_free(good);
    knit_batch_free(bad);
    knit_batch_free(first);
    knit_orset_free(&x);
    knit_relay_store_close(s);
    tmp_done();
}

static void durable_reopen(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_digest_t d1, d2;
    uint64_t seq;
    uint8_t salt[16], hash[32], salt2[16], hash2[32];

    knit_batch_t *b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 0);
    add_int(b, 1, 1, 1, 1, 100, 0);
    apply_free(b, s, NULL);
    memset(salt, 0xab, sizeof salt);
    memset(hash, 0xcd, sizeof hash);
    CHECK_OK(knit_relay_store_anon_put(s, "dev1", salt, hash, 1234));
    CHECK_EQ_INT(knit_relay_store_anon_put(s, "dev1", salt, hash, 1235), KNIT_EEXISTS);
    CHECK_OK(knit_relay_store_digest(s, NS, &d1));
    knit_relay_store_close(s);

    /* Reopen, also read-only (sync-inspect). */
    s = open_store("r.db");
    CHECK_OK(knit_relay_store_digest(s, NS, &d2));
    CHECK(knit_digest_equal(&d1, &d2));
    CHECK_OK(knit_relay_store_seq(s, NS, &seq));
    CHECK_EQ_INT(seq, 1);
    CHECK_EQ_INT(knit_relay_store_anon_get(s, "dev1", salt2, hash2), 1);
    CHECK(memcmp(salt, salt2, 16) == 0 && memcmp(hash, hash2, 32) == 0);
    CHECK_EQ_INT(knit_relay_store_anon_get(s, "dev2", salt2, hash2), 0);
    knit_relay_store_close(s);

    char p[128];
    knit_relay_store_t *ro;
    tmp_path(p, sizeof p, "r.db");
    CHECK_OK(knit_relay_store_open(p, KNIT_RELAY_STORE_READONLY, &ro));
    CHECK_OK(knit_relay_store_digest(ro, NS, &d2));
    CHECK(knit_digest_equal(&d1, &d2));
    CHECK_EQ_INT(knit_relay_store_begin(ro), KNIT_EREADONLY);
    knit_relay_store_close(ro);
    tmp_path(p, sizeof p, "missing.db");
    CHECK_EQ_INT(knit_relay_store_open(p, KNIT_RELAY_STORE_READONLY, &ro), KNIT_ENOTFOUND);
    CHECK(ro == NULL);

    /* Not a relay store: a plain SQLite file, and a text file. */
    tmp_path(p, sizeof p, "plain.db");
    {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "sqlite3 '%s' 'CREATE TABLE x(y)' 2>/dev/null", p);
        if (system(cmd) == 0) {
            CHECK_EQ_INT(knit_relay_store_open(p, 0, &ro), KNIT_ENOTREPLICA);
        }
        tmp_path(p, sizeof p, "text.db");
        FILE *f = fopen(p, "w");
        CHECK(f != NULL);
        fputs("this is not a database, not at all, no, not a bit of one...\n", f);
        fclose(f);
        CHECK_EQ_INT(knit_relay_store_open(p, 0, &ro), KNIT_ENOTREPLICA);
    }
    knit_relay_store_close(NULL);
    tmp_done();
}

static int count_ns(void *data, const knit_relay_ns_info_t *ns)
{
    int *n = data;
    if (strcmp(ns->name, NS) == 0) {
        CHECK_EQ_INT(ns->seq, 1);
        CHECK_EQ_INT(ns->rows, 2);
        CHECK_EQ_INT(ns->cells, 3);
    }
    (*n)++;
    return 0;
}

static int count_anon(void *data, const char *id, uint64_t created)
{
    int *n = data;
    CHECK(strcmp(id, "a1") == 0 || strcmp(id, "a2") == 0);
    CHECK_EQ_INT(created, 77);
    (*n)++;
    return 0;
}

static void listing(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    uint8_t salt[16] = {1}, hash[32] = {2};
    int n = 0;
    knit_batch_t *b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 0);
    add_live(b, 2, 1, 100, 0);
    add_int(b, 1, 1, 1, 1, 100, 0);
    apply_free(b, s, NULL);
    CHECK_OK(knit_relay_store_list(s, count_ns, &n));
    CHECK_EQ_INT(n, 1);
    CHECK_OK(knit_relay_store_anon_put(s, "a1", salt, hash, 77));
    CHECK_OK(knit_relay_store_anon_put(s, "a2", salt, hash, 77));
    n = 0;
    CHECK_OK(knit_relay_store_list_anon(s, count_anon, &n));
    CHECK_EQ_INT(n, 2);
    knit_relay_store_close(s);
    tmp_done();
}

/* Every allocation failure returns an error and leaves the store usable. */
static void alloc_failures(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_orset_t x;
    knit_orset_init(&x);
    set_add(&x, 1, 3);
    knit_batch_t *b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 0);
    add_int(b, 1, 1, 1, 1, 100, 0);
    add_set(b, 1, &x, 1, 100, 1);
    for (long nth = 1; nth < 400; nth++) {
        knit_relay_applied_t r;
        CHECK_OK(knit_relay_store_begin(s));
        knit__alloc_fail_at(nth, 0);
        int rc = knit_relay_store_apply(s, NS, b, &r);
        knit__alloc_fail_at(0, 0);
        CHECK(rc == 0 || rc == KNIT_ENOMEM);
        if (rc == 0)
            knit_batch_free(r.fanout);
        knit_relay_store_rollback(s);
        knit_batch_t *c;
        uint64_t reached;
        int more;
        knit__alloc_fail_at(nth, 0);
        rc = knit_relay_store_catch_up(s, NS, 0, 0, &c, &reached, &more);
        knit__alloc_fail_at(0, 0);
        CHECK(rc == 0 || rc == KNIT_ENOMEM);
        if (rc == 0)
            knit_batch_free(c);
    }
    /* Still usable. */
    knit_relay_applied_t r = apply1(s, b);
    CHECK_EQ_INT(r.applied, 3);
    knit_batch_free(r.fanout);
    knit_batch_free(b);
    knit_orset_free(&x);
    knit_relay_store_close(s);
    tmp_done();
}

/* A store of another schema version is refused, not misread. */
static void refuses_other_versions(void)
{
    char path[512];
    knit_relay_store_t *s = NULL;
    sqlite3 *db;
    tmp_init();
    tmp_path(path, sizeof path, "old.db");
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    knit_relay_store_close(s);
    static const int versions[] = {1, 99};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        char sql[64];
        CHECK(sqlite3_open(path, &db) == SQLITE_OK);
        snprintf(sql, sizeof sql, "PRAGMA user_version=%d", versions[i]);
        CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_close(db);
        s = (knit_relay_store_t *)1;
        CHECK_EQ_INT(knit_relay_store_open(path, 0, &s), KNIT_EVERSION);
        CHECK(s == NULL);
        CHECK_EQ_INT(knit_relay_store_open(path, KNIT_RELAY_STORE_READONLY, &s), KNIT_EVERSION);
    }
    tmp_done();
}

/* Erasure forgets a namespace whole; others keep theirs; the name starts
** over at sequence 1 when written again. */
static void erase_namespace(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_batch_t *b;
    knit_digest_t d, zero;
    uint64_t seq, reached;
    int n = 0, more;

    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 0);
    add_int(b, 1, 1, 1, 1, 100, 0);
    apply_free(b, s, NULL);
    CHECK_OK(knit_relay_store_seq(s, NS, &seq));
    CHECK_EQ_INT(seq, 1);
    CHECK_EQ_INT(knit_relay_store_erase(s, "user:nobody"), KNIT_ENOTFOUND);
    CHECK_OK(knit_relay_store_erase(s, NS));
    CHECK_OK(knit_relay_store_seq(s, NS, &seq));
    CHECK_EQ_INT(seq, 0);
    CHECK_OK(knit_relay_store_catch_up(s, NS, 0, 0, &b, &reached, &more));
    CHECK_EQ_INT(b->nchanges, 0);
    knit_batch_free(b);
    knit_digest_zero(&zero);
    CHECK_OK(knit_relay_store_digest(s, NS, &d));
    CHECK(knit_digest_equal(&d, &zero));
    CHECK_OK(knit_relay_store_list(s, count_ns, &n));
    CHECK_EQ_INT(n, 0);
    /* Written again, it starts over. */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 0);
    apply_free(b, s, NULL);
    CHECK_OK(knit_relay_store_seq(s, NS, &seq));
    CHECK_EQ_INT(seq, 1);
    knit_relay_store_close(s);
    tmp_done();
}

/* A claim merges the source's new cells only: the second sign-in of the
** same pair reads nothing again, a later one reads what was written since,
** and erasing the target makes the next claim merge everything. */
static void claim_merges_new_cells_only(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_relay_backend_t be;
    knit_relay_merged_t m;
    knit_batch_t *b;
    knit_digest_t d1, d2;

    knit_relay_store_backend(s, &be);
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    for (int64_t pk = 1; pk <= 20; pk++) {
        add_live(b, pk, 1, 100, 0);
        add_int(b, pk, 1, pk, 1, 100, 0);
    }
    apply_free(b, s, NULL);
    CHECK_OK(be.merge(be.data, NS, "user:bob", 7, &m, NULL, NULL));
    CHECK_EQ_INT(m.cells, 40);
    CHECK_OK(be.merge(be.data, NS, "user:bob", 7, &m, NULL, NULL));
    CHECK_EQ_INT(m.cells, 0); /* nothing new */
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 2));
    add_int(b, 3, 1, 333, 1, 200, 1);
    add_live(b, 21, 1, 200, 1);
    apply_free(b, s, NULL);
    CHECK_OK(be.merge(be.data, NS, "user:bob", 7, &m, NULL, NULL));
    CHECK_EQ_INT(m.cells, 2);
    /* Erasing the target forgets the claim: the next merges everything,
    ** and the three steps above gave the same state as this one. */
    CHECK_OK(knit_relay_store_digest(s, "user:bob", &d1));
    CHECK_OK(knit_relay_store_erase(s, "user:bob"));
    CHECK_OK(be.merge(be.data, NS, "user:bob", 7, &m, NULL, NULL));
    CHECK_EQ_INT(m.cells, 41);
    CHECK_OK(knit_relay_store_digest(s, "user:bob", &d2));
    CHECK(knit_digest_equal(&d1, &d2));
    /* So does erasing the source: written again, it is merged again. */
    CHECK_OK(knit_relay_store_erase(s, NS));
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 99, 1, 300, 2);
    apply_free(b, s, NULL);
    CHECK_OK(be.merge(be.data, NS, "user:bob", 7, &m, NULL, NULL));
    CHECK_EQ_INT(m.cells, 1);
    knit_relay_store_close(s);
    tmp_done();
}

/* 1 if the bytes of needle are in the file path. */
static int file_holds(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    size_t n = strlen(needle), have = 0, cap = 0;
    char *buf = NULL;
    int found = 0;
    if (!f)
        return 0;
    for (;;) {
        if (have + 65536 > cap) {
            cap = (have + 65536) * 2;
            buf = realloc(buf, cap);
            CHECK(buf != NULL);
        }
        size_t k = fread(buf + have, 1, 65536, f);
        if (k == 0)
            break;
        have += k;
    }
    fclose(f);
    for (size_t i = 0; i + n <= have && !found; i++)
        found = memcmp(buf + i, needle, n) == 0;
    free(buf);
    return found;
}

/* Erasing an account removes its namespace and the anonymous one it
** claimed, physically: a planted value's bytes are in none of the store's
** files afterwards (secure_delete, and a checkpoint that truncates the
** WAL); another account's value stays. */
static void erase_account_physical(void)
{
    static const char planted[] = "PLANTED-3f9a1c-secret", kept[] = "KEPT-77d2e0-value";
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_relay_backend_t be;
    knit_relay_merged_t m;
    char db[128], wal[160];
    size_t erased;
    uint64_t seq;

    tmp_path(db, sizeof db, "r.db");
    snprintf(wal, sizeof wal, "%s-wal", db);
    knit_relay_store_backend(s, &be);
    for (int k = 0; k < 2; k++) {
        knit_batch_t *b = push_new();
        int64_t pk = 1;
        knit_change_t c = change(&pk, 1, 1, 100 + 100 * (uint64_t)k, 0);
        CHECK_OK(knit_batch_begin(b, 1));
        add_live(b, 1, 1, 100, 0);
        c.value.type = KNIT_TEXT;
        c.value.u.b.p = k == 0 ? planted : kept;
        c.value.u.b.n = strlen(c.value.u.b.p);
        CHECK_OK(knit_batch_add(b, &c));
        knit__free(c.pk);
        apply_free(b, s, NULL); /* into NS, which plays the anonymous one */
        if (k == 0)
            CHECK_OK(be.merge(be.data, NS, "user:erin", 100, &m, NULL, NULL));
        else /* sealed to erin: another account's claim is refused, nothing merged */
            CHECK_EQ_INT(be.merge(be.data, NS, "user:frank", 100, &m, NULL, NULL), KNIT_EDENIED);
    }
    /* NS now holds kept (LWW), user:erin planted, user:frank nothing. */
    CHECK(file_holds(db, planted) || file_holds(wal, planted));
    CHECK_OK(knit_relay_store_erase(s, NS)); /* the shared source goes first */
    CHECK_OK(knit_relay_store_erase_account(s, "user:erin", &erased));
    CHECK_EQ_INT(erased, 1);
    CHECK_OK(knit_relay_store_seq(s, "user:erin", &seq));
    CHECK_EQ_INT(seq, 0);
    CHECK(!file_holds(db, planted));
    CHECK(!file_holds(wal, planted));
    CHECK_OK(knit_relay_store_seq(s, "user:frank", &seq));
    CHECK_EQ_INT(seq, 0);
    CHECK(!file_holds(db, kept) && !file_holds(wal, kept)); /* went with NS */
    CHECK_EQ_INT(knit_relay_store_erase_account(s, "user:erin", &erased), KNIT_ENOTFOUND);
    knit_relay_store_close(s);
    tmp_done();
}

/* An account erase takes the anonymous namespaces it claimed along. */
static void erase_account_claimed(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_relay_backend_t be;
    knit_relay_merged_t m;
    knit_batch_t *b;
    size_t erased;
    uint64_t seq;
    knit_relay_store_backend(s, &be);
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 0);
    apply_free(b, s, NULL);
    CHECK_OK(be.merge(be.data, NS, "user:gina", 100, &m, NULL, NULL));
    CHECK_OK(knit_relay_store_erase_account(s, "user:gina", &erased));
    CHECK_EQ_INT(erased, 2);
    CHECK_OK(knit_relay_store_seq(s, NS, &seq));
    CHECK_EQ_INT(seq, 0);
    knit_relay_store_close(s);
    tmp_done();
}

/* A claim seals its source to the account (design note 12): another
** account's claim merges nothing, the same account's costs only what is
** new; a claim recorded before seals existed counts as one. */
static void claim_sealed(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_relay_backend_t be;
    knit_relay_merged_t m;
    knit_batch_t *b;
    uint64_t seq;
    int sealed;
    knit_relay_store_backend(s, &be);
    CHECK_OK(knit_relay_store_sealed(s, NS, &sealed));
    CHECK_EQ_INT(sealed, 0);
    b = push_new();
    CHECK_OK(knit_batch_begin(b, 1));
    add_live(b, 1, 1, 100, 0);
    apply_free(b, s, NULL);
    CHECK_OK(be.merge(be.data, NS, "user:ann", 100, &m, NULL, NULL));
    CHECK_EQ_INT(m.cells, 1);
    CHECK_OK(knit_relay_store_sealed(s, NS, &sealed));
    CHECK_EQ_INT(sealed, 1);
    CHECK_OK(be.sealed(be.data, NS, &sealed));
    CHECK_EQ_INT(sealed, 1);
    CHECK_EQ_INT(be.merge(be.data, NS, "user:ben", 100, &m, NULL, NULL), KNIT_EDENIED);
    CHECK_OK(knit_relay_store_seq(s, "user:ben", &seq));
    CHECK_EQ_INT(seq, 0);
    CHECK_OK(be.merge(be.data, NS, "user:ann", 100, &m, NULL, NULL));
    CHECK_EQ_INT(m.cells, 0); /* nothing new: nothing read */
    /* An empty namespace is sealed by its claim too. */
    CHECK_OK(be.merge(be.data, "anon:empty", "user:ann", 100, &m, NULL, NULL));
    CHECK_EQ_INT(be.merge(be.data, "anon:empty", "user:ben", 100, &m, NULL, NULL), KNIT_EDENIED);
    /* A claim from before seals. */
    CHECK_OK(knit_relay_store_claim_put(s, "anon:old", "user:cy", 5));
    CHECK_OK(knit_relay_store_sealed(s, "anon:old", &sealed));
    CHECK_EQ_INT(sealed, 1);
    CHECK_EQ_INT(knit_relay_store_seal(s, "anon:old", "user:dee"), KNIT_EDENIED);
    CHECK_OK(knit_relay_store_seal(s, "anon:old", "user:cy"));
    /* Seals outlive erasure. */
    size_t erased;
    CHECK_OK(knit_relay_store_erase_account(s, "user:ann", &erased));
    CHECK_OK(knit_relay_store_sealed(s, NS, &sealed));
    CHECK_EQ_INT(sealed, 1);
    knit_relay_store_close(s);
    tmp_done();
}

/* Erasing leaves a durable tombstone, even with nothing to erase; unerase
** removes it. */
static void erase_tombstone(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_relay_backend_t be;
    size_t erased;
    int is, cleared;
    CHECK_OK(knit_relay_store_erased(s, "user:gus", &is));
    CHECK_EQ_INT(is, 0);
    CHECK_EQ_INT(knit_relay_store_erase_account(s, "user:gus", &erased), KNIT_ENOTFOUND);
    CHECK_OK(knit_relay_store_erased(s, "user:gus", &is));
    CHECK_EQ_INT(is, 1);
    knit_relay_store_close(s);
    s = open_store("r.db");
    knit_relay_store_backend(s, &be);
    CHECK_OK(be.erased(be.data, "user:gus", &is));
    CHECK_EQ_INT(is, 1);
    CHECK_OK(be.erased(be.data, "user:gusx", &is));
    CHECK_EQ_INT(is, 0);
    CHECK_OK(knit_relay_store_unerase(s, "user:gus", &cleared));
    CHECK_EQ_INT(cleared, 1);
    CHECK_OK(knit_relay_store_erased(s, "user:gus", &is));
    CHECK_EQ_INT(is, 0);
    CHECK_OK(knit_relay_store_unerase(s, "user:gus", &cleared));
    CHECK_EQ_INT(cleared, 0);
    knit_relay_store_close(s);
    tmp_done();
}

/* The relay's site id is made once and survives reopening. */
static void site_id_kept(void)
{
    tmp_init();
    knit_relay_store_t *s = open_store("r.db");
    knit_site_t a, b, zero;
    memset(&zero, 0, sizeof zero);
    CHECK_OK(knit_relay_store_site(s, &a));
    CHECK(memcmp(&a, &zero, sizeof a) != 0);
    CHECK_OK(knit_relay_store_site(s, &b));
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    knit_relay_store_close(s);
    s = open_store("r.db");
    CHECK_OK(knit_relay_store_site(s, &b));
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    knit_relay_store_close(s);
    tmp_done();
}

KNIT_TESTS(T(refuses_other_versions), T(lww_rules), T(orset_rules), T(replay_harmless),
           T(catch_up_once), T(digest_independent), T(digest_matches_replica), T(pushes_commute),
           T(group_atomic), T(durable_reopen), T(listing), T(alloc_failures), T(erase_namespace),
           T(claim_merges_new_cells_only), T(erase_account_physical), T(erase_account_claimed),
           T(site_id_kept), T(claim_sealed), T(erase_tombstone))
