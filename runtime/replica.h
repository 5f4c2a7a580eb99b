/*
** replica.h: internals shared by the replica's source files (not installed).
**
** A replica is an ordinary SQLite file plus knit's metadata, all in tables
** whose names start with "_knit_" (see docs/ARCHITECTURE.md for the layout):
**
**   _knit_meta(key, value)          site id, clock, version counters, file id
**   _knit_sites(idx, site)          16-byte site ids, interned
**   _knit_ns(idx, name, cursor)     namespaces (idx 1 = home) and relay cursors
**   _knit_tables(name, id, ...)     tracked tables, their keys and columns
**   _knit_log_<id>(seq, op, mask, k0.., at, hlc)  captured writes, not yet stamped
**   _knit_rows_<id>(k0.., ns, cl, ver, cells)  per-row CRDT metadata
**   _knit_sets_<id>(k0.., col, state)         OR-set states
**
** Design notes
**   1. Capture is pure SQL: triggers append to _knit_log_<id> and do nothing
**      else, so any connection, with or without knit loaded, is captured.
**   2. Every read of changes and every apply first stamps the log, inside
**      the same write transaction, so a row's metadata always describes the
**      row's committed content when knit looks at it.
**   3. After stamping, a user row exists if and only if its metadata row
**      has an odd causal length.
**   4. Writes knit itself makes to user tables (apply, OR-set
**      canonicalization) are never taken for local writes.  When no tracked
**      table has triggers of the application's own, knit's connection runs
**      with triggers disabled (SQLITE_DBCONFIG_ENABLE_TRIGGER) and its writes
**      fire nothing; otherwise the app's triggers must see applied changes,
**      so triggers stay on and knit deletes the log rows its writes made
**      before it commits.  Re-checked whenever the schema changes.
**   5. The HLC and version counters live in _knit_meta and are read and
**      advanced inside the write transaction, so they are monotonic across
**      every connection and process sharing the file.
*/
#ifndef KNIT_REPLICA_H
#define KNIT_REPLICA_H

#include <stdio.h>
#include <sqlite3.h>

#include "alloc.h"
#include "knit.h"
#include "lww.h"
#include "orset.h"

#define KNIT_SCHEMA_VERSION 2 /* 2: _knit_aside */
#define KNIT_MAX_COLS 63      /* tracked non-key columns per table (update mask bits) */
#define KNIT_HOME_NS 1        /* _knit_ns idx of the home namespace */
#define KNIT_MAX_PK 32        /* key columns per table */

/* Log operations written by the capture triggers. */
enum { KNIT_OP_INSERT = 1, KNIT_OP_UPDATE = 2, KNIT_OP_DELETE = 3 };

/* One cell's stamp as kept in a _knit_rows_<id>.cells blob.  Index 0 of a
** row's cell array is the row's liveness, 1..ncols its columns. */
typedef struct kcell_s {
    uint64_t hlc;  /* stamp; 0 = not written in the row's current life */
    uint32_t site; /* _knit_sites idx of the writer */
    uint64_t ver;  /* local version at which this cell last changed */
} kcell_t;

/* Statement slot numbers in ktable_t.st. */
enum {
    ST_STAMP,    /* log -> rows upsert */
    ST_LOGMAX,   /* max(seq) of the log */
    ST_LOGCELLS, /* seq, op, mask of a range of the log (stamp.c note 4) */
    ST_LOGCLEAR, /* delete the log */
    ST_SETROWS,  /* distinct logged keys touching OR-set columns */
    ST_NEWLIFE,  /* mark logged inserts that start a new life */
    ST_ROWGET,   /* one row's metadata */
    ST_ROWPUT,   /* upsert one row's metadata */
    ST_SETGET,   /* one OR-set state */
    ST_SETPUT,   /* upsert one OR-set state */
    ST_USERGET,  /* the user row's tracked columns */
    ST_USERDEL,  /* delete the user row */
    ST_SINCE,    /* rows changed since a version, joined with user rows */
    ST_SINCECUT, /* their cells alone, to count (changes.c design note 1) */
    ST_NOTIFY,   /* keys and cells of rows changed in a version range (notify.c) */
    ST_GONEGET,  /* one departure (nscol.c) */
    ST_GONEPUT,  /* upsert one departure */
    ST_GONEDEL,  /* forget one departure */
    ST_MOVE,     /* a moved row's new namespace and cells */
    ST_NSTMT
};

/* knit__fixed's statements (db.c). */
enum {
    KS_BEGIN,
    KS_COMMIT,
    KS_DATA_VERSION,
    KS_SCHEMA_VERSION,
    KS_SQL_NOW,
    KS_REJECTED_MAX,
    KS_NS_NAME,
    KS_INHERITED,
    KS_REPUSH,
    KS_ASIDE_MAX,
    KS_JSON_ARRAY,
    KS_NS_CURSOR,
    KS_NS_IDX,
    KS_N
};
#define KNIT_MASK_CACHE 8 /* cached INSERT/UPDATE statements per table */

typedef struct ktable_s {
    char *name;                 /* user table name */
    int id;                     /* suffix of its _knit_*_<id> tables */
    uint32_t npk;               /* key columns */
    char **pk;                  /* key column names, in key order */
    uint32_t ncols;             /* tracked non-key columns */
    char **cols;                /* their names; index i is cell i + 1 */
    uint8_t *orset;             /* per column: 1 = OR-set */
    uint64_t setmask;           /* bit i set when column i is an OR-set */
    int nscol;                  /* column whose value selects the row's namespace, -1 = none */
    sqlite3_stmt *st[ST_NSTMT]; /* prepared lazily */
    struct {
        uint64_t mask;      /* columns written (bit i = column i) */
        int insert;         /* 1 = INSERT, 0 = UPDATE */
        sqlite3_stmt *stmt; /* the statement */
    } wr[KNIT_MASK_CACHE];  /* user-row writers by column set */
    unsigned wr_next;       /* round-robin replacement slot */
    size_t ev_rows;         /* rows changed since the last notification */
    int capture;            /* KNIT_CAPTURE_OK / _REPAIR / _BROKEN (capture.c) */
    char *capture_msg;      /* why capture is not OK (knit__free); NULL when OK */
} ktable_t;

struct knit_s {
    sqlite3 *db;               /* knit's own connection (all internal work) */
    sqlite3 *app_db;           /* knit_db(): a plain connection for the app, opened lazily */
    char *path;                /* the replica file, for app_db */
    int triggers_off;          /* db runs with triggers disabled (note 4) */
    int readonly;              /* opened read-only */
    knit_clock_fn clock;       /* wall clock */
    void *clock_data;          /* its argument */
    uint64_t max_drift_ms;     /* refuse remote stamps beyond now + this */
    knit_site_t site;          /* this replica's site id */
    uint32_t site_idx;         /* its _knit_sites idx */
    knit_site_t *sites;        /* _knit_sites cache, by idx (0 unused) */
    uint32_t nsites;           /* entries in sites (max idx + 1) */
    int sites_stale;           /* emptied by a rollback; reloaded by knit__begin */
    ktable_t *tables;          /* tracked tables */
    size_t ntables;            /* count */
    int schema_cookie;         /* PRAGMA schema_version the cache was built at */
    int aside_cookie;          /* schema_cookie when set-aside changes were last retried */
    int data_version;          /* PRAGMA data_version last seen by knit_poll */
    int busy_ms;               /* how long to wait for another writer (busy_wait) */
    double busy_since;         /* when the current wait began (monotonic s) */
    uint64_t seen_version;     /* knit version last reported to the callback */
    int64_t seen_rejected;     /* newest _knit_rejected.id announced (reject.c note 7) */
    int ev_local;              /* local writes stamped since the last notification */
    int ev_remote;             /* remote changes applied since then */
    unsigned notified;         /* notifications that reported changes (knit_poll) */
    size_t ev_max_keys;        /* knit_on_change_keys: rows named per event (0: none) */
    knit_change_fn on_change;  /* change callback */
    void *on_change_data;      /* its argument */
    sqlite3_stmt *meta_get;    /* SELECT value FROM _knit_meta WHERE key=? */
    sqlite3_stmt *meta_put;    /* INSERT OR REPLACE INTO _knit_meta */
    sqlite3_stmt *fixed[KS_N]; /* knit__fixed's statements */
    struct knsof_s *nsof;      /* org ids interned for knit_ns_of (nscol.c) */
    size_t nnsof;              /* entries */
    char errmsg[512];          /* last detailed error */
};

/*
** The runtime's files, bottom up.  Each calls only files listed before it
** (never one after), so there is no circle:
**
**   entropy.c   randomness (getrandom); also the sync client's and the relay's
**   sqlerr.c    SQLite result codes -> KNIT_E* codes; also the relay store's
**   db.c        errors, transactions, statements, values, the site cache,
**               _knit_meta, the clock, SQL text
**   sites.c     sites and namespaces interned; which sites are local
**   cells.c     the cells blob and the SQL functions that build it
**   sets.c      OR-set states
**   notify.c    the change callback
**   schema.c, validate.c, batch.c   schema fingerprints, the shared
**               validator, batch regrouping (leaves: db.c at most)
**   capture.c   a user table's schema; capture triggers, checked and repaired
**   tables.c    the tracked-table cache
**   userrow.c   writing the application's rows
**   nscol.c     namespaces chosen by a column: moves, departures
**   stamp.c     captured writes -> CRDT metadata; the refresh that repairs
**   apply.c     remote changes in (set aside what cannot be held)
**   reject.c    local writes the relay refused: rolled back, recorded
**   track.c     knit_track (applies changes that waited for a column)
**   changes.c, state.c, digest_db.c, verify.c   the other public operations
**   check_rt.c  the consistency checker's repair of rows (for the sync client)
**   replica.c   opening and closing
*/

/* db.c */
int knit__err(knit_t *k, int code, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;
int knit__dberr(knit_t *k, int rc, const char *what);
int knit__exec(knit_t *k, const char *sql);
int knit__begin(knit_t *k); /* BEGIN IMMEDIATE */
int knit__commit(knit_t *k);
void knit__rollback(knit_t *k);
/* A persistent statement for sql, prepared once into *st (reset when it
** already is). */
int knit__prepare(knit_t *k, sqlite3_stmt **st, const char *sql);
/* Statement `which` (KS_*) of the fixed set every poll and stamp runs,
** prepared once; NULL (and k->errmsg) if it cannot be prepared.  Reset it
** after use. */
sqlite3_stmt *knit__fixed(knit_t *k, int which);
/* The first column of fixed statement `which`, stepped (def if it gave no
** row; NULL reads 0). */
int64_t knit__fixed_int(knit_t *k, int which, int64_t def);
/* The _knit_meta statement reading key, stepped: SQLITE_ROW with the value
** in column 0, or SQLITE_DONE (*out, reset it after use). */
int knit__meta_get(knit_t *k, const char *key, sqlite3_stmt **out);
int knit__meta_get_int(knit_t *k, const char *key, int64_t *out);
int knit__meta_set_int(knit_t *k, const char *key, int64_t v);
int knit__meta_set_blob(knit_t *k, const char *key, const void *p, size_t n, int text);
int knit__bind_value(sqlite3_stmt *st, int i, const knit_value_t *v);
void knit__column_value(sqlite3_stmt *st, int i, knit_value_t *v);
int knit__load_sites(knit_t *k);         /* k->sites from _knit_sites */
uint64_t knit__system_clock(void *data); /* CLOCK_REALTIME in ms */
uint64_t knit__now(knit_t *k);           /* the replica's clock */
/* SQL text built with sqlite3_str (consumed by each of these). */
char *knit__str_done(sqlite3_str *s); /* the text, or NULL when out of memory */
int knit__exec_str(knit_t *k, sqlite3_str *s);
int knit__prepare_str(knit_t *k, sqlite3_stmt **st, sqlite3_str *s); /* persistent, as above */
int knit__prepare_temp(knit_t *k, sqlite3_stmt **st, sqlite3_str *s, const char *what);
char *knit__quote(const char *ident); /* "ident" with quotes doubled; knit__free */
/* Appends "k0, k1, ..." or with a prefix, e.g. "r.k0, r.k1". */
void knit__keylist_str(sqlite3_str *s, uint32_t npk, const char *prefix);
/* Appends "SELECT r.k0.., <meta>, u.<cols> FROM _knit_rows_<id> AS r LEFT
** JOIN <table> AS u ON <keys>": each metadata row with its user row. */
void knit__rows_join_str(sqlite3_str *s, const ktable_t *t, const char *meta);
/* Appends "<rec>."p1", <rec>."p2"" for the key columns of t. */
void knit__keyrefs(sqlite3_str *s, const ktable_t *t, const char *rec);
/* Appends "<user>."p1" = <meta>.k0 AND ...". */
void knit__keys_join(sqlite3_str *s, const ktable_t *t, const char *user, const char *meta);
/* 1 when key values a and b (npk of each) are equal. */
int knit__keys_equal(const knit_value_t *a, const knit_value_t *b, uint32_t npk);
/* Runs the statement built in s (consumed) once, t's key pk bound as
** ?1..?npk. */
int knit__run_keyed(knit_t *k, sqlite3_str *s, const ktable_t *t, const knit_value_t *pk,
                    const char *what);

/* sites.c */
const knit_site_t *knit__site_get(knit_t *k, uint32_t idx);
int knit__site_intern(knit_t *k, const knit_site_t *s, uint32_t *idx);
int knit__ns_intern(knit_t *k, const char *name, uint32_t *idx);
int knit__ns_name(knit_t *k, uint32_t idx, char **out); /* "" for an unnamed home */
/* Which cells are this replica's own changes (knit_changes_since's
** local_only; "Inherited sites" in sites.c): a cell is local if its site
** is this replica's, or a site it inherited as a copy and the cell's
** version is at or below that site's takeover version. */
typedef struct klocal_s {
    uint64_t *inherit;     /* site idx -> takeover version + 1 (0 = not inherited) */
    uint32_t n;            /* entries */
    uint64_t (*repush)[2]; /* version ranges [lo, hi] pushed as local ("Re-pushed") */
    uint32_t nrepush;      /* ranges */
} klocal_t;
int knit__local_load(knit_t *k, klocal_t *l); /* reads _knit_meta inherit:*, repush:* keys */
/* Records versions lo..hi as re-pushed (inside the caller's transaction). */
int knit__repush_add(knit_t *k, uint64_t lo, uint64_t hi);
/* Forgets the re-pushed ranges acked covers (inside the caller's transaction). */
int knit__repush_acked(knit_t *k, uint64_t acked);
int knit__local_is(const knit_t *k, const klocal_t *l, uint32_t site, uint64_t ver);
void knit__local_free(klocal_t *l);

/* cells.c */
int knit__register_functions(knit_t *k);
int knit__cells_decode(const void *p, size_t n, uint32_t ncells, kcell_t *out);
size_t knit__cells_encode(const kcell_t *c, uint32_t ncells, uint8_t *out);
#define KNIT_CELL_MAXBYTES (1 + 8 + KNIT_VARINT_MAX * 2)

/* sets.c */
int knit__set_load(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t col, knit_orset_t *s,
                   int *found);
int knit__set_save(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t col,
                   const knit_orset_t *s);

/* notify.c */
/* Fires the change callback for what was stamped or applied since the last
** call (after commit). */
void knit__notify(knit_t *k);

/* batch.c */
/* Orders b's changes by vers[i] (stably, in place) into one unit per
** version, keeping whole units until max_changes is reached (0 = all). */
int knit__batch_regroup(knit_batch_t *b, const uint64_t *vers, size_t max_changes);

/* capture.c */
/* Capture version: bumped whenever the capture triggers or the log format
** change, so replicas made by an older knit are detected and reinstalled.
** 2: the log records each write's wall time and the HLC it saw.
** 3: the wall time as julianday() (cheaper in a trigger than ms), no HLC
**    (the stamp raises each write above its row's cells), and UPDATE
**    triggers name their columns (UPDATE OF), so an upsert runs one. */
#define KNIT_CAPTURE_VERSION 3
/* ktable_t.capture: OK = every capture trigger is the one this knit
** installs; REPAIR = missing or outdated, and the table still has the
** tracked key and columns (the next stamp reinstalls them and logs the
** inserts and deletes made meanwhile); BROKEN = the table lost its key or a
** tracked column (capture_msg says what to do); stamping refuses. */
enum { KNIT_CAPTURE_OK, KNIT_CAPTURE_REPAIR, KNIT_CAPTURE_BROKEN };
/* A user table's schema as knit reads it. */
typedef struct kcolinfo_s {
    char *name;    /* column name */
    char *type;    /* declared type ("" if none) */
    int pk;        /* 1-based position in the primary key, 0 if not a key */
    int generated; /* generated column (not tracked) */
    int notnull;   /* NOT NULL */
    int has_dflt;  /* has a DEFAULT */
} kcolinfo_t;
typedef struct ktinfo_s {
    kcolinfo_t *c; /* columns in declaration order */
    int n;         /* count */
    int npk;       /* key columns */
    int rowid_pk;  /* the key is the rowid (INTEGER PRIMARY KEY) */
} ktinfo_t;
/* Reads table name's schema into *ti, refusing what merging cannot keep. */
int knit__inspect_table(knit_t *k, const char *name, ktinfo_t *ti);
void knit__tinfo_free(ktinfo_t *ti);
/* Drops t's capture triggers and installs the current ones. */
int knit__create_triggers(knit_t *k, const ktable_t *t, const ktinfo_t *ti);
/* Appends "INSERT INTO _knit_log_<id>(op, mask, k0.., at, hlc) ". */
void knit__log_insert(sqlite3_str *s, const ktable_t *t);
/* Sets t->capture (and capture_msg) from what sqlite_schema holds. */
int knit__capture_check(knit_t *k, ktable_t *t);
/* Used by knit__stamp_locked: before folding the log, refuses BROKEN tables
** and brings old logs to the current format; after folding, reinstalls
** REPAIR tables' triggers and logs the writes made while capture was
** missing (*logged rows; fold again when > 0). */
int knit__capture_begin(knit_t *k);
int knit__capture_repair(knit_t *k, size_t *logged);

/* tables.c */
/* Rebuilds the ktable_t cache if the schema cookie moved (*moved = 1),
** checking every table's capture; never repairs (see knit__load_tables). */
int knit__tables_refresh(knit_t *k, int *moved);
void knit__free_table(ktable_t *t);
void knit__free_tables(knit_t *k);
ktable_t *knit__table(knit_t *k, const char *name);

/* nscol.c */
/* knit_ns_of(value, dflt): the namespace idx of organization value (one
** interned by knit__ns_fold), else dflt. */
int knit__nscol_register(knit_t *k);
void knit__nscol_free(knit_t *k);
/* Creates _knit_gone_<id>: per key, the state of namespaces a row left. */
int knit__gone_create(knit_t *k, const ktable_t *t);
/* Before a stamp folds t's log up to seq max: interns the namespaces its
** rows' column selects, and moves the logged rows whose namespace changed
** (a tombstone left in the old one, a new life in the new one). */
int knit__ns_fold(knit_t *k, ktable_t *t, int64_t write_ns, uint64_t tick, uint64_t ver,
                  int64_t max);
/* Merges (ns, cl, cell0) into the departure of row pk from ns (the larger
** causal length wins, then the larger liveness stamp), or forgets it. */
int knit__gone_put(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t ns, uint64_t cl,
                   const kcell_t *cell0);
int knit__gone_del(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t ns);
/* The departure of row pk from ns: *cl = 0 when there is none. */
int knit__gone_get(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t ns, uint64_t *cl,
                   kcell_t *cell0);
/* Calls fn for each departure of t (of namespace ns, or all when 0). */
typedef int (*knit_gone_fn)(void *arg, const knit_value_t *pk, uint32_t ns, uint64_t cl,
                            const kcell_t *cell0);
int knit__gone_each(knit_t *k, ktable_t *t, int64_t ns, knit_gone_fn fn, void *arg);

/* userrow.c */
/* Prepares t->st[ST_USERGET]: the tracked columns of one user row, keys
** bound as ?1..?npk. */
int knit__user_get_prepare(knit_t *k, ktable_t *t);
/* Writes the columns in mask of user row pk (vals[c] for column c): an
** upsert when insert, else an UPDATE (*changed = rows it changed, may be
** NULL). */
int knit__user_write(knit_t *k, ktable_t *t, const knit_value_t *pk, uint64_t mask, int insert,
                     const knit_value_t *vals, int *changed);
/* Writes column c of an existing user row. */
int knit__user_write_col(knit_t *k, ktable_t *t, const knit_value_t *pk, uint32_t c,
                         const knit_value_t *v);
int knit__user_delete(knit_t *k, ktable_t *t, const knit_value_t *pk);
/* Appends "k0 = ?1 AND k1 = ?2 ..." for knit's own tables. */
void knit__where_meta_keys(sqlite3_str *s, uint32_t npk);

/* stamp.c */
/* Refreshes the ktable_t cache if the schema moved, and checks capture.  On
** a writable handle outside a transaction it repairs capture at once. */
int knit__load_tables(knit_t *k);
/* 0 when every tracked table has current capture; otherwise KNIT_ESCHEMA
** with errmsg naming the first table that has not (and what to do).  The
** sync client calls it before it reports "synced". */
int knit__capture_current(knit_t *k);
int knit__stamp_locked(knit_t *k, size_t *rows_out); /* inside a write txn */
/* *needed = 0 when a stamp would find nothing to do: every capture is
** sound and every capture log empty.  Reads only. */
int knit__stamp_needed(knit_t *k, int *needed);
int knit__tick(knit_t *k, uint64_t *out);
int knit__next_version(knit_t *k, uint64_t *out);

/* apply.c */
/* knit_apply's merge inside a write transaction the caller holds (stamps
** the log first; sets the notification counters, fires nothing). */
int knit__apply_locked(knit_t *k, const knit_batch_t *b, knit_apply_stats_t *st);

/* reject.c */
/* Forgets row pk of t: its user row (when user_row), metadata and OR-set
** states, without capturing a delete. */
int knit__row_forget(knit_t *k, ktable_t *t, const knit_value_t *pk, int user_row);
/* Creates _knit_rejected if missing (knit_open, every writable handle). */
int knit__rejected_create(knit_t *k);
/* k->seen_rejected = the newest refusal recorded (design note 7). */
void knit__rejected_seen(knit_t *k);
/* Fires the rolled-back event for refusals other handles recorded since
** k->seen_rejected (design note 7); called by knit_poll. */
int knit__rejected_poll(knit_t *k);

#endif
