/* The `stsrelay sts` subcommand. Its engine is not built yet: the command
 * says so plainly instead of printing anything that could be mistaken for a result. */
#include "relay/commands.h"

#include <stdio.h>
#include <sysexits.h>

int cmd_sts(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "stsrelay: 'sts' is not available in this build yet\n");
	return EX_UNAVAILABLE;
}
