/*
** store_pg.h: the relay store on PostgreSQL (libpq), the second backend of
** the store interface (store.h), beside the embedded SQLite store
** (relay_store.h).  `sync-relay --store postgresql://...` opens it.
**
** It keeps what the sync path needs, with the SQLite store's rules: per
** namespace a sequence without gaps in commit order and the latest
** winning state of every cell (the same LWW order and the same OR-set
** merge code, sset.h), catch-up by sequence, state digests equal to the
** SQLite store's on the same pushes, anonymous credentials, the relay's
** site id, the claim's merge and its seals, erasure, and (schema 2) the
** devices and the schemas they run, the identity index, organization
** memberships and REJECT's state (store.h's device_seen, identify,
** ident_dirty, memberships and cells), and (schema 3) signed webhook
** deliveries: knit_pg_store_webhooks fills webhook.h's seam, each delivery
** one transaction (its dedupe record, the identity index, memberships, an
** erasure and the relay's rows, which other relays hear of by NOTIFY).
** Erased accounts (tombstones) are kept as the SQLite store keeps them, so
** `sync-relay erase --store postgresql://...` works on it too.
**
** Ownership: a knit_pg_store_t is one libpq connection, used by one thread
** at a time; several (in one process or many) may share one database.
** Strings and batches passed in are only read during the call; batches
** handed out are the caller's (knit_batch_free).
*/
#ifndef KNIT_RELAY_STORE_PG_H
#define KNIT_RELAY_STORE_PG_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "knit.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Schema versions: 1 cells, credentials and meta; 2 adds devices, the
** identity index and memberships; 3 adds webhook deliveries; an older one
** is upgraded in place at open. */
#define KNIT_PG_SCHEMA_VERSION 3 /* the schema this library creates and reads */

typedef struct knit_pg_store_s knit_pg_store_t;

/* Connects to conninfo (a postgresql:// URI or key=value string) and
** creates the schema in an empty database, or checks it: KNIT_EVERSION
** (with a message saying so) when the database holds a newer schema,
** KNIT_EDB when it cannot connect or the server fails.  On error *out is
** still set when errmsg has something to say (close it), else NULL. */
KNIT_EXTERN int knit_pg_store_open(const char *conninfo, knit_pg_store_t **out /* OUT */);
/* Closes the connection; NULL is a no-op. */
KNIT_EXTERN void knit_pg_store_close(knit_pg_store_t *s);
/* The last failure's text ("" if none), valid until the next call on s. */
KNIT_EXTERN const char *knit_pg_store_errmsg(knit_pg_store_t *s);

/* The group commit (store.h's commit): every push merged in its own
** savepoint, one COMMIT; returns only after PostgreSQL committed.  On
** failure nothing of the group took effect and no fan-out is left. */
KNIT_EXTERN int knit_pg_store_commit(knit_pg_store_t *s, knit_relay_push_t *group);
/* Reads, as relay_store.h's knit_relay_store_seq, _catch_up and _digest. */
KNIT_EXTERN int knit_pg_store_seq(knit_pg_store_t *s, const char *ns, uint64_t *seq /* OUT */);
KNIT_EXTERN int knit_pg_store_catch_up(knit_pg_store_t *s, const char *ns, uint64_t after,
                                       size_t max_changes, knit_batch_t **out /* OUT */,
                                       uint64_t *reached /* OUT */, int *more /* OUT */);
KNIT_EXTERN int knit_pg_store_digest(knit_pg_store_t *s, const char *ns,
                                     knit_digest_t *out /* OUT */);

/* Records an organization membership as relay_store.h's
** knit_relay_store_membership does: user_id (resolved to account) is
** (present 1) or is no longer (0) a member of org with role, unless an
** event of that membership with a later updated_ms was recorded (*stale
** set, nothing written).  In its own transaction; the backend's
** memberships reads them back. */
KNIT_EXTERN int knit_pg_store_membership(knit_pg_store_t *s, const char *org, const char *user_id,
                                         const char *account, const char *role, int present,
                                         uint64_t updated_ms, int *stale /* OUT */);

/* Erasing an account, as relay_store.h's knit_relay_store_erase_account,
** in one transaction: its tombstone (store.h erased answers 1 from then on,
** and identify makes no account of it), its identity (ids, email, profile
** values, memberships), namespace ns and every anonymous namespace claimed
** into it, with their devices; *erased counts the namespaces.
** KNIT_ENOTFOUND when none held anything (the rest is committed all the
** same).  PostgreSQL frees the rows' space at its next VACUUM: the bytes
** stay in the data files until then.  knit_pg_store_unerase removes the
** tombstone (*cleared = 1 when there was one). */
KNIT_EXTERN int knit_pg_store_erase_account(knit_pg_store_t *s, const char *ns,
                                            size_t *erased /* OUT */);
KNIT_EXTERN int knit_pg_store_unerase(knit_pg_store_t *s, const char *ns, int *cleared /* OUT */);
/* The account provider id `id` resolves to, into account ("" when none). */
KNIT_EXTERN int knit_pg_store_ident_get(knit_pg_store_t *s, const char *id,
                                        char account[KNIT_IDENT_NS_MAX] /* OUT */);

/* Fills *w with s as the store of webhook deliveries (webhook.h
** knit_webhook_store_t), an erasure included in the delivery's
** transaction (erase_in_txn 1).  Valid while s is open. */
struct knit_webhook_store_s;
KNIT_EXTERN void knit_pg_store_webhooks(knit_pg_store_t *s,
                                        struct knit_webhook_store_s *w /* OUT */);

/* sync-inspect's view (relay_store.h's listings, on PostgreSQL).
** open_readonly connects as knit_pg_store_open does but only checks the
** schema: KNIT_ENOTREPLICA for a database without one, KNIT_EVERSION for
** any other version than KNIT_PG_SCHEMA_VERSION (an older one is upgraded
** by sync-relay, not here); every transaction of the session is read-only.
** list, list_anon and list_schemas are knit_relay_store_list, _list_anon
** and _list_schemas: the same calls in the same order on the same content,
** never a salt or hash; a non-zero return from fn stops the walk and is
** returned. */
struct knit_relay_schema_info_s;
KNIT_EXTERN int knit_pg_store_open_readonly(const char *conninfo, knit_pg_store_t **out /* OUT */);
KNIT_EXTERN int knit_pg_store_list(knit_pg_store_t *s, knit_relay_ns_fn fn, void *data);
KNIT_EXTERN int knit_pg_store_list_anon(knit_pg_store_t *s,
                                        int (*fn)(void *data, const char *id, uint64_t created_ms),
                                        void *data);
KNIT_EXTERN int knit_pg_store_list_schemas(knit_pg_store_t *s,
                                           int (*fn)(void *data,
                                                     const struct knit_relay_schema_info_s *info),
                                           void *data);

/* Fills *b with s as a store backend, every operation completing at once. */
KNIT_EXTERN void knit_pg_store_backend(knit_pg_store_t *s, knit_relay_backend_t *b /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
