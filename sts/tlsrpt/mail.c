/* The TLS-RPT report on the wire: gzip (zlib), the RFC 8460 §5.1 file name,
 * and the §5.3 multipart/report e-mail, DKIM-signed when a key is given. */
#include "sts/tlsrpt/tlsrpt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "relay/core/clock.h"
#include "relay/core/buf.h"

#define MAIL_MAX (TLSRPT_REPORT_MAX * 2) /* base64 + headers stay well below */
#define B64_LINE 76                      /* RFC 2045 §6.8 */

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
	if (deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
	    Z_OK)
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
				goto fail; /* larger than max */
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
			goto fail; /* truncated */
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
	struct core_buf b = CORE_BUF_INIT(MAIL_MAX - 1), s = CORE_BUF_INIT(MAIL_MAX - 1);
	char date[40], fname[800], boundary[48], mid[40], dstart[32], dend[32];
	char *sig = NULL;

	*out = NULL;
	if (!header_safe(m->from, 320) || !header_safe(m->to, 512) ||
	    !header_safe(m->domain, 253) || !header_safe(m->submitter, 253) ||
	    !header_safe(m->report_id, 600) || !header_safe(m->hostname, 253) ||
	    strchr(m->to, '<') || strchr(m->to, '>')) {
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

	core_buf_printf(&b, "From: %s\r\n", m->from);
	core_buf_printf(&b, "To: %s\r\n", m->to);
	core_buf_printf(&b, "Date: %s\r\n", date);
	core_buf_printf(&b, "Message-ID: <tlsrpt.%s@%s>\r\n", mid, m->hostname);
	/* RFC 8460 §5.3 subject, folded at its FWS like the RFC's example */
	core_buf_printf(&b, "Subject: Report Domain: %s\r\n Submitter: %s\r\n Report-ID: <%s>\r\n",
			m->domain, m->submitter, m->report_id);
	core_buf_printf(&b, "TLS-Report-Domain: %s\r\n", m->domain);
	core_buf_printf(&b, "TLS-Report-Submitter: %s\r\n", m->submitter);
	core_buf_adds(&b, "TLS-Required: No\r\n");
	core_buf_adds(&b, "Auto-Submitted: auto-generated\r\n");
	core_buf_adds(&b, "MIME-Version: 1.0\r\n");
	core_buf_printf(&b,
			"Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
			"\tboundary=\"%s\"\r\n",
			boundary);
	core_buf_adds(&b, "\r\n");
	core_buf_adds(&b, "This is a multipart message in MIME format.\r\n\r\n");
	core_buf_printf(&b, "--%s\r\n", boundary);
	core_buf_adds(&b, "Content-Type: text/plain; charset=\"us-ascii\"\r\n");
	core_buf_adds(&b, "Content-Transfer-Encoding: 7bit\r\n\r\n");
	core_buf_printf(&b, "This is an aggregate TLS report from %s\r\n", m->submitter);
	core_buf_printf(&b, "for the policy domain %s,\r\n", m->domain);
	core_buf_printf(&b, "covering %s to %s (SMTP TLS Reporting, RFC 8460).\r\n", dstart, dend);
	core_buf_printf(&b, "Report-ID: %s\r\n\r\n", m->report_id);
	core_buf_printf(&b, "--%s\r\n", boundary);
	core_buf_adds(&b, "Content-Type: application/tlsrpt+gzip\r\n");
	core_buf_adds(&b, "Content-Transfer-Encoding: base64\r\n");
	core_buf_printf(&b, "Content-Disposition: attachment;\r\n\tfilename=\"%s\"\r\n\r\n", fname);
	/* lines of B64_LINE characters, each ended by CRLF */
	core_buf_add_b64(&b, m->gz, m->gzlen, B64_LINE, "\r\n");
	if (m->gzlen > 0)
		core_buf_adds(&b, "\r\n");
	core_buf_printf(&b, "\r\n--%s--\r\n", boundary);
	if (core_buf_error(&b) != 0) {
		snprintf(err, errlen, "out of memory or message too large");
		goto fail;
	}
	if (m->dkim != NULL) {
		if (dkim_sign(m->dkim, core_buf_str(&b), core_buf_len(&b), NULL, m->now, &sig, err,
			      errlen) != 0)
			goto fail;
		core_buf_adds(&s, sig);
		core_buf_add(&s, core_buf_str(&b), core_buf_len(&b));
		if (core_buf_error(&s) != 0) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		core_buf_free(&b);
		b = s;
		core_buf_init(&s, MAIL_MAX - 1);
	}
	free(sig);
	sig = NULL;
	*out = core_buf_take(&b, outlen);
	if (*out == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	return 0;
fail:
	free(sig);
	core_buf_free(&b);
	core_buf_free(&s);
	return -1;
}
