/*
** tls_conf.c: TLS credentials from PEM files (API in tls_conf.h): the trust
** anchors of a client, the certificate chain and private key of a server.
** Every byte is parsed by BearSSL's decoders (br_pem_decoder for PEM,
** br_x509_decoder for certificates, br_skey_decoder for keys); this file
** only moves their results into memory that outlives the decoders.
**
** Design notes
**   1. A configuration is immutable once made and reference-counted, so a
**      server can swap in new credentials while connections that started
**      with the old ones keep using them (BearSSL reads the chain and key
**      during every handshake and keeps pointers to them).
**   2. Files are bounded before they are read (MAX_PEM_FILE); a CA bundle
**      may hold certificates BearSSL cannot use (other key types): those
**      are skipped, and only a bundle with none left is an error.
**   3. A server key must match the first certificate of its chain (same
**      RSA modulus, same EC point): a mismatch is found at load time, with
**      a message, not at the first handshake as an opaque failure.
*/
#include <bearssl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "tls_conf.h"
#include "tls_int.h"

#define MAX_PEM_FILE (16u * 1024 * 1024)

/* A growable byte buffer. */
typedef struct gbuf_s {
    uint8_t *p; /* bytes */
    size_t len; /* used */
    size_t cap; /* allocated */
    int failed; /* an allocation failed (sticky) */
} gbuf_t;

static void gbuf_add(void *ctx, const void *src, size_t n)
{
    gbuf_t *b = ctx;
    if (b->failed || !n)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        uint8_t *q;
        while (cap < b->len + n)
            cap *= 2;
        if (!(q = knit__realloc(b->p, cap))) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *q = knit__malloc(n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

/* Reads a whole file (bounded, note 2) into *out, *n. */
static int read_file(const char *path, uint8_t **out, size_t *n, char *msg, size_t mn)
{
    FILE *f = fopen(path, "rb");
    gbuf_t b = {NULL, 0, 0, 0};
    uint8_t chunk[8192];
    size_t k;
    if (!f) {
        snprintf(msg, mn, "cannot read %s: %s", path, strerror(errno));
        return KNIT_EIO;
    }
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + k > MAX_PEM_FILE) {
            fclose(f);
            knit__free(b.p);
            snprintf(msg, mn, "%s is larger than %u bytes", path, MAX_PEM_FILE);
            return KNIT_ETLS;
        }
        gbuf_add(&b, chunk, k);
    }
    if (ferror(f)) {
        fclose(f);
        knit__free(b.p);
        snprintf(msg, mn, "cannot read %s: %s", path, strerror(errno));
        return KNIT_EIO;
    }
    fclose(f);
    if (b.failed) {
        knit__free(b.p);
        snprintf(msg, mn, "out of memory");
        return KNIT_ENOMEM;
    }
    *out = b.p;
    *n = b.len;
    return 0;
}

/* One PEM object: its banner name and DER bytes. */
typedef struct pem_obj_s {
    char name[128]; /* banner, e.g. "CERTIFICATE" */
    uint8_t *der;   /* decoded bytes (owned) */
    size_t len;     /* their count */
} pem_obj_t;

typedef struct pem_list_s {
    pem_obj_t *v; /* objects in file order */
    size_t n;     /* count */
} pem_list_t;

static void pem_free(pem_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].der)
            memset(l->v[i].der, 0, l->v[i].len); /* it may be a key */
        knit__free(l->v[i].der);
    }
    knit__free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* The state of one PEM decoding. */
typedef struct pem_run_s {
    br_pem_decoder_context pc; /* BearSSL's decoder */
    gbuf_t cur;                /* the object being decoded */
    char name[128];            /* its banner */
    int inobj;                 /* inside an object */
    pem_list_t *out;           /* where finished objects go */
} pem_run_t;

/* Pushes src[0..len) through the decoder, collecting finished objects. */
static int pem_feed(pem_run_t *r, const uint8_t *src, size_t len)
{
    while (len > 0) {
        size_t k = br_pem_decoder_push(&r->pc, src, len);
        src += k;
        len -= k;
        switch (br_pem_decoder_event(&r->pc)) {
        case BR_PEM_BEGIN_OBJ:
            snprintf(r->name, sizeof r->name, "%s", br_pem_decoder_name(&r->pc));
            r->cur.len = 0;
            br_pem_decoder_setdest(&r->pc, gbuf_add, &r->cur);
            r->inobj = 1;
            break;
        case BR_PEM_END_OBJ:
            if (r->inobj) {
                pem_list_t *l = r->out;
                pem_obj_t *v = knit__realloc(l->v, (l->n + 1) * sizeof *v);
                uint8_t *der = r->cur.failed ? NULL : dup_bytes(r->cur.p, r->cur.len);
                if (v)
                    l->v = v;
                if (!v || !der) {
                    knit__free(der);
                    return KNIT_ENOMEM;
                }
                snprintf(v[l->n].name, sizeof v[l->n].name, "%s", r->name);
                v[l->n].der = der;
                v[l->n].len = r->cur.len;
                l->n++;
            }
            r->inobj = 0;
            break;
        case BR_PEM_ERROR:
            return KNIT_ETLS;
        default:
            break;
        }
    }
    return 0;
}

/* Decodes every PEM object of the file at path. */
static int pem_load(const char *path, pem_list_t *out, char *msg, size_t mn)
{
    pem_run_t r;
    uint8_t *data;
    size_t len;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = read_file(path, &data, &len, msg, mn)) != 0)
        return rc;
    memset(&r, 0, sizeof r);
    r.out = out;
    br_pem_decoder_init(&r.pc);
    /* A final newline: the decoder needs one to see the last END line. */
    rc = pem_feed(&r, data, len);
    if (!rc)
        rc = pem_feed(&r, (const uint8_t *)"\n", 1);
    if (rc == KNIT_ENOMEM)
        snprintf(msg, mn, "out of memory");
    else if (rc)
        snprintf(msg, mn, "%s is not valid PEM", path);
    else if (r.inobj) {
        snprintf(msg, mn, "%s ends inside a PEM object", path);
        rc = KNIT_ETLS;
    }
    if (r.cur.p)
        memset(r.cur.p, 0, r.cur.cap); /* it may have held a key */
    knit__free(r.cur.p);
    memset(data, 0, len);
    knit__free(data);
    if (rc)
        pem_free(out);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Configurations                                                           */

static void pkey_free(br_x509_pkey *pk)
{
    if (pk->key_type == BR_KEYTYPE_RSA) {
        knit__free(pk->key.rsa.n);
        knit__free(pk->key.rsa.e);
    } else if (pk->key_type == BR_KEYTYPE_EC) {
        knit__free(pk->key.ec.q);
    }
}

/* Copies a decoder's public key into owned memory. */
static int pkey_copy(br_x509_pkey *dst, const br_x509_pkey *src)
{
    memset(dst, 0, sizeof *dst);
    dst->key_type = src->key_type;
    if (src->key_type == BR_KEYTYPE_RSA) {
        dst->key.rsa.n = dup_bytes(src->key.rsa.n, src->key.rsa.nlen);
        dst->key.rsa.nlen = src->key.rsa.nlen;
        dst->key.rsa.e = dup_bytes(src->key.rsa.e, src->key.rsa.elen);
        dst->key.rsa.elen = src->key.rsa.elen;
        if (!dst->key.rsa.n || !dst->key.rsa.e) {
            pkey_free(dst);
            return KNIT_ENOMEM;
        }
        return 0;
    }
    if (src->key_type == BR_KEYTYPE_EC) {
        dst->key.ec.curve = src->key.ec.curve;
        dst->key.ec.q = dup_bytes(src->key.ec.q, src->key.ec.qlen);
        dst->key.ec.qlen = src->key.ec.qlen;
        return dst->key.ec.q ? 0 : KNIT_ENOMEM;
    }
    return KNIT_ETLS;
}

knit_tls_conf_t *knit_tls_conf_ref(knit_tls_conf_t *c) /* see tls.h */
{
    if (c)
        c->refs++;
    return c;
}

void knit_tls_conf_unref(knit_tls_conf_t *c) /* see tls.h */
{
    if (!c || --c->refs > 0)
        return;
    for (size_t i = 0; i < c->ntas; i++) {
        knit__free(c->tas[i].dn.data);
        pkey_free(&c->tas[i].pkey);
    }
    knit__free(c->tas);
    for (size_t i = 0; i < c->nchain; i++)
        knit__free(c->chain[i].data);
    knit__free(c->chain);
    if (c->keymem) {
        memset(c->keymem, 0, c->keylen);
        knit__free(c->keymem);
    }
    knit__free(c);
}

void knit_tls_conf_describe(const knit_tls_conf_t *c, char *buf, size_t n) /* see tls.h */
{
    if (c->server)
        snprintf(buf, n, "%zu certificate%s, %s key", c->nchain, c->nchain == 1 ? "" : "s",
                 c->key_type == BR_KEYTYPE_RSA ? "RSA" : "EC");
    else
        snprintf(buf, n, "%zu trusted CA%s", c->ntas, c->ntas == 1 ? "" : "s");
}

/* Decodes one certificate into a trust anchor.  KNIT_ETLS: not usable. */
static int add_anchor(knit_tls_conf_t *c, const uint8_t *der, size_t len)
{
    br_x509_decoder_context dc;
    gbuf_t dn = {NULL, 0, 0, 0};
    br_x509_trust_anchor *v, ta;
    const br_x509_pkey *pk;
    int rc;

    br_x509_decoder_init(&dc, gbuf_add, &dn);
    br_x509_decoder_push(&dc, der, len);
    if (!(pk = br_x509_decoder_get_pkey(&dc)) || dn.failed) {
        knit__free(dn.p);
        return dn.failed ? KNIT_ENOMEM : KNIT_ETLS;
    }
    memset(&ta, 0, sizeof ta);
    if ((rc = pkey_copy(&ta.pkey, pk)) != 0) {
        knit__free(dn.p);
        return rc;
    }
    ta.dn.data = dn.p ? dn.p : dup_bytes("", 0);
    ta.dn.len = dn.len;
    ta.flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
    if (!ta.dn.data || !(v = knit__realloc(c->tas, (c->ntas + 1) * sizeof *v))) {
        knit__free(ta.dn.data);
        pkey_free(&ta.pkey);
        return KNIT_ENOMEM;
    }
    c->tas = v;
    c->tas[c->ntas++] = ta;
    return 0;
}

int knit_tls_conf_client(const char *ca_file, char *msg, size_t n,
                         knit_tls_conf_t **out) /* see tls.h */
{
    knit_tls_conf_t *c;
    pem_list_t l;
    size_t skipped = 0;
    int rc;

    *out = NULL;
    snprintf(msg, n, "%s", "");
    if (!ca_file)
        ca_file = KNIT_TLS_DEFAULT_CA;
    if ((rc = pem_load(ca_file, &l, msg, n)) != 0)
        return rc;
    if (!(c = knit__calloc(1, sizeof *c))) {
        pem_free(&l);
        snprintf(msg, n, "out of memory");
        return KNIT_ENOMEM;
    }
    c->refs = 1;
    for (size_t i = 0; i < l.n; i++) {
        if (strcmp(l.v[i].name, "CERTIFICATE") != 0 &&
            strcmp(l.v[i].name, "X509 CERTIFICATE") != 0 &&
            strcmp(l.v[i].name, "TRUSTED CERTIFICATE") != 0)
            continue;
        rc = add_anchor(c, l.v[i].der, l.v[i].len);
        if (rc == KNIT_ENOMEM) {
            pem_free(&l);
            knit_tls_conf_unref(c);
            snprintf(msg, n, "out of memory");
            return rc;
        }
        if (rc)
            skipped++; /* note 2 */
    }
    pem_free(&l);
    if (!c->ntas) {
        knit_tls_conf_unref(c);
        snprintf(msg, n, "%s holds no usable CA certificate%s", ca_file,
                 skipped ? " (BearSSL could not decode those it has)" : "");
        return KNIT_ETLS;
    }
    *out = c;
    return 0;
}

/* Copies the decoded private key into one allocation (c->keymem). */
static int copy_key(knit_tls_conf_t *c, const br_skey_decoder_context *kd)
{
    if (br_skey_decoder_key_type(kd) == BR_KEYTYPE_RSA) {
        const br_rsa_private_key *k = br_skey_decoder_get_rsa(kd);
        size_t total = k->plen + k->qlen + k->dplen + k->dqlen + k->iqlen;
        uint8_t *m;
        if (!(m = knit__malloc(total)))
            return KNIT_ENOMEM;
        c->keymem = m;
        c->keylen = total;
        c->rsa.n_bitlen = k->n_bitlen;
#define KNIT_TAKE(f)                                                                               \
    memcpy(m, k->f, k->f##len);                                                                    \
    c->rsa.f = m;                                                                                  \
    c->rsa.f##len = k->f##len;                                                                     \
    m += k->f##len
        KNIT_TAKE(p);
        KNIT_TAKE(q);
        KNIT_TAKE(dp);
        KNIT_TAKE(dq);
        KNIT_TAKE(iq);
#undef KNIT_TAKE
        c->key_type = BR_KEYTYPE_RSA;
        return 0;
    }
    if (br_skey_decoder_key_type(kd) == BR_KEYTYPE_EC) {
        const br_ec_private_key *k = br_skey_decoder_get_ec(kd);
        if (!(c->keymem = dup_bytes(k->x, k->xlen)))
            return KNIT_ENOMEM;
        c->keylen = k->xlen;
        c->ec.curve = k->curve;
        c->ec.x = c->keymem;
        c->ec.xlen = k->xlen;
        c->key_type = BR_KEYTYPE_EC;
        return 0;
    }
    return KNIT_ETLS;
}

/* Note 3: does the key belong to the certificate's public key? */
static int key_matches(const knit_tls_conf_t *c, const br_x509_pkey *pk)
{
    if (pk->key_type != c->key_type)
        return 0;
    if (c->key_type == BR_KEYTYPE_RSA) {
        br_rsa_compute_modulus mod = br_rsa_compute_modulus_get_default();
        uint8_t nb[4096 / 8 + 8]; /* BearSSL handles RSA up to 4096 bits */
        size_t nl = mod(NULL, &c->rsa), a = 0, b = 0;
        if (!nl || nl > sizeof nb || mod(nb, &c->rsa) != nl)
            return 0;
        /* Compare without leading zero bytes. */
        while (a < nl && nb[a] == 0)
            a++;
        while (b < pk->key.rsa.nlen && pk->key.rsa.n[b] == 0)
            b++;
        return nl - a == pk->key.rsa.nlen - b && memcmp(nb + a, pk->key.rsa.n + b, nl - a) == 0;
    } else {
        uint8_t q[BR_EC_KBUF_PUB_MAX_SIZE];
        br_ec_public_key pub;
        size_t ql = br_ec_compute_pub(br_ec_get_default(), &pub, q, &c->ec);
        return ql && pk->key.ec.curve == c->ec.curve && ql == pk->key.ec.qlen &&
               memcmp(q, pk->key.ec.q, ql) == 0;
    }
}

int knit_tls_conf_server(const char *cert_file, const char *key_file, char *msg, size_t n,
                         knit_tls_conf_t **out) /* see tls.h */
{
    knit_tls_conf_t *c;
    pem_list_t certs, keys;
    br_skey_decoder_context kd;
    br_x509_decoder_context dc;
    const br_x509_pkey *pk;
    const pem_obj_t *key = NULL;
    int rc;

    *out = NULL;
    snprintf(msg, n, "%s", "");
    if ((rc = pem_load(cert_file, &certs, msg, n)) != 0)
        return rc;
    if ((rc = pem_load(key_file, &keys, msg, n)) != 0) {
        pem_free(&certs);
        return rc;
    }
    if (!(c = knit__calloc(1, sizeof *c))) {
        rc = KNIT_ENOMEM;
        snprintf(msg, n, "out of memory");
        goto fail;
    }
    c->refs = 1;
    c->server = 1;
    for (size_t i = 0; i < certs.n; i++) {
        br_x509_certificate *v;
        if (strcmp(certs.v[i].name, "CERTIFICATE") != 0 &&
            strcmp(certs.v[i].name, "X509 CERTIFICATE") != 0)
            continue;
        if (!(v = knit__realloc(c->chain, (c->nchain + 1) * sizeof *v))) {
            rc = KNIT_ENOMEM;
            snprintf(msg, n, "out of memory");
            goto fail;
        }
        c->chain = v;
        v[c->nchain].data = certs.v[i].der; /* taken over */
        v[c->nchain].data_len = certs.v[i].len;
        certs.v[i].der = NULL;
        c->nchain++;
    }
    if (!c->nchain) {
        rc = KNIT_ETLS;
        snprintf(msg, n, "%s holds no certificate", cert_file);
        goto fail;
    }
    for (size_t i = 0; i < keys.n && !key; i++)
        if (strcmp(keys.v[i].name, "RSA PRIVATE KEY") == 0 ||
            strcmp(keys.v[i].name, "EC PRIVATE KEY") == 0 ||
            strcmp(keys.v[i].name, "PRIVATE KEY") == 0)
            key = &keys.v[i];
    if (!key) {
        int enc = 0;
        for (size_t i = 0; i < keys.n; i++)
            enc |= strcmp(keys.v[i].name, "ENCRYPTED PRIVATE KEY") == 0;
        rc = KNIT_ETLS;
        snprintf(msg, n, "%s holds no %sprivate key", key_file,
                 enc ? "unencrypted (encrypted keys are not supported) " : "");
        goto fail;
    }
    br_skey_decoder_init(&kd);
    br_skey_decoder_push(&kd, key->der, key->len);
    if (br_skey_decoder_last_error(&kd) != 0) {
        rc = KNIT_ETLS;
        snprintf(msg, n, "%s: the private key cannot be decoded (BearSSL error %d)", key_file,
                 br_skey_decoder_last_error(&kd));
        goto fail;
    }
    if ((rc = copy_key(c, &kd)) != 0) {
        snprintf(msg, n, rc == KNIT_ENOMEM ? "out of memory" : "%s: unsupported key type",
                 key_file);
        goto fail;
    }
    memset(&kd, 0, sizeof kd);
    /* The first certificate: its key (note 3) and its issuer's key type
    ** (the ECDH suites need it). */
    br_x509_decoder_init(&dc, NULL, NULL);
    br_x509_decoder_push(&dc, c->chain[0].data, c->chain[0].data_len);
    if (!(pk = br_x509_decoder_get_pkey(&dc))) {
        rc = KNIT_ETLS;
        snprintf(msg, n, "%s: the first certificate cannot be decoded (%s)", cert_file,
                 knit_tls_strerror(br_x509_decoder_last_error(&dc)));
        goto fail;
    }
    if (!key_matches(c, pk)) {
        rc = KNIT_ETLS;
        snprintf(msg, n, "the key in %s does not match the first certificate in %s", key_file,
                 cert_file);
        goto fail;
    }
    c->issuer_key_type = br_x509_decoder_get_signer_key_type(&dc);
    if (c->issuer_key_type != BR_KEYTYPE_RSA && c->issuer_key_type != BR_KEYTYPE_EC)
        c->issuer_key_type = c->key_type;
    pem_free(&certs);
    pem_free(&keys);
    *out = c;
    return 0;

fail:
    pem_free(&certs);
    pem_free(&keys);
    knit_tls_conf_unref(c);
    return rc;
}

const char *knit_tls_strerror(int err) /* see tls_conf.h */
{
    switch (err) {
    case BR_ERR_OK:
        return "no error";
    case BR_ERR_X509_NOT_TRUSTED:
        return "certificate not trusted (no chain to a trusted CA)";
    case BR_ERR_X509_EXPIRED:
        return "certificate expired or not yet valid";
    case BR_ERR_X509_BAD_SERVER_NAME:
        return "certificate is for another host name";
    case BR_ERR_X509_NOT_CA:
        return "a certificate in the chain is not a CA";
    case BR_ERR_X509_BAD_SIGNATURE:
        return "certificate signature does not verify";
    case BR_ERR_X509_WEAK_PUBLIC_KEY:
        return "certificate key too weak";
    case BR_ERR_X509_TIME_UNKNOWN:
        return "cannot check certificate dates (no clock)";
    case BR_ERR_X509_DN_MISMATCH:
        return "certificate chain out of order";
    case BR_ERR_X509_FORBIDDEN_KEY_USAGE:
        return "certificate not allowed for TLS servers (key usage)";
    case BR_ERR_X509_CRITICAL_EXTENSION:
        return "certificate has an unsupported critical extension";
    case BR_ERR_X509_EMPTY_CHAIN:
        return "the peer sent no certificate";
    case BR_ERR_X509_UNSUPPORTED:
    case BR_ERR_X509_WRONG_KEY_TYPE:
        return "certificate uses an unsupported algorithm";
    case BR_ERR_UNSUPPORTED_VERSION:
    case BR_ERR_BAD_VERSION:
        return "the peer does not speak TLS 1.2";
    case BR_ERR_BAD_LENGTH:
    case BR_ERR_TOO_LARGE:
    case BR_ERR_UNKNOWN_TYPE:
        return "the peer does not speak TLS (not a TLS record)";
    case BR_ERR_BAD_MAC:
        return "record authentication failed";
    case BR_ERR_NO_RANDOM:
        return "no entropy source";
    case BR_ERR_BAD_CIPHER_SUITE:
    case BR_ERR_BAD_HANDSHAKE:
        return "no common cipher suite or bad handshake";
    case BR_ERR_BAD_SECRENEG:
        return "renegotiation refused";
    case BR_ERR_BAD_SNI:
        return "bad server name indication";
    case BR_ERR_LIMIT_EXCEEDED:
        return "a handshake limit was exceeded";
    case BR_ERR_BAD_SIGNATURE:
        return "handshake signature does not verify";
    case BR_ERR_WRONG_KEY_USAGE:
        return "key not allowed for this use";
    default:
        break;
    }
    if (err >= BR_ERR_SEND_FATAL_ALERT && err < BR_ERR_SEND_FATAL_ALERT + 256)
        return "sent a fatal alert";
    if (err >= BR_ERR_RECV_FATAL_ALERT && err < BR_ERR_RECV_FATAL_ALERT + 256)
        return "the peer sent a fatal alert";
    if (err >= BR_ERR_X509_OK && err < BR_ERR_X509_OK + 64)
        return "malformed certificate";
    return "protocol error";
}
