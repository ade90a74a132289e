/* A growable byte buffer with a ceiling fixed at creation: appends of bytes,
 * strings, printf output and base64; overflow is a sticky error, not a crash. */
#include "relay/core/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/b64.h"

#define CORE_BUF_FIRST 256 /* first allocation; doubled from there */

void core_buf_init(struct core_buf *b, size_t max)
{
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
	b->err = 0;
}

/* Every failure ends here: what was built is useless, so it goes at once. */
static int buf_fail(struct core_buf *b, int err)
{
	free(b->p);
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
	b->err = err;
	return err;
}

/* Room for n more bytes plus the NUL, within max. */
static int buf_reserve(struct core_buf *b, size_t n)
{
	size_t need, cap, limit;
	char *np;

	if (b->err != 0)
		return b->err;
	/* len <= max always holds; the second test keeps need from wrapping */
	if (n > b->max - b->len || b->len + n == SIZE_MAX)
		return buf_fail(b, -E2BIG);
	need = b->len + n + 1;
	if (need <= b->cap)
		return 0;
	limit = b->max < SIZE_MAX ? b->max + 1 : SIZE_MAX;
	cap = b->cap ? b->cap : CORE_BUF_FIRST;
	while (cap < need && cap <= SIZE_MAX / 2)
		cap *= 2;
	if (cap < need)
		cap = need;
	if (cap > limit)
		cap = limit; /* need <= limit, so this still holds need */
	np = realloc(b->p, cap);
	if (np == NULL)
		return buf_fail(b, -ENOMEM);
	b->p = np;
	b->cap = cap;
	return 0;
}

int core_buf_add(struct core_buf *b, const void *data, size_t n)
{
	int rc = buf_reserve(b, n);

	if (rc != 0)
		return rc;
	if (n > 0)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int core_buf_adds(struct core_buf *b, const char *s)
{
	return core_buf_add(b, s, strlen(s));
}

int core_buf_vprintf(struct core_buf *b, const char *fmt, va_list ap)
{
	va_list again;
	size_t room;
	int n, rc;

	if (b->err != 0)
		return b->err;
	/* Most lines fit in the space already there: format once, in place.
	 * A failed attempt may scribble past len; that space is not content. */
	room = b->p != NULL ? b->cap - b->len : 0;
	va_copy(again, ap);
	n = vsnprintf(room > 0 ? b->p + b->len : NULL, room, fmt, again);
	va_end(again);
	if (n < 0)
		return buf_fail(b, -EINVAL);
	if ((size_t)n >= room) {
		rc = buf_reserve(b, (size_t)n);
		if (rc != 0)
			return rc;
		va_copy(again, ap);
		vsnprintf(b->p + b->len, b->cap - b->len, fmt, again);
		va_end(again);
	}
	b->len += (size_t)n;
	return 0;
}

int core_buf_printf(struct core_buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = core_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

int core_buf_add_b64(struct core_buf *b, const void *data, size_t n, size_t width, const char *sep)
{
	size_t elen = core_b64_len(n), seplen, lines, total, i;
	char *dst, *src;
	int rc;

	if (b->err != 0)
		return b->err;
	if (elen == SIZE_MAX)
		return buf_fail(b, -E2BIG);
	seplen = width > 0 && sep != NULL ? strlen(sep) : 0;
	lines = width > 0 && elen > 0 ? (elen - 1) / width + 1 : 1;
	if (seplen > 0 && lines - 1 > (SIZE_MAX - elen) / seplen)
		return buf_fail(b, -E2BIG);
	total = elen + (lines - 1) * seplen;
	rc = buf_reserve(b, total);
	if (rc != 0)
		return rc;
	/* Encode at the far end of the new space, then slide each line down to
	 * its place with the separators in between: line i moves from
	 * (total - elen) + i * width to i * (width + seplen), never forward
	 * past its source, so one pass of memmove is enough. */
	dst = b->p + b->len;
	src = dst + (total - elen);
	if (core_b64_encode(data, n, src, b->cap - b->len - (total - elen)) < 0)
		return buf_fail(b, -E2BIG); /* cannot happen: reserved above */
	for (i = 0; i < lines && seplen > 0; i++) {
		size_t take = elen - i * width < width ? elen - i * width : width;

		memmove(dst, src + i * width, take);
		dst += take;
		if (i + 1 < lines) {
			memcpy(dst, sep, seplen);
			dst += seplen;
		}
	}
	b->len += total;
	b->p[b->len] = '\0';
	return 0;
}

const char *core_buf_str(const struct core_buf *b)
{
	return b->p != NULL ? b->p : "";
}

size_t core_buf_len(const struct core_buf *b)
{
	return b->len;
}

int core_buf_error(const struct core_buf *b)
{
	return b->err;
}

char *core_buf_take(struct core_buf *b, size_t *len)
{
	char *p = b->p;

	if (len != NULL)
		*len = 0;
	if (b->err != 0)
		return NULL;
	if (p == NULL) {
		p = malloc(1);
		if (p == NULL) {
			buf_fail(b, -ENOMEM);
			return NULL;
		}
		p[0] = '\0';
	}
	if (len != NULL)
		*len = b->len;
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
	return p;
}

void core_buf_free(struct core_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
	b->err = 0;
}
