/* The relay host's credentials file: one `user:password` line, read only
 * from a regular file that other users cannot read, never echoed in errors. */
#include "relay/core/authfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void authfile_wipe(struct authfile_cred *c)
{
	explicit_bzero(c, sizeof(*c));
}

/* Reads the whole file (at most cap - 2 bytes, NUL-terminated) into buf;
 * *len its size. -1 with err set. */
static int read_secret(const char *path, char *buf, size_t cap, size_t *len, char *err,
		       size_t errlen)
{
	struct stat st;
	size_t got = 0;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path,
			 errno == ELOOP ? "is a symbolic link" : strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	if (st.st_mode & S_IRWXO) {
		snprintf(err, errlen,
			 "%s: other users have access to it (mode %04o): it holds a password "
			 "(chmod o-rwx)",
			 path, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	/* cap - 2 is the limit; the byte beyond it tells a file that grew */
	if (st.st_size < 0 || (size_t)st.st_size > cap - 2) {
		snprintf(err, errlen, "%s: larger than %zu bytes", path, cap - 2);
		goto out;
	}
	/* The size may change under us: read up to the buffer, bounded. */
	while (got < cap - 1) {
		ssize_t n = read(fd, buf + got, cap - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got == cap - 1) {
		snprintf(err, errlen, "%s: larger than %zu bytes", path, cap - 2);
		goto out;
	}
	buf[got] = '\0';
	*len = got;
	rc = 0;
out:
	close(fd);
	return rc;
}

/* One credential line (no line end) into out; a static reason on error. */
static const char *parse_line(const char *line, size_t n, struct authfile_cred *out)
{
	const char *colon = memchr(line, ':', n);
	size_t ulen, plen, i;

	for (i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			return "control character in the credentials line";
	if (colon == NULL)
		return "expected one line user:password";
	ulen = (size_t)(colon - line);
	plen = n - ulen - 1;
	if (ulen == 0 || plen == 0)
		return "empty user name or password in user:password";
	if (ulen > AUTHFILE_FIELD_MAX || plen > AUTHFILE_FIELD_MAX)
		return "user name or password longer than 255 bytes";
	memcpy(out->user, line, ulen);
	out->user[ulen] = '\0';
	memcpy(out->password, colon + 1, plen);
	out->password[plen] = '\0';
	out->set = true;
	return NULL;
}

int authfile_load(const char *path, struct authfile_cred *out, char *err, size_t errlen)
{
	char buf[AUTHFILE_SIZE_MAX + 2];
	struct authfile_cred cred;
	const char *p, *end, *why = NULL;
	size_t len = 0;
	unsigned lineno = 0, found = 0;
	int rc = -1;

	memset(&cred, 0, sizeof(cred));
	if (read_secret(path, buf, sizeof(buf), &len, err, errlen) != 0)
		goto out;
	if (memchr(buf, '\0', len) != NULL) {
		snprintf(err, errlen, "%s: NUL byte in the file", path);
		goto out;
	}
	for (p = buf, end = buf + len; p < end && why == NULL;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);

		lineno++;
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n > 0 && p[0] != '#') {
			if (++found > 1)
				why = "more than one credentials line";
			else
				why = parse_line(p, n, &cred);
			if (why != NULL) {
				snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
				goto out;
			}
		}
		p = nl != NULL ? nl + 1 : end;
	}
	if (found == 0) {
		snprintf(err, errlen, "%s: no user:password line", path);
		goto out;
	}
	*out = cred;
	rc = 0;
out:
	explicit_bzero(buf, sizeof(buf));
	explicit_bzero(&cred, sizeof(cred));
	return rc;
}
