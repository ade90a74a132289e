/* Table tests for the tls_policy_file parser (every error with its line) and
 * the lookup (exact domain, then the nearest ".parent" entry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "relay/core/tls_policy.h"

static void test_levels(void **state)
{
	enum tls_level l;

	(void)state;
	for (unsigned i = 0; i < TLS_LEVEL_COUNT; i++) {
		assert_int_equal(tls_level_parse(tls_level_name(i), &l), 0);
		assert_int_equal(l, i);
	}
	assert_string_equal(tls_level_name(TLS_LEVEL_STS_ONLY), "sts-only");
	assert_int_equal(tls_level_parse("Verify", &l), -1);
	assert_int_equal(tls_level_parse("dane-only", &l), -1);
	assert_int_equal(tls_level_parse("", &l), -1);
}

static const char good[] = "# per-domain levels\n"
			   "example.com      verify\n"
			   "\n"
			   "   Broken.Example.   none   # their certificate expired\r\n"
			   ".partner.example\tencrypt\n"
			   "partner.example  may\n"
			   "dane.example dane\n"
			   "sts.example sts-only"; /* no final newline */

static void test_lookup(void **state)
{
	static const struct {
		const char *domain;
		int found;
		enum tls_level level;
	} cases[] = {
		{ "example.com", 1, TLS_LEVEL_VERIFY },
		{ "EXAMPLE.COM.", 1, TLS_LEVEL_VERIFY },
		{ "mx.example.com", 0, 0 }, /* no ".example.com" entry */
		{ "broken.example", 1, TLS_LEVEL_NONE },
		{ "partner.example", 1, TLS_LEVEL_MAY },
		{ "a.partner.example", 1, TLS_LEVEL_ENCRYPT },
		{ "b.a.partner.example", 1, TLS_LEVEL_ENCRYPT },
		{ "xpartner.example", 0, 0 },
		{ "dane.example", 1, TLS_LEVEL_DANE },
		{ "sts.example", 1, TLS_LEVEL_STS_ONLY },
		{ "example", 0, 0 },
		{ "", 0, 0 },
		{ ".", 0, 0 },
	};
	struct tls_policy *p;
	char err[256];

	(void)state;
	assert_int_equal(tls_policy_parse(good, strlen(good), "p", &p, err, sizeof(err)), 0);
	assert_int_equal(p->n, 6);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum tls_level l = TLS_LEVEL_COUNT;
		bool f = tls_policy_lookup(p, cases[i].domain, &l);

		if (f != (cases[i].found != 0) || (f && l != cases[i].level))
			fail_msg("case %zu (%s): found %d level %d", i, cases[i].domain, f, l);
	}
	tls_policy_free(p);
	assert_false(tls_policy_lookup(NULL, "example.com", &(enum tls_level){ 0 }));
}

static void test_errors(void **state)
{
	static const struct {
		const char *text, *err;
	} cases[] = {
		{ "example.com\n", "p:1: a domain needs a level" },
		{ "a.example verify\nb.example strict\n", "p:2: unknown level" },
		{ "a.example verify match=nexthop\n", "p:1: more than two fields" },
		{ "a..example none\n", "p:1: not a domain name (empty label)" },
		{ "a.example.. none\n", "p:1: not a domain name (empty label)" },
		{ "a.ex ample none\n", "p:1: more than two fields" },
		{ "a/b none\n", "p:1: not a domain name" },
		{ ". none\n", "p:1: empty domain" },
		{ "a.example VERIFY\n", "p:1: unknown level" },
		{ "a.example none\n\nA.Example. may\n",
		  "p:3: a.example listed again (first on line 1)" },
		{ "a.example n\xc3\xa4\n", "p:1: control or non-ASCII character" },
		{ "ok.example none\nx.example\x01 none\n", "p:2: control or non-ASCII character" },
	};
	struct tls_policy *p;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		p = (struct tls_policy *)1;
		if (tls_policy_parse(cases[i].text, strlen(cases[i].text), "p", &p, err,
				     sizeof(err)) != -1 ||
		    p != NULL || strncmp(err, cases[i].err, strlen(cases[i].err)) != 0)
			fail_msg("case %zu: got '%s', want '%s'", i, err, cases[i].err);
	}
}

static void test_bounds(void **state)
{
	char *buf = malloc(TLS_POLICY_LINE_MAX + 64);
	struct tls_policy *p;
	char err[256];
	size_t n;

	(void)state;
	assert_non_null(buf);
	/* a line of exactly 1024 characters is taken, 1025 refused */
	memset(buf, ' ', TLS_POLICY_LINE_MAX);
	memcpy(buf, "a.example none", 14);
	buf[TLS_POLICY_LINE_MAX] = '\n';
	assert_int_equal(tls_policy_parse(buf, TLS_POLICY_LINE_MAX + 1, "p", &p, err, sizeof(err)),
			 0);
	tls_policy_free(p);
	memset(buf, ' ', TLS_POLICY_LINE_MAX + 1);
	memcpy(buf, "a.example none", 14);
	assert_int_equal(tls_policy_parse(buf, TLS_POLICY_LINE_MAX + 1, "p", &p, err, sizeof(err)),
			 -1);
	assert_string_equal(err, "p:1: line longer than 1024 characters");
	/* a NUL inside a line */
	n = (size_t)snprintf(buf, 64, "a.example none\n");
	buf[3] = '\0';
	assert_int_equal(tls_policy_parse(buf, n, "p", &p, err, sizeof(err)), -1);
	assert_string_equal(err, "p:1: NUL byte");
	/* 253 characters is a domain, 254 is not */
	memset(buf, 'a', 300);
	for (size_t i = 63; i < 300; i += 64)
		buf[i] = '.';
	memcpy(buf + 253, " may\n", 5);
	assert_int_equal(tls_policy_parse(buf, 258, "p", &p, err, sizeof(err)), 0);
	tls_policy_free(p);
	memset(buf, 'a', 300);
	for (size_t i = 63; i < 300; i += 64)
		buf[i] = '.';
	memcpy(buf + 254, " may\n", 5);
	assert_int_equal(tls_policy_parse(buf, 259, "p", &p, err, sizeof(err)), -1);
	assert_string_equal(err, "p:1: domain longer than 253 characters");
	free(buf);
}

static void test_load(void **state)
{
	char path[] = "/tmp/tls-policy-XXXXXX";
	int fd = mkstemp(path);
	struct tls_policy *p;
	char err[512];

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, good, strlen(good)), (int)strlen(good));
	close(fd);
	assert_int_equal(tls_policy_load(path, &p, err, sizeof(err)), 0);
	assert_int_equal(p->n, 6);
	tls_policy_free(p);
	/* one byte over the bound: refused whole, never parsed in part */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, TLS_POLICY_FILE_MAX + 1), 0);
	close(fd);
	assert_int_equal(tls_policy_load(path, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ": larger than 16 MiB"));
	assert_null(p);
	unlink(path);
	assert_int_equal(tls_policy_load(path, &p, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "No such file"));
	assert_null(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_levels), cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_errors), cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
