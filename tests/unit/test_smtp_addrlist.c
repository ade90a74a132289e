/* Table tests for the RFC 5322 address-list parser (smtp/addrlist.c): each
 * case is a header value and the addresses, or the error, that come out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "smtp/addrlist.h"

#define E_QUOTE "unterminated quoted string"
#define E_ANGLE "unterminated <address>"
#define E_COMMENT "unterminated comment"
#define E_TWO "two <addresses> in one mailbox"
#define E_JUNK "text after the <address>"
#define E_EMPTY "empty address"
#define E_SPACE "not an address (spaces; display names need <address>)"
#define E_LONG "address too long"
#define E_NUL "NUL byte in an address header"

struct al_case {
	const char *in;
	size_t len;        /* 0: strlen(in) */
	const char *want;  /* addresses found (before the error, if any), '|'
	                    * between them, written "<a>" when given in <> */
	const char *why;   /* NULL: must succeed; else the exact reason */
	const char *text;  /* when non-NULL: the exact error text */
};

static const struct al_case cases[] = {
	/* RFC 5322 §3.4 forms (several from its appendix A) */
	{ "a@example.com", 0, "a@example.com", NULL, NULL },
	{ "<a@example.com>", 0, "<a@example.com>", NULL, NULL },
	{ "John Doe <jdoe@machine.example>", 0, "<jdoe@machine.example>", NULL, NULL },
	{ "\"Joe Q. Public\" <john.q.public@example.com>", 0, "<john.q.public@example.com>", NULL, NULL },
	{ "\"Doe, John\" <jdoe@example.com>, b@example.com", 0, "<jdoe@example.com>|b@example.com", NULL, NULL },
	{ "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>", 0,
	  "<mary@x.test>|jdoe@example.org|<one@y.test>", NULL, NULL },
	{ "<boss@nil.test>, \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>", 0,
	  "<boss@nil.test>|<sysservices@example.net>", NULL, NULL },
	{ "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;", 0,
	  "<c@a.test>|joe@where.test|<jdoe@one.test>", NULL, NULL },
	{ "Undisclosed recipients:;", 0, "", NULL, NULL },
	{ "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", 0, "<pete@silly.test>", NULL, NULL },
	{ "A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public.example>,\r\n"
	  "         joe@example.org,\r\n  John <jdoe@one.test> (my dear friend); (the end of the group)", 0,
	  "<c@public.example>|joe@example.org|<jdoe@one.test>", NULL, NULL },
	{ "\"john smith\"@example.com", 0, "\"john smith\"@example.com", NULL, NULL },
	{ "\"a\\\"b\"@example.com", 0, "\"a\\\"b\"@example.com", NULL, NULL },
	{ "<\"a, b\"@example.com>", 0, "<\"a, b\"@example.com>", NULL, NULL },
	{ "user@[192.0.2.1], <u@[IPv6:2001:db8::1]>", 0, "user@[192.0.2.1]|<u@[IPv6:2001:db8::1]>", NULL, NULL },
	{ "a@b.test (Alice)", 0, "a@b.test", NULL, NULL },
	{ "root", 0, "root", NULL, NULL },
	{ "a@x.test, G: b@x.test; c@x.test", 0, "a@x.test|b@x.test|c@x.test", NULL, NULL },
	{ "G: a:b@x.test;", 0, "a:b@x.test", NULL, NULL },
	{ "G1: a@x.test; G2: b@x.test;", 0, "a@x.test|b@x.test", NULL, NULL },
	{ "G: a@x.test; b@x.test;", 0, "a@x.test|b@x.test;", NULL, NULL },
	{ "\"<not@this>\" <real@x.test>", 0, "<real@x.test>", NULL, NULL },
	{ "Jos\xc3\xa9 <j@x.test>, =?UTF-8?B?w6k=?= <e@x.test>", 0, "<j@x.test>|<e@x.test>", NULL, NULL },
	/* folding whitespace */
	{ "a@example.com,\r\n\tb@example.com", 0, "a@example.com|b@example.com", NULL, NULL },
	{ "Name <a@\r\n example.com>", 0, "<a@example.com>", NULL, NULL },
	{ "John\r\n Doe <j@x.test>", 0, "<j@x.test>", NULL, NULL },
	{ "a@x.test\n", 0, "a@x.test", NULL, NULL },
	{ "", 0, "", NULL, NULL },
	{ "  \r\n \t", 0, "", NULL, NULL },
	/* obsolete forms real mailers send (RFC 5322 §4.4) */
	{ "a@x.test,,b@x.test,", 0, "a@x.test|b@x.test", NULL, NULL },
	{ ",,,", 0, "", NULL, NULL },
	{ "<@r1.test,@r2.test:u@h.test>", 0, "<u@h.test>", NULL, NULL },
	{ "John Q. Public <jqp@x.test>", 0, "<jqp@x.test>", NULL, NULL },
	{ "G: a@x.test, b@x.test", 0, "a@x.test|b@x.test", NULL, NULL },
	{ "a@x.test;b@x.test", 0, "a@x.test;b@x.test", NULL, NULL },
	{ "a . b @ example . com", 0, "", E_SPACE, "a . b @ example . com" },
	/* unbalanced quotes, brackets, comments */
	{ "\"unterminated <a@example.com>", 0, "", E_QUOTE, "\"unterminated <a@example.com>" },
	{ "\"abc\\", 0, "", E_QUOTE, NULL },
	{ "<a@x.test", 0, "", E_ANGLE, "<a@x.test" },
	{ "a@x.test (comment", 0, "", E_COMMENT, "a@x.test (comment" },
	{ "a@x.test (\\", 0, "", E_COMMENT, NULL },
	{ "a@x.test (a (b (c) d) e)", 0, "a@x.test", NULL, NULL },
	{ "a@x.test (\\) still a comment)", 0, "a@x.test", NULL, NULL },
	{ "a@x.test (a (b)", 0, "", E_COMMENT, NULL },
	{ "a@x.test )", 0, "", E_SPACE, "a@x.test )" },
	{ "a@x.test>", 0, "a@x.test>", NULL, NULL },
	{ "<a@x.test> <b@x.test>", 0, "", E_TWO, "<b@x.test>" },
	{ "A <a@example.com> <b@example.com>", 0, "", E_TWO, "<b@example.com>" },
	{ "<a@x.test> trailing", 0, "", E_JUNK, "a@x.test" },
	{ "<a@x.test>>", 0, "", E_JUNK, "a@x.test" },
	{ "<<a@x.test>>", 0, "", E_JUNK, "<a@x.test" },
	{ "<a@x.test>;", 0, "", E_JUNK, "a@x.test" },
	{ "<>", 0, "", E_EMPTY, "<>" },
	{ "<@r.test:>", 0, "", E_EMPTY, "<>" },
	{ "john smith@example.com", 0, "", E_SPACE, "john smith@example.com" },
	/* errors come in order: earlier addresses first */
	{ "a@x.test, \"unterminated", 0, "a@x.test", E_QUOTE, "a@x.test, \"unterminated" },
	{ "a@x.test, b@x.test, <c@x.test> d, e@x.test", 0, "a@x.test|b@x.test", E_JUNK, "c@x.test" },
	/* NUL bytes, anywhere */
	{ "a@x.test\0b", 10, "", E_NUL, "" },
	{ "a@x.test,\0", 10, "a@x.test", E_NUL, "" },
	{ "a (\0)", 5, "", E_NUL, "" },
	{ "\"\0\"@x.test", 10, "", E_NUL, "" },
	/* CR/LF never ends up in an address */
	{ "<a@x.test\r\n>", 0, "<a@x.test>", NULL, NULL },
	{ "\"a\r\n b\"@x.test", 0, "\"a b\"@x.test", NULL, NULL },
	{ "a\r\n@x.test", 0, "", E_SPACE, "a @x.test" },
	{ "a@x.test\r\n\r\nBcc: evil@x.test", 0, "evil@x.test", NULL, NULL },
	/* other bytes pass through unchecked: validating is the caller's job */
	{ "\x01\x7f\xff@x.test", 0, "\x01\x7f\xff@x.test", NULL, NULL },
};

/* Runs one case through addrlist_parse and renders what came out. */
static int run_case(const char *in, size_t len, char *got, size_t gotlen, struct addrlist_err *err)
{
	static struct addrlist_addr out[64];
	size_t n = 0, i, o = 0;
	int rc;

	memset(err, 0, sizeof(*err));
	rc = addrlist_parse(in, len, out, 64, &n, err);
	got[0] = '\0';
	for (i = 0; i < n; i++) {
		int w = snprintf(got + o, gotlen - o, "%s%s%s%s", i ? "|" : "", out[i].angle ? "<" : "",
				 out[i].addr, out[i].angle ? ">" : "");

		assert_true(w > 0 && (size_t)w < gotlen - o);
		o += (size_t)w;
	}
	return rc;
}

static void test_table(void **state)
{
	char got[4096];
	size_t k;

	(void)state;
	for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		const struct al_case *c = &cases[k];
		size_t len = c->len ? c->len : strlen(c->in);
		struct addrlist_err err;
		int rc = run_case(c->in, len, got, sizeof(got), &err);

		if (c->why == NULL && rc != 0)
			fail_msg("case %zu \"%s\": unexpected error %s: %s", k, c->in, err.why, err.text);
		if (c->why != NULL && rc != -1)
			fail_msg("case %zu \"%s\": accepted, wanted %s", k, c->in, c->why);
		if (c->why != NULL && strcmp(err.why, c->why) != 0)
			fail_msg("case %zu \"%s\": error \"%s\", wanted \"%s\"", k, c->in, err.why, c->why);
		if (c->text != NULL && strcmp(err.text, c->text) != 0)
			fail_msg("case %zu \"%s\": error text \"%s\", wanted \"%s\"", k, c->in, err.text,
				 c->text);
		if (strcmp(got, c->want) != 0)
			fail_msg("case %zu \"%s\": got \"%s\", wanted \"%s\"", k, c->in, got, c->want);
	}
}

/* An exact-size heap copy, so ASan catches any read past the end. */
static char *heap_copy(const char *s, size_t len)
{
	char *p = malloc(len ? len : 1);

	assert_non_null(p);
	memcpy(p, s, len);
	return p;
}

static int parse_heap(const char *s, size_t len, struct addrlist_addr *out, size_t cap, size_t *n,
		      struct addrlist_err *err)
{
	char *p = heap_copy(s, len);
	int rc = addrlist_parse(p, len, out, cap, n, err);

	free(p);
	return rc;
}

static void test_length_limit(void **state)
{
	static char buf[2048];
	struct addrlist_addr out[2];
	struct addrlist_err err;
	size_t n;

	(void)state;
	/* 511 bytes fit (with the NUL), 512 do not, bare or in <>. */
	memset(buf, 'x', 499);
	memcpy(buf + 499, "@example.com", 12);
	assert_int_equal(parse_heap(buf, 511, out, 2, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(strlen(out[0].addr), 511);
	memset(buf, 'x', 500);
	memcpy(buf + 500, "@example.com", 12);
	assert_int_equal(parse_heap(buf, 512, out, 2, &n, &err), -1);
	assert_string_equal(err.why, E_LONG);
	assert_int_equal(strlen(err.text), ADDRLIST_ERR_EXCERPT);
	buf[0] = '<';
	memset(buf + 1, 'y', 1500);
	buf[1501] = '>';
	assert_int_equal(parse_heap(buf, 1502, out, 2, &n, &err), -1);
	assert_string_equal(err.why, E_LONG);
	assert_int_equal(n, 0);
	/* A long display name is not an address and does not count. */
	memset(buf, 'N', 1500);
	memcpy(buf + 1500, " <a@x.test>", 11);
	assert_int_equal(parse_heap(buf, 1511, out, 2, &n, &err), 0);
	assert_string_equal(out[0].addr, "a@x.test");
	/* An error about a long input quotes only its start. */
	buf[0] = '"';
	memset(buf + 1, 'q', 1500);
	assert_int_equal(parse_heap(buf, 1501, out, 2, &n, &err), -1);
	assert_string_equal(err.why, E_QUOTE);
	assert_int_equal(strlen(err.text), ADDRLIST_ERR_EXCERPT);
}

static void test_ten_thousand_commas(void **state)
{
	enum { N = 10000 };
	static char buf[N * 10 + 64];
	static struct addrlist_addr out[N];
	struct addrlist_err err;
	size_t n, i, o;

	(void)state;
	memset(buf, ',', N);
	assert_int_equal(parse_heap(buf, N, out, 4, &n, &err), 0);
	assert_int_equal(n, 0);
	o = 0;
	memcpy(buf, "a@x.test", 8);
	memset(buf + 8, ',', N);
	memcpy(buf + 8 + N, "b@x.test", 8);
	assert_int_equal(parse_heap(buf, N + 16, out, 4, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(out[1].addr, "b@x.test");
	/* 10,000 addresses: all fit with room for them, else a clean error. */
	for (i = 0; i < N; i++) {
		memcpy(buf + o, "a@x.test,", 9);
		o += 9;
	}
	assert_int_equal(parse_heap(buf, o, out, N, &n, &err), 0);
	assert_int_equal(n, N);
	assert_int_equal(parse_heap(buf, o, out, 100, &n, &err), -1);
	assert_string_equal(err.why, "too many addresses");
	assert_int_equal(n, 100);
	/* 10,000 commas inside a group, a quoted string and a comment. */
	memcpy(buf, "G:", 2);
	memset(buf + 2, ',', N);
	buf[N + 2] = ';';
	assert_int_equal(parse_heap(buf, N + 3, out, 4, &n, &err), 0);
	assert_int_equal(n, 0);
	buf[0] = '"';
	memset(buf + 1, ',', N);
	memcpy(buf + 1 + N, "\"@x.test", 8);
	assert_int_equal(parse_heap(buf, N + 9, out, 4, &n, &err), -1);
	assert_string_equal(err.why, E_LONG);
	buf[0] = '(';
	buf[N + 1] = ')';
	assert_int_equal(parse_heap(buf, N + 9, out, 4, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(out[0].addr, "@x.test");
}

static void test_deep_comments(void **state)
{
	enum { N = 10000 };
	static char buf[2 * N + 16];
	struct addrlist_addr out[2];
	struct addrlist_err err;
	size_t n;

	(void)state;
	memset(buf, '(', N);
	memset(buf + N, ')', N);
	memcpy(buf + 2 * N, "a@x.test", 8);
	assert_int_equal(parse_heap(buf, 2 * N + 8, out, 2, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(out[0].addr, "a@x.test");
	assert_int_equal(parse_heap(buf, 2 * N - 1, out, 2, &n, &err), -1);
	assert_string_equal(err.why, E_COMMENT);
	memset(buf, '<', N);
	assert_int_equal(parse_heap(buf, N, out, 2, &n, &err), -1);
	assert_string_equal(err.why, E_ANGLE);
}

/* The iterator: addresses one by one, and the end or an error is sticky. */
static void test_iterator(void **state)
{
	static const char list[] = "a@x.test, G: b@x.test;, \"c\"@x.test (end)";
	struct addrlist_iter it;
	struct addrlist_addr a;
	struct addrlist_err err;

	(void)state;
	addrlist_begin(&it, list, sizeof(list) - 1);
	assert_int_equal(addrlist_next(&it, &a, &err), 1);
	assert_string_equal(a.addr, "a@x.test");
	assert_false(a.angle);
	assert_int_equal(addrlist_next(&it, &a, &err), 1);
	assert_string_equal(a.addr, "b@x.test");
	assert_int_equal(addrlist_next(&it, &a, &err), 1);
	assert_string_equal(a.addr, "\"c\"@x.test");
	assert_int_equal(addrlist_next(&it, &a, &err), 0);
	assert_int_equal(addrlist_next(&it, &a, &err), 0);

	addrlist_begin(&it, "<a@x.test>, <b", 14);
	assert_int_equal(addrlist_next(&it, &a, &err), 1);
	assert_true(a.angle);
	assert_int_equal(addrlist_next(&it, &a, &err), -1);
	assert_string_equal(err.why, E_ANGLE);
	memset(&err, 0, sizeof(err));
	assert_int_equal(addrlist_next(&it, &a, &err), -1);
	assert_string_equal(err.why, E_ANGLE);
	assert_string_equal(err.text, "<a@x.test>, <b");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_length_limit),
		cmocka_unit_test(test_ten_thousand_commas),
		cmocka_unit_test(test_deep_comments),
		cmocka_unit_test(test_iterator),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
