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

/* Headers signed when present (RFC 8460 §5.3 report mail). */
#define DKIM_DEFAULT_HEADERS \
	"from:to:subject:date:message-id:mime-version:content-type:tls-report-domain:tls-report-submitter"

/* Signs msg (a whole RFC 5322 message with CRLF line ends: header, empty
 * line, body). *sig is a malloc'd "DKIM-Signature: ...\r\n" header field,
 * folded to lines under 78 characters, to be put in front of the message.
 * headers: colon-separated names to sign (NULL: DKIM_DEFAULT_HEADERS); a
 * listed header the message lacks is not signed. t = signature time.
 * 0, or -1 with err set (no header/body separator, bad key, OpenSSL error). */
int dkim_sign(const struct dkim_key *k, const char *msg, size_t len, const char *headers,
	      int64_t t, char **sig, char *err, size_t errlen);

/* The canonicalizations, exposed for tests. Both return a malloc'd string
 * (NUL-terminated, length in *outlen) or NULL on no memory. */
char *dkim_canon_body_relaxed(const char *body, size_t len, size_t *outlen);
/* One header field (name ":" value, folded lines included, without the final
 * CRLF) -> "name:value" relaxed, without a CRLF. */
char *dkim_canon_header_relaxed(const char *field, size_t len, size_t *outlen);

#endif
