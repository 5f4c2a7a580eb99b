/*
** test_jwks_it.c: provider tokens end to end.  Keys and tokens come from
** Debian's python3-jwt (jwt_mint.py), a library no one here wrote; the
** real sync-relay reads the keys from --jwks-file and checks --issuer and
** --authorized-party; the real sync-agent signs in with the token.  Cases:
** RS256 and ES256 tokens sync, a wrong issuer, party or expired token is
** refused with its reason, and a rotated key (a kid the relay has not
** seen) is found by reading the file again.
*/
#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sync_util.h"

#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"
#define ISS "https://clerk.knit.test"
#define AZP "https://app.knit.test"

static char keys[512]; /* the keys' directory */
static su_relay_t relay;

static void mint_run(const char *const *args, char *out, size_t n)
{
    const char *argv[12];
    int k = 0, rc;
    argv[k++] = "/usr/bin/python3";
    argv[k++] = JWT_MINT_PATH;
    for (int i = 0; args[i] && k < 11; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    rc = su_run(argv, 60000, out, n);
    if (rc != 0)
        fprintf(stderr, "jwt_mint.py %s (%d): %s\n", args[0], rc, out);
    CHECK_EQ_INT(rc, 0);
}

static void make_key(const char *kid, const char *kind)
{
    char out[1024];
    const char *a[] = {"key", keys, kid, kind, NULL};
    mint_run(a, out, sizeof out);
}

static void write_jwks(const char *kid1, const char *kid2)
{
    char out[1024];
    const char *a[] = {"jwks", keys, kid1, kid2, NULL};
    mint_run(a, out, sizeof out);
}

/* A token of kid for sub into a file; its path into path. */
static void token_file(const char *kid, const char *sub, const char *iss, const char *azp,
                       const char *ttl, char *path, size_t n)
{
    static int seq;
    char out[4096];
    FILE *f;
    const char *a[] = {"token", keys, kid, sub, iss, azp, ttl, NULL};
    mint_run(a, out, sizeof out);
    snprintf(path, n, "%s/token-%d.jwt", su_tmpdir(), seq++);
    CHECK((f = fopen(path, "w")) != NULL);
    fputs(out, f);
    fclose(f);
}

static void start(void)
{
    char data[600], jwks[600];
    su_path(keys, sizeof keys, "keys");
    CHECK_OK(mkdir(keys, 0700));
    make_key("rsa-1", "rsa");
    make_key("ec-1", "ec");
    write_jwks("rsa-1", "ec-1");
    su_path(data, sizeof data, "relay.db");
    snprintf(jwks, sizeof jwks, "%s/jwks.json", keys);
    const char *extra[] = {"--jwks-file",     jwks,  "--issuer", ISS, "--authorized-party", AZP,
                           "--jwks-cooldown", "200", NULL};
    CHECK_OK(su_relay_start(&relay, 0, data, NULL, extra));
}

/* `sync-agent run --once` of a new replica with one row, signed in with
** token: its exit code and output. */
static int agent_once(const char *tag, const char *token, char *out, size_t n)
{
    char path[600], url[64];
    sqlite3 *db;
    snprintf(path, sizeof path, "%s/%s.db", su_tmpdir(), tag);
    db = su_db(path);
    su_exec(db, "%s", SCHEMA);
    sqlite3_close(db);
    const char *track[] = {SYNC_AGENT_PATH, "track", path, "items", NULL};
    CHECK_EQ_INT(su_run(track, 20000, out, n), 0);
    db = su_db(path);
    su_exec(db, "INSERT INTO items VALUES('%s', 'row')", tag);
    sqlite3_close(db);
    snprintf(url, sizeof url, "127.0.0.1:%d", relay.port);
    const char *run[] = {SYNC_AGENT_PATH, "run",    path,        "--relay", url, "--token-file",
                         token,           "--once", "--timeout", "15",      NULL};
    return su_run(run, 40000, out, n);
}

static void expect_synced(const char *tag, const char *token)
{
    char out[8192];
    int rc = agent_once(tag, token, out, sizeof out);
    if (rc != 0 || !strstr(out, "synced"))
        fprintf(stderr, "agent %s (%d): %s\n", tag, rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "as user:alice") != NULL || strstr(out, "user:alice") != NULL);
}

static void expect_refused(const char *tag, const char *token, const char *reason)
{
    char out[8192];
    int rc = agent_once(tag, token, out, sizeof out);
    if (rc != 4 || !strstr(out, reason))
        fprintf(stderr, "agent %s (%d), wanted \"%s\": %s\n", tag, rc, reason, out);
    CHECK_EQ_INT(rc, 4);
    CHECK(strstr(out, reason) != NULL);
    CHECK(strstr(out, "synced with") == NULL);
}

static void rs256_and_es256_sync(void)
{
    char t[600];
    start();
    token_file("rsa-1", "alice", ISS, AZP, "600", t, sizeof t);
    expect_synced("rs", t);
    token_file("ec-1", "alice", ISS, AZP, "600", t, sizeof t);
    expect_synced("es", t);
}

static void claims_refused(void)
{
    char t[600];
    start();
    token_file("rsa-1", "alice", "https://evil.test", AZP, "600", t, sizeof t);
    expect_refused("iss", t, "issuer");
    token_file("ec-1", "alice", ISS, "https://evil.test", "600", t, sizeof t);
    expect_refused("azp", t, "azp");
    token_file("ec-1", "alice", ISS, AZP, "-300", t, sizeof t);
    expect_refused("exp", t, "expired");
}

/* The provider rotates: a new key, listed in the file after the relay
** started.  A token of the new kid makes the relay read the file again. */
static void rotation_reloads(void)
{
    char t[600], log[700];
    start();
    make_key("rsa-2", "rsa");
    token_file("rsa-2", "alice", ISS, AZP, "600", t, sizeof t);
    expect_refused("early", t, "kid"); /* not in the file yet */
    write_jwks("rsa-2", "ec-1");
    su_sleep_ms(300); /* past --jwks-cooldown */
    expect_synced("rotated", t);
    snprintf(log, sizeof log, "%s.log", relay.data);
    {
        char buf[65536];
        FILE *f = fopen(log, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = '\0';
        if (!strstr(buf, "provider keys: reloaded"))
            fprintf(stderr, "relay log (%zu bytes):\n%s\n", n, buf);
        CHECK(strstr(buf, "provider keys: reloaded") != NULL);
    }
}

KNIT_TESTS(T(rs256_and_es256_sync), T(claims_refused), T(rotation_reloads))
