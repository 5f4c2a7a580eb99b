/*
** test_reject.c: knit_reject, the replica's half of a refused push
** (runtime/reject.c).  Replica B plays the relay: it holds every change the
** relay accepted, and it is also "a replica that never made the refused
** write", whose digest the writer must end with.
*/
#include "rt.h"

typedef struct seen_s {
    int events;      /* events fired */
    int rolled_back; /* the last one's flag */
    size_t nkeys;    /* its keys */
    int key_rb;      /* its first key's rolled_back */
    int key_deleted; /* its first key's deleted */
} seen_t;

static void on_change(knit_t *k, const knit_event_t *ev, void *data)
{
    seen_t *s = data;
    (void)k;
    s->events++;
    s->rolled_back = ev->rolled_back;
    s->nkeys = ev->nkeys;
    s->key_rb = ev->nkeys ? ev->keys[0].rolled_back : -1;
    s->key_deleted = ev->nkeys ? ev->keys[0].deleted : -1;
}

static void pair(knit_t **a, knit_t **b)
{
    *a = rt_open("a.db");
    *b = rt_open("b.db");
    rt_exec(*a, "CREATE TABLE kv(k INTEGER NOT NULL PRIMARY KEY, v TEXT) WITHOUT ROWID");
    rt_exec(*b, "CREATE TABLE kv(k INTEGER NOT NULL PRIMARY KEY, v TEXT) WITHOUT ROWID");
    CHECK_OK(knit_track(*a, "kv", NULL));
    CHECK_OK(knit_track(*b, "kv", NULL));
    CHECK_OK(knit_set_namespace(*a, "user:a"));
    CHECK_OK(knit_set_namespace(*b, "user:a"));
    rt_exec(*a, "INSERT INTO kv VALUES (1, 'one')");
    uint64_t since = 0;
    rt_send(*a, *b, &since); /* the relay accepted row 1 */
    uint64_t v;
    CHECK_OK(knit_version(*a, &v));
    CHECK_OK(knit_ack(*a, v));
}

/* A's unacknowledged local changes: what it would push. */
static knit_batch_t *pending(knit_t *a)
{
    uint64_t acked;
    knit_batch_t *b = NULL;
    knit_since_opts_t o = {.local_only = 1};
    CHECK_OK(knit_acked(a, &acked));
    CHECK_OK(knit_changes_since(a, acked, &o, &b));
    return b;
}

static void check_same_digest(knit_t *a, knit_t *b)
{
    knit_digest_t da, db;
    CHECK_OK(knit_digest(a, NULL, &da));
    CHECK_OK(knit_digest(b, NULL, &db));
    CHECK(knit_digest_equal(&da, &db));
}

static void insert_refused_disappears(void)
{
    knit_t *a, *b;
    seen_t s = {0};
    rt_init();
    pair(&a, &b);
    CHECK_OK(knit_on_change(a, on_change, &s));
    CHECK_OK(knit_on_change_keys(a, 16));
    rt_exec(a, "INSERT INTO kv VALUES (2, 'two')");
    knit_batch_t *p = pending(a);
    CHECK_EQ_INT(p->nchanges, 2); /* liveness and v of row 2 */
    knit_refusal_t r[2] = {{0, KNIT_ECLOCKSKEW, "stamp 5 min ahead"},
                           {1, KNIT_ECLOCKSKEW, "stamp 5 min ahead"}};
    size_t rolled = 0;
    s.events = 0;
    CHECK_OK(knit_reject(a, p, r, 2, NULL, &rolled));
    CHECK_EQ_INT(rolled, 1);
    RT_EXPECT(a, "SELECT * FROM kv ORDER BY k", "1|'one'\n");
    RT_EXPECT(a,
              "SELECT tbl, key, col, value, code_name, reason, rolled_back FROM _knit_rejected "
              "ORDER BY id",
              "'kv'|'2'|''|NULL|'KNIT_ECLOCKSKEW'|'stamp 5 min ahead'|1\n"
              "'kv'|'2'|'v'|'two'|'KNIT_ECLOCKSKEW'|'stamp 5 min ahead'|1\n");
    check_same_digest(a, b);
    CHECK_EQ_INT(s.events, 1);
    CHECK_EQ_INT(s.rolled_back, 1);
    CHECK_EQ_INT(s.nkeys, 1);
    CHECK_EQ_INT(s.key_rb, 1);
    CHECK_EQ_INT(s.key_deleted, 1);
    knit_batch_free(p);
    /* Nothing is left to push: the refused write is not retried. */
    p = pending(a);
    CHECK_EQ_INT(p->nchanges, 0);
    knit_batch_free(p);
    uint64_t rows;
    CHECK_OK(knit_pending(a, &rows));
    CHECK_EQ_INT(rows, 0);
    /* A later write of the same key is a new insert, pushed as usual. */
    rt_exec(a, "INSERT INTO kv VALUES (2, 'deux')");
    p = pending(a);
    CHECK_EQ_INT(p->nchanges, 2);
    knit_batch_free(p);
    knit_close(a);
    knit_close(b);
    rt_done();
}

static void update_reverts_to_relay_value(void)
{
    knit_t *a, *b;
    rt_init();
    pair(&a, &b);
    rt_exec(a, "UPDATE kv SET v = 'uno' WHERE k = 1");
    rt_exec(a, "INSERT INTO kv VALUES (3, 'three')"); /* accepted: stays */
    knit_batch_t *p = pending(a);
    size_t refused = SIZE_MAX;
    for (size_t i = 0; i < p->nchanges; i++)
        if (p->changes[i].pk[0].u.i == 1 && p->changes[i].col == 1)
            refused = i;
    CHECK(refused != SIZE_MAX);
    knit_batch_t *state = NULL;
    CHECK_OK(knit_changes_since(b, 0, NULL, &state)); /* the relay's cells */
    knit_refusal_t r = {refused, KNIT_EINVAL, "no write rights"};
    int rc = knit_reject(a, p, &r, 1, state, NULL);
    if (rc)
        fprintf(stderr, "knit_reject: %s\n", knit_errmsg(a));
    CHECK_OK(rc);
    RT_EXPECT(a, "SELECT * FROM kv ORDER BY k", "1|'one'\n3|'three'\n");
    RT_EXPECT(a, "SELECT key, col, value, code, rolled_back FROM _knit_rejected",
              "'1'|'v'|'uno'|-2|1\n");
    knit_batch_free(p);
    /* What remains to push is row 3, and the relay's own cell of row 1 (it
    ** was this replica's earlier write, so it reads as local; pushing it
    ** again changes nothing).  The refused 'uno' is not among them; once the
    ** relay has the rest, the replicas agree. */
    p = pending(a);
    CHECK_EQ_INT(p->nchanges, 3);
    for (size_t i = 0; i < p->nchanges; i++)
        CHECK(!(p->changes[i].value.type == KNIT_TEXT && p->changes[i].value.u.b.n == 3 &&
                memcmp(p->changes[i].value.u.b.p, "uno", 3) == 0));
    CHECK_OK(knit_apply(b, p, NULL));
    check_same_digest(a, b);
    knit_batch_free(p);
    knit_batch_free(state);
    knit_close(a);
    knit_close(b);
    rt_done();
}

static void superseded_write_left_alone(void)
{
    knit_t *a, *b;
    rt_init();
    pair(&a, &b);
    rt_exec(a, "UPDATE kv SET v = 'x' WHERE k = 1");
    knit_batch_t *p = pending(a);
    CHECK_EQ_INT(p->nchanges, 1);
    rt_exec(a, "UPDATE kv SET v = 'y' WHERE k = 1"); /* newer than the refused one */
    knit_refusal_t r = {0, KNIT_EINVAL, ""};
    CHECK_OK(knit_reject(a, p, &r, 1, NULL, NULL));
    RT_EXPECT(a, "SELECT * FROM kv", "1|'y'\n");
    RT_EXPECT(a, "SELECT value, reason, rolled_back FROM _knit_rejected",
              "'x'|'invalid argument'|0\n");
    knit_batch_free(p);
    p = pending(a);
    CHECK_EQ_INT(p->nchanges, 1); /* 'y' is still pushed */
    knit_batch_free(p);
    /* A refusal naming a change the batch does not have is an error, and
    ** nothing is recorded. */
    r.change = 99;
    p = pending(a);
    CHECK_EQ_INT(knit_reject(a, p, &r, 1, NULL, NULL), KNIT_EINVAL);
    RT_EXPECT(a, "SELECT count(*) FROM _knit_rejected", "1\n");
    knit_batch_free(p);
    knit_close(a);
    knit_close(b);
    rt_done();
}

static void table_exists_before_any_refusal(void)
{
    rt_init();
    knit_t *a = rt_open("a.db");
    RT_EXPECT(a, "SELECT count(*) FROM _knit_rejected", "0\n");
    knit_close(a);
    rt_done();
}

/* What a follower's callback saw: keys as "a|hexb|D|R " per key. */
typedef struct fseen_s {
    int events;     /* all events */
    int rb_events;  /* events with rolled_back = 1 */
    char keys[512]; /* keys of the rolled-back events */
} fseen_t;

static void on_follower(knit_t *k, const knit_event_t *ev, void *data)
{
    fseen_t *s = data;
    (void)k;
    s->events++;
    if (!ev->rolled_back) {
        for (size_t i = 0; i < ev->nkeys; i++) /* ordinary changes are never rolled back */
            CHECK_EQ_INT(ev->keys[i].rolled_back, 0);
        return;
    }
    s->rb_events++;
    for (size_t i = 0; i < ev->nkeys; i++) {
        const knit_event_key_t *key = &ev->keys[i];
        size_t n = strlen(s->keys);
        CHECK_EQ_INT(key->npk, 2);
        CHECK_EQ_INT(key->pk[0].type, KNIT_TEXT);
        CHECK_EQ_INT(key->pk[1].type, KNIT_BLOB);
        n += (size_t)snprintf(s->keys + n, sizeof s->keys - n, "%.*s|", (int)key->pk[0].u.b.n,
                              (const char *)key->pk[0].u.b.p);
        for (size_t j = 0; j < key->pk[1].u.b.n; j++)
            n += (size_t)snprintf(s->keys + n, sizeof s->keys - n, "%02x",
                                  ((const uint8_t *)key->pk[1].u.b.p)[j]);
        snprintf(s->keys + n, sizeof s->keys - n, "|%s|%s ", key->deleted ? "D" : "-",
                 key->rolled_back ? "R" : "-");
    }
}

/* Another handle on the writer's file (a follower process, sync-agent
** watch) is told of the rollback by knit_poll, once, with the keys parsed
** back from _knit_rejected: a composite key of quoted text and a BLOB. */
static void follower_told(void)
{
    rt_init();
    knit_t *a = rt_open("a.db"), *b = rt_open("b.db");
    const char *ddl = "CREATE TABLE doc(name TEXT NOT NULL, tag BLOB NOT NULL, v TEXT NOT NULL,"
                      " PRIMARY KEY(name, tag)) WITHOUT ROWID";
    rt_exec(a, ddl);
    rt_exec(b, ddl);
    CHECK_OK(knit_track(a, "doc", NULL));
    CHECK_OK(knit_track(b, "doc", NULL));
    CHECK_OK(knit_set_namespace(a, "user:a"));
    CHECK_OK(knit_set_namespace(b, "user:a"));
    rt_exec(a, "INSERT INTO doc VALUES ('it''s', X'00ff', 'kept')");
    uint64_t since = 0, v;
    rt_send(a, b, &since);
    CHECK_OK(knit_version(a, &v));
    CHECK_OK(knit_ack(a, v));

    knit_t *f = rt_open("a.db"); /* the follower */
    fseen_t s, sl;               /* the follower's events, the leader's */
    memset(&s, 0, sizeof s);
    memset(&sl, 0, sizeof sl);
    CHECK_OK(knit_on_change(f, on_follower, &s));
    CHECK_OK(knit_on_change_keys(f, 16));
    CHECK_OK(knit_on_change(a, on_follower, &sl));
    CHECK_OK(knit_on_change_keys(a, 16));

    rt_exec(a, "UPDATE doc SET v = 'edit' WHERE name = 'it''s'");
    rt_exec(a, "INSERT INTO doc VALUES ('new \"one\"', X'', 'refused')");
    knit_batch_t *p = pending(a), *state = NULL;
    CHECK_OK(knit_changes_since(b, 0, NULL, &state));
    knit_refusal_t r[8];
    CHECK(p->nchanges <= 8);
    for (size_t i = 0; i < p->nchanges; i++)
        r[i] = (knit_refusal_t){i, KNIT_EDENIED, "read-only"};
    CHECK_OK(knit_reject(a, p, r, p->nchanges, state, NULL));
    CHECK_EQ_INT(sl.rb_events, 1); /* the leader's own event */
    RT_EXPECT(a, "SELECT name, hex(tag), v FROM doc", "'it''s'|'00FF'|'kept'\n");

    /* The follower: one rolled-back event naming both rows. */
    CHECK(knit_poll(f) >= 0);
    CHECK_EQ_INT(s.rb_events, 1);
    CHECK(strstr(s.keys, "it's|00ff|-|R ") != NULL);
    CHECK(strstr(s.keys, "new \"one\"||D|R ") != NULL);
    /* Not again: neither the follower nor the leader repeats it. */
    rt_exec(a, "INSERT INTO doc VALUES ('later', X'01', 'ok')");
    CHECK(knit_poll(f) >= 0);
    CHECK(knit_poll(a) >= 0);
    CHECK_EQ_INT(s.rb_events, 1);
    CHECK_EQ_INT(sl.rb_events, 1);
    /* A handle opened after the refusal does not report old ones. */
    knit_t *g = rt_open("a.db");
    fseen_t sg;
    memset(&sg, 0, sizeof sg);
    CHECK_OK(knit_on_change(g, on_follower, &sg));
    CHECK_OK(knit_on_change_keys(g, 16));
    rt_exec(a, "UPDATE doc SET v = 'again' WHERE name = 'later'");
    CHECK(knit_poll(g) >= 0);
    CHECK_EQ_INT(sg.rb_events, 0);
    CHECK(sg.events >= 1);
    knit_batch_free(p);
    knit_batch_free(state);
    knit_close(g);
    knit_close(f);
    knit_close(a);
    knit_close(b);
    rt_done();
}

KNIT_TESTS(T(insert_refused_disappears), T(update_reverts_to_relay_value),
           T(superseded_write_left_alone), T(table_exists_before_any_refusal), T(follower_told))
