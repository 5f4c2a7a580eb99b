/*
** store_sqlite.c: the embedded SQLite store (relay_store.h) as a backend of
** the store interface (store.h).  Every operation completes before it
** returns, so none ever answers KNIT_RELAY_PENDING.
**
** Design notes
**   1. A group commit is one SQLite transaction: begin, each push merged in
**      its own savepoint (a push the store refuses leaves the others
**      intact), one COMMIT.  If the commit fails, every fan-out is freed
**      and the engine answers nothing of the group with an ACK.
**   2. The claim's merge is a catch-up of the source namespace applied to
**      the target, page by page, inside one transaction: a CRDT union, so
**      merging twice adds nothing the second time.  The store remembers
**      the source's sequence it reached (knit_relay_store_claim_put), so
**      the next sign-in of the same pair reads only cells written since:
**      a claim costs the new cells, not the whole namespace again.
**   3. The merge seals the source to the target in the same transaction
**      (relay_store.c design note 12), before it reads a cell: a source
**      sealed to another account is refused with KNIT_EDENIED and nothing
**      is merged.  Sealing an empty namespace counts too.
**   4. Webhook deliveries (webhook.h knit_webhook_store_t, filled by
**      knit_relay_store_webhooks) are one group each: the identity index,
**      memberships, the tombstone's removal, the relay's rows and the
**      delivery's record commit together.  An erasure alone runs outside
**      it (erase_in_txn 0): it overwrites the freed pages and truncates
**      the WAL, which needs transactions of its own.
*/
#include "relay_store.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "webhook.h"

static int b_commit(void *data, knit_relay_push_t *group, knit_relay_done_fn done, void *arg)
{
    knit_relay_store_t *s = data;
    int rc;
    (void)done;
    (void)arg;
    if ((rc = knit_relay_store_begin(s)) != 0)
        return rc;
    for (knit_relay_push_t *p = group; p; p = p->next) {
        int arc = knit_relay_store_apply(s, p->ns, p->batch, &p->res);
        if (arc) {
            p->code = arc;
            snprintf(p->msg, sizeof p->msg, "%s", knit_relay_store_errmsg(s));
        }
    }
    if ((rc = knit_relay_store_commit(s)) != 0) {
        for (knit_relay_push_t *p = group; p; p = p->next) {
            knit_batch_free(p->res.fanout);
            memset(&p->res, 0, sizeof p->res);
        }
    }
    return rc;
}

static int b_seq(void *data, const char *ns, uint64_t *seq)
{
    return knit_relay_store_seq(data, ns, seq);
}

static int b_catch_up(void *data, const char *ns, uint64_t after, size_t max_changes,
                      knit_batch_t **out, uint64_t *reached, int *more)
{
    return knit_relay_store_catch_up(data, ns, after, max_changes, out, reached, more);
}

static int b_cells(void *data, const char *ns, const knit_batch_t *b, const size_t *changes,
                   size_t n, knit_batch_t **out)
{
    return knit_relay_store_cells(data, ns, b, changes, n, out);
}

static int b_anon_get(void *data, const char *id, uint8_t salt[KNIT_RELAY_SALT_LEN],
                      uint8_t hash[KNIT_RELAY_HASH_LEN])
{
    return knit_relay_store_anon_get(data, id, salt, hash);
}

static int b_anon_put(void *data, const char *id, const uint8_t salt[KNIT_RELAY_SALT_LEN],
                      const uint8_t hash[KNIT_RELAY_HASH_LEN], uint64_t now_ms)
{
    return knit_relay_store_anon_put(data, id, salt, hash, now_ms);
}

/* Design note 2. */
static int b_merge(void *data, const char *from, const char *to, size_t page,
                   knit_relay_merged_t *out, knit_relay_done_fn done, void *arg)
{
    knit_relay_store_t *s = data;
    uint64_t after = 0;
    int more = 1, rc;

    (void)done;
    (void)arg;
    memset(out, 0, sizeof *out);
    if ((rc = knit_relay_store_begin(s)) != 0)
        return rc;
    /* Sealed to `to`, or refused (KNIT_EDENIED): design note 3. */
    if ((rc = knit_relay_store_seal(s, from, to)) != 0 ||
        (rc = knit_relay_store_claim_get(s, from, to, &after)) != 0)
        more = 0;
    const uint64_t from_seq = after;
    while (more) {
        knit_batch_t *b = NULL;
        knit_relay_applied_t res;
        uint64_t reached;
        uint32_t to_idx;

        if ((rc = knit_relay_store_catch_up(s, from, after, page, &b, &reached, &more)) != 0)
            break;
        if (b->nchanges == 0) {
            knit_batch_free(b);
            break;
        }
        if ((rc = knit_batch_ns(b, to, &to_idx)) != 0) {
            knit_batch_free(b);
            break;
        }
        for (size_t i = 0; i < b->nchanges; i++)
            b->changes[i].ns = to_idx;
        rc = knit_relay_store_apply(s, to, b, &res);
        out->cells += b->nchanges;
        knit_batch_free(b);
        if (rc)
            break;
        knit_batch_free(res.fanout);
        after = reached;
    }
    if (rc == 0 && after > from_seq)
        rc = knit_relay_store_claim_put(s, from, to, after);
    if (rc == 0)
        rc = knit_relay_store_commit(s);
    else
        knit_relay_store_rollback(s);
    if (rc == 0)
        rc = knit_relay_store_seq(s, to, &out->seq);
    return rc;
}

static int b_erase(void *data, const char *ns, knit_relay_done_fn done, void *arg)
{
    (void)done;
    (void)arg;
    return knit_relay_store_erase(data, ns);
}

static int b_site(void *data, knit_site_t *site)
{
    return knit_relay_store_site(data, site);
}

static int b_sealed(void *data, const char *anon_ns, int *is)
{
    return knit_relay_store_sealed(data, anon_ns, is);
}

static int b_erased(void *data, const char *principal, int *is)
{
    return knit_relay_store_erased(data, principal, is);
}

static int b_identify(void *data, const knit_ident_t *in, uint64_t now_ms, knit_ident_result_t *out)
{
    return knit_relay_store_identify(data, in, now_ms, out);
}

static int b_ident_dirty(void *data, const char *account)
{
    return knit_relay_store_ident_dirty(data, account);
}

static int b_memberships(void *data, const char *account, knit_relay_member_fn fn, void *arg)
{
    return knit_relay_store_memberships(data, account, fn, arg);
}

static int b_busiest(void *data, size_t limit, knit_relay_ns_fn fn, void *fn_data, uint64_t *total)
{
    return knit_relay_store_busiest(data, limit, fn, fn_data, total);
}

static int b_size(void *data, int64_t *bytes)
{
    return knit_relay_store_size(data, bytes);
}

static const char *b_errmsg(void *data)
{
    return knit_relay_store_errmsg(data);
}

static void b_on_damage(void *data, knit_relay_damage_fn fn, void *fn_data)
{
    knit_relay_store_on_damage(data, fn, fn_data);
}

static uint64_t b_damaged(void *data)
{
    return knit_relay_store_damaged(data);
}

static int b_device_seen(void *data, const char *principal, const knit_site_t *site,
                         const knit_schema_t *schema, const char *agent, uint64_t now_ms)
{
    return knit_relay_store_device_seen(data, principal, site, schema, agent, now_ms);
}

void knit_relay_store_backend(knit_relay_store_t *s,
                              knit_relay_backend_t *b) /* see relay_store.h */
{
    memset(b, 0, sizeof *b);
    b->commit = b_commit;
    b->seq = b_seq;
    b->catch_up = b_catch_up;
    b->cells = b_cells;
    b->anon_get = b_anon_get;
    b->anon_put = b_anon_put;
    b->merge = b_merge;
    b->erase = b_erase;
    b->site = b_site;
    b->errmsg = b_errmsg;
    b->on_damage = b_on_damage;
    b->damaged = b_damaged;
    b->device_seen = b_device_seen;
    b->sealed = b_sealed;
    b->erased = b_erased;
    b->identify = b_identify;
    b->ident_dirty = b_ident_dirty;
    b->memberships = b_memberships;
    b->busiest = b_busiest;
    b->size = b_size;
    b->data = s;
}

/* ---------------------------------------------------------------------- */
/* Webhook deliveries (design note 4)                                       */

static int w_begin(void *data)
{
    return knit_relay_store_begin(data);
}

static int w_commit(void *data)
{
    return knit_relay_store_commit(data);
}

static void w_rollback(void *data)
{
    knit_relay_store_rollback(data);
}

static int w_seen(void *data, const char *id, int *seen)
{
    return knit_relay_store_webhook_seen(data, id, seen);
}

static int w_record(void *data, const char *id, const char *user, uint64_t updated_ms, int *stale)
{
    return knit_relay_store_webhook_record(data, id, user, updated_ms, stale);
}

static int w_ident_get(void *data, const char *id, char account[KNIT_IDENT_NS_MAX])
{
    return knit_relay_store_ident_get(data, id, NULL, account);
}

static int w_erase_account(void *data, const char *ns, size_t *erased)
{
    return knit_relay_store_erase_account(data, ns, erased);
}

static int w_unerase(void *data, const char *ns, int *cleared)
{
    return knit_relay_store_unerase(data, ns, cleared);
}

static int w_membership(void *data, const char *org, const char *user_id, const char *account,
                        const char *role, int present, uint64_t updated_ms, int *stale)
{
    return knit_relay_store_membership(data, org, user_id, account, role, present, updated_ms,
                                       stale);
}

static int w_apply(void *data, const char *ns, const knit_batch_t *b, uint64_t *last_seq)
{
    knit_relay_applied_t res;
    int rc = knit_relay_store_apply(data, ns, b, &res);
    *last_seq = rc == 0 ? res.last_seq : 0;
    if (rc == 0)
        knit_batch_free(res.fanout); /* the caller announces the sequence instead */
    return rc;
}

void knit_relay_store_webhooks(knit_relay_store_t *s,
                               struct knit_webhook_store_s *w) /* see relay_store.h */
{
    memset(w, 0, sizeof *w);
    w->begin = w_begin;
    w->commit = w_commit;
    w->rollback = w_rollback;
    w->seen = w_seen;
    w->record = w_record;
    w->ident_get = w_ident_get;
    w->erase_account = w_erase_account;
    w->erase_in_txn = 0;
    w->unerase = w_unerase;
    w->identify = b_identify;
    w->membership = w_membership;
    w->apply = w_apply;
    w->errmsg = b_errmsg;
    w->data = s;
}
