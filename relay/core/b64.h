/* Base64 (RFC 4648 §4, with padding) into a caller's fixed buffer: encoding
 * for MIME bodies, DKIM tags and RFC 2047 encoded words; strict decoding for
 * SASL responses (RFC 4954). Also the %XX escape of URIs (RFC 3986 §2.1). */
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

/* Decodes n characters of canonical base64 (the alphabet above, padding to
 * a multiple of 4, no blanks or line breaks, the bits after the last byte
 * zero) into out. Returns the number of bytes written, or -1 with nothing
 * promised about out when the text is not canonical base64 or the result
 * would not fit in outsize bytes. "" decodes to 0 bytes. */
ssize_t core_b64_decode(const char *in, size_t n, void *out, size_t outsize)
	__attribute__((warn_unused_result));

/* The octet of the escape "%XX" at p (p[0] == '%'), where avail bytes from
 * p on may be read; -1 if fewer than 3 or X is not a hex digit. */
int core_pct_octet(const char *p, size_t avail);

#endif
