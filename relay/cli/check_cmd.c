/* `stsrelay check`: the configuration test (like `postfix check`, `nginx -t`)
 * that the unit runs before every start and reload: FILE:LINE: reason lines, exit 0 or 78. */
#include "relay/cli/cli.h"
#include "relay/cli/commands.h"
#include "relay/core/authfile.h"
#include "relay/core/fs.h"
#include "relay/core/tls_policy.h"
#include "relay/daemon/relay.h"
#include "smtp/tls.h"
#include "smtp/users.h"
#include "sts/tlsrpt/dkim.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#define PROG "stsrelay check"

/* The spool's own directories: each must be a real directory when present,
 * since serve refuses a symbolic link or a file in their place. */
static const char *const spool_subdirs[] = { "queue", "tmp", "maildrop", "sts", "tlsrpt" };

struct checker {
	const char *file; /* the configuration file, as named */
	const struct config *cfg;
	unsigned errors, warnings;
	bool have_user; /* cfg->user names an existing user */
	uid_t uid;
	gid_t gid;
};

/* One finding, "FILE:LINE: reason" (LINE of the key that set the value;
 * just "FILE: reason" when the value is a default), warnings marked. */
static void report(struct checker *c, bool error, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void report(struct checker *c, bool error, const char *key, const char *fmt, ...)
{
	unsigned line = key != NULL ? config_key_line(c->cfg, key) : 0;
	char reason[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (line > 0)
		fprintf(stderr, "%s:%u: %s%s\n", c->file, line, error ? "" : "warning: ", reason);
	else
		fprintf(stderr, "%s: %s%s\n", c->file, error ? "" : "warning: ", reason);
	if (error)
		c->errors++;
	else
		c->warnings++;
}

static void check_user(struct checker *c)
{
	struct passwd *pw;

	if (c->cfg->user[0] == '\0') {
		if (getuid() == 0)
			report(c, false, NULL,
			       "no 'user': the daemon keeps running as root "
			       "(set user = stsrelay)");
		return;
	}
	errno = 0;
	pw = getpwnam(c->cfg->user);
	if (pw == NULL) {
		report(c, true, "user", "user '%s' does not exist%s%s", c->cfg->user,
		       errno != 0 ? ": " : "", errno != 0 ? strerror(errno) : "");
		return;
	}
	c->have_user = true;
	c->uid = pw->pw_uid;
	c->gid = pw->pw_gid;
	if (pw->pw_uid == 0)
		report(c, false, "user", "user '%s' is root: privileges are never dropped",
		       c->cfg->user);
	else if (getuid() != 0 && getuid() != pw->pw_uid)
		report(c, false, "user", "user = %s: `stsrelay serve` must start as root or as %s",
		       c->cfg->user, c->cfg->user);
}

/* Without the group (and the binary set-group-ID to it) only root can
 * submit with sendmail; the daemon itself would run, so the binary is
 * only a warning, the missing group an error (every install makes it). */
static void check_drop_group(struct checker *c)
{
	char self[PATH_MAX];
	struct group *gr;
	struct stat st;
	ssize_t n;

	errno = 0;
	gr = getgrnam(RELAY_DROP_GROUP);
	if (gr == NULL) {
		report(c, true, NULL,
		       "group %s does not exist: local users cannot submit with "
		       "sendmail (the package, `cmake --install` and scripts/install-perms make it)",
		       RELAY_DROP_GROUP);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0 || stat("/proc/self/exe", &st) != 0)
		return;
	self[n] = '\0';
	if (st.st_gid != gr->gr_gid || !(st.st_mode & S_ISGID))
		report(c, false, NULL,
		       "%s is not set-group-ID %s: only root can submit with "
		       "its sendmail link",
		       self, RELAY_DROP_GROUP);
}

/* A spool that does not exist yet is made by serve (as root): its nearest
 * existing parent must then be a directory we can write. */
static void check_missing_spool(struct checker *c, const char *spool)
{
	char dir[CONFIG_PATH_MAX];
	struct stat st;
	char *slash;

	snprintf(dir, sizeof(dir), "%s", spool);
	for (;;) {
		slash = strrchr(dir, '/');
		if (slash == NULL) {
			snprintf(dir, sizeof(dir), ".");
		} else if (slash == dir) {
			dir[1] = '\0';
		} else {
			*slash = '\0';
		}
		if (stat(dir, &st) == 0)
			break;
		if (errno != ENOENT || strcmp(dir, ".") == 0 || strcmp(dir, "/") == 0) {
			report(c, true, "spool_dir", "spool_dir %s cannot be created: %s: %s",
			       spool, dir, strerror(errno));
			return;
		}
	}
	if (!S_ISDIR(st.st_mode))
		report(c, true, "spool_dir",
		       "spool_dir %s cannot be created: %s is not a directory", spool, dir);
	else if (access(dir, W_OK | X_OK) != 0)
		report(c, true, "spool_dir", "spool_dir %s cannot be created in %s: %s", spool, dir,
		       strerror(errno));
}

/* What serve checks as the user: search and write permission on st by
 * the mode bits (the user's own group or one it is a member of). */
static bool user_may_write(const struct checker *c, const struct stat *st)
{
	gid_t groups[NGROUPS_MAX + 1];
	int n = NGROUPS_MAX + 1, i;

	if ((st->st_mode & 0003) == 0003)
		return true;
	if ((st->st_mode & 0030) != 0030)
		return false;
	if (st->st_gid == c->gid)
		return true;
	if (getgrouplist(c->cfg->user, c->gid, groups, &n) < 0)
		return false;
	for (i = 0; i < n; i++)
		if (groups[i] == st->st_gid)
			return true;
	return false;
}

static void check_spool(struct checker *c)
{
	const char *spool = c->cfg->spool_dir;
	char sub[CONFIG_PATH_MAX + 16];
	struct stat st;
	size_t i;

	/* A relative spool_dir never gets here: config_load refuses it outside
	 * the working directory and makes it absolute inside (config.h). */
	if (stat(spool, &st) != 0) {
		if (errno == ENOENT)
			check_missing_spool(c, spool);
		else
			report(c, true, "spool_dir", "spool_dir %s: %s", spool, strerror(errno));
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		report(c, true, "spool_dir", "spool_dir %s is not a directory", spool);
		return;
	}
	if (c->have_user && st.st_uid != 0 && st.st_uid != c->uid)
		report(c, true, "spool_dir",
		       "spool_dir %s belongs to uid %lu, neither root nor "
		       "user %s",
		       spool, (unsigned long)st.st_uid, c->cfg->user);
	else if (c->have_user && st.st_uid != c->uid && !user_may_write(c, &st))
		report(c, true, "spool_dir",
		       "spool_dir %s belongs to root and user %s cannot write "
		       "it: serve would stop (it never changes the owner of an existing spool "
		       "directory): chown %s %s",
		       spool, c->cfg->user, c->cfg->user, spool);
	if (!(st.st_mode & S_IXOTH))
		report(c, false, "spool_dir",
		       "spool_dir %s is not searchable by others (mode %04o): "
		       "local users cannot reach maildrop/ to submit (chmod o+x)",
		       spool, (unsigned)(st.st_mode & 07777));
	for (i = 0; i < sizeof(spool_subdirs) / sizeof(spool_subdirs[0]); i++) {
		snprintf(sub, sizeof(sub), "%s/%s", spool, spool_subdirs[i]);
		if (lstat(sub, &st) != 0) {
			if (errno != ENOENT)
				report(c, true, "spool_dir", "%s: %s", sub, strerror(errno));
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			report(c, true, "spool_dir",
			       "%s must be a directory, not a symbolic link or "
			       "a file",
			       sub);
	}
}

/* Loaded exactly as the delivery side loads it. */
static void check_ca_file(struct checker *c)
{
	struct smtp_tls_ctx *ctx;
	char err[512];

	if (c->cfg->ca_file[0] == '\0')
		return;
	ctx = smtp_tls_ctx_new(c->cfg->ca_file, err, sizeof(err));
	if (ctx == NULL) {
		report(c, true, "ca_file", "%s", err);
		return;
	}
	smtp_tls_ctx_free(ctx);
}

/* Every line of the per-domain levels, as serve and SIGHUP read them. */
static void check_tls_policy_file(struct checker *c)
{
	struct tls_policy *p = NULL;
	char err[1200];

	if (c->cfg->tls_policy_file[0] == '\0')
		return;
	if (tls_policy_load(c->cfg->tls_policy_file, &p, err, sizeof(err)) != 0) {
		report(c, true, "tls_policy_file", "tls_policy_file %s", err);
		return;
	}
	tls_policy_free(p);
}

static void check_dkim_key(struct checker *c)
{
	struct dkim_key *k = NULL;
	struct stat st;
	char err[512];

	if (c->cfg->dkim_key_file[0] == '\0') {
		report(c, false, NULL,
		       "dkim_domain, dkim_selector and dkim_key_file are not set: "
		       "no TLS-RPT report mail (mailto: ruas are skipped; `stsrelay tlsrpt "
		       "dkim-keygen` makes a key)");
		return;
	}
	if (dkim_key_load(c->cfg->dkim_key_file, c->cfg->dkim_domain, c->cfg->dkim_selector, &k,
			  err, sizeof(err)) != 0) {
		report(c, true, "dkim_key_file", "dkim_key_file: %s", err);
		return;
	}
	dkim_key_free(k);
	if (stat(c->cfg->dkim_key_file, &st) == 0 && (st.st_mode & S_IROTH))
		report(c, false, "dkim_key_file",
		       "dkim_key_file %s is readable by every user "
		       "(mode %04o): chmod o-r",
		       c->cfg->dkim_key_file, (unsigned)(st.st_mode & 07777));
}

/* relayhost_auth_file as serve reads it (mode, one user:password line);
 * whether `user` can read it is check_readable_as_user()'s. */
static void check_relayhost_auth(struct checker *c)
{
	struct authfile_cred cred;
	char err[768];

	if (c->cfg->relayhost_auth_file[0] == '\0')
		return;
	if (c->cfg->relayhost[0] == '\0')
		report(c, false, "relayhost_auth_file",
		       "relayhost_auth_file is set but relayhost is not: it is not used");
	if (authfile_load(c->cfg->relayhost_auth_file, &cred, err, sizeof(err)) != 0)
		report(c, true, "relayhost_auth_file", "relayhost_auth_file %s", err);
	authfile_wipe(&cred);
}

/* The submission listeners' certificate and users, loaded as serve loads
 * them: the certificate and key must load and match, auth_users_file must
 * parse (missing: a warning, nobody could authenticate). */
static void check_submission(struct checker *c)
{
	const struct config *cfg = c->cfg;
	struct smtp_tls_server_ctx *ctx;
	struct smtp_users *users = NULL;
	struct stat st;
	char err[1200];
	int rc;

	if (!config_submission_on(cfg))
		return;
	ctx = smtp_tls_server_ctx_new(cfg->tls_cert_file, cfg->tls_key_file, err, sizeof(err));
	if (ctx == NULL)
		report(c, true, strstr(err, "tls_key_file") ? "tls_key_file" : "tls_cert_file",
		       "%s", err);
	smtp_tls_server_ctx_free(ctx);
	if (stat(cfg->tls_key_file, &st) == 0 && (st.st_mode & S_IROTH))
		report(c, false, "tls_key_file",
		       "tls_key_file %s is readable by every user (mode %04o): chmod o-r",
		       cfg->tls_key_file, (unsigned)(st.st_mode & 07777));
	rc = smtp_users_load(cfg->auth_users_file, &users, NULL, NULL, err, sizeof(err));
	if (rc == 1) {
		report(c, false, "auth_users_file",
		       "auth_users_file %s does not exist: nobody can authenticate on "
		       "submission_listen/smtps_listen (stsrelay user add NAME)",
		       cfg->auth_users_file);
		smtp_users_unref(users);
		return;
	}
	if (rc < 0) {
		report(c, true, "auth_users_file", "auth_users_file %s", err);
		if (errno != EINVAL)
			return; /* unreadable: its mode says nothing more */
	}
	smtp_users_unref(users);
	if (stat(cfg->auth_users_file, &st) == 0 && (st.st_mode & S_IROTH))
		report(c, false, "auth_users_file",
		       "auth_users_file %s is readable by every user (mode %04o): chmod o-r",
		       cfg->auth_users_file, (unsigned)(st.st_mode & 07777));
}

/* RFC 8460 §3: receivers ignore reports not signed by the reporting
 * domain. The daemon only warns at start; here it is an error. */
static void check_dkim_domain(struct checker *c)
{
	char why[600];

	if (config_check_dkim_domain(c->cfg, why, sizeof(why)) != 0)
		report(c, true, "dkim_domain", "%s", why);
}

/* serve reads ca_file, dkim_key_file, relayhost_auth_file and the
 * submission files after it has become `user` (the certificate and the users again at every SIGHUP): try
 * them as that user (a child process that switches for good), so a key
 * left 0600 root is found now rather than at the first report or reload. */
#define NREADABLE 7
static int check_readable_as_user(struct checker *c)
{
	/* tls_policy_file too: SIGHUP re-reads it as that user. */
	bool sub = config_submission_on(c->cfg);
	const char *paths[NREADABLE] = { c->cfg->ca_file,
					 c->cfg->dkim_key_file,
					 sub ? c->cfg->tls_cert_file : "",
					 sub ? c->cfg->tls_key_file : "",
					 sub ? c->cfg->auth_users_file : "",
					 c->cfg->relayhost_auth_file,
					 c->cfg->tls_policy_file };
	const char *keys[NREADABLE] = { "ca_file",        "dkim_key_file",   "tls_cert_file",
					"tls_key_file",   "auth_users_file", "relayhost_auth_file",
					"tls_policy_file" };
	int errs[NREADABLE] = { 0 }, fds[2], status, i;
	bool any = false;
	ssize_t got = 0, n;
	pid_t pid;

	for (i = 0; i < NREADABLE; i++)
		any = any || paths[i][0] != '\0';
	if (!c->have_user || getuid() != 0 || c->uid == 0 || !any)
		return 0;
	if (pipe2(fds, O_CLOEXEC) != 0) {
		fprintf(stderr, "%s: pipe: %s\n", PROG, strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "%s: fork: %s\n", PROG, strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		int code = 0;

		close(fds[0]);
		if (initgroups(c->cfg->user, c->gid) != 0 || setgid(c->gid) != 0 ||
		    setuid(c->uid) != 0) {
			code = 1;
		} else {
			for (i = 0; i < NREADABLE; i++) {
				int fd = paths[i][0] ? open(paths[i], O_RDONLY | O_CLOEXEC) : -2;

				/* a users file that does not exist is reported above */
				errs[i] = fd == -1 && !(i == 4 && errno == ENOENT) ? errno : 0;
				if (fd >= 0)
					close(fd);
			}
			if (write(fds[1], errs, sizeof(errs)) != (ssize_t)sizeof(errs))
				code = 1;
		}
		_exit(code);
	}
	close(fds[1]);
	while (got < (ssize_t)sizeof(errs)) {
		n = read(fds[0], (char *)errs + got, sizeof(errs) - (size_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += n;
	}
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "%s: waitpid: %s\n", PROG, strerror(errno));
			return -1;
		}
	}
	if (got != (ssize_t)sizeof(errs) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		report(c, true, "user", "cannot switch to user %s to test its access to files",
		       c->cfg->user);
		return 0;
	}
	for (i = 0; i < NREADABLE; i++)
		if (errs[i] != 0)
			report(c, true, keys[i], "%s %s is not readable by user %s: %s", keys[i],
			       paths[i], c->cfg->user, strerror(errs[i]));
	return 0;
}

static void check_hostname(struct checker *c)
{
	if (strchr(c->cfg->hostname, '.') == NULL)
		report(c, false, "hostname",
		       "hostname '%s' is not a fully qualified domain name: "
		       "it is the EHLO name and the domain of local senders",
		       c->cfg->hostname);
}

static const char check_help[] =
	"usage: stsrelay check [-c FILE]\n"
	"\n"
	"Tests the configuration the way `stsrelay serve` would use it: the file's\n"
	"syntax, the spool directory, the user, the group " RELAY_DROP_GROUP ", ca_file,\n"
	"the DKIM key, relayhost_auth_file, and with submission_listen/smtps_listen\n"
	"the certificate (tls_cert_file and tls_key_file load and match) and\n"
	"auth_users_file (also whether `user` can read them all). Problems are\n"
	"printed as FILE:LINE: reason (warnings as FILE:LINE: warning: reason) on\n"
	"stderr.\n"
	"  -c FILE     configuration file (else $STSRELAY_CONF, else\n"
	"              " CONFIG_DEFAULT_PATH ")\n"
	"  -h, --help  this text\n"
	"Exit: 0 usable (warnings allowed), 64 usage, 71 the test itself failed,\n"
	"78 the configuration has errors.\n";

int cmd_conf_check(int argc, char **argv)
{
	struct checker c = { 0 };
	const char *explicit_path = NULL;
	struct config *cfg;
	char err[1024];
	int i, ex = 0;

	for (i = 1; i < argc; i++) {
		if (cli_is_help(argv[i]))
			return cli_usage(check_help, true);
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			explicit_path = argv[++i];
		else if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2] != '\0')
			explicit_path = argv[i] + 2;
		else
			return cli_usage(check_help, false);
	}
	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL) {
		fprintf(stderr, "%s: out of memory\n", PROG);
		return EX_OSERR;
	}
	c.file = config_path(explicit_path);
	c.cfg = cfg;
	if (config_load(cfg, c.file, err, sizeof(err)) != 0) {
		/* already "FILE:LINE: reason" */
		fprintf(stderr, "%s\n", err);
		free(cfg);
		return EX_CONFIG;
	}
	check_user(&c);
	check_drop_group(&c);
	check_spool(&c);
	check_ca_file(&c);
	check_tls_policy_file(&c);
	check_dkim_key(&c);
	check_dkim_domain(&c);
	check_relayhost_auth(&c);
	check_submission(&c);
	check_hostname(&c);
	if (check_readable_as_user(&c) != 0)
		ex = EX_OSERR;
	else if (c.errors > 0)
		ex = EX_CONFIG;
	else
		printf("%s: ok%s\n", c.file, c.warnings > 0 ? " (with warnings)" : "");
	free(cfg);
	return ex;
}
