/* The queue listing: the spool read into one JSON document (by a command or
 * by the daemon's public endpoint) and the mailq table printed from it. */
#include "queue/listing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/clock.h"

/* jansson refuses strings that are not UTF-8; addresses from SMTP clients
 * may hold any 8-bit bytes, so those are shown with '?' in their place. */
static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	char *copy;
	size_t i;

	if (j != NULL)
		return j;
	copy = strdup(s);
	if (copy == NULL)
		return NULL;
	for (i = 0; copy[i] != '\0'; i++)
		if ((unsigned char)copy[i] >= 0x80)
			copy[i] = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

static json_t *jtime(int64_t t)
{
	char buf[32];

	return jstr(clock_rfc3339(t, buf, sizeof(buf)));
}

/* One object per set; returns -1 if any value could not be made or set,
 * which only happens when memory runs out. */
static int jset(json_t *obj, const char *key, json_t *val)
{
	if (val == NULL)
		return -1;
	return json_object_set_new(obj, key, val);
}

/* next_try is null when it means "now" (0) or when the recipient is final:
 * a time is only shown when the recipient is really waiting. */
json_t *listing_message(const struct queue_envelope *env, bool public)
{
	json_t *m = json_object(), *rcpts = json_array();
	int bad = 0;
	size_t i;

	if (m == NULL || rcpts == NULL) {
		json_decref(m);
		json_decref(rcpts);
		return NULL;
	}
	bad |= jset(m, "id", jstr(env->id));
	bad |= jset(m, "sender", jstr(env->sender));
	bad |= jset(m, "size", json_integer((json_int_t)env->size));
	bad |= jset(m, "queued_at", jtime(env->queued_at));
	if (!public) {
		bad |= jset(m, "submitter", env->submitter[0] ? jstr(env->submitter) : json_null());
		bad |= jset(m, "client", env->client[0] ? jstr(env->client) : json_null());
	}
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];
		bool waiting = r->status == QUEUE_PENDING || r->status == QUEUE_DEFERRED;
		json_t *o = json_object();

		if (o == NULL) {
			bad = -1;
			break;
		}
		bad |= jset(o, "address", jstr(r->address));
		bad |= jset(o, "status", jstr(queue_status_name(r->status)));
		bad |= jset(o, "attempts", json_integer(r->attempts));
		bad |= jset(o, "next_try",
			    waiting && r->next_try > 0 ? jtime(r->next_try) : json_null());
		bad |= jset(o, "last_error", r->last_error[0] ? jstr(r->last_error) : json_null());
		bad |= json_array_append_new(rcpts, o);
	}
	bad |= jset(m, "recipients", rcpts);
	if (bad) {
		json_decref(m);
		return NULL;
	}
	return m;
}

json_t *listing_build(struct queue *q, bool public, char *err, size_t errlen)
{
	char(*ids)[QUEUE_ID_LEN + 1] = NULL, (*drops)[QUEUE_ID_LEN + 1] = NULL;
	size_t n = 0, ndrop = 0, i;
	json_t *doc = json_object(), *arr = json_array(), *errs = NULL;

	if (doc == NULL || arr == NULL || json_object_set(doc, "messages", arr) != 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (queue_scan(q, &ids, &n) != 0) {
		snprintf(err, errlen, "cannot list %s/queue: %s", queue_spool_dir(q),
			 strerror(errno));
		goto fail;
	}
	/* maildrop/ is readable by the daemon's user only: others see 0 */
	if (queue_drop_scan(q, &drops, &ndrop) != 0)
		ndrop = 0;
	free(drops);
	for (i = 0; i < n; i++) {
		struct queue_envelope env;
		char lerr[512];
		json_t *m;

		memset(&env, 0, sizeof(env));
		errno = 0;
		if (queue_load(q, ids[i], &env, lerr, sizeof(lerr)) != 0) {
			char line[QUEUE_ID_LEN + 600];

			queue_envelope_clear(&env);
			if (errno == ENOENT)
				continue; /* delivered or deleted since the scan */
			/* one bad file must not hide the rest of the queue */
			snprintf(line, sizeof(line), "%s: %s", ids[i], lerr);
			if (errs == NULL && (errs = json_array()) == NULL) {
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
			if (json_array_append_new(errs, jstr(line)) != 0) {
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
			continue;
		}
		m = listing_message(&env, public);
		queue_envelope_clear(&env);
		if (m == NULL || json_array_append_new(arr, m) != 0) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	if (json_object_set_new(doc, "maildrop", json_integer((json_int_t)ndrop)) != 0 ||
	    (errs != NULL && json_object_set(doc, "errors", errs) != 0)) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	free(ids);
	json_decref(arr);
	json_decref(errs);
	return doc;
fail:
	free(ids);
	json_decref(arr);
	json_decref(errs);
	json_decref(doc);
	return NULL;
}

static const char *str_or(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : dflt;
}

/* "(deferred, 3 attempts, next try T)" and the last error under it. */
static void rcpt_line(FILE *out, const json_t *r)
{
	const char *status = str_or(r, "status", "?"), *next = str_or(r, "next_try", NULL);
	const char *last = str_or(r, "last_error", NULL);
	json_int_t attempts = json_integer_value(json_object_get(r, "attempts"));

	fprintf(out, "%43s %s (%s", "", str_or(r, "address", "?"), status);
	if (attempts > 0)
		fprintf(out, ", %lld attempt%s", (long long)attempts, attempts == 1 ? "" : "s");
	if (next != NULL)
		fprintf(out, ", next try %s", next);
	fprintf(out, ")\n");
	if (last != NULL)
		fprintf(out, "%45s%s\n", "", last);
}

int listing_print_table(FILE *out, const json_t *doc)
{
	const json_t *msgs = json_object_get(doc, "messages"), *m;
	json_int_t ndrop = json_integer_value(json_object_get(doc, "maildrop"));
	unsigned long long bytes = 0;
	size_t i, k, shown = 0;

	if (!json_is_array(msgs))
		return -1;
	json_array_foreach(msgs, i, m)
	{
		const json_t *rcpts = json_object_get(m, "recipients"), *r;
		const char *sender = str_or(m, "sender", "");
		json_int_t size = json_integer_value(json_object_get(m, "size"));

		if (shown++ == 0)
			fprintf(out,
				"-Queue ID-   --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
		bytes += size > 0 ? (unsigned long long)size : 0;
		fprintf(out, "%-12s %8lld %-20s %s\n", str_or(m, "id", "?"), (long long)size,
			str_or(m, "queued_at", "?"), sender[0] ? sender : "<>");
		json_array_foreach(rcpts, k, r) rcpt_line(out, r);
		fprintf(out, "\n");
	}
	if (shown == 0)
		fprintf(out, "Mail queue is empty\n");
	else
		fprintf(out, "-- %llu Kbytes in %zu Request%s.\n", (bytes + 1023) / 1024, shown,
			shown == 1 ? "" : "s");
	if (ndrop > 0)
		fprintf(out, "-- %lld message%s in maildrop, not yet picked up.\n",
			(long long)ndrop, ndrop == 1 ? "" : "s");
	return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}
