/* Base64 (RFC 4648 §4, with padding) to and from a caller's fixed buffer;
 * plain C so the core library needs no crypto library. */
#include "relay/core/b64.h"

#include <limits.h>
#include <stdint.h>

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t core_b64_len(size_t n)
{
	size_t groups = n / 3 + (n % 3 != 0);

	if (groups > SIZE_MAX / 4)
		return SIZE_MAX;
	return groups * 4;
}

ssize_t core_b64_encode(const void *in, size_t n, char *out, size_t outsize)
{
	const unsigned char *s = in;
	size_t need = core_b64_len(n), i, o = 0;

	/* need == SIZE_MAX cannot be met, and also keeps need + 1 from wrapping */
	if (need == SIZE_MAX || need > (size_t)SSIZE_MAX || outsize < need + 1)
		return -1;
	for (i = 0; i < n; i += 3) {
		size_t left = n - i;
		uint32_t v = (uint32_t)s[i] << 16;

		if (left > 1)
			v |= (uint32_t)s[i + 1] << 8;
		if (left > 2)
			v |= s[i + 2];
		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = left > 1 ? b64_alphabet[(v >> 6) & 63] : '=';
		out[o++] = left > 2 ? b64_alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return (ssize_t)o;
}

/* The 6-bit value of c, or -1 for a character outside the alphabet. */
static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

ssize_t core_b64_decode(const char *in, size_t n, void *out, size_t outsize)
{
	unsigned char *o = out;
	size_t i, w = 0;

	if (n % 4 != 0 || n / 4 * 3 > (size_t)SSIZE_MAX)
		return -1;
	for (i = 0; i < n; i += 4) {
		int v[4], k, pad = 0;
		uint32_t bits = 0;

		for (k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];

			/* '=' only in the last group's last one or two places */
			if (c == '=' && i + 4 == n && k >= 2 && (k == 3 || in[i + 3] == '=')) {
				v[k] = 0;
				pad++;
				continue;
			}
			v[k] = b64_value(c);
			if (v[k] < 0 || pad > 0)
				return -1;
		}
		bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
		       (uint32_t)v[3];
		/* non-canonical: bits below the last byte must be zero */
		if ((pad == 2 && (bits & 0xffff) != 0) || (pad == 1 && (bits & 0xff) != 0))
			return -1;
		if (w + (size_t)(3 - pad) > outsize)
			return -1;
		o[w++] = (unsigned char)(bits >> 16);
		if (pad < 2)
			o[w++] = (unsigned char)(bits >> 8);
		if (pad < 1)
			o[w++] = (unsigned char)bits;
	}
	return (ssize_t)w;
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int core_pct_octet(const char *p, size_t avail)
{
	int hi, lo;

	if (avail < 3 || p[0] != '%')
		return -1;
	hi = hex_value((unsigned char)p[1]);
	lo = hex_value((unsigned char)p[2]);
	return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}
