/* Log lines for operators: Postfix's "QID: key=value, ..." order and program
 * names so pflogsumm keeps working, or JSON, to stderr, syslog or journald. */
#include "relay/core/log.h"
#include "relay/core/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 8192
#define SYSLOG_PATH "/dev/log"
#define JOURNAL_PATH "/run/systemd/journal/socket"
#define FACILITY_MAIL 2
#define SEND_TIMEOUT_S 1 /* a stuck syslog daemon must not stop the relay */

static const char *const level_name[] = { "debug", "info", "warning", "error", "fatal" };
/* syslog severities: debug, info, warning, err, crit */
static const int level_sev[] = { 7, 6, 4, 3, 2 };
static const char *const comp_name[] = { "master", "smtpd", "qmgr", "smtp", "pickup", "tlsrpt" };

/* Settings change only in log_setup (the loop thread, at start or reload);
 * the socket is shared by every thread that logs and guarded by sock_mu. */
static struct {
	char ident[32];
	char host[64];
	enum log_format format;
	enum log_target target; /* as asked */
	bool components;
	bool tty;  /* stderr is a terminal */
	int debug; /* -1: not read yet */
} lg = { "stsrelay", "localhost", LOG_FORMAT_TEXT, LOG_TARGET_STDERR, false, false, -1 };

static pthread_mutex_t sock_mu = PTHREAD_MUTEX_INITIALIZER;
static int sock_fd = -1;
static int sock_type = SOCK_DGRAM;
static bool sock_failed; /* no socket: lines go to stderr */

static const char *socket_path(void)
{
	const char *env = getenv(lg.target == LOG_TARGET_SYSLOG ? "STSRELAY_SYSLOG_SOCKET"
								: "STSRELAY_JOURNAL_SOCKET");

	if (env != NULL && env[0] != '\0')
		return env;
	return lg.target == LOG_TARGET_SYSLOG ? SYSLOG_PATH : JOURNAL_PATH;
}

/* Under sock_mu. A datagram socket as syslog(3) and sd_journal use; a
 * stream socket where /dev/log is one (some syslog daemons). */
static int sock_open(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
	const char *path = socket_path();
	int type, fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	for (type = SOCK_DGRAM;; type = SOCK_STREAM) {
		fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
		    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
			int e = errno;

			close(fd);
			if (e == EPROTOTYPE && type == SOCK_DGRAM && lg.target == LOG_TARGET_SYSLOG)
				continue;
			errno = e;
			return -1;
		}
		break;
	}
	sock_fd = fd;
	sock_type = type;
	return 0;
}

static void sock_close(void)
{
	if (sock_fd >= 0)
		close(sock_fd);
	sock_fd = -1;
}

void log_setup(const char *ident, enum log_format format, enum log_target target)
{
	char host[256];

	snprintf(lg.ident, sizeof(lg.ident), "%s", ident ? ident : "stsrelay");
	lg.format = format;
	/* The file layout names the machine as syslog daemons do: the host
	 * name up to its first dot. */
	if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') {
		host[sizeof(host) - 1] = '\0';
		host[strcspn(host, ". \t")] = '\0';
		snprintf(lg.host, sizeof(lg.host), "%s", host);
	}
	lg.tty = isatty(STDERR_FILENO) == 1;
	pthread_mutex_lock(&sock_mu);
	if (target != lg.target || sock_failed) {
		sock_close();
		sock_failed = false;
	}
	lg.target = target;
	pthread_mutex_unlock(&sock_mu);
}

void log_use_components(int on)
{
	lg.components = on != 0;
}

enum log_target log_default_target(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int n = 0;

	if (js == NULL || sscanf(js, "%llu:%llu%n", &dev, &ino, &n) != 2 || js[n] != '\0')
		return LOG_TARGET_STDERR;
	if (fstat(STDERR_FILENO, &st) != 0 || (unsigned long long)st.st_dev != dev ||
	    (unsigned long long)st.st_ino != ino)
		return LOG_TARGET_STDERR;
	return LOG_TARGET_JOURNAL;
}

static int enabled(enum log_level lvl)
{
	if (lg.debug < 0) {
		const char *d = getenv("STSRELAY_DEBUG");
		lg.debug = d != NULL && *d != '\0' && strcmp(d, "0") != 0;
	}
	return lvl != LOG_LVL_DEBUG || lg.debug;
}

/* Appends to a bounded line; a line that would overflow is cut, never overrun. */
struct line {
	char buf[LOG_LINE_MAX];
	size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
	if (n > sizeof(l->buf) - 1 - l->len)
		n = sizeof(l->buf) - 1 - l->len;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	l->buf[l->len] = '\0';
}

static void puts_(struct line *l, const char *s)
{
	put(l, s, strlen(s));
}

static void putf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct line *l, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		put(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void put_json_str(struct line *l, const char *s)
{
	char esc[8];

	put(l, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(l, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(l, esc, 6);
		} else {
			put(l, s, 1);
		}
	}
	put(l, "\"", 1);
}

/* Text lines must stay one line: control characters from peers become '?'. */
static void put_text(struct line *l, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		put(l, (c < 0x20 || c == 0x7f) ? "?" : s, 1);
	}
}

/* The program name of a line: "stsrelay/smtpd" in the daemon. */
static void proc_name(enum log_component comp, char *out, size_t len)
{
	if (lg.components && (size_t)comp < sizeof(comp_name) / sizeof(comp_name[0]))
		snprintf(out, len, "%s/%s", lg.ident, comp_name[comp]);
	else
		snprintf(out, len, "%s", lg.ident);
}

/* The message body (what syslog calls MSG): without time, host or program. */
static void begin(struct line *l, enum log_level lvl, const char *proc, const char *qid)
{
	l->len = 0;
	l->buf[0] = '\0';
	if (lg.format == LOG_FORMAT_JSON) {
		char ts[40], tbuf[24];
		int64_t ms = clock_now_ms();

		clock_rfc3339(ms / 1000, tbuf, sizeof(tbuf));
		tbuf[19] = '\0'; /* drop the Z, add milliseconds */
		snprintf(ts, sizeof(ts), "%s.%03dZ", tbuf, (int)(ms % 1000));
		puts_(l, "{\"time\":");
		put_json_str(l, ts);
		puts_(l, ",\"level\":");
		put_json_str(l, level_name[lvl]);
		puts_(l, ",\"process\":");
		put_json_str(l, proc);
		putf(l, ",\"pid\":%ld", (long)getpid());
		if (qid) {
			puts_(l, ",\"queue_id\":");
			put_json_str(l, qid);
		}
		return;
	}
	if (lvl != LOG_LVL_INFO) {
		puts_(l, level_name[lvl]);
		puts_(l, ": ");
	}
	if (qid) {
		put_text(l, qid);
		puts_(l, ": ");
	}
}

static void write_stderr(const char *buf, size_t len)
{
	/* one write per line so concurrent processes do not interleave */
	if (write(STDERR_FILENO, buf, len) < 0)
		return;
}

/* "2026-11-23T16:05:26.123Z host stsrelay/smtpd[42]: body" */
static void emit_stderr(const struct line *body, const char *proc)
{
	char ts[40], tbuf[24], out[LOG_LINE_MAX + 256];
	int64_t ms = clock_now_ms();
	int n;

	clock_rfc3339(ms / 1000, tbuf, sizeof(tbuf));
	tbuf[19] = '\0';
	snprintf(ts, sizeof(ts), "%s.%03dZ", tbuf, (int)(ms % 1000));
	n = snprintf(out, sizeof(out), "%s %s %s[%ld]: %s\n", ts, lg.host, proc, (long)getpid(),
		     body->buf);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(out)) {
		n = (int)sizeof(out) - 1;
		out[n - 1] = '\n';
	}
	write_stderr(out, (size_t)n);
}

static void emit_json_line(const struct line *body)
{
	char out[LOG_LINE_MAX + 2];
	int n = snprintf(out, sizeof(out), "%s\n", body->buf);

	if (n > 0)
		write_stderr(out, (size_t)n < sizeof(out) ? (size_t)n : sizeof(out) - 1);
}

/* "<N>body": stderr that systemd reads into the journal (sd-daemon(3)). */
static void emit_prefixed(const struct line *body, enum log_level lvl)
{
	char out[LOG_LINE_MAX + 16];
	int n = snprintf(out, sizeof(out), "<%d>%s\n", level_sev[lvl], body->buf);

	if (n < 0)
		return;
	if ((size_t)n >= sizeof(out)) {
		n = (int)sizeof(out) - 1;
		out[n - 1] = '\n';
	}
	write_stderr(out, (size_t)n);
}

/* Under sock_mu: one datagram (or one NUL-ended stream record), with one
 * reconnect when the daemon at the other end was restarted. */
static int sock_send(const char *buf, size_t len)
{
	int attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		ssize_t n;

		if (sock_fd < 0 && sock_open() != 0)
			return -1;
		n = send(sock_fd, buf, len, MSG_NOSIGNAL);
		if (n == (ssize_t)len)
			return 0;
		if (n >= 0 || errno == EAGAIN || errno == EWOULDBLOCK)
			return -1; /* cut short or timed out: the line is lost, not retried */
		sock_close();
	}
	return -1;
}

/* Sends through the socket; false when there is none (caller falls back). */
static bool emit_socket(const struct line *body, enum log_level lvl, const char *proc,
			const char *qid)
{
	char out[LOG_LINE_MAX + 512];
	bool ok = true;
	int n;

	if (lg.target == LOG_TARGET_SYSLOG) {
		char ts[32];
		struct tm tm;
		time_t t = (time_t)clock_now();

		if (localtime_r(&t, &tm) == NULL ||
		    strftime(ts, sizeof(ts), "%b %e %H:%M:%S", &tm) == 0)
			snprintf(ts, sizeof(ts), "Jan  1 00:00:00");
		n = snprintf(out, sizeof(out), "<%d>%s %s[%ld]: %s",
			     FACILITY_MAIL * 8 + level_sev[lvl], ts, proc, (long)getpid(),
			     body->buf);
	} else {
		n = snprintf(out, sizeof(out),
			     "MESSAGE=%s\nPRIORITY=%d\nSYSLOG_FACILITY=%d\nSYSLOG_IDENTIFIER=%s\n"
			     "SYSLOG_PID=%ld\n%s%s%s",
			     body->buf, level_sev[lvl], FACILITY_MAIL, proc, (long)getpid(),
			     qid ? "STSRELAY_QUEUE_ID=" : "", qid ? qid : "", qid ? "\n" : "");
	}
	if (n < 0)
		return true;
	if ((size_t)n >= sizeof(out) - 1)
		n = (int)sizeof(out) - 2;
	pthread_mutex_lock(&sock_mu);
	if (sock_failed) {
		ok = false;
	} else {
		/* a stream socket takes records ended by NUL, as syslog(3) sends them */
		size_t len = (size_t)n +
			     (sock_type == SOCK_STREAM && lg.target == LOG_TARGET_SYSLOG);

		out[n] = '\0';
		if (sock_send(out, len) != 0 && sock_fd < 0) {
			char note[512];

			sock_failed = true;
			ok = false;
			snprintf(note, sizeof(note),
				 "%s: cannot reach %s at %s (%s); logging to stderr\n", lg.ident,
				 lg.target == LOG_TARGET_SYSLOG ? "syslog" : "the journal",
				 socket_path(), strerror(errno));
			write_stderr(note, strlen(note));
		}
	}
	pthread_mutex_unlock(&sock_mu);
	return ok;
}

static void emit(struct line *body, enum log_level lvl, enum log_component comp, const char *qid)
{
	char proc[64];

	if (lg.format == LOG_FORMAT_JSON)
		puts_(body, "}");
	proc_name(comp, proc, sizeof(proc));
	if (lg.target == LOG_TARGET_STDERR) {
		if (lg.format == LOG_FORMAT_JSON)
			emit_json_line(body); /* it names its time and program itself */
		else
			emit_stderr(body, proc);
		return;
	}
	if (!emit_socket(body, lvl, proc, qid)) {
		if (lg.target == LOG_TARGET_JOURNAL)
			emit_prefixed(body, lvl);
		else if (lg.format == LOG_FORMAT_JSON)
			emit_json_line(body);
		else
			emit_stderr(body, proc);
		return;
	}
	if (lg.tty && lvl >= LOG_LVL_WARNING) {
		char out[LOG_LINE_MAX + 64];
		int n = snprintf(out, sizeof(out), "%s: %s\n", proc, body->buf);

		if (n > 0)
			write_stderr(out, (size_t)n < sizeof(out) ? (size_t)n : sizeof(out) - 1);
	}
}

void log_c(enum log_component comp, enum log_level lvl, const char *qid, const char *fmt, ...)
{
	struct line l;
	char text[LOG_LINE_MAX], proc[64];
	va_list ap;

	if (!enabled(lvl))
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	proc_name(comp, proc, sizeof(proc));
	begin(&l, lvl, proc, qid);
	if (lg.format == LOG_FORMAT_JSON) {
		puts_(&l, ",\"msg\":");
		put_json_str(&l, text);
	} else {
		put_text(&l, text);
	}
	emit(&l, lvl, comp, qid);
}

/* One field: its key in both formats, its value by type. */
static void put_key(struct line *l, const char *k, bool *first)
{
	if (lg.format == LOG_FORMAT_JSON) {
		puts_(l, ",");
		put_json_str(l, k);
		puts_(l, ":");
	} else {
		if (!*first)
			puts_(l, ", ");
		put_text(l, k);
		puts_(l, "=");
	}
	*first = false;
}

void log_fields_c(enum log_component comp, enum log_level lvl, const char *qid, ...)
{
	struct line l;
	char proc[64];
	bool first = true, json = lg.format == LOG_FORMAT_JSON;
	va_list ap;
	int type;

	if (!enabled(lvl))
		return;
	proc_name(comp, proc, sizeof(proc));
	begin(&l, lvl, proc, qid);
	va_start(ap, qid);
	while ((type = va_arg(ap, int)) != LOG_F_END) {
		const char *k = va_arg(ap, const char *), *s;
		long long n;

		switch (type) {
		case LOG_F_STR:
		case LOG_F_ADDR:
			s = va_arg(ap, const char *);
			if (s == NULL)
				break;
			put_key(&l, k, &first);
			if (json) {
				put_json_str(&l, s);
			} else {
				put_text(&l, type == LOG_F_ADDR ? "<" : "");
				put_text(&l, s);
				put_text(&l, type == LOG_F_ADDR ? ">" : "");
			}
			break;
		case LOG_F_INT:
		case LOG_F_INT_OPT:
			n = va_arg(ap, long long);
			if (type == LOG_F_INT_OPT && n <= 0)
				break;
			put_key(&l, k, &first);
			putf(&l, "%lld", n);
			break;
		case LOG_F_MS:
			n = va_arg(ap, long long);
			if (n < 0)
				n = 0;
			put_key(&l, k, &first);
			/* Postfix shows tenths; JSON keeps the milliseconds */
			if (json)
				putf(&l, "%lld.%03lld", n / 1000, n % 1000);
			else
				putf(&l, "%lld.%lld", n / 1000, (n % 1000) / 100);
			break;
		case LOG_F_STATUS:
			s = va_arg(ap, const char *);
			put_key(&l, "status", &first);
			if (json) {
				put_json_str(&l, k);
				puts_(&l, ",\"reason\":");
				put_json_str(&l, s ? s : "");
			} else {
				put_text(&l, k);
				if (s != NULL) {
					puts_(&l, " (");
					put_text(&l, s);
					puts_(&l, ")");
				}
			}
			break;
		case LOG_F_NOTE:
			if (!json) {
				puts_(&l, " (");
				put_text(&l, k);
				puts_(&l, ")");
			}
			break;
		default:
			/* a caller bug: stop reading arguments of unknown type */
			va_end(ap);
			emit(&l, lvl, comp, qid);
			return;
		}
	}
	va_end(ap);
	emit(&l, lvl, comp, qid);
}
