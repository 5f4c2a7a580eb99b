/*
** sysrows.c: knit_profile and knit_activity rows as changes from the
** relay's site (API in sysrows.h).
**
** Design notes
**   1. One unit per row written, all its cells with one stamp, so a
**      replica applies the row whole or not at all.
**   2. An empty string is written as SQL NULL: a provider clearing a name
**      sends null or "", and the replica should read NULL either way.
*/
#include "sysrows.h"

#include <jansson.h>
#include <string.h>

#include "alloc.h"
#include "cred.h"

#define PAYLOAD_MAX 16384 /* bytes of a token payload read for claims */

static const char *const PROFILE_COLS[] = {"email", "first_name", "last_name", "image_url",
                                           "updated_at"};
static const char *const ACTIVITY_COLS[] = {"action", "at", "source", "user"};

static knit_value_t text(const char *s)
{
    knit_value_t v;
    memset(&v, 0, sizeof v);
    if (!s || !*s) {
        v.type = KNIT_NULL; /* note 2 */
        return v;
    }
    v.type = KNIT_TEXT;
    v.u.b.p = s;
    v.u.b.n = strlen(s);
    return v;
}

static knit_value_t integer(uint64_t i)
{
    knit_value_t v;
    memset(&v, 0, sizeof v);
    v.type = KNIT_INTEGER;
    v.u.i = (int64_t)i;
    return v;
}

/* Interns ns, site and table t, and opens the unit; *ch gets the indexes. */
static int open_unit(knit_batch_t *b, const char *ns, const knit_site_t *site, const char *t,
                     const char *const *cols, uint32_t ncols, knit_change_t *ch)
{
    uint8_t orset[8] = {0};
    int rc;
    memset(ch, 0, sizeof *ch);
    if ((rc = knit_batch_ns(b, ns, &ch->ns)) != 0 || (rc = knit_batch_site(b, site, &ch->site)) ||
        (rc = knit_batch_table(b, t, 1, ncols, cols, orset, &ch->table)) != 0)
        return rc;
    return knit_batch_begin(b, (uint64_t)b->ntxns + 1);
}

static int add(knit_batch_t *b, knit_change_t *ch, uint32_t col, knit_value_t v)
{
    ch->col = col;
    ch->value = v;
    return knit_batch_add(b, ch);
}

int knit__sysrows_profile(knit_batch_t *b, const char *ns, const knit_site_t *site, uint64_t hlc,
                          const knit_ident_result_t *r) /* see sysrows.h */
{
    knit_change_t ch;
    knit_value_t pk;
    int rc;
    if (!r->changed && !r->new_row)
        return 0;
    if (strncmp(ns, "user:", 5) != 0)
        return KNIT_EINVAL;
    if ((rc = open_unit(b, ns, site, KNIT_PROFILE_TABLE, PROFILE_COLS, 5, &ch)) != 0)
        return rc;
    pk = text(ns + 5);
    ch.pk = &pk;
    ch.cl = 1;
    ch.hlc = hlc;
    if (r->new_row && (rc = add(b, &ch, 0, text(NULL))) != 0)
        return rc;
    /* PROFILE_COLS are KNIT_PROFILE_* in order: column index f + 1. */
    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
        if ((r->changed & (1u << f)) && (rc = add(b, &ch, (uint32_t)f + 1, text(r->field[f]))))
            return rc;
    return add(b, &ch, 5, integer(r->updated_ms));
}

int knit__sysrows_activity(knit_batch_t *b, const char *ns, const knit_site_t *site, uint64_t hlc,
                           const char *id, const char *user, const char *action, uint64_t at_ms,
                           const char *source) /* see sysrows.h */
{
    knit_change_t ch;
    knit_value_t pk;
    int rc;
    if ((rc = open_unit(b, ns, site, KNIT_ACTIVITY_TABLE, ACTIVITY_COLS, 4, &ch)) != 0)
        return rc;
    pk = text(id);
    ch.pk = &pk;
    ch.cl = 1;
    ch.hlc = hlc;
    if ((rc = add(b, &ch, 0, text(NULL))) != 0 || (rc = add(b, &ch, 1, text(action))) != 0 ||
        (rc = add(b, &ch, 2, integer(at_ms))) != 0 || (rc = add(b, &ch, 3, text(source))) != 0)
        return rc;
    return add(b, &ch, 4, text(user));
}

/* The first of names that is a non-empty string in o, copied. */
static int claim(json_t *o, const char *const *names, char **out)
{
    for (; *names; names++) {
        const char *v = json_string_value(json_object_get(o, *names));
        if (v && *v)
            return (*out = knit__strdup(v)) ? 0 : KNIT_ENOMEM;
    }
    return 0;
}

/* The active organization: Clerk's session token v2 nests it as
** "o": {"id", "rol"}, v1 has "org_id" and "org_role". */
static int org_claim(json_t *o, knit_token_profile_t *out)
{
    static const char *const ID[] = {"id", NULL}, *const ROL[] = {"rol", NULL};
    static const char *const ORG_ID[] = {"org_id", NULL}, *const ORG_ROLE[] = {"org_role", NULL};
    json_t *v2 = json_object_get(o, "o");
    int rc;
    if (json_is_object(v2)) {
        if ((rc = claim(v2, ID, &out->org)) != 0 || (rc = claim(v2, ROL, &out->org_role)) != 0)
            return rc;
    }
    if (!out->org && (rc = claim(o, ORG_ID, &out->org)) != 0)
        return rc;
    if (!out->org_role && (rc = claim(o, ORG_ROLE, &out->org_role)) != 0)
        return rc;
    v2 = json_object_get(o, "iat");
    if (json_is_integer(v2) && json_integer_value(v2) > 0)
        out->iat_ms = (uint64_t)json_integer_value(v2) * 1000;
    return 0;
}

void knit__token_profile_free(knit_token_profile_t *p) /* see sysrows.h */
{
    if (!p)
        return;
    knit__free(p->sub);
    knit__free(p->email);
    for (int f = 0; f < KNIT_PROFILE_NFIELDS; f++)
        knit__free(p->field[f]);
    knit__free(p->external_id);
    knit__free(p->sid);
    knit__free(p->org);
    knit__free(p->org_role);
    memset(p, 0, sizeof *p);
}

int knit__token_profile(const char *token, knit_token_profile_t *out) /* see sysrows.h */
{
    static const char *const SUB[] = {"sub", NULL}, *const EMAIL[] = {"email", "primary_email",
                                                                      "email_address", NULL};
    static const char *const FIRST[] = {"first_name", "given_name", NULL};
    static const char *const LAST[] = {"last_name", "family_name", NULL};
    static const char *const IMAGE[] = {"image_url", "picture", NULL};
    static const char *const EXT[] = {"external_id", NULL}, *const SID[] = {"sid", NULL};
    const char *a, *b;
    uint8_t *buf;
    size_t n;
    json_t *o;
    int rc;

    memset(out, 0, sizeof *out);
    if (!token || !(a = strchr(token, '.')) || !(b = strchr(a + 1, '.')))
        return KNIT_EINVAL;
    a++;
    if ((size_t)(b - a) > PAYLOAD_MAX)
        return KNIT_ETOOBIG;
    if (!(buf = knit__malloc((size_t)(b - a) + 1)))
        return KNIT_ENOMEM;
    if (knit_b64url_decode(a, (size_t)(b - a), buf, &n) != 0) {
        knit__free(buf);
        return KNIT_EINVAL;
    }
    o = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    knit__free(buf);
    if (!json_is_object(o)) {
        json_decref(o);
        return KNIT_EINVAL;
    }
    if ((rc = claim(o, SUB, &out->sub)) != 0 || (rc = claim(o, EMAIL, &out->email)) != 0 ||
        (rc = claim(o, FIRST, &out->field[KNIT_PROFILE_FIRST_NAME])) != 0 ||
        (rc = claim(o, LAST, &out->field[KNIT_PROFILE_LAST_NAME])) != 0 ||
        (rc = claim(o, IMAGE, &out->field[KNIT_PROFILE_IMAGE_URL])) != 0 ||
        (rc = claim(o, EXT, &out->external_id)) != 0 || (rc = claim(o, SID, &out->sid)) != 0 ||
        (rc = org_claim(o, out)) != 0)
        knit__token_profile_free(out);
    json_decref(o);
    return rc;
}
