/* The spool on disk: directory setup, unique ids, crash-safe writing of
 * messages (nameless file, fsync, link, dir fsync) and states (temp, fsync,
 * rename, dir fsync), scans, recovery and the import of local submissions
 * from the group-writable drop directory. */
#include "queue/queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "relay/core/clock.h"
#include "relay/core/fs.h"
#include "relay/core/log.h"

#define DIR_QUEUE "queue"
#define DIR_TMP "tmp"
#define DIR_DROP "maildrop"
#define MODE_PRIVATE_DIR 0700
#define MODE_DROP_DIR 01730 /* Postfix maildrop: group may create, not list */
#define MODE_QUEUE_FILE 0600
#define MODE_DROP_FILE 0640 /* the daemon may read it through the group */
#define STATE_SUFFIX ".state"
#define BAD_PREFIX ".bad-"
#define WRITER_BUF 65536
#define HEADER_FIRST_READ 4096 /* read_header(): most headers fit, see there */
#define ID_ATTEMPTS 1000       /* a full 16-bit suffix space per second */
#define DROP_STALE_S 3600      /* half-written drop files older than this go */

struct queue {
	char *dir;
	int root_fd;  /* spool_dir itself (O_PATH when not readable) */
	int queue_fd; /* queue/, or -1 when not accessible (sendmail as a user) */
	int tmp_fd;   /* tmp/, or -1 likewise */
	int drop_fd;  /* maildrop/ (O_PATH when only writable) */
	bool root_readable;
	bool drop_readable;
	/* New queue files start nameless (O_TMPFILE in tmp/) and are linked
	 * into queue/ at commit through /proc/self/fd: no temp name to add and
	 * rename away, no entry in tmp/ a crash could leave. ANON_UNKNOWN until
	 * the first writer tries it (as the user the daemon runs as), then
	 * ANON_YES, or ANON_NO for named temp files. */
	_Atomic int anon;
};

struct queue_writer {
	struct queue *q;
	bool drop;
	bool header_done;
	bool committed; /* named in its final directory */
	bool withdrawn; /* and taken out again (queue_writer_withdraw) */
	bool broken;    /* a write failed: the file is incomplete, never commit */
	bool anon;      /* nameless until its commit (O_TMPFILE): name is "" */
	int fd;
	char id[QUEUE_ID_LEN + 1];
	char name[QUEUE_ID_LEN + 2]; /* temp name: "ID" in tmp/, ".ID" in maildrop/ */
	uint64_t id_offset;          /* where the id value sits in the header */
	uint64_t flags_offset;       /* where the one-digit flags value sits */
	unsigned flags;              /* as written there */
	uint64_t size;               /* data bytes appended */
	size_t buflen;
	char buf[WRITER_BUF];
};

/* ---- small helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool valid_id(const char *s)
{
	return s != NULL && queue_id_valid(s, strlen(s));
}

/* Reads up to len bytes at off; *got < len only at end of file. */
static int pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	char *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

/* A fresh id: 8 hex digits of seconds (so ids sort by age) and 4 random. */
/* The 16-bit part of an id: a per-process sequence started at a random
 * value, so the ids one process makes within a second never repeat (below
 * 65,536 a second); other processes' ids are kept apart by the commit's
 * no-replace link or rename, which takes a new id on a clash. */
static _Atomic uint32_t id_seq;
static pthread_once_t id_seq_once = PTHREAD_ONCE_INIT;

static void id_seq_reseed(void)
{
	uint32_t r = 0;

	/* without randomness the sequence starts at the pid: still unique here */
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		r = (uint32_t)getpid();
	atomic_store(&id_seq, r);
}

/* A forked child must not count on from its parent's position. */
static void id_seq_seed(void)
{
	id_seq_reseed();
	(void)pthread_atfork(NULL, NULL, id_seq_reseed);
}

static int make_id(char id[QUEUE_ID_LEN + 1])
{
	uint32_t n;

	if (pthread_once(&id_seq_once, id_seq_seed) != 0) {
		errno = EAGAIN;
		return -1;
	}
	n = atomic_fetch_add(&id_seq, 1) & 0xFFFFu;
	snprintf(id, QUEUE_ID_LEN + 1, "%08" PRIX32 "%04" PRIX32, (uint32_t)clock_now(), n);
	return 0;
}

/* 1 if name exists in dirfd, 0 if not, -1 on error. */
static int entry_exists(int dirfd, const char *name)
{
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	return errno == ENOENT ? 0 : -1;
}

/* ---- opening ---- */

enum { ANON_UNKNOWN, ANON_YES, ANON_NO };

/* Names a nameless file: linkat through /proc/self/fd (AT_EMPTY_PATH would
 * need CAP_DAC_READ_SEARCH). Fails with EEXIST on a taken name. */
static int link_anon(int fd, int dirfd, const char *name)
{
	char path[48];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, path, dirfd, name, AT_SYMLINK_FOLLOW);
}

/* Whether nameless files can be made in tmp/ and named: O_TMPFILE needs the
 * file system's support (ext4, XFS, btrfs, tmpfs have it), the link a
 * /proc/self/fd the process may use (mounted, and the process dumpable:
 * see drop_privileges in relay/daemon/lifecycle.c). Tried once, for real,
 * with a probe name in tmp/ that is removed at once. Two threads asking at
 * the same time both try; they find the same answer. */
static bool anon_files_work(struct queue *q)
{
	char name[64];
	int fd, ok, e, known = atomic_load(&q->anon);

	if (known != ANON_UNKNOWN)
		return known == ANON_YES;
	fd = openat(q->tmp_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, MODE_QUEUE_FILE);
	ok = fd >= 0;
	e = errno;
	if (ok) {
		snprintf(name, sizeof(name), "probe.%ld.%ld", (long)getpid(), (long)gettid());
		ok = link_anon(fd, q->tmp_fd, name) == 0;
		e = errno;
		if (ok)
			unlinkat(q->tmp_fd, name, 0);
		close(fd);
	}
	if (!ok)
		log_msg(LOG_LVL_DEBUG, NULL,
			"queue: nameless files cannot be made and linked here (%s): temp files "
			"in tmp/",
			strerror(e));
	atomic_store(&q->anon, ok ? ANON_YES : ANON_NO);
	return ok;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[4096];
	size_t len = strlen(path), i;

	if (len == 0 || len >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		buf[i] = path[i];
	}
	return 0;
}

/* ---- the single-instance lock ---- */

#define LOCK_RETRY_MS 50

static long lock_holder(int fd)
{
	char buf[32];
	size_t got = 0;
	long pid;

	if (pread_full(fd, buf, sizeof(buf) - 1, 0, &got) != 0)
		return 0;
	buf[got] = '\0';
	if (sscanf(buf, "%ld", &pid) != 1 || pid <= 0)
		return 0;
	return pid;
}

int queue_lock(const char *spool_dir, bool create, int wait_ms, long *holder)
{
	char path[4096];
	struct stat st;
	int fd, waited = 0, e;

	if (holder != NULL)
		*holder = 0;
	if (snprintf(path, sizeof(path), "%s/%s", spool_dir, QUEUE_LOCK_FILE) >=
	    (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (create && mkdir_p(spool_dir, 0755) < 0)
		return -1;
	/* 0600: whoever may open it can hold it, and so keep a daemon from
	 * starting; only root and the spool's user may. Read-write to note the
	 * pid; read-only is enough to lock (the daemon's user on a file root
	 * made before the hand-over). */
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	if (fd < 0 && errno == EACCES)
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	/* The spool may belong to the daemon's user, and root opens this file:
	 * only a plain file of its own (no link to a file elsewhere) is used. */
	if (fstat(fd, &st) != 0) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	for (;;) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK || waited >= wait_ms)
			break;
		(void)nanosleep(&(struct timespec){ .tv_nsec = LOCK_RETRY_MS * 1000000L }, NULL);
		waited += LOCK_RETRY_MS;
	}
	e = errno;
	if (e == EWOULDBLOCK && holder != NULL)
		*holder = lock_holder(fd);
	close(fd);
	errno = e;
	return -1;
}

int queue_lock_note_pid(int fd)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	/* a file left by an older version may have a wider mode */
	if (fchmod(fd, 0600) != 0 || ftruncate(fd, 0) != 0)
		return -1;
	return core_fs_write_all(fd, buf, (size_t)n, NULL) == 0 ? 0 : -1;
}

/* Opens a directory for listing and fsync; when only search/write access is
 * granted (maildrop/ for a submitting user) falls back to O_PATH, which still
 * serves as the base of openat/renameat2. */
static int open_dir(int at, const char *name, bool *readable)
{
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	*readable = fd >= 0;
	if (fd < 0 && errno == EACCES)
		fd = openat(at, name, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	return fd;
}

/* Creates name under root if missing and enforces mode and group. */
static int ensure_dir(int root, const char *name, mode_t mode, long gid)
{
	struct stat st;
	int fd, rc = -1;

	if (mkdirat(root, name, mode) < 0 && errno != EEXIST)
		return -1;
	fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0)
		goto out;
	/* chown first: changing the group may clear mode bits. */
	if (gid >= 0 && st.st_gid != (gid_t)gid && fchown(fd, (uid_t)-1, (gid_t)gid) < 0)
		goto out;
	/* Only what differs: a daemon that no longer owns the directory can
	 * still open a spool that is already right. Re-read the mode, since
	 * fchown may have cleared bits. */
	if (fstat(fd, &st) < 0)
		goto out;
	if ((st.st_mode & 07777) != mode && fchmod(fd, mode) < 0)
		goto out;
	rc = 0;
out:
	if (core_fs_close(fd) < 0)
		rc = -1;
	return rc;
}

int queue_open(const char *spool_dir, bool create, long drop_gid, struct queue **out, char *err,
	       size_t errlen)
{
	struct queue *q = NULL;
	bool readable;
	const char *what = spool_dir;

	if (spool_dir == NULL || out == NULL) {
		errno = EINVAL;
		set_err(err, errlen, "bad arguments");
		return -1;
	}
	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (q == NULL)
		goto fail;
	q->root_fd = q->queue_fd = q->tmp_fd = q->drop_fd = -1;
	q->dir = strdup(spool_dir);
	if (q->dir == NULL)
		goto fail;
	if (create && mkdir_p(spool_dir, 0755) < 0)
		goto fail;
	q->root_fd = open_dir(AT_FDCWD, spool_dir, &q->root_readable);
	if (q->root_fd < 0)
		goto fail;
	if (create) {
		what = DIR_QUEUE;
		if (ensure_dir(q->root_fd, DIR_QUEUE, MODE_PRIVATE_DIR, -1) < 0)
			goto fail;
		what = DIR_TMP;
		if (ensure_dir(q->root_fd, DIR_TMP, MODE_PRIVATE_DIR, -1) < 0)
			goto fail;
		what = DIR_DROP;
		if (ensure_dir(q->root_fd, DIR_DROP, MODE_DROP_DIR, drop_gid) < 0)
			goto fail;
	}
	/* A submitting user reaches only maildrop/; queue/ and tmp/ stay -1
	 * and every call that needs them fails with EACCES. */
	what = DIR_QUEUE;
	q->queue_fd = open_dir(q->root_fd, DIR_QUEUE, &readable);
	if (q->queue_fd >= 0 && !readable) {
		close(q->queue_fd);
		q->queue_fd = -1;
		errno = EACCES;
	}
	if (q->queue_fd < 0 && (create || errno != EACCES))
		goto fail;
	what = DIR_TMP;
	q->tmp_fd = open_dir(q->root_fd, DIR_TMP, &readable);
	if (q->tmp_fd >= 0 && !readable) {
		close(q->tmp_fd);
		q->tmp_fd = -1;
		errno = EACCES;
	}
	if (q->tmp_fd < 0 && (create || errno != EACCES))
		goto fail;
	what = DIR_DROP;
	q->drop_fd = open_dir(q->root_fd, DIR_DROP, &q->drop_readable);
	if (q->drop_fd < 0)
		goto fail;
	*out = q;
	return 0;
fail:
	set_err(err, errlen, "spool %s: %s: %s%s", spool_dir, what, strerror(errno),
		what != spool_dir && (errno == ELOOP || errno == ENOTDIR)
			? " (must be a directory, not a symbolic link or file)"
			: "");
	queue_close(q);
	return -1;
}

void queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	if (q->root_fd >= 0)
		close(q->root_fd);
	if (q->queue_fd >= 0)
		close(q->queue_fd);
	if (q->tmp_fd >= 0)
		close(q->tmp_fd);
	if (q->drop_fd >= 0)
		close(q->drop_fd);
	free(q->dir);
	free(q);
}

const char *queue_spool_dir(const struct queue *q)
{
	return q->dir;
}

static int need_dirs(const struct queue *q)
{
	if (q->queue_fd < 0 || q->tmp_fd < 0) {
		errno = EACCES;
		return -1;
	}
	return 0;
}

/* ---- listing ---- */

typedef char qid_t[QUEUE_ID_LEN + 1];

static int cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Calls fn for every entry of dirfd but "." and "..". A fresh descriptor
 * gives the walk its own read position, so walks may run on any thread.
 * Returns -1 if the directory cannot be read or fn returns -1. */
static int walk_dir(int dirfd, int (*fn)(void *ctx, const char *name), void *ctx)
{
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -1;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno != 0)
				rc = -1;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fn(ctx, de->d_name) < 0) {
			rc = -1;
			break;
		}
	}
	closedir(d);
	return rc;
}

struct id_list {
	qid_t *arr;
	size_t n, cap;
};

static int collect_id(void *ctx, const char *name)
{
	struct id_list *l = ctx;

	if (!valid_id(name))
		return 0;
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		qid_t *na = reallocarray(l->arr, ncap, sizeof(*na));

		if (na == NULL)
			return -1;
		l->arr = na;
		l->cap = ncap;
	}
	memcpy(l->arr[l->n++], name, QUEUE_ID_LEN + 1);
	return 0;
}

/* Sorted ids of the entries of dirfd named exactly like a queue id. */
static int list_ids(int dirfd, qid_t **ids, size_t *n)
{
	struct id_list l = { 0 };

	*ids = NULL;
	*n = 0;
	if (walk_dir(dirfd, collect_id, &l) < 0) {
		free(l.arr);
		return -1;
	}
	if (l.n > 1)
		qsort(l.arr, l.n, sizeof(*l.arr), cmp_id);
	*ids = l.arr;
	*n = l.n;
	return 0;
}

int queue_scan(struct queue *q, char (**ids)[QUEUE_ID_LEN + 1], size_t *n)
{
	if (q->queue_fd < 0) {
		errno = EACCES;
		return -1;
	}
	return list_ids(q->queue_fd, ids, n);
}

int queue_drop_scan(struct queue *q, char (**ids)[QUEUE_ID_LEN + 1], size_t *n)
{
	if (!q->drop_readable) {
		errno = EACCES;
		return -1;
	}
	return list_ids(q->drop_fd, ids, n);
}

/* ---- reading ---- */

/* Reads the start of a message file until the "end" line (or the header
 * limit, or end of file); the decoder then judges what was read. The first
 * read is small (a header is about 0.3 KB, plus a line per recipient): a
 * larger one would copy message data nobody parses. */
static int read_header(int fd, uint64_t fsize, char **out, size_t *outlen)
{
	size_t limit = fsize < QUEUE_HEADER_MAX ? (size_t)fsize : QUEUE_HEADER_MAX;
	size_t cap = 0, len = 0;
	char *buf = NULL;

	*out = NULL;
	*outlen = 0;
	while (len < limit) {
		size_t want = cap ? cap * 2 : HEADER_FIRST_READ, got, from;
		char *nb;

		if (want > limit)
			want = limit;
		nb = realloc(buf, want);
		if (nb == NULL)
			goto fail;
		buf = nb;
		cap = want;
		if (pread_full(fd, buf + len, cap - len, len, &got) < 0)
			goto fail;
		from = len > 4 ? len - 4 : 0; /* the marker may straddle reads */
		len += got;
		if (len < cap)
			break; /* end of file (it shrank since fstat) */
		if (memmem(buf + from, len - from, "\nend\n", 5) != NULL)
			break;
	}
	*out = buf;
	*outlen = len;
	return 0;
fail:
	free(buf);
	return -1;
}

static int read_state(struct queue *q, const char *id, struct queue_envelope *env, char *err,
		      size_t errlen)
{
	char name[QUEUE_ID_LEN + sizeof(STATE_SUFFIX)];
	struct stat st;
	const char *why = NULL;
	char *buf = NULL;
	size_t got;
	int fd, rc = -1;

	snprintf(name, sizeof(name), "%s" STATE_SUFFIX, id);
	fd = openat(q->queue_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0; /* no state yet: every recipient pending */
		set_err(err, errlen, "%s: %s", name, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		set_err(err, errlen, "%s: %s", name, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > QUEUE_STATE_MAX) {
		set_err(err, errlen, "%s: not a regular file or too large", name);
		errno = EBADMSG;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL || pread_full(fd, buf, (size_t)st.st_size, 0, &got) < 0) {
		set_err(err, errlen, "%s: %s", name, strerror(errno));
		goto out;
	}
	if (queue_state_decode(buf, got, env, &why) < 0) {
		set_err(err, errlen, "%s: %s", name, why);
		errno = EBADMSG;
		goto out;
	}
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

int queue_load(struct queue *q, const char *id, struct queue_envelope *env, char *err,
	       size_t errlen)
{
	struct stat st;
	const char *why = NULL;
	char *hdr = NULL;
	size_t hlen;
	int fd = -1, rc = -1;

	memset(env, 0, sizeof(*env));
	if (!valid_id(id)) {
		set_err(err, errlen, "bad queue id");
		errno = EINVAL;
		return -1;
	}
	if (q->queue_fd < 0) {
		set_err(err, errlen, "queue directory not accessible");
		errno = EACCES;
		return -1;
	}
	fd = openat(q->queue_fd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0) {
		set_err(err, errlen, "%s: %s", id, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		set_err(err, errlen, "%s: not a regular file", id);
		errno = EBADMSG;
		goto out;
	}
	if (read_header(fd, (uint64_t)st.st_size, &hdr, &hlen) < 0) {
		set_err(err, errlen, "%s: %s", id, strerror(errno));
		goto out;
	}
	if (queue_header_decode(hdr, hlen, env, &why) < 0) {
		set_err(err, errlen, "%s: %s", id, why);
		errno = EBADMSG;
		goto out;
	}
	if (strcmp(env->id, id) != 0) {
		set_err(err, errlen, "%s: header names id %s", id, env->id);
		errno = EBADMSG;
		goto out;
	}
	env->size = (uint64_t)st.st_size - env->data_offset;
	if (read_state(q, id, env, err, errlen) < 0)
		goto out;
	rc = 0;
out:
	if (rc < 0) {
		queue_envelope_clear(env);
		memset(env, 0, sizeof(*env));
	}
	free(hdr);
	if (fd >= 0)
		close(fd);
	return rc;
}

int queue_open_data(struct queue *q, const struct queue_envelope *env)
{
	int fd;

	if (!valid_id(env->id) || q->queue_fd < 0) {
		errno = EINVAL;
		return -1;
	}
	fd = openat(q->queue_fd, env->id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	if (lseek(fd, (off_t)env->data_offset, SEEK_SET) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- state and removal ---- */

int queue_sync_queue_dir(struct queue *q)
{
	if (q->queue_fd < 0) {
		errno = EACCES;
		return -1;
	}
	return core_fs_fsync(q->queue_fd);
}

int queue_sync_maildrop_dir(struct queue *q)
{
	/* A submitting user cannot open maildrop/ for fsync (no read
	 * permission, and fsync refuses O_PATH descriptors); its drops are made
	 * durable through the file, by queue_writer_commit_sync(). */
	if (!q->drop_readable) {
		errno = EACCES;
		return -1;
	}
	return core_fs_fsync(q->drop_fd);
}

int queue_save_state_nodirsync(struct queue *q, const struct queue_envelope *env)
{
	char name[QUEUE_ID_LEN + sizeof(STATE_SUFFIX)];
	char *text = NULL;
	size_t len;
	int rc, e;

	if (!valid_id(env->id)) {
		errno = EINVAL;
		return -1;
	}
	if (need_dirs(q) < 0)
		return -1;
	/* Never create a state for a message that is gone: it would be an
	 * orphan waiting to be inherited by a later message with that id. */
	e = entry_exists(q->queue_fd, env->id);
	if (e <= 0) {
		if (e == 0)
			errno = ENOENT;
		return -1;
	}
	if (queue_state_encode(env, &text, &len) < 0) {
		errno = EINVAL;
		return -1;
	}
	snprintf(name, sizeof(name), "%s" STATE_SUFFIX, env->id);
	/* tmp/ID.state, renamed into queue/ (same file system) */
	rc = core_fs_write_atomic_nodirsync_at(q->tmp_fd, name, q->queue_fd, name, text, len,
					       MODE_QUEUE_FILE);
	e = errno;
	free(text);
	errno = e;
	return rc;
}

int queue_save_state(struct queue *q, const struct queue_envelope *env)
{
	if (queue_save_state_nodirsync(q, env) != 0)
		return -1;
	return queue_sync_queue_dir(q);
}

int queue_remove_nodirsync(struct queue *q, const char *id)
{
	char name[QUEUE_ID_LEN + sizeof(STATE_SUFFIX)];
	int gone_before = 0;

	if (!valid_id(id)) {
		errno = EINVAL;
		return -1;
	}
	if (q->queue_fd < 0) {
		errno = EACCES;
		return -1;
	}
	/* Message first, state second. A crash in between leaves a state
	 * without a message, which queue_recover() deletes and new ids avoid.
	 * The other order could leave the message without its state, and the
	 * restart would then see every recipient pending and deliver again. */
	if (unlinkat(q->queue_fd, id, 0) < 0) {
		if (errno != ENOENT)
			return -1;
		gone_before = 1;
	}
	snprintf(name, sizeof(name), "%s" STATE_SUFFIX, id);
	if (unlinkat(q->queue_fd, name, 0) < 0 && errno != ENOENT)
		return -1;
	if (gone_before) {
		errno = ENOENT;
		return -1;
	}
	return 0;
}

int queue_remove(struct queue *q, const char *id)
{
	int rc = queue_remove_nodirsync(q, id);
	int e = errno;

	/* ENOENT: the message was gone, but its state may just have been
	 * unlinked; that too must be durable before we return. */
	if (rc != 0 && e != ENOENT)
		return -1;
	if (queue_sync_queue_dir(q) != 0)
		return -1;
	errno = e;
	return rc;
}

/* ---- recovery ---- */

struct recover_ctx {
	struct queue *q;
	time_t now;
	int count;
};

/* tmp/ holds only unfinished work (messages, state temps): all of it goes. */
static int recover_tmp_entry(void *ctx, const char *name)
{
	struct recover_ctx *c = ctx;

	if (unlinkat(c->q->tmp_fd, name, 0) < 0) {
		log_msg(LOG_LVL_WARNING, NULL, "queue recover: cannot remove tmp/%s: %s", name,
			strerror(errno));
		return 0;
	}
	c->count++;
	return 0;
}

static int recover_orphan_entry(void *ctx, const char *name)
{
	struct recover_ctx *c = ctx;
	const size_t slen = strlen(STATE_SUFFIX);
	char id[QUEUE_ID_LEN + 1];

	if (strlen(name) != QUEUE_ID_LEN + slen || strcmp(name + QUEUE_ID_LEN, STATE_SUFFIX) != 0)
		return 0;
	memcpy(id, name, QUEUE_ID_LEN);
	id[QUEUE_ID_LEN] = '\0';
	if (!valid_id(id) || entry_exists(c->q->queue_fd, id) != 0)
		return 0; /* message present (or cannot tell): keep */
	if (unlinkat(c->q->queue_fd, name, 0) < 0) {
		log_msg(LOG_LVL_WARNING, id, "queue recover: cannot remove orphan state: %s",
			strerror(errno));
		return 0;
	}
	log_msg(LOG_LVL_INFO, id, "queue recover: removed state without message");
	c->count++;
	return 0;
}

/* ".ID" files are drops still being written, or abandoned by a killed
 * sendmail; only old ones are removed. */
static int recover_drop_entry(void *ctx, const char *name)
{
	struct recover_ctx *c = ctx;
	struct stat st;

	if (name[0] != '.' || !valid_id(name + 1))
		return 0;
	if (fstatat(c->q->drop_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (st.st_mtime > c->now - DROP_STALE_S)
		return 0;
	if (unlinkat(c->q->drop_fd, name, 0) < 0) {
		log_msg(LOG_LVL_WARNING, NULL, "queue recover: cannot remove maildrop/%s: %s", name,
			strerror(errno));
		return 0;
	}
	c->count++;
	return 0;
}

int queue_recover(struct queue *q)
{
	/* mtimes are compared with the real clock, not the test clock */
	struct recover_ctx t = { .q = q, .now = time(NULL) }, o = t, d = t;

	if (need_dirs(q) < 0 || !q->drop_readable) {
		errno = EACCES;
		return -1;
	}
	if (walk_dir(q->tmp_fd, recover_tmp_entry, &t) < 0 ||
	    walk_dir(q->queue_fd, recover_orphan_entry, &o) < 0 ||
	    walk_dir(q->drop_fd, recover_drop_entry, &d) < 0)
		return -1;
	if (o.count > 0 && core_fs_fsync(q->queue_fd) < 0)
		return -1;
	if (t.count + o.count + d.count > 0)
		log_msg(LOG_LVL_INFO, NULL,
			"queue recover: removed %d temporary, %d orphan state, %d stale drop files",
			t.count, o.count, d.count);
	return t.count + o.count + d.count;
}

/* ---- writer ---- */

/* Gives the drop file fd maildrop/'s group when it has another one. */
static int drop_group(struct queue *q, int fd)
{
	struct stat dst, fst;

	if (fstat(q->drop_fd, &dst) < 0 || fstat(fd, &fst) < 0)
		return -1;
	if (fst.st_gid == dst.st_gid)
		return 0;
	if (fchown(fd, (uid_t)-1, dst.st_gid) == 0)
		return 0;
	/* not allowed (a user outside the group without the setgid binary):
	 * the daemon will say so when it sets the file aside */
	return errno == EPERM ? 0 : -1;
}

/* 1 if id (or its state file: a leftover must never be inherited by a new
 * message) is in the final directory, 0 if free, -1 on error. */
static int id_taken(const struct queue_writer *w, const char *id)
{
	char sname[QUEUE_ID_LEN + sizeof(STATE_SUFFIX)];
	int fdir = w->drop ? w->q->drop_fd : w->q->queue_fd;
	int e = entry_exists(fdir, id);

	if (e != 0 || w->drop)
		return e;
	snprintf(sname, sizeof(sname), "%s" STATE_SUFFIX, id);
	return entry_exists(fdir, sname);
}

/* A nameless file for w (anon_files_work): its id is only checked free here and
 * claimed at commit, whose link fails on a name taken meanwhile. */
static int writer_open_anon(struct queue_writer *w)
{
	int i, e;

	for (i = 0; i < ID_ATTEMPTS; i++) {
		if (make_id(w->id) < 0)
			return -1;
		e = id_taken(w, w->id);
		if (e < 0)
			return -1;
		if (e == 0)
			break;
	}
	if (i == ID_ATTEMPTS) {
		errno = EEXIST;
		return -1;
	}
	w->name[0] = '\0';
	w->fd = openat(w->q->tmp_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, MODE_QUEUE_FILE);
	if (w->fd < 0)
		return -1;
	w->anon = true;
	/* the umask must not decide who may read a queue file */
	if (fchmod(w->fd, MODE_QUEUE_FILE) < 0) {
		int saved = errno;

		close(w->fd);
		w->fd = -1;
		errno = saved;
		return -1;
	}
	return 0;
}

/* A named temp file "ID" in tmp/ (or ".ID" in maildrop/): holding the name
 * exclusively, nobody else can commit this id, so one that is free in the
 * final directory now stays free. */
static int writer_open_named(struct queue_writer *w)
{
	int cdir = w->drop ? w->q->drop_fd : w->q->tmp_fd;
	mode_t mode = w->drop ? MODE_DROP_FILE : MODE_QUEUE_FILE;
	int i, e;

	for (i = 0; i < ID_ATTEMPTS; i++) {
		if (make_id(w->id) < 0)
			return -1;
		snprintf(w->name, sizeof(w->name), "%s%s", w->drop ? "." : "", w->id);
		w->fd = openat(cdir, w->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			       mode);
		if (w->fd < 0) {
			if (errno == EEXIST)
				continue;
			return -1;
		}
		e = id_taken(w, w->id);
		if (e == 0) {
			/* The umask must not decide who may read a queue file;
			 * and a drop file carries maildrop/'s group, through
			 * which the daemon reads it, also when root submits
			 * with a binary that is not setgid (root may give a
			 * file any group; a user who can write into maildrop/
			 * creates it in that group already). */
			if ((w->drop && drop_group(w->q, w->fd) < 0) || fchmod(w->fd, mode) < 0)
				e = -1;
			else
				return 0;
		}
		{
			int saved = errno;

			unlinkat(cdir, w->name, 0);
			close(w->fd);
			w->fd = -1;
			if (e < 0) {
				errno = saved;
				return -1;
			}
		}
	}
	errno = EEXIST;
	return -1;
}

int queue_writer_new(struct queue *q, bool to_drop, struct queue_writer **out)
{
	struct queue_writer *w;
	int cdir = to_drop ? q->drop_fd : q->tmp_fd;
	int fdir = to_drop ? q->drop_fd : q->queue_fd;

	*out = NULL;
	if (cdir < 0 || fdir < 0) {
		errno = EACCES;
		return -1;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -1;
	w->q = q;
	w->drop = to_drop;
	w->fd = -1;
	if ((!to_drop && anon_files_work(q) ? writer_open_anon(w) : writer_open_named(w)) < 0) {
		int saved = errno;

		free(w);
		errno = saved;
		return -1;
	}
	*out = w;
	return 0;
}

const char *queue_writer_id(const struct queue_writer *w)
{
	return w->id;
}

uint64_t queue_writer_size(const struct queue_writer *w)
{
	return w->size;
}

static int writer_flush(struct queue_writer *w)
{
	if (w->buflen == 0)
		return 0;
	if (core_fs_write_all(w->fd, w->buf, w->buflen, NULL) < 0) {
		w->broken = true;
		return -1;
	}
	w->buflen = 0;
	return 0;
}

static int writer_put(struct queue_writer *w, const void *data, size_t len)
{
	if (len > sizeof(w->buf) - w->buflen) {
		if (writer_flush(w) < 0)
			return -1;
		if (len >= sizeof(w->buf)) {
			if (core_fs_write_all(w->fd, data, len, NULL) < 0) {
				w->broken = true;
				return -1;
			}
			return 0;
		}
	}
	memcpy(w->buf + w->buflen, data, len);
	w->buflen += len;
	return 0;
}

int queue_writer_header(struct queue_writer *w, const struct queue_envelope *env)
{
	struct queue_envelope e;
	char *text = NULL;
	const char *at;
	size_t len;
	int rc = -1;

	if (w->header_done || w->broken || w->committed || w->fd < 0) {
		errno = EINVAL;
		return -1;
	}
	e = *env; /* shallow: shares env's recipients, only the id differs */
	memcpy(e.id, w->id, sizeof(e.id));
	e.flags &= ~(unsigned)QUEUE_F_8BITMIME; /* the bytes decide (queue_writer_append) */
	if (queue_header_encode(&e, &text, &len) < 0) {
		errno = EINVAL;
		return -1;
	}
	/* Remember where the id is, to rename the message if a commit ever
	 * finds its id taken. The encoder writes it on the second line. */
	at = memmem(text, len, "\nid ", 4);
	if (at == NULL) {
		errno = EINVAL;
		goto out;
	}
	w->id_offset = (uint64_t)(at - text) + 4;
	at = memmem(text, len, "\nflags ", 7);
	if (at == NULL || (size_t)(at - text) + 8 >= len || at[8] != '\n') {
		errno = EINVAL; /* not the one-digit value mark_8bit() patches */
		goto out;
	}
	w->flags_offset = (uint64_t)(at - text) + 7;
	w->flags = e.flags;
	if (writer_put(w, text, len) < 0)
		goto out;
	w->header_done = true;
	rc = 0;
out:
	free(text);
	return rc;
}

static bool has_8bit(const unsigned char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] & 0x80)
			return true;
	return false;
}

/* The data turned out 8-bit: set QUEUE_F_8BITMIME in the header already
 * written. The header is flushed first (it is the first thing in the
 * buffer), so no later flush writes the old digit over the new one; the
 * commit's fsync covers this write like the rest. */
static int mark_8bit(struct queue_writer *w)
{
	char digit = (char)('0' + (w->flags | QUEUE_F_8BITMIME));
	ssize_t n;

	if (writer_flush(w) < 0)
		return -1;
	do {
		n = pwrite(w->fd, &digit, 1, (off_t)w->flags_offset);
	} while (n < 0 && errno == EINTR);
	if (n != 1) {
		w->broken = true;
		if (n == 0)
			errno = EIO;
		return -1;
	}
	w->flags |= QUEUE_F_8BITMIME;
	return 0;
}

int queue_writer_append(struct queue_writer *w, const void *buf, size_t len)
{
	if (!w->header_done || w->broken || w->committed) {
		errno = EINVAL;
		return -1;
	}
	if (len > UINT64_MAX - w->size) {
		errno = EFBIG;
		return -1;
	}
	if (!(w->flags & QUEUE_F_8BITMIME) && has_8bit(buf, len) && mark_8bit(w) < 0)
		return -1;
	if (writer_put(w, buf, len) < 0)
		return -1;
	w->size += len;
	return 0;
}

/* Moves the temp file to its final name without ever replacing a file.
 * RENAME_NOREPLACE where supported, else link + unlink (link fails on an
 * existing name just as atomically). */
static int move_noreplace(int from_dir, const char *from, int to_dir, const char *to)
{
	if (renameat2(from_dir, from, to_dir, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (linkat(from_dir, from, to_dir, to, 0) < 0)
		return -1;
	if (unlinkat(from_dir, from, 0) < 0)
		log_msg(LOG_LVL_WARNING, NULL, "queue: cannot remove temp link %s: %s", from,
			strerror(errno));
	return 0;
}

/* Gives w's file its final name, never replacing a file: a named temp file
 * is moved, a nameless one linked (linkat fails on an existing name). */
static int place_noreplace(struct queue_writer *w, int cdir, int fdir)
{
	int e;

	if (!w->anon)
		return move_noreplace(cdir, w->name, fdir, w->id);
	/* no temp name held the id: a state file left under it must not be
	 * inherited (checked at open; a crash may have left one since) */
	e = id_taken(w, w->id);
	if (e != 0) {
		if (e > 0)
			errno = EEXIST;
		return -1;
	}
	return link_anon(w->fd, fdir, w->id);
}

void queue_writer_start_writeback(struct queue_writer *w)
{
	if (!w->header_done || w->broken || w->committed || w->fd < 0)
		return;
	if (writer_flush(w) < 0)
		return; /* w is broken now: its commit fails and says why */
	/* a hint: a failure here leaves the fsync to do all the work */
	(void)sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

/* The part of a commit that decides it: flush, fsync, name. The file
 * stays open (w->fd) for writer_close(). 0 = named. */
static int writer_place(struct queue_writer *w)
{
	int cdir = w->drop ? w->q->drop_fd : w->q->tmp_fd;
	int fdir = w->drop ? w->q->drop_fd : w->q->queue_fd;
	int i;

	if (!w->header_done || w->broken || w->committed || w->fd < 0) {
		errno = EINVAL;
		return -1;
	}
	if (writer_flush(w) < 0)
		return -1;
	if (core_fs_fsync(w->fd) < 0) {
		w->broken = true;
		return -1;
	}
	for (i = 0; i < ID_ATTEMPTS; i++) {
		char id[QUEUE_ID_LEN + 1];
		ssize_t n;

		if (place_noreplace(w, cdir, fdir) == 0) {
			w->committed = true;
			return 0;
		}
		if (errno != EEXIST)
			return -1;
		/* Only reachable if something bypassed the temp-name lock (a
		 * restored backup, another tool): take a new id, patch it into the
		 * header in place, and try again. queue_writer_id() changes. */
		if (make_id(id) < 0)
			return -1;
		do {
			n = pwrite(w->fd, id, QUEUE_ID_LEN, (off_t)w->id_offset);
		} while (n < 0 && errno == EINTR);
		if (n != QUEUE_ID_LEN || core_fs_fsync(w->fd) < 0) {
			w->broken = true;
			if (n >= 0 && n != QUEUE_ID_LEN)
				errno = EIO;
			return -1;
		}
		log_msg(LOG_LVL_WARNING, w->id, "queue: id already taken at commit, now %s", id);
		memcpy(w->id, id, sizeof(id));
	}
	errno = EEXIST;
	return -1;
}

/* After the naming a close error changes nothing (see queue.h): the data
 * was fsynced before it was named. It is logged, not returned. */
static void writer_close(struct queue_writer *w)
{
	if (core_fs_close(w->fd) < 0)
		log_msg(LOG_LVL_WARNING, w->id,
			"queue: close after commit: %s (the message "
			"was fsynced before it was named and stays committed)",
			strerror(errno));
	w->fd = -1;
}

int queue_writer_commit(struct queue_writer *w)
{
	if (writer_place(w) < 0)
		return -1;
	writer_close(w);
	return 0;
}

int queue_writer_withdraw(struct queue_writer *w)
{
	if (!w->committed || w->withdrawn) {
		errno = EINVAL;
		return -1;
	}
	if (unlinkat(w->drop ? w->q->drop_fd : w->q->queue_fd, w->id, 0) < 0)
		return -1;
	w->withdrawn = true;
	return 0;
}

/*
 * Makes a renamed file's directory entry durable.
 *
 * The daemon and root can read queue/ and maildrop/: they fsync the
 * directory. A user submitting through the setgid sendmail can only create
 * files in maildrop/ (mode 1730, Postfix's maildrop): open(O_RDONLY) of the
 * directory fails, an O_PATH descriptor cannot be fsynced, and a
 * directory cannot be opened for writing. Such a drop is made durable
 * through its own file instead: a second fsync after the rename. The rename
 * changes the file's inode (its ctime), so on the journalling file systems
 * a spool lives on (ext4, XFS, btrfs) that fsync commits the journal
 * transaction that holds the rename, directory entry included. This is what
 * Postfix's postdrop relies on too (it fsyncs the file and never the
 * maildrop directory). The alternatives were worse: sync() flushes every
 * file system of the machine, and syncfs() every dirty page of the spool's
 * file system, so any local user could make each other's sendmail wait for
 * gigabytes of unrelated writes.
 */
static int writer_sync(struct queue_writer *w)
{
	if (w->drop && !w->q->drop_readable)
		return core_fs_fsync(w->fd);
	return w->drop ? queue_sync_maildrop_dir(w->q) : queue_sync_queue_dir(w->q);
}

int queue_writer_commit_sync(struct queue_writer *w)
{
	int e;

	if (writer_place(w) < 0)
		return -1;
	if (writer_sync(w) == 0) {
		writer_close(w);
		return 0;
	}
	e = errno;
	writer_close(w);
	if (queue_writer_withdraw(w) == 0) {
		errno = e;
		return -1;
	}
	log_msg(LOG_LVL_ERROR, w->id,
		"queue: fsync after commit failed (%s) and the message "
		"cannot be taken back (%s): it stays queued, durability in doubt",
		strerror(e), strerror(errno));
	return 0;
}

void queue_writer_free(struct queue_writer *w)
{
	if (w == NULL)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (!w->committed && !w->anon) /* a nameless file goes with its fd */
		unlinkat(w->drop ? w->q->drop_fd : w->q->tmp_fd, w->name, 0);
	free(w);
}

/* ---- drop import ---- */

/* The owner's user name, or the numeric uid if it has none (or an odd one). */
static void uid_name(uid_t uid, char *out, size_t outlen)
{
	size_t size = 16384;
	struct passwd pw, *res = NULL;
	char *buf = NULL;
	int rc;

	for (;;) {
		char *nb = realloc(buf, size);

		if (nb == NULL)
			break;
		buf = nb;
		rc = getpwuid_r(uid, &pw, buf, size, &res);
		if (rc == ERANGE && size < 1048576) {
			size *= 2;
			continue;
		}
		if (rc == 0 && res != NULL && res->pw_name[0] != '\0' &&
		    strlen(res->pw_name) < outlen && strpbrk(res->pw_name, " \r\n\t") == NULL) {
			snprintf(out, outlen, "%s", res->pw_name);
			free(buf);
			return;
		}
		break;
	}
	free(buf);
	snprintf(out, outlen, "%lu", (unsigned long)uid);
}

/* Opens drop file id for the import and checks what it is. Returns the
 * descriptor, or -1 with *bad set (a file no retry can import: set it
 * aside; the reason may be written into why[whylen]) or with err and
 * errno (a local failure: leave it for another try). */
static int drop_open(struct queue *q, const char *id, struct stat *st, const char **bad, char *why,
		     size_t whylen, char *err, size_t errlen)
{
	int fd, e;

	/* O_NOFOLLOW: a user could plant a symlink to a file they cannot read;
	 * O_NONBLOCK: or a FIFO, which would block the import forever. */
	fd = openat(q->drop_fd, id, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ELOOP) {
			*bad = "symbolic link";
			return -1;
		}
		/* Retrying cannot help a file this process may not read (its
		 * group is not ours): it is set aside once, with the reason. */
		if (errno == EACCES || errno == EPERM) {
			struct stat ls;

			if (fstatat(q->drop_fd, id, &ls, AT_SYMLINK_NOFOLLOW) == 0)
				snprintf(why, whylen,
					 "cannot read it: %s (owner uid %lu, group %lu, mode %04o; "
					 "the daemon reads drop files through group stsrelay-drop)",
					 strerror(EACCES), (unsigned long)ls.st_uid,
					 (unsigned long)ls.st_gid, (unsigned)(ls.st_mode & 07777));
			else
				snprintf(why, whylen, "cannot read it: %s", strerror(EACCES));
			*bad = why;
			return -1;
		}
		set_err(err, errlen, "maildrop/%s: %s", id, strerror(errno));
		return -1;
	}
	if (fstat(fd, st) < 0) {
		e = errno;
		set_err(err, errlen, "maildrop/%s: %s", id, strerror(e));
		close(fd);
		errno = e;
		return -1;
	}
	if (!S_ISREG(st->st_mode))
		*bad = "not a regular file";
	else if (st->st_nlink != 1)
		*bad = "file has several links";
	if (*bad != NULL) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads and vets the drop file's header into env, with what the submitter
 * may not choose replaced. 0, or -1 with *bad or err (as drop_open). */
static int drop_envelope(int fd, const struct stat *st, const char *id, uint64_t max_size,
			 struct queue_envelope *env, const char **bad, char *err, size_t errlen)
{
	char *hdr = NULL;
	size_t hlen;
	int rc = -1;

	if (read_header(fd, (uint64_t)st->st_size, &hdr, &hlen) < 0) {
		set_err(err, errlen, "maildrop/%s: %s", id, strerror(errno));
		return -1;
	}
	if (queue_header_decode(hdr, hlen, env, bad) < 0)
		goto out;
	if ((uint64_t)st->st_size - env->data_offset > max_size) {
		*bad = "message too large";
		goto out;
	}
	/* What the submitter may not choose: who they are, where they came
	 * from, internal flags, a time in the future. */
	uid_name(st->st_uid, env->submitter, sizeof(env->submitter));
	env->client[0] = '\0';
	env->flags &= QUEUE_F_NOBOUNCE;
	if (env->queued_at > clock_now())
		env->queued_at = clock_now();
	rc = 0;
out:
	free(hdr);
	return rc;
}

/* Copies env and the drop file's data into a new queue writer (*w, the
 * caller's to free), exactly the size seen at fstat: later growth by the
 * owner is ignored. 0, or -1 with *bad or err (as drop_open). */
static int drop_copy(struct queue *q, int fd, const char *id, const struct stat *st,
		     const struct queue_envelope *env, struct queue_writer **w, const char **bad,
		     char *err, size_t errlen)
{
	uint64_t off = env->data_offset, left = (uint64_t)st->st_size - env->data_offset;
	char *chunk = NULL;
	int rc = -1;

	if (queue_writer_new(q, false, w) < 0 || queue_writer_header(*w, env) < 0) {
		set_err(err, errlen, "queue write: %s", strerror(errno));
		return -1;
	}
	chunk = malloc(WRITER_BUF);
	if (chunk == NULL) {
		set_err(err, errlen, "out of memory");
		return -1;
	}
	while (left > 0) {
		size_t want = left < WRITER_BUF ? (size_t)left : WRITER_BUF, got;

		if (pread_full(fd, chunk, want, off, &got) < 0) {
			set_err(err, errlen, "maildrop/%s: %s", id, strerror(errno));
			goto out;
		}
		if (got < want) {
			*bad = "file shrank while being read";
			goto out;
		}
		if (queue_writer_append(*w, chunk, got) < 0) {
			set_err(err, errlen, "queue write: %s", strerror(errno));
			goto out;
		}
		off += got;
		left -= got;
	}
	rc = 0;
out:
	free(chunk);
	return rc;
}

/* The copy new_id is safe in the queue: takes drop file id away. A drop
 * file that cannot be removed would be imported again on every scan, so it
 * is at least moved out of the scan's sight. Failures are logged only: the
 * import has succeeded. */
static void drop_retire(struct queue *q, const char *id, const char *new_id)
{
	if (unlinkat(q->drop_fd, id, 0) < 0) {
		char aside[QUEUE_ID_LEN + sizeof(BAD_PREFIX)];

		log_c(LOG_C_PICKUP, LOG_LVL_ERROR, new_id, "cannot remove imported maildrop/%s: %s",
		      id, strerror(errno));
		snprintf(aside, sizeof(aside), BAD_PREFIX "%s", id);
		if (renameat(q->drop_fd, id, q->drop_fd, aside) < 0)
			log_c(LOG_C_PICKUP, LOG_LVL_ERROR, new_id,
			      "cannot move maildrop/%s aside: %s", id, strerror(errno));
	}
	if (queue_sync_maildrop_dir(q) < 0)
		log_c(LOG_C_PICKUP, LOG_LVL_WARNING, new_id, "maildrop fsync: %s", strerror(errno));
}

/* Moves bad drop file id aside to maildrop/.bad-ID (never delivered) and
 * says so in err; the caller logs err: one line per bad file. */
static void drop_set_aside(struct queue *q, const char *id, const char *bad, char *err,
			   size_t errlen)
{
	char aside[QUEUE_ID_LEN + sizeof(BAD_PREFIX)];

	snprintf(aside, sizeof(aside), BAD_PREFIX "%s", id);
	if (renameat(q->drop_fd, id, q->drop_fd, aside) < 0)
		set_err(err, errlen, "maildrop/%s: %s; cannot set it aside: %s", id, bad,
			strerror(errno));
	else
		set_err(err, errlen, "maildrop/%s: %s; set aside as maildrop/%s", id, bad, aside);
}

int queue_drop_import(struct queue *q, const char *id, uint64_t max_size,
		      char new_id[QUEUE_ID_LEN + 1], char *err, size_t errlen)
{
	struct queue_envelope env = { 0 };
	struct queue_writer *w = NULL;
	const char *bad = NULL;
	char why[256];
	struct stat st;
	int fd = -1, rc = -1, saved;

	new_id[0] = '\0';
	if (!valid_id(id)) {
		set_err(err, errlen, "bad drop id");
		errno = EINVAL;
		return -1;
	}
	if (!q->drop_readable || need_dirs(q) < 0) {
		set_err(err, errlen, "spool directories not accessible");
		errno = EACCES;
		return -1;
	}
	fd = drop_open(q, id, &st, &bad, why, sizeof(why), err, errlen);
	if (fd < 0)
		goto out;
	if (drop_envelope(fd, &st, id, max_size, &env, &bad, err, errlen) < 0 ||
	    drop_copy(q, fd, id, &st, &env, &w, &bad, err, errlen) < 0)
		goto out;
	/* On failure the copy is not in queue/ (a copy whose fsync failed is
	 * taken back out), and the drop file stays for another try. */
	if (queue_writer_commit_sync(w) < 0) {
		set_err(err, errlen, "queue commit: %s", strerror(errno));
		goto out;
	}
	memcpy(new_id, w->id, QUEUE_ID_LEN + 1);
	drop_retire(q, id, new_id);
	rc = 0;
out:
	saved = errno;
	if (rc < 0 && bad != NULL) {
		drop_set_aside(q, id, bad, err, errlen);
		saved = EBADMSG;
		new_id[0] = '\0';
	}
	queue_writer_free(w);
	queue_envelope_clear(&env);
	if (fd >= 0)
		close(fd);
	errno = saved;
	return rc;
}
