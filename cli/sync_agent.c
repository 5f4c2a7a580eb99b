/*
** sync_agent.c: the sync-agent program, a sidecar that keeps a replica in
** sync with a relay while applications read and write it with plain SQL.
** `track` makes a table synced; `run` runs the sync client (knit_sync.h) on
** a libuv loop until it is told to stop, or with --once until everything
** is pushed and pulled; `status` shows what a running agent last reported
** in its status file (REPLICA.sync-status: state, transport, synced or
** not, rewritten on every event and every second); `watch` prints one
** line per changed row of any tracked table, written by any process or
** applied from the relay.  Several `run`s on one replica elect a leader
** (knit_sync.h): one connects, the others follow and take over.  All the
** work is in the library; this file is argument handling, logging and exit
** codes.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <sqlite3.h>

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
#define EXIT_BUSY 6    /* --exclusive: another process already syncs the replica */

#define DEFAULT_TIMEOUT_S 30
#define MAX_TOKEN_FILE 16384
#define STATUS_SUFFIX ".sync-status" /* beside the replica; not watched (client.c) */
#define STATUS_EVERY_MS 1000         /* the status file is rewritten this often */
#define STATUS_STALE_S 5             /* older than this: the agent is not reporting */

static const char USAGE[] =
    "usage: sync-agent track REPLICA TABLE [--orset COLUMN]... [--ns COLUMN]\n"
    "       sync-agent run REPLICA --relay URL[,URL...]\n"
    "                  (--token-file FILE | --anonymous)\n"
    "                  [--once [--timeout SECONDS]] [options]\n"
    "       sync-agent status REPLICA [--json]\n"
    "       sync-agent watch REPLICA [--json]\n"
    "       sync-agent --help | --version\n"
    "\n"
    "Keeps a knit replica (an ordinary SQLite file) in sync with a relay while\n"
    "applications use it with plain SQL (docs/sync-agent.md).\n"
    "\n"
    "track: makes TABLE synced.  Its columns are last-writer-wins registers,\n"
    "except those named with --orset, which hold JSON arrays merged as sets.\n"
    "Existing rows are included.  Tracking again picks up added columns.\n"
    "  --orset COLUMN            a set column (repeatable) [none]\n"
    "  --ns COLUMN               the column whose value X puts a row in organization\n"
    "                            namespace org:X (NULL: the user's own); changing it\n"
    "                            moves the row [none]\n"
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
    "                            port (through HTTP proxies), PATH [/v1/ws];\n"
    "                            https://HOST:PORT[/PATH] or http://HOST:PORT[/PATH]\n"
    "                            for HTTP long-polling only, PATH [/v1/lp]\n"
    "                            Several relays of one deployment (one shared\n"
    "                            store): a comma-separated list (a repeated\n"
    "                            --relay replaces the earlier one), all with\n"
    "                            the first one's scheme and path\n"
    "                            (not http(s)://); a connection that fails, is\n"
    "                            cut or times out moves to the next, round-robin,\n"
    "                            after the usual backoff (logged \"failing over\");\n"
    "                            a refused credential or certificate does not\n"
    "  --fallback URL            long-polling to fall back to when the stream\n"
    "                            cannot be set up or is cut again and again:\n"
    "                            https://HOST:PORT[/PATH] (http:// only for a\n"
    "                            plain relay), or none [ws:// and wss://: the\n"
    "                            same host and port at /v1/lp; knit:// and\n"
    "                            knits://: none]\n"
    "  --fallback-after N        stream attempts in a row that end before their\n"
    "                            session syncs, then fall back [3]; with\n"
    "                            --fallback given, a WebSocket upgrade refused\n"
    "                            falls back at once; a refused certificate or\n"
    "                            credential never does\n"
    "  --stream-retry MS         on fallback, try the stream again after this\n"
    "                            long; one failure goes back to long-polling\n"
    "                            [300000]\n"
    "  --connect-timeout MS      connect and handshake must finish within [10000]\n"
    "  --ca-file FILE            with knits://, wss:// or https://: the CAs to\n"
    "                            trust, PEM [/etc/ssl/certs/ca-certificates.crt]\n"
    "  --server-name NAME        with knits://, wss:// or https://: the name the\n"
    "                            relay's certificate must carry [HOST; give one\n"
    "                            when HOST is an IP]\n"
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
    "  --exclusive               exit (status 6) when another process already\n"
    "                            syncs REPLICA, instead of following it\n"
    "  --check-interval MS       consistency check: this often, while synced,\n"
    "                            compare one namespace's digest with the relay's\n"
    "                            and repair the rows that differ from the relay's\n"
    "                            state (logged \"consistency check\") [300000]\n"
    "  --no-check                never run the consistency check\n"
    "\n"
    "One device, many processes: every run (and every program using the C\n"
    "API) on one replica competes for REPLICA.knit-lock.  The holder is the\n"
    "leader and the only one connected to the relay; it pushes every\n"
    "process's writes.  The others follow (the log says \"leader\" or\n"
    "\"follower\") and one takes over within about 20 ms when the leader stops\n"
    "or dies.  A follower's --once waits until the leader reports synced.\n"
    "\n"
    "status: prints the last report of the process leading REPLICA, kept in\n"
    "the replica (REPLICA.sync-status when it holds none): its state, pending\n"
    "local rows, the transport in use (tcp, tls, ws, wss,\n"
    "longpoll, longpoll-tls; \"(fallback)\" when long-polling because the\n"
    "stream failed), and \"synced: yes\" only while everything is pushed,\n"
    "acknowledged and pulled.  Health, over the leader's run: write-to-ACK\n"
    "latency (p50, p99, mean, from each change's commit time), push success\n"
    "rate, errors by kind, connection attempts and reconnects, consistency\n"
    "checks, inconsistencies found and repaired and rows repaired, and when it\n"
    "was last synced.  --json prints one JSON object (keys with spaces as\n"
    "underscores, all-digit values as numbers).  Exit 0 when an agent is\n"
    "running and reporting, 1 when none is (the last report is still printed).\n"
    "\n"
    "watch: prints one line per changed row of every tracked table, written\n"
    "by any process (plain SQL included) or applied from the relay, until\n"
    "SIGINT or SIGTERM: TABLE KEY local|remote [deleted] [rolled-back], KEY a\n"
    "JSON array of the primary-key values; rolled-back marks a row whose local\n"
    "write the relay refused and the replica rolled back (see _knit_rejected).\n"
    "--json prints {\"table\":..., \"key\":[...], \"origin\":\"local\"|\"remote\",\n"
    "\"deleted\":false, \"rolled_back\":false} objects instead.\n"
    "  --json                    JSON lines\n"
    "  --poll-ms MS              safety poll besides the file watch [250]\n"
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
    "aside; 6 --exclusive and another process syncs the replica.\n";

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
        } else if (strcmp(a, "--ns") == 0) {
            int n;
            if (i + 1 >= argc)
                return usage_error("%s needs a column name", a);
            n = snprintf(spec + off, sizeof spec - off, "%s%s:ns", off ? "," : "", argv[++i]);
            if (n < 0 || (size_t)n >= sizeof spec - off)
                return usage_error("%s", "too many columns");
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
    printf("sync-agent: %s in %s is tracked%s%s\n", table, replica, off ? "; columns: " : "",
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
    uv_timer_t status_tick; /* rewrites the status file */
    char status_path[1100]; /* REPLICA.sync-status, or "" */
    char transport[32];     /* the transport of the last session online */
    char since[32];         /* when the state last changed (UTC) */
    int status_warned;      /* the status file could not be written (warned once) */
    int follower;           /* another process leads (KNIT_SYNC_EV_ROLE) */
    uint64_t started_ms;    /* wall clock at start, for a follower's --once */
    char scheme[16];        /* the relays' scheme as given ("knit://", "" ...) */
    char relays[2048];      /* every relay given, comma-separated, for logs */
} agent_t;

#define MAX_RELAYS 16

/* The relay URLs of --relay (a comma-separated list; the last --relay counts). */
typedef struct relay_list_s {
    char *url[MAX_RELAYS]; /* owned copies, in the order given */
    size_t n;              /* how many */
} relay_list_t;

/* Takes the comma-separated URLs in val; -1 when there are too many or
** one is empty. */
static int relay_add(relay_list_t *rl, const char *val)
{
    const char *p = val;
    /* A later --relay replaces an earlier one, as it always did (scripts
    ** and tests override a default that way). */
    for (size_t i = 0; i < rl->n; i++)
        free(rl->url[i]);
    rl->n = 0;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (!n || rl->n >= MAX_RELAYS || !(rl->url[rl->n] = strndup(p, n)))
            return -1;
        rl->n++;
        if (!c)
            return 0;
        p = c + 1;
    }
}

/* The scheme prefix of a relay URL ("knits://"; "" for a bare HOST:PORT). */
static size_t scheme_len(const char *u)
{
    const char *p = strstr(u, "://");
    return p ? (size_t)(p - u) + 3 : 0;
}

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
    printf("sync-agent: %s synced with %s as %s: %s over %s%s\n", ag->replica, ag->relay,
           ag->principal, counts, ag->transport,
           waiting ? "; some changes wait for tables or columns this replica does not track "
                     "(sync-inspect aside)"
                   : "");
}

static void utc_now(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Rewrites the status file (a new file renamed over the old one, so a
** reader never sees half of it).  "synced: yes" only when the client says
** SYNCED holds now and it is online. */
static void write_status(agent_t *ag)
{
    knit_sync_status_t st;
    char tmp[1200], now[32];
    FILE *f;
    if (!ag->status_path[0] || !ag->sync)
        return;
    knit_sync_status(ag->sync, &st);
    if (!st.leader)
        return; /* the leader writes it; a follower would overwrite its report */
    utc_now(now, sizeof now);
    snprintf(tmp, sizeof tmp, "%s.tmp", ag->status_path);
    if (!(f = fopen(tmp, "w"))) {
        if (!ag->status_warned++)
            logf_(KNIT_SYNC_LOG_WARN,
                  "cannot write %s: %s (sync-agent status will not see "
                  "this agent)",
                  tmp, strerror(errno));
        return;
    }
    fprintf(f, "pid: %ld\n", (long)getpid());
    fprintf(f, "updated: %s\n", now);
    if (st.relay && strchr(ag->relays, ','))
        fprintf(f, "relay: %s%s\n", ag->scheme, st.relay); /* the one in use */
    else
        fprintf(f, "relay: %s\n", ag->relay);
    fprintf(f, "relays: %s\n", ag->relays);
    fprintf(f, "failovers: %llu\n", (unsigned long long)st.failovers);
    fprintf(f, "state: %s\n",
            ag->stopping && st.state != KNIT_SYNC_STOPPED ? "STOPPING"
                                                          : knit_sync_state_name(st.state));
    fprintf(f, "since: %s\n", ag->since);
    fprintf(f, "transport: %s%s\n", st.transport, st.fallback ? " (fallback)" : "");
    if (st.fallback)
        fprintf(f, "stream retry in: %llu s\n",
                (unsigned long long)((st.stream_retry_ms + 999) / 1000));
    fprintf(f, "fallbacks: %llu\n", (unsigned long long)st.fallbacks);
    fprintf(f, "principal: %s\n", ag->principal[0] ? ag->principal : "-");
    fprintf(f, "synced: %s\n", st.synced && st.state == KNIT_SYNC_ONLINE ? "yes" : "no");
    fprintf(f, "pending: %llu\n", (unsigned long long)st.pending);
    fprintf(f, "sessions: %llu\n", (unsigned long long)st.sessions);
    fprintf(f, "pushed: %llu\n", (unsigned long long)st.acked_changes);
    fprintf(f, "received: %llu\n", (unsigned long long)st.delta_changes);
    fprintf(f, "applied: %llu\n", (unsigned long long)st.applied);
    fprintf(f, "consistency checks: %llu\n", (unsigned long long)st.checks);
    fprintf(f, "inconsistencies found: %llu\n", (unsigned long long)st.check_found);
    fprintf(f, "inconsistencies repaired: %llu\n", (unsigned long long)st.check_repaired);
    fprintf(f, "last error: %s\n", ag->last_error[0] ? ag->last_error : "-");
    if (fclose(f) != 0 || rename(tmp, ag->status_path) != 0) {
        if (!ag->status_warned++)
            logf_(KNIT_SYNC_LOG_WARN, "cannot write %s: %s", ag->status_path, strerror(errno));
        unlink(tmp);
    }
}

static void stop(agent_t *ag, int code);

static uint64_t wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A follower's --once: done when the leader reports, after this run
** started, that everything is pushed, acknowledged and pulled. */
static void follower_once(agent_t *ag)
{
    knit_sync_report_t r;
    if (!ag->once || !ag->follower || ag->stopping || knit_sync_report(ag->k, &r) != 0)
        return;
    if (r.synced && r.pending == 0 && r.updated_ms > ag->started_ms + 100) {
        printf("sync-agent: %s synced with %s as %s through the leader, process %ld, over %s\n",
               ag->replica, ag->relay, r.principal, r.pid, r.transport);
        ag->synced = 1;
        ag->follower = 2; /* reported: report_once says nothing more */
        stop(ag, EXIT_OK);
    }
}

static void on_status_tick(uv_timer_t *t)
{
    write_status(t->data);
    follower_once(t->data);
}

static void on_closed(knit_sync_t *s)
{
    agent_t *ag = knit_sync_data(s);
    write_status(ag); /* STOPPED, the last word */
    uv_close((uv_handle_t *)&ag->status_tick, NULL);
    if (ag->once && ag->follower != 2)
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
    case KNIT_SYNC_EV_ROLE:
        /* The library logged which, and why. */
        ag->follower = !ev->leader;
        if (ag->follower && ag->once)
            logf_(KNIT_SYNC_LOG_INFO,
                  "--once: waiting for the leader (process %ld) to report "
                  "everything synced",
                  ev->leader_pid);
        break;
    case KNIT_SYNC_EV_TRANSPORT:
        /* The library logged why; this names what comes next. */
        logf_(KNIT_SYNC_LOG_DEBUG, "next connections over %s%s", ev->transport,
              ev->fallback ? " (fallback)" : "");
        break;
    case KNIT_SYNC_EV_STATE:
        utc_now(ag->since, sizeof ag->since);
        if (ev->state == KNIT_SYNC_ONLINE) {
            snprintf(ag->principal, sizeof ag->principal, "%s", ev->principal ? ev->principal : "");
            snprintf(ag->transport, sizeof ag->transport, "%s%s", ev->transport,
                     ev->fallback ? " (fallback)" : "");
            logf_(KNIT_SYNC_LOG_INFO, "online with %s%s as %s over %s%s",
                  ev->relay ? ag->scheme : "", ev->relay ? ev->relay : ag->relay, ag->principal,
                  ev->transport, ev->fallback ? " (fallback)" : "");
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
        if (ev->fatal &&
            (ev->code == KNIT_EAUTH || ev->code == KNIT_EDENIED || ev->code == KNIT_EVERSION ||
             ev->code == KNIT_EACCOUNT || ev->code == KNIT_EERASED)) {
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
                logf_(KNIT_SYNC_LOG_DEBUG, "synced over %s", ev->transport);
        }
        break;
    }
    write_status(ag);
}

static void on_log(knit_sync_t *s, int level, const char *line)
{
    (void)s;
    logline(level, line);
}

/* The relays after the first (note: knit_sync.h options.relays): each
** must have the first one's scheme and path; their HOST:PORT go into
** extra[] for o->relays.  Also fills ag->scheme and ag->relays.  0 or
** EXIT_USAGE. */
static int relays_parse(agent_t *ag, const relay_list_t *rl, char hp[][300], const char **extra,
                        knit_sync_options_t *o)
{
    size_t sl = scheme_len(rl->url[0]), off = 0;
    const char *path0 = strchr(rl->url[0] + sl, '/');
    snprintf(ag->scheme, sizeof ag->scheme, "%.*s", (int)(sl < 15 ? sl : 15), rl->url[0]);
    for (size_t i = 0; i < rl->n; i++) {
        int w =
            snprintf(ag->relays + off, sizeof ag->relays - off, "%s%s", i ? "," : "", rl->url[i]);
        if (w > 0 && (size_t)w < sizeof ag->relays - off)
            off += (size_t)w;
    }
    if (rl->n > 1 && strncmp(rl->url[0], "http", 4) == 0 && sl)
        return usage_error("bad --relay %s: several relays need a stream scheme (knit://, "
                           "knits://, ws://, wss://), not long-polling",
                           rl->url[1]);
    for (size_t i = 1; i < rl->n; i++) {
        const char *u = rl->url[i], *h = u + sl, *path;
        char host[256];
        int port;
        size_t hl;
        if (scheme_len(u) != sl || strncmp(u, rl->url[0], sl) != 0)
            return usage_error("bad --relay %s: every relay needs the first one's scheme", u);
        path = strchr(h, '/');
        if ((path || path0) && (!path || !path0 || strcmp(path, path0) != 0))
            return usage_error("bad --relay %s: every relay needs the first one's path", u);
        hl = path ? (size_t)(path - h) : strlen(h);
        if (hl >= 300)
            return usage_error("bad --relay %s: use HOST:PORT", u);
        memcpy(hp[i - 1], h, hl);
        hp[i - 1][hl] = '\0';
        if (cli_parse_hostport(hp[i - 1], 1, host, sizeof host, &port))
            return usage_error("bad --relay %s: use the first one's scheme with HOST:PORT", u);
        snprintf(hp[i - 1], 300, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        extra[i - 1] = hp[i - 1];
    }
    o->relays = rl->n > 1 ? extra : NULL;
    o->nrelays = rl->n > 1 ? rl->n - 1 : 0;
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    agent_t ag;
    knit_sync_options_t o;
    char host[256];
    int anonymous = 0, no_claim = 0, rc, ex;
    uint64_t v;
    char *token = NULL;
    const char *ca_file = NULL, *server_name = NULL, *addr, *fallback = NULL;
    char hostport[300];
    int https = 0;
    static relay_list_t rl; /* lives as long as the program (ag.relay points into it) */
    char extra_hp[MAX_RELAYS][300];
    const char *extra[MAX_RELAYS];

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
        if (strcmp(a, "--exclusive") == 0) {
            o.exclusive = 1;
            continue;
        }
        if (strcmp(a, "--no-check") == 0) {
            o.no_check = 1;
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
            if (relay_add(&rl, val) != 0)
                return usage_error("bad --relay %s: at most 16 relays, none empty", val);
            ag.relay = rl.url[0];
        } else if (strcmp(a, "--token-file") == 0) {
            ag.token_file = val;
        } else if (strcmp(a, "--ca-file") == 0) {
            ca_file = val;
        } else if (strcmp(a, "--server-name") == 0) {
            server_name = val;
        } else if (strcmp(a, "--fallback") == 0) {
            fallback = val;
        } else if (strcmp(a, "--fallback-after") == 0) {
            if (cli_parse_u64(val, 1, 1000, &v))
                return usage_error("bad --fallback-after %s (1 .. 1000)", val);
            o.fallback_after = (unsigned)v;
        } else if (strcmp(a, "--stream-retry") == 0) {
            if (cli_parse_u64(val, 1, 86400000, &v))
                return usage_error("bad --stream-retry %s (milliseconds)", val);
            o.stream_retry_ms = v;
        } else if (strcmp(a, "--check-interval") == 0) {
            if (cli_parse_u64(val, 1, 86400000, &v))
                return usage_error("bad --check-interval %s (milliseconds)", val);
            o.check_interval_ms = v;
        } else if (strcmp(a, "--connect-timeout") == 0) {
            if (cli_parse_u64(val, 1, 3600000, &v))
                return usage_error("bad --connect-timeout %s (milliseconds)", val);
            o.handshake_ms = v;
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
    if ((ex = relays_parse(&ag, &rl, extra_hp, extra, &o)) != 0)
        return ex;
    addr = ag.relay;
    if (strncmp(addr, "http://", 7) == 0 || strncmp(addr, "https://", 8) == 0) {
        /* Long-polling only: the library checks the whole URL. */
        const char *hp = addr + (addr[4] == 's' ? 8 : 7), *sl = strchr(hp, '/');
        size_t hl = sl ? (size_t)(sl - hp) : strlen(hp);
        https = addr[4] == 's';
        if (hl >= sizeof hostport)
            return usage_error("bad --relay %s: use http(s)://HOST:PORT[/PATH]", ag.relay);
        memcpy(hostport, hp, hl);
        hostport[hl] = '\0';
        if (cli_parse_hostport(hostport, 1, host, sizeof host, &o.port))
            return usage_error("bad --relay %s: use http(s)://HOST:PORT[/PATH]", ag.relay);
        o.longpoll = 1;
        o.longpoll_url = ag.relay;
        o.host = host;
        if (fallback)
            return usage_error("%s", "--fallback goes with a stream relay (knit://, knits://, "
                                     "ws://, wss://), not with a long-polling one");
    } else if (strncmp(addr, "knits://", 8) == 0) {
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
    if (!o.longpoll && cli_parse_hostport(addr, 1, host, sizeof host, &o.port))
        return usage_error("bad --relay %s: use knits://HOST:PORT, HOST:PORT, "
                           "wss://HOST:PORT[/PATH], ws://HOST:PORT[/PATH] or "
                           "http(s)://HOST:PORT[/PATH]",
                           ag.relay);
    if (fallback && strcmp(fallback, "none") == 0) {
        o.no_fallback = 1;
    } else if (fallback) {
        if (strncmp(fallback, "https://", 8) == 0)
            https = 1;
        else if (strncmp(fallback, "http://", 7) != 0)
            return usage_error("bad --fallback %s: use https://HOST:PORT[/PATH], "
                               "http://HOST:PORT[/PATH] or none",
                               fallback);
        if (o.tls && !https)
            return usage_error("bad --fallback %s: a TLS relay falls back only to https://",
                               fallback);
        o.longpoll_url = fallback;
    } else if (o.websocket && o.tls) {
        https = 1; /* the derived fallback */
    }
    if ((ca_file || server_name) && !o.tls && !https)
        return usage_error("%s", "--ca-file and --server-name go with a knits:// or wss:// relay "
                                 "(or https:// long-polling)");
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
    uv_timer_init(&ag.loop, &ag.status_tick);
    ag.sigint.data = ag.sigterm.data = ag.deadline.data = ag.status_tick.data = &ag;
    snprintf(ag.status_path, sizeof ag.status_path, "%s%s", ag.replica, STATUS_SUFFIX);
    utc_now(ag.since, sizeof ag.since);
    ag.started_ms = wall_now_ms();
    snprintf(ag.transport, sizeof ag.transport, "-");
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
        if (rc == KNIT_EBUSY)
            fprintf(stderr,
                    "sync-agent: another process already syncs %s (it holds %s.knit-lock); "
                    "exiting (--exclusive)\n",
                    ag.replica, ag.replica);
        else
            fprintf(stderr, "sync-agent: cannot start syncing %s: %s\n", ag.replica,
                    m && *m ? m : knit_strerror(rc));
        uv_close((uv_handle_t *)&ag.sigint, NULL);
        uv_close((uv_handle_t *)&ag.sigterm, NULL);
        uv_close((uv_handle_t *)&ag.deadline, NULL);
        uv_close((uv_handle_t *)&ag.status_tick, NULL);
        uv_run(&ag.loop, UV_RUN_DEFAULT);
        uv_loop_close(&ag.loop);
        knit_close(ag.k);
        return rc == KNIT_EINVAL ? EXIT_USAGE : rc == KNIT_EBUSY ? EXIT_BUSY : EXIT_REPLICA;
    }
    if (ag.once)
        uv_timer_start(&ag.deadline, on_deadline, ag.timeout_s * 1000, 0);
    write_status(&ag);
    uv_timer_start(&ag.status_tick, on_status_tick, STATUS_EVERY_MS, STATUS_EVERY_MS);
    logf_(KNIT_SYNC_LOG_INFO, "syncing %s with %s%s", ag.replica, ag.relays,
          ag.once ? " (once)" : "");
    uv_run(&ag.loop, UV_RUN_DEFAULT);
    uv_loop_close(&ag.loop);
    knit_close(ag.k);
    return ag.exit_code;
}

/* ---------------------------------------------------------------------- */
/* status                                                                   */

/* The value of "key: " in the status text, into buf ("" when absent). */
static void status_field(const char *text, const char *key, char *buf, size_t n)
{
    size_t kl = strlen(key);
    buf[0] = '\0';
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, key, kl) == 0 && p[kl] == ':' && p[kl + 1] == ' ') {
            const char *v = p + kl + 2, *e = strchr(v, '\n');
            size_t l = e ? (size_t)(e - v) : strlen(v);
            if (l >= n)
                l = n - 1;
            memcpy(buf, v, l);
            buf[l] = '\0';
            return;
        }
}

/* Prints the leader's last report, read from the replica (knit_sync_report:
** every process sees the same), or from REPLICA.sync-status when the
** replica holds none (an agent of an older knit); "synced: yes" is shown
** only when the leader is alive and the report is fresh, since anything
** older may no longer be true. */
static void json_value(sqlite3_str *s, const knit_value_t *v);

/* Appends "key": value to the JSON object being built in js: the key with
** spaces as underscores, the value a number when it is all digits. */
static void json_member(sqlite3_str *js, const char *key, size_t keylen, const char *val)
{
    knit_value_t v;
    char name[128];
    size_t n = keylen < sizeof name - 1 ? keylen : sizeof name - 1, digits = 0;
    for (size_t i = 0; i < n; i++)
        name[i] = key[i] == ' ' ? '_' : key[i];
    name[n] = '\0';
    sqlite3_str_appendall(js, sqlite3_str_length(js) > 1 ? "," : "");
    memset(&v, 0, sizeof v);
    v.type = KNIT_TEXT;
    v.u.b.p = (const uint8_t *)name;
    v.u.b.n = n;
    json_value(js, &v);
    sqlite3_str_appendchar(js, 1, ':');
    while (val[digits] >= '0' && val[digits] <= '9')
        digits++;
    if (digits && !val[digits] && digits < 19) {
        sqlite3_str_appendall(js, val);
        return;
    }
    v.u.b.p = (const uint8_t *)val;
    v.u.b.n = strlen(val);
    json_value(js, &v);
}

static int cmd_status(int argc, char **argv)
{
    char path[1100], text[8192], pid[32], state[64], synced[16], lsat[32];
    const char *replica = NULL;
    int json = 0;
    knit_sync_report_t r;
    knit_options_t ko;
    knit_t *k = NULL;
    struct stat st;
    FILE *f;
    size_t n;
    long p;
    int alive, fresh;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            continue;
        }
        if (strncmp(argv[i], "--", 2) == 0)
            return usage_error("unknown status option %s", argv[i]);
        if (replica)
            return usage_error("unexpected argument %s", argv[i]);
        replica = argv[i];
    }
    if (!replica)
        return usage_error("%s", "status needs REPLICA");
    memset(&r, 0, sizeof r);
    memset(&ko, 0, sizeof ko);
    ko.readonly = 1;
    if (stat(replica, &st) == 0 && knit_open(replica, &ko, &k) == 0) {
        if (knit_sync_report(k, &r) != 0)
            memset(&r, 0, sizeof r);
        knit_close(k);
    }
    snprintf(path, sizeof path, "%s%s", replica, STATUS_SUFFIX);
    if (r.found) {
        snprintf(text, sizeof text, "%s", r.text);
        status_field(text, "synced", synced, sizeof synced);
        alive = r.alive;
        fresh = r.fresh;
    } else {
        if (!(f = fopen(path, "r"))) {
            if (json)
                printf("{\"agent\":\"never run\"}\n");
            else
                printf("sync-agent: no agent has run on %s (no %s)\n", replica, path);
            return EXIT_SYNC;
        }
        n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
        status_field(text, "pid", pid, sizeof pid);
        status_field(text, "state", state, sizeof state);
        status_field(text, "synced", synced, sizeof synced);
        p = strtol(pid, NULL, 10);
        alive =
            p > 0 && (kill((pid_t)p, 0) == 0 || errno == EPERM) && strcmp(state, "STOPPED") != 0;
        fresh = stat(path, &st) == 0 && time(NULL) - st.st_mtime <= STATUS_STALE_S;
    }
    status_field(text, "last synced at", lsat, sizeof lsat);
    const char *agent = alive && fresh ? "running"
                        : alive        ? "running, not reporting"
                                       : "not running (the last report follows)";
    sqlite3_str *js = sqlite3_str_new(NULL);
    sqlite3_str_appendchar(js, 1, '{');
    if (json)
        json_member(js, "agent", 5,
                    alive && fresh ? "running"
                    : alive        ? "not reporting"
                                   : "stopped");
    else
        printf("agent: %s\n", agent);
    for (char *line = text; *line;) {
        char *e = strchr(line, '\n'), *colon;
        if (e)
            *e = '\0';
        if (!*line || strncmp(line, "at: ", 4) == 0 || !(colon = strstr(line, ": "))) {
            /* the report's own time, or not a field */
        } else if (strncmp(line, "synced: ", 8) == 0 && !(alive && fresh)) {
            if (json)
                json_member(js, "synced", 6, "unknown");
            else
                printf("synced: unknown (last reported: %s)\n", synced);
        } else if (json) {
            json_member(js, line, (size_t)(colon - line), colon + 2);
        } else if (strncmp(line, "last synced at: ", 16) == 0) {
            /* shown as the age of "last synced" */
        } else if (strncmp(line, "last synced: ", 13) == 0 && lsat[0]) {
            uint64_t at = strtoull(lsat, NULL, 10), now = (uint64_t)time(NULL) * 1000;
            printf("%s (%llu s ago)\n", line,
                   (unsigned long long)(now > at ? (now - at) / 1000 : 0));
        } else {
            printf("%s\n", line);
        }
        if (!e)
            break;
        line = e + 1;
    }
    sqlite3_str_appendchar(js, 1, '}');
    char *out = sqlite3_str_finish(js);
    if (json && out)
        printf("%s\n", out);
    sqlite3_free(out);
    return alive ? EXIT_OK : EXIT_SYNC;
}

/* ---------------------------------------------------------------------- */
/* watch                                                                    */

typedef struct watcher_s {
    uv_loop_t loop;      /* the event loop */
    uv_signal_t sigint;  /* SIGINT */
    uv_signal_t sigterm; /* SIGTERM */
    knit_watch_t *w;     /* the watch (knit_sync.h) */
    int json;            /* --json */
} watcher_t;

/* Appends v as JSON to s (a BLOB as {"hex":"..."}, a non-finite REAL as
** null). */
static void json_value(sqlite3_str *s, const knit_value_t *v)
{
    switch (v->type) {
    case KNIT_INTEGER:
        sqlite3_str_appendf(s, "%lld", (long long)v->u.i);
        break;
    case KNIT_REAL:
        if (v->u.r == v->u.r && v->u.r - v->u.r == 0)
            sqlite3_str_appendf(s, "%.17g", v->u.r);
        else
            sqlite3_str_appendall(s, "null");
        break;
    case KNIT_TEXT: {
        const unsigned char *p = v->u.b.p;
        sqlite3_str_appendchar(s, 1, '"');
        for (size_t i = 0; i < v->u.b.n; i++) {
            unsigned char c = p[i];
            if (c == '"' || c == '\\')
                sqlite3_str_appendf(s, "\\%c", c);
            else if (c < 0x20)
                sqlite3_str_appendf(s, "\\u%04x", c);
            else
                sqlite3_str_appendchar(s, 1, (char)c);
        }
        sqlite3_str_appendchar(s, 1, '"');
        break;
    }
    case KNIT_BLOB: {
        const unsigned char *p = v->u.b.p;
        sqlite3_str_appendall(s, "{\"hex\":\"");
        for (size_t i = 0; i < v->u.b.n; i++)
            sqlite3_str_appendf(s, "%02x", p[i]);
        sqlite3_str_appendall(s, "\"}");
        break;
    }
    default:
        sqlite3_str_appendall(s, "null");
    }
}

static void on_rows(knit_t *k, const knit_event_t *ev, void *data)
{
    watcher_t *wt = data;
    (void)k;
    for (size_t i = 0; i < ev->nkeys; i++) {
        const knit_event_key_t *key = &ev->keys[i];
        sqlite3_str *s = sqlite3_str_new(NULL);
        char *line;
        if (wt->json) {
            sqlite3_str_appendall(s, "{\"table\":");
            knit_value_t name = {KNIT_TEXT, {0}};
            name.u.b.p = ev->tables[key->table];
            name.u.b.n = strlen(ev->tables[key->table]);
            json_value(s, &name);
            sqlite3_str_appendall(s, ",\"key\":[");
        } else {
            sqlite3_str_appendf(s, "%s [", ev->tables[key->table]);
        }
        for (uint32_t j = 0; j < key->npk; j++) {
            if (j)
                sqlite3_str_appendchar(s, 1, ',');
            json_value(s, &key->pk[j]);
        }
        if (wt->json)
            sqlite3_str_appendf(s, "],\"origin\":\"%s\",\"deleted\":%s,\"rolled_back\":%s}",
                                key->remote ? "remote" : "local", key->deleted ? "true" : "false",
                                key->rolled_back ? "true" : "false");
        else
            sqlite3_str_appendf(s, "] %s%s%s", key->remote ? "remote" : "local",
                                key->deleted ? " deleted" : "",
                                key->rolled_back ? " rolled-back" : "");
        if ((line = sqlite3_str_finish(s)) != NULL)
            printf("%s\n", line);
        sqlite3_free(line);
    }
    if (ev->truncated)
        for (size_t t = 0; t < ev->ntables; t++) {
            if (wt->json) {
                sqlite3_str *s = sqlite3_str_new(NULL);
                knit_value_t name = {KNIT_TEXT, {0}};
                name.u.b.p = ev->tables[t];
                name.u.b.n = strlen(ev->tables[t]);
                sqlite3_str_appendall(s, "{\"table\":");
                json_value(s, &name);
                sqlite3_str_appendf(s, ",\"rows\":%zu,\"truncated\":true%s}", ev->rows[t],
                                    ev->rolled_back ? ",\"rolled_back\":true" : "");
                char *line = sqlite3_str_finish(s);
                if (line)
                    printf("%s\n", line);
                sqlite3_free(line);
            } else
                printf("%s: %zu rows changed (not all named)\n", ev->tables[t], ev->rows[t]);
        }
    fflush(stdout);
}

static void on_watch_signal(uv_signal_t *h, int signum)
{
    watcher_t *wt = h->data;
    (void)signum;
    knit_watch_stop(wt->w, NULL);
    uv_close((uv_handle_t *)&wt->sigint, NULL);
    uv_close((uv_handle_t *)&wt->sigterm, NULL);
}

static int cmd_watch(int argc, char **argv)
{
    const char *replica = NULL;
    watcher_t wt;
    knit_t *k = NULL;
    uint64_t v;
    unsigned poll_ms = 0;
    int rc, ex;

    memset(&wt, 0, sizeof wt);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            wt.json = 1;
        } else if (strcmp(a, "--poll-ms") == 0) {
            if (i + 1 >= argc || cli_parse_u64(argv[++i], 1, 3600000, &v))
                return usage_error("%s needs milliseconds", a);
            poll_ms = (unsigned)v;
        } else if (strcmp(a, "--log-level") == 0) {
            if (i + 1 >= argc || (g_log_level = parse_level(argv[++i])) < 0)
                return usage_error("%s", "--log-level takes error, warn, info or debug");
        } else if (strncmp(a, "--", 2) == 0) {
            return usage_error("unknown watch option %s", a);
        } else if (!replica) {
            replica = a;
        } else {
            return usage_error("unexpected argument %s", a);
        }
    }
    if (!replica)
        return usage_error("%s", "watch needs REPLICA");
    if ((ex = open_replica(replica, &k)) != 0)
        return ex;
    knit_on_change(k, on_rows, &wt);
    knit_on_change_keys(k, 100000);
    uv_loop_init(&wt.loop);
    if ((rc = knit_watch_start(&wt.loop, k, poll_ms, &wt.w)) != 0) {
        fprintf(stderr, "sync-agent: cannot watch %s: %s\n", replica, knit_strerror(rc));
        uv_loop_close(&wt.loop);
        knit_close(k);
        return EXIT_REPLICA;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_signal_init(&wt.loop, &wt.sigint);
    uv_signal_init(&wt.loop, &wt.sigterm);
    wt.sigint.data = wt.sigterm.data = &wt;
    uv_signal_start(&wt.sigint, on_watch_signal, SIGINT);
    uv_signal_start(&wt.sigterm, on_watch_signal, SIGTERM);
    logf_(KNIT_SYNC_LOG_INFO, "watching %s", replica);
    uv_run(&wt.loop, UV_RUN_DEFAULT);
    uv_loop_close(&wt.loop);
    knit_close(k);
    return EXIT_OK;
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
    if (strcmp(argv[1], "status") == 0)
        return cmd_status(argc, argv);
    if (strcmp(argv[1], "watch") == 0)
        return cmd_watch(argc, argv);
    return usage_error("unknown command %s (track, run, status or watch)", argv[1]);
}
