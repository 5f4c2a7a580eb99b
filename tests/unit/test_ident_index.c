/*
** test_ident_index.c: the relay's identity index (relay_store.h
** knit_relay_store_identify, design note 13 of relay_store.c): one account
** per person whatever the order of sign-ins and events; emails unique,
** compared trimmed and case-insensitively; relinking keeps the first id's
** namespace; stale events change nothing; a sign-in fills only what no
** event set; erasure forgets the identity; memberships ignore reordered
** events; the schema 3 to 4 upgrade; and the profile and activity rows the
** relay writes merge into the store like any push.
*/
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "relay_store.h"
#include "sysrows.h"
#include "test.h"

static char dir[64];

static void rm_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static knit_relay_store_t *fresh(const char *name)
{
    char path[128];
    knit_relay_store_t *s = NULL;
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/knit-ident-XXXXXX");
        CHECK(mkdtemp(dir) != NULL);
        atexit(rm_dir);
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    return s;
}

/* Resolves (id, email) as a sign-in (updated 0) or an event; the account. */
static const char *ident(knit_relay_store_t *s, const char *id, const char *email,
                         const char *first, uint64_t updated, knit_ident_result_t *r)
{
    knit_ident_t in;
    memset(&in, 0, sizeof in);
    in.id = id;
    in.email = email;
    in.field[KNIT_PROFILE_FIRST_NAME] = first;
    in.updated_ms = updated;
    in.tracks[0] = 1;
    CHECK_OK(knit_relay_store_identify(s, &in, 1000, r));
    return r->account;
}

static void counts(knit_relay_store_t *s, uint64_t want_accounts, uint64_t want_ids)
{
    uint64_t a, i;
    CHECK_OK(knit_relay_store_ident_count(s, &a, &i));
    CHECK_EQ_INT(a, want_accounts);
    CHECK_EQ_INT(i, want_ids);
}

/* The three rules, and uniqueness by id and by (normalized) email. */
static void rules(void)
{
    knit_relay_store_t *s = fresh("rules.db");
    knit_ident_result_t r;
    char acc[KNIT_IDENT_NS_MAX];

    /* No match: create user:<id>. */
    CHECK(strcmp(ident(s, "user_1", "  Ann@Example.COM ", "Ann", 0, &r), "user:user_1") == 0);
    CHECK_EQ_INT(r.action, KNIT_IDENT_CREATED);
    CHECK(strcmp(r.email, "ann@example.com") == 0);
    CHECK(r.new_row);
    knit_relay_ident_result_clear(&r);
    /* Id match: update, same account, nothing new. */
    CHECK(strcmp(ident(s, "user_1", "ann@example.com", "Ann", 0, &r), "user:user_1") == 0);
    CHECK_EQ_INT(r.action, KNIT_IDENT_UPDATED);
    CHECK_EQ_INT(r.changed, 0); /* idempotent: nothing to write again */
    CHECK(!r.new_row);
    knit_relay_ident_result_clear(&r);
    /* A commit carrying the row failed: the next time writes it whole. */
    CHECK_OK(knit_relay_store_ident_dirty(s, "user:user_1"));
    ident(s, "user_1", NULL, NULL, 0, &r);
    CHECK(r.new_row);
    CHECK(r.changed & (1u << KNIT_PROFILE_EMAIL));
    CHECK(r.changed & (1u << KNIT_PROFILE_FIRST_NAME));
    knit_relay_ident_result_clear(&r);
    /* Email match with another id (deleted and recreated, or a provider
    ** switch), the email spelled differently: relinked, not created. */
    CHECK(strcmp(ident(s, "user_2", "ANN@example.com\t", NULL, 5000, &r), "user:user_1") == 0);
    CHECK_EQ_INT(r.action, KNIT_IDENT_RELINKED);
    knit_relay_ident_result_clear(&r);
    counts(s, 1, 2);
    /* Both ids resolve to the one account, and the email does. */
    CHECK_OK(knit_relay_store_ident_get(s, "user_2", NULL, acc));
    CHECK(strcmp(acc, "user:user_1") == 0);
    CHECK_OK(knit_relay_store_ident_get(s, NULL, " ann@EXAMPLE.com", acc));
    CHECK(strcmp(acc, "user:user_1") == 0);
    /* Someone else: a second account. */
    CHECK(strcmp(ident(s, "user_3", "bob@example.com", NULL, 0, &r), "user:user_3") == 0);
    knit_relay_ident_result_clear(&r);
    counts(s, 2, 3);
    /* An id that matches one account and an email that is another's: the
    ** id's account stays and the email is not moved (unique). */
    CHECK(strcmp(ident(s, "user_3", "ann@example.com", NULL, 6000, &r), "user:user_3") == 0);
    CHECK(r.email_conflict);
    CHECK(r.field[KNIT_PROFILE_EMAIL] &&
          strcmp(r.field[KNIT_PROFILE_EMAIL], "bob@example.com") == 0);
    knit_relay_ident_result_clear(&r);
    CHECK_OK(knit_relay_store_ident_get(s, NULL, "ann@example.com", acc));
    CHECK(strcmp(acc, "user:user_1") == 0);
    counts(s, 2, 3);
    knit_relay_store_close(s);
}

/* A sign-in whose token has no email makes a provisional account; the
** provider's event then names that id with the email of an existing
** account: the id moves there, the provisional account goes, and what it
** wrote is merged into the account (but its profile row). */
static void provisional_relinked(void)
{
    knit_relay_store_t *s = fresh("prov.db");
    knit_ident_result_t r;
    ident(s, "old_id", "pat@example.com", NULL, 1000, &r);
    knit_relay_ident_result_clear(&r);
    CHECK(strcmp(ident(s, "new_id", NULL, NULL, 0, &r), "user:new_id") == 0);
    CHECK_EQ_INT(r.action, KNIT_IDENT_CREATED);
    knit_relay_ident_result_clear(&r);
    counts(s, 2, 2);
    /* The provisional account wrote a row (a login) and its profile. */
    {
        knit_site_t site;
        knit_batch_t *b;
        knit_relay_applied_t res;
        knit_ident_result_t pr;
        memset(&pr, 0, sizeof pr);
        pr.new_row = 1;
        pr.updated_ms = 1;
        CHECK_OK(knit_relay_store_site(s, &site));
        CHECK_OK(knit_batch_new(&b));
        CHECK_OK(knit__sysrows_activity(b, "user:new_id", &site, 100, "knit-1", "new_id", "sign_in",
                                        5, "knit"));
        CHECK_OK(knit__sysrows_profile(b, "user:new_id", &site, 100, &pr));
        CHECK_OK(knit_relay_store_begin(s));
        CHECK_OK(knit_relay_store_apply(s, "user:new_id", b, &res));
        CHECK_OK(knit_relay_store_commit(s));
        knit_batch_free(res.fanout);
        knit_batch_free(b);
    }
    CHECK(strcmp(ident(s, "new_id", "Pat@example.com", NULL, 2000, &r), "user:old_id") == 0);
    CHECK_EQ_INT(r.action, KNIT_IDENT_RELINKED);
    CHECK(strcmp(r.moved_from, "user:new_id") == 0);
    CHECK(r.merged_seq > 0);
    knit_relay_ident_result_clear(&r);
    counts(s, 1, 2);
    /* The login came along; the provisional profile row did not. */
    {
        knit_batch_t *b;
        uint64_t reached;
        int more, login = 0, profile = 0;
        CHECK_OK(knit_relay_store_catch_up(s, "user:old_id", 0, 0, &b, &reached, &more));
        for (size_t i = 0; i < b->nchanges; i++) {
            const char *t = b->tables[b->changes[i].table].name;
            login += strcmp(t, KNIT_ACTIVITY_TABLE) == 0;
            profile += strcmp(t, KNIT_PROFILE_TABLE) == 0;
        }
        CHECK_EQ_INT(login, 5);
        CHECK_EQ_INT(profile, 0);
        knit_batch_free(b);
    }
    knit_relay_store_close(s);
}

/* Events apply only when not older than the last applied; a sign-in's
** claims fill only what no event set (its token may be older). */
static void profile_order(void)
{
    knit_relay_store_t *s = fresh("order.db");
    knit_ident_result_t r;
    ident(s, "u", "u@example.com", "Two", 2000, &r);
    CHECK(r.changed & (1u << KNIT_PROFILE_FIRST_NAME));
    knit_relay_ident_result_clear(&r);
    ident(s, "u", "u@example.com", "One", 1000, &r); /* delivered late */
    CHECK(r.stale);
    CHECK_EQ_INT(r.changed, 0);
    CHECK(strcmp(r.field[KNIT_PROFILE_FIRST_NAME], "Two") == 0);
    knit_relay_ident_result_clear(&r);
    ident(s, "u", "u@example.com", "Token", 0, &r); /* a sign-in */
    CHECK_EQ_INT(r.changed, 0);
    CHECK(strcmp(r.field[KNIT_PROFILE_FIRST_NAME], "Two") == 0);
    knit_relay_ident_result_clear(&r);
    ident(s, "u", "u@example.com", "Three", 3000, &r);
    CHECK_EQ_INT(r.changed, 1u << KNIT_PROFILE_FIRST_NAME);
    CHECK(strcmp(r.field[KNIT_PROFILE_FIRST_NAME], "Three") == 0);
    knit_relay_ident_result_clear(&r);
    knit_relay_store_close(s);
}

/* Erasure forgets the identity; a tombstoned account is not made again by
** a sign-in, until user.created removes the tombstone. */
static void erase_forgets(void)
{
    knit_relay_store_t *s = fresh("erase.db");
    knit_ident_result_t r;
    knit_ident_t in;
    size_t n;
    int cleared;
    ident(s, "gone", "gone@example.com", "G", 1000, &r);
    knit_relay_ident_result_clear(&r);
    CHECK_EQ_INT(knit_relay_store_erase_account(s, "user:gone", &n), KNIT_ENOTFOUND);
    counts(s, 0, 0);
    memset(&in, 0, sizeof in);
    in.id = "gone";
    CHECK_OK(knit_relay_store_identify(s, &in, 1, &r));
    CHECK(r.erased);
    knit_relay_ident_result_clear(&r);
    counts(s, 0, 0);
    CHECK_OK(knit_relay_store_unerase(s, "user:gone", &cleared));
    CHECK(cleared);
    CHECK(strcmp(ident(s, "gone", NULL, NULL, 0, &r), "user:gone") == 0);
    CHECK(!r.erased);
    knit_relay_ident_result_clear(&r);
    counts(s, 1, 1);
    knit_relay_store_close(s);
}

/* Memberships: a .created delivered after the .deleted it precedes does
** not bring the member back. */
static void memberships(void)
{
    knit_relay_store_t *s = fresh("member.db");
    char role[32];
    int present, stale;
    CHECK_OK(knit_relay_store_member(s, "org_1", "u", &present, role, sizeof role));
    CHECK_EQ_INT(present, 0);
    CHECK_OK(knit_relay_store_membership(s, "org_1", "u", "user:u", "org:admin", 1, 100, &stale));
    CHECK_OK(knit_relay_store_member(s, "org_1", "u", &present, role, sizeof role));
    CHECK_EQ_INT(present, 1);
    CHECK(strcmp(role, "org:admin") == 0);
    CHECK_OK(knit_relay_store_membership(s, "org_1", "u", "user:u", "org:admin", 0, 300, &stale));
    CHECK(!stale);
    CHECK_OK(knit_relay_store_membership(s, "org_1", "u", "user:u", "org:member", 1, 200, &stale));
    CHECK(stale);
    CHECK_OK(knit_relay_store_member(s, "org_1", "u", &present, role, sizeof role));
    CHECK_EQ_INT(present, -1);
    knit_relay_store_close(s);
}

/* A schema 3 store is upgraded in place to 4 (the index added); a newer
** one is still refused. */
static void upgrade_from_3(void)
{
    char path[128];
    knit_relay_store_t *s = fresh("v3.db");
    knit_ident_result_t r;
    sqlite3 *db;
    knit_relay_store_close(s);
    snprintf(path, sizeof path, "%s/v3.db", dir);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "DROP TABLE ident; DROP TABLE ident_id; DROP TABLE membership;"
                       " PRAGMA user_version=3",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_OK(knit_relay_store_open(path, 0, &s));
    CHECK(strcmp(ident(s, "x", "x@example.com", NULL, 0, &r), "user:x") == 0);
    knit_relay_ident_result_clear(&r);
    knit_relay_store_close(s);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "PRAGMA user_version=5", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    s = (knit_relay_store_t *)1;
    CHECK_EQ_INT(knit_relay_store_open(path, 0, &s), KNIT_EVERSION);
}

/* The relay's rows merge as a push: a later stamp from the relay's site
** wins over an earlier one, a replay takes no sequence. */
static void rows_merge(void)
{
    knit_relay_store_t *s = fresh("rows.db");
    knit_ident_result_t r;
    knit_relay_applied_t res;
    knit_batch_t *b;
    knit_site_t site;
    uint64_t seq;
    CHECK_OK(knit_relay_store_site(s, &site));
    ident(s, "row", "row@example.com", "First", 1000, &r);
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit__sysrows_profile(b, r.account, &site, 100, &r));
    CHECK_OK(
        knit__sysrows_activity(b, r.account, &site, 100, "sess_1", "row", "sign_in", 5, "knit"));
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_OK(knit_relay_store_apply(s, r.account, b, &res));
    CHECK_OK(knit_relay_store_commit(s));
    CHECK_EQ_INT(res.last_seq, 2);
    knit_batch_free(res.fanout);
    /* The same again: nothing won, no sequence. */
    CHECK_OK(knit_relay_store_begin(s));
    CHECK_OK(knit_relay_store_apply(s, r.account, b, &res));
    CHECK_OK(knit_relay_store_commit(s));
    CHECK_EQ_INT(res.first_seq, 0);
    knit_batch_free(res.fanout);
    CHECK_OK(knit_relay_store_seq(s, r.account, &seq));
    CHECK_EQ_INT(seq, 2);
    knit_batch_free(b);
    knit_relay_ident_result_clear(&r);
    knit_relay_store_close(s);
}

KNIT_TESTS(T(rules), T(provisional_relinked), T(profile_order), T(erase_forgets), T(memberships),
           T(upgrade_from_3), T(rows_merge))
