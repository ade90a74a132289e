/* TLS with OpenSSL on memory BIOs, ciphertext in and out as bytes: the
 * STARTTLS client (certificate verification against the MX name, RFC 8460
 * result types) and the server of the submission listeners. */
#ifndef STSRELAY_SMTP_TLS_H
#define STSRELAY_SMTP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "smtp/tlsa.h"

/*
 * The driver owns the socket. Per connection, after the client state machine
 * asks for the handshake (SMTP_CLIENT_EV_NEED_TLS):
 *
 *   t = smtp_tls_new(ctx, mx_host, verify, ...)
 *   loop: rc = smtp_tls_handshake(t);
 *         write out everything smtp_tls_take() gives;
 *         rc == SMTP_TLS_DONE -> smtp_client_tls_done(c, true, NULL)
 *         rc == SMTP_TLS_ERROR -> smtp_client_tls_done(c, false, reason), the
 *                                 reason from smtp_tls_result_type()/_reason()
 *         rc == SMTP_TLS_AGAIN -> wait for socket bytes, smtp_tls_feed() them
 *   then:  socket bytes -> smtp_tls_feed(); smtp_tls_read() while > 0 -> smtp_client_feed()
 *          (take() after each read(): TLS 1.3 may answer post-handshake messages)
 *          smtp_client_output() -> smtp_tls_write() of a piece whose
 *          ciphertext fits the driver's output bound; smtp_client_consume()
 *          exactly the bytes written, the rest waits in the client for the
 *          next round; smtp_tls_take() -> socket (relay/net/smtp_conn.c)
 *
 * Verification always runs, also with verify=false (opportunistic): then the
 * handshake succeeds whatever the certificate, and smtp_tls_verified() /
 * smtp_tls_result_type() still tell what a check would have said, so the log
 * can say "tls=TLSv1.3 unverified" and TLS-RPT can record it.
 *
 * Ownership: a ctx outlives every smtp_tls made from it; the strings
 * returned stay valid until smtp_tls_free(). Not thread-safe per object.
 */

struct smtp_tls_ctx;
struct smtp_tls;

/* The RFC 8460 §4.3 result types this relay produces: the outcome of one
 * TLS session, or of the MTA-STS policy discovery before it (the sts-*
 * ones). SUCCESS is "nothing failed" (RFC 8460 counts it as a successful
 * session; elsewhere it means "no result type to report"). The one enum for
 * them from here upward: connection, delivery, policy engine, TLS-RPT
 * recording; the names are made only at the edges (log lines, JSON, the
 * report, the session lines on disk). */
enum smtp_tls_result {
	SMTP_TLS_RESULT_SUCCESS = 0,
	SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED,
	SMTP_TLS_RESULT_CERTIFICATE_HOST_MISMATCH,
	SMTP_TLS_RESULT_CERTIFICATE_EXPIRED,
	SMTP_TLS_RESULT_CERTIFICATE_NOT_TRUSTED,
	SMTP_TLS_RESULT_VALIDATION_FAILURE,
	SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR,
	SMTP_TLS_RESULT_STS_POLICY_INVALID,
	SMTP_TLS_RESULT_STS_WEBPKI_INVALID,
	/* DANE (RFC 8460 §4.3.2.1): no usable TLSA record matched the chain
	 * (tlsa-invalid), the TLSA lookup failed (SERVFAIL: bogus or
	 * unreachable, dnssec-invalid), DANE demanded but no secure usable
	 * TLSA records for that MX (dane-required, tls_policy_file level dane) */
	SMTP_TLS_RESULT_TLSA_INVALID,
	SMTP_TLS_RESULT_DNSSEC_INVALID,
	SMTP_TLS_RESULT_DANE_REQUIRED,
	SMTP_TLS_RESULT_COUNT
};

/* "success", "starttls-not-supported", ..., "dane-required" (static);
 * "validation-failure" for a value out of range. */
const char *smtp_tls_result_name(enum smtp_tls_result r);
/* The inverse (exact match), for text read back from disk or a command
 * line: 0, or -1 for a name that is none of the above. */
int smtp_tls_result_parse(const char *name, enum smtp_tls_result *out)
	__attribute__((warn_unused_result));

enum { SMTP_TLS_DONE = 1, SMTP_TLS_AGAIN = 0, SMTP_TLS_ERROR = -1, SMTP_TLS_EOF = -2 };

/* TLS >= 1.2 client context. ca_file: PEM trust anchors, or NULL/"" for the
 * system default store. Keeps a small session cache keyed by MX host name
 * (only sessions whose certificate verified are kept, so resumption never
 * skips a check that a fresh handshake would make). NULL on error, with a
 * reason in err. */
struct smtp_tls_ctx *smtp_tls_ctx_new(const char *ca_file, char *err, size_t errlen);
void smtp_tls_ctx_free(struct smtp_tls_ctx *ctx);

/* One connection to MX host `host` (a trailing dot is ignored): SNI = host,
 * certificate name check against host (RFC 6125, wildcard only as the whole
 * left-most label, SAN DNS-IDs only: a certificate without one whose subject
 * CN names the host is a mismatch, RFC 8461 §4.2); a host that is an IP
 * address (an address literal recipient) gets no SNI and is checked against
 * the certificate's IP addresses. verify=true: a failed check fails the
 * handshake. */
struct smtp_tls *smtp_tls_new(struct smtp_tls_ctx *ctx, const char *host, bool verify, char *err,
			      size_t errlen);
void smtp_tls_free(struct smtp_tls *t);

/* DANE (RFC 7672 §3) for this connection, after smtp_tls_new() and before
 * the first smtp_tls_handshake(): the usable records of set become the
 * only trust, the ca_file/system store play no part. DANE-EE(3): the leaf
 * certificate or its key must match; its names and dates are not checked
 * (§3.1.1). DANE-TA(2): a certificate of the chain (or the key of its
 * issuer) must match, then the chain from it is checked as PKIX does,
 * dates included, and the leaf must name `base` (the TLSA base domain) or
 * the MX host given to smtp_tls_new (§3.2.2), SAN DNS-IDs only. The SNI
 * becomes `base` (§8.1), so a server behind a CNAME sends the chain its
 * records describe. A DANE session is never resumed nor kept for resumption (a resumed session
 * would skip a check against records that may have changed, and one kept
 * could be offered to a later non-DANE connection as "verified").
 * verify as given to smtp_tls_new: true fails the handshake on a mismatch
 * (delivery), false only records it (`sts check --probe`).
 * 0, or -1 with err (no usable record in set, OpenSSL error). */
int smtp_tls_set_dane(struct smtp_tls *t, const struct smtp_tlsa_set *set, const char *base,
		      char *err, size_t errlen);
/* smtp_tls_set_dane() succeeded for t. */
bool smtp_tls_dane(const struct smtp_tls *t);
/* After a verified DANE handshake: the record that matched, as "2 0 1 HEX..."
 * into buf and the depth it matched at (0 = the leaf); -1 when none did. */
int smtp_tls_dane_match(const struct smtp_tls *t, char *buf, size_t len);

/* Drives the handshake: SMTP_TLS_DONE, SMTP_TLS_AGAIN (needs more input
 * after sending what take() gives), or SMTP_TLS_ERROR (see result_type/reason). */
int smtp_tls_handshake(struct smtp_tls *t);

/* Ciphertext from the socket. 0, or -1 (out of memory). The memory BIO
 * grows with what is fed: feed one socket read at a time and drain it with
 * smtp_tls_handshake()/smtp_tls_read() before the next. */
int smtp_tls_feed(struct smtp_tls *t, const void *buf, size_t len);
/* Ciphertext waiting to be written, and taking it (returns bytes copied). */
size_t smtp_tls_pending(const struct smtp_tls *t);
size_t smtp_tls_take(struct smtp_tls *t, void *buf, size_t cap);

/* Application data after the handshake.
 * write: encrypts all len bytes into records waiting for take() and returns
 * len (never fewer: no partial-write mode), or -1: the stream is broken
 * (records of a part may already wait in take()), close the connection.
 * The ciphertext is about len + 1.5% long; a caller with a bounded output
 * buffer writes in pieces that fit (see relay/net/smtp_conn.c).
 * read: > 0 bytes, 0 = needs more ciphertext, SMTP_TLS_EOF = peer sent
 * close_notify, SMTP_TLS_ERROR. */
ssize_t smtp_tls_write(struct smtp_tls *t, const void *buf, size_t len)
	__attribute__((warn_unused_result));
ssize_t smtp_tls_read(struct smtp_tls *t, void *buf, size_t cap)
	__attribute__((warn_unused_result));
/* Queues a close_notify (then take() and close the socket). */
void smtp_tls_shutdown(struct smtp_tls *t);

/* After the handshake (or its failure): */
const char *smtp_tls_version(const struct smtp_tls *t); /* "TLSv1.3", NULL if none */
const char *smtp_tls_cipher(const struct smtp_tls *t);  /* NULL if none */
bool smtp_tls_verified(const struct smtp_tls *t);       /* chain + name + dates OK */
bool smtp_tls_resumed(const struct smtp_tls *t);
/* The result type when not verified or failed: CERTIFICATE_HOST_MISMATCH,
 * _EXPIRED, _NOT_TRUSTED, TLSA_INVALID (DANE: no record matched) or
 * VALIDATION_FAILURE; SUCCESS when verified (and
 * before the handshake ended). */
enum smtp_tls_result smtp_tls_result_type(const struct smtp_tls *t);
/* Human reason ("hostname mismatch", "certificate has expired", an OpenSSL
 * error for a failed handshake); "" when verified. */
const char *smtp_tls_reason(const struct smtp_tls *t);
/* The raw X509_V_* verify result (X509_V_OK = 0). */
long smtp_tls_verify_error(const struct smtp_tls *t);

/* The mapping used above, exposed for tests: X509_V_ERR_* -> result type
 * (X509_V_OK -> SUCCESS). */
enum smtp_tls_result smtp_tls_result_type_for(long x509_error);

/*
 * Server side (submission_listen STARTTLS, smtps_listen): the same
 * struct smtp_tls and the same feed/take/handshake/read/write/shutdown
 * calls as above, made by smtp_tls_accept() instead of smtp_tls_new(). No
 * client certificate is asked for: verified() is false, result_type()
 * SUCCESS, and reason() after a failed handshake holds OpenSSL's error.
 *
 * Ownership differs from the client's: a server ctx may be freed while
 * connections made from it are still open (each holds OpenSSL's own
 * reference to the certificate), which is how a reload swaps certificates
 * without dropping sessions.
 */
struct smtp_tls_server_ctx;

/* TLS >= 1.2 server context presenting cert_file (PEM: the leaf, then its
 * chain) with key_file (PEM private key), which must match it; no
 * renegotiation; the server's cipher order. Reads both files: call it off
 * the event loop once the daemon runs. NULL with a reason in err. */
struct smtp_tls_server_ctx *smtp_tls_server_ctx_new(const char *cert_file, const char *key_file,
						    char *err, size_t errlen);
void smtp_tls_server_ctx_free(struct smtp_tls_server_ctx *ctx);
/* "CN=mail.example.org, not after 2027-03-01" of the leaf, for logs. */
const char *smtp_tls_server_ctx_describe(const struct smtp_tls_server_ctx *ctx);

/* One accepted connection, waiting for the client's hello. NULL with a
 * reason in err. Freed with smtp_tls_free(). */
struct smtp_tls *smtp_tls_accept(struct smtp_tls_server_ctx *ctx, char *err, size_t errlen);

#endif
