/* TLSA RDATA: parsing into struct smtp_tlsa, the RFC 7672 usability rule (with
 * a DER check of full-data records), and the "U S M HEX" presentation form. */
#include "smtp/tlsa.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

int smtp_tlsa_parse(const unsigned char *rdata, size_t len, struct smtp_tlsa *out,
		    const char **reason)
{
	if (rdata == NULL || len < 4) {
		*reason = "TLSA RDATA shorter than 4 octets";
		return -1;
	}
	if (len - 3 > SMTP_TLSA_DATA_MAX) {
		*reason = "TLSA association data longer than 4096 octets";
		return -1;
	}
	out->usage = rdata[0];
	out->selector = rdata[1];
	out->mtype = rdata[2];
	out->len = len - 3;
	memcpy(out->data, rdata + 3, out->len);
	return 0;
}

/* A Full(0) record is compared whole with the certificate or key, so data
 * that does not even decode can never match: OpenSSL refuses it when it is
 * added, and counting it usable would turn "no usable record" (deliver as
 * without DANE, RFC 7672 §3.1) into a certain failure. */
static bool der_ok(const struct smtp_tlsa *t)
{
	const unsigned char *p = t->data;
	bool ok;

	if (t->selector == SMTP_TLSA_CERT) {
		X509 *x = d2i_X509(NULL, &p, (long)t->len);

		ok = x != NULL && p == t->data + t->len;
		X509_free(x);
	} else {
		EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)t->len);

		ok = k != NULL && p == t->data + t->len;
		EVP_PKEY_free(k);
	}
	return ok;
}

bool smtp_tlsa_usable(const struct smtp_tlsa *t)
{
	if (t->usage != SMTP_TLSA_DANE_TA && t->usage != SMTP_TLSA_DANE_EE)
		return false;
	if (t->selector != SMTP_TLSA_CERT && t->selector != SMTP_TLSA_SPKI)
		return false;
	switch (t->mtype) {
	case SMTP_TLSA_FULL:
		return t->len > 0 && der_ok(t);
	case SMTP_TLSA_SHA256:
		return t->len == 32;
	case SMTP_TLSA_SHA512:
		return t->len == 64;
	default:
		return false;
	}
}

size_t smtp_tlsa_count_usable(const struct smtp_tlsa_set *set)
{
	size_t i, n = 0;

	for (i = 0; i < set->n; i++)
		n += smtp_tlsa_usable(&set->rec[i]);
	return n;
}

int smtp_tlsa_format(const struct smtp_tlsa *t, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	int n = snprintf(buf, len, "%u %u %u ", t->usage, t->selector, t->mtype);
	size_t o, i;

	if (n < 0 || (size_t)n >= len || t->len > (len - (size_t)n - 1) / 2)
		return -1;
	o = (size_t)n;
	for (i = 0; i < t->len; i++) {
		buf[o++] = hex[t->data[i] >> 4];
		buf[o++] = hex[t->data[i] & 15];
	}
	buf[o] = '\0';
	return (int)o;
}
