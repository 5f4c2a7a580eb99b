/*
** test_inspect_harness.h: what the sync-inspect replica tests share: a
** temporary directory removed at exit, running the built sync-inspect as a
** child process (bounded in time, output captured), masking the random
** parts of its output (site ids, the directory) so outputs compare with
** golden strings, and a fixture: two replicas and a relay store built with
** fixed clocks, so every stamp, version and count is the same on every run.
**
** The fixture (clock T = 1700000000000 ms = 2023-11-14T22:13:20.000Z):
**
**   A  notes(id TEXT PK, title TEXT, n INTEGER, tags TEXT orset),
**      pairs(a INTEGER, b TEXT, v, PK(a, b)), namespace user:alice
**      v1 @T       insert n1 ('hello', 1, ["a","b"]), n2 ('bye', 2, []),
**                  pairs (1, 'x', X'00FF')              -> acknowledged
**      v2 @T+1s    n1: title 'hello again', tags ["b","c"]   (pending)
**      v3 @T+2s    delete n2                                  (pending)
**      v4          B's changes applied: n3, and "d" in n1's tags
**   B  same tables; got A's v1, then @T+1.5s inserted n3 ('from b', 3,
**      ["z"]) and set n1's tags to ["a","b","d"]
**
** Site ids are random: tests replace them with <site A>/<A> and <site
** B>/<B> (full and short forms) before comparing.
*/
#ifndef KNIT_TEST_INSPECT_HARNESS_H
#define KNIT_TEST_INSPECT_HARNESS_H

#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "knit.h"
#include "relay_store.h"

#ifndef SYNC_INSPECT_PATH
#error "SYNC_INSPECT_PATH must name the sync-inspect binary"
#endif

#define FIX_T0 UINT64_C(1700000000000)

static char h_dir[64]; /* the temporary directory, "" before setup */

static void h_cleanup(void)
{
    char cmd[128];
    if (!h_dir[0])
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", h_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", h_dir);
}

/* A path in the temporary directory (made on first use).  The string stays
** valid for the next 31 calls. */
static const char *h_path(const char *name)
{
    static char buf[32][192];
    static int slot;
    char *p = buf[slot++ % 32];
    if (!h_dir[0]) {
        strcpy(h_dir, "/tmp/knit-insp-XXXXXX");
        CHECK(mkdtemp(h_dir) != NULL);
        atexit(h_cleanup);
    }
    snprintf(p, 192, "%s/%s", h_dir, name);
    return p;
}

static char *h_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    n = ftell(f);
    CHECK(n >= 0 && fseek(f, 0, SEEK_SET) == 0);
    s = malloc((size_t)n + 1);
    CHECK(s != NULL);
    CHECK(fread(s, 1, (size_t)n, f) == (size_t)n);
    s[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return s;
}

typedef struct h_run_s {
    int status;  /* exit status, or -1 if it did not exit normally */
    char *out;   /* stdout */
    char *err;   /* stderr */
    double secs; /* wall time it took */
} h_run_t;

static double h_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs sync-inspect with args (NULL-terminated, program name excluded);
** kills it after 30 s. */
static h_run_t h_run(const char *const *args)
{
    static char outp[192], errp[192];
    const char *argv[24];
    h_run_t r;
    pid_t pid;
    int i, st = 0, waited;
    double t0;
    if (!outp[0]) {
        snprintf(outp, sizeof outp, "%s", h_path("stdout"));
        snprintf(errp, sizeof errp, "%s", h_path("stderr"));
    }
    argv[0] = "sync-inspect";
    for (i = 0; args[i]; i++) {
        CHECK(i < 22);
        argv[i + 1] = args[i];
    }
    argv[i + 1] = NULL;
    fflush(NULL);
    t0 = h_now();
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fi = open("/dev/null", O_RDONLY);
        int fo = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fi < 0 || fo < 0 || fe < 0 || dup2(fi, 0) < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        execv(SYNC_INSPECT_PATH, (char *const *)argv);
        _exit(127);
    }
    for (waited = 0;; waited++) {
        struct timespec tick = {0, 5000000};
        pid_t w = waitpid(pid, &st, WNOHANG);
        CHECK(w >= 0);
        if (w == pid)
            break;
        if (waited > 6000) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fprintf(stderr, "sync-inspect %s did not finish in 30 s\n", args[0]);
            CHECK(0);
        }
        nanosleep(&tick, NULL);
    }
    r.secs = h_now() - t0;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    CHECK(r.status != 127);
    r.out = h_slurp(outp, NULL);
    r.err = h_slurp(errp, NULL);
    return r;
}

static void h_done(h_run_t *r)
{
    free(r->out);
    free(r->err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Replaces every occurrence of `from` in s (malloc'd) with `to`. */
static char *h_replace(char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    char *p, *q, *out;
    if (!fl)
        return s;
    for (p = strstr(s, from); p; p = strstr(p + fl, from))
        n++;
    if (!n)
        return s;
    out = malloc(strlen(s) + n * tl + 1);
    CHECK(out != NULL);
    for (p = s, q = out;;) {
        char *hit = strstr(p, from);
        if (!hit) {
            strcpy(q, p);
            break;
        }
        memcpy(q, p, (size_t)(hit - p));
        q += hit - p;
        memcpy(q, to, tl);
        q += tl;
        p = hit + fl;
    }
    free(s);
    return out;
}

/* The fixture's replicas, their sites, and output masking. */
typedef struct h_fix_s {
    char a[192], b[192], relay[192]; /* paths */
    char site_a[33], site_b[33];     /* full hex */
} h_fix_t;

static h_fix_t h_fix;

static void h_hex(const knit_site_t *s, char out[33])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", s->b[i]);
}

/* Replaces site ids and the directory in s with fixed names. */
static char *h_mask(char *s)
{
    char sa[9], sb[9];
    memcpy(sa, h_fix.site_a, 8);
    sa[8] = 0;
    memcpy(sb, h_fix.site_b, 8);
    sb[8] = 0;
    s = h_replace(s, h_fix.site_a, "<site A>");
    s = h_replace(s, h_fix.site_b, "<site B>");
    s = h_replace(s, sa, "<A>");
    s = h_replace(s, sb, "<B>");
    return h_replace(s, h_dir, "<dir>");
}

/* Fails with both texts shown when they differ. */
#define CHECK_GOLDEN(got, want)                                                                    \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        if (strcmp(g_, w_) != 0) {                                                                 \
            fprintf(stderr, "%s:%d: output differs from golden\n--- got:\n%s--- want:\n%s---\n",   \
                    __FILE__, __LINE__, g_, w_);                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* 1 if s is one valid JSON document (SQLite's json_valid). */
static int h_json_valid(const char *s)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int ok = 0;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT json_valid(?1)", -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_text(st, 1, s, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        ok = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ok;
}

/* json_extract(doc, path) as text ("" for NULL), malloc'd. */
static char *h_json_get(const char *doc, const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char *r;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT json_extract(?1, ?2)", -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_text(st, 1, doc, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    r = strdup(sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "");
    CHECK(r != NULL);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r;
}

#define CHECK_JSON(doc, path, want)                                                                \
    do {                                                                                           \
        char *v_ = h_json_get((doc), (path));                                                      \
        if (strcmp(v_, (want)) != 0) {                                                             \
            fprintf(stderr, "%s:%d: %s is \"%s\", want \"%s\"\n", __FILE__, __LINE__, (path), v_,  \
                    (want));                                                                       \
            exit(1);                                                                               \
        }                                                                                          \
        free(v_);                                                                                  \
    } while (0)

/* --- the fixture ------------------------------------------------------- */

typedef struct h_clock_s {
    uint64_t ms; /* what the clock says */
} h_clock_t;

static uint64_t h_clock_fn(void *data)
{
    return ((h_clock_t *)data)->ms;
}

static knit_t *h_open(const char *path, h_clock_t *clk)
{
    knit_options_t o;
    knit_t *k = NULL;
    int rc;
    memset(&o, 0, sizeof o);
    o.clock = h_clock_fn;
    o.clock_data = clk;
    rc = knit_open(path, &o, &k);
    if (rc)
        fprintf(stderr, "knit_open(%s): %s\n", path, knit_strerror(rc));
    CHECK(rc == 0 && k);
    return k;
}

static void h_sql(knit_t *k, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(knit_db(k), sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", err, sql);
        CHECK(0);
    }
}

/* Plain SQL on a file, with no knit loaded (to damage copies). */
static void h_plain(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", err, sql);
        CHECK(0);
    }
    sqlite3_close(db);
}

static void h_send(knit_t *from, knit_t *to)
{
    knit_batch_t *b = NULL;
    CHECK_OK(knit_changes_since(from, 0, NULL, &b));
    CHECK_OK(knit_apply(to, b, NULL));
    knit_batch_free(b);
}

#define FIX_SCHEMA                                                                                 \
    "CREATE TABLE notes(id TEXT PRIMARY KEY, title TEXT, n INTEGER, tags TEXT);"                   \
    "CREATE TABLE pairs(a INTEGER, b TEXT, v, PRIMARY KEY(a, b));"

/* Builds the fixture (see the top of this file). */
static void h_fixture(void)
{
    h_clock_t ca = {FIX_T0}, cb = {FIX_T0};
    knit_t *a, *b;
    knit_site_t s;
    snprintf(h_fix.a, sizeof h_fix.a, "%s", h_path("a.db"));
    snprintf(h_fix.b, sizeof h_fix.b, "%s", h_path("b.db"));
    snprintf(h_fix.relay, sizeof h_fix.relay, "%s", h_path("relay.db"));
    a = h_open(h_fix.a, &ca);
    b = h_open(h_fix.b, &cb);
    h_sql(a, FIX_SCHEMA);
    h_sql(b, FIX_SCHEMA);
    CHECK_OK(knit_track(a, "notes", "tags:orset"));
    CHECK_OK(knit_track(a, "pairs", NULL));
    CHECK_OK(knit_track(b, "notes", "tags:orset"));
    CHECK_OK(knit_track(b, "pairs", NULL));
    CHECK_OK(knit_set_namespace(a, "user:alice"));
    CHECK_OK(knit_set_namespace(b, "user:alice"));

    h_sql(a, "INSERT INTO notes VALUES ('n1', 'hello', 1, '[\"a\",\"b\"]'), ('n2', 'bye', 2, '[]');"
             "INSERT INTO pairs VALUES (1, 'x', X'00FF')");
    CHECK(knit_stamp(a) >= 0);
    h_send(a, b);
    CHECK_OK(knit_ack(a, 1));

    ca.ms = FIX_T0 + 1000;
    h_sql(a, "UPDATE notes SET title = 'hello again', tags = '[\"b\",\"c\"]' WHERE id = 'n1'");
    CHECK(knit_stamp(a) >= 0);
    ca.ms = FIX_T0 + 2000;
    h_sql(a, "DELETE FROM notes WHERE id = 'n2'");
    CHECK(knit_stamp(a) >= 0);

    cb.ms = FIX_T0 + 1500;
    h_sql(b, "INSERT INTO notes VALUES ('n3', 'from b', 3, '[\"z\"]');"
             "UPDATE notes SET tags = '[\"a\",\"b\",\"d\"]' WHERE id = 'n1'");
    CHECK(knit_stamp(b) >= 0);
    ca.ms = FIX_T0 + 2500;
    h_send(b, a);

    CHECK_OK(knit_site(a, &s));
    h_hex(&s, h_fix.site_a);
    CHECK_OK(knit_site(b, &s));
    h_hex(&s, h_fix.site_b);
    knit_close(a);
    knit_close(b);
}

/* A relay store holding A's namespace user:alice, and one anonymous id. */
static void h_relay_fixture(void)
{
    h_clock_t ca = {FIX_T0 + 3000};
    knit_relay_store_t *s = NULL;
    knit_relay_applied_t res;
    knit_since_opts_t o;
    knit_batch_t *b = NULL;
    knit_t *a = h_open(h_fix.a, &ca);
    uint8_t salt[KNIT_RELAY_SALT_LEN], hash[KNIT_RELAY_HASH_LEN];
    memset(&o, 0, sizeof o);
    o.ns = "user:alice";
    CHECK_OK(knit_changes_since(a, 0, &o, &b));
    knit_close(a);
    CHECK_OK(knit_relay_store_open(h_fix.relay, 0, &s));
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_OK(knit_relay_store_apply(s, "user:alice", b, &res));
    knit_batch_free(res.fanout);
    CHECK_OK(knit_relay_store_commit(s));
    memset(salt, 0x5a, sizeof salt);
    memset(hash, 0xa5, sizeof hash);
    CHECK_OK(knit_relay_store_anon_put(s, "anon-123", salt, hash, FIX_T0));
    knit_relay_store_close(s);
    knit_batch_free(b);
}

/* Copies a file byte for byte (a replica copy to damage). */
static void h_copy(const char *from, const char *to)
{
    size_t n;
    char *p = h_slurp(from, &n);
    FILE *f = fopen(to, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(p, 1, n, f) == n);
    CHECK(fclose(f) == 0);
    free(p);
}

#endif
