/*
** codec.h: the wire codec.  Turns protocol messages into framed CBOR bytes
** and framed bytes back into messages, exactly as docs/PROTOCOL.md specifies.
**
** The codec does no I/O, reads no clock and keeps no state between calls:
** bytes and limits come in as arguments, so the relay, the client, the tests
** and the fuzzers all drive the same code.  Decoding is strict: every CBOR
** type, length and count is checked, every length is bounded before anything
** is allocated, every dictionary index in a batch is checked, and bytes after
** the message are an error.  Unknown keys in a message map are skipped (see
** PROTOCOL.md, "Forward compatibility"); unknown message types are not.
**
** Ownership
**   - Messages you build for knit_msg_encode() point at your own memory; the
**     codec only reads it during the call.  Never knit_msg_free() them (it is
**     a harmless no-op on a message the decoder did not make).
**   - A message made by knit_msg_decode() owns every string and array it
**     points to, and its batch, until knit_msg_free().  To keep the batch,
**     take the pointer and set the field to NULL before knit_msg_free(); the
**     batch is then yours to knit_batch_free().
**   - A knit_buf_t owns its bytes (knit_buf_free()); knit_msg_encode()
**     appends to it, so one buffer can collect many frames.
*/
#ifndef KNIT_CODEC_H
#define KNIT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "knit.h"
#include "schema.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol versions this library speaks: the range a client offers in HELLO
** and a relay accepts. */
#define KNIT_PROTO_VERSION_MIN 1
#define KNIT_PROTO_VERSION_MAX 1

#define KNIT_FRAME_HEADER 4               /* bytes of big-endian length before each message */
#define KNIT_HELLO_MAX_FRAME (64u * 1024) /* payload bytes a relay accepts before WELCOME */

/* Defaults for knit_codec_limits_t (a zero field means "the default"). */
#define KNIT_DEFAULT_MAX_FRAME (16u * 1024 * 1024) /* payload bytes */
#define KNIT_DEFAULT_MAX_CHANGES (1u << 20)        /* changes, units, reasons */
#define KNIT_DEFAULT_MAX_DICT 4096                 /* dictionary and list entries */
#define KNIT_DEFAULT_MAX_STRING (16u * 1024)       /* names, ids, tokens, messages */
#define KNIT_DEFAULT_MAX_DEPTH 8                   /* nesting of skipped unknown values */

/* Bounds the decoder enforces (and the encoder too, so that what one side
** sends the other side, with the same limits, accepts).  Pass NULL for all
** defaults. */
typedef struct knit_codec_limits_s {
    size_t max_frame;   /* payload bytes of one frame; KNIT_ETOOBIG beyond */
    size_t max_changes; /* changes in a batch; also its units and REJECT reasons */
    size_t max_dict;    /* sites, tables, columns per table, subscriptions, granted */
    size_t max_string;  /* bytes of a name, id, secret, token or message text
                           (not of TEXT/BLOB values, which only the frame bounds) */
    unsigned max_depth; /* nesting allowed inside a skipped unknown field */
} knit_codec_limits_t;

/* Fills *lim with the defaults above. */
KNIT_EXTERN void knit_codec_limits_default(knit_codec_limits_t *lim /* OUT */);

/* Message types: the value of key 0 in every message map. */
typedef enum knit_msg_type_e {
    KNIT_MSG_HELLO = 1,      /* client -> relay: version range, identity, subscriptions */
    KNIT_MSG_WELCOME = 2,    /* relay -> client: session accepted */
    KNIT_MSG_ERROR = 3,      /* either way: fatal error, connection closes after it */
    KNIT_MSG_PUSH = 4,       /* client -> relay: local changes */
    KNIT_MSG_ACK = 5,        /* relay -> client: push committed durably */
    KNIT_MSG_REJECT = 6,     /* relay -> client: push refused, nothing applied */
    KNIT_MSG_DELTAS = 7,     /* relay -> client: catch-up or live changes */
    KNIT_MSG_PING = 8,       /* either way: liveness probe */
    KNIT_MSG_PONG = 9,       /* answer to PING */
    KNIT_MSG_SUBSCRIBE = 10, /* client -> relay: more subscriptions after WELCOME */
    KNIT_MSG_CHECK = 11,     /* client -> relay: compare a namespace's digest (feature) */
    KNIT_MSG_CHECKED = 12    /* relay -> client: its digest, buckets and cells */
} knit_msg_type_t;

/* WELCOME features (key 6, a bit set; absent: 0).  A client sends the
** messages of a feature only when the relay announced it, so an older
** relay, which announces none, never receives them. */
#define KNIT_FEATURE_CHECK 1u /* CHECK / CHECKED: the consistency check */

/* HELLO features (key 9, a bit set; absent: 0): what the client can do,
** so a relay changes its behaviour only for clients that said so. */
#define KNIT_HELLO_NO_ECHO                                                                         \
    1u /* the client moves its cursor over its own units                                           \
          on ACK (first..last): the relay need not send                                            \
          them back to this connection as DELTAS */

#define KNIT_CHECK_MAX_BUCKETS 4096 /* buckets a CHECK may ask for */
#define KNIT_CHECK_MAX_FETCH 64     /* buckets one CHECK may fetch */

/* Credential kinds (HELLO).  A decoder passes unknown kinds through (with
** whichever of id, secret, token were present), so the relay can answer
** KNIT_EAUTH. */
#define KNIT_CRED_ANON 1 /* client-made id + secret -> namespace "anon:<id>" */
#define KNIT_CRED_JWT 2  /* HS256 JWT with "sub" -> namespace "user:<sub>" */

typedef struct knit_cred_s {
    uint32_t kind;      /* KNIT_CRED_ANON, KNIT_CRED_JWT, other (decoded); 0 = absent */
    const char *id;     /* ANON: 1..64 chars of [A-Za-z0-9_-] */
    const char *secret; /* ANON: 1..256 bytes of UTF-8 text */
    const char *token;  /* JWT: the compact serialization */
} knit_cred_t;

/* One subscription: a namespace and the last relay sequence the client
** applied from it (0 = from the beginning). */
typedef struct knit_sub_s {
    const char *ns;  /* namespace name */
    uint64_t cursor; /* last sequence applied */
} knit_sub_t;

/* Limits the relay announces in WELCOME. */
typedef struct knit_wire_limits_s {
    uint64_t max_frame;    /* largest frame payload it accepts, bytes */
    uint64_t max_changes;  /* most changes it accepts in one PUSH */
    uint64_t idle_ms;      /* it closes a connection silent for this long */
    uint64_t max_drift_ms; /* it refuses stamps this far ahead of its clock */
} knit_wire_limits_t;

typedef struct knit_hello_s {
    uint32_t min_version;        /* oldest protocol version the client speaks, >= 1 */
    uint32_t max_version;        /* newest, >= min_version */
    knit_site_t site;            /* the replica's site id */
    knit_cred_t cred;            /* who the client is (kind 0: none sent) */
    knit_cred_t claim;           /* optional (kind 0: absent): an ANON credential whose
                                    namespace the relay merges into cred's (JWT) one */
    const knit_sub_t *subs;      /* subscriptions, may be NULL when nsubs is 0 */
    size_t nsubs;                /* count */
    const char *agent;           /* optional software name for logs, or NULL */
    const knit_schema_t *schema; /* optional (NULL: absent): the replica's tracked
                                    schema (runtime/schema.h), canonical, with its
                                    fingerprint; decoded ones are checked: bounds,
                                    order and fingerprint (PROTOCOL.md, HELLO) */
    uint64_t features;           /* optional (0: absent): KNIT_HELLO_* bits */
} knit_hello_t;

typedef struct knit_welcome_s {
    uint32_t version;           /* the version chosen for this session */
    const char *principal;      /* "anon:<id>" or "user:<sub>" */
    const char *const *granted; /* namespaces the client may read and write */
    size_t ngranted;            /* count */
    uint64_t clock;             /* relay's HLC when it answered (hlc.h layout) */
    knit_wire_limits_t limits;  /* what the relay enforces */
    uint64_t features;          /* optional (0: absent): KNIT_FEATURE_* bits */
} knit_welcome_t;

typedef struct knit_error_msg_s {
    int32_t code;         /* a negative KNIT_E* code (knit_errors.h) */
    const char *message;  /* human-readable detail, may be "" (never NULL decoded) */
    uint32_t min_version; /* with KNIT_EVERSION: the relay's range; else 0 */
    uint32_t max_version; /* with KNIT_EVERSION: the relay's range; else 0 */
} knit_error_msg_t;

typedef struct knit_push_s {
    uint64_t id;         /* client-chosen batch id, echoed by ACK/REJECT */
    const char *ns;      /* the namespace every change belongs to */
    knit_batch_t *batch; /* the changes; every change's ns names `ns` */
} knit_push_t;

typedef struct knit_ack_s {
    uint64_t id;        /* the PUSH's batch id */
    int durable;        /* 1: committed durably (always, in version 1) */
    uint64_t first_seq; /* optional (0: absent): first sequence the push took in its ns */
    uint64_t last_seq;  /* optional (0: absent): last one; first..last are all the push's */
} knit_ack_t;

/* Why a change (or a whole push) was refused. */
typedef struct knit_reason_s {
    int64_t change;      /* index into the push's batch->changes; -1 = the push */
    int32_t code;        /* negative KNIT_E* code */
    const char *message; /* detail, may be "" (never NULL decoded) */
} knit_reason_t;

typedef struct knit_reject_s {
    uint64_t id;                  /* the PUSH's batch id */
    const knit_reason_t *reasons; /* at least one */
    size_t nreasons;              /* count */
    knit_batch_t *state;          /* optional (NULL: absent): the relay's winning cells of
                                     the refused changes' rows (PROTOCOL.md REJECT); every
                                     change of one namespace, the push's.  Decoded: owned
                                     by the message (its namespace is KNIT_REJECT_STATE_NS) */
} knit_reject_t;

/* The namespace name a decoded REJECT state batch carries: REJECT has no
** namespace of its own, its changes belong to the refused PUSH's. */
#define KNIT_REJECT_STATE_NS "-"

typedef struct knit_deltas_s {
    const char *ns;      /* namespace */
    uint64_t from;       /* sequence the client must be at (its cursor) */
    uint64_t to;         /* sequence the client is at after applying */
    int caught_up;       /* 1: catch-up for ns is complete, live changes follow */
    knit_batch_t *batch; /* units with versions = sequences in (from, to] */
} knit_deltas_t;

typedef struct knit_ping_s {
    uint64_t nonce; /* echoed by PONG */
} knit_ping_t;

typedef struct knit_subscribe_s {
    const knit_sub_t *subs; /* at least one */
    size_t nsubs;           /* count */
} knit_subscribe_t;

/* CHECK: the client's digest of ns, taken while it had nothing to push and
** had applied everything up to its cursor.  nbuckets > 0 asks the relay
** for its bucket digests when the digests differ; fetch names buckets
** whose cells the relay sends back (transport/wire/buckets.h). */
typedef struct knit_check_msg_s {
    uint64_t id;           /* chosen by the client, echoed by CHECKED */
    const char *ns;        /* the namespace */
    knit_digest_t digest;  /* the client's state digest of ns */
    uint32_t nbuckets;     /* optional (0: absent): 1 .. KNIT_CHECK_MAX_BUCKETS */
    const uint32_t *fetch; /* optional: buckets (< nbuckets) whose cells are wanted */
    size_t nfetch;         /* count, at most KNIT_CHECK_MAX_FETCH (64) */
} knit_check_msg_t;

/* CHECKED: the relay's digest of ns at sequence seq. */
typedef struct knit_checked_s {
    uint64_t id;                  /* the CHECK's id */
    const char *ns;               /* its namespace */
    uint64_t seq;                 /* the relay's sequence of ns the digest is of */
    knit_digest_t digest;         /* the relay's state digest of ns */
    const knit_digest_t *buckets; /* optional: the CHECK's nbuckets bucket digests, sent
                                     when the digests differ (NULL: absent) */
    size_t nbuckets;              /* count (0 when absent) */
    knit_batch_t *state;          /* optional (NULL: absent): every cell the relay holds of
                                     the fetched buckets' rows, one unit (version seq);
                                     decoded: owned by the message */
} knit_checked_t;

typedef struct knit_msg_s {
    knit_msg_type_t type; /* selects the union member */
    union {
        knit_hello_t hello;         /* KNIT_MSG_HELLO */
        knit_welcome_t welcome;     /* KNIT_MSG_WELCOME */
        knit_error_msg_t error;     /* KNIT_MSG_ERROR */
        knit_push_t push;           /* KNIT_MSG_PUSH */
        knit_ack_t ack;             /* KNIT_MSG_ACK */
        knit_reject_t reject;       /* KNIT_MSG_REJECT */
        knit_deltas_t deltas;       /* KNIT_MSG_DELTAS */
        knit_ping_t ping;           /* KNIT_MSG_PING and KNIT_MSG_PONG */
        knit_subscribe_t subscribe; /* KNIT_MSG_SUBSCRIBE */
        knit_check_msg_t check;     /* KNIT_MSG_CHECK */
        knit_checked_t checked;     /* KNIT_MSG_CHECKED */
    } u;
    void *priv; /* decoder's storage; NULL in messages you build */
} knit_msg_t;

/* A growable byte buffer that encoded frames are appended to. */
typedef struct knit_buf_s {
    uint8_t *p; /* bytes (knit's allocator); NULL when empty */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
} knit_buf_t;

/* Releases b's bytes and empties it; NULL is a no-op. */
KNIT_EXTERN void knit_buf_free(knit_buf_t *b);

/* Appends one frame (4-byte big-endian payload length, then the CBOR
** message) to out.  Returns 0, KNIT_EINVAL for a message that cannot be
** represented (unknown type, bad batch index, a NaN, a name with a NUL
** byte, a PUSH change outside its namespace...), KNIT_ETOOBIG past a limit,
** or KNIT_ENOMEM.  On error out is as it was. */
KNIT_EXTERN int knit_msg_encode(const knit_msg_t *m, const knit_codec_limits_t *lim,
                                knit_buf_t *out);

/* Decodes one frame payload p[0..n) (without its 4-byte header) into *out.
** Returns 0; KNIT_EPROTO for anything malformed (bad CBOR, wrong type,
** missing or duplicate field, bad index, trailing bytes, unknown message
** type); KNIT_ETOOBIG past a limit; KNIT_ENOMEM.  On error *out holds
** nothing to free and *why (if why is not NULL) a static description of
** the first problem found, for logs and ERROR messages. */
KNIT_EXTERN int knit_msg_decode(const uint8_t *p, size_t n, const knit_codec_limits_t *lim,
                                knit_msg_t *out /* OUT */, const char **why /* OUT */);

/* Releases what knit_msg_decode() allocated inside *m (the struct itself is
** the caller's) and zeroes it.  NULL, or a message the decoder did not
** make, is a no-op. */
KNIT_EXTERN void knit_msg_free(knit_msg_t *m);

/* Version negotiation: the highest version in both [min, max] and this
** library's range.  KNIT_EVERSION when there is none ("unsupported protocol
** version"), KNIT_EPROTO when min is 0 or min > max. */
KNIT_EXTERN int knit_proto_negotiate(uint32_t min, uint32_t max, uint32_t *version /* OUT */);

/* "HELLO", "WELCOME", ... or "UNKNOWN". */
KNIT_EXTERN const char *knit_msg_type_name(int type);

#ifdef __cplusplus
}
#endif
#endif
