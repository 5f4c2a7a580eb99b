/*
** status.c: the relay's live status page (GET /) and the JSON it polls
** (GET /v1/status); docs/sync-relay.md, "HTTP surface".
**
** Design notes
**   1. The page is one static HTML document with a small script.  It
**      draws nothing from the server's text: every value it shows comes
**      from /v1/status through textContent, so a namespace named like
**      markup is shown as text, never run.
**   2. Rates are the page's own: it polls every second and divides the
**      growth of the relay's counters by the time between two answers.
**      The relay keeps no windowed state for it.
**   3. /v1/status names at most STATUS_NS namespaces, the busiest first
**      (relay_store.h, knit_relay_store_busiest: one read of the ns table),
**      and the total.  JSON is made by jansson, which escapes names.
*/
#include "status.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "knit_errors.h"

#define STATUS_NS 50 /* namespaces listed (note 3) */

static const char PAGE[] =
    "<!doctype html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<title>knit relay</title>\n"
    "<meta name=\"viewport\" content=\"width=device-width\">\n"
    "<style>\n"
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\n"
    "h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.5em}\n"
    "table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;"
    "text-align:left}\n"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}\n"
    "#state.down{color:#b00}\n"
    "</style></head><body>\n"
    "<h1>knit relay <span id=\"state\">loading</span></h1>\n"
    "<p>Up <span id=\"uptime\">-</span> s; store <span id=\"store\">-</span>.</p>\n"
    "<h2>Connections</h2>\n"
    "<table><tbody id=\"conns\"></tbody></table>\n"
    "<h2>Ingest</h2>\n"
    "<table><tbody>\n"
    "<tr><td>changes per second</td><td class=\"n\" id=\"ingest-rate\">-</td></tr>\n"
    "<tr><td>pushes per second</td><td class=\"n\" id=\"push-rate\">-</td></tr>\n"
    "<tr><td>changes ingested</td><td class=\"n\" id=\"ingested\">-</td></tr>\n"
    "<tr><td>pushes acknowledged</td><td class=\"n\" id=\"acks\">-</td></tr>\n"
    "<tr><td>pushes refused</td><td class=\"n\" id=\"rejects\">-</td></tr>\n"
    "</tbody></table>\n"
    "<h2>Namespaces (<span id=\"ns-total\">-</span>, busiest first)</h2>\n"
    "<table><thead><tr><th>namespace</th><th>sequence</th></tr></thead>\n"
    "<tbody id=\"ns\"></tbody></table>\n"
    "<script>\n"
    "'use strict';\n"
    "let last = null;\n"
    "function cell(tr, text, cls) {\n"
    "  const td = document.createElement('td');\n"
    "  td.textContent = String(text);\n"
    "  if (cls) td.className = cls;\n"
    "  tr.appendChild(td);\n"
    "}\n"
    "function rows(id, list, cls) {\n"
    "  const body = document.getElementById(id);\n"
    "  body.replaceChildren();\n"
    "  for (const [k, v] of list) {\n"
    "    const tr = document.createElement('tr');\n"
    "    if (cls) tr.className = cls;\n"
    "    cell(tr, k);\n"
    "    cell(tr, v, 'n');\n"
    "    body.appendChild(tr);\n"
    "  }\n"
    "}\n"
    "function set(id, v) { document.getElementById(id).textContent = String(v); }\n"
    "function rate(now, key) {\n"
    "  if (!last) return '-';\n"
    "  const dt = (now.t - last.t) / 1000;\n"
    "  return dt > 0 ? ((now.s[key] - last.s[key]) / dt).toFixed(1) : '-';\n"
    "}\n"
    "async function poll() {\n"
    "  try {\n"
    "    const r = await fetch('/v1/status', {cache: 'no-store'});\n"
    "    const s = await r.json();\n"
    "    const now = {t: performance.now(), s: s};\n"
    "    set('state', 'live');\n"
    "    document.getElementById('state').className = '';\n"
    "    set('uptime', s.uptime_s);\n"
    "    set('store', s.store_ok ? 'ok' : 'unavailable');\n"
    "    const c = Object.entries(s.connections);\n"
    "    c.push(['sessions', s.sessions]);\n"
    "    rows('conns', c, 'conn');\n"
    "    set('ingest-rate', rate(now, 'changes_ingested'));\n"
    "    set('push-rate', rate(now, 'pushes'));\n"
    "    set('ingested', s.changes_ingested);\n"
    "    set('acks', s.acks);\n"
    "    set('rejects', s.rejects);\n"
    "    set('ns-total', s.namespaces_total);\n"
    "    rows('ns', s.namespaces.map(n => [n.name, n.seq]), 'ns');\n"
    "    last = now;\n"
    "  } catch (e) {\n"
    "    set('state', 'unreachable');\n"
    "    document.getElementById('state').className = 'down';\n"
    "  }\n"
    "  setTimeout(poll, 1000);\n"
    "}\n"
    "poll();\n"
    "</script></body></html>\n";

const char *knit__status_page(size_t *n) /* see status.h */
{
    *n = sizeof PAGE - 1;
    return PAGE;
}

static int add_ns(void *data, const knit_relay_ns_info_t *ns)
{
    json_t *o = json_pack("{s:s, s:I}", "name", ns->name, "seq", (json_int_t)ns->seq);
    return o && json_array_append_new(data, o) == 0 ? 0 : KNIT_ENOMEM;
}

int knit__status_json(const knit_relay_metrics_t *m, const knit_relay_metrics_snapshot_t *snap,
                      const knit_relay_backend_t *store, char **out, size_t *n) /* see status.h */
{
    static const char *const transport[] = {
#define X(e, label) label,
        KNIT_METRIC_TRANSPORTS(X)
#undef X
    };
    json_t *root, *conns, *nss;
    uint64_t rejects = 0, total = 0;
    int listed = 0, rc = KNIT_ENOMEM;
    char *text;

    *out = NULL;
    *n = 0;
    for (int i = 0; i < KNIT_METRIC_NCODES; i++)
        rejects += m->rejects[i];
    conns = json_object();
    nss = json_array();
    for (int t = 0; conns && t < KNIT_METRIC_NTRANSPORTS; t++)
        json_object_set_new(conns, transport[t], json_integer((json_int_t)m->conns[t]));
    /* A store that cannot be read still gets a page, which says so. */
    int lists = store && store->busiest;
    if (lists && nss)
        listed = store->busiest(store->data, STATUS_NS, add_ns, nss, &total) == 0;
    root = json_pack("{s:I, s:b, s:o*, s:I, s:I, s:I, s:I, s:I, s:o*, s:I}", "uptime_s",
                     (json_int_t)snap->uptime_s, "store_ok", snap->store_ok && (listed || !lists),
                     "connections", conns, "sessions", (json_int_t)m->sessions, "pushes",
                     (json_int_t)m->pushes, "acks", (json_int_t)m->acks, "rejects",
                     (json_int_t)rejects, "changes_ingested", (json_int_t)m->changes_ingested,
                     "namespaces", nss, "namespaces_total", (json_int_t)total);
    /* "o*" stole conns and nss, even on failure. */
    if (root && (text = json_dumps(root, JSON_COMPACT)) != NULL) {
        size_t len = strlen(text);
        if ((*out = knit__malloc(len + 1)) != NULL) {
            memcpy(*out, text, len + 1);
            *n = len;
            rc = 0;
        }
        free(text);
    }
    json_decref(root);
    return rc;
}
