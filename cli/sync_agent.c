/*
** sync_agent.c: the sync-agent program, a sidecar that keeps a replica in
** sync with a relay while applications read and write it with plain SQL.
** `track` makes a table synced; `run` runs the sync client (knit_sync.h) on
** a libuv loop until it is told to stop, or with --once until everything
** is pushed and pulled.  All the work is in the library; this file is
** argument handling, logging and exit codes.
*/
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cli_args.h"
#include "knit.h"
#include "knit_sync.h"

/* Exit codes (documented in --help and docs/sync-agent.md). */
#define EXIT_OK 0      /* done; or stopped by SIGINT/SIGTERM */
#define EXIT_SYNC 1    /* syncing failed: relay unreachable, changes refused, --once timeout */
#define EXIT_USAGE 2   /* bad command line */
#define EXIT_REPLICA 3 /* the replica cannot be opened, read, written or tracked */
#define EXIT_AUTH 4    /* credential or claim refused, namespace denied, no common protocol */
#define EXIT_ASIDE 5   /* --once: synced, except rows this replica could not apply */

#define DEFAULT_TIMEOUT_S 30
#define MAX_TOKEN_FILE 16384

static const char USAGE[] =
    "usage: sync-agent track REPLICA TABLE [--orset COLUMN]...\n"
    "       sync-agent run REPLICA --relay URL\n"
    "                  (--token-file FILE | --anonymous)\n"
    "                  [--once [--timeout SECONDS]] [options]\n"
    "       sync-agent --help | --version\n"
    "\n"
    "Keeps a knit replica (an ordinary SQLite file) in sync with a relay while\n"
    "applications use it with plain SQL (docs/sync-agent.md).\n"
    "\n"
    "track: makes TABLE synced.  Its columns are last-writer-wins registers,\n"
    "except those named with --orset, which hold JSON arrays merged as sets.\n"
    "Existing rows are included.  Tracking again picks up added columns.\n"
    "  --orset COLUMN            a set column (repeatable) [none]\n"
    "\n"
    "run: connects and syncs until SIGINT or SIGTERM: pushes local changes\n"
    "(written by any process) within milliseconds, applies remote ones live,\n"
    "reconnects with backoff.  Rows written before the first sync belong to\n"
    "the credential's namespace.  Signing in (--token-file) on a replica that\n"
    "ran --anonymous claims its anonymous data: the relay merges it into the\n"
    "account and the replica's anonymous rows move there, once.\n"
    "  --relay URL               the relay (required): knits://HOST:PORT for TLS\n"
    "                            1.2, checking the relay's certificate and name;\n"
    "                            HOST:PORT or knit://HOST:PORT for plain TCP\n"
    "                            (loopback and private links only);\n"
    "                            wss://HOST:PORT[/PATH] or ws://HOST:PORT[/PATH]\n"
    "                            for a WebSocket to the relay's --http-listen\n"
    "                            port (through HTTP proxies), PATH [/v1/ws]\n"
    "  --ca-file FILE            with knits:// or wss://: the CAs to trust, PEM\n"
    "                            [/etc/ssl/certs/ca-certificates.crt]\n"
    "  --server-name NAME        with knits:// or wss://: the name the relay's\n"
    "                            certificate must carry [HOST; give one when\n"
    "                            HOST is an IP]\n"
    "  --token-file FILE         a JWT for the relay, read again before every\n"
    "                            connection [none]\n"
    "  --anonymous               use the replica's own anonymous credential,\n"
    "                            made on first use and kept in the replica\n"
    "  --no-claim                with --token-file: leave the replica's anonymous\n"
    "                            data unclaimed [claim it when the replica has an\n"
    "                            anonymous credential not claimed yet]\n"
    "  --once                    push everything pending, pull until caught up,\n"
    "                            then exit\n"
    "  --timeout SECONDS         with --once: give up after this long [30]\n"
    "  --backoff-max MS          longest delay between reconnects [15000]\n"
    "  --poll-ms MS              safety poll of the replica, besides the file\n"
    "                            watch [250]\n"
    "  --max-inflight N          pushes awaiting acknowledgement at once [4]\n"
    "\n"
    "options for every command:\n"
    "  --log-level LEVEL         error, warn, info or debug [info]\n"
    "  --help                    this text\n"
    "  --version                 the version\n"
    "\n"
    "--once prints one line: \"synced\" only when everything was pushed and\n"
    "acknowledged, pulled and applied; \"synced except N rows set aside\" when\n"
    "rows could not be applied here (listed by sync-inspect aside REPLICA);\n"
    "\"not synced\" with the error when the session ended on one.\n"
    "\n"
    "exit status: 0 done (or stopped by SIGINT/SIGTERM); 1 syncing failed\n"
    "(relay unreachable, changes refused, --once timed out, the session ended\n"
    "on an error, a TLS certificate refused); 2 usage error; 3 replica error; 4 credential or "
    "claim\n"
    "refused, or no common protocol version; 5 --once synced except rows set\n"
    "aside.\n";

static int g_log_level = KNIT_SYNC_LOG_INFO;

static void logline(int level, const char *line)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char when[32];
    struct timespec ts;
    struct tm tm;
    if (level > g_log_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ sync-agent %s: %s\n", when, ts.tv_nsec / 1000000L,
            names[level < 0   ? 0
                  : level > 3 ? 3
                              : level],
            line);
}

static void logf_(int level, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void logf_(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    logline(level, line);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "sync-agent: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see sync-agent --help)\n");
    return EXIT_USAGE;
}

static int parse_level(const char *v)
{
    static const char *levels[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(v, levels[i]) == 0)
            return i;
    return -1;
}

/* Opens an existing replica; a missing file is an error, not a new one. */
static int open_replica(const char *path, knit_t **k)
{
    struct stat st;
    int rc;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "sync-agent: %s: %s\n", path, strerror(errno));
        return EXIT_REPLICA;
    }
    rc = knit_open(path, NULL, k);
    if (rc) {
        fprintf(stderr, "sync-agent: cannot open %s: %s\n", path, knit_strerror(rc));
        return EXIT_REPLICA;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* track                                                                    */

static int cmd_track(int argc, char **argv)
{
    const char *replica = NULL, *table = NULL;
    char spec[4096] = "";
    size_t off = 0;
    knit_t *k = NULL;
    int rc, ex;

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--orset") == 0) {
            int n;
            if (i + 1 >= argc)
                return usage_error("%s needs a column name", a);
            n = snprintf(spec + off, sizeof spec - off, "%s%s:orset", off ? "," : "", argv[++i]);
            if (n < 0 || (size_t)n >= sizeof spec - off)
                return usage_error("%s", "too many --orset columns");
            off += (size_t)n;
        } else if (strcmp(a, "--log-level") == 0) {
            if (i + 1 >= argc || (g_log_level = parse_level(argv[++i])) < 0)
                return usage_error("%s", "--log-level takes error, warn, info or debug");
        } else if (strncmp(a, "--", 2) == 0) {
            return usage_error("unknown track option %s", a);
        } else if (!replica) {
            replica = a;
        } else if (!table) {
            table = a;
        } else {
            return usage_error("unexpected argument %s", a);
        }
    }
    if (!replica || !table)
        return usage_error("%s", "track needs REPLICA and TABLE");
    if ((ex = open_replica(replica, &k)) != 0)
        return ex;
    rc = knit_track(k, table, spec);
    if (rc) {
        const char *m = knit_errmsg(k);
        fprintf(stderr, "sync-agent: cannot track %s: %s\n", table,
                m && *m ? m : knit_strerror(rc));
        knit_close(k);
        return EXIT_REPLICA;
    }
    printf("sync-agent: %s in %s is tracked%s%s\n", table, replica, off ? "; sets: " : "",
           off ? spec : "");
    knit_close(k);
    return EXIT_OK;
}

/* ---------------------------------------------------------------------- */
/* run                                                                      */

typedef struct agent_s {
    uv_loop_t loop;         /* the event loop */
    uv_signal_t sigint;     /* SIGINT */
    uv_signal_t sigterm;    /* SIGTERM */
    uv_timer_t deadline;    /* --once: the timeout */
    knit_sync_t *sync;      /* the sync client */
    knit_t *k;              /* the replica */
    const char *replica;    /* its path */
    const char *relay;      /* the relay's URL as given */
    const char *token_file; /* --token-file, or NULL */
    int once;               /* --once */
    uint64_t timeout_s;     /* --once timeout */
    int exit_code;          /* what main returns */
    int stopping;           /* knit_sync_stop was called */
    char principal[256];    /* last session's principal */
    char last_error[1024];  /* last error message, for --once failures */
    int synced;             /* --once: SYNCED was reached */
    int late_error;         /* --once: an error after SYNCED, while finishing */
} agent_t;

/* Reads the token file: at most MAX_TOKEN_FILE bytes, surrounding
** whitespace removed. */
static int read_token(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n, a = 0;
    if (!f)
        return KNIT_EIO;
    buf = malloc(MAX_TOKEN_FILE + 1);
    if (!buf) {
        fclose(f);
        return KNIT_ENOMEM;
    }
    n = fread(buf, 1, MAX_TOKEN_FILE + 1, f);
    fclose(f);
    if (n > MAX_TOKEN_FILE) {
        free(buf);
        return KNIT_ETOOBIG;
    }
    while (n &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    while (a < n && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\n' || buf[a] == '\r'))
        a++;
    memmove(buf, buf + a, n - a);
    buf[n - a] = '\0';
    if (!buf[0]) {
        free(buf);
        return KNIT_EINVAL;
    }
    *out = buf;
    return 0;
}

static int get_token(knit_sync_t *s, char **token)
{
    agent_t *ag = knit_sync_data(s);
    int rc = read_token(ag->token_file, token);
    if (rc)
        logf_(KNIT_SYNC_LOG_WARN, "cannot read %s: %s", ag->token_file, knit_strerror(rc));
    return rc;
}

/* Rows set aside in the replica (knit_aside_count, knit.h): distinct
** refused rows and waiting changes.  A failure to count is logged and
** counts nothing. */
static void aside_count(knit_t *k, uint64_t *refused, uint64_t *waiting)
{
    size_t r = 0, w = 0;
    int rc = knit_aside_count(k, &r, &w);
    if (rc)
        logf_(KNIT_SYNC_LOG_WARN, "cannot count the rows set aside: %s", knit_errmsg(k));
    *refused = rc ? 0 : r;
    *waiting = rc ? 0 : w;
}

/* --once: the one line that says how the run ended.  "synced" only when
** it did, wholly. */
static void report_once(agent_t *ag, knit_sync_t *s)
{
    knit_sync_status_t st;
    uint64_t refused = 0, waiting = 0;
    char counts[256];

    knit_sync_status(s, &st);
    snprintf(counts, sizeof counts, "pushed %llu changes, received %llu, applied %llu",
             (unsigned long long)st.acked_changes, (unsigned long long)st.delta_changes,
             (unsigned long long)st.applied);
    if (!ag->synced || ag->exit_code != EXIT_OK)
        return; /* the failure was reported where it happened */
    if (ag->late_error) {
        printf("sync-agent: %s not synced with %s: the session ended on an error: %s (%s)\n",
               ag->replica, ag->relay, ag->last_error, counts);
        ag->exit_code = EXIT_SYNC;
        return;
    }
    aside_count(ag->k, &refused, &waiting);
    if (refused) {
        printf("sync-agent: %s synced with %s as %s except %llu row%s set aside: see "
               "sync-inspect aside %s (%s)\n",
               ag->replica, ag->relay, ag->principal, (unsigned long long)refused,
               refused == 1 ? "" : "s", ag->replica, counts);
        ag->exit_code = EXIT_ASIDE;
        return;
    }
    printf("sync-agent: %s synced with %s as %s: %s%s\n", ag->replica, ag->relay, ag->principal,
           counts,
           waiting ? "; some changes wait for tables or columns this replica does not track "
                     "(sync-inspect aside)"
                   : "");
}

static void on_closed(knit_sync_t *s)
{
    agent_t *ag = knit_sync_data(s);
    if (ag->once)
        report_once(ag, s);
    fflush(stdout);
    ag->sync = NULL;
    uv_close((uv_handle_t *)&ag->sigint, NULL);
    uv_close((uv_handle_t *)&ag->sigterm, NULL);
    uv_close((uv_handle_t *)&ag->deadline, NULL);
}

static void stop(agent_t *ag, int code)
{
    if (ag->stopping)
        return;
    ag->stopping = 1;
    ag->exit_code = code;
    uv_timer_stop(&ag->deadline);
    knit_sync_stop(ag->sync, on_closed);
}

static void on_signal(uv_signal_t *h, int signum)
{
    agent_t *ag = h->data;
    logf_(KNIT_SYNC_LOG_INFO, "%s: finishing", signum == SIGINT ? "SIGINT" : "SIGTERM");
    stop(ag, EXIT_OK);
}

static void on_deadline(uv_timer_t *t)
{
    agent_t *ag = t->data;
    fprintf(stderr, "sync-agent: not synced with %s within %llu s%s%s\n", ag->relay,
            (unsigned long long)ag->timeout_s, ag->last_error[0] ? "; last error: " : "",
            ag->last_error);
    stop(ag, EXIT_SYNC);
}

static void on_event(knit_sync_t *s, const knit_sync_event_t *ev)
{
    agent_t *ag = knit_sync_data(s);
    switch (ev->type) {
    case KNIT_SYNC_EV_STATE:
        if (ev->state == KNIT_SYNC_ONLINE) {
            snprintf(ag->principal, sizeof ag->principal, "%s", ev->principal ? ev->principal : "");
            logf_(KNIT_SYNC_LOG_INFO, "online with %s as %s", ag->relay, ag->principal);
        } else if (ev->state == KNIT_SYNC_OFFLINE && ev->retry_ms) {
            logf_(KNIT_SYNC_LOG_INFO, "offline; next attempt in %llu ms",
                  (unsigned long long)ev->retry_ms);
        } else {
            logf_(KNIT_SYNC_LOG_DEBUG, "%s", knit_sync_state_name(ev->state));
        }
        break;
    case KNIT_SYNC_EV_ERROR:
        snprintf(ag->last_error, sizeof ag->last_error, "%s", ev->message ? ev->message : "");
        if (ag->synced)
            ag->late_error = 1; /* while finishing: the run did not end synced */
        if (ev->fatal && (ev->code == KNIT_EAUTH || ev->code == KNIT_EDENIED ||
                          ev->code == KNIT_EVERSION || ev->code == KNIT_EACCOUNT)) {
            fprintf(stderr, "sync-agent: %s\n", ag->last_error);
            if (ev->claim)
                fprintf(stderr,
                        "sync-agent: this sign-in also claimed %s, the replica's anonymous "
                        "data; nothing was moved (--no-claim signs in without claiming it)\n",
                        ev->claim);
            stop(ag, EXIT_AUTH);
        } else if (ev->fatal && ag->once) {
            fprintf(stderr, "sync-agent: %s\n", ag->last_error);
            stop(ag, EXIT_SYNC);
        }
        break;
    case KNIT_SYNC_EV_SYNCED:
        if (ag->once) {
            /* The verdict waits for the end of the session (report_once):
            ** stopping pushes what was written meanwhile, and may fail. */
            ag->synced = 1;
            stop(ag, EXIT_OK);
        } else {
            uint64_t refused, waiting;
            aside_count(ag->k, &refused, &waiting);
            if (refused)
                logf_(KNIT_SYNC_LOG_WARN,
                      "synced except %llu row%s set aside: see sync-inspect aside %s",
                      (unsigned long long)refused, refused == 1 ? "" : "s", ag->replica);
            else
                logf_(KNIT_SYNC_LOG_DEBUG, "synced");
        }
        break;
    }
}

static void on_log(knit_sync_t *s, int level, const char *line)
{
    (void)s;
    logline(level, line);
}

static int cmd_run(int argc, char **argv)
{
    agent_t ag;
    knit_sync_options_t o;
    char host[256];
    int anonymous = 0, no_claim = 0, rc, ex;
    uint64_t v;
    char *token = NULL;
    const char *ca_file = NULL, *server_name = NULL, *addr;
    char hostport[300];

    memset(&ag, 0, sizeof ag);
    memset(&o, 0, sizeof o);
    ag.timeout_s = DEFAULT_TIMEOUT_S;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val;
        if (strcmp(a, "--once") == 0) {
            ag.once = 1;
            continue;
        }
        if (strcmp(a, "--anonymous") == 0) {
            anonymous = 1;
            continue;
        }
        if (strcmp(a, "--no-claim") == 0) {
            no_claim = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (ag.replica)
                return usage_error("unexpected argument %s", a);
            ag.replica = a;
            continue;
        }
        if (i + 1 >= argc)
            return usage_error("%s needs a value", a);
        val = argv[++i];
        if (strcmp(a, "--relay") == 0) {
            ag.relay = val;
        } else if (strcmp(a, "--token-file") == 0) {
            ag.token_file = val;
        } else if (strcmp(a, "--ca-file") == 0) {
            ca_file = val;
        } else if (strcmp(a, "--server-name") == 0) {
            server_name = val;
        } else if (strcmp(a, "--timeout") == 0) {
            if (cli_parse_u64(val, 1, 86400 * 365, &ag.timeout_s))
                return usage_error("bad --timeout %s (seconds, at least 1)", val);
        } else if (strcmp(a, "--backoff-max") == 0) {
            if (cli_parse_u64(val, 1, 86400000, &v))
                return usage_error("bad --backoff-max %s (milliseconds)", val);
            o.backoff_max_ms = v;
            if (v < 200)
                o.backoff_base_ms = v;
        } else if (strcmp(a, "--poll-ms") == 0) {
            if (cli_parse_u64(val, 1, 3600000, &v))
                return usage_error("bad --poll-ms %s (milliseconds)", val);
            o.poll_ms = (unsigned)v;
        } else if (strcmp(a, "--max-inflight") == 0) {
            if (cli_parse_u64(val, 1, 1024, &v))
                return usage_error("bad --max-inflight %s (1 .. 1024)", val);
            o.max_inflight = (size_t)v;
        } else if (strcmp(a, "--log-level") == 0) {
            if ((g_log_level = parse_level(val)) < 0)
                return usage_error("bad --log-level %s: error, warn, info or debug", val);
        } else {
            return usage_error("unknown run option %s", a);
        }
    }
    if (!ag.replica)
        return usage_error("%s", "run needs REPLICA");
    if (!ag.relay)
        return usage_error("%s", "run needs --relay HOST:PORT");
    addr = ag.relay;
    if (strncmp(addr, "knits://", 8) == 0) {
        o.tls = 1;
        addr += 8;
    } else if (strncmp(addr, "knit://", 7) == 0) {
        addr += 7;
    } else if (strncmp(addr, "wss://", 6) == 0) {
        o.tls = o.websocket = 1;
        addr += 6;
    } else if (strncmp(addr, "ws://", 5) == 0) {
        o.websocket = 1;
        addr += 5;
    }
    if (o.websocket && strchr(addr, '/')) {
        /* ws[s]://HOST:PORT/PATH: the path goes into the request line as
        ** it is, so only visible ASCII (knit_sync_start checks it too). */
        const char *path = strchr(addr, '/');
        size_t hl = (size_t)(path - addr);
        if (hl >= sizeof hostport || strlen(path) > 1024 || strchr(path, '#'))
            return usage_error("bad --relay %s: use ws://HOST:PORT/PATH", ag.relay);
        for (const char *c = path; *c; c++)
            if (*c <= ' ' || *c > '~')
                return usage_error("bad --relay %s: the path must be visible ASCII", ag.relay);
        memcpy(hostport, addr, hl);
        hostport[hl] = '\0';
        addr = hostport;
        o.ws_path = path;
    }
    if (cli_parse_hostport(addr, 1, host, sizeof host, &o.port))
        return usage_error("bad --relay %s: use knits://HOST:PORT, HOST:PORT, "
                           "wss://HOST:PORT[/PATH] or ws://HOST:PORT[/PATH]",
                           ag.relay);
    if ((ca_file || server_name) && !o.tls)
        return usage_error("%s", "--ca-file and --server-name go with a knits:// or wss:// relay");
    if (ca_file && access(ca_file, R_OK) != 0) {
        fprintf(stderr, "sync-agent: cannot read --ca-file %s: %s\n", ca_file, strerror(errno));
        return EXIT_USAGE;
    }
    o.ca_file = ca_file;
    o.server_name = server_name;
    if (!!anonymous + !!ag.token_file != 1)
        return usage_error("%s", "run needs one credential: --token-file FILE or --anonymous");
    if (no_claim && anonymous)
        return usage_error("%s", "--no-claim goes with --token-file (only a sign-in claims)");
    if (ag.token_file && (rc = read_token(ag.token_file, &token)) != 0) {
        fprintf(stderr, "sync-agent: cannot read a token from %s: %s\n", ag.token_file,
                rc == KNIT_EIO ? strerror(errno) : knit_strerror(rc));
        return EXIT_USAGE;
    }
    if ((ex = open_replica(ag.replica, &ag.k)) != 0) {
        free(token);
        return ex;
    }

    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&ag.loop);
    uv_signal_init(&ag.loop, &ag.sigint);
    uv_signal_init(&ag.loop, &ag.sigterm);
    uv_timer_init(&ag.loop, &ag.deadline);
    ag.sigint.data = ag.sigterm.data = ag.deadline.data = &ag;
    uv_signal_start(&ag.sigint, on_signal, SIGINT);
    uv_signal_start(&ag.sigterm, on_signal, SIGTERM);

    o.host = host;
    o.cred_kind = anonymous ? KNIT_SYNC_ANONYMOUS : KNIT_SYNC_JWT;
    o.token = token;
    o.get_token = ag.token_file ? get_token : NULL;
    o.no_claim = no_claim;
    o.replica_path = ag.replica;
    o.log_level = g_log_level;
    o.on_event = on_event;
    o.on_log = on_log;
    o.data = &ag;
    o.agent = "sync-agent/" KNIT_VERSION_STRING;
    rc = knit_sync_start(&ag.loop, ag.k, &o, &ag.sync);
    if (token) {
        memset(token, 0, strlen(token));
        free(token);
    }
    if (rc) {
        const char *m = knit_errmsg(ag.k);
        fprintf(stderr, "sync-agent: cannot start syncing %s: %s\n", ag.replica,
                m && *m ? m : knit_strerror(rc));
        uv_close((uv_handle_t *)&ag.sigint, NULL);
        uv_close((uv_handle_t *)&ag.sigterm, NULL);
        uv_close((uv_handle_t *)&ag.deadline, NULL);
        uv_run(&ag.loop, UV_RUN_DEFAULT);
        uv_loop_close(&ag.loop);
        knit_close(ag.k);
        return rc == KNIT_EINVAL ? EXIT_USAGE : EXIT_REPLICA;
    }
    if (ag.once)
        uv_timer_start(&ag.deadline, on_deadline, ag.timeout_s * 1000, 0);
    logf_(KNIT_SYNC_LOG_INFO, "syncing %s with %s%s", ag.replica, ag.relay,
          ag.once ? " (once)" : "");
    uv_run(&ag.loop, UV_RUN_DEFAULT);
    uv_loop_close(&ag.loop);
    knit_close(ag.k);
    return ag.exit_code;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return usage_error("%s", "a command is needed: track or run");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(USAGE, stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("sync-agent %s\n", KNIT_VERSION_STRING);
        return EXIT_OK;
    }
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(USAGE, stdout);
            return EXIT_OK;
        }
    if (strcmp(argv[1], "track") == 0)
        return cmd_track(argc, argv);
    if (strcmp(argv[1], "run") == 0)
        return cmd_run(argc, argv);
    return usage_error("unknown command %s (track or run)", argv[1]);
}
