/* Delivery status notifications (RFC 3464, RFC 3461 §6): composes the whole
 * bounce or delay message as bytes, ready to be queued with a null sender. */
#ifndef STSRELAY_SMTP_DSN_H
#define STSRELAY_SMTP_DSN_H

#include <stddef.h>
#include <stdint.h>

/* Bounds: the original header section is cut (at a line end) beyond
 * SMTP_DSN_HEADERS_MAX; each free-text field beyond SMTP_DSN_FIELD_MAX; the
 * whole message may not exceed SMTP_DSN_MAX (compose fails). */
#define SMTP_DSN_HEADERS_MAX (64 * 1024)
#define SMTP_DSN_FIELD_MAX 900
#define SMTP_DSN_MAX (8 * 1024 * 1024)

enum smtp_dsn_kind {
	SMTP_DSN_FAILURE, /* Action: failed; "Undelivered Mail Returned to Sender" */
	SMTP_DSN_DELAY,   /* Action: delayed; "Delayed Mail (still being retried)" */
};

struct smtp_dsn_rcpt {
	const char *address; /* Final-Recipient (rfc822) */
	/* Status "5.1.1". In a failure report a 4.x.y status becomes 5.x.y
	 * (queue lifetime expiry 4.4.7 -> 5.4.7, TLS 4.7.5 -> 5.7.5); in a delay
	 * report 5.x.y becomes 4.x.y. A malformed one becomes 5.0.0 / 4.0.0. */
	const char *status;
	const char *remote_mta; /* MX host name, NULL = omit Remote-MTA */
	const char *diagnostic; /* server reply "550 5.1.1 ...", NULL = omit Diagnostic-Code */
	const char *reason;     /* one line for the human part; NULL = diagnostic */
	int64_t last_attempt;   /* unix seconds, 0 = omit Last-Attempt-Date */
};

struct smtp_dsn {
	enum smtp_dsn_kind kind;
	const char *reporting_mta; /* our host name: From MAILER-DAEMON@it, Reporting-MTA */
	const char *sender;        /* original envelope sender, the report's To; not "" */
	const char *queue_id;      /* original queue id */
	int64_t arrival;           /* Arrival-Date (unix seconds) */
	int64_t now;               /* Date: of the report */
	int64_t retry_until;       /* delay reports: Will-Retry-Until, 0 = omit */
	const struct smtp_dsn_rcpt *rcpts;
	size_t nrcpts;       /* >= 1 */
	const char *headers; /* original header section (may be NULL) */
	size_t headers_len;
};

/* Builds the complete message (header + multipart/report body with a
 * text/plain part, a message/delivery-status part and a
 * text/rfc822-headers part), CRLF line ends only. *out is malloc'd and owned
 * by the caller. Returns 0, or -1 with *err a static reason (null sender:
 * no DSN about a bounce; CR/LF in a field; too big). */
int smtp_dsn_compose(const struct smtp_dsn *d, char **out, size_t *outlen, const char **err);

/* Length of the header section at the start of a message (up to and
 * including the empty line, or all of it if there is none), at most
 * SMTP_DSN_HEADERS_MAX. */
size_t smtp_dsn_header_len(const char *data, size_t len);

#endif
