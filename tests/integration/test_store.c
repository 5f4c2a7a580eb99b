/*
** test_store.c: the relay store the integration tests run against (see
** test_store.h).
*/
#include "test_store.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_fixture.h"
#include "store_pg.h"

#define MAX_STORES 64

static pgfx_t server; /* started on the first ts_store_uri */
static int started;
static struct {
    char data[512]; /* the relay's --data path */
    char uri[700];  /* its database */
} stores[MAX_STORES];
static int nstores;

int ts_pg(void) /* see test_store.h */
{
    const char *e = getenv("KNIT_TEST_STORE");
    if (!e || !*e || strcmp(e, "sqlite") == 0)
        return 0;
    if (strcmp(e, "pg") == 0)
        return 1;
    fprintf(stderr, "KNIT_TEST_STORE=%s: use pg (or leave it unset for SQLite)\n", e);
    exit(1);
}

/* Creates database name on the server; exits the test on failure. */
static void create_db(const char *name)
{
    char sql[128];
    PGconn *c = PQconnectdb(server.conninfo);
    PGresult *r;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "test_store: cannot connect: %s", PQerrorMessage(c));
        exit(1);
    }
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "test_store: %s: %s", sql, PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    PQfinish(c);
}

const char *ts_store_uri(const char *data) /* see test_store.h */
{
    char name[32];
    if (!ts_pg())
        return NULL;
    for (int i = 0; i < nstores; i++)
        if (strcmp(stores[i].data, data) == 0)
            return stores[i].uri;
    if (nstores == MAX_STORES || strlen(data) >= sizeof stores[0].data) {
        fprintf(stderr, "test_store: too many relay stores, or %s too long\n", data);
        exit(1);
    }
    if (!started) {
        pgfx_start(&server); /* exits 77 without the server binaries */
        started = 1;
    }
    snprintf(name, sizeof name, "knit_%d", nstores + 1);
    create_db(name);
    snprintf(stores[nstores].data, sizeof stores[0].data, "%s", data);
    snprintf(stores[nstores].uri, sizeof stores[0].uri, "postgresql://knit@/%s?host=%s&port=5432",
             name, server.dir);
    return stores[nstores++].uri;
}

const char *ts_store_arg(const char *data, const char *const *extra) /* see test_store.h */
{
    for (size_t i = 0; extra && extra[i]; i++)
        if (strcmp(extra[i], "--store") == 0)
            return NULL;
    return ts_store_uri(data);
}

/* Opens data's store; exits the test when ts_pg() is 0 (a caller's bug). */
static int open_store(const char *data, knit_pg_store_t **s)
{
    const char *uri = ts_store_uri(data);
    int rc;
    if (!uri) {
        fprintf(stderr, "test_store: KNIT_TEST_STORE is not pg\n");
        exit(1);
    }
    *s = NULL;
    rc = knit_pg_store_open(uri, s);
    if (rc) {
        fprintf(stderr, "test_store: %s: %s\n", uri, *s ? knit_pg_store_errmsg(*s) : "");
        knit_pg_store_close(*s);
        *s = NULL;
    }
    return rc;
}

int ts_digest(const char *data, const char *ns, knit_digest_t *out) /* see test_store.h */
{
    knit_pg_store_t *s;
    int rc = open_store(data, &s);
    if (rc)
        return rc;
    rc = knit_pg_store_digest(s, ns, out);
    knit_pg_store_close(s);
    return rc;
}

int ts_seq(const char *data, const char *ns, uint64_t *seq) /* see test_store.h */
{
    knit_pg_store_t *s;
    int rc = open_store(data, &s);
    if (rc)
        return rc;
    rc = knit_pg_store_seq(s, ns, seq);
    knit_pg_store_close(s);
    return rc;
}

int ts_catch_up(const char *data, const char *ns, knit_batch_t **out) /* see test_store.h */
{
    knit_pg_store_t *s;
    uint64_t reached;
    int more, rc = open_store(data, &s);
    *out = NULL;
    if (rc)
        return rc;
    rc = knit_pg_store_catch_up(s, ns, 0, 0, out, &reached, &more);
    knit_pg_store_close(s);
    return rc;
}
