/* Logging: Postfix-style "QID: key=value, key=value" lines or one JSON
 * object per line, to stderr, syslog (facility mail) or the journal. */
#ifndef STSRELAY_LOG_H
#define STSRELAY_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARNING, LOG_LVL_ERROR, LOG_LVL_FATAL };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/*
 * Where lines go (config key log_target):
 *  - STDERR: "2026-11-23T16:05:26.123Z HOST stsrelay/smtpd[PID]: text", one
 *    write(2) per line: the layout of a syslog file with RFC 3339 times, so
 *    pflogsumm reads it as it is.
 *  - SYSLOG: RFC 3164 datagrams "<PRI>Nov 23 16:05:26 stsrelay/smtpd[PID]: text"
 *    to /dev/log (what syslog(3) sends, with the program name per line),
 *    facility mail. No syslog socket: stderr instead, said once.
 *  - JOURNAL: journald's native protocol (SYSLOG_IDENTIFIER per line,
 *    PRIORITY, SYSLOG_FACILITY=2, STSRELAY_QUEUE_ID); without the journal
 *    socket, stderr lines with an sd-daemon(3) "<N>" priority prefix and
 *    no time or pid (journald adds both).
 * SYSLOG and JOURNAL: warnings and errors also go to stderr when it is a
 * terminal, so a start failure is seen where the command was typed.
 */
enum log_target { LOG_TARGET_STDERR, LOG_TARGET_SYSLOG, LOG_TARGET_JOURNAL };

/* The daemon's parts, Postfix's program names: "stsrelay/master",
 * "stsrelay/smtpd", "stsrelay/qmgr", "stsrelay/smtp", "stsrelay/pickup",
 * "stsrelay/tlsrpt". */
enum log_component {
	LOG_C_MASTER,
	LOG_C_SMTPD,
	LOG_C_QMGR,
	LOG_C_SMTP,
	LOG_C_PICKUP,
	LOG_C_TLSRPT,
};

/* Process-wide setup; safe to call again (reload). ident: the program name
 * ("stsrelay"); with components (the daemon) each line is named
 * "ident/component" by the code that wrote it, else every line is "ident".
 * Default before any call: text, stderr, "stsrelay", no components.
 * STSRELAY_DEBUG=1 in the environment enables debug lines.
 * Test-only: STSRELAY_SYSLOG_SOCKET and STSRELAY_JOURNAL_SOCKET replace
 * /dev/log and /run/systemd/journal/socket. */
void log_setup(const char *ident, enum log_format format, enum log_target target);
void log_use_components(int on);

/* The target the daemon uses when the config names none: JOURNAL when
 * systemd connected stderr to the journal ($JOURNAL_STREAM names stderr's
 * device and inode, see systemd.exec(5)), else STDERR. */
enum log_target log_default_target(void);

/* Every file that logs names its component before including this header:
 *   #define LOG_COMPONENT LOG_C_SMTPD
 * (LOG_C_MASTER when it does not). */
#ifndef LOG_COMPONENT
#define LOG_COMPONENT LOG_C_MASTER
#endif

/* A free-text line about a message (qid may be NULL):
 *   text: "warning: QID: text" (after the target's prefix)
 *   json: {"time":..,"level":"warning","process":"stsrelay/smtp","pid":42,
 *          "queue_id":"QID","msg":"text"} */
void log_c(enum log_component comp, enum log_level lvl, const char *qid, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define log_msg(lvl, qid, ...) log_c(LOG_COMPONENT, (lvl), (qid), __VA_ARGS__)

/*
 * A structured event: typed fields, then LF_END. Text keeps Postfix's
 * "key=value, key=value" (the order given); JSON gives each value its type.
 *   LF_STR(k, s)      k=s                 "k":"s"       (NULL s: field left out)
 *   LF_ADDR(k, a)     k=<a>               "k":"a"
 *   LF_INT(k, n)      k=n                 "k":n
 *   LF_INT_OPT(k, n)  as LF_INT; left out when n <= 0
 *   LF_MS(k, ms)      k=0.8 (seconds)     "k":0.812
 *   LF_STATUS(s, r)   status=s (r)        "status":"s","reason":"r"
 *   LF_NOTE(t)        " (t)" after the previous field, text only
 */
enum log_field_type {
	LOG_F_END,
	LOG_F_STR,
	LOG_F_ADDR,
	LOG_F_INT,
	LOG_F_INT_OPT,
	LOG_F_MS,
	LOG_F_STATUS,
	LOG_F_NOTE,
};
#define LF_STR(k, s) LOG_F_STR, (const char *)(k), (const char *)(s)
#define LF_ADDR(k, a) LOG_F_ADDR, (const char *)(k), (const char *)(a)
#define LF_INT(k, n) LOG_F_INT, (const char *)(k), (long long)(n)
#define LF_INT_OPT(k, n) LOG_F_INT_OPT, (const char *)(k), (long long)(n)
#define LF_MS(k, ms) LOG_F_MS, (const char *)(k), (long long)(ms)
#define LF_STATUS(s, r) LOG_F_STATUS, (const char *)(s), (const char *)(r)
#define LF_NOTE(t) LOG_F_NOTE, (const char *)(t)
#define LF_END LOG_F_END

void log_fields_c(enum log_component comp, enum log_level lvl, const char *qid, ...);
#define log_fields(lvl, qid, ...) log_fields_c(LOG_COMPONENT, (lvl), (qid), __VA_ARGS__)

#define log_debug(...) log_msg(LOG_LVL_DEBUG, NULL, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, NULL, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, NULL, __VA_ARGS__)

#endif
