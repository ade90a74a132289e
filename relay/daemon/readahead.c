/* Read-ahead of message data for delivery: uv_fs_read in the thread pool
 * fills one chunk while the loop hands out the other; one read in flight. */
#include "relay/daemon/readahead.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct chunk {
	char *buf;  /* allocated at the first fill */
	size_t len; /* bytes read into it; 0 = empty (free to fill) */
	size_t pos; /* bytes handed out */
};

/* Chunks are filled and drained in the same alternating order (0, 1, 0,
 * ...), so the consumer's chunk is always the oldest one read. */
struct readahead {
	uv_loop_t *loop;
	uv_fs_t req;
	int fd;
	uint64_t off;         /* file offset of the next read */
	uint64_t unread;      /* bytes not yet asked of the file */
	uint64_t undelivered; /* bytes not yet handed out */
	size_t chunk_cap;
	struct chunk ch[2];
	int cur;       /* the consumer's chunk */
	int next_fill; /* the chunk the next read goes into */
	bool in_flight;
	bool failed;
	bool waiting; /* a reader got READAHEAD_LATER: call ready() */
	bool freed;   /* readahead_free() ran during a read: free on return */
	readahead_ready_cb ready;
	void *arg;
};

static void destroy(struct readahead *ra)
{
	close(ra->fd);
	free(ra->ch[0].buf);
	free(ra->ch[1].buf);
	free(ra);
}

static void on_read(uv_fs_t *req);

/* Starts the next read if its chunk is empty and none is in flight. */
static void fill(struct readahead *ra)
{
	struct chunk *c = &ra->ch[ra->next_fill];
	uv_buf_t b;
	size_t want;

	if (ra->in_flight || ra->failed || ra->unread == 0 || c->len != 0)
		return;
	if (c->buf == NULL) {
		c->buf = malloc(ra->chunk_cap);
		if (c->buf == NULL) {
			ra->failed = true;
			return;
		}
	}
	want = ra->unread < ra->chunk_cap ? (size_t)ra->unread : ra->chunk_cap;
	b = uv_buf_init(c->buf, (unsigned)want);
	ra->req.data = ra;
	if (uv_fs_read(ra->loop, &ra->req, ra->fd, &b, 1, (int64_t)ra->off, on_read) != 0) {
		ra->failed = true;
		return;
	}
	ra->in_flight = true;
}

static void on_read(uv_fs_t *req)
{
	struct readahead *ra = req->data;
	ssize_t r = req->result;
	struct chunk *c = &ra->ch[ra->next_fill];

	uv_fs_req_cleanup(req);
	ra->in_flight = false;
	if (ra->freed) {
		destroy(ra);
		return;
	}
	if (r <= 0) {
		/* 0 before size bytes: the file was truncated under us */
		ra->failed = true;
	} else {
		c->len = (size_t)r;
		c->pos = 0;
		ra->off += (uint64_t)r;
		ra->unread -= (uint64_t)r;
		ra->next_fill ^= 1;
		fill(ra);
	}
	if (ra->waiting) {
		ra->waiting = false;
		ra->ready(ra->arg); /* may free ra: not touched after */
	}
}

int readahead_new(uv_loop_t *loop, int fd, uint64_t offset, uint64_t size, readahead_ready_cb ready,
		  void *arg, struct readahead **out)
{
	struct readahead *ra = calloc(1, sizeof(*ra));

	*out = NULL;
	if (ra == NULL)
		return -1;
	ra->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (ra->fd < 0) {
		free(ra);
		return -1;
	}
	ra->loop = loop;
	ra->off = offset;
	ra->unread = size;
	ra->undelivered = size;
	ra->chunk_cap = size < READAHEAD_CHUNK ? (size_t)(size > 0 ? size : 1) : READAHEAD_CHUNK;
	ra->ready = ready;
	ra->arg = arg;
	fill(ra); /* a failure shows at the first readahead_read() */
	*out = ra;
	return 0;
}

ssize_t readahead_read(struct readahead *ra, char *buf, size_t cap)
{
	struct chunk *c = &ra->ch[ra->cur];
	size_t n;

	if (c->len == 0) {
		if (ra->undelivered == 0)
			return 0;
		if (ra->failed)
			return -1;
		ra->waiting = true;
		return READAHEAD_LATER;
	}
	n = c->len - c->pos < cap ? c->len - c->pos : cap;
	memcpy(buf, c->buf + c->pos, n);
	c->pos += n;
	ra->undelivered -= n;
	if (c->pos == c->len) {
		c->len = 0;
		c->pos = 0;
		ra->cur ^= 1;
		fill(ra);
	}
	return (ssize_t)n;
}

void readahead_free(struct readahead *ra)
{
	if (ra == NULL)
		return;
	if (ra->in_flight) {
		ra->freed = true;
		return;
	}
	destroy(ra);
}
