/* The stsrelay binary: one program, subcommands, and argv[0] dispatch so the
 * installed `sendmail` and `mailq` links behave as their namesakes. */
#include "relay/cli/cli.h"
#include "relay/cli/commands.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>

static void usage(FILE *f)
{
	fputs("usage: stsrelay serve [-c FILE]\n"
	      "       stsrelay check [-c FILE]\n"
	      "       stsrelay sendmail [flags] [recipient ...]\n"
	      "       stsrelay queue list [--json] | show ID [--json] | flush [ID] | delete ID | bounce ID\n"
	      "       stsrelay sts check DOMAIN [--json] [--probe] [--update-cache] | sts cache [--json]\n"
	      "       stsrelay tlsrpt show [--day YYYY-MM-DD] [--json] | tlsrpt send [--day YYYY-MM-DD]\n"
	      "       stsrelay tlsrpt dkim-keygen [--selector S] [--out PATH] [--force]\n"
	      "       stsrelay user add NAME [--sender PATTERN]... | user del NAME | user list [--json]\n"
	      "       stsrelay --version | -V\n"
	      "Every subcommand takes -c FILE (else $STSRELAY_CONF, else /etc/stsrelay/stsrelay.conf)\n"
	      "and --help. Exit codes follow sysexits.h; see stsrelay(8).\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "serve", cmd_serve },      { "sendmail", cmd_sendmail }, { "queue", cmd_queue },
		{ "mailq", cmd_mailq },      { "sts", cmd_sts },           { "tlsrpt", cmd_tlsrpt },
		{ "check", cmd_conf_check }, { "user", cmd_user },
	};
	const char *base = strrchr(argv[0], '/');
	size_t i;

	base = base ? base + 1 : argv[0];
	if (strcmp(base, "sendmail") == 0)
		return cmd_sendmail(argc, argv);
	/* Only sendmail needs the drop group of a setgid install; everything
	 * else runs with the caller's own rights. */
	if (!(argc > 1 && strcmp(argv[1], "sendmail") == 0) && cli_drop_setgid("stsrelay") != 0)
		return EX_OSERR;
	if (strcmp(base, "mailq") == 0)
		return cmd_mailq(argc, argv);
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EX_USAGE : 0;
	}
	if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
		if (argc != 2) {
			usage(stderr);
			return EX_USAGE;
		}
		return cli_print_version();
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "stsrelay: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EX_USAGE;
}
