/* Unit tests of the MTA-STS policy cache: file format round trip, rejection
 * of corrupt files, store + reload in a temporary directory, atomic writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sts/cache.h"

static const char POLICY[] = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
			     "mx: *.example.net\r\nmax_age: 86400\r\n";

static char tmpdir[256];

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_sts_cache.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[512];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_raw(const char *name, const char *data, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' || (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0))
			n++;
	closedir(d);
	return n;
}

static void test_format_roundtrip(void **state)
{
	struct sts_cache_entry e, back;
	char *buf = NULL, err[128];
	size_t len;

	(void)state;
	memset(&e, 0, sizeof(e));
	snprintf(e.domain, sizeof(e.domain), "example.com");
	snprintf(e.id, sizeof(e.id), "20260101T000000");
	e.fetched_at = 1700000000;
	e.expires_at = 1700086400;
	e.text = (char *)POLICY;
	e.text_len = strlen(POLICY);
	assert_int_equal(sts_cache_format(&e, &buf, &len), 0);
	assert_int_equal(sts_cache_parse(buf, len, &back, err, sizeof(err)), 0);
	assert_string_equal(back.domain, "example.com");
	assert_string_equal(back.id, "20260101T000000");
	assert_int_equal(back.fetched_at, 1700000000);
	assert_int_equal(back.expires_at, 1700086400);
	assert_int_equal(back.text_len, strlen(POLICY));
	assert_memory_equal(back.text, POLICY, strlen(POLICY));
	assert_int_equal(back.mode, STS_MODE_ENFORCE);
	assert_int_equal(back.max_age, 86400);
	assert_true(back.has_policy);
	free(back.text);

	/* every truncation of a valid file is rejected */
	for (size_t cut = 0; cut < len; cut++) {
		struct sts_cache_entry t;

		assert_int_equal(sts_cache_parse(buf, cut, &t, err, sizeof(err)), -1);
	}
	free(buf);
}

struct bad_case {
	const char *what;
	const char *file;
};

static void test_parse_rejects(void **state)
{
	static const char body[] = "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 600\n";
	static const struct bad_case cases[] = {
		{ "bad magic", "STSRELAY-STS-CACHE 2\ndomain a.example\nid 1\nfetched_at 100\n"
			       "expires_at 700\nlength 56\n\n" },
		{ "uppercase domain", "STSRELAY-STS-CACHE 1\ndomain A.example\nid 1\nfetched_at 100\n"
				      "expires_at 700\nlength 56\n\n" },
		{ "path in domain", "STSRELAY-STS-CACHE 1\ndomain ../x\nid 1\nfetched_at 100\n"
				    "expires_at 700\nlength 56\n\n" },
		{ "bad id", "STSRELAY-STS-CACHE 1\ndomain a.example\nid a-b\nfetched_at 100\n"
			    "expires_at 700\nlength 56\n\n" },
		{ "id too long", "STSRELAY-STS-CACHE 1\ndomain a.example\n"
				 "id 123456789012345678901234567890123\nfetched_at 100\n"
				 "expires_at 700\nlength 56\n\n" },
		{ "negative time", "STSRELAY-STS-CACHE 1\ndomain a.example\nid 1\nfetched_at -100\n"
				   "expires_at 700\nlength 56\n\n" },
		{ "expiry mismatch", "STSRELAY-STS-CACHE 1\ndomain a.example\nid 1\nfetched_at 100\n"
				     "expires_at 701\nlength 56\n\n" },
		{ "expiry before fetch", "STSRELAY-STS-CACHE 1\ndomain a.example\nid 1\n"
					 "fetched_at 800\nexpires_at 700\nlength 56\n\n" },
		{ "length too long", "STSRELAY-STS-CACHE 1\ndomain a.example\nid 1\nfetched_at 100\n"
				     "expires_at 700\nlength 57\n\n" },
		{ "length short", "STSRELAY-STS-CACHE 1\ndomain a.example\nid 1\nfetched_at 100\n"
				  "expires_at 700\nlength 55\n\n" },
		{ "no blank line", "STSRELAY-STS-CACHE 1\ndomain a.example\nid 1\nfetched_at 100\n"
				   "expires_at 700\nlength 56\n" },
		{ "keys reordered", "STSRELAY-STS-CACHE 1\nid 1\ndomain a.example\nfetched_at 100\n"
				    "expires_at 700\nlength 56\n\n" },
	};
	char buf[1024], err[128];
	struct sts_cache_entry e;
	size_t i;
	int n;

	(void)state;
	assert_int_equal(strlen(body), 56);
	/* the control case parses */
	n = snprintf(buf, sizeof(buf), "STSRELAY-STS-CACHE 1\ndomain a.example\nid 1\nfetched_at 100\n"
				       "expires_at 700\nlength 56\n\n%s", body);
	assert_int_equal(sts_cache_parse(buf, (size_t)n, &e, err, sizeof(err)), 0);
	free(e.text);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = snprintf(buf, sizeof(buf), "%s%s", cases[i].file, body);
		if (sts_cache_parse(buf, (size_t)n, &e, err, sizeof(err)) == 0) {
			free(e.text);
			fail_msg("accepted: %s", cases[i].what);
		}
	}
	/* a stored text that is not a valid policy */
	n = snprintf(buf, sizeof(buf), "STSRELAY-STS-CACHE 1\ndomain a.example\nid 1\nfetched_at 100\n"
				       "expires_at 700\nlength 7\n\ngarbage");
	assert_int_equal(sts_cache_parse(buf, (size_t)n, &e, err, sizeof(err)), -1);
}

static void test_store_and_reload(void **state)
{
	struct sts_cache *c, *c2;
	struct sts_cache_entry *e, **list;
	size_t nload, nbad, n;

	(void)state;
	assert_int_equal(sts_cache_new(tmpdir, true, &c), 0);
	assert_int_equal(sts_cache_store(c, "example.com", "abc123", 1000, POLICY, strlen(POLICY)), 0);
	assert_int_equal(sts_cache_store(c, "b.example", "x1", 2000,
					 "version: STSv1\nmode: none\nmax_age: 60\n", 38), 0);
	/* an invalid policy is refused and changes nothing */
	assert_int_equal(sts_cache_store(c, "example.com", "zzz", 3000, "garbage", 7), -1);
	e = sts_cache_get(c, "example.com");
	assert_non_null(e);
	assert_string_equal(e->id, "abc123");
	assert_int_equal(e->expires_at, 1000 + 86400);
	/* two files, no temp files left behind */
	assert_int_equal(count_files(tmpdir), 2);
	sts_cache_free(c);

	assert_int_equal(sts_cache_new(tmpdir, false, &c2), 0);
	assert_int_equal(sts_cache_load(c2, &nload, &nbad), 0);
	assert_int_equal(nload, 2);
	assert_int_equal(nbad, 0);
	assert_int_equal(sts_cache_list(c2, &list, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0]->domain, "b.example");
	assert_int_equal(list[0]->mode, STS_MODE_NONE);
	assert_string_equal(list[1]->domain, "example.com");
	assert_string_equal(list[1]->id, "abc123");
	assert_int_equal(list[1]->fetched_at, 1000);
	assert_memory_equal(list[1]->text, POLICY, strlen(POLICY));
	free(list);
	/* a read-only cache never writes */
	assert_int_equal(sts_cache_store(c2, "new.example", "n1", 5, POLICY, strlen(POLICY)), 0);
	assert_int_equal(count_files(tmpdir), 2);
	sts_cache_free(c2);
}

static void test_load_skips_corrupt(void **state)
{
	struct sts_cache *c;
	size_t nload, nbad;
	char good[1024];
	int n;

	(void)state;
	n = snprintf(good, sizeof(good), "STSRELAY-STS-CACHE 1\ndomain ok.example\nid 1\n"
					 "fetched_at 100\nexpires_at 86500\nlength %zu\n\n%s",
		     strlen(POLICY), POLICY);
	write_raw("ok.example.policy", good, (size_t)n);
	/* same content under another domain's name */
	write_raw("other.example.policy", good, (size_t)n);
	write_raw("trunc.example.policy", good, (size_t)n - 5);
	write_raw("empty.example.policy", "", 0);
	write_raw("junk.example.policy", "\x00\x01\x02garbage", 10);
	write_raw("notes.txt", "ignored: not *.policy", 21);
	write_raw(".ok.example.tmp.123", good, (size_t)n);
	assert_int_equal(sts_cache_new(tmpdir, true, &c), 0);
	assert_int_equal(sts_cache_load(c, &nload, &nbad), 0);
	assert_int_equal(nload, 1);
	assert_int_equal(nbad, 4);
	assert_non_null(sts_cache_get(c, "ok.example"));
	assert_null(sts_cache_get(c, "other.example"));
	assert_null(sts_cache_get(c, "trunc.example"));
	/* drop removes the file */
	sts_cache_drop(c, "ok.example");
	assert_false(sts_cache_get(c, "ok.example")->has_policy);
	{
		char p[512];

		snprintf(p, sizeof(p), "%s/ok.example.policy", tmpdir);
		assert_int_equal(access(p, F_OK), -1);
	}
	sts_cache_free(c);
}

static void test_many_domains(void **state)
{
	struct sts_cache *c;
	char name[64];
	int i;

	(void)state;
	assert_int_equal(sts_cache_new(NULL, false, &c), 0);
	for (i = 0; i < 2000; i++) {
		snprintf(name, sizeof(name), "d%d.example", i);
		assert_non_null(sts_cache_touch(c, name));
	}
	for (i = 0; i < 2000; i++) {
		struct sts_cache_entry *e;

		snprintf(name, sizeof(name), "d%d.example", i);
		e = sts_cache_get(c, name);
		assert_non_null(e);
		assert_string_equal(e->domain, name);
	}
	assert_null(sts_cache_get(c, "d2000.example"));
	sts_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_roundtrip),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test_setup_teardown(test_store_and_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_skips_corrupt, setup, teardown),
		cmocka_unit_test(test_many_domains),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
