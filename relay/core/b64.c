/* Base64 encoding (RFC 4648 §4, with padding) into a caller's fixed buffer;
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
