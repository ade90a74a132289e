/* libFuzzer target for the tls_policy_file parser and its lookup: any bytes
 * give a table or a FILE:LINE error, and every listed domain is found again. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "relay/core/tls_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tls_policy *p = NULL;
	char err[512];
	enum tls_level l;

	if (tls_policy_parse((const char *)data, size, "f", &p, err, sizeof(err)) != 0) {
		if (p != NULL || strncmp(err, "f:", 2) != 0)
			__builtin_trap();
		return 0;
	}
	for (size_t i = 0; i < p->n; i++) {
		const struct tls_policy_entry *e = &p->e[i];

		if (e->domain[0] == '.')
			continue; /* a parent entry matches names below it only */
		if (!tls_policy_lookup(p, e->domain, &l) || l != e->level)
			__builtin_trap();
	}
	(void)tls_policy_lookup(p, (const char *)"x.example.com", &l);
	tls_policy_free(p);
	return 0;
}
