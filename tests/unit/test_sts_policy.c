/* Table tests for the MTA-STS policy parser (RFC 8461 §3.2), incl. the
 * bodies served by the postfix-mta-sts-resolver nginx fixture. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sts/policy.h"

#define S(x) x, sizeof(x) - 1
#define OK 1
#define ERR 0
#define L63 "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123"

struct pcase {
	const char *body;
	size_t len;
	int ok;
	enum sts_policy_mode mode;
	uint32_t max_age;
	const char *mx;         /* patterns joined by ",", "" for none */
	size_t err_line;        /* checked when non-zero */
};

#define HEAD "version: STSv1\nmode: enforce\n"
#define TAIL "max_age: 86400\n"

static const struct pcase cases[] = {
	/* fixture good.loc */
	{ S("version: STSv1\nmode: enforce\nmx: mail.loc\nmax_age: 86400"),
	  OK, STS_MODE_ENFORCE, 86400, "mail.loc", 0 },
	{ S("garbage"), ERR, 0, 0, NULL, 1 },                      /* bad-policy1 */
	{ S("version: STSv1\nmode: enforce\nmax_age: 86400"), ERR, 0, 0, NULL, 0 },
	{ S("version: STSv1\nmode: enforce\nmx: mail.loc\nmax_age: xxx"), ERR, 0, 0, NULL, 4 },
	/* RFC 8461 §3.2 caps max_age at 31557600: a larger value is clamped (the
	 * policy stays in force), only a malformed one is an error */
	{ S("version: STSv1\nmode: enforce\nmx: mail.loc\nmax_age: 31557601"),
	  OK, STS_MODE_ENFORCE, 31557600, "mail.loc", 0 },
	{ S("version: STSv1\nmode: enforce\nmx: mail.loc\nmax_age: 63072000"),
	  OK, STS_MODE_ENFORCE, 31557600, "mail.loc", 0 },
	{ S("version: STSv1\nmx: mail.loc\nmax_age: 86400"), ERR, 0, 0, NULL, 0 },
	{ S("version: STSv1\nmode: doubt\nmx: mail.loc\nmax_age: 86400"), ERR, 0, 0, NULL, 2 },
	{ S("version: STSv1\nmode: none\nmax_age: 86400"), OK, STS_MODE_NONE, 86400, "", 0 },
	{ S("version: STSv1\nmode: testing\nmax_age: 86400\nmx: mail.loc\n"),
	  OK, STS_MODE_TESTING, 86400, "mail.loc", 0 },
	{ S("version: STSv1\nmode: enforce\nmax_age: 1\nmx: mail.loc\n"),
	  OK, STS_MODE_ENFORCE, 1, "mail.loc", 0 },
	/* CRLF, LF, mixed, bare CR */
	{ S("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\n"
	    "mx: *.example.net\r\nmax_age: 604800\r\n"),
	  OK, STS_MODE_ENFORCE, 604800, "mx1.example.com,*.example.net", 0 },
	{ S("version: STSv1\r\nmode: testing\nmx: a.example\r\nmax_age: 5"),
	  OK, STS_MODE_TESTING, 5, "a.example", 0 },
	{ S("version: STSv1\rmode: enforce\nmx: a.example\nmax_age: 5"), ERR, 0, 0, NULL, 1 },
	{ S(HEAD "mx: a.example\nmax_age: 5\r"), ERR, 0, 0, NULL, 4 },
	/* whitespace */
	{ S("version: STSv1  \nmode: enforce\t\nmx: a.example.com \nmax_age: 86400   "),
	  OK, STS_MODE_ENFORCE, 86400, "a.example.com", 0 },
	{ S("version:STSv1\nmode:testing\nmx:a.example\nmax_age:1"),
	  OK, STS_MODE_TESTING, 1, "a.example", 0 },
	{ S("version: STSv1\nmode : enforce\nmx:\ta.example\nmax_age:\t\t86400"),
	  OK, STS_MODE_ENFORCE, 86400, "a.example", 0 },
	{ S("  version: STSv1\n\tmode: enforce\nmx: a.example\nmax_age: 7"),
	  OK, STS_MODE_ENFORCE, 7, "a.example", 0 },
	{ S("\nversion: STSv1\n\n  \nmode: enforce\r\n\r\nmx: a.example\nmax_age: 7\n\n\n"),
	  OK, STS_MODE_ENFORCE, 7, "a.example", 0 },
	/* max_age bounds and syntax */
	{ S(HEAD "mx: a.example\nmax_age: 31557600"), OK, STS_MODE_ENFORCE, 31557600, "a.example", 0 },
	{ S(HEAD "mx: a.example\nmax_age: 0"), OK, STS_MODE_ENFORCE, 0, "a.example", 0 },
	{ S(HEAD "mx: a.example\nmax_age: 0000086400"), OK, STS_MODE_ENFORCE, 86400, "a.example", 0 },
	{ S(HEAD "mx: a.example\nmax_age: 00000086400"), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nmax_age: 9999999999"), OK, STS_MODE_ENFORCE, 31557600, "a.example", 0 },
	{ S(HEAD "mx: a.example\nmax_age: 4294967296"), OK, STS_MODE_ENFORCE, 31557600, "a.example", 0 },
	{ S(HEAD "mx: a.example\nmax_age: 99999999999999999999"), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nmax_age: -1"), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nmax_age: +1"), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nmax_age: 1e5"), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nmax_age:"), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nmax_age: 86400 s"), ERR, 0, 0, NULL, 4 },
	/* repeated fields: the first wins, later copies are not even checked */
	{ S("version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\n" TAIL),
	  OK, STS_MODE_TESTING, 86400, "a.example", 0 },
	{ S("version: STSv1\nmode: enforce\nmode: bogus\nmx: a.example\n" TAIL),
	  OK, STS_MODE_ENFORCE, 86400, "a.example", 0 },
	{ S("version: STSv1\nmode: bogus\nmode: enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 2 },
	{ S(HEAD "mx: a.example\nmax_age: 10\nmax_age: 20\nmax_age: x"),
	  OK, STS_MODE_ENFORCE, 10, "a.example", 0 },
	{ S(HEAD "version: STSv2\nmx: a.example\n" TAIL), OK, STS_MODE_ENFORCE, 86400, "a.example", 0 },
	{ S(HEAD "mx: a.example\nmx: b.example\nmx: A.EXAMPLE.\n" TAIL),
	  OK, STS_MODE_ENFORCE, 86400, "a.example,b.example", 0 },
	/* case: keys and values are case-sensitive (RFC 7405 %s) */
	{ S("version: STSv1\nmode: Enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 2 },
	{ S("version: STSv1\nmode: ENFORCE\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 2 },
	{ S("version: STSv1\nMode: enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 0 },
	{ S("version: stsv1\nmode: enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 1 },
	{ S("Version: STSv1\nmode: enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 0 },
	{ S("version: STSv2\nmode: enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 1 },
	/* required fields */
	{ S("mode: enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 0 },
	{ S("version: STSv1\n"), ERR, 0, 0, NULL, 0 },
	{ S(""), ERR, 0, 0, NULL, 0 },
	{ S("\n\r\n  \n"), ERR, 0, 0, NULL, 0 },
	{ S(HEAD "mx: a.example\n"), ERR, 0, 0, NULL, 0 },
	{ S("version: STSv1\nmode: testing\n" TAIL), ERR, 0, 0, NULL, 0 },
	/* mode none: mx optional, but checked and kept when present */
	{ S("version: STSv1\nmode: none\nmx: a.example\n" TAIL), OK, STS_MODE_NONE, 86400, "a.example", 0 },
	{ S("version: STSv1\nmode: none\nmx: 10.0.0.1\n" TAIL), OK, STS_MODE_NONE, 86400, "10.0.0.1", 0 },
	/* field order is free */
	{ S("max_age: 3600\nmx: *.a.example\nmode: testing\nversion: STSv1"),
	  OK, STS_MODE_TESTING, 3600, "*.a.example", 0 },
	/* mx pattern syntax */
	/* all-digit labels are RFC 5321 sub-domains: the policy is kept (the
	 * pattern never matches a host name, see test_sts_mx_match.c) */
	{ S(HEAD "mx: 192.0.2.1\n" TAIL), OK, STS_MODE_ENFORCE, 86400, "192.0.2.1", 0 },
	{ S(HEAD "mx: 212.114.86.56\nmx: mail.example.com\n" TAIL),
	  OK, STS_MODE_ENFORCE, 86400, "212.114.86.56,mail.example.com", 0 },
	{ S(HEAD "mx: *.1.2.3\n" TAIL), OK, STS_MODE_ENFORCE, 86400, "*.1.2.3", 0 },
	{ S(HEAD "mx: 192.0.2.1.\n" TAIL), OK, STS_MODE_ENFORCE, 86400, "192.0.2.1", 0 },
	{ S(HEAD "mx: 192.0.2..1\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: 192.0.2.1:25\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: [192.0.2.1]\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: 2001:db8::1\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: mail.*.example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: *example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: *.*.example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: *\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: *.\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: MX1.Example.COM.\n" TAIL), OK, STS_MODE_ENFORCE, 86400, "mx1.example.com", 0 },
	{ S(HEAD "mx: *.Example.COM\n" TAIL), OK, STS_MODE_ENFORCE, 86400, "*.example.com", 0 },
	{ S(HEAD "mx: -a.example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: a-.example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: " L63 ".example.com\n" TAIL), OK, STS_MODE_ENFORCE, 86400, L63 ".example.com", 0 },
	{ S(HEAD "mx: " L63 "4.example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: mx_1.example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx:\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: a..example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: .example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: a.example.com b.example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: m\xc3\xa4il.example.com\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: xn--mil-moa.example.com\n" TAIL), OK, STS_MODE_ENFORCE, 86400, "xn--mil-moa.example.com", 0 },
	{ S(HEAD "mx: localhost\n" TAIL), OK, STS_MODE_ENFORCE, 86400, "localhost", 0 },
	/* unknown fields: ignored, but must be well-formed */
	{ S(HEAD "mx: a.example\nfoo_bar-1.x: anything = ; goes\n" TAIL),
	  OK, STS_MODE_ENFORCE, 86400, "a.example", 0 },
	{ S(HEAD "mx: a.example\ncomment: h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93\n" TAIL),
	  OK, STS_MODE_ENFORCE, 86400, "a.example", 0 },
	{ S(HEAD "mx: a.example\nfoo:\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nfoo: a\tb\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nabcdefghijklmnopqrstuvwxyz012345: x\n" TAIL),
	  OK, STS_MODE_ENFORCE, 86400, "a.example", 0 },
	{ S(HEAD "mx: a.example\nabcdefghijklmnopqrstuvwxyz0123456: x\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\n_foo: x\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\n# comment\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\njust words\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx= a.example\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mode enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 3 },
	/* bytes: NUL, controls, invalid UTF-8, BOM */
	{ S(HEAD "mx: a.example\n" TAIL "\0"), ERR, 0, 0, NULL, 5 },
	{ S(HEAD "mx: a.ex\0ample\n" TAIL), ERR, 0, 0, NULL, 3 },
	{ S(HEAD "mx: a.example\nx: \x01\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nx: \x7f\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nx: \xff\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nx: \xc0\xaf\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nx: \xed\xa0\x80\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S(HEAD "mx: a.example\nx: \xe2\x9c\n" TAIL), ERR, 0, 0, NULL, 4 },
	{ S("\xef\xbb\xbfversion: STSv1\nmode: enforce\nmx: a.example\n" TAIL), ERR, 0, 0, NULL, 1 },
};

static void join_mx(const struct sts_policy *p, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < p->mx_count; i++) {
		int n = snprintf(buf + used, size - used, "%s%s", i ? "," : "",
				 sts_policy_mx(p, i));
		assert_true(n >= 0 && (size_t)n < size - used);
		used += (size_t)n;
	}
}

static void test_table(void **state)
{
	(void)state;
	static struct sts_policy p;
	char mx[2048];
	int failures = 0;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct pcase *c = &cases[i];
		struct sts_policy_err err;
		int rc = sts_policy_parse(c->body, c->len, &p, &err);
		int good;
		if (c->ok) {
			join_mx(&p, mx, sizeof mx);
			good = rc == 0 && err.reason == NULL && p.mode == c->mode &&
			       p.max_age == c->max_age && strcmp(mx, c->mx) == 0;
		} else {
			mx[0] = '\0';
			good = rc == -1 && err.reason != NULL && p.mx_count == 0 &&
			       (c->err_line == 0 || err.line == c->err_line);
		}
		if (!good) {
			print_error("case %zu: rc=%d reason=%s line=%zu mode=%s "
				    "max_age=%u mx=\"%s\"\n  body: %.*s\n", i, rc,
				    err.reason ? err.reason : "-", err.line,
				    sts_policy_mode_name(p.mode), p.max_age, mx,
				    (int)c->len, c->body);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

/* Builds "version..mx..max_age" padded with an unknown field to exactly len. */
static char *padded_body(size_t len)
{
	static const char head[] = "version: STSv1\nmode: enforce\nmx: a.example\n"
				   "max_age: 86400\npad: ";
	char *b = malloc(len);
	assert_non_null(b);
	assert_true(len > sizeof head);
	memcpy(b, head, sizeof head - 1);
	memset(b + sizeof head - 1, 'x', len - (sizeof head - 1) - 1);
	b[len - 1] = '\n';
	return b;
}

static void test_size_limit(void **state)
{
	(void)state;
	static struct sts_policy p;
	struct sts_policy_err err;

	char *b = padded_body(65536);
	assert_int_equal(sts_policy_parse(b, 65536, &p, &err), 0);
	assert_int_equal(p.mode, STS_MODE_ENFORCE);
	free(b);

	b = padded_body(65537);
	assert_int_equal(sts_policy_parse(b, 65537, &p, &err), -1);
	assert_non_null(strstr(err.reason, "64 KiB"));
	free(b);

	/* The fixture's chunked-overlength body: a valid head, then 2049 x 64
	 * bytes of 'a' without a newline. Over the limit before any syntax. */
	static const char head[] = "version: STSv1\nmode: enforce\nmax_age: 86400\n"
				   "mx: mail.loc\n";
	size_t len = sizeof head - 1 + 2049 * 64;
	b = malloc(len);
	assert_non_null(b);
	memcpy(b, head, sizeof head - 1);
	memset(b + sizeof head - 1, 'a', len - (sizeof head - 1));
	assert_int_equal(sts_policy_parse(b, len, &p, &err), -1);
	/* ... and cut to 64 KiB it is still invalid (a line without ':'). */
	assert_int_equal(sts_policy_parse(b, 65536, &p, &err), -1);
	assert_int_equal(err.line, 5);
	free(b);
}

static void test_mx_limits(void **state)
{
	(void)state;
	static struct sts_policy p;
	static char body[16384];
	struct sts_policy_err err;
	size_t n;

	n = (size_t)snprintf(body, sizeof body, "version: STSv1\nmode: enforce\nmax_age: 1\n");
	for (int i = 0; i < 64; i++)
		n += (size_t)snprintf(body + n, sizeof body - n, "mx: mx%d.example.com\n", i);
	assert_int_equal(sts_policy_parse(body, n, &p, &err), 0);
	assert_int_equal(p.mx_count, 64);
	assert_string_equal(sts_policy_mx(&p, 63), "mx63.example.com");
	assert_null(sts_policy_mx(&p, 64));
	/* a repeat does not count against the limit */
	n += (size_t)snprintf(body + n, sizeof body - n, "mx: MX0.example.com.\n");
	assert_int_equal(sts_policy_parse(body, n, &p, &err), 0);
	/* the 65th distinct pattern is an error, not silently dropped */
	n += (size_t)snprintf(body + n, sizeof body - n, "mx: mx64.example.com\n");
	assert_int_equal(sts_policy_parse(body, n, &p, &err), -1);
	assert_non_null(strstr(err.reason, "too many"));
	assert_int_equal(p.mx_count, 0);

	/* pool: 40 patterns of 250 chars exceed 8192 bytes in total */
	n = (size_t)snprintf(body, sizeof body, "version: STSv1\nmode: enforce\nmax_age: 1\n");
	for (int i = 0; i < 40 && n < sizeof body - 300; i++)
		n += (size_t)snprintf(body + n, sizeof body - n,
				      "mx: %02d%.61s.%.61s.%.61s.%.61s\n", i,
				      L63, L63, L63, L63);
	assert_int_equal(sts_policy_parse(body, n, &p, &err), -1);
	assert_non_null(strstr(err.reason, "total"));
}

static void test_api_edges(void **state)
{
	(void)state;
	struct sts_policy p;
	enum sts_policy_mode m;

	assert_int_equal(sts_policy_parse(NULL, 0, &p, NULL), -1);
	assert_int_equal(sts_policy_parse(NULL, 5, &p, NULL), -1);
	assert_int_equal(sts_policy_parse("x", 1, NULL, NULL), -1);
	assert_null(sts_policy_mx(NULL, 0));
	assert_string_equal(sts_policy_mode_name(STS_MODE_ENFORCE), "enforce");
	assert_string_equal(sts_policy_mode_name(STS_MODE_TESTING), "testing");
	assert_string_equal(sts_policy_mode_name(STS_MODE_NONE), "none");
	assert_int_equal(sts_policy_mode_parse("testing", &m), 0);
	assert_int_equal(m, STS_MODE_TESTING);
	assert_int_equal(sts_policy_mode_parse("Testing", &m), -1);

	/* the struct is a value: a copy stays valid after the original is gone */
	static const char body[] = "version: STSv1\nmode: enforce\nmx: a.example\n"
				   "mx: *.b.example\nmax_age: 9\n";
	struct sts_policy *orig = malloc(sizeof *orig);
	assert_non_null(orig);
	assert_int_equal(sts_policy_parse(body, sizeof body - 1, orig, NULL), 0);
	struct sts_policy copy = *orig;
	memset(orig, 0xAA, sizeof *orig);
	free(orig);
	assert_string_equal(sts_policy_mx(&copy, 1), "*.b.example");
}

/* Every `return NNN "..."` body of the nginx fixture, keyed by server name. */
struct fx_expect {
	const char *server;
	int ok;
	enum sts_policy_mode mode;
	uint32_t max_age;
};

static const struct fx_expect fx[] = {
	{ "mta-sts.good.loc", 1, STS_MODE_ENFORCE, 86400 },
	{ "mta-sts.bad-policy1.loc", 0, 0, 0 },
	{ "mta-sts.bad-policy2.loc", 0, 0, 0 },
	{ "mta-sts.bad-policy3.loc", 1, STS_MODE_ENFORCE, 86400 }, /* bad type, good body */
	{ "mta-sts.bad-policy4.loc", 1, STS_MODE_ENFORCE, 86400 }, /* 404, good body */
	{ "mta-sts.bad-policy5.loc", 0, 0, 0 },
	/* max_age 31557601: rejected by the fixture's resolver, clamped here */
	{ "mta-sts.bad-policy6.loc", 1, STS_MODE_ENFORCE, 31557600 },
	{ "mta-sts.bad-policy7.loc", 0, 0, 0 },
	{ "mta-sts.bad-policy8.loc", 0, 0, 0 },
	{ "mta-sts.bad-cert1.loc", 1, STS_MODE_ENFORCE, 86400 },
	{ "mta-sts.bad-cert2.loc", 1, STS_MODE_ENFORCE, 86400 },
	{ "mta-sts.valid-none.loc", 1, STS_MODE_NONE, 86400 },
	{ "mta-sts.testing.loc", 1, STS_MODE_TESTING, 86400 },
	{ "mta-sts.fast-expire.loc", 1, STS_MODE_ENFORCE, 1 },
};

static void test_nginx_fixture(void **state)
{
	(void)state;
	char path[1024], line[1024], server[256] = "";
	static struct sts_policy p;
	int checked = 0, failures = 0;

	snprintf(path, sizeof path, "%s/postfix-mta-sts-resolver-fixtures/nginx.conf",
		 TEST_VECTORS);
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		print_message("fixture %s missing: skipped\n", path);
		skip();
	}
	while (fgets(line, sizeof line, f) != NULL) {
		char *s = strstr(line, "server_name ");
		if (s != NULL) {
			snprintf(server, sizeof server, "%s", s + 12);
			server[strcspn(server, ";\n")] = '\0';
			continue;
		}
		s = strstr(line, "return ");
		char *q = s ? strchr(s, '"') : NULL;
		if (q == NULL)
			continue;
		/* unescape \n inside the quoted nginx string */
		char body[512];
		size_t n = 0;
		for (q++; *q != '\0' && *q != '"' && n < sizeof body; q++) {
			if (q[0] == '\\' && q[1] == 'n') {
				body[n++] = '\n';
				q++;
			} else {
				body[n++] = *q;
			}
		}
		const struct fx_expect *e = NULL;
		for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++)
			if (strcmp(fx[i].server, server) == 0)
				e = &fx[i];
		if (e == NULL) {
			print_error("no expectation for fixture server %s\n", server);
			failures++;
			continue;
		}
		struct sts_policy_err err;
		int rc = sts_policy_parse(body, n, &p, &err);
		int good = e->ok ? (rc == 0 && p.mode == e->mode && p.max_age == e->max_age &&
				    (p.mode == STS_MODE_NONE ||
				     (p.mx_count == 1 && strcmp(sts_policy_mx(&p, 0), "mail.loc") == 0)))
				 : rc == -1;
		if (!good) {
			print_error("fixture %s: rc=%d reason=%s\n", server, rc,
				    err.reason ? err.reason : "-");
			failures++;
		}
		checked++;
	}
	fclose(f);
	assert_int_equal(failures, 0);
	assert_int_equal(checked, (int)(sizeof fx / sizeof fx[0]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_size_limit),
		cmocka_unit_test(test_mx_limits),
		cmocka_unit_test(test_api_edges),
		cmocka_unit_test(test_nginx_fixture),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
