/* Fuzz target for the RFC 5322 address-list parser: any bytes as one header
 * value; no crash or overrun, and every address returned is sane. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/addrlist.h"

#define CAP 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_addr(const struct addrlist_addr *a)
{
	size_t n = strnlen(a->addr, sizeof(a->addr));

	/* NUL-terminated, not empty, and no line end can reach an envelope. */
	if (n == 0 || n >= sizeof(a->addr) || strpbrk(a->addr, "\r\n") != NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct addrlist_addr list[CAP];
	struct addrlist_iter it;
	struct addrlist_addr a;
	struct addrlist_err err, err2;
	size_t n = 0, i, k;
	char *copy;
	int rc, rc2;

	/* exact-size heap copy so ASan sees any read past the value */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	if (size)
		memcpy(copy, data, size);
	memset(&err, 0, sizeof(err));
	rc = addrlist_parse(copy, size, list, CAP, &n, &err);
	if ((rc != 0 && rc != -1) || n > CAP)
		abort();
	if (rc == -1 && (err.why == NULL || strnlen(err.text, sizeof(err.text)) > ADDRLIST_ERR_EXCERPT))
		abort();
	for (i = 0; i < n; i++)
		check_addr(&list[i]);
	/* The iterator gives the same addresses, then the same outcome, and
	 * keeps giving that outcome. */
	addrlist_begin(&it, copy, size);
	for (k = 0;; k++) {
		rc2 = addrlist_next(&it, &a, &err2);
		if (rc2 != 1)
			break;
		check_addr(&a);
		if (k < n && (strcmp(a.addr, list[k].addr) != 0 || a.angle != list[k].angle))
			abort();
	}
	if (k < n || (k == n && rc2 != rc) || (k > n && !(rc == -1 && n == CAP)))
		abort();
	if (rc2 == -1 && k == n && (strcmp(err2.why, err.why) != 0 || strcmp(err2.text, err.text) != 0))
		abort();
	if (addrlist_next(&it, &a, &err) != rc2)
		abort();
	free(copy);
	return 0;
}
