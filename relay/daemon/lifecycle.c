/* The daemon's life cycle behind `stsrelay serve`: binds the listeners,
 * drops privileges, opens and recovers the spool, and runs the libuv loop
 * until SIGTERM. */
#include "relay/daemon/lifecycle.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "queue/queue.h"
#include "relay/daemon/commit.h"
#include "relay/daemon/control.h"
#include "relay/core/tls_policy.h"
#include "relay/core/log.h"
#include "relay/daemon/metrics_http.h"
#include "relay/daemon/notify.h"
#include "relay/daemon/pickup.h"
#include "relay/daemon/relay.h"
#include "relay/daemon/scheduler.h"
#include "relay/daemon/smtpd.h"
#include "relay/daemon/tlsrpt_daemon.h"
#include "relay/net/redis.h"
#include "sts/fleet.h"
#include "sts/tlsrpt/fleet.h"

#define DROP_GROUP RELAY_DROP_GROUP
#define LOCK_WAIT_MS 2000 /* a queue command holds the lock for a moment at most */

struct serve {
	struct relay r;
	uv_loop_t loop;
	struct smtpd *smtpd;
	struct commit *commit;
	struct pickup *pickup;
	struct control *control;
	struct metrics_http *metrics; /* NULL: metrics_listen is off */
	uv_signal_t sig[3];
	int nsig;
	int exit_code;
	int lock_fd; /* spool_dir/lock, held until exit */
};

static void close_signals(struct serve *sv)
{
	int i;

	for (i = 0; i < sv->nsig; i++)
		if (!uv_is_closing((uv_handle_t *)&sv->sig[i]))
			uv_close((uv_handle_t *)&sv->sig[i], NULL);
}

/* The fleet's parts, last: the engine that used them is gone. */
static void fleet_stop(struct serve *sv)
{
	tlsrpt_fleet_free(sv->r.tlsrpt_fleet);
	sv->r.tlsrpt_fleet = NULL;
	sts_fleet_free(sv->r.sts_fleet);
	sv->r.sts_fleet = NULL;
	sv->r.sts_shared = NULL;
	redis_free(sv->r.redis);
	sv->r.redis = NULL;
}

static void on_scheduler_stopped(void *arg)
{
	struct serve *sv = arg;

	fleet_stop(sv);
	/* /healthz answered "stopping" while sessions and deliveries ended */
	metrics_http_close(sv->metrics);
	sv->metrics = NULL;
	close_signals(sv); /* the last handles: uv_run returns */
}

static void on_smtpd_stopped(void *arg)
{
	struct serve *sv = arg;

	/* every session is gone, so no commit is pending */
	if (sv->commit != NULL) {
		commit_close(sv->commit);
		sv->commit = NULL;
	}
	scheduler_stop(sv->r.sched, on_scheduler_stopped, sv);
}

static void begin_stop(struct serve *sv, const char *why)
{
	if (sv->r.stopping) {
		log_info("%s: already stopping", why);
		return;
	}
	sv->r.stopping = 1;
	notify_stopping();
	log_info("stopping (%s): no new connections, finishing sessions", why);
	if (sv->pickup != NULL) {
		pickup_close(sv->pickup);
		sv->pickup = NULL;
	}
	if (sv->control != NULL) {
		control_close(sv->control);
		sv->control = NULL;
	}
	if (sv->r.tlsrpt != NULL) {
		tlsrpt_daemon_stop(sv->r.tlsrpt, NULL, NULL);
		sv->r.tlsrpt = NULL;
	}
	smtpd_stop(sv->smtpd, on_smtpd_stopped, sv);
}

static void setup_logging(const struct config *cfg)
{
	enum log_target t;

	switch (cfg->log_target) {
	case CONFIG_LOG_TARGET_STDERR:
		t = LOG_TARGET_STDERR;
		break;
	case CONFIG_LOG_TARGET_SYSLOG:
		t = LOG_TARGET_SYSLOG;
		break;
	case CONFIG_LOG_TARGET_JOURNAL:
		t = LOG_TARGET_JOURNAL;
		break;
	default:
		t = log_default_target();
		break;
	}
	log_setup("stsrelay",
		  cfg->log_format == CONFIG_LOG_JSON ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT, t);
	log_use_components(1);
}

/* relayhost_auth_file, read as the daemon's user, as every SIGHUP reads it
 * again: a file only root could read fails the start, not a later reload.
 * Without the key: no credentials. */
static int load_relayhost_auth(const struct config *cfg, struct authfile_cred *out, char *err,
			       size_t errlen)
{
	char why[768];

	memset(out, 0, sizeof(*out));
	if (cfg->relayhost_auth_file[0] == '\0')
		return 0;
	if (authfile_load(cfg->relayhost_auth_file, out, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "relayhost_auth_file %s", why);
		return -1;
	}
	return 0;
}

/* The start line of relay host mode; never the credentials. */
static void log_relayhost(const struct relay *r)
{
	const struct config *c = &r->cfg;

	if (c->relayhost[0] == '\0') {
		if (c->relayhost_auth_file[0] != '\0')
			log_warn("relayhost_auth_file is set but relayhost is not: not used");
		return;
	}
	log_info("relayhost %s%s%s:%u: all mail goes there (%s, certificate verified for %s; "
		 "%s; MTA-STS policy of %s)",
		 c->relayhost_mx ? "" : "[", c->relayhost, c->relayhost_mx ? "" : "]",
		 (unsigned)c->relayhost_port,
		 c->relayhost_implicit_tls ? "implicit TLS" : "STARTTLS",
		 c->relayhost_mx ? "each MX host" : c->relayhost,
		 r->relayhost_auth.set ? "AUTH PLAIN with relayhost_auth_file" : "no AUTH",
		 c->relayhost);
}

/* SIGHUP: a bad new file changes nothing. Keys bound to sockets, the spool
 * or the process identity need a restart and keep their running values. */
static void reload(struct serve *sv)
{
	struct config *nc = calloc(1, sizeof(*nc));
	struct config *cur = &sv->r.cfg;
	struct tls_policy *np;
	struct authfile_cred auth;
	char err[1024];

	notify_reloading();
	if (nc == NULL) {
		log_error("reload: out of memory; keeping the running configuration");
		notify_ready("running (reload failed: out of memory)");
		return;
	}
	if (config_load(nc, sv->r.config_path, err, sizeof(err)) != 0 ||
	    load_relayhost_auth(nc, &auth, err, sizeof(err)) != 0) {
		log_error("reload failed: %s; keeping the running configuration", err);
		notify_ready("running (reload refused: configuration error)");
		free(nc);
		return;
	}
	/* The per-domain levels are part of the configuration: re-read with
	 * it, and a bad table refuses the whole reload. */
	np = NULL;
	if (nc->tls_policy_file[0] != '\0' &&
	    tls_policy_load(nc->tls_policy_file, &np, err, sizeof(err)) != 0) {
		log_error("reload failed: tls_policy_file %s; keeping the running configuration",
			  err);
		notify_ready("running (reload refused: configuration error)");
		authfile_wipe(&auth);
		free(nc);
		return;
	}
	if (nc->nlisten != cur->nlisten ||
	    memcmp(nc->listen, cur->listen, sizeof(nc->listen[0]) * nc->nlisten) != 0)
		log_warn("reload: listen changed; takes effect after a restart");
	if (nc->nsubmission_listen != cur->nsubmission_listen ||
	    memcmp(nc->submission_listen, cur->submission_listen,
		   sizeof(nc->submission_listen[0]) * nc->nsubmission_listen) != 0 ||
	    nc->nsmtps_listen != cur->nsmtps_listen ||
	    memcmp(nc->smtps_listen, cur->smtps_listen,
		   sizeof(nc->smtps_listen[0]) * nc->nsmtps_listen) != 0)
		log_warn("reload: submission_listen/smtps_listen changed; take effect after a "
			 "restart");
	if (strcmp(nc->spool_dir, cur->spool_dir) != 0)
		log_warn("reload: spool_dir changed; takes effect after a restart");
	if (strcmp(nc->user, cur->user) != 0)
		log_warn("reload: user changed; takes effect after a restart");
	if (memcmp(&nc->metrics_listen.sa, &cur->metrics_listen.sa,
		   sizeof(nc->metrics_listen.sa)) != 0)
		log_warn("reload: metrics_listen changed; takes effect after a restart");
	/* The resolver, the TLS trust store and the MTA-STS engine are built once
	 * at start (c-ares cannot swap servers under queries in flight). */
	if (nc->ndns_servers != cur->ndns_servers ||
	    memcmp(nc->dns_servers, cur->dns_servers,
		   sizeof(nc->dns_servers[0]) * nc->ndns_servers) != 0)
		log_warn("reload: dns_servers changed; takes effect after a restart");
	if (strcmp(nc->ca_file, cur->ca_file) != 0)
		log_warn("reload: ca_file changed; takes effect after a restart");
	if (memcmp(&nc->redis, &cur->redis, sizeof(nc->redis)) != 0 ||
	    strcmp(config_node_name(nc), config_node_name(cur)) != 0)
		log_warn("reload: redis_url/node_name changed; take effect after a restart");
	if (nc->sts_https_port != cur->sts_https_port ||
	    nc->sts_fetch_timeout_ms != cur->sts_fetch_timeout_ms)
		log_warn(
			"reload: sts_https_port/sts_fetch_timeout changed; take effect after a restart");
	memcpy(nc->listen, cur->listen, sizeof(nc->listen));
	nc->nlisten = cur->nlisten;
	memcpy(nc->submission_listen, cur->submission_listen, sizeof(nc->submission_listen));
	nc->nsubmission_listen = cur->nsubmission_listen;
	memcpy(nc->smtps_listen, cur->smtps_listen, sizeof(nc->smtps_listen));
	nc->nsmtps_listen = cur->nsmtps_listen;
	memcpy(nc->spool_dir, cur->spool_dir, sizeof(nc->spool_dir));
	memcpy(nc->user, cur->user, sizeof(nc->user));
	nc->metrics_listen = cur->metrics_listen;
	nc->redis = cur->redis;
	*cur = *nc;
	free(nc);
	tls_policy_free(sv->r.tls_policy);
	sv->r.tls_policy = np;
	authfile_wipe(&sv->r.relayhost_auth);
	sv->r.relayhost_auth = auth;
	authfile_wipe(&auth);
	setup_logging(cur);
	log_info("configuration reloaded from %s", sv->r.config_path);
	log_relayhost(&sv->r);
	/* the certificate and the users: re-read off the loop, swapped in later */
	smtpd_reload(sv->smtpd);
	notify_ready("running");
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct serve *sv = h->data;

	if (signum == SIGHUP) {
		reload(sv);
		return;
	}
	begin_stop(sv, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/*
 * Handing the spool to `user` (root, before the switch). Everything the
 * daemon reads later must belong to the user it becomes: a spool used
 * before as root keeps root-owned 0600 messages, policies and TLS-RPT data
 * that the user could not read (the mail would be stranded).
 *
 * The user controls the spool, so root must not be turned against files
 * outside it: every entry is reached through the descriptor of its parent
 * (openat with O_NOFOLLOW) and changed through its own descriptor (fchownat
 * with AT_EMPTY_PATH on what was fstat'ed), so a directory swapped for a
 * symbolic link, between any two steps, never redirects the walk. Only
 * directories and singly-linked regular files are handed over (a hard link
 * could name a file elsewhere on the file system); symbolic links, other
 * file systems and anything deeper than stsrelay ever writes are left
 * alone with a warning. The configured spool_dir itself is opened by path:
 * it is the operator's choice, like the directories above it.
 */
#define HANDOVER_DEPTH 2 /* spool/tlsrpt/DAY: the deepest directory stsrelay makes */

struct handover {
	uid_t uid;
	dev_t dev; /* the spool's file system, never left */
	const char *spool;
	char *err;
	size_t errlen;
};

/* Gives fd (described by st) to the user unless it is theirs already. */
static int give(struct handover *h, int fd, const struct stat *st, const char *rel)
{
	if (st->st_uid == h->uid ||
	    fchownat(fd, "", h->uid, (gid_t)-1, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	snprintf(h->err, h->errlen, "chown %s/%s: %s", h->spool, rel, strerror(errno));
	return -1;
}

static void left_alone(const struct handover *h, const char *rel, const char *why)
{
	log_warn("spool: %s/%s %s: left as it is", h->spool, rel, why);
}

static int handover_dir(struct handover *h, int dirfd, const char *rel, int depth);

/* One entry of the directory dirfd (rel names it for messages). */
static int handover_entry(struct handover *h, int dirfd, const char *name, const char *rel,
			  int depth)
{
	struct stat st;
	int fd, rc = 0;

	/* A real directory opens with these flags, anything else fails. */
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && (errno == ENOTDIR || errno == ELOOP))
		fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0; /* gone meanwhile: nothing to hand over */
		snprintf(h->err, h->errlen, "open %s/%s: %s", h->spool, rel, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(h->err, h->errlen, "stat %s/%s: %s", h->spool, rel, strerror(errno));
		rc = -1;
	} else if (st.st_dev != h->dev) {
		left_alone(h, rel, "is on another file system");
	} else if (S_ISDIR(st.st_mode)) {
		if (depth > HANDOVER_DEPTH)
			left_alone(h, rel, "is deeper than stsrelay writes");
		else
			rc = give(h, fd, &st, rel) == 0 ? handover_dir(h, fd, rel, depth) : -1;
	} else if (S_ISREG(st.st_mode) && st.st_nlink == 1) {
		rc = give(h, fd, &st, rel);
	} else if (S_ISREG(st.st_mode)) {
		left_alone(h, rel, "has several hard links");
	} else if (S_ISLNK(st.st_mode)) {
		left_alone(h, rel, "is a symbolic link");
	} else {
		left_alone(h, rel, "is neither a file nor a directory");
	}
	close(fd);
	return rc;
}

/* Every entry of the directory open as dirfd, which is at depth `depth`. */
static int handover_dir(struct handover *h, int dirfd, const char *rel, int depth)
{
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	/* a fresh descriptor of the same directory: closedir() closes it */
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		snprintf(h->err, h->errlen, "read %s/%s: %s", h->spool, rel, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (;;) {
		char sub[CONFIG_PATH_MAX];

		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno != 0) {
				snprintf(h->err, h->errlen, "read %s/%s: %s", h->spool, rel,
					 strerror(errno));
				rc = -1;
			}
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", rel, de->d_name);
		if (handover_entry(h, dirfd, de->d_name, sub, depth + 1) != 0) {
			rc = -1;
			break;
		}
	}
	closedir(d);
	return rc;
}

/* The three queue directories (maildrop/ alone, its files are the
 * submitters'), the trees under queue/, tmp/, sts/ and tlsrpt/, and the
 * lock file; the spool directory itself only when this start made it
 * (give_root): an existing one is the operator's, like the directories
 * above it, and is never chowned. One of the subdirectories that is not a
 * directory stops the start: the daemon would otherwise follow it later. */
static int handover_spool(const char *spool, uid_t uid, bool give_root, int lock_fd, char *err,
			  size_t errlen)
{
	static const struct {
		const char *name;
		bool tree;
	} subs[] = { { "queue", true },
		     { "tmp", true },
		     { "maildrop", false },
		     { "sts", true },
		     { "tlsrpt", true } };
	struct handover h = { .uid = uid, .spool = spool, .err = err, .errlen = errlen };
	struct stat st;
	size_t i;
	int root, fd, rc = -1;

	root = open(spool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0 || fstat(root, &st) != 0) {
		snprintf(err, errlen, "spool %s: %s", spool, strerror(errno));
		goto out;
	}
	h.dev = st.st_dev;
	if (give_root && give(&h, root, &st, ".") != 0)
		goto out;
	if (fstat(lock_fd, &st) != 0) {
		snprintf(err, errlen, "spool %s/%s: %s", spool, QUEUE_LOCK_FILE, strerror(errno));
		goto out;
	}
	if (give(&h, lock_fd, &st, QUEUE_LOCK_FILE) != 0)
		goto out;
	for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		fd = openat(root, subs[i].name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			continue;
		if (fd < 0) {
			snprintf(err, errlen, "spool %s/%s: %s%s", spool, subs[i].name,
				 strerror(errno),
				 errno == ELOOP || errno == ENOTDIR
					 ? " (must be a directory, not a symbolic link or file)"
					 : "");
			goto out;
		}
		if (fstat(fd, &st) != 0) {
			snprintf(err, errlen, "spool %s/%s: %s", spool, subs[i].name,
				 strerror(errno));
			close(fd);
			goto out;
		}
		if (st.st_dev != h.dev) {
			left_alone(&h, subs[i].name, "is on another file system");
			close(fd);
			continue;
		}
		if (give(&h, fd, &st, subs[i].name) != 0 ||
		    (subs[i].tree && handover_dir(&h, fd, subs[i].name, 1) != 0)) {
			close(fd);
			goto out;
		}
		close(fd);
	}
	rc = 0;
out:
	if (root >= 0)
		close(root);
	return rc;
}

/* The user's groups plus the drop group: the drop files are 0640 in that
 * group (relay/cli/sendmail.c), and the pickup must read them whoever submits. */
static int set_groups(const char *user, gid_t gid, long drop_gid, char *err, size_t errlen)
{
	gid_t groups[NGROUPS_MAX + 1];
	int n, i;

	if (initgroups(user, gid) != 0) {
		snprintf(err, errlen, "cannot set the groups of user %s: %s", user,
			 strerror(errno));
		return -1;
	}
	if (drop_gid < 0)
		return 0;
	n = getgroups(NGROUPS_MAX, groups);
	if (n < 0) {
		snprintf(err, errlen, "getgroups: %s", strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++)
		if (groups[i] == (gid_t)drop_gid)
			return 0;
	groups[n++] = (gid_t)drop_gid;
	if (setgroups((size_t)n, groups) != 0) {
		snprintf(err, errlen, "cannot add group %s for user %s: %s", DROP_GROUP, user,
			 strerror(errno));
		return -1;
	}
	return 0;
}

/* Setuid after binding (ports < 1024) and before the spool is touched, so
 * every spool file belongs to that user (maildrop/ keeps its group); the
 * user keeps the drop group as a supplementary group. */
static int drop_privileges(const char *user, const char *spool, bool give_root, int lock_fd,
			   long drop_gid, char *err, size_t errlen)
{
	struct passwd *pw = getpwnam(user);

	if (pw == NULL) {
		snprintf(err, errlen, "user %s: no such user", user);
		return -1;
	}
	if (getuid() != 0) {
		if (getuid() == pw->pw_uid)
			return 0;
		snprintf(err, errlen, "user = %s needs the daemon to start as root", user);
		return -1;
	}
	if (handover_spool(spool, pw->pw_uid, give_root, lock_fd, err, errlen) != 0)
		return -1;
	if (set_groups(user, pw->pw_gid, drop_gid, err, errlen) != 0)
		return -1;
	if (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
		snprintf(err, errlen, "cannot switch to user %s: %s", user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		snprintf(err, errlen, "switched to user %s but root could be regained", user);
		return -1;
	}
	/* The switch made the process undumpable, which gives /proc/self to
	 * root: the queue names its nameless files through /proc/self/fd, and
	 * a crash may leave a core where dumps are on (nginx's workers do the
	 * same). The user can read every file the daemon holds anyway. */
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0)
		log_warn("prctl(PR_SET_DUMPABLE): %s: queue files go through tmp/",
			 strerror(errno));
	log_info("running as user %s (uid %ld)", user, (long)pw->pw_uid);
	return 0;
}

/* A spool we cannot write would accept mail and then fail every message:
 * refuse to start instead. */
static int spool_probe(struct queue *q, char *err, size_t errlen)
{
	struct queue_writer *w = NULL;

	if (queue_writer_new(q, false, &w) != 0) {
		snprintf(err, errlen, "spool %s is not writable: %s", queue_spool_dir(q),
			 strerror(errno));
		return -1;
	}
	queue_writer_free(w);
	return 0;
}

/* spool_dir/lock (queue/queue.h): a second daemon on the same spool stops
 * here, before it binds, schedules or removes anything. *made_root: the
 * spool directory did not exist and was made now (only then is it handed
 * to `user`). 0, or with err set EX_TEMPFAIL when another process holds
 * it and EX_CANTCREAT for any other failure. */
static int take_lock(struct serve *sv, bool *made_root, char *err, size_t errlen)
{
	const char *spool = sv->r.cfg.spool_dir;
	struct stat st;
	long holder = 0;
	int e;

	*made_root = stat(spool, &st) != 0 && errno == ENOENT;
	sv->lock_fd = queue_lock(spool, true, LOCK_WAIT_MS, &holder);
	if (sv->lock_fd < 0) {
		e = errno;
		if (e == EWOULDBLOCK)
			snprintf(err, errlen,
				 "spool %s is in use by another stsrelay (pid %ld holds "
				 "%s/%s): one daemon per spool",
				 spool, holder, spool, QUEUE_LOCK_FILE);
		else
			snprintf(err, errlen, "cannot lock spool %s (%s/%s): %s", spool, spool,
				 QUEUE_LOCK_FILE,
				 e == EINVAL ? "not a plain file with one link" : strerror(e));
		return e == EWOULDBLOCK ? EX_TEMPFAIL : EX_CANTCREAT;
	}
	if (queue_lock_note_pid(sv->lock_fd) != 0)
		log_warn("spool %s/%s: cannot record the pid: %s", spool, QUEUE_LOCK_FILE,
			 strerror(errno));
	return 0;
}

/* A daemon that is not in maildrop/'s group cannot read what other users
 * submit (0640 drop files): say so at start, not at the first submission. */
static void check_drop_group(const char *spool)
{
	gid_t groups[NGROUPS_MAX + 1];
	char dir[CONFIG_PATH_MAX + 16];
	struct stat st;
	int n, i;

	snprintf(dir, sizeof(dir), "%s/maildrop", spool);
	if (geteuid() == 0 || stat(dir, &st) != 0 || getegid() == st.st_gid)
		return;
	n = getgroups(NGROUPS_MAX, groups);
	for (i = 0; i < n; i++)
		if (groups[i] == st.st_gid)
			return;
	log_warn("%s belongs to group %ld, which this process is not in: files other users "
		 "submit with sendmail cannot be read and are set aside as .bad-ID (start as "
		 "root with user = ..., or add the user to group %s)",
		 dir, (long)st.st_gid, DROP_GROUP);
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* The start, in order. Each step returns 0, or the exit code of its failure
 * (<sysexits.h>, as `serve --help` lists them) with err set. */

/* What needs the start's privileges: the spool lock, the listeners bound,
 * then `user` become, the spool handed over to it. *drop_gid: maildrop's
 * group for queue_open, -1 once the spool was made as root. */
static int start_privileged(struct serve *sv, long *drop_gid, char *err, size_t errlen)
{
	struct group *gr;
	bool made_root = false;
	int code;

	/* One daemon per spool, settled before anything binds or changes. */
	code = take_lock(sv, &made_root, err, errlen);
	if (code != 0)
		return code;
	if (smtpd_bind(&sv->r, &sv->smtpd, err, errlen) != 0)
		return EX_OSERR;
	if (metrics_http_start(&sv->r, &sv->metrics, err, errlen) != 0)
		return EX_OSERR;
	gr = getgrnam(DROP_GROUP);
	*drop_gid = gr ? (long)gr->gr_gid : -1;
	if (sv->r.cfg.user[0] == '\0')
		return 0;
	/* make the spool (and maildrop's group) as root, then hand it over;
	 * the open after the switch leaves the group as it is */
	if (getuid() == 0) {
		struct queue *q0 = NULL;

		if (queue_open(sv->r.cfg.spool_dir, true, *drop_gid, &q0, err, errlen) != 0)
			return EX_CANTCREAT;
		queue_close(q0);
	}
	if (drop_privileges(sv->r.cfg.user, sv->r.cfg.spool_dir, made_root, sv->lock_fd, *drop_gid,
			    err, errlen) != 0)
		return EX_NOPERM;
	*drop_gid = -1;
	return 0;
}

/* The spool as the daemon's user: writable, opened, recovered. */
static int start_spool(struct serve *sv, long drop_gid, char *err, size_t errlen)
{
	int rc;

	if (access(sv->r.cfg.spool_dir, W_OK | X_OK) != 0) {
		/* sts/, tlsrpt/ and the control sockets are made in it */
		snprintf(err, errlen,
			 "spool %s is not writable%s%s: %s (stsrelay never changes "
			 "the owner of an existing spool directory)",
			 sv->r.cfg.spool_dir, sv->r.cfg.user[0] ? " by user " : "", sv->r.cfg.user,
			 strerror(errno));
		return EX_NOPERM;
	}
	if (queue_open(sv->r.cfg.spool_dir, true, drop_gid, &sv->r.queue, err, errlen) != 0)
		return EX_CANTCREAT;
	if (spool_probe(sv->r.queue, err, errlen) != 0)
		return EX_CANTCREAT;
	rc = queue_recover(sv->r.queue);
	if (rc < 0) {
		snprintf(err, errlen, "spool %s: recovery failed: %s", sv->r.cfg.spool_dir,
			 strerror(errno));
		return EX_CANTCREAT;
	}
	if (rc > 0)
		log_info("recovery: removed %d unfinished file(s) from the spool", rc);
	return 0;
}

static void on_redis_state(void *arg, bool up)
{
	struct serve *sv = arg;

	tlsrpt_fleet_redis_state(sv->r.tlsrpt_fleet, up);
}

/* redis_url set: the connection (made from the loop, never waited for:
 * without Redis every node works alone until it is back), the shared
 * policy cache and the shared TLS-RPT counts. */
static int start_fleet(struct serve *sv, char *err, size_t errlen)
{
	const struct config *cfg = &sv->r.cfg;
	struct redis_config rc = { .url = &cfg->redis, .on_state = on_redis_state, .arg = sv };
	struct tlsrpt_fleet_config tc = { .loop = &sv->loop,
					  .spool_dir = cfg->spool_dir,
					  .node = config_node_name(cfg),
					  .retention_s = cfg->tlsrpt_retention_s,
					  .background = true };

	if (cfg->redis.host[0] == '\0')
		return 0;
	if (redis_new(&sv->loop, &rc, &sv->r.redis) != 0 ||
	    sts_fleet_new(&sv->loop, sv->r.redis, config_node_name(cfg), cfg->sts_fetch_timeout_ms,
			  &sv->r.sts_fleet) != 0) {
		snprintf(err, errlen, "cannot start the fleet's Redis client: out of memory");
		return EX_OSERR;
	}
	sv->r.sts_shared = sts_fleet_shared(sv->r.sts_fleet);
	tc.redis = sv->r.redis;
	if (tlsrpt_fleet_new(&tc, &sv->r.tlsrpt_fleet) != 0) {
		snprintf(err, errlen, "cannot start the fleet's TLS-RPT merger: out of memory");
		return EX_OSERR;
	}
	log_info("fleet: node %s, Redis %s%s%s:%u db %u; policies and TLS-RPT counts are "
		 "shared, the spool stays local",
		 config_node_name(cfg), strchr(cfg->redis.host, ':') ? "[" : "", cfg->redis.host,
		 strchr(cfg->redis.host, ':') ? "]" : "", (unsigned)cfg->redis.port, cfg->redis.db);
	return 0;
}

/* What runs on the spool, the listeners last: nothing is accepted before
 * the scheduler and the group commit can take it. */
static int start_services(struct serve *sv, char *err, size_t errlen)
{
	int code;

	if (load_relayhost_auth(&sv->r.cfg, &sv->r.relayhost_auth, err, errlen) != 0)
		return EX_CONFIG;
	log_relayhost(&sv->r);
	code = start_fleet(sv, err, errlen);
	if (code != 0)
		return code;
	if (scheduler_new(&sv->r, &sv->r.sched) != 0) {
		snprintf(err, errlen, "cannot load the queue in %s", sv->r.cfg.spool_dir);
		return EX_SOFTWARE;
	}
	if (commit_new(&sv->loop, sv->r.queue, &sv->commit) != 0) {
		snprintf(err, errlen, "out of memory");
		return EX_OSERR;
	}
	if (tlsrpt_daemon_start(&sv->r, &sv->r.tlsrpt) != 0) {
		snprintf(err, errlen, "cannot start the TLS-RPT schedule (see above)");
		return EX_CONFIG;
	}
	check_drop_group(sv->r.cfg.spool_dir);
	if (pickup_start(&sv->r, &sv->pickup) != 0) {
		snprintf(err, errlen, "cannot start maildrop pickup");
		return EX_OSERR;
	}
	if (control_start(&sv->r, sv->pickup, &sv->control, err, errlen) != 0) {
		/* mail still flows; queue commands fall back to the spool */
		log_error("%s; running without a control socket", err);
		sv->control = NULL;
	}
	/* as `user`: the key and the users file are read again on SIGHUP */
	if (smtpd_submission_load(sv->smtpd, err, errlen) != 0)
		return EX_CONFIG;
	if (smtpd_listen(sv->smtpd, sv->commit, err, errlen) != 0)
		return EX_OSERR;
	return 0;
}

/* SIGTERM and SIGINT stop, SIGHUP reloads. */
static int start_signals(struct serve *sv, char *err, size_t errlen)
{
	static const int signums[3] = { SIGTERM, SIGINT, SIGHUP };
	int i, rc;

	for (i = 0; i < 3; i++) {
		rc = uv_signal_init(&sv->loop, &sv->sig[i]);
		if (rc != 0) {
			snprintf(err, errlen, "signal handler: %s", uv_strerror(rc));
			return EX_OSERR;
		}
		sv->nsig++;
		sv->sig[i].data = sv;
		rc = uv_signal_start(&sv->sig[i], on_signal, signums[i]);
		if (rc != 0) {
			snprintf(err, errlen, "signal handler: %s", uv_strerror(rc));
			return EX_OSERR;
		}
	}
	return 0;
}

/* A failed start: closes what was started, and runs the loop until their
 * handles are closed. */
static void abort_start(struct serve *sv, const char *err)
{
	/* The log goes to stderr: one line, not a second copy of it. */
	log_error("cannot start: %s", err);
	if (sv->pickup != NULL)
		pickup_close(sv->pickup);
	if (sv->control != NULL)
		control_close(sv->control);
	if (sv->commit != NULL)
		commit_close(sv->commit);
	metrics_http_close(sv->metrics);
	if (sv->r.tlsrpt != NULL)
		tlsrpt_daemon_stop(sv->r.tlsrpt, NULL, NULL);
	if (sv->smtpd != NULL) {
		sv->r.stopping = 1;
		smtpd_stop(sv->smtpd, NULL, NULL);
	}
	/* A start that fails after the queue was loaded (a listen address in
	 * use) closes the scheduler's resolver, TLS context and timers too;
	 * nothing is delivering yet, so this finishes at once. */
	if (sv->r.sched != NULL)
		scheduler_stop(sv->r.sched, NULL, NULL);
	fleet_stop(sv);
	close_signals(sv);
	uv_run(&sv->loop, UV_RUN_DEFAULT);
}

/* The end of a run, stopped or failed: the loop closed, sv freed. */
static void serve_free(struct serve *sv)
{
	uv_walk(&sv->loop, walk_close, NULL); /* nothing should be left; be sure */
	uv_run(&sv->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&sv->loop) != 0)
		log_warn("event loop did not close cleanly");
	if (sv->r.sched != NULL)
		scheduler_free(sv->r.sched);
	if (sv->smtpd != NULL)
		smtpd_free(sv->smtpd);
	if (sv->r.queue != NULL)
		queue_close(sv->r.queue);
	if (sv->lock_fd >= 0)
		close(sv->lock_fd); /* last: the control socket is gone by now */
	tls_policy_free(sv->r.tls_policy);
	authfile_wipe(&sv->r.relayhost_auth);
	free(sv);
}

int lifecycle_run(const struct config *cfg, const char *config_path, const char *version)
{
	struct serve *sv;
	char err[1024];
	long drop_gid = -1;
	int rc, code;

	sv = calloc(1, sizeof(*sv));
	if (sv == NULL) {
		fputs("stsrelay: out of memory\n", stderr);
		return EX_OSERR;
	}
	sv->lock_fd = -1;
	sv->r.cfg = *cfg;
	snprintf(sv->r.config_path, sizeof(sv->r.config_path), "%s", config_path);
	setup_logging(&sv->r.cfg);
	if (cfg->tls_policy_file[0] != '\0' &&
	    tls_policy_load(cfg->tls_policy_file, &sv->r.tls_policy, err, sizeof(err)) != 0) {
		log_error("cannot start: tls_policy_file %s", err);
		free(sv);
		return EX_CONFIG;
	}
	signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return */

	rc = uv_loop_init(&sv->loop);
	if (rc != 0) {
		fprintf(stderr, "stsrelay: event loop: %s\n", uv_strerror(rc));
		free(sv);
		return EX_OSERR;
	}
	sv->r.loop = &sv->loop;

	code = start_privileged(sv, &drop_gid, err, sizeof(err));
	if (code == 0)
		code = start_spool(sv, drop_gid, err, sizeof(err));
	if (code == 0)
		code = start_services(sv, err, sizeof(err));
	if (code == 0)
		code = start_signals(sv, err, sizeof(err));
	if (code != 0) {
		abort_start(sv, err);
	} else {
		log_info("started: stsrelay %s, config %s, spool %s, hostname %s", version,
			 sv->r.config_path, sv->r.cfg.spool_dir, sv->r.cfg.hostname);
		notify_ready("running");
		uv_run(&sv->loop, UV_RUN_DEFAULT);
		log_info("stopped");
	}
	serve_free(sv);
	return code;
}
