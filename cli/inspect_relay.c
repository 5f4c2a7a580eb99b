/*
** inspect_relay.c: `sync-inspect relay`, a summary of a relay store: its
** namespaces with their sequences, row and cell counts, and the anonymous
** ids it has registered.
**
** Everything comes from the store's own listing functions
** (knit_relay_store_list, knit_relay_store_list_anon), which never hand out
** a credential's salt or hash, so this command cannot print one.
*/
#include <string.h>

#include "inspect_replica.h"

#define CMD "relay"

static void help(void)
{
    fputs("usage: sync-inspect relay [--json] RELAY_DB\n"
          "\n"
          "Summarize a relay store: every namespace with its sequence (the number of\n"
          "pushed units that changed something), its rows and cells (liveness\n"
          "included), and the anonymous ids the relay has registered, with the time\n"
          "of registration.  Secrets and their hashes are never shown.  The store is\n"
          "opened read-only; the relay may be running.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 shown, 2 usage error or unreadable store.\n",
          stdout);
}

/* Listing state. */
typedef struct lctx_s {
    int json;      /* output form */
    size_t count;  /* entries printed */
} lctx_t;

static int on_ns(void *data, const knit_relay_ns_info_t *ns)
{
    lctx_t *c = data;
    if (c->json) {
        fputs(c->count ? ", {\"name\": " : "{\"name\": ", stdout);
        inspect_json_string(stdout, ns->name, strlen(ns->name));
        printf(", \"sequence\": %llu, \"rows\": %llu, \"cells\": %llu}",
               (unsigned long long)ns->seq, (unsigned long long)ns->rows,
               (unsigned long long)ns->cells);
    } else {
        fputs("  ", stdout);
        inspect_text(stdout, ns->name, strlen(ns->name));
        printf(": sequence %llu, rows %llu, cells %llu\n", (unsigned long long)ns->seq,
               (unsigned long long)ns->rows, (unsigned long long)ns->cells);
    }
    c->count++;
    return 0;
}

static int on_anon(void *data, const char *id, uint64_t created_ms)
{
    lctx_t *c = data;
    if (c->json) {
        fputs(c->count ? ", {\"id\": " : "{\"id\": ", stdout);
        inspect_json_string(stdout, id, strlen(id));
        printf(", \"created_ms\": %llu, \"created\": \"", (unsigned long long)created_ms);
        inspect_ms_text(stdout, created_ms);
        fputs("\"}", stdout);
    } else {
        fputs("  ", stdout);
        inspect_text(stdout, id, strlen(id));
        fputs(": registered ", stdout);
        inspect_ms_text(stdout, created_ms);
        fputc('\n', stdout);
    }
    c->count++;
    return 0;
}

static int show(const char *path, knit_relay_store_t *s, int json)
{
    lctx_t c = {json, 0};
    int rc;
    if (json) {
        fputs("{\"relay\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"namespaces\": [", stdout);
    } else {
        fputs("relay       ", stdout);
        inspect_text(stdout, path, strlen(path));
        fputs("\nnamespaces\n", stdout);
    }
    if ((rc = knit_relay_store_list(s, on_ns, &c)) != 0)
        goto fail;
    if (!json && !c.count)
        fputs("  (none)\n", stdout);
    c.count = 0;
    fputs(json ? "], \"anonymous_ids\": [" : "anonymous ids\n", stdout);
    if ((rc = knit_relay_store_list_anon(s, on_anon, &c)) != 0)
        goto fail;
    if (!json && !c.count)
        fputs("  (none)\n", stdout);
    if (json)
        fputs("]}\n", stdout);
    return INSPECT_EXIT_OK;
fail:
    inspect_err(CMD, "%s (%s)",
                knit_relay_store_errmsg(s)[0] ? knit_relay_store_errmsg(s) : knit_strerror(rc),
                knit_err_name(rc));
    return INSPECT_EXIT_ERROR;
}

int cmd_relay(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[1];
    int json = 0, npos, rc;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    knit_relay_store_t *s = NULL;

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 1, &npos)) >= 0)
        return rc;
    if (npos != 1)
        return inspect_usage_err(CMD, "expected one RELAY_DB");
    if (inspect_open_relay(CMD, pos[0], &s) != 0)
        return INSPECT_EXIT_ERROR;
    rc = show(pos[0], s, json);
    knit_relay_store_close(s);
    return inspect_finish(CMD, rc);
}
