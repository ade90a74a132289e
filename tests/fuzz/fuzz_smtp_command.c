/* Fuzz target for the SMTP server command parser: any bytes as one command
 * line; the parser must not crash, overrun, or return an unknown code, and
 * every path it accepts must be one the outbound client can send (or a
 * local recipient, which never leaves as it is). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/address.h"
#include "smtp/command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_command cmd;
	const char *reason = NULL;
	char *copy;
	int rc;

	/* exact-size heap copy so ASan sees any read past the line */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	if (size)
		memcpy(copy, data, size);
	rc = smtp_command_parse(copy, size, &cmd, &reason);
	if (rc != 0 && rc != 500 && rc != 501 && rc != 502 && rc != 504 && rc != 555)
		abort();
	if (rc != 0 && reason == NULL)
		abort();
	if (rc == 0) {
		bool mail = cmd.verb == SMTP_CMD_MAIL, rcpt = cmd.verb == SMTP_CMD_RCPT;
		/* a local recipient ("postmaster" without a domain, RFC 5321
		 * §4.5.1) is never sent as it is: the listener rewrites it to
		 * alias_root or refuses it (smtp_address_local) */
		bool local = rcpt && smtp_address_local(cmd.path, "relay.fuzz.test", "", NULL, 0) ==
					     SMTP_LOCAL_REFUSED;

		if (strlen(cmd.arg) >= sizeof(cmd.arg) || strlen(cmd.path) > SMTP_PATH_MAX)
			abort();
		if (((mail && cmd.path[0]) || rcpt) && !local && smtp_address_valid(cmd.path) != 0)
			abort();
		/* what the listener accepts the outbound client can send */
		if ((mail || rcpt) && !local && !smtp_address_sendable(cmd.path, mail, NULL))
			abort();
	}
	free(copy);
	return 0;
}
