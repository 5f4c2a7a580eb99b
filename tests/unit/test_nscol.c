/*
** test_nscol.c: rows whose column selects their namespace (knit_track's
** "org_id:ns"), moved between namespaces, against a reference model.
**
** Three replicas and one relay store: A and B are two devices of user u
** (user:u, org:acme, org:beta), C is user c, a member of acme only
** (user:c, org:acme).  Random inserts, updates, deletes and moves (org_id
** set, changed or cleared) are made on a random replica; each replica
** pushes its own changes per namespace into the store, and every replica
** catches up on the namespaces it holds, as the sync client does.
**   sequential: one write, then a full sync; every replica must then hold
**     exactly the model's rows of its namespaces (a moved row disappears
**     from replicas that do not hold its new namespace), and each
**     namespace's digest must equal the relay's.
**   concurrent: several replicas write before a sync; afterwards A and B
**     hold the same rows, every digest equals the relay's, and every row
**     sits in the namespace its org_id names.
**   alive_in_two: a key alive in two namespaces at once, where the writer
**     of the later life never held the other namespace: the replica that
**     holds both ends the row's life in the namespace it leaves.
** The seed is printed; KNIT_CASES_SCALE scales the count.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit.h"
#include "relay_store.h"
#include <sqlite3.h>
#include "test.h"

#define NKEYS 12
#define NREP 3

static const char *ORGS[] = {NULL, "acme", "beta"};

typedef struct rep_s {
    knit_t *k;
    const char *user;  /* its write namespace */
    const char *ns[3]; /* namespaces it holds */
    int norgs;         /* ORGS[0..norgs-1] it may write */
} rep_t;

typedef struct model_s {
    int live;
    int org; /* index into ORGS */
    int v;
    const char *owner; /* user namespace when org == 0 */
} model_t;

static const char *ns_of(const model_t *m)
{
    static char buf[3][32];
    static int i;
    i = (i + 1) % 3;
    if (m->org == 0)
        return m->owner;
    snprintf(buf[i], sizeof buf[i], "org:%s", ORGS[m->org]);
    return buf[i];
}

static int holds(const rep_t *r, const char *ns)
{
    for (int i = 0; i < 3 && r->ns[i]; i++)
        if (strcmp(r->ns[i], ns) == 0)
            return 1;
    return 0;
}

static void exec(knit_t *k, const char *sql)
{
    char *err = NULL;
    if (getenv("KNIT_TRACE"))
        fprintf(stderr, "%p: %s\n", (void *)k, sql);
    int rc = sqlite3_exec(knit_db(k), sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
    sqlite3_free(err);
    CHECK_EQ_INT(rc, SQLITE_OK);
}

/* Pushes r's own changes of each namespace it holds, then every replica
** catches up on its namespaces from the start (idempotent). */
static void push(knit_relay_store_t *s, rep_t *r)
{
    for (int i = 0; i < 3 && r->ns[i]; i++) {
        knit_since_opts_t o = {.local_only = 1, .ns = r->ns[i]};
        knit_batch_t *b = NULL;
        knit_relay_applied_t out;
        CHECK_OK(knit_changes_since(r->k, 0, &o, &b));
        CHECK_OK(knit_relay_store_begin(s));
        int rc = knit_relay_store_apply(s, r->ns[i], b, &out);
        if (rc)
            fprintf(stderr, "store: %s\n", knit_relay_store_errmsg(s));
        CHECK_OK(rc);
        knit_batch_free(out.fanout);
        CHECK_OK(knit_relay_store_commit(s));
        knit_batch_free(b);
    }
}

static void pull(knit_relay_store_t *s, rep_t *r)
{
    for (int i = 0; i < 3 && r->ns[i]; i++) {
        knit_batch_t *b = NULL;
        uint64_t reached;
        int more;
        CHECK_OK(knit_relay_store_catch_up(s, r->ns[i], 0, 0, &b, &reached, &more));
        CHECK_EQ_INT(more, 0);
        int rc = knit_apply(r->k, b, NULL);
        if (rc)
            fprintf(stderr, "apply: %s\n", knit_errmsg(r->k));
        CHECK_OK(rc);
        knit_batch_free(b);
    }
}

static void dump(const char *who, const knit_batch_t *b)
{
    for (size_t j = 0; j < b->nchanges; j++) {
        const knit_change_t *c = &b->changes[j];
        fprintf(stderr, "  %s: key %lld col %u cl %llu hlc %llx site %u\n", who,
                (long long)c->pk[0].u.i, c->col, (unsigned long long)c->cl,
                (unsigned long long)c->hlc, c->site);
    }
}

static void same_digests(knit_relay_store_t *s, rep_t *r)
{
    for (int i = 0; i < 3 && r->ns[i]; i++) {
        knit_digest_t dr, ds;
        CHECK_OK(knit_digest(r->k, r->ns[i], &dr));
        CHECK_OK(knit_relay_store_digest(s, r->ns[i], &ds));
        if (memcmp(&dr, &ds, sizeof dr) != 0) {
            knit_batch_t *b = NULL;
            uint64_t reached;
            int more;
            knit_since_opts_t o = {.ns = r->ns[i]};
            fprintf(stderr, "%s: digest of %s differs from the relay's\n", r->user, r->ns[i]);
            CHECK_OK(knit_relay_store_catch_up(s, r->ns[i], 0, 0, &b, &reached, &more));
            dump("relay", b);
            knit_batch_free(b);
            CHECK_OK(knit_changes_since(r->k, 0, &o, &b));
            dump("replica", b);
            knit_batch_free(b);
        }
        CHECK(memcmp(&dr, &ds, sizeof dr) == 0);
    }
}

/* Every row of r sits in the namespace its org_id names (or r's own). */
static void rows_in_their_namespace(rep_t *r)
{
    sqlite3_stmt *st = NULL;
    CHECK_OK(sqlite3_prepare_v2(knit_db(r->k), "SELECT id, org_id FROM doc", -1, &st, NULL));
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *org = (const char *)sqlite3_column_text(st, 1);
        char want[64];
        snprintf(want, sizeof want, "%s%s", org ? "org:" : "", org ? org : "");
        knit_batch_t *b = NULL;
        /* The row's namespace, read back through changes_since. */
        int found = 0;
        const char *cands[] = {"user:u", "user:c", "org:acme", "org:beta"};
        for (int c = 0; c < 4; c++) {
            knit_since_opts_t o = {.ns = cands[c]};
            CHECK_OK(knit_changes_since(r->k, 0, &o, &b));
            for (size_t j = 0; j < b->nchanges; j++)
                if (b->changes[j].col == 0 &&
                    b->changes[j].pk[0].u.i == sqlite3_column_int64(st, 0) &&
                    (b->changes[j].cl & 1)) {
                    if (org)
                        CHECK_STR(cands[c], want);
                    else
                        CHECK(strncmp(cands[c], "user:", 5) == 0);
                    found++;
                }
            knit_batch_free(b);
        }
        CHECK_EQ_INT(found, 1);
    }
    sqlite3_finalize(st);
}

static void setup(const char *dir, rep_t *reps)
{
    static const char *users[NREP] = {"user:u", "user:u", "user:c"};
    for (int i = 0; i < NREP; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/r%d.db", dir, i);
        CHECK_OK(knit_open(path, NULL, &reps[i].k));
        exec(reps[i].k, "CREATE TABLE doc(id INT PRIMARY KEY, title TEXT NOT NULL, org_id TEXT)");
        CHECK_OK(knit_track(reps[i].k, "doc", "org_id:ns"));
        CHECK_OK(knit_set_namespace(reps[i].k, users[i]));
        if (getenv("KNIT_TRACE"))
            fprintf(stderr, "%p is replica %d\n", (void *)reps[i].k, i);
        reps[i].user = users[i];
        memset(reps[i].ns, 0, sizeof reps[i].ns);
        reps[i].ns[0] = users[i];
        reps[i].ns[1] = "org:acme";
        reps[i].ns[2] = i < 2 ? "org:beta" : NULL;
        reps[i].norgs = i < 2 ? 3 : 2;
    }
}

static void teardown(const char *dir, rep_t *reps)
{
    char cmd[400];
    for (int i = 0; i < NREP; i++)
        knit_close(reps[i].k);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

/* One random write on replica r, following (and updating) the model. */
static void random_write(knit_rng_t *g, rep_t *r, model_t *m)
{
    int key = (int)knit_rng_below(g, NKEYS);
    model_t *e = &m[key];
    char sql[256];
    int org = (int)knit_rng_below(g, (uint64_t)r->norgs);
    int v = (int)knit_rng_below(g, 1000);
    if (!e->live) {
        snprintf(sql, sizeof sql, "INSERT OR IGNORE INTO doc VALUES (%d, 't%d', %s%s%s)", key, v,
                 org ? "'" : "", org ? ORGS[org] : "NULL", org ? "'" : "");
        exec(r->k, sql);
        *e = (model_t){1, org, v, r->user};
        return;
    }
    if (!holds(r, ns_of(e)))
        return; /* another user's row: r cannot see it */
    switch (knit_rng_below(g, 4)) {
    case 0:
        snprintf(sql, sizeof sql, "DELETE FROM doc WHERE id = %d", key);
        exec(r->k, sql);
        e->live = 0;
        break;
    case 1: /* move (maybe to where it is) */
        snprintf(sql, sizeof sql, "UPDATE doc SET org_id = %s%s%s WHERE id = %d", org ? "'" : "",
                 org ? ORGS[org] : "NULL", org ? "'" : "", key);
        exec(r->k, sql);
        if (org == 0)
            e->owner = r->user;
        e->org = org;
        break;
    case 2: /* move and edit in one statement */
        snprintf(sql, sizeof sql, "UPDATE doc SET org_id = %s%s%s, title = 't%d' WHERE id = %d",
                 org ? "'" : "", org ? ORGS[org] : "NULL", org ? "'" : "", v, key);
        exec(r->k, sql);
        if (org == 0)
            e->owner = r->user;
        e->org = org;
        e->v = v;
        break;
    default:
        snprintf(sql, sizeof sql, "UPDATE doc SET title = 't%d' WHERE id = %d", v, key);
        exec(r->k, sql);
        e->v = v;
    }
}

/* r holds exactly the model's rows of its namespaces. */
static void matches_model(rep_t *r, const model_t *m)
{
    for (int key = 0; key < NKEYS; key++) {
        sqlite3_stmt *st = NULL;
        CHECK_OK(sqlite3_prepare_v2(knit_db(r->k), "SELECT title, org_id FROM doc WHERE id = ?", -1,
                                    &st, NULL));
        sqlite3_bind_int(st, 1, key);
        int rc = sqlite3_step(st);
        int want = m[key].live && holds(r, ns_of(&m[key]));
        if (want != (rc == SQLITE_ROW))
            fprintf(stderr, "%s: row %d %s\n", r->user, key, want ? "missing" : "should be gone");
        CHECK_EQ_INT(rc == SQLITE_ROW, want);
        if (want) {
            char t[32];
            snprintf(t, sizeof t, "t%d", m[key].v);
            CHECK_STR((const char *)sqlite3_column_text(st, 0), t);
            const char *org = (const char *)sqlite3_column_text(st, 1);
            if (m[key].org)
                CHECK_STR(org, ORGS[m[key].org]);
            else
                CHECK(org == NULL);
        }
        sqlite3_finalize(st);
    }
}

static void run(int concurrent)
{
    uint64_t base = knit_test_seed();
    long cases = knit_test_cases(concurrent ? 40 : 60);
    for (long n = 0; n < cases; n++) {
        knit_rng_t g = {base + (uint64_t)n * 7919 + (uint64_t)concurrent};
        knit_test_case_seed(g.s);
        char dir[] = "/tmp/knit-nscol-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        rep_t reps[NREP];
        model_t m[NKEYS];
        memset(m, 0, sizeof m);
        setup(dir, reps);
        char spath[300];
        snprintf(spath, sizeof spath, "%s/relay.db", dir);
        knit_relay_store_t *s = NULL;
        CHECK_OK(knit_relay_store_open(spath, 0, &s));
        for (int step = 0; step < 30; step++) {
            int writers = concurrent ? 1 + (int)knit_rng_below(&g, NREP) : 1;
            int first = (int)knit_rng_below(&g, NREP);
            for (int w = 0; w < writers; w++)
                random_write(&g, &reps[(first + w) % NREP], m);
            for (int w = 0; w < NREP; w++)
                push(s, &reps[w]);
            for (int w = 0; w < NREP; w++)
                pull(s, &reps[w]);
            if (!concurrent)
                for (int w = 0; w < NREP; w++)
                    matches_model(&reps[w], m);
        }
        /* A second round settles what concurrent moves left in flight. */
        for (int w = 0; w < NREP; w++)
            push(s, &reps[w]);
        for (int w = 0; w < NREP; w++)
            pull(s, &reps[w]);
        for (int w = 0; w < NREP; w++) {
            same_digests(s, &reps[w]);
            rows_in_their_namespace(&reps[w]);
        }
        knit_digest_t da, db;
        CHECK_OK(knit_digest(reps[0].k, NULL, &da));
        CHECK_OK(knit_digest(reps[1].k, NULL, &db));
        CHECK(memcmp(&da, &db, sizeof da) == 0);
        knit_relay_store_close(s);
        teardown(dir, reps);
    }
}

static void sequential(void)
{
    run(0);
}

static void concurrent(void)
{
    run(1);
}

/* The spec is checked: one ns column, not a key, and its kind is kept. */
static void spec_refusals(void)
{
    char dir[] = "/tmp/knit-nscol-XXXXXX";
    char path[300];
    knit_t *k = NULL;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/r.db", dir);
    CHECK_OK(knit_open(path, NULL, &k));
    exec(k, "CREATE TABLE d(id TEXT PRIMARY KEY, a TEXT, b TEXT)");
    CHECK_EQ_INT(knit_track(k, "d", "a:ns,b:ns"), KNIT_EINVAL);
    CHECK_EQ_INT(knit_track(k, "d", "id:ns"), KNIT_ESCHEMA);
    CHECK_OK(knit_track(k, "d", "a:ns"));
    CHECK_EQ_INT(knit_track(k, "d", "a:lww"), KNIT_ESCHEMA);
    /* Added later: a new column may not take the role a already has. */
    exec(k, "ALTER TABLE d ADD COLUMN c TEXT");
    CHECK_EQ_INT(knit_track(k, "d", "c:ns"), KNIT_ESCHEMA);
    CHECK_OK(knit_track(k, "d", NULL));
    /* A value that is no organization id keeps the row the user's own. */
    CHECK_OK(knit_set_namespace(k, "user:x"));
    exec(k, "INSERT INTO d VALUES ('k1', 'not an id!', NULL, NULL), ('k2', 'acme', NULL, NULL)");
    knit_since_opts_t o = {.ns = "user:x"};
    knit_batch_t *b = NULL;
    CHECK_OK(knit_changes_since(k, 0, &o, &b));
    int k1 = 0, k2 = 0;
    for (size_t j = 0; j < b->nchanges; j++) {
        k1 += b->changes[j].pk[0].u.b.n == 2 && memcmp(b->changes[j].pk[0].u.b.p, "k1", 2) == 0;
        k2 += b->changes[j].pk[0].u.b.n == 2 && memcmp(b->changes[j].pk[0].u.b.p, "k2", 2) == 0;
    }
    knit_batch_free(b);
    CHECK(k1 > 0);
    CHECK_EQ_INT(k2, 0);
    o.ns = "org:acme";
    CHECK_OK(knit_changes_since(k, 0, &o, &b));
    CHECK(b->nchanges > 0);
    knit_batch_free(b);
    knit_close(k);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

static void sync_all(knit_relay_store_t *s, rep_t *reps)
{
    for (int w = 0; w < NREP; w++)
        push(s, &reps[w]);
    for (int w = 0; w < NREP; w++)
        pull(s, &reps[w]);
}

/* Is key alive in ns at the relay? */
static int relay_alive(knit_relay_store_t *s, const char *ns, int64_t key)
{
    knit_batch_t *b = NULL;
    uint64_t reached;
    int more, live = 0;
    CHECK_OK(knit_relay_store_catch_up(s, ns, 0, 0, &b, &reached, &more));
    for (size_t j = 0; j < b->nchanges; j++)
        if (b->changes[j].col == 0 && b->changes[j].pk[0].u.i == key)
            live = (int)(b->changes[j].cl & 1);
    knit_batch_free(b);
    return live;
}

static void alive_in_two(void)
{
    char dir[] = "/tmp/knit-nscol-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    rep_t reps[NREP];
    setup(dir, reps);
    char spath[300];
    snprintf(spath, sizeof spath, "%s/relay.db", dir);
    knit_relay_store_t *s = NULL;
    CHECK_OK(knit_relay_store_open(spath, 0, &s));
    /* A makes the row in acme and moves it to beta, which C cannot see. */
    exec(reps[0].k, "INSERT INTO doc VALUES (1, 'a', 'acme')");
    sync_all(s, reps);
    exec(reps[0].k, "UPDATE doc SET org_id = 'beta' WHERE id = 1");
    sync_all(s, reps);
    CHECK(relay_alive(s, "org:beta", 1));
    CHECK(!relay_alive(s, "org:acme", 1));
    /* C makes the key again, its own first (synced), then shares it to
    ** acme: a later life there (causal length 5) than beta's (3). */
    exec(reps[2].k, "INSERT INTO doc VALUES (1, 'c', NULL)");
    sync_all(s, reps);
    exec(reps[2].k, "UPDATE doc SET org_id = 'acme' WHERE id = 1");
    for (int w = 0; w < NREP; w++)
        push(s, &reps[w]);
    pull(s, &reps[0]);
    /* A now ends the row's life in beta.  Were A only a viewer of beta,
    ** the relay would refuse that tombstone: it is no write of A's user,
    ** so nothing is recorded (reject.c design note 8). */
    {
        knit_since_opts_t o = {.local_only = 1, .ns = "org:beta"};
        knit_batch_t *b = NULL;
        knit_refusal_t f[8];
        size_t rolled = 9;
        CHECK_OK(knit_changes_since(reps[0].k, 0, &o, &b));
        CHECK(b->nchanges >= 1 && b->nchanges <= 8);
        for (size_t i = 0; i < b->nchanges; i++)
            f[i] = (knit_refusal_t){i, KNIT_EDENIED, "org:beta is read-only (role viewer)"};
        CHECK_OK(knit_reject(reps[0].k, b, f, b->nchanges, NULL, &rolled));
        CHECK_EQ_INT(rolled, 0);
        sqlite3_stmt *st = NULL;
        CHECK_OK(sqlite3_prepare_v2(knit_db(reps[0].k), "SELECT count(*) FROM _knit_rejected", -1,
                                    &st, NULL));
        CHECK_EQ_INT(sqlite3_step(st), SQLITE_ROW);
        CHECK_EQ_INT(sqlite3_column_int(st, 0), 0);
        sqlite3_finalize(st);
        knit_batch_free(b);
    }
    sync_all(s, reps);
    sync_all(s, reps);
    CHECK(relay_alive(s, "org:acme", 1));
    CHECK(!relay_alive(s, "org:beta", 1)); /* A or B ended it there */
    for (int w = 0; w < NREP; w++) {
        same_digests(s, &reps[w]);
        rows_in_their_namespace(&reps[w]);
    }
    knit_relay_store_close(s);
    teardown(dir, reps);
}

KNIT_TESTS(T(spec_refusals), T(sequential), T(concurrent), T(alive_in_two))
