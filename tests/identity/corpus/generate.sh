#!/usr/bin/env bash
# Regenerates the foreign keys of the hostile-input corpus with the real tools.
# They are throwaway keys made for these tests only. Not run by CI: the files are kept.
set -euo pipefail
cd "$(dirname "$0")"
rm -f ./*.pem ./*.der ./openssh-* ./*.pub
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa-pkcs8.pem
openssl genrsa -traditional -out rsa-traditional.pem 1024
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256-pkcs8.pem
openssl ecparam -genkey -name prime256v1 -noout -out p256-sec1.pem
openssl genpkey -algorithm X25519 -out x25519.pem
openssl genpkey -algorithm ED448 -out ed448.pem
openssl genpkey -algorithm ED25519 -aes-256-cbc -pass pass:corpus -out ed25519-encrypted.pem
openssl genpkey -algorithm ED25519 -outform DER -out ed25519.der
openssl pkey -inform DER -in ed25519.der -pubout -out ed25519-public.pem
ssh-keygen -q -t rsa -b 1024 -N "" -C corpus -f openssh-rsa
ssh-keygen -q -t ed25519 -N corpus -C corpus -f openssh-ed25519-encrypted
mv openssh-rsa.pub openssh-rsa-public
rm -f openssh-ed25519-encrypted.pub ed25519.der
