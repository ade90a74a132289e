/* Table tests of the SMTP reply parser and EHLO capability parser, including
 * malformed, over-long and split-across-feeds input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/reply.h"

/* Rows name their fields; a field left out is 0 or NULL. */
struct rcase {
	const char *name;
	const char *in;
	int rc;               /* 1 complete, 0 incomplete, -1 error */
	int code;
	const char *esc;
	unsigned nlines;
	const char *text;     /* NULL = don't check */
	int used;             /* -1 = whole input */
	const char *err;      /* substring of the error, for rc == -1 */
};

static const struct rcase cases[] = {
	{ .name = "simple",
	  .in = "250 ok\r\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "",
	  .nlines = 1,
	  .text = "ok",
	  .used = -1 },
	{ .name = "banner",
	  .in = "220 mx.example.com ESMTP Postfix\r\n",
	  .rc = 1,
	  .code = 220,
	  .esc = "",
	  .nlines = 1,
	  .text = "mx.example.com ESMTP Postfix",
	  .used = -1 },
	{ .name = "esc",
	  .in = "550 5.1.1 <a@b>: unknown user\r\n",
	  .rc = 1,
	  .code = 550,
	  .esc = "5.1.1",
	  .nlines = 1,
	  .text = "5.1.1 <a@b>: unknown user",
	  .used = -1 },
	{ .name = "esc 3-digit parts",
	  .in = "451 4.123.456 later\r\n",
	  .rc = 1,
	  .code = 451,
	  .esc = "4.123.456",
	  .nlines = 1,
	  .used = -1 },
	{ .name = "esc class mismatch ignored",
	  .in = "550 4.1.1 odd\r\n",
	  .rc = 1,
	  .code = 550,
	  .esc = "",
	  .nlines = 1,
	  .used = -1 },
	{ .name = "esc 4-digit part ignored",
	  .in = "550 5.1234.1 x\r\n",
	  .rc = 1,
	  .code = 550,
	  .esc = "",
	  .nlines = 1,
	  .used = -1 },
	{ .name = "esc glued to text ignored",
	  .in = "550 5.1.1x\r\n",
	  .rc = 1,
	  .code = 550,
	  .esc = "",
	  .nlines = 1,
	  .used = -1 },
	{ .name = "esc alone",
	  .in = "250 2.0.0\r\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "2.0.0",
	  .nlines = 1,
	  .text = "2.0.0",
	  .used = -1 },
	{ .name = "code only",
	  .in = "250\r\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "",
	  .nlines = 1,
	  .text = "",
	  .used = -1 },
	{ .name = "code and space",
	  .in = "250 \r\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "",
	  .nlines = 1,
	  .text = "",
	  .used = -1 },
	{ .name = "bare LF",
	  .in = "250 ok\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "",
	  .nlines = 1,
	  .text = "ok",
	  .used = -1 },
	{ .name = "multiline",
	  .in = "250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "",
	  .nlines = 3,
	  .text = "mx.example.com\nPIPELINING\nSIZE 1000",
	  .used = -1 },
	{ .name = "multiline esc from first line",
	  .in = "550-5.7.1 no\r\n550 5.7.1 really\r\n",
	  .rc = 1,
	  .code = 550,
	  .esc = "5.7.1",
	  .nlines = 2,
	  .text = "5.7.1 no\n5.7.1 really",
	  .used = -1 },
	{ .name = "multiline empty continuation",
	  .in = "250-\r\n250 x\r\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "",
	  .nlines = 2,
	  .text = "\nx",
	  .used = -1 },
	{ .name = "stops after first reply",
	  .in = "250 a\r\n251 b\r\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "",
	  .nlines = 1,
	  .text = "a",
	  .used = 7 },
	{ .name = "incomplete line", .in = "250 o", .used = -1 },
	{ .name = "incomplete multiline", .in = "250-a\r\n250-b\r\n", .used = -1 },
	{ .name = "empty input", .in = "" },
	{ .name = "CR only is not a line end", .in = "250 ok\r", .used = -1 },
	{ .name = "mixed codes",
	  .in = "250-a\r\n251 b\r\n",
	  .rc = -1,
	  .used = 14,
	  .err = "different codes" },
	{ .name = "mixed classes",
	  .in = "250-a\r\n550 b\r\n",
	  .rc = -1,
	  .used = 14,
	  .err = "different codes" },
	{ .name = "short line", .in = "25\r\n", .rc = -1, .used = 4, .err = "3-digit" },
	{ .name = "empty line", .in = "\r\n", .rc = -1, .used = 2, .err = "3-digit" },
	{ .name = "letters", .in = "abc def\r\n", .rc = -1, .used = -1, .err = "3-digit" },
	{ .name = "two digits and letter",
	  .in = "25x ok\r\n",
	  .rc = -1,
	  .used = -1,
	  .err = "3-digit" },
	{ .name = "1xx invalid", .in = "150 x\r\n", .rc = -1, .used = -1, .err = "out of range" },
	{ .name = "6xx invalid", .in = "650 x\r\n", .rc = -1, .used = -1, .err = "out of range" },
	{ .name = "second digit 6",
	  .in = "260 x\r\n",
	  .rc = -1,
	  .used = -1,
	  .err = "out of range" },
	{ .name = "bad separator",
	  .in = "250_ok\r\n",
	  .rc = -1,
	  .used = -1,
	  .err = "space or hyphen" },
	{ .name = "four digits",
	  .in = "2500 ok\r\n",
	  .rc = -1,
	  .used = -1,
	  .err = "space or hyphen" },
	{ .name = "leading space", .in = " 250 ok\r\n", .rc = -1, .used = -1, .err = "3-digit" },
	{ .name = "NUL byte", .in = "250 o\0k\r\n", .rc = -1, .used = -1, .err = "NUL" },
	{ .name = "421 shutdown",
	  .in = "421 4.3.2 Service shutting down\r\n",
	  .rc = 1,
	  .code = 421,
	  .esc = "4.3.2",
	  .nlines = 1,
	  .used = -1 },
	{ .name = "354",
	  .in = "354 End data with <CR><LF>.<CR><LF>\r\n",
	  .rc = 1,
	  .code = 354,
	  .esc = "",
	  .nlines = 1,
	  .used = -1 },
	{ .name = "8-bit text kept",
	  .in = "250 \xc3\xa9t\xc3\xa9\r\n",
	  .rc = 1,
	  .code = 250,
	  .esc = "",
	  .nlines = 1,
	  .text = "\xc3\xa9t\xc3\xa9",
	  .used = -1 },
};

static void run_case(const struct rcase *c, size_t inlen)
{
	struct smtp_reply *r = calloc(1, sizeof(*r));
	const char *err = NULL;
	size_t used = 12345;
	int rc;

	assert_non_null(r);
	rc = smtp_reply_parse(c->in, inlen, r, &used, &err);
	if (rc != c->rc)
		fail_msg("%s: rc %d, expected %d (err %s)", c->name, rc, c->rc, err ? err : "-");
	if (c->used >= 0)
		assert_int_equal(used, (size_t)c->used);
	else
		assert_int_equal(used, inlen);
	if (rc == 1) {
		assert_int_equal(r->code, c->code);
		assert_string_equal(r->esc, c->esc);
		assert_int_equal(r->nlines, c->nlines);
		assert_int_equal(r->textlen, strlen(r->text));
		if (c->text)
			assert_string_equal(r->text, c->text);
	}
	if (rc == -1) {
		assert_non_null(err);
		if (!strstr(err, c->err))
			fail_msg("%s: error '%s' lacks '%s'", c->name, err, c->err);
	}
	free(r);
}

static void test_table(void **state)
{
	size_t i;

	(void)state;
	assert_true(sizeof(cases) / sizeof(cases[0]) >= 30);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* The NUL case has an embedded NUL: its length is explicit. */
		size_t n = strcmp(cases[i].name, "NUL byte") == 0 ? 9 : strlen(cases[i].in);

		run_case(&cases[i], n);
	}
}

/* Byte-by-byte feeding gives the same replies as one big feed. */
static void test_split_feed(void **state)
{
	static const char in[] = "220-mx greets\r\n220 second\r\n250-a\r\n250-PIPELINING\r\n250 b\r\n"
				 "354 go\r\n";
	struct smtp_reply_parser *p = malloc(sizeof(*p));
	const char *err = NULL;
	int codes[8], n = 0;
	size_t i;

	(void)state;
	assert_non_null(p);
	smtp_reply_parser_init(p);
	for (i = 0; i < sizeof(in) - 1; i++) {
		size_t used = 0;
		int rc = smtp_reply_feed(p, in + i, 1, &used, &err);

		assert_int_not_equal(rc, -1);
		assert_int_equal(used, 1);
		if (rc == 1) {
			assert_true(n < 8);
			codes[n++] = p->reply.code;
			if (p->reply.code == 220)
				assert_string_equal(p->reply.text, "mx greets\nsecond");
		}
	}
	assert_int_equal(n, 3);
	assert_int_equal(codes[0], 220);
	assert_int_equal(codes[1], 250);
	assert_int_equal(codes[2], 354);
	free(p);
}

/* A feed holding several replies yields them one per call. */
static void test_multi_in_one_feed(void **state)
{
	static const char in[] = "250 a\r\n550 5.1.1 b\r\n354 c\r\n";
	struct smtp_reply_parser *p = malloc(sizeof(*p));
	const char *err = NULL, *b = in;
	size_t len = sizeof(in) - 1, used;
	int expect[] = {250, 550, 354}, k;

	(void)state;
	smtp_reply_parser_init(p);
	for (k = 0; k < 3; k++) {
		assert_int_equal(smtp_reply_feed(p, b, len, &used, &err), 1);
		assert_int_equal(p->reply.code, expect[k]);
		b += used;
		len -= used;
	}
	assert_int_equal(len, 0);
	assert_string_equal(p->reply.text, "c");
	free(p);
}

static void test_line_too_long(void **state)
{
	char *in = malloc(SMTP_REPLY_LINE_MAX + 10);
	struct smtp_reply *r = malloc(sizeof(*r));
	const char *err = NULL;
	size_t used;

	(void)state;
	/* Exactly at the limit (incl. CRLF) is accepted... */
	memcpy(in, "250 ", 4);
	memset(in + 4, 'x', SMTP_REPLY_LINE_MAX - 6);
	memcpy(in + SMTP_REPLY_LINE_MAX - 2, "\r\n", 2);
	assert_int_equal(smtp_reply_parse(in, SMTP_REPLY_LINE_MAX, r, &used, &err), 1);
	/* ...one byte more is not, even before the line end arrives. */
	memset(in + 4, 'x', SMTP_REPLY_LINE_MAX - 4);
	assert_int_equal(smtp_reply_parse(in, SMTP_REPLY_LINE_MAX, r, &used, &err), -1);
	assert_non_null(strstr(err, "too long"));
	free(in);
	free(r);
}

static void test_reply_too_long(void **state)
{
	/* 100-byte lines carry 94 bytes of text + a '\n' separator each:
	 * SMTP_REPLY_MAX / 95 + 2 of them overflow the reply. */
	size_t nlines = SMTP_REPLY_MAX / 95 + 2, i;
	char *in = malloc(nlines * 100 + 1);
	struct smtp_reply_parser *p = malloc(sizeof(*p));
	const char *err = NULL;
	size_t used;
	int rc;

	(void)state;
	for (i = 0; i < nlines; i++) {
		char *l = in + i * 100;

		memcpy(l, "250-", 4);
		memset(l + 4, 'y', 94);
		memcpy(l + 98, "\r\n", 2);
	}
	/* Control: a little fewer lines, the last one final, is one good reply. */
	in[(nlines - 5) * 100 + 3] = ' ';
	smtp_reply_parser_init(p);
	rc = smtp_reply_feed(p, in, (nlines - 4) * 100, &used, &err);
	assert_int_equal(rc, 1);
	assert_int_equal(p->reply.nlines, nlines - 4);
	in[(nlines - 5) * 100 + 3] = '-';
	smtp_reply_parser_init(p);
	rc = smtp_reply_feed(p, in, nlines * 100, &used, &err);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err, "reply too long"));
	/* Sticky: the stream is unusable afterwards. */
	assert_int_equal(smtp_reply_feed(p, "250 ok\r\n", 8, &used, &err), -1);
	free(in);
	free(p);
}

static void test_summary(void **state)
{
	struct smtp_reply *r = malloc(sizeof(*r));
	const char *err;
	size_t used;
	char buf[64], tiny[8];

	(void)state;
	assert_int_equal(smtp_reply_parse("550-5.1.1 no such\r\n550 5.1.1 user\x01\r\n", 36, r,
					  &used, &err), 1);
	assert_string_equal(smtp_reply_summary(r, buf, sizeof(buf)),
			    "550 5.1.1 no such 5.1.1 user?");
	smtp_reply_summary(r, tiny, sizeof(tiny));
	assert_string_equal(tiny, "550 5.1");
	free(r);
}

/* Rows name their fields; a field left out is 0 or NULL. */
struct ecase {
	const char *in;
	int pipelining, starttls, size, eightbit, esc, utf8, auth_plain;
	uint64_t size_max;
};

static const struct ecase ecases[] = {
	{ .in = "250-mx\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250-8BITMIME\r\n"
		"250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n",
	  .pipelining = 1,
	  .starttls = 1,
	  .size = 1,
	  .eightbit = 1,
	  .esc = 1,
	  .utf8 = 1,
	  .size_max = 10240000 },
	{ .in = "250 mx only\r\n" },
	{ .in = "250-mx\r\n250-pipelining\r\n250 starttls\r\n", .pipelining = 1, .starttls = 1 },
	{ .in = "250-mx\r\n250 SIZE\r\n", .size = 1 },
	{ .in = "250-mx\r\n250 SIZE abc\r\n" },
	{ .in = "250-mx\r\n250 SIZE 99999999999999999999999\r\n" },
	{ .in = "250-mx\r\n250 STARTTLSX\r\n" },
	/* The greeting line is not a keyword. */
	{ .in = "250-STARTTLS\r\n250 8BITMIME\r\n", .eightbit = 1 },
	/* AUTH (RFC 4954): PLAIN among the mechanisms, any case, either spelling */
	{ .in = "250-mx\r\n250 AUTH PLAIN LOGIN\r\n", .auth_plain = 1 },
	{ .in = "250-mx\r\n250 AUTH LOGIN plain\r\n", .auth_plain = 1 },
	{ .in = "250-mx\r\n250-AUTH=PLAIN LOGIN\r\n250 PIPELINING\r\n", .auth_plain = 1,
	  .pipelining = 1 },
	{ .in = "250-mx\r\n250 AUTH LOGIN CRAM-MD5\r\n" },
	{ .in = "250-mx\r\n250 AUTH PLAINX XPLAIN\r\n" },
	{ .in = "250-mx\r\n250 AUTH\r\n" },
	{ .in = "250-mx\r\n250 AUTHPLAIN\r\n" },
	{ .in = "250-AUTH PLAIN\r\n250 8BITMIME\r\n", .eightbit = 1 },
};

static void test_ehlo(void **state)
{
	struct smtp_reply *r = malloc(sizeof(*r));
	struct smtp_ehlo_caps caps;
	const char *err;
	size_t used, i;

	(void)state;
	for (i = 0; i < sizeof(ecases) / sizeof(ecases[0]); i++) {
		const struct ecase *e = &ecases[i];

		assert_int_equal(smtp_reply_parse(e->in, strlen(e->in), r, &used, &err), 1);
		assert_int_equal(smtp_ehlo_parse(r, &caps), 0);
		assert_int_equal(caps.pipelining, e->pipelining);
		assert_int_equal(caps.starttls, e->starttls);
		assert_int_equal(caps.size, e->size);
		assert_int_equal(caps.size_max, e->size_max);
		assert_int_equal(caps.eightbitmime, e->eightbit);
		assert_int_equal(caps.enhancedstatuscodes, e->esc);
		assert_int_equal(caps.smtputf8, e->utf8);
		if (caps.auth_plain != (e->auth_plain != 0))
			fail_msg("ecase %zu: auth_plain %d", i, caps.auth_plain);
	}
	assert_int_equal(smtp_reply_parse("550 no\r\n", 8, r, &used, &err), 1);
	assert_int_equal(smtp_ehlo_parse(r, &caps), -1);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_split_feed),
		cmocka_unit_test(test_multi_in_one_feed),
		cmocka_unit_test(test_line_too_long),
		cmocka_unit_test(test_reply_too_long),
		cmocka_unit_test(test_summary),
		cmocka_unit_test(test_ehlo),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
