#!/bin/sh
# tls_certs.sh DIR: makes the certificates the TLS tests use, with the
# openssl command-line tool, in DIR (which must exist):
#
#   ca.pem               the test CA (RSA), the one the clients trust
#   inter.pem            an intermediate CA signed by ca
#   chain.pem, rsa.key   relay certificate for localhost/127.0.0.1 (RSA),
#                        signed by inter, followed by inter: a chain
#   ec.pem, ec.key       relay certificate (EC P-256 key), signed by ca
#   expired.pem/.key     for localhost, signed by ca, valid 2020-2021 only
#   wrongname.pem/.key   signed by ca, for other.example only
#   untrusted.pem/.key   for localhost, signed by a CA nobody trusts
#   reload.pem/.key      another valid certificate (CN "knit reloaded")
set -eu
d=$1
cd "$d"
cat >ext.cnf <<'X'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[other]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.example
X
q() { "$@" >/dev/null 2>&1; }
rsa() { q openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"; }
# sign NAME ISSUER SECTION SUBJECT KEY
sign() {
    q openssl req -new -key "$5" -subj "$4" -out "$1.csr"
    q openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
        -days 30 -extfile ext.cnf -extensions "$3" -out "$1.pem"
}

rsa ca.key
q openssl req -x509 -new -key ca.key -subj "/CN=knit test CA" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem
rsa inter.key
sign inter ca ca "/CN=knit test intermediate" inter.key
rsa rsa.key
sign rsa inter leaf "/CN=knit relay" rsa.key
cat rsa.pem inter.pem >chain.pem

q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key
sign ec ca leaf "/CN=knit relay ec" ec.key

rsa wrongname.key
sign wrongname ca other "/CN=other.example" wrongname.key

rsa reload.key
sign reload ca leaf "/CN=knit reloaded" reload.key

rsa rogue.key
q openssl req -x509 -new -key rogue.key -subj "/CN=rogue CA" -days 30 -out rogue.pem
rsa untrusted.key
sign untrusted rogue leaf "/CN=knit relay" untrusted.key

# Expired: `openssl ca` sets the dates exactly (x509 -req cannot in 3.0).
rsa expired.key
q openssl req -new -key expired.key -subj "/CN=knit relay" -out expired.csr
mkdir -p caroot
: >caroot/index.txt
echo 01 >caroot/serial
cat >caroot/ca.cnf <<X
[ca]
default_ca = test
[test]
dir = $PWD/caroot
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
X
q openssl ca -batch -config caroot/ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
    -startdate 20200101000000Z -enddate 20210101000000Z -extensions leaf -notext \
    -out expired.pem
echo ok
