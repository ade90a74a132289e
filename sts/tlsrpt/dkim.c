/* DKIM signing (RFC 6376) of the relay's own report mail: relaxed/relaxed
 * canonicalization, rsa-sha256 through OpenSSL's EVP interface. */
#include "sts/tlsrpt/dkim.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "relay/core/b64.h"
#include "relay/core/buf.h"

#define DKIM_KEY_FILE_MAX (64 * 1024)
#define DKIM_MAX_FIELDS 256           /* header fields looked at when signing */
#define DKIM_FOLD_B64 64              /* b= characters per folded line */
#define DKIM_BUF_MAX ((1u << 20) - 1) /* ceiling of each buffer used in signing */
#define DKIM_KEYGEN_MAX_BITS 8192
#define TXT_STRING_MAX 255 /* RFC 1035 character-string */

struct dkim_key {
	EVP_PKEY *pkey;
	char domain[256];
	char selector[64];
};

/* A domain or selector goes into the tag list verbatim: no separators,
 * whitespace or controls that would change the tag-list syntax. */
static bool tag_value_ok(const char *s, size_t max)
{
	size_t n = strlen(s), i;

	if (n == 0 || n >= max)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(isalnum(c) || c == '.' || c == '-' || c == '_'))
			return false;
	}
	return true;
}

int dkim_key_from_pem(const void *pem, size_t len, const char *domain, const char *selector,
		      struct dkim_key **out, char *err, size_t errlen)
{
	struct dkim_key *k = NULL;
	BIO *bio = NULL;
	int rc = -1;

	*out = NULL;
	if (domain == NULL || selector == NULL || !tag_value_ok(domain, sizeof(k->domain)) ||
	    !tag_value_ok(selector, sizeof(k->selector))) {
		snprintf(err, errlen, "bad DKIM domain or selector");
		return -1;
	}
	if (len > DKIM_KEY_FILE_MAX || len > INT32_MAX) {
		snprintf(err, errlen, "key file too large");
		return -1;
	}
	k = calloc(1, sizeof(*k));
	bio = BIO_new_mem_buf(pem, (int)len);
	if (k == NULL || bio == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	k->pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	if (k->pkey == NULL) {
		snprintf(err, errlen, "no PEM private key found");
		goto out;
	}
	if (EVP_PKEY_base_id(k->pkey) != EVP_PKEY_RSA) {
		snprintf(err, errlen, "not an RSA key (only rsa-sha256 is supported)");
		goto out;
	}
	if (EVP_PKEY_bits(k->pkey) < 1024) {
		snprintf(err, errlen, "RSA key shorter than 1024 bits (RFC 8301)");
		goto out;
	}
	snprintf(k->domain, sizeof(k->domain), "%s", domain);
	snprintf(k->selector, sizeof(k->selector), "%s", selector);
	*out = k;
	k = NULL;
	rc = 0;
out:
	BIO_free(bio);
	dkim_key_free(k);
	return rc;
}

int dkim_key_load(const char *key_file, const char *domain, const char *selector,
		  struct dkim_key **out, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t n;
	FILE *f;
	int rc;

	*out = NULL;
	f = fopen(key_file, "rb");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", key_file, strerror(errno));
		return -1;
	}
	buf = malloc(DKIM_KEY_FILE_MAX + 1);
	if (buf == NULL) {
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	n = fread(buf, 1, DKIM_KEY_FILE_MAX + 1, f);
	if (ferror(f) || n > DKIM_KEY_FILE_MAX) {
		fclose(f);
		free(buf);
		snprintf(err, errlen, "%s: unreadable or larger than %d bytes", key_file,
			 DKIM_KEY_FILE_MAX);
		return -1;
	}
	fclose(f);
	rc = dkim_key_from_pem(buf, n, domain, selector, out, err, errlen);
	OPENSSL_cleanse(buf, n);
	free(buf);
	return rc;
}

void dkim_key_free(struct dkim_key *k)
{
	if (k == NULL)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

int dkim_keygen(unsigned bits, char **pem, size_t *pemlen, char **pub_b64, char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	unsigned char *der = NULL;
	char *b64 = NULL, *out = NULL;
	const char *data;
	long n;
	int derlen, rc = -1;
	size_t blen;

	*pem = NULL;
	*pub_b64 = NULL;
	if (bits < 2048 || bits > DKIM_KEYGEN_MAX_BITS) {
		snprintf(err, errlen, "key size must be 2048..%d bits", DKIM_KEYGEN_MAX_BITS);
		return -1;
	}
	pkey = EVP_RSA_gen(bits);
	if (pkey == NULL) {
		snprintf(err, errlen, "RSA key generation failed");
		goto out;
	}
	bio = BIO_new(BIO_s_mem());
	if (bio == NULL || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1) {
		snprintf(err, errlen, "cannot write the private key as PEM");
		goto out;
	}
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0 || (out = malloc((size_t)n + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	derlen = i2d_PUBKEY(pkey, &der);
	if (derlen <= 0) {
		snprintf(err, errlen, "cannot encode the public key");
		goto out;
	}
	blen = core_b64_len((size_t)derlen) + 1;
	b64 = malloc(blen);
	if (b64 == NULL || core_b64_encode(der, (size_t)derlen, b64, blen) < 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	*pem = out;
	*pemlen = (size_t)n;
	*pub_b64 = b64;
	out = NULL;
	b64 = NULL;
	rc = 0;
out:
	if (out != NULL) {
		OPENSSL_cleanse(out, strlen(out));
		free(out);
	}
	free(b64);
	OPENSSL_free(der);
	BIO_free(bio); /* its buffer held the private key: BIO_free clears it */
	EVP_PKEY_free(pkey);
	return rc;
}

char *dkim_txt_record(const char *selector, const char *domain, const char *pub_b64)
{
	struct core_buf b = CORE_BUF_INIT(DKIM_BUF_MAX);
	char text[16384];
	size_t len, i;
	int n;

	if (selector == NULL || domain == NULL || pub_b64 == NULL || !tag_value_ok(selector, 64) ||
	    !tag_value_ok(domain, 256))
		return NULL;
	n = snprintf(text, sizeof(text), "v=DKIM1; k=rsa; p=%s", pub_b64);
	if (n < 0 || (size_t)n >= sizeof(text))
		return NULL;
	len = (size_t)n;
	core_buf_printf(&b, "%s._domainkey.%s%s IN TXT", selector, domain,
			domain[strlen(domain) - 1] == '.' ? "" : ".");
	for (i = 0; i < len; i += TXT_STRING_MAX) {
		size_t k = len - i < TXT_STRING_MAX ? len - i : TXT_STRING_MAX;

		core_buf_adds(&b, " \"");
		core_buf_add(&b, text + i, k); /* base64 and "v=DKIM1; k=rsa; " need no escapes */
		core_buf_adds(&b, "\"");
	}
	if (core_buf_error(&b) != 0) {
		core_buf_free(&b);
		return NULL;
	}
	return core_buf_take(&b, &len);
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

char *dkim_canon_body_relaxed(const char *body, size_t len, size_t *outlen)
{
	/* Output never exceeds input + one CRLF. */
	char *out = malloc(len + 3);
	size_t o = 0, i = 0;

	if (out == NULL)
		return NULL;
	while (i < len) {
		size_t line_start = o;

		/* One line: runs of WSP become one SP, WSP at its end goes. */
		while (i < len) {
			if (body[i] == '\r' && i + 1 < len && body[i + 1] == '\n') {
				i += 2;
				break;
			}
			if (is_wsp(body[i])) {
				while (i < len && is_wsp(body[i]))
					i++;
				out[o++] = ' ';
				continue;
			}
			out[o++] = body[i++];
		}
		while (o > line_start && out[o - 1] == ' ')
			o--;
		/* a last line without CRLF gets one too (RFC 6376 §3.4.4) */
		out[o++] = '\r';
		out[o++] = '\n';
	}
	/* Empty lines at the end of the body are ignored. */
	while (o >= 4 && memcmp(out + o - 4, "\r\n\r\n", 4) == 0)
		o -= 2;
	if (o == 2)
		o = 0;
	out[o] = '\0';
	*outlen = o;
	return out;
}

char *dkim_canon_header_relaxed(const char *field, size_t len, size_t *outlen)
{
	char *out = malloc(len + 1);
	const char *colon = memchr(field, ':', len);
	size_t o = 0, i, name_end;
	bool pending_sp = false, started = false;

	if (out == NULL)
		return NULL;
	if (colon == NULL) {
		free(out);
		return NULL;
	}
	name_end = (size_t)(colon - field);
	while (name_end > 0 && is_wsp(field[name_end - 1]))
		name_end--;
	for (i = 0; i < name_end; i++)
		out[o++] = (char)tolower((unsigned char)field[i]);
	out[o++] = ':';
	/* Value: unfold, WSP runs -> one SP, none at the start or the end. */
	for (i = (size_t)(colon - field) + 1; i < len; i++) {
		char c = field[i];

		if (c == '\r' || c == '\n')
			continue;
		if (is_wsp(c)) {
			pending_sp = true;
			continue;
		}
		if (pending_sp && started)
			out[o++] = ' ';
		pending_sp = false;
		started = true;
		out[o++] = c;
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

struct field {
	const char *p;
	size_t len; /* without the CRLF that ends the field */
	size_t namelen;
	bool used;
};

/* Splits the header block into fields (continuation lines start with WSP). */
static int split_fields(const char *h, size_t len, struct field *f, size_t max, size_t *n)
{
	size_t i = 0;

	*n = 0;
	while (i < len) {
		size_t start = i;
		const char *colon;

		for (;;) {
			const char *eol = NULL;
			size_t k;

			for (k = i; k + 1 < len; k++)
				if (h[k] == '\r' && h[k + 1] == '\n') {
					eol = h + k;
					break;
				}
			if (eol == NULL)
				return -1;
			i = (size_t)(eol - h) + 2;
			if (i >= len || !is_wsp(h[i]))
				break;
		}
		if (*n == max)
			return -1;
		f[*n].p = h + start;
		f[*n].len = i - 2 - start;
		colon = memchr(f[*n].p, ':', f[*n].len);
		if (colon == NULL)
			return -1;
		f[*n].namelen = (size_t)(colon - f[*n].p);
		while (f[*n].namelen > 0 && is_wsp(f[*n].p[f[*n].namelen - 1]))
			f[*n].namelen--;
		f[*n].used = false;
		(*n)++;
	}
	return 0;
}

/* The "bh=" value: base64 of the SHA-256 of the relaxed body. 0, or -1. */
static int body_hash(const char *body, size_t len, struct core_buf *bh)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	size_t blen;
	char *cbody = dkim_canon_body_relaxed(body, len, &blen);
	int rc = -1;

	if (cbody != NULL && EVP_Digest(cbody, blen, digest, &dlen, EVP_sha256(), NULL) == 1 &&
	    core_buf_add_b64(bh, digest, dlen, 0, NULL) == 0)
		rc = 0;
	free(cbody);
	return rc;
}

/* Header fields to sign, each name taking the last unused instance (RFC
 * 6376 §5.4.2): canonicalized into hdata, their names (lower case) into
 * names, colon-separated. 0, or -1 with err set. */
static int add_signed_headers(struct field *fields, size_t nfields, const char *headers,
			      struct core_buf *hdata, struct core_buf *names, char *err,
			      size_t errlen)
{
	const char *p = headers;

	while (*p != '\0') {
		const char *e = strchr(p, ':');
		size_t nl = e ? (size_t)(e - p) : strlen(p);
		size_t j;

		for (j = nfields; nl > 0 && j-- > 0;) {
			size_t clen;
			char *canon;

			if (fields[j].used || fields[j].namelen != nl ||
			    strncasecmp(fields[j].p, p, nl) != 0)
				continue;
			fields[j].used = true;
			canon = dkim_canon_header_relaxed(fields[j].p, fields[j].len, &clen);
			if (canon == NULL) {
				snprintf(err, errlen, "out of memory");
				return -1;
			}
			core_buf_add(hdata, canon, clen);
			core_buf_add(hdata, "\r\n", 2);
			free(canon);
			if (core_buf_len(names) > 0)
				core_buf_add(names, ":", 1);
			for (size_t c = 0; c < nl; c++) {
				char lc = (char)tolower((unsigned char)p[c]);

				core_buf_add(names, &lc, 1);
			}
			break;
		}
		p = e ? e + 1 : p + nl;
	}
	if (core_buf_len(names) == 0 || core_buf_error(names) != 0) {
		snprintf(err, errlen, "none of the headers to sign is present");
		return -1;
	}
	return 0;
}

/* h= on lines of at most ~70 characters, split after a colon. */
static void add_h_tag(struct core_buf *out, const char *hlist)
{
	size_t col = 12, s = 0, i;

	for (i = 0; hlist[i] != '\0'; i++) {
		if (hlist[i] == ':') {
			size_t n = i + 1 - s;

			if (col + n > 70) {
				core_buf_adds(out, "\r\n\t ");
				col = 2;
			}
			core_buf_add(out, hlist + s, n);
			col += n;
			s = i + 1;
		}
	}
	if (col + (i - s) > 70)
		core_buf_adds(out, "\r\n\t ");
	core_buf_add(out, hlist + s, i - s);
}

/* The signature field as it will be sent, up to its empty b=. Folding
 * points are WSP that relaxed canonicalization turns into one SP, so the
 * signed text is exactly what verifiers reconstruct. */
static void add_sig_field(struct core_buf *out, const struct dkim_key *k, int64_t t,
			  const char *hlist, const char *bh)
{
	char tbuf[32];

	snprintf(tbuf, sizeof(tbuf), "%" PRId64, t);
	core_buf_adds(out, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=");
	core_buf_adds(out, k->domain);
	core_buf_adds(out, "; s=");
	core_buf_adds(out, k->selector);
	core_buf_adds(out, ";\r\n\tt=");
	core_buf_adds(out, tbuf);
	core_buf_adds(out, "; h=");
	add_h_tag(out, hlist);
	core_buf_adds(out, ";\r\n\tbh=");
	core_buf_adds(out, bh);
	core_buf_adds(out, ";\r\n\tb=");
}

/* rsa-sha256 over data: *raw malloc'd, *rawlen its length. 0, or -1. */
static int rsa_sign(const struct dkim_key *k, const char *data, size_t len, unsigned char **raw,
		    size_t *rawlen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc = -1;

	*raw = NULL;
	*rawlen = 0;
	if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) != 1 ||
	    EVP_DigestSign(ctx, NULL, rawlen, (const unsigned char *)data, len) != 1 ||
	    (*raw = malloc(*rawlen)) == NULL ||
	    EVP_DigestSign(ctx, *raw, rawlen, (const unsigned char *)data, len) != 1)
		goto out;
	rc = 0;
out:
	if (rc != 0) {
		free(*raw);
		*raw = NULL;
	}
	EVP_MD_CTX_free(ctx);
	return rc;
}

int dkim_sign(const struct dkim_key *k, const char *msg, size_t len, const char *headers, int64_t t,
	      char **sig, char *err, size_t errlen)
{
	struct field *fields = NULL;
	size_t nfields = 0, hlen, siglen = 0, clen;
	const char *sep;
	char *hlist = NULL, *canon = NULL;
	unsigned char *rawsig = NULL;
	/* the signature header is small: a MiB is far more than it needs */
	struct core_buf hdata = CORE_BUF_INIT(DKIM_BUF_MAX), out = CORE_BUF_INIT(DKIM_BUF_MAX),
			names = CORE_BUF_INIT(DKIM_BUF_MAX), bh = CORE_BUF_INIT(DKIM_BUF_MAX);
	int rc = -1;

	*sig = NULL;
	if (headers == NULL)
		headers = DKIM_DEFAULT_HEADERS;
	sep = memmem(msg, len, "\r\n\r\n", 4);
	if (sep == NULL) {
		snprintf(err, errlen, "message has no header/body separator");
		return -1;
	}
	hlen = (size_t)(sep - msg) + 2; /* header block with its last CRLF */
	fields = calloc(DKIM_MAX_FIELDS, sizeof(*fields));
	if (fields == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (split_fields(msg, hlen, fields, DKIM_MAX_FIELDS, &nfields) != 0) {
		snprintf(err, errlen, "malformed or too many header fields");
		goto out;
	}
	if (body_hash(sep + 4, len - hlen - 2, &bh) != 0) {
		snprintf(err, errlen, "body hash failed");
		goto out;
	}
	if (add_signed_headers(fields, nfields, headers, &hdata, &names, err, errlen) != 0)
		goto out;
	hlist = core_buf_take(&names, NULL);
	if (hlist == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	add_sig_field(&out, k, t, hlist, core_buf_str(&bh));
	if (core_buf_error(&out) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	canon = dkim_canon_header_relaxed(core_buf_str(&out), core_buf_len(&out), &clen);
	if (canon == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	core_buf_add(&hdata, canon, clen); /* last, without a CRLF (§3.7) */
	if (core_buf_error(&hdata) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (rsa_sign(k, core_buf_str(&hdata), core_buf_len(&hdata), &rawsig, &siglen) != 0) {
		snprintf(err, errlen, "RSA signing failed");
		goto out;
	}
	/* FWS may go anywhere in b= (§3.5): lines of DKIM_FOLD_B64 characters. */
	core_buf_add_b64(&out, rawsig, siglen, DKIM_FOLD_B64, "\r\n\t ");
	core_buf_adds(&out, "\r\n");
	*sig = core_buf_take(&out, NULL); /* NULL if any append above failed */
	if (*sig == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	rc = 0;
out:
	free(fields);
	free(rawsig);
	free(hlist);
	free(canon);
	core_buf_free(&hdata);
	core_buf_free(&out);
	core_buf_free(&names);
	core_buf_free(&bh);
	return rc;
}
