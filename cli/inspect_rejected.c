/*
** inspect_rejected.c: `sync-inspect rejected`, the local writes the relay
** refused and the replica rolled back (the table _knit_rejected,
** runtime/reject.c): table, key, column, the value the app wrote, the
** relay's code and reason, whether the write was rolled back, and when.
**
** Read with plain SQL on knit's read-only connection.  A replica made
** before refusals were recorded has no such table and holds none.
*/
#include <sqlite3.h>
#include <string.h>

#include "inspect_replica.h"

#define CMD "rejected"

static void help(void)
{
    fputs("usage: sync-inspect rejected [--json] REPLICA\n"
          "\n"
          "List the local writes the relay refused (the table _knit_rejected): one\n"
          "line per refused change with its table, key (SQL literals), column\n"
          "(\"(row)\" for the row itself), the value written, the relay's code and\n"
          "reason, whether it was rolled back, and when.  A refusal is final: the\n"
          "replica rolled the cell back to the relay's winning state (\"rolled back:\n"
          "no\" when a newer local write had replaced it already) and the writes\n"
          "behind it synced.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 nothing refused, 1 refusals are recorded (listed),\n"
          "2 usage error or unreadable replica.\n",
          stdout);
}

static void put(int json, const unsigned char *s)
{
    const char *t = s ? (const char *)s : "";
    if (json)
        inspect_json_string(stdout, t, strlen(t));
    else
        inspect_text(stdout, t, strlen(t));
}

/* The value written, as text: SQLite's own rendering of it (NULL shown as
** NULL). */
static const unsigned char *value_text(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? (const unsigned char *)"NULL"
                                                     : sqlite3_column_text(st, i);
}

static int list(const char *path, knit_t *k, int json, int *found)
{
    sqlite3_stmt *st = NULL;
    int rc, n = 0;
    *found = 0;
    rc = sqlite3_prepare_v2(k->db,
                            "SELECT tbl, key, col, value, code_name, reason, rolled_back, at"
                            " FROM _knit_rejected ORDER BY id",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st); /* no table: nothing was ever refused here */
        if (json) {
            fputs("{\"replica\": ", stdout);
            inspect_json_string(stdout, path, strlen(path));
            fputs(", \"rejected\": []}\n", stdout);
        } else {
            fputs("no write was refused\n", stdout);
        }
        return 0;
    }
    if (json) {
        fputs("{\"replica\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"rejected\": [", stdout);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *col = sqlite3_column_text(st, 2);
        int rolled = sqlite3_column_int(st, 6);
        uint64_t at = (uint64_t)sqlite3_column_int64(st, 7);
        if (json) {
            fputs(n ? ", {\"table\": " : "{\"table\": ", stdout);
            put(1, sqlite3_column_text(st, 0));
            fputs(", \"key\": ", stdout);
            put(1, sqlite3_column_text(st, 1));
            fputs(", \"column\": ", stdout);
            put(1, col);
            fputs(", \"value\": ", stdout);
            put(1, value_text(st, 3));
            fputs(", \"code\": ", stdout);
            put(1, sqlite3_column_text(st, 4));
            fputs(", \"reason\": ", stdout);
            put(1, sqlite3_column_text(st, 5));
            printf(", \"rolled_back\": %s, \"at_ms\": %llu}", rolled ? "true" : "false",
                   (unsigned long long)at);
        } else {
            if (n == 0)
                fputs("table\tkey\tcolumn\tvalue\tcode\treason\trolled back\twhen\n", stdout);
            put(0, sqlite3_column_text(st, 0));
            fputs("\t(", stdout);
            put(0, sqlite3_column_text(st, 1));
            fputs(")\t", stdout);
            if (col && *col)
                put(0, col);
            else
                fputs("(row)", stdout);
            fputs("\t", stdout);
            put(0, value_text(st, 3));
            fputs("\t", stdout);
            put(0, sqlite3_column_text(st, 4));
            fputs("\t", stdout);
            put(0, sqlite3_column_text(st, 5));
            fputs(rolled ? "\tyes\t" : "\tno\t", stdout);
            inspect_ms_text(stdout, at);
            fputs("\n", stdout);
        }
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return knit__dberr(k, rc, "reading _knit_rejected");
    if (json)
        fputs("]}\n", stdout);
    else if (n == 0)
        fputs("no write was refused\n", stdout);
    else
        printf("%d write%s refused by the relay\n", n, n == 1 ? "" : "s");
    *found = n > 0;
    return 0;
}

int cmd_rejected(int argc, char **argv) /* see inspect_util.h */
{
    return inspect_list_command(CMD, argc, argv, help, list);
}
