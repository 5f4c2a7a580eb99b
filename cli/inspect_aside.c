/*
** inspect_aside.c: `sync-inspect aside`, the changes a replica could not
** apply and set aside (the table _knit_aside, runtime/knit.h): refused rows
** with SQLite's reason, and changes waiting for a table or column this
** replica does not track yet.
**
** Read with plain SQL on knit's read-only connection.  A replica made
** before set-aside existed has no such table and holds nothing aside.
*/
#include <sqlite3.h>
#include <string.h>

#include "inspect_replica.h"

#define CMD "aside"

static void help(void)
{
    fputs("usage: sync-inspect aside [--json] REPLICA\n"
          "\n"
          "List the changes this replica set aside instead of applying (the table\n"
          "_knit_aside): one line per change with its table, key (SQL literals),\n"
          "column (\"(row)\" for the row itself), kind and reason, and when it was\n"
          "set aside.  Kind \"refused\": the replica cannot apply the row (the\n"
          "reason is SQLite's message, e.g. NOT NULL constraint failed: kv.v);\n"
          "fix the schema or the data and the change applies on the next sync that\n"
          "touches the row, or when the schema changes.  Kind \"waiting\": the\n"
          "table or column is not tracked here (yet).  Every other change applied:\n"
          "one row never blocks the others.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 nothing set aside, 1 changes are set aside (listed),\n"
          "2 usage error or unreadable replica.\n",
          stdout);
}

static void put_text(int json, const unsigned char *s)
{
    const char *t = s ? (const char *)s : "";
    if (json)
        inspect_json_string(stdout, t, strlen(t));
    else
        inspect_text(stdout, t, strlen(t));
}

static int list(const char *path, knit_t *k, int json, int *found)
{
    sqlite3_stmt *st = NULL;
    uint64_t refused = 0, waiting = 0;
    int rc, n = 0;

    *found = 0;
    rc = sqlite3_prepare_v2(k->db,
                            "SELECT tbl, key, col, kind, reason, at FROM _knit_aside"
                            " ORDER BY tbl, key, col, id",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        /* No table: nothing was ever set aside here. */
        sqlite3_finalize(st);
        if (json) {
            fputs("{\"replica\": ", stdout);
            inspect_json_string(stdout, path, strlen(path));
            fputs(", \"refused\": 0, \"waiting\": 0, \"changes\": []}\n", stdout);
        } else {
            fputs("nothing set aside\n", stdout);
        }
        return 0;
    }
    if (json) {
        fputs("{\"replica\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"changes\": [", stdout);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *tbl = sqlite3_column_text(st, 0);
        const unsigned char *key = sqlite3_column_text(st, 1);
        const unsigned char *col = sqlite3_column_text(st, 2);
        const unsigned char *kind = sqlite3_column_text(st, 3);
        const unsigned char *reason = sqlite3_column_text(st, 4);
        uint64_t at = (uint64_t)sqlite3_column_int64(st, 5);
        int is_refused = kind && strcmp((const char *)kind, "refused") == 0;
        refused += is_refused;
        waiting += !is_refused;
        if (json) {
            fputs(n ? ", {\"table\": " : "{\"table\": ", stdout);
            put_text(1, tbl);
            fputs(", \"key\": ", stdout);
            put_text(1, key);
            fputs(", \"column\": ", stdout);
            put_text(1, col);
            fputs(", \"kind\": ", stdout);
            put_text(1, kind);
            fputs(", \"reason\": ", stdout);
            put_text(1, reason);
            printf(", \"at_ms\": %llu}", (unsigned long long)at);
        } else {
            if (n == 0)
                fputs("table\tkey\tcolumn\tkind\treason\twhen\n", stdout);
            put_text(0, tbl);
            fputs("\t(", stdout);
            put_text(0, key);
            fputs(")\t", stdout);
            if (col && *col)
                put_text(0, col);
            else
                fputs("(row)", stdout);
            fputs("\t", stdout);
            put_text(0, kind);
            fputs("\t", stdout);
            put_text(0, reason);
            fputs("\t", stdout);
            inspect_ms_text(stdout, at);
            fputs("\n", stdout);
        }
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, "reading _knit_aside");
    if (json)
        printf("], \"refused\": %llu, \"waiting\": %llu}\n", (unsigned long long)refused,
               (unsigned long long)waiting);
    else if (n == 0)
        fputs("nothing set aside\n", stdout);
    else
        printf("%d change%s set aside: %llu refused, %llu waiting for a table or column\n", n,
               n == 1 ? "" : "s", (unsigned long long)refused, (unsigned long long)waiting);
    *found = n > 0;
    return 0;
}

int cmd_aside(int argc, char **argv) /* see inspect_util.h */
{
    return inspect_list_command(CMD, argc, argv, help, list);
}
