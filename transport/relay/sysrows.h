/*
** sysrows.h: the rows the relay itself writes into an account's namespace,
** as CRDT changes from the relay's own site, without I/O: the synced
** system tables knit_profile and knit_activity (docs/sync-relay.md,
** "Profile and activity").
**
** The caller gives the namespace, the relay's site id and a stamp of the
** relay's HLC; each function appends one unit to a push batch that the
** caller merges exactly as a replica's push is merged (the engine's group
** commit, or knit_relay_store_apply in the webhook's transaction), so the
** rows take sequences, are durable before anyone is told, and fan out.
**
**   knit_profile(user_id TEXT PRIMARY KEY, email TEXT, first_name TEXT,
**                last_name TEXT, image_url TEXT, updated_at INTEGER)
**   knit_activity(id TEXT PRIMARY KEY, user TEXT, action TEXT,
**                 at INTEGER, source TEXT)
**
** Every column is an LWW register; rows are written in their first life
** (causal length 1).  Ownership: strings are copied into the batch.
*/
#ifndef KNIT_RELAY_SYSROWS_H
#define KNIT_RELAY_SYSROWS_H

#include <stdint.h>

#include "knit.h"
#include "relay_store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Appends the profile row of account ns (user_id: the account's id, ns
** without "user:"): the fields r->changed names, updated_at, and, when
** r->new_row, the row's liveness.  Nothing when r->changed is 0 and the
** row is not new. */
int knit__sysrows_profile(knit_batch_t *b, const char *ns, const knit_site_t *site, uint64_t hlc,
                          const knit_ident_result_t *r);

/* Appends one activity row: id (unique: a provider's session id, or
** "knit-<stamp>"), user (the provider id that signed in), action
** ("sign_in", "session.created"), at (ms since the epoch) and source
** ("knit", "clerk"). */
int knit__sysrows_activity(knit_batch_t *b, const char *ns, const knit_site_t *site, uint64_t hlc,
                           const char *id, const char *user, const char *action, uint64_t at_ms,
                           const char *source);

/* The profile claims of a verified token's payload (call it only after the
** signature was checked): sub, email (claims "email", "primary_email" or
** "email_address"), first_name ("first_name", "given_name"), last_name
** ("last_name", "family_name"), image_url ("image_url", "picture"),
** external_id and sid (Clerk's session id).  Strings are owned; absent
** claims are NULL.  KNIT_EINVAL when the payload is not a JSON object. */
typedef struct knit_token_profile_s {
    char *sub;                         /* subject */
    char *email;                       /* primary email, or NULL */
    char *field[KNIT_PROFILE_NFIELDS]; /* [KNIT_PROFILE_EMAIL] unused */
    char *external_id;                 /* or NULL */
    char *sid;                         /* provider's session id, or NULL */
    char *org;                         /* active organization's id, or NULL */
    char *org_role;                    /* the member's role in it ("org:admin"), or NULL */
    uint64_t iat_ms;                   /* when the token was issued (ms), 0 if not said */
} knit_token_profile_t;

int knit__token_profile(const char *token, knit_token_profile_t *out /* OUT */);
void knit__token_profile_free(knit_token_profile_t *p);

#ifdef __cplusplus
}
#endif
#endif
