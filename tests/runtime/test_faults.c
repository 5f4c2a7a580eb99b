/*
** test_faults.c: the disk fails under the replica.  Through a VFS that
** fails the Nth write or sync (faultvfs.h), every failure point of a stamp
** and of an apply is hit in turn.  Each failed call must return an I/O
** error, leave the replica consistent (knit_verify) with nothing captured
** lost, and succeed when retried; at the end both replicas agree.
*/
#include "faultvfs.h"
#include "rt.h"

static void problem(void *data, const char *table, const char *pk, const char *msg)
{
    (void)data;
    fprintf(stderr, "verify: %s %s: %s\n", table ? table : "-", pk ? pk : "-", msg);
}

static void disk_fails_during_stamp_and_apply(void)
{
    fault_vfs_install();
    rt_init();
    knit_t *a = rt_open("a.db"), *b = rt_open("b.db");
    const char *ddl = "CREATE TABLE t(id TEXT PRIMARY KEY, v INT, tags)";
    rt_exec(a, ddl);
    rt_exec(b, ddl);
    CHECK_OK(knit_track(a, "t", "tags:orset"));
    CHECK_OK(knit_track(b, "t", "tags:orset"));
    sqlite3 *app = rt_plain("a.db");
    long stamp_failures = 0, apply_failures = 0;
    int stamp_clean = 0, apply_clean = 0;
    for (long nth = 1; nth < 400 && !(stamp_clean && apply_clean); nth++) {
        char sql[256];
        /* A few writes by the app, with a healthy disk. */
        snprintf(sql, sizeof sql,
                 "INSERT INTO t VALUES ('r%ld', %ld, '[\"x%ld\"]');"
                 "UPDATE t SET v = v + 1, tags = '[\"y\"]' WHERE id = 'r%ld'",
                 nth, nth, nth % 3, nth / 2);
        rt_plain_ok(app, sql);

        /* Stamp with the nth write failing. */
        fault_arm(nth, 0);
        int rc = knit_stamp(a);
        long writes = fault_arm(0, 0);
        if (rc < 0) {
            if (rc != KNIT_EIO)
                fprintf(stderr, "stamp at %ld: %s (%s)\n", nth, knit_err_name(rc), knit_errmsg(a));
            CHECK_EQ_INT(rc, KNIT_EIO);
            CHECK(strstr(knit_errmsg(a), "disk") || strstr(knit_errmsg(a), "I/O"));
            stamp_failures++;
            CHECK_EQ_INT(knit_verify(a, problem, NULL), 0);
            CHECK(knit_stamp(a) >= 1); /* the captured writes were kept */
        } else if (writes < nth) {
            stamp_clean = 1;
        }

        /* Apply everything of a into b with the nth write failing. */
        knit_batch_t *batch;
        CHECK_OK(knit_changes_since(a, 0, NULL, &batch));
        fault_arm(nth, 0);
        rc = knit_apply(b, batch, NULL);
        writes = fault_arm(0, 0);
        if (rc < 0) {
            CHECK_EQ_INT(rc, KNIT_EIO);
            apply_failures++;
            CHECK_EQ_INT(knit_verify(b, problem, NULL), 0);
            CHECK_OK(knit_apply(b, batch, NULL));
        } else if (writes < nth) {
            apply_clean = 1;
        }
        knit_batch_free(batch);
    }
    CHECK(stamp_failures > 0 && apply_failures > 0);
    CHECK(stamp_clean && apply_clean);
    /* A disk that stays full: every attempt fails cleanly, nothing changes. */
    rt_plain_ok(app, "INSERT INTO t VALUES ('late', 1, '[]')");
    fault_arm(1, 1);
    CHECK_EQ_INT(knit_stamp(a), KNIT_EIO);
    CHECK_EQ_INT(knit_stamp(a), KNIT_EIO);
    fault_arm(0, 0);
    CHECK(knit_stamp(a) == 1);
    sqlite3_close(app);

    rt_send(a, b, NULL);
    char *x = rt_dump(a, "SELECT * FROM t ORDER BY id"),
         *y = rt_dump(b, "SELECT * FROM t ORDER BY id");
    CHECK_STR(x, y);
    sqlite3_free(x);
    sqlite3_free(y);
    knit_digest_t da, db;
    CHECK_OK(knit_digest(a, NULL, &da));
    CHECK_OK(knit_digest(b, NULL, &db));
    CHECK(knit_digest_equal(&da, &db));
    printf("stamp failures %ld, apply failures %ld\n", stamp_failures, apply_failures);
    knit_close(a);
    knit_close(b);
    rt_done();
}

KNIT_TESTS(T(disk_fails_during_stamp_and_apply))
