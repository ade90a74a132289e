/* Table tests for MTA-STS mx pattern matching (RFC 8461 §4.1): case, trailing
 * dots, one-label wildcards, numeric patterns, invalid patterns/hosts; plus
 * pattern normalising. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sts/mx_match.h"
#include "sts/policy.h"

struct mcase {
	const char *pattern;
	const char *host;
	int match;
};

static const struct mcase cases[] = {
	{ "mail.example.com", "mail.example.com", 1 },
	{ "mail.example.com", "MAIL.Example.COM", 1 },
	{ "mail.example.com", "mail.example.com.", 1 },
	{ "mail.example.com.", "mail.example.com", 1 },
	{ "mail.example.com.", "mail.example.com.", 1 },
	{ "MAIL.example.COM", "mail.EXAMPLE.com", 1 },
	{ "mail.example.com", "mail.example.org", 0 },
	{ "mail.example.com", "xmail.example.com", 0 },
	{ "mail.example.com", "ail.example.com", 0 },
	{ "mail.example.com", "mail.example.com..", 0 },
	{ "mail.example.com", "a.mail.example.com", 0 },
	{ "example.com", "a.example.com", 0 },
	{ "*.example.com", "a.example.com", 1 },
	{ "*.example.com", "A.EXAMPLE.COM.", 1 },
	{ "*.example.com", "mx-1.example.com", 1 },
	{ "*.example.com", "123.example.com", 1 },
	{ "*.Example.Com.", "mx.example.com", 1 },
	{ "*.example.com", "example.com", 0 },
	{ "*.example.com", "a.b.example.com", 0 },
	{ "*.example.com", ".example.com", 0 },
	{ "*.example.com", "*.example.com", 0 },
	{ "*.example.com", "a.example.com.evil", 0 },
	{ "*.example.com", "aexample.com", 0 },
	{ "*.example.com", "a.xexample.com", 0 },
	{ "*.example.com", "-x.example.com", 0 },
	{ "*.example.com", "a_b.example.com", 0 },
	{ "*.mail.example.com", "mx1.mail.example.com", 1 },
	{ "*.mail.example.com", "mail.example.com", 0 },
	{ "*.mail.example.com", "mx1.other.example.com", 0 },
	{ "mail.example.com", "", 0 },
	{ "mail.example.com", ".", 0 },
	{ "", "mail.example.com", 0 },
	{ ".", "mail.example.com", 0 },
	{ "a.*.example.com", "a.b.example.com", 0 },
	{ "*example.com", "aexample.com", 0 },
	{ "*", "mail", 0 },
	{ "192.0.2.1", "192.0.2.1", 0 },
	{ "192.0.2.1.", "192.0.2.1", 0 },
	{ "212.114.86.56", "212.114.86.56", 0 },
	{ "*.2.1", "192.0.2.1", 0 },
	{ "*.86.56", "114.86.56", 0 },
	{ "mx.123", "mx.123", 0 },
	{ "123.example.com", "123.example.com", 1 },
	{ "1.2.example", "1.2.example", 1 },
	{ "[192.0.2.1]", "[192.0.2.1]", 0 },
	{ "2001:db8::1", "2001:db8::1", 0 },
	{ "mail", "MAIL", 1 },
};

static void test_pattern_table(void **state)
{
	(void)state;
	int failures = 0;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct mcase *c = &cases[i];
		bool m = sts_mx_pattern_match(c->pattern, strlen(c->pattern),
					      c->host, strlen(c->host));
		if ((int)m != c->match) {
			print_error("case %zu: pattern \"%s\" host \"%s\": got %d\n",
				    i, c->pattern, c->host, (int)m);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

static void test_lengths_not_nul(void **state)
{
	(void)state;
	/* lengths are honoured: the bytes after len are not read */
	assert_true(sts_mx_pattern_match("mail.example.comXX", 16, "mail.example.com", 16));
	assert_false(sts_mx_pattern_match("mail.example.com", 16, "mail.example.comXX", 18));
	assert_false(sts_mx_pattern_match(NULL, 0, "a", 1));
	assert_false(sts_mx_pattern_match("a.example", 9, NULL, 0));
}

static void test_normalize(void **state)
{
	(void)state;
	char out[STS_MX_NAME_MAX + 1];
	const char *reason;
	char name[300];

	assert_int_equal(sts_mx_pattern_normalize("*.EXAMPLE.com.", 14, out, sizeof out, &reason), 0);
	assert_string_equal(out, "*.example.com");
	assert_null(reason);
	/* digit-only labels are grammatical (RFC 5321 sub-domain): accepted,
	 * flagged as numeric, never matching */
	assert_int_equal(sts_mx_pattern_normalize("1.2.3.4", 7, out, sizeof out, &reason), 0);
	assert_string_equal(out, "1.2.3.4");
	assert_true(sts_mx_pattern_is_numeric("1.2.3.4"));
	assert_true(sts_mx_pattern_is_numeric("212.114.86.56."));
	assert_true(sts_mx_pattern_is_numeric("*.1.2"));
	assert_true(sts_mx_pattern_is_numeric("mx.123"));
	assert_false(sts_mx_pattern_is_numeric("123.example"));
	assert_false(sts_mx_pattern_is_numeric("1.2.3.4a"));
	assert_true(sts_mx_pattern_is_numeric("1234"));
	assert_false(sts_mx_pattern_is_numeric(""));
	assert_false(sts_mx_pattern_is_numeric(NULL));
	/* still refused: address literals, empty labels, non-LDH bytes */
	assert_int_equal(sts_mx_pattern_normalize("[1.2.3.4]", 9, out, sizeof out, &reason), -1);
	assert_non_null(strstr(reason, "literal"));
	assert_int_equal(sts_mx_pattern_normalize("::1", 3, out, sizeof out, &reason), -1);
	assert_int_equal(sts_mx_pattern_normalize("1..2", 4, out, sizeof out, &reason), -1);
	assert_non_null(strstr(reason, "empty"));
	assert_int_equal(sts_mx_pattern_normalize("1_2.3", 5, out, sizeof out, &reason), -1);
	assert_int_equal(sts_mx_pattern_normalize("a.*.b", 5, out, sizeof out, &reason), -1);
	assert_non_null(strstr(reason, "wildcard"));
	assert_int_equal(sts_mx_pattern_normalize("mail.example.com", 16, out, 5, &reason), -1);

	/* 253 characters is the longest name; 254 is too long */
	memset(name, 'a', sizeof name);
	for (size_t i = 63; i < 253; i += 64)
		name[i] = '.';
	assert_int_equal(sts_mx_pattern_normalize(name, 253, out, sizeof out, &reason), 0);
	assert_int_equal(strlen(out), 253);
	name[253] = 'b';
	assert_int_equal(sts_mx_pattern_normalize(name, 254, out, sizeof out, &reason), -1);
	/* ... with a trailing dot 254 is fine */
	name[253] = '.';
	assert_int_equal(sts_mx_pattern_normalize(name, 254, out, sizeof out, &reason), 0);
	assert_true(sts_mx_pattern_match(name, 253, name, 254));
}

static void test_policy_match(void **state)
{
	(void)state;
	static struct sts_policy p;
	static const char body[] = "version: STSv1\nmode: enforce\nmx: mx1.example.com\n"
				   "mx: *.backup.example.net\nmx: mail.example.org.\n"
				   "max_age: 86400\n";
	size_t idx = 99;

	assert_int_equal(sts_policy_parse(body, sizeof body - 1, &p, NULL), 0);
	assert_true(sts_mx_match(&p, "MX1.example.com.", &idx));
	assert_int_equal(idx, 0);
	assert_true(sts_mx_match(&p, "b2.backup.example.net", &idx));
	assert_int_equal(idx, 1);
	assert_true(sts_mx_match(&p, "mail.example.org", NULL));
	assert_false(sts_mx_match(&p, "backup.example.net", &idx));
	assert_false(sts_mx_match(&p, "mx2.example.com", &idx));
	assert_false(sts_mx_match(&p, "", &idx));
	assert_false(sts_mx_match(NULL, "mx1.example.com", &idx));
	assert_false(sts_mx_match(&p, NULL, &idx));

	/* a policy with a numeric pattern stays usable: the other patterns
	 * match, the numeric one matches nothing (not even its own text) */
	static const char num[] = "version: STSv1\nmode: enforce\nmx: 212.114.86.56\n"
				  "mx: mail.example.com\nmax_age: 86400\n";
	assert_int_equal(sts_policy_parse(num, sizeof num - 1, &p, NULL), 0);
	assert_int_equal(p.mx_count, 2);
	assert_false(sts_mx_match(&p, "212.114.86.56", NULL));
	assert_false(sts_mx_match(&p, "86.56", NULL));
	assert_true(sts_mx_match(&p, "mail.example.com", &idx));
	assert_int_equal(idx, 1);

	/* mode none with no mx: nothing matches */
	static const char none[] = "version: STSv1\nmode: none\nmax_age: 1\n";
	assert_int_equal(sts_policy_parse(none, sizeof none - 1, &p, NULL), 0);
	assert_false(sts_mx_match(&p, "mx1.example.com", NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pattern_table),
		cmocka_unit_test(test_lengths_not_nul),
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_policy_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
