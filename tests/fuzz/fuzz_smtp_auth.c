/* Fuzz target for the AUTH/SASL decoding (smtp/sasl.c): the input is split at
 * LF into the AUTH argument and the response lines that follow; the exchange
 * must not crash or overrun, every reply must be a known kind, and DONE must
 * hand over bounded, NUL-free credentials. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Replies the listener may send: a challenge or an error with its code. */
static void check_reply(enum smtp_sasl_rc rc, const char *r)
{
	if (rc == SMTP_SASL_DONE) {
		if (r != NULL)
			abort();
		return;
	}
	if (r == NULL || strlen(r) < 4)
		abort();
	if (rc == SMTP_SASL_CHALLENGE && strncmp(r, "334 ", 4) != 0)
		abort();
	if (rc == SMTP_SASL_DENIED && strncmp(r, "535 ", 4) != 0)
		abort();
	if (rc == SMTP_SASL_FAIL && r[0] != '5')
		abort();
}

static void check_done(const struct smtp_sasl *x)
{
	size_t u = strnlen(x->user, sizeof(x->user)), p = strnlen(x->pass, sizeof(x->pass));

	if (u == 0 || u > SMTP_SASL_FIELD_MAX || p == 0 || p > SMTP_SASL_FIELD_MAX)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_sasl x;
	enum smtp_sasl_rc rc = SMTP_SASL_CHALLENGE;
	size_t pos = 0;
	int first = 1, steps = 0;

	while (pos <= size && rc == SMTP_SASL_CHALLENGE && steps++ < 16) {
		const uint8_t *lf = memchr(data + pos, '\n', size - pos);
		size_t n = lf != NULL ? (size_t)(lf - (data + pos)) + 1 : size - pos;
		/* exact-size heap copy so ASan sees any read past the line */
		char *line = malloc(n ? n : 1);
		const char *r = NULL;

		if (line == NULL)
			return 0;
		if (n)
			memcpy(line, data + pos, n);
		rc = first ? smtp_sasl_start(&x, line, n, &r) : smtp_sasl_step(&x, line, n, &r);
		free(line);
		first = 0;
		check_reply(rc, r);
		if (rc == SMTP_SASL_DONE)
			check_done(&x);
		pos += n;
		if (lf == NULL)
			break;
	}
	smtp_sasl_clear(&x);
	return 0;
}
