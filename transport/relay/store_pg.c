/*
** store_pg.c: the relay store on PostgreSQL (API in store_pg.h), through
** libpq.  Several relays may run on one database: everything they share
** lives in the database, and each relay holds only one connection.
**
** Design notes
**   1. Acknowledged means durable.  A group is one transaction; the engine
**      is told the group committed only after COMMIT returned success, which
**      PostgreSQL answers after its WAL reached disk (synchronous_commit
**      on, the server's default; an operator who turns it off trades this
**      guarantee away).
**   2. Sequences without gaps, in commit order.  A namespace's sequence is
**      a counter in its knit_ns row, read with SELECT ... FOR UPDATE and
**      written in the committing transaction.  The row lock is held until
**      COMMIT, so a second writer of the namespace waits, then reads the
**      first one's committed counter: sequences of one namespace are handed
**      out in commit order, and a reader whose snapshot shows counter N
**      sees every cell stamped 1..N.  (A bigserial column would hand out
**      numbers at INSERT time: a transaction that takes 7 and commits after
**      the one that took 8 lets a reader at 8 skip 7 for ever.)  A rolled
**      back transaction leaves the counter as it was: no gap.
**   3. No deadlocks between groups: a group locks the rows of all its
**      namespaces first, in name order (byte order, COLLATE "C"), before it
**      merges anything.  Cells, tables and columns belong to one namespace,
**      so the namespace lock also serializes every other write they get.
**   4. The merge is the SQLite store's: LWW and liveness cells are one
**      guarded upsert each, replacing only a larger (cl, hlc, site) (int8
**      stamps below 2^63 compare as their uint64s; bytea compares as
**      memcmp); OR-sets are read, joined and written in C with the SQLite
**      store's own code (sset.h), in the same stored form.  So the same
**      pushes give the same cells, byte for byte, and the same digest.
**   5. Each push applies inside a savepoint: a refused push (bad change,
**      a shape that contradicts the store) leaves the group as it was, and
**      the namespace counter of the push is restored in memory too.
**   6. Reads that must be consistent (catch-up: the counter and the cells;
**      the digest) run in one REPEATABLE READ READ ONLY transaction.
**   7. Names are stored as text (COLLATE "C"): the cell key is (ns, tbl,
**      pk, col) with col '' for the row's liveness, which sorts first among
**      a row's cells, as the digest needs.  Columns remember their first-seen
**      order (knit_col.ord) for catch-up batches.
**   8. The schema is versioned in knit_meta('schema'); open creates it in an
**      empty database under an advisory lock (two relays starting together
**      create it once) and refuses a newer version.
**   9. A broken connection is re-established (PQreset) at the start of the
**      next operation; the operation that met the break failed and nothing
**      of it was acknowledged.
**  10. Fan-out across relays: a group's transaction ends, before COMMIT,
**      with pg_notify('knit_seq', 'ns:seq') for each namespace it advanced
**      (PostgreSQL delivers it only if the transaction commits, and in
**      commit order).  A relay attached to a loop (store.h attach) holds a
**      second connection that LISTENs, watched by a uv_poll_t; each
**      notification from another backend becomes advanced(ns, seq), and the
**      engine's subscribers read the new units from the store at their own
**      cursors (the payload carries no data, far below the 8000-byte
**      limit).  When that connection breaks it is made again every second;
**      after a reconnect every namespace's sequence is announced (a poll),
**      since notifications sent meanwhile are lost.
*/
#include "store_pg.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "alloc.h"
#include "entropy.h"
#include "lww.h"
#include "orset.h"
#include "sset.h"
#include "validate.h"

#define KIND_LIVE 0         /* the row's liveness (col '') */
#define KIND_LWW 1          /* LWW register */
#define KIND_ORSET 2        /* OR-set, stored form of sset.h */
#define LOCK_KEY 0x6b6e5047 /* "knPG": advisory lock around schema creation */
#define MAX_ARGS 10

/* clang-format off */
static const char SCHEMA[] =
    "CREATE TABLE knit_meta("
    "  key text COLLATE \"C\" PRIMARY KEY,"  /* 'schema', 'site', seals, claims */
    "  value bytea NOT NULL);"
    "CREATE TABLE knit_ns("
    "  id bigserial PRIMARY KEY,"
    "  name text COLLATE \"C\" NOT NULL UNIQUE,"
    "  seq bigint NOT NULL DEFAULT 0);"      /* last sequence handed out (note 2) */
    "CREATE TABLE knit_tbl("
    "  ns bigint NOT NULL, name text COLLATE \"C\" NOT NULL,"
    "  npk integer NOT NULL,"                /* key column count */
    "  PRIMARY KEY(ns, name));"
    "CREATE TABLE knit_col("
    "  ns bigint NOT NULL, tbl text COLLATE \"C\" NOT NULL,"
    "  name text COLLATE \"C\" NOT NULL,"
    "  kind smallint NOT NULL,"              /* KIND_LWW or KIND_ORSET */
    "  ord bigserial,"                       /* first-seen order */
    "  PRIMARY KEY(ns, tbl, name));"
    "CREATE TABLE knit_cell("
    "  ns bigint NOT NULL,"                  /* knit_ns.id */
    "  tbl text COLLATE \"C\" NOT NULL,"
    "  pk bytea NOT NULL,"                   /* concatenated knit_value encodings */
    "  col text COLLATE \"C\" NOT NULL,"     /* '' = row liveness */
    "  kind smallint NOT NULL,"              /* KIND_* */
    "  cl bigint NOT NULL,"                  /* causal length of the life */
    "  hlc bigint NOT NULL,"                 /* winning stamp */
    "  site bytea NOT NULL,"                 /* winning site id, 16 bytes */
    "  value bytea NOT NULL,"                /* value encoding / OR-set form */
    "  seq bigint NOT NULL,"                 /* ns sequence of the last change */
    "  PRIMARY KEY(ns, tbl, pk, col));"
    "CREATE INDEX knit_cell_seq ON knit_cell(ns, seq);"
    "CREATE TABLE knit_anon("
    "  id text PRIMARY KEY, salt bytea NOT NULL, hash bytea NOT NULL,"
    "  created bigint NOT NULL);";

/* Prepared statements, by index; parameters are int8 (20), bytea (17) or
** text (25), results binary. */
enum {
    S_NS_ADD, S_NS_LOCK, S_NS_GET, S_NS_SEQ,
    S_TBL_GET, S_TBL_INS, S_COL_GET, S_COL_INS, S_COLS,
    S_CELL_GET, S_CELL_PUT, S_CELL_LWW, S_CELL_LIVE, S_CELL_PRUNE,
    S_CATCH_END, S_CATCH, S_CATCH_MORE, S_DIGEST,
    S_ANON_GET, S_ANON_PUT, S_META_GET, S_META_PUT, S_META_SET,
    S_ERASE_CELLS, S_ERASE_COLS, S_ERASE_TBLS, S_ERASE_NS, S_ERASE_CLAIMS,
    S_NOTIFY,
    S_COUNT
};

static const struct {
    const char *sql;
    int nparams;
    Oid types[MAX_ARGS];
} SQL[S_COUNT] = {
    [S_NS_ADD] = {"INSERT INTO knit_ns(name) VALUES($1) ON CONFLICT DO NOTHING", 1, {25}},
    [S_NS_LOCK] = {"SELECT id, seq FROM knit_ns WHERE name = $1 FOR UPDATE", 1, {25}},
    [S_NS_GET] = {"SELECT id, seq FROM knit_ns WHERE name = $1", 1, {25}},
    [S_NS_SEQ] = {"UPDATE knit_ns SET seq = $2 WHERE id = $1", 2, {20, 20}},
    [S_TBL_GET] = {"SELECT npk::int8 FROM knit_tbl WHERE ns = $1 AND name = $2", 2, {20, 25}},
    [S_TBL_INS] = {"INSERT INTO knit_tbl(ns, name, npk) VALUES($1, $2, $3)", 3, {20, 25, 20}},
    [S_COL_GET] = {"SELECT kind::int8 FROM knit_col WHERE ns = $1 AND tbl = $2 AND name = $3", 3,
                   {20, 25, 25}},
    [S_COL_INS] = {"INSERT INTO knit_col(ns, tbl, name, kind) VALUES($1, $2, $3, $4)", 4,
                   {20, 25, 25, 20}},
    [S_COLS] = {"SELECT t.npk::int8, c.name, c.kind::int8 FROM knit_tbl t"
                " LEFT JOIN knit_col c ON c.ns = t.ns AND c.tbl = t.name"
                " WHERE t.ns = $1 AND t.name = $2 ORDER BY c.ord", 2, {20, 25}},
    [S_CELL_GET] = {"SELECT kind::int8, cl, hlc, site, value FROM knit_cell"
                    " WHERE ns = $1 AND tbl = $2 AND pk = $3 AND col = $4", 4, {20, 25, 17, 25}},
    [S_CELL_PUT] = {"INSERT INTO knit_cell(ns, tbl, pk, col, kind, cl, hlc, site, value, seq)"
                    " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    " ON CONFLICT(ns, tbl, pk, col) DO UPDATE SET kind = EXCLUDED.kind,"
                    " cl = EXCLUDED.cl, hlc = EXCLUDED.hlc, site = EXCLUDED.site,"
                    " value = EXCLUDED.value, seq = EXCLUDED.seq", 10,
                    {20, 25, 17, 25, 20, 20, 20, 17, 17, 20}},
    /* Design note 4: relay_store.c's S_CELL_LWW and S_CELL_LIVE. */
    [S_CELL_LWW] = {"INSERT INTO knit_cell(ns, tbl, pk, col, kind, cl, hlc, site, value, seq)"
                    " VALUES($1, $2, $3, $4, 1, $5, $6, $7, $8, $9)"
                    " ON CONFLICT(ns, tbl, pk, col) DO UPDATE SET cl = EXCLUDED.cl,"
                    " hlc = EXCLUDED.hlc, site = EXCLUDED.site, value = EXCLUDED.value,"
                    " seq = EXCLUDED.seq WHERE knit_cell.kind = 1 AND"
                    " (EXCLUDED.cl, EXCLUDED.hlc, EXCLUDED.site) >"
                    " (knit_cell.cl, knit_cell.hlc, knit_cell.site)", 9,
                    {20, 25, 17, 25, 20, 20, 17, 17, 20}},
    [S_CELL_LIVE] = {"INSERT INTO knit_cell(ns, tbl, pk, col, kind, cl, hlc, site, value, seq)"
                     " VALUES($1, $2, $3, '', 0, $4, $5, $6, '\\x00'::bytea, $7)"
                     " ON CONFLICT(ns, tbl, pk, col) DO UPDATE SET cl = EXCLUDED.cl,"
                     " hlc = EXCLUDED.hlc, site = EXCLUDED.site, seq = EXCLUDED.seq"
                     " WHERE knit_cell.kind = 0 AND"
                     " (EXCLUDED.cl, EXCLUDED.hlc, EXCLUDED.site) >"
                     " (knit_cell.cl, knit_cell.hlc, knit_cell.site)", 7,
                     {20, 25, 17, 20, 20, 17, 20}},
    [S_CELL_PRUNE] = {"DELETE FROM knit_cell WHERE ns = $1 AND tbl = $2 AND pk = $3"
                      " AND col <> '' AND cl < $4", 4, {20, 25, 17, 20}},
    /* The sequence of the unit holding the page's last change ($3 = max - 1). */
    [S_CATCH_END] = {"SELECT seq FROM knit_cell WHERE ns = $1 AND seq > $2"
                     " ORDER BY seq OFFSET $3 LIMIT 1", 3, {20, 20, 20}},
    [S_CATCH] = {"SELECT tbl, pk, col, kind::int8, cl, hlc, site, value, seq FROM knit_cell"
                 " WHERE ns = $1 AND seq > $2 AND seq <= $3 ORDER BY seq, tbl, pk, col", 3,
                 {20, 20, 20}},
    [S_CATCH_MORE] = {"SELECT 1 FROM knit_cell WHERE ns = $1 AND seq > $2 LIMIT 1", 2, {20, 20}},
    [S_DIGEST] = {"SELECT tbl, pk, col, kind::int8, cl, hlc, site, value FROM knit_cell"
                  " WHERE ns = $1 ORDER BY tbl, pk, col", 1, {20}},
    [S_ANON_GET] = {"SELECT salt, hash FROM knit_anon WHERE id = $1", 1, {25}},
    [S_ANON_PUT] = {"INSERT INTO knit_anon(id, salt, hash, created) VALUES($1, $2, $3, $4)"
                    " ON CONFLICT DO NOTHING", 4, {25, 17, 17, 20}},
    [S_META_GET] = {"SELECT value FROM knit_meta WHERE key = $1", 1, {25}},
    [S_META_PUT] = {"INSERT INTO knit_meta(key, value) VALUES($1, $2) ON CONFLICT DO NOTHING", 2,
                    {25, 17}},
    [S_META_SET] = {"INSERT INTO knit_meta(key, value) VALUES($1, $2)"
                    " ON CONFLICT(key) DO UPDATE SET value = EXCLUDED.value", 2, {25, 17}},
    [S_ERASE_CELLS] = {"DELETE FROM knit_cell WHERE ns = $1", 1, {20}},
    [S_ERASE_COLS] = {"DELETE FROM knit_col WHERE ns = $1", 1, {20}},
    [S_ERASE_TBLS] = {"DELETE FROM knit_tbl WHERE ns = $1", 1, {20}},
    [S_ERASE_NS] = {"DELETE FROM knit_ns WHERE id = $1", 1, {20}},
    /* Claims from or into ns: "claim" US from US to. */
    [S_ERASE_CLAIMS] = {"DELETE FROM knit_meta WHERE key LIKE 'claim\x1f%' AND"
                        " (starts_with(key, 'claim' || chr(31) || $1 || chr(31)) OR"
                        " right(key, length($1) + 1) = chr(31) || $1)", 1, {25}},
    /* Design note 10. */
    [S_NOTIFY] = {"SELECT pg_notify('knit_seq', $1)", 1, {25}},
};
/* clang-format on */

struct knit_pg_store_s {
    PGconn *db;                     /* the connection */
    int prepared;                   /* the statements are prepared on db */
    int in_txn;                     /* a transaction of ours is open */
    char errmsg[512];               /* last failure's details */
    knit_relay_damage_fn on_damage; /* told about each cell catch-up skips */
    void *damage_data;              /* passed to on_damage */
    uint64_t damaged;               /* cells catch-up skipped */
    char *conninfo;                 /* for the listening connection */
    uv_loop_t *loop;                /* attached to (design note 10), or NULL */
    PGconn *ln;                     /* the LISTEN connection, or NULL */
    uv_poll_t *poll;                /* watches ln's socket (freed when closed) */
    uv_timer_t *timer;              /* reconnects ln (freed when closed) */
    int reconnect;                  /* ln is being made again: poll afterwards */
    void (*advanced)(void *arg, const char *ns, uint64_t seq); /* attach's callback */
    void *advanced_arg;                                        /* its argument */
};

/* ---------------------------------------------------------------------- */
/* libpq plumbing                                                           */

static int set_err(knit_pg_store_t *s, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    return rc;
}

/* Records the server's message of a failed result (r may be NULL). */
static int pg_err(knit_pg_store_t *s, PGresult *r, const char *what)
{
    const char *m = r ? PQresultErrorMessage(r) : "";
    if (!m || !*m)
        m = PQerrorMessage(s->db);
    set_err(s, KNIT_EDB, "PostgreSQL: %s: %s", what, m && *m ? m : "failed");
    /* One line: libpq messages end with a newline. */
    size_t n = strlen(s->errmsg);
    while (n && (s->errmsg[n - 1] == '\n' || s->errmsg[n - 1] == '\r'))
        s->errmsg[--n] = '\0';
    return KNIT_EDB;
}

/* Parameters of one statement. */
typedef struct args_s {
    const char *v[MAX_ARGS]; /* values */
    int len[MAX_ARGS];       /* lengths (binary) */
    int fmt[MAX_ARGS];       /* 1: binary */
    uint8_t i8[MAX_ARGS][8]; /* int8 values, network order */
    int n;                   /* count */
} args_t;

static void a_u64(args_t *a, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        a->i8[a->n][k] = (uint8_t)(v >> (56 - 8 * k));
    a->v[a->n] = (const char *)a->i8[a->n];
    a->len[a->n] = 8;
    a->fmt[a->n++] = 1;
}

static void a_bytes(args_t *a, const void *p, size_t n)
{
    a->v[a->n] = n ? (const char *)p : "";
    a->len[a->n] = (int)n;
    a->fmt[a->n++] = 1;
}

static void a_text(args_t *a, const char *t)
{
    a_bytes(a, t, strlen(t));
}

static uint64_t r_u64(const PGresult *r, int row, int col)
{
    const uint8_t *p = (const uint8_t *)PQgetvalue(r, row, col);
    uint64_t v = 0;
    if (PQgetlength(r, row, col) != 8)
        return 0;
    for (int k = 0; k < 8; k++)
        v = v << 8 | p[k];
    return v;
}

static int exec(knit_pg_store_t *s, const char *sql)
{
    PGresult *r = PQexec(s->db, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    int rc = ok ? 0 : pg_err(s, r, sql);
    PQclear(r);
    return rc;
}

static int prepare_all(knit_pg_store_t *s)
{
    char name[16];
    for (int i = 0; i < S_COUNT; i++) {
        snprintf(name, sizeof name, "k%d", i);
        PGresult *r = PQprepare(s->db, name, SQL[i].sql, SQL[i].nparams, SQL[i].types);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        int rc = ok ? 0 : pg_err(s, r, "prepare");
        PQclear(r);
        if (rc)
            return rc;
    }
    s->prepared = 1;
    return 0;
}

/* Runs statement i; *out gets the result (PQclear it) when it succeeded. */
static int run(knit_pg_store_t *s, int i, const args_t *a, PGresult **out)
{
    char name[16];
    snprintf(name, sizeof name, "k%d", i);
    PGresult *r = PQexecPrepared(s->db, name, a->n, a->v, a->len, a->fmt, 1);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg_err(s, r, SQL[i].sql);
        PQclear(r);
        *out = NULL;
        return rc;
    }
    *out = r;
    return 0;
}

/* Runs statement i for its effect: *changed = rows it changed (may be NULL). */
static int run_n(knit_pg_store_t *s, int i, const args_t *a, int *changed)
{
    PGresult *r;
    int rc = run(s, i, a, &r);
    if (rc)
        return rc;
    if (changed)
        *changed = atoi(PQcmdTuples(r));
    PQclear(r);
    return 0;
}

/* Design note 9: before an operation, a broken connection is made again. */
static int ready(knit_pg_store_t *s)
{
    if (PQstatus(s->db) == CONNECTION_OK)
        return 0;
    s->in_txn = 0;
    s->prepared = 0;
    PQreset(s->db);
    if (PQstatus(s->db) != CONNECTION_OK)
        return pg_err(s, NULL, "reconnect");
    return prepare_all(s);
}

static int begin(knit_pg_store_t *s, const char *how)
{
    int rc;
    if ((rc = ready(s)) != 0)
        return rc;
    if ((rc = exec(s, how)) != 0)
        return rc;
    s->in_txn = 1;
    return 0;
}

static int commit(knit_pg_store_t *s)
{
    s->in_txn = 0;
    return exec(s, "COMMIT");
}

static void rollback(knit_pg_store_t *s)
{
    if (!s->in_txn)
        return;
    s->in_txn = 0;
    PGresult *r = PQexec(s->db, "ROLLBACK");
    PQclear(r);
}

/* ---------------------------------------------------------------------- */
/* Open and close                                                           */

/* Design note 8: creates the schema, or checks its version. */
static int check_schema(knit_pg_store_t *s)
{
    char sql[128];
    PGresult *r;
    int rc;
    snprintf(sql, sizeof sql, "SELECT pg_advisory_xact_lock(%d)", LOCK_KEY);
    if ((rc = begin(s, "BEGIN")) != 0 || (rc = exec(s, sql)) != 0)
        goto out;
    r = PQexec(s->db, "SELECT convert_from(value, 'UTF8') FROM knit_meta WHERE key = 'schema'");
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        long v = PQntuples(r) == 1 ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
        PQclear(r);
        if (v > KNIT_PG_SCHEMA_VERSION) {
            rc = set_err(s, KNIT_EVERSION,
                         "the PostgreSQL store has schema version %ld, newer than this relay's "
                         "(%d): upgrade sync-relay, or use another database",
                         v, KNIT_PG_SCHEMA_VERSION);
        } else if (v < 1) {
            rc = set_err(s, KNIT_ENOTREPLICA,
                         "knit_meta holds no schema version: not a knit relay store");
        }
        goto out;
    }
    PQclear(r);
    /* No knit_meta: the failed SELECT aborted the transaction. */
    rollback(s);
    if ((rc = begin(s, "BEGIN")) != 0 || (rc = exec(s, sql)) != 0)
        goto out;
    r = PQexec(s->db, "SELECT to_regclass('knit_meta') IS NOT NULL");
    int exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (exists) { /* another relay created it meanwhile */
        rollback(s);
        return check_schema(s);
    }
    snprintf(sql, sizeof sql, "INSERT INTO knit_meta(key, value) VALUES('schema', '%d')",
             KNIT_PG_SCHEMA_VERSION);
    if ((rc = exec(s, SCHEMA)) != 0 || (rc = exec(s, sql)) != 0)
        goto out;
    return commit(s);
out:
    rollback(s);
    return rc;
}

int knit_pg_store_open(const char *conninfo, knit_pg_store_t **out) /* see store_pg.h */
{
    knit_pg_store_t *s = knit__calloc(1, sizeof *s);
    int rc;
    *out = NULL;
    if (!s)
        return KNIT_ENOMEM;
    s->db = PQconnectdb(conninfo);
    s->conninfo = knit__strdup(conninfo);
    *out = s;
    if (!s->conninfo)
        return set_err(s, KNIT_ENOMEM, "out of memory");
    if (!s->db)
        return set_err(s, KNIT_ENOMEM, "out of memory");
    if (PQstatus(s->db) != CONNECTION_OK)
        return pg_err(s, NULL, "connect");
    PQclear(PQexec(s->db, "SET client_min_messages = warning"));
    if ((rc = check_schema(s)) != 0 || (rc = prepare_all(s)) != 0)
        return rc;
    return 0;
}

void knit_pg_store_close(knit_pg_store_t *s) /* see store_pg.h */
{
    if (!s)
        return;
    rollback(s);
    if (s->db)
        PQfinish(s->db);
    if (s->ln)
        PQfinish(s->ln);
    knit__free(s->conninfo);
    knit__free(s);
}

const char *knit_pg_store_errmsg(knit_pg_store_t *s) /* see store_pg.h */
{
    return s ? s->errmsg : "";
}

/* ---------------------------------------------------------------------- */
/* Namespaces                                                               */

/* Creates ns if needed and locks its row (design note 2). */
static int ns_lock(knit_pg_store_t *s, const char *ns, int64_t *id, uint64_t *seq)
{
    args_t a = {0};
    PGresult *r;
    int rc;
    a_text(&a, ns);
    if ((rc = run_n(s, S_NS_ADD, &a, NULL)) != 0 || (rc = run(s, S_NS_LOCK, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return set_err(s, KNIT_EDB, "namespace %s vanished", ns);
    }
    *id = (int64_t)r_u64(r, 0, 0);
    *seq = r_u64(r, 0, 1);
    PQclear(r);
    return 0;
}

/* id and sequence of ns, without creating it (*id 0 when absent). */
static int ns_get(knit_pg_store_t *s, const char *ns, int64_t *id, uint64_t *seq)
{
    args_t a = {0};
    PGresult *r;
    int rc;
    *id = 0;
    *seq = 0;
    a_text(&a, ns);
    if ((rc = run(s, S_NS_GET, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) == 1) {
        *id = (int64_t)r_u64(r, 0, 0);
        *seq = r_u64(r, 0, 1);
    }
    PQclear(r);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Apply (the port of relay_store.c's, design note 4)                       */

typedef struct apply_s {
    knit_pg_store_t *s;       /* the store */
    const knit_batch_t *push; /* the push */
    int64_t nsid;             /* namespace id */
    knit_batch_t *out;        /* fan-out being built */
    uint32_t out_ns;          /* ns index in out */
    int64_t *out_tab;         /* per push table: its index in out, or -1 */
    uint8_t *shaped;          /* per push table: checked against the store */
    size_t *col_off;          /* per push table: offset into col_ok */
    uint8_t *col_ok;          /* per push column: checked against the store */
    uint64_t seq;             /* the current unit's sequence, 0 = none yet */
    uint64_t last_seq;        /* the namespace's last sequence handed out */
    uint8_t *pk;              /* the current key's encoding */
    size_t pk_cap;            /* its size */
    uint8_t *val;             /* an LWW value's encoding */
    size_t val_cap;           /* its size */
    const char *rcl_tbl;      /* row_cl cache: table of the row remembered, NULL = none */
    uint8_t *rcl_pk;          /* its key encoding */
    size_t rcl_pklen;         /* key bytes */
    size_t rcl_cap;           /* rcl_pk's size */
    uint64_t rcl;             /* the row's causal length */
} apply_t;

static int ensure_buf(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    uint8_t *n = knit__realloc(*buf, need);
    if (!n)
        return KNIT_ENOMEM;
    *buf = n;
    *cap = need;
    return 0;
}

static int value_ok(const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_NULL:
    case KNIT_INTEGER:
        return 1;
    case KNIT_REAL:
        return !isnan(v->u.r);
    case KNIT_TEXT:
    case KNIT_BLOB:
        return v->u.b.n == 0 || v->u.b.p != NULL;
    }
    return 0;
}

static int encode_pk(apply_t *A, const knit_change_t *c, size_t *n)
{
    const knit_batch_table_t *t = &A->push->tables[c->table];
    size_t need = 0, k = 0;
    for (uint32_t i = 0; i < t->npk; i++) {
        if (!value_ok(&c->pk[i]))
            return set_err(A->s, KNIT_EINVAL, "table %s: bad key value", t->name);
        need += knit_value_encoded_size(&c->pk[i]);
    }
    if (ensure_buf(&A->pk, &A->pk_cap, need ? need : 1))
        return KNIT_ENOMEM;
    for (uint32_t i = 0; i < t->npk; i++)
        k += knit_value_encode(&c->pk[i], A->pk + k);
    *n = k;
    return 0;
}

static int shape_table(apply_t *A, const knit_batch_table_t *t)
{
    args_t a = {0};
    PGresult *r;
    int rc;
    if (!t->name[0])
        return set_err(A->s, KNIT_EINVAL, "empty table name");
    a_u64(&a, (uint64_t)A->nsid);
    a_text(&a, t->name);
    if ((rc = run(A->s, S_TBL_GET, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) == 1) {
        uint64_t npk = r_u64(r, 0, 0);
        PQclear(r);
        if (npk != t->npk)
            return set_err(A->s, KNIT_ESCHEMA, "table %s has %llu key columns, push says %u",
                           t->name, (unsigned long long)npk, t->npk);
        return 0;
    }
    PQclear(r);
    a_u64(&a, t->npk);
    return run_n(A->s, S_TBL_INS, &a, NULL);
}

static int shape_column(apply_t *A, const knit_batch_table_t *t, uint32_t c)
{
    args_t a = {0};
    PGresult *r;
    int rc, kind = t->orset[c] ? KIND_ORSET : KIND_LWW;
    if (!t->cols[c][0])
        return set_err(A->s, KNIT_EINVAL, "table %s: empty column name", t->name);
    a_u64(&a, (uint64_t)A->nsid);
    a_text(&a, t->name);
    a_text(&a, t->cols[c]);
    if ((rc = run(A->s, S_COL_GET, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) == 1) {
        int have = (int)r_u64(r, 0, 0);
        PQclear(r);
        if (have != kind)
            return set_err(A->s, KNIT_ESCHEMA, "column %s.%s is %s here, the push says %s", t->name,
                           t->cols[c], have == KIND_ORSET ? "an OR-set" : "LWW",
                           kind == KIND_ORSET ? "an OR-set" : "LWW");
        return 0;
    }
    PQclear(r);
    a_u64(&a, (uint64_t)kind);
    return run_n(A->s, S_COL_INS, &a, NULL);
}

static int unit_seq(apply_t *A)
{
    if (A->seq)
        return 0;
    A->seq = ++A->last_seq;
    return knit_batch_begin(A->out, A->seq);
}

static const char *tname(const apply_t *A, const knit_change_t *c)
{
    return A->push->tables[c->table].name;
}

static const char *cname(const apply_t *A, const knit_change_t *c)
{
    return c->col ? A->push->tables[c->table].cols[c->col - 1] : "";
}

/* The stored cell, if any. */
typedef struct stored_s {
    int found;      /* 1 if the cell exists */
    int kind;       /* KIND_* */
    knit_lww_t lww; /* cl, hlc, site */
    uint8_t *val;   /* value bytes, owned */
    size_t vlen;    /* their count */
} stored_t;

static int get_cell(apply_t *A, const knit_change_t *c, size_t pklen, const char *col,
                    stored_t *out)
{
    args_t a = {0};
    PGresult *r;
    int rc;
    memset(out, 0, sizeof *out);
    a_u64(&a, (uint64_t)A->nsid);
    a_text(&a, tname(A, c));
    a_bytes(&a, A->pk, pklen);
    a_text(&a, col);
    if ((rc = run(A->s, S_CELL_GET, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) == 1) {
        out->found = 1;
        out->kind = (int)r_u64(r, 0, 0);
        out->lww.cl = r_u64(r, 0, 1);
        out->lww.hlc = r_u64(r, 0, 2);
        if (PQgetlength(r, 0, 3) != 16) {
            PQclear(r);
            return set_err(A->s, KNIT_ECORRUPT, "stored site id is not 16 bytes");
        }
        memcpy(out->lww.site.b, PQgetvalue(r, 0, 3), 16);
        out->vlen = (size_t)PQgetlength(r, 0, 4);
        out->val = knit__memdup(PQgetvalue(r, 0, 4), out->vlen ? out->vlen : 1);
        if (!out->val) {
            PQclear(r);
            return KNIT_ENOMEM;
        }
    }
    PQclear(r);
    return 0;
}

static int out_table(apply_t *A, uint32_t t, uint32_t *idx)
{
    if (A->out_tab[t] < 0) {
        const knit_batch_table_t *bt = &A->push->tables[t];
        uint32_t i;
        int rc = knit_batch_table(A->out, bt->name, bt->npk, bt->ncols,
                                  (const char *const *)bt->cols, bt->orset, &i);
        if (rc)
            return rc;
        A->out_tab[t] = i;
    }
    *idx = (uint32_t)A->out_tab[t];
    return 0;
}

static int emit(apply_t *A, const knit_change_t *c, const knit_value_t *value,
                const knit_site_t *site, uint64_t hlc)
{
    knit_change_t o = *c;
    int rc;
    if ((rc = out_table(A, c->table, &o.table)) != 0)
        return rc;
    if ((rc = knit_batch_site(A->out, site, &o.site)) != 0)
        return rc;
    o.ns = A->out_ns;
    o.hlc = hlc;
    o.value = *value;
    return knit_batch_add(A->out, &o);
}

static int remember_cl(apply_t *A, const char *tbl, size_t pklen, uint64_t cl)
{
    if (ensure_buf(&A->rcl_pk, &A->rcl_cap, pklen ? pklen : 1)) {
        A->rcl_tbl = NULL;
        return KNIT_ENOMEM;
    }
    memcpy(A->rcl_pk, A->pk, pklen);
    A->rcl_pklen = pklen;
    A->rcl_tbl = tbl;
    A->rcl = cl;
    return 0;
}

static int remembered(const apply_t *A, const char *tbl, size_t pklen)
{
    return A->rcl_tbl && strcmp(A->rcl_tbl, tbl) == 0 && A->rcl_pklen == pklen &&
           memcmp(A->rcl_pk, A->pk, pklen) == 0;
}

static int row_cl(apply_t *A, const knit_change_t *c, size_t pklen, uint64_t *cl)
{
    stored_t st;
    if (remembered(A, tname(A, c), pklen)) {
        *cl = A->rcl;
        return 0;
    }
    int rc = get_cell(A, c, pklen, "", &st);
    knit__free(st.val);
    *cl = st.found ? st.lww.cl : 0;
    return rc ? rc : remember_cl(A, tname(A, c), pklen, *cl);
}

static int merge_live(apply_t *A, const knit_change_t *c, size_t pklen, int *won)
{
    const knit_site_t *site = &A->push->sites[c->site];
    knit_value_t null = {KNIT_NULL, {0}};
    args_t a = {0};
    uint64_t old_cl = 0;
    int rc, known = 0, n = 0;

    if (remembered(A, tname(A, c), pklen)) {
        old_cl = A->rcl;
        known = 1;
    }
    a_u64(&a, (uint64_t)A->nsid);
    a_text(&a, tname(A, c));
    a_bytes(&a, A->pk, pklen);
    a_u64(&a, c->cl);
    a_u64(&a, c->hlc);
    a_bytes(&a, site->b, 16);
    a_u64(&a, A->seq ? A->seq : A->last_seq + 1);
    if ((rc = run_n(A->s, S_CELL_LIVE, &a, &n)) != 0)
        return rc;
    if (n == 0)
        return 0;
    if ((rc = unit_seq(A)) != 0)
        return rc;
    if (!known || c->cl > old_cl) {
        args_t p = {0};
        a_u64(&p, (uint64_t)A->nsid);
        a_text(&p, tname(A, c));
        a_bytes(&p, A->pk, pklen);
        a_u64(&p, c->cl);
        if ((rc = run_n(A->s, S_CELL_PRUNE, &p, NULL)) != 0)
            return rc;
    }
    if ((rc = remember_cl(A, tname(A, c), pklen, c->cl)) != 0)
        return rc;
    *won = 1;
    return emit(A, c, &null, site, c->hlc);
}

static int merge_lww(apply_t *A, const knit_change_t *c, size_t pklen, int *won)
{
    const knit_site_t *site = &A->push->sites[c->site];
    args_t a = {0};
    uint64_t rcl;
    size_t vlen;
    int rc, n = 0;

    if ((rc = row_cl(A, c, pklen, &rcl)) != 0)
        return rc;
    if (c->cl < rcl)
        return 0;
    vlen = knit_value_encoded_size(&c->value);
    if (ensure_buf(&A->val, &A->val_cap, vlen ? vlen : 1))
        return KNIT_ENOMEM;
    knit_value_encode(&c->value, A->val);
    a_u64(&a, (uint64_t)A->nsid);
    a_text(&a, tname(A, c));
    a_bytes(&a, A->pk, pklen);
    a_text(&a, cname(A, c));
    a_u64(&a, c->cl);
    a_u64(&a, c->hlc);
    a_bytes(&a, site->b, 16);
    a_bytes(&a, A->val, vlen);
    a_u64(&a, A->seq ? A->seq : A->last_seq + 1);
    if ((rc = run_n(A->s, S_CELL_LWW, &a, &n)) != 0)
        return rc;
    if (n == 0)
        return 0;
    if ((rc = unit_seq(A)) != 0)
        return rc;
    *won = 1;
    return emit(A, c, &c->value, site, c->hlc);
}

static int merge_orset(apply_t *A, const knit_change_t *c, size_t pklen, int *won)
{
    const char *tbl = tname(A, c), *col = cname(A, c);
    knit_sset_t in, cur, *win = &in;
    stored_t st = {0};
    uint64_t rcl, hlc = c->hlc;
    knit_site_t site = A->push->sites[c->site];
    uint8_t *enc = NULL, *wire = NULL;
    size_t nenc = 0, nwire = 0;
    int rc;

    knit__sset_init(&in);
    knit__sset_init(&cur);
    if ((rc = row_cl(A, c, pklen, &rcl)) != 0)
        return rc;
    if (c->cl < rcl)
        return 0;
    rc = knit_orset_decode(c->value.u.b.p, c->value.u.b.n, &in.set);
    if (rc) {
        rc = rc == KNIT_ENOMEM ? rc
                               : set_err(A->s, KNIT_ECORRUPT, "%s.%s: bad OR-set state", tbl, col);
        goto out;
    }
    if ((rc = knit__sset_canon(&in, A->push->sites, A->push->nsites)) != 0) {
        if (rc == KNIT_ECORRUPT)
            set_err(A->s, rc, "%s.%s: OR-set names an unknown or duplicate site", tbl, col);
        goto out;
    }
    if ((rc = get_cell(A, c, pklen, col, &st)) != 0)
        goto out;
    if (st.found && st.kind != KIND_ORSET) {
        rc = set_err(A->s, KNIT_ECORRUPT, "cell %s.%s has kind %d", tbl, col, st.kind);
        goto out;
    }
    if (st.found && c->cl < st.lww.cl)
        goto out;
    if (st.found && c->cl == st.lww.cl) {
        if ((rc = knit__sset_decode(&cur, st.val, st.vlen)) != 0) {
            if (rc == KNIT_ECORRUPT)
                set_err(A->s, rc, "stored OR-set %s.%s is corrupt", tbl, col);
            goto out;
        }
        if ((rc = knit__sset_join(&cur, &in)) != 0)
            goto out;
        win = &cur;
        if (knit_stamp_cmp(st.lww.hlc, &st.lww.site, hlc, &site) > 0) {
            hlc = st.lww.hlc;
            site = st.lww.site;
        }
    }
    if ((rc = knit__sset_encode(win, &enc, &nenc)) != 0)
        goto out;
    if (st.found && c->cl == st.lww.cl && nenc == st.vlen && memcmp(enc, st.val, nenc) == 0 &&
        knit_stamp_cmp(hlc, &site, st.lww.hlc, &st.lww.site) <= 0)
        goto out; /* already held */
    if ((rc = unit_seq(A)) != 0)
        goto out;
    {
        args_t a = {0};
        a_u64(&a, (uint64_t)A->nsid);
        a_text(&a, tbl);
        a_bytes(&a, A->pk, pklen);
        a_text(&a, col);
        a_u64(&a, KIND_ORSET);
        a_u64(&a, c->cl);
        a_u64(&a, hlc);
        a_bytes(&a, site.b, 16);
        a_bytes(&a, enc, nenc);
        a_u64(&a, A->seq);
        if ((rc = run_n(A->s, S_CELL_PUT, &a, NULL)) != 0)
            goto out;
    }
    if ((rc = knit__sset_to_batch(win, A->out, &wire, &nwire)) != 0)
        goto out;
    {
        knit_value_t v;
        v.type = KNIT_BLOB;
        v.u.b.p = wire;
        v.u.b.n = nwire;
        if ((rc = emit(A, c, &v, &site, hlc)) != 0)
            goto out;
    }
    *won = 1;
out:
    knit__free(enc);
    knit__free(wire);
    knit__free(st.val);
    knit__sset_free(&in);
    knit__sset_free(&cur);
    return rc;
}

static int apply_all(apply_t *A, const char *ns, knit_relay_applied_t *res)
{
    const knit_batch_t *p = A->push;
    size_t total = 0;
    char why[200];
    int rc;

    for (size_t i = 0; i < p->nchanges; i++) {
        const knit_change_t *c = &p->changes[i];
        if (c->ns >= p->nns || strcmp(p->ns[c->ns], ns) != 0)
            return set_err(A->s, KNIT_EINVAL, "change outside namespace %s", ns);
        if ((rc = knit_change_check(p, c, why, sizeof why)) != 0)
            return rc == KNIT_ENOMEM ? rc : set_err(A->s, rc, "%s", why);
    }
    for (size_t u = 0; u < p->ntxns; u++) {
        const knit_txn_t *tx = &p->txns[u];
        if (tx->first > p->nchanges || tx->count > p->nchanges - tx->first)
            return set_err(A->s, KNIT_EINVAL, "unit %zu out of range", u);
        total += tx->count;
    }
    if (total != p->nchanges)
        return set_err(A->s, KNIT_EINVAL, "units do not cover the changes");
    for (size_t i = 0; i < p->ntables; i++)
        A->out_tab[i] = -1;
    for (size_t u = 0; u < p->ntxns; u++) {
        const knit_txn_t *tx = &p->txns[u];
        A->seq = 0;
        for (size_t k = 0; k < tx->count; k++) {
            const knit_change_t *c = &p->changes[tx->first + k];
            const knit_batch_table_t *t = &p->tables[c->table];
            size_t pklen = 0;
            int won = 0;
            if (!A->shaped[c->table]) {
                if ((rc = shape_table(A, t)) != 0)
                    return rc;
                A->shaped[c->table] = 1;
            }
            if (c->col > 0 && !A->col_ok[A->col_off[c->table] + c->col - 1]) {
                if ((rc = shape_column(A, t, c->col - 1)) != 0)
                    return rc;
                A->col_ok[A->col_off[c->table] + c->col - 1] = 1;
            }
            if ((rc = encode_pk(A, c, &pklen)) != 0)
                return rc;
            if (c->col == 0)
                rc = merge_live(A, c, pklen, &won);
            else if (t->orset[c->col - 1])
                rc = merge_orset(A, c, pklen, &won);
            else
                rc = merge_lww(A, c, pklen, &won);
            if (rc)
                return rc;
            if (won)
                res->applied++;
            else
                res->known++;
        }
        if (A->seq) {
            if (!res->first_seq)
                res->first_seq = A->seq;
            res->last_seq = A->seq;
        }
    }
    if (res->last_seq) {
        args_t a = {0};
        a_u64(&a, (uint64_t)A->nsid);
        a_u64(&a, res->last_seq);
        return run_n(A->s, S_NS_SEQ, &a, NULL);
    }
    return 0;
}

/* Merges one push inside the open transaction, in a savepoint (design note
** 5).  *seq is the namespace's counter, advanced on success. */
static int apply_push(knit_pg_store_t *s, const char *ns, int64_t nsid, uint64_t *seq,
                      const knit_batch_t *push, knit_relay_applied_t *out)
{
    apply_t A;
    size_t ncols = 0, nt = push->ntables ? push->ntables : 1;
    int rc;

    memset(out, 0, sizeof *out);
    memset(&A, 0, sizeof A);
    A.s = s;
    A.push = push;
    A.nsid = nsid;
    A.last_seq = *seq;
    for (size_t i = 0; i < push->ntables; i++)
        ncols += push->tables[i].ncols;
    A.out_tab = knit__malloc(nt * sizeof *A.out_tab);
    A.shaped = knit__calloc(nt, 1);
    A.col_off = knit__malloc(nt * sizeof *A.col_off);
    A.col_ok = knit__calloc(ncols ? ncols : 1, 1);
    if (!A.out_tab || !A.shaped || !A.col_off || !A.col_ok) {
        rc = KNIT_ENOMEM;
        goto done;
    }
    ncols = 0;
    for (size_t i = 0; i < push->ntables; i++) {
        A.col_off[i] = ncols;
        ncols += push->tables[i].ncols;
    }
    if ((rc = knit_batch_new(&A.out)) != 0 || (rc = knit_batch_ns(A.out, ns, &A.out_ns)) != 0)
        goto done;
    if ((rc = exec(s, "SAVEPOINT push")) != 0)
        goto done;
    rc = apply_all(&A, ns, out);
    if (rc == 0) {
        rc = exec(s, "RELEASE SAVEPOINT push");
    } else {
        char keep[sizeof s->errmsg];
        memcpy(keep, s->errmsg, sizeof keep);
        exec(s, "ROLLBACK TO SAVEPOINT push");
        exec(s, "RELEASE SAVEPOINT push");
        memcpy(s->errmsg, keep, sizeof keep);
    }
done:
    knit__free(A.out_tab);
    knit__free(A.shaped);
    knit__free(A.col_off);
    knit__free(A.col_ok);
    knit__free(A.pk);
    knit__free(A.val);
    knit__free(A.rcl_pk);
    if (rc) {
        knit_batch_free(A.out);
        memset(out, 0, sizeof *out);
        return rc;
    }
    *seq = A.last_seq;
    out->fanout = A.out;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Group commit                                                             */

/* A namespace the group writes, locked in name order (design note 3). */
typedef struct lock_s {
    const char *ns; /* name (the engine's) */
    int64_t id;     /* knit_ns.id */
    uint64_t seq;   /* its counter, advanced by the group's pushes */
    uint64_t seq0;  /* the counter when locked */
} lock_t;

static int lock_cmp(const void *a, const void *b)
{
    return strcmp(((const lock_t *)a)->ns, ((const lock_t *)b)->ns);
}

static lock_t *lock_find(lock_t *l, size_t n, const char *ns)
{
    lock_t key = {ns, 0, 0, 0};
    return bsearch(&key, l, n, sizeof *l, lock_cmp);
}

/* Locks the distinct namespaces of names[0..n) in order into *out. */
static int lock_all(knit_pg_store_t *s, const char **names, size_t n, lock_t **out, size_t *nout)
{
    lock_t *l = knit__calloc(n ? n : 1, sizeof *l);
    size_t k = 0;
    int rc = 0;
    if (!l)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < n; i++)
        l[i].ns = names[i];
    qsort(l, n, sizeof *l, lock_cmp);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(l[k - 1].ns, l[i].ns) != 0)
            l[k++] = l[i];
    for (size_t i = 0; i < k && rc == 0; i++) {
        rc = ns_lock(s, l[i].ns, &l[i].id, &l[i].seq);
        l[i].seq0 = l[i].seq;
    }
    if (rc) {
        knit__free(l);
        return rc;
    }
    *out = l;
    *nout = k;
    return 0;
}

/* Design note 10: 'ns:seq' for each namespace the transaction advanced. */
static int notify_all(knit_pg_store_t *s, const lock_t *l, size_t n)
{
    char buf[1024];
    int rc;
    for (size_t i = 0; i < n; i++) {
        args_t a = {0};
        if (l[i].seq == l[i].seq0)
            continue;
        int k = snprintf(buf, sizeof buf, "%s:%llu", l[i].ns, (unsigned long long)l[i].seq);
        if (k < 0 || (size_t)k >= sizeof buf)
            continue; /* no namespace is this long; subscribers poll on reconnect */
        a_text(&a, buf);
        if ((rc = run_n(s, S_NOTIFY, &a, NULL)) != 0)
            return rc;
    }
    return 0;
}

int knit_pg_store_commit(knit_pg_store_t *s, knit_relay_push_t *group) /* see store_pg.h */
{
    const char **names;
    lock_t *locks = NULL;
    size_t n = 0, nl = 0;
    int rc;

    for (knit_relay_push_t *p = group; p; p = p->next)
        n++;
    if (!(names = knit__malloc((n ? n : 1) * sizeof *names)))
        return KNIT_ENOMEM;
    n = 0;
    for (knit_relay_push_t *p = group; p; p = p->next)
        names[n++] = p->ns;
    if ((rc = begin(s, "BEGIN")) != 0)
        goto out;
    if ((rc = lock_all(s, names, n, &locks, &nl)) != 0)
        goto out;
    for (knit_relay_push_t *p = group; p; p = p->next) {
        lock_t *l = lock_find(locks, nl, p->ns);
        int arc = apply_push(s, p->ns, l->id, &l->seq, p->batch, &p->res);
        if (arc) {
            p->code = arc;
            size_t m = strnlen(s->errmsg, sizeof p->msg - 1);
            memcpy(p->msg, s->errmsg, m);
            p->msg[m] = '\0';
            /* A failure of the server (not of the push) ends the group. */
            if (arc == KNIT_EDB || arc == KNIT_ENOMEM) {
                rc = arc;
                goto out;
            }
        }
    }
    if ((rc = notify_all(s, locks, nl)) != 0)
        goto out;
    rc = commit(s); /* design note 1: only now may the engine ACK */
out:
    rollback(s);
    knit__free(names);
    knit__free(locks);
    if (rc) {
        for (knit_relay_push_t *p = group; p; p = p->next) {
            knit_batch_free(p->res.fanout);
            memset(&p->res, 0, sizeof p->res);
        }
    }
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Reading                                                                  */

int knit_pg_store_seq(knit_pg_store_t *s, const char *ns, uint64_t *seq) /* see store_pg.h */
{
    int64_t id;
    int rc = ready(s);
    *seq = 0;
    return rc ? rc : ns_get(s, ns, &id, seq);
}

/* A table met by a catch-up, with its columns in first-seen order. */
typedef struct ctab_s {
    char *name;     /* table name */
    uint32_t npk;   /* key columns */
    uint32_t ncols; /* columns */
    char **cols;    /* their names */
    uint8_t *orset; /* 1 for an OR-set column */
    uint32_t idx;   /* index in the batch */
} ctab_t;

typedef struct ctabs_s {
    knit_pg_store_t *s; /* the store */
    int64_t nsid;       /* the namespace */
    knit_batch_t *b;    /* the batch being built */
    ctab_t *t;          /* tables loaded */
    size_t n, cap;      /* count, allocated */
} ctabs_t;

static void ctabs_free(ctabs_t *C)
{
    for (size_t i = 0; i < C->n; i++) {
        for (uint32_t k = 0; k < C->t[i].ncols; k++)
            knit__free(C->t[i].cols[k]);
        knit__free(C->t[i].cols);
        knit__free(C->t[i].orset);
        knit__free(C->t[i].name);
    }
    knit__free(C->t);
}

/* Table `name` of the namespace, loaded and added to the batch on first use;
** *out NULL when the store holds no such table (a damaged cell). */
static int ctab_get(ctabs_t *C, const char *name, ctab_t **out)
{
    args_t a = {0};
    PGresult *r;
    ctab_t *t;
    int rc, nr;

    *out = NULL;
    for (size_t i = 0; i < C->n; i++)
        if (strcmp(C->t[i].name, name) == 0) {
            *out = &C->t[i];
            return 0;
        }
    a_u64(&a, (uint64_t)C->nsid);
    a_text(&a, name);
    if ((rc = run(C->s, S_COLS, &a, &r)) != 0)
        return rc;
    if ((nr = PQntuples(r)) == 0) {
        PQclear(r);
        return 0;
    }
    if (C->n == C->cap) {
        size_t nc = C->cap ? 2 * C->cap : 8;
        ctab_t *nt = knit__realloc(C->t, nc * sizeof *nt);
        if (!nt) {
            PQclear(r);
            return KNIT_ENOMEM;
        }
        C->t = nt;
        C->cap = nc;
    }
    t = &C->t[C->n];
    memset(t, 0, sizeof *t);
    t->name = knit__strdup(name);
    t->npk = (uint32_t)r_u64(r, 0, 0);
    t->cols = knit__calloc((size_t)nr, sizeof *t->cols);
    t->orset = knit__calloc((size_t)nr, 1);
    rc = !t->name || !t->cols || !t->orset ? KNIT_ENOMEM : 0;
    for (int i = 0; rc == 0 && i < nr; i++) {
        if (PQgetisnull(r, i, 1))
            continue; /* a table without columns yet */
        t->cols[t->ncols] = knit__strdup(PQgetvalue(r, i, 1));
        if (!t->cols[t->ncols]) {
            rc = KNIT_ENOMEM;
            break;
        }
        t->orset[t->ncols++] = r_u64(r, i, 2) == KIND_ORSET;
    }
    PQclear(r);
    C->n++; /* freed by ctabs_free whatever happens next */
    if (rc == 0)
        rc = knit_batch_table(C->b, t->name, t->npk, t->ncols, (const char *const *)t->cols,
                              t->orset, &t->idx);
    if (rc == 0)
        *out = t;
    return rc;
}

static int decode_pk(const uint8_t *p, size_t n, uint32_t npk, knit_value_t *out)
{
    size_t off = 0, used;
    for (uint32_t i = 0; i < npk; i++) {
        if (knit_value_decode(p + off, n - off, &out[i], &used) != 0)
            return KNIT_ECORRUPT;
        off += used;
    }
    return off == n ? 0 : KNIT_ECORRUPT;
}

/* Reports a cell catch-up skips: 1. */
static int skip_cell(ctabs_t *C, const char *ns, const char *tbl, const char *col, uint64_t seq,
                     const char *why)
{
    knit_relay_damage_t d;
    C->s->damaged++;
    memset(&d, 0, sizeof d);
    d.ns = ns;
    d.table = tbl;
    d.key = "?";
    d.column = col[0] ? col : "(row liveness)";
    d.seq = seq;
    d.message = why;
    if (C->s->on_damage)
        C->s->on_damage(C->s->damage_data, &d);
    return 1;
}

/* Adds row i of a catch-up result: 0, 1 when skipped, or an error. */
static int catch_row(ctabs_t *C, const char *ns, PGresult *r, int i, uint32_t ns_idx,
                     knit_value_t **pkbuf, uint32_t *pkcap)
{
    const char *tbl = PQgetvalue(r, i, 0), *col = PQgetvalue(r, i, 2);
    const uint8_t *pk = (const uint8_t *)PQgetvalue(r, i, 1);
    size_t pklen = (size_t)PQgetlength(r, i, 1);
    int kind = (int)r_u64(r, i, 3);
    const uint8_t *val = (const uint8_t *)PQgetvalue(r, i, 7);
    size_t vlen = (size_t)PQgetlength(r, i, 7);
    uint64_t seq = r_u64(r, i, 8);
    knit_change_t c;
    knit_site_t sid;
    ctab_t *t;
    uint8_t *wire = NULL;
    char why[200];
    int rc;

    if ((rc = ctab_get(C, tbl, &t)) != 0)
        return rc;
    if (!t)
        return skip_cell(C, ns, tbl, col, seq, "the cell names an unknown table");
    memset(&c, 0, sizeof c);
    if (col[0]) {
        for (uint32_t k = 0; k < t->ncols && !c.col; k++)
            if (strcmp(t->cols[k], col) == 0)
                c.col = k + 1;
        if (!c.col)
            return skip_cell(C, ns, tbl, col, seq, "the cell names an unknown column");
    }
    if (t->npk > *pkcap) {
        knit_value_t *n = knit__realloc(*pkbuf, t->npk * sizeof *n);
        if (!n)
            return KNIT_ENOMEM;
        *pkbuf = n;
        *pkcap = t->npk;
    }
    if (decode_pk(pk, pklen, t->npk, *pkbuf) != 0)
        return skip_cell(C, ns, tbl, col, seq, "the stored key does not decode");
    if (PQgetlength(r, i, 6) != 16)
        return skip_cell(C, ns, tbl, col, seq, "the stored site id is not 16 bytes");
    memcpy(sid.b, PQgetvalue(r, i, 6), 16);
    c.ns = ns_idx;
    c.table = t->idx;
    c.pk = *pkbuf;
    c.cl = r_u64(r, i, 4);
    c.hlc = r_u64(r, i, 5);
    if (kind == KIND_LIVE) {
        c.value.type = KNIT_NULL;
    } else if (kind == KIND_LWW) {
        size_t used;
        if (knit_value_decode(val, vlen, &c.value, &used) != 0 || used != vlen)
            return skip_cell(C, ns, tbl, col, seq, "the stored value does not decode");
    } else {
        knit_sset_t x;
        size_t nwire = 0;
        if ((rc = knit__sset_decode(&x, val, vlen)) != 0) {
            if (rc != KNIT_ECORRUPT)
                return rc;
            return skip_cell(C, ns, tbl, col, seq, "the stored OR-set state does not decode");
        }
        rc = knit__sset_to_batch(&x, C->b, &wire, &nwire);
        knit__sset_free(&x);
        if (rc)
            return rc;
        c.value.type = KNIT_BLOB;
        c.value.u.b.p = wire;
        c.value.u.b.n = nwire;
    }
    if ((rc = knit_batch_site(C->b, &sid, &c.site)) != 0) {
        knit__free(wire);
        return rc;
    }
    if ((rc = knit_change_check(C->b, &c, why, sizeof why)) != 0) {
        knit__free(wire);
        return rc == KNIT_ENOMEM ? rc : skip_cell(C, ns, tbl, col, seq, why);
    }
    rc = knit_batch_add(C->b, &c);
    knit__free(wire);
    return rc;
}

/* The catch-up, inside an open transaction. */
static int catch_up_in(knit_pg_store_t *s, const char *ns, uint64_t after, size_t max_changes,
                       knit_batch_t *b, uint64_t *reached, int *more)
{
    ctabs_t C;
    knit_value_t *pkbuf = NULL;
    uint32_t pkcap = 0, ns_idx;
    uint64_t cur, end, unit = 0;
    args_t a = {0};
    PGresult *r = NULL;
    int rc;

    memset(&C, 0, sizeof C);
    C.s = s;
    C.b = b;
    if ((rc = knit_batch_ns(b, ns, &ns_idx)) != 0)
        return rc;
    if ((rc = ns_get(s, ns, &C.nsid, &cur)) != 0 || C.nsid == 0) {
        *reached = cur;
        return rc;
    }
    end = cur;
    if (max_changes) {
        /* The page ends with the unit of its max_changes-th cell. */
        a_u64(&a, (uint64_t)C.nsid);
        a_u64(&a, after);
        a_u64(&a, max_changes - 1);
        if ((rc = run(s, S_CATCH_END, &a, &r)) != 0)
            return rc;
        if (PQntuples(r) == 1)
            end = r_u64(r, 0, 0);
        PQclear(r);
        memset(&a, 0, sizeof a);
    }
    a_u64(&a, (uint64_t)C.nsid);
    a_u64(&a, after);
    a_u64(&a, end);
    if ((rc = run(s, S_CATCH, &a, &r)) != 0)
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        uint64_t seq = r_u64(r, i, 8);
        if (seq != unit) {
            if ((rc = knit_batch_begin(b, seq)) != 0)
                break;
            unit = seq;
        }
        if ((rc = catch_row(&C, ns, r, i, ns_idx, &pkbuf, &pkcap)) < 0)
            break;
        rc = 0;
    }
    PQclear(r);
    ctabs_free(&C);
    knit__free(pkbuf);
    if (rc)
        return rc;
    if (end < cur) {
        memset(&a, 0, sizeof a);
        a_u64(&a, (uint64_t)C.nsid);
        a_u64(&a, end);
        if ((rc = run(s, S_CATCH_MORE, &a, &r)) != 0)
            return rc;
        *more = PQntuples(r) > 0;
        PQclear(r);
    }
    *reached = *more ? unit : cur;
    return 0;
}

int knit_pg_store_catch_up(knit_pg_store_t *s, const char *ns, uint64_t after, size_t max_changes,
                           knit_batch_t **out, uint64_t *reached, int *more) /* see store_pg.h */
{
    knit_batch_t *b;
    int own = !s->in_txn, rc;
    *out = NULL;
    *reached = 0;
    *more = 0;
    if ((rc = knit_batch_new(&b)) != 0)
        return rc;
    /* Design note 6: the counter and the cells from one snapshot. */
    if (own && (rc = begin(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) != 0) {
        knit_batch_free(b);
        return rc;
    }
    rc = catch_up_in(s, ns, after, max_changes, b, reached, more);
    if (own) {
        if (rc == 0)
            rc = commit(s);
        rollback(s);
    }
    if (rc) {
        knit_batch_free(b);
        *more = 0;
        return rc;
    }
    *out = b;
    return 0;
}

int knit_pg_store_digest(knit_pg_store_t *s, const char *ns,
                         knit_digest_t *out) /* see store_pg.h */
{
    args_t a = {0};
    PGresult *r = NULL;
    int64_t id;
    uint64_t seq, rowcl = 0;
    int rc, live = 0, prev = -1;

    knit_digest_zero(out);
    if ((rc = begin(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) != 0)
        return rc;
    if ((rc = ns_get(s, ns, &id, &seq)) != 0 || id == 0)
        goto out;
    a_u64(&a, (uint64_t)id);
    if ((rc = run(s, S_DIGEST, &a, &r)) != 0)
        goto out;
    /* As relay_store.c's digest: rows in key order, each starting with its
    ** liveness cell (col '' sorts first); only a live row's cells of its
    ** current life count. */
    for (int i = 0; i < PQntuples(r); i++) {
        const char *tbl = PQgetvalue(r, i, 0);
        int kind = (int)r_u64(r, i, 3);
        knit_cell_t cell;
        uint8_t h[32];
        int same =
            prev >= 0 && strcmp(tbl, PQgetvalue(r, prev, 0)) == 0 &&
            PQgetlength(r, i, 1) == PQgetlength(r, prev, 1) &&
            memcmp(PQgetvalue(r, i, 1), PQgetvalue(r, prev, 1), (size_t)PQgetlength(r, i, 1)) == 0;
        if (PQgetlength(r, i, 6) != 16) {
            rc = set_err(s, KNIT_ECORRUPT, "malformed cell row");
            break;
        }
        if (!same) {
            prev = i;
            live = 0;
            rowcl = 0;
        }
        memset(&cell, 0, sizeof cell);
        cell.ns = ns;
        cell.table = tbl;
        cell.pk = (const uint8_t *)PQgetvalue(r, i, 1);
        cell.pk_len = (size_t)PQgetlength(r, i, 1);
        cell.column = PQgetvalue(r, i, 2);
        cell.cl = r_u64(r, i, 4);
        cell.val = (const uint8_t *)PQgetvalue(r, i, 7);
        cell.val_len = (size_t)PQgetlength(r, i, 7);
        if (kind == KIND_LIVE) {
            static const uint8_t null_enc = 0x00;
            rowcl = cell.cl;
            live = knit_cl_live(rowcl);
            cell.val = &null_enc;
            cell.val_len = 1;
            cell.hlc = r_u64(r, i, 5);
            memcpy(cell.site.b, PQgetvalue(r, i, 6), 16);
        } else if (!same || !live || cell.cl != rowcl) {
            continue;
        } else if (kind == KIND_LWW) {
            cell.hlc = r_u64(r, i, 5);
            memcpy(cell.site.b, PQgetvalue(r, i, 6), 16);
        } else {
            const uint8_t *sites, *body;
            size_t nsites, nbody;
            if (knit__sset_split(cell.val, cell.val_len, &sites, &nsites, &body, &nbody) != 0) {
                rc = set_err(s, KNIT_ECORRUPT, "bad stored OR-set in %s.%s", tbl, cell.column);
                break;
            }
        }
        knit_cell_hash(&cell, h);
        knit_digest_add(out, h);
    }
out:
    PQclear(r);
    if (rc == 0)
        rc = commit(s);
    rollback(s);
    if (rc)
        knit_digest_zero(out);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Credentials, the site id, seals and claims (knit_meta)                   */

static int b_anon_get(void *data, const char *id, uint8_t salt[KNIT_RELAY_SALT_LEN],
                      uint8_t hash[KNIT_RELAY_HASH_LEN])
{
    knit_pg_store_t *s = data;
    args_t a = {0};
    PGresult *r;
    int rc, found = 0;
    if ((rc = ready(s)) != 0)
        return rc;
    a_text(&a, id);
    if ((rc = run(s, S_ANON_GET, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) == 1) {
        if (PQgetlength(r, 0, 0) != KNIT_RELAY_SALT_LEN ||
            PQgetlength(r, 0, 1) != KNIT_RELAY_HASH_LEN) {
            PQclear(r);
            return set_err(s, KNIT_ECORRUPT, "anonymous id %s: bad salt or hash", id);
        }
        memcpy(salt, PQgetvalue(r, 0, 0), KNIT_RELAY_SALT_LEN);
        memcpy(hash, PQgetvalue(r, 0, 1), KNIT_RELAY_HASH_LEN);
        found = 1;
    }
    PQclear(r);
    return found;
}

static int b_anon_put(void *data, const char *id, const uint8_t salt[KNIT_RELAY_SALT_LEN],
                      const uint8_t hash[KNIT_RELAY_HASH_LEN], uint64_t now_ms)
{
    knit_pg_store_t *s = data;
    args_t a = {0};
    int rc, n = 0;
    if ((rc = ready(s)) != 0)
        return rc;
    a_text(&a, id);
    a_bytes(&a, salt, KNIT_RELAY_SALT_LEN);
    a_bytes(&a, hash, KNIT_RELAY_HASH_LEN);
    a_u64(&a, now_ms);
    if ((rc = run_n(s, S_ANON_PUT, &a, &n)) != 0)
        return rc;
    return n == 1 ? 0 : set_err(s, KNIT_EEXISTS, "anonymous id %s is taken", id);
}

/* meta's value under key into buf[0..n) (*len = its length; -1 when absent). */
static int meta_get(knit_pg_store_t *s, const char *key, void *buf, size_t n, long *len)
{
    args_t a = {0};
    PGresult *r;
    int rc;
    *len = -1;
    a_text(&a, key);
    if ((rc = run(s, S_META_GET, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) == 1) {
        size_t l = (size_t)PQgetlength(r, 0, 0);
        memcpy(buf, PQgetvalue(r, 0, 0), l < n ? l : n);
        *len = (long)l;
    }
    PQclear(r);
    return 0;
}

static int meta_put(knit_pg_store_t *s, int which, const char *key, const void *v, size_t n)
{
    args_t a = {0};
    a_text(&a, key);
    a_bytes(&a, v, n);
    return run_n(s, which, &a, NULL);
}

static int b_site(void *data, knit_site_t *site)
{
    knit_pg_store_t *s = data;
    knit_site_t fresh;
    long len;
    int rc;
    if ((rc = ready(s)) != 0 || (rc = meta_get(s, "site", site->b, 16, &len)) != 0)
        return rc;
    if (len == 16)
        return 0;
    if (len >= 0)
        return set_err(s, KNIT_ECORRUPT, "the stored site id is not 16 bytes");
    if ((rc = knit__random(fresh.b, 16)) != 0)
        return rc;
    /* Two relays may race: the first one's id is kept. */
    if ((rc = meta_put(s, S_META_PUT, "site", fresh.b, 16)) != 0 ||
        (rc = meta_get(s, "site", site->b, 16, &len)) != 0)
        return rc;
    return len == 16 ? 0 : set_err(s, KNIT_EDB, "the site id was not kept");
}

static int key2(char *buf, size_t n, const char *a, const char *b, const char *c)
{
    int k = c ? snprintf(buf, n, "%s\x1f%s\x1f%s", a, b, c) : snprintf(buf, n, "%s\x1f%s", a, b);
    return k < 0 || (size_t)k >= n ? KNIT_ETOOBIG : 0;
}

static int b_sealed(void *data, const char *anon_ns, int *is)
{
    knit_pg_store_t *s = data;
    char key[512], v[256];
    long len;
    int rc;
    *is = 0;
    if ((rc = ready(s)) != 0 || (rc = key2(key, sizeof key, "seal", anon_ns, NULL)) != 0 ||
        (rc = meta_get(s, key, v, sizeof v, &len)) != 0)
        return rc;
    *is = len >= 0;
    return 0;
}

static int b_erased(void *data, const char *principal, int *is)
{
    knit_pg_store_t *s = data;
    char key[512], v[64];
    long len;
    int rc;
    *is = 0;
    if ((rc = ready(s)) != 0 || (rc = key2(key, sizeof key, "erased", principal, NULL)) != 0 ||
        (rc = meta_get(s, key, v, sizeof v, &len)) != 0)
        return rc;
    *is = len >= 0;
    return 0;
}

/* The claim's merge (store_sqlite.c design notes 2 and 3), in one
** transaction holding both namespaces' locks. */
static int b_merge(void *data, const char *from, const char *to, size_t page,
                   knit_relay_merged_t *out, knit_relay_done_fn done, void *arg)
{
    knit_pg_store_t *s = data;
    const char *names[2] = {from, to};
    lock_t *locks = NULL, *lt;
    size_t nl;
    char key[512], owner[256];
    uint8_t upto_b[8];
    uint64_t after = 0, from_seq;
    long len;
    int more = 1, rc;

    (void)done;
    (void)arg;
    memset(out, 0, sizeof *out);
    if ((rc = begin(s, "BEGIN")) != 0)
        return rc;
    if ((rc = lock_all(s, names, 2, &locks, &nl)) != 0)
        goto out;
    lt = lock_find(locks, nl, to);
    /* Sealed to `to`, or refused. */
    if ((rc = key2(key, sizeof key, "seal", from, NULL)) != 0 ||
        (rc = meta_get(s, key, owner, sizeof owner - 1, &len)) != 0)
        goto out;
    if (len >= 0) {
        owner[len < (long)sizeof owner - 1 ? len : (long)sizeof owner - 1] = '\0';
        if (strcmp(owner, to) != 0) {
            rc = set_err(s, KNIT_EDENIED, "%s was claimed by another account", from);
            goto out;
        }
    } else if ((rc = meta_put(s, S_META_PUT, key, to, strlen(to))) != 0) {
        goto out;
    }
    if ((rc = key2(key, sizeof key, "claim", from, to)) != 0 ||
        (rc = meta_get(s, key, upto_b, 8, &len)) != 0)
        goto out;
    if (len == 8)
        for (int k = 0; k < 8; k++)
            after = after << 8 | upto_b[k];
    from_seq = after;
    while (more) {
        knit_batch_t *b = NULL;
        knit_relay_applied_t res;
        uint64_t reached = 0;
        uint32_t to_idx;
        if ((rc = knit_batch_new(&b)) != 0)
            break;
        if ((rc = catch_up_in(s, from, after, page, b, &reached, &more)) != 0 || b->nchanges == 0) {
            knit_batch_free(b);
            break;
        }
        if ((rc = knit_batch_ns(b, to, &to_idx)) != 0) {
            knit_batch_free(b);
            break;
        }
        for (size_t i = 0; i < b->nchanges; i++)
            b->changes[i].ns = to_idx;
        rc = apply_push(s, to, lt->id, &lt->seq, b, &res);
        out->cells += b->nchanges;
        knit_batch_free(b);
        if (rc)
            break;
        knit_batch_free(res.fanout);
        after = reached;
    }
    if (rc == 0 && after > from_seq) {
        for (int k = 0; k < 8; k++)
            upto_b[k] = (uint8_t)(after >> (56 - 8 * k));
        rc = meta_put(s, S_META_SET, key, upto_b, 8);
    }
    if (rc == 0 && (rc = notify_all(s, locks, nl)) == 0 && (rc = commit(s)) == 0)
        out->seq = lt->seq;
out:
    rollback(s);
    knit__free(locks);
    return rc;
}

static int b_erase(void *data, const char *ns, knit_relay_done_fn done, void *arg)
{
    knit_pg_store_t *s = data;
    const char *names[1] = {ns};
    lock_t *locks = NULL;
    args_t a = {0}, t = {0};
    size_t nl;
    int rc, n = 0;
    (void)done;
    (void)arg;
    if ((rc = begin(s, "BEGIN")) != 0)
        return rc;
    if ((rc = lock_all(s, names, 1, &locks, &nl)) != 0)
        goto out;
    a_u64(&a, (uint64_t)locks[0].id);
    t.n = 0;
    a_text(&t, ns);
    if ((rc = run_n(s, S_ERASE_CELLS, &a, &n)) != 0 ||
        (rc = run_n(s, S_ERASE_COLS, &a, NULL)) != 0 ||
        (rc = run_n(s, S_ERASE_TBLS, &a, NULL)) != 0 ||
        (rc = run_n(s, S_ERASE_CLAIMS, &t, NULL)) != 0)
        goto out;
    if (locks[0].seq == 0 && n == 0) {
        rc = set_err(s, KNIT_ENOTFOUND, "no namespace %s", ns);
        goto out;
    }
    if ((rc = run_n(s, S_ERASE_NS, &a, NULL)) != 0)
        goto out;
    rc = commit(s);
out:
    rollback(s);
    knit__free(locks);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Fan-out across relays (design note 10)                                   */

static void ln_drop(knit_pg_store_t *s);

static void free_handle(uv_handle_t *h)
{
    knit__free(h);
}

/* Announces one notification's 'ns:seq' (the namespace may hold ':'). */
static void ln_announce(knit_pg_store_t *s, const char *payload)
{
    const char *colon = strrchr(payload, ':');
    char ns[1024];
    char *end;
    if (!colon || colon == payload || (size_t)(colon - payload) >= sizeof ns)
        return;
    unsigned long long seq = strtoull(colon + 1, &end, 10);
    if (*end || !colon[1])
        return;
    memcpy(ns, payload, (size_t)(colon - payload));
    ns[colon - payload] = '\0';
    s->advanced(s->advanced_arg, ns, (uint64_t)seq);
}

static void on_ln_readable(uv_poll_t *h, int status, int events)
{
    knit_pg_store_t *s = h->data;
    PGnotify *n;
    (void)events;
    if (status < 0 || !PQconsumeInput(s->ln)) {
        ln_drop(s);
        return;
    }
    while ((n = PQnotifies(s->ln)) != NULL) {
        /* The engine fans out its own commits already. */
        if (n->be_pid != PQbackendPID(s->db))
            ln_announce(s, n->extra);
        PQfreemem(n);
    }
    if (PQstatus(s->ln) != CONNECTION_OK)
        ln_drop(s);
}

/* The poll after a reconnect: every namespace's sequence. */
static void ln_poll_all(knit_pg_store_t *s)
{
    PGresult *r = PQexec(s->ln, "SELECT name || ':' || seq FROM knit_ns WHERE seq > 0");
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        for (int i = 0; i < PQntuples(r); i++)
            ln_announce(s, PQgetvalue(r, i, 0));
    PQclear(r);
}

/* Makes the LISTEN connection; on failure tries again in a second. */
static void ln_connect(knit_pg_store_t *s)
{
    PGresult *r;
    s->ln = PQconnectdb(s->conninfo);
    if (PQstatus(s->ln) != CONNECTION_OK)
        goto retry;
    r = PQexec(s->ln, "LISTEN knit_seq");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok)
        goto retry;
    if (s->reconnect)
        ln_poll_all(s); /* after LISTEN: nothing falls between the two */
    s->reconnect = 0;
    if (PQsetnonblocking(s->ln, 1) != 0 || !(s->poll = knit__malloc(sizeof *s->poll)))
        goto retry;
    if (uv_poll_init(s->loop, s->poll, PQsocket(s->ln)) != 0) {
        knit__free(s->poll);
        s->poll = NULL;
        goto retry;
    }
    s->poll->data = s;
    uv_poll_start(s->poll, UV_READABLE, on_ln_readable);
    return;
retry:
    ln_drop(s);
}

static void on_ln_timer(uv_timer_t *t)
{
    knit_pg_store_t *s = t->data;
    if (s->loop && !s->ln)
        ln_connect(s);
}

/* Forgets the LISTEN connection and, while attached, tries again later. */
static void ln_drop(knit_pg_store_t *s)
{
    if (s->poll) {
        uv_poll_stop(s->poll);
        uv_close((uv_handle_t *)s->poll, free_handle);
        s->poll = NULL;
    }
    if (s->ln) {
        PQfinish(s->ln);
        s->ln = NULL;
    }
    s->reconnect = 1;
    if (s->loop && s->timer)
        uv_timer_start(s->timer, on_ln_timer, 1000, 0);
}

static void b_attach(void *data, void *loop,
                     void (*advanced)(void *arg, const char *ns, uint64_t seq), void *arg)
{
    knit_pg_store_t *s = data;
    if (!loop) {
        s->loop = NULL;
        ln_drop(s);
        if (s->timer) {
            uv_close((uv_handle_t *)s->timer, free_handle);
            s->timer = NULL;
        }
        return;
    }
    if (s->loop || !(s->timer = knit__malloc(sizeof *s->timer)))
        return;
    s->loop = loop;
    s->advanced = advanced;
    s->advanced_arg = arg;
    uv_timer_init(s->loop, s->timer);
    s->timer->data = s;
    s->reconnect = 0;
    ln_connect(s);
}

/* ---------------------------------------------------------------------- */
/* The store interface                                                      */

static int b_commit(void *data, knit_relay_push_t *group, knit_relay_done_fn done, void *arg)
{
    (void)done;
    (void)arg;
    return knit_pg_store_commit(data, group);
}

static int b_seq(void *data, const char *ns, uint64_t *seq)
{
    return knit_pg_store_seq(data, ns, seq);
}

static int b_catch_up(void *data, const char *ns, uint64_t after, size_t max_changes,
                      knit_batch_t **out, uint64_t *reached, int *more)
{
    return knit_pg_store_catch_up(data, ns, after, max_changes, out, reached, more);
}

static const char *b_errmsg(void *data)
{
    return knit_pg_store_errmsg(data);
}

static void b_on_damage(void *data, knit_relay_damage_fn fn, void *fn_data)
{
    knit_pg_store_t *s = data;
    s->on_damage = fn;
    s->damage_data = fn_data;
}

static uint64_t b_damaged(void *data)
{
    return ((knit_pg_store_t *)data)->damaged;
}

void knit_pg_store_backend(knit_pg_store_t *s, knit_relay_backend_t *b) /* see store_pg.h */
{
    memset(b, 0, sizeof *b);
    b->commit = b_commit;
    b->seq = b_seq;
    b->catch_up = b_catch_up;
    b->anon_get = b_anon_get;
    b->anon_put = b_anon_put;
    b->merge = b_merge;
    b->erase = b_erase;
    b->site = b_site;
    b->errmsg = b_errmsg;
    b->on_damage = b_on_damage;
    b->damaged = b_damaged;
    b->sealed = b_sealed;
    b->erased = b_erased;
    b->data = s;
    b->attach = b_attach;
}
