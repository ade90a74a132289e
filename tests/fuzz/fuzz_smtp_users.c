/* Fuzz target for the auth_users_file parser (smtp/users.c): any bytes as a
 * file; it must not crash, and every user it accepts must pass the checks it
 * documents (a valid name, a yescrypt or sha512-crypt hash, valid patterns). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/users.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_users *u = NULL;
	char err[512];
	char *copy = malloc(size ? size : 1);
	size_t i, k;

	if (copy == NULL)
		return 0;
	if (size)
		memcpy(copy, data, size);
	if (smtp_users_parse(copy, size, "fuzz", &u, err, sizeof(err)) == 0) {
		for (i = 0; i < smtp_users_count(u); i++) {
			const struct smtp_user *a = smtp_users_at(u, i);

			if (smtp_users_check_name(a->name) != NULL ||
			    (strncmp(a->hash, "$y$", 3) != 0 && strncmp(a->hash, "$6$", 3) != 0) ||
			    smtp_users_find(u, a->name) != a)
				abort();
			for (k = 0; k < a->nsenders; k++)
				if (smtp_users_check_pattern(a->senders[k]) != NULL)
					abort();
			(void)smtp_user_may_send(a, "x@example.org");
		}
		smtp_users_unref(u);
	} else if (u != NULL || err[0] == '\0') {
		abort();
	}
	free(copy);
	return 0;
}
