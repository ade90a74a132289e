/* Table tests for the `_smtp._tls` TLS-RPT TXT record parser (RFC 8460 §3):
 * selection, syntax, rua lists, mailto extraction, https URLs, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sts/txt.h"

#define S(x) x, sizeof(x) - 1
#define M STS_TLSRPT_MAILTO
#define H STS_TLSRPT_HTTPS

struct rcase {
	const char *rec;
	size_t len;
	enum sts_txt_result want;
	size_t nrua;
	size_t ignored;
	enum sts_tlsrpt_rua_kind kind0;
	const char *target0;    /* first usable rua, if nrua > 0 */
	const char *target1;    /* second, if nrua > 1 */
};

static const struct rcase cases[] = {
	{ S("v=TLSRPTv1; rua=mailto:reports@example.com"), STS_TXT_FOUND, 1, 0, M,
	  "reports@example.com", NULL },
	{ S("v=TLSRPTv1;rua=https://reporting.example.com/v1/tlsrpt"), STS_TXT_FOUND, 1, 0, H,
	  "https://reporting.example.com/v1/tlsrpt", NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.com/x?a=b&c=d"),
	  STS_TXT_FOUND, 2, 0, M, "a@example.com", "https://r.example.com/x?a=b&c=d" },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com , https://r.example.com/x ;"),
	  STS_TXT_FOUND, 2, 0, M, "a@example.com", "https://r.example.com/x" },
	{ S("v=TLSRPTv1 ; rua=mailto:a@example.com;"), STS_TXT_FOUND, 1, 0, M, "a@example.com", NULL },
	{ S("v=TLSRPTv1; rua=mailto:tls%2Breports@example.com"), STS_TXT_FOUND, 1, 0, M,
	  "tls+reports@example.com", NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com?subject=tlsrpt"), STS_TXT_FOUND, 1, 0, M,
	  "a@example.com", NULL },
	{ S("v=TLSRPTv1; rua=MAILTO:a@Example.com"), STS_TXT_FOUND, 1, 0, M, "a@Example.com", NULL },
	{ S("v=TLSRPTv1; rua=HTTPS://r.example.com/"), STS_TXT_FOUND, 1, 0, H, "HTTPS://r.example.com/", NULL },
	/* usable record, but no URI we can use */
	{ S("v=TLSRPTv1; rua=http://r.example.com/"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=ftp://x.example,mailto:a@example.com"), STS_TXT_FOUND, 1, 1, M,
	  "a@example.com", NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com!10m"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:noatsign"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@b@example.com"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:@example.com"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a%4x@example.com"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a%00@example.com"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a%2Cb@example.com"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@[192.0.2.1]"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=https://"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=https:/x"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=reports@example.com"), STS_TXT_FOUND, 0, 1, M, NULL, NULL },
	/* extensions and repeated rua */
	{ S("v=TLSRPTv1; foo=bar; rua=mailto:a@example.com"), STS_TXT_FOUND, 1, 0, M, "a@example.com", NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com"),
	  STS_TXT_FOUND, 1, 0, M, "a@example.com", NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com; rua=,"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	/* invalid records */
	{ S("v=TLSRPTv1;"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua="), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com,,mailto:b@example.com"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com,"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; RUA=mailto:a@example.com"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; foo=bar"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a b@example.com"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua = mailto:a@example.com"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com;;"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@ex\0ample.com"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv1; rua=mailto:a@example.com; x=\xc3\xa9"), STS_TXT_INVALID, 0, 0, M, NULL, NULL },
	/* not TLS-RPT records: skipped */
	{ S("rua=mailto:a@example.com; v=TLSRPTv1"), STS_TXT_NONE, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv2; rua=mailto:a@example.com"), STS_TXT_NONE, 0, 0, M, NULL, NULL },
	{ S("v=TLSRPTv10; rua=mailto:a@example.com"), STS_TXT_NONE, 0, 0, M, NULL, NULL },
	{ S("v=tlsrptv1; rua=mailto:a@example.com"), STS_TXT_NONE, 0, 0, M, NULL, NULL },
	{ S("v=STSv1; id=abc"), STS_TXT_NONE, 0, 0, M, NULL, NULL },
	{ S(""), STS_TXT_NONE, 0, 0, M, NULL, NULL },
};

static void test_table(void **state)
{
	(void)state;
	static struct sts_tlsrpt_txt out;
	int failures = 0;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct rcase *c = &cases[i];
		enum sts_txt_result r = sts_tlsrpt_txt_parse_one(c->rec, c->len, &out);
		int ok = r == c->want && out.nrua == c->nrua && out.ignored == c->ignored;
		if (ok && r != STS_TXT_FOUND)
			ok = out.reason != NULL;
		if (ok && c->nrua > 0)
			ok = out.rua[0].kind == c->kind0 &&
			     strcmp(out.rua[0].target, c->target0) == 0;
		if (ok && c->nrua > 1)
			ok = strcmp(out.rua[1].target, c->target1) == 0;
		if (!ok) {
			print_error("case %zu \"%s\": got %s nrua=%zu ignored=%zu first=\"%s\"\n",
				    i, c->rec, sts_txt_result_name(r), out.nrua,
				    out.ignored, out.nrua ? out.rua[0].target : "");
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

static void test_limits(void **state)
{
	(void)state;
	static struct sts_tlsrpt_txt out;
	static char rec[4096];
	size_t n;

	/* nine URIs: the first eight are kept, in order */
	n = (size_t)snprintf(rec, sizeof rec, "v=TLSRPTv1; rua=");
	for (int i = 0; i < 9; i++)
		n += (size_t)snprintf(rec + n, sizeof rec - n, "%smailto:r%d@example.com",
				      i ? "," : "", i);
	assert_int_equal(sts_tlsrpt_txt_parse_one(rec, n, &out), STS_TXT_FOUND);
	assert_int_equal(out.nrua, STS_TLSRPT_MAX_RUA);
	assert_int_equal(out.ignored, 1);
	assert_string_equal(out.rua[7].target, "r7@example.com");

	/* a URI of 512 characters is kept, 513 is ignored */
	for (size_t len = 512; len <= 513; len++) {
		n = (size_t)snprintf(rec, sizeof rec, "v=TLSRPTv1; rua=https://r.example.com/");
		size_t pad = len - strlen("https://r.example.com/");
		memset(rec + n, 'p', pad);
		n += pad;
		assert_int_equal(sts_tlsrpt_txt_parse_one(rec, n, &out), STS_TXT_FOUND);
		assert_int_equal(out.nrua, len == 512 ? 1 : 0);
		assert_int_equal(out.ignored, len == 512 ? 0 : 1);
		if (len == 512)
			assert_int_equal(strlen(out.rua[0].target), 512);
	}
}

static void test_records(void **state)
{
	(void)state;
	static struct sts_tlsrpt_txt out;
	static const char dmarc[] = "v=DMARC1; p=none";
	static const char a1[] = "v=TLSRPTv1; rua=mailto:tls@exa";
	static const char a2[] = "mple.com";
	static const char b[] = "v=TLSRPTv1; rua=mailto:other@example.com";
	struct sts_txt_string s_dmarc = { (const unsigned char *)dmarc, sizeof dmarc - 1 };
	struct sts_txt_string s_a[2] = {
		{ (const unsigned char *)a1, sizeof a1 - 1 },
		{ (const unsigned char *)a2, sizeof a2 - 1 },
	};
	struct sts_txt_string s_b = { (const unsigned char *)b, sizeof b - 1 };
	struct sts_txt_record recs[3] = { { &s_dmarc, 1 }, { s_a, 2 }, { &s_b, 1 } };

	assert_int_equal(sts_tlsrpt_txt_parse(recs, 2, &out), STS_TXT_FOUND);
	assert_int_equal(out.record_index, 1);
	assert_string_equal(out.rua[0].target, "tls@example.com");
	assert_int_equal(sts_tlsrpt_txt_parse(recs, 3, &out), STS_TXT_MULTIPLE);
	assert_int_equal(out.nrua, 0);
	assert_int_equal(sts_tlsrpt_txt_parse(recs, 1, &out), STS_TXT_NONE);
	assert_int_equal(sts_tlsrpt_txt_parse(NULL, 0, &out), STS_TXT_NONE);
	assert_int_equal(sts_tlsrpt_txt_parse(recs, 1, NULL), STS_TXT_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_records),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
