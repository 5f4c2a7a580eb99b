/*
** inspect_replica.h: what sync-inspect's replica and relay commands share:
** opening files read-only with clear errors, reading a replica's metadata
** row by row, parsing keys typed as SQL literals, and showing sites, clocks
** and namespaces the same way in every command.
**
** Every command opens its file read-only (knit_open with readonly = 1, or
** the relay store's read-only mode) and never writes.  A replica in WAL
** mode is read beside a running agent without blocking it; a file another
** connection holds an exclusive lock on is waited for INSPECT_BUSY_MS and
** then reported as locked (exit status 2).
**
** The commands use knit's internals (replica.h) because they explain what
** the public API hides: cell stamps, causal lengths, OR-set dots.  They
** read metadata with plain SQL in one read transaction per command, so
** what they print is one consistent snapshot.
*/
#ifndef KNIT_INSPECT_REPLICA_H
#define KNIT_INSPECT_REPLICA_H

#include "inspect_util.h"
#include "relay_store.h"
#include "replica.h"

#define INSPECT_BUSY_MS 2000 /* wait this long for another connection's lock */
#define INSPECT_SHOW_MAX 80  /* text output shortens longer values in listings */

/* What a file holds (inspect_probe). */
enum { INSPECT_KIND_REPLICA = 1, INSPECT_KIND_RELAY = 2 };

/* Tells a replica from a relay store without changing either.  A missing
** file, a directory, a non-SQLite file, an SQLite file that is neither, or
** a file locked for longer than INSPECT_BUSY_MS is reported (inspect_err)
** and gives INSPECT_EXIT_ERROR; else 0 and *kind.  A postgresql:// URI is
** a relay store without a look (inspect_store_open checks it). */
int inspect_probe(const char *cmd, const char *path, int *kind /* OUT */);

/* Opens a replica read-only, or reports why not (INSPECT_EXIT_ERROR). */
int inspect_open_replica(const char *cmd, const char *path, knit_t **out /* OUT */);

/* Opens a relay store file read-only, or reports why not
** (INSPECT_EXIT_ERROR); inspect_store_open opens a file or a URI. */
int inspect_open_relay(const char *cmd, const char *path, knit_relay_store_t **out /* OUT */);

/* Reports a failed knit call on k (its detailed message when it has one)
** and returns INSPECT_EXIT_ERROR. */
int inspect_knit_fail(const char *cmd, knit_t *k, int rc);

/* The whole of a command "CMD [--json] REPLICA" that lists a table of the
** replica: parses the arguments, opens the replica read-only, runs list
** (which sets *found when it listed anything) and returns the exit status:
** INSPECT_EXIT_FINDING when something was listed. */
typedef int (*inspect_list_fn)(const char *path, knit_t *k, int json, int *found);
int inspect_list_command(const char *cmd, int argc, char **argv, void (*help)(void),
                         inspect_list_fn list);

/* Starts / ends the read transaction that makes a command's reads one
** snapshot.  begin reports a failure and returns INSPECT_EXIT_ERROR. */
int inspect_read_begin(const char *cmd, knit_t *k);
void inspect_read_end(knit_t *k);

/* ---------------------------------------------------------------------- */
/* Sites, clocks, namespaces                                               */

/* 1 if idx names a site in _knit_sites. */
int inspect_site_known(knit_t *k, uint32_t idx);
/* Text: the site's first 4 bytes in hex, plus " (local)" for the replica's
** own site; "#IDX (unknown site)" for an index _knit_sites lacks. */
void inspect_site_text(FILE *f, knit_t *k, uint32_t idx);
/* JSON: the full site id as a hex string, or null when unknown. */
void inspect_site_json(FILE *f, knit_t *k, uint32_t idx);
/* The first 4 bytes of a site id in hex (8 characters and a NUL). */
void inspect_site_short(const knit_site_t *s, char out[9]);

/* Text: "2023-11-14T22:13:20.000Z#0". */
void inspect_hlc_text(FILE *f, uint64_t hlc);
/* JSON members (no braces): "hlc": N, "time": "...". */
void inspect_hlc_json(FILE *f, uint64_t hlc);
/* Milliseconds since the epoch as ISO-8601 UTC, e.g. for relay times. */
void inspect_ms_text(FILE *f, uint64_t ms);

/* _knit_ns read once: names by idx ("" = the home namespace before it was
** named), and cursors. */
typedef struct inspect_ns_s {
    char **names;     /* by idx; NULL where no namespace has that idx */
    uint64_t *cursor; /* relay cursor by idx */
    uint32_t n;       /* entries (max idx + 1) */
} inspect_ns_t;

int inspect_ns_load(knit_t *k, inspect_ns_t *ns /* OUT */);
void inspect_ns_free(inspect_ns_t *ns);
/* The name of idx, or NULL when _knit_ns has no such entry. */
const char *inspect_ns_name(const inspect_ns_t *ns, uint32_t idx);
/* Text: the name, "(unnamed home)" for an unnamed home, "#IDX (unknown namespace)". */
void inspect_ns_text(FILE *f, const inspect_ns_t *ns, uint32_t idx);
/* JSON: the name as a string ("" for an unnamed home), or null. */
void inspect_ns_json(FILE *f, const inspect_ns_t *ns, uint32_t idx);

/* ---------------------------------------------------------------------- */
/* Row metadata, row by row                                                */

/* A walk over _knit_rows_<id> of one table in key order, joined with the
** user table.  Fields describe the current row until the next call. */
typedef struct inspect_rows_s {
    knit_t *k;                        /* replica */
    ktable_t *t;                      /* table */
    sqlite3_stmt *st;                 /* the walk */
    int user_table;                   /* 1 if the user table exists */
    knit_value_t pk[KNIT_MAX_PK];     /* key values */
    uint32_t ns;                      /* _knit_ns idx */
    uint64_t cl;                      /* causal length */
    uint64_t ver;                     /* newest local version of its cells */
    int cells_ok;                     /* 0 if the cells blob cannot be decoded */
    kcell_t cells[KNIT_MAX_COLS + 1]; /* 0 = liveness, c + 1 = column c */
    int has_user;                     /* 1 if the user row exists */
    knit_value_t vals[KNIT_MAX_COLS]; /* user row values (NULL when absent) */
} inspect_rows_t;

/* Starts a walk; key != NULL limits it to that key. */
int inspect_rows_open(inspect_rows_t *r, knit_t *k, ktable_t *t, const knit_value_t *key);
/* 1 with the next row, 0 at the end, or a negative KNIT_E* code. */
int inspect_rows_next(inspect_rows_t *r);
void inspect_rows_close(inspect_rows_t *r);

/* Captured writes not yet stamped: of the whole table (key NULL) or of one
** key.  Read-only handles never stamp, so these are shown, not folded in. */
int inspect_unstamped(knit_t *k, ktable_t *t, const knit_value_t *key, uint64_t *n /* OUT */);

/* ---------------------------------------------------------------------- */
/* Keys typed by people                                                    */

typedef struct inspect_key_s {
    knit_value_t v[KNIT_MAX_PK]; /* key values; TEXT/BLOB bytes owned */
    uint32_t n;                  /* count */
} inspect_key_t;

/* Parses arg, a comma-separated list of SQL literals (42, -1.5, 'it''s',
** X'00ff', NULL, TRUE, FALSE), as t's key, applying the key columns'
** declared types as SQLite would on insert ('7' for an INTEGER column is
** 7).  Anything but literals is refused, so nothing typed here runs as
** SQL.  Reports errors and returns INSPECT_EXIT_ERROR, else 0. */
int inspect_parse_key(const char *cmd, knit_t *k, ktable_t *t, const char *arg,
                      inspect_key_t *key /* OUT */);
void inspect_key_free(inspect_key_t *key);

/* ---------------------------------------------------------------------- */
/* Change batches (knit_changes_since), for pending and changes            */

/* One change as a text line ("  notes 'n1': title = 'hi'  @ TIME by SITE
** in NS"), sites marked (local) when they are k's own. */
void inspect_change_text(FILE *f, knit_t *k, const knit_batch_t *b, const knit_change_t *c);
/* One change as a JSON object. */
void inspect_change_json(FILE *f, knit_t *k, const knit_batch_t *b, const knit_change_t *c);

/* Prints the units of b with version > after: text, a header line per unit
** and a line per change; JSON, objects {"version", "changes"} separated by
** commas (the caller writes the enclosing array).  Counts what it printed. */
void inspect_batch_print(FILE *f, knit_t *k, const knit_batch_t *b, uint64_t after, int json,
                         size_t *ntxns /* OUT */, size_t *nchanges /* OUT */);

/* Writes "TABLE KEY" for text output: the name made terminal-safe, then the
** key as SQL literals. */
void inspect_row_text(FILE *f, const ktable_t *t, const knit_value_t *pk);

#endif
