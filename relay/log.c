/* Log lines for operators: Postfix's "QID: key=value, ..." order and spelling
 * so pflogsumm-style tools keep working, or one JSON object per line. */
#include "relay/log.h"
#include "relay/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 8192

static struct {
	char ident[32];
	enum log_format format;
	int use_syslog;
	int debug;
} lg = { "stsrelay", LOG_FORMAT_TEXT, 0, -1 };

static const char *level_name[] = { "debug", "info", "warning", "error", "fatal" };
static const int level_syslog[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT };

void log_setup(const char *ident, enum log_format format, int use_syslog)
{
	snprintf(lg.ident, sizeof(lg.ident), "%s", ident ? ident : "stsrelay");
	lg.format = format;
	if (lg.use_syslog)
		closelog();
	lg.use_syslog = use_syslog;
	if (use_syslog)
		openlog(lg.ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
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

static void begin(struct line *l, enum log_level lvl, const char *qid)
{
	char ts[40], tbuf[24];
	int64_t ms = clock_now_ms();

	l->len = 0;
	l->buf[0] = '\0';
	clock_rfc3339(ms / 1000, tbuf, sizeof(tbuf));
	tbuf[19] = '\0'; /* drop the Z, add milliseconds */
	snprintf(ts, sizeof(ts), "%s.%03dZ", tbuf, (int)(ms % 1000));
	if (lg.format == LOG_FORMAT_JSON) {
		puts_(l, "{\"time\":");
		put_json_str(l, ts);
		puts_(l, ",\"level\":");
		put_json_str(l, level_name[lvl]);
		puts_(l, ",\"process\":");
		put_json_str(l, lg.ident);
		if (qid) {
			puts_(l, ",\"queue_id\":");
			put_json_str(l, qid);
		}
		return;
	}
	if (!lg.use_syslog) {
		char pfx[96];
		snprintf(pfx, sizeof(pfx), "%s %s[%d]: ", ts, lg.ident, (int)getpid());
		puts_(l, pfx);
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

static void emit(struct line *l, enum log_level lvl)
{
	if (lg.format == LOG_FORMAT_JSON)
		puts_(l, "}");
	if (lg.use_syslog) {
		syslog(level_syslog[lvl], "%s", l->buf);
		return;
	}
	if (l->len >= sizeof(l->buf) - 1)
		l->buf[sizeof(l->buf) - 2] = '\n';
	else
		puts_(l, "\n");
	/* one write per line so concurrent processes do not interleave */
	if (write(STDERR_FILENO, l->buf, l->len) < 0)
		return;
}

void log_msg(enum log_level lvl, const char *qid, const char *fmt, ...)
{
	struct line l;
	char text[LOG_LINE_MAX];
	va_list ap;

	if (!enabled(lvl))
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	begin(&l, lvl, qid);
	if (lg.format == LOG_FORMAT_JSON) {
		puts_(&l, ",\"msg\":");
		put_json_str(&l, text);
	} else {
		put_text(&l, text);
	}
	emit(&l, lvl);
}

void log_eventv(enum log_level lvl, const char *qid, va_list ap)
{
	struct line l;
	const char *k, *v;
	int first = 1;

	if (!enabled(lvl))
		return;
	begin(&l, lvl, qid);
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (v == NULL)
			continue;
		if (lg.format == LOG_FORMAT_JSON) {
			puts_(&l, ",");
			put_json_str(&l, k);
			puts_(&l, ":");
			put_json_str(&l, v);
		} else {
			if (!first)
				puts_(&l, ", ");
			put_text(&l, k);
			puts_(&l, "=");
			put_text(&l, v);
		}
		first = 0;
	}
	emit(&l, lvl);
}

void log_event(enum log_level lvl, const char *qid, ...)
{
	va_list ap;

	va_start(ap, qid);
	log_eventv(lvl, qid, ap);
	va_end(ap);
}
