/* Fuzz target for the SMTP server command parser: any bytes as one command
 * line; the parser must not crash, overrun, or return an unknown code, and
 * every path it accepts must be one the outbound client can send. */
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
		if (strlen(cmd.arg) >= sizeof(cmd.arg) || strlen(cmd.path) > SMTP_PATH_MAX)
			abort();
		if ((cmd.verb == SMTP_CMD_MAIL && cmd.path[0]) || cmd.verb == SMTP_CMD_RCPT)
			if (smtp_address_valid(cmd.path) != 0)
				abort();
		/* what the listener accepts the outbound client can send */
		if ((cmd.verb == SMTP_CMD_MAIL || cmd.verb == SMTP_CMD_RCPT) &&
		    !smtp_address_sendable(cmd.path, cmd.verb == SMTP_CMD_MAIL, NULL))
			abort();
	}
	free(copy);
	return 0;
}
