/* The spool as a queue backend: the operations of queue/backend.h over the
 * functions of queue/queue.h (reading the data start, writing a whole message). */
#include "queue/backend.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

static int spool_scan(void *q, char (**ids)[QUEUE_ID_LEN + 1], size_t *n)
{
	return queue_scan(q, ids, n);
}

static int spool_load(void *q, const char *id, struct queue_envelope *env, char *err, size_t errlen)
{
	return queue_load(q, id, env, err, errlen);
}

static ssize_t spool_read_data(void *q, const struct queue_envelope *env, void *buf, size_t len)
{
	size_t got = 0;
	int fd = queue_open_data(q, env);

	if (fd < 0)
		return -1;
	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return (ssize_t)got;
}

static int add_message(void *q, const struct queue_envelope *env, const void *data, size_t len,
		       char new_id[QUEUE_ID_LEN + 1], bool dirsync)
{
	struct queue_writer *w = NULL;
	int rc = -1, e;

	if (queue_writer_new(q, false, &w) != 0 || queue_writer_header(w, env) != 0 ||
	    queue_writer_append(w, data, len) != 0 ||
	    (dirsync ? queue_writer_commit_sync(w) : queue_writer_commit(w)) != 0)
		goto out;
	memcpy(new_id, queue_writer_id(w), QUEUE_ID_LEN + 1);
	rc = 0;
out:
	e = errno;
	queue_writer_free(w);
	errno = e;
	return rc;
}

static int spool_add(void *q, const struct queue_envelope *env, const void *data, size_t len,
		     char new_id[QUEUE_ID_LEN + 1])
{
	return add_message(q, env, data, len, new_id, true);
}

static int spool_add_nodirsync(void *q, const struct queue_envelope *env, const void *data,
			       size_t len, char new_id[QUEUE_ID_LEN + 1])
{
	return add_message(q, env, data, len, new_id, false);
}

static int spool_save_state(void *q, const struct queue_envelope *env)
{
	return queue_save_state(q, env);
}

static int spool_remove(void *q, const char *id)
{
	return queue_remove(q, id);
}

static int spool_save_state_nodirsync(void *q, const struct queue_envelope *env)
{
	return queue_save_state_nodirsync(q, env);
}

static int spool_remove_nodirsync(void *q, const char *id)
{
	return queue_remove_nodirsync(q, id);
}

static int spool_sync(void *q)
{
	return queue_sync_queue_dir(q);
}

static const struct queue_backend_ops spool_ops = {
	.scan = spool_scan,
	.load = spool_load,
	.read_data = spool_read_data,
	.add = spool_add,
	.add_nodirsync = spool_add_nodirsync,
	.save_state = spool_save_state,
	.remove = spool_remove,
	.save_state_nodirsync = spool_save_state_nodirsync,
	.remove_nodirsync = spool_remove_nodirsync,
	.sync = spool_sync,
};

struct queue_backend queue_backend_spool(struct queue *q)
{
	struct queue_backend qb = { .ops = &spool_ops, .q = q };

	return qb;
}
