/*
** test_status_it.c: the relay's status page (GET /) in a real browser:
** Debian's headless Chromium loads it from the real sync-relay on
** 127.0.0.1, runs its script (which polls GET /v1/status), and the test
** reads the DOM Chromium rendered.  Data arrives through real sync-agent
** runs, one of them for a user whose id is markup: it must be shown as
** text, never run.  Without Chromium the cases report themselves skipped.
*/
#include "test.h"

#include <stdlib.h>
#include <unistd.h>

#include "relay_store.h"
#include "sync_util.h"

#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"
#define HOSTILE "<img src=x onerror=alert(1)>"

static su_relay_t relay;
static int http_port;
static char secret[512];

static const char *chromium(void)
{
    static const char *const paths[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser", NULL};
    for (int i = 0; paths[i]; i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

/* The relay on data (NULL: a new store), with an HTTP listener. */
static void start(const char *data)
{
    char fresh[512], hl[64];
    if (!data)
        data = su_path(fresh, sizeof fresh, "relay.db");
    su_path(secret, sizeof secret, "secret");
    CHECK_OK(su_write_secret(secret));
    http_port = su_free_port();
    CHECK(http_port > 0);
    snprintf(hl, sizeof hl, "127.0.0.1:%d", http_port);
    const char *extra[] = {"--http-listen", hl, NULL};
    CHECK_OK(su_relay_start(&relay, 0, data, secret, extra));
}

/* One replica of sub pushes n rows through `sync-agent run --once`. */
static void push_rows(const char *tag, const char *sub, int n)
{
    char path[600], token[600], out[4096];
    sqlite3 *db;
    int rc;
    snprintf(path, sizeof path, "%s/%s.db", su_tmpdir(), tag);
    snprintf(token, sizeof token, "%s/%s.jwt", su_tmpdir(), tag);
    CHECK_OK(su_write_token(secret, sub, token));
    db = su_db(path);
    su_exec(db, "%s", SCHEMA);
    sqlite3_close(db);
    const char *track[] = {SYNC_AGENT_PATH, "track", path, "items", NULL};
    CHECK_EQ_INT(su_run(track, 20000, out, sizeof out), 0);
    db = su_db(path);
    for (int i = 0; i < n; i++)
        su_exec(db, "INSERT INTO items VALUES('%s-%d', 'row')", tag, i);
    sqlite3_close(db);
    char url[64];
    snprintf(url, sizeof url, "127.0.0.1:%d", relay.port);
    const char *run[] = {SYNC_AGENT_PATH, "run",    path,        "--relay", url, "--token-file",
                         token,           "--once", "--timeout", "20",      NULL};
    rc = su_run(run, 40000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "agent (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

/* The DOM Chromium rendered for the page, after its script ran. */
static void render(char *out, size_t n)
{
    char url[64], profile[600];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", http_port);
    snprintf(profile, sizeof profile, "--user-data-dir=%s/chromium", su_tmpdir());
    const char *argv[] = {chromium(),
                          "--headless",
                          "--no-sandbox",
                          "--disable-gpu",
                          "--disable-dev-shm-usage",
                          "--no-first-run",
                          profile,
                          "--virtual-time-budget=4000",
                          "--dump-dom",
                          url,
                          NULL};
    int rc = su_run(argv, 60000, out, n);
    if (rc != 0)
        fprintf(stderr, "chromium (%d): %.2000s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

static int skip_without_chromium(void)
{
    if (chromium())
        return 0;
    fprintf(stderr, "SKIP: no chromium (apt-get install chromium)\n");
    return 1;
}

/* The page shows the relay live, its namespaces busiest first, and the
** connection table its script built from /v1/status. */
static void renders_namespaces(void)
{
    static char dom[1 << 20];
    char *alice, *bob;
    if (skip_without_chromium())
        exit(77);
    start(NULL);
    push_rows("a", "alice", 5);
    push_rows("b", "bob", 2);
    render(dom, sizeof dom);
    CHECK(strstr(dom, "id=\"state\" class=\"\">live<") != NULL);
    alice = strstr(dom, "<td>user:alice</td>");
    bob = strstr(dom, "<td>user:bob</td>");
    if (!alice || !bob)
        fprintf(stderr, "DOM: %.4000s\n", dom);
    CHECK(alice != NULL && bob != NULL);
    CHECK(alice < bob); /* busiest first: alice wrote more */
    CHECK(strstr(dom, "id=\"ns-total\">2<") != NULL);
    CHECK(strstr(dom, "<tr class=\"conn\"><td>tcp</td>") != NULL);
    CHECK(strstr(dom, "id=\"ingested\">") != NULL);
    CHECK(strstr(dom, "id=\"ingested\">0<") == NULL && strstr(dom, "id=\"ingested\">-<") == NULL);
}

/* A namespace named like markup is shown as text: the rendered DOM holds
** it escaped, and no element came of it.  Clients cannot make such a name
** (sub and anonymous ids are restricted), so it is written into the store
** file directly, as a damaged or foreign store could hold it. */
static void hostile_name_is_text(void)
{
    static char dom[1 << 20];
    char data[512];
    knit_relay_store_t *st;
    sqlite3 *db;
    if (skip_without_chromium())
        exit(77);
    su_path(data, sizeof data, "hostile.db");
    CHECK_OK(knit_relay_store_open(data, 0, &st));
    knit_relay_store_close(st);
    db = su_db(data);
    su_exec(db, "INSERT INTO ns(name, seq) VALUES('%s', 9)", HOSTILE);
    sqlite3_close(db);
    start(data);
    render(dom, sizeof dom);
    if (!strstr(dom, "<td>&lt;img src=x onerror=alert(1)&gt;</td>"))
        fprintf(stderr, "DOM: %.4000s\n", dom);
    CHECK(strstr(dom, "<td>&lt;img src=x onerror=alert(1)&gt;</td>") != NULL);
    CHECK(strstr(dom, "<img") == NULL);
}

KNIT_TESTS(T(renders_namespaces), T(hostile_name_is_text))
