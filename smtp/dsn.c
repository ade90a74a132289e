/* RFC 3464 multipart/report composer: human text, machine-readable
 * delivery-status fields and the original headers, CRLF only, bounded. */
#include "smtp/dsn.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "relay/core/clock.h"
#include "relay/core/buf.h"

/* A field value for a header-like line: control characters become spaces,
 * length capped; never CR or LF. */
static void clean(char *dst, size_t dlen, const char *src)
{
	size_t o = 0;

	for (; src && *src && o + 1 < dlen && o < SMTP_DSN_FIELD_MAX; src++) {
		unsigned char c = (unsigned char)*src;

		dst[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
	}
	dst[o] = '\0';
}

/* "Name: value" folded at spaces so lines stay short (RFC 5322 §2.2.3). */
static void field(struct core_buf *b, const char *name, const char *value)
{
	size_t col = strlen(name) + 2, n = strlen(value);
	const char *v = value;

	core_buf_adds(b, name);
	core_buf_adds(b, ": ");
	while (n > 0) {
		size_t take = n, i;

		if (col + n > 78) {
			/* Break at the last space that keeps the line under 78, or
			 * the first one after (a long word stays whole). */
			size_t room = col < 78 ? 78 - col : 1, brk = 0;

			for (i = 1; i < n && (i <= room || brk == 0); i++)
				if (v[i] == ' ')
					brk = i;
			if (brk > 0)
				take = brk;
		}
		core_buf_add(b, v, take);
		v += take;
		n -= take;
		if (n > 0) {
			core_buf_adds(b, "\r\n"); /* the space stays and starts the continuation */
			col = 0;
		} else {
			col += take;
		}
	}
	core_buf_adds(b, "\r\n");
}

static bool has_crlf(const char *s)
{
	return s && strpbrk(s, "\r\n") != NULL;
}

/* Status "c.s.d" with the class forced to want ('4' or '5'). */
static void status_for(char *out, size_t len, const char *s, char want)
{
	size_t i = 0;
	int dots = 0, digits = 0;
	bool ok = s && (s[0] == '2' || s[0] == '4' || s[0] == '5') && s[1] == '.';

	for (i = 2; ok && s[i]; i++) {
		if (s[i] == '.') {
			if (digits == 0 || ++dots > 1)
				ok = false;
			digits = 0;
		} else if (s[i] >= '0' && s[i] <= '9') {
			if (++digits > 3)
				ok = false;
		} else {
			ok = false;
		}
	}
	if (!ok || dots != 1 || digits == 0) {
		snprintf(out, len, "%c.0.0", want);
		return;
	}
	snprintf(out, len, "%c%s", want, s + 1);
}

size_t smtp_dsn_header_len(const char *data, size_t len)
{
	size_t i, lim = len < SMTP_DSN_HEADERS_MAX ? len : SMTP_DSN_HEADERS_MAX;

	/* The header section ends at the first empty line. */
	if (lim >= 1 && data[0] == '\n')
		return 1;
	if (lim >= 2 && data[0] == '\r' && data[1] == '\n')
		return 2;
	for (i = 0; i + 1 < lim; i++) {
		if (data[i] != '\n')
			continue;
		if (data[i + 1] == '\n')
			return i + 2;
		if (i + 2 < lim && data[i + 1] == '\r' && data[i + 2] == '\n')
			return i + 3;
	}
	return lim;
}

/* The original headers, CRLF-normalised, cut at a line end within bounds. */
static void put_headers(struct core_buf *b, const char *h, size_t n)
{
	size_t i, start = 0, end = 0;

	if (!h)
		return;
	if (n > SMTP_DSN_HEADERS_MAX)
		n = SMTP_DSN_HEADERS_MAX;
	/* Drop the empty line that ends the section, and a cut last line. */
	for (i = 0; i < n; i++)
		if (h[i] == '\n')
			end = i + 1;
	if (end == 0)
		end = n; /* one unterminated line */
	while (start < end) {
		const char *nl = memchr(h + start, '\n', end - start);
		size_t ll = nl ? (size_t)(nl - (h + start)) : end - start;
		size_t l2 = ll;

		if (l2 > 0 && h[start + l2 - 1] == '\r')
			l2--;
		if (l2 == 0)
			break; /* the empty line ending the header section */
		for (i = 0; i < l2; i++) {
			char c = h[start + i];

			/* A stray CR or NUL would break the CRLF-only promise. */
			core_buf_add(b, (c == '\r' || c == '\0') ? " " : &h[start + i], 1);
		}
		core_buf_adds(b, "\r\n");
		start += ll + (nl ? 1 : 0);
	}
}

static bool eight_bit(const char *h, size_t n)
{
	size_t i;

	for (i = 0; h && i < n && i < SMTP_DSN_HEADERS_MAX; i++)
		if ((unsigned char)h[i] >= 0x80)
			return true;
	return false;
}

static bool any_8bit(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

static int make_token(char *out, size_t len)
{
	unsigned char r[8];
	size_t i;

	if (RAND_bytes(r, sizeof(r)) != 1 || len < 2 * sizeof(r) + 1)
		return -1;
	for (i = 0; i < sizeof(r); i++)
		snprintf(out + 2 * i, 3, "%02X", r[i]);
	return 0;
}

/* Refuses what cannot become a DSN: 0, or -1 with *err set. */
static int dsn_check(const struct smtp_dsn *d, const char **err)
{
	size_t i;

	if (!d->sender || !d->sender[0]) {
		*err = "null sender: no DSN about a bounce";
		return -1;
	}
	if (!d->reporting_mta || !d->reporting_mta[0] || d->nrcpts == 0 || !d->rcpts) {
		*err = "missing reporting MTA or recipients";
		return -1;
	}
	if (has_crlf(d->sender) || has_crlf(d->reporting_mta) || has_crlf(d->queue_id)) {
		*err = "line break in a header field";
		return -1;
	}
	for (i = 0; i < d->nrcpts; i++) {
		if (!d->rcpts[i].address || !d->rcpts[i].address[0] ||
		    has_crlf(d->rcpts[i].address) || has_crlf(d->rcpts[i].remote_mta)) {
			*err = "bad recipient in DSN";
			return -1;
		}
	}
	return 0;
}

/* 8-bit anywhere (UTF-8 addresses, replies, headers) makes the outer
 * transfer encoding 8bit too (RFC 2045 §6.4). */
static bool dsn_8bit(const struct smtp_dsn *d, size_t hlen)
{
	bool eight = eight_bit(d->headers, hlen) || any_8bit(d->sender);
	size_t i;

	for (i = 0; i < d->nrcpts; i++)
		eight = eight || any_8bit(d->rcpts[i].address) || any_8bit(d->rcpts[i].reason) ||
			any_8bit(d->rcpts[i].diagnostic) || any_8bit(d->rcpts[i].remote_mta);
	return eight;
}

/* A boundary that the included headers cannot contain: 0, or -1 with *err. */
static int make_boundary(const struct smtp_dsn *d, size_t hlen, char *boundary, size_t len,
			 const char **err)
{
	char tok[17];
	int tries;

	for (tries = 0;; tries++) {
		if (tries == 8 || make_token(tok, sizeof(tok)) < 0) {
			*err = "cannot make a MIME boundary";
			return -1;
		}
		snprintf(boundary, len, "=_stsrelay_%s_%s", d->queue_id ? d->queue_id : "", tok);
		if (!d->headers || !memmem(d->headers, hlen, boundary, strlen(boundary)))
			return 0;
	}
}

/* The message's own header section: 0, or -1 with *err. */
static int put_message_header(struct core_buf *b, const struct smtp_dsn *d, const char *boundary,
			      bool eight, const char **err)
{
	char date[40], tok[17];

	clock_rfc5322(d->now, date, sizeof(date));
	core_buf_printf(b, "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n", d->reporting_mta);
	core_buf_printf(b, "To: <%s>\r\n", d->sender);
	core_buf_printf(b, "Subject: %s\r\n",
			d->kind == SMTP_DSN_FAILURE ? "Undelivered Mail Returned to Sender"
						    : "Delayed Mail (still being retried)");
	core_buf_printf(b, "Date: %s\r\n", date);
	if (make_token(tok, sizeof(tok)) < 0) {
		*err = "random failed";
		return -1;
	}
	core_buf_printf(b, "Message-ID: <%lld.%s.%s@%s>\r\n", (long long)d->now,
			d->queue_id ? d->queue_id : "dsn", tok, d->reporting_mta);
	core_buf_adds(b, "Auto-Submitted: auto-replied\r\n");
	core_buf_adds(b, "MIME-Version: 1.0\r\n");
	core_buf_printf(b,
			"Content-Type: multipart/report; report-type=delivery-status;\r\n"
			"\tboundary=\"%s\"\r\n",
			boundary);
	core_buf_printf(b, "Content-Transfer-Encoding: %s\r\n", eight ? "8bit" : "7bit");
	core_buf_adds(b, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");
	return 0;
}

/* Part 1, for people. */
static void put_notification(struct core_buf *b, const struct smtp_dsn *d, const char *boundary,
			     bool eight)
{
	char v[SMTP_DSN_FIELD_MAX + 1];
	size_t i;

	core_buf_printf(b, "--%s\r\n", boundary);
	core_buf_printf(b,
			"Content-Description: Notification\r\n"
			"Content-Type: text/plain; charset=%s\r\n"
			"Content-Transfer-Encoding: %s\r\n\r\n",
			eight ? "utf-8" : "us-ascii", eight ? "8bit" : "7bit");
	core_buf_printf(b, "This is the mail system at host %s.\r\n\r\n", d->reporting_mta);
	if (d->kind == SMTP_DSN_FAILURE) {
		core_buf_adds(b,
			      "Your message could not be delivered to one or more recipients.\r\n"
			      "The reasons are given below; the message headers are attached.\r\n");
	} else {
		char until[40];

		core_buf_adds(
			b, "Your message has not yet been delivered to one or more recipients.\r\n"
			   "This is only a warning: no action is required on your part.\r\n");
		if (d->retry_until)
			core_buf_printf(b, "Delivery will be retried until %s.\r\n",
					clock_rfc5322(d->retry_until, until, sizeof(until)));
	}
	core_buf_adds(b, "\r\nFor help, please send mail to postmaster.\r\n\r\n");
	for (i = 0; i < d->nrcpts; i++) {
		const struct smtp_dsn_rcpt *r = &d->rcpts[i];

		clean(v, sizeof(v),
		      r->reason       ? r->reason
		      : r->diagnostic ? r->diagnostic
				      : "no reason");
		core_buf_printf(b, "<%s>: %s\r\n", r->address, v);
	}
	core_buf_adds(b, "\r\n");
}

/* One recipient's fields in part 2 (RFC 3464 §2.3). */
static void put_rcpt_status(struct core_buf *b, const struct smtp_dsn *d,
			    const struct smtp_dsn_rcpt *r)
{
	bool failure = d->kind == SMTP_DSN_FAILURE;
	char status[16], when[40];

	core_buf_adds(b, "\r\n");
	core_buf_printf(b, "Final-Recipient: rfc822; %s\r\n", r->address);
	core_buf_printf(b, "Action: %s\r\n", failure ? "failed" : "delayed");
	status_for(status, sizeof(status), r->status, failure ? '5' : '4');
	core_buf_printf(b, "Status: %s\r\n", status);
	if (r->remote_mta && r->remote_mta[0])
		core_buf_printf(b, "Remote-MTA: dns; %s\r\n", r->remote_mta);
	if (r->diagnostic && r->diagnostic[0]) {
		char v[SMTP_DSN_FIELD_MAX + 1], dv[SMTP_DSN_FIELD_MAX + 8];

		clean(v, sizeof(v), r->diagnostic);
		snprintf(dv, sizeof(dv), "smtp; %s", v);
		field(b, "Diagnostic-Code", dv);
	}
	if (r->last_attempt)
		core_buf_printf(b, "Last-Attempt-Date: %s\r\n",
				clock_rfc5322(r->last_attempt, when, sizeof(when)));
	if (!failure && d->retry_until)
		core_buf_printf(b, "Will-Retry-Until: %s\r\n",
				clock_rfc5322(d->retry_until, when, sizeof(when)));
}

/* Part 2, for programs (RFC 3464 §2.2, §2.3). */
static void put_delivery_status(struct core_buf *b, const struct smtp_dsn *d, const char *boundary)
{
	char v[SMTP_DSN_FIELD_MAX + 1], adate[40];
	size_t i;

	core_buf_printf(b, "--%s\r\n", boundary);
	core_buf_adds(b, "Content-Description: Delivery report\r\n"
			 "Content-Type: message/delivery-status\r\n\r\n");
	core_buf_printf(b, "Reporting-MTA: dns; %s\r\n", d->reporting_mta);
	if (d->queue_id)
		core_buf_printf(b, "X-Stsrelay-Queue-ID: %s\r\n", d->queue_id);
	clean(v, sizeof(v), d->sender);
	core_buf_printf(b, "X-Stsrelay-Sender: rfc822; %s\r\n", v);
	if (d->arrival)
		core_buf_printf(b, "Arrival-Date: %s\r\n",
				clock_rfc5322(d->arrival, adate, sizeof(adate)));
	for (i = 0; i < d->nrcpts; i++)
		put_rcpt_status(b, d, &d->rcpts[i]);
	core_buf_adds(b, "\r\n");
}

/* Part 3, the original headers, and the closing boundary. */
static void put_original_headers(struct core_buf *b, const struct smtp_dsn *d, size_t hlen,
				 const char *boundary)
{
	core_buf_printf(b, "--%s\r\n", boundary);
	core_buf_adds(b, "Content-Description: Undelivered Message Headers\r\n"
			 "Content-Type: text/rfc822-headers\r\n");
	if (eight_bit(d->headers, hlen))
		core_buf_adds(b, "Content-Transfer-Encoding: 8bit\r\n");
	core_buf_adds(b, "\r\n");
	put_headers(b, d->headers, hlen);
	core_buf_printf(b, "\r\n--%s--\r\n", boundary);
}

int smtp_dsn_compose(const struct smtp_dsn *d, char **out, size_t *outlen, const char **err)
{
	struct core_buf b = CORE_BUF_INIT(SMTP_DSN_MAX - 1);
	char boundary[96];
	size_t hlen = d->headers ? d->headers_len : 0;
	bool eight;

	*out = NULL;
	*outlen = 0;
	if (dsn_check(d, err) != 0)
		return -1;
	eight = dsn_8bit(d, hlen);
	if (make_boundary(d, hlen, boundary, sizeof(boundary), err) != 0)
		return -1;
	if (put_message_header(&b, d, boundary, eight, err) != 0)
		goto fail;
	put_notification(&b, d, boundary, eight);
	put_delivery_status(&b, d, boundary);
	put_original_headers(&b, d, hlen, boundary);

	*out = core_buf_take(&b, outlen); /* NULL if any append above failed */
	if (*out == NULL) {
		*err = "DSN too large or out of memory";
		goto fail;
	}
	return 0;
fail:
	core_buf_free(&b);
	return -1;
}
