/*
** knit_errors.h: the one table of knit's error codes.
**
** Every knit function that can fail returns 0 on success or one of these
** negative codes.  The X-macro below generates the enum, knit_strerror() and
** knit_err_name(), so a code, its name and its message never drift apart.
*/
#ifndef KNIT_ERRORS_H
#define KNIT_ERRORS_H

#if defined(KNIT_BUILDING) && defined(__GNUC__)
#define KNIT_EXTERN __attribute__((visibility("default")))
#else
#define KNIT_EXTERN
#endif

#define KNIT_ERRNO_MAP(X)                                                                          \
    X(NOMEM, -1, "out of memory")                                                                  \
    X(INVAL, -2, "invalid argument")                                                               \
    X(RANGE, -3, "value out of range")                                                             \
    X(OVERFLOW, -4, "clock or counter overflow")                                                   \
    X(CLOCKSKEW, -5, "timestamp too far in the future")                                            \
    X(CORRUPT, -6, "malformed or corrupt data")                                                    \
    X(TRUNCATED, -7, "input ends too early")                                                       \
    X(TOOBIG, -8, "size exceeds the configured limit")                                             \
    X(IO, -9, "I/O error")                                                                         \
    X(DB, -10, "SQLite error")                                                                     \
    X(BUSY, -11, "database is locked by another connection")                                       \
    X(NOTREPLICA, -12, "file is not a knit replica")                                               \
    X(VERSION, -13, "unsupported metadata or protocol version")                                    \
    X(NOTFOUND, -14, "no such object")                                                             \
    X(SCHEMA, -15, "table cannot be tracked")                                                      \
    X(CONSTRAINT, -16, "a constraint refused the change")                                          \
    X(PROTO, -17, "protocol violation")                                                            \
    X(AUTH, -18, "authentication failed")                                                          \
    X(DENIED, -19, "not permitted for this credential")                                            \
    X(CLOSED, -20, "connection closed")                                                            \
    X(TIMEDOUT, -21, "timed out")                                                                  \
    X(TLS, -22, "TLS error")                                                                       \
    X(READONLY, -23, "replica opened read-only")                                                   \
    X(EXISTS, -24, "object already exists")                                                        \
    X(ACCOUNT, -25, "replica belongs to another account; use one file per account")                \
    X(ERASED, -26, "the account was erased on the relay")

typedef enum {
#define KNIT_ERR_ENUM(name, code, msg) KNIT_E##name = (code),
    KNIT_ERRNO_MAP(KNIT_ERR_ENUM)
#undef KNIT_ERR_ENUM
        KNIT_OK = 0
} knit_errno_t;

/* Human-readable message for a code; never NULL (unknown codes say so). */
KNIT_EXTERN const char *knit_strerror(int err);
/* Symbolic name such as "KNIT_ECORRUPT"; never NULL. */
KNIT_EXTERN const char *knit_err_name(int err);

#endif
