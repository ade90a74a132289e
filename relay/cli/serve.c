/* `stsrelay serve`: the command line (options, the configuration file);
 * the daemon itself is relay/daemon/lifecycle.c. */
#include "relay/cli/commands.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sysexits.h>

#include "relay/cli/cli.h"
#include "relay/core/config.h"
#include "relay/daemon/lifecycle.h"

static const char serve_help[] =
	"usage: stsrelay serve [-c FILE]\n"
	"\n"
	"The relay daemon, in the foreground: binds `listen`, becomes `user`, opens\n"
	"the spool and delivers. SIGTERM or SIGINT: stop accepting, finish or\n"
	"requeue what is in flight, exit 0. SIGHUP: reload the configuration.\n"
	"Under systemd it reports readiness with sd_notify (Type=notify).\n"
	"  -c FILE, --config FILE  configuration file (else $STSRELAY_CONF, else\n"
	"                          " CONFIG_DEFAULT_PATH ")\n"
	"  -h, --help              this text\n"
	"Exit: 0 stopped by a signal, 64 usage, 70 the delivery engine could not\n"
	"start (the reason is logged; a bad ca_file ends here: `stsrelay check`),\n"
	"71 a listen address cannot be bound, 73 the spool cannot be created or\n"
	"written, 75 another daemon holds the spool lock, 77 `user` is unknown or\n"
	"cannot be switched to or cannot write the spool, 78 configuration error.\n";

int cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *explicit_path = NULL, *path;
	struct config *cfg;
	char err[1024];
	int opt, code;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			explicit_path = optarg;
			break;
		case 'h':
			return cli_usage(serve_help, true);
		default:
			return cli_usage(serve_help, false);
		}
	}
	if (optind != argc)
		return cli_usage(serve_help, false);
	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL) {
		fputs("stsrelay: out of memory\n", stderr);
		return EX_OSERR;
	}
	path = config_path(explicit_path);
	if (config_load(cfg, path, err, sizeof(err)) != 0) {
		fprintf(stderr, "stsrelay: %s\n", err);
		free(cfg);
		return EX_CONFIG;
	}
	code = lifecycle_run(cfg, path, STSRELAY_VERSION);
	free(cfg);
	return code;
}
