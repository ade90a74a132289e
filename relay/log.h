/* Logging: Postfix-style "QID: key=value, key=value" lines on stderr (and
 * syslog when asked), or the same fields as one JSON object per line. */
#ifndef STSRELAY_LOG_H
#define STSRELAY_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARNING, LOG_LVL_ERROR, LOG_LVL_FATAL };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Process-wide setup; safe to call again on reload. Default: text, stderr,
 * ident "stsrelay", info level (STSRELAY_DEBUG=1 in the environment enables
 * debug lines). */
void log_setup(const char *ident, enum log_format format, int use_syslog);

/* A free-text line about a message (qid may be NULL):
 *   text: "2026-11-23T16:05:26.123Z stsrelay[42]: warning: QID: text"
 *   json: {"time":..,"level":"warning","queue_id":"QID","msg":"text"} */
void log_msg(enum log_level lvl, const char *qid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A structured event: key/value string pairs ending with a NULL key; a NULL
 * value skips that pair.  text: "QID: to=<a@b>, relay=mx[1.2.3.4]:25, status=sent (250 ok)"
 *   json: {"time":..,"level":"info","queue_id":"QID","to":"<a@b>",...} */
void log_event(enum log_level lvl, const char *qid, ...) __attribute__((sentinel));
void log_eventv(enum log_level lvl, const char *qid, va_list ap);

#define log_debug(...) log_msg(LOG_LVL_DEBUG, NULL, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, NULL, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, NULL, __VA_ARGS__)

#endif
