/*
** bench_nscol.c: what a namespace column (knit_track "org_id:ns") costs,
** measured in one run against plain SQLite and a tracked table without one.
**
** Three files, WAL and synchronous=NORMAL: a plain table, a tracked table,
** and a tracked table whose org_id selects the namespace.  For each:
**   - INSERT of N rows (key, title, body, org_id cycling over 8
**     organizations and NULL) in one transaction, then knit's stamp;
**   - UPDATE of the title of every row (no namespace changes), stamp;
**   - UPDATE of org_id of every row (with the ns column: N moves, each a
**     tombstone in the old namespace and a new life in the new one), stamp.
** Usage: bench_nscol [ROWS] (default 50000).  Prints one line per figure.
*/
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "knit.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void must(int rc, const char *what, sqlite3 *db)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE) {
        fprintf(stderr, "bench_nscol: %s: %s\n", what, db ? sqlite3_errmsg(db) : "failed");
        exit(1);
    }
}

static void exec(sqlite3 *db, const char *sql)
{
    must(sqlite3_exec(db, sql, NULL, NULL, NULL), sql, db);
}

static void insert_rows(sqlite3 *db, long n)
{
    sqlite3_stmt *st;
    exec(db, "BEGIN");
    must(sqlite3_prepare_v2(db, "INSERT INTO docs VALUES (?1, ?2, ?3, ?4)", -1, &st, NULL),
         "prepare", db);
    for (long i = 0; i < n; i++) {
        char key[32], org[16];
        snprintf(key, sizeof key, "doc-%08ld", i);
        snprintf(org, sizeof org, "org_%ld", i % 9);
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, "a title of some length", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, "a body that is a little longer than the title is", -1,
                          SQLITE_STATIC);
        if (i % 9 == 8)
            sqlite3_bind_null(st, 4);
        else
            sqlite3_bind_text(st, 4, org, -1, SQLITE_TRANSIENT);
        must(sqlite3_step(st), "insert", db);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec(db, "COMMIT");
}

typedef struct run_s {
    double insert, update, move; /* seconds, commit plus stamp */
} run_t;

/* kind 0: plain, 1: tracked, 2: tracked with the ns column. */
static run_t one(const char *dir, int kind, long n)
{
    char path[512];
    run_t r;
    knit_t *k = NULL;
    sqlite3 *db;
    snprintf(path, sizeof path, "%s/k%d.db", dir, kind);
    if (kind) {
        if (knit_open(path, NULL, &k) != 0)
            must(SQLITE_ERROR, "knit_open", NULL);
        db = knit_db(k);
    } else {
        must(sqlite3_open(path, &db), "open", db);
    }
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
             "CREATE TABLE docs(id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT, org_id TEXT)");
    if (kind && knit_track(k, "docs", kind == 2 ? "org_id:ns" : NULL) != 0) {
        fprintf(stderr, "bench_nscol: track: %s\n", knit_errmsg(k));
        exit(1);
    }
    if (kind)
        knit_set_namespace(k, "user:bench");
    double t0 = now_s();
    insert_rows(db, n);
    if (kind)
        knit_stamp(k);
    r.insert = now_s() - t0;
    t0 = now_s();
    exec(db, "UPDATE docs SET title = title || '!'");
    if (kind)
        knit_stamp(k);
    r.update = now_s() - t0;
    t0 = now_s();
    exec(db, "UPDATE docs SET org_id = CASE WHEN org_id IS NULL THEN 'org_0'"
             " WHEN org_id = 'org_7' THEN NULL ELSE 'org_' || (substr(org_id, 5) + 1) END");
    if (kind)
        knit_stamp(k);
    r.move = now_s() - t0;
    if (kind)
        knit_close(k);
    else
        sqlite3_close(db);
    return r;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 50000;
    char dir[] = "/tmp/knit-bench-nscol-XXXXXX";
    if (n <= 0 || !mkdtemp(dir)) {
        fprintf(stderr, "usage: bench_nscol [ROWS]\n");
        return 2;
    }
    run_t p = one(dir, 0, n), t = one(dir, 1, n), s = one(dir, 2, n);
    printf("rows: %ld\n", n);
    printf("insert: plain %.3f s, tracked %.3f s (%.2fx), with ns column %.3f s (%.2fx)\n",
           p.insert, t.insert, t.insert / p.insert, s.insert, s.insert / p.insert);
    printf("update title: plain %.3f s, tracked %.3f s (%.2fx), with ns column %.3f s (%.2fx)\n",
           p.update, t.update, t.update / p.update, s.update, s.update / p.update);
    printf("update org_id: plain %.3f s, tracked %.3f s (%.2fx), with ns column (moves) %.3f s "
           "(%.2fx, %.1f us per move)\n",
           p.move, t.move, t.move / p.move, s.move, s.move / p.move, s.move * 1e6 / (double)n);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
