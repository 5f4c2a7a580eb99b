/*
** store.h: the relay's store interface.  The protocol engine
** (proto_server.h) keeps everything durable through this struct of
** callbacks, so that a second backend can sit under it beside the
** embedded SQLite store (relay_store.h, filled in by
** knit_relay_store_backend() in store_sqlite.c): PostgreSQL (store_pg.h,
** knit_pg_store_backend() in store_pg.c).
**
** What the engine needs of a store:
**   - group commit: a list of decoded pushes merged and made durable
**     together; the result may come later, through a callback;
**   - reads: a namespace's sequence, and catch-up pages of the cells that
**     changed after a sequence (each cell once, in its latest state);
**   - anonymous credentials: look up and register (salted hashes only);
**   - namespace operations: the sign-in claim's merge of one namespace
**     into another, and erasure of a namespace, each possibly later;
**   - the relay's own site id, made once and kept, so the relay itself
**     can write cells;
**   - diagnostics: the last error's text, cells catch-up had to skip;
**   - devices: which schema each (principal, site) reported in HELLO;
**   - identity: anonymous ids sealed by a claim, erased accounts.
**
** Operations that may complete later return KNIT_RELAY_PENDING and call
** their done callback exactly once, afterwards (never from inside the
** call); otherwise they return 0 or a KNIT_E* code at once and do not call
** it.  A backend may be synchronous throughout (the SQLite one is): the
** engine is written for the asynchronous case and answers a push only from
** the group's completion.  Reads must see committed state only, and
** operations issued while a commit is pending are ordered after it by the
** backend.  Commits made elsewhere (another relay on the same database)
** are announced to the engine with knit_relay_engine_advanced().
**
** Ownership: strings and batches passed in are the engine's and stay
** valid until the operation completes; batches handed out (fan-out,
** catch-up) become the engine's, which frees them with knit_batch_free().
*/
#ifndef KNIT_RELAY_STORE_IFACE_H
#define KNIT_RELAY_STORE_IFACE_H

#include <stddef.h>
#include <stdint.h>

#include "knit.h"
#include "schema.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_RELAY_PENDING 1   /* the operation completes later, through done() */
#define KNIT_RELAY_SALT_LEN 16 /* bytes of salt per anonymous id */
#define KNIT_RELAY_HASH_LEN 32 /* SHA-256 */

/* What one applied push changed. */
typedef struct knit_relay_applied_s {
    knit_batch_t *fanout; /* winning changes, one unit per pushed unit that
                             changed something, unit version = its sequence;
                             owned by the caller (knit_batch_free) */
    uint64_t first_seq;   /* sequence of the first such unit (0 if none) */
    uint64_t last_seq;    /* sequence of the last (0 if none); first..last are
                             consecutive and all this push's: nothing else
                             takes a sequence of ns while a push applies */
    size_t applied;       /* changes that won and were stored */
    size_t known;         /* changes that lost or were already held */
} knit_relay_applied_t;

/* A stored cell catch-up could not send (design note 8 of relay_store.c):
** damaged in the file (it does not decode, names an unknown table or
** column) or not applicable by replicas (knit_change_check refuses it, e.g.
** an OR-set with a BLOB element stored by an older relay).  Strings are
** valid during the callback; names and keys are shown as far as they can
** be read ("table id 7" when the table is unknown; the key's bytes as X'..'
** when it does not decode). */
typedef struct knit_relay_damage_s {
    const char *ns;      /* namespace */
    const char *table;   /* table name, or "table id N" */
    const char *key;     /* the key as SQL literals, or its raw bytes */
    const char *column;  /* column name, "(row liveness)", or "column id N" */
    uint64_t seq;        /* the cell's sequence */
    const char *message; /* what is wrong with it */
} knit_relay_damage_t;

typedef void (*knit_relay_damage_fn)(void *data, const knit_relay_damage_t *d);

/* One push of a group commit.  The engine fills the inputs; the backend
** fills the outputs before the group completes. */
typedef struct knit_relay_push_s {
    struct knit_relay_push_s *next; /* the group's next push, or NULL */
    const char *ns;                 /* in: namespace of every change */
    const knit_batch_t *batch;      /* in: the decoded, checked changes */
    int code;                       /* out: 0, or why this push alone was refused
                                       (KNIT_EINVAL, KNIT_ESCHEMA, KNIT_ECORRUPT ...);
                                       the rest of the group still commits */
    char msg[200];                  /* out: detail of code */
    knit_relay_applied_t res;       /* out: what it changed (zeroed when refused) */
} knit_relay_push_t;

/* Result of a namespace merge. */
typedef struct knit_relay_merged_s {
    uint64_t seq; /* the target namespace's sequence after the merge */
    size_t cells; /* cells of the source read and merged */
} knit_relay_merged_t;

/* One organization membership (store.h memberships): org's id, the
** provider's role name, present 1 (member) or 0 (removed), and when the
** provider last changed it (ms). */
typedef void (*knit_relay_member_fn)(void *arg, const char *org, const char *role, int present,
                                     uint64_t updated_ms);

/* One namespace, for listings (sync-inspect relay, the status page). */
typedef struct knit_relay_ns_info_s {
    const char *name; /* namespace name, valid during the callback */
    uint64_t seq;     /* current sequence */
    uint64_t rows;    /* rows (liveness cells) held */
    uint64_t cells;   /* cells held, liveness included */
} knit_relay_ns_info_t;

typedef int (*knit_relay_ns_fn)(void *data, const knit_relay_ns_info_t *ns);

/* Completion of an operation that returned KNIT_RELAY_PENDING: 0, or a
** KNIT_E* code (then nothing of it took effect). */
typedef void (*knit_relay_done_fn)(void *arg, int status);

/* The identity index (relay_store.c design note 13; relay_store.h
** knit_relay_store_identify). */
#define KNIT_IDENT_NS_MAX 160               /* an account's namespace fits (KNIT_PRINCIPAL_MAX) */
#define KNIT_IDENT_EMAIL_MAX 321            /* an email of up to 320 bytes, and its NUL */
#define KNIT_PROFILE_TABLE "knit_profile"   /* the synced profile table */
#define KNIT_ACTIVITY_TABLE "knit_activity" /* the synced activity table */

/* What an identity resolves to. */
#define KNIT_IDENT_CREATED 1  /* no id or email matched: a new account user:<id> */
#define KNIT_IDENT_UPDATED 2  /* the id matched */
#define KNIT_IDENT_RELINKED 3 /* the email matched another id's account: the id links to it */

/* Profile fields, in knit_profile's column order after user_id. */
enum {
    KNIT_PROFILE_EMAIL,
    KNIT_PROFILE_FIRST_NAME,
    KNIT_PROFILE_LAST_NAME,
    KNIT_PROFILE_IMAGE_URL,
    KNIT_PROFILE_NFIELDS
};

/* A person as a sign-in's token or a provider's event describes them.
** Strings are read during the call; NULL means "not known" (kept). */
typedef struct knit_ident_s {
    const char *id;                          /* provider user id (sub, data.id); required */
    const char *email;                       /* primary email, or NULL */
    const char *external_id;                 /* provider's external_id, or NULL */
    const char *field[KNIT_PROFILE_NFIELDS]; /* profile values; [KNIT_PROFILE_EMAIL] ignored
                                                (the email above, normalized, is used) */
    uint64_t updated_ms;                     /* provider's updated_at (an event), 0: a sign-in */
    int tracks[2];                           /* hint: the device signing in tracks
                                                knit_profile [0] / knit_activity [1] */
} knit_ident_t;

/* What knit_relay_store_identify did.  field[] is owned: clear it with
** knit_relay_ident_result_clear(). */
typedef struct knit_ident_result_s {
    char account[KNIT_IDENT_NS_MAX];    /* the account's namespace */
    char moved_from[KNIT_IDENT_NS_MAX]; /* a provisional account (made by a sign-in
                                           without email) the id left for the email's
                                           account, whose sessions should end; or "" */
    uint64_t merged_seq;                /* the account's sequence after moved_from's
                                           cells were merged into it (0: none) */
    char email[KNIT_IDENT_EMAIL_MAX];   /* the input email normalized ("" if none) */
    int action;                         /* KNIT_IDENT_* (0 when erased) */
    int erased;                         /* it would make an account that has a tombstone:
                                           nothing was done (refuse it) */
    int stale;                          /* an event older than what was applied: no
                                           profile value changed */
    int email_conflict;                 /* the email is another account's: not moved */
    int tracks[2];                      /* a device of the account tracks knit_profile
                                           [0] / knit_activity [1] (or the hint said so) */
    int new_row;                        /* the profile row was never written: write its
                                           liveness and every field */
    unsigned changed;                   /* bit f: profile field f is to be written
                                           (only when tracks[0]) */
    char *field[KNIT_PROFILE_NFIELDS];  /* the account's profile values now (NULL: none) */
    uint64_t updated_ms;                /* the profile's updated_at to write */
} knit_ident_result_t;

typedef struct knit_relay_backend_s {
    /* Merges the pushes of the list (in order; each atomic, see
    ** relay_store.h knit_relay_store_apply for the rules) and makes them
    ** durable together.  A failure of the whole group (nothing committed)
    ** is its return value or done's status; the outputs are then ignored
    ** and the backend frees any fan-out it made. */
    int (*commit)(void *data, knit_relay_push_t *group, knit_relay_done_fn done, void *arg);
    /* Current sequence of ns (0 if never seen). */
    int (*seq)(void *data, const char *ns, uint64_t *seq /* OUT */);
    /* Catch-up page of ns after `after` (relay_store.h knit_relay_store_catch_up). */
    int (*catch_up)(void *data, const char *ns, uint64_t after, size_t max_changes,
                    knit_batch_t **out /* OUT */, uint64_t *reached /* OUT */, int *more /* OUT */);
    /* Anonymous credentials: get answers 1 (found), 0 (unknown) or an error;
    ** put registers durably, KNIT_EEXISTS if the id is taken. */
    int (*anon_get)(void *data, const char *id, uint8_t salt[KNIT_RELAY_SALT_LEN] /* OUT */,
                    uint8_t hash[KNIT_RELAY_HASH_LEN] /* OUT */);
    int (*anon_put)(void *data, const char *id, const uint8_t salt[KNIT_RELAY_SALT_LEN],
                    const uint8_t hash[KNIT_RELAY_HASH_LEN], uint64_t now_ms);
    /* Merges every cell of `from` into `to` (CRDT union, idempotent) in one
    ** transaction; *out is filled before completion. */
    int (*merge)(void *data, const char *from, const char *to, size_t page,
                 knit_relay_merged_t *out /* OUT */, knit_relay_done_fn done, void *arg);
    /* Forgets ns: cells and sequence.  KNIT_ENOTFOUND for an unknown ns. */
    int (*erase)(void *data, const char *ns, knit_relay_done_fn done, void *arg);
    /* The relay's site id, made on first call and kept. */
    int (*site)(void *data, knit_site_t *site /* OUT */);
    /* Text of the last failure ("" if none), valid until the next call. */
    const char *(*errmsg)(void *data);
    /* Registers the callback told about each cell catch-up skips (NULL:
    ** none), and counts them. */
    void (*on_damage)(void *data, knit_relay_damage_fn fn, void *fn_data);
    uint64_t (*damaged)(void *data);
    /* Records a device's HELLO: principal, site, its schema (NULL: none
    ** reported) and agent (NULL: none), at now_ms (relay_store.h
    ** knit_relay_store_device_seen).  Answers at once; may be NULL (the
    ** backend keeps no devices).  A failure is logged, never refused. */
    int (*device_seen)(void *data, const char *principal, const knit_site_t *site,
                       const knit_schema_t *schema, const char *agent, uint64_t now_ms);
    /* Identity (proto_server.c design note 14); either may be NULL (the
    ** backend keeps neither).  sealed: *is = 1 when a sign-in claimed the
    ** anonymous namespace anon_ns (its merge, above, also seals it, and
    ** answers KNIT_EDENIED when another account sealed it first).  erased:
    ** *is = 1 when account principal was erased and not created again. */
    int (*sealed)(void *data, const char *anon_ns, int *is /* OUT */);
    int (*erased)(void *data, const char *principal, int *is /* OUT */);
    /* The identity index (relay_store.h knit_relay_store_identify): a
    ** signed-in provider id to its account, answering at once; may be NULL
    ** (no index: the principal is user:<sub>, and no system rows). */
    int (*identify)(void *data, const knit_ident_t *in, uint64_t now_ms,
                    knit_ident_result_t *out /* OUT */);
    /* The profile row of account was not stored after all (its commit
    ** failed): the next identify writes it whole.  May be NULL. */
    int (*ident_dirty)(void *data, const char *account);
    /* The winning cells of the rows of refused changes b->changes[changes[i]]
    ** (relay_store.h knit_relay_store_cells), for REJECT's state; answers at
    ** once.  May be NULL: REJECT then carries no state. */
    int (*cells)(void *data, const char *ns, const knit_batch_t *b, const size_t *changes, size_t n,
                 knit_batch_t **out /* OUT */);
    void *data; /* passed to every callback */
    /* Commits made elsewhere (another relay on the same database): with a
    ** loop (a uv_loop_t *), the backend starts telling advanced() about
    ** them on that loop, and keeps doing so across reconnects (after one,
    ** it announces every namespace's sequence, since notifications may
    ** have been missed); with loop NULL it stops and closes its handles
    ** (before the loop ends).  May be NULL: the backend is the only writer
    ** (the SQLite store).  After data, so older initializers stay valid. */
    void (*attach)(void *data, void *loop,
                   void (*advanced)(void *arg, const char *ns, uint64_t seq), void *arg);
    /* The organization memberships recorded for account (webhooks,
    ** relay_store.h knit_relay_store_memberships): fn once per membership,
    ** removed ones too (present 0), answering at once.  May be NULL (the
    ** backend keeps none: only the token's organization is granted). */
    int (*memberships)(void *data, const char *account, knit_relay_member_fn fn, void *arg);
    /* For the status page and /metrics, answering at once; either may be
    ** NULL.  busiest: fn for at most limit namespaces, the highest
    ** sequence first, rows and cells 0, and *total = every namespace
    ** (relay_store.h knit_relay_store_busiest).  size: the bytes the store
    ** takes on disk (the file; the database). */
    int (*busiest)(void *data, size_t limit, knit_relay_ns_fn fn, void *fn_data,
                   uint64_t *total /* OUT */);
    int (*size)(void *data, int64_t *bytes /* OUT */);
} knit_relay_backend_t;

#ifdef __cplusplus
}
#endif
#endif
