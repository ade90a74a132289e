/* The sendmail(1)-compatible front end: reads a message (or an SMTP dialogue
 * with -bs) from stdin and writes it durably into the spool's maildrop/.
 *
 * Privilege model (Postfix's postdrop): the binary may be installed setgid
 * to the group stsrelay-drop, which can write (not read) maildrop/. The group
 * is dropped from the effective set at start; the configuration file is
 * read with the caller's own rights (like Postfix reads main.cf); the group
 * is taken up again only around creating, renaming, syncing or removing the
 * drop file, and no file named by the caller is opened while it is held.
 * The only thing a caller can do with it is what stsrelay-drop can do
 * anyway: put files into a maildrop/ (including that of a spool named by a
 * config file of the caller's choosing), which the daemon validates and
 * attributes to the file's owner, i.e. the real caller. */
#include "relay/cli/cli.h"
#include "relay/core/clock.h"
#include "relay/cli/commands.h"
#include "relay/core/config.h"
#include "relay/core/b64.h"
#include "relay/core/buf.h"
#include "relay/daemon/relay.h"
#include "queue/queue.h"
#include "smtp/addrlist.h"
#include "smtp/address.h"
#include "smtp/command.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define PROG "sendmail"
#define DROP_GROUP RELAY_DROP_GROUP
/* Longest piece of a line stored as one line. Longer input lines are broken
 * by inserting CRLF SPACE, as Postfix's smtp_line_length_limit does, so the
 * stored message never exceeds RFC 5322's 998 octets per line. */
#define CHUNK_MAX 990
#define HEADERS_MAX (1024 * 1024) /* whole header section */
#define HEADER_FIELDS_MAX 10000
#define NAME_MAX_BYTES 200 /* full name in an added From: */

/* Every address the parser can return must fit in the envelope. */
_Static_assert(ADDRLIST_ADDR_MAX == QUEUE_ADDR_MAX, "address buffer sizes differ");

/* ---- privileges ---- */

static struct {
	gid_t real, drop;
	bool setgid_mode;
} priv;

static int priv_init(void)
{
	gid_t r, e, s;

	if (getresgid(&r, &e, &s) != 0)
		return -1;
	priv.real = r;
	priv.drop = e;
	priv.setgid_mode = e != r;
	if (priv.setgid_mode && setegid(r) != 0)
		return -1;
	return 0;
}

static int priv_raise(void)
{
	if (!priv.setgid_mode)
		return 0;
	return setegid(priv.drop);
}

static void priv_lower(void)
{
	/* Cannot fail for a process that was able to raise; abort if it does,
	 * rather than run on with the group. */
	if (priv.setgid_mode && setegid(priv.real) != 0)
		abort();
}

/* Gives the group up for good (saved set-group-ID included). */
static void priv_drop_all(void)
{
	if (priv.setgid_mode && setresgid(priv.real, priv.real, priv.real) != 0)
		abort();
	priv.setgid_mode = false;
}

/* ---- stdin, line by line, bounded ---- */

struct reader {
	int fd;
	char buf[65536];
	size_t pos, end;
	bool eof;
};

/* Reads more input; -1 on error, 0 at end of input, else bytes read. */
static ssize_t reader_fill(struct reader *r)
{
	ssize_t n;

	if (r->pos > 0) {
		memmove(r->buf, r->buf + r->pos, r->end - r->pos);
		r->end -= r->pos;
		r->pos = 0;
	}
	/* Only called with at most one unconsumed byte, so there is room. */
	do
		n = read(r->fd, r->buf + r->end, sizeof(r->buf) - r->end);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		r->eof = true;
	if (n > 0)
		r->end += (size_t)n;
	return n;
}

/* The next line or piece of a line, without its line end (LF or CRLF).
 * *complete is false when the line goes on past cap bytes. Returns 1, 0 at
 * end of input, -1 on a read error. */
static int reader_line(struct reader *r, char *out, size_t cap, size_t *len, bool *complete)
{
	size_t n = 0;

	for (;;) {
		char c;

		if (r->pos == r->end) {
			if (r->eof)
				break;
			if (reader_fill(r) < 0)
				return -1;
			continue;
		}
		c = r->buf[r->pos];
		if (c == '\n') {
			r->pos++;
			if (n > 0 && out[n - 1] == '\r')
				n--;
			*len = n;
			*complete = true;
			return 1;
		}
		if (n == cap) {
			/* A CRLF right at the limit still ends this line. */
			while (c == '\r' && r->end - r->pos < 2 && !r->eof)
				if (reader_fill(r) < 0)
					return -1;
			if (c == '\r' && r->end - r->pos >= 2 && r->buf[r->pos + 1] == '\n') {
				r->pos += 2;
				*complete = true;
			} else {
				*complete = false;
			}
			*len = n;
			return 1;
		}
		out[n++] = c;
		r->pos++;
	}
	if (n == 0)
		return 0;
	if (out[n - 1] == '\r')
		n--;
	*len = n;
	*complete = true;
	return 1;
}

/* A message as a sequence of line pieces: plain stdin (a lone "." ends it
 * unless -i), or SMTP DATA (dot-terminated, dot-unstuffed). */
struct line_src {
	struct reader *rd;
	bool smtp;
	bool dot_ends;
	bool midline; /* the previous piece did not end its line */
	bool done;
	bool cut_short; /* SMTP input ended before the final "." */
};

/* Returns 1 with a piece in buf (*cont: it continues the previous line),
 * 0 at the end of the message, -1 on a read error or an SMTP message cut short. */
static int src_next(struct line_src *s, char *buf, size_t *len, bool *cont)
{
	bool complete;
	int rc;

	if (s->done)
		return 0;
	rc = reader_line(s->rd, buf, CHUNK_MAX, len, &complete);
	if (rc <= 0) {
		s->done = true;
		if (rc == 0 && s->smtp) {
			s->cut_short = true;
			return -1;
		}
		return rc;
	}
	*cont = s->midline;
	if (!*cont && (s->smtp || s->dot_ends) && complete && *len == 1 && buf[0] == '.') {
		s->done = true;
		return 0;
	}
	if (!*cont && s->smtp && *len > 0 && buf[0] == '.') {
		memmove(buf, buf + 1, *len - 1);
		(*len)--;
	}
	s->midline = !complete;
	return 1;
}

/* Reads to the end of the message, discarding (SMTP after an error). */
static void src_drain(struct line_src *s)
{
	char buf[CHUNK_MAX];
	size_t len;
	bool cont;

	while (src_next(s, buf, &len, &cont) > 0)
		;
}

/* ---- the caller ---- */

struct user {
	char login[64];
	uid_t uid;
	char fullname[NAME_MAX_BYTES + 1]; /* may be "" */
};

static int user_init(struct user *u, const char *fullname_opt)
{
	struct passwd *pw;
	const char *name = fullname_opt;
	size_t n;

	memset(u, 0, sizeof(*u));
	u->uid = getuid();
	errno = 0;
	pw = getpwuid(u->uid);
	if (pw == NULL || strlen(pw->pw_name) >= sizeof(u->login))
		return -1;
	snprintf(u->login, sizeof(u->login), "%s", pw->pw_name);
	/* Full name as Postfix picks it: -F, else $NAME, else the GECOS field
	 * up to its first comma. */
	if (name == NULL || *name == '\0')
		name = getenv("NAME");
	if ((name == NULL || *name == '\0') && pw->pw_gecos != NULL) {
		n = strcspn(pw->pw_gecos, ",");
		if (n > NAME_MAX_BYTES)
			n = NAME_MAX_BYTES;
		memcpy(u->fullname, pw->pw_gecos, n);
		u->fullname[n] = '\0';
		return 0;
	}
	if (name != NULL)
		snprintf(u->fullname, sizeof(u->fullname), "%s", name);
	return 0;
}

/* ---- addresses ---- */

/* "user" becomes "user@hostname", as Postfix appends $myorigin. Returns
 * -1 if the result does not fit or is not a valid mailbox. */
static int addr_qualify(const char *in, const struct config *cfg, char *out, size_t outlen)
{
	int n;

	if (strchr(in, '@') != NULL)
		n = snprintf(out, outlen, "%s", in);
	else
		n = snprintf(out, outlen, "%s@%s", in, cfg->hostname);
	if (n < 0 || (size_t)n >= outlen)
		return -1;
	return smtp_address_valid(out) == 0 ? 0 : -1;
}

/* What a refused local recipient is told (sendmail exits EX_NOUSER). */
#define LOCAL_REFUSED_WHY                                              \
	"local recipient refused: no alias_root in the configuration " \
	"(set alias_root = the address of the person who reads root's mail)"

/* A recipient as given: checked like addr_qualify, then a local one (no
 * domain, @localhost, root/postmaster@hostname: smtp/address.h) becomes
 * alias_root, or -2 when none is configured; -1: invalid. */
static int rcpt_resolve(const char *in, const struct config *cfg, char *out, size_t outlen)
{
	if (addr_qualify(in, cfg, out, outlen) != 0)
		return -1;
	switch (smtp_address_local(in, cfg->hostname, cfg->alias_root, out, outlen)) {
	case SMTP_LOCAL_REFUSED:
		return -2;
	case SMTP_LOCAL_REWRITTEN:
	case SMTP_NOT_LOCAL:
		break;
	}
	return 0;
}

static int rcpt_add(struct queue_envelope *env, const char *addr)
{
	size_t i;

	for (i = 0; i < env->nrcpts; i++)
		if (strcmp(env->rcpts[i].address, addr) == 0)
			return 0;
	return queue_envelope_add_rcpt(env, addr);
}

/* Sets an error of our own (the address itself is bad, or there are too
 * many) in the parser's error form, so both are reported alike. */
static void addr_err_set(struct addrlist_err *e, const char *text, const char *why)
{
	snprintf(e->text, sizeof(e->text), "%.*s", ADDRLIST_ERR_EXCERPT, text);
	e->why = why;
}

/* Adds every address of an RFC 5322 address-list (To/Cc/Bcc value, or a
 * command-line argument) to env, resolved (rcpt_resolve) and checked. Each
 * address is checked as the parser yields it, so the first problem in the
 * list is the one named, whether it is bad syntax or a bad address.
 * Returns 0, -1 (bad), or -2 (a local recipient without alias_root). */
static int addr_list_parse(const char *s, size_t len, const struct config *cfg,
			   struct queue_envelope *env, struct addrlist_err *e)
{
	struct addrlist_iter it;
	struct addrlist_addr a;
	char addr[QUEUE_ADDR_MAX];
	int rc;

	addrlist_begin(&it, s, len);
	for (;;) {
		rc = addrlist_next(&it, &a, e);
		if (rc <= 0)
			return rc;
		rc = rcpt_resolve(a.addr, cfg, addr, sizeof(addr));
		if (rc != 0) {
			addr_err_set(e, a.addr, rc == -2 ? LOCAL_REFUSED_WHY : "invalid address");
			return rc;
		}
		if (rcpt_add(env, addr) != 0) {
			addr_err_set(e, addr, "too many recipients");
			return -1;
		}
	}
}

/* ---- header section ---- */

struct hfield {
	size_t off, len; /* the whole field, CRLFs included, in headers.buf */
	size_t namelen;
};

struct headers {
	struct core_buf buf; /* at most HEADERS_MAX bytes */
	struct hfield *f;
	size_t n, fcap;
};

/* clang-format off: an initializer, not a block */
#define HEADERS_INIT                                   \
	{                                              \
		CORE_BUF_INIT(HEADERS_MAX), NULL, 0, 0 \
	}
/* clang-format on */

static void headers_free(struct headers *h)
{
	core_buf_free(&h->buf);
	free(h->f);
	h->f = NULL;
	h->n = 0;
	h->fcap = 0;
}

/* Length of the field name if the line starts a header field ("Name:"),
 * else 0. Whitespace before the colon is tolerated (RFC 822 obsolete form). */
static size_t header_name_len(const char *line, size_t len)
{
	size_t i = 0, name;

	while (i < len && line[i] > ' ' && line[i] < 127 && line[i] != ':')
		i++;
	name = i;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (name == 0 || i >= len || line[i] != ':')
		return 0;
	return name;
}

static bool field_is(const struct headers *h, size_t i, const char *name)
{
	size_t n = strlen(name);

	return h->f[i].namelen == n &&
	       strncasecmp(core_buf_str(&h->buf) + h->f[i].off, name, n) == 0;
}

static bool headers_have(const struct headers *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		if (field_is(h, i, name))
			return true;
	return false;
}

/* Value of field i: after the colon, up to the end of the field. */
static const char *field_value(const struct headers *h, size_t i, size_t *len)
{
	const char *start = core_buf_str(&h->buf) + h->f[i].off, *end = start + h->f[i].len;
	const char *colon = memchr(start, ':', h->f[i].len);

	*len = (size_t)(end - colon - 1);
	return colon + 1;
}

/* ---- output to the drop file, buffered and size-limited ---- */

struct out {
	struct queue_writer *w;
	char buf[65536];
	size_t len;
	uint64_t total, max;
	bool too_big;
};

static int out_flush(struct out *o)
{
	if (o->len > 0 && queue_writer_append(o->w, o->buf, o->len) != 0)
		return -1;
	o->len = 0;
	return 0;
}

/* Over the size limit, output is counted no more and discarded. */
static int out_put(struct out *o, const void *p, size_t n)
{
	if (o->too_big)
		return 0;
	if (n > o->max || o->total > o->max - n) {
		o->too_big = true;
		return 0;
	}
	o->total += n;
	if (n > sizeof(o->buf) - o->len && out_flush(o) != 0)
		return -1;
	if (n > sizeof(o->buf))
		return queue_writer_append(o->w, p, n);
	memcpy(o->buf + o->len, p, n);
	o->len += n;
	return 0;
}

static int out_str(struct out *o, const char *s)
{
	return out_put(o, s, strlen(s));
}

/* A full name as an RFC 5322 phrase: plain atoms, a quoted string, or
 * RFC 2047 encoded words when it is not ASCII. Control characters are
 * dropped, so -F can never add header lines. */
static void phrase_encode(const char *name, char *out, size_t outlen)
{
	static const char specials[] = "()<>[]:;@\\,.\"";
	char clean[NAME_MAX_BYTES + 1];
	size_t n = 0, i, o = 0;
	bool ascii = true, plain = true;

	for (i = 0; name[i] != '\0' && n < NAME_MAX_BYTES; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c == 0x7f)
			continue;
		if (c >= 0x80)
			ascii = false;
		if (strchr(specials, c) != NULL)
			plain = false;
		clean[n++] = (char)c;
	}
	while (n > 0 && clean[n - 1] == ' ')
		n--;
	clean[n] = '\0';
	out[0] = '\0';
	if (n == 0 || outlen < 4)
		return;
	if (ascii && plain) {
		snprintf(out, outlen, "%s", clean);
		return;
	}
	if (ascii) {
		out[o++] = '"';
		for (i = 0; i < n && o + 3 < outlen; i++) {
			if (clean[i] == '"' || clean[i] == '\\')
				out[o++] = '\\';
			out[o++] = clean[i];
		}
		out[o++] = '"';
		out[o] = '\0';
		return;
	}
	/* Encoded words of at most 45 input bytes (72 characters), split on
	 * UTF-8 character boundaries. */
	for (i = 0; i < n;) {
		size_t take = n - i, start = o;
		ssize_t enc;

		if (take > 45) {
			take = 45;
			while (take > 0 && ((unsigned char)clean[i + take] & 0xC0) == 0x80)
				take--;
			if (take == 0)
				take = 45;
		}
		if (o + 12 + 4 * ((take + 2) / 3) + 2 >= outlen)
			break;
		o += (size_t)snprintf(out + o, outlen - o, "%s=?UTF-8?B?", i ? " " : "");
		enc = core_b64_encode(clean + i, take, out + o, outlen - o);
		if (enc < 0) {
			out[start] = '\0'; /* cannot happen: the room was checked above */
			break;
		}
		o += (size_t)enc;
		out[o++] = '?';
		out[o++] = '=';
		out[o] = '\0';
		i += take;
	}
}

/* ---- one submission ---- */

struct sm {
	const struct config *cfg;
	const struct user *user;
	struct queue *q;
	bool extract;  /* -t */
	bool smtp;     /* -bs */
	bool dot_ends; /* neither -i nor -oi */
};

/* Opens the spool once. Root may create it on a fresh system (the group
 * then owns maildrop/ if it exists); anyone else needs it in place. */
static int sm_open_queue(struct sm *sm, char *why, size_t whylen)
{
	struct group *gr;
	long gid = -1;
	int rc, e;

	if (sm->q != NULL)
		return 0;
	if (getuid() == 0) {
		gr = getgrnam(DROP_GROUP);
		if (gr != NULL)
			gid = (long)gr->gr_gid;
	}
	if (priv_raise() != 0) {
		snprintf(why, whylen, "cannot take up the group " DROP_GROUP ": %s",
			 strerror(errno));
		return EX_OSERR;
	}
	rc = queue_open(sm->cfg->spool_dir, getuid() == 0, gid, &sm->q, why, whylen);
	e = errno;
	priv_lower();
	if (rc == 0)
		return 0;
	/* A spool this user may not enter is for the administrator to fix;
	 * anything else may pass (a spool being set up): the caller retries. */
	return cli_exit_for_errno(e, EX_TEMPFAIL);
}

/* Reads the header section from src into h. On return *pending holds the
 * first body line when the headers ended without an empty line. */
static int read_headers(struct sm *sm, struct line_src *src, struct headers *h, char *pending,
			size_t *pendlen, bool *have_pending, char *why, size_t whylen)
{
	char buf[CHUNK_MAX];
	size_t len;
	bool cont, first = true, skipping = false;
	int rc;

	*have_pending = false;
	for (;;) {
		rc = src_next(src, buf, &len, &cont);
		if (rc < 0) {
			snprintf(why, whylen, "%s",
				 src->cut_short ? "input ended before the final '.'"
						: "error reading the input");
			return EX_IOERR;
		}
		if (rc == 0)
			return 0;
		if (cont && skipping)
			continue;
		skipping = false;
		/* An mbox "From " line at the very start is not a header (Postfix
		 * drops it too). */
		if (first && !sm->smtp && !cont && len >= 5 && memcmp(buf, "From ", 5) == 0) {
			first = false;
			skipping = true;
			continue;
		}
		first = false;
		if (len == 0 && !cont)
			return 0;
		if (h->n > 0 && (cont || buf[0] == ' ' || buf[0] == '\t')) {
			if ((cont && core_buf_add(&h->buf, " ", 1) != 0) ||
			    core_buf_add(&h->buf, buf, len) != 0 ||
			    core_buf_add(&h->buf, "\r\n", 2) != 0)
				goto too_big;
			h->f[h->n - 1].len = core_buf_len(&h->buf) - h->f[h->n - 1].off;
			continue;
		}
		if (!cont && header_name_len(buf, len) > 0) {
			if (h->n == h->fcap) {
				size_t fcap = h->fcap ? h->fcap * 2 : 64;
				struct hfield *nf;

				if (h->n >= HEADER_FIELDS_MAX)
					goto too_big;
				nf = realloc(h->f, fcap * sizeof(*nf));
				if (nf == NULL)
					goto too_big;
				h->f = nf;
				h->fcap = fcap;
			}
			h->f[h->n].off = core_buf_len(&h->buf);
			h->f[h->n].namelen = header_name_len(buf, len);
			if (core_buf_add(&h->buf, buf, len) != 0 ||
			    core_buf_add(&h->buf, "\r\n", 2) != 0)
				goto too_big;
			h->f[h->n].len = core_buf_len(&h->buf) - h->f[h->n].off;
			h->n++;
			continue;
		}
		/* Not a header line: the body starts here. */
		memcpy(pending, buf, len);
		*pendlen = len;
		*have_pending = true;
		return 0;
	}
too_big:
	snprintf(why, whylen, "header section too large (limit %d bytes, %d fields)", HEADERS_MAX,
		 HEADER_FIELDS_MAX);
	return EX_DATAERR;
}

/* Recipients from To/Cc/Bcc (-t). */
static int extract_rcpts(struct sm *sm, const struct headers *h, struct queue_envelope *env,
			 char *why, size_t whylen)
{
	struct addrlist_err e;
	size_t i, vlen;
	const char *v;
	int rc;

	for (i = 0; i < h->n; i++) {
		if (!field_is(h, i, "to") && !field_is(h, i, "cc") && !field_is(h, i, "bcc"))
			continue;
		v = field_value(h, i, &vlen);
		rc = addr_list_parse(v, vlen, sm->cfg, env, &e);
		if (rc != 0) {
			snprintf(why, whylen, "%s: %s", e.text, e.why);
			return rc == -2 ? EX_NOUSER : EX_DATAERR;
		}
	}
	return 0;
}

/* Header fields added for a local submission, as Postfix's cleanup does:
 * Received on top; From, Date, Message-ID when missing. */
static int write_headers(struct sm *sm, struct out *o, const struct headers *h,
			 const struct queue_envelope *env, const char *id)
{
	char line[1024], date[40], stamp[32], phrase[NAME_MAX_BYTES * 2 + 64];
	int64_t now = env->queued_at;
	size_t i;
	int rc = 0;

	clock_rfc5322(now, date, sizeof(date));
	snprintf(line, sizeof(line), "Received: by %s (stsrelay, from userid %lu);\r\n\t%s\r\n",
		 sm->cfg->hostname, (unsigned long)sm->user->uid, date);
	rc |= out_str(o, line);
	for (i = 0; i < h->n; i++) {
		/* Blind copies stay blind: Bcc never goes out. */
		if (field_is(h, i, "bcc") || field_is(h, i, "resent-bcc"))
			continue;
		rc |= out_put(o, core_buf_str(&h->buf) + h->f[i].off, h->f[i].len);
	}
	if (!headers_have(h, "from")) {
		char addr[QUEUE_ADDR_MAX + 80];

		if (env->sender[0])
			snprintf(addr, sizeof(addr), "%s", env->sender);
		else
			snprintf(addr, sizeof(addr), "%s@%s", sm->user->login, sm->cfg->hostname);
		phrase_encode(sm->user->fullname, phrase, sizeof(phrase));
		rc |= out_str(o, "From: ");
		if (phrase[0]) {
			rc |= out_str(o, phrase);
			rc |= out_str(o, " <");
			rc |= out_str(o, addr);
			rc |= out_str(o, ">\r\n");
		} else {
			rc |= out_str(o, addr);
			rc |= out_str(o, "\r\n");
		}
	}
	if (!headers_have(h, "date")) {
		snprintf(line, sizeof(line), "Date: %s\r\n", date);
		rc |= out_str(o, line);
	}
	if (!headers_have(h, "message-id")) {
		struct tm tm;
		time_t t = (time_t)now;

		gmtime_r(&t, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		snprintf(line, sizeof(line), "Message-ID: <%s.%s@%s>\r\n", stamp, id,
			 sm->cfg->hostname);
		rc |= out_str(o, line);
	}
	rc |= out_str(o, "\r\n");
	return rc ? -1 : 0;
}

/* Reads one message from src and commits it to maildrop/. env holds the
 * sender and the recipients given so far (-t adds more). Returns 0 with
 * qid set, or a sysexits code with why set. In SMTP mode the input is read
 * to its final "." whatever happens. */
static int submit(struct sm *sm, struct line_src *src, struct queue_envelope *env,
		  char qid[QUEUE_ID_LEN + 1], char *why, size_t whylen)
{
	struct headers h = HEADERS_INIT;
	struct out *o = NULL;
	struct queue_writer *w = NULL;
	char pending[CHUNK_MAX], buf[CHUNK_MAX];
	size_t pendlen = 0, len;
	bool have_pending, cont;
	int ex, rc, e;

	ex = read_headers(sm, src, &h, pending, &pendlen, &have_pending, why, whylen);
	if (ex != 0)
		goto out;
	if (sm->extract) {
		ex = extract_rcpts(sm, &h, env, why, whylen);
		if (ex != 0)
			goto out;
	}
	if (env->nrcpts == 0) {
		snprintf(why, whylen, "no recipients");
		ex = EX_DATAERR;
		goto out;
	}
	ex = sm_open_queue(sm, why, whylen);
	if (ex != 0)
		goto out;
	o = calloc(1, sizeof(*o));
	if (o == NULL) {
		snprintf(why, whylen, "out of memory");
		ex = EX_OSERR;
		goto out;
	}
	if (priv_raise() != 0) {
		snprintf(why, whylen, "cannot take up the group " DROP_GROUP ": %s",
			 strerror(errno));
		ex = EX_OSERR;
		goto out;
	}
	rc = queue_writer_new(sm->q, true, &w);
	e = errno;
	priv_lower();
	if (rc != 0) {
		snprintf(why, whylen, "cannot create a file in %.400s/maildrop: %s",
			 sm->cfg->spool_dir, strerror(e));
		ex = cli_exit_for_errno(e, EX_CANTCREAT);
		goto out;
	}
	env->queued_at = clock_now();
	o->w = w;
	o->max = sm->cfg->max_message_size;
	ex = EX_IOERR;
	if (queue_writer_header(w, env) != 0) {
		snprintf(why, whylen, "cannot write the envelope: %s", strerror(errno));
		goto out;
	}
	if (write_headers(sm, o, &h, env, queue_writer_id(w)) != 0)
		goto write_error;
	if (have_pending && (out_put(o, pending, pendlen) != 0 || out_put(o, "\r\n", 2) != 0))
		goto write_error;
	for (;;) {
		rc = src_next(src, buf, &len, &cont);
		if (rc <= 0)
			break;
		if ((cont && out_put(o, " ", 1) != 0) || out_put(o, buf, len) != 0 ||
		    out_put(o, "\r\n", 2) != 0)
			goto write_error;
	}
	if (rc < 0) {
		snprintf(why, whylen, "%s",
			 src->cut_short ? "input ended before the final '.'"
					: "error reading the input");
		goto out;
	}
	if (o->too_big) {
		snprintf(why, whylen, "message too large (limit %llu bytes)",
			 (unsigned long long)sm->cfg->max_message_size);
		ex = EX_DATAERR;
		goto out;
	}
	if (out_flush(o) != 0)
		goto write_error;
	snprintf(qid, QUEUE_ID_LEN + 1, "%s", queue_writer_id(w));
	if (priv_raise() != 0) {
		snprintf(why, whylen, "cannot take up the group " DROP_GROUP ": %s",
			 strerror(errno));
		ex = EX_OSERR;
		goto out;
	}
	/* Durable before exit 0: the directory fsync, or for a caller who
	 * cannot read maildrop/ a second fsync of the file after its rename
	 * (queue/spool.c explains; never a global sync). A failure leaves no
	 * drop file behind, so the caller's retry is no duplicate. */
	rc = queue_writer_commit_sync(w);
	priv_lower();
	if (rc != 0) {
		snprintf(why, whylen, "cannot commit the message to %.400s/maildrop: %s",
			 sm->cfg->spool_dir, strerror(errno));
		goto out;
	}
	ex = 0;
	goto out;
write_error:
	snprintf(why, whylen, "cannot write to %.400s/maildrop: %s", sm->cfg->spool_dir,
		 strerror(errno));
	ex = EX_IOERR;
out:
	if (sm->smtp)
		src_drain(src);
	if (w != NULL) {
		/* Unlinking an uncommitted drop file needs the group too. */
		if (priv_raise() == 0) {
			queue_writer_free(w);
			priv_lower();
		} else {
			queue_writer_free(w);
		}
	}
	free(o);
	headers_free(&h);
	return ex;
}

/* ---- -bs: SMTP on stdin/stdout ---- */

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputs("\r\n", stdout);
	fflush(stdout);
}

enum bs_state { BS_IDLE, BS_MAIL, BS_RCPT };

static int smtp_session(struct sm *sm, struct reader *rd)
{
	struct queue_envelope env;
	enum bs_state st = BS_IDLE;
	char line[SMTP_LINE_MAX], why[512], qid[QUEUE_ID_LEN + 1], addr[QUEUE_ADDR_MAX];
	struct smtp_command cmd;
	const char *reason;
	size_t len;
	bool complete;
	int rc;

	memset(&env, 0, sizeof(env));
	reply("220 %s ESMTP stsrelay (sendmail -bs)", sm->cfg->hostname);
	for (;;) {
		rc = reader_line(rd, line, SMTP_LINE_MAX - 2, &len, &complete);
		if (rc <= 0)
			break;
		if (!complete) {
			while (!complete && rc > 0)
				rc = reader_line(rd, line, SMTP_LINE_MAX - 2, &len, &complete);
			reply("500 5.5.2 Error: line too long");
			continue;
		}
		rc = smtp_command_parse(line, len, &cmd, &reason);
		if (rc != 0) {
			reply("%d %s", rc, reason);
			continue;
		}
		switch (cmd.verb) {
		case SMTP_CMD_EHLO:
			queue_envelope_clear(&env);
			st = BS_IDLE;
			reply("250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
			      "250 ENHANCEDSTATUSCODES",
			      sm->cfg->hostname, (unsigned long long)sm->cfg->max_message_size);
			break;
		case SMTP_CMD_HELO:
			queue_envelope_clear(&env);
			st = BS_IDLE;
			reply("250 %s", sm->cfg->hostname);
			break;
		case SMTP_CMD_MAIL:
			if (st != BS_IDLE) {
				reply("503 5.5.1 Error: nested MAIL command");
			} else if (cmd.has_size && cmd.size > sm->cfg->max_message_size) {
				reply("552 5.3.4 Message size exceeds fixed limit");
			} else if (cmd.path[0] &&
				   addr_qualify(cmd.path, sm->cfg, addr, sizeof(addr)) != 0) {
				reply("501 5.1.7 Bad sender address syntax");
			} else {
				memset(&env, 0, sizeof(env));
				snprintf(env.sender, sizeof(env.sender), "%s",
					 cmd.path[0] ? addr : "");
				snprintf(env.submitter, sizeof(env.submitter), "%s",
					 sm->user->login);
				st = BS_MAIL;
				reply("250 2.1.0 Ok");
			}
			break;
		case SMTP_CMD_RCPT:
			if (st == BS_IDLE)
				reply("503 5.5.1 Error: need MAIL command");
			else if ((rc = rcpt_resolve(cmd.path, sm->cfg, addr, sizeof(addr))) == -2)
				reply("550 5.1.1 <%s>: Recipient address rejected: %s", cmd.path,
				      LOCAL_REFUSED_WHY);
			else if (rc != 0)
				reply("501 5.1.3 Bad recipient address syntax");
			else if (rcpt_add(&env, addr) != 0)
				reply("452 4.5.3 Error: too many recipients");
			else {
				st = BS_RCPT;
				reply("250 2.1.5 Ok");
			}
			break;
		case SMTP_CMD_DATA: {
			struct line_src src = { .rd = rd, .smtp = true };

			if (st == BS_IDLE) {
				reply("503 5.5.1 Error: need MAIL command");
				break;
			}
			if (st == BS_MAIL) {
				reply("554 5.5.1 Error: no valid recipients");
				break;
			}
			reply("354 End data with <CR><LF>.<CR><LF>");
			rc = submit(sm, &src, &env, qid, why, sizeof(why));
			if (src.cut_short) {
				queue_envelope_clear(&env);
				return EX_IOERR;
			}
			if (rc == 0)
				reply("250 2.0.0 Ok: queued as %s", qid);
			else if (rc == EX_DATAERR && strncmp(why, "message too large", 17) == 0)
				reply("552 5.3.4 Error: %s", why);
			else if (rc == EX_DATAERR)
				reply("554 5.6.0 Error: %s", why);
			else
				reply("451 4.3.0 Error: %s", why);
			if (rc != 0)
				fprintf(stderr, PROG ": %s\n", why);
			queue_envelope_clear(&env);
			st = BS_IDLE;
			break;
		}
		case SMTP_CMD_RSET:
			queue_envelope_clear(&env);
			st = BS_IDLE;
			reply("250 2.0.0 Ok");
			break;
		case SMTP_CMD_NOOP:
			reply("250 2.0.0 Ok");
			break;
		case SMTP_CMD_VRFY:
			reply("252 2.0.0 Send mail to find out");
			break;
		case SMTP_CMD_QUIT:
			reply("221 2.0.0 Bye");
			queue_envelope_clear(&env);
			return 0;
		default:
			reply("502 5.5.1 Error: command not implemented");
			break;
		}
	}
	queue_envelope_clear(&env);
	return rc < 0 ? EX_IOERR : 0;
}

/* ---- options ---- */

enum sm_mode { MODE_DELIVER, MODE_LIST, MODE_SMTP, MODE_NOOP, MODE_HELP };

struct sm_opts {
	enum sm_mode mode;
	bool extract, ignore_dots;
	const char *sender;   /* -f / -r, NULL if not given */
	const char *fullname; /* -F */
	const char *config;   /* -C / -c */
	int first_rcpt;       /* argv index of the first recipient */
};

static const char sm_help[] =
	"usage: sendmail [-t] [-i] [-f sender] [-F name] [-bm|-bp|-bs] [-C file] [recipient ...]\n"
	"       stsrelay sendmail [same flags]\n"
	"\n"
	"Reads a message on stdin and puts it into the stsrelay spool (maildrop/);\n"
	"the daemon delivers it, now or when it next starts.\n"
	"  -t            recipients from To:, Cc: and Bcc: (Bcc: is removed)\n"
	"  -i, -oi       a line with a single dot does not end the message\n"
	"  -f ADDR, -r ADDR  envelope sender (default: login@hostname; \"<>\": none)\n"
	"  -F NAME       full name for an added From: header\n"
	"  -bm           deliver (the default)\n"
	"  -bp           list the queue (= mailq)\n"
	"  -bs           an SMTP dialogue on stdin/stdout\n"
	"  -bi, -I       initialise the alias database: nothing to do, exit 0\n"
	"  -C FILE, -c FILE  configuration file (else $STSRELAY_CONF, else\n"
	"                " CONFIG_DEFAULT_PATH ")\n"
	"  -oX..., -odb, -v, -h N, -N ..., -R ..., -V ... and other sendmail flags\n"
	"                are accepted and ignored\n"
	"  --help        this text\n"
	"Exit: 0 the message is durably in the spool, 64 usage, 65 no recipients,\n"
	"a bad address or a message too large, 67 no login name for this user or\n"
	"a local recipient (root) without alias_root,\n"
	"71 system error, 73 cannot create the file in maildrop/, 74 write error,\n"
	"75 the spool cannot be opened now, 77 permission denied (not in group\n" RELAY_DROP_GROUP
	" and not root), 78 configuration error.\n";

static void sm_usage(void)
{
	(void)cli_usage(sm_help, false);
}

/* getopt-style: clustered flags ("-ti"), arguments attached ("-fADDR") or
 * separate ("-f ADDR"). Stops at the first non-option or "--". */
static int parse_args(int argc, char **argv, struct sm_opts *o)
{
	static const char with_arg[] = "ABbCcFfhLNOopRrVX";
	static const char ignored[] = "GmnUvx";
	int i;

	memset(o, 0, sizeof(*o));
	o->mode = MODE_DELIVER;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		size_t k;

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		/* Only the long form: -h is sendmail's hop count. */
		if (strcmp(a, "--help") == 0) {
			o->mode = MODE_HELP;
			return 0;
		}
		if (a[0] != '-' || a[1] == '\0')
			break;
		for (k = 1; a[k] != '\0'; k++) {
			char f = a[k];
			const char *val = NULL;

			if (strchr(with_arg, f) != NULL) {
				if (a[k + 1] != '\0') {
					val = a + k + 1;
				} else if (i + 1 < argc) {
					val = argv[++i];
				} else {
					fprintf(stderr, PROG ": option -%c needs an argument\n", f);
					return -1;
				}
			}
			switch (f) {
			case 't':
				o->extract = true;
				break;
			case 'i':
				o->ignore_dots = true;
				break;
			case 'I':
				o->mode = MODE_NOOP; /* -I = newaliases: no alias database */
				break;
			case 'f':
			case 'r':
				o->sender = val;
				break;
			case 'F':
				o->fullname = val;
				break;
			case 'C':
			case 'c':
				o->config = val;
				break;
			case 'o':
				if (strcmp(val, "i") == 0)
					o->ignore_dots = true;
				break; /* other -oX options mean nothing here */
			case 'b':
				if (strcmp(val, "m") == 0) {
					o->mode = MODE_DELIVER;
				} else if (strcmp(val, "p") == 0) {
					o->mode = MODE_LIST;
				} else if (strcmp(val, "s") == 0) {
					o->mode = MODE_SMTP;
				} else if (strcmp(val, "i") == 0 || strcmp(val, "I") == 0) {
					o->mode = MODE_NOOP;
				} else {
					fprintf(stderr, PROG ": -b%s is not supported\n", val);
					return -1;
				}
				break;
			default:
				if (val != NULL || strchr(ignored, f) != NULL)
					break; /* accepted and ignored: -A -B -h -L -N -O -p -R -V -X -v ... */
				fprintf(stderr, PROG ": unknown option -%c\n", f);
				return -1;
			}
			if (val != NULL)
				break; /* the rest of this argument was the value */
		}
	}
	o->first_rcpt = i;
	return 0;
}

/* The envelope sender from -f/-r ("" or "<>" = null sender), else
 * login@hostname. */
static int sender_init(const struct sm_opts *o, const struct config *cfg, const struct user *u,
		       struct queue_envelope *env)
{
	char tmp[QUEUE_ADDR_MAX];
	const char *s = o->sender;
	size_t n;

	if (s == NULL) {
		if ((size_t)snprintf(tmp, sizeof(tmp), "%s", u->login) >= sizeof(tmp))
			return -1;
		return addr_qualify(tmp, cfg, env->sender, sizeof(env->sender));
	}
	n = strlen(s);
	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	if (n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	if (n == 0) {
		env->sender[0] = '\0';
		return 0;
	}
	return addr_qualify(tmp, cfg, env->sender, sizeof(env->sender));
}

static int sendmail_main(int argc, char **argv)
{
	struct queue_envelope env;
	struct sm_opts o;
	struct config cfg;
	struct user u;
	struct reader *rd = NULL;
	struct sm sm = { 0 };
	char why[1024], qid[QUEUE_ID_LEN + 1];
	int ex, i;

	memset(&env, 0, sizeof(env));
	if (parse_args(argc, argv, &o) != 0) {
		sm_usage();
		return EX_USAGE;
	}
	if (o.mode == MODE_HELP)
		return cli_usage(sm_help, true);
	if (o.mode == MODE_NOOP) {
		return 0;
	}
	ex = cli_load_config(PROG, o.config, &cfg);
	if (ex != 0)
		return ex;
	if (o.mode == MODE_LIST) {
		priv_drop_all();
		return cli_queue_list(PROG, &cfg, false);
	}
	if (user_init(&u, o.fullname) != 0) {
		fprintf(stderr, PROG ": no login name for user id %lu\n", (unsigned long)getuid());
		return EX_NOUSER;
	}
	sm.cfg = &cfg;
	sm.user = &u;
	sm.extract = o.extract;
	sm.smtp = o.mode == MODE_SMTP;
	sm.dot_ends = !o.ignore_dots;
	rd = calloc(1, sizeof(*rd));
	if (rd == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		return EX_OSERR;
	}
	rd->fd = STDIN_FILENO;
	if (sm.smtp) {
		ex = smtp_session(&sm, rd);
		goto out;
	}
	if (sender_init(&o, &cfg, &u, &env) != 0) {
		fprintf(stderr, PROG ": invalid sender address: %s\n",
			o.sender ? o.sender : u.login);
		ex = EX_DATAERR;
		goto out;
	}
	snprintf(env.submitter, sizeof(env.submitter), "%s", u.login);
	for (i = o.first_rcpt; i < argc; i++) {
		struct addrlist_err e;

		int rc = addr_list_parse(argv[i], strlen(argv[i]), &cfg, &env, &e);

		if (rc != 0) {
			fprintf(stderr, PROG ": %s: %s\n", e.text, e.why);
			ex = rc == -2 ? EX_NOUSER : EX_DATAERR;
			goto out;
		}
	}
	if (env.nrcpts == 0 && !o.extract) {
		fprintf(stderr, PROG ": no recipients (give them as arguments or use -t)\n");
		ex = EX_DATAERR;
		goto out;
	}
	{
		struct line_src src = { .rd = rd, .dot_ends = sm.dot_ends };

		ex = submit(&sm, &src, &env, qid, why, sizeof(why));
	}
	if (ex != 0)
		fprintf(stderr, PROG ": %s\n", why);
out:
	queue_envelope_clear(&env);
	if (sm.q != NULL)
		queue_close(sm.q);
	free(rd);
	return ex;
}

int cmd_sendmail(int argc, char **argv)
{
	int ex;

	if (priv_init() != 0) {
		fprintf(stderr, PROG ": cannot set the group ids: %s\n", strerror(errno));
		return EX_OSERR;
	}
	ex = sendmail_main(argc, argv);
	/* All ids equal again before exit: nothing runs with the group after the
	 * work is done, and (in sanitizer builds) LeakSanitizer's ptrace-based
	 * check can attach, which a differing saved group id forbids. */
	priv_drop_all();
	return ex;
}
