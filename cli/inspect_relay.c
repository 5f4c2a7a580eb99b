/*
** inspect_relay.c: `sync-inspect relay`, a summary of a relay store: its
** namespaces with their sequences, row and cell counts, and the anonymous
** ids it has registered; and `sync-inspect relay STORE schemas`, the schema
** versions its devices run: per fingerprint the tracked tables and columns,
** and the devices (principal, site, agent, last seen) that reported it.
**
** STORE is the relay's SQLite file or its PostgreSQL database (a
** postgresql:// URI, inspect_store.h); the output is the same for the same
** content, but for the first line, which names the store (a URI with its
** password replaced by "***").
**
** Everything comes from the store's own listing functions
** (knit_relay_store_list, knit_relay_store_list_anon and their PostgreSQL
** twins), which never hand out a credential's salt or hash, so this
** command cannot print one.
*/
#include <string.h>

#include "inspect_store.h"

#define CMD "relay"

static void help(void)
{
    fputs("usage: sync-inspect relay [--json] STORE\n"
          "       sync-inspect relay [--json] STORE schemas\n"
          "\n"
          "Summarize a relay store: every namespace with its sequence (the number of\n"
          "pushed units that changed something), its rows and cells (liveness\n"
          "included), and the anonymous ids the relay has registered, with the time\n"
          "of registration.  Secrets and their hashes are never shown.  The store is\n"
          "opened read-only; the relay may be running.\n"
          "\n"
          "STORE is the relay's SQLite file (its --data) or its PostgreSQL database,\n"
          "as sync-relay's --store names it: postgresql://USER@HOST:PORT/DB?...\n"
          "(or postgres://).  Both give the same output for the same content.  A\n"
          "password in the URI is shown as ***; libpq's PGPASSWORD and ~/.pgpass\n"
          "keep it off the command line.\n"
          "\n"
          "schemas: the schema versions the relay's devices run.  Each device\n"
          "(principal and replica site id) reports its tracked schema in HELLO; for\n"
          "every fingerprint this lists its tables with key columns and columns\n"
          "(lww or orset), and the devices that ran it when last seen (principal,\n"
          "site, agent, last seen to within a minute).  Devices whose software\n"
          "reports no schema are listed last.\n"
          "\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 shown, 2 usage error or unreadable store.\n",
          stdout);
}

/* Listing state. */
typedef struct lctx_s {
    int json;     /* output form */
    size_t count; /* entries printed */
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

static void schema_text(const knit_schema_t *sc)
{
    for (size_t i = 0; i < sc->ntables; i++) {
        const knit_schema_table_t *t = &sc->tables[i];
        fputs("    ", stdout);
        inspect_text(stdout, t->name, strlen(t->name));
        fputs(": key ", stdout);
        for (uint32_t k = 0; k < t->nkeys; k++) {
            fputs(k ? ", " : "", stdout);
            inspect_text(stdout, t->keys[k], strlen(t->keys[k]));
        }
        fputs("; columns ", stdout);
        for (uint32_t c = 0; c < t->ncols; c++) {
            fputs(c ? ", " : "", stdout);
            inspect_text(stdout, t->cols[c].name, strlen(t->cols[c].name));
            fputs(t->cols[c].orset ? " orset" : " lww", stdout);
        }
        if (!t->ncols)
            fputs("(none)", stdout);
        fputc('\n', stdout);
    }
    if (!sc->ntables)
        fputs("    (no tables tracked)\n", stdout);
}

static void schema_json(const knit_schema_t *sc)
{
    fputs("[", stdout);
    for (size_t i = 0; i < sc->ntables; i++) {
        const knit_schema_table_t *t = &sc->tables[i];
        fputs(i ? ", {\"name\": " : "{\"name\": ", stdout);
        inspect_json_string(stdout, t->name, strlen(t->name));
        fputs(", \"key\": [", stdout);
        for (uint32_t k = 0; k < t->nkeys; k++) {
            fputs(k ? ", " : "", stdout);
            inspect_json_string(stdout, t->keys[k], strlen(t->keys[k]));
        }
        fputs("], \"columns\": [", stdout);
        for (uint32_t c = 0; c < t->ncols; c++) {
            fputs(c ? ", {\"name\": " : "{\"name\": ", stdout);
            inspect_json_string(stdout, t->cols[c].name, strlen(t->cols[c].name));
            printf(", \"kind\": \"%s\"}", t->cols[c].orset ? "orset" : "lww");
        }
        fputs("]}", stdout);
    }
    fputs("]", stdout);
}

static int on_schema(void *data, const knit_relay_schema_info_t *in)
{
    lctx_t *c = data;
    char fp[KNIT_SCHEMA_FP_HEX];
    if (in->reported)
        knit__schema_fp_hex(in->schema->fp, fp);
    if (c->json) {
        fputs(c->count ? ", {\"fingerprint\": " : "{\"fingerprint\": ", stdout);
        if (in->reported) {
            printf("\"%s\", \"first_seen_ms\": %llu, \"tables\": ", fp,
                   (unsigned long long)in->first_seen_ms);
            schema_json(in->schema);
        } else {
            fputs("null, \"tables\": null", stdout);
        }
        fputs(", \"devices\": [", stdout);
    } else {
        if (in->reported) {
            printf("schema %s (first seen ", fp);
            inspect_ms_text(stdout, in->first_seen_ms);
            printf(", %zu device%s)\n", in->ndevices, in->ndevices == 1 ? "" : "s");
            schema_text(in->schema);
        } else {
            printf("no schema reported (older clients, %zu device%s)\n", in->ndevices,
                   in->ndevices == 1 ? "" : "s");
        }
        fputs("  devices\n", stdout);
    }
    for (size_t i = 0; i < in->ndevices; i++) {
        const knit_relay_device_t *d = &in->devices[i];
        if (c->json) {
            fputs(i ? ", {\"principal\": " : "{\"principal\": ", stdout);
            inspect_json_string(stdout, d->principal, strlen(d->principal));
            fputs(", \"site\": \"", stdout);
            inspect_hex(stdout, d->site.b, sizeof d->site.b);
            fputs("\", \"agent\": ", stdout);
            inspect_json_string(stdout, d->agent, strlen(d->agent));
            printf(", \"first_seen_ms\": %llu, \"last_seen_ms\": %llu, \"last_seen\": \"",
                   (unsigned long long)d->first_seen_ms, (unsigned long long)d->last_seen_ms);
            inspect_ms_text(stdout, d->last_seen_ms);
            fputs("\"}", stdout);
        } else {
            fputs("    ", stdout);
            inspect_text(stdout, d->principal, strlen(d->principal));
            fputs(" site ", stdout);
            inspect_hex(stdout, d->site.b, sizeof d->site.b);
            fputs(": last seen ", stdout);
            inspect_ms_text(stdout, d->last_seen_ms);
            if (d->agent[0]) {
                fputs(", agent ", stdout);
                inspect_text(stdout, d->agent, strlen(d->agent));
            }
            fputc('\n', stdout);
        }
    }
    if (c->json)
        fputs("]}", stdout);
    c->count++;
    return 0;
}

static int show_schemas(inspect_store_t *s, int json)
{
    const char *path = inspect_store_name(s);
    lctx_t c = {json, 0};
    int rc;
    if (json) {
        fputs("{\"relay\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"schemas\": [", stdout);
    } else {
        fputs("relay       ", stdout);
        inspect_text(stdout, path, strlen(path));
        fputc('\n', stdout);
    }
    if ((rc = inspect_store_list_schemas(s, on_schema, &c)) != 0)
        return inspect_store_fail(CMD, s, rc);
    if (json)
        fputs("]}\n", stdout);
    else if (!c.count)
        fputs("no devices recorded\n", stdout);
    return INSPECT_EXIT_OK;
}

static int show(inspect_store_t *s, int json)
{
    const char *path = inspect_store_name(s);
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
    if ((rc = inspect_store_list(s, on_ns, &c)) != 0)
        goto fail;
    if (!json && !c.count)
        fputs("  (none)\n", stdout);
    c.count = 0;
    fputs(json ? "], \"anonymous_ids\": [" : "anonymous ids\n", stdout);
    if ((rc = inspect_store_list_anon(s, on_anon, &c)) != 0)
        goto fail;
    if (!json && !c.count)
        fputs("  (none)\n", stdout);
    if (json)
        fputs("]}\n", stdout);
    return INSPECT_EXIT_OK;
fail:
    return inspect_store_fail(CMD, s, rc);
}

int cmd_relay(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[2];
    int json = 0, npos, rc;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    inspect_store_t *s = NULL;

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 2, &npos)) >= 0)
        return rc;
    if (npos < 1)
        return inspect_usage_err(CMD, "expected one STORE");
    if (npos == 2 && strcmp(pos[1], "schemas") != 0)
        return inspect_usage_err(CMD, "unknown relay listing '%s' (try 'schemas')", pos[1]);
    if (inspect_store_open(CMD, pos[0], &s) != 0)
        return INSPECT_EXIT_ERROR;
    rc = npos == 2 ? show_schemas(s, json) : show(s, json);
    inspect_store_close(s);
    return inspect_finish(CMD, rc);
}
