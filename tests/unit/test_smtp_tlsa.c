/* Table tests for TLSA RDATA (RFC 6698 §2.1): parsing, the RFC 7672 §3.1
 * usability rule (usages, selectors, digest lengths, DER of full data), the
 * presentation form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "smtp/tlsa.h"

static void test_parse(void **state)
{
	static unsigned char big[3 + SMTP_TLSA_DATA_MAX + 1];
	unsigned char ok[] = { 3, 1, 1, 0xab, 0xcd };
	struct smtp_tlsa t;
	const char *why = NULL;

	(void)state;
	assert_int_equal(smtp_tlsa_parse(ok, sizeof(ok), &t, &why), 0);
	assert_int_equal(t.usage, 3);
	assert_int_equal(t.selector, 1);
	assert_int_equal(t.mtype, 1);
	assert_int_equal(t.len, 2);
	assert_memory_equal(t.data, ok + 3, 2);
	/* no association data at all, or nothing */
	assert_int_equal(smtp_tlsa_parse(ok, 3, &t, &why), -1);
	assert_non_null(strstr(why, "shorter"));
	assert_int_equal(smtp_tlsa_parse(ok, 0, &t, &why), -1);
	assert_int_equal(smtp_tlsa_parse(NULL, 10, &t, &why), -1);
	/* at the bound and one above: refused, never cut */
	big[0] = 2;
	assert_int_equal(smtp_tlsa_parse(big, 3 + SMTP_TLSA_DATA_MAX, &t, &why), 0);
	assert_int_equal(t.len, SMTP_TLSA_DATA_MAX);
	assert_int_equal(smtp_tlsa_parse(big, sizeof(big), &t, &why), -1);
	assert_non_null(strstr(why, "longer"));
}

static struct smtp_tlsa rec(unsigned u, unsigned s, unsigned m, size_t len)
{
	struct smtp_tlsa t;

	memset(&t, 0, sizeof(t));
	t.usage = (uint8_t)u;
	t.selector = (uint8_t)s;
	t.mtype = (uint8_t)m;
	t.len = len;
	memset(t.data, 0x5a, len);
	return t;
}

static void test_usable(void **state)
{
	static const struct {
		unsigned u, s, m;
		size_t len;
		bool usable;
	} cases[] = {
		{ 3, 1, 1, 32, true },  { 3, 0, 1, 32, true },  { 2, 0, 1, 32, true },
		{ 2, 1, 2, 64, true },  { 3, 1, 2, 64, true },  { 3, 1, 1, 31, false },
		{ 3, 1, 1, 33, false }, { 3, 1, 2, 32, false }, { 3, 1, 2, 65, false },
		{ 0, 0, 1, 32, false }, /* PKIX-TA: ignored for SMTP */
		{ 1, 1, 1, 32, false }, /* PKIX-EE */
		{ 4, 1, 1, 32, false }, { 3, 2, 1, 32, false }, { 3, 1, 3, 32, false },
		{ 3, 1, 0, 16, false }, /* full data that is no DER key */
		{ 3, 0, 0, 0, false },
	};
	struct smtp_tlsa_set set = { 0 };

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct smtp_tlsa t = rec(cases[i].u, cases[i].s, cases[i].m, cases[i].len);

		if (smtp_tlsa_usable(&t) != cases[i].usable)
			fail_msg("case %zu: %u %u %u len %zu", i, cases[i].u, cases[i].s,
				 cases[i].m, cases[i].len);
		if (set.n < SMTP_TLSA_MAX)
			set.rec[set.n++] = t;
	}
	assert_int_equal(smtp_tlsa_count_usable(&set), 5);
}

/* Full(0) data is usable when it is a real DER key or certificate. */
static void test_full_data_der(void **state)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	unsigned char *der = NULL;
	int n;
	struct smtp_tlsa t = rec(3, 1, 0, 0);

	(void)state;
	assert_non_null(k);
	n = i2d_PUBKEY(k, &der);
	assert_true(n > 0 && (size_t)n <= SMTP_TLSA_DATA_MAX);
	memcpy(t.data, der, (size_t)n);
	t.len = (size_t)n;
	assert_true(smtp_tlsa_usable(&t));
	t.len--; /* truncated DER */
	assert_false(smtp_tlsa_usable(&t));
	t.len++;
	t.selector = 0; /* a key is no certificate */
	assert_false(smtp_tlsa_usable(&t));
	OPENSSL_free(der);
	EVP_PKEY_free(k);
}

static void test_format(void **state)
{
	struct smtp_tlsa t = rec(3, 1, 1, 2);
	char buf[32];

	(void)state;
	t.data[0] = 0x0f;
	t.data[1] = 0xa0;
	assert_int_equal(smtp_tlsa_format(&t, buf, sizeof(buf)), 10);
	assert_string_equal(buf, "3 1 1 0FA0");
	assert_int_equal(smtp_tlsa_format(&t, buf, 10), -1); /* no room for the NUL */
	assert_int_equal(smtp_tlsa_format(&t, buf, 11), 10);
	t.len = 0;
	assert_int_equal(smtp_tlsa_format(&t, buf, sizeof(buf)), 6);
	assert_string_equal(buf, "3 1 1 ");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_usable),
		cmocka_unit_test(test_full_data_der),
		cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
