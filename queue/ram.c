/* The in-memory queue: messages in an id hash under one mutex, encoded with
 * the spool's own header and state formats, every change journalled. */
#include "queue/ram.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/clock.h"

#define RAM_BUCKETS 65536

struct ram_msg {
	struct ram_msg *next; /* hash chain */
	char id[QUEUE_ID_LEN + 1];
	char *hdr; /* queue_header_encode's text */
	size_t hlen;
	char *data;
	size_t dlen;
	char *state; /* queue_state_encode's text, NULL before the first save */
	size_t slen;
};

struct queue_ram {
	pthread_mutex_t mu;
	struct ram_msg **by_id; /* RAM_BUCKETS */
	size_t n;
	int64_t id_s; /* the seconds of the last id */
	unsigned seq; /* the next id's last 4 hex digits */
	struct {
		int err_no;
		unsigned count;
	} fail[QUEUE_RAM_NOPS];
	char journal[QUEUE_RAM_JOURNAL_MAX];
	size_t jlen;
};

static size_t bucket(const char *id)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h % RAM_BUCKETS;
}

static struct ram_msg **find(struct queue_ram *r, const char *id)
{
	struct ram_msg **pp;

	for (pp = &r->by_id[bucket(id)]; *pp != NULL; pp = &(*pp)->next)
		if (strcmp((*pp)->id, id) == 0)
			return pp;
	return pp;
}

static void note(struct queue_ram *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct queue_ram *r, const char *fmt, ...)
{
	size_t room = sizeof(r->journal) - r->jlen;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(r->journal + r->jlen, room, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < room)
		r->jlen += (size_t)n;
	else
		r->journal[r->jlen] = '\0'; /* full: the journal keeps its start */
}

/* An injected fault for op: true (errno set, journalled) when one is due. */
static bool injected(struct queue_ram *r, enum queue_ram_op op, const char *what, const char *id)
{
	if (r->fail[op].count == 0)
		return false;
	r->fail[op].count--;
	note(r, "%s%s%s failed: %s\n", what, id[0] ? " " : "", id, strerror(r->fail[op].err_no));
	errno = r->fail[op].err_no;
	return true;
}

static void msg_free(struct ram_msg *m)
{
	free(m->hdr);
	free(m->data);
	free(m->state);
	free(m);
}

int queue_ram_new(struct queue_ram **out)
{
	struct queue_ram *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return -1;
	r->by_id = calloc(RAM_BUCKETS, sizeof(*r->by_id));
	if (r->by_id == NULL || pthread_mutex_init(&r->mu, NULL) != 0) {
		free(r->by_id);
		free(r);
		errno = ENOMEM;
		return -1;
	}
	*out = r;
	return 0;
}

void queue_ram_free(struct queue_ram *r)
{
	size_t b;

	if (r == NULL)
		return;
	for (b = 0; b < RAM_BUCKETS; b++) {
		while (r->by_id[b] != NULL) {
			struct ram_msg *m = r->by_id[b];

			r->by_id[b] = m->next;
			msg_free(m);
		}
	}
	pthread_mutex_destroy(&r->mu);
	free(r->by_id);
	free(r);
}

size_t queue_ram_count(struct queue_ram *r)
{
	size_t n;

	pthread_mutex_lock(&r->mu);
	n = r->n;
	pthread_mutex_unlock(&r->mu);
	return n;
}

size_t queue_ram_journal(struct queue_ram *r, char *buf, size_t len)
{
	size_t n;

	pthread_mutex_lock(&r->mu);
	n = r->jlen;
	if (len > 0)
		snprintf(buf, len, "%s", r->journal);
	pthread_mutex_unlock(&r->mu);
	return n;
}

void queue_ram_fail(struct queue_ram *r, enum queue_ram_op op, int err_no, unsigned count)
{
	pthread_mutex_lock(&r->mu);
	r->fail[op].err_no = err_no;
	r->fail[op].count = count;
	pthread_mutex_unlock(&r->mu);
}

/* ---- the operations ---- */

static int cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

static int ram_scan(void *q, char (**ids)[QUEUE_ID_LEN + 1], size_t *n)
{
	struct queue_ram *r = q;
	size_t b, i = 0;

	pthread_mutex_lock(&r->mu);
	*ids = malloc((r->n ? r->n : 1) * sizeof(**ids));
	if (*ids == NULL) {
		pthread_mutex_unlock(&r->mu);
		errno = ENOMEM;
		return -1;
	}
	for (b = 0; b < RAM_BUCKETS; b++) {
		struct ram_msg *m;

		for (m = r->by_id[b]; m != NULL; m = m->next)
			memcpy((*ids)[i++], m->id, QUEUE_ID_LEN + 1);
	}
	*n = i;
	pthread_mutex_unlock(&r->mu);
	qsort(*ids, *n, sizeof(**ids), cmp_id);
	return 0;
}

static int ram_load(void *q, const char *id, struct queue_envelope *env, char *err, size_t errlen)
{
	struct queue_ram *r = q;
	struct ram_msg *m;
	const char *why = NULL;
	int rc = -1;

	memset(env, 0, sizeof(*env));
	if (!queue_id_valid(id, strlen(id))) {
		snprintf(err, errlen, "bad queue id");
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&r->mu);
	m = *find(r, id);
	if (m == NULL) {
		snprintf(err, errlen, "%s: %s", id, strerror(ENOENT));
		errno = ENOENT;
		goto out;
	}
	if (queue_header_decode(m->hdr, m->hlen, env, &why) != 0 ||
	    (m->state != NULL && queue_state_decode(m->state, m->slen, env, &why) != 0)) {
		snprintf(err, errlen, "%s: %s", id, why);
		errno = EBADMSG;
		goto out;
	}
	env->size = m->dlen;
	rc = 0;
out:
	pthread_mutex_unlock(&r->mu);
	if (rc != 0) {
		queue_envelope_clear(env);
		memset(env, 0, sizeof(*env));
	}
	return rc;
}

static ssize_t ram_read_data(void *q, const struct queue_envelope *env, void *buf, size_t len)
{
	struct queue_ram *r = q;
	struct ram_msg *m;
	ssize_t got = -1;

	pthread_mutex_lock(&r->mu);
	m = *find(r, env->id);
	if (m == NULL) {
		errno = ENOENT;
	} else {
		if (len > m->dlen)
			len = m->dlen;
		memcpy(buf, m->data, len);
		got = (ssize_t)len;
	}
	pthread_mutex_unlock(&r->mu);
	return got;
}

/* A fresh id, as the spool's: 8 hex digits of seconds, 4 more (a counter
 * here). The seconds run ahead of the clock when one second needs more
 * than 65,536 ids, and never back, so ids rise: sorted by age, unique. */
static void new_id(struct queue_ram *r, char id[QUEUE_ID_LEN + 1])
{
	int64_t now = clock_now();

	if (now > r->id_s) {
		r->id_s = now;
		r->seq = 0;
	} else if (r->seq > 0xFFFFu) {
		r->id_s++;
		r->seq = 0;
	}
	snprintf(id, QUEUE_ID_LEN + 1, "%08" PRIX32 "%04X", (uint32_t)r->id_s, r->seq++);
}

static int ram_add(void *q, const struct queue_envelope *env, const void *data, size_t len,
		   char out_id[QUEUE_ID_LEN + 1])
{
	struct queue_ram *r = q;
	struct queue_envelope e = *env; /* shallow: only id and flags differ */
	struct ram_msg *m = NULL;
	const unsigned char *p = data;
	size_t i;
	int rc = -1;

	pthread_mutex_lock(&r->mu);
	if (injected(r, QUEUE_RAM_ADD, "add", ""))
		goto out;
	if (r->n >= QUEUE_RAM_MAX) {
		errno = ENOSPC;
		goto out;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		goto out;
	new_id(r, m->id);
	/* the flag says what the bytes are, as the spool's writer sets it */
	memcpy(e.id, m->id, sizeof(e.id));
	e.flags &= ~(unsigned)QUEUE_F_8BITMIME;
	for (i = 0; i < len; i++) {
		if (p[i] & 0x80) {
			e.flags |= QUEUE_F_8BITMIME;
			break;
		}
	}
	if (queue_header_encode(&e, &m->hdr, &m->hlen) != 0) {
		errno = EINVAL;
		goto out;
	}
	m->data = malloc(len ? len : 1);
	if (m->data == NULL)
		goto out;
	memcpy(m->data, data, len);
	m->dlen = len;
	m->next = r->by_id[bucket(m->id)];
	r->by_id[bucket(m->id)] = m;
	r->n++;
	memcpy(out_id, m->id, QUEUE_ID_LEN + 1);
	note(r, "add %s\n", m->id);
	m = NULL;
	rc = 0;
out:
	pthread_mutex_unlock(&r->mu);
	if (m != NULL)
		msg_free(m);
	return rc;
}

static int save_locked(struct queue_ram *r, const struct queue_envelope *env)
{
	struct ram_msg *m;
	char *text = NULL;
	size_t len;

	if (!queue_id_valid(env->id, strlen(env->id))) {
		errno = EINVAL;
		return -1;
	}
	if (injected(r, QUEUE_RAM_SAVE, "save", env->id))
		return -1;
	/* never a state for a message that is gone (as the spool) */
	m = *find(r, env->id);
	if (m == NULL) {
		note(r, "save %s failed: %s\n", env->id, strerror(ENOENT));
		errno = ENOENT;
		return -1;
	}
	if (queue_state_encode(env, &text, &len) != 0) {
		errno = EINVAL;
		return -1;
	}
	free(m->state);
	m->state = text;
	m->slen = len;
	note(r, "save %s\n", env->id);
	return 0;
}

static int remove_locked(struct queue_ram *r, const char *id)
{
	struct ram_msg **pp, *m;

	if (!queue_id_valid(id, strlen(id))) {
		errno = EINVAL;
		return -1;
	}
	if (injected(r, QUEUE_RAM_REMOVE, "remove", id))
		return -1;
	pp = find(r, id);
	if (*pp == NULL) {
		note(r, "remove %s failed: %s\n", id, strerror(ENOENT));
		errno = ENOENT;
		return -1;
	}
	m = *pp;
	*pp = m->next;
	r->n--;
	msg_free(m);
	note(r, "remove %s\n", id);
	return 0;
}

static int sync_locked(struct queue_ram *r)
{
	if (injected(r, QUEUE_RAM_SYNC, "sync", ""))
		return -1;
	note(r, "sync\n");
	return 0;
}

static int ram_save_state_nodirsync(void *q, const struct queue_envelope *env)
{
	struct queue_ram *r = q;
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = save_locked(r, env);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int ram_remove_nodirsync(void *q, const char *id)
{
	struct queue_ram *r = q;
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = remove_locked(r, id);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int ram_sync(void *q)
{
	struct queue_ram *r = q;
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = sync_locked(r);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* The durable forms, as queue_save_state and queue_remove compose them. */
static int ram_save_state(void *q, const struct queue_envelope *env)
{
	struct queue_ram *r = q;
	int rc;

	pthread_mutex_lock(&r->mu);
	rc = save_locked(r, env);
	if (rc == 0)
		rc = sync_locked(r);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int ram_remove(void *q, const char *id)
{
	struct queue_ram *r = q;
	int rc, e;

	pthread_mutex_lock(&r->mu);
	rc = remove_locked(r, id);
	e = errno;
	if (rc == 0 || e == ENOENT) {
		if (sync_locked(r) != 0)
			rc = -1;
		else
			errno = e;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static const struct queue_backend_ops ram_ops = {
	.scan = ram_scan,
	.load = ram_load,
	.read_data = ram_read_data,
	.add = ram_add,
	.add_nodirsync = ram_add, /* nothing is durable here: the same */
	.save_state = ram_save_state,
	.remove = ram_remove,
	.save_state_nodirsync = ram_save_state_nodirsync,
	.remove_nodirsync = ram_remove_nodirsync,
	.sync = ram_sync,
};

struct queue_backend queue_ram_backend(struct queue_ram *r)
{
	struct queue_backend qb = { .ops = &ram_ops, .q = r };

	return qb;
}
