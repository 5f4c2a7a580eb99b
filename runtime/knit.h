/*
** knit.h: the public API of libknit, an offline-first sync runtime for SQLite.
**
** An application keeps its data in an ordinary SQLite file, the replica.
** knit_track() makes a table synced: triggers written in plain SQL record
** every local write, from any connection in any language; knit stamps them
** with a hybrid logical clock, hands them out as change batches
** (knit_changes_since) and merges batches from other replicas (knit_apply) so
** that replicas that have seen the same changes hold the same rows.
**
** Conventions
**   - Functions return 0 or a negative KNIT_E* code (knit_errors.h);
**     knit_strerror() turns one into a message, knit_errmsg() gives the
**     replica's last detailed message (e.g. which column refused tracking).
**   - Out-parameters come last and are marked OUT.
**   - A knit_t is used by one thread at a time.  Any number of knit_t and
**     plain sqlite3 connections, in any processes, may share one file.
**   - Ownership: a knit_batch_t owns every byte reachable from it (names,
**     keys, values) until knit_batch_free().  Strings passed in are copied.
**     Pointers handed to callbacks are valid only during the call.
*/
#ifndef KNIT_H
#define KNIT_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "hlc.h"
#include "knit_errors.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------------- */
/* Change batches: the unit knit_changes_since() produces, knit_apply()    */
/* consumes and the wire protocol carries.                                 */

typedef struct knit_batch_table_s {
    char *name;     /* table name */
    uint32_t npk;   /* primary-key column count (values per change key) */
    uint32_t ncols; /* tracked non-key columns */
    char **cols;    /* their names, in the order column indexes use */
    uint8_t *orset; /* per column: 1 = OR-set, 0 = LWW register */
} knit_batch_table_t;

/* One cell change.  col 0 is the row's liveness (its causal length); col c
** >= 1 is tables[table].cols[c - 1].  For an LWW column, value is the value
** written; for an OR-set column it is a BLOB holding the set's whole state
** (knit_orset_encode) with sites numbered by the batch's site table; for
** liveness it is NULL. */
typedef struct knit_change_s {
    uint32_t ns;        /* index into batch->ns */
    uint32_t table;     /* index into batch->tables */
    uint32_t col;       /* 0 = liveness, else 1 + column index */
    uint32_t site;      /* index into batch->sites: who wrote it */
    knit_value_t *pk;   /* tables[table].npk key values */
    knit_value_t value; /* see above */
    uint64_t cl;        /* causal length of the row life it belongs to */
    uint64_t hlc;       /* stamp; for an OR-set, the stamp of its latest op */
} knit_change_t;

/* A group of changes that travels and applies as one unit: the surviving
** changes of one stamp of local writes, or of several merged into one
** (knit_batch_coalesce; see docs/ARCHITECTURE.md). */
typedef struct knit_txn_s {
    uint64_t version; /* origin's local version, or relay sequence */
    size_t first;     /* index of its first change in batch->changes */
    size_t count;     /* number of changes */
} knit_txn_t;

typedef struct knit_batch_s {
    char **ns;                  /* namespace names */
    size_t nns;                 /* count */
    knit_site_t *sites;         /* site ids */
    size_t nsites;              /* count */
    knit_batch_table_t *tables; /* table descriptions */
    size_t ntables;             /* count */
    knit_change_t *changes;     /* every change, txn by txn */
    size_t nchanges;            /* count */
    knit_txn_t *txns;           /* the units, in order */
    size_t ntxns;               /* count */
    void *priv;                 /* allocator state; do not touch */
} knit_batch_t;

KNIT_EXTERN int knit_batch_new(knit_batch_t **out /* OUT */);
KNIT_EXTERN void knit_batch_free(knit_batch_t *b); /* NULL is a no-op */
/* Intern a namespace / site / table and return its index (existing entries
** are reused; a table must then match exactly, else KNIT_EINVAL). */
KNIT_EXTERN int knit_batch_ns(knit_batch_t *b, const char *name, uint32_t *idx /* OUT */);
KNIT_EXTERN int knit_batch_site(knit_batch_t *b, const knit_site_t *s, uint32_t *idx /* OUT */);
KNIT_EXTERN int knit_batch_table(knit_batch_t *b, const char *name, uint32_t npk, uint32_t ncols,
                                 const char *const *cols, const uint8_t *orset,
                                 uint32_t *idx /* OUT */);
/* Start a new unit; later knit_batch_add() calls go into it. */
KNIT_EXTERN int knit_batch_begin(knit_batch_t *b, uint64_t version);
/* Append a copy of c (key values and value bytes copied) to the open unit;
** indexes are checked against the batch's tables (KNIT_EINVAL). */
KNIT_EXTERN int knit_batch_add(knit_batch_t *b, const knit_change_t *c);
/* Merges every unit of b into one, with the last unit's version, its
** changes ordered by namespace, table, key, causal length and column, so
** that each row's cells travel under one row head (PROTOCOL.md §4) and
** take one relay sequence.  A receiver applies the merged unit in one
** transaction, so every original unit still applies whole.  Meant for
** knit_changes_since's output, where each cell appears once.  0, or
** KNIT_ENOMEM (b unchanged). */
KNIT_EXTERN int knit_batch_coalesce(knit_batch_t *b);

/* ---------------------------------------------------------------------- */
/* Replicas                                                                */

typedef struct knit_s knit_t;

/* Milliseconds since the Unix epoch; tests inject their own. */
typedef uint64_t (*knit_clock_fn)(void *data);

typedef struct knit_options_s {
    int readonly;          /* open read-only; never writes, never creates */
    int busy_timeout_ms;   /* wait on other writers; 0 = default 5000 */
    knit_clock_fn clock;   /* NULL = the system clock */
    void *clock_data;      /* passed to clock */
    uint64_t max_drift_ms; /* refuse remote stamps this far ahead; 0 = 5 minutes */
    int cache_kib;         /* page cache of knit's connection; 0 = 32768 (32 MiB) */
} knit_options_t;

/* Opens or creates a replica.  A new file (or a plain SQLite file without
** knit metadata) gets knit's metadata tables and a fresh site id.  A
** replica copied from elsewhere (a copied file, a restored backup) is
** detected and takes a new site id before it writes; the changes its
** original had not had acknowledged stay its own local changes
** (knit_changes_since local_only), so the copy pushes them.  KNIT_ENOTREPLICA if the file is not
*SQLite; KNIT_EVERSION if
** its metadata is newer than this library; KNIT_EINVAL for "", ":memory:"
** and "file:" URIs (a replica is a file that other connections open too).
** On error *out is NULL and the file is unchanged. */
KNIT_EXTERN int knit_open(const char *path, const knit_options_t *opt, knit_t **out /* OUT */);
/* Closes the replica; NULL is a no-op. */
KNIT_EXTERN void knit_close(knit_t *k);
/* The last error's detailed message ("" if none); valid until the next call. */
KNIT_EXTERN const char *knit_errmsg(knit_t *k);
/* A plain connection (struct sqlite3 *) to the replica for the app's own
** SQL, opened on first call and closed by knit_close.  It is not knit's
** internal connection: its writes are captured like any connection's and
** noticed by knit_poll.  NULL if it cannot be opened (knit_errmsg says). */
KNIT_EXTERN void *knit_db(knit_t *k);
KNIT_EXTERN int knit_site(knit_t *k, knit_site_t *out /* OUT */);
/* The replica's file name as given to knit_open (valid until knit_close). */
KNIT_EXTERN const char *knit_filename(knit_t *k);

/* Makes an existing table synced.  spec: NULL or "" (all columns LWW), or a
** comma-separated list such as "tags:orset,labels:orset".  Existing rows are
** backfilled as changes.  Re-tracking is a no-op, except that columns added
** since (ALTER TABLE ADD COLUMN) are picked up.  KNIT_ESCHEMA with a message
** (knit_errmsg) saying why a table cannot be tracked. */
KNIT_EXTERN int knit_track(knit_t *k, const char *table, const char *spec);

/* Stamps local writes captured since the last stamp (knit does this itself
** before it reads changes or applies a batch): one new unit, or several of
** at most 65,536 cells each, in commit order, when the writes may change
** more (docs/ARCHITECTURE.md, Stamping).  Returns the number of rows
** stamped (>= 0) or an error. */
KNIT_EXTERN int knit_stamp(knit_t *k);

typedef struct knit_since_opts_s {
    int local_only;     /* only changes this replica wrote */
    size_t max_changes; /* stop after the unit that reaches this (and hold
                           about this many in memory); 0 = all */
    const char *ns;     /* only this namespace; NULL = all */
} knit_since_opts_t;

/* Changes with local version > version, in version order, grouped into
** units; each cell appears once, in the unit of its latest change.
** *out is a new batch (possibly empty). opts may be NULL. */
KNIT_EXTERN int knit_changes_since(knit_t *k, uint64_t version, const knit_since_opts_t *opts,
                                   knit_batch_t **out /* OUT */);

typedef struct knit_apply_stats_s {
    size_t applied;   /* changes that won and were written */
    size_t known;     /* changes already held (same stamp) */
    size_t lost;      /* changes older than what the replica holds */
    size_t skipped;   /* changes kept aside ("waiting") for tables or columns this
                         replica does not track (yet); they apply when it does */
    size_t aside;     /* changes of rows this replica cannot apply (a constraint, an
                         invalid value), set aside ("refused"); the rest applied */
    size_t recovered; /* set-aside changes that applied in this call */
} knit_apply_stats_t;

/* Merges a batch in one SQLite transaction, atomically.  Applied changes
** are never captured as local writes.  KNIT_ECLOCKSKEW (nothing applied) if
** a stamp is beyond max_drift_ms in the future.  stats may be NULL. */
KNIT_EXTERN int knit_apply(knit_t *k, const knit_batch_t *b, knit_apply_stats_t *stats /* OUT */);

/* Set-aside changes.  One change a replica cannot apply never blocks the
** others: knit_apply() keeps such changes in the table _knit_aside, which
** apps read with plain SQL, and applies everything else:
**
**   _knit_aside(id, tbl, pk, key, col, ns, cl, hlc, site, orset, value,
**               kind, reason, at)
**     tbl, key   the table and the key as SQL literals ('a', 1)
**     col        the column ('' = the row's liveness)
**     kind       'refused': this replica cannot apply the row (reason holds
**                SQLite's message, e.g. "NOT NULL constraint failed: kv.v");
**                'waiting': the table or column is not tracked here (yet)
**     at         when it was set aside (ms since the epoch)
**
** Set-aside changes of a row are merged again whenever a batch touches the
** row, and all of them when the schema changes (knit_track, ALTER TABLE);
** those that apply leave the table.  *refused_rows counts distinct rows
** refused, *waiting the changes waiting for a column or table.  Either
** pointer may be NULL. */
KNIT_EXTERN int knit_aside_count(knit_t *k, size_t *refused_rows /* OUT */,
                                 size_t *waiting /* OUT */);
/* Merges every set-aside change again now (one transaction). */
KNIT_EXTERN int knit_aside_retry(knit_t *k, knit_apply_stats_t *stats /* OUT */);

/* Local changes not acknowledged by the relay yet: *rows counts the rows
** with a change of this device newer than the acknowledged version, plus
** captured writes not stamped yet. */
KNIT_EXTERN int knit_pending(knit_t *k, uint64_t *rows /* OUT */);

/* The replica's current local version (highest stamped or applied). */
KNIT_EXTERN int knit_version(knit_t *k, uint64_t *out /* OUT */);

/* ---------------------------------------------------------------------- */
/* Sync state, used by the sync client and sync-inspect.                   */

/* Namespace new local rows go to.  The first namespace ever set also names
** the "home" namespace that rows written before any sync belong to.
** A replica file serves one account: once it has used an account namespace
** "user:<sub>", another "user:*" namespace fails with KNIT_EACCOUNT
** (knit_errmsg names the account the file belongs to); "anon:*" and other
** namespaces stay allowed, and so does "anon:*" -> "user:*" (signing in). */
KNIT_EXTERN int knit_set_namespace(knit_t *k, const char *ns);
/* Moves every row of namespace `from` into `to`, in one transaction, and
** makes `to` the write namespace if `from` was.  This is the replica's half
** of signing in: the relay merges `anon:<id>` into `user:<sub>` (the HELLO
** claim, docs/PROTOCOL.md) and the client then moves the local rows, so
** their unpushed changes are pushed to the account.  Changes already
** acknowledged under `from` are not pushed again: the relay's merge holds
** them.  Returns the number of rows moved (>= 0) or an error; KNIT_EACCOUNT
** when `to` is an account other than the one the file belongs to. */
KNIT_EXTERN int knit_move_namespace(knit_t *k, const char *from, const char *to);
/* The relay erased the account this replica file belongs to (the identity
** provider deleted the user, or an operator ran `sync-relay erase`): removes
** every row of that account's namespace from the tracked tables, with
** knit's metadata of them, in one transaction, without capturing the
** deletes as local writes, and frees the file for another account.  The
** sync client calls it on KNIT_EERASED.  Returns the number of rows removed
** (>= 0; 0 when the file has no account) or an error. */
KNIT_EXTERN int knit_erase_account(knit_t *k);
/* The relay no longer grants namespace ns to this replica's account (an
** organization's membership was revoked): removes its rows from the
** tracked tables with their metadata and cursor, in one transaction,
** without capturing the deletes, like knit_erase_account.  Returns the
** number of rows removed (0 when the replica holds none). */
KNIT_EXTERN int knit_drop_namespace(knit_t *k, const char *ns);
/* Names of the namespaces this replica holds rows of, or a cursor for,
** that start with prefix ("org:"): *out is a NULL-terminated array that
** knit_free_names frees. */
KNIT_EXTERN int knit_namespaces(knit_t *k, const char *prefix, char ***out /* OUT */);
KNIT_EXTERN void knit_free_names(char **names);
/* Current write namespace into buf ("" when none was set yet). */
KNIT_EXTERN int knit_namespace(knit_t *k, char *buf, size_t n);
/* Per-namespace relay cursor (last relay sequence applied). */
KNIT_EXTERN int knit_cursor(knit_t *k, const char *ns, uint64_t *seq /* OUT */);
/* Local changes with version <= version are acknowledged (durable). */
KNIT_EXTERN int knit_ack(knit_t *k, uint64_t version);
/* How long knit's writes on k wait for another connection's write
** transaction before failing with KNIT_EBUSY (knit_options_t's
** busy_timeout_ms; 0: not at all).  Returns the previous value; ms < 0
** changes nothing. */
KNIT_EXTERN int knit_busy_timeout(knit_t *k, int ms);
/* Highest acknowledged local version. */
KNIT_EXTERN int knit_acked(knit_t *k, uint64_t *out /* OUT */);
/* Like knit_apply, and in the same transaction sets ns's cursor to seq,
** exactly: a relay that lost its store restarts sequences from 0, and the
** client follows it down.  Callers apply only batches that continue their
** cursor chain. */
KNIT_EXTERN int knit_apply_at(knit_t *k, const knit_batch_t *b, const char *ns, uint64_t seq,
                              knit_apply_stats_t *stats /* OUT */);

/* Canonical state digest of the replica, or of one namespace (ns != NULL). */
KNIT_EXTERN int knit_digest(knit_t *k, const char *ns, knit_digest_t *out /* OUT */);

/* Checks metadata consistency; calls problem(data, table, pk_sql, message)
** for each finding (pk_sql is the key as SQL literals, or NULL).  Returns the
** number of problems (>= 0) or an error. */
typedef void (*knit_problem_fn)(void *data, const char *table, const char *pk_sql,
                                const char *message);
KNIT_EXTERN int knit_verify(knit_t *k, knit_problem_fn problem, void *data);

/* Small persistent settings kept in the replica (e.g. the sync client's
** anonymous credential).  get: *value is a new string (knit_free) or NULL
** when unset.  set: value NULL deletes. */
KNIT_EXTERN int knit_setting_get(knit_t *k, const char *key, char **value /* OUT */);
KNIT_EXTERN int knit_setting_set(knit_t *k, const char *key, const char *value);
/* Stores value under key unless the key is already set, atomically across
** processes; *actual gets the value stored afterwards (knit_free).  Two
** processes initializing at once agree on one value. */
KNIT_EXTERN int knit_setting_init(knit_t *k, const char *key, const char *value,
                                  char **actual /* OUT */);
/* Frees memory knit handed out (knit_setting_get). */
KNIT_EXTERN void knit_free(void *p);

/* ---------------------------------------------------------------------- */
/* Rejected writes                                                         */

/* One change of a pushed batch that the relay refused for good. */
typedef struct knit_refusal_s {
    size_t change;       /* index into the pushed batch's changes */
    int code;            /* the relay's KNIT_E* code */
    const char *message; /* its detail (NULL or "": knit_strerror(code)) */
} knit_refusal_t;

/* Rolls back the refused changes of a batch this replica pushed
** (knit_changes_since local_only) to the relay's state, in one transaction
** (docs/ARCHITECTURE.md, "Rejected writes"):
**   - a refused cell still holding the refused write is reset; one whose
**     local write was overwritten since is left alone;
**   - a refused row liveness (insert, delete) resets the whole row;
**   - state (may be NULL: the relay holds none of those cells) is the
**     relay's winning cells of those rows, merged in as by knit_apply; a
**     cell the relay holds none of stays unwritten (its column NULL), and a
**     row whose liveness the relay does not hold disappears.
** The replica then holds what a replica that never made the writes holds.
** Each refusal is recorded in _knit_rejected, which apps read with SQL:
**
**   _knit_rejected(id, ns, tbl, key, col, value, code, code_name, reason,
**                  rolled_back, at)
**     key          the key as SQL literals ('a', 1)
**     col          the column ('' = the row's liveness: an insert or delete)
**     value        the value the write attempted (NULL for liveness)
**     code         the relay's KNIT_E* code; code_name e.g. 'KNIT_ECLOCKSKEW'
**     reason       the relay's message
**     rolled_back  1, or 0 when a later local write had replaced it already
**     at           when the refusal arrived (ms since the epoch)
**
** The change callback then gets one event with rolled_back = 1 naming the
** rows rolled back.  *rolled (may be NULL) counts them.  Strings and
** batches are read during the call only. */
KNIT_EXTERN int knit_reject(knit_t *k, const knit_batch_t *pushed, const knit_refusal_t *refusals,
                            size_t n, const knit_batch_t *state, size_t *rolled /* OUT */);

/* ---------------------------------------------------------------------- */
/* Change notification                                                     */

/* One changed row of an event, when keys are asked for (knit_on_change_keys). */
typedef struct knit_event_key_s {
    size_t table;           /* index into ev->tables */
    uint32_t npk;           /* key values in pk (the table's primary-key columns) */
    const knit_value_t *pk; /* the row's key, in key order */
    int remote;             /* 1: every change of the row came from another device (applied
                               from the relay); 0: written on this device, by any process */
    int deleted;            /* 1: the row does not exist now */
    int rolled_back;        /* 1: the relay refused a local write of the row and it was
                               rolled back to the relay's state (knit_reject) */
} knit_event_key_t;

typedef struct knit_event_s {
    int remote;          /* 1 = applied from elsewhere, 0 = local writes; with keys, 1
                            only when every key is remote */
    size_t ntables;      /* tables changed */
    const char **tables; /* their names */
    const size_t *rows;  /* rows changed per table */
    /* With knit_on_change_keys (else 0 and NULL): */
    size_t nkeys;                 /* rows named in keys */
    const knit_event_key_t *keys; /* the changed rows, table by table */
    int truncated;                /* 1: more rows changed than max_keys; rows[] counts them
                                     all, keys names the first max_keys */
    int rolled_back;              /* 1: the event reports local writes rolled back because the
                                     relay refused them (knit_reject); remote is 0 */
} knit_event_t;

typedef void (*knit_change_fn)(knit_t *k, const knit_event_t *ev, void *data);

/* Registers the callback (one per handle; NULL removes it).  It runs after a
** commit changed tracked tables: knit_apply, knit_stamp, and knit_poll. */
KNIT_EXTERN int knit_on_change(knit_t *k, knit_change_fn cb, void *data);
/* Makes events name the rows that changed (ev->keys), at most max_keys of
** them per event (0 turns keys off, the default).  A row is reported once
** per event whatever wrote it: this handle, another connection or process
** (found by knit_poll), or a remote batch; it is found by its metadata's
** version (_knit_rows_<id>.ver, indexed) being newer than the last event's,
** so nothing is missed between events and nothing is reported twice. */
KNIT_EXTERN int knit_on_change_keys(knit_t *k, size_t max_keys);
/* Notices commits made by other connections and processes (PRAGMA
** data_version), stamps them, and fires the callback.  Rollbacks another
** handle made (knit_reject, e.g. by the process that holds the relay
** connection) are then announced as knit_reject announces its own: one
** event with rolled_back = 1 naming their rows, each refusal once per
** handle (those recorded before the handle opened are not announced).
** Returns 1 if something changed, 0 if not, or an error. */
KNIT_EXTERN int knit_poll(knit_t *k);

#ifdef __cplusplus
}
#endif
#endif
