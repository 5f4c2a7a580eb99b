/*
** bench_watch.c: change notifications across processes.  A child process
** writes rows to a replica with plain SQLite (autocommit, one row per
** transaction, WAL, synchronous=NORMAL) and notes the monotonic time right
** after each COMMIT returned; the parent runs knit_watch_start() on a libuv
** loop with keys asked for (knit_on_change_keys) and notes when the
** callback names the row.  The figure is commit-to-callback latency: the
** file watch, knit_poll's data_version check, its stamp of the write, and
** reading the changed keys.  With "agent", a second watcher process (a
** sync-agent-like stamper, here: another knit_watch) competes to stamp,
** as on a device where a leader runs.
** Usage: bench_watch [ROWS [GAP_MS]] (default 500 rows, 5 ms apart).
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sqlite3.h>
#include <uv.h>

#include "knit.h"
#include "knit_sync.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct bench_s {
    uint64_t *seen; /* per row: when the callback named it (0: not yet) */
    long rows;      /* rows the writer writes */
    long got;       /* rows named so far */
    long remote;    /* rows wrongly marked remote */
    uv_loop_t loop; /* the loop */
    uv_timer_t end; /* gives up */
    knit_watch_t *w;
} bench_t;

static void on_change(knit_t *k, const knit_event_t *ev, void *data)
{
    bench_t *b = data;
    uint64_t t = now_ns();
    (void)k;
    for (size_t i = 0; i < ev->nkeys; i++) {
        const knit_event_key_t *key = &ev->keys[i];
        if (key->npk != 1 || key->pk[0].type != KNIT_INTEGER)
            continue;
        long id = (long)key->pk[0].u.i;
        if (id >= 0 && id < b->rows && !b->seen[id]) {
            b->seen[id] = t;
            b->got++;
            b->remote += key->remote;
        }
    }
    if (b->got == b->rows) {
        knit_watch_stop(b->w, NULL);
        uv_close((uv_handle_t *)&b->end, NULL);
    }
}

static void on_end(uv_timer_t *t)
{
    bench_t *b = t->data;
    knit_watch_stop(b->w, NULL);
    uv_close((uv_handle_t *)&b->end, NULL);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The writer: rows one by one, the commit time of each into the pipe. */
static void writer(const char *path, long rows, unsigned gap_ms, int fd)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        _exit(1);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    usleep(200000); /* the watcher is up */
    for (long i = 0; i < rows; i++) {
        char sql[128];
        uint64_t t[3];
        snprintf(sql, sizeof sql, "INSERT INTO items VALUES (%ld, %ld)", i, i);
        t[0] = (uint64_t)i;
        t[1] = now_ns();
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            _exit(2);
        t[2] = now_ns();
        if (write(fd, t, sizeof t) != (ssize_t)sizeof t)
            _exit(3);
        usleep(gap_ms * 1000);
    }
    sqlite3_close(db);
    _exit(0);
}

/* A second stamper (the "agent" mode): another process watching. */
static void stamper(const char *path)
{
    knit_t *k;
    knit_watch_t *w;
    uv_loop_t loop;
    if (knit_open(path, NULL, &k) != 0)
        _exit(1);
    uv_loop_init(&loop);
    if (knit_watch_start(&loop, k, 250, &w) != 0)
        _exit(1);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(0);
}

int main(int argc, char **argv)
{
    long rows = argc > 1 ? atol(argv[1]) : 500;
    unsigned gap = argc > 2 ? (unsigned)atoi(argv[2]) : 5;
    int agent = argc > 3 && strcmp(argv[3], "agent") == 0;
    char dir[] = "/tmp/bench_watch.XXXXXX", path[600];
    int fds[2];
    pid_t wpid, spid = 0;
    bench_t b;
    knit_t *k;
    sqlite3 *db;

    if (rows <= 0 || !mkdtemp(dir))
        return 2;
    snprintf(path, sizeof path, "%s/w.db", dir);
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, "CREATE TABLE items(id INT PRIMARY KEY, v INTEGER)", NULL, NULL, NULL) !=
            SQLITE_OK)
        return 1;
    sqlite3_close(db);
    int rc = knit_open(path, NULL, &k);
    if (rc || (rc = knit_track(k, "items", NULL)) != 0) {
        fprintf(stderr, "bench_watch: %s: %s\n", path,
                rc && k ? knit_errmsg(k) : knit_strerror(rc));
        return 1;
    }
    knit_close(k);
    if (agent && (spid = fork()) == 0)
        stamper(path);
    if (pipe(fds) != 0)
        return 1;
    if ((wpid = fork()) == 0) {
        close(fds[0]);
        writer(path, rows, gap, fds[1]);
    }
    close(fds[1]);

    memset(&b, 0, sizeof b);
    b.rows = rows;
    b.seen = calloc((size_t)rows, sizeof *b.seen);
    if (!b.seen || knit_open(path, NULL, &k) != 0)
        return 1;
    knit_on_change(k, on_change, &b);
    knit_on_change_keys(k, 1000);
    uv_loop_init(&b.loop);
    uv_timer_init(&b.loop, &b.end);
    b.end.data = &b;
    uv_timer_start(&b.end, on_end, 30000 + (uint64_t)rows * gap * 2, 0);
    if (knit_watch_start(&b.loop, k, 250, &b.w) != 0)
        return 1;
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uv_loop_close(&b.loop);

    /* lat: from the writer's INSERT call (its commit included); after:
    ** from its return, which the callback may precede (a negative figure:
    ** the commit was visible before sqlite3_exec returned). */
    uint64_t *lat = calloc((size_t)rows, sizeof *lat), t[3];
    int64_t *after = calloc((size_t)rows, sizeof *after);
    long n = 0;
    while (read(fds[0], t, sizeof t) == (ssize_t)sizeof t)
        if ((long)t[0] < rows && b.seen[t[0]]) {
            lat[n] = b.seen[t[0]] > t[1] ? b.seen[t[0]] - t[1] : 0;
            after[n++] = (int64_t)(b.seen[t[0]] - t[2]);
        }
    waitpid(wpid, NULL, 0);
    if (spid) {
        kill(spid, SIGKILL);
        waitpid(spid, NULL, 0);
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
    qsort(after, (size_t)n, sizeof *after, cmp_i64);
    if (n)
        printf("bench_watch%s: %ld rows, %u ms apart, another process's INSERT (autocommit) "
               "-> callback naming the key: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f "
               "ms; from the INSERT's return: p50 %.2f ms, p99 %.2f ms; %ld of %ld named, %ld "
               "marked remote\n",
               agent ? " (with a second stamping process)" : "", rows, gap,
               (double)lat[n / 2] / 1e6, (double)lat[n * 9 / 10] / 1e6,
               (double)lat[n * 99 / 100] / 1e6, (double)lat[n - 1] / 1e6,
               (double)after[n / 2] / 1e6, (double)after[n * 99 / 100] / 1e6, b.got, rows,
               b.remote);
    free(after);
    knit_close(k);
    free(lat);
    free(b.seen);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return n == rows && !b.remote ? 0 : 1;
}
