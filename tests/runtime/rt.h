/*
** rt.h: helpers for replica tests: temporary directories, replicas opened
** with an injectable clock, plain SQLite connections (no knit functions,
** like any other app), and whole-table dumps for comparing replicas.
*/
#ifndef KNIT_TEST_RT_H
#define KNIT_TEST_RT_H

#include <sqlite3.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "knit.h"
#include "test.h"

/* A test clock: milliseconds, settable. */
typedef struct rt_clock_s {
    uint64_t ms; /* current time */
} rt_clock_t;

static inline uint64_t rt_clock_fn(void *data)
{
    return ((rt_clock_t *)data)->ms;
}

static char rt_dir[256];

/* Creates a fresh temporary directory for this test (removed by rt_done). */
static inline void rt_init(void)
{
    snprintf(rt_dir, sizeof rt_dir, "/tmp/knit-test-XXXXXX");
    CHECK(mkdtemp(rt_dir) != NULL);
}

static inline void rt_done(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", rt_dir);
    CHECK(system(cmd) == 0);
}

/* Path of a file in the test directory (static buffer per call slot). */
static inline const char *rt_path(const char *name)
{
    static char buf[8][512];
    static int slot;
    char *p = buf[slot++ % 8];
    snprintf(p, 512, "%s/%s", rt_dir, name);
    return p;
}

static inline knit_t *rt_open_clock(const char *name, rt_clock_t *clk)
{
    knit_options_t o = {0};
    knit_t *k = NULL;
    if (clk) {
        o.clock = rt_clock_fn;
        o.clock_data = clk;
    }
    int rc = knit_open(rt_path(name), &o, &k);
    if (rc)
        fprintf(stderr, "knit_open(%s): %s\n", name, knit_strerror(rc));
    CHECK(rc == 0 && k);
    return k;
}

static inline knit_t *rt_open(const char *name)
{
    return rt_open_clock(name, NULL);
}

/* Runs SQL on knit's own connection; fails the test on error. */
static inline void rt_exec(knit_t *k, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(knit_db(k), sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", err, sql);
        CHECK(0);
    }
}

/* A plain connection to the same file: registers nothing, loads nothing. */
static inline sqlite3 *rt_plain(const char *name)
{
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(rt_path(name), &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static inline int rt_plain_exec(sqlite3 *db, const char *sql, char **err)
{
    return sqlite3_exec(db, sql, NULL, NULL, err);
}

static inline void rt_plain_ok(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (rt_plain_exec(db, sql, &err) != SQLITE_OK) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", err, sql);
        CHECK(0);
    }
}

/* The whole result of a query as text: rows separated by '\n', columns by
** '|', each value as quote() would print it (so types show).  Caller
** frees with sqlite3_free. */
static inline char *rt_dump_db(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    sqlite3_str *s = sqlite3_str_new(NULL);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "dump failed: %s\n  %s\n", sqlite3_errmsg(db), sql);
        CHECK(0);
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const char *t;
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_INTEGER:
                sqlite3_str_appendf(s, "%s%lld", i ? "|" : "", sqlite3_column_int64(st, i));
                break;
            case SQLITE_FLOAT:
                sqlite3_str_appendf(s, "%s%!.17gr", i ? "|" : "", sqlite3_column_double(st, i));
                break;
            case SQLITE_TEXT:
                t = (const char *)sqlite3_column_text(st, i);
                sqlite3_str_appendf(s, "%s'%q'", i ? "|" : "", t);
                break;
            case SQLITE_BLOB: {
                const unsigned char *p = sqlite3_column_blob(st, i);
                int n = sqlite3_column_bytes(st, i);
                sqlite3_str_appendf(s, "%sX'", i ? "|" : "");
                for (int j = 0; j < n; j++)
                    sqlite3_str_appendf(s, "%02X", p[j]);
                sqlite3_str_appendf(s, "'");
                break;
            }
            default:
                sqlite3_str_appendf(s, "%sNULL", i ? "|" : "");
            }
        }
        sqlite3_str_appendf(s, "\n");
    }
    sqlite3_finalize(st);
    char *r = sqlite3_str_finish(s);
    return r ? r : sqlite3_mprintf("");
}

static inline char *rt_dump(knit_t *k, const char *sql)
{
    return rt_dump_db(knit_db(k), sql);
}

/* Asserts that the query's dump equals want. */
#define RT_EXPECT(k, sql, want)                                                                    \
    do {                                                                                           \
        char *got_ = rt_dump((k), (sql));                                                          \
        if (strcmp(got_, (want)) != 0) {                                                           \
            fprintf(stderr, "%s:%d: %s\n  got:  %s\n  want: %s\n", __FILE__, __LINE__, (sql),      \
                    got_, (want));                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
        sqlite3_free(got_);                                                                        \
    } while (0)

/* Sends every change b has that a has not seen yet (by version), like a
** sync round without the network.  *since tracks what was sent. */
static inline knit_apply_stats_t rt_send(knit_t *from, knit_t *to, uint64_t *since)
{
    knit_batch_t *b = NULL;
    knit_apply_stats_t st = {0};
    int rc = knit_changes_since(from, since ? *since : 0, NULL, &b);
    if (rc)
        fprintf(stderr, "changes_since: %s (%s)\n", knit_strerror(rc), knit_errmsg(from));
    CHECK_OK(rc);
    rc = knit_apply(to, b, &st);
    if (rc)
        fprintf(stderr, "apply: %s (%s)\n", knit_strerror(rc), knit_errmsg(to));
    CHECK_OK(rc);
    if (since && b->ntxns)
        *since = b->txns[b->ntxns - 1].version;
    knit_batch_free(b);
    return st;
}

#endif
