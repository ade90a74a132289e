/* DSN composition: MIME structure, the RFC 3464 §2.2/§2.3 fields, CRLF-only
 * output, the original headers, status classes, bounds and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/dsn.h"

#define T0 1782000000  /* 2026-06-21 */

static const char orig[] =
	"Received: from client (localhost [127.0.0.1])\r\n"
	"\tby relay.example.org; Sun, 21 Jun 2026 00:00:00 +0000\r\n"
	"From: Alice <alice@example.org>\r\n"
	"To: bob@example.com\r\n"
	"Subject: quarterly numbers\r\n"
	"Message-ID: <orig-1@example.org>\r\n"
	"\r\n"
	"SECRET BODY LINE\r\n";

/* Every line ends in CRLF; no bare CR or LF; no line over 998 bytes. */
static void check_crlf(const char *m, size_t n)
{
	size_t i, col = 0;

	assert_true(n >= 2);
	assert_memory_equal(m + n - 2, "\r\n", 2);
	for (i = 0; i < n; i++) {
		if (m[i] == '\r') {
			assert_true(i + 1 < n && m[i + 1] == '\n');
			i++;
			col = 0;
			continue;
		}
		assert_true(m[i] != '\n');
		assert_true(m[i] != '\0');
		col++;
		assert_true(col <= 998);
	}
}

/* The header block of a message or MIME part, up to the empty line. */
static char *header_of(const char *part, const char **body)
{
	const char *end = strstr(part, "\r\n\r\n");
	char *h;

	assert_non_null(end);
	h = strndup(part, (size_t)(end - part) + 2);
	*body = end + 4;
	return h;
}

struct parsed {
	char *msg;
	size_t len;
	char *head;
	char boundary[128];
	char *parts[8];
	size_t nparts;
};

static void parse(struct parsed *p)
{
	const char *body, *b, *q;
	char delim[140], close_[140];
	size_t dl;

	check_crlf(p->msg, p->len);
	assert_int_equal(strlen(p->msg), p->len);
	p->head = header_of(p->msg, &body);
	b = strstr(p->head, "boundary=\"");
	assert_non_null(b);
	b += 10;
	q = strchr(b, '"');
	assert_non_null(q);
	assert_true((size_t)(q - b) < sizeof(p->boundary));
	memcpy(p->boundary, b, (size_t)(q - b));
	p->boundary[q - b] = '\0';
	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", p->boundary);
	snprintf(close_, sizeof(close_), "\r\n--%s--\r\n", p->boundary);
	dl = strlen(delim);
	/* Parts between delimiters; the close delimiter ends the message. */
	b = strstr(body - 2, delim);
	assert_non_null(b);
	while (b) {
		const char *start = b + dl;
		const char *next = strstr(start, delim);
		const char *cl = strstr(start, close_);

		assert_true(p->nparts < 8);
		if (!next || (cl && cl < next)) {
			assert_non_null(cl);
			p->parts[p->nparts++] = strndup(start, (size_t)(cl - start));
			/* Nothing after the close delimiter. */
			assert_int_equal(strlen(cl), strlen(close_));
			break;
		}
		p->parts[p->nparts++] = strndup(start, (size_t)(next - start));
		b = next;
	}
}

static void parsed_free(struct parsed *p)
{
	size_t i;

	free(p->msg);
	free(p->head);
	for (i = 0; i < p->nparts; i++)
		free(p->parts[i]);
}

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == '\r' && p[n + 1] == '\n')
			return true;
		p += n;
	}
	return false;
}

#define ASSERT_LINE(text, line)                                                    \
	do {                                                                       \
		if (!has_line((text), (line)))                                     \
			fail_msg("line '%s' missing in:\n%s", (line), (text));       \
	} while (0)

static void compose(const struct smtp_dsn *d, struct parsed *p)
{
	const char *err = NULL;

	memset(p, 0, sizeof(*p));
	if (smtp_dsn_compose(d, &p->msg, &p->len, &err) != 0)
		fail_msg("compose: %s", err);
	parse(p);
}

static const struct smtp_dsn_rcpt rcpts[] = {
	{"bob@example.com", "5.1.1", "mx.example.com",
	 "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
	 "host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>: Recipient address "
	 "rejected: User unknown (in reply to RCPT TO command)",
	 T0 + 3600},
	{"carol@example.net", "4.7.5", "mx.example.net", NULL,
	 "delivery temporarily suspended: TLS is required (MTA-STS enforce)", T0 + 7200},
	{"dave@example.com", "4.4.7", NULL, NULL, "queue lifetime expired", 0},
	{"erin@example.com", "garbage", NULL, NULL, NULL, 0},
};

static void base(struct smtp_dsn *d)
{
	memset(d, 0, sizeof(*d));
	d->kind = SMTP_DSN_FAILURE;
	d->reporting_mta = "relay.example.org";
	d->sender = "alice@example.org";
	d->queue_id = "4F2A9C01ABCD";
	d->arrival = T0;
	d->now = T0 + 86400;
	d->rcpts = rcpts;
	d->nrcpts = 4;
	d->headers = orig;
	d->headers_len = smtp_dsn_header_len(orig, strlen(orig));
}

static void test_failure_report(void **state)
{
	struct smtp_dsn d;
	struct parsed p;
	const char *body;
	char *h;

	(void)state;
	base(&d);
	compose(&d, &p);
	/* Message header. */
	ASSERT_LINE(p.head, "From: MAILER-DAEMON@relay.example.org (Mail Delivery System)");
	ASSERT_LINE(p.head, "To: <alice@example.org>");
	ASSERT_LINE(p.head, "Subject: Undelivered Mail Returned to Sender");
	ASSERT_LINE(p.head, "Date: Mon, 22 Jun 2026 00:00:00 +0000");
	ASSERT_LINE(p.head, "MIME-Version: 1.0");
	ASSERT_LINE(p.head, "Auto-Submitted: auto-replied");
	assert_non_null(strstr(p.head, "\r\nMessage-ID: <"));
	assert_non_null(strstr(p.head, "@relay.example.org>\r\n"));
	assert_non_null(strstr(p.head, "Content-Type: multipart/report; report-type=delivery-status;"));
	assert_int_equal(p.nparts, 3);

	/* 1: human-readable. */
	h = header_of(p.parts[0], &body);
	assert_non_null(strstr(h, "Content-Type: text/plain"));
	free(h);
	assert_non_null(strstr(body, "<bob@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1"));
	assert_non_null(strstr(body, "<dave@example.com>: queue lifetime expired"));

	/* 2: RFC 3464 fields. */
	h = header_of(p.parts[1], &body);
	ASSERT_LINE(h, "Content-Type: message/delivery-status");
	free(h);
	ASSERT_LINE(body, "Reporting-MTA: dns; relay.example.org");
	ASSERT_LINE(body, "Arrival-Date: Sun, 21 Jun 2026 00:00:00 +0000");
	ASSERT_LINE(body, "Final-Recipient: rfc822; bob@example.com");
	ASSERT_LINE(body, "Action: failed");
	ASSERT_LINE(body, "Status: 5.1.1");
	ASSERT_LINE(body, "Remote-MTA: dns; mx.example.com");
	ASSERT_LINE(body, "Last-Attempt-Date: Sun, 21 Jun 2026 01:00:00 +0000");
	/* The long diagnostic is folded, and unfolds to the reply. */
	{
		const char *dc = strstr(body, "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>:");
		const char *end;
		char *unfolded, *o;

		assert_non_null(dc);
		end = strstr(dc, "\r\nLast-Attempt-Date");
		assert_non_null(end);
		unfolded = strndup(dc, (size_t)(end - dc));
		for (o = unfolded; (o = strstr(o, "\r\n ")) != NULL;)
			memmove(o, o + 2, strlen(o + 2) + 1);
		assert_string_equal(unfolded, "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: "
					      "Recipient address rejected: User unknown");
		assert_non_null(strstr(dc, "\r\n "));  /* it was folded */
		free(unfolded);
	}
	/* 4.x.y statuses become permanent in a failure report. */
	ASSERT_LINE(body, "Final-Recipient: rfc822; carol@example.net");
	ASSERT_LINE(body, "Status: 5.7.5");
	ASSERT_LINE(body, "Status: 5.4.7");
	ASSERT_LINE(body, "Status: 5.0.0");  /* malformed "garbage" */
	assert_null(strstr(body, "Status: 4."));
	assert_null(strstr(body, "Will-Retry-Until"));
	/* Per-message block, then one block per recipient, blank-line separated. */
	{
		size_t blocks = 1;
		const char *q = body;

		while ((q = strstr(q, "\r\n\r\n")) != NULL) {
			blocks++;
			q += 4;
		}
		/* 1 per-message + 4 recipients; the part ends with one CRLF pair. */
		assert_int_equal(blocks, 1 + 4);
	}

	/* 3: the original headers, without the body. */
	h = header_of(p.parts[2], &body);
	ASSERT_LINE(h, "Content-Type: text/rfc822-headers");
	free(h);
	ASSERT_LINE(body, "Subject: quarterly numbers");
	ASSERT_LINE(body, "Message-ID: <orig-1@example.org>");
	ASSERT_LINE(body, "\tby relay.example.org; Sun, 21 Jun 2026 00:00:00 +0000");
	assert_null(strstr(p.msg, "SECRET BODY LINE"));
	/* The boundary occurs only as delimiters. */
	assert_null(strstr(p.parts[0], p.boundary));
	assert_null(strstr(p.parts[1], p.boundary));
	assert_null(strstr(p.parts[2], p.boundary));
	assert_non_null(strstr(p.head, "Content-Transfer-Encoding: 7bit"));
	parsed_free(&p);
}

static void test_delay_report(void **state)
{
	struct smtp_dsn d;
	struct parsed p;

	(void)state;
	base(&d);
	d.kind = SMTP_DSN_DELAY;
	d.retry_until = T0 + 5 * 86400;
	d.nrcpts = 1;
	d.rcpts = &rcpts[1];
	compose(&d, &p);
	ASSERT_LINE(p.head, "Subject: Delayed Mail (still being retried)");
	ASSERT_LINE(p.parts[1], "Action: delayed");
	ASSERT_LINE(p.parts[1], "Status: 4.7.5");
	ASSERT_LINE(p.parts[1], "Will-Retry-Until: Fri, 26 Jun 2026 00:00:00 +0000");
	assert_non_null(strstr(p.parts[0], "Fri, 26 Jun 2026"));
	parsed_free(&p);
}

static void test_refusals(void **state)
{
	static const struct smtp_dsn_rcpt evil = {"x@example.com\r\nBcc: y@evil", "5.0.0", NULL,
						  NULL, NULL, 0};
	struct smtp_dsn d;
	char *out = (char *)1;
	size_t len = 1;
	const char *err = NULL;

	(void)state;
	base(&d);
	d.sender = "";  /* no bounce about a bounce */
	assert_int_equal(smtp_dsn_compose(&d, &out, &len, &err), -1);
	assert_null(out);
	assert_non_null(strstr(err, "null sender"));
	base(&d);
	d.sender = "a@b\r\nBcc: evil@x";
	assert_int_equal(smtp_dsn_compose(&d, &out, &len, &err), -1);
	base(&d);
	d.rcpts = &evil;
	d.nrcpts = 1;
	assert_int_equal(smtp_dsn_compose(&d, &out, &len, &err), -1);
	base(&d);
	d.nrcpts = 0;
	assert_int_equal(smtp_dsn_compose(&d, &out, &len, &err), -1);
}

/* Hostile original headers: bare LF, bare CR, NUL, 8-bit, a fake boundary,
 * no final line end, and more than the bound. */
static void test_hostile_headers(void **state)
{
	size_t big = SMTP_DSN_HEADERS_MAX + 5000, i;
	char *h = malloc(big);
	struct smtp_dsn d;
	struct parsed p;
	const char *body;
	char *ph;
	static const char start[] = "Subject: caf\xc3\xa9\nX-A: a\rb\nX-Nul: a\0b\r\n"
				    "X-Fake: --=_stsrelay_\r\n";

	(void)state;
	memcpy(h, start, sizeof(start) - 1);
	for (i = sizeof(start) - 1; i < big; i++)
		h[i] = (i % 50 == 49) ? '\n' : 'h';
	base(&d);
	d.headers = h;
	d.headers_len = big;
	compose(&d, &p);
	ph = header_of(p.parts[2], &body);
	ASSERT_LINE(ph, "Content-Transfer-Encoding: 8bit");
	free(ph);
	assert_non_null(strstr(p.head, "Content-Transfer-Encoding: 8bit"));
	ASSERT_LINE(body, "Subject: caf\xc3\xa9");
	ASSERT_LINE(body, "X-A: a b");
	ASSERT_LINE(body, "X-Nul: a b");
	/* Cut at a line end within the bound (input bytes; every 50-byte line
	 * with a bare LF grows by one CR on output). */
	assert_true(strlen(body) <= SMTP_DSN_HEADERS_MAX * 51 / 50 + 100);
	assert_true(strlen(body) > SMTP_DSN_HEADERS_MAX - 100);
	assert_non_null(strstr(body, "hhhh\r\n"));
	assert_memory_equal(body + strlen(body) - 3, "h\r\n", 3);
	parsed_free(&p);
	free(h);

	/* One unterminated line. */
	base(&d);
	d.headers = "Subject: x";
	d.headers_len = 10;
	compose(&d, &p);
	ASSERT_LINE(p.parts[2], "Subject: x");
	parsed_free(&p);
	/* No headers at all. */
	base(&d);
	d.headers = NULL;
	compose(&d, &p);
	assert_int_equal(p.nparts, 3);
	parsed_free(&p);
}

static void test_header_len(void **state)
{
	(void)state;
	assert_int_equal(smtp_dsn_header_len(orig, strlen(orig)), strlen(orig) - 18);
	assert_int_equal(smtp_dsn_header_len("A: b\n\nbody", 10), 6);
	assert_int_equal(smtp_dsn_header_len("\r\nbody", 6), 2);
	assert_int_equal(smtp_dsn_header_len("A: b\r\n", 6), 6);
	assert_int_equal(smtp_dsn_header_len("", 0), 0);
}

static void test_many_recipients(void **state)
{
	size_t n = 500, i;
	struct smtp_dsn_rcpt *r = calloc(n, sizeof(*r));
	char (*addr)[64] = calloc(n, 64);
	struct smtp_dsn d;
	struct parsed p;
	const char *q;
	size_t count = 0;

	(void)state;
	for (i = 0; i < n; i++) {
		snprintf(addr[i], 64, "user%zu@example.com", i);
		r[i].address = addr[i];
		r[i].status = "5.1.1";
		r[i].diagnostic = "550 5.1.1 unknown";
	}
	base(&d);
	d.rcpts = r;
	d.nrcpts = n;
	compose(&d, &p);
	for (q = p.parts[1]; (q = strstr(q, "\r\nFinal-Recipient: ")) != NULL; q++)
		count++;
	assert_int_equal(count, n);
	parsed_free(&p);
	free(r);
	free(addr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_failure_report),
		cmocka_unit_test(test_delay_report),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_hostile_headers),
		cmocka_unit_test(test_header_len),
		cmocka_unit_test(test_many_recipients),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
