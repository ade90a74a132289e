/* Helpers for the command-line subcommands: config loading with one error
 * format, and the client side of the daemon's one-line control socket. */
#include "relay/cli/cli.h"
#include "queue/queue.h"
#include "relay/core/buf.h"
#include "queue/listing.h"
#include "relay/daemon/relay.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define CONTROL_TIMEOUT_MS 30000

int cli_drop_setgid(const char *prog)
{
	gid_t g = getgid();

	if (getegid() == g)
		return 0;
	if (setresgid(g, g, g) != 0) {
		fprintf(stderr, "%s: cannot drop the set-group-ID privilege: %s\n", prog,
			strerror(errno));
		return -1;
	}
	return 0;
}

int cli_print_version(void)
{
	if (printf("stsrelay %s\n", STSRELAY_VERSION) < 0 || fflush(stdout) != 0)
		return EX_IOERR;
	return 0;
}

bool cli_is_help(const char *arg)
{
	return arg != NULL && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0);
}

int cli_usage(const char *text, bool asked)
{
	FILE *f = asked ? stdout : stderr;

	if (fputs(text, f) == EOF || fflush(f) != 0)
		return asked ? EX_IOERR : EX_USAGE;
	return asked ? 0 : EX_USAGE;
}

int cli_exit_for_errno(int e, int otherwise)
{
	return e == EACCES || e == EPERM ? EX_NOPERM : otherwise;
}

int cli_load_config(const char *prog, const char *explicit_path, struct config *cfg)
{
	char err[1024];
	const char *path = config_path(explicit_path);

	if (config_load(cfg, path, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return EX_CONFIG;
	}
	return 0;
}

bool cli_queue_id_parse(const char *s, char *out)
{
	size_t i;

	if (s == NULL || strlen(s) != QUEUE_ID_LEN)
		return false;
	/* operators may type ids in lower case */
	for (i = 0; i < QUEUE_ID_LEN; i++)
		out[i] = (char)toupper((unsigned char)s[i]);
	out[QUEUE_ID_LEN] = '\0';
	return queue_id_valid(out, QUEUE_ID_LEN);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to become ready for `events` before the deadline. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	int64_t left;
	int rc;

	for (;;) {
		left = deadline - mono_ms();
		if (left <= 0)
			return -1;
		rc = poll(&p, 1, (int)left);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -1;
	}
}

/* Connects to spool_dir/name: REPLIED (connected, *fd set), NO_DAEMON,
 * DENIED, or FAILED with the reason in why. */
static enum cli_control_result ctl_connect(const char *spool_dir, const char *name, int *fd,
					   char *why, size_t whylen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int rc, e;

	*fd = -1;
	rc = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/%s", spool_dir, name);
	if (rc < 0 || (size_t)rc >= sizeof(sun.sun_path)) {
		snprintf(why, whylen, "control socket path too long");
		return CLI_CONTROL_FAILED;
	}
	*fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return CLI_CONTROL_FAILED;
	}
	if (connect(*fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
		return CLI_CONTROL_REPLIED;
	e = errno;
	close(*fd);
	*fd = -1;
	/* A missing socket or a stale one left by a killed daemon both mean
	 * nobody is listening. */
	if (e == ENOENT || e == ECONNREFUSED)
		return CLI_CONTROL_NO_DAEMON;
	snprintf(why, whylen, "connect %s: %s", sun.sun_path, strerror(e));
	return e == EACCES || e == EPERM ? CLI_CONTROL_DENIED : CLI_CONTROL_FAILED;
}

static int send_line(int fd, const char *request, int64_t deadline, char *why, size_t whylen)
{
	char line[1024];
	size_t len, sent = 0;
	ssize_t n;

	if (strpbrk(request, "\r\n") != NULL || strlen(request) + 2 > sizeof(line)) {
		snprintf(why, whylen, "bad request");
		return -1;
	}
	len = (size_t)snprintf(line, sizeof(line), "%s\n", request);
	while (sent < len) {
		if (wait_fd(fd, POLLOUT, deadline) != 0) {
			snprintf(why, whylen, "timeout talking to the daemon");
			return -1;
		}
		n = send(fd, line + sent, len - sent, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(why, whylen, "send: %s", strerror(errno));
			return -1;
		}
		sent += (size_t)n;
	}
	return 0;
}

enum cli_control_result cli_control_request(const char *spool_dir, const char *request, char *reply,
					    size_t replylen)
{
	enum cli_control_result res;
	int64_t deadline = mono_ms() + CONTROL_TIMEOUT_MS;
	char line[1024];
	size_t len, got = 0;
	ssize_t n;
	int fd;

	if (replylen == 0)
		return CLI_CONTROL_FAILED;
	reply[0] = '\0';
	res = ctl_connect(spool_dir, RELAY_CONTROL_SOCKET, &fd, reply, replylen);
	if (res != CLI_CONTROL_REPLIED)
		return res;
	res = CLI_CONTROL_FAILED;
	if (send_line(fd, request, deadline, reply, replylen) != 0)
		goto out;
	for (;;) {
		char *nl;

		if (got + 1 >= sizeof(line)) {
			snprintf(reply, replylen, "reply from the daemon too long");
			goto out;
		}
		if (wait_fd(fd, POLLIN, deadline) != 0) {
			snprintf(reply, replylen, "timeout waiting for the daemon's reply");
			goto out;
		}
		n = recv(fd, line + got, sizeof(line) - 1 - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(reply, replylen, "recv: %s", strerror(errno));
			goto out;
		}
		line[got + (size_t)n] = '\0';
		nl = memchr(line + got, '\n', (size_t)n);
		got += (size_t)n;
		if (nl != NULL || n == 0) {
			if (nl != NULL)
				*nl = '\0';
			if (nl == NULL && got == 0) {
				snprintf(reply, replylen,
					 "the daemon closed the connection without a reply");
				goto out;
			}
			len = strlen(line);
			if (len > 0 && line[len - 1] == '\r')
				line[len - 1] = '\0';
			snprintf(reply, replylen, "%s", line);
			res = CLI_CONTROL_REPLIED;
			goto out;
		}
	}
out:
	close(fd);
	return res;
}

enum cli_control_result cli_showq(const char *spool_dir, json_t **doc, char *err, size_t errlen)
{
	enum cli_control_result res;
	int64_t deadline = mono_ms() + CONTROL_TIMEOUT_MS;
	struct core_buf in = CORE_BUF_INIT(LISTING_MAX);
	json_error_t jerr;
	char chunk[65536];
	ssize_t n;
	int fd;

	*doc = NULL;
	res = ctl_connect(spool_dir, RELAY_SHOWQ_SOCKET, &fd, err, errlen);
	if (res != CLI_CONTROL_REPLIED)
		return res;
	res = CLI_CONTROL_FAILED;
	if (send_line(fd, "list", deadline, err, errlen) != 0)
		goto out;
	for (;;) {
		if (wait_fd(fd, POLLIN, deadline) != 0) {
			snprintf(err, errlen, "timeout waiting for the daemon's listing");
			goto out;
		}
		n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "recv: %s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		if (core_buf_add(&in, chunk, (size_t)n) != 0) {
			snprintf(err, errlen, "listing from the daemon larger than %d bytes",
				 LISTING_MAX);
			goto out;
		}
	}
	if (core_buf_len(&in) >= 6 && memcmp(core_buf_str(&in), "error ", 6) == 0) {
		snprintf(err, errlen, "the daemon refused: %.*s",
			 (int)strcspn(core_buf_str(&in) + 6, "\n"), core_buf_str(&in) + 6);
		goto out;
	}
	*doc = json_loadb(core_buf_str(&in), core_buf_len(&in), 0, &jerr);
	if (*doc == NULL || !json_is_array(json_object_get(*doc, "messages"))) {
		snprintf(err, errlen, "bad listing from the daemon: %s",
			 *doc ? "no messages" : jerr.text);
		json_decref(*doc);
		*doc = NULL;
		goto out;
	}
	res = CLI_CONTROL_REPLIED;
out:
	core_buf_free(&in);
	close(fd);
	return res;
}
