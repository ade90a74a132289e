/* Certificates for the TLS unit tests, made with the OpenSSL API: EC keys and
 * CA, leaf and self-signed certificates with chosen names and dates. */
#ifndef STSRELAY_TEST_PKI_H
#define STSRELAY_TEST_PKI_H

/* Include after <cmocka.h>: failures end the test through its asserts. */
#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

static EVP_PKEY *make_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

static void add_ext(X509 *c, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, c, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(c, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for key, signed by issuer_key (issuer NULL = self-signed),
 * valid from now+from to now+to seconds. san NULL = a CA; san "" = a server
 * leaf without any subjectAltName (only its CN names a host). */
static X509 *make_cert(const char *cn, const char *san, EVP_PKEY *key, X509 *issuer,
		       EVP_PKEY *issuer_key, long from, long to)
{
	static long serial = 1;
	X509 *c = X509_new();
	X509_NAME *name;

	assert_non_null(c);
	X509_set_version(c, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c), serial++);
	X509_gmtime_adj(X509_getm_notBefore(c), from);
	X509_gmtime_adj(X509_getm_notAfter(c), to);
	X509_set_pubkey(c, key);
	name = X509_get_subject_name(c);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
	if (san) {
		char buf[256];

		snprintf(buf, sizeof(buf), "DNS:%s", san);
		if (san[0] != '\0')
			add_ext(c, issuer ? issuer : c, NID_subject_alt_name, buf);
		add_ext(c, issuer ? issuer : c, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(c, issuer ? issuer : c, NID_ext_key_usage, "serverAuth");
	} else {
		add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign");
		add_ext(c, c, NID_subject_key_identifier, "hash");
	}
	assert_true(X509_sign(c, issuer_key, EVP_sha256()) > 0);
	return c;
}

#endif
