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
**   4. The merge is the SQLite store's, change by change in push order:
**      an LWW or liveness cell is replaced only by a larger (cl, hlc,
**      site), compared as PostgreSQL compares the row (int8 signed, so
**      stamps below 2^63 compare as their uint64s; bytea as memcmp, then
**      length), a new liveness prunes the row's cells of older lives, and
**      OR-sets are joined with the SQLite store's own code (sset.h), in
**      the same stored form.  It runs in C on the stored cells of every
**      row the push touches, read first (prefetch, one statement); the
**      cells it changed are then written whole (S_CELLS_PUT, the new ones
**      by S_CELLS_INS, note 16) and the pruned ones deleted (S_CELLS_DEL),
**      one statement each.  That equals the guarded upserts made one by
**      one because nothing else writes those cells meanwhile: they belong
**      to the namespace whose row the group holds locked (note 3).  So the
**      same pushes give the same cells, byte for byte, and the same digest.
**   5. A push writes nothing until every change of it is checked and
**      merged in memory: a refused push (bad change, a shape that
**      contradicts the store) leaves the group as it was, and the
**      namespace counter of the push is restored in memory too.  Its
**      writes can then fail only with the server (KNIT_EDB), which ends
**      the whole group.
**   6. Reads that must be consistent (catch-up: the counter and the cells;
**      the digest) run in one REPEATABLE READ READ ONLY transaction.
**   7. Names are stored as text (COLLATE "C"): the cell key is (ns, tbl,
**      pk, col) with col '' for the row's liveness, which sorts first among
**      a row's cells, as the digest needs.  Columns remember their first-seen
**      order (knit_col.ord) for catch-up batches.
**   8. The schema is versioned in knit_meta('schema'); open creates it in an
**      empty database under an advisory lock (two relays starting together
**      create it once), upgrades an older one (note 13) and refuses a newer
**      version.
**   9. A broken connection is made again (a new connection, its session
**      settings and prepared statements) at the start of a later
**      operation (ready); the operation that met the break failed, its
**      transaction is rolled back by the server, and nothing of it was
**      acknowledged: the engine answers a failed group commit with a
**      retryable REJECT.  A COMMIT whose answer was lost may still have
**      committed; the client pushes it again and the merge is idempotent.
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
**      since notifications sent meanwhile are lost.  So is every
**      namespace when the main connection comes back after an outage
**      (ln_wake), since subscribers' reads failed meanwhile.
**  11. No call waits for the server without a deadline: the relay's loop
**      runs on the thread that calls the store.  Every round trip is sent
**      non-blocking (PQsend*) and its answer awaited with poll() on the
**      connection's socket for at most timeout_ms (KNIT_PG_TIMEOUT_MS in
**      the environment, default TIMEOUT_MS), connects too (PQconnectStart
**      and PQconnectPoll).  A server that does not answer in time (stopped,
**      or the network stalled) is treated as a break: the socket is shut
**      down, the operation fails with a message naming what was waited
**      for and how long, and the connection is made again (note 9).
**  12. While the server is unreachable, reconnects are tried with a
**      backoff (BACKOFF_MIN_MS doubling to BACKOFF_MAX_MS); operations in
**      between fail at once, so the loop stays responsive and /healthz
**      answers "store unavailable".  An outage is logged twice, on stderr
**      in sync-relay's log format: "store: PostgreSQL unreachable: why"
**      when it begins and "store: PostgreSQL back after N ms" when it
**      ends, not once per failed operation.
**  13. Devices, the identity index, memberships and REJECT's state
**      (schema 2) are relay_store.c's (its design notes 11 and 13, and
**      knit_relay_store_cells), statement for statement, on knit_device,
**      knit_schema_fp/_col, knit_ident, knit_ident_id and knit_membership,
**      so the same calls give the same answers on both backends.  Several
**      relays may write them at once: identify and membership writes run
**      in one transaction each, after pg_advisory_xact_lock(LOCK_IDENT),
**      and device writes after pg_advisory_xact_lock(LOCK_DEVICE), so a
**      sign-in on one relay and an event on another see each other's
**      effect (READ COMMITTED reads after the lock see every earlier
**      holder's commit), and a schema dropped by one relay is never one
**      another relay is pointing a device at.  No deadlock: those locks
**      are taken first, and the namespace locks an identify's merge of a
**      provisional account takes (note 3, in name order) are the only
**      others; group commits never take the advisory locks.  REJECT's
**      state is read in one REPEATABLE READ READ ONLY snapshot, like a
**      catch-up (note 6).  A schema 1 database is upgraded at open, under
**      the schema lock (note 8), by SCHEMA_V2 (CREATE ... IF NOT EXISTS)
**      and the new version in one transaction.  Every round trip goes
**      through round_trip (note 11).
**  14. Webhook deliveries (schema 3; webhook.h's seam, knit_pg_store_webhooks)
**      are one transaction each, after pg_advisory_xact_lock(LOCK_IDENT):
**      the check of the delivery id (knit_webhook), the identity index,
**      memberships, the tombstone's removal, the relay's rows (a push into
**      the account's namespace, locked as a group commit locks it, whose
**      pg_notify tells other relays' subscribers, note 10) and the
**      delivery's record commit together, so a crash leaves none of it and
**      two relays given the same delivery apply it once (the second waits
**      for the lock, then sees the first's record).  user.deleted is in
**      that transaction too: the tombstone ("erased" US ns in knit_meta,
**      which store.h's erased and identify read), the identity rows, and
**      the account's namespace with those claimed into it, locked together
**      in name order (note 3).  Per provider user the latest updated_at
**      applied is kept in knit_webhook_user (relay_store.c's
**      "user_updated" meta keys).  A schema 1 or 2 database gets the two
**      tables at open (SCHEMA_V3, IF NOT EXISTS), as in note 13.
**  15. Round trips, not statements, bound a group commit (each waits for
**      the server process to be scheduled), so statements that need no
**      answer in between go together in libpq's pipeline mode (pipe_run:
**      one round trip, run by the server in order, the rest skipped after
**      a failure, within note 11's deadline).  A group commit is BEGIN
**      and its namespace locks in name order (one round trip), per push
**      the prefetch of note 4 (one), and the pushes' writes, the counters
**      (note 2), the notifications (note 10) and COMMIT (one): a push's
**      writes are deferred (s->pend) and sent ahead of the next round
**      trip, which the server runs after them, so the next push of the
**      same namespace reads them.  A group of k pushes takes k + 2 round
**      trips, whatever their size.
**  16. With note 15's round trips, the server's CPU per row bounds
**      ingest, so each write is the cheapest statement PostgreSQL has for
**      it.  The prefetch (note 4), under the namespace lock (note 3), tells
**      which of the cells a push changed were stored before: those go
**      through S_CELLS_PUT (INSERT ... ON CONFLICT DO UPDATE, its conflict
**      always met), the new ones through S_CELLS_INS, a plain INSERT,
**      which spares each new cell ON CONFLICT's probe of the key index, the
**      speculative insertion and the WAL record confirming it.  Were the
**      prefetch ever wrong, that INSERT fails on the key, the group fails
**      and is pushed again: nothing is lost.  Arrays are unnested in a
**      select list (one row per call), not in FROM, which first copies
**      each into a tuplestore whose memory the server allocates and frees
**      per statement.  A group's namespaces are created, locked, counted
**      and announced by one statement each over arrays (S_NS_ADDS;
**      S_NS_LOCKS, whose FOR UPDATE locks the rows as its ORDER BY returns
**      them, in name order, note 3; S_NS_SEQS; S_NOTIFYS), not one per
**      namespace.  With one connection and groups of 16 pushes of 100
**      changes, the server's CPU per change went from about 15 us to 7.
**  17. A push's tables and columns are checked against a cache of those
**      known stored (s->shapes: table -> key column count, column ->
**      kind, under the namespace's id), so in the steady state the
**      prefetch is one statement, the rows' cells, not one more per table
**      and column.  A cached fact cannot go stale: knit_tbl and knit_col
**      rows never change and are deleted only with their namespace's
**      knit_ns row (erase), whose id (bigserial) is never handed out
**      again.  What a group commit learns (rows it read, tables and
**      columns it inserts) is cached only once its COMMIT succeeded, so a
**      rolled back insert is never remembered; other transactions read
**      the cache and add nothing.  It is emptied when the connection is
**      made again (it may reach another server, or a restored database)
**      and when it holds SHAPE_MAX entries.
*/
#include "store_pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <uv.h>

#include "alloc.h"
#include "entropy.h"
#include "lww.h"
#include "orset.h"
#include "relay_store.h"
#include "sset.h"
#include "validate.h"
#include "webhook.h"

#define KIND_LIVE 0            /* the row's liveness (col '') */
#define KIND_LWW 1             /* LWW register */
#define KIND_ORSET 2           /* OR-set, stored form of sset.h */
#define LOCK_KEY 0x6b6e5047    /* "knPG": advisory lock around schema creation */
#define LOCK_IDENT 0x6b6e4944  /* "knID": advisory lock around identity writes (note 13) */
#define LOCK_DEVICE 0x6b6e4456 /* "knDV": advisory lock around device writes (note 13) */
#define DEVICE_SEEN_MS 60000   /* a device's last_seen is rewritten at most this often */
#define MAX_ARGS 10
#define TIMEOUT_MS 5000     /* default deadline of a round trip or a connect (note 11) */
#define BACKOFF_MIN_MS 100  /* first wait between reconnects (note 12) */
#define BACKOFF_MAX_MS 5000 /* the longest */
#define SHAPE_BUCKETS 1024  /* design note 17: the shape cache's hash size */
#define SHAPE_MAX 65536     /* entries it holds before it is emptied */

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

/* Added by schema 2 (design note 13): relay_store.c's device tables
** (its design note 11) and identity index (its note 13), under knit_
** names.  Also the upgrade from 1, hence IF NOT EXISTS. */
static const char SCHEMA_V2[] =
    "CREATE TABLE IF NOT EXISTS knit_schema_fp("
    "  fp bytea PRIMARY KEY,"                /* fingerprint, 8 bytes (runtime/schema.h) */
    "  first_seen bigint NOT NULL);"         /* ms since the epoch */
    "CREATE TABLE IF NOT EXISTS knit_schema_col("
    "  fp bytea NOT NULL,"                   /* knit_schema_fp.fp */
    "  tbl text COLLATE \"C\" NOT NULL,"     /* tracked table */
    "  pos integer NOT NULL,"                /* keys in key order, then columns by name */
    "  name text COLLATE \"C\" NOT NULL,"    /* column */
    "  kind smallint NOT NULL,"              /* 0 key, 1 LWW, 2 OR-set */
    "  PRIMARY KEY(fp, tbl, pos));"
    "CREATE TABLE IF NOT EXISTS knit_device("
    "  principal text COLLATE \"C\" NOT NULL," /* anon:<id> / user:<sub> */
    "  site bytea NOT NULL,"                 /* the replica's site id, 16 bytes */
    "  fp bytea NOT NULL,"                   /* knit_schema_fp.fp, or '' when none reported */
    "  agent text NOT NULL,"                 /* HELLO agent, or '' */
    "  first_seen bigint NOT NULL,"          /* ms since the epoch */
    "  last_seen bigint NOT NULL,"           /* within DEVICE_SEEN_MS */
    "  PRIMARY KEY(principal, site));"
    "CREATE INDEX IF NOT EXISTS knit_device_fp ON knit_device(fp);"
    "CREATE TABLE IF NOT EXISTS knit_ident("
    "  account text COLLATE \"C\" PRIMARY KEY," /* namespace, user:<first provider id> */
    "  email text COLLATE \"C\" UNIQUE,"     /* primary email, normalized, or NULL */
    "  external_id text,"                    /* the provider's external_id, or NULL */
    "  first_name text, last_name text, image_url text," /* profile values last applied */
    "  updated_at bigint NOT NULL DEFAULT 0," /* provider's updated_at applied (ms), 0: none */
    "  profiled smallint NOT NULL DEFAULT 0," /* the knit_profile row was written */
    "  created bigint NOT NULL);"            /* ms since the epoch */
    "CREATE TABLE IF NOT EXISTS knit_ident_id("
    "  id text COLLATE \"C\" PRIMARY KEY,"   /* provider's user id (token sub, data.id) */
    "  account text COLLATE \"C\" NOT NULL," /* knit_ident.account */
    "  linked bigint NOT NULL);"             /* when it was linked (ms) */
    "CREATE INDEX IF NOT EXISTS knit_ident_id_account ON knit_ident_id(account);"
    "CREATE TABLE IF NOT EXISTS knit_membership("
    "  org text COLLATE \"C\" NOT NULL,"     /* the provider's organization id */
    "  user_id text COLLATE \"C\" NOT NULL," /* the provider's user id */
    "  account text COLLATE \"C\" NOT NULL," /* knit_ident.account it resolved to */
    "  role text NOT NULL,"                  /* e.g. org:admin, '' when none */
    "  present smallint NOT NULL,"           /* 1 member, 0 removed (kept against reordering) */
    "  updated bigint NOT NULL,"             /* the event's updated_at (ms) */
    "  PRIMARY KEY(org, user_id));"
    "CREATE INDEX IF NOT EXISTS knit_membership_account ON knit_membership(account);";

/* Added by schema 3 (design note 14): webhook deliveries applied, and per
** provider user the latest updated_at of its events (relay_store.c keeps
** both in meta).  Also the upgrade from 1 or 2, hence IF NOT EXISTS. */
static const char SCHEMA_V3[] =
    "CREATE TABLE IF NOT EXISTS knit_webhook("
    "  id text COLLATE \"C\" PRIMARY KEY,"    /* the delivery's svix-id */
    "  user_id text COLLATE \"C\","           /* the provider user it was about, or NULL */
    "  updated bigint NOT NULL,"              /* its data.updated_at (ms), 0: none */
    "  received bigint NOT NULL);"            /* when it was applied (ms since the epoch) */
    "CREATE TABLE IF NOT EXISTS knit_webhook_user("
    "  user_id text COLLATE \"C\" PRIMARY KEY," /* the provider's user id */
    "  updated bigint NOT NULL);";            /* the latest updated_at of its events */

/* Prepared statements, by index; parameters are int8 (20), bytea (17) or
** text (25), results binary. */
enum {
    S_NS_GET, S_NS_SEQ, S_NS_ADDS, S_NS_LOCKS, S_NS_SEQS,
    S_TBL_GET, S_TBL_INS, S_COL_GET, S_COL_INS, S_COLS,
    S_ROWS_LOAD, S_CELLS_PUT, S_CELLS_INS, S_CELLS_DEL,
    S_CATCH_END, S_CATCH, S_CATCH_MORE, S_DIGEST,
    S_ANON_GET, S_ANON_PUT, S_META_GET, S_META_PUT, S_META_SET,
    S_ERASE_CELLS, S_ERASE_COLS, S_ERASE_TBLS, S_ERASE_NS, S_ERASE_CLAIMS,
    S_NOTIFY, S_NOTIFYS,
    S_DEV_GET, S_DEV_PUT, S_DEV_ERASE, S_FP_PUT, S_FP_COL_PUT, S_FP_DROP_COLS, S_FP_DROP,
    S_TRACKS, S_ID_GET, S_ID_PUT, S_ID_MOVE, S_IDENT_GET, S_IDENT_BY_EMAIL, S_IDENT_INS,
    S_IDENT_PUT, S_IDENT_DROP, S_IDENT_DIRTY, S_MEMBER_GET, S_MEMBER_PUT, S_MEMBER_LIST,
    S_ROW_CELLS,
    S_WH_SEEN, S_WH_PUT, S_WH_USER_GET, S_WH_USER_PUT, S_META_DEL, S_ID_FORGET,
    S_MEMBER_FORGET, S_CLAIMED_INTO,
    S_COUNT
};

static const struct {
    const char *sql;
    int nparams;
    Oid types[MAX_ARGS];
} SQL[S_COUNT] = {
    [S_NS_GET] = {"SELECT id, seq FROM knit_ns WHERE name = $1", 1, {25}},
    [S_NS_SEQ] = {"UPDATE knit_ns SET seq = $2 WHERE id = $1", 2, {20, 20}},
    /* Design note 16: a group's namespaces in one statement each, the
    ** names sorted; FOR UPDATE locks the rows as ORDER BY returns them, in
    ** name order (note 3). */
    [S_NS_ADDS] = {"INSERT INTO knit_ns(name) SELECT u.n FROM (SELECT unnest($1::text[]) AS n) u"
                   " WHERE NOT EXISTS (SELECT 1 FROM knit_ns k WHERE k.name = u.n)"
                   " ON CONFLICT DO NOTHING", 1, {1009}},
    [S_NS_LOCKS] = {"SELECT name, id, seq FROM knit_ns WHERE name = ANY($1::text[])"
                    " ORDER BY name FOR UPDATE", 1, {1009}},
    [S_NS_SEQS] = {"UPDATE knit_ns SET seq = ($2::int8[])[array_position($1::int8[], id)]"
                   " WHERE id = ANY($1::int8[])", 2, {1016, 1016}},
    [S_TBL_GET] = {"SELECT npk::int8 FROM knit_tbl WHERE ns = $1 AND name = $2", 2, {20, 25}},
    [S_TBL_INS] = {"INSERT INTO knit_tbl(ns, name, npk) VALUES($1, $2, $3)", 3, {20, 25, 20}},
    [S_COL_GET] = {"SELECT kind::int8 FROM knit_col WHERE ns = $1 AND tbl = $2 AND name = $3", 3,
                   {20, 25, 25}},
    [S_COL_INS] = {"INSERT INTO knit_col(ns, tbl, name, kind) VALUES($1, $2, $3, $4)", 4,
                   {20, 25, 25, 20}},
    [S_COLS] = {"SELECT t.npk::int8, c.name, c.kind::int8 FROM knit_tbl t"
                " LEFT JOIN knit_col c ON c.ns = t.ns AND c.tbl = t.name"
                " WHERE t.ns = $1 AND t.name = $2 ORDER BY c.ord", 2, {20, 25}},
    /* Design note 4: the stored cells of the rows a push touches (tables
    ** $2[i], keys $3[i]), merged in memory, then written whole and pruned
    ** in one statement each. */
    /* (OFFSET 0 keeps the lookup per row on the primary key: a join the
    ** planner may make a scan of the whole namespace.) */
    [S_ROWS_LOAD] = {"SELECT c.tbl, c.pk, c.col, c.kind, c.cl, c.hlc, c.site, c.value"
                     " FROM (SELECT unnest($2::text[]) AS tbl, unnest($3::bytea[]) AS pk) u"
                     " CROSS JOIN LATERAL"
                     " (SELECT k.tbl, k.pk, k.col, k.kind::int8 AS kind, k.cl, k.hlc, k.site,"
                     " k.value FROM knit_cell k WHERE k.ns = $1 AND k.tbl = u.tbl COLLATE \"C\""
                     " AND k.pk = u.pk OFFSET 0) c", 3, {20, 1009, 1001}},
    [S_CELLS_PUT] = {"INSERT INTO knit_cell(ns, tbl, pk, col, kind, cl, hlc, site, value, seq)"
                     " SELECT $1, unnest($2::text[]), unnest($3::bytea[]), unnest($4::text[]),"
                     " unnest($5::int8[]), unnest($6::int8[]), unnest($7::int8[]),"
                     " unnest($8::bytea[]), unnest($9::bytea[]), unnest($10::int8[])"
                     " ON CONFLICT(ns, tbl, pk, col) DO UPDATE SET kind = EXCLUDED.kind,"
                     " cl = EXCLUDED.cl, hlc = EXCLUDED.hlc, site = EXCLUDED.site,"
                     " value = EXCLUDED.value, seq = EXCLUDED.seq", 10,
                     {20, 1009, 1001, 1009, 1016, 1016, 1016, 1001, 1001, 1016}},
    /* The cells not stored when the push began (design note 16): a plain
    ** INSERT, the arrays unnested in the select list (no tuplestores). */
    [S_CELLS_INS] = {"INSERT INTO knit_cell(ns, tbl, pk, col, kind, cl, hlc, site, value, seq)"
                     " SELECT $1, unnest($2::text[]), unnest($3::bytea[]), unnest($4::text[]),"
                     " unnest($5::int8[]), unnest($6::int8[]), unnest($7::int8[]),"
                     " unnest($8::bytea[]), unnest($9::bytea[]), unnest($10::int8[])", 10,
                     {20, 1009, 1001, 1009, 1016, 1016, 1016, 1001, 1001, 1016}},
    [S_CELLS_DEL] = {"DELETE FROM knit_cell WHERE ctid = ANY(ARRAY(SELECT c.ctid"
                     " FROM (SELECT unnest($2::text[]) AS tbl, unnest($3::bytea[]) AS pk,"
                     " unnest($4::text[]) AS col) u"
                     " CROSS JOIN LATERAL (SELECT k.ctid FROM knit_cell k WHERE k.ns = $1"
                     " AND k.tbl = u.tbl COLLATE \"C\" AND k.pk = u.pk"
                     " AND k.col = u.col COLLATE \"C\" OFFSET 0) c))", 4,
                     {20, 1009, 1001, 1009}},
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
    [S_NOTIFYS] = {"SELECT pg_notify('knit_seq', unnest($1::text[]))", 1, {1009}},
    /* Devices and their schemas (design note 13; relay_store.c's note 11). */
    [S_DEV_GET] = {"SELECT fp, agent, last_seen FROM knit_device WHERE principal = $1"
                   " AND site = $2", 2, {25, 17}},
    [S_DEV_PUT] = {"INSERT INTO knit_device(principal, site, fp, agent, first_seen, last_seen)"
                   " VALUES($1, $2, $3, $4, $5, $5) ON CONFLICT(principal, site) DO UPDATE"
                   " SET fp = EXCLUDED.fp, agent = EXCLUDED.agent,"
                   " last_seen = EXCLUDED.last_seen", 5, {25, 17, 17, 25, 20}},
    [S_DEV_ERASE] = {"DELETE FROM knit_device WHERE principal = $1", 1, {25}},
    [S_FP_PUT] = {"INSERT INTO knit_schema_fp(fp, first_seen) VALUES($1, $2)"
                  " ON CONFLICT DO NOTHING", 2, {17, 20}},
    [S_FP_COL_PUT] = {"INSERT INTO knit_schema_col(fp, tbl, pos, name, kind)"
                      " VALUES($1, $2, $3, $4, $5)", 5, {17, 25, 20, 25, 20}},
    [S_FP_DROP_COLS] = {"DELETE FROM knit_schema_col WHERE fp = $1"
                        " AND NOT EXISTS (SELECT 1 FROM knit_device WHERE fp = $1)", 1, {17}},
    [S_FP_DROP] = {"DELETE FROM knit_schema_fp WHERE fp = $1"
                   " AND NOT EXISTS (SELECT 1 FROM knit_device WHERE fp = $1)", 1, {17}},
    [S_TRACKS] = {"SELECT 1 FROM knit_device d JOIN knit_schema_col c ON c.fp = d.fp"
                  " WHERE d.principal = $1 AND c.tbl = $2 LIMIT 1", 2, {25, 25}},
    /* The identity index (design note 13; relay_store.c's note 13). */
    [S_ID_GET] = {"SELECT account FROM knit_ident_id WHERE id = $1", 1, {25}},
    [S_ID_PUT] = {"INSERT INTO knit_ident_id(id, account, linked) VALUES($1, $2, $3)"
                  " ON CONFLICT(id) DO UPDATE SET account = EXCLUDED.account,"
                  " linked = EXCLUDED.linked", 3, {25, 25, 20}},
    [S_ID_MOVE] = {"UPDATE knit_ident_id SET account = $2, linked = $3 WHERE account = $1", 3,
                   {25, 25, 20}},
    [S_IDENT_GET] = {"SELECT email, first_name, last_name, image_url, external_id, updated_at,"
                     " profiled::int8 FROM knit_ident WHERE account = $1", 1, {25}},
    [S_IDENT_BY_EMAIL] = {"SELECT account FROM knit_ident WHERE email = $1", 1, {25}},
    [S_IDENT_INS] = {"INSERT INTO knit_ident(account, created) VALUES($1, $2)", 2, {25, 20}},
    [S_IDENT_PUT] = {"UPDATE knit_ident SET email = $2, first_name = $3, last_name = $4,"
                     " image_url = $5, external_id = $6, updated_at = $7, profiled = $8"
                     " WHERE account = $1", 8, {25, 25, 25, 25, 25, 25, 20, 20}},
    [S_IDENT_DROP] = {"DELETE FROM knit_ident WHERE account = $1", 1, {25}},
    [S_IDENT_DIRTY] = {"UPDATE knit_ident SET profiled = 0 WHERE account = $1", 1, {25}},
    [S_MEMBER_GET] = {"SELECT present::int8, role, updated FROM knit_membership"
                      " WHERE org = $1 AND user_id = $2", 2, {25, 25}},
    [S_MEMBER_PUT] = {"INSERT INTO knit_membership(org, user_id, account, role, present, updated)"
                      " VALUES($1, $2, $3, $4, $5, $6) ON CONFLICT(org, user_id) DO UPDATE"
                      " SET account = EXCLUDED.account, role = EXCLUDED.role,"
                      " present = EXCLUDED.present, updated = EXCLUDED.updated", 6,
                      {25, 25, 25, 25, 20, 20}},
    [S_MEMBER_LIST] = {"SELECT org, role, present::int8, updated FROM knit_membership"
                       " WHERE account = $1 ORDER BY org", 1, {25}},
    /* One row's cells for REJECT's state, as catch-up's rows: liveness
    ** first, then columns in first-seen order (relay_store.c's cid order). */
    [S_ROW_CELLS] = {"SELECT c.tbl, c.pk, c.col, c.kind::int8, c.cl, c.hlc, c.site, c.value,"
                     " c.seq FROM knit_cell c LEFT JOIN knit_col k ON k.ns = c.ns"
                     " AND k.tbl = c.tbl AND k.name = c.col"
                     " WHERE c.ns = $1 AND c.tbl = $2 AND c.pk = $3"
                     " ORDER BY c.col <> '', k.ord", 3, {20, 25, 17}},
    /* Webhook deliveries (design note 14). */
    [S_WH_SEEN] = {"SELECT 1 FROM knit_webhook WHERE id = $1", 1, {25}},
    [S_WH_PUT] = {"INSERT INTO knit_webhook(id, user_id, updated, received)"
                  " VALUES($1, $2, $3, (extract(epoch FROM now()) * 1000)::int8)"
                  " ON CONFLICT(id) DO NOTHING", 3, {25, 25, 20}},
    [S_WH_USER_GET] = {"SELECT updated FROM knit_webhook_user WHERE user_id = $1", 1, {25}},
    [S_WH_USER_PUT] = {"INSERT INTO knit_webhook_user(user_id, updated) VALUES($1, $2)"
                       " ON CONFLICT(user_id) DO UPDATE SET updated = EXCLUDED.updated", 2,
                       {25, 20}},
    [S_META_DEL] = {"DELETE FROM knit_meta WHERE key = $1", 1, {25}},
    /* Erasing an account (relay_store.c's ident_forget and claimed list). */
    [S_ID_FORGET] = {"DELETE FROM knit_ident_id WHERE account = $1", 1, {25}},
    [S_MEMBER_FORGET] = {"DELETE FROM knit_membership WHERE account = $1", 1, {25}},
    /* The namespaces claimed into $1: from of "claim" US from US $1. */
    [S_CLAIMED_INTO] = {"SELECT substr(key, 7, length(key) - 7 - length($1)) FROM knit_meta"
                        " WHERE starts_with(key, 'claim' || chr(31))"
                        " AND right(key, length($1) + 1) = chr(31) || $1"
                        " AND length(key) > 7 + length($1) ORDER BY 1", 1, {25}},
};
/* clang-format on */

struct knit_pg_store_s {
    PGconn *db;                     /* the connection */
    int prepared;                   /* the statements are prepared on db */
    struct pipe_s *pend;            /* a push's writes not sent yet (note 15), or NULL */
    size_t npend;                   /* their count */
    uint8_t *pend_buf[21];          /* the arrays they send (owned) */
    int defer;                      /* a group commit's pushes: defer their writes */
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
    int repoll;              /* db came back: announce every namespace (note 10) */
    int timeout_ms;          /* deadline of each round trip and connect (note 11) */
    int dead;                /* db failed or timed out: make it again first */
    uint64_t down_since;     /* monotonic ms the outage began, 0 while up */
    uint64_t retry_at;       /* no reconnect before (monotonic ms, note 12) */
    unsigned backoff;        /* the current wait between reconnects, ms */
    unsigned attempts;       /* reconnects tried in this outage */
    uint64_t outages;        /* outages recovered from */
    char why[512];           /* the last reconnect's failure */
    struct shape_s **shapes; /* design note 17: known tables and columns (SHAPE_BUCKETS) */
    size_t nshapes;          /* entries in it */
    struct shape_s *learned; /* learned by the open group commit, kept if it commits */
};

/* ---------------------------------------------------------------------- */
/* libpq plumbing                                                           */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Design note 11: one line in sync-relay's log format (relay.h's
** knit_relay_log_stderr, which this library does not link). */
static void note(const char *level, const char *fmt, ...)
{
    char when[32], line[700];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ sync-relay %s: %s\n", when, ts.tv_nsec / 1000000L, level, line);
}

static int set_err(knit_pg_store_t *s, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    return rc;
}

/* Records the server's message of a failed result on c (r may be NULL). */
static int pg_err_on(knit_pg_store_t *s, PGconn *c, PGresult *r, const char *what)
{
    const char *m = r ? PQresultErrorMessage(r) : "";
    if (!m || !*m)
        m = PQerrorMessage(c);
    set_err(s, KNIT_EDB, "PostgreSQL: %.200s: %s", what, m && *m ? m : "failed");
    /* One line: libpq messages end with a newline, and may hold several. */
    size_t n = strlen(s->errmsg);
    while (n && (s->errmsg[n - 1] == '\n' || s->errmsg[n - 1] == '\r'))
        s->errmsg[--n] = '\0';
    for (char *p = s->errmsg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return KNIT_EDB;
}

static int pg_err(knit_pg_store_t *s, PGresult *r, const char *what)
{
    return pg_err_on(s, s->db, r, what);
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

/* SQL NULL, or t. */
static void a_text_or_null(args_t *a, const char *t)
{
    if (t) {
        a_text(a, t);
        return;
    }
    a->v[a->n] = NULL;
    a->len[a->n] = 0;
    a->fmt[a->n++] = 1;
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

/* Waits for c's socket to have events (POLLIN, POLLOUT) until deadline:
** 1 ready, 0 the deadline passed, -1 failed. */
static int wait_io(PGconn *c, short events, uint64_t deadline)
{
    int fd = PQsocket(c);
    if (fd < 0)
        return -1;
    for (;;) {
        struct pollfd p = {fd, events, 0};
        uint64_t now = mono_ms();
        if (now >= deadline)
            return 0;
        int n = poll(&p, 1, (int)(deadline - now));
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Design note 11: the results of the query just sent on c (non-blocking),
** as PQexec gives them (the last result, or the first failure), within
** deadline.  NULL when the connection failed, *timed_out set when the
** deadline passed first. */
static PGresult *pq_wait(PGconn *c, uint64_t deadline, int *timed_out)
{
    PGresult *keep = NULL, *r;
    int f, w;
    *timed_out = 0;
    while ((f = PQflush(c)) != 0) {
        if (f < 0)
            goto fail;
        if ((w = wait_io(c, POLLIN | POLLOUT, deadline)) <= 0) {
            *timed_out = w == 0;
            goto fail;
        }
        if (!PQconsumeInput(c))
            goto fail;
    }
    for (;;) {
        while (PQisBusy(c)) {
            if ((w = wait_io(c, POLLIN, deadline)) <= 0) {
                *timed_out = w == 0;
                goto fail;
            }
            if (!PQconsumeInput(c))
                goto fail;
        }
        if (!(r = PQgetResult(c)))
            break;
        if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
            PQclear(r);
        } else {
            PQclear(keep);
            keep = r;
        }
    }
    if (PQstatus(c) != CONNECTION_OK)
        goto fail; /* e.g. FATAL: terminating connection: the socket is gone */
    return keep;
fail:
    PQclear(keep);
    return NULL;
}

/* Connects to s->conninfo within s->timeout_ms (design note 11), the
** connection non-blocking; *out NULL on failure. */
static int connect_to(knit_pg_store_t *s, PGconn **out)
{
    uint64_t deadline = mono_ms() + (uint64_t)s->timeout_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *c = PQconnectStart(s->conninfo);
    int rc;
    *out = NULL;
    if (!c)
        return set_err(s, KNIT_ENOMEM, "out of memory");
    while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_FAILED) {
        if (st == PGRES_POLLING_OK) {
            if (PQsetnonblocking(c, 1) != 0)
                break;
            *out = c;
            return 0;
        }
        int w = wait_io(c, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (w == 0) {
            PQfinish(c);
            return set_err(s, KNIT_EDB, "PostgreSQL: connect: no answer within %d ms",
                           s->timeout_ms);
        }
        if (w < 0)
            break;
        st = PQconnectPoll(c);
    }
    rc = pg_err_on(s, c, NULL, "connect");
    PQfinish(c);
    return rc;
}

/* Design note 12: the first failure of an outage is logged, once. */
static void outage_begins(knit_pg_store_t *s)
{
    if (s->down_since)
        return;
    s->down_since = mono_ms();
    s->backoff = 0;
    s->retry_at = 0; /* the first reconnect is tried at once */
    s->attempts = 0;
    note("warn", "store: PostgreSQL unreachable: %s", s->errmsg);
}

/* The connection failed (timed_out: it gave no answer within the
** deadline, and is cut): nothing of the operation is acknowledged. */
static int lost(knit_pg_store_t *s, const char *what, int timed_out, uint64_t waited)
{
    if (timed_out) {
        if (PQsocket(s->db) >= 0)
            shutdown(PQsocket(s->db), SHUT_RDWR);
        set_err(s, KNIT_EDB, "PostgreSQL: no answer to %.60s within %llu ms: connection dropped",
                what, (unsigned long long)waited);
    } else {
        pg_err(s, NULL, what);
    }
    s->dead = 1;
    s->in_txn = 0;
    s->prepared = 0;
    outage_begins(s);
    return KNIT_EDB;
}

/* One round trip on the main connection: statement i with a, or (i < 0)
** the text sql, or (a NULL) the preparation of statement i.  0 with *out
** holding the server's answer, whatever its status; KNIT_EDB when the
** connection failed or timed out. */
static int pipe_flush(knit_pg_store_t *s);

static int round_trip(knit_pg_store_t *s, int i, const args_t *a, const char *sql, PGresult **out)
{
    char name[16];
    uint64_t t0 = mono_ms();
    const char *what = i >= 0 ? SQL[i].sql : sql;
    int sent, timed_out = 0;
    *out = NULL;
    if (s->npend && (sent = pipe_flush(s)) != 0)
        return sent; /* writes deferred by a group commit go first (note 15) */
    if (s->dead || PQstatus(s->db) != CONNECTION_OK)
        return KNIT_EDB; /* errmsg already tells the failure */
    snprintf(name, sizeof name, "k%d", i);
    if (i < 0)
        sent = PQsendQuery(s->db, sql);
    else if (!a)
        sent = PQsendPrepare(s->db, name, SQL[i].sql, SQL[i].nparams, SQL[i].types);
    else
        sent = PQsendQueryPrepared(s->db, name, a->n, a->v, a->len, a->fmt, 1);
    PGresult *r = sent ? pq_wait(s->db, t0 + (uint64_t)s->timeout_ms, &timed_out) : NULL;
    if (!r)
        return lost(s, what, timed_out, mono_ms() - t0);
    *out = r;
    return 0;
}

static int ok_status(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Runs sql; *out gets the result (PQclear it) when it succeeded. */
static int exec_r(knit_pg_store_t *s, const char *sql, PGresult **out)
{
    PGresult *r;
    int rc = round_trip(s, -1, NULL, sql, &r);
    *out = NULL;
    if (rc)
        return rc;
    if (!ok_status(r)) {
        rc = pg_err(s, r, sql);
        PQclear(r);
        return rc;
    }
    *out = r;
    return 0;
}

static int exec(knit_pg_store_t *s, const char *sql)
{
    PGresult *r;
    int rc = exec_r(s, sql, &r);
    PQclear(r);
    return rc;
}

static int prepare_all(knit_pg_store_t *s)
{
    for (int i = 0; i < S_COUNT; i++) {
        PGresult *r;
        int rc = round_trip(s, i, NULL, NULL, &r);
        if (rc)
            return rc;
        rc = ok_status(r) ? 0 : pg_err(s, r, "prepare");
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
    PGresult *r;
    int rc = round_trip(s, i, a, NULL, &r);
    *out = NULL;
    if (rc)
        return rc;
    if (!ok_status(r)) {
        rc = pg_err(s, r, SQL[i].sql);
        PQclear(r);
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

/* One statement of a pipeline: statement i with a, or (i < 0) the text
** sql without parameters; r gets its answer. */
typedef struct pipe_s {
    int i;           /* statement index, or -1 */
    const char *sql; /* the text when i < 0 */
    args_t a;        /* parameters of statement i (filled in place) */
    PGresult *r;     /* the answer (pipe_run) */
} pipe_t;

/* Reads the answer of one statement of the pipeline on c (its results,
** then NULL), as pq_wait does: the last result, or the first failure. */
static int pipe_read(PGconn *c, uint64_t deadline, int *timed_out, PGresult **out)
{
    PGresult *keep = NULL, *r;
    int w;
    for (;;) {
        while (PQisBusy(c)) {
            if ((w = wait_io(c, POLLIN, deadline)) <= 0) {
                *timed_out = w == 0;
                PQclear(keep);
                return -1;
            }
            if (!PQconsumeInput(c)) {
                PQclear(keep);
                return -1;
            }
        }
        if (!(r = PQgetResult(c)))
            break;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(keep); /* a sync where a statement's answer should be */
            PQclear(r);
            return -1;
        }
        if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
            PQclear(r);
        } else {
            PQclear(keep);
            keep = r;
        }
    }
    *out = keep;
    return keep ? 0 : -1;
}

/* Design note 15: the n statements of q sent at once in libpq's pipeline
** mode, and their answers read, in one round trip within the deadline
** (note 11).  0 when every one succeeded (each q[k].r set: PQclear them,
** pipe_free); else the first failure (KNIT_EDB; the answers are freed).
** The server runs them in order, as separate round trips would; after a
** failure it skips the rest (the transaction is aborted anyway). */
static int pipe_send(knit_pg_store_t *s, pipe_t *q, size_t n)
{
    PGconn *c = s->db;
    uint64_t t0 = mono_ms(), deadline = t0 + (uint64_t)s->timeout_ms;
    const char *what = n && q[0].i >= 0 ? SQL[q[0].i].sql : n ? q[0].sql : "pipeline";
    int timed_out = 0, f, w, rc = 0;
    char name[16];
    size_t k;
    PGresult *sync;

    for (k = 0; k < n; k++)
        q[k].r = NULL;
    if (s->dead || PQstatus(c) != CONNECTION_OK)
        return KNIT_EDB; /* errmsg already tells the failure */
    if (!PQenterPipelineMode(c))
        return lost(s, what, 0, 0);
    for (k = 0; k < n; k++) {
        int sent;
        if (q[k].i < 0) {
            sent = PQsendQueryParams(c, q[k].sql, 0, NULL, NULL, NULL, NULL, 1);
        } else {
            snprintf(name, sizeof name, "k%d", q[k].i);
            sent = PQsendQueryPrepared(c, name, q[k].a.n, q[k].a.v, q[k].a.len, q[k].a.fmt, 1);
        }
        if (!sent)
            goto broken;
    }
    if (!PQpipelineSync(c))
        goto broken;
    while ((f = PQflush(c)) != 0) {
        if (f < 0)
            goto broken;
        if ((w = wait_io(c, POLLIN | POLLOUT, deadline)) <= 0) {
            timed_out = w == 0;
            goto broken;
        }
        if (!PQconsumeInput(c))
            goto broken;
    }
    for (k = 0; k < n; k++)
        if (pipe_read(c, deadline, &timed_out, &q[k].r) != 0)
            goto broken;
    for (;;) { /* the sync's answer */
        while (PQisBusy(c)) {
            if ((w = wait_io(c, POLLIN, deadline)) <= 0) {
                timed_out = w == 0;
                goto broken;
            }
            if (!PQconsumeInput(c))
                goto broken;
        }
        if (!(sync = PQgetResult(c)))
            goto broken;
        ExecStatusType st = PQresultStatus(sync);
        PQclear(sync);
        if (st == PGRES_PIPELINE_SYNC)
            break;
    }
    if (!PQexitPipelineMode(c) || PQstatus(c) != CONNECTION_OK)
        goto broken;
    for (k = 0; k < n && rc == 0; k++)
        if (!ok_status(q[k].r))
            rc = pg_err(s, q[k].r, q[k].i >= 0 ? SQL[q[k].i].sql : q[k].sql);
    if (rc)
        for (k = 0; k < n; k++) {
            PQclear(q[k].r);
            q[k].r = NULL;
        }
    return rc;
broken:
    for (k = 0; k < n; k++) {
        PQclear(q[k].r);
        q[k].r = NULL;
    }
    return lost(s, what, timed_out, mono_ms() - t0);
}

static void pipe_free(pipe_t *q, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        PQclear(q[k].r);
        q[k].r = NULL;
    }
}

/* Forgets the deferred writes (their transaction is rolled back). */
static void pend_drop(knit_pg_store_t *s)
{
    if (s->pend)
        pipe_free(s->pend, s->npend);
    knit__free(s->pend);
    s->pend = NULL;
    s->npend = 0;
    for (int k = 0; k < 21; k++) {
        knit__free(s->pend_buf[k]);
        s->pend_buf[k] = NULL;
    }
}

/* pipe_send of the writes a group commit deferred (note 15), then q's n
** statements, in one round trip: q's answers as pipe_send gives them. */
static int pipe_run(knit_pg_store_t *s, pipe_t *q, size_t n)
{
    size_t np = s->npend;
    pipe_t *all;
    int rc;
    if (!np)
        return n ? pipe_send(s, q, n) : 0;
    if (!(all = knit__malloc((np + n) * sizeof *all))) {
        pend_drop(s);
        return set_err(s, KNIT_ENOMEM, "out of memory");
    }
    /* The copies' parameters point into the originals, alive until the end. */
    memcpy(all, s->pend, np * sizeof *all);
    if (n)
        memcpy(all + np, q, n * sizeof *q);
    rc = pipe_send(s, all, np + n);
    pipe_free(all, np);
    for (size_t k = 0; k < n; k++)
        q[k].r = all[np + k].r;
    knit__free(all);
    pend_drop(s);
    return rc;
}

static int pipe_flush(knit_pg_store_t *s)
{
    return pipe_run(s, NULL, 0);
}

static void ln_wake(knit_pg_store_t *s);
static void shape_clear(knit_pg_store_t *s);
static void shape_list_free(struct shape_s *e);

/* A new main connection, with its session settings and statements. */
static int reconnect(knit_pg_store_t *s)
{
    PGconn *c;
    int rc = connect_to(s, &c);
    if (rc)
        return rc;
    PQfinish(s->db);
    s->db = c;
    shape_clear(s); /* design note 17 */
    s->dead = 0;
    s->in_txn = 0;
    s->prepared = 0;
    if ((rc = exec(s, "SET client_min_messages = warning")) != 0 || (rc = prepare_all(s)) != 0) {
        s->dead = 1; /* tried again after the backoff */
        return rc;
    }
    return 0;
}

/* Design notes 9 and 12: before an operation, a broken connection is made
** again, at most once per backoff period; meanwhile operations fail at
** once. */
static int ready(knit_pg_store_t *s)
{
    uint64_t now = mono_ms();
    int rc;
    if (!s->dead && PQstatus(s->db) == CONNECTION_OK)
        return 0;
    if (!s->down_since) {
        pg_err(s, NULL, "connection");
        outage_begins(s);
    }
    if (now < s->retry_at)
        return set_err(s, KNIT_EDB,
                       "PostgreSQL unreachable for %llu ms (next reconnect in %llu ms): %s",
                       (unsigned long long)(now - s->down_since),
                       (unsigned long long)(s->retry_at - now), s->why);
    s->attempts++;
    if ((rc = reconnect(s)) != 0) {
        snprintf(s->why, sizeof s->why, "%s", s->errmsg);
        s->backoff = s->backoff ? s->backoff * 2 : BACKOFF_MIN_MS;
        if (s->backoff > BACKOFF_MAX_MS)
            s->backoff = BACKOFF_MAX_MS;
        s->retry_at = mono_ms() + s->backoff;
        return rc;
    }
    note("info", "store: PostgreSQL back after %llu ms (%u reconnect attempts)",
         (unsigned long long)(mono_ms() - s->down_since), s->attempts);
    s->outages++;
    s->down_since = 0;
    s->backoff = 0;
    s->retry_at = 0;
    ln_wake(s); /* design note 10: announce what may have been missed */
    return 0;
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

/* Design note 1: a COMMIT in an aborted transaction succeeds with the
** status "ROLLBACK"; only "COMMIT" means committed. */
static int commit(knit_pg_store_t *s)
{
    PGresult *r;
    int rc;
    s->in_txn = 0;
    if ((rc = exec_r(s, "COMMIT", &r)) != 0)
        return rc;
    if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
        rc = set_err(s, KNIT_EDB, "PostgreSQL: COMMIT answered %s: nothing was committed",
                     PQcmdStatus(r));
    PQclear(r);
    return rc;
}

static void rollback(knit_pg_store_t *s)
{
    char keep[sizeof s->errmsg];
    pend_drop(s);
    if (!s->in_txn)
        return;
    s->in_txn = 0;
    if (s->dead || PQstatus(s->db) != CONNECTION_OK)
        return; /* the server rolls back a transaction whose connection ended */
    memcpy(keep, s->errmsg, sizeof keep);
    exec(s, "ROLLBACK");
    memcpy(s->errmsg, keep, sizeof keep);
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
    if ((rc = round_trip(s, -1, NULL,
                         "SELECT convert_from(value, 'UTF8') FROM knit_meta WHERE key = 'schema'",
                         &r)) != 0)
        goto out;
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
        } else if (v < KNIT_PG_SCHEMA_VERSION) {
            /* Design note 13: the upgrade, under the lock, in one transaction. */
            snprintf(sql, sizeof sql, "UPDATE knit_meta SET value = '%d' WHERE key = 'schema'",
                     KNIT_PG_SCHEMA_VERSION);
            if ((v < 2 && (rc = exec(s, SCHEMA_V2)) != 0) || (rc = exec(s, SCHEMA_V3)) != 0 ||
                (rc = exec(s, sql)) != 0)
                goto out;
            if ((rc = commit(s)) == 0)
                note("info", "store: PostgreSQL schema upgraded from version %ld to %d", v,
                     KNIT_PG_SCHEMA_VERSION);
            return rc;
        }
        goto out;
    }
    PQclear(r);
    /* No knit_meta: the failed SELECT aborted the transaction. */
    rollback(s);
    if ((rc = begin(s, "BEGIN")) != 0 || (rc = exec(s, sql)) != 0)
        goto out;
    if ((rc = exec_r(s, "SELECT to_regclass('knit_meta') IS NOT NULL", &r)) != 0)
        goto out;
    int exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (exists) { /* another relay created it meanwhile */
        rollback(s);
        return check_schema(s);
    }
    snprintf(sql, sizeof sql, "INSERT INTO knit_meta(key, value) VALUES('schema', '%d')",
             KNIT_PG_SCHEMA_VERSION);
    if ((rc = exec(s, SCHEMA)) != 0 || (rc = exec(s, SCHEMA_V2)) != 0 ||
        (rc = exec(s, SCHEMA_V3)) != 0 || (rc = exec(s, sql)) != 0)
        goto out;
    return commit(s);
out:
    rollback(s);
    return rc;
}

/* A handle for conninfo, connected (*out is set whenever one was made, so
** that its message can be read). */
static int store_connect(const char *conninfo, knit_pg_store_t **out)
{
    knit_pg_store_t *s = knit__calloc(1, sizeof *s);
    const char *t = getenv("KNIT_PG_TIMEOUT_MS");
    *out = NULL;
    if (!s)
        return KNIT_ENOMEM;
    s->timeout_ms = TIMEOUT_MS;
    if (t && atoi(t) > 0)
        s->timeout_ms = atoi(t);
    s->conninfo = knit__strdup(conninfo);
    *out = s;
    if (!s->conninfo)
        return set_err(s, KNIT_ENOMEM, "out of memory");
    return connect_to(s, &s->db);
}

int knit_pg_store_open(const char *conninfo, knit_pg_store_t **out) /* see store_pg.h */
{
    knit_pg_store_t *s;
    int rc;
    if ((rc = store_connect(conninfo, out)) != 0)
        return rc;
    s = *out;
    if ((rc = exec(s, "SET client_min_messages = warning")) != 0 || (rc = check_schema(s)) != 0 ||
        (rc = prepare_all(s)) != 0)
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
    shape_clear(s);
    shape_list_free(s->learned);
    knit__free(s);
}

const char *knit_pg_store_errmsg(knit_pg_store_t *s) /* see store_pg.h */
{
    return s ? s->errmsg : "";
}

/* ---------------------------------------------------------------------- */
/* Namespaces                                                               */

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
/* Shapes (design note 17)                                                  */

/* A table's key column count or a column's kind, known to be stored. */
typedef struct shape_s {
    struct shape_s *next; /* the bucket's (or the learned list's) next */
    uint64_t hash;        /* of the key */
    int64_t val;          /* npk of a table, KIND_* of a column */
    size_t klen;          /* key bytes */
    uint8_t key[];        /* ns id (8 bytes), table, NUL, then the column and NUL or nothing */
} shape_t;

/* The key of table tbl (col NULL) or of its column col in namespace nsid
** into buf (n bytes): its length, 0 when too long to be cached. */
static size_t shape_key(uint8_t *buf, size_t n, int64_t nsid, const char *tbl, const char *col)
{
    size_t tl = strlen(tbl) + 1, cl = col ? strlen(col) + 1 : 0;
    if (8 + tl + cl > n)
        return 0;
    for (int k = 0; k < 8; k++)
        buf[k] = (uint8_t)((uint64_t)nsid >> (8 * k));
    memcpy(buf + 8, tbl, tl);
    if (col)
        memcpy(buf + 8 + tl, col, cl);
    return 8 + tl + cl;
}

static uint64_t shape_hash(const uint8_t *k, size_t n)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return h;
}

/* The cached value of table tbl (col NULL) or its column col, or -1. */
static int64_t shape_get(const knit_pg_store_t *s, int64_t nsid, const char *tbl, const char *col)
{
    uint8_t k[600];
    size_t n = shape_key(k, sizeof k, nsid, tbl, col);
    if (!n || !s->shapes)
        return -1;
    uint64_t h = shape_hash(k, n);
    for (const shape_t *e = s->shapes[h % SHAPE_BUCKETS]; e; e = e->next)
        if (e->hash == h && e->klen == n && memcmp(e->key, k, n) == 0)
            return e->val;
    return -1;
}

/* Remembers, for the group commit under way, that table tbl (col NULL) or
** its column col is stored with val; cached if the group commits.  Best
** effort: out of memory, it is simply not cached. */
static void shape_learn(knit_pg_store_t *s, int64_t nsid, const char *tbl, const char *col,
                        int64_t val)
{
    uint8_t k[600];
    size_t n = shape_key(k, sizeof k, nsid, tbl, col);
    shape_t *e;
    if (!n || !s->defer || !(e = knit__malloc(sizeof *e + n)))
        return;
    e->hash = shape_hash(k, n);
    e->val = val;
    e->klen = n;
    memcpy(e->key, k, n);
    e->next = s->learned;
    s->learned = e;
}

static void shape_list_free(shape_t *e)
{
    for (shape_t *n; e; e = n) {
        n = e->next;
        knit__free(e);
    }
}

/* Empties the cache (a new connection may be another database's). */
static void shape_clear(knit_pg_store_t *s)
{
    if (s->shapes)
        for (size_t b = 0; b < SHAPE_BUCKETS; b++)
            shape_list_free(s->shapes[b]);
    knit__free(s->shapes);
    s->shapes = NULL;
    s->nshapes = 0;
}

/* The group committed (keep) or not: what it learned is cached or dropped. */
static void shape_settle(knit_pg_store_t *s, int keep)
{
    shape_t *e = s->learned, *n;
    s->learned = NULL;
    if (!keep) {
        shape_list_free(e);
        return;
    }
    if (s->nshapes >= SHAPE_MAX)
        shape_clear(s);
    if (!s->shapes && !(s->shapes = knit__calloc(SHAPE_BUCKETS, sizeof *s->shapes))) {
        shape_list_free(e);
        return;
    }
    for (; e; e = n) {
        n = e->next;
        shape_t **b = &s->shapes[e->hash % SHAPE_BUCKETS], *o;
        for (o = *b; o; o = o->next)
            if (o->hash == e->hash && o->klen == e->klen && memcmp(o->key, e->key, e->klen) == 0)
                break;
        if (o) {
            knit__free(e); /* two pushes of the group learned it */
            continue;
        }
        e->next = *b;
        *b = e;
        s->nshapes++;
    }
}

/* ---------------------------------------------------------------------- */
/* Apply (the port of relay_store.c's, design note 4)                       */

/* A cell of a row the push touches: as loaded, then as merged so far. */
typedef struct mcell_s {
    struct mcell_s *next; /* the row's next cell */
    const char *col;      /* column, '' for the liveness (the push's or the loaded result's) */
    int present;          /* the cell exists, after the changes merged so far */
    int in_db;            /* it was stored when the push began */
    int dirty;            /* the push changed it: written (or deleted) at the end */
    int kind;             /* KIND_* */
    uint64_t cl;          /* causal length */
    uint64_t hlc;         /* winning stamp */
    const uint8_t *site;  /* winning site id (sbuf, or the loaded result's) */
    size_t site_len;      /* its bytes (16 unless the stored one is damaged) */
    uint8_t sbuf[16];     /* a site id the push wrote */
    const uint8_t *val;   /* value bytes (own, LIVE_VALUE or the loaded result's) */
    size_t vlen;          /* their count */
    uint8_t *own;         /* val when the cell owns it */
    uint64_t seq;         /* sequence, when the push wrote it */
} mcell_t;

/* A row (table, key) the push touches, with its cells. */
typedef struct mrow_s {
    struct mrow_s *hnext; /* the hash bucket's next row */
    struct mrow_s *next;  /* the next row in the order first met */
    const char *tbl;      /* table name (the push's) */
    uint8_t *pk;          /* key encoding, owned */
    size_t pklen;         /* its bytes */
    uint64_t hash;        /* of (tbl, pk) */
    mcell_t *cells;       /* its cells */
} mrow_t;

typedef struct apply_s {
    knit_pg_store_t *s;       /* the store */
    const knit_batch_t *push; /* the push */
    int64_t nsid;             /* namespace id */
    knit_batch_t *out;        /* fan-out being built */
    uint32_t out_ns;          /* ns index in out */
    int64_t *out_tab;         /* per push table: its index in out, or -1 */
    uint8_t *shaped;          /* per push table: checked against the store */
    uint8_t *tbl_new;         /* per push table: to be inserted into knit_tbl */
    size_t *col_off;          /* per push table: offset into col_ok */
    uint8_t *col_ok;          /* per push column: checked against the store */
    size_t *col_new;          /* push columns (col_off + c) to insert, in order met */
    size_t ncol_new;          /* their count */
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
    mrow_t **rows;            /* hash of the rows the push touches */
    size_t nbuckets;          /* its size, a power of 2 */
    mrow_t *first, *last;     /* the rows in the order first met */
    size_t nrows;             /* their count */
    PGresult *loaded;         /* the rows' stored cells (their strings are used) */
    pipe_t *q;                /* the prefetch's statements and answers */
    size_t nq;                /* their count */
    PGresult **tbl_r;         /* per push table: its knit_tbl row (a q answer), or NULL */
    PGresult **col_r;         /* per push column: its knit_col row (a q answer), or NULL */
    int64_t *tbl_c;           /* per push table: its npk from the shape cache, or -1 */
    int64_t *col_c;           /* per push column: its kind from the shape cache, or -1 */
} apply_t;

static const uint8_t LIVE_VALUE[1] = {0}; /* the value of a liveness cell */

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

/* Checks table ti against the store (its row read by prefetch); a new one
** is inserted with the push's other writes (apply_write). */
static int shape_table(apply_t *A, uint32_t ti)
{
    const knit_batch_table_t *t = &A->push->tables[ti];
    PGresult *r = A->tbl_r[ti];
    if (!t->name[0])
        return set_err(A->s, KNIT_EINVAL, "empty table name");
    if (!r && A->tbl_c[ti] < 0)
        return set_err(A->s, KNIT_EDB, "table %s was not read", t->name);
    if (!r || PQntuples(r) == 1) {
        uint64_t npk = r ? r_u64(r, 0, 0) : (uint64_t)A->tbl_c[ti];
        if (r)
            shape_learn(A->s, A->nsid, t->name, NULL, (int64_t)npk);
        if (npk != t->npk)
            return set_err(A->s, KNIT_ESCHEMA, "table %s has %llu key columns, push says %u",
                           t->name, (unsigned long long)npk, t->npk);
        return 0;
    }
    A->tbl_new[ti] = 1;
    return 0;
}

/* Checks column c of table ti against the store (read by prefetch); a new
** one is inserted with the push's other writes, in the order met (its
** knit_col.ord). */
static int shape_column(apply_t *A, uint32_t ti, uint32_t c)
{
    const knit_batch_table_t *t = &A->push->tables[ti];
    PGresult *r = A->col_r[A->col_off[ti] + c];
    int kind = t->orset[c] ? KIND_ORSET : KIND_LWW;
    if (!t->cols[c][0])
        return set_err(A->s, KNIT_EINVAL, "table %s: empty column name", t->name);
    int64_t cached = A->col_c[A->col_off[ti] + c];
    if (!r && cached < 0)
        return set_err(A->s, KNIT_EDB, "column %s.%s was not read", t->name, t->cols[c]);
    if (!r || PQntuples(r) == 1) {
        int have = r ? (int)r_u64(r, 0, 0) : (int)cached;
        if (r)
            shape_learn(A->s, A->nsid, t->name, t->cols[c], have);
        if (have != kind)
            return set_err(A->s, KNIT_ESCHEMA, "column %s.%s is %s here, the push says %s", t->name,
                           t->cols[c], have == KIND_ORSET ? "an OR-set" : "LWW",
                           kind == KIND_ORSET ? "an OR-set" : "LWW");
        return 0;
    }
    A->col_new[A->ncol_new++] = A->col_off[ti] + c;
    return 0;
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

/* ---- The push's rows, in memory (design note 4) ---- */

static uint64_t row_hash(const char *tbl, const uint8_t *pk, size_t pklen)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (const char *p = tbl; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (size_t i = 0; i < pklen; i++)
        h = (h ^ pk[i]) * 1099511628211ull;
    return h;
}

/* The row (tbl, pk), made (without cells) when create and it is new;
** *out NULL when absent and not created. */
static int row_of(apply_t *A, const char *tbl, const uint8_t *pk, size_t pklen, int create,
                  mrow_t **out)
{
    uint64_t h = row_hash(tbl, pk, pklen);
    mrow_t *r;
    *out = NULL;
    for (r = A->rows[h & (A->nbuckets - 1)]; r; r = r->hnext)
        if (r->hash == h && r->pklen == pklen && memcmp(r->pk, pk, pklen) == 0 &&
            strcmp(r->tbl, tbl) == 0) {
            *out = r;
            return 0;
        }
    if (!create)
        return 0;
    if (!(r = knit__calloc(1, sizeof *r)) || !(r->pk = knit__malloc(pklen ? pklen : 1))) {
        knit__free(r);
        return KNIT_ENOMEM;
    }
    memcpy(r->pk, pk, pklen);
    r->pklen = pklen;
    r->tbl = tbl;
    r->hash = h;
    r->hnext = A->rows[h & (A->nbuckets - 1)];
    A->rows[h & (A->nbuckets - 1)] = r;
    if (A->last)
        A->last->next = r;
    else
        A->first = r;
    A->last = r;
    A->nrows++;
    *out = r;
    return 0;
}

static mcell_t *cell_find(const mrow_t *r, const char *col)
{
    for (mcell_t *m = r->cells; m; m = m->next)
        if (strcmp(m->col, col) == 0)
            return m;
    return NULL;
}

/* The cell col of r, made (absent) when it has none. */
static mcell_t *cell_of(mrow_t *r, const char *col)
{
    mcell_t *m = cell_find(r, col);
    if (m || !(m = knit__calloc(1, sizeof *m)))
        return m;
    m->col = col;
    m->next = r->cells;
    r->cells = m;
    return m;
}

static void cell_stamp(mcell_t *m, uint64_t cl, uint64_t hlc, const knit_site_t *site)
{
    m->cl = cl;
    m->hlc = hlc;
    memcpy(m->sbuf, site->b, 16);
    m->site = m->sbuf;
    m->site_len = 16;
}

/* Sets m's value: p (n bytes) copied, or taken (knit__malloc'd) when take. */
static int cell_value(mcell_t *m, const uint8_t *p, size_t n, int take)
{
    uint8_t *own = NULL;
    if (take)
        own = (uint8_t *)p;
    else if (p != LIVE_VALUE && !(own = knit__memdup(p, n ? n : 1)))
        return KNIT_ENOMEM;
    knit__free(m->own);
    m->own = own;
    m->val = own ? own : p;
    m->vlen = n;
    return 0;
}

/* (cl, hlc, site) > m's, as PostgreSQL orders the row comparison the
** guarded upserts made (int8 signed, bytea as memcmp then length). */
static int stamp_gt(uint64_t cl, uint64_t hlc, const knit_site_t *site, const mcell_t *m)
{
    if ((int64_t)cl != (int64_t)m->cl)
        return (int64_t)cl > (int64_t)m->cl;
    if ((int64_t)hlc != (int64_t)m->hlc)
        return (int64_t)hlc > (int64_t)m->hlc;
    size_t n = m->site_len < 16 ? m->site_len : 16;
    int d = memcmp(site->b, m->site, n);
    return d != 0 ? d > 0 : 16 > m->site_len;
}

static void rows_free(apply_t *A)
{
    mrow_t *r = A->first, *nr;
    for (; r; r = nr) {
        nr = r->next;
        for (mcell_t *m = r->cells, *nm; m; m = nm) {
            nm = m->next;
            knit__free(m->own);
            knit__free(m);
        }
        knit__free(r->pk);
        knit__free(r);
    }
    knit__free(A->rows);
    A->rows = NULL;
    A->first = A->last = NULL;
    PQclear(A->loaded);
    A->loaded = NULL;
    if (A->q)
        pipe_free(A->q, A->nq);
    knit__free(A->q);
    knit__free(A->tbl_r);
    knit__free(A->col_r);
    knit__free(A->tbl_c);
    knit__free(A->col_c);
    A->q = NULL;
    A->tbl_r = A->col_r = NULL;
    A->tbl_c = A->col_c = NULL;
}

/* ---- Arrays as parameters (PostgreSQL's binary array format) ----
**
**   int32 ndim (1) | int32 has-nulls (0) | Oid element type |
**   int32 length | int32 lower bound (1) | per element: int32 bytes, bytes
*/

typedef struct arr_s {
    uint8_t *p;   /* the encoding */
    size_t n;     /* bytes used */
    size_t cap;   /* allocated */
    uint32_t len; /* elements */
    int oom;      /* an allocation failed */
} arr_t;

static void arr_put(arr_t *a, const void *p, size_t n)
{
    if (a->oom)
        return;
    if (a->n + n > a->cap) {
        size_t nc = a->cap ? a->cap : 256;
        while (nc < a->n + n)
            nc *= 2;
        uint8_t *np = knit__realloc(a->p, nc);
        if (!np) {
            a->oom = 1;
            return;
        }
        a->p = np;
        a->cap = nc;
    }
    memcpy(a->p + a->n, p, n);
    a->n += n;
}

static void arr_u32(arr_t *a, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    arr_put(a, b, 4);
}

static void arr_begin(arr_t *a, Oid elem)
{
    memset(a, 0, sizeof *a);
    arr_u32(a, 1);
    arr_u32(a, 0);
    arr_u32(a, elem);
    arr_u32(a, 0); /* the length, set by arr_arg */
    arr_u32(a, 1);
}

static void arr_bytes(arr_t *a, const void *p, size_t n)
{
    arr_u32(a, (uint32_t)n);
    arr_put(a, p, n);
    a->len++;
}

static void arr_text(arr_t *a, const char *t)
{
    arr_bytes(a, t, strlen(t));
}

static void arr_u64(arr_t *a, uint64_t v)
{
    uint8_t b[8];
    for (int k = 0; k < 8; k++)
        b[k] = (uint8_t)(v >> (56 - 8 * k));
    arr_bytes(a, b, 8);
}

/* Adds array x as the next parameter of args. */
static void arr_arg(args_t *args, arr_t *x)
{
    if (!x->oom)
        for (int k = 0; k < 4; k++)
            x->p[12 + k] = (uint8_t)(x->len >> (24 - 8 * k));
    a_bytes(args, x->p, x->n);
}

/* Design note 15: one round trip reads what the push's checks and merge
** need: the knit_tbl and knit_col rows of the tables and columns its
** changes use, and the stored cells of every row they touch (those of the
** changes whose keys encode: a key that does not is refused later, in
** change order). */
static int prefetch(apply_t *A)
{
    const knit_batch_t *p = A->push;
    size_t nb = 16, ncols = 0, nq = 0, load = 0;
    arr_t tb, pk;
    mrow_t *r;
    int rc = 0;

    memset(&tb, 0, sizeof tb);
    memset(&pk, 0, sizeof pk);
    while (nb < 2 * p->nchanges)
        nb *= 2;
    for (size_t i = 0; i < p->ntables; i++)
        ncols += p->tables[i].ncols;
    A->rows = knit__calloc(nb, sizeof *A->rows);
    A->tbl_r = knit__calloc(p->ntables ? p->ntables : 1, sizeof *A->tbl_r);
    A->col_r = knit__calloc(ncols ? ncols : 1, sizeof *A->col_r);
    A->q = knit__calloc(p->ntables + ncols + 1, sizeof *A->q);
    A->tbl_c = knit__malloc((p->ntables ? p->ntables : 1) * sizeof *A->tbl_c);
    A->col_c = knit__malloc((ncols ? ncols : 1) * sizeof *A->col_c);
    if (!A->rows || !A->tbl_r || !A->col_r || !A->q || !A->tbl_c || !A->col_c)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < p->ntables; i++)
        A->tbl_c[i] = -1;
    for (size_t i = 0; i < ncols; i++)
        A->col_c[i] = -1;
    A->nbuckets = nb;
    for (size_t i = 0; i < p->nchanges && rc == 0; i++) {
        const knit_change_t *c = &p->changes[i];
        size_t pklen;
        /* Marks the table and column used (tbl_r/col_r as flags for now). */
        A->tbl_r[c->table] = (PGresult *)A;
        if (c->col > 0)
            A->col_r[A->col_off[c->table] + c->col - 1] = (PGresult *)A;
        if (encode_pk(A, c, &pklen) == 0)
            rc = row_of(A, tname(A, c), A->pk, pklen, 1, &r);
    }
    if (rc)
        return rc;
    /* Design note 17: what the shape cache knows is not read. */
    for (uint32_t t = 0; t < p->ntables; t++) {
        const knit_batch_table_t *bt = &p->tables[t];
        if (!A->tbl_r[t])
            continue;
        for (uint32_t k = 0; k < bt->ncols; k++)
            if (A->col_r[A->col_off[t] + k] && (A->col_c[A->col_off[t] + k] = shape_get(
                                                    A->s, A->nsid, bt->name, bt->cols[k])) >= 0)
                A->col_r[A->col_off[t] + k] = NULL;
        if ((A->tbl_c[t] = shape_get(A->s, A->nsid, bt->name, NULL)) >= 0)
            A->tbl_r[t] = NULL;
    }
    for (uint32_t t = 0; t < p->ntables; t++) {
        const knit_batch_table_t *bt = &p->tables[t];
        if (A->tbl_r[t]) {
            A->q[nq].i = S_TBL_GET;
            a_u64(&A->q[nq].a, (uint64_t)A->nsid);
            a_text(&A->q[nq++].a, bt->name);
        }
        for (uint32_t k = 0; k < bt->ncols; k++) {
            if (!A->col_r[A->col_off[t] + k])
                continue;
            A->q[nq].i = S_COL_GET;
            a_u64(&A->q[nq].a, (uint64_t)A->nsid);
            a_text(&A->q[nq].a, bt->name);
            a_text(&A->q[nq++].a, bt->cols[k]);
        }
    }
    if (A->nrows) {
        arr_begin(&tb, 25);
        arr_begin(&pk, 17);
        for (r = A->first; r; r = r->next) {
            arr_text(&tb, r->tbl);
            arr_bytes(&pk, r->pk, r->pklen);
        }
        if (tb.oom || pk.oom) {
            rc = KNIT_ENOMEM;
            goto out;
        }
        load = nq;
        A->q[nq].i = S_ROWS_LOAD;
        a_u64(&A->q[nq].a, (uint64_t)A->nsid);
        arr_arg(&A->q[nq].a, &tb);
        arr_arg(&A->q[nq++].a, &pk);
    }
    if ((rc = pipe_run(A->s, A->q, nq)) != 0)
        goto out;
    A->nq = nq;
    nq = 0;
    for (uint32_t t = 0; t < p->ntables; t++) {
        if (A->tbl_r[t])
            A->tbl_r[t] = A->q[nq++].r;
        for (uint32_t k = 0; k < p->tables[t].ncols; k++)
            if (A->col_r[A->col_off[t] + k])
                A->col_r[A->col_off[t] + k] = A->q[nq++].r;
    }
    if (A->nrows) {
        A->loaded = A->q[load].r;
        A->q[load].r = NULL;
    }
    for (int i = 0; A->loaded && i < PQntuples(A->loaded) && rc == 0; i++) {
        PGresult *q = A->loaded;
        mcell_t *m;
        if ((rc = row_of(A, PQgetvalue(q, i, 0), (const uint8_t *)PQgetvalue(q, i, 1),
                         (size_t)PQgetlength(q, i, 1), 0, &r)) != 0 ||
            !r)
            continue; /* not asked for: cannot happen */
        if (!(m = knit__calloc(1, sizeof *m))) {
            rc = KNIT_ENOMEM;
            break;
        }
        m->col = PQgetvalue(q, i, 2);
        m->present = m->in_db = 1;
        m->kind = (int)r_u64(q, i, 3);
        m->cl = r_u64(q, i, 4);
        m->hlc = r_u64(q, i, 5);
        m->site = (const uint8_t *)PQgetvalue(q, i, 6);
        m->site_len = (size_t)PQgetlength(q, i, 6);
        m->val = (const uint8_t *)PQgetvalue(q, i, 7);
        m->vlen = (size_t)PQgetlength(q, i, 7);
        m->next = r->cells;
        r->cells = m;
    }
out:
    if (rc) { /* the flags are no answers */
        memset(A->tbl_r, 0, (p->ntables ? p->ntables : 1) * sizeof *A->tbl_r);
        memset(A->col_r, 0, (ncols ? ncols : 1) * sizeof *A->col_r);
    }
    knit__free(tb.p);
    knit__free(pk.p);
    return rc;
}

/* The current row (c's table, A->pk). */
static int cur_row(apply_t *A, const knit_change_t *c, size_t pklen, mrow_t **out)
{
    int rc = row_of(A, tname(A, c), A->pk, pklen, 1, out);
    return rc ? rc : (*out ? 0 : KNIT_ENOMEM);
}

/* The stored cell, if any. */
typedef struct stored_s {
    int found;          /* 1 if the cell exists */
    int kind;           /* KIND_* */
    knit_lww_t lww;     /* cl, hlc, site */
    const uint8_t *val; /* value bytes (the cell's) */
    size_t vlen;        /* their count */
} stored_t;

static int get_cell(apply_t *A, mrow_t *row, const char *col, stored_t *out)
{
    mcell_t *m = cell_find(row, col);
    memset(out, 0, sizeof *out);
    if (!m || !m->present)
        return 0;
    if (m->site_len != 16)
        return set_err(A->s, KNIT_ECORRUPT, "stored site id is not 16 bytes");
    out->found = 1;
    out->kind = m->kind;
    out->lww.cl = m->cl;
    out->lww.hlc = m->hlc;
    memcpy(out->lww.site.b, m->site, 16);
    out->val = m->val;
    out->vlen = m->vlen;
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

static int row_cl(apply_t *A, const knit_change_t *c, mrow_t *row, size_t pklen, uint64_t *cl)
{
    stored_t st;
    if (remembered(A, tname(A, c), pklen)) {
        *cl = A->rcl;
        return 0;
    }
    int rc = get_cell(A, row, "", &st);
    *cl = st.found ? st.lww.cl : 0;
    return rc ? rc : remember_cl(A, tname(A, c), pklen, *cl);
}

/* relay_store.c's S_CELL_LIVE: inserted, or replacing a liveness cell
** with a smaller (cl, hlc, site); then the row's columns of an older
** life are pruned. */
static int merge_live(apply_t *A, const knit_change_t *c, size_t pklen, int *won)
{
    const knit_site_t *site = &A->push->sites[c->site];
    knit_value_t null = {KNIT_NULL, {0}};
    uint64_t old_cl = 0;
    mrow_t *row;
    mcell_t *m;
    int rc, known = 0;

    if (remembered(A, tname(A, c), pklen)) {
        old_cl = A->rcl;
        known = 1;
    }
    if ((rc = cur_row(A, c, pklen, &row)) != 0)
        return rc;
    if (!(m = cell_of(row, "")))
        return KNIT_ENOMEM;
    if (!m->present) {
        m->kind = KIND_LIVE;
        cell_value(m, LIVE_VALUE, 1, 0);
    } else if (m->kind != KIND_LIVE || !stamp_gt(c->cl, c->hlc, site, m)) {
        return 0;
    }
    cell_stamp(m, c->cl, c->hlc, site);
    m->present = m->dirty = 1;
    if ((rc = unit_seq(A)) != 0)
        return rc;
    m->seq = A->seq;
    if (!known || c->cl > old_cl) /* relay_store.c's S_CELL_PRUNE */
        for (mcell_t *x = row->cells; x; x = x->next)
            if (x->col[0] && x->present && (int64_t)x->cl < (int64_t)c->cl)
                x->present = 0, x->dirty = 1;
    if ((rc = remember_cl(A, tname(A, c), pklen, c->cl)) != 0)
        return rc;
    *won = 1;
    return emit(A, c, &null, site, c->hlc);
}

/* relay_store.c's S_CELL_LWW: inserted, or replacing an LWW cell with a
** smaller (cl, hlc, site). */
static int merge_lww(apply_t *A, const knit_change_t *c, size_t pklen, int *won)
{
    const knit_site_t *site = &A->push->sites[c->site];
    uint64_t rcl;
    size_t vlen;
    mrow_t *row;
    mcell_t *m;
    int rc;

    if ((rc = cur_row(A, c, pklen, &row)) != 0 || (rc = row_cl(A, c, row, pklen, &rcl)) != 0)
        return rc;
    if (c->cl < rcl)
        return 0;
    if (!(m = cell_of(row, cname(A, c))))
        return KNIT_ENOMEM;
    if (m->present && (m->kind != KIND_LWW || !stamp_gt(c->cl, c->hlc, site, m)))
        return 0;
    vlen = knit_value_encoded_size(&c->value);
    if (ensure_buf(&A->val, &A->val_cap, vlen ? vlen : 1))
        return KNIT_ENOMEM;
    knit_value_encode(&c->value, A->val);
    if ((rc = cell_value(m, A->val, vlen, 0)) != 0)
        return rc;
    m->kind = KIND_LWW;
    cell_stamp(m, c->cl, c->hlc, site);
    m->present = m->dirty = 1;
    if ((rc = unit_seq(A)) != 0)
        return rc;
    m->seq = A->seq;
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
    mrow_t *row;
    mcell_t *m;
    int rc;

    knit__sset_init(&in);
    knit__sset_init(&cur);
    if ((rc = cur_row(A, c, pklen, &row)) != 0 || (rc = row_cl(A, c, row, pklen, &rcl)) != 0)
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
    if ((rc = get_cell(A, row, col, &st)) != 0)
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
    /* relay_store.c's S_CELL_PUT: the joined set replaces the cell. */
    if (!(m = cell_of(row, col))) {
        rc = KNIT_ENOMEM;
        goto out;
    }
    cell_value(m, enc, nenc, 1);
    enc = NULL;
    m->kind = KIND_ORSET;
    cell_stamp(m, c->cl, hlc, &site);
    m->present = m->dirty = 1;
    m->seq = A->seq;
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
    knit__sset_free(&in);
    knit__sset_free(&cur);
    return rc;
}

/* The push's writes, after every change merged, in one round trip
** (design note 15): new tables and columns (columns in the order met),
** the cells pruned, the cells written (one statement each, whatever the
** push's size) and the counter. */
static int apply_write(apply_t *A, uint64_t last_seq)
{
    static const Oid DEL_T[3] = {25, 17, 25};
    static const Oid PUT_T[9] = {25, 17, 25, 20, 20, 20, 17, 17, 20};
    const knit_batch_t *p = A->push;
    arr_t del[3], put[18]; /* put[0..9): cells stored before, [9..18): new ones */
    size_t ndel = 0, nput[2] = {0, 0}, nq = 0;
    pipe_t *q = knit__calloc(p->ntables + A->ncol_new + 4, sizeof *q);
    int rc = 0;

    if (!q)
        return KNIT_ENOMEM;
    for (uint32_t t = 0; t < p->ntables; t++)
        if (A->tbl_new[t]) {
            shape_learn(A->s, A->nsid, p->tables[t].name, NULL, p->tables[t].npk);
            q[nq].i = S_TBL_INS;
            a_u64(&q[nq].a, (uint64_t)A->nsid);
            a_text(&q[nq].a, p->tables[t].name);
            a_u64(&q[nq++].a, p->tables[t].npk);
        }
    for (size_t i = 0; i < A->ncol_new; i++) {
        uint32_t t = 0;
        while (t + 1 < p->ntables && A->col_off[t + 1] <= A->col_new[i])
            t++;
        const knit_batch_table_t *bt = &p->tables[t];
        uint32_t c = (uint32_t)(A->col_new[i] - A->col_off[t]);
        shape_learn(A->s, A->nsid, bt->name, bt->cols[c], bt->orset[c] ? KIND_ORSET : KIND_LWW);
        q[nq].i = S_COL_INS;
        a_u64(&q[nq].a, (uint64_t)A->nsid);
        a_text(&q[nq].a, bt->name);
        a_text(&q[nq].a, bt->cols[c]);
        a_u64(&q[nq++].a, bt->orset[c] ? KIND_ORSET : KIND_LWW);
    }
    for (int k = 0; k < 3; k++)
        arr_begin(&del[k], DEL_T[k]);
    for (int k = 0; k < 18; k++)
        arr_begin(&put[k], PUT_T[k % 9]);
    for (mrow_t *r = A->first; r; r = r->next)
        for (mcell_t *m = r->cells; m; m = m->next) {
            if (!m->dirty)
                continue;
            if (!m->present) {
                if (!m->in_db)
                    continue;
                arr_text(&del[0], r->tbl);
                arr_bytes(&del[1], r->pk, r->pklen);
                arr_text(&del[2], m->col);
                ndel++;
                continue;
            }
            /* Design note 16: whether it is stored is known (note 4). */
            arr_t *u = &put[m->in_db ? 0 : 9];
            arr_text(&u[0], r->tbl);
            arr_bytes(&u[1], r->pk, r->pklen);
            arr_text(&u[2], m->col);
            arr_u64(&u[3], (uint64_t)m->kind);
            arr_u64(&u[4], m->cl);
            arr_u64(&u[5], m->hlc);
            arr_bytes(&u[6], m->site, m->site_len);
            arr_bytes(&u[7], m->val, m->vlen);
            arr_u64(&u[8], m->seq);
            nput[m->in_db ? 0 : 1]++;
        }
    for (int k = 0; k < 3; k++)
        rc = del[k].oom ? KNIT_ENOMEM : rc;
    for (int k = 0; k < 18; k++)
        rc = put[k].oom ? KNIT_ENOMEM : rc;
    if (rc == 0 && ndel) {
        q[nq].i = S_CELLS_DEL;
        a_u64(&q[nq].a, (uint64_t)A->nsid);
        for (int k = 0; k < 3; k++)
            arr_arg(&q[nq].a, &del[k]);
        nq++;
    }
    for (int w = 0; w < 2; w++)
        if (rc == 0 && nput[w]) {
            q[nq].i = w ? S_CELLS_INS : S_CELLS_PUT;
            a_u64(&q[nq].a, (uint64_t)A->nsid);
            for (int k = 0; k < 9; k++)
                arr_arg(&q[nq].a, &put[9 * w + k]);
            nq++;
        }
    if (rc == 0 && last_seq && !A->s->defer) { /* a group commit's: at its end */
        q[nq].i = S_NS_SEQ;
        a_u64(&q[nq].a, (uint64_t)A->nsid);
        a_u64(&q[nq++].a, last_seq);
    }
    if (rc == 0 && nq && A->s->defer && (rc = pipe_flush(A->s)) == 0) {
        /* Sent with the next round trip (design note 15). */
        A->s->pend = q;
        A->s->npend = nq;
        for (int k = 0; k < 3; k++)
            A->s->pend_buf[k] = del[k].p;
        for (int k = 0; k < 18; k++)
            A->s->pend_buf[3 + k] = put[k].p;
        return 0;
    }
    if (rc == 0 && nq && (rc = pipe_run(A->s, q, nq)) == 0)
        pipe_free(q, nq);
    for (int k = 0; k < 3; k++)
        knit__free(del[k].p);
    for (int k = 0; k < 18; k++)
        knit__free(put[k].p);
    knit__free(q);
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
    if ((rc = prefetch(A)) != 0)
        return rc;
    for (size_t u = 0; u < p->ntxns; u++) {
        const knit_txn_t *tx = &p->txns[u];
        A->seq = 0;
        for (size_t k = 0; k < tx->count; k++) {
            const knit_change_t *c = &p->changes[tx->first + k];
            const knit_batch_table_t *t = &p->tables[c->table];
            size_t pklen = 0;
            int won = 0;
            if (!A->shaped[c->table]) {
                if ((rc = shape_table(A, c->table)) != 0)
                    return rc;
                A->shaped[c->table] = 1;
            }
            if (c->col > 0 && !A->col_ok[A->col_off[c->table] + c->col - 1]) {
                if ((rc = shape_column(A, c->table, c->col - 1)) != 0)
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
    return apply_write(A, res->last_seq);
}

/* Merges one push inside the open transaction (design note 5): every
** check and merge in memory first, the writes last, so a refused push
** writes nothing.  *seq is the namespace's counter, advanced on success. */
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
    A.tbl_new = knit__calloc(nt, 1);
    A.col_off = knit__malloc(nt * sizeof *A.col_off);
    A.col_ok = knit__calloc(ncols ? ncols : 1, 1);
    A.col_new = knit__malloc((ncols ? ncols : 1) * sizeof *A.col_new);
    if (!A.out_tab || !A.shaped || !A.tbl_new || !A.col_off || !A.col_ok || !A.col_new) {
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
    rc = apply_all(&A, ns, out);
done:
    rows_free(&A);
    knit__free(A.out_tab);
    knit__free(A.shaped);
    knit__free(A.tbl_new);
    knit__free(A.col_off);
    knit__free(A.col_ok);
    knit__free(A.col_new);
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

/* Locks the distinct namespaces of names[0..n) in order into *out, in one
** round trip (design note 15), after begin_sql when set (the transaction
** is then open, s->in_txn, even when the locks fail). */
static int lock_all_in(knit_pg_store_t *s, const char *begin_sql, const char **names, size_t n,
                       lock_t **out, size_t *nout)
{
    lock_t *l = knit__calloc(n ? n : 1, sizeof *l);
    pipe_t q[3];
    arr_t na;
    size_t k = 0, nq = 0;
    int rc = 0;
    memset(q, 0, sizeof q);
    if (!l)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < n; i++)
        l[i].ns = names[i];
    qsort(l, n, sizeof *l, lock_cmp);
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(l[k - 1].ns, l[i].ns) != 0)
            l[k++] = l[i];
    if (begin_sql) {
        q[nq].i = -1;
        q[nq++].sql = begin_sql;
        s->in_txn = 1;
    }
    /* Design notes 2 and 16: the rows made if needed, then locked, in name
    ** order. */
    arr_begin(&na, 25);
    for (size_t i = 0; i < k; i++)
        arr_text(&na, l[i].ns);
    if (na.oom) {
        knit__free(na.p);
        knit__free(l);
        return KNIT_ENOMEM;
    }
    q[nq].i = S_NS_ADDS;
    arr_arg(&q[nq++].a, &na);
    q[nq].i = S_NS_LOCKS;
    arr_arg(&q[nq++].a, &na);
    if ((rc = pipe_run(s, q, nq)) == 0) {
        PGresult *r = q[nq - 1].r;
        for (size_t i = 0; i < k && rc == 0; i++) {
            if ((size_t)PQntuples(r) != k || strcmp(PQgetvalue(r, (int)i, 0), l[i].ns) != 0) {
                rc = set_err(s, KNIT_EDB, "namespace %s vanished", l[i].ns);
                break;
            }
            l[i].id = (int64_t)r_u64(r, (int)i, 1);
            l[i].seq = l[i].seq0 = r_u64(r, (int)i, 2);
        }
    }
    pipe_free(q, nq);
    knit__free(na.p);
    if (rc) {
        knit__free(l);
        return rc;
    }
    *out = l;
    *nout = k;
    return 0;
}

/* Locks the distinct namespaces of names[0..n) in order into *out. */
static int lock_all(knit_pg_store_t *s, const char **names, size_t n, lock_t **out, size_t *nout)
{
    return lock_all_in(s, NULL, names, n, out, nout);
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

/* Design notes 1 and 10: the counters, the notifications and COMMIT in
** one round trip (note 15), one statement each (note 16); 0 only when the
** server answered COMMIT. */
static int notify_commit(knit_pg_store_t *s, const lock_t *l, size_t n)
{
    char buf[1024];
    pipe_t q[3];
    arr_t ids, seqs, msgs;
    size_t nq = 0, nadv = 0;
    int rc = 0;
    memset(q, 0, sizeof q);
    arr_begin(&ids, 20);
    arr_begin(&seqs, 20);
    arr_begin(&msgs, 25);
    for (size_t i = 0; i < n; i++) {
        if (l[i].seq == l[i].seq0)
            continue;
        /* Design note 2: the counter, written in the committing transaction. */
        arr_u64(&ids, (uint64_t)l[i].id);
        arr_u64(&seqs, l[i].seq);
        nadv++;
        int k = snprintf(buf, sizeof buf, "%s:%llu", l[i].ns, (unsigned long long)l[i].seq);
        if (k < 0 || (size_t)k >= sizeof buf)
            continue; /* no namespace is this long; subscribers poll on reconnect */
        arr_text(&msgs, buf);
    }
    if (ids.oom || seqs.oom || msgs.oom) {
        rc = KNIT_ENOMEM;
        goto out;
    }
    if (nadv) {
        q[nq].i = S_NS_SEQS;
        arr_arg(&q[nq].a, &ids);
        arr_arg(&q[nq++].a, &seqs);
    }
    if (msgs.len) {
        q[nq].i = S_NOTIFYS;
        arr_arg(&q[nq++].a, &msgs);
    }
    q[nq].i = -1;
    q[nq++].sql = "COMMIT";
    s->in_txn = 0;
    if ((rc = pipe_run(s, q, nq)) == 0 && strcmp(PQcmdStatus(q[nq - 1].r), "COMMIT") != 0)
        rc = set_err(s, KNIT_EDB, "PostgreSQL: COMMIT answered %s: nothing was committed",
                     PQcmdStatus(q[nq - 1].r));
    pipe_free(q, nq);
out:
    knit__free(ids.p);
    knit__free(seqs.p);
    knit__free(msgs.p);
    return rc;
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
    shape_settle(s, 0);
    if ((rc = ready(s)) != 0)
        goto out;
    if ((rc = lock_all_in(s, "BEGIN", names, n, &locks, &nl)) != 0)
        goto out;
    s->defer = 1;
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
    s->defer = 0;
    rc = notify_commit(s, locks, nl); /* design note 1: only now may the engine ACK */
out:
    shape_settle(s, rc == 0); /* design note 17 */
    s->defer = 0;
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
        /* At most max_changes a page (relay_store.h): it ends before the
        ** unit of its (max_changes + 1)-th cell, or with that unit when it
        ** is the first (a unit is never split). */
        uint64_t at[2] = {0, 0}; /* seq of the first cell, of the one past the page */
        for (int i = 0; i < 2; i++) {
            memset(&a, 0, sizeof a);
            a_u64(&a, (uint64_t)C.nsid);
            a_u64(&a, after);
            a_u64(&a, i ? max_changes : 0);
            if ((rc = run(s, S_CATCH_END, &a, &r)) != 0)
                return rc;
            if (PQntuples(r) == 1)
                at[i] = r_u64(r, 0, 0);
            PQclear(r);
        }
        if (at[1])
            end = at[1] == at[0] ? at[1] : at[1] - 1;
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

/* Forgets namespace l->ns, whose row l holds locked, inside the open
** transaction: its cells, columns, tables, the claims from or into it,
** its devices and its row (made by the lock if it was not there).
** *found = 0 when it held nothing. */
static int erase_ns_in(knit_pg_store_t *s, const lock_t *l, int *found)
{
    args_t a = {0}, t = {0};
    int rc, n = 0;
    *found = 0;
    a_u64(&a, (uint64_t)l->id);
    a_text(&t, l->ns);
    if ((rc = run_n(s, S_ERASE_CELLS, &a, &n)) != 0 ||
        (rc = run_n(s, S_ERASE_COLS, &a, NULL)) != 0 ||
        (rc = run_n(s, S_ERASE_TBLS, &a, NULL)) != 0 ||
        (rc = run_n(s, S_ERASE_CLAIMS, &t, NULL)) != 0 ||
        (rc = run_n(s, S_DEV_ERASE, &t, NULL)) != 0 || (rc = run_n(s, S_ERASE_NS, &a, NULL)) != 0)
        return rc;
    *found = l->seq0 != 0 || n != 0;
    return 0;
}

static int b_erase(void *data, const char *ns, knit_relay_done_fn done, void *arg)
{
    knit_pg_store_t *s = data;
    const char *names[1] = {ns};
    lock_t *locks = NULL;
    size_t nl;
    int rc, found = 0;
    (void)done;
    (void)arg;
    if ((rc = begin(s, "BEGIN")) != 0)
        return rc;
    if ((rc = lock_all(s, names, 1, &locks, &nl)) != 0 ||
        (rc = erase_ns_in(s, &locks[0], &found)) != 0)
        goto out;
    if (!found) {
        rc = set_err(s, KNIT_ENOTFOUND, "no namespace %s", ns);
        goto out;
    }
    rc = commit(s);
out:
    rollback(s);
    knit__free(locks);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Devices (design note 13)                                                 */

/* Stores the rows of schema sc under its fingerprint, once. */
static int put_schema(knit_pg_store_t *s, const knit_schema_t *sc, uint64_t now_ms)
{
    args_t a = {0};
    int rc, n = 0;
    a_bytes(&a, sc->fp, KNIT_SCHEMA_FP_LEN);
    a_u64(&a, now_ms);
    if ((rc = run_n(s, S_FP_PUT, &a, &n)) != 0 || n == 0)
        return rc; /* already known: its rows are there */
    for (size_t i = 0; i < sc->ntables; i++) {
        const knit_schema_table_t *t = &sc->tables[i];
        for (uint32_t c = 0; c < t->nkeys + t->ncols; c++) {
            int key = c < t->nkeys;
            args_t p = {0};
            a_bytes(&p, sc->fp, KNIT_SCHEMA_FP_LEN);
            a_text(&p, t->name);
            a_u64(&p, c);
            a_text(&p, key ? t->keys[c] : t->cols[c - t->nkeys].name);
            a_u64(&p, key ? 0 : t->cols[c - t->nkeys].orset ? 2 : 1);
            if ((rc = run_n(s, S_FP_COL_PUT, &p, NULL)) != 0)
                return rc;
        }
    }
    return 0;
}

/* store.h's device_seen, as relay_store.h's knit_relay_store_device_seen. */
static int b_device_seen(void *data, const char *principal, const knit_site_t *site,
                         const knit_schema_t *schema, const char *agent, uint64_t now_ms)
{
    knit_pg_store_t *s = data;
    uint8_t old[KNIT_SCHEMA_FP_LEN];
    const uint8_t *fp = schema ? schema->fp : (const uint8_t *)"";
    size_t fplen = schema ? KNIT_SCHEMA_FP_LEN : 0, oldlen = 0;
    char lock[64];
    args_t a = {0};
    PGresult *r;
    int rc;

    if (!agent)
        agent = "";
    if (s->in_txn)
        return set_err(s, KNIT_EINVAL, "device_seen inside a transaction");
    if ((rc = ready(s)) != 0)
        return rc;
    a_text(&a, principal);
    a_bytes(&a, site->b, sizeof site->b);
    if ((rc = run(s, S_DEV_GET, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) == 1) {
        uint64_t last = r_u64(r, 0, 2);
        if (PQgetlength(r, 0, 0) == KNIT_SCHEMA_FP_LEN) {
            oldlen = KNIT_SCHEMA_FP_LEN;
            memcpy(old, PQgetvalue(r, 0, 0), KNIT_SCHEMA_FP_LEN);
        }
        /* Only the time changed, and by less than DEVICE_SEEN_MS: nothing. */
        int same = oldlen == fplen && (!fplen || memcmp(old, fp, KNIT_SCHEMA_FP_LEN) == 0) &&
                   strcmp(PQgetvalue(r, 0, 1), agent) == 0 && now_ms < last + DEVICE_SEEN_MS &&
                   now_ms >= last;
        if (same) {
            PQclear(r);
            return 0;
        }
    }
    PQclear(r);
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%d)", LOCK_DEVICE);
    if ((rc = begin(s, "BEGIN")) != 0 || (rc = exec(s, lock)) != 0)
        goto out;
    if (schema && (rc = put_schema(s, schema, now_ms)) != 0)
        goto out;
    memset(&a, 0, sizeof a);
    a_text(&a, principal);
    a_bytes(&a, site->b, sizeof site->b);
    a_bytes(&a, fp, fplen);
    a_text(&a, agent);
    a_u64(&a, now_ms);
    if ((rc = run_n(s, S_DEV_PUT, &a, NULL)) != 0)
        goto out;
    /* The old schema goes once no device runs it. */
    if (oldlen && (oldlen != fplen || memcmp(old, fp, KNIT_SCHEMA_FP_LEN) != 0)) {
        memset(&a, 0, sizeof a);
        a_bytes(&a, old, KNIT_SCHEMA_FP_LEN);
        if ((rc = run_n(s, S_FP_DROP_COLS, &a, NULL)) != 0 ||
            (rc = run_n(s, S_FP_DROP, &a, NULL)) != 0)
            goto out;
    }
    rc = commit(s);
out:
    rollback(s);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* The identity index (design note 13)                                      */

/* Text of column col of row 0 as an owned copy (NULL for SQL NULL). */
static char *r_dup(const PGresult *r, int col, int *rc)
{
    char *d;
    if (PQgetisnull(r, 0, col))
        return NULL;
    if (!(d = knit__strdup(PQgetvalue(r, 0, col))))
        *rc = KNIT_ENOMEM;
    return d;
}

/* The account statement `which` finds for key into acc[0..n) ("" when
** none). */
static int ident_find(knit_pg_store_t *s, int which, const char *key, char *acc, size_t n)
{
    args_t a = {0};
    PGresult *r;
    int rc;
    acc[0] = '\0';
    if (!key || !*key)
        return 0;
    a_text(&a, key);
    if ((rc = run(s, which, &a, &r)) != 0)
        return rc;
    if (PQntuples(r) == 1)
        snprintf(acc, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

static int tracks_q(knit_pg_store_t *s, const char *account, const char *table, int *is)
{
    args_t a = {0};
    PGresult *r;
    int rc;
    *is = 0;
    a_text(&a, account);
    a_text(&a, table);
    if ((rc = run(s, S_TRACKS, &a, &r)) != 0)
        return rc;
    *is = PQntuples(r) > 0;
    PQclear(r);
    return 0;
}

/* Runs a statement whose parameters are texts t[0..n), then (ms not
** NULL) one int8. */
static int run_texts(knit_pg_store_t *s, int which, const char *const *t, int n, const uint64_t *ms)
{
    args_t a = {0};
    for (int i = 0; i < n; i++)
        a_text(&a, t[i]);
    if (ms)
        a_u64(&a, *ms);
    return run_n(s, which, &a, NULL);
}

/* Drops from b the changes of table `table`, in place, and units left
** empty (relay_store.c's drop_table). */
static void drop_table(knit_batch_t *b, const char *table)
{
    size_t w = 0, wt = 0;
    for (size_t u = 0; u < b->ntxns; u++) {
        knit_txn_t t = b->txns[u];
        size_t first = w;
        for (size_t i = t.first; i < t.first + t.count; i++)
            if (strcmp(b->tables[b->changes[i].table].name, table) != 0)
                b->changes[w++] = b->changes[i];
        if (w > first) {
            b->txns[wt].version = t.version;
            b->txns[wt].first = first;
            b->txns[wt].count = w - first;
            wt++;
        }
    }
    b->nchanges = w;
    b->ntxns = wt;
}

/* Merges the cells of provisional account from into to, inside the open
** transaction, holding both namespaces' locks (design note 3): the
** claim's CRDT union, but for knit_profile (relay_store.c's merge_into).
** *seq gets to's sequence after, 0 when nothing was merged. */
static int merge_into(knit_pg_store_t *s, const char *from, const char *to, uint64_t *seq)
{
    const char *names[2] = {from, to};
    lock_t *locks = NULL, *lt;
    size_t nl;
    uint64_t after = 0;
    int more = 1, rc;
    *seq = 0;
    if ((rc = lock_all(s, names, 2, &locks, &nl)) != 0)
        return rc;
    lt = lock_find(locks, nl, to);
    while (more && rc == 0) {
        knit_batch_t *b = NULL;
        knit_relay_applied_t res;
        uint64_t reached = 0;
        uint32_t to_idx;
        if ((rc = knit_batch_new(&b)) != 0)
            break;
        more = 0;
        if ((rc = catch_up_in(s, from, after, 4096, b, &reached, &more)) == 0) {
            drop_table(b, KNIT_PROFILE_TABLE);
            if (b->nchanges && (rc = knit_batch_ns(b, to, &to_idx)) == 0) {
                for (size_t i = 0; i < b->nchanges; i++)
                    b->changes[i].ns = to_idx;
                if ((rc = apply_push(s, to, lt->id, &lt->seq, b, &res)) == 0) {
                    if (res.last_seq)
                        *seq = res.last_seq;
                    knit_batch_free(res.fanout);
                }
            }
        }
        knit_batch_free(b);
        after = reached;
    }
    if (rc == 0)
        rc = notify_all(s, locks, nl); /* design note 10: other relays' subscribers */
    knit__free(locks);
    return rc;
}

/* The body of identify, inside its transaction (relay_store.c's
** identify_in, statement for statement). */
static int identify_in(knit_pg_store_t *s, const knit_ident_t *in, uint64_t now_ms,
                       knit_ident_result_t *out)
{
    char a[KNIT_IDENT_NS_MAX], b[KNIT_IDENT_NS_MAX], key[512], v[64];
    char *cur[KNIT_PROFILE_NFIELDS + 1] = {NULL}; /* fields, then external_id */
    const char *want[KNIT_PROFILE_NFIELDS + 1];
    uint64_t updated = 0;
    int profiled = 0, rc, n = 0, have_email = out->email[0] != '\0';
    args_t q = {0};
    PGresult *r;
    long len;

    if ((rc = ident_find(s, S_ID_GET, in->id, a, sizeof a)) != 0 ||
        (have_email && (rc = ident_find(s, S_IDENT_BY_EMAIL, out->email, b, sizeof b)) != 0))
        return rc;
    if (!have_email)
        b[0] = '\0';
    if (a[0] && b[0] && strcmp(a, b) != 0) {
        /* The id's account and the email's differ: a provisional account
        ** (no email) moves to the email's, a real one stays. */
        int a_has_email = 0;
        a_text(&q, a);
        if ((rc = run(s, S_IDENT_GET, &q, &r)) != 0)
            return rc;
        a_has_email = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0);
        PQclear(r);
        if (!a_has_email) {
            const char *mv[2] = {a, b};
            if ((rc = run_texts(s, S_ID_MOVE, mv, 2, &now_ms)) != 0 ||
                (rc = run_texts(s, S_IDENT_DROP, mv, 1, NULL)) != 0)
                return rc;
            /* What was written in the provisional account comes along. */
            if ((rc = merge_into(s, a, b, &out->merged_seq)) != 0)
                return rc;
            snprintf(out->moved_from, sizeof out->moved_from, "%s", a);
            snprintf(out->account, sizeof out->account, "%s", b);
            out->action = KNIT_IDENT_RELINKED;
        } else {
            snprintf(out->account, sizeof out->account, "%s", a);
            out->action = KNIT_IDENT_UPDATED;
            out->email_conflict = 1;
            have_email = 0;
        }
    } else if (a[0]) {
        snprintf(out->account, sizeof out->account, "%s", a);
        out->action = KNIT_IDENT_UPDATED;
    } else if (b[0]) {
        const char *put[2] = {in->id, b};
        if ((rc = run_texts(s, S_ID_PUT, put, 2, &now_ms)) != 0)
            return rc;
        snprintf(out->account, sizeof out->account, "%s", b);
        out->action = KNIT_IDENT_RELINKED;
    } else {
        const char *put[2] = {in->id, out->account};
        if (snprintf(out->account, sizeof out->account, "user:%s", in->id) >=
            (int)sizeof out->account)
            return set_err(s, KNIT_EINVAL, "provider id too long");
        /* An erased account is not made again (b_erased's tombstone). */
        if ((rc = key2(key, sizeof key, "erased", out->account, NULL)) != 0 ||
            (rc = meta_get(s, key, v, sizeof v, &len)) != 0)
            return rc;
        if (len >= 0) {
            out->erased = 1;
            return 0;
        }
        if ((rc = run_texts(s, S_IDENT_INS, put + 1, 1, &now_ms)) != 0 ||
            (rc = run_texts(s, S_ID_PUT, put, 2, &now_ms)) != 0)
            return rc;
        out->action = KNIT_IDENT_CREATED;
    }

    /* The account's stored values. */
    memset(&q, 0, sizeof q);
    a_text(&q, out->account);
    if ((rc = run(s, S_IDENT_GET, &q, &r)) != 0)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return set_err(s, KNIT_ECORRUPT, "identity index: %s has an id but no account row",
                       out->account);
    }
    /* email, first_name, last_name, image_url, external_id: KNIT_PROFILE_*
    ** order, then external_id. */
    for (int f = 0; f <= KNIT_PROFILE_NFIELDS; f++)
        cur[f] = r_dup(r, f, &rc);
    updated = r_u64(r, 0, 5);
    profiled = r_u64(r, 0, 6) != 0;
    PQclear(r);
    if (rc)
        goto done;

    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
        want[f] = in->field[f];
    want[KNIT_PROFILE_EMAIL] = have_email ? out->email : NULL;
    want[KNIT_PROFILE_NFIELDS] = in->external_id;
    out->stale = in->updated_ms && in->updated_ms < updated;
    if (!out->stale) {
        for (int f = 0; f <= KNIT_PROFILE_NFIELDS; f++) {
            /* A sign-in fills only what no webhook set. */
            int allowed = in->updated_ms > 0 || updated == 0 || !cur[f];
            if (!want[f] || !allowed || (cur[f] && strcmp(cur[f], want[f]) == 0))
                continue;
            knit__free(cur[f]);
            if (!(cur[f] = knit__strdup(want[f]))) {
                rc = KNIT_ENOMEM;
                goto done;
            }
            if (f < KNIT_PROFILE_NFIELDS)
                out->changed |= 1u << f;
        }
        if (in->updated_ms > updated)
            updated = in->updated_ms;
    }
    out->tracks[0] = in->tracks[0];
    out->tracks[1] = in->tracks[1];
    if ((!out->tracks[0] &&
         (rc = tracks_q(s, out->account, KNIT_PROFILE_TABLE, &out->tracks[0])) != 0) ||
        (!out->tracks[1] &&
         (rc = tracks_q(s, out->account, KNIT_ACTIVITY_TABLE, &out->tracks[1])) != 0))
        goto done;
    if (out->tracks[0] && !profiled) {
        /* The row was never written: all it has, and its liveness. */
        out->new_row = 1;
        profiled = 1;
        for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
            if (cur[f])
                out->changed |= 1u << f;
    }
    if (!out->tracks[0])
        out->changed = 0; /* nothing to write: it is written in full once tracked */
    out->updated_ms = in->updated_ms ? in->updated_ms : now_ms;
    memset(&q, 0, sizeof q);
    a_text(&q, out->account);
    for (int f = 0; f <= KNIT_PROFILE_NFIELDS; f++)
        a_text_or_null(&q, cur[f]);
    a_u64(&q, updated);
    a_u64(&q, (uint64_t)profiled);
    if ((rc = run_n(s, S_IDENT_PUT, &q, &n)) != 0)
        goto done;
    if (n != 1) {
        rc = set_err(s, KNIT_ECORRUPT, "identity index: no account row %s", out->account);
        goto done;
    }
    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++) {
        out->field[f] = cur[f];
        cur[f] = NULL;
    }
done:
    for (int f = 0; f <= KNIT_PROFILE_NFIELDS; f++)
        knit__free(cur[f]);
    return rc;
}

/* Begins a transaction serialized with every other identity write, from
** any relay on the database (design note 13). */
static int begin_ident(knit_pg_store_t *s)
{
    char lock[64];
    int rc;
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%d)", LOCK_IDENT);
    if ((rc = begin(s, "BEGIN")) != 0)
        return rc;
    if ((rc = exec(s, lock)) != 0)
        rollback(s);
    return rc;
}

/* store.h's identify, as relay_store.h's knit_relay_store_identify. */
static int b_identify(void *data, const knit_ident_t *in, uint64_t now_ms, knit_ident_result_t *out)
{
    knit_pg_store_t *s = data;
    int rc;
    memset(out, 0, sizeof *out);
    if (!in->id || !*in->id || strlen(in->id) > 128)
        return set_err(s, KNIT_EINVAL, "identity without an acceptable provider id");
    if (s->in_txn)
        return set_err(s, KNIT_EINVAL, "identify inside a transaction");
    if (knit_relay_normalize_email(in->email, out->email, sizeof out->email) != 0)
        out->email[0] = '\0'; /* not an email this index can hold: matched by id alone */
    if ((rc = begin_ident(s)) != 0)
        return rc;
    rc = identify_in(s, in, now_ms, out);
    if (rc == 0 && !out->erased)
        rc = commit(s);
    rollback(s);
    if (rc != 0)
        knit_relay_ident_result_clear(out);
    return rc;
}

static int b_ident_dirty(void *data, const char *account)
{
    knit_pg_store_t *s = data;
    int rc;
    if ((rc = ready(s)) != 0)
        return rc;
    return run_texts(s, S_IDENT_DIRTY, &account, 1, NULL);
}

/* knit_pg_store_membership's body, inside the open transaction. */
static int membership_in(knit_pg_store_t *s, const char *org, const char *user_id,
                         const char *account, const char *role, int present, uint64_t updated_ms,
                         int *stale)
{
    args_t a = {0};
    PGresult *r;
    int rc;
    *stale = 0;
    a_text(&a, org);
    a_text(&a, user_id);
    if ((rc = run(s, S_MEMBER_GET, &a, &r)) != 0)
        return rc;
    /* Deliveries come out of order: an older event changes nothing. */
    *stale = PQntuples(r) == 1 && r_u64(r, 0, 2) > updated_ms;
    PQclear(r);
    if (*stale)
        return 0;
    a_text(&a, account ? account : "");
    a_text(&a, role ? role : "");
    a_u64(&a, present != 0);
    a_u64(&a, updated_ms);
    return run_n(s, S_MEMBER_PUT, &a, NULL);
}

int knit_pg_store_membership(knit_pg_store_t *s, const char *org, const char *user_id,
                             const char *account, const char *role, int present,
                             uint64_t updated_ms, int *stale) /* see store_pg.h */
{
    int rc;
    *stale = 0;
    if (s->in_txn)
        return set_err(s, KNIT_EINVAL, "membership inside a transaction");
    if ((rc = begin_ident(s)) != 0)
        return rc;
    if ((rc = membership_in(s, org, user_id, account, role, present, updated_ms, stale)) == 0)
        rc = commit(s);
    rollback(s);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Erased accounts and webhook deliveries (design note 14)                  */

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* relay_store.c's knit_relay_store_erase_account, inside the open
** transaction (which holds LOCK_IDENT): the tombstone, the identity, then
** the account's namespace and those claimed into it, all locked at once in
** name order (design note 3).  *erased counts the namespaces that held
** something. */
static int erase_account_in(knit_pg_store_t *s, const char *ns, size_t *erased)
{
    char key[512], ms[24];
    const char **names;
    lock_t *locks = NULL;
    size_t n = 0, nl = 0;
    args_t a = {0};
    PGresult *r;
    int rc;
    *erased = 0;
    if ((rc = key2(key, sizeof key, "erased", ns, NULL)) != 0)
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    snprintf(ms, sizeof ms, "%llu", (unsigned long long)wall_ms());
    if ((rc = meta_put(s, S_META_SET, key, ms, strlen(ms))) != 0 ||
        (rc = run_texts(s, S_ID_FORGET, &ns, 1, NULL)) != 0 ||
        (rc = run_texts(s, S_IDENT_DROP, &ns, 1, NULL)) != 0 ||
        (rc = run_texts(s, S_MEMBER_FORGET, &ns, 1, NULL)) != 0)
        return rc;
    a_text(&a, ns);
    if ((rc = run(s, S_CLAIMED_INTO, &a, &r)) != 0)
        return rc;
    if (!(names = knit__malloc(((size_t)PQntuples(r) + 1) * sizeof *names))) {
        PQclear(r);
        return KNIT_ENOMEM;
    }
    for (int i = 0; i < PQntuples(r); i++)
        names[n++] = PQgetvalue(r, i, 0);
    names[n++] = ns;
    if ((rc = lock_all(s, names, n, &locks, &nl)) == 0) {
        for (size_t i = 0; i < nl && rc == 0; i++) {
            int found = 0;
            if ((rc = erase_ns_in(s, &locks[i], &found)) == 0 && found)
                (*erased)++;
        }
    }
    knit__free(locks);
    knit__free(names);
    PQclear(r);
    return rc;
}

int knit_pg_store_erase_account(knit_pg_store_t *s, const char *ns,
                                size_t *erased) /* see store_pg.h */
{
    int rc;
    *erased = 0;
    if (s->in_txn)
        return set_err(s, KNIT_EINVAL, "erase inside a transaction");
    if ((rc = begin_ident(s)) != 0)
        return rc;
    if ((rc = erase_account_in(s, ns, erased)) == 0)
        rc = commit(s);
    rollback(s);
    if (rc == 0 && *erased == 0)
        rc = set_err(s, KNIT_ENOTFOUND, "no namespace %s", ns);
    return rc;
}

/* Removes the tombstone of ns (inside the open transaction, or alone). */
static int unerase_in(knit_pg_store_t *s, const char *ns, int *cleared)
{
    char key[512];
    args_t a = {0};
    int rc, n = 0;
    *cleared = 0;
    if (key2(key, sizeof key, "erased", ns, NULL) != 0)
        return set_err(s, KNIT_EINVAL, "namespace name too long");
    a_text(&a, key);
    if ((rc = run_n(s, S_META_DEL, &a, &n)) != 0)
        return rc;
    *cleared = n > 0;
    return 0;
}

int knit_pg_store_unerase(knit_pg_store_t *s, const char *ns, int *cleared) /* see store_pg.h */
{
    int rc;
    *cleared = 0;
    if (!s->in_txn && (rc = ready(s)) != 0)
        return rc;
    return unerase_in(s, ns, cleared);
}

int knit_pg_store_ident_get(knit_pg_store_t *s, const char *id,
                            char account[KNIT_IDENT_NS_MAX]) /* see store_pg.h */
{
    int rc;
    account[0] = '\0';
    if (!s->in_txn && (rc = ready(s)) != 0)
        return rc;
    return ident_find(s, S_ID_GET, id, account, KNIT_IDENT_NS_MAX);
}

/* The webhook seam (webhook.h knit_webhook_store_t): one transaction per
** delivery, serialized with every identity write by LOCK_IDENT. */
static int w_begin(void *data)
{
    knit_pg_store_t *s = data;
    if (s->in_txn)
        return set_err(s, KNIT_EINVAL, "a transaction is already open");
    return begin_ident(s);
}

static int w_commit(void *data)
{
    return commit(data);
}

static void w_rollback(void *data)
{
    rollback(data);
}

static int w_seen(void *data, const char *id, int *seen)
{
    knit_pg_store_t *s = data;
    args_t a = {0};
    PGresult *r;
    int rc;
    *seen = 0;
    a_text(&a, id);
    if ((rc = run(s, S_WH_SEEN, &a, &r)) != 0)
        return rc;
    *seen = PQntuples(r) > 0;
    PQclear(r);
    return 0;
}

/* relay_store.c's knit_relay_store_webhook_record, on knit_webhook and
** knit_webhook_user. */
static int w_record(void *data, const char *id, const char *user, uint64_t updated_ms, int *stale)
{
    knit_pg_store_t *s = data;
    args_t a = {0};
    PGresult *r;
    int rc;
    *stale = 0;
    if (user && updated_ms) {
        a_text(&a, user);
        if ((rc = run(s, S_WH_USER_GET, &a, &r)) != 0)
            return rc;
        *stale = PQntuples(r) == 1 && r_u64(r, 0, 0) > updated_ms;
        PQclear(r);
        a_u64(&a, updated_ms);
        if (!*stale && (rc = run_n(s, S_WH_USER_PUT, &a, NULL)) != 0)
            return rc;
    }
    memset(&a, 0, sizeof a);
    a_text(&a, id);
    a_text_or_null(&a, user);
    a_u64(&a, updated_ms);
    return run_n(s, S_WH_PUT, &a, NULL);
}

static int w_ident_get(void *data, const char *id, char account[KNIT_IDENT_NS_MAX])
{
    return knit_pg_store_ident_get(data, id, account);
}

static int w_erase_account(void *data, const char *ns, size_t *erased)
{
    knit_pg_store_t *s = data;
    int rc = erase_account_in(s, ns, erased);
    if (rc == 0 && *erased == 0)
        rc = set_err(s, KNIT_ENOTFOUND, "no namespace %s", ns);
    return rc;
}

static int w_unerase(void *data, const char *ns, int *cleared)
{
    return unerase_in(data, ns, cleared);
}

/* b_identify inside the delivery's transaction. */
static int w_identify(void *data, const knit_ident_t *in, uint64_t now_ms, knit_ident_result_t *out)
{
    knit_pg_store_t *s = data;
    int rc;
    memset(out, 0, sizeof *out);
    if (!in->id || !*in->id || strlen(in->id) > 128)
        return set_err(s, KNIT_EINVAL, "identity without an acceptable provider id");
    if (knit_relay_normalize_email(in->email, out->email, sizeof out->email) != 0)
        out->email[0] = '\0';
    if ((rc = identify_in(s, in, now_ms, out)) != 0)
        knit_relay_ident_result_clear(out);
    return rc;
}

static int w_membership(void *data, const char *org, const char *user_id, const char *account,
                        const char *role, int present, uint64_t updated_ms, int *stale)
{
    return membership_in(data, org, user_id, account, role, present, updated_ms, stale);
}

/* The relay's rows as a push into ns, announced to other relays at
** commit (design note 10). */
static int w_apply(void *data, const char *ns, const knit_batch_t *b, uint64_t *last_seq)
{
    knit_pg_store_t *s = data;
    knit_relay_applied_t res;
    lock_t *locks = NULL;
    size_t nl;
    int rc;
    *last_seq = 0;
    if ((rc = lock_all(s, &ns, 1, &locks, &nl)) != 0)
        return rc;
    if ((rc = apply_push(s, ns, locks[0].id, &locks[0].seq, b, &res)) == 0) {
        *last_seq = res.last_seq;
        knit_batch_free(res.fanout);
        rc = notify_all(s, locks, nl);
    }
    knit__free(locks);
    return rc;
}

static const char *w_errmsg(void *data)
{
    return knit_pg_store_errmsg(data);
}

void knit_pg_store_webhooks(knit_pg_store_t *s, struct knit_webhook_store_s *w) /* see store_pg.h */
{
    memset(w, 0, sizeof *w);
    w->begin = w_begin;
    w->commit = w_commit;
    w->rollback = w_rollback;
    w->seen = w_seen;
    w->record = w_record;
    w->ident_get = w_ident_get;
    w->erase_account = w_erase_account;
    w->erase_in_txn = 1;
    w->unerase = w_unerase;
    w->identify = w_identify;
    w->membership = w_membership;
    w->apply = w_apply;
    w->errmsg = w_errmsg;
    w->data = s;
}

/* store.h's memberships, as relay_store.h's knit_relay_store_memberships. */
static int b_memberships(void *data, const char *account, knit_relay_member_fn fn, void *arg)
{
    knit_pg_store_t *s = data;
    args_t a = {0};
    PGresult *r;
    int rc;
    if ((rc = ready(s)) != 0)
        return rc;
    a_text(&a, account);
    if ((rc = run(s, S_MEMBER_LIST, &a, &r)) != 0)
        return rc;
    for (int i = 0; i < PQntuples(r); i++)
        fn(arg, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), r_u64(r, i, 2) != 0, r_u64(r, i, 3));
    PQclear(r);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* REJECT's state (design note 13)                                          */

/* 1 when the cell at row i is to be sent for refused change ch of bt:
** every cell of the row when its liveness is refused (whole), else only
** the refused column's; never one naming an unknown table or column (a
** damaged cell is no state to send). */
static int refused_cell(ctabs_t *C, PGresult *r, int i, const knit_batch_table_t *bt,
                        const knit_change_t *ch, int whole)
{
    const char *col = PQgetvalue(r, i, 2);
    ctab_t *t;
    int rc, known = !col[0];
    if ((rc = ctab_get(C, PQgetvalue(r, i, 0), &t)) != 0)
        return rc;
    for (uint32_t k = 0; t && !known && k < t->ncols; k++)
        known = strcmp(t->cols[k], col) == 0;
    if (!t || !known)
        return 0;
    if (whole)
        return 1;
    if (!col[0] || ch->col == 0 || ch->col > bt->ncols)
        return 0;
    return strcmp(col, bt->cols[ch->col - 1]) == 0;
}

/* The cells of refused changes, inside an open transaction. */
static int cells_in(knit_pg_store_t *s, const char *ns, const knit_batch_t *b,
                    const size_t *changes, size_t n, knit_batch_t *out)
{
    ctabs_t C;
    knit_value_t *pkbuf = NULL;
    uint32_t pkcap = 0, ns_idx;
    uint64_t cur = 0;
    uint8_t *key = NULL;
    int rc;

    memset(&C, 0, sizeof C);
    C.s = s;
    C.b = out;
    if ((rc = knit_batch_ns(out, ns, &ns_idx)) != 0 || (rc = ns_get(s, ns, &C.nsid, &cur)) != 0 ||
        C.nsid == 0)
        return rc;
    if ((rc = knit_batch_begin(out, cur ? cur : 1)) != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (changes[i] >= b->nchanges)
            continue;
        const knit_change_t *ch = &b->changes[changes[i]];
        const knit_batch_table_t *bt = &b->tables[ch->table];
        int whole = 0, seen = 0;
        /* One reason per row is enough when its liveness is refused. */
        for (size_t j = 0; j < n; j++) {
            if (changes[j] >= b->nchanges)
                continue;
            const knit_change_t *o = &b->changes[changes[j]];
            int same = o->table == ch->table;
            for (uint32_t k = 0; same && k < bt->npk; k++)
                same = knit_value_cmp(&o->pk[k], &ch->pk[k]) == 0;
            if (same && o->col == 0)
                whole = 1;
            if (same && j < i && (o->col == 0 || whole))
                seen = 1;
        }
        if (seen)
            continue;
        size_t len = 0;
        for (uint32_t k = 0; k < bt->npk; k++)
            len += knit_value_encoded_size(&ch->pk[k]);
        knit__free(key);
        if (!(key = knit__malloc(len + 1))) {
            rc = KNIT_ENOMEM;
            break;
        }
        len = 0;
        for (uint32_t k = 0; k < bt->npk; k++)
            len += knit_value_encode(&ch->pk[k], key + len);
        args_t a = {0};
        PGresult *r;
        a_u64(&a, (uint64_t)C.nsid);
        a_text(&a, bt->name);
        a_bytes(&a, key, len);
        if ((rc = run(s, S_ROW_CELLS, &a, &r)) != 0)
            break;
        for (int k = 0; k < PQntuples(r) && rc == 0; k++) {
            if ((rc = refused_cell(&C, r, k, bt, ch, whole)) == 1)
                rc = catch_row(&C, ns, r, k, ns_idx, &pkbuf, &pkcap);
            if (rc > 0)
                rc = 0; /* skipped */
        }
        PQclear(r);
    }
    ctabs_free(&C);
    knit__free(pkbuf);
    knit__free(key);
    return rc;
}

/* store.h's cells, as relay_store.h's knit_relay_store_cells: one
** snapshot, like catch-up (design note 6). */
static int b_cells(void *data, const char *ns, const knit_batch_t *b, const size_t *changes,
                   size_t n, knit_batch_t **out)
{
    knit_pg_store_t *s = data;
    knit_batch_t *o;
    int own = !s->in_txn, rc;
    *out = NULL;
    if ((rc = knit_batch_new(&o)) != 0)
        return rc;
    if (own && (rc = begin(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) != 0) {
        knit_batch_free(o);
        return rc;
    }
    rc = cells_in(s, ns, b, changes, n, o);
    if (own) {
        if (rc == 0)
            rc = commit(s);
        rollback(s);
    }
    if (rc) {
        knit_batch_free(o);
        return rc;
    }
    *out = o;
    return 0;
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

/* The notifications libpq holds for ln. */
static void ln_drain(knit_pg_store_t *s)
{
    PGnotify *n;
    while (s->ln && (n = PQnotifies(s->ln)) != NULL) {
        /* The engine fans out its own commits already. */
        if (n->be_pid != PQbackendPID(s->db))
            ln_announce(s, n->extra);
        PQfreemem(n);
    }
}

static void on_ln_readable(uv_poll_t *h, int status, int events)
{
    knit_pg_store_t *s = h->data;
    (void)events;
    if (status < 0 || !PQconsumeInput(s->ln)) {
        ln_drop(s);
        return;
    }
    ln_drain(s);
    if (PQstatus(s->ln) != CONNECTION_OK)
        ln_drop(s);
}

/* One round trip on ln within the deadline (note 11): 1 if it succeeded. */
static int ln_exec(knit_pg_store_t *s, const char *sql, PGresult **out)
{
    int timed_out;
    PGresult *r = NULL;
    *out = NULL;
    if (PQsendQuery(s->ln, sql))
        r = pq_wait(s->ln, mono_ms() + (uint64_t)s->timeout_ms, &timed_out);
    if (r && ok_status(r)) {
        *out = r;
        return 1;
    }
    PQclear(r);
    return 0;
}

/* The poll after a reconnect: every namespace's sequence.  0 when the
** connection failed. */
static int ln_poll_all(knit_pg_store_t *s)
{
    PGresult *r;
    if (!ln_exec(s, "SELECT name || ':' || seq FROM knit_ns WHERE seq > 0", &r))
        return 0;
    s->repoll = 0;
    s->reconnect = 0;
    for (int i = 0; i < PQntuples(r); i++)
        ln_announce(s, PQgetvalue(r, i, 0));
    PQclear(r);
    ln_drain(s); /* what arrived during the round trip */
    return 1;
}

/* Makes the LISTEN connection; on failure tries again in a second. */
static void ln_connect(knit_pg_store_t *s)
{
    PGresult *r;
    char keep[sizeof s->errmsg];
    memcpy(keep, s->errmsg, sizeof keep); /* errmsg is the main connection's */
    int rc = connect_to(s, &s->ln);
    memcpy(s->errmsg, keep, sizeof keep);
    if (rc || !ln_exec(s, "LISTEN knit_seq", &r))
        goto retry;
    PQclear(r);
    /* After LISTEN: nothing falls between the two. */
    if ((s->reconnect || s->repoll) && !ln_poll_all(s))
        goto retry;
    if (!(s->poll = knit__malloc(sizeof *s->poll)))
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
    if (!s->loop)
        return;
    if (!s->ln)
        ln_connect(s);
    else if (s->repoll && !ln_poll_all(s))
        ln_drop(s);
}

/* The main connection came back after an outage: subscribers whose reads
** failed meanwhile are put back into catch-up by a poll, from the loop
** (not from inside the operation that reconnected). */
static void ln_wake(knit_pg_store_t *s)
{
    if (!s->loop || !s->timer)
        return;
    s->repoll = 1;
    if (s->ln)
        uv_timer_start(s->timer, on_ln_timer, 0, 0);
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

/* ---------------------------------------------------------------------- */
/* The status page and /metrics                                             */

/* Text results (exec_r): the status page reads the namespace table only,
** as the SQLite store's knit_relay_store_busiest does. */
static int b_busiest(void *data, size_t limit, knit_relay_ns_fn fn, void *fn_data, uint64_t *total)
{
    knit_pg_store_t *s = data;
    char sql[160];
    PGresult *r;
    int rc;
    *total = 0;
    if ((rc = ready(s)) != 0 || (rc = exec_r(s, "SELECT count(*) FROM knit_ns", &r)) != 0)
        return rc;
    *total = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    snprintf(sql, sizeof sql, "SELECT name, seq FROM knit_ns ORDER BY seq DESC, name LIMIT %zu",
             limit);
    if ((rc = exec_r(s, sql, &r)) != 0)
        return rc;
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        knit_relay_ns_info_t ns = {PQgetvalue(r, i, 0), strtoull(PQgetvalue(r, i, 1), NULL, 10), 0,
                                   0};
        rc = fn(fn_data, &ns);
    }
    PQclear(r);
    return rc;
}

static int b_size(void *data, int64_t *bytes)
{
    knit_pg_store_t *s = data;
    PGresult *r;
    int rc;
    *bytes = 0;
    if ((rc = ready(s)) != 0 ||
        (rc = exec_r(s, "SELECT pg_database_size(current_database())", &r)) != 0)
        return rc;
    *bytes = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Read-only listings (sync-inspect relay, sync-inspect digest)             */

/* A read-only handle checks the schema and never creates or upgrades it
** (the relay does that when it opens the database); every session
** transaction is read-only besides, and the listings below read in READ
** ONLY transactions of their own, so nothing here can write even after a
** reconnect.  They use text results (exec_r): bytea comes back through
** encode(..., 'hex'), and the order is the SQLite store's (text COLLATE
** "C" and bytea both compare as memcmp, then length). */
int knit_pg_store_open_readonly(const char *conninfo, knit_pg_store_t **out) /* see store_pg.h */
{
    knit_pg_store_t *s;
    PGresult *r;
    long v;
    int rc, exists;
    if ((rc = store_connect(conninfo, out)) != 0)
        return rc;
    s = *out;
    if ((rc = exec(s, "SET client_min_messages = warning")) != 0 ||
        (rc = exec(s, "SET default_transaction_read_only = on")) != 0 ||
        (rc = exec_r(s, "SELECT to_regclass('knit_meta') IS NOT NULL", &r)) != 0)
        return rc;
    exists = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!exists)
        return set_err(s, KNIT_ENOTREPLICA,
                       "the database has no knit_meta table (sync-relay makes it on first open)");
    if ((rc = exec_r(s, "SELECT convert_from(value, 'UTF8') FROM knit_meta WHERE key = 'schema'",
                     &r)) != 0)
        return rc;
    v = PQntuples(r) == 1 ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    if (v < 1)
        return set_err(s, KNIT_ENOTREPLICA,
                       "knit_meta holds no schema version: not a knit relay store");
    if (v != KNIT_PG_SCHEMA_VERSION)
        return set_err(s, KNIT_EVERSION,
                       "the PostgreSQL store has schema version %ld, %s than this one's (%d)%s", v,
                       v > KNIT_PG_SCHEMA_VERSION ? "newer" : "older", KNIT_PG_SCHEMA_VERSION,
                       v > KNIT_PG_SCHEMA_VERSION
                           ? ": upgrade knit"
                           : ": sync-relay upgrades it in place the next time it opens it");
    return prepare_all(s);
}

int knit_pg_store_list(knit_pg_store_t *s, knit_relay_ns_fn fn, void *data) /* see store_pg.h */
{
    PGresult *r;
    int rc;
    if ((rc = ready(s)) != 0 ||
        (rc = exec_r(s,
                     "SELECT n.name, n.seq, coalesce(c.nrows, 0), coalesce(c.ncells, 0)"
                     " FROM knit_ns n LEFT JOIN (SELECT ns, count(*) FILTER (WHERE col = '')"
                     " AS nrows, count(*) AS ncells FROM knit_cell GROUP BY ns) c"
                     " ON c.ns = n.id ORDER BY n.name",
                     &r)) != 0)
        return rc;
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        knit_relay_ns_info_t ns = {PQgetvalue(r, i, 0), strtoull(PQgetvalue(r, i, 1), NULL, 10),
                                   strtoull(PQgetvalue(r, i, 2), NULL, 10),
                                   strtoull(PQgetvalue(r, i, 3), NULL, 10)};
        rc = fn(data, &ns);
    }
    PQclear(r);
    return rc;
}

int knit_pg_store_list_anon(knit_pg_store_t *s,
                            int (*fn)(void *data, const char *id, uint64_t created_ms),
                            void *data) /* see store_pg.h */
{
    PGresult *r;
    int rc;
    if ((rc = ready(s)) != 0 ||
        (rc = exec_r(s, "SELECT id, created FROM knit_anon ORDER BY id COLLATE \"C\"", &r)) != 0)
        return rc;
    for (int i = 0; !rc && i < PQntuples(r); i++)
        rc = fn(data, PQgetvalue(r, i, 0), strtoull(PQgetvalue(r, i, 1), NULL, 10));
    PQclear(r);
    return rc;
}

/* One fingerprint of the schema listing, built from the rows read; freed
** after its callback. */
typedef struct ls_fp_s {
    knit_schema_table_t *tabs; /* tables (names, keys, cols owned) */
    size_t ntabs;              /* count */
    knit_relay_device_t *devs; /* devices (strings not owned: the result's) */
    size_t ndevs;              /* count */
} ls_fp_t;

static void ls_fp_free(ls_fp_t *f)
{
    knit_relay_schema_tables_free(f->tabs, f->ntabs);
    knit__free(f->devs);
    memset(f, 0, sizeof *f);
}

/* Decodes exactly n bytes of hex text into out; -1 if it is not that. */
static int ls_unhex(const char *hex, uint8_t *out, size_t n)
{
    if (strlen(hex) != 2 * n)
        return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        const char *digits = "0123456789abcdef", *d = hex[i] ? strchr(digits, hex[i]) : NULL;
        if (!d)
            return -1;
        out[i / 2] = (uint8_t)(i % 2 ? out[i / 2] << 4 | (d - digits) : (d - digits));
    }
    return 0;
}

/* Appends column row i (fp, tbl, name, kind) to f: rows come by table,
** then position (keys first). */
static int ls_add_col(ls_fp_t *f, const PGresult *r, int i)
{
    return knit_relay_schema_add_col(&f->tabs, &f->ntabs, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                                     atoi(PQgetvalue(r, i, 3)));
}

/* Collects the devices of fingerprint fp (hex; "" for none reported). */
static int ls_devices(ls_fp_t *f, const PGresult *d, const char *fp)
{
    for (int i = 0; i < PQntuples(d); i++) {
        knit_relay_device_t *v;
        if (strcmp(PQgetvalue(d, i, 0), fp) != 0)
            continue;
        if (!(v = knit__realloc(f->devs, (f->ndevs + 1) * sizeof *v)))
            return KNIT_ENOMEM;
        f->devs = v;
        v = &f->devs[f->ndevs++];
        memset(v, 0, sizeof *v);
        if (ls_unhex(PQgetvalue(d, i, 2), v->site.b, sizeof v->site.b) != 0)
            memset(v->site.b, 0, sizeof v->site.b);
        v->principal = PQgetvalue(d, i, 1);
        v->agent = PQgetvalue(d, i, 3);
        v->first_seen_ms = strtoull(PQgetvalue(d, i, 4), NULL, 10);
        v->last_seen_ms = strtoull(PQgetvalue(d, i, 5), NULL, 10);
    }
    return 0;
}

int knit_pg_store_list_schemas(knit_pg_store_t *s,
                               int (*fn)(void *data, const knit_relay_schema_info_t *info),
                               void *data) /* see store_pg.h */
{
    PGresult *fps = NULL, *cols = NULL, *devs = NULL;
    ls_fp_t f;
    int rc, r = 0;

    memset(&f, 0, sizeof f);
    /* One snapshot for the whole listing, as the SQLite store's. */
    if ((rc = begin(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) != 0 ||
        (rc = exec_r(s,
                     "SELECT encode(fp, 'hex'), first_seen FROM knit_schema_fp"
                     " ORDER BY first_seen, fp",
                     &fps)) != 0 ||
        (rc = exec_r(s,
                     "SELECT encode(fp, 'hex'), tbl, name, kind FROM knit_schema_col"
                     " ORDER BY fp, tbl, pos",
                     &cols)) != 0 ||
        (rc = exec_r(s,
                     "SELECT encode(fp, 'hex'), principal, encode(site, 'hex'), agent,"
                     " first_seen, last_seen FROM knit_device ORDER BY principal, site",
                     &devs)) != 0)
        goto out;
    for (int i = 0; i < PQntuples(fps); i++) {
        const char *hex = PQgetvalue(fps, i, 0);
        knit_relay_schema_info_t info;
        knit_schema_t tmp;
        memset(&tmp, 0, sizeof tmp);
        if (ls_unhex(hex, tmp.fp, sizeof tmp.fp) != 0)
            continue; /* not ours: skip rather than misread */
        for (int c = 0; !rc && c < PQntuples(cols); c++)
            if (strcmp(PQgetvalue(cols, c, 0), hex) == 0)
                rc = ls_add_col(&f, cols, c);
        if (rc || (rc = ls_devices(&f, devs, hex)) != 0)
            goto out;
        tmp.tables = f.tabs;
        tmp.ntables = f.ntabs;
        memset(&info, 0, sizeof info);
        info.reported = 1;
        info.schema = &tmp;
        info.first_seen_ms = strtoull(PQgetvalue(fps, i, 1), NULL, 10);
        info.devices = f.devs;
        info.ndevices = f.ndevs;
        r = f.ndevs ? fn(data, &info) : 0;
        ls_fp_free(&f);
        if (r)
            goto out;
    }
    if ((rc = ls_devices(&f, devs, "")) == 0 && f.ndevs) {
        knit_relay_schema_info_t info;
        memset(&info, 0, sizeof info);
        info.devices = f.devs;
        info.ndevices = f.ndevs;
        r = fn(data, &info);
    }
out:
    ls_fp_free(&f);
    PQclear(fps);
    PQclear(cols);
    PQclear(devs);
    if (rc == 0)
        rc = commit(s);
    rollback(s);
    return rc ? rc : r;
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
    b->device_seen = b_device_seen;
    b->identify = b_identify;
    b->ident_dirty = b_ident_dirty;
    b->cells = b_cells;
    b->data = s;
    b->attach = b_attach;
    b->memberships = b_memberships;
    b->busiest = b_busiest;
    b->size = b_size;
}
