/* Helpers shared by the command-line subcommands (sendmail, queue, mailq):
 * config loading with a clear message, the control-socket client, listing. */
#ifndef STSRELAY_CLI_H
#define STSRELAY_CLI_H

#include <stdbool.h>
#include <jansson.h>
#include <stddef.h>

#include "relay/core/config.h"

/* When the binary is installed setgid (to the maildrop group), gives that
 * group up for good: every subcommand except sendmail calls this first, so
 * nothing else ever runs with it. Returns -1 (and prints) if it cannot. */
int cli_drop_setgid(const char *prog);

/* `stsrelay --version`: prints "stsrelay X.Y.Z" (the CMake project version)
 * on stdout. Returns 0, or EX_IOERR when stdout cannot be written. */
int cli_print_version(void);

/* True for "-h" and "--help", the help flags of every subcommand. */
bool cli_is_help(const char *arg);

/* Prints a subcommand's usage text: asked for (--help) on stdout with exit
 * code 0, after a usage error on stderr with EX_USAGE. Returns that code. */
int cli_usage(const char *text, bool asked);

/* The exit code for a failed file or socket operation: a permission problem
 * (EACCES, EPERM) is EX_NOPERM, 77 (run it as root or the daemon's user),
 * anything else `otherwise`. */
int cli_exit_for_errno(int e, int otherwise);

/* Loads the configuration a subcommand uses (explicit path, else
 * $STSRELAY_CONF, else the default). On failure prints "PROG: ERROR" to
 * stderr and returns EX_CONFIG; 0 on success. */
int cli_load_config(const char *prog, const char *explicit_path, struct config *cfg);

/* Result of a control-socket request. */
enum cli_control_result {
	CLI_CONTROL_REPLIED,   /* the daemon answered; reply holds its line */
	CLI_CONTROL_NO_DAEMON, /* no socket or connection refused: not running */
	CLI_CONTROL_DENIED,    /* the socket exists but this user may not use it */
	CLI_CONTROL_FAILED     /* anything else; reply holds the reason */
};

/* Sends one request line (no CR/LF inside) to spool_dir/control and reads
 * one reply line (without its line end) into reply. Bounded in time (30 s)
 * and size (replylen). */
enum cli_control_result cli_control_request(const char *spool_dir, const char *request, char *reply,
					    size_t replylen);

/* The queue listing from the running daemon's public endpoint
 * (spool_dir/public/showq, open to every local user): *doc gets the
 * document queue/listing.h describes, without submitter and client.
 * REPLIED, NO_DAEMON, DENIED (the spool cannot even be entered), else
 * FAILED; err says why. Bounded in time (30 s) and size (LISTING_MAX). */
enum cli_control_result cli_showq(const char *spool_dir, json_t **doc, char *err, size_t errlen);

/* True when s is a well-formed queue id; copies it upper-cased into out
 * (QUEUE_ID_LEN + 1 bytes). */
bool cli_queue_id_parse(const char *s, char *out);

/* The queue listing (relay/cli/queue_cmd.c), shared by `queue list`, `mailq`
 * and `sendmail -bp`. Returns an exit code. */
int cli_queue_list(const char *prog, const struct config *cfg, bool json);

#endif
