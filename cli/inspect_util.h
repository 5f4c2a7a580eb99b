/*
** inspect_util.h: what the commands of sync-inspect share: the command list,
** exit codes, error reporting, input reading and output.
**
** Each command lives in its own file as `int cmd_NAME(int argc, char **argv)`
** and is listed once in INSPECT_COMMANDS below; sync_inspect.c builds its
** dispatch table and its --help from that list.  A command receives argv[0]
** = its own name and the arguments after it, prints its own --help, and
** returns one of the INSPECT_EXIT_* codes, which become the exit status.
**
** Conventions every command keeps, so scripts can rely on them:
**   - results on stdout; with --json exactly one JSON document;
**   - errors on stderr as "sync-inspect: CMD: message", one line each;
**   - exit 0 ok, 1 a finding or difference, 2 usage, input or other error.
*/
#ifndef KNIT_INSPECT_UTIL_H
#define KNIT_INSPECT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "value.h"

#define INSPECT_EXIT_OK 0      /* success; nothing to report */
#define INSPECT_EXIT_FINDING 1 /* success, and the answer is a finding or difference */
#define INSPECT_EXIT_ERROR 2   /* usage error, unreadable or malformed input, I/O error */

/* The commands: X(name, one-line summary).  To add one, add a line here, a
** file cli/inspect_NAME.c defining cmd_NAME, and that file to
** cli/CMakeLists.txt. */
#define INSPECT_COMMANDS(X)                                                                        \
    X(info, "summarize a replica: site, namespaces, tables, clock, pending")                       \
    X(why, "explain a row or cell: value, stamp, site, OR-set dots")                               \
    X(pending, "list unacknowledged local changes by transaction")                                 \
    X(aside, "list changes this replica set aside instead of applying")                            \
    X(rejected, "list local writes the relay refused and the replica rolled back")                 \
    X(changes, "list a replica's changes after a local version")                                   \
    X(diff, "compare two replicas row by row and cell by cell")                                    \
    X(verify, "check a replica's integrity and metadata consistency")                              \
    X(digest, "print the state digest of a replica or a relay namespace")                          \
    X(schema, "show a replica's tracked schema, fingerprint and waiting cells")                    \
    X(relay, "summarize a relay store: namespaces, anonymous ids, device schemas")                 \
    X(decode, "show a knit frame or any CBOR item as JSON or diagnostic notation")

#define INSPECT_DECLARE(name, summary) int cmd_##name(int argc, char **argv);
INSPECT_COMMANDS(INSPECT_DECLARE)
#undef INSPECT_DECLARE

/* Prints "sync-inspect: CMD: message\n" on stderr (just "sync-inspect:
** message" when cmd is NULL). */
void inspect_err(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* inspect_err plus a pointer to --help; returns INSPECT_EXIT_ERROR. */
int inspect_usage_err(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Reads all of `path` ("-" or NULL: standard input) into a buffer allocated
** with knit__malloc, which the caller frees with knit__free.  Input longer
** than max bytes is refused without reading all of it.  On failure prints
** the reason (via inspect_err) and returns KNIT_EIO, KNIT_ETOOBIG or
** KNIT_ENOMEM. */
int inspect_read_input(const char *cmd, const char *path, size_t max, uint8_t **buf /* OUT */,
                       size_t *len /* OUT */);

/* Writes n bytes to stdout and flushes; on failure prints why and returns
** KNIT_EIO. */
int inspect_write(const char *cmd, const char *s, size_t n);

/* Writes s[0..n) to f as a quoted JSON string.  Quotes, backslashes, control
** characters, U+2028/U+2029 and the bidirectional controls are escaped; bytes
** that are not valid UTF-8 become \ufffd, so text from a replica, which
** SQLite does not check, still yields valid JSON. */
void inspect_json_string(FILE *f, const char *s, size_t n);

/* ---------------------------------------------------------------------- */
/* Arguments                                                               */

/* One option a command accepts.  An option with `value` takes an argument
** ("--since 4" or "--since=4"); one with `flag` takes none and sets *flag. */
typedef struct inspect_opt_s {
    const char *name;   /* as typed, e.g. "--since"; NULL ends a list */
    const char **value; /* receives the argument, or NULL */
    int *flag;          /* set to 1 when given, or NULL */
} inspect_opt_t;

/* Parses argv[1..argc) against opts.  Positional arguments go to pos[0..)
** and are counted in *npos; more than maxpos is a usage error.  "--help" and
** "-h" print help() and end the command; "--" ends the options.  Returns -1
** when the command should go on, else the exit status it must return. */
int inspect_args(const char *cmd, int argc, char **argv, const inspect_opt_t *opts,
                 void (*help)(void), const char **pos, int maxpos, int *npos /* OUT */);

/* Parses a decimal unsigned integer argument of option `opt` strictly (no
** sign, no spaces, no overflow); on failure prints a usage error and returns
** INSPECT_EXIT_ERROR, else 0. */
int inspect_u64_arg(const char *cmd, const char *opt, const char *s, uint64_t *out /* OUT */);

/* Flushes stdout after a command's output; on a write error prints why and
** returns INSPECT_EXIT_ERROR, else `status`. */
int inspect_finish(const char *cmd, int status);

/* ---------------------------------------------------------------------- */
/* Rendering values for people (terminal-safe) and for JSON (exact)        */

/* Writes text that cannot drive a terminal: control characters, DEL, C1
** controls, U+2028/U+2029, the bidirectional controls and bytes that are
** not valid UTF-8 become visible escapes (\n, \t, \x1b, \u202e).  For
** names (tables, columns, namespaces) and messages in text output. */
void inspect_text(FILE *f, const char *s, size_t n);

/* Writes n bytes as lower-case hex. */
void inspect_hex(FILE *f, const void *p, size_t n);

/* v as an SQL literal, safe for a terminal: 42, 1.5, 'it''s', X'00FF',
** NULL.  Text that holds unsafe characters (see inspect_text) or invalid
** UTF-8 is written as CAST(X'...' AS TEXT), which is still exact SQL.
** max > 0 shortens TEXT and BLOB values longer than max bytes to their
** first max bytes followed by "... (N bytes)"; that form is for reading
** only. */
void inspect_sql_value(FILE *f, const knit_value_t *v, size_t max);
/* n values as a comma-separated list of SQL literals ("'a', 2"), as
** inspect_sql_value writes them, never shortened. */
void inspect_sql_list(FILE *f, const knit_value_t *v, size_t n);
/* The same list, exact, as one JSON string: "'a', 2".  Text is copied as
** it is (JSON escaping keeps it exact), so the string, once decoded, is the
** key in the form `sync-inspect why` reads. */
void inspect_json_sql_list(FILE *f, const knit_value_t *v, size_t n);
/* v as a JSON value: null, integers exact, REALs with a '.' or an exponent
** (1.0, 1e+300; infinities as "Infinity" / "-Infinity"), TEXT as a string,
** BLOB as {"bytes": "HEX"} like `decode`. */
void inspect_json_value(FILE *f, const knit_value_t *v);

/* The shortest decimal form of d that reads back as d, always with a '.' or
** an exponent so it never looks like an integer ("1.0", "0.1", "1e+300").
** Infinities are "Infinity"/"-Infinity" and NaN "NaN": callers decide how
** their format spells those. */
void inspect_real(double d, char buf[40]);

#endif
