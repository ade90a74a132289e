/* `stsrelay user add|del|list`: the submission users of auth_users_file,
 * edited line by line under a lock and replaced atomically with safe modes. */
#include "relay/cli/commands.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "relay/cli/cli.h"
#include "relay/core/buf.h"
#include "relay/core/fs.h"
#include "smtp/address.h"
#include "smtp/users.h"

#define PROG "stsrelay user"
#define LOCK_WAIT_MS 10000 /* another `user` command holds the directory */
#define USERS_MODE 0640    /* root (or the editor) writes, the daemon's group reads */

static const char user_help[] =
	"usage: stsrelay user add NAME [--sender PATTERN]... [-c FILE]\n"
	"       stsrelay user del NAME [-c FILE]\n"
	"       stsrelay user list [--json] [-c FILE]\n"
	"\n"
	"The users who may authenticate on submission_listen and smtps_listen, kept\n"
	"in auth_users_file as name:yescrypt-hash[:pattern,...] lines.\n"
	"  add NAME      add NAME, or give it a new password and patterns; the\n"
	"                password is read from standard input (one line; on a\n"
	"                terminal it is asked for twice, without echo)\n"
	"  --sender PATTERN  a sender NAME may use in MAIL FROM: *@DOMAIN or an\n"
	"                address; repeat for more; none: any sender\n"
	"  del NAME      remove NAME\n"
	"  list          the users with their hash scheme and patterns (--json)\n"
	"  -c FILE       configuration file (else $STSRELAY_CONF, else\n"
	"                " CONFIG_DEFAULT_PATH ")\n"
	"The file is replaced atomically, mode 0640, group of the configured `user`\n"
	"(so the daemon can read it after dropping privileges) when it is new; an\n"
	"existing file keeps its owner and group. The running daemon reads it\n"
	"again on SIGHUP (systemctl reload stsrelay).\n"
	"Exit: 0 done, 64 usage, 65 a bad name, pattern or password, 67 del: no\n"
	"such user, 73 the file cannot be written, 74 read or write error, 75 the\n"
	"file is locked by another `stsrelay user`, 77 permission denied, 78\n"
	"configuration error (the users file included).\n";

struct uopts {
	const char *config;
	const char *verb, *name;
	const char *senders[SMTP_USERS_SENDERS_MAX];
	size_t nsenders;
	bool json;
};

/* The users file's directory, locked against other `stsrelay user` runs
 * (the daemon never writes the file, and reads only whole replacements). */
static int lock_dir(const char *path, char *dir, size_t dirlen, int *fd)
{
	const char *slash = strrchr(path, '/');
	struct timespec pause = { 0, 50 * 1000000 };
	int waited = 0;

	if (slash == NULL)
		snprintf(dir, dirlen, ".");
	else if (slash == path)
		snprintf(dir, dirlen, "/");
	else
		snprintf(dir, dirlen, "%.*s", (int)(slash - path), path);
	*fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*fd < 0) {
		int e = errno;

		fprintf(stderr, "%s: %s: %s\n", PROG, dir, strerror(e));
		return cli_exit_for_errno(e, e == ENOENT ? EX_CANTCREAT : EX_IOERR);
	}
	while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK || waited >= LOCK_WAIT_MS) {
			fprintf(stderr, "%s: cannot lock %s: %s\n", PROG, dir,
				errno == EWOULDBLOCK ? "another stsrelay user command holds it"
						     : strerror(errno));
			close(*fd);
			*fd = -1;
			return EX_TEMPFAIL;
		}
		nanosleep(&pause, NULL);
		waited += 50;
	}
	return 0;
}

/* Reads and parses the file; a missing one is an empty table (*text "").
 * Returns 0 or an exit code after the message. */
static int read_users(const char *path, char **text, size_t *len, struct smtp_users **users)
{
	char err[1024];
	int e;

	if (smtp_users_load(path, users, text, len, err, sizeof(err)) >= 0)
		return 0;
	e = errno;
	if (e == EINVAL) {
		fprintf(stderr, "%s: %s (fix it by hand; nothing changed)\n", PROG, err);
		return EX_CONFIG;
	}
	fprintf(stderr, "%s: %s\n", PROG, err);
	return e == ENOMEM ? EX_OSERR : cli_exit_for_errno(e, EX_IOERR);
}

/* Owner, group and mode for the new file: an existing file keeps its owner
 * and group and loses any world bits (the hashes are secrets); a new one
 * belongs to whoever runs this, in the primary group of the configured
 * `user`, mode 0640. */
static void new_file_perms(const char *path, const struct config *cfg, uid_t *uid, gid_t *gid,
			   mode_t *mode)
{
	struct stat st;
	struct passwd *pw;

	if (stat(path, &st) == 0) {
		*uid = st.st_uid;
		*gid = st.st_gid;
		*mode = st.st_mode & 0770;
		if (st.st_mode & 0007)
			fprintf(stderr, "%s: %s was readable by others (mode %04o): now %04o\n",
				PROG, path, (unsigned)(st.st_mode & 07777), (unsigned)*mode);
		return;
	}
	*uid = geteuid();
	*gid = getegid();
	*mode = USERS_MODE;
	if (cfg->user[0] != '\0' && (pw = getpwnam(cfg->user)) != NULL)
		*gid = pw->pw_gid;
}

/* Writes text as the new file (core_fs_write_atomic_owned: owner, group
 * and mode set before a byte is written, fsync, rename, directory fsync). */
static int replace_file(const char *path, const char *dir, const struct config *cfg,
			const char *text, size_t len)
{
	const char *slash = strrchr(path, '/');
	uid_t uid;
	gid_t gid;
	mode_t mode;
	int e;

	new_file_perms(path, cfg, &uid, &gid, &mode);
	if (core_fs_write_atomic_owned(dir, slash != NULL ? slash + 1 : path, text, len, mode, uid,
				       gid) == 0)
		return 0;
	e = errno;
	fprintf(stderr, "%s: cannot replace %s: %s\n", PROG, path, strerror(e));
	return cli_exit_for_errno(e, EX_IOERR);
}

/* One line of the password: from a terminal twice without echo, else the
 * first line of standard input. 0, or an exit code after the message. */
static int read_password(char *pw, size_t pwlen)
{
	char again[SMTP_USERS_PASS_MAX + 3];
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
	int round, rounds = tty ? 2 : 1;

	for (round = 0; round < rounds; round++) {
		char *buf = round == 0 ? pw : again;
		size_t n, cap = round == 0 ? pwlen : sizeof(again);

		if (tty) {
			fputs(round == 0 ? "Password: " : "Again: ", stderr);
			quiet = old;
			quiet.c_lflag &= ~(tcflag_t)ECHO;
			if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) != 0)
				tty = false;
		}
		if (fgets(buf, (int)cap, stdin) == NULL)
			buf[0] = '\0';
		if (tty) {
			(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
			fputc('\n', stderr);
		}
		n = strlen(buf);
		if (n > 0 && buf[n - 1] != '\n' && !feof(stdin)) {
			fprintf(stderr, "%s: the password is longer than %d characters\n", PROG,
				SMTP_USERS_PASS_MAX);
			return EX_DATAERR;
		}
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			buf[--n] = '\0';
	}
	if (rounds == 2 && strcmp(pw, again) != 0) {
		explicit_bzero(again, sizeof(again));
		fprintf(stderr, "%s: the passwords differ\n", PROG);
		return EX_DATAERR;
	}
	explicit_bzero(again, sizeof(again));
	if (pw[0] == '\0') {
		fprintf(stderr, "%s: no password on standard input\n", PROG);
		return EX_DATAERR;
	}
	return 0;
}

/* The file's lines with NAME's line (skip, 1-based; 0: none) left out and
 * `add` (NULL: nothing) put in its place, or appended. */
static int edit_lines(const char *text, size_t len, unsigned skip, const char *add,
		      struct core_buf *out)
{
	size_t pos = 0;
	unsigned lineno = 0;
	bool placed = false;

	while (pos < len) {
		const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - s) + 1 : len - pos;

		lineno++;
		pos += n;
		if (lineno == skip) {
			if (add != NULL) {
				core_buf_adds(out, add);
				core_buf_adds(out, "\n");
				placed = true;
			}
			continue;
		}
		core_buf_add(out, s, n);
		if (nl == NULL)
			core_buf_adds(out, "\n"); /* the last line gets its end */
	}
	if (add != NULL && !placed) {
		core_buf_adds(out, add);
		core_buf_adds(out, "\n");
	}
	return core_buf_error(out) == 0 ? 0 : -1;
}

static int user_add(const struct uopts *o, const struct config *cfg, const char *dir,
		    const char *text, size_t len, const struct smtp_users *users)
{
	const struct smtp_user *old = smtp_users_find(users, o->name);
	char pw[SMTP_USERS_PASS_MAX + 3], hash[SMTP_USERS_HASH_MAX + 1];
	char line[SMTP_USERS_NAME_MAX + SMTP_USERS_HASH_MAX +
		  SMTP_USERS_SENDERS_MAX * (SMTP_PATH_MAX + 1) + 8];
	struct core_buf out;
	const char *why;
	size_t i, n;
	int ex;

	ex = read_password(pw, sizeof(pw));
	if (ex == 0 && smtp_users_hash_password(pw, hash, sizeof(hash), &why) != 0) {
		fprintf(stderr, "%s: %s\n", PROG, why);
		ex = EX_DATAERR;
	}
	explicit_bzero(pw, sizeof(pw));
	if (ex != 0)
		return ex;
	n = (size_t)snprintf(line, sizeof(line), "%s:%s", o->name, hash);
	for (i = 0; i < o->nsenders; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s", i == 0 ? ":" : ",",
				      o->senders[i]);
	core_buf_init(&out, SMTP_USERS_FILE_MAX);
	if (edit_lines(text, len, old != NULL ? old->line : 0, line, &out) != 0) {
		fprintf(stderr, "%s: the file would grow beyond %d MiB\n", PROG,
			SMTP_USERS_FILE_MAX / 1048576);
		core_buf_free(&out);
		return EX_DATAERR;
	}
	ex = replace_file(cfg->auth_users_file, dir, cfg, core_buf_str(&out), core_buf_len(&out));
	core_buf_free(&out);
	if (ex == 0)
		printf("%s %s in %s (yescrypt%s%s)\n", old != NULL ? "updated" : "added", o->name,
		       cfg->auth_users_file, o->nsenders ? ", senders " : ", any sender",
		       o->nsenders ? line + strlen(o->name) + strlen(hash) + 2 : "");
	return ex;
}

static int user_del(const struct uopts *o, const struct config *cfg, const char *dir,
		    const char *text, size_t len, const struct smtp_users *users)
{
	const struct smtp_user *old = smtp_users_find(users, o->name);
	struct core_buf out;
	int ex;

	if (old == NULL) {
		fprintf(stderr, "%s: no user %s in %s\n", PROG, o->name, cfg->auth_users_file);
		return EX_NOUSER;
	}
	core_buf_init(&out, SMTP_USERS_FILE_MAX);
	if (edit_lines(text, len, old->line, NULL, &out) != 0) {
		core_buf_free(&out);
		fprintf(stderr, "%s: out of memory\n", PROG);
		return EX_OSERR;
	}
	ex = replace_file(cfg->auth_users_file, dir, cfg, core_buf_str(&out), core_buf_len(&out));
	core_buf_free(&out);
	if (ex == 0)
		printf("deleted %s from %s\n", o->name, cfg->auth_users_file);
	return ex;
}

static int user_list(const struct uopts *o, const struct config *cfg,
		     const struct smtp_users *users)
{
	size_t i, k, n = smtp_users_count(users);
	json_t *doc, *arr;
	int rc;

	if (!o->json) {
		for (i = 0; i < n; i++) {
			const struct smtp_user *u = smtp_users_at(users, i);

			printf("%s\t%s\t", u->name, smtp_users_scheme(u->hash));
			if (u->nsenders == 0)
				printf("(any sender)");
			for (k = 0; k < u->nsenders; k++)
				printf("%s%s", k ? "," : "", u->senders[k]);
			printf("\n");
		}
		return fflush(stdout) == 0 ? 0 : EX_IOERR;
	}
	doc = json_object();
	arr = json_array();
	if (doc == NULL || arr == NULL ||
	    json_object_set_new(doc, "file", json_string(cfg->auth_users_file)) != 0 ||
	    json_object_set_new(doc, "users", arr) != 0) {
		json_decref(doc);
		fprintf(stderr, "%s: out of memory\n", PROG);
		return EX_OSERR;
	}
	for (i = 0; i < n; i++) {
		const struct smtp_user *u = smtp_users_at(users, i);
		json_t *one = json_object(), *senders = json_array();

		for (k = 0; senders != NULL && k < u->nsenders; k++)
			json_array_append_new(senders, json_string(u->senders[k]));
		if (one == NULL || senders == NULL ||
		    json_object_set_new(one, "name", json_string(u->name)) != 0 ||
		    json_object_set_new(one, "scheme", json_string(smtp_users_scheme(u->hash))) !=
			    0 ||
		    json_object_set_new(one, "senders", senders) != 0 ||
		    json_array_append_new(arr, one) != 0) {
			json_decref(doc);
			fprintf(stderr, "%s: out of memory\n", PROG);
			return EX_OSERR;
		}
	}
	rc = json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0)
		return EX_IOERR;
	return 0;
}

static int parse_args(int argc, char **argv, struct uopts *o)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (cli_is_help(a))
			return cli_usage(user_help, true) == 0 ? -1 : EX_IOERR;
		if (strcmp(a, "-c") == 0 && i + 1 < argc) {
			o->config = argv[++i];
		} else if (strcmp(a, "--json") == 0) {
			o->json = true;
		} else if (strcmp(a, "--sender") == 0 && i + 1 < argc) {
			if (o->nsenders == SMTP_USERS_SENDERS_MAX) {
				fprintf(stderr, "%s: more than %d --sender patterns\n", PROG,
					SMTP_USERS_SENDERS_MAX);
				return EX_USAGE;
			}
			o->senders[o->nsenders++] = argv[++i];
		} else if (a[0] == '-') {
			return cli_usage(user_help, false);
		} else if (o->verb == NULL) {
			o->verb = a;
		} else if (o->name == NULL) {
			o->name = a;
		} else {
			return cli_usage(user_help, false);
		}
	}
	if (o->verb == NULL)
		return cli_usage(user_help, false);
	if (strcmp(o->verb, "list") == 0  ? (o->name != NULL || o->nsenders > 0)
	    : strcmp(o->verb, "del") == 0 ? (o->name == NULL || o->nsenders > 0 || o->json)
	    : strcmp(o->verb, "add") == 0 ? (o->name == NULL || o->json)
					  : true)
		return cli_usage(user_help, false);
	return 0;
}

int cmd_user(int argc, char **argv)
{
	struct uopts o = { 0 };
	struct config *cfg = NULL;
	struct smtp_users *users = NULL;
	char dir[CONFIG_PATH_MAX], *text = NULL;
	const char *why;
	size_t len = 0, i;
	int ex, dirfd = -1;

	ex = parse_args(argc, argv, &o);
	if (ex != 0)
		return ex < 0 ? 0 : ex;
	if (o.name != NULL && (why = smtp_users_check_name(o.name)) != NULL) {
		fprintf(stderr, "%s: %s: %s\n", PROG, o.name, why);
		return EX_DATAERR;
	}
	for (i = 0; i < o.nsenders; i++)
		if ((why = smtp_users_check_pattern(o.senders[i])) != NULL) {
			fprintf(stderr, "%s: --sender %s: %s\n", PROG, o.senders[i], why);
			return EX_DATAERR;
		}
	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL) {
		fprintf(stderr, "%s: out of memory\n", PROG);
		return EX_OSERR;
	}
	ex = cli_load_config(PROG, o.config, cfg);
	if (ex != 0)
		goto out;
	if (strcmp(o.verb, "list") != 0) {
		ex = lock_dir(cfg->auth_users_file, dir, sizeof(dir), &dirfd);
		if (ex != 0)
			goto out;
	}
	ex = read_users(cfg->auth_users_file, &text, &len, &users);
	if (ex != 0)
		goto out;
	if (strcmp(o.verb, "add") == 0)
		ex = user_add(&o, cfg, dir, text, len, users);
	else if (strcmp(o.verb, "del") == 0)
		ex = user_del(&o, cfg, dir, text, len, users);
	else
		ex = user_list(&o, cfg, users);
out:
	if (text != NULL) {
		explicit_bzero(text, len);
		free(text);
	}
	smtp_users_unref(users);
	if (dirfd >= 0)
		close(dirfd); /* releases the lock */
	free(cfg);
	return ex;
}
