/*
** inspect_pending.c: `sync-inspect pending`, the local changes the relay
** has not acknowledged yet, grouped by the transaction (stamp) they travel
** in.
**
** Pending means: written by this replica's own site, with a local version
** above knit_acked().  Such changes are what the sync client pushes next,
** and a replica forgets nothing until the relay acknowledges it.  Captured
** writes that were not stamped yet are pending too, but have no stamp or
** transaction yet; they are counted separately (a read-only handle cannot
** stamp them).
**
** The acknowledged version is read before and after the changes: a change
** acknowledged while this command ran is left out, not shown as pending.
*/
#include <sqlite3.h>
#include <string.h>

#include "inspect_replica.h"

#define CMD "pending"

static void help(void)
{
    fputs("usage: sync-inspect pending [--json] REPLICA\n"
          "\n"
          "List the local changes the relay has not acknowledged yet, grouped by the\n"
          "transaction they are pushed and applied in (one local version each), with\n"
          "the stamp, site and namespace of every change.  Each cell appears once,\n"
          "in the transaction of its latest change.  Captured writes that knit has\n"
          "not stamped yet are pending too: they are listed at the end (table,\n"
          "operation, key, read from the capture log), and join the transactions\n"
          "when knit next stamps (on its next read or sync).  The first line says\n"
          "\"nothing pending\" only when neither kind exists.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 listed (also when nothing is pending), 2 usage error or\n"
          "unreadable replica.\n",
          stdout);
}

/* Captured, unstamped writes of every tracked table. */
static int count_unstamped(knit_t *k, uint64_t *total)
{
    int rc = 0;
    *total = 0;
    for (size_t i = 0; i < k->ntables && !rc; i++) {
        uint64_t n = 0;
        rc = inspect_unstamped(k, &k->tables[i], NULL, &n);
        *total += n;
    }
    return rc;
}

/* Lists the captured, unstamped writes of every tracked table, oldest
** first per table: the operation and the key, read from _knit_log_<id>
** (read only; a table whose log cannot be read shows nothing). */
static void print_unstamped(knit_t *k, int json)
{
    static const char *const ops[] = {"?", "insert", "update", "delete"};
    int first = 1;
    for (size_t i = 0; i < k->ntables; i++) {
        ktable_t *t = &k->tables[i];
        sqlite3_str *q = sqlite3_str_new(k->db);
        sqlite3_stmt *st = NULL;
        knit_value_t key[64];
        char *sql;
        sqlite3_str_appendf(q, "SELECT op");
        for (uint32_t c = 0; c < t->npk; c++)
            sqlite3_str_appendf(q, ", k%u", c);
        sqlite3_str_appendf(q, " FROM _knit_log_%d ORDER BY seq", t->id);
        if (!(sql = sqlite3_str_finish(q)))
            return;
        if (t->npk > 64 || sqlite3_prepare_v2(k->db, sql, -1, &st, NULL) != SQLITE_OK) {
            sqlite3_free(sql);
            sqlite3_finalize(st);
            continue;
        }
        sqlite3_free(sql);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int op = sqlite3_column_int(st, 0);
            for (uint32_t c = 0; c < t->npk; c++)
                knit__column_value(st, (int)c + 1, &key[c]);
            if (json) {
                fputs(first ? "" : ", ", stdout);
                fputs("{\"table\": ", stdout);
                inspect_json_string(stdout, t->name, strlen(t->name));
                printf(", \"op\": \"%s\", \"key\": ", ops[op >= 1 && op <= 3 ? op : 0]);
                inspect_json_sql_list(stdout, key, t->npk);
                fputs("}", stdout);
            } else {
                fputs("  ", stdout);
                inspect_text(stdout, t->name, strlen(t->name));
                printf(" %s (", ops[op >= 1 && op <= 3 ? op : 0]);
                inspect_sql_list(stdout, key, t->npk);
                fputs(")\n", stdout);
            }
            first = 0;
        }
        sqlite3_finalize(st);
    }
}

static int list(const char *path, knit_t *k, int json)
{
    knit_since_opts_t o;
    knit_batch_t *b = NULL;
    uint64_t acked = 0, acked_after = 0, version = 0, unstamped = 0;
    size_t ntx = 0, nch = 0;
    int rc;

    memset(&o, 0, sizeof o);
    o.local_only = 1;
    if ((rc = knit_acked(k, &acked)) != 0 || (rc = knit_changes_since(k, acked, &o, &b)) != 0 ||
        (rc = knit_acked(k, &acked_after)) != 0 || (rc = knit_version(k, &version)) != 0)
        goto out;
    if ((rc = knit__load_tables(k)) != 0 || (rc = count_unstamped(k, &unstamped)) != 0)
        goto out;
    for (size_t i = 0; i < b->ntxns; i++)
        if (b->txns[i].version > acked_after) {
            ntx++;
            nch += b->txns[i].count;
        }
    if (json) {
        fputs("{\"replica\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        printf(", \"version\": %llu, \"acked\": %llu, \"changes\": %zu, \"transactions\": [",
               (unsigned long long)version, (unsigned long long)acked_after, nch);
        inspect_batch_print(stdout, k, b, acked_after, 1, &ntx, &nch);
        printf("], \"unstamped\": %llu, \"unstamped_writes\": [", (unsigned long long)unstamped);
        print_unstamped(k, 1);
        fputs("]}\n", stdout);
    } else {
        /* The first line is the verdict: "nothing pending" only when
        ** nothing is, captured writes not stamped yet included. */
        if (nch)
            printf("%zu change%s in %zu transaction%s not acknowledged yet (replica at "
                   "version %llu, acknowledged up to %llu)%s\n",
                   nch, nch == 1 ? "" : "s", ntx, ntx == 1 ? "" : "s", (unsigned long long)version,
                   (unsigned long long)acked_after,
                   unstamped ? ", and captured writes not stamped yet" : "");
        else if (unstamped)
            printf("%llu captured write%s pending, not stamped yet (stamped changes are "
                   "acknowledged up to version %llu; replica at version %llu)\n",
                   (unsigned long long)unstamped, unstamped == 1 ? "" : "s",
                   (unsigned long long)acked_after, (unsigned long long)version);
        else
            printf("nothing pending: local changes are acknowledged up to version %llu "
                   "(replica at version %llu)\n",
                   (unsigned long long)acked_after, (unsigned long long)version);
        inspect_batch_print(stdout, k, b, acked_after, 0, &ntx, &nch);
        if (unstamped) {
            printf("%llu captured write%s not stamped yet (knit stamps %s on its next read or "
                   "sync, and %s pushed then):\n",
                   (unsigned long long)unstamped, unstamped == 1 ? "" : "s",
                   unstamped == 1 ? "it" : "them", unstamped == 1 ? "it is" : "they are");
            print_unstamped(k, 0);
        }
    }
out:
    knit_batch_free(b);
    return rc ? inspect_knit_fail(CMD, k, rc) : INSPECT_EXIT_OK;
}

int cmd_pending(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[1];
    int json = 0, npos, rc;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    knit_t *k = NULL;

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 1, &npos)) >= 0)
        return rc;
    if (npos != 1)
        return inspect_usage_err(CMD, "expected one REPLICA");
    if (inspect_open_replica(CMD, pos[0], &k) != 0)
        return INSPECT_EXIT_ERROR;
    rc = list(pos[0], k, json);
    knit_close(k);
    return inspect_finish(CMD, rc);
}
