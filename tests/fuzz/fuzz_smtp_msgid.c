/* Fuzzes the Message-ID scanner: the same bytes fed whole and in pieces
 * must give the same answer, bounded and terminated. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/msgid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_msgid_scan whole, parts;
	const char *a, *b;
	size_t piece, off;

	if (size == 0)
		return 0;
	piece = (size_t)data[0] % 17 + 1;   /* first byte: the piece size */
	data++;
	size--;
	smtp_msgid_init(&whole);
	smtp_msgid_feed(&whole, (const char *)data, size);
	smtp_msgid_init(&parts);
	for (off = 0; off < size; off += piece)
		smtp_msgid_feed(&parts, (const char *)data + off, size - off < piece ? size - off : piece);
	a = smtp_msgid_value(&whole);
	b = smtp_msgid_value(&parts);
	if ((a == NULL) != (b == NULL))
		abort();
	if (a != NULL && (strlen(a) > SMTP_MSGID_MAX || strcmp(a, b) != 0))
		abort();
	return 0;
}
