/*
** inspect_changes.c: `sync-inspect changes`, a replica's changes after a
** local version, as knit_changes_since() hands them to the sync client:
** grouped into units of one local version each, every cell once, in the
** unit of its latest change.
**
** Paging: --limit stops after the unit that reaches N changes (a unit is
** never split, as on the wire), and the output names the version to pass
** to --since for the next page.  Whether more follow is checked with a
** second, one-unit read.
*/
#include <string.h>

#include "inspect_replica.h"

#define CMD "changes"

static void help(void)
{
    fputs("usage: sync-inspect changes [--json] [--since VERSION] [--limit N] [--ns NS]\n"
          "                            [--local] REPLICA\n"
          "\n"
          "List the replica's changes with a local version above VERSION (default 0,\n"
          "everything), as knit hands them to the sync client: one unit per local\n"
          "version, each cell once, in the unit of its latest change, with its value,\n"
          "stamp (ISO-8601 time and counter), writing site, marked (local) when it\n"
          "is this replica, and namespace.  A row's liveness shows as live or\n"
          "deleted with its causal length.  OR-set cells show their elements.\n"
          "\n"
          "  --since VERSION  only changes after this local version\n"
          "  --limit N        stop after the unit that reaches N changes (units are\n"
          "                   never split); the output names the --since for the\n"
          "                   next page\n"
          "  --ns NS          only rows of namespace NS\n"
          "  --local          only changes this replica wrote\n"
          "  --json           one JSON document instead of text\n"
          "\n"
          "Exit status: 0 listed, 2 usage error or unreadable replica.\n",
          stdout);
}

static int list(const char *path, knit_t *k, uint64_t since, uint64_t limit, const char *ns,
                int local, int json)
{
    knit_since_opts_t o;
    knit_batch_t *b = NULL, *probe = NULL;
    uint64_t version = 0, last = since;
    size_t ntx = 0, nch = 0;
    int rc, more = 0;

    memset(&o, 0, sizeof o);
    o.local_only = local;
    o.ns = ns;
    o.max_changes = (size_t)limit;
    if ((rc = knit_version(k, &version)) != 0 || (rc = knit_changes_since(k, since, &o, &b)) != 0)
        goto out;
    if (b->ntxns)
        last = b->txns[b->ntxns - 1].version;
    if (limit && b->nchanges >= limit) {
        o.max_changes = 1;
        if ((rc = knit_changes_since(k, last, &o, &probe)) != 0)
            goto out;
        more = probe->nchanges > 0;
    }
    if (json) {
        fputs("{\"replica\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        printf(", \"version\": %llu, \"since\": %llu, \"transactions\": [",
               (unsigned long long)version, (unsigned long long)since);
        inspect_batch_print(stdout, k, b, since, 1, &ntx, &nch);
        printf("], \"changes\": %zu, \"more\": %s, \"next_since\": %llu}\n", nch,
               more ? "true" : "false", (unsigned long long)last);
    } else {
        printf("changes after version %llu (replica at version %llu)\n", (unsigned long long)since,
               (unsigned long long)version);
        inspect_batch_print(stdout, k, b, since, 0, &ntx, &nch);
        if (!nch)
            fputs("none\n", stdout);
        if (more)
            printf("more follow: continue with --since %llu\n", (unsigned long long)last);
    }
out:
    knit_batch_free(b);
    knit_batch_free(probe);
    return rc ? inspect_knit_fail(CMD, k, rc) : INSPECT_EXIT_OK;
}

int cmd_changes(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[1], *since_s = NULL, *limit_s = NULL, *ns = NULL;
    int json = 0, local = 0, npos, rc;
    uint64_t since = 0, limit = 0;
    const inspect_opt_t opts[] = {{"--json", NULL, &json},     {"--local", NULL, &local},
                                  {"--since", &since_s, NULL}, {"--limit", &limit_s, NULL},
                                  {"--ns", &ns, NULL},         {NULL, NULL, NULL}};
    knit_t *k = NULL;

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 1, &npos)) >= 0)
        return rc;
    if (npos != 1)
        return inspect_usage_err(CMD, "expected one REPLICA");
    if (since_s && inspect_u64_arg(CMD, "--since", since_s, &since) != 0)
        return INSPECT_EXIT_ERROR;
    if (limit_s && inspect_u64_arg(CMD, "--limit", limit_s, &limit) != 0)
        return INSPECT_EXIT_ERROR;
    if (limit_s && limit == 0)
        return inspect_usage_err(CMD, "--limit must be at least 1");
    if (since > INT64_MAX)
        return inspect_usage_err(CMD, "--since %s is beyond any local version", since_s);
    if (inspect_open_replica(CMD, pos[0], &k) != 0)
        return INSPECT_EXIT_ERROR;
    rc = list(pos[0], k, since, limit, ns, local, json);
    knit_close(k);
    return inspect_finish(CMD, rc);
}
