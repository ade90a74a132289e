/* Queue file formats without I/O: the message header (envelope) and the
 * per-recipient state file, encoded as text and decoded strictly. */
#include "queue/queue.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/buf.h"

/*
 * Message header:
 *   STSRELAY-QUEUE 1
 *   id 0123456789AB         always the second line (the spool rewrites it in place)
 *   time 1700000000
 *   sender a@example.com    "sender" alone = null sender
 *   submitter alice         "submitter" alone = none
 *   client host[192.0.2.1]  "client" alone = none
 *   flags 0                 QUEUE_F_* bits, one digit (8BITMIME is set in place)
 *   rcpt b@example.org      one per recipient, in order
 *   end
 * State file:
 *   STSRELAY-STATE 1
 *   INDEX STATUS ATTEMPTS NEXT_TRY LAST_TRY[ LAST_ERROR]
 *   end
 * A value is everything after the first space of its line; empty values are
 * written without the space so every envelope has exactly one encoding.
 */

#define HDR_MAGIC "STSRELAY-QUEUE 1"
#define STATE_MAGIC "STSRELAY-STATE 1"
#define FLAGS_KNOWN ((unsigned)QUEUE_F_ALL)
_Static_assert(QUEUE_F_ALL <= 9, "the flags value must stay one digit (patched in place)");

static const char *const status_names[] = {
	[QUEUE_PENDING] = "pending",
	[QUEUE_DEFERRED] = "deferred",
	[QUEUE_SENT] = "sent",
	[QUEUE_BOUNCED] = "bounced",
};
#define N_STATUS (sizeof(status_names) / sizeof(status_names[0]))

const char *queue_status_name(enum queue_rcpt_status st)
{
	if ((unsigned)st >= N_STATUS)
		return "unknown";
	return status_names[st];
}

void queue_envelope_clear(struct queue_envelope *env)
{
	if (env == NULL)
		return;
	free(env->rcpts);
	env->rcpts = NULL;
	env->nrcpts = 0;
}

/* Growth is geometric; capacity is not stored, so it is derived from the
 * count (powers of two from 1), which keeps the struct as the lead defined it.
 * From 1, not 4: most messages have one recipient, and the scheduler keeps
 * every queued envelope in memory (a queue_rcpt is over 1 KB). */
static size_t rcpt_capacity(size_t n)
{
	size_t cap = 1;

	while (cap < n)
		cap *= 2;
	return cap;
}

static int add_rcpt_len(struct queue_envelope *env, const char *address, size_t len)
{
	struct queue_rcpt *r;

	if (len == 0 || len >= QUEUE_ADDR_MAX || env->nrcpts >= QUEUE_MAX_RCPTS)
		return -1;
	if (env->rcpts == NULL || env->nrcpts == rcpt_capacity(env->nrcpts)) {
		size_t cap = env->rcpts == NULL ? 1 : rcpt_capacity(env->nrcpts) * 2;
		struct queue_rcpt *n = realloc(env->rcpts, cap * sizeof(*n));

		if (n == NULL)
			return -1;
		env->rcpts = n;
	}
	r = &env->rcpts[env->nrcpts];
	memset(r, 0, sizeof(*r));
	memcpy(r->address, address, len);
	r->address[len] = '\0';
	r->status = QUEUE_PENDING;
	env->nrcpts++;
	return 0;
}

int queue_envelope_add_rcpt(struct queue_envelope *env, const char *address)
{
	size_t len;

	if (env == NULL || address == NULL)
		return -1;
	len = strnlen(address, QUEUE_ADDR_MAX);
	if (memchr(address, '\r', len) != NULL || memchr(address, '\n', len) != NULL)
		return -1;
	return add_rcpt_len(env, address, len);
}

/* ---- small text helpers ---- */

/* A value may hold any byte but the C0 controls and DEL (bytes >= 0x80 are
 * allowed for SMTPUTF8 addresses). */
static int clean_bytes(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

/* Decimal without sign or leading zeros, at most max. */
static int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < len; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return -1;
		d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

bool queue_id_valid(const char *s, size_t len)
{
	size_t i;

	if (len != QUEUE_ID_LEN)
		return false;
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

/* "key value\n", or "key\n" for an empty value. Output buffers are capped
 * at the decoders' limits, so what we write we can read back. */
static void out_kv(struct core_buf *o, const char *key, const char *val, size_t vlen)
{
	core_buf_adds(o, key);
	if (vlen > 0) {
		core_buf_add(o, " ", 1);
		core_buf_add(o, val, vlen);
	}
	core_buf_add(o, "\n", 1);
}

/* Hands the text over, or -1 (outputs untouched) if any append failed. */
static int out_finish(struct core_buf *o, char **out, size_t *outlen)
{
	size_t len;
	char *p = core_buf_take(o, &len);

	if (p == NULL) {
		core_buf_free(o);
		return -1;
	}
	*out = p;
	*outlen = len;
	return 0;
}

/* ---- header ---- */

/* Length of a NUL-terminated field inside its array, or -1 if it fills the
 * array without a NUL or holds a byte that cannot be stored. */
static long field_len(const char *s, size_t size)
{
	size_t len = strnlen(s, size);

	if (len == size || !clean_bytes(s, len))
		return -1;
	return (long)len;
}

int queue_header_encode(const struct queue_envelope *env, char **out, size_t *outlen)
{
	struct core_buf o = CORE_BUF_INIT(QUEUE_HEADER_MAX);
	char num[32];
	long idl, sl, subl, cl;
	size_t i;
	int n;

	if (env == NULL || out == NULL || outlen == NULL)
		return -1;
	idl = field_len(env->id, sizeof(env->id));
	sl = field_len(env->sender, sizeof(env->sender));
	subl = field_len(env->submitter, sizeof(env->submitter));
	cl = field_len(env->client, sizeof(env->client));
	if (idl < 0 || !queue_id_valid(env->id, (size_t)idl) || sl < 0 || subl < 0 || cl < 0)
		return -1;
	if (env->queued_at < 0 || (env->flags & ~FLAGS_KNOWN) != 0)
		return -1;
	if (env->nrcpts == 0 || env->nrcpts > QUEUE_MAX_RCPTS || env->rcpts == NULL)
		return -1;

	core_buf_adds(&o, HDR_MAGIC "\n");
	out_kv(&o, "id", env->id, (size_t)idl);
	n = snprintf(num, sizeof(num), "%" PRId64, env->queued_at);
	out_kv(&o, "time", num, (size_t)n);
	out_kv(&o, "sender", env->sender, (size_t)sl);
	out_kv(&o, "submitter", env->submitter, (size_t)subl);
	out_kv(&o, "client", env->client, (size_t)cl);
	n = snprintf(num, sizeof(num), "%u", env->flags);
	out_kv(&o, "flags", num, (size_t)n);
	for (i = 0; i < env->nrcpts; i++) {
		long al = field_len(env->rcpts[i].address, sizeof(env->rcpts[i].address));

		if (al <= 0) {
			core_buf_free(&o);
			return -1;
		}
		out_kv(&o, "rcpt", env->rcpts[i].address, (size_t)al);
	}
	core_buf_adds(&o, "end\n");
	return out_finish(&o, out, outlen);
}

enum hdr_key { K_ID, K_TIME, K_SENDER, K_SUBMITTER, K_CLIENT, K_FLAGS, K_NKEYS };
static const char *const hdr_keys[K_NKEYS] = {
	"id", "time", "sender", "submitter", "client", "flags",
};

/* Copies a string value into a fixed field; -1 if it does not fit. */
static int set_field(char *dst, size_t size, const char *v, size_t vlen)
{
	if (vlen >= size)
		return -1;
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
	return 0;
}

static int decode_header(const char *buf, size_t len, struct queue_envelope *env, const char **err)
{
	const char *p = buf, *end;
	unsigned seen = 0;
	size_t mlen = strlen(HDR_MAGIC);
	uint64_t v;

	if (len > QUEUE_HEADER_MAX)
		len = QUEUE_HEADER_MAX; /* a header must end within the limit */
	end = buf + len;
	if (len < mlen + 1 || memcmp(p, HDR_MAGIC "\n", mlen + 1) != 0) {
		*err = "bad magic line";
		return -1;
	}
	p += mlen + 1;
	for (;;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *sp, *val;
		size_t llen, klen, vlen;
		int k;

		if (nl == NULL) {
			*err = len == QUEUE_HEADER_MAX ? "header too long"
						       : "truncated header (no end line)";
			return -1;
		}
		llen = (size_t)(nl - p);
		if (llen == 3 && memcmp(p, "end", 3) == 0) {
			p = nl + 1;
			break;
		}
		if (!clean_bytes(p, llen)) {
			*err = "control character in header";
			return -1;
		}
		sp = memchr(p, ' ', llen);
		klen = sp != NULL ? (size_t)(sp - p) : llen;
		val = sp != NULL ? sp + 1 : nl;
		vlen = (size_t)(nl - val);
		if (sp != NULL && vlen == 0) {
			*err = "empty value after space";
			return -1;
		}
		if (klen == 4 && memcmp(p, "rcpt", 4) == 0) {
			if (vlen == 0) {
				*err = "empty recipient";
				return -1;
			}
			if (vlen >= QUEUE_ADDR_MAX) {
				*err = "recipient too long";
				return -1;
			}
			if (env->nrcpts >= QUEUE_MAX_RCPTS) {
				*err = "too many recipients";
				return -1;
			}
			if (add_rcpt_len(env, val, vlen) < 0) {
				*err = "out of memory";
				return -1;
			}
			p = nl + 1;
			continue;
		}
		for (k = 0; k < K_NKEYS; k++)
			if (strlen(hdr_keys[k]) == klen && memcmp(hdr_keys[k], p, klen) == 0)
				break;
		if (k == K_NKEYS) {
			*err = "unknown key";
			return -1;
		}
		if (seen & (1u << k)) {
			*err = "duplicate key";
			return -1;
		}
		seen |= 1u << k;
		switch (k) {
		case K_ID:
			if (!queue_id_valid(val, vlen)) {
				*err = "bad queue id";
				return -1;
			}
			memcpy(env->id, val, vlen);
			env->id[vlen] = '\0';
			break;
		case K_TIME:
			if (parse_u64(val, vlen, INT64_MAX, &v) < 0) {
				*err = "bad time";
				return -1;
			}
			env->queued_at = (int64_t)v;
			break;
		case K_SENDER:
			if (set_field(env->sender, sizeof(env->sender), val, vlen) < 0) {
				*err = "sender too long";
				return -1;
			}
			break;
		case K_SUBMITTER:
			if (set_field(env->submitter, sizeof(env->submitter), val, vlen) < 0) {
				*err = "submitter too long";
				return -1;
			}
			break;
		case K_CLIENT:
			if (set_field(env->client, sizeof(env->client), val, vlen) < 0) {
				*err = "client too long";
				return -1;
			}
			break;
		case K_FLAGS:
			if (parse_u64(val, vlen, UINT_MAX, &v) < 0 ||
			    (v & ~(uint64_t)FLAGS_KNOWN) != 0) {
				*err = "bad flags";
				return -1;
			}
			env->flags = (unsigned)v;
			break;
		}
		p = nl + 1;
	}
	if (seen != (1u << K_NKEYS) - 1) {
		*err = "missing key";
		return -1;
	}
	if (env->nrcpts == 0) {
		*err = "no recipients";
		return -1;
	}
	env->data_offset = (uint64_t)(p - buf);
	return 0;
}

int queue_header_decode(const char *buf, size_t len, struct queue_envelope *env, const char **err)
{
	const char *dummy;

	if (err == NULL)
		err = &dummy;
	if (env == NULL || (buf == NULL && len > 0)) {
		*err = "bad arguments";
		return -1;
	}
	memset(env, 0, sizeof(*env));
	if (buf == NULL || decode_header(buf, len, env, err) < 0) {
		if (buf == NULL)
			*err = "bad magic line";
		queue_envelope_clear(env);
		memset(env, 0, sizeof(*env));
		return -1;
	}
	return 0;
}

/* ---- state ---- */

int queue_state_encode(const struct queue_envelope *env, char **out, size_t *outlen)
{
	struct core_buf o = CORE_BUF_INIT(QUEUE_STATE_MAX);
	char line[128];
	size_t i;

	if (env == NULL || out == NULL || outlen == NULL || env->nrcpts > QUEUE_MAX_RCPTS ||
	    (env->nrcpts > 0 && env->rcpts == NULL))
		return -1;
	core_buf_adds(&o, STATE_MAGIC "\n");
	for (i = 0; i < env->nrcpts && core_buf_error(&o) == 0; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];
		size_t elen = strnlen(r->last_error, sizeof(r->last_error) - 1);
		char errbuf[QUEUE_ERROR_MAX];
		size_t j;
		int n;

		if ((unsigned)r->status >= N_STATUS) {
			core_buf_free(&o);
			return -1;
		}
		/* Negative times are meaningless here; store them as 0 ("now")
		 * rather than failing to save progress. */
		n = snprintf(line, sizeof(line), "%zu %s %u %" PRId64 " %" PRId64, i,
			     status_names[r->status], r->attempts,
			     r->next_try > 0 ? r->next_try : 0, r->last_try > 0 ? r->last_try : 0);
		if (n < 0 || (size_t)n >= sizeof(line)) {
			core_buf_free(&o);
			return -1;
		}
		core_buf_add(&o, line, (size_t)n);
		/* The error text comes from remote servers (multi-line replies):
		 * control characters become spaces, so saving progress never
		 * fails because of what a peer said. */
		memcpy(errbuf, r->last_error, elen);
		for (j = 0; j < elen; j++) {
			unsigned char c = (unsigned char)errbuf[j];

			if (c < 0x20 || c == 0x7f)
				errbuf[j] = ' ';
		}
		if (elen > 0) {
			core_buf_add(&o, " ", 1);
			core_buf_add(&o, errbuf, elen);
		}
		core_buf_add(&o, "\n", 1);
	}
	core_buf_adds(&o, "end\n");
	return out_finish(&o, out, outlen);
}

struct state_line {
	size_t index;
	enum queue_rcpt_status status;
	unsigned attempts;
	int64_t next_try, last_try;
	const char *error;
	size_t error_len;
};

/* Next space-separated field of [*p, end); empty fields are errors. */
static int next_field(const char **p, const char *end, const char **f, size_t *flen)
{
	const char *sp = memchr(*p, ' ', (size_t)(end - *p));

	*f = *p;
	*flen = sp != NULL ? (size_t)(sp - *p) : (size_t)(end - *p);
	if (*flen == 0)
		return -1;
	*p = sp != NULL ? sp + 1 : end;
	return 0;
}

static int parse_state_line(const char *p, const char *end, size_t nrcpts, struct state_line *sl,
			    const char **err)
{
	const char *f;
	size_t flen, k;
	uint64_t v;

	if (!clean_bytes(p, (size_t)(end - p))) {
		*err = "control character in state";
		return -1;
	}
	if (next_field(&p, end, &f, &flen) < 0 || parse_u64(f, flen, SIZE_MAX, &v) < 0) {
		*err = "bad recipient index";
		return -1;
	}
	if (v >= nrcpts) {
		*err = "recipient index out of range";
		return -1;
	}
	sl->index = (size_t)v;
	if (next_field(&p, end, &f, &flen) < 0) {
		*err = "missing status";
		return -1;
	}
	for (k = 0; k < N_STATUS; k++)
		if (strlen(status_names[k]) == flen && memcmp(status_names[k], f, flen) == 0)
			break;
	if (k == N_STATUS) {
		*err = "unknown status";
		return -1;
	}
	sl->status = (enum queue_rcpt_status)k;
	if (next_field(&p, end, &f, &flen) < 0 || parse_u64(f, flen, UINT_MAX, &v) < 0) {
		*err = "bad attempts";
		return -1;
	}
	sl->attempts = (unsigned)v;
	if (next_field(&p, end, &f, &flen) < 0 || parse_u64(f, flen, INT64_MAX, &v) < 0) {
		*err = "bad next_try";
		return -1;
	}
	sl->next_try = (int64_t)v;
	/* LAST_TRY is the last field unless an error text follows it. */
	{
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		size_t tlen = sp != NULL ? (size_t)(sp - p) : (size_t)(end - p);

		if (parse_u64(p, tlen, INT64_MAX, &v) < 0) {
			*err = "bad last_try";
			return -1;
		}
		sl->last_try = (int64_t)v;
		sl->error = sp != NULL ? sp + 1 : end;
		sl->error_len = (size_t)(end - sl->error);
		if (sp != NULL && sl->error_len == 0) {
			*err = "empty error after space";
			return -1;
		}
		if (sl->error_len >= QUEUE_ERROR_MAX) {
			*err = "error text too long";
			return -1;
		}
	}
	return 0;
}

/* Two passes: the first validates everything, the second applies, so a bad
 * file leaves env untouched. */
static int state_walk(const char *buf, size_t len, struct queue_envelope *env, int apply,
		      const char **err)
{
	const char *p = buf, *end = buf + len;
	size_t mlen = strlen(STATE_MAGIC);
	size_t next_min = 0;

	if (len > QUEUE_STATE_MAX) {
		*err = "state too long";
		return -1;
	}
	if (len < mlen + 1 || memcmp(p, STATE_MAGIC "\n", mlen + 1) != 0) {
		*err = "bad magic line";
		return -1;
	}
	p += mlen + 1;
	for (;;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		struct state_line sl;

		if (nl == NULL) {
			*err = "truncated state (no end line)";
			return -1;
		}
		if (nl - p == 3 && memcmp(p, "end", 3) == 0) {
			p = nl + 1;
			break;
		}
		if (parse_state_line(p, nl, env->nrcpts, &sl, err) < 0)
			return -1;
		if (sl.index < next_min) {
			*err = "recipient index repeated or out of order";
			return -1;
		}
		next_min = sl.index + 1;
		if (apply) {
			struct queue_rcpt *r = &env->rcpts[sl.index];

			r->status = sl.status;
			r->attempts = sl.attempts;
			r->next_try = sl.next_try;
			r->last_try = sl.last_try;
			memcpy(r->last_error, sl.error, sl.error_len);
			r->last_error[sl.error_len] = '\0';
		}
		p = nl + 1;
	}
	if (p != end) {
		*err = "data after end line";
		return -1;
	}
	return 0;
}

int queue_state_decode(const char *buf, size_t len, struct queue_envelope *env, const char **err)
{
	const char *dummy;

	if (err == NULL)
		err = &dummy;
	if (env == NULL || buf == NULL || (env->nrcpts > 0 && env->rcpts == NULL)) {
		*err = "bad arguments";
		return -1;
	}
	if (state_walk(buf, len, env, 0, err) < 0)
		return -1;
	return state_walk(buf, len, env, 1, err);
}
