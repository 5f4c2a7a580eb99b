/*
** bench_replica.c: the replica against plain SQLite, measured in one run.
**
** Every figure compares knit with the same work on an untracked table in a
** separate file, both with WAL and synchronous=NORMAL:
**   - INSERT of N rows (key + 4 columns) in one transaction: the app's
**     commit alone, and commit plus knit's stamp of those rows;
**   - UPDATE of one column of every row, likewise;
**   - apply of a 100,000-cell batch from another replica, against a plain
**     UPSERT of the same rows;
**   - file bytes per row, metadata next to data.
** Usage: bench_replica [ROWS] (default 200000).  Prints one line per figure.
*/
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "knit.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#ifdef __GNUC__
__attribute__((noreturn))
#endif
static void
die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_replica: %s: %s\n", what, msg);
    exit(1);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err);
}

static long long file_size(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (long long)sb.st_size : 0;
}

static const char *SCHEMA = "CREATE TABLE t(id TEXT PRIMARY KEY, a INT, b REAL, c TEXT, d INT)";

/* Runs sql, bound with the values of rows [from, from + n), once per row, in
** one transaction; returns the seconds taken. */
static double write_rows(sqlite3 *db, const char *sql, int from, int n)
{
    sqlite3_stmt *st;
    double t0 = now_s();
    exec(db, "BEGIN");
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL))
        die("prepare", sqlite3_errmsg(db));
    for (int i = from; i < from + n; i++) {
        char id[40], c[40];
        /* Keys in a scrambled order, as UUIDs would be. */
        snprintf(id, sizeof id, "%08x-%08x", (unsigned)(i * 2654435761u), (unsigned)i);
        snprintf(c, sizeof c, "value number %d", i);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, i);
        sqlite3_bind_double(st, 3, i * 0.5);
        sqlite3_bind_text(st, 4, c, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 5, i % 7);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("write", sqlite3_errmsg(db));
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec(db, "COMMIT");
    return now_s() - t0;
}

/* Inserts rows [from, from + n) in one transaction, a statement per row. */
static double insert_rows(sqlite3 *db, int from, int n)
{
    return write_rows(db, "INSERT INTO t VALUES (?, ?, ?, ?, ?)", from, n);
}

/* The same rows with one INSERT ... SELECT statement: SQLite opens a
** statement journal once instead of once per row (see PERFORMANCE.md). */
static const char *BULK_INSERT =
    "BEGIN; WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
    " INSERT INTO t SELECT printf('%%08x-%%08x', (i * 2654435761) %% 4294967296, i), i,"
    " i * 0.5, 'value number ' || i, i %% 7 FROM n; COMMIT";

static double timed_exec(sqlite3 *db, const char *sql)
{
    double t0 = now_s();
    exec(db, sql);
    return now_s() - t0;
}

/* Updates one column of rows [0, n) with one statement per row (keyed), in
** one transaction: the shape of an app editing records. */
static double update_each(sqlite3 *db, int n)
{
    sqlite3_stmt *st;
    double t0 = now_s();
    exec(db, "BEGIN");
    if (sqlite3_prepare_v2(db, "UPDATE t SET d = ? WHERE id = ?", -1, &st, NULL))
        die("prepare", sqlite3_errmsg(db));
    for (int i = 0; i < n; i++) {
        char id[40];
        snprintf(id, sizeof id, "%08x-%08x", (unsigned)(i * 2654435761u), (unsigned)i);
        sqlite3_bind_int(st, 1, i + 1000);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("update", sqlite3_errmsg(db));
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec(db, "COMMIT");
    return now_s() - t0;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double timed_stamp(knit_t *k)
{
    double t0 = now_s();
    if (knit_stamp(k) < 0)
        die("stamp", knit_errmsg(k));
    return now_s() - t0;
}

/* Times of one round of the write comparison, in seconds. */
enum {
    T_PLAIN_INS,
    T_PLAIN_UPD,
    T_PLAIN_EACH,
    T_PLAIN_BULK,
    T_KNIT_INS,
    T_KNIT_INS_STAMP,
    T_KNIT_UPD,
    T_KNIT_UPD_STAMP,
    T_KNIT_EACH,
    T_KNIT_EACH_STAMP,
    T_KNIT_BULK,
    T_KNIT_BULK_STAMP,
    T_COUNT
};

/* One round on fresh files: the same writes on a plain table and on a
** tracked one (written by the app's own connection, stamped by knit). */
static void write_round(const char *dir, int rows, int round, double *t, long long *plain_bytes,
                        long long *knit_bytes)
{
    char p_plain[300], p_knit[300];
    snprintf(p_plain, sizeof p_plain, "%s/plain%d.db", dir, round);
    snprintf(p_knit, sizeof p_knit, "%s/knit%d.db", dir, round);
    sqlite3 *plain;
    if (sqlite3_open(p_plain, &plain))
        die("open", p_plain);
    exec(plain, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
    exec(plain, SCHEMA);
    t[T_PLAIN_INS] = insert_rows(plain, 0, rows);
    t[T_PLAIN_UPD] = timed_exec(plain, "UPDATE t SET a = a + 1");
    t[T_PLAIN_EACH] = update_each(plain, rows);
    exec(plain, "PRAGMA wal_checkpoint(TRUNCATE)");
    *plain_bytes = file_size(p_plain);
    sqlite3_close(plain);

    knit_t *k;
    if (knit_open(p_knit, NULL, &k))
        die("open", p_knit);
    sqlite3 *app;
    if (sqlite3_open(p_knit, &app))
        die("open", p_knit);
    exec(app, "PRAGMA synchronous=NORMAL");
    exec(app, SCHEMA);
    if (knit_track(k, "t", NULL))
        die("track", knit_errmsg(k));
    t[T_KNIT_INS] = insert_rows(app, 0, rows);
    t[T_KNIT_INS_STAMP] = timed_stamp(k);
    t[T_KNIT_UPD] = timed_exec(app, "UPDATE t SET a = a + 1");
    t[T_KNIT_UPD_STAMP] = timed_stamp(k);
    t[T_KNIT_EACH] = update_each(app, rows);
    t[T_KNIT_EACH_STAMP] = timed_stamp(k);
    exec(app, "PRAGMA wal_checkpoint(TRUNCATE)");
    *knit_bytes = file_size(p_knit);
    sqlite3_close(app);
    knit_close(k);

    /* Bulk inserts, on fresh files again. */
    char bulk[512];
    snprintf(bulk, sizeof bulk, BULK_INSERT, rows - 1);
    snprintf(p_plain, sizeof p_plain, "%s/plainb%d.db", dir, round);
    snprintf(p_knit, sizeof p_knit, "%s/knitb%d.db", dir, round);
    if (sqlite3_open(p_plain, &plain))
        die("open", p_plain);
    exec(plain, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
    exec(plain, SCHEMA);
    t[T_PLAIN_BULK] = timed_exec(plain, bulk);
    sqlite3_close(plain);
    if (knit_open(p_knit, NULL, &k) || sqlite3_open(p_knit, &app))
        die("open", p_knit);
    exec(app, "PRAGMA synchronous=NORMAL");
    exec(app, SCHEMA);
    if (knit_track(k, "t", NULL))
        die("track", knit_errmsg(k));
    t[T_KNIT_BULK] = timed_exec(app, bulk);
    t[T_KNIT_BULK_STAMP] = timed_stamp(k);
    sqlite3_close(app);
    knit_close(k);
}

#define ROUNDS 3

int main(int argc, char **argv)
{
    int rows = argc > 1 ? atoi(argv[1]) : 200000;
    char dir[] = "/tmp/knit-bench-XXXXXX", p_knit[300], p_src[300], p_dst[300], p_up[300];
    if (!mkdtemp(dir))
        die("mkdtemp", "failed");
    snprintf(p_knit, sizeof p_knit, "%s/live.db", dir);
    snprintf(p_src, sizeof p_src, "%s/src.db", dir);
    snprintf(p_dst, sizeof p_dst, "%s/dst.db", dir);
    snprintf(p_up, sizeof p_up, "%s/upsert.db", dir);
    printf("bench_replica: %d rows x (key + 4 columns), WAL, synchronous=NORMAL, SQLite %s; "
           "medians of %d rounds\n",
           rows, sqlite3_libversion(), ROUNDS);

    /* Each time is the median over the rounds, which keeps one disturbed
    ** round (the machine is shared) from deciding a ratio. */
    double times[ROUNDS][T_COUNT], med[T_COUNT];
    long long plain_bytes = 0, knit_bytes = 0;
    for (int r = 0; r < ROUNDS; r++)
        write_round(dir, rows, r, times[r], &plain_bytes, &knit_bytes);
    for (int i = 0; i < T_COUNT; i++) {
        double v[ROUNDS];
        for (int r = 0; r < ROUNDS; r++)
            v[r] = times[r][i];
        qsort(v, ROUNDS, sizeof v[0], cmp);
        med[i] = v[ROUNDS / 2];
    }
    double t_plain_ins = med[T_PLAIN_INS], t_plain_upd = med[T_PLAIN_UPD],
           t_plain_each = med[T_PLAIN_EACH], t_knit_ins = med[T_KNIT_INS],
           t_knit_ins_stamp = med[T_KNIT_INS_STAMP], t_knit_upd = med[T_KNIT_UPD],
           t_knit_upd_stamp = med[T_KNIT_UPD_STAMP], t_knit_each = med[T_KNIT_EACH],
           t_knit_each_stamp = med[T_KNIT_EACH_STAMP], t_plain_bulk = med[T_PLAIN_BULK],
           t_knit_bulk = med[T_KNIT_BULK], t_knit_bulk_stamp = med[T_KNIT_BULK_STAMP];

    printf("insert plain:            %10.0f rows/s\n", rows / t_plain_ins);
    printf("insert tracked (commit): %10.0f rows/s   ratio %.2f\n", rows / t_knit_ins,
           t_plain_ins / t_knit_ins);
    printf("insert tracked + stamp:  %10.0f rows/s   ratio %.2f\n",
           rows / (t_knit_ins + t_knit_ins_stamp), t_plain_ins / (t_knit_ins + t_knit_ins_stamp));
    printf("insert ... select, plain:   %10.0f rows/s\n", rows / t_plain_bulk);
    printf("insert ... select, tracked: %10.0f rows/s   ratio %.2f\n", rows / t_knit_bulk,
           t_plain_bulk / t_knit_bulk);
    printf("insert ... select + stamp:  %10.0f rows/s   ratio %.2f\n",
           rows / (t_knit_bulk + t_knit_bulk_stamp),
           t_plain_bulk / (t_knit_bulk + t_knit_bulk_stamp));
    printf("update all (one stmt), plain: %10.0f rows/s\n", rows / t_plain_upd);
    printf("update tracked (commit): %10.0f rows/s   ratio %.2f\n", rows / t_knit_upd,
           t_plain_upd / t_knit_upd);
    printf("update tracked + stamp:  %10.0f rows/s   ratio %.2f\n",
           rows / (t_knit_upd + t_knit_upd_stamp), t_plain_upd / (t_knit_upd + t_knit_upd_stamp));
    printf("update by key, plain:    %10.0f rows/s\n", rows / t_plain_each);
    printf("update by key, tracked:  %10.0f rows/s   ratio %.2f\n", rows / t_knit_each,
           t_plain_each / t_knit_each);
    printf("update by key + stamp:   %10.0f rows/s   ratio %.2f\n",
           rows / (t_knit_each + t_knit_each_stamp),
           t_plain_each / (t_knit_each + t_knit_each_stamp));
    printf("bytes per row: data %.1f, metadata %.1f (file %lld vs plain %lld)\n",
           (double)plain_bytes / rows, (double)(knit_bytes - plain_bytes) / rows, knit_bytes,
           plain_bytes);

    /* Apply: a 100,000-cell batch (25,000 rows x 4 columns) from another
    ** replica, into an empty tracked table. */
    int arows = 25000;
    knit_t *src = NULL, *dst = NULL;
    if (knit_open(p_src, NULL, &src) || knit_open(p_dst, NULL, &dst))
        die("open", "src/dst");
    exec(knit_db(src), SCHEMA);
    exec(knit_db(dst), SCHEMA);
    if (knit_track(src, "t", NULL) || knit_track(dst, "t", NULL))
        die("track", "src/dst");
    insert_rows(knit_db(src), 0, arows);
    knit_batch_t *b;
    double t0 = now_s();
    if (knit_changes_since(src, 0, NULL, &b))
        die("changes_since", knit_errmsg(src));
    double t_since = now_s() - t0;
    size_t cells = 0;
    for (size_t i = 0; i < b->nchanges; i++)
        cells += b->changes[i].col != 0;
    knit_apply_stats_t st;
    /* Into an empty replica, median of ROUNDS fresh ones (dst is the last). */
    double ta[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        if (r > 0) {
            char p[320];
            snprintf(p, sizeof p, "%s/dst%d.db", dir, r);
            knit_close(dst);
            if (knit_open(p, NULL, &dst))
                die("open", p);
            exec(knit_db(dst), SCHEMA);
            if (knit_track(dst, "t", NULL))
                die("track", knit_errmsg(dst));
        }
        t0 = now_s();
        if (knit_apply(dst, b, &st))
            die("apply", knit_errmsg(dst));
        ta[r] = now_s() - t0;
    }
    qsort(ta, ROUNDS, sizeof ta[0], cmp);
    double t_apply = ta[ROUNDS / 2];
    /* The same batch again: everything already known. */
    t0 = now_s();
    if (knit_apply(dst, b, &st))
        die("apply", knit_errmsg(dst));
    double t_reapply = now_s() - t0;

    /* Plain UPSERT of the same values. */
    sqlite3 *up;
    if (sqlite3_open(p_up, &up))
        die("open", p_up);
    exec(up, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
    exec(up, SCHEMA);
    double t_upsert =
        write_rows(up,
                   "INSERT INTO t VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                   "SET a = excluded.a, b = excluded.b, c = excluded.c, d = excluded.d",
                   0, arows);

    printf("changes_since: %zu changes in %.3f s (%.0f changes/s)\n", b->nchanges, t_since,
           b->nchanges / t_since);
    printf("apply: %zu cells (+%zu liveness) in %.3f s: %.0f cells/s; plain UPSERT %.0f cells/s; "
           "ratio %.2f\n",
           cells, b->nchanges - cells, t_apply, cells / t_apply, cells / t_upsert,
           t_upsert / t_apply);
    printf("re-apply (all known): %.0f cells/s\n", cells / t_reapply);

    knit_batch_free(b);

    /* Live path: one-row commits by another connection, each noticed and
    ** stamped by knit_poll, read back as a push (knit_changes_since,
    ** local only) and applied to another replica: what sync-agent A and
    ** sync-agent B do per write of the latency figure.  Instruction counts
    ** of each: valgrind --tool=callgrind --toggle-collect=knit_poll (or
    ** knit_changes_since, knit_apply) bench_replica 20000. */
    {
        knit_t *k = NULL;
        sqlite3 *app = NULL;
        if (knit_open(p_knit, NULL, &k) || sqlite3_open(p_knit, &app))
            die("open", p_knit);
        exec(app, "PRAGMA synchronous=NORMAL");
        exec(app, SCHEMA);
        if (knit_track(k, "t", NULL))
            die("track", knit_errmsg(k));
        insert_rows(app, 0, rows / 10);
        if (knit_stamp(k) < 0)
            die("stamp", knit_errmsg(k));
        enum { N = 2000 };
        static double lat[N], lread[N], lapply[N];
        uint64_t after = 0;
        knit_version(k, &after);
        sqlite3_stmt *ins;
        if (sqlite3_prepare_v2(app, "INSERT INTO t VALUES (?, 1, 2.0, 'live', 3)", -1, &ins, NULL))
            die("prepare", sqlite3_errmsg(app));
        for (int i = 0; i < N; i++) {
            char id[40];
            snprintf(id, sizeof id, "live-%d", i);
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(ins) != SQLITE_DONE)
                die("insert", sqlite3_errmsg(app));
            sqlite3_reset(ins);
            double p0 = now_s();
            if (knit_poll(k) != 1)
                die("poll", "missed a commit");
            double p1 = now_s();
            knit_since_opts_t o = {1, 262144, NULL}; /* as sync-agent reads */
            knit_batch_t *one = NULL;
            if (knit_changes_since(k, after, &o, &one) || one->nchanges == 0)
                die("changes_since", knit_errmsg(k));
            knit_version(k, &after);
            double p2 = now_s();
            if (knit_apply(dst, one, NULL))
                die("apply", knit_errmsg(dst));
            double p3 = now_s();
            knit_batch_free(one);
            lat[i] = p1 - p0;
            lread[i] = p2 - p1;
            lapply[i] = p3 - p2;
        }
        sqlite3_finalize(ins);
        qsort(lat, N, sizeof lat[0], cmp);
        qsort(lread, N, sizeof lread[0], cmp);
        qsort(lapply, N, sizeof lapply[0], cmp);
        printf(
            "poll + stamp of a one-row commit: p50 %.0f us, p99 %.0f us; its push read: p50 %.0f "
            "us, p99 %.0f us; its apply on another replica: p50 %.0f us, p99 %.0f us\n",
            lat[N / 2] * 1e6, lat[N * 99 / 100] * 1e6, lread[N / 2] * 1e6,
            lread[N * 99 / 100] * 1e6, lapply[N / 2] * 1e6, lapply[N * 99 / 100] * 1e6);
        sqlite3_close(app);
        knit_close(k);
    }
    knit_close(src);
    knit_close(dst);
    sqlite3_close(up);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        return 1;
    return 0;
}
