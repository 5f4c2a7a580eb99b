/*
** test_crash.c: crash safety.  A child process writes (plain SQL, in
** transactions), stamps and applies batches on a replica and is killed
** with SIGKILL at a random moment, many times.  After each kill the parent
** reopens the file and checks: integrity_check is ok, knit_verify finds
** nothing, every transaction the child reported committed is there exactly
** once, and an apply is all or nothing.  At the end the survivor's changes
** rebuild an identical copy on a fresh replica.
*/
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "rt.h"

#define APPLY_ROWS 300

/* Child: writes forever, reporting each committed unit on fd. */
static void child_work(int fd, uint64_t seed, int gen)
{
    knit_rng_t r = {seed};
    knit_t *k = NULL;
    if (knit_open(rt_path("a.db"), NULL, &k))
        _exit(3);
    knit_t *src = NULL;
    if (knit_open(rt_path("src.db"), NULL, &src))
        _exit(3);
    sqlite3 *db = rt_plain("a.db");
    for (int i = 0;; i++) {
        char sql[256];
        switch (knit_rng_below(&r, 4)) {
        case 0:
        case 1: {
            /* A transaction of 5 rows; its id is reported after COMMIT. */
            sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
            int ok = 1;
            for (int j = 0; j < 5 && ok; j++) {
                snprintf(sql, sizeof sql, "INSERT INTO t VALUES ('g%d-%d-%d', %d, '[\"e%d\"]')",
                         gen, i, j, j, (int)knit_rng_below(&r, 5));
                ok = sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
            }
            snprintf(sql, sizeof sql, "UPDATE t SET a = a + 1 WHERE id LIKE 'g%d-%d-%%'", gen,
                     (int)knit_rng_below(&r, (uint64_t)i + 1));
            ok = ok && sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
            if (ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) {
                char line[64];
                int n = snprintf(line, sizeof line, "T g%d-%d\n", gen, i);
                if (write(fd, line, (size_t)n) != n)
                    _exit(4);
            } else {
                sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            }
            break;
        }
        case 2:
            if (knit_stamp(k) < 0)
                _exit(5);
            break;
        default: {
            knit_batch_t *b = NULL;
            if (knit_changes_since(src, 0, NULL, &b) || knit_apply(k, b, NULL))
                _exit(6);
            knit_batch_free(b);
            if (write(fd, "A\n", 2) != 2)
                _exit(4);
            break;
        }
        }
    }
}

static void problem(void *data, const char *table, const char *pk, const char *msg)
{
    (void)data;
    fprintf(stderr, "verify: %s %s: %s\n", table ? table : "-", pk ? pk : "-", msg);
}

static void sigkill_while_writing_stamping_applying(void)
{
    uint64_t seed = knit_test_seed();
    long rounds = knit_test_cases(40);
    rt_init();
    knit_t *k = rt_open("a.db");
    rt_exec(k, "CREATE TABLE t(id TEXT PRIMARY KEY, a INT, tags)");
    CHECK_OK(knit_track(k, "t", "tags:orset"));
    knit_close(k);
    knit_t *src = rt_open("src.db");
    rt_exec(src, "CREATE TABLE t(id TEXT PRIMARY KEY, a INT, tags)");
    CHECK_OK(knit_track(src, "t", "tags:orset"));
    rt_exec(src, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
                 "INSERT INTO t SELECT 'src-' || i, i, '[\"s\"]' FROM n");
    knit_close(src);

    char *committed = sqlite3_mprintf("");
    int applied_once = 0;
    for (long round = 0; round < rounds; round++) {
        knit_test_case_seed(seed + (uint64_t)round);
        knit_rng_t r = {seed + (uint64_t)round};
        int fds[2];
        CHECK(pipe(fds) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child_work(fds[1], seed + (uint64_t)round, (int)round);
        }
        close(fds[1]);
        char buf[65536];
        ssize_t n;
        sqlite3_str *s = sqlite3_str_new(NULL);
        sqlite3_str_appendall(s, committed);
        sqlite3_free(committed);
        if (round % 4 == 0) {
            /* Every fourth round first waits (bounded) for an apply to be
            ** reported, so slow builds also kill after applies, not only
            ** before them. */
            time_t deadline = time(NULL) + 20;
            char *seen = NULL;
            while (!seen && time(NULL) < deadline && (n = read(fds[0], buf, sizeof buf - 1)) > 0) {
                buf[n] = 0;
                sqlite3_str_appendall(s, buf);
                seen = strstr(buf, "A\n");
            }
        }
        struct timespec ts = {0, (long)(1 + knit_rng_below(&r, 40)) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status)); /* it was still working, not failing */
        while ((n = read(fds[0], buf, sizeof buf - 1)) > 0) {
            buf[n] = 0;
            sqlite3_str_appendall(s, buf);
        }
        close(fds[0]);
        committed = sqlite3_str_finish(s);
        if (strstr(committed, "A\n"))
            applied_once = 1;

        /* Reopen: consistent, verified, nothing committed lost. */
        k = rt_open("a.db");
        RT_EXPECT(k, "PRAGMA integrity_check", "'ok'\n");
        int problems = knit_verify(k, problem, NULL);
        CHECK_EQ_INT(problems, 0);
        char *line = committed, *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = 0;
            if (line[0] == 'T') {
                char q[128];
                snprintf(q, sizeof q, "SELECT count(*) FROM t WHERE id LIKE '%s-%%'", line + 2);
                RT_EXPECT(k, q, "5\n");
            }
            *nl = '\n';
            line = nl + 1;
        }
        /* An apply is atomic: all 300 source rows or none. */
        char *cnt = rt_dump(k, "SELECT count(*) FROM t WHERE id LIKE 'src-%'");
        CHECK(strcmp(cnt, "0\n") == 0 || strcmp(cnt, "300\n") == 0);
        if (applied_once)
            CHECK_STR(cnt, "300\n");
        sqlite3_free(cnt);
        CHECK(knit_stamp(k) >= 0);
        CHECK_EQ_INT(knit_verify(k, problem, NULL), 0);
        knit_close(k);
    }
    /* The kills landed mid-work: transactions committed and applies done. */
    CHECK(strstr(committed, "T g") != NULL);
    CHECK(applied_once);
    sqlite3_free(committed);

    /* The survivor's changes rebuild an identical replica. */
    k = rt_open("a.db");
    knit_t *fresh = rt_open("fresh.db");
    rt_exec(fresh, "CREATE TABLE t(id TEXT PRIMARY KEY, a INT, tags)");
    CHECK_OK(knit_track(fresh, "t", "tags:orset"));
    rt_send(k, fresh, NULL);
    char *x = rt_dump(k, "SELECT * FROM t ORDER BY id"),
         *y = rt_dump(fresh, "SELECT * FROM t ORDER BY id");
    CHECK_STR(x, y);
    sqlite3_free(x);
    sqlite3_free(y);
    knit_digest_t d1, d2;
    CHECK_OK(knit_digest(k, NULL, &d1));
    CHECK_OK(knit_digest(fresh, NULL, &d2));
    CHECK(knit_digest_equal(&d1, &d2));
    knit_close(fresh);
    knit_close(k);
    rt_done();
}

KNIT_TESTS(T(sigkill_while_writing_stamping_applying))
