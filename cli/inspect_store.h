/*
** inspect_store.h: a relay store as `sync-inspect relay` and `sync-inspect
** digest` read it: the SQLite file a relay's --data names, or the
** PostgreSQL database of `sync-relay --store postgresql://...`.  Both
** answer the same listings (relay_store.h's list, list_anon, list_schemas,
** seq and digest; store_pg.h's knit_pg_store_list and company), so the
** commands print the same output for the same content.
**
** Opening is read-only on both: the SQLite store in its read-only mode
** (inspect_open_relay), PostgreSQL with knit_pg_store_open_readonly, which
** never creates or upgrades a schema.  A URI may carry a password
** (postgresql://user:secret@host/db, or ?password=secret): it is never
** printed.  inspect_store_name shows the URI with the password replaced by
** "***", and every message from the store or libpq has it replaced too.
** A sync-inspect built without libpq says so for a URI.
**
** Ownership: the handle owns its store; strings it returns live as long
** as it does.  close(NULL) is a no-op.
*/
#ifndef KNIT_INSPECT_STORE_H
#define KNIT_INSPECT_STORE_H

#include "inspect_replica.h"

typedef struct inspect_store_s inspect_store_t;

/* 1 when arg names a PostgreSQL store (postgresql:// or postgres://). */
int inspect_store_is_uri(const char *arg);
/* arg as it may be shown: a URI with its password replaced by "***"
** (truncated to n - 1 bytes); anything else as it is. */
void inspect_store_redact(const char *arg, char *out, size_t n);

/* Opens the store arg names (a file or a URI) read-only, or reports why
** not and returns INSPECT_EXIT_ERROR. */
int inspect_store_open(const char *cmd, const char *arg, inspect_store_t **out /* OUT */);
void inspect_store_close(inspect_store_t *s);
/* The store as shown in output: the path, or the redacted URI. */
const char *inspect_store_name(const inspect_store_t *s);

/* The listings, as relay_store.h's knit_relay_store_list, _list_anon,
** _list_schemas, _seq and _digest. */
int inspect_store_list(inspect_store_t *s, knit_relay_ns_fn fn, void *data);
int inspect_store_list_anon(inspect_store_t *s,
                            int (*fn)(void *data, const char *id, uint64_t created_ms), void *data);
int inspect_store_list_schemas(inspect_store_t *s,
                               int (*fn)(void *data, const knit_relay_schema_info_t *info),
                               void *data);
int inspect_store_seq(inspect_store_t *s, const char *ns, uint64_t *seq /* OUT */);
int inspect_store_digest(inspect_store_t *s, const char *ns, knit_digest_t *out /* OUT */);

/* Reports a failed listing rc (the store's message, redacted) and returns
** INSPECT_EXIT_ERROR. */
int inspect_store_fail(const char *cmd, inspect_store_t *s, int rc);

#endif
