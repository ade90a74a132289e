/* The DKIM signer: relaxed canonicalization tables (RFC 6376 §3.4), and
 * signatures checked by an independent verifier (dkimpy) incl. tampering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "sts/tlsrpt/dkim.h"
#include "sts/tlsrpt/tlsrpt.h"

#define S(x) x, sizeof(x) - 1

struct bcase {
	const char *in;
	size_t len;
	const char *out;
};

static const struct bcase bodies[] = {
	/* RFC 6376 §3.4.6 example */
	{ S(" C \r\nD \t E\r\n\r\n\r\n"), " C\r\nD E\r\n" },
	{ S(""), "" },
	{ S("\r\n"), "" },
	{ S("\r\n\r\n"), "" },
	{ S("abc"), "abc\r\n" },
	{ S("abc  \t"), "abc\r\n" },
	{ S("a\r\n\r\nb\r\n"), "a\r\n\r\nb\r\n" },
	{ S("a\r\n \r\n\t\r\n"), "a\r\n" },
	{ S("x\ty  z\r\n"), "x y z\r\n" },
	{ S("lone\rcr\nlf\r\n"), "lone\rcr\nlf\r\n" },
};

struct hcase {
	const char *in;
	size_t len;
	const char *out;
};

static const struct hcase headers[] = {
	{ S("A: X"), "a:X" },
	{ S("B : Y\t\r\n\tZ  "), "b:Y Z" },
	{ S("Subject: Report Domain: a.test\r\n Submitter: r.test"),
	  "subject:Report Domain: a.test Submitter: r.test" },
	{ S("TO:\t  <x@y>"), "to:<x@y>" },
	{ S("X-Empty:"), "x-empty:" },
	{ S("X-Empty:   "), "x-empty:" },
};

static void test_canon_body(void **state)
{
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char *c = dkim_canon_body_relaxed(bodies[i].in, bodies[i].len, &n);

		assert_non_null(c);
		if (strcmp(c, bodies[i].out) != 0 || n != strlen(bodies[i].out))
			fail_msg("body case %zu: got '%s'", i, c);
		free(c);
	}
}

static void test_canon_header(void **state)
{
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		char *c = dkim_canon_header_relaxed(headers[i].in, headers[i].len, &n);

		assert_non_null(c);
		if (strcmp(c, headers[i].out) != 0)
			fail_msg("header case %zu: got '%s'", i, c);
		free(c);
	}
	assert_null(dkim_canon_header_relaxed(S("no colon"), &n));
}

/* ---- signing, verified by dkimpy ---- */

static EVP_PKEY *pkey;
static struct dkim_key *key;
static char dir[64];
static char dns_record[2048];

static const char *VERIFY_PY =
	"import sys\n"
	"import dkim\n"
	"msg = open(sys.argv[1], 'rb').read()\n"
	"rec = open(sys.argv[2], 'rb').read()\n"
	"def dnsfunc(name, timeout=5):\n"
	"    if name.rstrip(b'.') != b'sel1._domainkey.relay.test':\n"
	"        return None\n"
	"    return rec\n"
	"ok = dkim.verify(msg, dnsfunc=dnsfunc)\n"
	"sys.exit(0 if ok else 1)\n";

static int have_dkimpy(void)
{
	return system("/usr/bin/python3 -c 'import dkim' >/dev/null 2>&1") == 0;
}

static int setup(void **state)
{
	BIO *bio = BIO_new(BIO_s_mem());
	unsigned char *der = NULL;
	char *pem, err[256], path[128];
	long pemlen;
	int derlen;
	FILE *f;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/dkim-unit-XXXXXX");
	if (mkdtemp(dir) == NULL || bio == NULL)
		return -1;
	pkey = EVP_RSA_gen(2048);
	if (pkey == NULL || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1)
		return -1;
	pemlen = BIO_get_mem_data(bio, &pem);
	if (dkim_key_from_pem(pem, (size_t)pemlen, "relay.test", "sel1", &key, err,
			      sizeof(err)) != 0)
		return -1;
	BIO_free(bio);
	derlen = i2d_PUBKEY(pkey, &der);
	if (derlen <= 0)
		return -1;
	{
		char b64[1024];

		EVP_EncodeBlock((unsigned char *)b64, der, derlen);
		snprintf(dns_record, sizeof(dns_record), "v=DKIM1; k=rsa; p=%s", b64);
	}
	OPENSSL_free(der);
	snprintf(path, sizeof(path), "%s/verify.py", dir);
	f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fputs(VERIFY_PY, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/dns.txt", dir);
	f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fputs(dns_record, f);
	fclose(f);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	dkim_key_free(key);
	EVP_PKEY_free(pkey);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Writes signature + message and asks dkimpy; returns its verdict. */
static int dkimpy_verifies(const char *sig, const char *msg, size_t len)
{
	char path[128], cmd[400];
	FILE *f;
	int rc;

	snprintf(path, sizeof(path), "%s/msg.eml", dir);
	f = fopen(path, "wb");
	assert_non_null(f);
	fputs(sig, f);
	fwrite(msg, 1, len, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s/verify.py %s %s/dns.txt", dir, path, dir);
	rc = system(cmd);
	return rc == 0;
}

static const char MSG1[] =
	"From: tlsrpt@relay.test\r\n"
	"To: reports@a.test\r\n"
	"Subject: Report Domain: a.test\r\n Submitter: relay.test\r\n Report-ID: <x@relay.test>\r\n"
	"Date: Fri, 19 Jun 2026 00:15:00 +0000\r\n"
	"Message-ID: <m1@relay.test>\r\n"
	"X-Not-Signed: whatever\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: text/plain;\r\n\tcharset=us-ascii\r\n"
	"\r\n"
	"Body line with  double  spaces and a trailing tab\t\r\n"
	"\r\n"
	"last line\r\n"
	"\r\n"
	"\r\n";

static void test_sign_verify(void **state)
{
	char *sig = NULL, err[256];

	(void)state;
	if (!have_dkimpy())
		skip();   /* needs Debian's python3-dkim (scripts/test installs it) */
	assert_int_equal(dkim_sign(key, MSG1, sizeof(MSG1) - 1, NULL, 1781828100, &sig, err,
				   sizeof(err)), 0);
	assert_int_equal(strncmp(sig, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; "
				      "d=relay.test; s=sel1;", 70), 0);
	assert_non_null(strstr(sig, "h=from:to:subject:date:message-id:mime-version:"));
	assert_null(strstr(sig, "x-not-signed"));
	assert_null(strstr(sig, "tls-report-domain"));  /* absent headers are not listed */
	/* every line of the field is short */
	{
		const char *p = sig;

		while (*p != '\0') {
			const char *e = strstr(p, "\r\n");

			assert_non_null(e);
			assert_true(e - p <= 78);
			p = e + 2;
		}
	}
	assert_true(dkimpy_verifies(sig, MSG1, sizeof(MSG1) - 1));

	/* relaxed: whitespace changes in the body and header case still verify */
	{
		char alt[sizeof(MSG1) + 16];
		char *p;

		memcpy(alt, MSG1, sizeof(MSG1));
		p = strstr(alt, "double  spaces");
		memcpy(p, "double \t", 8);
		p = strstr(alt, "From:");
		memcpy(p, "FROM:", 5);
		assert_true(dkimpy_verifies(sig, alt, sizeof(MSG1) - 1));
	}
	/* tampering is caught: body text, a signed header */
	{
		char alt[sizeof(MSG1)];

		memcpy(alt, MSG1, sizeof(MSG1));
		*strstr(alt, "last line") = 'L';
		assert_false(dkimpy_verifies(sig, alt, sizeof(MSG1) - 1));
		memcpy(alt, MSG1, sizeof(MSG1));
		*strstr(alt, "reports@a.test") = 'R';
		assert_false(dkimpy_verifies(sig, alt, sizeof(MSG1) - 1));
		/* an unsigned header may change */
		memcpy(alt, MSG1, sizeof(MSG1));
		*strstr(alt, "whatever") = 'W';
		assert_true(dkimpy_verifies(sig, alt, sizeof(MSG1) - 1));
	}
	free(sig);
}

static void test_report_mail_verifies(void **state)
{
	struct tlsrpt_mail m;
	unsigned char *gz;
	size_t gzlen, len;
	char *msg, err[256];
	const char *sigend;
	const char *json = "{\"organization-name\": \"x\"}";

	(void)state;
	if (!have_dkimpy())
		skip();
	assert_int_equal(tlsrpt_gzip(json, strlen(json), &gz, &gzlen), 0);
	memset(&m, 0, sizeof(m));
	m.from = "tlsrpt@relay.test";
	m.to = "reports@a.test";
	m.domain = "a.test";
	m.submitter = "relay.test";
	m.report_id = "2026-06-18.a.test@relay.test";
	m.hostname = "relay.test";
	m.day_start = 1781740800;
	m.now = 1781828100;
	m.gz = gz;
	m.gzlen = gzlen;
	m.dkim = key;
	assert_int_equal(tlsrpt_mail_compose(&m, &msg, &len, err, sizeof(err)), 0);
	assert_int_equal(strncmp(msg, "DKIM-Signature: ", 16), 0);
	assert_non_null(strstr(msg, "tls-report-domain:tls-report-submitter"));
	sigend = strstr(msg, "\r\nFrom: ");
	assert_non_null(sigend);
	assert_true(dkimpy_verifies("", msg, len));
	free(msg);
	free(gz);
}

/* `tlsrpt dkim-keygen`'s parts: a 2048-bit key that dkim_key_from_pem
 * takes, and the zone-file line whose strings (each <= 255 bytes) joined
 * are the record dkimpy verifies a signature of that key with. */
static void test_keygen_and_record(void **state)
{
	char *pem = NULL, *pub = NULL, *line, err[256], *sig = NULL, joined[2048], path[128];
	struct dkim_key *k = NULL;
	size_t pemlen = 0, nj = 0, nstr = 0;
	const char *p;
	FILE *f;

	(void)state;
	assert_int_equal(dkim_keygen(1024, &pem, &pemlen, &pub, err, sizeof(err)), -1);
	assert_int_equal(dkim_keygen(2048, &pem, &pemlen, &pub, err, sizeof(err)), 0);
	assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
	assert_int_equal(dkim_key_from_pem(pem, pemlen, "relay.test", "sel1", &k, err,
					   sizeof(err)), 0);
	line = dkim_txt_record("sel1", "relay.test", pub);
	assert_non_null(line);
	assert_int_equal(strncmp(line, "sel1._domainkey.relay.test. IN TXT \"v=DKIM1; k=rsa; p=",
				 52), 0);
	/* the quoted strings, joined */
	for (p = strchr(line, '"'); p != NULL; p = strchr(p, '"')) {
		const char *e = strchr(p + 1, '"');

		assert_non_null(e);
		assert_true(e - p - 1 <= 255);
		memcpy(joined + nj, p + 1, (size_t)(e - p - 1));
		nj += (size_t)(e - p - 1);
		nstr++;
		p = e + 1;
	}
	joined[nj] = '\0';
	assert_true(nstr >= 2);   /* 2048-bit: longer than one character-string */
	assert_int_equal(strncmp(joined, "v=DKIM1; k=rsa; p=", 18), 0);
	assert_string_equal(joined + 18, pub);
	assert_null(dkim_txt_record("bad selector", "relay.test", pub));
	/* trailing dot of the domain is not doubled */
	free(line);
	line = dkim_txt_record("s", "relay.test.", pub);
	assert_int_equal(strncmp(line, "s._domainkey.relay.test. IN TXT", 31), 0);
	free(line);

	if (have_dkimpy()) {
		assert_int_equal(dkim_sign(k, MSG1, sizeof(MSG1) - 1, NULL, 1781828100, &sig, err,
					   sizeof(err)), 0);
		snprintf(path, sizeof(path), "%s/dns.txt", dir);
		f = fopen(path, "w");
		assert_non_null(f);
		fputs(joined, f);
		fclose(f);
		assert_true(dkimpy_verifies(sig, MSG1, sizeof(MSG1) - 1));
		/* and the old record does not verify the new key's signature */
		f = fopen(path, "w");
		assert_non_null(f);
		fputs(dns_record, f);
		fclose(f);
		assert_false(dkimpy_verifies(sig, MSG1, sizeof(MSG1) - 1));
		free(sig);
	}
	dkim_key_free(k);
	free(pub);
	free(pem);
}

static void test_bad_input(void **state)
{
	char *sig = NULL, err[256];
	struct dkim_key *k = NULL;

	(void)state;
	assert_int_equal(dkim_sign(key, S("From: a@b\r\nno body separator"), NULL, 1, &sig, err,
				   sizeof(err)), -1);
	assert_int_equal(dkim_sign(key, S("X-Other: a\r\n\r\nbody"), NULL, 1, &sig, err,
				   sizeof(err)), -1);
	assert_non_null(strstr(err, "none of the headers"));
	assert_int_equal(dkim_key_from_pem(S("not a key"), "relay.test", "s", &k, err, sizeof(err)), -1);
	assert_int_equal(dkim_key_from_pem(S("x"), "bad domain;", "s", &k, err, sizeof(err)), -1);
	assert_int_equal(dkim_key_load("/nonexistent/key.pem", "relay.test", "s", &k, err,
				       sizeof(err)), -1);
	assert_null(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_canon_body),
		cmocka_unit_test(test_canon_header),
		cmocka_unit_test(test_sign_verify),
		cmocka_unit_test(test_report_mail_verifies),
		cmocka_unit_test(test_keygen_and_record),
		cmocka_unit_test(test_bad_input),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
