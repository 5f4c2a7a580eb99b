/*
** inspect_digest.c: `sync-inspect digest`, the canonical state digest
** (crdt/digest.h) of a replica, of one of its namespaces, or of a
** namespace held by a relay store.
**
** The digest is a sum of hashes of every cell's canonical bytes (liveness,
** and the current life's cells of live rows, with real site ids), so it is
** independent of the order changes arrived in and of how each side numbers
** its sites: converged replicas, and a replica and the relay for the same
** namespace, print the same digest.  The file's kind is told by its schema
** (inspect_probe); replicas go through knit_digest(), relay stores through
** knit_relay_store_digest().  A postgresql:// URI names a relay store on
** PostgreSQL (inspect_store.h), whose digests equal the SQLite store's on
** the same pushes.
**
** A read-only replica handle does not stamp: captured writes not stamped
** yet change the values the digest reads but not their stamps.  They are
** counted, and a note on standard error says the digest may move.
*/
#include <string.h>

#include "inspect_store.h"

#define CMD "digest"

static void help(void)
{
    fputs("usage: sync-inspect digest [--json] [--ns NS] REPLICA\n"
          "       sync-inspect digest [--json] [--ns NS] STORE\n"
          "\n"
          "Print the canonical state digest (64 hex digits) of a replica, of one of\n"
          "its namespaces (--ns), or of a namespace in a relay store.  Replicas that\n"
          "have seen the same changes print the same digest, whatever order they\n"
          "saw them in; a replica's digest of namespace NS equals the relay's digest\n"
          "of NS once both hold the same state.  The file's kind is recognized from\n"
          "its schema.  --ns '' names a replica's home namespace before it was\n"
          "named.  An unknown namespace has the digest of the empty state (all\n"
          "zeros), with a note on standard error.\n"
          "\n"
          "For a relay store without --ns, one line per namespace: DIGEST NAME.\n"
          "STORE is a relay's SQLite file or its PostgreSQL database, as sync-relay's\n"
          "--store names it (postgresql://USER@HOST:PORT/DB?..., or postgres://); the\n"
          "digests are the same for the same content.  A password in the URI is\n"
          "shown as ***.\n"
          "\n"
          "  --ns NS   one namespace\n"
          "  --json    one JSON document instead of text\n"
          "\n"
          "Exit status: 0 printed, 2 usage error or unreadable file.\n",
          stdout);
}

static int ns_known(knit_t *k, const char *ns, int *yes)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (!ns[0]) {
        *yes = 1;
        return 0;
    }
    rc = sqlite3_prepare_v2(k->db, "SELECT 1 FROM _knit_ns WHERE name = ?1", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return knit__dberr(k, rc, "reading _knit_ns");
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *yes = rc == SQLITE_ROW;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : knit__dberr(k, rc, "reading _knit_ns");
}

static int replica_digest(const char *path, const char *ns, int json)
{
    knit_t *k = NULL;
    knit_digest_t d;
    char hex[65];
    uint64_t unstamped = 0;
    int rc, known = 1;

    if (inspect_open_replica(CMD, path, &k) != 0)
        return INSPECT_EXIT_ERROR;
    rc = ns ? ns_known(k, ns, &known) : 0;
    if (!rc)
        rc = knit_digest(k, ns, &d);
    for (size_t i = 0; !rc && i < k->ntables; i++) {
        uint64_t n = 0;
        rc = inspect_unstamped(k, &k->tables[i], NULL, &n);
        unstamped += n;
    }
    if (rc) {
        rc = inspect_knit_fail(CMD, k, rc);
        knit_close(k);
        return rc;
    }
    knit_digest_hex(&d, hex);
    if (json) {
        fputs("{\"file\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"kind\": \"replica\", \"namespace\": ", stdout);
        if (ns)
            inspect_json_string(stdout, ns, strlen(ns));
        else
            fputs("null", stdout);
        printf(", \"digest\": \"%s\", \"unstamped\": %llu}\n", hex, (unsigned long long)unstamped);
    } else {
        printf("%s\n", hex);
    }
    if (!known)
        inspect_err(CMD,
                    "note: the replica has no namespace '%s'; this is the empty state's "
                    "digest",
                    ns);
    if (unstamped)
        inspect_err(CMD,
                    "note: %llu captured write%s not stamped yet; the digest changes "
                    "when knit stamps %s",
                    (unsigned long long)unstamped, unstamped == 1 ? " is" : "s are",
                    unstamped == 1 ? "it" : "them");
    knit_close(k);
    return INSPECT_EXIT_OK;
}

/* Namespace names of a relay store, copied out of the listing. */
typedef struct names_s {
    char **v;      /* names */
    size_t n, cap; /* count, capacity */
} names_t;

static int collect(void *data, const knit_relay_ns_info_t *info)
{
    names_t *nm = data;
    if (nm->n == nm->cap) {
        size_t c = nm->cap ? nm->cap * 2 : 16;
        char **p = knit__realloc(nm->v, c * sizeof *p);
        if (!p)
            return KNIT_ENOMEM;
        nm->v = p;
        nm->cap = c;
    }
    if (!(nm->v[nm->n] = knit__strdup(info->name)))
        return KNIT_ENOMEM;
    nm->n++;
    return 0;
}

static int relay_fail(inspect_store_t *s, int rc)
{
    return inspect_store_fail(CMD, s, rc);
}

static int relay_digest(const char *arg, const char *ns, int json)
{
    inspect_store_t *s = NULL;
    const char *path;
    names_t nm = {NULL, 0, 0};
    knit_digest_t d;
    char hex[65];
    uint64_t seq = 0;
    int rc = 0, status = INSPECT_EXIT_OK;

    if (inspect_store_open(CMD, arg, &s) != 0)
        return INSPECT_EXIT_ERROR;
    path = inspect_store_name(s);
    if (ns) {
        if ((rc = inspect_store_seq(s, ns, &seq)) != 0 ||
            (rc = inspect_store_digest(s, ns, &d)) != 0) {
            status = relay_fail(s, rc);
            goto out;
        }
        knit_digest_hex(&d, hex);
        if (json) {
            fputs("{\"file\": ", stdout);
            inspect_json_string(stdout, path, strlen(path));
            fputs(", \"kind\": \"relay\", \"namespace\": ", stdout);
            inspect_json_string(stdout, ns, strlen(ns));
            printf(", \"sequence\": %llu, \"digest\": \"%s\"}\n", (unsigned long long)seq, hex);
        } else {
            printf("%s\n", hex);
        }
        if (!seq)
            inspect_err(CMD,
                        "note: the relay store holds nothing for namespace '%s'; this is "
                        "the empty state's digest",
                        ns);
        goto out;
    }
    if ((rc = inspect_store_list(s, collect, &nm)) != 0) {
        status = relay_fail(s, rc);
        goto out;
    }
    if (json) {
        fputs("{\"file\": ", stdout);
        inspect_json_string(stdout, path, strlen(path));
        fputs(", \"kind\": \"relay\", \"namespaces\": [", stdout);
    }
    for (size_t i = 0; i < nm.n; i++) {
        if ((rc = inspect_store_digest(s, nm.v[i], &d)) != 0) {
            status = relay_fail(s, rc);
            goto out;
        }
        knit_digest_hex(&d, hex);
        if (json) {
            fputs(i ? ", {\"name\": " : "{\"name\": ", stdout);
            inspect_json_string(stdout, nm.v[i], strlen(nm.v[i]));
            printf(", \"digest\": \"%s\"}", hex);
        } else {
            printf("%s  ", hex);
            inspect_text(stdout, nm.v[i], strlen(nm.v[i]));
            fputc('\n', stdout);
        }
    }
    if (json)
        fputs("]}\n", stdout);
out:
    for (size_t i = 0; i < nm.n; i++)
        knit__free(nm.v[i]);
    knit__free(nm.v);
    inspect_store_close(s);
    return status;
}

int cmd_digest(int argc, char **argv) /* see inspect_util.h */
{
    const char *pos[1], *ns = NULL;
    int json = 0, npos, rc, kind;
    const inspect_opt_t opts[] = {{"--json", NULL, &json}, {"--ns", &ns, NULL}, {NULL, NULL, NULL}};

    if ((rc = inspect_args(CMD, argc, argv, opts, help, pos, 1, &npos)) >= 0)
        return rc;
    if (npos != 1)
        return inspect_usage_err(CMD, "expected one REPLICA or STORE");
    if (inspect_probe(CMD, pos[0], &kind) != 0)
        return INSPECT_EXIT_ERROR;
    rc = kind == INSPECT_KIND_RELAY ? relay_digest(pos[0], ns, json)
                                    : replica_digest(pos[0], ns, json);
    return inspect_finish(CMD, rc);
}
