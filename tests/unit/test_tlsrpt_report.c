/* TLS-RPT recording, aggregation and validation: exact counts for a day of
 * mixed traffic, torn/corrupt lines, the stalwart vectors, ledger, pruning, mail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <zlib.h>

#include "sts/tlsrpt/tlsrpt.h"

#define DAY "2026-06-18"
#define DAY_START 1781740800LL           /* 2026-06-18T00:00:00Z */
#define VEC TEST_VECTORS "/stalwart-mail-auth-tlsrpt/"

static char spool[256];

static int setup(void **state)
{
	(void)state;
	snprintf(spool, sizeof(spool), "/tmp/tlsrpt-unit-XXXXXX");
	assert_non_null(mkdtemp(spool));
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", spool);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void test_days(void **state)
{
	char day[TLSRPT_DAY_LEN + 1];
	int64_t t;

	(void)state;
	assert_int_equal(tlsrpt_day_parse(DAY, &t), 0);
	assert_int_equal(t, DAY_START);
	tlsrpt_day_of(DAY_START + 86399, day);
	assert_string_equal(day, DAY);
	tlsrpt_day_of(DAY_START + 86400, day);
	assert_string_equal(day, "2026-06-19");
	assert_int_equal(tlsrpt_day_parse("2024-02-29", &t), 0);
	assert_int_equal(tlsrpt_day_parse("2023-02-29", &t), -1);
	assert_int_equal(tlsrpt_day_parse("2026-13-01", &t), -1);
	assert_int_equal(tlsrpt_day_parse("2026-6-18", &t), -1);
	assert_int_equal(tlsrpt_day_parse("2026-06-18x", &t), -1);
	assert_int_equal(tlsrpt_day_parse("1969-12-31", &t), -1);
}

static void test_result_names(void **state)
{
	enum smtp_tls_result r;
	unsigned i;

	(void)state;
	for (i = 0; i < SMTP_TLS_RESULT_COUNT; i++) {
		assert_int_equal(smtp_tls_result_parse(smtp_tls_result_name(i), &r), 0);
		assert_int_equal(r, i);
	}
	/* the DANE result types of RFC 8460 §4.3.2.1 are ours since DANE */
	assert_int_equal(smtp_tls_result_parse("tlsa-invalid", &r), 0);
	assert_int_equal(r, SMTP_TLS_RESULT_TLSA_INVALID);
	assert_int_equal(smtp_tls_result_parse("dnssec-invalid", &r), 0);
	assert_int_equal(r, SMTP_TLS_RESULT_DNSSEC_INVALID);
	assert_int_equal(smtp_tls_result_parse("dane-required", &r), 0);
	assert_int_equal(r, SMTP_TLS_RESULT_DANE_REQUIRED);
	assert_int_equal(smtp_tls_result_parse("tlsa-valid", &r), -1);
	assert_int_equal(smtp_tls_result_parse("", &r), -1);
}

static struct sts_policy policy_of(const char *text)
{
	struct sts_policy p;
	struct sts_policy_err e;

	assert_int_equal(sts_policy_parse(text, strlen(text), &p, &e), 0);
	return p;
}

/* The mixed day: a.test (enforce, two MX), b.test (no policy), c.test
 * (TXT but fetch error / invalid), and a policy change on a.test. */
static void record_mixed_day(struct tlsrpt_store *st)
{
	struct sts_policy pa = policy_of("version: STSv1\nmode: enforce\nmx: mx1.a.test\n"
					 "mx: *.b.a.test\nmax_age: 86400\n");
	struct sts_policy pa2 = policy_of("version: STSv1\nmode: testing\nmx: mx1.a.test\n"
					  "max_age: 600\n");
	struct tlsrpt_session s;
	int i;

	memset(&s, 0, sizeof(s));
	s.domain = "A.test.";                  /* case and trailing dot normalized */
	s.policy = &pa;
	s.sending_mta_ip = "192.0.2.10";
	s.mx_host = "mx1.a.test";
	s.mx_ip = "127.0.1.1";
	for (i = 0; i < 7; i++) {
		s.when = DAY_START + 10 + i;
		assert_int_equal(tlsrpt_record(st, &s), 0);
	}
	s.mx_host = "mx2.b.a.test";
	s.mx_ip = "2001:db8::25";
	s.when = DAY_START + 100;
	assert_int_equal(tlsrpt_record(st, &s), 0);
	/* failures on a.test, each type, some twice */
	{
		static const enum smtp_tls_result fails[] = {
			SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED, SMTP_TLS_RESULT_CERTIFICATE_HOST_MISMATCH,
			SMTP_TLS_RESULT_CERTIFICATE_EXPIRED, SMTP_TLS_RESULT_CERTIFICATE_NOT_TRUSTED,
			SMTP_TLS_RESULT_VALIDATION_FAILURE, SMTP_TLS_RESULT_CERTIFICATE_EXPIRED,
		};
		for (i = 0; i < 6; i++) {
			s.result = fails[i];
			s.mx_host = "mx1.a.test";
			s.mx_ip = "127.0.1.1";
			s.reason = fails[i] == SMTP_TLS_RESULT_VALIDATION_FAILURE ? "tls alert\t70\n" : NULL;
			s.when = DAY_START + 200 + i;
			assert_int_equal(tlsrpt_record(st, &s), 0);
		}
	}
	s.result = SMTP_TLS_RESULT_SUCCESS;
	s.reason = NULL;
	s.policy = &pa2;
	s.when = DAY_START + 86399;
	assert_int_equal(tlsrpt_record(st, &s), 0);

	memset(&s, 0, sizeof(s));
	s.domain = "b.test";
	s.sending_mta_ip = "192.0.2.10";
	s.mx_host = "mx.b.test";
	s.mx_ip = "127.0.2.1";
	for (i = 0; i < 3; i++) {
		s.when = DAY_START + 300 + i;
		assert_int_equal(tlsrpt_record(st, &s), 0);
	}
	s.result = SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED;
	assert_int_equal(tlsrpt_record(st, &s), 0);

	memset(&s, 0, sizeof(s));
	s.domain = "c.test";
	s.sts_published = true;
	s.result = SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR;
	s.when = DAY_START + 400;
	assert_int_equal(tlsrpt_record(st, &s), 0);
	s.result = SMTP_TLS_RESULT_STS_POLICY_INVALID;
	assert_int_equal(tlsrpt_record(st, &s), 0);
	s.result = SMTP_TLS_RESULT_STS_WEBPKI_INVALID;
	assert_int_equal(tlsrpt_record(st, &s), 0);
	/* another day: must not show up */
	s.when = DAY_START + 86400;
	assert_int_equal(tlsrpt_record(st, &s), 0);
}

static const char *EXPECT_A =
	"{\"organization-name\": \"Example Org\", \"date-range\": {\"start-datetime\": "
	"\"2026-06-18T00:00:00Z\", \"end-datetime\": \"2026-06-18T23:59:59Z\"}, "
	"\"contact-info\": \"tlsrpt@relay.test\", \"report-id\": \"2026-06-18.a.test@relay.test\", "
	"\"policies\": [{\"policy\": {\"policy-type\": \"sts\", \"policy-string\": "
	"[\"version: STSv1\", \"mode: enforce\", \"mx: mx1.a.test\", \"mx: *.b.a.test\", "
	"\"max_age: 86400\"], \"policy-domain\": \"a.test\", \"mx-host\": [\"mx1.a.test\", "
	"\"*.b.a.test\"]}, \"summary\": {\"total-successful-session-count\": 8, "
	"\"total-failure-session-count\": 6}, \"failure-details\": ["
	"{\"result-type\": \"certificate-expired\", \"sending-mta-ip\": \"192.0.2.10\", "
	"\"receiving-mx-hostname\": \"mx1.a.test\", \"receiving-ip\": \"127.0.1.1\", "
	"\"failed-session-count\": 2}, "
	"{\"result-type\": \"certificate-host-mismatch\", \"sending-mta-ip\": \"192.0.2.10\", "
	"\"receiving-mx-hostname\": \"mx1.a.test\", \"receiving-ip\": \"127.0.1.1\", "
	"\"failed-session-count\": 1}, "
	"{\"result-type\": \"certificate-not-trusted\", \"sending-mta-ip\": \"192.0.2.10\", "
	"\"receiving-mx-hostname\": \"mx1.a.test\", \"receiving-ip\": \"127.0.1.1\", "
	"\"failed-session-count\": 1}, "
	"{\"result-type\": \"starttls-not-supported\", \"sending-mta-ip\": \"192.0.2.10\", "
	"\"receiving-mx-hostname\": \"mx1.a.test\", \"receiving-ip\": \"127.0.1.1\", "
	"\"failed-session-count\": 1}, "
	"{\"result-type\": \"validation-failure\", \"sending-mta-ip\": \"192.0.2.10\", "
	"\"receiving-mx-hostname\": \"mx1.a.test\", \"receiving-ip\": \"127.0.1.1\", "
	"\"failed-session-count\": 1, \"failure-reason-code\": \"tls alert?70?\"}]}, "
	"{\"policy\": {\"policy-type\": \"sts\", \"policy-string\": [\"version: STSv1\", "
	"\"mode: testing\", \"mx: mx1.a.test\", \"max_age: 600\"], \"policy-domain\": "
	"\"a.test\", \"mx-host\": [\"mx1.a.test\"]}, \"summary\": "
	"{\"total-successful-session-count\": 1, \"total-failure-session-count\": 0}}]}";

static json_t *report_of(const struct tlsrpt_day *d, const char *domain)
{
	struct tlsrpt_meta meta = { "Example Org", "tlsrpt@relay.test" };
	json_t *r = tlsrpt_report_build(d, domain, &meta);
	char err[256];

	assert_non_null(r);
	if (tlsrpt_validate(r, TLSRPT_VALIDATE_STRICT, err, sizeof(err)) != 0)
		fail_msg("own report fails strict validation: %s", err);
	return r;
}

static void assert_json_equal(json_t *got, const char *want_text)
{
	json_t *want = json_loads(want_text, 0, NULL);
	char *g;

	assert_non_null(want);
	if (!json_equal(got, want)) {
		g = json_dumps(got, JSON_COMPACT);
		fail_msg("report differs:\n got %s\nwant %s", g, want_text);
	}
	json_decref(want);
}

static void test_mixed_day(void **state)
{
	struct tlsrpt_store *st;
	struct tlsrpt_day *d;
	char err[256];
	json_t *r;
	size_t len;
	char *text;

	(void)state;
	assert_int_equal(tlsrpt_store_open(spool, NULL, &st, err, sizeof(err)), 0);
	record_mixed_day(st);
	assert_int_equal(tlsrpt_store_sync(st), 0);
	tlsrpt_store_close(st);

	assert_int_equal(tlsrpt_day_load(spool, DAY, &d, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_day_bad_lines(d), 0);
	assert_int_equal(tlsrpt_day_ndomains(d), 3);
	assert_string_equal(tlsrpt_day_domain(d, 0), "a.test");
	assert_string_equal(tlsrpt_day_domain(d, 1), "b.test");
	assert_string_equal(tlsrpt_day_domain(d, 2), "c.test");

	r = report_of(d, "a.test");
	/* the 8 enforce successes span two MX hosts and IPs; one aggregate */
	assert_json_equal(r, EXPECT_A);
	json_decref(r);

	r = report_of(d, "b.test");
	assert_json_equal(r,
		"{\"organization-name\": \"Example Org\", \"date-range\": {\"start-datetime\": "
		"\"2026-06-18T00:00:00Z\", \"end-datetime\": \"2026-06-18T23:59:59Z\"}, "
		"\"contact-info\": \"tlsrpt@relay.test\", \"report-id\": "
		"\"2026-06-18.b.test@relay.test\", \"policies\": [{\"policy\": {\"policy-type\": "
		"\"no-policy-found\", \"policy-domain\": \"b.test\"}, \"summary\": "
		"{\"total-successful-session-count\": 3, \"total-failure-session-count\": 1}, "
		"\"failure-details\": [{\"result-type\": \"starttls-not-supported\", "
		"\"sending-mta-ip\": \"192.0.2.10\", \"receiving-mx-hostname\": \"mx.b.test\", "
		"\"receiving-ip\": \"127.0.2.1\", \"failed-session-count\": 1}]}]}");
	json_decref(r);

	r = report_of(d, "c.test");
	text = json_dumps(json_object_get(r, "policies"), JSON_COMPACT);
	assert_string_equal(text,
		"[{\"policy\":{\"policy-type\":\"sts\",\"policy-domain\":\"c.test\"},"
		"\"summary\":{\"total-successful-session-count\":0,\"total-failure-session-count\":3},"
		"\"failure-details\":[{\"result-type\":\"sts-policy-fetch-error\",\"failed-session-count\":1},"
		"{\"result-type\":\"sts-policy-invalid\",\"failed-session-count\":1},"
		"{\"result-type\":\"sts-webpki-invalid\",\"failed-session-count\":1}]}]");
	free(text);
	json_decref(r);
	assert_null(tlsrpt_report_build(d, "nope.test", &(struct tlsrpt_meta){ "o", "a@b" }));
	tlsrpt_day_free(d);

	/* the next day holds exactly the one late session */
	assert_int_equal(tlsrpt_day_load(spool, "2026-06-19", &d, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_day_ndomains(d), 1);
	tlsrpt_day_free(d);
	/* a day without data is empty, not an error */
	assert_int_equal(tlsrpt_day_load(spool, "2026-01-01", &d, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_day_ndomains(d), 0);
	tlsrpt_day_free(d);

	/* the file is plain lines: one per session */
	{
		char path[400];

		snprintf(path, sizeof(path), "%s/tlsrpt/%s/sessions", spool, DAY);
		text = slurp(path, &len);
		{
			size_t n = 0, i;

			for (i = 0; i < len; i++)
				n += text[i] == '\n';
			assert_int_equal(n, 8 + 6 + 1 + 4 + 3);
		}
		free(text);
	}
}

/* Crash leftovers: a torn last line is skipped and does not swallow the
 * next record; a flipped byte fails the CRC; nothing is counted twice. */
static void test_torn_and_corrupt(void **state)
{
	struct tlsrpt_store *st;
	struct tlsrpt_session s = { .domain = "t.test", .result = SMTP_TLS_RESULT_SUCCESS,
				    .when = DAY_START + 5 };
	struct tlsrpt_day *d;
	char err[256], path[400], line[1024];
	json_t *r;
	FILE *f;
	int n;

	(void)state;
	assert_int_equal(tlsrpt_store_open(spool, NULL, &st, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_record(st, &s), 0);
	assert_int_equal(tlsrpt_record(st, &s), 0);
	tlsrpt_store_close(st);

	snprintf(path, sizeof(path), "%s/tlsrpt/%s/sessions", spool, DAY);
	n = tlsrpt_line_format(&s, DAY_START + 6, line, sizeof(line));
	assert_true(n > 20);
	f = fopen(path, "a");
	assert_non_null(f);
	/* a corrupt complete line: one byte changed */
	line[5] = line[5] == '1' ? '2' : '1';
	fwrite(line, 1, (size_t)n, f);
	line[5] = line[5] == '1' ? '2' : '1';
	/* a torn line: the first half only */
	fwrite(line, 1, (size_t)n / 2, f);
	fclose(f);

	/* a new process appends after the torn line */
	assert_int_equal(tlsrpt_store_open(spool, NULL, &st, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_record(st, &s), 0);
	tlsrpt_store_close(st);

	assert_int_equal(tlsrpt_day_load(spool, DAY, &d, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_day_bad_lines(d), 2);
	r = report_of(d, "t.test");
	assert_int_equal(json_integer_value(json_object_get(
		json_object_get(json_array_get(json_object_get(r, "policies"), 0), "summary"),
		"total-successful-session-count")), 3);
	json_decref(r);
	tlsrpt_day_free(d);

	/* buffer loader: same rules */
	{
		char buf[2048];
		size_t o = 0;

		o += (size_t)tlsrpt_line_format(&s, DAY_START + 1, buf + o, sizeof(buf) - o);
		o += (size_t)tlsrpt_line_format(&s, DAY_START + 2, buf + o, sizeof(buf) - o);
		memcpy(buf + o, "T1\tgarbage\n", 11);
		o += 11;
		o += (size_t)tlsrpt_line_format(&s, DAY_START + 3, buf + o, sizeof(buf) - o) - 3;
		assert_int_equal(tlsrpt_day_load_buf(DAY, buf, o, &d), 0);
		assert_int_equal(tlsrpt_day_bad_lines(d), 2);
		assert_int_equal(tlsrpt_day_ndomains(d), 1);
		tlsrpt_day_free(d);
	}
}

/* RFC 8460 §4.4 policy-string: the fetched policy's own lines (extension
 * fields, spelling and order as published, CR removed), stored once per
 * day; two texts of one policy are two policies; without the stored copy
 * the lines are rebuilt; old T1 lines are still read. */
static void test_policy_string_as_published(void **state)
{
	static const char text1[] = "version: STSv1\r\nmode: enforce\r\nmx: MX1.Example.TEST.\r\n"
				    "x-comment: kept as published\r\n\r\nmx: *.b.example.test\r\n"
				    "max_age: 63072000\r\n";
	static const char text2[] = "version: STSv1\nmode: enforce\nmx: mx1.example.test\n"
				    "mx: *.b.example.test\nmax_age: 31557600\n";
	struct sts_policy p1 = policy_of(text1), p2 = policy_of(text2);
	struct tlsrpt_session s = { .domain = "example.test", .result = SMTP_TLS_RESULT_SUCCESS,
				    .sending_mta_ip = "192.0.2.1", .mx_host = "mx1.example.test",
				    .mx_ip = "127.0.3.1" };
	char err[256], path[600], h1[TLSRPT_POLICY_HASH_LEN + 1], h2[TLSRPT_POLICY_HASH_LEN + 1];
	struct tlsrpt_store *st;
	struct tlsrpt_day *d;
	json_t *r;
	char *got;
	size_t len;
	int i;

	(void)state;
	/* the clamped max_age and the normalised mx are what the two share */
	assert_int_equal(p1.max_age, 31557600);
	assert_int_equal(tlsrpt_store_open(spool, NULL, &st, err, sizeof(err)), 0);
	s.policy = &p1;
	s.policy_text = text1;
	s.policy_text_len = sizeof(text1) - 1;
	for (i = 0; i < 3; i++) {
		s.when = DAY_START + 60 + i;
		assert_int_equal(tlsrpt_record(st, &s), 0);
	}
	s.policy = &p2;
	s.policy_text = text2;
	s.policy_text_len = sizeof(text2) - 1;
	s.when = DAY_START + 120;
	assert_int_equal(tlsrpt_record(st, &s), 0);
	tlsrpt_store_close(st);

	/* one file per policy text, holding exactly the text */
	tlsrpt_policy_hash(text1, sizeof(text1) - 1, h1);
	tlsrpt_policy_hash(text2, sizeof(text2) - 1, h2);
	assert_string_not_equal(h1, h2);
	snprintf(path, sizeof(path), "%s/tlsrpt/%s/policy-%s", spool, DAY, h1);
	got = slurp(path, &len);
	assert_int_equal(len, sizeof(text1) - 1);
	assert_memory_equal(got, text1, len);
	free(got);

	assert_int_equal(tlsrpt_day_load(spool, DAY, &d, err, sizeof(err)), 0);
	r = report_of(d, "example.test");
	got = json_dumps(json_object_get(r, "policies"), JSON_COMPACT | JSON_SORT_KEYS);
	{
		/* sorted by key: the policy texts in hash order */
		const char *e1 = "{\"policy\":{\"mx-host\":[\"mx1.example.test\",\"*.b.example.test\"],"
				 "\"policy-domain\":\"example.test\",\"policy-string\":[\"version: STSv1\","
				 "\"mode: enforce\",\"mx: MX1.Example.TEST.\",\"x-comment: kept as published\","
				 "\"mx: *.b.example.test\",\"max_age: 63072000\"],\"policy-type\":\"sts\"},"
				 "\"summary\":{\"total-failure-session-count\":0,"
				 "\"total-successful-session-count\":3}}";
		const char *e2 = "{\"policy\":{\"mx-host\":[\"mx1.example.test\",\"*.b.example.test\"],"
				 "\"policy-domain\":\"example.test\",\"policy-string\":[\"version: STSv1\","
				 "\"mode: enforce\",\"mx: mx1.example.test\",\"mx: *.b.example.test\","
				 "\"max_age: 31557600\"],\"policy-type\":\"sts\"},"
				 "\"summary\":{\"total-failure-session-count\":0,"
				 "\"total-successful-session-count\":1}}";
		char want[2048];

		snprintf(want, sizeof(want), "[%s,%s]", strcmp(h1, h2) < 0 ? e1 : e2,
			 strcmp(h1, h2) < 0 ? e2 : e1);
		assert_string_equal(got, want);
	}
	free(got);
	json_decref(r);
	tlsrpt_day_free(d);

	/* the stored copy gone (or damaged): the lines are rebuilt */
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof(path), "%s/tlsrpt/%s/policy-%s", spool, DAY, h2);
	{
		FILE *f = fopen(path, "a");

		assert_non_null(f);
		fputs("x: tampered\n", f);
		fclose(f);
	}
	assert_int_equal(tlsrpt_day_load(spool, DAY, &d, err, sizeof(err)), 0);
	r = report_of(d, "example.test");
	for (i = 0; i < 2; i++) {
		json_t *ps = json_object_get(json_object_get(json_array_get(
			json_object_get(r, "policies"), (size_t)i), "policy"), "policy-string");

		assert_int_equal(json_array_size(ps), 5);
		assert_string_equal(json_string_value(json_array_get(ps, 2)), "mx: mx1.example.test");
		assert_string_equal(json_string_value(json_array_get(ps, 4)), "max_age: 31557600");
	}
	json_decref(r);
	tlsrpt_day_free(d);

	/* a T1 line (before the policy text was kept) still counts */
	{
		char line[256], buf[300];
		int n = snprintf(line, sizeof(line),
				 "T1\t%lld\told.test\tsts\tenforce\t86400\tmx.old.test\tsuccess"
				 "\t192.0.2.1\tmx.old.test\t127.0.3.2\t-\t", DAY_START + 9);

		snprintf(buf, sizeof(buf), "%s%08lx\n", line,
			 (unsigned long)crc32(0L, (const Bytef *)line, (uInt)n));
		assert_int_equal(tlsrpt_day_load_buf(DAY, buf, strlen(buf), &d), 0);
		assert_int_equal(tlsrpt_day_bad_lines(d), 0);
		r = report_of(d, "old.test");
		got = json_dumps(json_object_get(json_object_get(json_array_get(
			json_object_get(r, "policies"), 0), "policy"), "policy-string"), JSON_COMPACT);
		assert_string_equal(got, "[\"version: STSv1\",\"mode: enforce\",\"mx: mx.old.test\","
					 "\"max_age: 86400\"]");
		free(got);
		json_decref(r);
		tlsrpt_day_free(d);
	}
}

/* DANE sessions: policy-type tlsa with the records as stored, the MX host,
 * failures of the DANE result types; a failed lookup has no records. */
static void test_tlsa_sessions(void **state)
{
	static const char recs[] = "3 1 1 0A0B\n2 0 1 C0FFEE\n";
	struct tlsrpt_store *st;
	struct tlsrpt_session s;
	struct tlsrpt_day *d;
	json_t *r;
	char err[256];
	int i;

	(void)state;
	assert_int_equal(tlsrpt_store_open(spool, NULL, &st, err, sizeof(err)), 0);
	memset(&s, 0, sizeof(s));
	s.domain = "dane.test";
	s.tlsa = true;
	s.tlsa_text = recs;
	s.tlsa_text_len = strlen(recs);
	s.sending_mta_ip = "192.0.2.10";
	s.mx_host = "mx.dane.test";
	s.mx_ip = "127.0.3.1";
	for (i = 0; i < 2; i++) {
		s.when = DAY_START + 10 + i;
		assert_int_equal(tlsrpt_record(st, &s), 0);
	}
	s.result = SMTP_TLS_RESULT_TLSA_INVALID;
	s.reason = "TLSA record mismatch";
	assert_int_equal(tlsrpt_record(st, &s), 0);
	memset(&s, 0, sizeof(s));
	s.domain = "dane.test";
	s.tlsa = true;
	s.mx_host = "mx2.dane.test";
	s.result = SMTP_TLS_RESULT_DNSSEC_INVALID;
	s.when = DAY_START + 20;
	assert_int_equal(tlsrpt_record(st, &s), 0);
	tlsrpt_store_close(st);
	assert_int_equal(tlsrpt_day_load(spool, DAY, &d, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_day_bad_lines(d), 0);
	r = report_of(d, "dane.test");
	json_object_del(r, "organization-name");
	json_object_del(r, "date-range");
	json_object_del(r, "contact-info");
	json_object_del(r, "report-id");
	assert_json_equal(
		r, "{\"policies\": ["
		   "{\"policy\": {\"policy-type\": \"tlsa\", \"policy-string\": [\"3 1 1 0A0B\", "
		   "\"2 0 1 C0FFEE\"], \"policy-domain\": \"dane.test\", \"mx-host\": "
		   "[\"mx.dane.test\"]}, \"summary\": {\"total-successful-session-count\": 2, "
		   "\"total-failure-session-count\": 1}, \"failure-details\": [{\"result-type\": "
		   "\"tlsa-invalid\", \"sending-mta-ip\": \"192.0.2.10\", "
		   "\"receiving-mx-hostname\": \"mx.dane.test\", \"receiving-ip\": \"127.0.3.1\", "
		   "\"failed-session-count\": 1, \"failure-reason-code\": \"TLSA record mismatch\"}]}, "
		   "{\"policy\": {\"policy-type\": \"tlsa\", \"policy-string\": [], "
		   "\"policy-domain\": \"dane.test\", \"mx-host\": [\"mx2.dane.test\"]}, "
		   "\"summary\": {\"total-successful-session-count\": 0, "
		   "\"total-failure-session-count\": 1}, \"failure-details\": [{\"result-type\": "
		   "\"dnssec-invalid\", \"receiving-mx-hostname\": \"mx2.dane.test\", "
		   "\"failed-session-count\": 1}]}]}");
	json_decref(r);
	tlsrpt_day_free(d);
}

static void test_store_with_loop(void **state)
{
	uv_loop_t loop;
	struct tlsrpt_store *st;
	struct tlsrpt_session s = { .domain = "loop.test", .result = SMTP_TLS_RESULT_SUCCESS,
				    .when = DAY_START + 7 };
	struct tlsrpt_day *d;
	char err[256];
	int i;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(tlsrpt_store_open(spool, &loop, &st, err, sizeof(err)), 0);
	for (i = 0; i < 100; i++)
		assert_int_equal(tlsrpt_record(st, &s), 0);
	/* the unref'd timer alone does not keep the loop running */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	tlsrpt_store_close(st);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(tlsrpt_day_load(spool, DAY, &d, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_day_ndomains(d), 1);
	tlsrpt_day_free(d);
}

static void test_vectors(void **state)
{
	static const char *const strict_ok[] = { "rpt01.json", "rpt02.json" };
	char path[512], err[256];
	size_t len, i;
	char *buf;

	(void)state;
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), VEC "%s", strict_ok[i]);
		buf = slurp(path, &len);
		if (tlsrpt_validate_bytes(buf, len, TLSRPT_VALIDATE_STRICT, err, sizeof(err)) != 0)
			fail_msg("%s: %s", strict_ok[i], err);
		assert_int_equal(tlsrpt_validate_bytes(buf, len, TLSRPT_VALIDATE_LENIENT, err,
						       sizeof(err)), 0);
		free(buf);
	}
	/* rpt03 has policy-type "invalid-policy-type", no policy-domain and no
	 * failure count: a receiver accepts it, the RFC field list does not. */
	buf = slurp(VEC "rpt03.json", &len);
	assert_int_equal(tlsrpt_validate_bytes(buf, len, TLSRPT_VALIDATE_LENIENT, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_validate_bytes(buf, len, TLSRPT_VALIDATE_STRICT, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "report.policies[0]"));
	free(buf);
}

struct vcase {
	const char *json;
	int strict, lenient;    /* 0 = valid, -1 = invalid */
	const char *needle;     /* in the strict error */
};

#define HDR "\"organization-name\":\"O\",\"date-range\":{\"start-datetime\":\"2026-06-18T00:00:00Z\"," \
	    "\"end-datetime\":\"2026-06-18T23:59:59Z\"},\"contact-info\":\"a@b.test\",\"report-id\":\"x\""
#define POL(p, s, f) "{" HDR ",\"policies\":[{\"policy\":{" p "},\"summary\":{" s "}" f "}]}"
#define STS "\"policy-type\":\"sts\",\"policy-domain\":\"d.test\""
#define SUM "\"total-successful-session-count\":1,\"total-failure-session-count\":0"

static const struct vcase vcases[] = {
	{ POL(STS, SUM, ""), 0, 0, NULL },
	{ POL(STS ",\"policy-string\":[\"version: STSv1\"],\"mx-host\":[\"a\"]", SUM, ""), 0, 0, NULL },
	{ POL(STS ",\"mx-host\":\"a\"", SUM, ""), -1, 0, "mx-host" },
	{ POL(STS ",\"policy-string\":\"x\"", SUM, ""), -1, -1, "policy-string" },
	{ POL("\"policy-type\":\"dane\",\"policy-domain\":\"d\"", SUM, ""), -1, 0, "policy-type" },
	{ POL("\"policy-type\":\"sts\"", SUM, ""), -1, 0, "policy-domain" },
	{ POL(STS, "\"total-successful-session-count\":1", ""), -1, 0, "total-failure" },
	{ POL(STS, "\"total-successful-session-count\":-1,\"total-failure-session-count\":0", ""),
	  -1, -1, "non-negative" },
	{ POL(STS, "\"total-successful-session-count\":\"1\",\"total-failure-session-count\":0", ""),
	  -1, -1, "integer" },
	{ POL(STS, SUM, ",\"failure-details\":[{\"result-type\":\"certificate-expired\","
	  "\"failed-session-count\":2,\"sending-mta-ip\":\"192.0.2.1\",\"receiving-ip\":\"::1\"}]"),
	  0, 0, NULL },
	{ POL(STS, SUM, ",\"failure-details\":[{\"result-type\":\"bogus\",\"failed-session-count\":2}]"),
	  -1, 0, "result-type" },
	{ POL(STS, SUM, ",\"failure-details\":[{\"result-type\":\"certificate-expired\"}]"),
	  -1, 0, "failed-session-count" },
	{ POL(STS, SUM, ",\"failure-details\":[{\"result-type\":\"certificate-expired\","
	  "\"failed-session-count\":2,\"sending-mta-ip\":\"mx.example\"}]"), -1, -1, "IP address" },
	{ POL(STS, SUM, ",\"failure-details\":{}"), -1, -1, "failure-details" },
	{ "{" HDR ",\"policies\":[]}", -1, 0, "empty" },
	{ "{" HDR "}", -1, -1, "policies" },
	{ "[1]", -1, -1, "[0] report: must be a JSON object" },
	{ "\"text\"", -1, -1, "JSON" },
	{ "[]", 0, 0, NULL },    /* `tlsrpt show --json` of a quiet day */
	{ "{\"organization-name\":\"O\",\"date-range\":{\"start-datetime\":\"2026-06-18\","
	  "\"end-datetime\":\"2026-06-18T23:59:59Z\"},\"contact-info\":\"a@b\",\"report-id\":\"x\","
	  "\"policies\":[]}", -1, -1, "RFC 3339" },
	{ "{\"organization-name\":\"O\",\"date-range\":{\"start-datetime\":\"2026-06-19T00:00:00+02:00\","
	  "\"end-datetime\":\"2026-06-18T23:00:00Z\"},\"contact-info\":\"a@b\",\"report-id\":\"x\","
	  "\"policies\":[{\"policy\":{" STS "},\"summary\":{" SUM "}}]}", 0, 0, NULL },
	{ "{\"organization-name\":\"O\",\"date-range\":{\"start-datetime\":\"2026-06-19T00:00:00Z\","
	  "\"end-datetime\":\"2026-06-18T21:00:00Z\"},\"contact-info\":\"a@b\",\"report-id\":\"x\","
	  "\"policies\":[{\"policy\":{" STS "},\"summary\":{" SUM "}}]}", -1, -1, "ends before" },
	{ "{\"organization-name\":\"O\",\"date-range\":{\"start-datetime\":\"2026-06-18T00:00:00Z\","
	  "\"end-datetime\":\"2026-06-18T21:00:00Z\"},\"report-id\":\"x\","
	  "\"policies\":[{\"policy\":{" STS "},\"summary\":{" SUM "}}]}", -1, 0, "contact-info" },
	{ "{\"organization-name\":\"O\",\"organization-name\":\"P\"}", -1, -1, "JSON" },
};

static void test_validator_table(void **state)
{
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(vcases) / sizeof(vcases[0]); i++) {
		const struct vcase *c = &vcases[i];
		int s = tlsrpt_validate_bytes(c->json, strlen(c->json), TLSRPT_VALIDATE_STRICT, err,
					      sizeof(err));

		if (s != c->strict)
			fail_msg("case %zu strict: got %d (%s)", i, s, s ? err : "");
		if (s != 0 && c->needle != NULL && strstr(err, c->needle) == NULL)
			fail_msg("case %zu: error '%s' lacks '%s'", i, err, c->needle);
		s = tlsrpt_validate_bytes(c->json, strlen(c->json), TLSRPT_VALIDATE_LENIENT, err,
					  sizeof(err));
		if (s != c->lenient)
			fail_msg("case %zu lenient: got %d (%s)", i, s, s ? err : "");
	}
}

static void test_gzip(void **state)
{
	const char *text = "{\"a\": \"hello hello hello hello\"}";
	unsigned char *gz, *back;
	size_t gzlen, backlen;
	char err[128];

	(void)state;
	assert_int_equal(tlsrpt_gzip(text, strlen(text), &gz, &gzlen), 0);
	assert_true(gzlen > 18 && gz[0] == 0x1f && gz[1] == 0x8b);
	assert_int_equal(tlsrpt_gunzip(gz, gzlen, 1000, &back, &backlen), 0);
	assert_int_equal(backlen, strlen(text));
	assert_memory_equal(back, text, backlen);
	free(back);
	/* the limit holds, truncation is an error */
	assert_int_equal(tlsrpt_gunzip(gz, gzlen, 10, &back, &backlen), -1);
	assert_int_equal(tlsrpt_gunzip(gz, gzlen - 5, 1000, &back, &backlen), -1);
	/* validate_bytes sees through gzip */
	assert_int_equal(tlsrpt_validate_bytes(gz, gzlen, TLSRPT_VALIDATE_LENIENT, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "organization-name"));
	free(gz);
}

static void test_ledger_and_prune(void **state)
{
	char path[400];
	struct stat sb;

	(void)state;
	assert_false(tlsrpt_sent_contains(spool, DAY, "a.test", "mailto:r@a.test"));
	assert_int_equal(tlsrpt_sent_add(spool, DAY, "a.test", "mailto:r@a.test"), 0);
	assert_true(tlsrpt_sent_contains(spool, DAY, "a.test", "mailto:r@a.test"));
	assert_false(tlsrpt_sent_contains(spool, DAY, "a.test", "https://r.a.test/"));
	assert_false(tlsrpt_sent_contains(spool, "2026-06-19", "a.test", "mailto:r@a.test"));
	assert_int_equal(tlsrpt_sent_add(spool, DAY, "a.test", "bad\nrua"), -1);
	assert_int_equal(tlsrpt_sent_add(spool, "2026-06-19", "a.test", "https://r.a.test/"), 0);

	/* retention 2 days: 06-18 goes once 06-21 00:00 has passed */
	assert_int_equal(tlsrpt_prune(spool, DAY_START + 3 * 86400 - 1, 2 * 86400), 0);
	assert_int_equal(tlsrpt_prune(spool, DAY_START + 3 * 86400, 2 * 86400), 1);
	snprintf(path, sizeof(path), "%s/tlsrpt/%s", spool, DAY);
	assert_int_equal(stat(path, &sb), -1);
	snprintf(path, sizeof(path), "%s/tlsrpt/2026-06-19", spool);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(tlsrpt_prune(spool, DAY_START + 10 * 86400, 2 * 86400), 1);
	assert_int_equal(stat(path, &sb), -1);
}

static void test_filename_and_mail(void **state)
{
	char fname[512], err[256], *msg;
	size_t len;
	unsigned char *gz;
	size_t gzlen;
	const char *json = "{}";
	struct tlsrpt_mail m;

	(void)state;
	assert_int_equal(tlsrpt_filename("relay.test", "a.test", DAY_START,
					 "2026-06-18.a.test@relay.test", fname, sizeof(fname)), 0);
	assert_int_equal(strncmp(fname, "relay.test!a.test!1781740800!1781827199!", 40), 0);
	assert_int_equal(strlen(fname), 40 + 16 + 8);
	assert_string_equal(fname + 56, ".json.gz");

	assert_int_equal(tlsrpt_gzip(json, 2, &gz, &gzlen), 0);
	memset(&m, 0, sizeof(m));
	m.from = "tlsrpt@relay.test";
	m.to = "reports@a.test";
	m.domain = "a.test";
	m.submitter = "relay.test";
	m.report_id = "2026-06-18.a.test@relay.test";
	m.hostname = "relay.test";
	m.day_start = DAY_START;
	m.now = DAY_START + 86400 + 900;
	m.gz = gz;
	m.gzlen = gzlen;
	assert_int_equal(tlsrpt_mail_compose(&m, &msg, &len, err, sizeof(err)), 0);
	assert_int_equal(strlen(msg), len);
	assert_non_null(strstr(msg, "\r\nTLS-Report-Domain: a.test\r\n"));
	assert_non_null(strstr(msg, "\r\nTLS-Report-Submitter: relay.test\r\n"));
	assert_non_null(strstr(msg, "\r\nTLS-Required: No\r\n"));
	assert_non_null(strstr(msg, "Subject: Report Domain: a.test\r\n Submitter: relay.test\r\n"
				    " Report-ID: <2026-06-18.a.test@relay.test>\r\n"));
	assert_non_null(strstr(msg, "Content-Type: multipart/report; report-type=\"tlsrpt\""));
	assert_non_null(strstr(msg, "Content-Type: application/tlsrpt+gzip\r\n"));
	assert_non_null(strstr(msg, fname));
	assert_non_null(strstr(msg, "Date: Fri, 19 Jun 2026 00:15:00 +0000\r\n"));
	assert_null(strstr(msg, "DKIM-Signature"));
	/* no bare LF anywhere */
	for (size_t i = 0; i < len; i++)
		if (msg[i] == '\n')
			assert_true(i > 0 && msg[i - 1] == '\r');
	free(msg);
	m.to = "evil@a.test\r\nBcc: x@y";
	assert_int_equal(tlsrpt_mail_compose(&m, &msg, &len, err, sizeof(err)), -1);
	free(gz);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_days),
		cmocka_unit_test(test_result_names),
		cmocka_unit_test_setup_teardown(test_mixed_day, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_and_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_with_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tlsa_sessions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policy_string_as_published, setup, teardown),
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_validator_table),
		cmocka_unit_test(test_gzip),
		cmocka_unit_test_setup_teardown(test_ledger_and_prune, setup, teardown),
		cmocka_unit_test(test_filename_and_mail),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
