/* TLS-RPT recording: one append-only, checksummed line per delivery session
 * in spool_dir/tlsrpt/DAY/sessions, batched fdatasync, the sent ledger and pruning. */
#define LOG_COMPONENT LOG_C_TLSRPT /* program name in logs, see relay/core/log.h */
#include "sts/tlsrpt/tlsrpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <openssl/evp.h>

#include "relay/core/clock.h"
#include "relay/core/fs.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"

/* Crash behaviour (also in the README): a session line reaches the kernel
 * with one write() before tlsrpt_record() returns, so killing the process
 * loses nothing that was recorded. The file is fdatasync'd at most once a
 * second; a power loss or kernel crash can lose the sessions recorded in
 * that last second (and leave a torn last line, which fails its CRC and is
 * skipped). No line is ever rewritten, so nothing can be counted twice. */

#define TLSRPT_LINE_MAX 12288
#define TLSRPT_SYNC_MS 1000
#define TLSRPT_PATH_MAX 1200
#define KNOWN_POLICIES 16 /* policy files known to exist for the current day */

/* ---- days ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil), so no timezone or libc quirk is involved. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

void tlsrpt_day_of(int64_t t, char out[TLSRPT_DAY_LEN + 1])
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	snprintf(out, TLSRPT_DAY_LEN + 1, "%04d-%02d-%02d", (tm.tm_year + 1900) % 10000,
		 tm.tm_mon + 1, tm.tm_mday);
}

int tlsrpt_day_parse(const char *day, int64_t *start)
{
	static const unsigned mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	unsigned y = 0, m, d, i;

	if (day == NULL || strlen(day) != TLSRPT_DAY_LEN || day[4] != '-' || day[7] != '-')
		return -1;
	for (i = 0; i < TLSRPT_DAY_LEN; i++)
		if (i != 4 && i != 7 && (day[i] < '0' || day[i] > '9'))
			return -1;
	for (i = 0; i < 4; i++)
		y = y * 10 + (unsigned)(day[i] - '0');
	m = (unsigned)(day[5] - '0') * 10 + (unsigned)(day[6] - '0');
	d = (unsigned)(day[8] - '0') * 10 + (unsigned)(day[9] - '0');
	if (y < 1970 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
		return -1;
	if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return -1;
	*start = days_from_civil(y, m, d) * 86400;
	return 0;
}

/* ---- the line format ----
 * "T2 when domain policy mode max_age mx,mx phash result sip mxhost mxip reason crc\n"
 * with TAB separators; "-" = empty; crc = CRC-32 (hex) of everything before
 * it, the TAB in front of it included. policy is "sts", "tlsa" or "none";
 * an sts line with mode "-" has no policy (TXT seen, policy failed); a
 * tlsa line has mode and max_age "-" and the MX host as its mx list;
 * phash names the day's policy-HASH file holding the policy text (or the
 * TLSA records; "-": none). Lines of the older "T1" format (no phash) are
 * still read. */

void tlsrpt_policy_hash(const char *text, size_t len, char out[TLSRPT_POLICY_HASH_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int i;

	if (EVP_Digest(text, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 8) {
		/* cannot happen with a working libcrypto; "-" keeps the line valid */
		snprintf(out, TLSRPT_POLICY_HASH_LEN + 1, "-");
		return;
	}
	for (i = 0; i < TLSRPT_POLICY_HASH_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Appends s as one field: printable ASCII only (TAB, controls, non-ASCII
 * and, for lists, ',' become '?'); "" and NULL become "-". */
static int put_field(char *buf, size_t len, size_t *o, const char *s, bool lower, size_t max)
{
	size_t i;

	if (*o + 2 > len)
		return -1;
	if (*o > 0)
		buf[(*o)++] = '\t';
	if (s == NULL || *s == '\0' || strcmp(s, "-") == 0) {
		buf[(*o)++] = '-';
		return 0;
	}
	for (i = 0; s[i] != '\0' && i < max; i++) {
		unsigned char c = (unsigned char)s[i];

		if (*o + 1 >= len)
			return -1;
		if (c < 0x20 || c > 0x7e)
			c = '?';
		if (lower && c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		buf[(*o)++] = (char)c;
	}
	return 0;
}

int tlsrpt_line_format(const struct tlsrpt_session *s, int64_t when, char *buf, size_t len)
{
	char num[32], domain[256];
	size_t o = 0, dl;
	uLong crc;
	bool sts = s->policy != NULL || s->sts_published;
	const char *ptype = s->tlsa ? "tlsa" : sts ? "sts" : "none";

	if (s->domain == NULL || s->domain[0] == '\0' ||
	    (unsigned)s->result >= SMTP_TLS_RESULT_COUNT)
		return -1;
	dl = strlen(s->domain);
	if (dl >= sizeof(domain))
		return -1;
	memcpy(domain, s->domain, dl + 1);
	if (dl > 1 && domain[dl - 1] == '.')
		domain[dl - 1] = '\0';
	snprintf(num, sizeof(num), "%" PRId64, when);
	if (put_field(buf, len, &o, "T2", false, 2) != 0 ||
	    put_field(buf, len, &o, num, false, 32) != 0 ||
	    put_field(buf, len, &o, domain, true, 253) != 0 ||
	    put_field(buf, len, &o, ptype, false, 4) != 0)
		return -1;
	if (s->tlsa) {
		char h[TLSRPT_POLICY_HASH_LEN + 1] = "-";

		if (s->tlsa_text != NULL && s->tlsa_text_len > 0)
			tlsrpt_policy_hash(s->tlsa_text, s->tlsa_text_len, h);
		if (put_field(buf, len, &o, NULL, false, 0) != 0 ||
		    put_field(buf, len, &o, NULL, false, 0) != 0 ||
		    put_field(buf, len, &o, s->mx_host, true, 253) != 0 ||
		    put_field(buf, len, &o, h, false, TLSRPT_POLICY_HASH_LEN) != 0)
			return -1;
	} else if (s->policy != NULL) {
		size_t i;

		snprintf(num, sizeof(num), "%" PRIu32, s->policy->max_age);
		if (put_field(buf, len, &o, sts_policy_mode_name(s->policy->mode), false, 16) !=
			    0 ||
		    put_field(buf, len, &o, num, false, 32) != 0)
			return -1;
		if (o + 2 > len)
			return -1;
		buf[o++] = '\t';
		if (s->policy->mx_count == 0)
			buf[o++] = '-';
		for (i = 0; i < s->policy->mx_count; i++) {
			const char *mx = sts_policy_mx(s->policy, i);
			size_t k;

			if (i > 0) {
				if (o + 1 >= len)
					return -1;
				buf[o++] = ',';
			}
			for (k = 0; mx[k] != '\0'; k++) {
				unsigned char c = (unsigned char)mx[k];

				if (o + 1 >= len)
					return -1;
				buf[o++] = (c < 0x21 || c > 0x7e || c == ',') ? '?' : (char)c;
			}
		}
		if (s->policy_text != NULL) {
			char h[TLSRPT_POLICY_HASH_LEN + 1];

			tlsrpt_policy_hash(s->policy_text, s->policy_text_len, h);
			if (put_field(buf, len, &o, h, false, TLSRPT_POLICY_HASH_LEN) != 0)
				return -1;
		} else if (put_field(buf, len, &o, NULL, false, 0) != 0) {
			return -1;
		}
	} else {
		if (put_field(buf, len, &o, NULL, false, 0) != 0 ||
		    put_field(buf, len, &o, NULL, false, 0) != 0 ||
		    put_field(buf, len, &o, NULL, false, 0) != 0 ||
		    put_field(buf, len, &o, NULL, false, 0) != 0)
			return -1;
	}
	if (put_field(buf, len, &o, smtp_tls_result_name(s->result), false, 64) != 0 ||
	    put_field(buf, len, &o, s->sending_mta_ip, true, 64) != 0 ||
	    put_field(buf, len, &o, s->mx_host, true, 253) != 0 ||
	    put_field(buf, len, &o, s->mx_ip, true, 64) != 0 ||
	    put_field(buf, len, &o, s->reason, false, 255) != 0)
		return -1;
	if (o + 1 + 8 + 1 + 1 > len)
		return -1;
	buf[o++] = '\t';
	crc = crc32(0L, (const Bytef *)buf, (uInt)o);
	snprintf(buf + o, len - o, "%08lx\n", (unsigned long)crc);
	return (int)(o + 9);
}

/* ---- files ---- */

/* mkdir that tolerates an existing directory; a new one is made durable
 * by syncing its parent. */
static int mkdir_durable(const char *path, const char *parent)
{
	if (mkdir(path, 0700) == 0)
		return core_fs_fsync_dir(parent);
	return errno == EEXIST ? 0 : -1;
}

static int day_dir(const char *spool_dir, const char *day, bool create, char *out, size_t len)
{
	char base[TLSRPT_PATH_MAX];
	int n;

	n = snprintf(base, sizeof(base), "%s/tlsrpt", spool_dir);
	if (n < 0 || (size_t)n >= sizeof(base))
		return -1;
	n = snprintf(out, len, "%s/%s", base, day);
	if (n < 0 || (size_t)n >= len)
		return -1;
	if (!create)
		return 0;
	if (mkdir_durable(base, spool_dir) != 0 || mkdir_durable(out, base) != 0)
		return -1;
	return 0;
}

struct tlsrpt_store {
	char spool_dir[TLSRPT_PATH_MAX];
	char day[TLSRPT_DAY_LEN + 1];
	int fd;       /* the current day's sessions file, or -1 */
	bool dirty;   /* written since the last sync started */
	bool need_nl; /* a short write left a partial line: end it first */
	uv_loop_t *loop;
	uv_timer_t timer;
	uv_fs_t req;
	bool req_busy;
	int req_fd;     /* the descriptor the in-flight sync uses */
	int retired_fd; /* an old day's descriptor closed when that sync ends */
	bool closing;
	bool timer_open;
	char known[KNOWN_POLICIES][TLSRPT_POLICY_HASH_LEN + 1]; /* policy files of day */
	size_t nknown, known_next;
};

static void store_maybe_free(struct tlsrpt_store *st)
{
	if (st->closing && !st->timer_open && !st->req_busy)
		free(st);
}

static void on_synced(uv_fs_t *req)
{
	struct tlsrpt_store *st = req->data;

	if (req->result < 0)
		log_error("tlsrpt: fdatasync of the session file: %s",
			  uv_strerror((int)req->result));
	uv_fs_req_cleanup(req);
	st->req_busy = false;
	if (st->retired_fd >= 0) {
		close(st->retired_fd);
		st->retired_fd = -1;
	}
	store_maybe_free(st);
}

static void on_timer(uv_timer_t *t)
{
	struct tlsrpt_store *st = t->data;

	if (!st->dirty || st->req_busy || st->fd < 0)
		return;
	st->dirty = false;
	st->req.data = st;
	st->req_fd = st->fd;
	if (uv_fs_fdatasync(st->loop, &st->req, st->fd, on_synced) == 0)
		st->req_busy = true;
	else
		st->dirty = true;
}

static void on_timer_closed(uv_handle_t *h)
{
	struct tlsrpt_store *st = h->data;

	st->timer_open = false;
	store_maybe_free(st);
}

int tlsrpt_store_open(const char *spool_dir, uv_loop_t *loop, struct tlsrpt_store **out, char *err,
		      size_t errlen)
{
	struct tlsrpt_store *st;
	char base[TLSRPT_PATH_MAX];

	*out = NULL;
	if (strlen(spool_dir) >= sizeof(st->spool_dir) - 64) {
		snprintf(err, errlen, "spool_dir too long");
		return -1;
	}
	/* the spool itself (a fresh test spool); the queue usually made it */
	if (mkdir(spool_dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", spool_dir, strerror(errno));
		return -1;
	}
	snprintf(base, sizeof(base), "%s/tlsrpt", spool_dir);
	if (mkdir_durable(base, spool_dir) != 0) {
		snprintf(err, errlen, "%s: %s", base, strerror(errno));
		return -1;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(st->spool_dir, sizeof(st->spool_dir), "%s", spool_dir);
	st->fd = -1;
	st->retired_fd = -1;
	st->req_fd = -1;
	st->loop = loop;
	if (loop != NULL) {
		if (uv_timer_init(loop, &st->timer) != 0) {
			free(st);
			snprintf(err, errlen, "cannot create the sync timer");
			return -1;
		}
		st->timer.data = st;
		st->timer_open = true;
		uv_timer_start(&st->timer, on_timer, TLSRPT_SYNC_MS, TLSRPT_SYNC_MS);
		uv_unref((uv_handle_t *)&st->timer); /* never keeps the loop alive alone */
	}
	*out = st;
	return 0;
}

/* Leaves the current file: made durable now (once a day), closed unless a
 * threadpool sync still uses the descriptor. */
static void retire_fd(struct tlsrpt_store *st)
{
	if (st->fd < 0)
		return;
	if (fdatasync(st->fd) != 0)
		log_error("tlsrpt: fdatasync: %s", strerror(errno));
	if (st->req_busy && st->req_fd == st->fd && st->retired_fd < 0)
		st->retired_fd = st->fd;
	else
		close(st->fd);
	st->fd = -1;
	st->dirty = false;
	st->day[0] = '\0';
	st->nknown = st->known_next = 0;
}

/* Makes sure the day's policy-HASH file holds the policy text before a
 * line names it: written once per policy and day (temp file, fsync,
 * rename, directory fsync), so this blocking write on the loop is as rare
 * as the policy cache's. A failure only costs the report the policy's
 * original lines (they are rebuilt). */
static void ensure_policy_file(struct tlsrpt_store *st, const char *text, size_t text_len)
{
	char h[TLSRPT_POLICY_HASH_LEN + 1], dir[TLSRPT_PATH_MAX], name[32],
		path[TLSRPT_PATH_MAX + 40];
	size_t i;

	tlsrpt_policy_hash(text, text_len, h);
	for (i = 0; i < st->nknown; i++)
		if (strcmp(st->known[i], h) == 0)
			return;
	if (day_dir(st->spool_dir, st->day, false, dir, sizeof(dir)) != 0)
		return;
	snprintf(name, sizeof(name), "policy-%s", h);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (access(path, F_OK) != 0 && core_fs_write_atomic(dir, name, text, text_len, 0600) != 0) {
		log_warn("tlsrpt: cannot store the policy text %s: %s", path, strerror(errno));
		return;
	}
	memcpy(st->known[st->known_next], h, sizeof(h));
	st->known_next = (st->known_next + 1) % KNOWN_POLICIES;
	if (st->nknown < KNOWN_POLICIES)
		st->nknown++;
}

static int open_day(struct tlsrpt_store *st, const char *day)
{
	char dir[TLSRPT_PATH_MAX], path[TLSRPT_PATH_MAX + 16];
	struct stat sb;
	char last;
	bool created;

	if (day_dir(st->spool_dir, day, true, dir, sizeof(dir)) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/sessions", dir);
	created = access(path, F_OK) != 0;
	st->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (st->fd < 0)
		return -1;
	if (created && core_fs_fsync_dir(dir) != 0)
		log_warn("tlsrpt: fsync %s: %s", dir, strerror(errno));
	memcpy(st->day, day, sizeof(st->day));
	/* A torn last line (crash mid-write) must not swallow the next one. */
	st->need_nl = fstat(st->fd, &sb) == 0 && sb.st_size > 0 &&
		      pread(st->fd, &last, 1, sb.st_size - 1) == 1 && last != '\n';
	return 0;
}

int tlsrpt_record(struct tlsrpt_store *st, const struct tlsrpt_session *s)
{
	char line[TLSRPT_LINE_MAX];
	char day[TLSRPT_DAY_LEN + 1];
	int64_t when = s->when > 0 ? s->when : clock_now();
	int n = tlsrpt_line_format(s, when, line, sizeof(line));
	size_t done;

	if (n < 0) {
		log_warn("tlsrpt: session for %s not recordable (bad or too long fields)",
			 s->domain ? s->domain : "?");
		return -1;
	}
	if (st->closing)
		return -1;
	tlsrpt_day_of(when, day);
	if (st->fd >= 0 && strcmp(day, st->day) != 0)
		retire_fd(st);
	if (st->fd < 0 && open_day(st, day) != 0) {
		log_error("tlsrpt: cannot open the session file for %s: %s", day, strerror(errno));
		return -1;
	}
	if (s->tlsa && s->tlsa_text != NULL && s->tlsa_text_len > 0)
		ensure_policy_file(st, s->tlsa_text, s->tlsa_text_len);
	else if (!s->tlsa && s->policy != NULL && s->policy_text != NULL)
		ensure_policy_file(st, s->policy_text, s->policy_text_len);
	if (st->need_nl) {
		if (core_fs_write_all(st->fd, "\n", 1, NULL) != 0) {
			log_error("tlsrpt: write: %s", strerror(errno));
			return -1;
		}
		st->need_nl = false;
	}
	if (core_fs_write_all(st->fd, line, (size_t)n, &done) != 0) {
		st->need_nl = done > 0; /* a torn line: end it before the next */
		log_error("tlsrpt: write: %s", strerror(errno));
		return -1;
	}
	st->dirty = true;
	metrics_inc(METRICS_TLS_SESSIONS, smtp_tls_result_name(s->result));
	return 0;
}

int tlsrpt_store_sync(struct tlsrpt_store *st)
{
	if (st == NULL || st->fd < 0 || !st->dirty)
		return 0;
	st->dirty = false;
	return fdatasync(st->fd);
}

void tlsrpt_store_close(struct tlsrpt_store *st)
{
	if (st == NULL || st->closing)
		return;
	retire_fd(st);
	st->closing = true;
	if (st->timer_open)
		uv_close((uv_handle_t *)&st->timer, on_timer_closed);
	store_maybe_free(st);
}

/* ---- the sent ledger ---- */

static bool ledger_field_ok(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 1024)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* Ledgers: one "domain TAB rua" line per entry, in DAY/sent (copies sent)
 * and DAY/skipped (mailto: copies skipped for want of a DKIM key). */
static bool ledger_contains(const char *spool_dir, const char *day, const char *file,
			    const char *domain, const char *rua)
{
	char dir[TLSRPT_PATH_MAX], path[TLSRPT_PATH_MAX + 16], want[2100], line[2100];
	bool found = false;
	FILE *f;

	if (!ledger_field_ok(domain) || !ledger_field_ok(rua) ||
	    day_dir(spool_dir, day, false, dir, sizeof(dir)) != 0)
		return false;
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	snprintf(want, sizeof(want), "%s\t%s\n", domain, rua);
	f = fopen(path, "re");
	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strcmp(line, want) == 0;
	fclose(f);
	return found;
}

static int ledger_add(const char *spool_dir, const char *day, const char *file, const char *domain,
		      const char *rua)
{
	char dir[TLSRPT_PATH_MAX], path[TLSRPT_PATH_MAX + 16], line[2100];
	bool created;
	int fd, n, rc = -1;

	if (!ledger_field_ok(domain) || !ledger_field_ok(rua) ||
	    day_dir(spool_dir, day, true, dir, sizeof(dir)) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	n = snprintf(line, sizeof(line), "%s\t%s\n", domain, rua);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -1;
	created = access(path, F_OK) != 0;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	/* A torn line from a crash only makes that one entry unreadable (so
	 * it is sent again): lines are matched whole, with their newline. */
	if (core_fs_write_all(fd, "\n", 1, NULL) == 0 &&
	    core_fs_write_all(fd, line, (size_t)n, NULL) == 0 && fdatasync(fd) == 0)
		rc = 0;
	close(fd);
	if (rc == 0 && created && core_fs_fsync_dir(dir) != 0)
		rc = -1;
	return rc;
}

bool tlsrpt_sent_contains(const char *spool_dir, const char *day, const char *domain,
			  const char *rua)
{
	return ledger_contains(spool_dir, day, "sent", domain, rua);
}

int tlsrpt_sent_add(const char *spool_dir, const char *day, const char *domain, const char *rua)
{
	return ledger_add(spool_dir, day, "sent", domain, rua);
}

int tlsrpt_skipped_add(const char *spool_dir, const char *day, const char *domain, const char *rua)
{
	if (ledger_contains(spool_dir, day, "skipped", domain, rua))
		return 0;
	return ledger_add(spool_dir, day, "skipped", domain, rua);
}

void tlsrpt_skipped_foreach(const char *spool_dir, const char *day, const char *domain,
			    void (*fn)(void *arg, const char *rua), void *arg)
{
	char dir[TLSRPT_PATH_MAX], path[TLSRPT_PATH_MAX + 16], line[2100];
	size_t dl = strlen(domain);
	FILE *f;

	if (day_dir(spool_dir, day, false, dir, sizeof(dir)) != 0)
		return;
	snprintf(path, sizeof(path), "%s/skipped", dir);
	f = fopen(path, "re");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t n = strlen(line);

		if (n < dl + 3 || line[n - 1] != '\n' || strncmp(line, domain, dl) != 0 ||
		    line[dl] != '\t')
			continue; /* another domain, or a torn line */
		line[n - 1] = '\0';
		if (!tlsrpt_sent_contains(spool_dir, day, domain, line + dl + 1))
			fn(arg, line + dl + 1);
	}
	fclose(f);
}

/* ---- retention ---- */

static int remove_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char sub[TLSRPT_PATH_MAX + 300];
	int rc = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		if (unlink(sub) != 0 && errno != ENOENT)
			rc = -1;
	}
	closedir(d);
	if (rmdir(path) != 0)
		rc = -1;
	return rc;
}

int tlsrpt_prune(const char *spool_dir, int64_t now, uint64_t retention_s)
{
	char base[TLSRPT_PATH_MAX], path[TLSRPT_PATH_MAX + 300];
	struct dirent *e;
	DIR *d;
	int removed = 0;

	snprintf(base, sizeof(base), "%s/tlsrpt", spool_dir);
	d = opendir(base);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((e = readdir(d)) != NULL) {
		int64_t start;

		if (tlsrpt_day_parse(e->d_name, &start) != 0)
			continue;
		if (start + 86400 + (int64_t)retention_s > now)
			continue;
		snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
		if (remove_tree(path) == 0)
			removed++;
		else
			log_warn("tlsrpt: cannot remove %s: %s", path, strerror(errno));
	}
	closedir(d);
	/* A crash may bring a pruned day back; the next prune removes it. */
	if (removed > 0 && core_fs_fsync_dir(base) != 0)
		log_warn("tlsrpt: removals in %s not durable: %s", base, strerror(errno));
	return removed;
}
