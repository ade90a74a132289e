/* Durable file writes: complete writes, EINTR-safe fsync and close, directory
 * fsync, and atomic replacement (temp, fsync, rename, directory fsync). */
#include "relay/core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int core_fs_write_all(int fd, const void *buf, size_t len, size_t *written)
{
	const char *p = buf;
	size_t done = 0;
	int rc = 0;

	while (done < len) {
		ssize_t n = write(fd, p + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			rc = -1;
			break;
		}
		done += (size_t)n;
	}
	if (written != NULL)
		*written = done;
	return rc;
}

int core_fs_fsync(int fd)
{
	while (fsync(fd) != 0)
		if (errno != EINTR)
			return -1;
	return 0;
}

int core_fs_close(int fd)
{
	return close(fd) != 0 && errno != EINTR ? -1 : 0;
}

int core_fs_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc, e;

	if (fd < 0)
		return -1;
	rc = core_fs_fsync(fd);
	e = errno;
	close(fd);
	errno = e;
	return rc;
}

/* Owner and mode a temporary file gets before its first byte. */
struct fs_owner {
	uid_t uid;
	gid_t gid;
};

static int write_atomic(int tmp_dirfd, const char *tmp_name, int dirfd, const char *name,
			const void *buf, size_t len, mode_t mode, const struct fs_owner *own)
{
	/* O_EXCL: never write through a file (or a hard link to one) that
	 * someone else put under our temporary name. */
	const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
	int fd, e;

	fd = openat(tmp_dirfd, tmp_name, flags, mode);
	if (fd < 0 && errno == EEXIST) {
		/* The caller owns this name: a leftover of a crashed run. */
		if (unlinkat(tmp_dirfd, tmp_name, 0) != 0 && errno != ENOENT)
			return -1;
		fd = openat(tmp_dirfd, tmp_name, flags, mode);
	}
	if (fd < 0)
		return -1;
	/* chown may be refused to a caller that is not root: it keeps its own */
	if (own != NULL &&
	    ((fchown(fd, own->uid, own->gid) != 0 && geteuid() == 0) || fchmod(fd, mode) != 0))
		goto fail;
	if (core_fs_write_all(fd, buf, len, NULL) != 0 || core_fs_fsync(fd) != 0)
		goto fail;
	e = core_fs_close(fd);
	fd = -1;
	if (e != 0)
		goto fail;
	if (renameat(tmp_dirfd, tmp_name, dirfd, name) != 0)
		goto fail;
	return 0;
fail:
	e = errno;
	if (fd >= 0)
		close(fd);
	unlinkat(tmp_dirfd, tmp_name, 0);
	errno = e;
	return -1;
}

int core_fs_write_atomic_nodirsync_at(int tmp_dirfd, const char *tmp_name, int dirfd,
				      const char *name, const void *buf, size_t len, mode_t mode)
{
	return write_atomic(tmp_dirfd, tmp_name, dirfd, name, buf, len, mode, NULL);
}

int core_fs_write_atomic_at(int tmp_dirfd, const char *tmp_name, int dirfd, const char *name,
			    const void *buf, size_t len, mode_t mode)
{
	if (core_fs_write_atomic_nodirsync_at(tmp_dirfd, tmp_name, dirfd, name, buf, len, mode) !=
	    0)
		return -1;
	/* The new name exists now; only its durability is in doubt. */
	return core_fs_fsync(dirfd);
}

/* dir/name through dir/.NAME.tmp.PID, then the directory fsync. */
static int write_atomic_path(const char *dir, const char *name, const void *buf, size_t len,
			     mode_t mode, const struct fs_owner *own)
{
	char tmp[NAME_MAX + 1];
	int n, dfd, rc, e;

	n = snprintf(tmp, sizeof(tmp), ".%s.tmp.%ld", name, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	rc = write_atomic(dfd, tmp, dfd, name, buf, len, mode, own);
	if (rc == 0)
		rc = core_fs_fsync(dfd); /* only the new name's durability is in doubt */
	e = errno;
	close(dfd);
	errno = e;
	return rc;
}

int core_fs_write_atomic(const char *dir, const char *name, const void *buf, size_t len,
			 mode_t mode)
{
	return write_atomic_path(dir, name, buf, len, mode, NULL);
}

int core_fs_write_atomic_owned(const char *dir, const char *name, const void *buf, size_t len,
			       mode_t mode, uid_t uid, gid_t gid)
{
	struct fs_owner own = { uid, gid };

	return write_atomic_path(dir, name, buf, len, mode, &own);
}

int core_fs_read_fd(int fd, size_t max, char **out, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = NULL;
	int e;

	*out = NULL;
	*len = 0;
	if (max >= (size_t)SSIZE_MAX) {
		errno = EINVAL;
		return -1;
	}
	for (;;) {
		ssize_t r;

		if (n == cap - 1 || buf == NULL) {
			char *nb;

			if (buf != NULL) {
				if (cap > max + 1) {
					e = EFBIG;
					goto fail;
				}
				cap *= 2;
			}
			nb = realloc(buf, cap);
			if (nb == NULL) {
				e = ENOMEM;
				goto fail;
			}
			buf = nb;
		}
		r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			e = errno;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			e = EFBIG;
			goto fail;
		}
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
fail:
	free(buf);
	errno = e;
	return -1;
}

int core_fs_read_file(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc, e;

	*out = NULL;
	*len = 0;
	if (fd < 0)
		return -1;
	rc = core_fs_read_fd(fd, max, out, len);
	e = errno;
	close(fd);
	errno = e;
	return rc;
}
