/*
** tls_conf.h: TLS configurations (trust anchors for a client, a certificate
** chain and key for a server), loaded from PEM files with BearSSL's own
** decoders, and BearSSL's error codes in words.  tls.h's streams hold a
** reference to one; the relay swaps its server configuration on SIGHUP.
*/
#ifndef KNIT_TLS_CONF_H
#define KNIT_TLS_CONF_H

#include <stddef.h>

#include "knit_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The system's CA bundle (Debian's ca-certificates), the default trust. */
#define KNIT_TLS_DEFAULT_CA "/etc/ssl/certs/ca-certificates.crt"

typedef struct knit_tls_conf_s knit_tls_conf_t;

/* A client configuration trusting the CA certificates in ca_file (PEM, any
** number; NULL: KNIT_TLS_DEFAULT_CA).  KNIT_EIO when the file cannot be
** read, KNIT_ETLS when it holds no usable certificate, KNIT_ENOMEM;
** msg[0..n) says why. */
KNIT_EXTERN int knit_tls_conf_client(const char *ca_file, char *msg, size_t n,
                                     knit_tls_conf_t **out /* OUT */);

/* A server configuration: the certificate chain in cert_file (PEM, the
** server's own certificate first, then its intermediates) and the private
** key in key_file (PEM: RSA or EC, raw or unencrypted PKCS#8).  The key
** must match the first certificate.  KNIT_EIO, KNIT_ETLS or KNIT_ENOMEM
** as above; msg[0..n) says why. */
KNIT_EXTERN int knit_tls_conf_server(const char *cert_file, const char *key_file, char *msg,
                                     size_t n, knit_tls_conf_t **out /* OUT */);

/* One more reference to c; returns c. */
KNIT_EXTERN knit_tls_conf_t *knit_tls_conf_ref(knit_tls_conf_t *c);
/* Drops a reference; the last one frees c.  NULL: no-op. */
KNIT_EXTERN void knit_tls_conf_unref(knit_tls_conf_t *c);
/* A short description for logs ("2 certificates, EC key" or "143 CAs"). */
KNIT_EXTERN void knit_tls_conf_describe(const knit_tls_conf_t *c, char *buf, size_t n);

/* BearSSL's error code err in words. */
KNIT_EXTERN const char *knit_tls_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
