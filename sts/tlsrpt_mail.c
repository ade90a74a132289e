/* The TLS-RPT report on the wire: gzip (zlib), the RFC 8460 §5.1 file name,
 * and the §5.3 multipart/report e-mail, DKIM-signed when a key is given. */
#include "sts/tlsrpt.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "relay/clock.h"

#define MAIL_MAX (TLSRPT_REPORT_MAX * 2)   /* base64 + headers stay well below */
#define B64_LINE 76                       /* RFC 2045 §6.8 */

int tlsrpt_gzip(const void *in, size_t len, unsigned char **out, size_t *outlen)
{
	z_stream zs;
	unsigned char *buf;
	uLong bound;
	int rc;

	*out = NULL;
	if (len > TLSRPT_REPORT_MAX)
		return -1;
	memset(&zs, 0, sizeof(zs));
	/* windowBits 15 + 16: a gzip (RFC 1952) wrapper, not zlib's */
	if (deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	bound = deflateBound(&zs, (uLong)len) + 64;
	buf = malloc(bound);
	if (buf == NULL) {
		deflateEnd(&zs);
		return -1;
	}
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	zs.next_out = buf;
	zs.avail_out = (uInt)bound;
	rc = deflate(&zs, Z_FINISH);
	deflateEnd(&zs);
	if (rc != Z_STREAM_END) {
		free(buf);
		return -1;
	}
	*out = buf;
	*outlen = bound - zs.avail_out;
	return 0;
}

int tlsrpt_gunzip(const void *in, size_t len, size_t max, unsigned char **out, size_t *outlen)
{
	z_stream zs;
	unsigned char *buf = NULL;
	size_t cap = 4096, have = 0;
	int rc = Z_OK;

	*out = NULL;
	if (len > UINT32_MAX)
		return -1;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 15 + 16) != Z_OK)
		return -1;
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	while (rc != Z_STREAM_END) {
		if (have + 1 >= cap || buf == NULL) {
			unsigned char *nb;

			if (buf != NULL)
				cap *= 2;
			if (cap > max + 2)
				cap = max + 2;
			if (buf != NULL && have + 1 >= cap)
				goto fail;          /* larger than max */
			nb = realloc(buf, cap);
			if (nb == NULL)
				goto fail;
			buf = nb;
		}
		zs.next_out = buf + have;
		zs.avail_out = (uInt)(cap - 1 - have);
		rc = inflate(&zs, Z_NO_FLUSH);
		have = cap - 1 - zs.avail_out;
		if (rc == Z_BUF_ERROR && zs.avail_in == 0)
			goto fail;                  /* truncated */
		if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
			goto fail;
		if (have > max)
			goto fail;
	}
	inflateEnd(&zs);
	buf[have] = '\0';
	*out = buf;
	*outlen = have;
	return 0;
fail:
	inflateEnd(&zs);
	free(buf);
	return -1;
}

int tlsrpt_filename(const char *submitter, const char *domain, int64_t day_start,
		    const char *report_id, char *buf, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char uid[17];
	int n, i;

	if (EVP_Digest(report_id, strlen(report_id), md, &mdlen, EVP_sha256(), NULL) != 1)
		return -1;
	for (i = 0; i < 8; i++)
		snprintf(uid + 2 * i, 3, "%02x", md[i]);
	n = snprintf(buf, len, "%s!%s!%" PRId64 "!%" PRId64 "!%s.json.gz", submitter, domain,
		     day_start, day_start + 86399, uid);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* A header value we put on a line must not break the header syntax. */
static bool header_safe(const char *s, size_t max)
{
	size_t n;

	if (s == NULL || *s == '\0')
		return false;
	for (n = 0; s[n] != '\0'; n++)
		if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e || n >= max)
			return false;
	return true;
}

struct mbuf {
	char *p;
	size_t len, cap;
	bool failed;
};

static void mb_add(struct mbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *np;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (cap > MAIL_MAX || (np = realloc(b->p, cap)) == NULL) {
			b->failed = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void mb_fmt(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mb_fmt(struct mbuf *b, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		b->failed = true;
		return;
	}
	mb_add(b, line, (size_t)n);
}

static void random_hex(char *out, size_t nbytes)
{
	unsigned char r[32];
	size_t i;

	if (nbytes > sizeof(r))
		nbytes = sizeof(r);
	if (RAND_bytes(r, (int)nbytes) != 1) {
		/* not security relevant (uniqueness only): fall back to time */
		uint64_t t = (uint64_t)clock_now_ms();

		for (i = 0; i < nbytes; i++)
			r[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)i;
	}
	for (i = 0; i < nbytes; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
}

int tlsrpt_mail_compose(const struct tlsrpt_mail *m, char **out, size_t *outlen, char *err,
			size_t errlen)
{
	struct mbuf b = { 0 };
	char date[40], fname[800], boundary[48], mid[40], dstart[32], dend[32], *b64 = NULL;
	char *sig = NULL;
	size_t i, b64len;

	*out = NULL;
	if (!header_safe(m->from, 320) || !header_safe(m->to, 512) || !header_safe(m->domain, 253) ||
	    !header_safe(m->submitter, 253) || !header_safe(m->report_id, 600) ||
	    !header_safe(m->hostname, 253) || strchr(m->to, '<') || strchr(m->to, '>')) {
		snprintf(err, errlen, "unsafe header value (control or non-ASCII characters)");
		return -1;
	}
	if (m->gzlen > TLSRPT_REPORT_MAX) {
		snprintf(err, errlen, "report too large");
		return -1;
	}
	if (tlsrpt_filename(m->submitter, m->domain, m->day_start, m->report_id, fname,
			    sizeof(fname)) != 0) {
		snprintf(err, errlen, "file name too long");
		return -1;
	}
	clock_rfc5322(m->now, date, sizeof(date));
	clock_rfc3339(m->day_start, dstart, sizeof(dstart));
	clock_rfc3339(m->day_start + 86399, dend, sizeof(dend));
	memcpy(boundary, "=_tlsrpt_", 9);
	random_hex(boundary + 9, 12);
	random_hex(mid, 12);

	mb_fmt(&b, "From: %s\r\n", m->from);
	mb_fmt(&b, "To: %s\r\n", m->to);
	mb_fmt(&b, "Date: %s\r\n", date);
	mb_fmt(&b, "Message-ID: <tlsrpt.%s@%s>\r\n", mid, m->hostname);
	/* RFC 8460 §5.3 subject, folded at its FWS like the RFC's example */
	mb_fmt(&b, "Subject: Report Domain: %s\r\n Submitter: %s\r\n Report-ID: <%s>\r\n",
	       m->domain, m->submitter, m->report_id);
	mb_fmt(&b, "TLS-Report-Domain: %s\r\n", m->domain);
	mb_fmt(&b, "TLS-Report-Submitter: %s\r\n", m->submitter);
	mb_add(&b, "TLS-Required: No\r\n", 18);
	mb_add(&b, "Auto-Submitted: auto-generated\r\n", 32);
	mb_add(&b, "MIME-Version: 1.0\r\n", 19);
	mb_fmt(&b, "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"%s\"\r\n",
	       boundary);
	mb_add(&b, "\r\n", 2);
	mb_add(&b, "This is a multipart message in MIME format.\r\n\r\n", 47);
	mb_fmt(&b, "--%s\r\n", boundary);
	mb_add(&b, "Content-Type: text/plain; charset=\"us-ascii\"\r\n", 46);
	mb_add(&b, "Content-Transfer-Encoding: 7bit\r\n\r\n", 35);
	mb_fmt(&b, "This is an aggregate TLS report from %s\r\n", m->submitter);
	mb_fmt(&b, "for the policy domain %s,\r\n", m->domain);
	mb_fmt(&b, "covering %s to %s (SMTP TLS Reporting, RFC 8460).\r\n", dstart, dend);
	mb_fmt(&b, "Report-ID: %s\r\n\r\n", m->report_id);
	mb_fmt(&b, "--%s\r\n", boundary);
	mb_add(&b, "Content-Type: application/tlsrpt+gzip\r\n", 39);
	mb_add(&b, "Content-Transfer-Encoding: base64\r\n", 35);
	mb_fmt(&b, "Content-Disposition: attachment;\r\n\tfilename=\"%s\"\r\n\r\n", fname);
	b64 = malloc(4 * ((m->gzlen + 2) / 3) + 1);
	if (b64 == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	EVP_EncodeBlock((unsigned char *)b64, m->gz, (int)m->gzlen);
	for (i = 0, b64len = strlen(b64); i < b64len; i += B64_LINE) {
		size_t n = b64len - i;

		mb_add(&b, b64 + i, n < B64_LINE ? n : B64_LINE);
		mb_add(&b, "\r\n", 2);
	}
	mb_fmt(&b, "\r\n--%s--\r\n", boundary);
	if (b.failed) {
		snprintf(err, errlen, "out of memory or message too large");
		goto fail;
	}
	if (m->dkim != NULL) {
		struct mbuf s = { 0 };

		if (dkim_sign(m->dkim, b.p, b.len, NULL, m->now, &sig, err, errlen) != 0)
			goto fail;
		mb_add(&s, sig, strlen(sig));
		mb_add(&s, b.p, b.len);
		if (s.failed) {
			free(s.p);
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		free(b.p);
		b = s;
	}
	free(b64);
	free(sig);
	*out = b.p;
	*outlen = b.len;
	return 0;
fail:
	free(b64);
	free(sig);
	free(b.p);
	return -1;
}
