/* A growable byte buffer with a ceiling fixed at creation (curl's DYNBUF
 * idea): building mail, queue files and HTTP bodies without unbounded growth. */
#ifndef STSRELAY_CORE_BUF_H
#define STSRELAY_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

/*
 * Ownership: the buffer owns p until core_buf_take() hands it to the caller
 * or core_buf_free() releases it. The content is always NUL-terminated (the
 * NUL is not counted in len and not counted against max).
 *
 * Errors are sticky: the first failed append frees the content, records the
 * error (-E2BIG: the content would exceed max; -ENOMEM; -EINVAL: a bad
 * format) and every later append returns that error without doing anything.
 * So a composer may append many pieces and check once, at the end, with
 * core_buf_error() or core_buf_take().
 *
 * The fields are visible so a buffer can live inside another struct or on
 * the stack (CORE_BUF_INIT); read them through the functions below.
 */
struct core_buf {
	char *p;    /* NULL until the first byte is added */
	size_t len; /* bytes held, without the NUL */
	size_t cap; /* bytes allocated */
	size_t max; /* most bytes the buffer may hold, without the NUL */
	int err;    /* 0, or the first error (negative errno) */
};

/* clang-format off: an initializer, not a block */
#define CORE_BUF_INIT(maxlen)           \
	{                               \
		NULL, 0, 0, (maxlen), 0 \
	}
/* clang-format on */

/* An empty buffer that may grow to max bytes (max + 1 with the NUL). */
void core_buf_init(struct core_buf *b, size_t max);

/* Append n bytes / a C string / printf output. 0, or the (sticky) error. */
int core_buf_add(struct core_buf *b, const void *data, size_t n);
int core_buf_adds(struct core_buf *b, const char *s);
int core_buf_printf(struct core_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int core_buf_vprintf(struct core_buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* Append data in base64 (RFC 4648 §4, padded). With width > 0 the text is
 * cut into lines of width characters with sep between them (nothing after
 * the last line); width 0 appends one unbroken run and ignores sep. */
int core_buf_add_b64(struct core_buf *b, const void *data, size_t n, size_t width, const char *sep);

/* The content ("" when empty or failed; valid until the next append). */
const char *core_buf_str(const struct core_buf *b);
size_t core_buf_len(const struct core_buf *b);
/* 0, or the error that stopped the buffer. */
int core_buf_error(const struct core_buf *b);

/* Hands the content to the caller (free() it) and leaves b empty with the
 * same max. NULL if the buffer failed (the error stays in b until
 * core_buf_free) or if allocating an empty string fails. *len may be NULL. */
char *core_buf_take(struct core_buf *b, size_t *len);

/* Releases the content, clears the error, keeps max: b is reusable. */
void core_buf_free(struct core_buf *b);

#endif
