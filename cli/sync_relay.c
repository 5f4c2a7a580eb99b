/*
** sync_relay.c: the sync-relay program.  Parses flags, opens the store,
** reads the JWT secret and runs the relay (transport/relay.h); or, with the
** mint-token subcommand, prints a development token; or, with erase,
** erases an account from either store (SQLite or PostgreSQL).  All the work is in
** the library; this file is argument handling.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "alloc.h"
#include "auth.h"
#include "codec.h"
#include "cli_args.h"
#include "knit.h"
#include "relay.h"
#include "relay_store.h"
#ifdef KNIT_HAVE_PG
#include "store_pg.h"
#endif
#include "webhook.h"

#define DEFAULT_LISTEN "127.0.0.1:7300"
#define DEFAULT_DATA "./relay.db"
#define MAX_SECRET_FILE 4096
#define MAX_HTTP_LISTEN 8
#define MAX_PARTIES 8

static const char USAGE[] =
    "usage: sync-relay [options]\n"
    "       sync-relay mint-token --secret-file FILE --sub SUB [--ttl SECONDS]\n"
    "       sync-relay erase [--undo] (--data PATH | --store URI) --user SUB\n"
    "\n"
    "The knit relay: stores every namespace's changes in an embedded SQLite\n"
    "file (or in PostgreSQL, --store postgresql://...) and syncs replicas over TCP or TLS "
    "(docs/PROTOCOL.md, docs/sync-relay.md).\n"
    "\n"
    "options:\n"
    "  --listen HOST:PORT        address to listen on; port 0 picks a free one\n"
    "                            [" DEFAULT_LISTEN "]\n"
    "  --http-listen HOST:PORT   also serve HTTP there: the status page at GET /,\n"
    "                            GET /healthz, GET /metrics (Prometheus text),\n"
    "                            WebSocket sessions at GET /v1/ws, long-polling at\n"
    "                            /v1/lp, webhooks (with --webhook-secret-file);\n"
    "                            repeatable (up to 8) [none]\n"
    "  --tls-cert FILE           speak TLS 1.2 on --listen with this certificate\n"
    "                            chain (PEM, the relay's own certificate first)\n"
    "                            [none: plain TCP, for loopback and private links]\n"
    "  --tls-key FILE            the private key of --tls-cert (PEM, RSA or EC,\n"
    "                            unencrypted); both or neither\n"
    "  --data PATH               the relay store, created if missing [" DEFAULT_DATA "]\n"
    "  --store URI               the relay store: a path (as --data), or\n"
    "                            postgresql://USER@HOST:PORT/DB?... for a store in\n"
    "                            PostgreSQL (libpq connection URI; several relays\n"
    "                            may share one database; the schema is created on\n"
    "                            first use, a newer one is refused) [--data]\n"
    "  --jwt-secret-file FILE    HS256 key for JWT credentials (at least 32 bytes;\n"
    "                            one trailing newline is ignored) [none: HS256 refused]\n"
    "  --webhook-secret-file FILE\n"
    "                            the provider's webhook signing secret (whsec_...):\n"
    "                            accept signed webhooks at POST /v1/webhooks/clerk\n"
    "                            on --http-listen [none: the route answers 404]\n"
    "  --jwks-file FILE          the identity provider's public keys, a JWKS (RS256,\n"
    "                            ES256); read again when a token names an unknown\n"
    "                            kid, at most every 30 s [none: RS256/ES256 refused]\n"
    "  --jwks-url URL            fetch that JWKS from URL (https; http for tests)\n"
    "                            instead: at start, and again when a token names an\n"
    "                            unknown kid (the token waits for the fetch; a failed\n"
    "                            fetch keeps the keys held) [none]\n"
    "  --jwks-cooldown MS        least time between two reads of --jwks-file, or two\n"
    "                            fetches of --jwks-url [30000]\n"
    "  --jwks-timeout MS         a fetch of --jwks-url that takes longer fails;\n"
    "                            at most 9000 [5000]\n"
    "  --issuer ISS              provider tokens must carry this \"iss\" [not checked]\n"
    "  --authorized-party P      their \"azp\" (or, without one, \"aud\") must name P;\n"
    "                            repeatable, up to 8 [not checked]\n"
    "  --max-frame BYTES         largest frame accepted, at most 16777216 [16777216]\n"
    "  --max-conns N             connections served at once [1024]\n"
    "  --max-conns-per-addr N    connections from one IP address [256]\n"
    "  --max-anon-sessions N     anonymous sessions at once [512]\n"
    "  --anon-registrations-per-min N\n"
    "                            new anonymous ids accepted per minute (a burst\n"
    "                            of as many is allowed) [600]\n"
    "  --max-changes N           changes per push, and per catch-up message [65536]\n"
    "  --max-skew MS             refuse changes stamped more than MS milliseconds\n"
    "                            ahead of the relay's clock [300000]\n"
    "  --idle-timeout MS         close connections silent this long [60000]\n"
    "  --max-queue BYTES         outbound bytes queued per connection before a slow\n"
    "                            consumer drops to catch-up mode [8388608]\n"
    "  --serve-damaged           serve a store that PRAGMA quick_check finds\n"
    "                            damaged, instead of exiting 1 [off]\n"
    "  --log-level LEVEL         error, warn, info or debug [info]\n"
    "  --help                    this text\n"
    "  --version                 the version\n"
    "\n"
    "mint-token (for development): prints an HS256 token for SUB, valid for\n"
    "SECONDS [3600], signed with the key in FILE.\n"
    "\n"
    "erase: removes the account user:SUB (or the account SUB was linked to by\n"
    "email, see the identity index) from the store at PATH (or --store URI,\n"
    "postgresql://... as for the relay), with every anonymous namespace it\n"
    "claimed, its devices and its identity (ids, email, profile values,\n"
    "memberships); in a SQLite store the bytes are overwritten and the WAL\n"
    "truncated, so they are in none of the store's files (PostgreSQL, in one\n"
    "transaction, frees them at its next VACUUM).  It leaves\n"
    "a tombstone: the relay refuses SUB's tokens until a user.created webhook\n"
    "for SUB arrives (or `erase --undo`).  It may run while relays serve the\n"
    "store, which end SUB's open sessions within 2 s.  Exit 0, 1 on\n"
    "failure, 3 when the store had no data of the account (the tombstone is\n"
    "written all the same).  `erase --undo --data PATH --user SUB` removes the\n"
    "tombstone only.\n"
    "\n"
    "Identity: a token's sub (and its email claim, if any) and the provider's\n"
    "user webhooks go through one identity index in the store: users are unique\n"
    "by id and by email (trimmed, case-insensitive); an email match with a new\n"
    "id links that id to the existing account, whose namespace keeps the name of\n"
    "its first id.  For accounts whose devices track them, the relay writes the\n"
    "synced tables knit_profile (from user.created/user.updated and every\n"
    "sign-in's claims) and knit_activity (every sign-in, and session.created).\n"
    "organizationMembership events are stored.  See docs/sync-relay.md.\n"
    "\n"
    "At start the store is checked with PRAGMA quick_check; damage is reported\n"
    "with the file name and SQLite's finding, and the relay exits 1 unless\n"
    "--serve-damaged is given.  A stored cell that cannot be sent is skipped in\n"
    "catch-up and logged as an error naming its namespace, table, key and column.\n"
    "\n"
    "SIGINT/SIGTERM: stop accepting, commit and acknowledge what was received,\n"
    "close every connection with an error, exit 0.  SIGHUP (with --tls-cert):\n"
    "read the certificate and key again for new connections; open ones keep\n"
    "theirs, and a file that does not load leaves the previous one in use.\n";

static int die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "sync-relay: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see sync-relay --help)\n");
    return 2;
}

/* Parses a decimal count in [min, max]. */
/* Reads the key file: at most MAX_SECRET_FILE bytes, minus one trailing
** "\n" or "\r\n". */
static int read_secret(const char *path, uint8_t *buf, size_t *n)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    size_t k;
    if (!f) {
        fprintf(stderr, "sync-relay: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    k = fread(buf, 1, MAX_SECRET_FILE + 1, f);
    fclose(f);
    if (k > MAX_SECRET_FILE) {
        fprintf(stderr, "sync-relay: %s is larger than %d bytes\n", path, MAX_SECRET_FILE);
        return -1;
    }
    if (k && buf[k - 1] == '\n')
        k--;
    if (k && buf[k - 1] == '\r')
        k--;
    if (k < KNIT_JWT_MIN_KEY) {
        fprintf(stderr, "sync-relay: the key in %s is %zu bytes; at least %d are needed\n", path, k,
                KNIT_JWT_MIN_KEY);
        return -1;
    }
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, "sync-relay: warning: %s is readable by other users\n", path);
    *n = k;
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int mint_token(int argc, char **argv)
{
    const char *file = NULL, *sub = NULL;
    uint64_t ttl = 3600;
    uint8_t key[MAX_SECRET_FILE + 1];
    size_t keylen;
    char *tok;
    int rc;

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (i + 1 >= argc)
            return die_usage("%s needs a value", a);
        if (strcmp(a, "--secret-file") == 0)
            file = argv[++i];
        else if (strcmp(a, "--sub") == 0)
            sub = argv[++i];
        else if (strcmp(a, "--ttl") == 0) {
            if (cli_parse_u64(argv[++i], 1, UINT64_C(3153600000), &ttl))
                return die_usage("bad --ttl %s", argv[i]);
        } else
            return die_usage("unknown mint-token option %s", a);
    }
    if (!file || !sub)
        return die_usage("%s", "mint-token needs --secret-file and --sub");
    if (!knit_auth_sub_ok(sub))
        return die_usage("bad --sub %s: use 1..128 of [A-Za-z0-9._@|+-]", sub);
    if (read_secret(file, key, &keylen))
        return 1;
    rc = knit_jwt_mint(key, keylen, sub, now_ms(), ttl, &tok);
    memset(key, 0, sizeof key);
    if (rc) {
        fprintf(stderr, "sync-relay: mint-token: %s\n", knit_strerror(rc));
        return 1;
    }
    printf("%s\n", tok);
    knit__free(tok);
    return 0;
}

/* The result of an erase, as printed (both stores). */
static int erase_report(const char *ns, int undo, int cleared, size_t erased, int rc,
                        const char *why)
{
    if (undo) {
        if (rc == 0)
            printf("sync-relay: %s: %s\n", ns,
                   cleared ? "tombstone removed; its tokens are accepted again"
                           : "was not erased (no tombstone)");
        else
            fprintf(stderr, "sync-relay: erase --undo %s: %s\n", ns, why);
        return rc == 0 ? 0 : 1;
    }
    if (rc == 0)
        printf("sync-relay: erased %s (%zu namespace%s, with the anonymous ones it claimed); "
               "its tokens are refused until the provider creates the user again\n",
               ns, erased, erased == 1 ? "" : "s");
    else if (rc == KNIT_ENOTFOUND)
        fprintf(stderr,
                "sync-relay: erase %s: %s (its tokens are refused from now on all the same)\n", ns,
                why);
    else
        fprintf(stderr, "sync-relay: erase %s: %s\n", ns, why);
    return rc == 0 ? 0 : rc == KNIT_ENOTFOUND ? 3 : 1;
}

/* The identity index: SUB may be a later id of an account whose namespace
** is named after its first (docs/sync-relay.md). */
static void erase_account_of(const char *user, const char *acc, char *ns, size_t n)
{
    if (acc[0] && strcmp(acc, ns) != 0) {
        printf("sync-relay: %s belongs to account %s\n", user, acc);
        snprintf(ns, n, "%s", acc);
    }
}

/* sync-relay erase --store postgresql://... --user SUB */
static int erase_pg(const char *uri, const char *user, char *ns, size_t nsn, int undo)
{
#ifdef KNIT_HAVE_PG
    knit_pg_store_t *pg = NULL;
    char acc[KNIT_IDENT_NS_MAX];
    size_t erased = 0;
    int cleared = 0, rc = knit_pg_store_open(uri, &pg);
    if (rc) {
        fprintf(stderr, "sync-relay: erase: cannot open the PostgreSQL store: %s\n",
                pg && knit_pg_store_errmsg(pg)[0] ? knit_pg_store_errmsg(pg) : knit_strerror(rc));
        knit_pg_store_close(pg);
        return 1;
    }
    if (undo) {
        rc = knit_pg_store_unerase(pg, ns, &cleared);
    } else {
        if (knit_pg_store_ident_get(pg, user, acc) == 0)
            erase_account_of(user, acc, ns, nsn);
        rc = knit_pg_store_erase_account(pg, ns, &erased);
    }
    rc = erase_report(ns, undo, cleared, erased, rc, knit_pg_store_errmsg(pg));
    knit_pg_store_close(pg);
    return rc;
#else
    (void)user;
    (void)ns;
    (void)nsn;
    (void)undo;
    fprintf(stderr,
            "sync-relay: --store %s: this sync-relay was built without libpq "
            "(install libpq-dev and rebuild)\n",
            uri);
    return 2;
#endif
}

/* sync-relay erase (--data PATH | --store URI) --user SUB */
static int erase_user(int argc, char **argv)
{
    const char *data = NULL, *user = NULL;
    knit_relay_store_t *s;
    char ns[KNIT_PRINCIPAL_MAX], acc[KNIT_IDENT_NS_MAX];
    size_t erased = 0;
    int rc, undo = 0, cleared = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (strcmp(a, "--undo") == 0) {
            undo = 1;
            continue;
        }
        if (i + 1 >= argc)
            return die_usage("%s needs a value", a);
        if (strcmp(a, "--data") == 0 || strcmp(a, "--store") == 0)
            data = argv[++i];
        else if (strcmp(a, "--user") == 0)
            user = argv[++i];
        else
            return die_usage("unknown erase option %s", a);
    }
    if (!data || !user)
        return die_usage("%s", "erase needs --data (or --store) and --user");
    if (knit_auth_user_principal(user, ns, sizeof ns) != 0)
        return die_usage("bad --user %s: use 1..128 of [A-Za-z0-9._@|+-]", user);
    if (strncmp(data, "postgresql://", 13) == 0 || strncmp(data, "postgres://", 11) == 0)
        return erase_pg(data, user, ns, sizeof ns, undo);
    if ((rc = knit_relay_store_open(data, 0, &s)) != 0) {
        fprintf(stderr, "sync-relay: erase: cannot open %s: %s\n", data, knit_strerror(rc));
        return 1;
    }
    if (undo) {
        rc = knit_relay_store_unerase(s, ns, &cleared);
    } else {
        if (knit_relay_store_ident_get(s, user, NULL, acc) == 0)
            erase_account_of(user, acc, ns, sizeof ns);
        rc = knit_relay_store_erase_account(s, ns, &erased);
    }
    rc = erase_report(ns, undo, cleared, erased, rc, knit_relay_store_errmsg(s));
    knit_relay_store_close(s);
    return rc;
}

static void on_http_listen(void *data, const char *host, int port)
{
    (void)data;
    if (strchr(host, ':'))
        printf("sync-relay: http listening on [%s]:%d\n", host, port);
    else
        printf("sync-relay: http listening on %s:%d\n", host, port);
    fflush(stdout);
}

static void on_listen(void *data, const char *host, int port)
{
    (void)data;
    /* On stdout, one line, so scripts and tests can find the port. */
    if (strchr(host, ':'))
        printf("sync-relay: listening on [%s]:%d\n", host, port);
    else
        printf("sync-relay: listening on %s:%d\n", host, port);
    fflush(stdout);
}

/* --jwks-file: the provider's keys, reloaded on an unknown kid (proto_server.h). */
static struct {
    const char *path;  /* the file */
    knit_jwks_t *keys; /* its keys now */
    uint64_t loaded;   /* monotonic ms of the last read */
    uint64_t cooldown; /* --jwks-cooldown */
} jwks_file = {NULL, NULL, 0, 30000};

static uint64_t mono_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const knit_jwks_t *jwks_get(void *data, int refresh)
{
    knit_jwks_t *fresh;
    char why[512], line[700];
    (void)data;
    if (!refresh || mono_now_ms() - jwks_file.loaded < jwks_file.cooldown)
        return jwks_file.keys;
    jwks_file.loaded = mono_now_ms();
    if (knit_jwks_load(jwks_file.path, &fresh, why, sizeof why) != 0) {
        snprintf(line, sizeof line, "provider keys: reload failed, keeping the previous ones: %s",
                 why);
        knit_relay_log_stderr(NULL, KNIT_LOG_WARN, line);
        return jwks_file.keys;
    }
    knit_jwks_free(jwks_file.keys);
    jwks_file.keys = fresh;
    snprintf(line, sizeof line,
             "provider keys: reloaded %zu from %s (a token named an unknown kid)", fresh->n,
             jwks_file.path);
    knit_relay_log_stderr(NULL, KNIT_LOG_INFO, line);
    return jwks_file.keys;
}

static void jwks_release(void)
{
    knit_jwks_free(jwks_file.keys);
    jwks_file.keys = NULL;
}

/* Serves from the PostgreSQL store at uri (transport/relay/store_pg.h). */
static int serve_pg(knit_relay_serve_opts_t *o, const char *uri)
{
#ifdef KNIT_HAVE_PG
    knit_pg_store_t *pg = NULL;
    knit_relay_backend_t be;
    knit_webhook_store_t wh;
    int rc = knit_pg_store_open(uri, &pg);
    if (rc) {
        fprintf(stderr, "sync-relay: cannot open the PostgreSQL store: %s\n",
                pg && knit_pg_store_errmsg(pg)[0] ? knit_pg_store_errmsg(pg) : knit_strerror(rc));
        knit_pg_store_close(pg);
        return 1;
    }
    knit_pg_store_backend(pg, &be);
    knit_pg_store_webhooks(pg, &wh);
    signal(SIGPIPE, SIG_IGN);
    o->cfg.backend = &be;
    o->webhooks = &wh;
    o->on_listen = on_listen;
    o->on_http_listen = on_http_listen;
    rc = knit_relay_serve(o);
    knit_pg_store_close(pg);
    if (rc) {
        fprintf(stderr, "sync-relay: %s\n", knit_strerror(rc));
        return 1;
    }
    return 0;
#else
    (void)o;
    fprintf(stderr,
            "sync-relay: --store %s: this sync-relay was built without libpq "
            "(install libpq-dev and rebuild)\n",
            uri);
    return 2;
#endif
}

int main(int argc, char **argv)
{
    const char *listen = DEFAULT_LISTEN, *data = DEFAULT_DATA, *secret_file = NULL;
    const char *parties[MAX_PARTIES], *webhook_file = NULL;
    char webhook_secret[MAX_SECRET_FILE + 1];
    size_t nparties = 0;
    knit_relay_serve_opts_t o;
    knit_relay_addr_t http[MAX_HTTP_LISTEN];
    size_t nhttp = 0;
    knit_relay_store_t *store = NULL;
    uint8_t key[MAX_SECRET_FILE + 1];
    size_t keylen = 0;
    char host[128];
    uint64_t v;
    int rc, serve_damaged = 0;
    char finding[1024];

    if (argc > 1 && strcmp(argv[1], "mint-token") == 0)
        return mint_token(argc, argv);
    if (argc > 1 && strcmp(argv[1], "erase") == 0)
        return erase_user(argc, argv);

    memset(&o, 0, sizeof o);
    o.cfg.log_level = KNIT_LOG_INFO;
    o.max_conns = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("sync-relay %s\n", KNIT_VERSION_STRING);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0)
            return die_usage("unexpected argument %s", a);
        if (strcmp(a, "--serve-damaged") == 0) {
            serve_damaged = 1;
            continue;
        }
        if (i + 1 >= argc)
            return die_usage("%s needs a value", a);
        val = argv[++i];
        if (strcmp(a, "--listen") == 0) {
            listen = val;
        } else if (strcmp(a, "--http-listen") == 0) {
            if (nhttp == MAX_HTTP_LISTEN)
                return die_usage("at most 8 --http-listen, not %s", val);
            if (cli_parse_hostport(val, 0, http[nhttp].host, sizeof http[nhttp].host,
                                   &http[nhttp].port))
                return die_usage("bad --http-listen %s: use HOST:PORT", val);
            nhttp++;
        } else if (strcmp(a, "--tls-cert") == 0) {
            o.tls_cert = val;
        } else if (strcmp(a, "--tls-key") == 0) {
            o.tls_key = val;
        } else if (strcmp(a, "--data") == 0 || strcmp(a, "--store") == 0) {
            data = val;
        } else if (strcmp(a, "--jwt-secret-file") == 0) {
            secret_file = val;
        } else if (strcmp(a, "--webhook-secret-file") == 0) {
            webhook_file = val;
        } else if (strcmp(a, "--jwks-file") == 0) {
            jwks_file.path = val;
        } else if (strcmp(a, "--jwks-url") == 0) {
            if (strncmp(val, "https://", 8) != 0 && strncmp(val, "http://", 7) != 0)
                return die_usage("bad --jwks-url %s: use https://... (or http:// for tests)", val);
            o.jwks_url = val;
        } else if (strcmp(a, "--jwks-cooldown") == 0) {
            if (cli_parse_u64(val, 0, UINT64_C(86400000), &v))
                return die_usage("bad --jwks-cooldown %s (0 .. 86400000 ms)", val);
            jwks_file.cooldown = v;
        } else if (strcmp(a, "--jwks-timeout") == 0) {
            /* Below the 10 s a HELLO may take: a token that waits for a
            ** fetch is answered before its connection times out. */
            if (cli_parse_u64(val, 100, 9000, &v))
                return die_usage("bad --jwks-timeout %s (100 .. 9000 ms)", val);
            o.jwks_timeout_ms = v;
        } else if (strcmp(a, "--issuer") == 0) {
            o.cfg.issuer = val;
        } else if (strcmp(a, "--authorized-party") == 0) {
            if (nparties == MAX_PARTIES)
                return die_usage("at most 8 --authorized-party, not %s", val);
            parties[nparties++] = val;
        } else if (strcmp(a, "--log-level") == 0) {
            static const char *levels[] = {"error", "warn", "info", "debug"};
            int lv = -1;
            for (int k = 0; k < 4; k++)
                if (strcmp(val, levels[k]) == 0)
                    lv = k;
            if (lv < 0)
                return die_usage("bad --log-level %s: error, warn, info or debug", val);
            o.cfg.log_level = lv;
        } else if (strcmp(a, "--max-frame") == 0) {
            /* Not above the protocol's default: a pushed unit must also
            ** fit the DELTAS frames that carry it to other clients. */
            if (cli_parse_u64(val, 65536, KNIT_DEFAULT_MAX_FRAME, &v))
                return die_usage("bad --max-frame %s (65536 .. 16777216)", val);
            o.cfg.limits.max_frame = (size_t)v;
        } else if (strcmp(a, "--max-conns") == 0) {
            if (cli_parse_u64(val, 1, 1000000, &v))
                return die_usage("bad --max-conns %s", val);
            o.max_conns = (size_t)v;
        } else if (strcmp(a, "--max-conns-per-addr") == 0) {
            if (cli_parse_u64(val, 1, 1000000, &v))
                return die_usage("bad --max-conns-per-addr %s", val);
            o.cfg.limits.max_per_addr = (size_t)v;
        } else if (strcmp(a, "--max-anon-sessions") == 0) {
            if (cli_parse_u64(val, 1, 1000000, &v))
                return die_usage("bad --max-anon-sessions %s", val);
            o.cfg.limits.max_anon = (size_t)v;
        } else if (strcmp(a, "--anon-registrations-per-min") == 0) {
            if (cli_parse_u64(val, 1, 1000000, &v))
                return die_usage("bad --anon-registrations-per-min %s", val);
            o.cfg.limits.anon_per_min = (size_t)v;
        } else if (strcmp(a, "--max-changes") == 0) {
            if (cli_parse_u64(val, 1, KNIT_DEFAULT_MAX_CHANGES, &v))
                return die_usage("bad --max-changes %s (1 .. 1048576)", val);
            o.cfg.limits.max_changes = (size_t)v;
        } else if (strcmp(a, "--max-skew") == 0) {
            if (cli_parse_u64(val, 1, UINT64_C(31536000000), &v))
                return die_usage("bad --max-skew %s", val);
            o.cfg.limits.max_drift_ms = v;
        } else if (strcmp(a, "--idle-timeout") == 0) {
            if (cli_parse_u64(val, 100, UINT64_C(86400000), &v))
                return die_usage("bad --idle-timeout %s (100 .. 86400000 ms)", val);
            o.cfg.limits.idle_ms = v;
        } else if (strcmp(a, "--max-queue") == 0) {
            if (cli_parse_u64(val, 4096, UINT32_MAX, &v))
                return die_usage("bad --max-queue %s", val);
            o.cfg.limits.max_queue = (size_t)v;
        } else {
            return die_usage("unknown option %s", a);
        }
    }
    if (cli_parse_hostport(listen, 0, host, sizeof host, &o.port))
        return die_usage("bad --listen %s: use HOST:PORT", listen);
    o.host = host;
    if (!o.tls_cert != !o.tls_key)
        return die_usage("%s", "--tls-cert and --tls-key go together");
    if (webhook_file) {
        size_t wn;
        uint8_t wk[64];
        if (read_secret(webhook_file, (uint8_t *)webhook_secret, &wn))
            return 1;
        webhook_secret[wn] = '\0';
        if (knit_webhook_secret(webhook_secret, wk, &wn) != 0) {
            fprintf(stderr, "sync-relay: %s does not hold a whsec_... secret\n", webhook_file);
            return 2;
        }
        o.webhook_secret = webhook_secret;
    }
    if (jwks_file.path && o.jwks_url)
        return die_usage("%s", "--jwks-file and --jwks-url: one or the other");
    o.jwks_cooldown_ms = jwks_file.cooldown;
    if (jwks_file.path) {
        char why[512];
        if (knit_jwks_load(jwks_file.path, &jwks_file.keys, why, sizeof why) != 0) {
            fprintf(stderr, "sync-relay: --jwks-file: %s\n", why);
            return 2;
        }
        jwks_file.loaded = mono_now_ms();
        atexit(jwks_release);
        o.cfg.jwks = jwks_get;
    }
    o.cfg.parties = parties;
    o.cfg.nparties = nparties;
    if (secret_file) {
        if (read_secret(secret_file, key, &keylen))
            return 1;
        o.cfg.jwt_key = key;
        o.cfg.jwt_key_len = keylen;
    }

    o.http = http;
    o.nhttp = nhttp;
    if (strncmp(data, "postgresql://", 13) == 0 || strncmp(data, "postgres://", 11) == 0)
        return serve_pg(&o, data);
    rc = knit_relay_store_open(data, 0, &store);
    if (rc) {
        fprintf(stderr, "sync-relay: cannot open store %s: %s\n", data, knit_strerror(rc));
        return 1;
    }
    /* Damage SQLite can see is reported before anything is served. */
    rc = knit_relay_store_check(store, finding, sizeof finding);
    if (rc) {
        fprintf(stderr, "sync-relay: store %s is damaged (%s): PRAGMA quick_check: %s\n", data,
                knit_strerror(rc), finding);
        if (!serve_damaged) {
            fprintf(stderr, "sync-relay: not serving it; restore a backup, or start with "
                            "--serve-damaged to serve what can be read (docs/sync-relay.md)\n");
            knit_relay_store_close(store);
            return 1;
        }
        fprintf(stderr, "sync-relay: serving it anyway (--serve-damaged)\n");
    }
    /* A peer that vanishes mid-write must not kill the relay. */
    signal(SIGPIPE, SIG_IGN);
    o.cfg.store = store;
    o.on_listen = on_listen;
    o.http = http;
    o.nhttp = nhttp;
    o.on_http_listen = on_http_listen;
    rc = knit_relay_serve(&o);
    knit_relay_store_close(store);
    memset(key, 0, sizeof key);
    if (rc) {
        fprintf(stderr, "sync-relay: %s\n", knit_strerror(rc));
        return 1;
    }
    return 0;
}
