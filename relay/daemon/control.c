/* The control socket server: one request line in, one reply line out, per
 * connection; bounded in size and time so a stuck client cannot pile up.
 * Also the public showq socket: the queue listing for any local user. */
#include "relay/daemon/control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "queue/queue.h"
#include "queue/listing.h"
#include "relay/core/log.h"
#include "relay/daemon/scheduler.h"
#include "relay/daemon/tlsrpt_daemon.h"

struct control_conn;

#define SHOWQ_TIMEOUT_MS 30000 /* a large listing may take a while to build and read */
#define SHOWQ_JOBS_MAX 4       /* listings built at once; more get "error busy" */

struct control {
	struct relay *r;
	struct pickup *pickup;
	uv_pipe_t server;
	uv_pipe_t pub; /* public/showq */
	char path[CONFIG_PATH_MAX + 16];
	char pub_path[CONFIG_PATH_MAX + 16];
	struct control_conn *conns;
	int server_open, pub_open;
	size_t nopen; /* servers + connections not yet freed */
	int closing;
	int njobs; /* listings in the thread pool */
};

struct control_conn {
	struct control *c;
	struct control_conn *prev, *next;
	uv_pipe_t pipe;
	uv_timer_t timer;
	uv_write_t wreq;
	int handles_open;
	int done;     /* replied or failed: input ignored */
	bool public;  /* came in on public/showq: "list" only */
	bool working; /* a listing is being built for it */
	uv_work_t work;
	char *big; /* the listing to send (malloc'd), bigfree: free it */
	size_t biglen;
	char in[CONTROL_REQUEST_MAX];
	size_t inlen;
	char reply[320];
};


void control_execute(struct relay *r, struct pickup *p, const char *req, char *reply,
		     size_t replylen)
{
	char verb[16], id[64];
	int n = 0, fields;

	fields = sscanf(req, "%15s %63s %n", verb, id, &n);
	if (fields < 1) {
		snprintf(reply, replylen, "error empty request");
		return;
	}
	if (fields == 2 && req[n] != '\0') {
		snprintf(reply, replylen, "error trailing text");
		return;
	}
	if (strcmp(verb, "tlsrpt-send") == 0 && fields == 2) {
		if (r->tlsrpt != NULL && tlsrpt_daemon_send_now(r->tlsrpt, id) == 0)
			snprintf(reply, replylen, "ok");
		else
			snprintf(reply, replylen, "error cannot start a TLS-RPT run for %s now",
				 id);
		return;
	}
	if (fields == 2 && !queue_id_valid(id, strlen(id))) {
		snprintf(reply, replylen, "error bad queue id");
		return;
	}
	/* An unknown id gets one reply whatever the verb, so the queue
	 * commands can tell it from a failure (exit 67, not 70). */
	if (fields == 2 &&
	    (strcmp(verb, "flush") == 0 || strcmp(verb, "delete") == 0 ||
	     strcmp(verb, "bounce") == 0) &&
	    !scheduler_knows(r->sched, id)) {
		snprintf(reply, replylen, "error " RELAY_CONTROL_NO_SUCH " %s", id);
		return;
	}
	if (strcmp(verb, "wake") == 0 && fields == 1) {
		if (p != NULL)
			pickup_wake(p);
		snprintf(reply, replylen, "ok");
	} else if (strcmp(verb, "flush") == 0) {
		if (scheduler_flush(r->sched, fields == 2 ? id : NULL) == 0)
			snprintf(reply, replylen, "ok");
		else
			snprintf(reply, replylen, "error " RELAY_CONTROL_NO_SUCH " %s", id);
	} else if (strcmp(verb, "delete") == 0 && fields == 2) {
		if (scheduler_delete(r->sched, id) == 0)
			snprintf(reply, replylen, "ok");
		else
			snprintf(reply, replylen,
				 "error cannot delete %s (spool error, see the log)", id);
	} else if (strcmp(verb, "queued") == 0 && fields == 2) {
		scheduler_add(r->sched, id);
		snprintf(reply, replylen, "ok");
	} else if (strcmp(verb, "bounce") == 0 && fields == 2) {
		if (scheduler_bounce(r->sched, id) == 0)
			snprintf(reply, replylen, "ok");
		else
			snprintf(reply, replylen, "error cannot bounce %s (see the log)", id);
	} else {
		snprintf(reply, replylen, "error unknown request");
	}
}

static void conn_free(struct control_conn *cc)
{
	struct control *c = cc->c;

	if (cc->prev)
		cc->prev->next = cc->next;
	else
		c->conns = cc->next;
	if (cc->next)
		cc->next->prev = cc->prev;
	free(cc->big);
	free(cc);
	if (--c->nopen == 0)
		free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
	struct control_conn *cc = h->data;

	/* a listing still being built owns cc until it is done */
	if (--cc->handles_open > 0 || cc->working)
		return;
	conn_free(cc);
}

static void conn_close(struct control_conn *cc)
{
	if (cc->handles_open != 2 || uv_is_closing((uv_handle_t *)&cc->pipe))
		return;
	uv_close((uv_handle_t *)&cc->pipe, on_conn_closed);
	uv_close((uv_handle_t *)&cc->timer, on_conn_closed);
}

static void on_written(uv_write_t *req, int status)
{
	(void)status;
	conn_close(req->data);
}

static void conn_reply(struct control_conn *cc)
{
	size_t n = strlen(cc->reply);
	uv_buf_t b;

	cc->done = 1;
	uv_read_stop((uv_stream_t *)&cc->pipe);
	if (n + 1 < sizeof(cc->reply)) {
		cc->reply[n++] = '\n';
		cc->reply[n] = '\0';
	}
	b = uv_buf_init(cc->reply, (unsigned)n);
	cc->wreq.data = cc;
	if (uv_write(&cc->wreq, (uv_stream_t *)&cc->pipe, &b, 1, on_written) != 0)
		conn_close(cc);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct control_conn *cc = h->data;

	(void)suggested;
	*buf = uv_buf_init(cc->in + cc->inlen, (unsigned)(sizeof(cc->in) - 1 - cc->inlen));
}

/* ---- public/showq: the listing, built in the thread pool ---- */

static void listing_work(uv_work_t *req)
{
	struct control_conn *cc = req->data;
	char err[512];
	json_t *doc = listing_build(cc->c->r->queue, true, err, sizeof(err));

	if (doc != NULL) {
		cc->big = json_dumps(doc, JSON_COMPACT);
		json_decref(doc);
		if (cc->big == NULL)
			snprintf(err, sizeof(err), "out of memory");
	}
	if (cc->big == NULL) {
		size_t n = strlen(err) + 8;

		cc->big = malloc(n);
		if (cc->big != NULL)
			snprintf(cc->big, n, "error %s", err);
	}
	cc->biglen = cc->big != NULL ? strlen(cc->big) : 0;
}

static void listing_done(uv_work_t *req, int status)
{
	struct control_conn *cc = req->data;
	uv_buf_t b;

	(void)status;
	cc->working = false;
	cc->c->njobs--;
	if (cc->handles_open == 0) {
		conn_free(cc); /* the client went away (or a stop closed it) meanwhile */
		return;
	}
	if (cc->big == NULL || cc->c->closing) {
		conn_close(cc);
		return;
	}
	b = uv_buf_init(cc->big, (unsigned)cc->biglen);
	cc->wreq.data = cc;
	if (uv_write(&cc->wreq, (uv_stream_t *)&cc->pipe, &b, 1, on_written) != 0)
		conn_close(cc);
}

static void showq_request(struct control_conn *cc, const char *req)
{
	struct control *c = cc->c;
	int rc;

	cc->done = 1;
	uv_read_stop((uv_stream_t *)&cc->pipe);
	if (strcmp(req, "list") != 0) {
		snprintf(cc->reply, sizeof(cc->reply), "error only \"list\" is served here");
		conn_reply(cc);
		return;
	}
	if (c->njobs >= SHOWQ_JOBS_MAX) {
		snprintf(cc->reply, sizeof(cc->reply), "error busy, try again");
		conn_reply(cc);
		return;
	}
	cc->work.data = cc;
	rc = uv_queue_work(c->r->loop, &cc->work, listing_work, listing_done);
	if (rc != 0) {
		snprintf(cc->reply, sizeof(cc->reply), "error %s", uv_strerror(rc));
		conn_reply(cc);
		return;
	}
	cc->working = true;
	c->njobs++;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct control_conn *cc = st->data;
	char *nl;

	(void)buf;
	if (cc->done || nread == 0)
		return;
	if (nread < 0) {
		conn_close(cc);
		return;
	}
	cc->inlen += (size_t)nread;
	cc->in[cc->inlen] = '\0';
	nl = memchr(cc->in, '\n', cc->inlen);
	if (nl == NULL) {
		if (cc->inlen >= sizeof(cc->in) - 1) {
			snprintf(cc->reply, sizeof(cc->reply), "error request too long");
			conn_reply(cc);
		}
		return;
	}
	if (memchr(cc->in, '\0', (size_t)(nl - cc->in)) != NULL) {
		snprintf(cc->reply, sizeof(cc->reply), "error NUL in request");
	} else {
		*nl = '\0';
		if (nl > cc->in && nl[-1] == '\r')
			nl[-1] = '\0';
		if (cc->public) {
			showq_request(cc, cc->in);
			return;
		}
		log_info("control: %s", cc->in);
		control_execute(cc->c->r, cc->c->pickup, cc->in, cc->reply, sizeof(cc->reply));
	}
	conn_reply(cc);
}

static void on_timeout(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct control *c = server->data;
	struct control_conn *cc;

	if (status != 0 || c->closing)
		return;
	cc = calloc(1, sizeof(*cc));
	if (cc == NULL)
		return;
	cc->c = c;
	cc->public = server == (uv_stream_t *)&c->pub;
	cc->pipe.data = cc;
	cc->timer.data = cc;
	if (uv_pipe_init(c->r->loop, &cc->pipe, 0) != 0) {
		free(cc);
		return;
	}
	if (uv_timer_init(c->r->loop, &cc->timer) != 0) {
		cc->handles_open = 1;
		c->nopen++;
		cc->next = c->conns;
		if (c->conns)
			c->conns->prev = cc;
		c->conns = cc;
		uv_close((uv_handle_t *)&cc->pipe, on_conn_closed);
		return;
	}
	cc->handles_open = 2;
	c->nopen++;
	cc->next = c->conns;
	if (c->conns)
		c->conns->prev = cc;
	c->conns = cc;
	if (uv_accept(server, (uv_stream_t *)&cc->pipe) != 0 ||
	    uv_read_start((uv_stream_t *)&cc->pipe, on_alloc, on_read) != 0) {
		conn_close(cc);
		return;
	}
	if (uv_timer_start(&cc->timer, on_timeout,
			   cc->public ? SHOWQ_TIMEOUT_MS : CONTROL_TIMEOUT_MS, 0) != 0)
		conn_close(cc);
}

static void on_server_closed(uv_handle_t *h)
{
	struct control *c = h->data;

	if (--c->nopen == 0)
		free(c);
}

/* Binds and listens on path, then sets the mode (no umask change: the
 * umask is process-wide and threads may be creating files meanwhile; a
 * socket made under the usual umask lets nobody else connect until the
 * chmod). A stale socket of a previous run is replaced: the caller holds
 * the spool lock, so no live daemon owns it. */
static int bind_socket(struct control *c, uv_pipe_t *srv, int *open_flag, const char *path,
		       mode_t mode, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	int rc;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "socket path too long (%zu bytes, max %zu): %s", strlen(path),
			 sizeof(sun.sun_path) - 1, path);
		return -1;
	}
	rc = uv_pipe_init(c->r->loop, srv, 0);
	if (rc != 0) {
		snprintf(err, errlen, "socket %s: %s", path, uv_strerror(rc));
		return -1;
	}
	srv->data = c;
	*open_flag = 1;
	c->nopen++;
	(void)unlink(path);
	rc = uv_pipe_bind(srv, path);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)srv, 16, on_connection);
	if (rc == 0 && chmod(path, mode) != 0)
		rc = uv_translate_sys_error(errno);
	if (rc != 0) {
		snprintf(err, errlen, "socket %s: %s", path, uv_strerror(rc));
		*open_flag = 0;
		uv_close((uv_handle_t *)srv, on_server_closed);
		return -1;
	}
	return 0;
}

/* spool_dir/public: a real directory, 0755, so every user reaches showq. */
static int public_dir(const char *spool, char *err, size_t errlen)
{
	char dir[CONFIG_PATH_MAX + 16];
	int fd;

	snprintf(dir, sizeof(dir), "%s/%s", spool, RELAY_PUBLIC_DIR);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fchmod(fd, 0755) != 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int control_start(struct relay *r, struct pickup *p, struct control **out, char *err, size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));
	char why[512];

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->r = r;
	c->pickup = p;
	c->nopen = 1; /* held until the end of this function */
	snprintf(c->path, sizeof(c->path), "%s/%s", queue_spool_dir(r->queue),
		 RELAY_CONTROL_SOCKET);
	snprintf(c->pub_path, sizeof(c->pub_path), "%s/%s", queue_spool_dir(r->queue),
		 RELAY_SHOWQ_SOCKET);
	/* 0600: root and the spool owner only; the commands change the queue */
	if (bind_socket(c, &c->server, &c->server_open, c->path, 0600, err, errlen) != 0) {
		c->closing = 1;
		if (--c->nopen == 0)
			free(c);
		return -1;
	}
	/* Without showq, mail still flows and root's commands work: logged. */
	if (public_dir(queue_spool_dir(r->queue), why, sizeof(why)) != 0 ||
	    bind_socket(c, &c->pub, &c->pub_open, c->pub_path, 0666, why, sizeof(why)) != 0)
		log_error(
			"public listing socket: %s; mailq works for root and the spool owner only",
			why);
	c->nopen--;
	*out = c;
	return 0;
}

void control_close(struct control *c)
{
	struct control_conn *cc;

	c->closing = 1;
	(void)unlink(c->path);
	if (c->pub_open)
		(void)unlink(c->pub_path);
	for (cc = c->conns; cc != NULL; cc = cc->next)
		conn_close(cc);
	if (c->server_open) {
		c->server_open = 0;
		uv_close((uv_handle_t *)&c->server, on_server_closed);
	}
	if (c->pub_open) {
		c->pub_open = 0;
		uv_close((uv_handle_t *)&c->pub, on_server_closed);
	}
}
