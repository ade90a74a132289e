/* AUTH for the submission listeners: the users table, password checks in the
 * thread pool (a bounded number at once), and the per-address failure penalty. */
#ifndef STSRELAY_AUTH_H
#define STSRELAY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "smtp/users.h"

/* Failed authentications from one client address: at AUTH_FAIL_LIMIT
 * within AUTH_FAIL_WINDOW_MS of each other, the address is refused (AUTH
 * and new submission sessions, 421) for AUTH_BLOCK_MS. */
#define AUTH_FAIL_LIMIT 5
#define AUTH_FAIL_WINDOW_MS (5 * 60 * 1000)
#define AUTH_BLOCK_MS (5 * 60 * 1000)
/* Addresses remembered at once; when full, the one whose last failure is
 * oldest is forgotten first (blocked ones last). */
#define AUTH_ADDRS 4096
/* Password checks running at once. libuv's pool has 4 threads and the
 * group commit, state saving and pickup share it: yescrypt costs tens of
 * milliseconds each, so a burst of AUTH commands waits in our queue and
 * never keeps a commit (a 250) waiting behind it. */
#define AUTH_WORKERS 2

struct auth;

/* One password check; the caller owns the memory (it lives in the
 * session) and keeps it until done ran or auth_check_cancel() returned 0.
 * After done: user is the authenticated entry or NULL (refused); the
 * table holding it stays valid until auth_check_release(). */
struct auth_check {
	const struct smtp_user *user;
	/* private */
	struct smtp_users *users; /* reference taken at start */
	uv_work_t work;
	struct auth *a;
	struct auth_check *next; /* waiting line */
	int phase;               /* idle, queued, running */
	void (*done)(struct auth_check *c);
	char name[SMTP_USERS_NAME_MAX + 1];
	char pass[SMTP_USERS_PASS_MAX + 1];
};

/* users: the table to check against (the reference is taken over). 0, or
 * -1 (out of memory; users released). */
int auth_new(uv_loop_t *loop, struct smtp_users *users, struct auth **out);
/* Only when no check is queued or running (every session is gone). */
void auth_free(struct auth *a);

/* Swaps in a new table (reference taken over); checks already started and
 * sessions already authenticated keep the one they began with. */
void auth_set_users(struct auth *a, struct smtp_users *users);

/* Reads and parses auth_users_file (blocking: at start, or in the thread
 * pool). 0 with *out; 1 when the file does not exist (*out is an empty
 * table, err says so: nobody can authenticate); -1 with err
 * ("FILE:LINE: reason", or why it cannot be read), *out untouched. */
int auth_load_users(const char *path, struct smtp_users **out, char *err, size_t errlen);

/* Queues the check of name/pass (copied, and wiped once checked) against
 * the current table; done runs on the loop. 0, or -1 when a field is
 * longer than the limits of smtp/users.h (nothing queued). */
int auth_check_start(struct auth *a, struct auth_check *c, const char *name, const char *pass,
		     void (*done)(struct auth_check *c));
/* 0: the check was not running (removed from the queue, or already done):
 * done will not run; -1: it runs in the pool now, done will run. */
int auth_check_cancel(struct auth_check *c);
/* Drops the table reference of a finished check (user becomes NULL). */
void auth_check_release(struct auth_check *c);

/* The failure penalty, by client address text (uv_ip_name's form). */
bool auth_blocked(struct auth *a, const char *ip);
/* Records a failure; true when it is the one that blocks the address. */
bool auth_failed(struct auth *a, const char *ip);

#endif
