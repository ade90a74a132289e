/* Unit tests of the server side of smtp/tls.c: both ends are smtp/tls (the
 * relay's own client verifying the server's certificate) over memory, plus
 * an OpenSSL client for old protocol versions; certificate and key loading,
 * mismatch, and a context freed under an open connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "smtp/tls.h"
#include "test_pki.h"

#define HOST "relay.example.test"
#define DAY (24 * 3600L)

static struct {
	char dir[64], ca[128], cert[128], key[128], other_key[128], chain[128], missing[128];
	char garbage[128];
} F;

static void write_pem(const char *path, X509 *cert, EVP_PKEY *key, X509 *extra)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	if (cert)
		assert_int_equal(PEM_write_X509(f, cert), 1);
	if (extra)
		assert_int_equal(PEM_write_X509(f, extra), 1);
	if (key)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
	EVP_PKEY *ca_key, *key, *other;
	X509 *ca, *leaf;
	FILE *f;

	(void)state;
	snprintf(F.dir, sizeof(F.dir), "/tmp/test_smtp_tls_server.XXXXXX");
	if (!mkdtemp(F.dir))
		return -1;
	snprintf(F.ca, sizeof(F.ca), "%s/ca.pem", F.dir);
	snprintf(F.cert, sizeof(F.cert), "%s/cert.pem", F.dir);
	snprintf(F.chain, sizeof(F.chain), "%s/chain.pem", F.dir);
	snprintf(F.key, sizeof(F.key), "%s/key.pem", F.dir);
	snprintf(F.other_key, sizeof(F.other_key), "%s/other.pem", F.dir);
	snprintf(F.missing, sizeof(F.missing), "%s/missing.pem", F.dir);
	snprintf(F.garbage, sizeof(F.garbage), "%s/garbage.pem", F.dir);
	ca_key = make_key();
	key = make_key();
	other = make_key();
	ca = make_cert("Test CA", NULL, ca_key, NULL, ca_key, -DAY, 3650 * DAY);
	leaf = make_cert(HOST, HOST, key, ca, ca_key, -DAY, 365 * DAY);
	write_pem(F.ca, ca, NULL, NULL);
	write_pem(F.cert, leaf, NULL, NULL);
	write_pem(F.chain, leaf, NULL, ca); /* fullchain.pem as Let's Encrypt writes it */
	write_pem(F.key, NULL, key, NULL);
	write_pem(F.other_key, NULL, other, NULL);
	f = fopen(F.garbage, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", f);
	fclose(f);
	X509_free(ca);
	X509_free(leaf);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(F.ca);
	unlink(F.cert);
	unlink(F.chain);
	unlink(F.key);
	unlink(F.other_key);
	unlink(F.garbage);
	rmdir(F.dir);
	return 0;
}

/* Moves ciphertext one way; returns the bytes moved. */
static size_t move(struct smtp_tls *from, struct smtp_tls *to)
{
	char buf[4096];
	size_t n, total = 0;

	while ((n = smtp_tls_take(from, buf, sizeof(buf))) > 0) {
		assert_int_equal(smtp_tls_feed(to, buf, n), 0);
		total += n;
	}
	return total;
}

/* Both handshakes to their end (bounded rounds). */
static void handshake(struct smtp_tls *c, struct smtp_tls *s, int *crc, int *src)
{
	int i;

	*crc = *src = SMTP_TLS_AGAIN;
	for (i = 0; i < 20; i++) {
		if (*crc == SMTP_TLS_AGAIN)
			*crc = smtp_tls_handshake(c);
		move(c, s);
		if (*src == SMTP_TLS_AGAIN)
			*src = smtp_tls_handshake(s);
		move(s, c);
		if (*crc != SMTP_TLS_AGAIN && *src != SMTP_TLS_AGAIN)
			return;
	}
	fail_msg("handshake did not finish in 20 rounds");
}

/* Sends len bytes from a to b and checks they arrive intact. */
static void send_check(struct smtp_tls *a, struct smtp_tls *b, size_t len)
{
	char *out = malloc(len), *in = malloc(len + 1);
	size_t got = 0, i;
	int rounds = 0;

	assert_non_null(out);
	assert_non_null(in);
	for (i = 0; i < len; i++)
		out[i] = (char)('a' + i % 26);
	assert_int_equal(smtp_tls_write(a, out, len), (ssize_t)len);
	while (got < len && rounds++ < 1000) {
		ssize_t n;

		move(a, b);
		n = smtp_tls_read(b, in + got, len + 1 - got);
		assert_true(n >= 0);
		got += (size_t)n;
		move(b, a);
	}
	assert_int_equal(got, len);
	assert_memory_equal(in, out, len);
	free(out);
	free(in);
}

static void test_roundtrip(void **state)
{
	char err[512];
	struct smtp_tls_server_ctx *sctx;
	struct smtp_tls_ctx *cctx;
	struct smtp_tls *s, *c;
	int crc, src;

	(void)state;
	sctx = smtp_tls_server_ctx_new(F.chain, F.key, err, sizeof(err));
	if (sctx == NULL)
		fail_msg("%s", err);
	assert_non_null(strstr(smtp_tls_server_ctx_describe(sctx), "CN=" HOST ", not after 2"));
	cctx = smtp_tls_ctx_new(F.ca, err, sizeof(err));
	assert_non_null(cctx);
	s = smtp_tls_accept(sctx, err, sizeof(err));
	c = smtp_tls_new(cctx, HOST, true, err, sizeof(err));
	assert_non_null(s);
	assert_non_null(c);
	handshake(c, s, &crc, &src);
	assert_int_equal(crc, SMTP_TLS_DONE);
	assert_int_equal(src, SMTP_TLS_DONE);
	/* the relay's own client verified the certificate against the name */
	assert_true(smtp_tls_verified(c));
	assert_string_equal(smtp_tls_version(s), "TLSv1.3");
	assert_non_null(smtp_tls_cipher(s));
	assert_int_equal(smtp_tls_result_type(s), SMTP_TLS_RESULT_SUCCESS);
	/* record boundaries: just below, at and above 16 KiB, and 1 MB */
	send_check(c, s, 10);
	send_check(s, c, 16383);
	send_check(c, s, 16384);
	send_check(s, c, 16385);
	send_check(c, s, 1000000);
	/* close_notify reaches the other side as EOF */
	smtp_tls_shutdown(c);
	move(c, s);
	{
		char b[16];

		assert_int_equal(smtp_tls_read(s, b, sizeof(b)), SMTP_TLS_EOF);
	}
	smtp_tls_free(c);
	smtp_tls_free(s);
	smtp_tls_ctx_free(cctx);
	smtp_tls_server_ctx_free(sctx);
}

/* A reload frees the old context while its sessions go on. */
static void test_ctx_freed_under_open_session(void **state)
{
	char err[512];
	struct smtp_tls_server_ctx *sctx;
	struct smtp_tls_ctx *cctx;
	struct smtp_tls *s, *c;
	int crc, src;

	(void)state;
	sctx = smtp_tls_server_ctx_new(F.cert, F.key, err, sizeof(err));
	cctx = smtp_tls_ctx_new(F.ca, err, sizeof(err));
	assert_non_null(sctx);
	assert_non_null(cctx);
	s = smtp_tls_accept(sctx, err, sizeof(err));
	assert_non_null(s);
	smtp_tls_server_ctx_free(sctx); /* before the handshake, even */
	c = smtp_tls_new(cctx, HOST, true, err, sizeof(err));
	assert_non_null(c);
	handshake(c, s, &crc, &src);
	assert_int_equal(crc, SMTP_TLS_DONE);
	assert_int_equal(src, SMTP_TLS_DONE);
	send_check(c, s, 5000);
	smtp_tls_free(c);
	smtp_tls_free(s);
	smtp_tls_ctx_free(cctx);
}

static void test_load_errors(void **state)
{
	char err[512];

	(void)state;
	assert_null(smtp_tls_server_ctx_new(F.cert, F.other_key, err, sizeof(err)));
	assert_non_null(strstr(err, "does not match tls_cert_file"));
	assert_null(smtp_tls_server_ctx_new(F.missing, F.key, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot load tls_cert_file"));
	assert_non_null(strstr(err, "missing.pem"));
	assert_null(smtp_tls_server_ctx_new(F.cert, F.missing, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot load tls_key_file"));
	assert_null(smtp_tls_server_ctx_new(F.garbage, F.key, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot load tls_cert_file"));
	/* the key file where the certificate belongs */
	assert_null(smtp_tls_server_ctx_new(F.key, F.key, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot load tls_cert_file"));
}

/* A client that offers only TLS 1.1 gets no session; the server says why. */
static void test_old_tls_refused(void **state)
{
	char err[512], buf[4096];
	struct smtp_tls_server_ctx *sctx;
	struct smtp_tls *s;
	SSL_CTX *old = SSL_CTX_new(TLS_client_method());
	SSL *c;
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	int i, src = SMTP_TLS_AGAIN;

	(void)state;
	assert_non_null(old);
	SSL_CTX_set_security_level(old, 0);
	assert_int_equal(SSL_CTX_set_min_proto_version(old, TLS1_VERSION), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION), 1);
	c = SSL_new(old);
	assert_non_null(c);
	BIO_set_mem_eof_return(rb, -1);
	SSL_set_bio(c, rb, wb);
	SSL_set_connect_state(c);
	sctx = smtp_tls_server_ctx_new(F.cert, F.key, err, sizeof(err));
	assert_non_null(sctx);
	s = smtp_tls_accept(sctx, err, sizeof(err));
	assert_non_null(s);
	for (i = 0; i < 10 && src == SMTP_TLS_AGAIN; i++) {
		int n;

		(void)SSL_do_handshake(c);
		while ((n = BIO_read(wb, buf, sizeof(buf))) > 0)
			assert_int_equal(smtp_tls_feed(s, buf, (size_t)n), 0);
		src = smtp_tls_handshake(s);
		while ((n = (int)smtp_tls_take(s, buf, sizeof(buf))) > 0)
			assert_int_equal(BIO_write(rb, buf, n), n);
	}
	assert_int_equal(src, SMTP_TLS_ERROR);
	assert_true(strlen(smtp_tls_reason(s)) > 0);
	assert_null(smtp_tls_version(s));
	smtp_tls_free(s);
	smtp_tls_server_ctx_free(sctx);
	SSL_free(c);
	SSL_CTX_free(old);
	ERR_clear_error();
}

/* Plaintext where a ClientHello belongs (a client that did not start TLS). */
static void test_garbage_client(void **state)
{
	char err[512];
	struct smtp_tls_server_ctx *sctx = smtp_tls_server_ctx_new(F.cert, F.key, err, sizeof(err));
	struct smtp_tls *s;
	static const char ehlo[] = "EHLO client.example\r\n";

	(void)state;
	assert_non_null(sctx);
	s = smtp_tls_accept(sctx, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(smtp_tls_feed(s, ehlo, sizeof(ehlo) - 1), 0);
	assert_int_equal(smtp_tls_handshake(s), SMTP_TLS_ERROR);
	assert_true(strlen(smtp_tls_reason(s)) > 0);
	/* application data calls are refused, never crash */
	assert_int_equal(smtp_tls_write(s, "x", 1), -1);
	smtp_tls_free(s);
	smtp_tls_server_ctx_free(sctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_ctx_freed_under_open_session),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_old_tls_refused),
		cmocka_unit_test(test_garbage_client),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
