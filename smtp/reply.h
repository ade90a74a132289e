/* SMTP reply parsing for the client side (RFC 5321 §4.2): bytes from the
 * server in, complete (multi-line) replies out, plus EHLO capabilities. No I/O. */
#ifndef STSRELAY_SMTP_REPLY_H
#define STSRELAY_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds. RFC 5321 §4.5.3.1.5 says 512 bytes per reply line; real servers
 * send longer ones, so we allow more but never unbounded. */
#define SMTP_REPLY_LINE_MAX 2048 /* one line incl. CRLF */
#define SMTP_REPLY_MAX 65536     /* the whole reply text, all lines */
#define SMTP_REPLY_ESC_MAX 16    /* "5.123.123" + NUL fits */

/* One complete reply. text holds each line's text (after "ddd-" / "ddd ")
 * joined with '\n', NUL-terminated; the enhanced status code, when present,
 * stays in the text too (as Postfix logs it). */
struct smtp_reply {
	int code;                     /* 200..599 */
	char esc[SMTP_REPLY_ESC_MAX]; /* enhanced status code of the first line, "" if none */
	unsigned nlines;
	size_t textlen; /* strlen(text) */
	char text[SMTP_REPLY_MAX + 1];
};

/* Push parser: keeps a partial line and a partial reply between calls.
 * Owns no heap memory; it is large (about 70 KiB), so embed it in a heap
 * object or allocate it. */
struct smtp_reply_parser {
	struct smtp_reply reply; /* the reply being built / just completed */
	char line[SMTP_REPLY_LINE_MAX];
	size_t linelen;
	bool in_reply; /* some "ddd-" lines of the current reply seen */
	bool complete; /* reply holds a complete reply */
	bool failed;   /* a protocol error was reported; sticky */
};

void smtp_reply_parser_init(struct smtp_reply_parser *p);

/* Consumes bytes from buf, stopping right after the line that completes a
 * reply. Sets *used to the bytes consumed. Returns
 *    1  a reply is complete in p->reply (valid until the next call); call
 *       again with buf + *used for the rest,
 *    0  all of buf consumed, no complete reply yet,
 *   -1  protocol error, *err a static reason (bad code, mixed codes in one
 *       multi-line reply, line or reply too long, NUL byte). Sticky: every
 *       later call fails too.
 * Line ends: CRLF, or a bare LF (accepted leniently, like Postfix). */
int smtp_reply_feed(struct smtp_reply_parser *p, const char *buf, size_t len, size_t *used,
		    const char **err);

/* One-shot form for tests and fuzzing: parses the first complete reply in
 * buf into *out. Returns 1 (with *used), 0 (incomplete) or -1 (*err). */
int smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *out, size_t *used,
		     const char **err);

/* The reply as one printable line for logs and bounces, Postfix style:
 * "550 5.1.1 <a@b>: unknown user" (lines joined with a space, control
 * characters replaced by '?'). Truncated to fit; returns buf. */
char *smtp_reply_summary(const struct smtp_reply *r, char *buf, size_t len);

/* Reply class helpers: 2xx, 3xx (354), 4xx, 5xx. */
static inline bool smtp_reply_ok(const struct smtp_reply *r)
{
	return r->code / 100 == 2;
}
static inline bool smtp_reply_temp(const struct smtp_reply *r)
{
	return r->code / 100 == 4;
}
static inline bool smtp_reply_perm(const struct smtp_reply *r)
{
	return r->code / 100 == 5;
}

/* EHLO keywords we act on (RFC 5321 §4.1.1.1, RFC 1870/2920/3207/6152/2034/6531/4954). */
struct smtp_ehlo_caps {
	bool pipelining;
	bool starttls;
	bool size;         /* SIZE advertised */
	uint64_t size_max; /* its limit; 0 = no fixed limit */
	bool eightbitmime;
	bool enhancedstatuscodes;
	bool smtputf8;
	bool chunking;
	bool auth_plain; /* "AUTH ... PLAIN ..." (or the old "AUTH=PLAIN") among the mechanisms */
};

/* Fills caps from a 250 reply to EHLO: the first line is the greeting, each
 * later line "KEYWORD [params]" (case-insensitive). Unknown keywords are
 * ignored; a malformed SIZE parameter counts as no SIZE. Returns 0, or -1 if
 * r is not a 2xx reply. */
int smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo_caps *caps);

#endif
