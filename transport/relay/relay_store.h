/*
** relay_store.h: the relay's embedded store, one SQLite file: the first
** backend of the store interface (store.h; knit_relay_store_backend() in
** store_sqlite.c fills that interface with these functions).
**
** The relay keeps, per namespace, a sequence that grows by one for every
** pushed unit that changed something, and the latest winning state of every
** cell it has seen, merged by the CRDT rules of crdt/ (lww.h, orset.h).
** Each cell remembers the sequence at which it last changed, so catch-up
** after any time offline is one index range scan that sends each changed
** cell once, in its latest state.  The store also keeps the anonymous
** credentials the relay has registered (an id and a salted hash of the
** secret, never the secret), the identity index (provider ids and emails
** to accounts) and organization memberships.
**
** Group commit: knit_relay_store_begin() opens one transaction; any number
** of pushes, from any connections, are applied into it with
** knit_relay_store_apply(); knit_relay_store_commit() makes all of them
** durable at once (one fsync).  Only after the commit returns 0 may the
** caller acknowledge those pushes or fan them out.
**
** Ownership: strings and batches passed in are only read during the call.
** Batches handed out (fan-out, catch-up) belong to the caller, who frees
** them with knit_batch_free().  A knit_relay_store_t is used by one thread
** at a time.  Other processes (sync-inspect) may read the file while the
** relay runs: the store is in WAL mode.
*/
#ifndef KNIT_RELAY_STORE_H
#define KNIT_RELAY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "knit.h"
#include "schema.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_relay_store_s knit_relay_store_t;

/* Flags for knit_relay_store_open(). */
#define KNIT_RELAY_STORE_READONLY 1 /* never writes or creates (sync-inspect) */

/* Opens or creates the store at path.  KNIT_ENOTREPLICA if the file is
** SQLite but not a relay store; KNIT_EVERSION if its schema version is
** newer than this library's, or 1 (there is no migration from 1; a schema 2
** or 3 store is upgraded in place to 4, or read as it is when read-only); KNIT_EDB /
** KNIT_EIO on other failures.  On error *out is NULL. */
KNIT_EXTERN int knit_relay_store_open(const char *path, int flags,
                                      knit_relay_store_t **out /* OUT */);
/* Closes the store, rolling back an uncommitted group; NULL is a no-op. */
KNIT_EXTERN void knit_relay_store_close(knit_relay_store_t *s);
/* Detailed message of the last failure ("" if none); valid until the next
** call on s. */
KNIT_EXTERN const char *knit_relay_store_errmsg(knit_relay_store_t *s);

/* ---------------------------------------------------------------------- */
/* Pushes and group commit                                                  */

/* Opens a group (one SQLite write transaction).  KNIT_EINVAL if one is
** already open. */
KNIT_EXTERN int knit_relay_store_begin(knit_relay_store_t *s);

/* Merges one decoded push into the open group.  Every change must belong to
** namespace ns (KNIT_EINVAL otherwise).  Each change is merged with the
** stored cell:
**   liveness   (cl, hlc, site) larger wins: the causal length is the max;
**   LWW cell   (cl, hlc, site) larger wins; a change of a row life older
**              than the row's stored causal length is dead and ignored;
**   OR-set     incoming cl > stored: replace; equal: knit_orset_join;
**              lower: ignored.
** Each pushed unit in which at least one change won takes the namespace's
** next sequence; a unit in which nothing won (a replay) takes none and is
** not in the fan-out.  When a row's causal length advances, its column cells
** of earlier lives are deleted: they can never win again.
** The push is atomic inside the group: on any error (KNIT_EINVAL,
** KNIT_ESCHEMA for a table or column whose shape contradicts what the store
** holds, KNIT_ECORRUPT for a bad OR-set state, KNIT_EDB) none of it is
** applied, *out is zeroed, and the group stays open and usable. */
KNIT_EXTERN int knit_relay_store_apply(knit_relay_store_t *s, const char *ns,
                                       const knit_batch_t *push,
                                       knit_relay_applied_t *out /* OUT */);

/* Commits the group durably (WAL, synchronous=FULL).  On failure the whole
** group is rolled back and the caller must not acknowledge any of it. */
KNIT_EXTERN int knit_relay_store_commit(knit_relay_store_t *s);
/* Abandons the open group (no-op when none is open). */
KNIT_EXTERN void knit_relay_store_rollback(knit_relay_store_t *s);

/* ---------------------------------------------------------------------- */
/* Reading                                                                  */

/* The namespace's current sequence (0 if the store has never seen it). */
KNIT_EXTERN int knit_relay_store_seq(knit_relay_store_t *s, const char *ns,
                                     uint64_t *seq /* OUT */);

/* Cells of ns that changed after sequence `after`, each once in its latest
** state, as a batch whose units are the sequences in increasing order (unit
** version = sequence; a unit holds the cells whose latest change was at that
** sequence).  max_changes > 0 keeps a page to at most that many changes,
** ending it before a unit that would take it over, except that a page
** always holds its first unit whole (a unit is never split); 0 = no
** limit.  *reached is the sequence the batch brings
** a reader to: the namespace's current sequence when *more is 0, else the
** last unit's.  Read in one snapshot, so concurrent commits are either
** wholly in it or come later with larger sequences.  A cell that cannot be
** sent (knit_relay_damage_t) is skipped, reported to the on_damage callback
** and counted (knit_relay_store_damaged); the rest of the page is sent. */
KNIT_EXTERN int knit_relay_store_catch_up(knit_relay_store_t *s, const char *ns, uint64_t after,
                                          size_t max_changes, knit_batch_t **out /* OUT */,
                                          uint64_t *reached /* OUT */, int *more /* OUT */);

/* The relay's current state of the cells of refused changes (REJECT's
** state, PROTOCOL.md): for each change changes[i] of b, the
** winning cells the store holds of that change's row, column by column,
** or all of the row's cells when its liveness is refused.  *out is a new
** batch of namespace ns, one unit (version = ns's sequence), empty when
** the store holds none of them.  Damaged cells are left out. */
KNIT_EXTERN int knit_relay_store_cells(knit_relay_store_t *s, const char *ns, const knit_batch_t *b,
                                       const size_t *changes, size_t n,
                                       knit_batch_t **out /* OUT */);

/* Registers the callback told about every cell catch-up skips (NULL: none). */
KNIT_EXTERN void knit_relay_store_on_damage(knit_relay_store_t *s, knit_relay_damage_fn fn,
                                            void *data);
/* Cells catch-up has skipped since the store was opened (each time one was
** met: a cell read by two catch-ups counts twice). */
KNIT_EXTERN uint64_t knit_relay_store_damaged(const knit_relay_store_t *s);

/* Size of the store's main database file, bytes (page_count * page_size;
** the WAL is not counted), for the relay's metrics. */
KNIT_EXTERN int knit_relay_store_size(knit_relay_store_t *s, int64_t *bytes /* OUT */);

/* Runs PRAGMA quick_check on the store file.  Returns 0 when SQLite finds
** nothing, KNIT_ECORRUPT with SQLite's findings (the first few lines, joined
** by "; ") in finding[0..n), or another error (finding says which). */
KNIT_EXTERN int knit_relay_store_check(knit_relay_store_t *s, char *finding, size_t n);

/* Canonical state digest of ns (crdt/digest.h), comparable with a replica's
** knit_digest(k, ns): for each row its liveness cell (column "", value the
** NULL encoding), and when the row is live, each column cell of the row's
** current life (LWW: value encoding, hlc, site; OR-set:
** knit_orset_canonical() bytes, hlc 0, site zeros).  Rows without a
** liveness cell count for nothing.  An unknown ns has the zero digest. */
KNIT_EXTERN int knit_relay_store_digest(knit_relay_store_t *s, const char *ns,
                                        knit_digest_t *out /* OUT */);

/* knit_relay_ns_info_t (one namespace, for listings) is in store.h. */

/* Calls fn for every namespace in name order; a non-zero return from fn
** stops the walk and is returned. */
KNIT_EXTERN int knit_relay_store_list(knit_relay_store_t *s,
                                      int (*fn)(void *data, const knit_relay_ns_info_t *ns),
                                      void *data);

/* Calls fn for at most limit namespaces, the busiest first (highest
** sequence), with rows and cells 0: cheap enough for a status page, which
** reads only the ns table. *total gets the number of namespaces. */
KNIT_EXTERN int knit_relay_store_busiest(knit_relay_store_t *s, size_t limit,
                                         int (*fn)(void *data, const knit_relay_ns_info_t *ns),
                                         void *data, uint64_t *total /* OUT */);

/* ---------------------------------------------------------------------- */
/* Namespaces and identity                                                  */

/* Erases namespace ns durably, in its own transaction (not inside a
** group): its cells, tables and sequence (design note 9 of relay_store.c).
** KNIT_ENOTFOUND when the store has never seen ns. */
KNIT_EXTERN int knit_relay_store_erase(knit_relay_store_t *s, const char *ns);
/* Erases an account: first writes its tombstone (knit_relay_store_erased),
** then erases namespace ns, every anonymous namespace claimed into it
** (knit_relay_store_claim_put), their devices and the account's identity
** (ids, email, profile values, memberships); *erased counts the
** namespaces.  The bytes are overwritten (secure_delete) and the WAL is
** checkpointed and truncated, so they are in none of the store's files.
** KNIT_ENOTFOUND when there was nothing to erase. */
KNIT_EXTERN int knit_relay_store_erase_account(knit_relay_store_t *s, const char *ns,
                                               size_t *erased /* OUT */);

/* How far a sign-in claim has merged namespace from into to: the
** sequence of from up to which its cells are in to (0: never claimed).
** claim_put records it, inside the caller's transaction; erasing either
** namespace forgets it, so a later claim merges everything again. */
KNIT_EXTERN int knit_relay_store_claim_get(knit_relay_store_t *s, const char *from, const char *to,
                                           uint64_t *upto /* OUT */);
KNIT_EXTERN int knit_relay_store_claim_put(knit_relay_store_t *s, const char *from, const char *to,
                                           uint64_t upto);

/* Seals (design note 12 of relay_store.c): knit_relay_store_seal, inside
** the caller's transaction, seals anonymous namespace anon to account: 0
** when it is sealed to account now (or was), KNIT_EDENIED when another
** account sealed or claimed it first.  knit_relay_store_sealed sets
** *sealed when anon was sealed (or claimed) by any account. */
KNIT_EXTERN int knit_relay_store_seal(knit_relay_store_t *s, const char *anon, const char *account);
KNIT_EXTERN int knit_relay_store_sealed(knit_relay_store_t *s, const char *anon,
                                        int *sealed /* OUT */);
/* Tombstones of erased accounts (knit_relay_store_erase_account writes
** one, even when nothing was stored): knit_relay_store_erased sets *erased
** when ns has one; knit_relay_store_unerase removes it (the provider
** created the user again), inside the caller's open group (a webhook
** delivery's, which then commits it) or else in its own transaction, and
** sets *cleared when there was one. */
KNIT_EXTERN int knit_relay_store_erased(knit_relay_store_t *s, const char *ns,
                                        int *erased /* OUT */);
KNIT_EXTERN int knit_relay_store_unerase(knit_relay_store_t *s, const char *ns,
                                         int *cleared /* OUT */);

/* Webhook bookkeeping (webhook.h), in meta.  knit_relay_store_webhook_seen
** sets *seen when delivery id was recorded before (a provider's retry).
** knit_relay_store_webhook_record records id, durably (its own transaction,
** or inside the caller's open group, which then commits it),
** and, for an event about user with updated_ms > 0, sets *stale when an
** event of that user with a later updated_at was recorded before (else
** the user's updated_at becomes updated_ms). */
KNIT_EXTERN int knit_relay_store_webhook_seen(knit_relay_store_t *s, const char *id,
                                              int *seen /* OUT */);
KNIT_EXTERN int knit_relay_store_webhook_record(knit_relay_store_t *s, const char *id,
                                                const char *user, uint64_t updated_ms,
                                                int *stale /* OUT */);

/* ---------------------------------------------------------------------- */
/* The identity index (design note 13 of relay_store.c)                     */

/* The types (knit_ident_t, knit_ident_result_t) are in store.h. */

/* Trims ASCII white space and lower-cases ASCII letters of in into
** out[0..n); KNIT_ETOOBIG / KNIT_EINVAL (control characters). NULL in: "". */
KNIT_EXTERN int knit_relay_normalize_email(const char *in, char *out, size_t n);

/* Applies the identity index's rules to in (design note 13 of
** relay_store.c), in the caller's group when one is open, else in its own
** durable transaction: id match updates, an email match with another id
** relinks the id to the email's account, no match creates user:<id>
** (unless it has a tombstone: *out->erased, nothing changes); a read-only
** store only resolves (action 0, nothing recorded).  Profile
** values of an event apply unless it is older than the last applied; a
** sign-in's only fill what no event set.  On error *out is cleared. */
KNIT_EXTERN int knit_relay_store_identify(knit_relay_store_t *s, const knit_ident_t *in,
                                          uint64_t now_ms, knit_ident_result_t *out /* OUT */);
/* Marks account's knit_profile row as not written (a commit carrying it
** failed), so the next identify writes it whole (new_row). */
KNIT_EXTERN int knit_relay_store_ident_dirty(knit_relay_store_t *s, const char *account);
/* Frees out's fields and zeroes it; NULL is a no-op. */
KNIT_EXTERN void knit_relay_ident_result_clear(knit_ident_result_t *r);
/* The account of provider id `id` (or, when id is unknown or NULL, of
** `email`) into account ("" when none); nothing is written. */
KNIT_EXTERN int knit_relay_store_ident_get(knit_relay_store_t *s, const char *id, const char *email,
                                           char account[KNIT_IDENT_NS_MAX] /* OUT */);
/* Accounts and provider ids the index holds. */
KNIT_EXTERN int knit_relay_store_ident_count(knit_relay_store_t *s, uint64_t *accounts /* OUT */,
                                             uint64_t *ids /* OUT */);
/* *is = 1 when a device of account reported (in its HELLO) tracking table. */
KNIT_EXTERN int knit_relay_store_tracks(knit_relay_store_t *s, const char *account,
                                        const char *table, int *is /* OUT */);
/* Organization memberships (organizationMembership.created / .deleted),
** kept for a later issue: records that user_id (resolved to account) is
** (present = 1) or is no longer (0) a member of org with role, unless an
** event of that membership with a later updated_ms was recorded (*stale).
** In the caller's group when one is open, else its own transaction.
** knit_relay_store_member reads one back: *present 1 member, -1 removed,
** 0 never seen. */
KNIT_EXTERN int knit_relay_store_membership(knit_relay_store_t *s, const char *org,
                                            const char *user_id, const char *account,
                                            const char *role, int present, uint64_t updated_ms,
                                            int *stale /* OUT */);
KNIT_EXTERN int knit_relay_store_member(knit_relay_store_t *s, const char *org, const char *user_id,
                                        int *present /* OUT */, char *role /* OUT */, size_t n);
/* Every membership recorded for account, removed ones too: fn(arg, org,
** role, present, updated_ms) for each, in org order. */
KNIT_EXTERN int knit_relay_store_memberships(knit_relay_store_t *s, const char *account,
                                             knit_relay_member_fn fn, void *arg);

/* The relay's own site id, made once and kept in the store (design note
** 10); not inside a group.  KNIT_ENOTFOUND on a read-only store that has
** none yet. */
KNIT_EXTERN int knit_relay_store_site(knit_relay_store_t *s, knit_site_t *site /* OUT */);

/* ---------------------------------------------------------------------- */
/* Anonymous credentials                                                    */

/* Looks an anonymous id up: 1 and its salt and hash when registered, 0 when
** not, or an error. */
KNIT_EXTERN int knit_relay_store_anon_get(knit_relay_store_t *s, const char *id,
                                          uint8_t salt[KNIT_RELAY_SALT_LEN] /* OUT */,
                                          uint8_t hash[KNIT_RELAY_HASH_LEN] /* OUT */);
/* Registers id durably in its own transaction (not inside a group).
** KNIT_EEXISTS if the id is already registered (first use wins). */
KNIT_EXTERN int knit_relay_store_anon_put(knit_relay_store_t *s, const char *id,
                                          const uint8_t salt[KNIT_RELAY_SALT_LEN],
                                          const uint8_t hash[KNIT_RELAY_HASH_LEN], uint64_t now_ms);
/* Calls fn for every registered anonymous id (never a salt or hash), in id
** order; a non-zero return from fn stops the walk and is returned. */
KNIT_EXTERN int
knit_relay_store_list_anon(knit_relay_store_t *s,
                           int (*fn)(void *data, const char *id, uint64_t created_ms), void *data);

/* ---------------------------------------------------------------------- */
/* Devices and the schemas they run (design note 11 of relay_store.c)       */

/* Records that device (principal, site) connected now, running `schema`
** (its HELLO's, with its fingerprint; NULL: it reported none) with software
** `agent` (NULL: none), in its own durable transaction (not inside a
** group).  A report that differs from the stored one only by less than a
** minute of last_seen writes nothing.  A fingerprint no device runs any more
** is forgotten. */
KNIT_EXTERN int knit_relay_store_device_seen(knit_relay_store_t *s, const char *principal,
                                             const knit_site_t *site, const knit_schema_t *schema,
                                             const char *agent, uint64_t now_ms);

/* One device, for listings. */
typedef struct knit_relay_device_s {
    const char *principal;  /* "anon:<id>" / "user:<sub>" */
    knit_site_t site;       /* the replica's site id */
    const char *agent;      /* its HELLO's agent, or "" */
    uint64_t first_seen_ms; /* first HELLO (ms since the epoch) */
    uint64_t last_seen_ms;  /* last HELLO, to within a minute */
} knit_relay_device_t;

/* One schema version and the devices that run it.  Valid during the
** callback. */
typedef struct knit_relay_schema_info_s {
    int reported;                       /* 0: the devices that reported no schema
                                           (older clients); schema is NULL */
    const knit_schema_t *schema;        /* tables by name, keys in key order then
                                           columns by name; fp is the stored one */
    uint64_t first_seen_ms;             /* when a device first reported it */
    const knit_relay_device_t *devices; /* by principal, then site */
    size_t ndevices;                    /* >= 1 */
} knit_relay_schema_info_t;

/* Appends column `name` (kind 0: a key column, 1: LWW, 2: OR-set) of table
** tbl to the tables (tabs, ntabs) of a schema being read back: rows come by
** table, so a tbl other than the last table's starts a new one.  The names
** are copied.  Both stores' list_schemas build their answers with it. */
KNIT_EXTERN int knit_relay_schema_add_col(knit_schema_table_t **tabs, size_t *ntabs,
                                          const char *tbl, const char *name, int kind);
/* Frees what knit_relay_schema_add_col built (the tables and their names). */
KNIT_EXTERN void knit_relay_schema_tables_free(knit_schema_table_t *tabs, size_t ntabs);

/* Calls fn for every fingerprint some device runs, oldest first, then once
** for the devices that reported none (if any), in one snapshot; a non-zero
** return from fn stops the walk and is returned.  A read-only schema 2
** store lists nothing. */
KNIT_EXTERN int knit_relay_store_list_schemas(
    knit_relay_store_t *s, int (*fn)(void *data, const knit_relay_schema_info_t *info), void *data);

/* ---------------------------------------------------------------------- */
/* The store interface                                                      */

/* Fills *b with s as a store backend (store.h), every operation completing
** at once.  Defined in store_sqlite.c, part of the relay library (not of
** the store library sync-inspect links). */
KNIT_EXTERN void knit_relay_store_backend(knit_relay_store_t *s, knit_relay_backend_t *b /* OUT */);

/* Fills *w with s as the store of webhook deliveries (webhook.h
** knit_webhook_store_t): a delivery is one group (knit_relay_store_begin
** .. _commit), but for an erasure, which keeps its own transactions
** (erase_in_txn 0).  Defined in store_sqlite.c, like the above. */
struct knit_webhook_store_s;
KNIT_EXTERN void knit_relay_store_webhooks(knit_relay_store_t *s,
                                           struct knit_webhook_store_s *w /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
