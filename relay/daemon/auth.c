/* AUTH for the submission listeners: crypt(3) checks queued into the libuv
 * thread pool at most AUTH_WORKERS at a time, the users table swapped by
 * reference count, and failed attempts counted per client address. */
#define LOG_COMPONENT LOG_C_SMTPD
#include "relay/daemon/auth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/log.h"

enum { PHASE_IDLE, PHASE_QUEUED, PHASE_RUNNING };

struct addr_fails {
	char ip[48]; /* "" = free */
	unsigned fails;
	uint64_t last_ms;    /* last failure */
	uint64_t blocked_to; /* 0 = not blocked */
};

struct auth {
	uv_loop_t *loop;
	struct smtp_users *users;
	struct auth_check *head, *tail; /* waiting line */
	unsigned running;
	struct addr_fails addrs[AUTH_ADDRS];
};

int auth_new(uv_loop_t *loop, struct smtp_users *users, struct auth **out)
{
	struct auth *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (a == NULL) {
		smtp_users_unref(users);
		return -1;
	}
	a->loop = loop;
	a->users = users;
	*out = a;
	return 0;
}

void auth_free(struct auth *a)
{
	if (a == NULL)
		return;
	smtp_users_unref(a->users);
	free(a);
}

void auth_set_users(struct auth *a, struct smtp_users *users)
{
	smtp_users_unref(a->users);
	a->users = users;
}

int auth_load_users(const char *path, struct smtp_users **out, char *err, size_t errlen)
{
	int rc = smtp_users_load(path, out, NULL, NULL, err, errlen);

	if (rc == 1)
		snprintf(err, errlen,
			 "%s does not exist: nobody can authenticate (stsrelay user add NAME)",
			 path);
	return rc;
}

/* ---- password checks ---- */

static void on_check_work(uv_work_t *w)
{
	struct auth_check *c = w->data;

	c->user = smtp_users_verify(c->users, c->name, c->pass);
	explicit_bzero(c->pass, sizeof(c->pass));
}

static void submit_next(struct auth *a);

static void on_check_done(uv_work_t *w, int status)
{
	struct auth_check *c = w->data;
	struct auth *a = c->a;

	(void)status; /* never cancelled: uv_cancel is not used */
	a->running--;
	c->phase = PHASE_IDLE;
	submit_next(a);
	c->done(c);
}

static void submit_next(struct auth *a)
{
	while (a->running < AUTH_WORKERS && a->head != NULL) {
		struct auth_check *c = a->head;
		int rc;

		a->head = c->next;
		if (a->head == NULL)
			a->tail = NULL;
		c->next = NULL;
		c->work.data = c;
		rc = uv_queue_work(a->loop, &c->work, on_check_work, on_check_done);
		if (rc != 0) {
			/* cannot happen with a valid loop and callbacks; refuse
			 * rather than leave the session waiting */
			log_error("AUTH check: uv_queue_work: %s", uv_strerror(rc));
			explicit_bzero(c->pass, sizeof(c->pass));
			c->user = NULL;
			c->phase = PHASE_IDLE;
			c->done(c);
			continue;
		}
		c->phase = PHASE_RUNNING;
		a->running++;
	}
}

int auth_check_start(struct auth *a, struct auth_check *c, const char *name, const char *pass,
		     void (*done)(struct auth_check *c))
{
	size_t nl = strlen(name), pl = strlen(pass);

	if (nl > SMTP_USERS_NAME_MAX || pl > SMTP_USERS_PASS_MAX)
		return -1;
	auth_check_release(c);
	c->a = a;
	c->done = done;
	c->user = NULL;
	c->users = smtp_users_ref(a->users);
	memcpy(c->name, name, nl + 1);
	memcpy(c->pass, pass, pl + 1);
	c->next = NULL;
	c->phase = PHASE_QUEUED;
	if (a->tail != NULL)
		a->tail->next = c;
	else
		a->head = c;
	a->tail = c;
	submit_next(a);
	return 0;
}

int auth_check_cancel(struct auth_check *c)
{
	struct auth_check **pp, *prev = NULL;

	if (c->phase == PHASE_RUNNING)
		return -1;
	if (c->phase == PHASE_QUEUED) {
		for (pp = &c->a->head; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
			if (*pp != c)
				continue;
			*pp = c->next;
			if (c->a->tail == c)
				c->a->tail = prev;
			break;
		}
		c->phase = PHASE_IDLE;
		explicit_bzero(c->pass, sizeof(c->pass));
	}
	return 0;
}

void auth_check_release(struct auth_check *c)
{
	if (c->users != NULL)
		smtp_users_unref(c->users);
	c->users = NULL;
	c->user = NULL;
}

/* ---- failure penalty ---- */

static bool live(const struct addr_fails *f, uint64_t now)
{
	return f->ip[0] != '\0' && (f->blocked_to > now || f->last_ms + AUTH_FAIL_WINDOW_MS > now);
}

static struct addr_fails *find_addr(struct auth *a, const char *ip, uint64_t now)
{
	size_t i;

	for (i = 0; i < AUTH_ADDRS; i++)
		if (a->addrs[i].ip[0] != '\0' && strcmp(a->addrs[i].ip, ip) == 0)
			return live(&a->addrs[i], now) ? &a->addrs[i] : NULL;
	return NULL;
}

bool auth_blocked(struct auth *a, const char *ip)
{
	uint64_t now = uv_now(a->loop);
	struct addr_fails *f = find_addr(a, ip, now);

	return f != NULL && f->blocked_to > now;
}

/* Which slot to give up first: free or stale (0), then counting (1), then
 * blocked (2). */
static int keep_rank(const struct addr_fails *f, uint64_t now)
{
	if (!live(f, now))
		return 0;
	return f->blocked_to > now ? 2 : 1;
}

/* A slot for ip: its own, else a free or stale one, else the one whose
 * last failure is oldest, unblocked ones first. */
static struct addr_fails *slot_for(struct auth *a, const char *ip, uint64_t now)
{
	struct addr_fails *best = &a->addrs[0];
	size_t i;

	for (i = 0; i < AUTH_ADDRS; i++) {
		struct addr_fails *f = &a->addrs[i];
		int r = keep_rank(f, now), rb = keep_rank(best, now);

		if (f->ip[0] != '\0' && strcmp(f->ip, ip) == 0) {
			if (r == 0)
				memset(f, 0, sizeof(*f));
			best = f;
			break;
		}
		if (r < rb || (r == rb && f->last_ms < best->last_ms))
			best = f;
	}
	if (strcmp(best->ip, ip) != 0) {
		memset(best, 0, sizeof(*best));
		snprintf(best->ip, sizeof(best->ip), "%s", ip);
	}
	return best;
}

bool auth_failed(struct auth *a, const char *ip)
{
	uint64_t now = uv_now(a->loop);
	struct addr_fails *f = slot_for(a, ip, now);

	f->fails++;
	f->last_ms = now;
	if (f->fails < AUTH_FAIL_LIMIT || f->blocked_to > now)
		return false;
	f->blocked_to = now + AUTH_BLOCK_MS;
	f->fails = 0; /* counted afresh once the block is over */
	return true;
}
