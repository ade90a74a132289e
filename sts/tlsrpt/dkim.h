/* A small DKIM signer (RFC 6376) for the relay's own report mail: rsa-sha256,
 * relaxed/relaxed canonicalization, OpenSSL for the hash and the signature. */
#ifndef STSRELAY_STS_DKIM_H
#define STSRELAY_STS_DKIM_H

#include <stddef.h>
#include <stdint.h>

struct dkim_key;

/* Loads an RSA private key (PEM, PKCS#1 or PKCS#8) for d=domain, s=selector.
 * Returns 0, or -1 with err set (unreadable file, not RSA, < 1024 bits). */
int dkim_key_load(const char *key_file, const char *domain, const char *selector,
		  struct dkim_key **out, char *err, size_t errlen);
/* Same from PEM bytes in memory. */
int dkim_key_from_pem(const void *pem, size_t len, const char *domain, const char *selector,
		      struct dkim_key **out, char *err, size_t errlen);
void dkim_key_free(struct dkim_key *k);

/* Key generation for `stsrelay tlsrpt dkim-keygen`: a new RSA key of bits
 * (2048 or more). *pem: the private key as PKCS#8 PEM (malloc'd, len in
 * *pemlen, for dkim_key_load); *pub_b64: base64 of its SubjectPublicKeyInfo
 * DER, the p= tag of the DNS record (malloc'd, NUL-terminated). 0, or -1
 * with err set. */
int dkim_keygen(unsigned bits, char **pem, size_t *pemlen, char **pub_b64, char *err,
		size_t errlen);

/* The zone-file line that publishes pub_b64 (RFC 6376 §3.6.1):
 *   SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; p=..." "..."
 * the text split into quoted character-strings of at most 255 bytes (RFC
 * 1035 §3.3.14), which resolvers join back into one value. malloc'd, or
 * NULL (no memory, or a selector/domain unfit for a DNS name). */
char *dkim_txt_record(const char *selector, const char *domain, const char *pub_b64);

/* Headers signed when present (RFC 8460 §5.3 report mail). */
#define DKIM_DEFAULT_HEADERS \
	"from:to:subject:date:message-id:mime-version:content-type:tls-report-domain:tls-report-submitter"

/* Signs msg (a whole RFC 5322 message with CRLF line ends: header, empty
 * line, body). *sig is a malloc'd "DKIM-Signature: ...\r\n" header field,
 * folded to lines under 78 characters, to be put in front of the message.
 * headers: colon-separated names to sign (NULL: DKIM_DEFAULT_HEADERS); a
 * listed header the message lacks is not signed. t = signature time.
 * 0, or -1 with err set (no header/body separator, bad key, OpenSSL error). */
int dkim_sign(const struct dkim_key *k, const char *msg, size_t len, const char *headers, int64_t t,
	      char **sig, char *err, size_t errlen);

/* The canonicalizations, exposed for tests. Both return a malloc'd string
 * (NUL-terminated, length in *outlen) or NULL on no memory. */
char *dkim_canon_body_relaxed(const char *body, size_t len, size_t *outlen);
/* One header field (name ":" value, folded lines included, without the final
 * CRLF) -> "name:value" relaxed, without a CRLF. */
char *dkim_canon_header_relaxed(const char *field, size_t len, size_t *outlen);

#endif
