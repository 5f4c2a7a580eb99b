/*
** tls_int.h: what tls.c and tls_conf.c share and nobody else sees: the
** layout of a TLS configuration (tls.h).
*/
#ifndef KNIT_TLS_INT_H
#define KNIT_TLS_INT_H

#include <bearssl.h>
#include <stddef.h>

struct knit_tls_conf_s {
    size_t refs;                /* owners: the loader's caller and every stream */
    int server;                 /* 1: chain and key; 0: trust anchors */
    br_x509_trust_anchor *tas;  /* client: the trusted CAs (owned) */
    size_t ntas;                /* their count */
    br_x509_certificate *chain; /* server: own certificate first (owned) */
    size_t nchain;              /* its length */
    int key_type;               /* server: BR_KEYTYPE_RSA or BR_KEYTYPE_EC */
    unsigned issuer_key_type;   /* server: key type of the first certificate's issuer */
    br_rsa_private_key rsa;     /* server, RSA: points into keymem */
    br_ec_private_key ec;       /* server, EC: points into keymem */
    unsigned char *keymem;      /* the private key's bytes (wiped when freed) */
    size_t keylen;              /* their count */
};

#endif
