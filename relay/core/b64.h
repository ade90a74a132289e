/* Base64 encoding (RFC 4648 §4, with padding) into a caller's fixed buffer,
 * for MIME bodies, DKIM tags and RFC 2047 encoded words. */
#ifndef STSRELAY_CORE_B64_H
#define STSRELAY_CORE_B64_H

#include <stddef.h>
#include <sys/types.h>

/* Characters that n bytes encode to (without a NUL): 4 * ceil(n / 3).
 * SIZE_MAX if that does not fit in a size_t. */
size_t core_b64_len(size_t n);

/* Encodes n bytes of in into out and NUL-terminates it. Returns the
 * number of characters written (core_b64_len(n)), or -1 with nothing
 * written if outsize is smaller than that plus one. */
ssize_t core_b64_encode(const void *in, size_t n, char *out, size_t outsize);

#endif
