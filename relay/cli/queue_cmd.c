/* `stsrelay queue list|show|flush|delete|bounce` and `mailq`: listings read
 * the spool directly; changes go through the daemon's control socket when it runs. */
#include "relay/cli/cli.h"
#include "relay/core/clock.h"
#include "relay/cli/commands.h"
#include "relay/core/fs.h"
#include "queue/listing.h"
#include "queue/queue.h"
#include "relay/daemon/relay.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#define MAX_POSITIONAL 4

struct qopts {
	const char *config;
	bool json, help;
	const char *pos[MAX_POSITIONAL];
	size_t npos;
};

static const char queue_help[] =
	"usage: stsrelay queue list [--json] [-c FILE]\n"
	"       stsrelay queue show ID [--json] [-c FILE]\n"
	"       stsrelay queue flush [ID] [-c FILE]\n"
	"       stsrelay queue delete ID [-c FILE]\n"
	"       stsrelay queue bounce ID [-c FILE]\n"
	"\n"
	"  list          the queued messages and each recipient's state (= mailq)\n"
	"  show ID       one message: envelope, recipients, the stored message\n"
	"  flush [ID]    retry now: every deferred recipient, or those of ID\n"
	"  delete ID     remove the message, no notice to anyone\n"
	"  bounce ID     return the message to its sender now (5.0.0); needs the daemon\n"
	"  --json        list and show: one JSON document instead of text\n"
	"  -c FILE       configuration file (else $STSRELAY_CONF, else\n"
	"                " CONFIG_DEFAULT_PATH ")\n"
	"  -h, --help    this text\n"
	"ID: the 12 hex digits of a queue id (any case). list works for every user\n"
	"(others than root and the daemon's user ask the running daemon); show,\n"
	"flush, delete and bounce are for root and the daemon's user. With the\n"
	"daemon running, flush, delete and bounce go through its control socket.\n"
	"Exit: 0 done, 64 usage, 65 not a queue id, 67 no such message, 69 no\n"
	"daemon (bounce, or list by another user) or no spool, 74 spool I/O error,\n"
	"75 the daemon did not answer in time, 76 unexpected reply, 77 permission\n"
	"denied, 78 configuration.\n";

static const char mailq_help[] =
	"usage: mailq [--json] [-c FILE]\n"
	"The queue listing, the same as `stsrelay queue list` and `sendmail -bp`.\n"
	"  --json        one JSON document instead of text\n"
	"  -c FILE, -C FILE  configuration file (else $STSRELAY_CONF, else\n"
	"                " CONFIG_DEFAULT_PATH ")\n"
	"  -h, --help    this text\n"
	"Every user may list; others than root and the daemon's user get the\n"
	"listing from the running daemon.\n"
	"Exit: 0, 64 usage, 69 no spool (or no daemon to ask), 74 I/O error,\n"
	"77 permission denied, 78 configuration.\n";

/* Options may stand anywhere after the subcommand: -c FILE, -cFILE, --json. */
static int parse_opts(const char *prog, int argc, char **argv, struct qopts *o)
{
	bool only_pos = false;
	int i;

	memset(o, 0, sizeof(*o));
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!only_pos && strcmp(a, "--") == 0) {
			only_pos = true;
		} else if (!only_pos && (strcmp(a, "-c") == 0 || strcmp(a, "-C") == 0)) {
			if (i + 1 >= argc) {
				fprintf(stderr, "%s: %s needs a file name\n", prog, a);
				return -1;
			}
			o->config = argv[++i];
		} else if (!only_pos && (strncmp(a, "-c", 2) == 0 || strncmp(a, "-C", 2) == 0)) {
			o->config = a + 2;
		} else if (!only_pos && strcmp(a, "--json") == 0) {
			o->json = true;
		} else if (!only_pos && cli_is_help(a)) {
			o->help = true;
		} else if (!only_pos && a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "%s: unknown option '%s'\n", prog, a);
			return -1;
		} else {
			if (o->npos == MAX_POSITIONAL) {
				fprintf(stderr, "%s: too many arguments\n", prog);
				return -1;
			}
			o->pos[o->npos++] = a;
		}
	}
	return 0;
}

/* What a user who may not read or change the queue is told (exit 77). */
static int not_permitted(const char *prog, const char *what)
{
	fprintf(stderr,
		"%s: %s: Permission denied (run it as root or as the daemon's user, "
		"the owner of the spool)\n",
		prog, what);
	return EX_NOPERM;
}

static int open_spool(const char *prog, const struct config *cfg, struct queue **q)
{
	char err[512];

	if (queue_open(cfg->spool_dir, false, -1, q, err, sizeof(err)) != 0) {
		int e = errno;

		if (e == EACCES)
			return not_permitted(prog, "reading the spool");
		fprintf(stderr, "%s: cannot open the spool %s: %s\n", prog, cfg->spool_dir, err);
		return cli_exit_for_errno(e, EX_UNAVAILABLE);
	}
	return 0;
}

static int json_print(const char *prog, json_t *doc)
{
	if (json_dumpf(doc, stdout, JSON_INDENT(2)) != 0 || fputc('\n', stdout) == EOF ||
	    fflush(stdout) != 0) {
		fprintf(stderr, "%s: cannot write the JSON output\n", prog);
		return EX_IOERR;
	}
	return 0;
}

/* ---- list ---- */

/* Root and the daemon's user read the spool themselves (with or without a
 * daemon); anyone else asks the running daemon through its public socket,
 * as Postfix's mailq asks showq, and gets the listing without submitter and
 * client. */
int cli_queue_list(const char *prog, const struct config *cfg, bool json)
{
	json_t *doc = NULL, *errs;
	struct queue *q = NULL;
	char err[512];
	size_t i;
	int ex = 0, e;

	if (queue_open(cfg->spool_dir, false, -1, &q, err, sizeof(err)) == 0)
		doc = listing_build(q, false, err, sizeof(err));
	e = errno;
	if (doc == NULL && e == EACCES) {
		switch (cli_showq(cfg->spool_dir, &doc, err, sizeof(err))) {
		case CLI_CONTROL_REPLIED:
			break;
		case CLI_CONTROL_NO_DAEMON:
			fprintf(stderr,
				"%s: the spool %s is readable only by root and the daemon's "
				"user, and the daemon is not running to list it for you\n",
				prog, cfg->spool_dir);
			ex = EX_UNAVAILABLE;
			goto out;
		case CLI_CONTROL_DENIED:
			ex = not_permitted(prog, "listing the queue");
			goto out;
		default:
			fprintf(stderr, "%s: %s\n", prog, err);
			ex = EX_UNAVAILABLE;
			goto out;
		}
	} else if (doc == NULL) {
		fprintf(stderr, "%s: cannot open the spool %s: %s\n", prog, cfg->spool_dir, err);
		ex = e == ENOENT ? EX_UNAVAILABLE : EX_IOERR;
		goto out;
	}
	errs = json_object_get(doc, "errors");
	for (i = 0; i < json_array_size(errs); i++) {
		fprintf(stderr, "%s: %s\n", prog, json_string_value(json_array_get(errs, i)));
		ex = EX_IOERR;
	}
	if (json) {
		int rc = json_print(prog, doc);

		if (rc != 0)
			ex = rc;
	} else if (listing_print_table(stdout, doc) != 0) {
		fprintf(stderr, "%s: cannot print the listing\n", prog);
		if (ex == 0)
			ex = EX_IOERR;
	}
out:
	json_decref(doc);
	queue_close(q);
	return ex;
}

/* ---- show ---- */

/* 0 when id is queued, else an exit code after saying why: 67 for an
 * unknown id, 77 (what: the action, for the message) or 74 when the queue
 * cannot be read. */
static int id_known(const char *prog, struct queue *q, const char *id, const char *what)
{
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	size_t n = 0, i;
	int found = 0;

	if (queue_scan(q, &ids, &n) != 0) {
		int e = errno;

		if (e == EACCES)
			return not_permitted(prog, what);
		fprintf(stderr, "%s: cannot list the queue: %s\n", prog, strerror(e));
		return cli_exit_for_errno(e, EX_IOERR);
	}
	for (i = 0; i < n && !found; i++)
		found = strcmp(ids[i], id) == 0;
	free(ids);
	if (!found) {
		fprintf(stderr, "%s: no message %s in the queue\n", prog, id);
		return EX_NOUSER;
	}
	return 0;
}

static int copy_data(struct queue *q, const struct queue_envelope *env)
{
	char buf[65536];
	ssize_t r;
	int fd = queue_open_data(q, env), rc = 0;

	if (fd < 0)
		return -1;
	fflush(stdout);
	for (;;) {
		r = read(fd, buf, sizeof(buf));
		if (r == 0)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || core_fs_write_all(STDOUT_FILENO, buf, (size_t)r, NULL) != 0) {
			rc = -1;
			break;
		}
	}
	close(fd);
	return rc;
}

static int queue_show(const char *prog, const struct config *cfg, const char *id, bool json)
{
	struct queue_envelope env;
	struct queue *q = NULL;
	char err[512], t[32];
	int rc, ex = 0;
	size_t i;

	memset(&env, 0, sizeof(env));
	rc = open_spool(prog, cfg, &q);
	if (rc != 0)
		return rc;
	ex = id_known(prog, q, id, "queue show");
	if (ex != 0)
		goto out;
	if (queue_load(q, id, &env, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, id, err);
		ex = errno == ENOENT ? EX_NOUSER : EX_IOERR;
		goto out;
	}
	if (json) {
		json_t *m = listing_message(&env, false);

		if (m == NULL) {
			ex = EX_SOFTWARE;
			goto out;
		}
		ex = json_print(prog, m);
		json_decref(m);
		goto out;
	}
	printf("id: %s\nqueued_at: %s\nsender: <%s>\n", env.id,
	       clock_rfc3339(env.queued_at, t, sizeof(t)), env.sender);
	if (env.submitter[0])
		printf("submitter: %s\n", env.submitter);
	if (env.client[0])
		printf("client: %s\n", env.client);
	printf("size: %llu\n", (unsigned long long)env.size);
	for (i = 0; i < env.nrcpts; i++) {
		const struct queue_rcpt *r = &env.rcpts[i];

		printf("recipient: <%s> status=%s attempts=%u", r->address,
		       queue_status_name(r->status), r->attempts);
		if (r->next_try > 0 && (r->status == QUEUE_PENDING || r->status == QUEUE_DEFERRED))
			printf(" next_try=%s", clock_rfc3339(r->next_try, t, sizeof(t)));
		if (r->last_error[0])
			printf(" last_error=\"%s\"", r->last_error);
		printf("\n");
	}
	printf("--- message ---\n");
	if (copy_data(q, &env) != 0) {
		fprintf(stderr, "%s: %s: cannot read the message data: %s\n", prog, id,
			strerror(errno));
		ex = EX_IOERR;
	}
out:
	queue_envelope_clear(&env);
	queue_close(q);
	return ex;
}

/* ---- flush / delete / bounce ---- */

/* Without a daemon, flush edits the state files: every waiting recipient
 * becomes due at once, which the daemon honours when it next starts. */
static int offline_flush(const char *prog, struct queue *q, const char *only)
{
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	size_t n = 0, i, j, nmsg = 0, nrcpt = 0;
	int ex = 0;

	if (queue_scan(q, &ids, &n) != 0) {
		int e = errno;

		if (e == EACCES)
			return not_permitted(prog, "changing the queue");
		fprintf(stderr, "%s: cannot list the queue: %s\n", prog, strerror(e));
		return cli_exit_for_errno(e, EX_IOERR);
	}
	for (i = 0; i < n; i++) {
		struct queue_envelope env;
		char err[512];
		size_t changed = 0;

		if (only != NULL && strcmp(only, ids[i]) != 0)
			continue;
		memset(&env, 0, sizeof(env));
		if (queue_load(q, ids[i], &env, err, sizeof(err)) != 0) {
			fprintf(stderr, "%s: %s: %s\n", prog, ids[i], err);
			ex = EX_IOERR;
			queue_envelope_clear(&env);
			continue;
		}
		for (j = 0; j < env.nrcpts; j++) {
			struct queue_rcpt *r = &env.rcpts[j];

			if ((r->status == QUEUE_DEFERRED || r->status == QUEUE_PENDING) &&
			    r->next_try != 0) {
				r->next_try = 0;
				changed++;
			}
		}
		if (changed > 0 && queue_save_state(q, &env) != 0) {
			int e = errno;

			fprintf(stderr, "%s: %s: cannot save the state: %s\n", prog, ids[i],
				strerror(e));
			ex = cli_exit_for_errno(e, EX_IOERR);
		} else if (changed > 0) {
			nmsg++;
			nrcpt += changed;
		}
		queue_envelope_clear(&env);
	}
	free(ids);
	if (ex == 0)
		printf("the daemon is not running: %zu recipient%s in %zu message%s will be "
		       "tried at its next start\n",
		       nrcpt, nrcpt == 1 ? "" : "s", nmsg, nmsg == 1 ? "" : "s");
	return ex;
}

/* Without a daemon the command edits the spool itself, holding the spool
 * lock so that a daemon starting meanwhile waits (queue/queue.h); a daemon
 * that holds it but does not answer is never edited under. */
static int queue_change_offline(const char *prog, const struct config *cfg, const char *verb,
				const char *id)
{
	struct queue *q = NULL;
	long holder = 0;
	int lock, ex;

	if (strcmp(verb, "bounce") == 0) {
		fprintf(stderr,
			"%s: bounce needs the daemon to be running (it sends the "
			"notice to the sender)\n",
			prog);
		return EX_UNAVAILABLE;
	}
	lock = queue_lock(cfg->spool_dir, false, 0, &holder);
	if (lock < 0 && errno == EWOULDBLOCK) {
		fprintf(stderr,
			"%s: a daemon (pid %ld) holds the spool %s but does not answer on "
			"its control socket; not editing the spool under it\n",
			prog, holder, cfg->spool_dir);
		return EX_TEMPFAIL;
	}
	if (lock < 0 && errno == EACCES)
		return not_permitted(prog, "changing the queue");
	if (lock < 0 && errno != ENOENT) {
		fprintf(stderr, "%s: cannot lock the spool %s: %s\n", prog, cfg->spool_dir,
			strerror(errno));
		return EX_UNAVAILABLE;
	}
	/* ENOENT: no lock file, so no daemon ever ran on this spool */
	ex = open_spool(prog, cfg, &q);
	if (ex != 0)
		goto out;
	if (id != NULL) {
		ex = id_known(prog, q, id, "changing the queue");
		if (ex != 0)
			goto out;
	}
	if (strcmp(verb, "flush") == 0) {
		ex = offline_flush(prog, q, id);
	} else if (queue_remove(q, id) != 0) {
		if (errno == EACCES)
			ex = not_permitted(prog, "changing the queue");
		else {
			fprintf(stderr, "%s: cannot delete %s: %s\n", prog, id, strerror(errno));
			ex = EX_IOERR;
		}
	} else {
		printf("%s: deleted\n", id);
	}
out:
	queue_close(q);
	if (lock >= 0)
		close(lock);
	return ex;
}

static int queue_change(const char *prog, const struct config *cfg, const char *verb,
			const char *id)
{
	char request[64], reply[512];
	enum cli_control_result cr;

	snprintf(request, sizeof(request), "%s%s%s", verb, id ? " " : "", id ? id : "");
	cr = cli_control_request(cfg->spool_dir, request, reply, sizeof(reply));
	if (cr == CLI_CONTROL_DENIED) {
		fprintf(stderr, "%s: %s (run it as root or as the daemon's user)\n", prog, reply);
		return EX_NOPERM;
	}
	if (cr == CLI_CONTROL_FAILED) {
		/* a daemon that is there but did not answer in time: try again */
		fprintf(stderr, "%s: %s\n", prog, reply);
		return EX_TEMPFAIL;
	}
	if (cr == CLI_CONTROL_REPLIED) {
		if (strcmp(reply, "ok") == 0 || strncmp(reply, "ok ", 3) == 0) {
			if (reply[2] == ' ')
				printf("%s\n", reply + 3);
			return 0;
		}
		if (strncmp(reply, "error", 5) == 0 && (reply[5] == ' ' || reply[5] == '\0')) {
			const char *why = reply[5] ? reply + 6 : "the daemon refused";

			fprintf(stderr, "%s: %s\n", prog, why);
			return strncmp(why, RELAY_CONTROL_NO_SUCH, strlen(RELAY_CONTROL_NO_SUCH)) ==
					       0
				       ? EX_NOUSER
				       : EX_SOFTWARE;
		}
		fprintf(stderr, "%s: unexpected reply from the daemon: %s\n", prog, reply);
		return EX_PROTOCOL;
	}
	return queue_change_offline(prog, cfg, verb, id);
}

int cmd_queue(int argc, char **argv)
{
	const char *prog = "stsrelay queue";
	char id[QUEUE_ID_LEN + 1];
	struct config cfg;
	struct qopts o;
	const char *sub;
	size_t want_max, want_min;
	int rc;

	if (cli_drop_setgid(prog) != 0)
		return EX_OSERR;
	if (parse_opts(prog, argc, argv, &o) != 0)
		return cli_usage(queue_help, false);
	if (o.help)
		return cli_usage(queue_help, true);
	if (o.npos == 0)
		return cli_usage(queue_help, false);
	sub = o.pos[0];
	if (strcmp(sub, "list") == 0) {
		want_min = want_max = 1;
	} else if (strcmp(sub, "flush") == 0) {
		want_min = 1;
		want_max = 2;
	} else if (strcmp(sub, "show") == 0 || strcmp(sub, "delete") == 0 ||
		   strcmp(sub, "bounce") == 0) {
		want_min = want_max = 2;
	} else {
		fprintf(stderr, "%s: unknown command '%s'\n", prog, sub);
		return cli_usage(queue_help, false);
	}
	if (o.npos < want_min || o.npos > want_max)
		return cli_usage(queue_help, false);
	if (o.npos == 2 && !cli_queue_id_parse(o.pos[1], id)) {
		fprintf(stderr, "%s: '%s' is not a queue id (%d hex digits)\n", prog, o.pos[1],
			QUEUE_ID_LEN);
		return EX_DATAERR;
	}
	if (o.json && strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0) {
		fprintf(stderr, "%s: --json applies to list and show only\n", prog);
		return EX_USAGE;
	}
	rc = cli_load_config(prog, o.config, &cfg);
	if (rc != 0)
		return rc;
	if (strcmp(sub, "list") == 0)
		return cli_queue_list(prog, &cfg, o.json);
	if (strcmp(sub, "show") == 0)
		return queue_show(prog, &cfg, id, o.json);
	return queue_change(prog, &cfg, sub, o.npos == 2 ? id : NULL);
}

int cmd_mailq(int argc, char **argv)
{
	struct config cfg;
	struct qopts o;
	int rc;

	if (cli_drop_setgid("mailq") != 0)
		return EX_OSERR;
	if (parse_opts("mailq", argc, argv, &o) != 0 || o.npos != 0)
		return cli_usage(mailq_help, false);
	if (o.help)
		return cli_usage(mailq_help, true);
	rc = cli_load_config("mailq", o.config, &cfg);
	if (rc != 0)
		return rc;
	return cli_queue_list("mailq", &cfg, o.json);
}
