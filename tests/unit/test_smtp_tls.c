/* smtp_tls against an in-process OpenSSL server over memory BIOs, with a
 * test CA and good and broken certificates built here with the OpenSSL API. */
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

#define HOST "mx.example.test"
#define DAY (24 * 3600L)

struct pki {
	char dir[64], ca_file[128];
	EVP_PKEY *ca_key, *other_ca_key, *key;
	X509 *ca, *other_ca;
	X509 *good, *expired, *not_yet, *self, *untrusted, *wildcard, *partial;
	X509 *cn_only, *cn_other_san;
};

static struct pki P;

static int setup(void **state)
{
	FILE *f;

	(void)state;
	snprintf(P.dir, sizeof(P.dir), "/tmp/test_smtp_tls.XXXXXX");
	if (!mkdtemp(P.dir))
		return -1;
	snprintf(P.ca_file, sizeof(P.ca_file), "%s/ca.pem", P.dir);
	P.ca_key = make_key();
	P.other_ca_key = make_key();
	P.key = make_key();
	P.ca = make_cert("Test CA", NULL, P.ca_key, NULL, P.ca_key, -DAY, 3650 * DAY);
	P.other_ca = make_cert("Other CA", NULL, P.other_ca_key, NULL, P.other_ca_key, -DAY,
			       3650 * DAY);
	P.good = make_cert(HOST, HOST, P.key, P.ca, P.ca_key, -DAY, 365 * DAY);
	P.expired = make_cert(HOST, HOST, P.key, P.ca, P.ca_key, -730 * DAY, -365 * DAY);
	P.not_yet = make_cert(HOST, HOST, P.key, P.ca, P.ca_key, 30 * DAY, 365 * DAY);
	P.self = make_cert(HOST, HOST, P.key, NULL, P.key, -DAY, 365 * DAY);
	P.untrusted = make_cert(HOST, HOST, P.key, P.other_ca, P.other_ca_key, -DAY, 365 * DAY);
	P.wildcard = make_cert("*.example.test", "*.example.test", P.key, P.ca, P.ca_key, -DAY,
			       365 * DAY);
	P.cn_only = make_cert(HOST, "", P.key, P.ca, P.ca_key, -DAY, 365 * DAY);
	P.cn_other_san = make_cert(HOST, "other.example.test", P.key, P.ca, P.ca_key, -DAY,
				   365 * DAY);
	P.partial = make_cert("m*.example.test", "m*.example.test", P.key, P.ca, P.ca_key, -DAY,
			      365 * DAY);
	f = fopen(P.ca_file, "w");
	if (!f)
		return -1;
	PEM_write_X509(f, P.ca);
	fclose(f);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(P.ca_file);
	rmdir(P.dir);
	X509_free(P.ca);
	X509_free(P.other_ca);
	X509_free(P.good);
	X509_free(P.expired);
	X509_free(P.not_yet);
	X509_free(P.self);
	X509_free(P.untrusted);
	X509_free(P.wildcard);
	X509_free(P.partial);
	X509_free(P.cn_only);
	X509_free(P.cn_other_san);
	EVP_PKEY_free(P.ca_key);
	EVP_PKEY_free(P.other_ca_key);
	EVP_PKEY_free(P.key);
	return 0;
}

/* ---- the in-process server ---- */

struct server {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *rbio, *wbio;
};

static SSL_CTX *server_ctx(X509 *cert, X509 *chain, int max_version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, P.key), 1);
	if (chain)
		assert_int_equal(SSL_CTX_add1_chain_cert(ctx, chain), 1);
	if (max_version) {
		/* An old server: only up to max_version, legacy ciphers allowed. */
		SSL_CTX_set_security_level(ctx, 0);
		assert_int_equal(SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0"), 1);
		assert_int_equal(SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION), 1);
		assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
	}
	return ctx;
}

static void server_start(struct server *s, SSL_CTX *ctx)
{
	s->ctx = ctx;
	s->ssl = SSL_new(ctx);
	s->rbio = BIO_new(BIO_s_mem());
	s->wbio = BIO_new(BIO_s_mem());
	assert_non_null(s->ssl);
	BIO_set_mem_eof_return(s->rbio, -1);
	BIO_set_mem_eof_return(s->wbio, -1);
	SSL_set_bio(s->ssl, s->rbio, s->wbio);
	SSL_set_accept_state(s->ssl);
}

static void server_stop(struct server *s)
{
	SSL_free(s->ssl);
	s->ssl = NULL;
}

/* Moves ciphertext both ways until neither side makes progress. */
static void shuttle(struct smtp_tls *t, struct server *s)
{
	char buf[16384];
	int round;

	for (round = 0; round < 200; round++) {
		bool moved = false;
		size_t n;
		int m;

		while ((n = smtp_tls_take(t, buf, sizeof(buf))) > 0) {
			assert_int_equal(BIO_write(s->rbio, buf, (int)n), (int)n);
			moved = true;
		}
		if (!SSL_is_init_finished(s->ssl)) {
			ERR_clear_error();
			SSL_do_handshake(s->ssl);
			ERR_clear_error();
		}
		while ((m = BIO_read(s->wbio, buf, sizeof(buf))) > 0) {
			assert_int_equal(smtp_tls_feed(t, buf, (size_t)m), 0);
			moved = true;
		}
		if (!moved)
			return;
		smtp_tls_handshake(t);
	}
	fail_msg("handshake did not settle");
}

/* Runs a handshake of a fresh smtp_tls to host against a server with ctx. */
static int handshake(struct smtp_tls_ctx *cctx, SSL_CTX *sctx, const char *host, bool verify,
		     struct smtp_tls **out, struct server *s)
{
	char err[256];
	struct smtp_tls *t = smtp_tls_new(cctx, host, verify, err, sizeof(err));
	int rc;

	if (!t)
		fail_msg("smtp_tls_new: %s", err);
	server_start(s, sctx);
	rc = smtp_tls_handshake(t);
	assert_int_equal(rc, SMTP_TLS_AGAIN);
	shuttle(t, s);
	rc = smtp_tls_handshake(t);
	*out = t;
	return rc;
}

static struct smtp_tls_ctx *client_ctx(void)
{
	char err[256];
	struct smtp_tls_ctx *c = smtp_tls_ctx_new(P.ca_file, err, sizeof(err));

	if (!c)
		fail_msg("smtp_tls_ctx_new: %s", err);
	return c;
}

/* Application data both ways; also lets the client see TLS 1.3 tickets. */
static void exchange(struct smtp_tls *t, struct server *s)
{
	char buf[16384], plain[256];
	size_t n;
	int m;
	ssize_t r;

	assert_int_equal(smtp_tls_write(t, "EHLO relay\r\n", 12), 12);
	while ((n = smtp_tls_take(t, buf, sizeof(buf))) > 0)
		BIO_write(s->rbio, buf, (int)n);
	m = SSL_read(s->ssl, plain, sizeof(plain) - 1);
	assert_int_equal(m, 12);
	assert_memory_equal(plain, "EHLO relay\r\n", 12);
	assert_int_equal(SSL_write(s->ssl, "250 ok\r\n", 8), 8);
	while ((m = BIO_read(s->wbio, buf, sizeof(buf))) > 0)
		assert_int_equal(smtp_tls_feed(t, buf, (size_t)m), 0);
	r = smtp_tls_read(t, plain, sizeof(plain));
	assert_int_equal(r, 8);
	assert_memory_equal(plain, "250 ok\r\n", 8);
	assert_int_equal(smtp_tls_read(t, plain, sizeof(plain)), 0);
	/* Orderly close: the server sees our close_notify. */
	smtp_tls_shutdown(t);
	while ((n = smtp_tls_take(t, buf, sizeof(buf))) > 0)
		BIO_write(s->rbio, buf, (int)n);
	assert_true(SSL_read(s->ssl, plain, sizeof(plain)) <= 0);
	assert_int_equal(SSL_get_error(s->ssl, 0), SSL_ERROR_ZERO_RETURN);
}

static void test_verified(void **state)
{
	struct smtp_tls_ctx *cc = client_ctx();
	SSL_CTX *sc = server_ctx(P.good, NULL, 0);
	struct smtp_tls *t;
	struct server s;

	(void)state;
	/* A trailing dot on the MX name is ignored. */
	assert_int_equal(handshake(cc, sc, HOST ".", true, &t, &s), SMTP_TLS_DONE);
	assert_string_equal(smtp_tls_version(t), "TLSv1.3");
	assert_non_null(smtp_tls_cipher(t));
	assert_true(smtp_tls_verified(t));
	assert_int_equal(smtp_tls_result_type(t), SMTP_TLS_RESULT_SUCCESS);
	assert_string_equal(smtp_tls_reason(t), "");
	assert_int_equal(smtp_tls_verify_error(t), X509_V_OK);
	/* SNI is always the MX host name. */
	assert_string_equal(SSL_get_servername(s.ssl, TLSEXT_NAMETYPE_host_name), HOST);
	exchange(t, &s);
	smtp_tls_free(t);
	server_stop(&s);
	SSL_CTX_free(sc);
	smtp_tls_ctx_free(cc);
}

/* One failing case: with verify the handshake fails; without it succeeds
 * unverified; both name the same RFC 8460 result type. */
static void check_bad(X509 *cert, X509 *chain, const char *host, const char *type,
		      const char *reason_part)
{
	struct smtp_tls_ctx *cc = client_ctx();
	SSL_CTX *sc = server_ctx(cert, chain, 0);
	struct smtp_tls *t;
	struct server s;
	int rc;

	rc = handshake(cc, sc, host, true, &t, &s);
	if (rc != SMTP_TLS_ERROR)
		fail_msg("%s: handshake rc %d", type, rc);
	assert_null(smtp_tls_version(t));
	assert_false(smtp_tls_verified(t));
	assert_int_not_equal(smtp_tls_result_type(t), SMTP_TLS_RESULT_SUCCESS);
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type(t)), type);
	if (!strstr(smtp_tls_reason(t), reason_part))
		fail_msg("%s: reason '%s' lacks '%s'", type, smtp_tls_reason(t), reason_part);
	assert_int_equal(smtp_tls_write(t, "x", 1), -1);
	smtp_tls_free(t);
	server_stop(&s);

	/* Opportunistic: delivered over TLS, but the verdict is still known. */
	rc = handshake(cc, sc, host, false, &t, &s);
	assert_int_equal(rc, SMTP_TLS_DONE);
	assert_string_equal(smtp_tls_version(t), "TLSv1.3");
	assert_false(smtp_tls_verified(t));
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type(t)), type);
	exchange(t, &s);
	smtp_tls_free(t);
	server_stop(&s);
	SSL_CTX_free(sc);
	smtp_tls_ctx_free(cc);
}

static void test_host_mismatch(void **state)
{
	(void)state;
	check_bad(P.good, NULL, "other.example.test", "certificate-host-mismatch",
		  "hostname mismatch");
}

static void test_expired(void **state)
{
	(void)state;
	check_bad(P.expired, NULL, HOST, "certificate-expired", "expired");
}

static void test_not_yet_valid(void **state)
{
	(void)state;
	check_bad(P.not_yet, NULL, HOST, "certificate-expired", "not yet valid");
}

static void test_self_signed(void **state)
{
	(void)state;
	check_bad(P.self, NULL, HOST, "certificate-not-trusted", "self-signed");
}

static void test_untrusted_ca(void **state)
{
	(void)state;
	/* Leaf alone: issuer unknown; leaf + its (untrusted) root: self-signed in chain. */
	check_bad(P.untrusted, NULL, HOST, "certificate-not-trusted", "issuer");
	check_bad(P.untrusted, P.other_ca, HOST, "certificate-not-trusted", "self-signed");
}

/* RFC 8461 §4.2: only a SAN DNS-ID names the MX. A certificate without
 * DNS SANs whose subject CN is exactly the host (OpenSSL's default would
 * accept it) and one whose CN matches while its SAN does not are both a
 * host mismatch, with and without verification demanded. */
static void test_cn_never_used(void **state)
{
	(void)state;
	check_bad(P.cn_only, NULL, HOST, "certificate-host-mismatch", "hostname mismatch");
	check_bad(P.cn_other_san, NULL, HOST, "certificate-host-mismatch", "hostname mismatch");
}

static void test_wildcards(void **state)
{
	struct smtp_tls_ctx *cc = client_ctx();
	SSL_CTX *sc = server_ctx(P.wildcard, NULL, 0);
	struct smtp_tls *t;
	struct server s;

	(void)state;
	/* "*.example.test" covers exactly one label. */
	assert_int_equal(handshake(cc, sc, HOST, true, &t, &s), SMTP_TLS_DONE);
	assert_true(smtp_tls_verified(t));
	smtp_tls_free(t);
	server_stop(&s);
	assert_int_equal(handshake(cc, sc, "a.mx.example.test", true, &t, &s), SMTP_TLS_ERROR);
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type(t)), "certificate-host-mismatch");
	smtp_tls_free(t);
	server_stop(&s);
	SSL_CTX_free(sc);
	smtp_tls_ctx_free(cc);
	/* A partial wildcard "m*.example.test" is not honoured. */
	check_bad(P.partial, NULL, HOST, "certificate-host-mismatch", "hostname mismatch");
}

static void test_old_tls_refused(void **state)
{
	struct smtp_tls_ctx *cc = client_ctx();
	SSL_CTX *sc = server_ctx(P.good, NULL, TLS1_1_VERSION);
	SSL_CTX *legacy;
	struct smtp_tls *t;
	struct server s;
	SSL *raw;
	BIO *r, *w;
	char buf[16384];
	int i, m;

	(void)state;
	/* Control: this server really speaks TLS 1.1 to a client that allows it. */
	legacy = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_security_level(legacy, 0);
	SSL_CTX_set_cipher_list(legacy, "DEFAULT:@SECLEVEL=0");
	SSL_CTX_set_min_proto_version(legacy, TLS1_VERSION);
	raw = SSL_new(legacy);
	r = BIO_new(BIO_s_mem());
	w = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(r, -1);
	SSL_set_bio(raw, r, w);
	SSL_set_connect_state(raw);
	server_start(&s, sc);
	for (i = 0; i < 20 && !(SSL_is_init_finished(raw) && SSL_is_init_finished(s.ssl)); i++) {
		SSL_do_handshake(raw);
		while ((m = BIO_read(w, buf, sizeof(buf))) > 0)
			BIO_write(s.rbio, buf, m);
		SSL_do_handshake(s.ssl);
		while ((m = BIO_read(s.wbio, buf, sizeof(buf))) > 0)
			BIO_write(r, buf, m);
	}
	assert_true(SSL_is_init_finished(raw));
	assert_string_equal(SSL_get_version(raw), "TLSv1.1");
	SSL_free(raw);
	SSL_CTX_free(legacy);
	server_stop(&s);
	ERR_clear_error();

	/* smtp_tls insists on TLS >= 1.2, also when not verifying. */
	assert_int_equal(handshake(cc, sc, HOST, false, &t, &s), SMTP_TLS_ERROR);
	assert_null(smtp_tls_version(t));
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type(t)), "validation-failure");
	if (!strstr(smtp_tls_reason(t), "protocol version"))
		fail_msg("reason '%s'", smtp_tls_reason(t));
	smtp_tls_free(t);
	server_stop(&s);
	SSL_CTX_free(sc);
	smtp_tls_ctx_free(cc);
}

static void test_tls12_ok(void **state)
{
	struct smtp_tls_ctx *cc = client_ctx();
	SSL_CTX *sc = server_ctx(P.good, NULL, 0);
	struct smtp_tls *t;
	struct server s;

	(void)state;
	SSL_CTX_set_max_proto_version(sc, TLS1_2_VERSION);
	assert_int_equal(handshake(cc, sc, HOST, true, &t, &s), SMTP_TLS_DONE);
	assert_string_equal(smtp_tls_version(t), "TLSv1.2");
	assert_true(smtp_tls_verified(t));
	exchange(t, &s);
	smtp_tls_free(t);
	server_stop(&s);
	SSL_CTX_free(sc);
	smtp_tls_ctx_free(cc);
}

/* Garbage instead of a ServerHello. */
static void test_garbage(void **state)
{
	struct smtp_tls_ctx *cc = client_ctx();
	char err[128], buf[4096];
	struct smtp_tls *t = smtp_tls_new(cc, HOST, false, err, sizeof(err));

	(void)state;
	assert_non_null(t);
	assert_int_equal(smtp_tls_handshake(t), SMTP_TLS_AGAIN);
	assert_true(smtp_tls_pending(t) > 0);
	smtp_tls_take(t, buf, sizeof(buf));
	assert_int_equal(smtp_tls_feed(t, "220 not tls at all\r\n", 20), 0);
	assert_int_equal(smtp_tls_handshake(t), SMTP_TLS_ERROR);
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type(t)), "validation-failure");
	assert_true(strlen(smtp_tls_reason(t)) > 0);
	smtp_tls_free(t);
	assert_null(smtp_tls_new(cc, "", true, err, sizeof(err)));
	smtp_tls_ctx_free(cc);
	assert_null(smtp_tls_ctx_new("/nonexistent/ca.pem", err, sizeof(err)));
	assert_non_null(strstr(err, "ca_file"));
}

/* A verified session is resumed on the next connection to the same MX;
 * unverified ones are never stored. */
static void test_resumption(void **state)
{
	struct smtp_tls_ctx *cc = client_ctx();
	SSL_CTX *sc = server_ctx(P.good, NULL, 0);
	SSL_CTX *bad = server_ctx(P.self, NULL, 0);
	struct smtp_tls *t;
	struct server s;

	(void)state;
	assert_int_equal(handshake(cc, sc, HOST, true, &t, &s), SMTP_TLS_DONE);
	assert_false(smtp_tls_resumed(t));
	exchange(t, &s);
	smtp_tls_free(t);
	server_stop(&s);
	assert_int_equal(handshake(cc, sc, HOST, true, &t, &s), SMTP_TLS_DONE);
	assert_true(smtp_tls_resumed(t));
	assert_true(smtp_tls_verified(t));
	smtp_tls_free(t);
	server_stop(&s);

	/* An opportunistic session with a bad certificate is not cached. */
	assert_int_equal(handshake(cc, bad, "self.example.test", false, &t, &s), SMTP_TLS_DONE);
	exchange(t, &s);
	smtp_tls_free(t);
	server_stop(&s);
	assert_int_equal(handshake(cc, bad, "self.example.test", true, &t, &s), SMTP_TLS_ERROR);
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type(t)), "certificate-not-trusted");
	smtp_tls_free(t);
	server_stop(&s);
	SSL_CTX_free(sc);
	SSL_CTX_free(bad);
	smtp_tls_ctx_free(cc);
}

static void test_mapping(void **state)
{
	(void)state;
	assert_int_equal(smtp_tls_result_type_for(X509_V_OK), SMTP_TLS_RESULT_SUCCESS);
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_HOSTNAME_MISMATCH)),
			    "certificate-host-mismatch");
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_CERT_HAS_EXPIRED)),
			    "certificate-expired");
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_CERT_NOT_YET_VALID)),
			    "certificate-expired");
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT)),
			    "certificate-not-trusted");
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN)),
			    "certificate-not-trusted");
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY)),
			    "certificate-not-trusted");
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE)),
			    "certificate-not-trusted");
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_CERT_SIGNATURE_FAILURE)),
			    "validation-failure");
	assert_string_equal(smtp_tls_result_name(smtp_tls_result_type_for(X509_V_ERR_INVALID_PURPOSE)),
			    "validation-failure");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mapping),
		cmocka_unit_test(test_verified),
		cmocka_unit_test(test_host_mismatch),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_not_yet_valid),
		cmocka_unit_test(test_self_signed),
		cmocka_unit_test(test_untrusted_ca),
		cmocka_unit_test(test_cn_never_used),
		cmocka_unit_test(test_wildcards),
		cmocka_unit_test(test_old_tls_refused),
		cmocka_unit_test(test_tls12_ok),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_resumption),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
