/*
** test_inspect_replica.c: sync-inspect's replica and relay commands on the
** fixture of test_inspect_harness.h, run as a child process: golden text
** output for each command (site ids and the directory masked), the JSON
** form of each (valid, one document, the fields scripts read), keys typed
** as SQL literals, and digests that agree between converged replicas and
** between a replica and the relay store.
*/
#include "test_inspect_harness.h"

static int fixture_ready;

static void fixture(void)
{
    if (fixture_ready)
        return;
    h_fixture();
    h_relay_fixture();
    fixture_ready = 1;
}

/* Runs, checks the exit status and an empty stderr, returns masked stdout
** (caller frees). */
static char *out_of(int status, const char *const *args)
{
    h_run_t r = h_run(args);
    char *out;
    if (r.status != status || r.err[0]) {
        fprintf(stderr, "sync-inspect %s: status %d (want %d)\nstdout:\n%s\nstderr:\n%s\n", args[0],
                r.status, status, r.out, r.err);
        CHECK(0);
    }
    out = h_mask(r.out);
    free(r.err);
    return out;
}

/* The same with --json: checks it is one valid JSON document. */
static char *json_of(int status, const char *const *args)
{
    char *out = out_of(status, args);
    if (!h_json_valid(out)) {
        fprintf(stderr, "not valid JSON:\n%s\n", out);
        CHECK(0);
    }
    CHECK(out[strlen(out) - 1] == '\n');
    return out;
}

static void help_each(void)
{
    static const char *const cmds[] = {"info", "why",    "pending", "changes",
                                       "diff", "verify", "digest",  "relay"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char want[64];
        h_run_t r = h_run(ARGS(cmds[i], "--help"));
        CHECK_EQ_INT(r.status, 0);
        snprintf(want, sizeof want, "usage: sync-inspect %s ", cmds[i]);
        CHECK(strncmp(r.out, want, strlen(want)) == 0);
        CHECK(strstr(r.out, "Exit status:") != NULL);
        CHECK(strstr(r.out, "--json") != NULL);
        CHECK_STR(r.err, "");
        h_done(&r);
        r = h_run(ARGS("help", cmds[i]));
        CHECK_EQ_INT(r.status, 0);
        CHECK(strncmp(r.out, want, strlen(want)) == 0);
        h_done(&r);
        /* No arguments is a usage error that points at --help. */
        r = h_run(ARGS(cmds[i]));
        CHECK_EQ_INT(r.status, 2);
        CHECK_STR(r.out, "");
        CHECK(strstr(r.err, "--help") != NULL);
        h_done(&r);
        r = h_run(ARGS(cmds[i], "--bogus", "x"));
        CHECK_EQ_INT(r.status, 2);
        CHECK(strstr(r.err, "unknown option '--bogus'") != NULL);
        h_done(&r);
    }
    h_run_t r = h_run(ARGS("--help"));
    CHECK(strstr(r.out, "  why ") != NULL && strstr(r.out, "  relay ") != NULL);
    h_done(&r);
}

static void info_golden(void)
{
    fixture();
    char *out = out_of(0, ARGS("info", h_fix.a));
    CHECK_GOLDEN(out, "replica     <dir>/a.db\n"
                      "site        <site A>\n"
                      "schema      2\n"
                      "clock       2023-11-14T22:13:22.000Z#0\n"
                      "version     4 (acknowledged up to 1)\n"
                      "sites       2 known\n"
                      "namespaces\n"
                      "  user:alice (write, home): cursor 0, rows 4\n"
                      "tables\n"
                      "  notes: key id; columns title lww, n lww, tags orset\n"
                      "    rows 3 (2 live, 1 deleted), cells 9, pending 3, unstamped 0\n"
                      "  pairs: key a, b; columns v lww\n"
                      "    rows 1 (1 live, 0 deleted), cells 2, pending 0, unstamped 0\n"
                      "pending     3 changes in 3 transactions (versions 2 to 4)\n"
                      "unstamped   0 captured writes\n");
    free(out);
}

static void info_json(void)
{
    fixture();
    char *out = json_of(0, ARGS("info", "--json", h_fix.a));
    CHECK_JSON(out, "$.site", "<site A>");
    CHECK_JSON(out, "$.clock.time", "2023-11-14T22:13:22.000Z#0");
    CHECK_JSON(out, "$.version", "4");
    CHECK_JSON(out, "$.acked", "1");
    CHECK_JSON(out, "$.namespaces[0].name", "user:alice");
    CHECK_JSON(out, "$.namespaces[0].write", "1");
    CHECK_JSON(out, "$.tables[0].columns[2].kind", "orset");
    CHECK_JSON(out, "$.tables[0].deleted", "1");
    CHECK_JSON(out, "$.tables[1].key", "[\"a\",\"b\"]");
    CHECK_JSON(out, "$.pending.transactions", "3");
    CHECK_JSON(out, "$.pending.first_version", "2");
    free(out);
}

/* Captured writes that are not stamped yet show as such; inspect does not
** stamp them (it never writes). */
static void info_unstamped(void)
{
    fixture();
    const char *p = h_path("unstamped.db");
    h_copy(h_fix.a, p);
    h_plain(p, "INSERT INTO notes VALUES ('n9', 'raw', 9, '[]')");
    char *out = out_of(0, ARGS("info", p));
    CHECK(strstr(out, "rows 3 (2 live, 1 deleted), cells 9, pending 3, unstamped 1\n") != NULL);
    CHECK(strstr(out, "unstamped   1 captured write\n") != NULL);
    free(out);
    out = out_of(1, ARGS("why", p, "notes", "'n9'"));
    CHECK_GOLDEN(out, "notes 'n9': no such row: knit holds no metadata for this key; 1 captured "
                      "write to it is not stamped yet\n");
    free(out);
    h_plain(p, "UPDATE notes SET n = 5 WHERE id = 'n1'");
    out = out_of(0, ARGS("why", p, "notes", "'n1'", "n"));
    CHECK(strstr(out, "  note: 1 captured write to this row is not stamped yet: values are the "
                      "table's, stamps are from before it\n  n = 5\n") != NULL);
    free(out);
}

static void why_row_golden(void)
{
    fixture();
    char *out = out_of(0, ARGS("why", h_fix.a, "notes", "'n1'"));
    CHECK_GOLDEN(
        out,
        "notes 'n1' in user:alice: live (causal length 1)\n"
        "  liveness: stamped 2023-11-14T22:13:20.000Z#0 by <A> (local), version 1, acknowledged\n"
        "  title = 'hello again'\n"
        "    stamped 2023-11-14T22:13:21.000Z#0 by <A> (local), version 2, pending\n"
        "  n = 1\n"
        "    stamped 2023-11-14T22:13:20.000Z#0 by <A> (local), version 1, acknowledged\n"
        "  tags = [\"b\",\"c\",\"d\"]  (OR-set)\n"
        "    latest op 2023-11-14T22:13:21.500Z#0 by <A> (local), version 4, pending\n"
        "    element \"b\": dots <A> (local):2\n"
        "    element \"c\": dots <A> (local):3\n"
        "    element \"d\": dots <B>:1\n"
        "    removed dots: <A> (local): 1\n");
    free(out);
}

static void why_cell_golden(void)
{
    fixture();
    char *out = out_of(0, ARGS("why", h_fix.a, "notes", "'n1'", "title"));
    CHECK_GOLDEN(
        out,
        "notes 'n1' in user:alice: live (causal length 1)\n"
        "  liveness: stamped 2023-11-14T22:13:20.000Z#0 by <A> (local), version 1, acknowledged\n"
        "  title = 'hello again'\n"
        "    stamped 2023-11-14T22:13:21.000Z#0 by <A> (local), version 2, pending\n");
    free(out);
    /* On B, "a" is still in the set and A's removal is not: one site's
    ** dots, no removed ones. */
    out = out_of(0, ARGS("why", h_fix.b, "notes", "'n1'", "tags"));
    CHECK_GOLDEN(out,
                 "notes 'n1' in user:alice: live (causal length 1)\n"
                 "  liveness: stamped 2023-11-14T22:13:20.000Z#0 by <A>, version 1, received\n"
                 "  tags = [\"a\",\"b\",\"d\"]  (OR-set)\n"
                 "    latest op 2023-11-14T22:13:21.500Z#0 by <B> (local), version 2, pending\n"
                 "    element \"a\": dots <A>:1\n"
                 "    element \"b\": dots <A>:2\n"
                 "    element \"d\": dots <B> (local):1\n"
                 "    removed dots: none\n");
    free(out);
}

static void why_deleted_and_composite(void)
{
    fixture();
    char *out = out_of(0, ARGS("why", h_fix.a, "notes", "'n2'"));
    CHECK_GOLDEN(
        out, "notes 'n2' in user:alice: deleted (causal length 2)\n"
             "  liveness: stamped 2023-11-14T22:13:22.000Z#0 by <A> (local), version 3, pending\n"
             "  a deleted row holds no column values; an insert starts life 3\n");
    free(out);
    /* Composite key; '1' takes the INTEGER column's affinity, as on insert. */
    static const char *const keys[] = {"1, 'x'", "'1','x'", " +1 ,  'x' ", "0x1, 'x'"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        out = out_of(0, ARGS("why", h_fix.a, "pairs", keys[i]));
        CHECK_GOLDEN(
            out,
            "pairs 1, 'x' in user:alice: live (causal length 1)\n"
            "  liveness: stamped 2023-11-14T22:13:20.000Z#0 by <A> (local), version 1, "
            "acknowledged\n"
            "  v = X'00FF'\n"
            "    stamped 2023-11-14T22:13:20.000Z#0 by <A> (local), version 1, acknowledged\n");
        free(out);
    }
}

static void why_not_found(void)
{
    fixture();
    char *out = out_of(1, ARGS("why", h_fix.a, "notes", "'zz'"));
    CHECK_GOLDEN(out, "notes 'zz': no such row: knit holds no metadata for this key (never "
                      "written here, nor received)\n");
    free(out);
    out = json_of(1, ARGS("why", "--json", h_fix.a, "pairs", "2, 'x'"));
    CHECK_JSON(out, "$.found", "0");
    CHECK_JSON(out, "$.key", "2, 'x'");
    free(out);
}

static void why_json(void)
{
    fixture();
    char *out = json_of(0, ARGS("why", "--json", h_fix.a, "notes", "'n1'"));
    CHECK_JSON(out, "$.key", "'n1'");
    CHECK_JSON(out, "$.namespace", "user:alice");
    CHECK_JSON(out, "$.cl", "1");
    CHECK_JSON(out, "$.liveness.status", "acknowledged");
    CHECK_JSON(out, "$.columns[0].name", "title");
    CHECK_JSON(out, "$.columns[0].value", "hello again");
    CHECK_JSON(out, "$.columns[0].status", "pending");
    CHECK_JSON(out, "$.columns[0].site", "<site A>");
    CHECK_JSON(out, "$.columns[0].local", "1");
    CHECK_JSON(out, "$.columns[2].value", "[\"b\",\"c\",\"d\"]");
    CHECK_JSON(out, "$.columns[2].status", "pending");
    CHECK_JSON(out, "$.columns[2].elements[2].dots[0].site", "<site B>");
    CHECK_JSON(out, "$.columns[2].removed[0].site", "<site A>");
    CHECK_JSON(out, "$.columns[2].removed[0].ranges", "[[1,1]]");
    free(out);
}

/* Only literals are accepted: nothing typed as a key runs as SQL. */
static void why_key_errors(void)
{
    static const struct {
        const char *table, *key, *col, *err;
    } v[] = {
        {"notes", "'n1'); DROP TABLE notes; --", NULL, "expected ',' between key values"},
        {"notes", "(SELECT id FROM notes)", NULL, "expected a literal"},
        {"notes", "'n1' || 'x'", NULL, "expected ',' between key values"},
        {"notes", "abs(1)", NULL, "expected a literal"},
        {"notes", "'open", NULL, "a string is not closed"},
        {"notes", "X'0'", NULL, "even number of hex digits"},
        {"notes", "", NULL, "it is empty"},
        {"notes", "1,", NULL, "expected a literal after ','"},
        {"notes", "'a', 'b'", NULL, "the key of notes has 1 column but 2 values were given"},
        {"notes", "NULL", NULL, "knit never stores a NULL key"},
        {"nope", "1", NULL, "table 'nope' is not tracked"},
        {"notes", "'n1'", "id", "'id' is a key column of notes"},
        {"notes", "'n1'", "zz", "table notes has no tracked column 'zz'"},
    };
    fixture();
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        h_run_t r = v[i].col ? h_run(ARGS("why", h_fix.a, v[i].table, v[i].key, v[i].col))
                             : h_run(ARGS("why", h_fix.a, v[i].table, v[i].key));
        if (r.status != 2 || !strstr(r.err, v[i].err) || r.out[0]) {
            fprintf(stderr, "key %s: status %d, stderr %s", v[i].key, r.status, r.err);
            CHECK(0);
        }
        h_done(&r);
    }
    /* Names are case-insensitive, as in SQL. */
    char *ci = out_of(0, ARGS("why", h_fix.a, "NOTES", "'n1'", "Title"));
    CHECK(strstr(ci, "  title = 'hello again'\n") != NULL);
    free(ci);
    /* The table is still there. */
    char *out = out_of(0, ARGS("why", h_fix.a, "notes", "'n1'", "n"));
    free(out);
}

static void pending_golden(void)
{
    fixture();
    char *out = out_of(0, ARGS("pending", h_fix.a));
    /* n1's tags hold A's unpushed operations merged with B's state: they
    ** stay A's pending change (version 4, the apply that merged them). */
    CHECK_GOLDEN(out, "3 changes in 3 transactions not acknowledged yet (replica at version 4, "
                      "acknowledged up to 1)\n"
                      "version 2 (1 change)\n"
                      "  notes 'n1': title = 'hello again'  @ 2023-11-14T22:13:21.000Z#0 by <A> "
                      "(local) in user:alice\n"
                      "version 3 (1 change)\n"
                      "  notes 'n2': deleted (cl 2)  @ 2023-11-14T22:13:22.000Z#0 by <A> (local) "
                      "in user:alice\n"
                      "version 4 (1 change)\n"
                      "  notes 'n1': tags = [\"b\",\"c\",\"d\"]  @ 2023-11-14T22:13:21.500Z#0 by "
                      "<A> (local) in user:alice\n");
    free(out);
    out = json_of(0, ARGS("pending", "--json", h_fix.a));
    CHECK_JSON(out, "$.acked", "1");
    CHECK_JSON(out, "$.changes", "3");
    CHECK_JSON(out, "$.transactions[0].version", "2");
    CHECK_JSON(out, "$.transactions[1].changes[0].kind", "liveness");
    CHECK_JSON(out, "$.transactions[1].changes[0].live", "0");
    CHECK_JSON(out, "$.transactions[1].changes[0].key", "'n2'");
    free(out);
}

static void changes_golden(void)
{
    fixture();
    char *out = out_of(0, ARGS("changes", "--since", "1", "--limit", "2", h_fix.a));
    CHECK_GOLDEN(out, "changes after version 1 (replica at version 4)\n"
                      "version 2 (1 change)\n"
                      "  notes 'n1': title = 'hello again'  @ 2023-11-14T22:13:21.000Z#0 by <A> "
                      "(local) in user:alice\n"
                      "version 3 (1 change)\n"
                      "  notes 'n2': deleted (cl 2)  @ 2023-11-14T22:13:22.000Z#0 by <A> (local) "
                      "in user:alice\n"
                      "more follow: continue with --since 3\n");
    free(out);
    out = out_of(0, ARGS("changes", "--since=3", h_fix.a));
    CHECK_GOLDEN(out, "changes after version 3 (replica at version 4)\n"
                      "version 4 (5 changes)\n"
                      "  notes 'n1': tags = [\"b\",\"c\",\"d\"]  @ 2023-11-14T22:13:21.500Z#0 by "
                      "<A> (local) in user:alice\n"
                      "  notes 'n3': live (cl 1)  @ 2023-11-14T22:13:21.500Z#0 by <B> in "
                      "user:alice\n"
                      "  notes 'n3': title = 'from b'  @ 2023-11-14T22:13:21.500Z#0 by <B> in "
                      "user:alice\n"
                      "  notes 'n3': n = 3  @ 2023-11-14T22:13:21.500Z#0 by <B> in user:alice\n"
                      "  notes 'n3': tags = [\"z\"]  @ 2023-11-14T22:13:21.500Z#0 by <B> in "
                      "user:alice\n");
    free(out);
    out = out_of(0, ARGS("changes", "--since", "4", h_fix.a));
    CHECK_GOLDEN(out, "changes after version 4 (replica at version 4)\nnone\n");
    free(out);
}

static void changes_json(void)
{
    fixture();
    char *out = json_of(0, ARGS("changes", "--json", "--limit", "3", h_fix.a));
    CHECK_JSON(out, "$.since", "0");
    CHECK_JSON(out, "$.changes", "4"); /* the first unit has 4; units are never split */
    CHECK_JSON(out, "$.more", "1");
    CHECK_JSON(out, "$.next_since", "1");
    CHECK_JSON(out, "$.transactions[0].changes[3].value.bytes", "00ff");
    CHECK_JSON(out, "$.transactions[0].changes[3].key", "1, 'x'");
    free(out);
    /* --local leaves B's unit out; --ns for an unknown namespace is empty. */
    out = json_of(0, ARGS("changes", "--json", "--local", h_fix.a));
    CHECK_JSON(out, "$.changes", "7");
    CHECK_JSON(out, "$.more", "0");
    free(out);
    out = json_of(0, ARGS("changes", "--json", "--ns", "user:bob", h_fix.a));
    CHECK_JSON(out, "$.changes", "0");
    free(out);
}

static void diff_golden(void)
{
    fixture();
    char *out = out_of(1, ARGS("diff", h_fix.a, h_fix.b));
    CHECK_GOLDEN(out,
                 "A: <dir>/a.db (site <A>)\n"
                 "B: <dir>/b.db (site <B>)\n"
                 "notes 'n1': title: 'hello again' @ 2023-11-14T22:13:21.000Z#0 by <A> vs "
                 "'hello' @ 2023-11-14T22:13:20.000Z#0 by <A>\n"
                 "notes 'n1': tags: [\"b\",\"c\",\"d\"] vs [\"a\",\"b\",\"d\"]\n"
                 "notes 'n2': deleted (cl 2) @ 2023-11-14T22:13:22.000Z#0 by <A> vs live (cl 1) "
                 "@ 2023-11-14T22:13:20.000Z#0 by <A>\n"
                 "3 differences: 1 row, 2 cell, 0 metadata\n");
    free(out);
    out = json_of(1, ARGS("diff", "--json", "--limit", "1", h_fix.a, h_fix.b));
    CHECK_JSON(out, "$.equal", "0");
    CHECK_JSON(out, "$.counts.total", "3");
    CHECK_JSON(out, "$.shown", "1");
    CHECK_JSON(out, "$.differences[0].kind", "cell");
    CHECK_JSON(out, "$.differences[0].column", "title");
    CHECK_JSON(out, "$.differences[0].a.value", "hello again");
    CHECK_JSON(out, "$.differences[0].b.value", "hello");
    CHECK_JSON(out, "$.differences[0].b.site", "<site A>");
    free(out);
}

/* After a full exchange both ways the replicas agree: diff finds nothing
** and the digests are equal. */
static void converged_agree(void)
{
    fixture();
    h_clock_t c = {FIX_T0 + 5000};
    const char *a2 = h_path("a2.db"), *b2 = h_path("b2.db");
    h_copy(h_fix.a, a2);
    h_copy(h_fix.b, b2);
    knit_t *a = h_open(a2, &c), *b = h_open(b2, &c);
    h_send(a, b);
    h_send(b, a);
    knit_close(a);
    knit_close(b);
    char *out = out_of(0, ARGS("diff", a2, b2));
    CHECK(strstr(out, "no differences: same tables, rows, cells and stamps\n") != NULL);
    free(out);
    out = json_of(0, ARGS("diff", "--json", a2, b2));
    CHECK_JSON(out, "$.equal", "1");
    free(out);
    char *da = out_of(0, ARGS("digest", a2)), *db = out_of(0, ARGS("digest", b2));
    CHECK_STR(da, db);
    CHECK_EQ_INT(strlen(da), 65);
    free(db);
    /* The unconverged B differs. */
    db = out_of(0, ARGS("digest", h_fix.b));
    CHECK(strcmp(da, db) != 0);
    free(da);
    free(db);
}

static void verify_ok(void)
{
    fixture();
    char *out = out_of(0, ARGS("verify", h_fix.a));
    CHECK_GOLDEN(out, "ok: no problems (integrity and metadata of 2 tracked tables consistent)\n");
    free(out);
    out = json_of(0, ARGS("verify", "--json", h_fix.b));
    CHECK_JSON(out, "$.ok", "1");
    CHECK_JSON(out, "$.count", "0");
    free(out);
}

/* A replica's digest of a namespace equals the relay's once both hold the
** same state; here a namespace of LWW columns only. */
static void digest_relay_lww(void)
{
    h_clock_t c = {FIX_T0};
    const char *rp = h_path("lww.db"), *sp = h_path("lww-relay.db");
    knit_t *k = h_open(rp, &c);
    knit_since_opts_t o;
    knit_batch_t *b = NULL;
    knit_relay_store_t *s = NULL;
    knit_relay_applied_t res;
    h_sql(k, "CREATE TABLE kv(k TEXT PRIMARY KEY, v);"
             "INSERT INTO kv VALUES ('a', 1), ('b', 2.5), ('c', X'01'), ('d', NULL)");
    CHECK_OK(knit_track(k, "kv", NULL));
    CHECK_OK(knit_set_namespace(k, "team:x"));
    h_sql(k, "DELETE FROM kv WHERE k = 'd'");
    memset(&o, 0, sizeof o);
    o.ns = "team:x";
    CHECK_OK(knit_changes_since(k, 0, &o, &b));
    knit_close(k);
    CHECK_OK(knit_relay_store_open(sp, 0, &s));
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_OK(knit_relay_store_apply(s, "team:x", b, &res));
    knit_batch_free(res.fanout);
    CHECK_OK(knit_relay_store_commit(s));
    knit_relay_store_close(s);
    knit_batch_free(b);

    char *dr = out_of(0, ARGS("digest", "--ns", "team:x", rp));
    char *ds = out_of(0, ARGS("digest", "--ns", "team:x", sp));
    CHECK_STR(dr, ds);
    CHECK(strcmp(dr, "0000000000000000000000000000000000000000000000000000000000000000\n") != 0);
    free(ds);
    ds = json_of(0, ARGS("digest", "--json", "--ns", "team:x", sp));
    CHECK_JSON(ds, "$.kind", "relay");
    CHECK_JSON(ds, "$.namespace", "team:x");
    dr[64] = '\0';
    CHECK_JSON(ds, "$.digest", dr);
    free(ds);
    free(dr);
}

/* The same with OR-set columns: the fixture's namespace on A and on the
** relay store built from A's changes. */
static void digest_relay_orset(void)
{
    fixture();
    char *dr = out_of(0, ARGS("digest", "--ns", "user:alice", h_fix.a));
    char *ds = out_of(0, ARGS("digest", "--ns", "user:alice", h_fix.relay));
    if (strcmp(dr, ds) != 0) {
        fprintf(stderr, "replica and relay disagree on user:alice:\n  replica %s  relay   %s", dr,
                ds);
        CHECK(0);
    }
    free(dr);
    free(ds);
}

static void digest_forms(void)
{
    fixture();
    char *all = out_of(0, ARGS("digest", h_fix.a));
    char *ns = out_of(0, ARGS("digest", "--ns", "user:alice", h_fix.a));
    CHECK_STR(all, ns); /* every row is in user:alice */
    free(ns);
    ns = json_of(0, ARGS("digest", "--json", h_fix.a));
    CHECK_JSON(ns, "$.kind", "replica");
    CHECK_JSON(ns, "$.namespace", "");
    all[64] = '\0';
    CHECK_JSON(ns, "$.digest", all);
    free(ns);
    free(all);
    /* An unknown namespace: the empty state's digest, and a note. */
    h_run_t r = h_run(ARGS("digest", "--ns", "user:nobody", h_fix.a));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "0000000000000000000000000000000000000000000000000000000000000000\n");
    CHECK(strstr(r.err, "note: the replica has no namespace 'user:nobody'") != NULL);
    h_done(&r);
    /* A relay store without --ns: one line per namespace. */
    r = h_run(ARGS("digest", h_fix.relay));
    CHECK_EQ_INT(r.status, 0);
    CHECK(strlen(r.out) == 64 + 2 + strlen("user:alice") + 1);
    CHECK(strstr(r.out, "  user:alice\n") != NULL);
    h_done(&r);
}

static void relay_golden(void)
{
    fixture();
    char *out = out_of(0, ARGS("relay", h_fix.relay));
    CHECK_GOLDEN(out, "relay       <dir>/relay.db\n"
                      "namespaces\n"
                      "  user:alice: sequence 4, rows 4, cells 11\n"
                      "anonymous ids\n"
                      "  anon-123: registered 2023-11-14T22:13:20.000Z\n");
    free(out);
    out = json_of(0, ARGS("relay", "--json", h_fix.relay));
    CHECK_JSON(out, "$.namespaces[0].name", "user:alice");
    CHECK_JSON(out, "$.namespaces[0].cells", "11");
    CHECK_JSON(out, "$.anonymous_ids[0].id", "anon-123");
    CHECK_JSON(out, "$.anonymous_ids[0].created_ms", "1700000000000");
    /* Never a salt or a hash, in any spelling. */
    CHECK(!strstr(out, "5a5a") && !strstr(out, "5A5A") && !strstr(out, "a5a5") &&
          !strstr(out, "A5A5") && !strstr(out, "salt") && !strstr(out, "hash"));
    free(out);
}

KNIT_TESTS(T(help_each), T(info_golden), T(info_json), T(info_unstamped), T(why_row_golden),
           T(why_cell_golden), T(why_deleted_and_composite), T(why_not_found), T(why_json),
           T(why_key_errors), T(pending_golden), T(changes_golden), T(changes_json), T(diff_golden),
           T(converged_agree), T(verify_ok), T(digest_relay_lww), T(digest_relay_orset),
           T(digest_forms), T(relay_golden))
