/* Table tests for the `_mta-sts` TXT record parser (RFC 8461 §3.1), incl.
 * the postfix-mta-sts-resolver fixture records and multi-string records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sts/txt.h"

#define S(x) x, sizeof(x) - 1
#define ID32 "abcdefghijklmnopqrstuvwxyz012345"

struct one_case {
	const char *rec;
	size_t len;
	enum sts_txt_result want;
	const char *id;         /* expected id when FOUND */
};

static const struct one_case one_cases[] = {
	{ S("v=STSv1; id=20160831085700Z;"), STS_TXT_FOUND, "20160831085700Z" },
	/* fixture good.loc */
	{ S("v=STSv1;id=20180907T090909;"), STS_TXT_FOUND, "20180907T090909" },
	{ S("v=STSv1; id=abc"), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1;id=a"), STS_TXT_FOUND, "a" },
	{ S("v=STSv1; id=" ID32), STS_TXT_FOUND, ID32 },
	{ S("v=STSv1; id=" ID32 "6"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id="), STS_TXT_INVALID, NULL },
	{ S("v=STSv1;"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1 "), STS_TXT_INVALID, NULL },
	{ S("v=STSv1 ; id=abc"), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1;\tid=abc\t;\t"), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1; id=abc; "), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1; id=abc "), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1; id=abc;;"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1;; id=abc"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id = abc"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=ab-c"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc def"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; ID=abc"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc; id=def"), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1; id=abc; id=bad!"), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1; id=bad!; id=abc"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; foo=bar; id=abc"), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1; id=abc; ext.name-1_x=v@l:ue/~!"), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1; id=abc; foo="), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc; =bar"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc; foo"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc; foo=a=b"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc; _foo=bar"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc; abcdefghijklmnopqrstuvwxyz012345=x"), STS_TXT_FOUND, "abc" },
	{ S("v=STSv1; id=abc; abcdefghijklmnopqrstuvwxyz0123456=x"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc\0"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=a\0bc"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc; x=caf\xc3\xa9"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=\xc3\xa9t\xc3\xa9"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc\r\n"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1\tid=abc"), STS_TXT_INVALID, NULL },
	{ S("v=STSv1; id=abc; v=STSv1"), STS_TXT_FOUND, "abc" },
	/* not an STSv1 record at all: skipped, so "none" */
	{ S("V=STSv1; id=abc"), STS_TXT_NONE, NULL },
	{ S("v=stsv1; id=abc"), STS_TXT_NONE, NULL },
	{ S("v=STSv12;id=20180907T090909;"), STS_TXT_NONE, NULL },  /* fixture bad-record3 */
	{ S("id=20180907T090909; v=STSv1;"), STS_TXT_NONE, NULL },  /* fixture bad-record1 */
	{ S("azazaza;asdasdasdasd"), STS_TXT_NONE, NULL },          /* fixture bad-record2 */
	{ S(""), STS_TXT_NONE, NULL },
	{ S(" v=STSv1; id=abc"), STS_TXT_NONE, NULL },
	{ S("v = STSv1; id=abc"), STS_TXT_NONE, NULL },
	{ S("v=spf1 -all"), STS_TXT_NONE, NULL },
};

static void test_single_records(void **state)
{
	(void)state;
	int failures = 0;

	for (size_t i = 0; i < sizeof one_cases / sizeof one_cases[0]; i++) {
		const struct one_case *c = &one_cases[i];
		struct sts_txt out;
		enum sts_txt_result r = sts_txt_parse_one(c->rec, c->len, &out);
		int ok = (r == c->want && out.result == c->want);
		if (ok && r == STS_TXT_FOUND)
			ok = strcmp(out.id, c->id) == 0 && out.reason == NULL;
		if (ok && r != STS_TXT_FOUND)
			ok = out.id[0] == '\0' && out.reason != NULL;
		if (!ok) {
			print_error("case %zu \"%s\": got %s id=\"%s\", want %s\n",
				    i, c->rec, sts_txt_result_name(r), out.id,
				    sts_txt_result_name(c->want));
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

/* Builds records from NULL-separated string lists: each record is a list of
 * character-strings ended by NULL; the whole list ends with a second NULL. */
#define MAXS 16
struct built {
	struct sts_txt_string strs[MAXS];
	struct sts_txt_record recs[MAXS];
	size_t nrecs;
};

static void build(struct built *b, const char *const *items)
{
	size_t ns = 0;

	b->nrecs = 0;
	while (*items != NULL) {
		struct sts_txt_record *r = &b->recs[b->nrecs++];
		r->strings = &b->strs[ns];
		r->nstrings = 0;
		for (; *items != NULL; items++) {
			b->strs[ns].data = (const unsigned char *)*items;
			b->strs[ns].len = strlen(*items);
			ns++;
			r->nstrings++;
		}
		items++;        /* the record's NULL */
	}
}

struct multi_case {
	const char *items[MAXS];
	enum sts_txt_result want;
	const char *id;
	size_t index;
};

static const struct multi_case multi_cases[] = {
	{ { "v=STSv1; id=2018", "0907T090909;", NULL, NULL },
	  STS_TXT_FOUND, "20180907T090909", 0 },
	{ { "v=ST", "Sv1;id=x", NULL, NULL }, STS_TXT_FOUND, "x", 0 },
	{ { "", "v=STSv1;", "", "id=abc", "", NULL, NULL }, STS_TXT_FOUND, "abc", 0 },
	{ { "v=STSv1", "; id=abc", NULL, NULL }, STS_TXT_FOUND, "abc", 0 },
	/* no space is added between strings */
	{ { "v=STSv1; id=ab", "c d", NULL, NULL }, STS_TXT_INVALID, NULL, 0 },
	{ { "v=STSv1;id=", "abc", NULL, NULL }, STS_TXT_FOUND, "abc", 0 },
	{ { "v=spf1 -all", NULL, "v=STSv1; id=abc", NULL, NULL },
	  STS_TXT_FOUND, "abc", 1 },
	{ { "google-site-verification=xyz", NULL, "v=STSv1", NULL, NULL },
	  STS_TXT_INVALID, NULL, 1 },
	{ { "v=STSv1; id=abc", NULL, "v=STSv1; id=def", NULL, NULL },
	  STS_TXT_MULTIPLE, NULL, 0 },
	{ { "v=STSv1; id=abc", NULL, "v=STSv1; junk", NULL, NULL },
	  STS_TXT_MULTIPLE, NULL, 0 },
	{ { "v=STSv1; id=abc", NULL, "v=STSv12; id=def", NULL, NULL },
	  STS_TXT_FOUND, "abc", 0 },
	{ { "v=STS", NULL, "v1; id=abc", NULL, NULL }, STS_TXT_NONE, NULL, 0 },
	{ { NULL }, STS_TXT_NONE, NULL, 0 },
};

static void test_multi_records(void **state)
{
	(void)state;
	int failures = 0;

	for (size_t i = 0; i < sizeof multi_cases / sizeof multi_cases[0]; i++) {
		const struct multi_case *c = &multi_cases[i];
		struct built b;
		struct sts_txt out;
		build(&b, c->items);
		enum sts_txt_result r = sts_txt_parse(b.recs, b.nrecs, &out);
		int ok = r == c->want;
		if (ok && r == STS_TXT_FOUND)
			ok = strcmp(out.id, c->id) == 0 && out.record_index == c->index;
		if (ok && r == STS_TXT_INVALID)
			ok = out.record_index == c->index;
		if (!ok) {
			print_error("multi case %zu: got %s id=\"%s\" idx=%zu\n", i,
				    sts_txt_result_name(r), out.id, out.record_index);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

static void test_edge_inputs(void **state)
{
	(void)state;
	struct sts_txt out;
	struct sts_txt_record empty = { NULL, 0 };
	struct sts_txt_string nulls = { NULL, 5 };
	struct sts_txt_record nullrec = { &nulls, 1 };

	assert_int_equal(sts_txt_parse(NULL, 0, &out), STS_TXT_NONE);
	assert_int_equal(sts_txt_parse(&empty, 1, &out), STS_TXT_NONE);
	assert_int_equal(sts_txt_parse(&nullrec, 1, &out), STS_TXT_NONE);
	assert_int_equal(sts_txt_parse_one(NULL, 10, &out), STS_TXT_NONE);
	assert_int_equal(sts_txt_parse(NULL, 0, NULL), STS_TXT_INVALID);
	assert_string_equal(sts_txt_result_name(STS_TXT_MULTIPLE), "multiple");
	assert_string_equal(sts_txt_result_name(STS_TXT_FOUND), "found");
	assert_int_equal(sts_txt_parse_one(S("v=STSv1 ;"), &out), STS_TXT_INVALID);
	assert_string_equal(out.reason, "no field after the version");
	assert_int_equal(sts_txt_parse_one(S("v=STSv1; x=1"), &out), STS_TXT_INVALID);
	assert_string_equal(out.reason, "id field missing");

	/* A long extension value spread over many 255-byte strings. */
	static char big[4000];
	memset(big, 'x', sizeof big);
	memcpy(big, "v=STSv1; id=longrec; pad=", 25);
	struct sts_txt_string parts[16];
	size_t n = 0;
	for (size_t off = 0; off < sizeof big; off += 255, n++) {
		parts[n].data = (const unsigned char *)big + off;
		parts[n].len = sizeof big - off < 255 ? sizeof big - off : 255;
	}
	struct sts_txt_record rec = { parts, n };
	assert_int_equal(sts_txt_parse(&rec, 1, &out), STS_TXT_FOUND);
	assert_string_equal(out.id, "longrec");
}

/* Every txt-record line of the postfix-mta-sts-resolver dnsmasq fixture:
 * the three bad-record names carry no usable record, all others one. */
static void test_fixture_records(void **state)
{
	(void)state;
	char path[1024];
	char line[512];
	int checked = 0, failures = 0;

	snprintf(path, sizeof path, "%s/postfix-mta-sts-resolver-fixtures/"
		 "dnsmasq.conf.appendix", TEST_VECTORS);
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		print_message("fixture %s missing: skipped\n", path);
		skip();
	}
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "txt-record=", 11) != 0)
			continue;
		char *name = line + 11;
		char *q1 = strchr(line, '"');
		char *q2 = q1 != NULL ? strrchr(q1 + 1, '"') : NULL;
		assert_non_null(q2);
		*strchr(name, ',') = '\0';
		struct sts_txt out;
		enum sts_txt_result r = sts_txt_parse_one(q1 + 1, (size_t)(q2 - q1 - 1), &out);
		enum sts_txt_result want = strncmp(name, "_mta-sts.bad-record", 19) == 0
			? STS_TXT_NONE : STS_TXT_FOUND;
		if (r != want || (r == STS_TXT_FOUND &&
				  strcmp(out.id, "20180907T090909") != 0)) {
			print_error("fixture %s: got %s\n", name, sts_txt_result_name(r));
			failures++;
		}
		checked++;
	}
	fclose(f);
	assert_int_equal(failures, 0);
	assert_true(checked >= 15);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_records),
		cmocka_unit_test(test_multi_records),
		cmocka_unit_test(test_edge_inputs),
		cmocka_unit_test(test_fixture_records),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
