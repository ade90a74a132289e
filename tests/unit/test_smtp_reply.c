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
	{"simple", "250 ok\r\n", 1, 250, "", 1, "ok", -1, NULL},
	{"banner", "220 mx.example.com ESMTP Postfix\r\n", 1, 220, "", 1,
	 "mx.example.com ESMTP Postfix", -1, NULL},
	{"esc", "550 5.1.1 <a@b>: unknown user\r\n", 1, 550, "5.1.1", 1,
	 "5.1.1 <a@b>: unknown user", -1, NULL},
	{"esc 3-digit parts", "451 4.123.456 later\r\n", 1, 451, "4.123.456", 1, NULL, -1, NULL},
	{"esc class mismatch ignored", "550 4.1.1 odd\r\n", 1, 550, "", 1, NULL, -1, NULL},
	{"esc 4-digit part ignored", "550 5.1234.1 x\r\n", 1, 550, "", 1, NULL, -1, NULL},
	{"esc glued to text ignored", "550 5.1.1x\r\n", 1, 550, "", 1, NULL, -1, NULL},
	{"esc alone", "250 2.0.0\r\n", 1, 250, "2.0.0", 1, "2.0.0", -1, NULL},
	{"code only", "250\r\n", 1, 250, "", 1, "", -1, NULL},
	{"code and space", "250 \r\n", 1, 250, "", 1, "", -1, NULL},
	{"bare LF", "250 ok\n", 1, 250, "", 1, "ok", -1, NULL},
	{"multiline", "250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 1, 250, "", 3,
	 "mx.example.com\nPIPELINING\nSIZE 1000", -1, NULL},
	{"multiline esc from first line", "550-5.7.1 no\r\n550 5.7.1 really\r\n", 1, 550, "5.7.1",
	 2, "5.7.1 no\n5.7.1 really", -1, NULL},
	{"multiline empty continuation", "250-\r\n250 x\r\n", 1, 250, "", 2, "\nx", -1, NULL},
	{"stops after first reply", "250 a\r\n251 b\r\n", 1, 250, "", 1, "a", 7, NULL},
	{"incomplete line", "250 o", 0, 0, NULL, 0, NULL, -1, NULL},
	{"incomplete multiline", "250-a\r\n250-b\r\n", 0, 0, NULL, 0, NULL, -1, NULL},
	{"empty input", "", 0, 0, NULL, 0, NULL, 0, NULL},
	{"CR only is not a line end", "250 ok\r", 0, 0, NULL, 0, NULL, -1, NULL},
	{"mixed codes", "250-a\r\n251 b\r\n", -1, 0, NULL, 0, NULL, 14, "different codes"},
	{"mixed classes", "250-a\r\n550 b\r\n", -1, 0, NULL, 0, NULL, 14, "different codes"},
	{"short line", "25\r\n", -1, 0, NULL, 0, NULL, 4, "3-digit"},
	{"empty line", "\r\n", -1, 0, NULL, 0, NULL, 2, "3-digit"},
	{"letters", "abc def\r\n", -1, 0, NULL, 0, NULL, -1, "3-digit"},
	{"two digits and letter", "25x ok\r\n", -1, 0, NULL, 0, NULL, -1, "3-digit"},
	{"1xx invalid", "150 x\r\n", -1, 0, NULL, 0, NULL, -1, "out of range"},
	{"6xx invalid", "650 x\r\n", -1, 0, NULL, 0, NULL, -1, "out of range"},
	{"second digit 6", "260 x\r\n", -1, 0, NULL, 0, NULL, -1, "out of range"},
	{"bad separator", "250_ok\r\n", -1, 0, NULL, 0, NULL, -1, "space or hyphen"},
	{"four digits", "2500 ok\r\n", -1, 0, NULL, 0, NULL, -1, "space or hyphen"},
	{"leading space", " 250 ok\r\n", -1, 0, NULL, 0, NULL, -1, "3-digit"},
	{"NUL byte", "250 o\0k\r\n", -1, 0, NULL, 0, NULL, -1, "NUL"},
	{"421 shutdown", "421 4.3.2 Service shutting down\r\n", 1, 421, "4.3.2", 1, NULL, -1, NULL},
	{"354", "354 End data with <CR><LF>.<CR><LF>\r\n", 1, 354, "", 1, NULL, -1, NULL},
	{"8-bit text kept", "250 \xc3\xa9t\xc3\xa9\r\n", 1, 250, "", 1, "\xc3\xa9t\xc3\xa9", -1, NULL},
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

struct ecase {
	const char *in;
	int pipelining, starttls, size, eightbit, esc, utf8;
	uint64_t size_max;
};

static const struct ecase ecases[] = {
	{"250-mx\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250-8BITMIME\r\n"
	 "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n", 1, 1, 1, 1, 1, 1, 10240000},
	{"250 mx only\r\n", 0, 0, 0, 0, 0, 0, 0},
	{"250-mx\r\n250-pipelining\r\n250 starttls\r\n", 1, 1, 0, 0, 0, 0, 0},
	{"250-mx\r\n250 SIZE\r\n", 0, 0, 1, 0, 0, 0, 0},
	{"250-mx\r\n250 SIZE abc\r\n", 0, 0, 0, 0, 0, 0, 0},
	{"250-mx\r\n250 SIZE 99999999999999999999999\r\n", 0, 0, 0, 0, 0, 0, 0},
	{"250-mx\r\n250 STARTTLSX\r\n", 0, 0, 0, 0, 0, 0, 0},
	/* The greeting line is not a keyword. */
	{"250-STARTTLS\r\n250 8BITMIME\r\n", 0, 0, 0, 1, 0, 0, 0},
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
